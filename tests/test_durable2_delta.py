"""Incremental checkpoints (issue 15 point 1): a base, then sealed deltas; restores read the latest
complete version exactly; corruption, forgery, reordering and torn tails are handled."""

from __future__ import annotations

import os
import pickle
import signal
import subprocess
import sys

import cloudpickle
import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings, strategies as st

import mesh
from mesh._core import ckpt_log
from mesh._core.ckpt_log import MAX_DELTAS, Chain, apply, decode_delta, diff, encode_delta
from mesh._core.state_store import DirectoryStore, seal, state_key
from mesh._core.stores import open_store


@pytest.fixture(params=["directory", "redis"])
def any_store(request, tmp_path):
    if request.param == "directory":
        return DirectoryStore(str(tmp_path / "state"), state_key(b"s3cret"))
    from mesh._core._state_redis import RedisStore

    return RedisStore(request.getfixturevalue("redis_url"), state_key(b"s3cret"))


def memory(n: int) -> bytes:
    state = {"name": "m", "memory": [{"role": "user", "content": f"message {i} " + "y" * 40} for i in range(n)]}
    return cloudpickle.dumps(state, protocol=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=3000), st.binary(max_size=3000))
def test_a_diff_applied_rebuilds_the_new_bytes_exactly(old, new):
    assert apply(old, diff(old, new)) == new


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=20000), st.integers(0, 20000), st.binary(max_size=200), st.integers(0, 50))
def test_an_insertion_is_a_small_delta(base, at, inserted, removed):
    at = min(at, len(base))
    new = base[:at] + inserted + base[at + removed:]
    patches = diff(base, new)
    assert apply(base, patches) == new
    assert sum(len(p[2]) for p in patches) <= len(inserted) + 16 * 32


def test_appending_a_message_to_a_memory_of_1000_is_a_delta_of_a_few_hundred_bytes():
    old, new = memory(1000), memory(1001)
    patches = diff(old, new)
    assert apply(old, patches) == new
    assert sum(len(p[2]) for p in patches) < 500 < len(new) // 100


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_the_delta_decoder_raises_only_value_error(data):
    try:
        decode_delta(data)
    except ValueError:
        pass


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_sealed_garbage_as_a_delta_fails_the_read_clearly(tmp_path, payload):
    store = DirectoryStore(str(tmp_path / "fuzz"), state_key(b"k"))
    object_id = "fuzz"
    Chain().write(store, object_id, 0, -1, b"base")  # version 0: a base
    store.append_delta(object_id, seal(store.key, "delta", object_id, payload), 0, 0)
    with pytest.raises(mesh.StateStoreError, match=f"{object_id}.*{store.where}"):
        ckpt_log.read(store, object_id)
    store.drop(object_id)


def test_a_growing_memory_writes_deltas_and_reads_back_every_version_exactly(any_store):
    object_id, chain, version = "grow-" + os.urandom(4).hex(), Chain(), -1
    sizes = []
    for n in range(300, 300 + 2 * MAX_DELTAS + 20):
        data = memory(n)
        current, version, written = chain.write(any_store, object_id, 0, version, data)
        assert current and version == n - 300
        sizes.append(written)
        if n % 37 == 0 or n < 304:
            assert ckpt_log.read(any_store, object_id) == (version, data)
    assert ckpt_log.read(any_store, object_id) == (version, data)
    # a base at first, then deltas of a few hundred bytes, a new base every MAX_DELTAS deltas at most
    assert sizes[0] > 100 and max(sizes[1:MAX_DELTAS]) < 600
    bases = [i for i, s in enumerate(sizes) if s > 2000]
    assert 1 <= len(bases) <= 4
    _, deltas = any_store.get_checkpoint(object_id)
    assert len(deltas) <= MAX_DELTAS
    # the same state again: nothing written, the version stays
    assert chain.write(any_store, object_id, 0, version, data) == (True, version, 0)
    assert ckpt_log.read(any_store, object_id) == (version, data)
    any_store.drop(object_id)
    assert ckpt_log.read(any_store, object_id) is None


def test_writes_of_a_stale_activation_are_fenced_deltas_and_unchanged_ones_too(any_store):
    object_id, chain = "fence-" + os.urandom(4).hex(), Chain()
    assert any_store.claim(object_id, {"gen": 0, "address": "tcp://127.0.0.1:1"})
    _, v, _ = chain.write(any_store, object_id, 0, -1, memory(3))
    _, v, _ = chain.write(any_store, object_id, 0, v, memory(4))
    assert any_store.claim(object_id, {"gen": 1, "address": "tcp://127.0.0.1:2"})
    assert chain.write(any_store, object_id, 0, v, memory(4))[0] is False  # unchanged: still checked
    assert chain.write(any_store, object_id, 0, v, memory(5))[0] is False
    assert ckpt_log.read(any_store, object_id) == (1, memory(4))
    any_store.drop(object_id)


