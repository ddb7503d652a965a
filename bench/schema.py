"""A PostgreSQL schema of a benchmark run's own, dropped after (bench/audit.py, bench/broker.py)."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from urllib.parse import quote


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[tuple[str, str]]:
    """A schema of this run's own on the PostgreSQL at ``url``, dropped after: the URL that
    uses it (its connections named after it too), and its name."""
    import psycopg  # only for PostgreSQL runs

    schema = "bench_" + secrets.token_hex(6)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        sep = "&" if "?" in url else "?"
        options = quote(f"-csearch_path={schema}")
        yield f"{url}{sep}application_name={schema}&options={options}", schema
    finally:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
