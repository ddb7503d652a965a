from __future__ import annotations

import random
from datetime import UTC, datetime

from tailor.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after


def test_retryable_statuses() -> None:
    assert {408, 429, 500, 502, 503, 504} == RETRYABLE_STATUS
    assert 404 not in RETRYABLE_STATUS and 401 not in RETRYABLE_STATUS


def test_backoff_grows_with_jitter_and_stops() -> None:
    policy = RetryPolicy(attempts=5, base=0.5, cap=3.0)
    rng = random.Random(7)
    delays = [policy.delay(n, rng=rng) for n in range(1, 5)]
    for n, d in enumerate(delays, start=1):
        ceiling = min(3.0, 0.5 * 2 ** (n - 1))
        assert d is not None and ceiling / 2 <= d <= ceiling
    assert policy.delay(5) is None


def test_retry_after_wins_but_is_capped() -> None:
    policy = RetryPolicy(max_retry_after=10)
    assert policy.delay(1, retry_after=2.0) == 2.0
    assert policy.delay(1, retry_after=3600.0) == 10


def test_parse_retry_after() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 12:00:30 GMT", now) == 30.0
    assert parse_retry_after("Thu, 01 Jan 2026 11:00:00 GMT", now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
