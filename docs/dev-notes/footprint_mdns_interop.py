"""Prototype check (NOTES-footprint.md): the project's zeroconf Browser finds a server announced by
footprint_mdns_responder_prototype.py, and drops it on its goodbye.

    bin/isolated .venv/bin/python docs/dev-notes/footprint_mdns_interop.py
"""
import os, subprocess, sys, time
HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
p = subprocess.Popen([sys.executable, os.path.join(HERE, "footprint_mdns_responder_prototype.py"), "proto-a", "23456"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
print(p.stdout.readline().strip())
import discovery
from discovery._record import python_version
print("py", python_version())
t0 = time.monotonic()
b = discovery.Browser(local=False, interfaces=["127.0.0.1"])
b.start() if hasattr(b, "start") else None
found = None
while time.monotonic() - t0 < 6:
    got = [r for r in b.servers() if r.name == "proto-a"]
    if got:
        found = got[0]; break
    time.sleep(0.05)
print("found after", round(time.monotonic() - t0, 3), found)
p.stdin.close(); p.wait(5)
t1 = time.monotonic()
while time.monotonic() - t1 < 4:
    if not [r for r in b.servers() if r.name == "proto-a"]:
        print("gone after goodbye", round(time.monotonic() - t1, 3)); break
    time.sleep(0.05)
else:
    print("still listed 4 s after goodbye")
b.close()
