"""The ``tailor`` command. Passwords come from the environment or auth files, never argv.

Start-up matters (a warm re-stage is a fraction of a second of work): this module imports
only argparse at load time; each command imports what it needs when it runs (requests,
the copy engine, SQLite, the signing code), and usage errors and ``-h`` need none of it.
tests/tailor/test_startup.py keeps it so.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from tailor import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from tailor.authn import Authenticator, PlatformAssertion
    from tailor.blobcache import BlobLocations
    from tailor.manifest import Manifest
    from tailor.platforms import Platform
    from tailor.reference import Reference
    from tailor.registry import Repository
    from tailor.trust.evaluate import Verdict

__all__ = ["main"]


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        # One line, not argparse's usage dump: the exit code says "usage" (2).
        text, prog = _suggest(self, message)
        sys.stderr.write(f"tailor: error: {text} (see '{prog} -h')\n")
        raise SystemExit(2)


def _suggest(parser: argparse.ArgumentParser, message: str) -> tuple[str, str]:
    """argparse's message, with the nearest command for a typo (as skopeo and git do):
    ``unknown command 'cpy'; did you mean 'copy'?``; and whose help to see."""
    import difflib
    import re

    choice = re.fullmatch(r"argument command: invalid choice: '(.*?)' \(choose from .*\)", message)
    if choice:
        typed = choice.group(1)
        near = difflib.get_close_matches(typed, _COMMANDS, n=1, cutoff=0.5)
        hint = f"did you mean {near[0]!r}?" if near else f"the commands are {', '.join(_COMMANDS)}"
        return f"unknown command {typed!r}; {hint}", parser.prog
    return message, parser.prog


_COMMANDS = ("copy", "stage", "egress-rules", "push")


def _unknown(parser: argparse.ArgumentParser, words: Sequence[str]) -> str:
    """What to say of arguments ``parser`` (one command's) does not know: the nearest of
    its options for the first unknown option (a typo), else argparse's words."""
    import difflib

    options = [
        o
        for action in parser._actions
        if action.help != argparse.SUPPRESS  # never suggest an option that only refuses
        for o in action.option_strings
    ]
    for word in words:
        name = word.split("=")[0]
        if name.startswith("--"):
            near = difflib.get_close_matches(name, options, n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]!r}?" if near else ""
            return f"unknown option {name!r}{hint}"
    return f"unrecognized arguments: {' '.join(words)}"


def _jobs(text: str) -> int:
    """``--jobs``: a usage error (exit 2) unless 1 to 64."""
    try:
        jobs = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a number, not {text!r}") from None
    if not 1 <= jobs <= 64:
        raise argparse.ArgumentTypeError(f"must be between 1 and 64, not {jobs}")
    return jobs


