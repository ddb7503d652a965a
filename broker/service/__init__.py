"""What the broker does, with no HTTP: one :class:`Service` over one store, key set and audit log.

| part | owns |
|---|---|
| ``unit`` | the unit of work: transaction + audit append + the caller's assertion id |
| ``clients`` | registered clients, verifying callers, spending each assertion once |
| ``stagings`` | mint, look up, redeem, complete, cancel, sweep |
| ``egress`` | egress discovery: the user's registry probed through the outbound guard |
| ``registry`` | what internal-registry tokens grant; the broker's own tokens; prune records |
| ``pullcreds`` | per-app pull credentials: issue, rotate, revoke, verify |
| ``pullersessions`` | a puller's assertion traded for a reusable, short-lived pull session |
| ``retention`` | forgetting closed stagings whose repositories prune found gone |
| ``auditors`` | the audit page's sessions |
| ``witnesses`` | the witnesses whose cosignatures the audit log accepts |

Besides these, the service holds the audit log (``audit``, ``broker/audit/log.py``) and
the witnesses' cosignatures of its checkpoints (``cosignatures``,
``broker/audit/cosignatures.py``): accepted, served, each witness's newest.

Routes (``broker/api``) reach keys, the store and the audit log only through this;
the CLI (``broker/cli``) opens it for every command that touches the database
(:func:`open_service`, or :func:`open_reader` for those that only read and need
no key material).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from broker.audit import AuditEvent, AuditLog, Verification
from broker.audit.cosignatures import Cosignatures
from broker.audit.integrator import Integrated
from broker.auth import Authenticated
from broker.errors import SetupError, StoreError
from broker.keys import RingWatcher, jwks, load_keys
from broker.service.auditors import AuditorSessions
from broker.service.clients import Clients
from broker.service.egress import EgressProbes
from broker.service.pullcreds import PullCredentials
from broker.service.pullersessions import PullerSessions
from broker.service.registry import RegistryGrants
from broker.service.retention import Retention
from broker.service.stagings import Stagings
from broker.service.unit import Unit, Units
from broker.service.witnesses import Witnesses
from broker.settings import Settings
from broker.store import Store, open_store
from broker.store.model import ClientRow

__all__ = [
    "READY_CACHE_SECONDS",
    "Authenticated",
    "Job",
    "Reader",
    "Service",
    "Unit",
    "open_reader",
    "open_service",
]

log = logging.getLogger("broker")

READY_CACHE_SECONDS = 1.0
"""How long one readiness probe's answer is given to every /readyz (a flood of them costs
at most one probe a second)."""


@dataclass(frozen=True)
class Job:
    """Background work a running broker repeats every ``every`` seconds (0: never)."""

    name: str
    every: float
    run: Callable[[], object]
    failed: str
    """The error log line when a round fails (the next round tries again)."""
    at_start: bool = False


def _staging_policy(settings: Settings) -> dict[str, object] | None:
    """The staging policy to serve (tailor/trust/served.py); SetupError in one line when
    the policy, its keys or registries.d cannot be used: the broker does not start."""
    if settings.staging_policy is None:
        if settings.registries_d is not None or settings.staging_policy_narrow:
            raise SetupError(
                "BROKER_REGISTRIES_D and BROKER_STAGING_POLICY_NARROW are read with "
                "BROKER_STAGING_POLICY only"
            )
        return None
    from tailor.errors import ConfigError
    from tailor.trust.served import load_document

    try:
        return load_document(
            settings.staging_policy, settings.registries_d, settings.staging_policy_narrow
        )
    except ConfigError as exc:
        raise SetupError(f"BROKER_STAGING_POLICY: {exc}") from None
    except (OSError, ValueError) as exc:
        raise SetupError(f"BROKER_STAGING_POLICY {settings.staging_policy}: {exc}") from None


class Service:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        *,
        clock: Callable[[], float] = time.time,
        on_event: Callable[[AuditEvent], None] = lambda event: None,
        on_verified: Callable[[Verification], None] = lambda done: None,
        on_integrated: Callable[[Integrated | None, str | None], None] = lambda done, why: None,
    ) -> None:
        keys = load_keys(settings.keys_dir)
        self.staging_policy = _staging_policy(settings)
        """The policy document served to the bound tailor at redemption, or None."""
        self.clock = clock
        """Now, in Unix seconds; every part reads it through here (tests move it)."""
        clock = self._now
        self.settings = settings
        self.inline = store.inline
        """True when store calls are local and fast enough to run on the event loop."""
        self.store_threads = ThreadPoolExecutor(
            max_workers=store.connections, thread_name_prefix="store"
        )
        """Where a request's store work runs when it is not inline: one thread a connection."""
        self._store = store
        self._keys = keys
        self.store_name = store.url_for_humans
        """The store's URL without its password."""
        self.audit = AuditLog(
            store,
            keys,
            origin=settings.log_origin(),
            keep_every=settings.audit_checkpoint_keep_seconds,
            clock=clock,
            on_event=on_event,
            on_verified=on_verified,
            on_integrated=on_integrated,
        )
        self.units = Units(store, self.audit)
        self.clients = Clients(store, self.units, settings, clock)
        ring = RingWatcher(settings.keys_dir, keys.ring)
        digest = self.staging_policy["digest"] if self.staging_policy else None
        self.stagings = Stagings(
            store, self.units, keys, ring, settings, clock, str(digest) if digest else None
        )
        self.registry = RegistryGrants(self.units, keys, settings, clock)
        self.retention = Retention(store, self.units, settings, clock)
        self.pull_credentials = PullCredentials(store, self.units, settings, clock)
        self.puller_sessions = PullerSessions(
            keys.fingerprint_key, self.units, self.clients.get, settings, clock
        )
        self.auditors = AuditorSessions(keys, self.clients)
        self.witnesses = Witnesses(self.units, clock)
        self.cosignatures = Cosignatures(
            store,
            self.audit.identity,
            origin=self.audit.origin,
            keep_every=settings.audit_checkpoint_keep_seconds,
            clock=clock,
        )
        self.egress = EgressProbes(settings, self.staging_policy)
        self._probing = threading.Lock()
        self._ready: tuple[float, str | None] = (-READY_CACHE_SECONDS, None)

    def unready(self) -> str | None:
        """Why this broker should take no requests now (its store cannot write), or None.

        One probe a second at most (see ``Store.writable``), whoever asks: the answer is
        kept for ``READY_CACHE_SECONDS``, unless a write has failed for a full disk since;
        while one probe runs, others get the last answer at once instead of queueing."""
        at, why = self._ready
        fresh = time.monotonic() - at < READY_CACHE_SECONDS
        if (fresh and (why is not None or not self._store.full)) or not self._probing.acquire(
            blocking=False
        ):
            return why
        try:
            try:
                self._store.writable()
                now: str | None = None
            except StoreError as exc:
                now = f"the store cannot write: {exc}"
            if now != why:
                if now is None:
                    log.warning("ready again: the store writes")
                else:
                    log.error("not ready: the store cannot write", extra={"error": now})
            self._ready = (time.monotonic(), now)
            return now
        finally:
            self._probing.release()

    def _now(self) -> float:
        return self.clock()

    def jwks(self) -> dict[str, Any]:
        return jwks(self._keys)

    def jobs(self) -> list[Job]:
        s = self.settings
        return [
            Job("sweeper", s.sweep_interval_seconds, self._sweep, "sweep failed"),
            Job(
                "retention",
                s.sweep_interval_seconds if s.staging_retention else 0,
                self._forget,
                "retention sweep failed",
            ),
            Job(
                "audit-integrate",
                s.audit_checkpoint_seconds,
                self.audit.integrate,
                "audit log integration failed",
            ),
            Job(
                "audit-verify",
                s.audit_verify_seconds,
                self.audit.check,
                "audit verification failed to run",
                at_start=True,
            ),
        ]

    def _sweep(self) -> None:
        closed = self.stagings.sweep()
        if closed:
            log.info("expired stagings closed", extra={"count": closed})

    def _forget(self) -> None:
        forgotten = self.retention.sweep()
        if forgotten:
            log.info("closed stagings forgotten", extra={"count": forgotten})

    def close(self) -> None:
        self.egress.close()
        self.store_threads.shutdown(wait=True)
        self._store.close()


