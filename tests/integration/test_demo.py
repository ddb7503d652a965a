"""`make demo` keeps working: the whole push, end to end, as a new user would run it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.support import ROOT

pytestmark = [pytest.mark.registry, pytest.mark.slow]  # bench.demo starts registries and a broker


def test_demo_runs_end_to_end() -> None:
    run = subprocess.run(
        [sys.executable, "-m", "bench.demo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.strip().splitlines()
    guid = "[0-9a-f-]{36}"
    assert re.fullmatch(rf"127\.0\.0\.1:\d+/staging/{guid}/{guid}@sha256:[0-9a-f]{{64}}", lines[-1])
    trail = [line.split()[2] for line in lines if re.match(r"\s+\d+ \d{4}-", line)]
    assert trail[-4:] == [
        "token.issued",
        "token.redeemed",
        "staging.completed",
        "credentials.purged",
    ]
