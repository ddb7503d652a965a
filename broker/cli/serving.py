"""What each worker process of ``broker serve --workers N`` loads, by name.

uvicorn starts its workers with ``multiprocessing``'s spawn: a fresh interpreter that
gets the configuration pickled, so the app and the HTTP protocol must be named by import
strings, not handed over as objects. Each worker builds them here from the settings (the
same ``BROKER_*`` environment the parent read and checked before any worker started):
its own service, store connections and background jobs (``broker/api/app.py``).
"""

from __future__ import annotations

import functools
import logging
import os

from fastapi import FastAPI

__all__ = ["WorkerPid", "app"]


def app() -> FastAPI:
    """uvicorn's app factory (``broker.cli.serving:app``, ``factory=True``)."""
    from broker.api.app import create_app
    from broker.settings import get_settings

    logging.captureWarnings(True)  # as broker.logs.configure does in a single process
    return create_app(get_settings())


@functools.cache
def _protocol() -> type:
    from broker.api.httpguard import guarded_protocol
    from broker.settings import get_settings

    return guarded_protocol(get_settings())


def __getattr__(name: str) -> object:
    """``broker.cli.serving:Protocol``: the guarded httptools protocol with the cap and the
    deadlines of this worker's settings (built on first use, once per process)."""
    if name == "Protocol":
        return _protocol()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class WorkerPid(logging.Filter):
    """Every log line of a worker names it (``pid``): which of the N answered, or failed."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.pid = os.getpid()
        return True