@dataclass(frozen=True)
class Reader:
    """What can be read with database access alone: no key material, no schema change."""

    audit: AuditLog
    cosignatures: Cosignatures
    _store: Store

    def clients(self) -> list[ClientRow]:
        with self._store.transaction(write=False) as tx:
            return tx.list_clients()


@contextmanager
def open_reader(settings: Settings) -> Iterator[Reader]:
    """The store, to read only (``broker audit list|verify``, ``broker clients list``)."""
    store = open_store(settings.database_url)
    origin = settings.log_origin()
    try:
        yield Reader(
            AuditLog(store, None, origin=origin), Cosignatures(store, None, origin=origin), store
        )
    finally:
        store.close()


def open_service(
    settings: Settings,
    *,
    migrate: bool = True,
    on_event: Callable[[AuditEvent], None] = lambda event: None,
    on_verified: Callable[[Verification], None] = lambda done: None,
    on_integrated: Callable[[Integrated | None, str | None], None] = lambda done, why: None,
) -> Service:
    """Keys loaded and the store opened (and migrated, unless ``migrate`` is False: commands
    that only read or only sign): a misconfiguration fails here, as one BrokerError."""
    store = open_store(settings.database_url)
    try:
        service = Service(
            settings,
            store,
            on_event=on_event,
            on_verified=on_verified,
            on_integrated=on_integrated,
        )
        if migrate:
            store.migrate()
            service.audit.upgrade()
    except BaseException:
        store.close()
        raise
    return service
