"""`tailor stage`: redeem, check, copy (or resolve), describe, report. One staging, start to end.

The docker lifecycle's staging result is built by pure functions
(:func:`staging_result`); :func:`stage` does the I/O around them. Whatever happens
after a redemption, the broker hears how the staging ended, so it can close it
and shred the credentials.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tailor import runnable
from tailor.authn import ANONYMOUS, Authenticator, Basic, BrokerToken
from tailor.blobcache import BlobLocations, MemoryLocations
from tailor.copy import CopyOptions, copy_image, image_manifests
from tailor.errors import (
    ConfigError,
    DigestMismatch,
    ManifestError,
    PolicyRefused,
    TailorError,
)
from tailor.manifest import Manifest, digest_of
from tailor.naming import checked_staging_repository
from tailor.platforms import Platform
from tailor.progress import Progress, SilentProgress
from tailor.reference import Reference, parse_reference
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport

if TYPE_CHECKING:  # the broker client (and its signing code) only when there is a token
    from tailor.broker_client import BrokerClient, Redemption
    from tailor.trust.evaluate import Verdict
    from tailor.trust.served import Served

__all__ = [
    "StageRequest",
    "execution_metadata",
    "process_command",
    "stage",
    "staging_result",
]

_MAX_CONFIG = 8 * 1024 * 1024
RUN_PLATFORM = Platform("linux", "amd64")
"""The cells' platform unless the staging names another (``--run-platform``)."""


# -- the staging result (pure) ----------------------------------------------------------------


def process_command(entrypoint: Sequence[str], cmd: Sequence[str]) -> str:
    """Entrypoint + cmd as one shell command line, each word quoted where it needs it."""
    return shlex.join([*entrypoint, *cmd])


def _ports(exposed: object) -> list[dict[str, Any]]:
    ports = []
    for key in exposed if isinstance(exposed, dict) else {}:
        number, _, protocol = str(key).partition("/")
        if number.isdigit() and 0 < int(number) < 65536:
            ports.append({"Port": int(number), "Protocol": (protocol or "tcp").lower()})
    return sorted(ports, key=lambda p: (p["Port"], p["Protocol"]))


def _strings(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str) and value:
        return [value]
    return []


def execution_metadata(config: dict[str, Any]) -> dict[str, Any]:
    """What the docker lifecycle keeps about how to run the image (from its config)."""
    run = config.get("config") if isinstance(config.get("config"), dict) else {}
    assert isinstance(run, dict)
    return {
        "cmd": _strings(run.get("Cmd")),
        "entrypoint": _strings(run.get("Entrypoint")),
        "workdir": str(run.get("WorkingDir") or ""),
        "user": str(run.get("User") or "root"),
        "ports": _ports(run.get("ExposedPorts")),
    }


def staging_result(docker_image: str, config: dict[str, Any]) -> dict[str, Any]:
    meta = execution_metadata(config)
    return {
        "lifecycle_type": "docker",
        "lifecycle_metadata": {"docker_image": docker_image},
        "process_types": {"web": process_command(meta["entrypoint"], meta["cmd"])},
        "execution_metadata": json.dumps(meta, separators=(",", ":"), sort_keys=True),
    }


# -- the staging (I/O) ------------------------------------------------------------------------


@dataclass
class StageRequest:
    image: str
    staging_guid: str
    internal_registry: str | None = None
    repository_prefix: str = "staging"
    insecure: Sequence[str] = ()
    mount_from: Sequence[str] = ()
    jobs: int = 4
    token: str | None = field(default=None, repr=False)  # a credential: never in a repr
    broker: BrokerClient | None = None
    app_guid: str | None = None
    internal_auth: Authenticator = ANONYMOUS
    """For a registry secured by the broker: the platform identity (see tailor.authn)."""
    locations: BlobLocations = field(default_factory=MemoryLocations)
    progress: Progress = field(default_factory=SilentProgress)
    warn: Callable[[str], None] = field(default=lambda text: None)
    run_platform: Platform = RUN_PLATFORM
    """The platform the cells run: an image with nothing for it is refused."""
    referrers: bool = True
    """Copy the image's signatures, attestations and SBOMs along (tailor.referrers)."""
    policy: Served | None = None
    """The signature policy every image manifest staged must satisfy (the broker's), and
    where its signatures are stored."""


