"""Issue 16 target 5: ``to_dist()`` without a host places consecutive objects in short runs on one
server (``mesh.client._spread``), so each server's creations batch, and the spread stays even at
every point. ``choose()`` is driven here on a hand-made table of servers: no sockets, no browser."""

from __future__ import annotations

import pytest

from mesh.client import _selection
from mesh.client._selection import ServerInfo
from mesh.client._spread import MAX_RUN, Runs, run_length


class _NoBrowser:
    def servers(self):
        return []


@pytest.fixture
def table(monkeypatch):
    """A settled discovery state with a ``live`` table the test fills; ``choose()`` never settles again."""
    st = _selection._State()
    st.settled = True
    st.refresher = object()  # (a running refresher: none is started)
    monkeypatch.setattr(_selection, "_state", st)
    monkeypatch.setattr(_selection, "_get_browser", lambda: _NoBrowser())

    def add(name: str, capacity: int = 8, agents: int = 0) -> str:
        address = f"tcp://198.18.0.{len(st.live) + 1}:7200"
        st.live[address] = ServerInfo(name=name, address=address, capacity=capacity, load=0, agents=agents)
        return address

    st.add = add  # type: ignore[attr-defined]
    return st


def _counts(st, addresses):
    return {a: st.placed.get(a, 0) for a in addresses}


def _assert_within_a_tenth(counts: dict, n: int, share: float = 0.1) -> None:
    mean = n / len(counts)
    worst = max(abs(c - mean) for c in counts.values())
    assert worst <= share * mean + 1, (n, mean, sorted(counts.values()))


def test_run_length_is_a_twentieth_of_the_average_fill_between_1_and_max_run():
    assert run_length(0, 8) == 1
    assert run_length(5, 1) == 1
    assert run_length(100, 1) == 5
    assert run_length(100, 8) == 40  # in objects of the server's capacity (fill is per unit)
    assert run_length(10**6, 8) == MAX_RUN


def test_the_first_objects_go_one_to_each_server(table):
    servers = [table.add(f"s{i}") for i in range(20)]
    first = [_selection.choose() for _ in range(20)]
    assert sorted(first) == sorted(servers)
    again = [_selection.choose() for _ in range(20)]
    assert sorted(again) == sorted(servers)


def test_runs_keep_every_point_within_a_tenth_of_even_and_the_end_exactly_even(table):
    servers = [table.add(f"s{i}") for i in range(20)]
    counts = dict.fromkeys(servers, 0)
    longest = run = 0
    last = None
    for n in range(1, 40_001):
        a = _selection.choose()
        run = run + 1 if a == last else 1
        longest, last = max(longest, run), a
        counts[a] += 1
        _assert_within_a_tenth(counts, n, share=0.05)
    assert longest >= 90, "consecutive placements were not grouped into runs"
    assert max(counts.values()) - min(counts.values()) <= MAX_RUN
    assert counts == _counts(table, servers)


def test_servers_of_different_capacity_fill_alike(table):
    big, small = table.add("big", capacity=16), table.add("small", capacity=4)
    for _ in range(20_000):
        _selection.choose()
    assert table.placed[big] / 16 == pytest.approx(table.placed[small] / 4, rel=0.1)


def test_a_server_marked_dead_mid_run_gets_nothing_more_and_the_rest_stay_even(table):
    servers = [table.add(f"s{i}") for i in range(10)]
    for _ in range(5_003):
        _selection.choose()
    assert table.runs.left > 0, "the test wants a run in progress"
    dead = table.runs.address
    before = table.placed[dead]
    _selection.mark_dead(dead)
    later = [_selection.choose() for _ in range(5_000)]
    assert dead not in later
    assert table.placed[dead] == before
    rest = {a: table.placed[a] for a in servers if a != dead}
    _assert_within_a_tenth(rest, sum(rest.values()))


def test_a_server_removed_from_the_table_by_a_failed_ping_ends_the_run(table):
    servers = [table.add(f"s{i}") for i in range(4)]
    for _ in range(2_003):
        _selection.choose()
    gone = table.runs.address
    rec = type("Rec", (), {"address": gone, "name": "x", "sources": ("mdns",)})()
    with _selection._cond:
        _selection._record(table, rec, None, _selection.ServerUnavailable("gone"))
    assert table.runs.left == 0
    assert gone not in {_selection.choose() for _ in range(1_000)}
    assert set(servers) - {gone} == {_selection.choose() for _ in range(1_000)}