def test_a_tampered_forged_moved_or_reordered_delta_is_refused(any_store):
    object_id, chain, v = "bad-" + os.urandom(4).hex(), Chain(), -1
    for n in range(1, 5):
        _, v, _ = chain.write(any_store, object_id, 0, v, memory(n))
    base, deltas = any_store.get_checkpoint(object_id)
    assert len(deltas) == 3

    def with_deltas(new: list[bytes]) -> None:
        any_store.put_checkpoint(object_id, base, 0, 0)
        for blob in new:
            any_store.append_delta(object_id, blob, 0, 0)

    flipped = deltas[1][:-1] + bytes([deltas[1][-1] ^ 1])
    forged = seal(state_key(b"other"), "delta", object_id, decode_or(deltas[1], any_store.key, object_id))
    moved = seal(any_store.key, "delta", "another", decode_or(deltas[1], any_store.key, object_id))
    for bad in ([deltas[0], flipped, deltas[2]], [deltas[0], forged], [deltas[0], moved], [deltas[1], deltas[0]],
                [deltas[0], deltas[2]]):
        with_deltas(bad)
        with pytest.raises(mesh.StateStoreError) as info:
            ckpt_log.read(any_store, object_id)
        assert object_id in str(info.value) and any_store.where in str(info.value)
    with_deltas(deltas)
    assert ckpt_log.read(any_store, object_id) == (3, memory(4))
    # a delta of another base (a leftover of an older chain) is refused too
    other = encode_delta(1, 0, 7, memory(2), diff(memory(1), memory(2)))
    with_deltas([seal(any_store.key, "delta", object_id, other)])
    with pytest.raises(mesh.StateStoreError, match="base"):
        ckpt_log.read(any_store, object_id)
    any_store.drop(object_id)


def decode_or(blob: bytes, key: bytes, object_id: str) -> bytes:
    from mesh._core.state_store import unseal

    return unseal(key, "delta", object_id, blob, "-")


def test_a_torn_last_frame_in_a_directory_log_is_a_write_that_never_completed(tmp_path):
    store = DirectoryStore(str(tmp_path / "state"))
    chain, v = Chain(), -1
    for n in range(1, 4):
        _, v, _ = chain.write(store, "torn", 0, v, memory(n))
    log = os.path.join(store.root, "torn", f"log.{0:012d}")
    size = os.path.getsize(log)
    _, v4, _ = chain.write(store, "torn", 0, v, memory(4))
    with open(log, "r+b") as fh:
        fh.truncate(size + (os.path.getsize(log) - size) // 2)
    assert ckpt_log.read(store, "torn") == (2, memory(3))  # the previous version, whole
    # a new activation's first write is a base: nothing is ever appended after a torn frame
    fresh = Chain()
    assert fresh.write(store, "torn", 0, 2, memory(5))[1:] == (3, len(store.get("torn", "ckpt")))
    assert not os.path.exists(log)
    assert ckpt_log.read(store, "torn") == (3, memory(5))


def test_a_sigkill_mid_append_leaves_a_complete_version(tmp_path):
    root = str(tmp_path / "state")
    script = (
        f"import sys; sys.path.insert(0, {ROOT!r})\n"
        "from mesh._core.ckpt_log import Chain\n"
        "from mesh._core.state_store import DirectoryStore\n"
        f"s = DirectoryStore({root!r}, fsync=False)\n"
        "c, v = Chain(), -1\n"
        "while True:\n"
        "    _, v, _ = c.write(s, 'obj', 0, v, (bytes([v % 251]) * 200) * (v + 2))\n"
        "    if v == 5: print('ready', flush=True)\n"
    )
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        proc.stdout.close()
        version, data = ckpt_log.read(DirectoryStore(root), "obj")
        assert data == (bytes([(version - 1) % 251]) * 200) * (version + 1)  # what version v was made of
        DirectoryStore(root).drop("obj")


def test_the_directory_fsync_level_is_part_of_the_url(tmp_path):
    path = str(tmp_path / "lazy")
    lazy = open_store(path + "?fsync=0")
    assert isinstance(lazy, DirectoryStore) and lazy.fsync is False
    assert lazy.where == path and lazy.url == path + "?fsync=0"
    assert open_store(lazy.url) is lazy
    assert open_store(f"file://{path}?fsync=0").fsync is False
    assert open_store(path).fsync is True


def test_an_agent_with_a_growing_memory_survives_its_server_from_base_and_deltas(spawn_server, tmp_path):
    from durable_lib import Notes

    store = str(tmp_path / "state")
    srv = spawn_server(state_store=store)
    notes = Notes("n", to_dist={"host": srv.host, "port": srv.port, "checkpoint": True, "max_restarts": 1})
    for i in range(40):
        notes(mesh.Msg("user", f"note {i}")).result(10)
    folder = os.path.join(store, notes._mesh_id)
    logs = [n for n in os.listdir(folder) if n.startswith("log.")]
    assert len(logs) == 1 and os.path.getsize(os.path.join(folder, logs[0])) < 40 * 1000
    os.kill(srv.pid, signal.SIGKILL)
    srv._proc.wait(10)
    try:
        notes(mesh.Msg("user", "after")).result(10)
    except mesh.ServerUnavailable:
        notes(mesh.Msg("user", "after")).result(10)
    memory_after = notes.memory
    assert [m.content for m in memory_after[:40]] == [f"note {i}" for i in range(40)]
    assert memory_after[40].content == "after"
    version, data = ckpt_log.read(open_store(store), notes._mesh_id)
    assert len(pickle.loads(data)["memory"]) == len(memory_after)
