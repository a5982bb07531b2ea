"""Durable agents: checkpoints after each completed call, restarts on another server, proxies that follow.

Servers that die are subprocesses killed with SIGKILL; the restart target is the test process's
child server (discovery is off in the tests), started on the object's store.
"""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import threading

import pytest
from conftest import TESTS, run_cli, wait_until
from durable_lib import AsyncCounter, Caller, Counter, Ledger, Notes

import mesh
from mesh import _placement
from mesh._core import ckpt_log
from mesh._core.stores import open_store
from tests.conftest import freeze


def ckpt(store_dir: str, object_id: str) -> tuple[int, object]:
    """(version, state) of an object's last checkpoint in a directory store."""
    version, data = ckpt_log.read(open_store(store_dir), object_id)  # the base and its deltas
    return version, pickle.loads(data)


def on(srv, **options) -> dict:
    return {"host": srv.host, "port": srv.port, **options}


def kill(srv) -> None:
    os.kill(srv.pid, signal.SIGKILL)
    srv._proc.wait(10)


def call_after_death(fn, *args):
    """The first call after a SIGKILL may be the one that was in flight (it fails once); then it works."""
    try:
        return fn(*args)
    except mesh.ServerUnavailable:
        return fn(*args)


@pytest.fixture
def store(tmp_path) -> str:
    return str(tmp_path / "state")


def test_a_checkpoint_follows_every_completed_call_and_none_a_call_that_raised(server_in, store):
    srv = server_in(store)
    c = Counter(1, to_dist=on(srv, checkpoint=True))
    assert ckpt(store, c._mesh_id) == (0, {"n": 1, "log": []})  # the constructor's state, at creation
    assert c.add(2) == 3
    assert ckpt(store, c._mesh_id) == (1, {"n": 3, "log": [2]})
    with pytest.raises(ValueError, match="refused"):
        c.add_then_fail(100)
    assert ckpt(store, c._mesh_id)[0] == 1  # a call that raised saved nothing
    assert c.get() == 103
    assert ckpt(store, c._mesh_id) == (2, {"n": 103, "log": [2]})  # private attributes are not state


def test_state_dict_is_the_state_when_the_class_has_one(server_in, store):
    srv = server_in(store)
    ledger = Ledger(to_dist=on(srv, checkpoint=True))
    ledger.write("a")
    ledger.write("b")
    assert ckpt(store, ledger._mesh_id) == (2, {"entries": ["a", "b"]})


def test_options_are_checked_at_the_call():
    with pytest.raises(ValueError, match="checkpoint must be"):
        Counter(to_dist={"checkpoint": "always"})
    with pytest.raises(ValueError, match="max_restarts"):
        Counter(to_dist={"max_restarts": -1})
    with pytest.raises(ValueError, match="max_restarts"):
        Counter(to_dist=mesh.DistConf(max_restarts="3"))


def test_sigkill_restarts_the_object_elsewhere_with_every_completed_call_and_not_the_running_one(
    spawn_server, store, tmp_path
):
    srv = spawn_server(state_store=store)
    c = Counter(10, to_dist=on(srv, checkpoint=True, max_restarts=2))
    assert [c.add(1), c.add(2)] == [11, 13]
    gate = str(tmp_path / "gate")
    errors: list[BaseException] = []

    def running() -> None:
        try:
            c.hold(1000, gate)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=running)
    t.start()
    wait_until(lambda: os.path.exists(gate + ".started"), timeout=10)
    kill(srv)
    t.join(20)
    assert len(errors) == 1 and isinstance(errors[0], mesh.ServerUnavailable), errors
    assert c.get() == 13  # the restored object: both completed calls, not the one that was running
    assert c.log == [1, 2]
    assert c._mesh_address == _placement.child().address
    assert c.add(5) == 18
    record = open_store(store).record(c._mesh_id)
    assert record.gen == 1 and record["address"] == c._mesh_address


def test_after_max_restarts_the_proxy_gives_server_unavailable(spawn_server, store):
    srv = spawn_server(state_store=store)
    c = Counter(to_dist=on(srv, checkpoint=True, max_restarts=1))
    c.add(1)
    kill(srv)
    assert call_after_death(c.add, 1) == 2  # restart 1 of 1
    child = _placement.child()
    os.kill(child.pid, signal.SIGKILL)
    child._proc.wait(10)
    with pytest.raises(mesh.ServerUnavailable):
        c.add(1)
    with pytest.raises(mesh.ServerUnavailable, match="max_restarts=1"):
        c.add(1)


def test_without_checkpoint_max_restarts_rebuilds_from_the_constructor(spawn_server, store):
    srv = spawn_server(state_store=store)
    c = Counter(7, to_dist=on(srv, max_restarts=1))
    assert c.add(1) == 8
    kill(srv)
    assert call_after_death(c.get) == 7  # the state is lost, as with Ray's max_restarts


