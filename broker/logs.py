"""Structured JSON logs. Messages are fixed strings plus named fields; no secret is ever a field."""

from __future__ import annotations

import datetime
import json
import logging
from typing import Any

__all__ = ["DropQuery", "JsonFormatter", "configure", "log_config"]

_RESERVED = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED and not key.startswith("_"):
                out[key] = value
        if record.exc_info and record.exc_info[0] is not None:
            # The type only: an exception's text could carry request data.
            out["exc_type"] = record.exc_info[0].__name__
        return json.dumps(out, default=str)


class DropQuery(logging.Filter):
    """Access-log lines keep the path, never the query string: a query can carry a
    credential (the single-use link of ``broker audit login``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and isinstance(args[2], str):
            record.args = (*args[:2], args[2].split("?", 1)[0], *args[3:])
        return True


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A dictConfig for the broker, uvicorn and every library alike: one JSON line each.

    The root logger has the JSON handler too, so a library's records (``psycopg.pool``
    warning of a discarded connection, ``asyncio``, ``py.warnings``...) are JSON lines
    like the broker's own, not Python's last-resort plain text on stderr."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "filters": {"drop_query": {"()": DropQuery}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "json",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {
            "broker": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {
                "handlers": ["stderr"],
                "level": level,
                "propagate": False,
                "filters": ["drop_query"],
            },
        },
    }


def configure(level: str = "INFO") -> dict[str, Any]:
    """Log as :func:`log_config` says from now on (warnings too), and return the config.

    ``broker serve`` calls this before it opens the store, so what the pool logs while
    connecting is JSON as well, and hands uvicorn the same config."""
    import logging.config

    config = log_config(level)
    logging.config.dictConfig(config)
    logging.captureWarnings(True)
    return config
