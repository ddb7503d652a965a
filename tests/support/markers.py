"""What a test needs, as markers: applied from the fixtures it uses, checked where things start.

``registry`` (Distribution, skopeo), ``postgres`` (a real PostgreSQL), ``browser`` (Chromium)
and ``slow`` (processes such as ``broker serve``, haproxy, moto, the tailor or broker command,
podman, containerd or ``ctr``, or more than about 2 s). ``make test-fast`` deselects all four.

A fixture that needs one says so with ``@applies(...)``; tests/conftest.py marks every test
that uses it (directly or through another fixture). A test module that starts things by hand
declares ``pytestmark``. The helpers that start a registry, a broker process, PostgreSQL or
Chromium call ``require``: a test without the marker fails there, in every run.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeVar

MARKERS = ("registry", "postgres", "browser", "slow")

F = TypeVar("F", bound=Callable[..., object])

_by_fixture: dict[str, set[str]] = {}
_running: tuple[str, frozenset[str]] | None = None


class Unmarked(Exception):
    """A test started something its markers do not admit."""


def applies(*markers: str) -> Callable[[F], F]:
    """Put under ``@pytest.fixture``: every test using the fixture gets ``markers``."""
    unknown = set(markers) - set(MARKERS)
    assert not unknown, f"unknown markers {unknown}"

    def mark(fixture: F) -> F:
        _by_fixture.setdefault(fixture.__name__, set()).update(markers)
        return fixture

    return mark


def for_fixtures(names: Iterable[str]) -> set[str]:
    """The markers that the fixtures named (a test's whole fixture closure) apply."""
    return {m for name in names for m in _by_fixture.get(name, ())}


@contextmanager
def running(test: str, markers: Iterable[str]) -> Iterator[None]:
    """Set by tests/conftest.py around each test's setup, call and teardown."""
    global _running
    before = _running
    _running = (test, frozenset(markers))
    try:
        yield
    finally:
        _running = before


def require(marker: str, what: str) -> None:
    """Refuse to start ``what`` for a test not marked ``marker`` (outside pytest: allowed)."""
    if _running is None:
        return  # bench, `make demo`: no test is running
    test, markers = _running
    if marker not in markers:
        raise Unmarked(
            f"{test} starts {what} but is not marked {marker!r}: use a fixture that applies it,"
            f" or declare pytestmark = pytest.mark.{marker} (see tests/README.md)"
        )
