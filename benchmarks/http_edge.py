"""HTTP edge: A2A message/send round trip and message/stream time to first chunk, mesh vs plain ASGI.

Mesh: a server in a subprocess with ``http_port`` and an echo agent named ``echo``; requests go to
its edge (``/a2a/echo/``: the a2a-sdk JSON-RPC handler, a mesh call to the agent, the reply as a
completed task). Plain: the same uvicorn (h11, asyncio loop) in a subprocess serving a bare ASGI
app that answers the same JSON-RPC body with a JSON echo, or one SSE event for a stream: what
HTTP alone costs on this machine. Both are driven by the same httpx client in this process.

Rows: round trip of ``message/send`` (sequential, keep-alive), time to the first SSE chunk of
``message/stream`` (for the mesh: the first ``artifact-update``), and requests/s of
``message/send`` with 32 concurrent clients (asyncio + httpx; the client shares the 2 cores).

    bin/isolated .venv/bin/python benchmarks/http_edge.py [--calls 300] [--seconds 5] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time

os.environ.setdefault("MESH_DISCOVERY", "0")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import machine, median, percentile, table, write_json  # noqa: E402

import httpx  # noqa: E402

import mesh  # noqa: E402


class EchoAgent(mesh.AgentBase):
    def reply(self, x=None):
        return mesh.Msg(self.name, x.content)


def _body(i: int, method: str = "message/send") -> dict:
    return {"jsonrpc": "2.0", "id": i, "method": method, "params": {"message": {
        "role": "user", "parts": [{"kind": "text", "text": "hello"}], "messageId": f"m{i}-{time.monotonic_ns()}"}}}


# ------------------------------------------------------------------ the plain ASGI endpoint
async def plain_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    request = json.loads(body)
    text = request["params"]["message"]["parts"][0]["text"]
    if request["method"] == "message/stream":
        event = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"kind": "artifact-update", "text": text}})
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/event-stream")]})
        await send({"type": "http.response.body", "body": f"data: {event}\n\n".encode(), "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    out = json.dumps({"jsonrpc": "2.0", "id": request["id"], "result": {"kind": "message", "text": text}}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": out})


def serve_plain(port: int) -> None:
    import uvicorn

    uvicorn.run(plain_app, host="127.0.0.1", port=port, loop="asyncio", http="h11", log_level="warning",
                access_log=False, lifespan="off")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ measurements
def round_trips(url: str, n: int) -> list[float]:
    with httpx.Client(timeout=30) as client:
        for i in range(20):
            client.post(url, json=_body(i)).raise_for_status()
        times = []
        for i in range(n):
            t = time.perf_counter()
            r = client.post(url, json=_body(i))
            times.append(time.perf_counter() - t)
            assert "hello" in r.text, r.text[:200]
    return times


def first_chunks(url: str, n: int) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as client:
        for i in range(n + 5):
            t = time.perf_counter()
            first = None
            with client.stream("POST", url, json=_body(i, "message/stream")) as r:
                for line in r.iter_lines():  # read to the end: the connection is reused
                    if first is None and line.startswith("data:") and "artifact-update" in line:
                        first = time.perf_counter() - t
            assert first is not None, "no chunk in the stream"
            if i >= 5:
                times.append(first)
    return times


def throughput(url: str, seconds: float, clients: int = 32) -> float:
    async def main() -> int:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(timeout=60, limits=limits) as client:
            done = 0
            stop = time.monotonic() + seconds

            async def worker(k: int) -> None:
                nonlocal done
                i = 0
                while time.monotonic() < stop:
                    r = await client.post(url, json=_body(k * 1_000_000 + i))
                    r.raise_for_status()
                    done += 1
                    i += 1

            await asyncio.gather(*(worker(k) for k in range(clients)))
            return done

    t = time.monotonic()
    n = asyncio.run(main())
    return n / (time.monotonic() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300, help="sequential requests per row (default 300)")
    ap.add_argument("--seconds", type=float, default=5.0, help="seconds of the 32-client run (default 5)")
    ap.add_argument("--json", help="write results here")
    ap.add_argument("--serve-plain", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_plain:
        serve_plain(args.serve_plain)
        return
    port = _free_port()
    plain = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--serve-plain", str(port)])
    srv = mesh.AgentServer(http_port=0, advertise=False, custom_agent_classes=[EchoAgent]).launch(in_subprocess=True)
    try:
        EchoAgent(name="echo", to_dist={"host": srv.host, "port": srv.port})
        plain_url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.post(plain_url, json=_body(0), timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        targets = {"mesh edge (A2A)": srv.http_url + "/a2a/echo/", "plain ASGI": plain_url}
        rows = []
        for label, url in targets.items():
            rt = round_trips(url, args.calls)
            ttfc = first_chunks(url, max(50, args.calls // 3))
            rps = throughput(url, args.seconds)
            rows.append({
                "endpoint": label, "send median ms": median(rt) * 1e3, "send p99 ms": percentile(rt, 99) * 1e3,
                "stream first chunk median ms": median(ttfc) * 1e3, "stream first chunk p99 ms": percentile(ttfc, 99) * 1e3,
                "req/s (32 clients)": rps,
            })
        cols = list(rows[0])
        print(table(rows, cols))
        mesh_row, plain_row = rows
        print(f"\nmesh edge / plain ASGI: send {mesh_row['send median ms'] / plain_row['send median ms']:.1f}x, "
              f"first chunk {mesh_row['stream first chunk median ms'] / plain_row['stream first chunk median ms']:.1f}x, "
              f"req/s {mesh_row['req/s (32 clients)'] / plain_row['req/s (32 clients)']:.2f}x")
        write_json(args.json, {"benchmark": "http_edge", "machine": machine(), "calls": args.calls,
                               "seconds": args.seconds, "rows": rows})
    finally:
        srv.shutdown()
        plain.terminate()
        plain.wait(10)
        mesh.shutdown()


if __name__ == "__main__":
    main()
