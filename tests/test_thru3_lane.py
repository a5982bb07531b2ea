"""thru3: a batch's plain ok completes a lane call in place (LaneReply.reply), once."""

from __future__ import annotations

import threading

from mesh.client._async_lane import LaneReply
from mesh.client._lean import OK_HEADER, Replied


class _Book:
    def __init__(self) -> None:
        self.ended: list[str] = []

    def lane_ended(self, obj: str) -> None:
        self.ended.append(obj)


def _lane(book: _Book) -> tuple[LaneReply, dict]:
    fut = LaneReply(book, "o1")
    d = {"_mesh_call": fut}
    fut._owner = d
    return fut, d


def test_a_plain_ok_is_kept_as_its_body_and_ends_the_call_once() -> None:
    book = _Book()
    fut, d = _lane(book)
    fut.reply({"op": "ok", "id": 1}, b"\x01")
    assert fut.done() and fut.result() == (OK_HEADER, b"\x01", ())
    assert type(d["_mesh_call"]) is Replied and d["_mesh_call"].body == b"\x01"
    assert fut._owner is None
    fut.reply({"op": "ok", "id": 1}, b"\x02")  # a second reply (a duplicate) changes nothing
    fut.set_exception(RuntimeError("late"))
    assert fut.result() == (OK_HEADER, b"\x01", ()) and book.ended == ["o1"]


def test_an_error_or_a_big_reply_is_kept_whole_and_ends_the_call_once() -> None:
    for header in ({"op": "err", "id": 2}, {"op": "ok", "id": 2, "big": True}):
        book = _Book()
        fut, d = _lane(book)
        fut.reply(header, b"\xc0")
        assert fut.result() == (header, b"\xc0", [])
        assert d["_mesh_call"] is fut  # not compacted: the general read decodes it
        fut.reply({"op": "ok", "id": 2}, b"\x01")
        assert fut.result() == (header, b"\xc0", []) and book.ended == ["o1"]


def test_a_waiter_wakes_on_a_plain_ok() -> None:
    book = _Book()
    fut, _ = _lane(book)
    got: list = []
    waiter = threading.Thread(target=lambda: got.append(fut.result(10)))
    waiter.start()
    fut.reply({"op": "ok", "id": 3}, b"\x03")
    waiter.join(10)
    assert not waiter.is_alive() and got == [(OK_HEADER, b"\x03", ())] and book.ended == ["o1"]
