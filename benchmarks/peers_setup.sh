#!/usr/bin/env bash
# Make the peers' venvs for benchmarks/peers.py: one venv per peer (git ignores .bench-venvs/).
#   usage: benchmarks/peers_setup.sh [DIR [PEER...]]   (default .bench-venvs in the repository; PEER: pyro agentscope ray)
# Run it OUTSIDE bin/isolated (pip needs the registry). The peers' modules (benchmarks/_peer_*.py)
# import nothing of the mesh, only the standard library and their peer. A peer whose install fails is reported and skipped, the others go on.
#   DIR/pyro/bin/python        Pyro5==5.17
#   DIR/agentscope/bin/python  agentscope==0.1.6 (with its distributed extra: grpcio, protobuf...)
#   DIR/ray/bin/python         ray (the newest release; RAY_VERSION=X.Y.Z pins one)
set -uo pipefail
dir=${1:-"$(cd "$(dirname "$0")/.." && pwd)/.bench-venvs"}
shift || true
peers=${*:-pyro agentscope ray}
py=${PYTHON:-python3}
mkdir -p "$dir"
status=0
mk() {  # mk NAME PIP-ARGS...
  local name=$1; shift
  if [ -x "$dir/$name/bin/python" ] && [ -f "$dir/$name/.done" ]; then
    echo "$name: already in $dir/$name"; return 0
  fi
  echo "$name: making $dir/$name (pip install $*)"
  rm -rf "$dir/$name"
  "$py" -m venv "$dir/$name" && "$dir/$name/bin/pip" install -q --disable-pip-version-check "$@" \
    && touch "$dir/$name/.done" && echo "$name: ok" && return 0
  echo "$name: FAILED (pip install $*)" >&2; status=1
}
for peer in $peers; do
  case $peer in
    pyro) mk pyro "Pyro5==5.17" ;;
    agentscope) mk agentscope "agentscope[distribute]==0.1.6" tqdm ;;  # 0.1.6 imports tqdm without requiring it
    ray) mk ray "ray${RAY_VERSION:+==$RAY_VERSION}" ;;
    *) echo "unknown peer $peer (pyro, agentscope, ray)" >&2; status=2 ;;
  esac
done
exit $status