def test_without_max_restarts_a_checkpointed_object_is_saved_but_not_moved(spawn_server, store):
    srv = spawn_server(state_store=store)
    c = Counter(to_dist=on(srv, checkpoint=True))
    c.add(4)
    kill(srv)
    for _ in range(2):
        with pytest.raises(mesh.ServerUnavailable):
            c.get()
    assert ckpt(store, c._mesh_id) == (1, {"n": 4, "log": [4]})
    assert _placement.child() is None


def test_proxies_held_by_other_agents_follow_the_restored_object(spawn_server, store):
    a = spawn_server(state_store=store)
    b = spawn_server()
    c = Counter(to_dist=on(a, checkpoint=True, max_restarts=1))
    caller = Caller(to_dist=on(b))
    caller.keep(c)
    assert caller.add(1) == 1
    kill(a)
    assert call_after_death(c.add, 10) == 11  # restored by this process, on its child server
    assert caller.add(100) == 111  # the proxy inside the agent on b finds it through the store
    assert c.get() == 111


def test_async_agents_are_durable_too(spawn_server, store):
    srv = spawn_server(state_store=store)
    c = AsyncCounter(to_dist=on(srv, checkpoint=True, max_restarts=1))
    assert c.add(2).result(10) == 2
    assert c.add(3).result(10) == 5
    assert ckpt(store, c._mesh_id) == (2, {"n": 5})
    kill(srv)
    assert call_after_death(c.get) == 5
    assert c.add(1).result(10) == 6


def test_an_agents_memory_survives_its_server(spawn_server, store):
    srv = spawn_server(state_store=store)
    agent = Notes("notes", to_dist=on(srv, checkpoint=True, max_restarts=1))
    for i in range(3):
        agent(mesh.Msg("user", f"note {i}")).result(10)
    agent_id = agent.agent_id
    kill(srv)
    memory = call_after_death(lambda: agent.memory)
    assert [m.content for m in memory] == ["note 0", "note 1", "note 2"]
    assert agent.agent_id == agent_id
    assert agent(mesh.Msg("user", "again")).result(10).content == "4 notes"


