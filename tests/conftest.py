"""The shared fixtures (tests/support/fixtures/) and the hooks that keep the markers honest."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Generator

import pytest

from tests.support import markers, processes

pytest_plugins = [
    "tests.support.fixtures.database",
    "tests.support.fixtures.registries",
    "tests.support.fixtures.tailor",
    "tests.support.fixtures.broker",
    "tests.support.fixtures.browser",
    "tests.support.fixtures.systems",
    "tests.support.fixtures.peers",
]


def pytest_configure(config: pytest.Config) -> None:
    """The suite starts hundreds of Python processes (``broker``, ``tailor``, ``broker
    serve``) that import the project from source. With PYTHONDONTWRITEBYTECODE set, each
    compiled it anew (about 0.3 s of CPU a process); instead they share a bytecode cache in
    a temporary directory of the run's (PYTHONPYCACHEPREFIX), and the tree stays free of
    __pycache__ as asked. Set here, before pytest-xdist starts its workers (they inherit it)."""
    if hasattr(config, "workerinput") or not os.environ.get("PYTHONDONTWRITEBYTECODE"):
        return
    cache = tempfile.mkdtemp(prefix="stager-pycache-")
    del os.environ["PYTHONDONTWRITEBYTECODE"]
    os.environ["PYTHONPYCACHEPREFIX"] = cache
    config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects by them
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Each test gets the markers of every fixture it uses, directly or through another."""
    for item in items:
        for name in sorted(markers.for_fixtures(getattr(item, "fixturenames", ()))):
            item.add_marker(name)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, object, object]:
    """While a test sets up, runs and tears down, the helpers that start things see its
    markers (tests/support/markers.py: require)."""
    try:
        with markers.running(item.nodeid, {m.name for m in item.iter_markers()}):
            return (yield)
    finally:
        processes.reap()  # whatever the test or a half-done fixture left running
