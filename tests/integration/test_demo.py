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
    staging = [e for e in trail if e != "registry.token"]
    assert staging[-6:] == [
        "token.issued",
        "token.redeemed",
        "credentials.exchanged",  # the staging task got a pull token, not the password
        "staging.completed",
        "credentials.purged",
        "pull_credential.issued",  # the platform, for the app's DesiredLRP
    ]
    # The tailor's push tokens, then the cell's pull through the realm, with the app's
    # credential: the last event.
    assert "registry.token" in trail[: trail.index("staging.completed")]
    assert trail[-1] == "registry.token" and f"app-{lines[-1].split('/')[2]}" in run.stdout
