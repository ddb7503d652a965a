"""Progress on stderr: live per-blob lines on a terminal, one line per finished blob otherwise."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Protocol, TextIO

__all__ = ["LineProgress", "Progress", "SilentProgress", "TerminalProgress", "for_stream"]


def _mib(n: int) -> str:
    return f"{n / 1048576:.1f} MiB"


class Progress(Protocol):
    def start(self, digest: str, size: int) -> None: ...

    def advance(self, digest: str, n: int) -> None: ...

    def finish(self, digest: str, how: str) -> None: ...


class SilentProgress:
    def start(self, digest: str, size: int) -> None:
        pass

    def advance(self, digest: str, n: int) -> None:
        pass

    def finish(self, digest: str, how: str) -> None:
        pass


class LineProgress:
    """One line per finished blob: what happened to it and how big it was."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._sizes: dict[str, int] = {}
        self._lock = threading.Lock()

    def start(self, digest: str, size: int) -> None:
        with self._lock:
            self._sizes[digest] = size

    def advance(self, digest: str, n: int) -> None:
        pass

    def finish(self, digest: str, how: str) -> None:
        with self._lock:
            size = self._sizes.pop(digest, 0)
            self._out.write(f"{how:>8} {digest[:19]} {_mib(size)}\n")
            self._out.flush()


def _columns(out: TextIO) -> Callable[[], int]:
    """The terminal's width, asked at each redraw (it may be resized), 80 when unknown."""

    def columns() -> int:
        try:
            return os.get_terminal_size(out.fileno()).columns
        except (OSError, ValueError, AttributeError):
            return 80

    return columns


class TerminalProgress:
    """A live line per blob in flight, redrawn at most ten times a second.

    Each live line is cut to the terminal's width: a line that wrapped would take two
    rows, and moving up one row per line to redraw would leave stale rows behind."""

    def __init__(self, out: TextIO, columns: Callable[[], int] | None = None) -> None:
        self._out = out
        self._columns = columns or _columns(out)
        self._active: dict[str, list[int]] = {}
        self._drawn = 0
        self._last = 0.0
        self._lock = threading.Lock()

    def start(self, digest: str, size: int) -> None:
        with self._lock:
            self._active[digest] = [0, size]
            self._draw(force=True)

    def advance(self, digest: str, n: int) -> None:
        with self._lock:
            if digest in self._active:
                self._active[digest][0] += n
            self._draw()

    def finish(self, digest: str, how: str) -> None:
        with self._lock:
            _, size = self._active.pop(digest, [0, 0])
            self._clear()
            self._out.write(f"{how:>8} {digest[:19]} {_mib(size)}\n")
            self._draw(force=True)

    def _clear(self) -> None:
        if self._drawn:
            self._out.write(f"\x1b[{self._drawn}F\x1b[J")
            self._drawn = 0

    def _draw(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last < 0.1:
            return
        self._last = now
        self._clear()
        width = max(self._columns() - 1, 1)  # never the last column: some terminals wrap
        for digest, (done, size) in self._active.items():
            pct = 100 * done // size if size else 100
            line = f" copying {digest[:19]} {_mib(done)} / {_mib(size)} {pct:3d}%"
            self._out.write(line[:width] + "\n")
        self._drawn = len(self._active)
        self._out.flush()


def for_stream(out: TextIO) -> Progress:
    return TerminalProgress(out) if out.isatty() else LineProgress(out)
