# AgentScope's dist_server.py, run on mesh. Changed lines: the imports only.
import mesh as agentscope                          # was: import agentscope
from mesh import RpcAgentServerLauncher           # was: from agentscope.server import RpcAgentServerLauncher
from dist_main import WebAgent


if __name__ == "__main__":
    agentscope.init(
        # model_configs=...  # 模型配置，如果不需要模型，可以不设置该参数
    )
    assistant_server_launcher = RpcAgentServerLauncher(
        host="localhost",
        port=12345,
        custom_agent_classes=[WebAgent],
    )
    assistant_server_launcher.launch(in_subprocess=False)
    print("server ready", flush=True)  # added: tells the test the server accepts calls
    assistant_server_launcher.wait_until_terminate()
