from __future__ import annotations

import io
from pathlib import Path

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
