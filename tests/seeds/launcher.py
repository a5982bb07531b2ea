# AgentScope's developer-guide server launcher, run on mesh. Changed lines: the imports;
# PORT comes from argv so tests can pick a free one; capacity and pool settings as in the guide.
import sys
import mesh as agentscope                      # was: import agentscope
from mesh import RpcAgentServerLauncher        # was: from agentscope.server import RpcAgentServerLauncher
from myagents import AgentA, AgentB, AgentC


MODEL_CONFIGS = {}

HOST = "localhost"
PORT = int(sys.argv[1]) if len(sys.argv) > 1 else 12345
CUSTOM_CLASSES = [AgentA, AgentB, AgentC]

if __name__ == "__main__":
    agentscope.init(
        model_configs=MODEL_CONFIGS,
    )
    launcher = RpcAgentServerLauncher(
        host=HOST,
        port=PORT,
        custom_agent_classes=CUSTOM_CLASSES,
        capacity=10,
        max_expire_time=7200,
    )
    launcher.launch(in_subprocess=False)
    print("server ready", flush=True)
    launcher.wait_until_terminate()
