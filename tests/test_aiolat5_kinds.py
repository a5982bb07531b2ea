"""The coroutine lane's method-kind cache (``mesh.server._loop_calls._on_loop``): the last class
asked about is read without a WeakKeyDictionary lookup, and the answers stay those of each class."""

from __future__ import annotations

import gc
import threading

import mesh.server._loop_calls as loop_calls


class _A:
    async def coro(self) -> int:
        return 1

    def plain(self) -> int:
        return 2


class _B:
    def coro(self) -> int:  # the same name, not a coroutine function here
        return 3

    async def plain(self) -> int:
        return 4


def test_alternating_classes_get_their_own_answers() -> None:
    a, b = _A(), _B()
    for _ in range(3):
        assert loop_calls._on_loop(a, "coro") is True
        assert loop_calls._on_loop(b, "coro") is False
        assert loop_calls._on_loop(a, "plain") is False
        assert loop_calls._on_loop(b, "plain") is True
        assert loop_calls._on_loop(a, "missing") is False


def test_an_instance_attribute_shadows_the_method_even_for_the_cached_class() -> None:
    a = _A()
    assert loop_calls._on_loop(_A(), "coro") is True  # (the class is the last one asked about)
    a.coro = lambda: 5  # type: ignore[method-assign]
    assert loop_calls._on_loop(a, "coro") is False


def test_the_last_class_is_held_weakly() -> None:
    cls = type("Gone", (), {"m": _A.coro})
    assert loop_calls._on_loop(cls(), "m") is True
    ref = loop_calls._last[0][0]
    del cls
    gc.collect()
    assert ref() is None
    assert loop_calls._on_loop(_A(), "coro") is True


def test_threads_asking_about_different_classes_never_mix_their_answers() -> None:
    wrong: list[str] = []

    def ask(obj: object, expected: bool) -> None:
        for _ in range(2000):
            if loop_calls._on_loop(obj, "coro") is not expected:
                wrong.append(type(obj).__name__)

    threads = [threading.Thread(target=ask, args=(_A(), True)), threading.Thread(target=ask, args=(_B(), False))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not wrong
