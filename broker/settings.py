"""Settings from the environment (prefix ``BROKER_``), read once and overridable in tests."""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from broker.errors import SetupError
from tailor.errors import ConfigError
from tailor.outbound import AddressPolicy, parse_networks

__all__ = ["Settings", "duration_seconds", "get_settings"]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def duration_seconds(text: str) -> int:
    """``90s``, ``30m``, ``24h``, ``7d`` -> seconds; ValueError for anything else."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise ValueError(f"invalid duration {text!r}: use e.g. 0s, 30m, 24h, 7d")
    return int(match.group(1)) * _UNITS[match.group(2)]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="BROKER_", extra="ignore")

    database_url: str = "sqlite:///broker.sqlite"
    keys_dir: Path = Path("keys")
    public_url: str = "http://127.0.0.1:8080"
    """The broker's URL as clients know it: the ``aud`` every assertion must carry."""

    token_ttl_seconds: int = Field(default=900, ge=30)
    token_max_ttl_seconds: int = Field(default=3600, ge=30)
    assertion_max_lifetime_seconds: int = Field(default=300, ge=10, le=3600)
    clock_skew_seconds: int = Field(default=30, ge=0, le=300)
    idempotency_seconds: int = Field(default=300, ge=10, le=3600)
    """How long a mint, redemption or completion sent with an ``Idempotency-Key`` can be
    repeated with that key for the same answer (broker/service/idempotency.py)."""
    pull_credential_grace_seconds: int = Field(default=86400, ge=0, le=90 * 86400)
    """How long an app's older pull credentials keep working once a new one is issued
    (the platform's time to give running instances the new one)."""
    puller_session_seconds: int = Field(default=900, ge=60, le=86400)
    """How long a puller session (``docker-credential-stager``) can get registry tokens."""
    upstream_exchange: bool = True
    """Trade the user's password at redemption for a pull token of the upstream (the Tailor
    then never holds the password where the registry speaks the token protocol), and check
    the credentials at mint (docs/architecture.md, "The upstream exchange")."""
    upstream_exchange_seconds: float = Field(default=10.0, gt=0, le=120)
    """One upstream exchange's whole deadline at redemption or refresh."""
    upstream_check_seconds: float = Field(default=3.0, gt=0, le=120)
    """The credentials' check at mint: a registry that has not answered within this is
    "not checked" and the token is minted (``cf push`` is not held up by a slow upstream)."""
    release_passwords: Literal["when-needed", "never"] = "when-needed"
    """``when-needed``: release the user's password to the Tailor where no token can be had
    (a Basic-only registry, or one the broker cannot reach), audited; ``never``: refuse."""
    sweep_interval_seconds: float = Field(default=30.0, gt=0)
    staging_retention: int = Field(default=30 * 86400, ge=0)
    """Seconds a closed staging's row is kept after it closed, once ``broker prune --apply``
    found its repository gone (broker/service/retention.py); 0 keeps every row. From the
    environment as a duration (``30d``, ``12h``) or ``0``/``off``."""
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    max_header_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    """The request line and headers together; a longer head is refused (431) as it arrives."""
    header_timeout_seconds: float = Field(default=10.0, gt=0, le=3600)
    """A request head must arrive within this of the connection (or of its first byte on a
    connection kept alive); else 408 and the connection is closed."""
    body_timeout_seconds: float = Field(default=30.0, gt=0, le=3600)
    """A request body must arrive within this of its head; else 408 and closed."""
    audit_origin: str = ""
    """The audit log's name in its checkpoints (C2SP origin line, and the key name of its
    verifier key); empty: the host and path of ``public_url`` followed by ``/audit``. A log
    keeps its origin for life: another origin is another log to its auditors."""
    audit_checkpoint_seconds: float = Field(default=1.0, gt=0, le=3600)
    """Integrate pending events into the log and sign a checkpoint over them this often
    (when events came since the last one)."""
    audit_checkpoint_keep_seconds: int = Field(default=3600, ge=0)
    """The store keeps the newest checkpoint and one per this many seconds before it (each
    covers every event before it); 0 keeps every checkpoint signed."""
    audit_verify_seconds: float = Field(default=600.0, ge=0)
    """Verify the whole stored log in the background this often (0: never): the result
    feeds the ``stager_audit_chain_*`` metrics, and a broken log is an error log line."""
    audit_session_minutes: int = Field(default=30, ge=1, le=24 * 60)
    registry_service: str = "internal-registry"
    """The internal registry's ``auth.token.service`` (the token's audience)."""
    registry_issuer: str = "image-stager-broker"
    registry_prefix: str = "staging"
    """Staged images live in ``<prefix>/<app_guid>/<staging_guid>``."""
    registry_token_seconds: int = Field(default=300, ge=60, le=3600)
    staging_policy: Path | None = None
    """A containers-policy.json every staging's image must satisfy, served to the bound
    tailor at redemption with its keys inlined (tailor/trust/served.py); unset: no policy."""
    registries_d: Path | None = None
    """The registries.d directory naming where the policy's signatures are stored (read
    with the policy; only its lookaside URLs are served)."""
    staging_policy_narrow: bool = False
    """Stage an index's platforms the policy accepts and leave out the others (a new
    index), instead of failing the staging; the cells' own platform must be accepted."""
    internal_registry: str | None = None
    """``host:port`` of the internal registry, for the staging egress rules."""
    insecure_registries: str = ""
    """Comma-separated hosts spoken to over plain HTTP (closed networks and tests only)."""
    metrics_addr: str | None = Field(default=None, pattern=r"^[^:]*:\d{1,5}$")
    """``host:port``: serve ``/metrics`` there, and not on the API (a scrape network apart
    from the clients'). Unset: ``/metrics`` is on the API, public."""
    outbound_allow: str = ""
    """Comma-separated CIDRs outbound probes may reach although they are not public
    (a private registry's network; tests: 127.0.0.0/8). See tailor/outbound.py."""
    egress_probes: int = Field(default=8, ge=1, le=256)
    """Egress discoveries at once, on threads of their own; more are refused (503)."""
    egress_probe_seconds: float = Field(default=10.0, gt=0, le=120)
    """One egress discovery's whole deadline, connect and read together."""
    log_level: str = "INFO"

    @field_validator("staging_retention", mode="before")
    @classmethod
    def _retention(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip().lower()
            return 0 if text in ("0", "off") else duration_seconds(text)
        return value

    def log_origin(self) -> str:
        """The audit log's origin (``audit_origin``, or derived from ``public_url``)."""
        if self.audit_origin:
            return self.audit_origin
        parts = urlsplit(self.public_url)
        return f"{parts.netloc}{parts.path.rstrip('/')}/audit"

    def outbound_policy(self) -> AddressPolicy:
        """Where the broker's own outbound requests (egress probes, upstream exchanges)
        may go: public addresses, and ``outbound_allow``."""
        return AddressPolicy(parse_networks(self.outbound_allow))

    def insecure_hosts(self) -> list[str]:
        """``insecure_registries`` as hosts, each trimmed."""
        return [h.strip() for h in self.insecure_registries.split(",") if h.strip()]

    @field_validator("audit_origin")
    @classmethod
    def _origin(cls, value: str) -> str:
        if value and (not value.isprintable() or any(c.isspace() or c == "+" for c in value)):
            raise ValueError("an origin has no spaces and no '+' (C2SP tlog-checkpoint)")
        return value

    @field_validator("outbound_allow")
    @classmethod
    def _networks(cls, value: str) -> str:
        try:
            parse_networks(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None
        return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The settings from the environment; a bad value is one SetupError naming it."""
    try:
        return Settings()
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise SetupError(f"setting BROKER_{where.upper()}: {first.get('msg')}") from None
