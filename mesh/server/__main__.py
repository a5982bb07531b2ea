"""``python -m mesh.server``: the ``zmq-agent-server`` command (the one import of the top layer here)."""

import sys

from mesh._cli import main

if __name__ == "__main__":
    sys.exit(main())