def _platform(text: str) -> Platform:
    """``--platform``: a usage error (exit 2) for what is not os/arch[/variant]."""
    from tailor.errors import ConfigError
    from tailor.platforms import parse_platform

    try:
        return parse_platform(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _path(text: str) -> Path:
    from pathlib import Path

    return Path(text)


_ENVIRONMENT = """environment:
  TAILOR_SRC_PASSWORD, TAILOR_DEST_PASSWORD
                        the password for --src-username, --dest-username (never an argument)
  REGISTRY_AUTH_FILE, XDG_RUNTIME_DIR, XDG_CONFIG_HOME, DOCKER_CONFIG
                        where the auth files are (containers auth.json, Docker
                        config.json; 'tailor copy -h' gives the order)
  TAILOR_BROKER_URL, TAILOR_CLIENT_ID, TAILOR_CLIENT_KEY
                        the platform identity: the broker, this client's id and the PEM
                        file of its private key
  TAILOR_CACHE_DIR      where the record of pushed blobs is kept (default
                        $XDG_CACHE_HOME/tailor, else ~/.cache/tailor)"""


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="tailor",
        description="Copy and stage container images.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_ENVIRONMENT + "\n\nSee 'tailor COMMAND -h' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"tailor {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    copy = commands.add_parser(
        "copy",
        help="copy an image (all platforms by default) from SRC to DST",
        description="Copy an image between registries, digest-preserving. Passwords come "
        "from TAILOR_SRC_PASSWORD / TAILOR_DEST_PASSWORD or the credential files podman, "
        "skopeo and docker login write, first found: $REGISTRY_AUTH_FILE (alone, when set), "
        "$XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json, "
        "$DOCKER_CONFIG/config.json (~/.docker/config.json), ~/.dockercfg; for a registry "
        "given neither, the platform identity (TAILOR_BROKER_URL, TAILOR_CLIENT_ID, "
        "TAILOR_CLIENT_KEY) when that registry's token realm is the broker's.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=_ENVIRONMENT
        + """

examples:
  tailor copy registry.example.com/team/app:v1 internal.example:5000/team/app:v1
  TAILOR_SRC_PASSWORD=... tailor copy --src-username robot src.example/app:1 dst.example/app:1
  tailor copy --platform linux/arm64 --insecure-registry 127.0.0.1:5000 \\
      docker.io/library/alpine:3.20 127.0.0.1:5000/alpine:3.20""",
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
    copy.add_argument(
        "--src-username",
        metavar="USER",
        help="log in to SRC as USER, with the password in TAILOR_SRC_PASSWORD",
    )
    copy.add_argument(
        "--dest-username",
        metavar="USER",
        help="log in to DST as USER, with the password in TAILOR_DEST_PASSWORD",
    )
    copy.add_argument(
        "--jobs", type=_jobs, default=4, metavar="N", help="blobs copied at once (1-64, 4)"
    )
    copy.add_argument(
        "--platform", type=_platform, metavar="OS/ARCH[/VARIANT]", help="copy only this platform"
    )
    copy.add_argument(
        "--no-referrers",
        action="store_true",
        help="do not copy the image's signatures, attestations and SBOMs (OCI referrers "
        "and cosign's sha256-HEX.sig/.att/.sbom tags)",
    )
    copy.add_argument(
        "--no-blob-cache",
        action="store_true",
        help="do not read or write the record of where blobs were pushed",
    )
    copy.add_argument(
        "--policy",
        type=_path,
        metavar="FILE",
        help="copy only what this containers-policy.json accepts (every platform's "
        "manifest is checked before anything is pushed)",
    )
    copy.add_argument(
        "--only-accepted-platforms",
        action="store_true",
        help="with --policy: leave out the platforms of an index it refuses (a new index, "
        "so another digest) instead of refusing the copy",
    )
    copy.add_argument(
        "--registries.d",
        dest="registries_d",
        type=_path,
        metavar="DIR",
        help="where the policy's signatures are stored (registries.d YAML; default "
        "~/.config/containers/registries.d, else /etc/containers/registries.d)",
    )

    stage = commands.add_parser(
        "stage",
        help="stage an image for the platform (redeem, copy, describe, report)",
        description="Run one staging. With STAGING_TOKEN set, redeem it at TAILOR_BROKER_URL "
        "as TAILOR_CLIENT_ID (key: the PEM file named by TAILOR_CLIENT_KEY).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""environment:
  STAGING_TOKEN         the staging token cf push minted (redeemed once, at the broker)
  TAILOR_BROKER_URL, TAILOR_CLIENT_ID, TAILOR_CLIENT_KEY
                        the broker, this task's client id and the PEM file of its key
  TAILOR_RUN_PLATFORM   the platform the cells run (default linux/amd64)

example:
  STAGING_TOKEN=... tailor stage --image registry.example.com/team/app:v1 \\
      --staging-guid 6c1e... --internal-registry registry.internal:5000 \\
      --result-file /tmp/result.json""",
    )
    stage.add_argument("--image", required=True, metavar="REF", help="the image cf push names")
    stage.add_argument(
        "--staging-guid", required=True, metavar="GUID", help="the staging (its token's)"
    )
    stage.add_argument(
        "--app-guid", metavar="GUID", help="the app (default: the one the staging token names)"
    )
    stage.add_argument(
        "--result-file",
        required=True,
        metavar="FILE",
        type=_path,
        help="where the staging result (the lifecycle's JSON) is written",
    )
    stage.add_argument(
        "--internal-registry",
        metavar="HOST[:PORT]",
        help="copy into this registry (the app opted in)",
    )
    stage.add_argument(
        "--repository-prefix",
        default="staging",
        metavar="PREFIX",
        help="internal repositories are PREFIX/APP/STAGING (staging)",
    )
    stage.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry or token server (repeatable)",
    )
    stage.add_argument(
        "--mount-from",
        action="append",
        default=[],
        metavar="REPO",
        help="internal repository likely to hold the blobs (e.g. the app's previous image)",
    )
    stage.add_argument(
        "--jobs", type=_jobs, default=4, metavar="N", help="blobs copied at once (1-64, 4)"
    )
    stage.add_argument(
        "--no-referrers",
        action="store_true",
        help="do not copy the image's signatures, attestations and SBOMs",
    )
    stage.add_argument(
        "--run-platform",
        type=_platform,
        default=os.environ.get("TAILOR_RUN_PLATFORM") or "linux/amd64",
        metavar="OS/ARCH[/VARIANT]",
        help="the platform the cells run: an image with nothing for it is refused "
        "(default: TAILOR_RUN_PLATFORM, else linux/amd64)",
    )

    egress = commands.add_parser(
        "egress-rules",
        help="the egress holes one staging of an image needs (BBS SecurityGroupRule JSON)",
        description="The egress holes one staging of an image needs: the registry, its token"
        " realm and its blob storage, probed from here, as BBS SecurityGroupRule JSON.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""example:
  tailor egress-rules --image registry.example.com/team/app:v1 \\
      --broker https://broker.example --explain""",
    )
    egress.add_argument("--image", required=True, metavar="REF", help="the image to stage")
    egress.add_argument(
        "--broker",
        metavar="URL",
        default=os.environ.get("TAILOR_BROKER_URL"),
        help="the broker the staging redeems at (default: TAILOR_BROKER_URL)",
    )
    egress.add_argument(
        "--internal-registry", metavar="HOST[:PORT]", help="the registry the copy goes to"
    )
    egress.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry or token server (repeatable)",
    )
    egress.add_argument(
        "--outbound-allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="let the probe reach this network too (private and loopback ones are refused)",
    )
    egress.add_argument("--log", action="store_true", help="set log: true on every rule")
    egress.add_argument("--explain", action="store_true", help="say on stderr why each host")

    push = commands.add_parser(
        "push",
        help="what cf push does for a docker image: mint a token, run the staging",
        description="Stage a (private) docker image as the platform does at cf push. The "
        "registry password comes from CF_DOCKER_PASSWORD only.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="""environment:
  CF_DOCKER_PASSWORD    the registry password for --docker-username (never an argument)
  TAILOR_BROKER_URL     the broker (or --broker-url)

example:
  CF_DOCKER_PASSWORD=... tailor push --docker-image registry.example.com/team/app:v1 \\
      --docker-username robot --app-guid 3f2a... --broker-url https://broker.example \\
      --cc-key cc.pem --tailor-key tailor.pem""",
    )
    push.add_argument("--docker-image", required=True, metavar="REF", help="the image to run")
    push.add_argument(
        "--docker-username",
        metavar="USER",
        help="the private registry's user, with the password in CF_DOCKER_PASSWORD",
    )
    push.add_argument("--docker-password", help=argparse.SUPPRESS)
    push.add_argument("--app-guid", required=True, metavar="GUID", help="the app")
    push.add_argument("--staging-guid", metavar="GUID", help="default: a new UUID")
    push.add_argument("--space-guid", metavar="GUID", help="the app's space (for the audit log)")
    push.add_argument("--user", metavar="NAME", help="who pushed (for the audit log)")
    push.add_argument(
        "--internal-registry",
        metavar="HOST[:PORT]",
        help="opt in: run from a copy in this registry",
    )
    push.add_argument(
        "--insecure-registry",
        action="append",
        default=[],
        metavar="HOST[:PORT]",
        help="speak plain HTTP to this registry or token server (repeatable)",
    )
    push.add_argument(
        "--mount-from",
        action="append",
        default=[],
        metavar="REPO",
        help="internal repository likely to hold the blobs (e.g. the app's previous image)",
    )
    push.add_argument(
        "--broker-url",
        default=os.environ.get("TAILOR_BROKER_URL"),
        metavar="URL",
        help="the broker (default: TAILOR_BROKER_URL)",
    )
    push.add_argument(
        "--cc-client", default="cloud-controller", metavar="NAME", help="cc's client id"
    )
    push.add_argument("--cc-key", metavar="PEMFILE", help="the cc client's private key")
    push.add_argument(
        "--tailor-client", default="tailor", metavar="NAME", help="the staging task's client id"
    )
    push.add_argument("--tailor-key", metavar="PEMFILE", help="the staging task's private key")
    push.add_argument(
        "--ttl-seconds", type=int, metavar="N", help="the staging token's lifetime (the broker's)"
    )
    return parser


_IDENTITY_VARIABLES = "TAILOR_BROKER_URL, TAILOR_CLIENT_ID, TAILOR_CLIENT_KEY"


def _identity_settings() -> tuple[str, str, str] | None:
    """(broker URL, client id, key file) from TAILOR_BROKER_URL, TAILOR_CLIENT_ID and
    TAILOR_CLIENT_KEY; None unless all three are set."""
    url = os.environ.get("TAILOR_BROKER_URL", "").rstrip("/")
    client_id = os.environ.get("TAILOR_CLIENT_ID", "")
    key_path = os.environ.get("TAILOR_CLIENT_KEY", "")
    if not (url and client_id and key_path):
        return None
    return url, client_id, key_path


def _platform_identity() -> tuple[str, Any] | None:
    """(broker URL, client key), the key read now (a staging redeems with it)."""
    settings = _identity_settings()
    if settings is None:
        return None
    from tailor.assertion import load_client_key

    url, client_id, key_path = settings
    return url, load_client_key(client_id, key_path)


def _broker_realm(url: str) -> str:
    return f"{url}/v1/registry-token"


def _broker_auth(identity: tuple[str, Any] | None) -> Authenticator:
    """For an internal registry whose token realm is the broker: fresh assertions as the
    Basic password, presented only to the broker's realm (no flag needed)."""
    from tailor.authn import ANONYMOUS, PlatformAssertion

    if identity is None:
        return ANONYMOUS
    url, key = identity
    return PlatformAssertion(
        client_id=key.client_id,
        sign=lambda: key.assertion(url),
        realm=_broker_realm(url),
    )


def _copy_identity() -> PlatformAssertion | None:
    """The platform identity for `tailor copy`, its key read only when the broker's realm
    first asks for it: a copy that never meets that realm neither reads the key nor loads
    the signing code."""
    import functools

    from tailor.authn import PlatformAssertion

    settings = _identity_settings()
    if settings is None:
        return None
    url, client_id, key_path = settings

    @functools.cache
    def key() -> Any:
        from tailor.assertion import load_client_key

        return load_client_key(client_id, key_path)

    return PlatformAssertion(
        client_id=client_id, sign=lambda: key().assertion(url), realm=_broker_realm(url)
    )


def _warn(text: str) -> None:
    sys.stderr.write(f"tailor: warning: {text}\n")


def _stage(args: argparse.Namespace) -> int:
    import json

    from tailor.errors import ConfigError
    from tailor.progress import for_stream
    from tailor.staging import StageRequest, stage

    run_platform = args.run_platform
    token = os.environ.get("STAGING_TOKEN") or None
    broker = None
    identity = _platform_identity()
    if token:
        from tailor.broker_client import BrokerClient, insecure_broker_allowed

        if identity is None:
            raise ConfigError(
                "STAGING_TOKEN needs TAILOR_BROKER_URL, TAILOR_CLIENT_ID and TAILOR_CLIENT_KEY"
            )
        url, key = identity
        broker = BrokerClient(url, key, allow_http=insecure_broker_allowed())
    request = StageRequest(
        image=args.image,
        staging_guid=args.staging_guid,
        internal_registry=args.internal_registry,
        repository_prefix=args.repository_prefix,
        insecure=args.insecure_registry,
        mount_from=args.mount_from,
        jobs=args.jobs,
        token=token,
        broker=broker,
        app_guid=args.app_guid,
        internal_auth=_broker_auth(identity),
        locations=_locations(False),
        progress=for_stream(sys.stderr),
        warn=_warn,
        run_platform=run_platform,
        referrers=not args.no_referrers,
    )
    result = stage(request)
    tmp = args.result_file.with_name(args.result_file.name + ".tmp")
    try:
        tmp.write_text(json.dumps(result, indent=2) + "\n")
        tmp.replace(args.result_file)
    except OSError as exc:
        raise ConfigError(f"cannot write {args.result_file}: {exc.strerror}") from None
    print(result["lifecycle_metadata"]["docker_image"])
    return 0


def _egress(args: argparse.Namespace) -> int:
    import json

    from tailor.egress import discover, security_group_rules
    from tailor.outbound import AddressPolicy, parse_networks
    from tailor.reference import parse_reference
    from tailor.transport import InsecureHosts

    endpoints = discover(
        parse_reference(args.image),
        policy=AddressPolicy(parse_networks(args.outbound_allow)),
        broker_url=args.broker,
        internal_registry=args.internal_registry,
        insecure=InsecureHosts(args.insecure_registry),
    )
    for ep in endpoints:
        if ep.refused is not None:
            sys.stderr.write(f"left out: {ep.why} {ep.host}:{ep.port}: {ep.refused}\n")
        elif args.explain:
            sys.stderr.write(f"{ep.why}: {ep.host}:{ep.port}\n")
    print(json.dumps(security_group_rules(endpoints, log=args.log), indent=2))
    return 0


def _push(args: argparse.Namespace) -> int:
    from tailor.errors import ConfigError
    from tailor.push import PushRequest, push

    if args.docker_password is not None:
        raise ConfigError("never pass the password as an argument: set CF_DOCKER_PASSWORD")
    needed = {
        "--broker-url": args.broker_url,
        "--cc-key": args.cc_key,
        "--tailor-key": args.tailor_key,
    }
    missing = [name for name, value in needed.items() if not value]
    if args.docker_username and missing:
        raise ConfigError(f"a private image needs {', '.join(missing)}")
    image = push(
        PushRequest(
            docker_image=args.docker_image,
            app_guid=args.app_guid,
            broker_url=args.broker_url or "",
            cc_client=args.cc_client,
            cc_key=args.cc_key or "",
            tailor_client=args.tailor_client,
            tailor_key=args.tailor_key or "",
            docker_username=args.docker_username,
            staging_guid=args.staging_guid,
            internal_registry=args.internal_registry,
            insecure=tuple(args.insecure_registry),
            mount_from=tuple(args.mount_from),
            space_guid=args.space_guid,
            user=args.user,
            ttl_seconds=args.ttl_seconds,
        )
    )
    print(image)
    return 0


def _auth(
    registry: str, username: str | None, env: str, flag: str, repository: str | None = None
) -> Authenticator:
    from tailor.authn import resolve
    from tailor.errors import ConfigError

    password = os.environ.get(env) or None
    if password and not username:
        raise ConfigError(f"{env} is set but {flag} is not")
    if username and not password:
        raise ConfigError(f"{flag} needs the password in the environment variable {env}")
    return resolve(registry, username, password, repository, warn=_warn)


def _side_auth(
    registry: str,
    username: str | None,
    env: str,
    flag: str,
    identity: Authenticator | None,
    repository: str | None = None,
) -> Authenticator:
    """One side of a copy, source or destination alike: the credentials the user gave win
    (``flag`` with its password variable ``env``, else the credential files' entry for the
    image's repository or registry); without any, the platform identity, which offers itself
    only to the broker's token realm (any other registry gets an anonymous request); else
    anonymous."""
    from tailor.authn import ANONYMOUS

    given = _auth(registry, username, env, flag, repository)
    if given == ANONYMOUS and identity is not None:
        return identity
    return given


def _hint(flags: str, passwords: str, identity: bool) -> str:
    """Where credentials could have come from, for a registry that refused anonymous access."""
    if identity:
        return (
            f"use {flags} with {passwords} or an auth file entry; "
            "the platform identity goes only to the broker's token realm"
        )
    return (
        f"use {flags} with {passwords}, an auth file entry, "
        f"or the platform identity: {_IDENTITY_VARIABLES}"
    )


def _locations(disabled: bool) -> BlobLocations:
    from tailor.blobcache import MemoryLocations, SqliteLocations, default_cache_path

    if disabled:
        return MemoryLocations()
    try:
        return SqliteLocations(default_cache_path())
    except OSError:
        # A read-only home must not stop a copy: fall back to this run's memory.
        return MemoryLocations()


def _admission(
    policy: Path | None,
    registries_d: Path | None,
    image: Reference,
    source: Repository,
    verdicts: list[Verdict],
    narrow: bool = False,
) -> Callable[[Manifest], object] | None:
    """The signature policy's check of each image manifest, or None without a policy."""
    from tailor.errors import ConfigError

    if policy is None:
        if narrow or registries_d is not None:
            raise ConfigError("--registries.d and --only-accepted-platforms need a --policy")
        return None
    from tailor.trust.lookaside import default_registries_d, load_registries_d
    from tailor.trust.policy import load_policy
    from tailor.trust.source import evaluator_for

    rules = load_policy(policy)
    storage = load_registries_d(registries_d or default_registries_d())
    evaluator = evaluator_for(rules, storage, source)
    return lambda manifest: verdicts.append(evaluator.check(image, manifest.digest))


def _copy(args: argparse.Namespace) -> int:
    from tailor.copy import CopyOptions, copy_image
    from tailor.progress import for_stream
    from tailor.reference import parse_reference
    from tailor.registry import Repository
    from tailor.transport import InsecureHosts, Transport

    src_ref = parse_reference(args.src)
    dst_ref = parse_reference(args.dst)
    platform = args.platform
    insecure = InsecureHosts(args.insecure_registry)
    # A registry secured by the broker, on either side: the platform identity, when the
    # environment names one and the user gave no credentials for that registry.
    identity = _copy_identity()
    src_auth = _side_auth(
        src_ref.registry,
        args.src_username,
        "TAILOR_SRC_PASSWORD",
        "--src-username",
        identity,
        src_ref.repository,
    )
    dst_auth = _side_auth(
        dst_ref.registry,
        args.dest_username,
        "TAILOR_DEST_PASSWORD",
        "--dest-username",
        identity,
        dst_ref.repository,
    )
    pool = args.jobs + 4
    if dst_ref.endpoint == src_ref.endpoint and dst_auth == src_auth:
        hint = _hint(
            "--src-username and --dest-username",
            "TAILOR_SRC_PASSWORD and TAILOR_DEST_PASSWORD",
            identity is not None,
        )
        src_transport = Transport(src_ref.endpoint, src_auth, insecure, pool_size=pool, hint=hint)
        dst_transport = src_transport
    else:
        src_hint = _hint("--src-username", "TAILOR_SRC_PASSWORD", identity is not None)
        dst_hint = _hint("--dest-username", "TAILOR_DEST_PASSWORD", identity is not None)
        src_transport = Transport(
            src_ref.endpoint, src_auth, insecure, pool_size=pool, hint=src_hint
        )
        dst_transport = Transport(
            dst_ref.endpoint, dst_auth, insecure, pool_size=pool, hint=dst_hint
        )
    verdicts: list[Verdict] = []
    src = Repository(src_transport, src_ref.repository)
    options = CopyOptions(
        jobs=args.jobs,
        platform=platform,
        locations=_locations(args.no_blob_cache),
        progress=for_stream(sys.stderr),
        referrers=not args.no_referrers,
        admit=_admission(
            args.policy, args.registries_d, src_ref, src, verdicts, args.only_accepted_platforms
        ),
        narrow=args.only_accepted_platforms,
    )
    result = copy_image(
        src,
        src_ref.identifier,
        Repository(dst_transport, dst_ref.repository, push=True),
        dst_ref.tag or dst_ref.digest,
        options,
    )
    for entry, refusal in result.dropped:
        platform_name = str(entry.platform) if entry.platform else "no platform"
        sys.stderr.write(f"left out {platform_name} ({entry.digest}): {refusal.reason}\n")
    for verdict in verdicts:
        signed = f", signed by {', '.join(verdict.signers)}" if verdict.signers else ""
        sys.stderr.write(
            f"{verdict.manifest_digest} accepted by the signature policy "
            f"({verdict.policy_digest}): scope {verdict.scope}{signed}\n"
        )
    s = result.stats
    sys.stderr.write(
        f"copied {s.blobs_copied}, mounted {s.blobs_mounted}, already present "
        f"{s.blobs_present} blob(s); {s.bytes_downloaded} bytes downloaded; "
        f"{s.manifests} manifest(s); {s.referrers} referrer(s)\n"
    )
    print(dst_ref.with_digest(result.digest))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        (commands,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        command = commands.choices[args.command]
        command.error(_unknown(command, extra))
    from tailor.errors import ConfigError, TailorError

    try:
        if args.command == "copy":
            return _copy(args)
        if args.command == "stage":
            return _stage(args)
        if args.command == "push":
            return _push(args)
        if args.command == "egress-rules":
            return _egress(args)
        raise ConfigError(f"unknown command {args.command!r}")
    except TailorError as exc:
        sys.stderr.write(f"tailor: error: {exc}\n")
        return 1
    except RecursionError:
        # JSON nested thousands deep (a manifest, a referrers page, a helper's answer).
        sys.stderr.write("tailor: error: a document is nested too deeply to read\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("tailor: interrupted\n")
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
