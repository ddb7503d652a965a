"""JSON read as containers/image reads policies and signatures: a key given twice in any
object is an error, not the last one winning."""

from __future__ import annotations

import json

from tailor.errors import TailorError

__all__ = ["loads"]


def loads(data: bytes, error: type[TailorError]) -> object:
    """The JSON value in ``data``; ``error`` (one line) for a duplicate key or non-JSON."""

    def no_duplicates(pairs: list[tuple[str, object]]) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in pairs:
            if key in out:
                raise error(f'Duplicate key "{key}"')
            out[key] = value
        return out

    def no_constants(name: str) -> object:
        raise error(f"not JSON: {name} is no JSON number")

    try:
        return json.loads(data, object_pairs_hook=no_duplicates, parse_constant=no_constants)
    except (ValueError, RecursionError) as exc:
        raise error(f"not JSON: {exc}") from None
