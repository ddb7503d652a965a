"""Start-up: each command imports what it needs, when it runs (docs/performance.md, "Warm
re-stage"). Asserted on the modules a fresh interpreter holds, never on timings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # interpreters and the tailor command, as subprocesses

ROOT = Path(__file__).resolve().parents[2]

HEAVY = {
    # HTTP: requests and what it drags in (about half of a warm re-stage's start-up).
    "requests",
    "urllib3",
    "charset_normalizer",
    "idna",
    "certifi",
    "http.client",
    "http.cookiejar",
    "ssl",
    "email.parser",
    # the signing code, and the broker's libraries
    "cryptography",
    "nacl",
    "jwt",
    # what only some commands or some paths need
    "sqlite3",
    "concurrent.futures",
    "subprocess",
    "difflib",
    "json",
    "dataclasses",
    "inspect",
    "broker",
}


def _loaded(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    # The list is taken before the probe imports json to print it.
    probe = (
        f"{code}\nimport sys\nloaded = sorted(sys.modules)\nimport json\nprint(json.dumps(loaded))"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True, cwd=ROOT
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def _heavy(modules: set[str]) -> set[str]:
    return {m for m in HEAVY if m in modules}


def test_importing_the_command_loads_nothing_heavy() -> None:
    # `tailor -h`, usage errors and argument parsing need argparse and nothing else.
    modules = _loaded("import tailor.cli")
    assert _heavy(modules) == set()
    assert {m for m in modules if m.startswith("tailor.")} == {"tailor.cli"}


def test_parsing_every_command_loads_nothing_heavy() -> None:
    # Building the parser and parsing each command's arguments (--platform included)
    # happens before any command runs; it must stay as light as the import.
    modules = _loaded(
        "import tailor.cli as c\n"
        "p = c._parser()\n"
        "p.parse_args(['copy', '--platform', 'linux/arm64', 'a/b:c', 'd/e:f'])\n"
        "p.parse_args(['stage', '--image', 'a/b', '--staging-guid', 'g', '--result-file', 'r'])\n"
        "p.parse_args(['push', '--docker-image', 'a/b', '--app-guid', 'g'])\n"
        "p.parse_args(['egress-rules', '--image', 'a/b'])\n"
    )
    assert _heavy(modules) - {"dataclasses", "inspect"} == set()  # Platform is a dataclass


def test_the_copy_engine_loads_no_signing_code_and_no_subprocess() -> None:
    # `tailor copy` and a staging without a token: no key is read, no helper is run.
    modules = _loaded("import tailor.copy, tailor.staging, tailor.authn")
    assert {"cryptography", "nacl", "jwt", "subprocess", "broker"} & modules == set()
    assert "tailor.assertion" not in modules
    assert "tailor.broker_client" not in modules
    assert "tailor.helperclient" not in modules


def test_usage_errors_and_help_still_work() -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = [sys.executable, "-m", "tailor.cli"]
    helped = subprocess.run([*run, "copy", "-h"], env=env, capture_output=True, text=True)
    assert helped.returncode == 0 and "--insecure-registry" in helped.stdout
    typo = subprocess.run([*run, "cpy"], env=env, capture_output=True, text=True)
    assert typo.returncode == 2
    assert "unknown command 'cpy'; did you mean 'copy'?" in typo.stderr
    bad = subprocess.run(
        [*run, "copy", "--platform", "linux", "a/b:c", "d/e:f"], env=env, capture_output=True
    )
    assert bad.returncode == 2 and b"invalid platform" in bad.stderr
