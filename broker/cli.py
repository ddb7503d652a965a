"""The ``broker`` command. Its subcommands arrive with the broker issue (see DESIGN.md)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from broker import __version__

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args in (["--version"], ["-V"]):
        print(f"broker {__version__}")
        return 0
    sys.stderr.write(
        "broker: error: no commands yet (serve, keys, clients and audit are planned)\n"
    )
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
