"""The ``tailor`` command. Passwords come from the environment or config.json, never argv."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from tailor import __version__
from tailor.authn import Credentials, resolve
from tailor.blobcache import BlobLocations, MemoryLocations, SqliteLocations, default_cache_path
from tailor.copy import CopyOptions, copy_image
from tailor.errors import ConfigError, TailorError
from tailor.manifest import parse_platform
from tailor.progress import for_stream
from tailor.reference import Reference, parse_reference
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, not argparse's usage dump: the exit code says "usage" (2).
        sys.stderr.write(f"tailor: error: {message} (see 'tailor {self.prog.split()[-1]} -h')\n")
        raise SystemExit(2)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tailor", description="Copy and stage container images.")
    parser.add_argument("--version", action="version", version=f"tailor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    copy = commands.add_parser(
        "copy",
        help="copy an image (all platforms by default) from SRC to DST",
        description="Copy an image between registries, digest-preserving. Passwords come "
        "from TAILOR_SRC_PASSWORD / TAILOR_DEST_PASSWORD or the Docker config.json.",
    )
    copy.add_argument("src", metavar="SRC", help="source image reference")
    copy.add_argument("dst", metavar="DST", help="destination image reference")
    copy.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry or token server (repeatable)",
    )
    copy.add_argument("--src-username", metavar="USER")
    copy.add_argument("--dest-username", metavar="USER")
    copy.add_argument("--jobs", type=int, default=4, metavar="N", help="blobs copied at once")
    copy.add_argument("--platform", metavar="OS/ARCH[/VARIANT]", help="copy only this platform")
    copy.add_argument(
        "--no-blob-cache",
        action="store_true",
        help="do not read or write the record of where blobs were pushed",
    )
    return parser


def _credentials(registry: str, username: str | None, env: str, flag: str) -> Credentials:
    password = os.environ.get(env) or None
    if password and not username:
        raise ConfigError(f"{env} is set but {flag} is not")
    if username and not password:
        raise ConfigError(f"{flag} needs the password in the environment variable {env}")
    return resolve(registry, username, password)


def _locations(disabled: bool) -> BlobLocations:
    if disabled:
        return MemoryLocations()
    try:
        return SqliteLocations(default_cache_path())
    except OSError:
        # A read-only home must not stop a copy: fall back to this run's memory.
        return MemoryLocations()


def _copy(args: argparse.Namespace) -> int:
    if args.jobs < 1 or args.jobs > 64:
        raise ConfigError("--jobs must be between 1 and 64")
    src_ref = parse_reference(args.src)
    dst_ref: Reference = parse_reference(args.dst)
    platform = parse_platform(args.platform) if args.platform else None
    insecure = InsecureHosts(args.insecure_registry)
    src_creds = _credentials(
        src_ref.registry, args.src_username, "TAILOR_SRC_PASSWORD", "--src-username"
    )
    dst_creds = _credentials(
        dst_ref.registry, args.dest_username, "TAILOR_DEST_PASSWORD", "--dest-username"
    )
    src_transport = Transport(src_ref.endpoint, src_creds, insecure, pool_size=args.jobs + 4)
    if dst_ref.endpoint == src_ref.endpoint and dst_creds == src_creds:
        dst_transport = src_transport
    else:
        dst_transport = Transport(dst_ref.endpoint, dst_creds, insecure, pool_size=args.jobs + 4)
    options = CopyOptions(
        jobs=args.jobs,
        platform=platform,
        locations=_locations(args.no_blob_cache),
        progress=for_stream(sys.stderr),
    )
    result = copy_image(
        Repository(src_transport, src_ref.repository),
        src_ref.identifier,
        Repository(dst_transport, dst_ref.repository, push=True),
        dst_ref.tag or dst_ref.digest,
        options,
    )
    s = result.stats
    sys.stderr.write(
        f"copied {s.blobs_copied}, mounted {s.blobs_mounted}, already present "
        f"{s.blobs_present} blob(s); {s.bytes_downloaded} bytes downloaded; "
        f"{s.manifests} manifest(s)\n"
    )
    print(dst_ref.with_digest(result.digest))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "copy":
            return _copy(args)
        raise ConfigError(f"unknown command {args.command!r}")
    except TailorError as exc:
        sys.stderr.write(f"tailor: error: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("tailor: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
