"""The shared fixtures (tests/support/fixtures/) and the hooks that keep the markers honest."""

from __future__ import annotations

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
