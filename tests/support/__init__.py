"""Helpers the tests import as modules; their fixtures are in tests/support/fixtures/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