def test_a_server_added_mid_run_catches_up_then_all_stay_even(table):
    servers = [table.add(f"s{i}") for i in range(10)]
    for _ in range(10_000):
        _selection.choose()
    late = table.add("late")
    for _ in range(11_000):
        _selection.choose()
    counts = _counts(table, [*servers, late])
    _assert_within_a_tenth(counts, 21_000)


def test_the_servers_own_counts_are_balanced_too(table):
    """A server that already holds objects (another client's) gets fewer until all are level."""
    full = table.add("full", agents=800)
    empty = [table.add(f"e{i}") for i in range(3)]
    for _ in range(2_400):
        _selection.choose()
    total = {a: table.placed.get(a, 0) for a in empty}
    total[full] = 800 + table.placed.get(full, 0)
    _assert_within_a_tenth(total, 3_200)


def test_runs_alone_start_on_the_least_filled_server():
    live = [ServerInfo("a", "A", 8, 0, agents=10), ServerInfo("b", "B", 8, 0, agents=2)]
    assert Runs({}).start(live, {}) == "B"
    assert Runs({"B": 20}).start(live, {}) == "A"  # B's 2 + 20 placed since: A is emptier
    assert Runs({"B": 20}).start(live, {"B": 20}) == "A"  # it answered 2: it still holds at least our 20
    r = Runs({"B": 5})
    assert r.start(live, {"B": 5}) == "B"
    assert r.placed == {"B": 6}
    r.drop("A")
    assert r.address == "B"  # (the run is on B: unchanged)
    r.drop()
    assert r.take() is None


def test_placements_from_several_threads_are_each_counted_once(table):
    import threading

    servers = [table.add(f"s{i}") for i in range(7)]
    got: list[str] = []

    def place() -> None:
        mine = [_selection.choose() for _ in range(5_000)]
        got.extend(mine)

    threads = [threading.Thread(target=place) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(got) == 20_000
    counts = _counts(table, servers)
    assert sum(counts.values()) == 20_000
    assert counts == {a: got.count(a) for a in servers}
    _assert_within_a_tenth(counts, 20_000)


def test_one_look_over_the_servers_plans_a_round_of_runs(table, monkeypatch):
    """hosts2: the least filled server is looked for once per round of H runs, not once per run."""
    servers = [table.add(f"s{i}") for i in range(50)]
    looks = []
    real = Runs.start

    def counted(self, live, base):
        looks.append(len(live))
        return real(self, live, base)

    monkeypatch.setattr(Runs, "start", counted)
    runs, last = 0, None
    counts = dict.fromkeys(servers, 0)
    for n in range(1, 20_001):
        a = _selection.choose()
        runs += a != last
        last = a
        counts[a] += 1
        _assert_within_a_tenth(counts, n, share=0.05)
    assert runs >= 50 * len(looks) - 50, (runs, len(looks))  # each look planned ~H runs
    assert len(looks) <= runs / 40


def test_a_server_dropped_mid_round_leaves_the_plan_and_a_new_one_joins_the_next_round(table):
    servers = [table.add(f"s{i}") for i in range(10)]
    for _ in range(2_000):
        _selection.choose()
    gone = servers[3]
    _selection.mark_dead(gone)
    before = table.placed.get(gone, 0)
    late = table.add("late")
    made = [_selection.choose() for _ in range(3_000)]
    assert table.placed.get(gone, 0) == before and gone not in made
    assert late in made[: 10 * 40]  # within a round or so (runs here are at most ~40 objects)
    rest = {a: table.placed.get(a, 0) for a in servers + [late] if a != gone}
    _assert_within_a_tenth(rest, sum(rest.values()))


def test_the_plan_picks_what_a_look_per_run_would_pick(table):
    """hosts2: a round's plan is the choices H looks in a row would make (the same spread, cheaper)."""
    caps = [8, 8, 4, 16, 8, 2, 8, 8, 32, 8, 8, 4, 8]
    servers = [table.add(f"s{i}", capacity=c) for i, c in enumerate(caps)]
    cap = dict(zip(servers, caps, strict=True))
    placed = dict.fromkeys(servers, 0)
    expected, left, current = [], 0, None
    for _ in range(20_000):  # the reference: the least filled server looked for at every run's start
        if not left:
            fills = {a: placed[a] / cap[a] for a in servers}
            current = min(servers, key=lambda a: (fills[a], a))
            left = run_length(sum(fills.values()) / len(servers), cap[current])
        left -= 1
        placed[current] += 1
        expected.append(current)
    assert [_selection.choose() for _ in range(20_000)] == expected
