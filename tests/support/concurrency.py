"""Races on purpose: calls released at the same moment from their own threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")


def together(calls: Sequence[Callable[[], T]], timeout: float = 120) -> list[T]:
    """Run each call in its own thread, all let go at once by a barrier; return their
    results in the order given (a call's exception is raised here)."""
    barrier = threading.Barrier(len(calls))
    results: list[tuple[bool, object]] = [(False, None)] * len(calls)

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = (True, calls[i]())
        except BaseException as error:  # handed to the caller below
            results[i] = (False, error)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
        assert not t.is_alive(), f"a racing call did not end within {timeout} s"
    for ok, value in results:
        if not ok:
            raise value  # type: ignore[misc]
    return [value for _, value in results]  # type: ignore[misc]
