"""The state store of durable agents: directory and Redis, sealed values, exclusive claims, atomic writes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import pytest
from conftest import ROOT, wait_until
from durable_lib import Counter
from hypothesis import HealthCheck, given, settings, strategies as st
from redis_server import RedisServer

import mesh
from mesh._core.state_store import DirectoryStore, seal, state_key, unseal
from mesh._core.stores import open_store

needs_redis = pytest.mark.skipif(RedisServer.binary is None, reason="redis-server is not installed")


@pytest.fixture(params=["directory", "redis"])
def any_store(request, tmp_path):
    if request.param == "directory":
        return DirectoryStore(str(tmp_path / "state"))
    if RedisServer.binary is None:
        pytest.skip("redis-server is not installed")
    from mesh._core._state_redis import RedisStore

    return RedisStore(request.getfixturevalue("redis_url"))


def _record(gen: int, address: str = "tcp://127.0.0.1:1") -> dict:
    return {"gen": gen, "address": address, "cls": "m:C", "max_restarts": 3}


def test_exactly_one_claim_of_a_generation_wins(any_store):
    object_id = os.urandom(8).hex()
    assert any_store.claim(object_id, _record(0))
    wins: list[str] = []
    barrier = threading.Barrier(8)

    def claim(i: int) -> None:
        barrier.wait()
        if any_store.claim(object_id, _record(1, f"tcp://127.0.0.1:{1000 + i}")):
            wins.append(f"tcp://127.0.0.1:{1000 + i}")

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(wins) == 1
    assert any_store.record(object_id) == {**_record(1, wins[0])}
    assert not any_store.claim(object_id, _record(3))  # generations come in order
    assert not any_store.claim(object_id, _record(1))


def test_a_fenced_write_fails_once_the_object_moved_on(any_store):
    object_id = os.urandom(8).hex()
    any_store.claim(object_id, _record(0))
    assert any_store.put_fenced(object_id, "ckpt", b"v1", 0)
    any_store.claim(object_id, _record(1))
    assert not any_store.put_fenced(object_id, "ckpt", b"stale", 0)
    assert any_store.get(object_id, "ckpt") == b"v1"
    assert object_id in any_store.ids()
    any_store.drop(object_id)
    assert any_store.record(object_id) is None and object_id not in any_store.ids()


def test_processes_racing_for_one_generation_elect_one(tmp_path):
    root = str(tmp_path / "state")
    DirectoryStore(root).claim("obj", _record(0))
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from mesh._core.state_store import DirectoryStore\n"
        f"s = DirectoryStore({root!r})\n"
        "print(s.claim('obj', {'gen': 1, 'address': sys.argv[1]}))\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, f"tcp://h:{i}"], stdout=subprocess.PIPE, text=True)
             for i in range(6)]
    outs = [p.communicate(30)[0].strip() for p in procs]
    assert outs.count("True") == 1, outs


def test_sealed_values_refuse_tampering_and_other_secrets():
    key = state_key(b"s" * 32)
    blob = seal(key, "checkpoint", "obj", b"payload")
    assert unseal(key, "checkpoint", "obj", blob, "here") == b"payload"
    forged = seal(b"", "checkpoint", "obj", b"evil pickle")  # written by someone without the secret
    with pytest.raises(mesh.StateStoreError, match="not signed with this mesh's secret"):
        unseal(key, "checkpoint", "obj", forged, "here")
    with pytest.raises(mesh.StateStoreError, match="corrupted"):
        unseal(key, "checkpoint", "other", blob, "here")  # moved to another object's key
    with pytest.raises(mesh.StateStoreError, match="checksum"):
        unseal(b"", "checkpoint", "obj", blob[:-1] + b"x", "here")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_fuzz_stored_bytes_give_a_clear_error_or_a_record(tmp_path, data):
    store = DirectoryStore(str(tmp_path / "fuzz"))
    folder = os.path.join(store.root, "obj")
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "act.00000000"), "wb") as fh:
        fh.write(data)
    try:
        assert isinstance(store.record("obj"), dict)
    except mesh.StateStoreError:
        pass
    for payload in (data, b"{}", b'{"gen": "1"}', b"[1]"):  # well sealed, ill-formed inside
        with open(os.path.join(folder, "act.00000000"), "wb") as fh:
            fh.write(seal(b"", "record", "obj", payload))
        try:
            store.record("obj")
        except mesh.StateStoreError:
            pass


def test_bad_object_ids_never_name_a_path(tmp_path):
    store = DirectoryStore(str(tmp_path / "state"))
    for bad in ("../x", "a/b", "", "x" * 200, ".."):
        with pytest.raises(mesh.StateStoreError, match="cannot name"):
            store.put(bad, "ckpt", b"x")


def test_a_sigkill_mid_write_leaves_the_previous_checkpoint_whole(tmp_path):
    root = str(tmp_path / "state")
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from mesh._core.state_store import DirectoryStore, seal\n"
        f"s = DirectoryStore({root!r})\n"
        "i = 0\n"
        "while True:\n"
        "    s.put('obj', 'ckpt', seal(b'', 'checkpoint', 'obj', bytes([i % 256]) * 4_000_000))\n"
        "    i += 1\n"
        "    if i == 2: print('ready', flush=True)\n"
    )
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        store = DirectoryStore(root)
        payload = unseal(b"", "checkpoint", "obj", store.get("obj", "ckpt"), root)
        assert len(payload) == 4_000_000 and len(set(payload)) == 1


@needs_redis
def test_a_redis_store_restarts_an_agent_after_a_sigkill(spawn_server, redis_url):
    srv = spawn_server(state_store=redis_url)
    c = Counter(3, to_dist={"host": srv.host, "port": srv.port, "checkpoint": True, "max_restarts": 1})
    c.add(1)
    os.kill(srv.pid, signal.SIGKILL)
    srv._proc.wait(10)
    try:
        value = c.get()
    except mesh.ServerUnavailable:
        value = c.get()
    assert value == 4 and c.log == [1]
    assert open_store(redis_url).record(c._mesh_id).gen == 1


@needs_redis
def test_a_redis_store_that_is_down_fails_the_call_unless_best_effort(caplog):
    redis = RedisServer().start()
    try:
        with mesh.AgentServer(port=0, advertise=False, state_store=redis.url) as srv:
            strict = Counter(to_dist={"host": srv.host, "port": srv.port, "checkpoint": True})
            loose = Counter(to_dist={"host": srv.host, "port": srv.port, "checkpoint": "best-effort"})
            redis.stop()
            with pytest.raises(mesh.StateStoreError, match=f"{strict._mesh_id}.*redis://127.0.0.1"):
                strict.add(1)
            with caplog.at_level("WARNING", logger="mesh.server"):
                assert loose.add(1) == 1
            assert any("best-effort" in r.getMessage() for r in caplog.records)
            redis.start()
            wait_until(lambda: _works(strict), timeout=10, interval=0.2)  # the store came back: saved again
    finally:
        redis.stop()


def _works(proxy) -> bool:
    try:
        proxy.add(1)
        return True
    except mesh.StateStoreError:
        return False


@needs_redis
def test_wrong_bytes_in_redis_fail_the_restore_naming_the_object_and_the_store(spawn_server, redis_url):
    srv = spawn_server(state_store=redis_url)
    c = Counter(to_dist={"host": srv.host, "port": srv.port, "checkpoint": True, "max_restarts": 1})
    c.add(1)
    os.kill(srv.pid, signal.SIGKILL)
    srv._proc.wait(10)
    open_store(redis_url)._client.set(f"mesh:durable:{c._mesh_id}:ckpt", b"garbage")
    with pytest.raises(mesh.StateStoreError) as info:
        try:
            c.get()
        except mesh.ServerUnavailable as exc:
            if isinstance(exc, mesh.StateStoreError):
                raise
            c.get()
    assert c._mesh_id in str(info.value) and "redis://127.0.0.1" in str(info.value)
