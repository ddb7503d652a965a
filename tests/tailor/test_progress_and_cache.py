from __future__ import annotations

import io
from pathlib import Path

import pyte
import pytest

from tailor.blobcache import MemoryLocations, SqliteLocations
from tailor.progress import LineProgress, TerminalProgress, for_stream


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_line_progress_prints_one_line_per_finished_blob() -> None:
    out = io.StringIO()
    progress = for_stream(out)
    assert isinstance(progress, LineProgress)
    progress.start("sha256:" + "a" * 64, 2 * 1048576)
    progress.advance("sha256:" + "a" * 64, 1048576)
    assert out.getvalue() == ""
    progress.finish("sha256:" + "a" * 64, "copied")
    assert out.getvalue() == "  copied sha256:aaaaaaaaaaaa 2.0 MiB\n"


def test_terminal_progress_draws_live_lines() -> None:
    out = Tty()
    progress = for_stream(out)
    assert isinstance(progress, TerminalProgress)
    progress.start("sha256:" + "b" * 64, 1048576)
    progress.advance("sha256:" + "b" * 64, 524288)
    progress.finish("sha256:" + "b" * 64, "copied")
    text = out.getvalue()
    assert " copying sha256:bbbbbbbbbbbb" in text
    assert "\x1b[1F\x1b[J" in text  # the live line is cleared before the final one
    assert text.endswith("  copied sha256:bbbbbbbbbbbb 1.0 MiB\n")


@pytest.mark.parametrize("columns", [40, 24, 80])
def test_live_lines_leave_no_stale_rows_on_a_narrow_terminal(columns: int) -> None:
    """Reported: a 40-column terminal kept stale progress rows (each live line wrapped
    into two rows, and the redraw moved up one). The output is played on a VT100
    emulator (pyte) of that width: at the end the screen holds the finished lines only."""
    out = Tty()
    progress = TerminalProgress(out, columns=lambda: columns)
    digests = [f"sha256:{c * 64}" for c in "abc"]
    for i, digest in enumerate(digests):
        progress.start(digest, (i + 1) * 1048576)
    for _ in range(3):
        for digest in digests:
            progress.advance(digest, 300_000)
            progress._last = 0.0  # draw every time, as a slow copy would over seconds
    for digest in digests:
        progress.finish(digest, "copied")
    screen = pyte.Screen(columns, 12)
    pyte.Stream(screen).feed(out.getvalue().replace("\n", "\r\n"))
    rows = [row.rstrip() for row in screen.display if row.strip()]
    finished = [f"  copied {d[:19]} {n}.0 MiB" for n, d in enumerate(digests, 1)]
    wrapped = [line[i : i + columns] for line in finished for i in range(0, len(line), columns)]
    assert rows == wrapped, rows  # a finished line may wrap: it stays, nothing is redrawn


def test_sqlite_locations_rank_by_recency_and_forget(tmp_path: Path) -> None:
    path = tmp_path / "c" / "blob-locations.sqlite"
    for store in (SqliteLocations(path), MemoryLocations()):
        store.record("reg:5000", "sha256:x", "a")
        store.record("reg:5000", "sha256:x", "b")
        store.record("reg:5000", "sha256:x", "c")
        store.record("other:5000", "sha256:x", "z")
        assert store.candidates("reg:5000", "sha256:x", exclude="c") == ["b", "a"]
        store.forget("reg:5000", "sha256:x", "b")
        assert store.candidates("reg:5000", "sha256:x", exclude="") == ["c", "a"]
    # The file survives the process: a later run sees what an earlier one recorded.
    assert SqliteLocations(path).candidates("other:5000", "sha256:x", exclude="") == ["z"]