def _runnable_config(
    repo: Repository, top: Manifest, platform: Platform
) -> tuple[Manifest, dict[str, Any]]:
    """What the cells would run (the manifest for ``platform``) and its config,
    digest-checked; an image with no manifest for it, or an artifact that is no runnable
    image, is refused."""
    image, path = runnable.image_for(top, repo.get_manifest, platform)
    runnable.check_manifest(image, path)
    config = _read_config(repo, image)
    runnable.check_config(config, platform, path)
    return image, config


def _read_config(repo: Repository, image: Manifest) -> dict[str, Any]:
    assert image.config is not None
    if image.config.size > _MAX_CONFIG:
        raise ManifestError("the image config is larger than 8 MiB")
    response = repo.open_blob(image.config.digest)
    with response:
        raw = response.raw.read(_MAX_CONFIG + 1, decode_content=False)
    if digest_of(raw) != image.config.digest:
        raise DigestMismatch(f"digest mismatch: image config {image.config.digest}")
    try:
        config = json.loads(raw)
        if not isinstance(config, dict):
            raise ValueError
    except ValueError:
        raise ManifestError("the image config is not a JSON object") from None
    return config


def _matches(requested: Reference, redeemed_image: str, redeemed_registry: str) -> bool:
    try:
        granted = parse_reference(redeemed_image)
    except TailorError:
        return False
    return str(granted) == str(requested) and granted.registry == redeemed_registry


def stage(req: StageRequest) -> dict[str, Any]:
    """Run one staging; returns the staging result. Reports the end to the broker."""
    requested = parse_reference(req.image)
    upstream_auth: Authenticator = ANONYMOUS
    if req.token:
        if req.broker is None:
            raise ConfigError(
                "a staging token needs TAILOR_BROKER_URL, TAILOR_CLIENT_ID and TAILOR_CLIENT_KEY"
            )
        # A refused redemption is not reported: we may not be the staging's tailor, or
        # another run of it holds the token; closing the staging could break that run.
        granted = req.broker.redeem(req.token)
        # A token for something else is refused, and the staging it opened (not the one
        # asked for) is closed, so its credentials go now.
        error = None
        if granted.staging_guid != req.staging_guid:
            error = (
                f"the staging token is for staging {granted.staging_guid}, not {req.staging_guid}"
            )
        elif req.app_guid and granted.app_guid and req.app_guid != granted.app_guid:
            error = f"the staging token is for app {granted.app_guid}, not {req.app_guid}"
        elif not _matches(requested, granted.image, granted.registry):
            error = f"the staging token is for {granted.image}, not {requested}: refusing to use it"
        if error is not None:
            _report(req, granted.staging_guid, None, error)
            raise ConfigError(error)
        req.app_guid = req.app_guid or granted.app_guid or None
        if granted.policy is not None:
            from tailor.trust.served import from_document

            try:
                req.policy = from_document(granted.policy)
            except TailorError as exc:
                _report(req, granted.staging_guid, None, str(exc))
                raise
        if granted.upstream is not None:
            upstream_auth = _broker_token(req.broker, granted.staging_guid, req.token, granted)
        elif granted.username is not None and granted.password is not None:
            upstream_auth = Basic(granted.username, granted.password)
    verdicts: list[Verdict] = []
    try:
        result = _run(req, requested, upstream_auth, verdicts)
    except PolicyRefused as exc:
        assert req.policy is not None
        refused = {"reason": "policy", "policy": {"digest": req.policy.policy.digest}}
        _report(req, req.staging_guid, None, str(exc), refused)
        raise
    except TailorError as exc:
        _report(req, req.staging_guid, None, str(exc))
        raise
    except BaseException:
        _report(req, req.staging_guid, None, "the staging was interrupted")
        raise
    if req.policy is not None:
        signers = sorted({f for v in verdicts for f in v.signers})
        result["policy"] = {"digest": req.policy.policy.digest, "signers": signers}
    warning = _report(req, req.staging_guid, result, None)
    if warning:
        req.warn(warning)
    return result


