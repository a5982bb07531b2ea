# AgentScope's distributed-mode tutorial sample (dist_main.py), run on mesh.
# Changed lines only: the three imports (agentscope -> mesh) and the sleep (5 s -> SEED_SLEEP, default 0.5 s)
# so the test stays short. `python dist_main.py [child|server|init_true|init_dict]` picks init_with_dist.
import sys
import os

import time
import mesh as agentscope                      # was: import agentscope
from mesh import AgentBase                     # was: from agentscope.agents import AgentBase
from mesh import Msg                           # was: from agentscope.message import Msg

SLEEP = float(os.environ.get("SEED_SLEEP", "0.5"))


class WebAgent(AgentBase):

    def __init__(self, name):
        super().__init__(name)

    def get_answer(self, url: str, query: str):
        """模拟爬取网页并从中寻找问题答案"""
        time.sleep(SLEEP)
        return f"Answer from {self.name}"

    def reply(self, x: dict = None) -> dict:
        return Msg(
            name=self.name,
            role="assistant",
            content=self.get_answer(x.content["url"], x.content["query"])
        )


QUERY = "example query"
URLS = ["page_1", "page_2", "page_3", "page_4", "page_5"]

def init_without_dist():
    return [WebAgent(f"W{i}") for i in range(len(URLS))]


def init_with_dist():
    return [WebAgent(f"W{i}").to_dist() for i in range(len(URLS))]


def init_with_dist_server():
    return [WebAgent(f"W{i}").to_dist(host="localhost", port=12345) for i in range(len(URLS))]


def init_with_dist_true():
    return [WebAgent(f"W{i}", to_dist=True) for i in range(len(URLS))]


def init_with_dist_dict():
    return [WebAgent(f"W{i}", to_dist={"host": "localhost", "port": "12345"}) for i in range(len(URLS))]


def run(agents):
    start = time.time()
    results = []
    for i, url in enumerate(URLS):
        results.append(agents[i].reply(
            Msg(
                name="system",
                role="system",
                content={
                    "url": url,
                    "query": QUERY
                }
            )
        ))
    for result in results:
        print(result.content)
    end = time.time()
    return end - start


if __name__ == "__main__":
    mode = sys.argv[1] if len(sys.argv) > 1 else "child"
    init_with_dist = {"child": init_with_dist, "server": init_with_dist_server,
                      "init_true": init_with_dist_true, "init_dict": init_with_dist_dict}[mode]
    agentscope.init()
    start = time.time()
    simple_agents = init_without_dist()
    dist_agents = init_with_dist()
    end = time.time()
    print(f"初始化的耗时：{end - start}")
    print(f"不使用分布式模式的耗时：{run(simple_agents)}")
    print(f"使用分布式模式的耗时：{run(dist_agents)}")
