"""The Redis result pool: results outlive their server; a Redis that goes away gives errors, not hangs."""

from __future__ import annotations

import time

import pytest

import mesh
from agents_lib import Producer
from conftest import wait_until
from redis_server import RedisServer

pytestmark = pytest.mark.skipif(RedisServer.binary is None, reason="redis-server is not installed")


@pytest.fixture
def redis_server():
    server = RedisServer().start()
    try:
        yield server
    finally:
        server.stop()


def test_pool_put_get_release_expiry(redis_server):
    from mesh._pool_redis import RedisPool, fetch

    pool = RedisPool(redis_server.url, max_expire_time=1, namespace="t1")
    big = b"z" * 10_000_000
    pool.put("task-a", ({"op": "ok"}, b"\xc0", [big]))
    assert pool.get("task-a") == ({"op": "ok"}, b"\xc0", [big])
    assert fetch(redis_server.url, "task-a")[2][0] == big  # any peer can read it
    assert len(pool) == 1
    pool.release("task-a")
    assert pool.get("task-a") is None and len(pool) == 0
    pool.put("task-b", ({"op": "ok"}, b"\x01", []))
    wait_until(lambda: pool.get("task-b") is None, timeout=5)  # expired after max_expire_time
    pool.close()


def test_redis_down_gives_clear_errors_and_the_pool_recovers(redis_server):
    from mesh._pool_redis import RedisPool, RedisPoolError

    pool = RedisPool(redis_server.url, namespace="t2")
    pool.put("x", ({"op": "ok"}, b"\x01", []))
    redis_server.stop()
    t = time.perf_counter()
    with pytest.raises(RedisPoolError, match="127.0.0.1"):
        pool.get("x")
    with pytest.raises(RedisPoolError):
        pool.put("y", ({"op": "ok"}, b"\x01", []))
    assert time.perf_counter() - t < 10
    redis_server.start()
    pool.put("y", ({"op": "ok"}, b"\x02", []))
    assert pool.get("y") == ({"op": "ok"}, b"\x02", [])
    pool.close()


def test_results_survive_the_producers_restart_and_its_absence(redis_server, spawn_server):
    srv = spawn_server(port=0, pool_type="redis", redis_url=redis_server.url)
    port = srv.port
    prod = Producer(to_dist={"host": srv.host, "port": srv.port})
    fut = prod.make(1000)
    assert fut.result(timeout=10) == b"p" * 1000
    other = mesh.AsyncResult(srv.address, fut._mesh_task)  # another holder, as if passed along
    other.__dict__["_mesh_pool"] = redis_server.url
    srv._proc.kill()
    srv._proc.wait(10)
    assert other.result(timeout=10) == b"p" * 1000  # read from Redis while the producer is down
    again = spawn_server(port=port, pool_type="redis", redis_url=redis_server.url)
    assert mesh.AsyncResult(again.address, fut._mesh_task).result(timeout=10) == b"p" * 1000  # and after its restart


def test_passed_future_carries_the_pool(redis_server, spawn_server):
    import pickle

    srv = spawn_server(port=0, pool_type="redis", redis_url=redis_server.url)
    prod = Producer(to_dist={"host": srv.host, "port": srv.port})
    fut = prod.make(10)
    copy = pickle.loads(pickle.dumps(fut))
    assert copy._mesh_pool == redis_server.url
    assert copy.result(timeout=10) == b"p" * 10