def _broker_token(
    broker: BrokerClient, staging_guid: str, token: str, granted: Redemption
) -> Authenticator:
    """The upstream token the broker traded the credentials for, renewed through it."""
    assert granted.upstream is not None

    def renew() -> tuple[str, float]:
        fresh = broker.upstream_token(staging_guid, token)
        return fresh.token, fresh.expires_at

    return BrokerToken(granted.upstream.token, granted.upstream.expires_at, renew)


def _run(
    req: StageRequest, requested: Reference, auth: Authenticator, verdicts: list[Verdict]
) -> dict[str, Any]:
    insecure = InsecureHosts(req.insecure)
    upstream = Transport(requested.endpoint, auth, insecure, pool_size=req.jobs + 4)
    src = Repository(upstream, requested.repository)
    # Checked before anything is published; the copy then takes this very digest, so a tag
    # moved meanwhile cannot swap in an image that was not checked.
    top = src.get_manifest(requested.identifier)
    image, config = _runnable_config(src, top, req.run_platform)
    policy = None
    if req.policy is not None:
        from tailor.trust.source import evaluator_for

        policy = evaluator_for(req.policy.policy, req.policy.storage, src)

    checked: set[str] = set()

    def admit(manifest: Manifest) -> None:
        if policy is not None and manifest.digest not in checked:
            verdicts.append(policy.check(requested, manifest.digest))
            checked.add(manifest.digest)

    # What the cells run must be accepted, whatever else the policy leaves out.
    admit(image)
    narrow = req.policy is not None and req.policy.narrow

    if req.internal_registry:
        repository = checked_staging_repository(
            req.repository_prefix, req.app_guid, req.staging_guid
        )
        internal = Transport(
            req.internal_registry, req.internal_auth, insecure, pool_size=req.jobs + 4
        )
        dst = Repository(internal, repository, push=True)
        options = CopyOptions(
            jobs=req.jobs,
            locations=req.locations,
            progress=req.progress,
            mount_from=list(req.mount_from),
            referrers=req.referrers,
            admit=admit,
            narrow=narrow,
        )
        # The same repository: the manifests the check read are not read again.
        copied = copy_image(src, top.digest, dst, req.staging_guid.lower(), options)
        docker_image = f"{req.internal_registry}/{repository}@{copied.digest}"
    else:
        # The cells pull from upstream: the policy is asked about every image manifest
        # they may pull (unless it leaves out what it refuses: then what they run, above),
        # before the staging names the image.
        for manifest in [] if narrow else image_manifests(src, top):
            admit(manifest)
        docker_image = str(requested.with_digest(top.digest))
    return staging_result(docker_image, config)


def _report(
    req: StageRequest,
    staging_guid: str,
    result: dict[str, Any] | None,
    error: str | None,
    failure: dict[str, Any] | None = None,
) -> str | None:
    """Tell the broker how the staging ended (a staging without a token has no broker
    side). If the broker cannot be told, its sweeper closes the staging at expiry; the
    image is staged all the same, so that is a warning, not a failure."""
    if not req.token or req.broker is None:
        return None
    try:
        if result is not None:
            image = result["lifecycle_metadata"]["docker_image"]
            reported: dict[str, Any] = {"docker_image": image}
            if "policy" in result:
                reported["policy"] = result["policy"]
            req.broker.complete(staging_guid, succeeded=True, result=reported)
        else:
            req.broker.complete(staging_guid, succeeded=False, result=failure, error=error)
    except TailorError as exc:
        return f"could not report the end of the staging to the broker ({exc})"
    return None
