"""The suite's own guard: whatever a test leaves running is stopped after it."""

from __future__ import annotations

import shutil

import pytest

from tests.support.processes import reap, spawn

pytestmark = pytest.mark.slow


def test_a_process_left_running_is_reaped() -> None:
    sleeper = spawn([shutil.which("sleep") or "/bin/sleep", "60"])
    done = spawn([shutil.which("true") or "/bin/true"])
    done.wait(10)
    assert sleeper.poll() is None
    assert reap() == 1  # the one still running; the finished one is not counted
    assert sleeper.poll() is not None
    assert reap() == 0