def test_one_new_activation_when_several_processes_notice_at_once(spawn_server, store, tmp_path):
    srv = spawn_server(state_store=store)
    c = Counter(to_dist=on(srv, checkpoint=True, max_restarts=3))
    c.add(1)
    blob = str(tmp_path / "proxy.pickle")
    with open(blob, "wb") as fh:
        pickle.dump(c, fh)
    go = str(tmp_path / "go")
    script = (
        f"import sys, os, time, pickle; sys.path.insert(0, {TESTS!r})\n"
        "import mesh\n"
        f"c = pickle.load(open({blob!r}, 'rb'))\n"
        "print('ready', flush=True)\n"
        f"while not os.path.exists({go!r}): time.sleep(0.005)\n"
        "try:\n    c.add(1)\nexcept mesh.ServerUnavailable:\n    c.add(1)\n"
        "print(c._mesh_address, flush=True)\n"
        "sys.stdin.read()\n"  # stay up (its child server may be the winner) until the test is done
    )
    procs = [subprocess.Popen([sys.executable, "-c", script], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    try:
        for p in procs:
            assert p.stdout.readline().strip() == "ready"
        kill(srv)
        open(go, "w").close()
        mine = call_after_death(c.add, 1)
        addresses = {p.stdout.readline().strip() for p in procs} | {c._mesh_address}
        assert len(addresses) == 1, addresses  # every process reached the same, single activation
        assert open_store(store).record(c._mesh_id).gen == 1
        assert c.get() == 4 and mine in (2, 3, 4)
    finally:
        for p in procs:
            p.stdin.close()
            p.wait(20)
            p.stdout.close()


def test_unpicklable_state_is_reported_naming_the_object_and_the_previous_checkpoint_stays(server_in, store):
    srv = server_in(store)
    c = Counter(to_dist=on(srv, checkpoint=True))
    c.add(1)
    with pytest.raises(mesh.RemoteError, match=f"{c._mesh_id}.*cannot be pickled") as info:
        c.make_unpicklable()
    assert isinstance(info.value, mesh.CheckpointError)
    assert ckpt(store, c._mesh_id) == (1, {"n": 1, "log": [1]})
    c.drop_unpicklable()  # the state is version 1's again: nothing new to write
    assert ckpt(store, c._mesh_id)[0] == 1
    c.add(1)
    assert ckpt(store, c._mesh_id) == (2, {"n": 2, "log": [1, 1]})


def test_a_raising_state_dict_is_reported_and_the_previous_checkpoint_stays(server_in, store):
    srv = server_in(store)
    ledger = Ledger(to_dist=on(srv, checkpoint=True))
    ledger.write("kept")
    with pytest.raises(mesh.CheckpointError, match=f"{ledger._mesh_id}.*state_dict\\(\\) raised RuntimeError"):
        ledger.break_state()
    assert ckpt(store, ledger._mesh_id) == (1, {"entries": ["kept"]})


def test_a_corrupted_checkpoint_fails_its_restore_clearly_and_loses_nothing_else(spawn_server, store):
    srv = spawn_server(state_store=store)
    bad = Counter(to_dist=on(srv, checkpoint=True, max_restarts=2))
    good = Counter(to_dist=on(srv, checkpoint=True, max_restarts=2))
    bad.add(1)
    good.add(2)
    kill(srv)
    path = os.path.join(store, bad._mesh_id, "ckpt")
    with open(path, "r+b") as fh:
        fh.truncate(os.path.getsize(path) // 2)
    with pytest.raises(mesh.MeshError) as info:
        call_after_death(bad.get)
    assert bad._mesh_id in str(info.value) and store in str(info.value) and "corrupted" in str(info.value)
    with pytest.raises(mesh.StateStoreError, match=bad._mesh_id):  # said again, no restart is spent on it
        bad.get()
    assert call_after_death(good.get) == 2


def test_a_store_that_fails_fails_the_call_unless_best_effort(server_in, store, caplog):
    srv = server_in(store)
    strict = Counter(to_dist=on(srv, checkpoint=True))
    loose = Counter(to_dist=on(srv, checkpoint="best-effort"))
    for obj in (strict, loose):  # the object's folder becomes a file: every write fails
        folder = os.path.join(store, obj._mesh_id)
        shutil.rmtree(folder)
        open(folder, "w").close()
    with pytest.raises(mesh.StateStoreError, match=f"{strict._mesh_id}.*best-effort"):
        strict.add(1)
    with caplog.at_level("WARNING", logger="mesh.server"):
        assert loose.add(1) == 1
    assert any("best-effort" in r.getMessage() for r in caplog.records)


def test_status_shows_durable_objects_and_a_new_server_lists_what_it_could_restore(spawn_server, store):
    srv = spawn_server(state_store=store)
    c = Counter(to_dist=on(srv, checkpoint=True, max_restarts=1))
    c.add(1)
    c.add(1)
    out = run_cli("status", srv.address, "--json")
    row = next(a for a in __import__("json").loads(out.stdout)["agents"] if a["id"] == c._mesh_id)
    assert row["durable"] == {"checkpoint": True, "version": 2, "gen": 0, "max_restarts": 1, "bytes": row["durable"]["bytes"]}
    text = run_cli("status", srv.address).stdout
    assert "checkpoint v2, restarts 0/1" in text
    other = spawn_server(state_store=store)

    def listed() -> bool:
        info = __import__("json").loads(run_cli("status", other.address, "--json").stdout)
        return any(r["id"] == c._mesh_id and r["version"] == 2 for r in info.get("restorable", []))

    wait_until(listed, timeout=20, interval=0.2)
    assert c._mesh_id in run_cli("status", other.address).stdout


def test_deleting_a_durable_object_removes_its_checkpoint(server_in, store):
    srv = server_in(store)
    c = Counter(to_dist=on(srv, checkpoint=True, max_restarts=1))
    c.add(1)
    assert os.path.isdir(os.path.join(store, c._mesh_id))
    mesh.delete(c)
    wait_until(lambda: not os.path.exists(os.path.join(store, c._mesh_id)))


def test_the_checkpoint_of_an_object_whose_creator_left_is_removed(spawn_server, store):
    srv = spawn_server(state_store=store)
    code = (
        "from durable_lib import Counter\n"
        "c = Counter(to_dist={'host': HOST, 'port': PORT, 'checkpoint': True, 'max_restarts': 1})\n"
        "c.add(1)\nprint(c._mesh_id, flush=True)\n"
    )
    script = (f"import sys; sys.path.insert(0, {TESTS!r})\nimport mesh\nHOST, PORT = {srv.host!r}, {srv.port}\n" + code)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=30)
    object_id = out.stdout.strip()
    assert object_id, out.stderr
    wait_until(lambda: not os.path.exists(os.path.join(store, object_id)), timeout=10)  # its bye ended the lease


@pytest.fixture
def server_in():
    started = []

    def make(state_store: str) -> mesh.AgentServer:
        srv = mesh.AgentServer(port=0, advertise=False, state_store=state_store).launch(in_subprocess=False)
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.shutdown()


def test_a_frozen_server_is_replaced_and_its_stale_copy_cannot_overwrite_the_checkpoint(spawn_server, store):
    mesh.init(heartbeat_timeout=1.0)
    srv = spawn_server(state_store=store)
    c = Counter(to_dist=on(srv, checkpoint=True, max_restarts=1))
    c.add(1)
    old = c._mesh_address
    freeze(srv.pid)  # a partitioned host: only the heartbeat timeout tells
    try:
        assert call_after_death(c.add, 1) == 2
        assert c._mesh_address != old
    finally:
        os.kill(srv.pid, signal.SIGCONT)
    stale = mesh.RpcObject(old, c._mesh_id, "Counter", dict(Counter._mesh_methods))  # a proxy that never learned
    with pytest.raises(mesh.ServerUnavailable, match="restarted on another server"):
        stale.add(100)
    assert ckpt(store, c._mesh_id)[1]["n"] == 2
    assert c.get() == 2
