"""Prometheus metrics, one registry per app (so tests and replicas in one process don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from broker.audit import CATALOG, AuditEvent, Verification, events
from broker.audit.integrator import Integrated

__all__ = ["Metrics"]


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.issued = Counter(
            "stager_tokens_issued", "Staging tokens minted", registry=self.registry
        )
        self.redeemed = Counter(
            "stager_tokens_redeemed", "Staging tokens redeemed", registry=self.registry
        )
        self.refused = Counter(
            "stager_tokens_refused",
            "Staging tokens refused, by what was tried (the reasons are in the audit log)",
            ["action"],
            registry=self.registry,
        )
        self.repeated = Counter(
            "stager_requests_repeated",
            "Mints, redemptions and completions repeated with their Idempotency-Key (a lost"
            " answer asked for again), by action",
            ["action"],
            registry=self.registry,
        )
        self.closed = Counter(
            "stager_stagings_closed",
            "Stagings closed, by final state",
            ["state"],
            registry=self.registry,
        )
        self.forgotten = Counter(
            "stager_stagings_forgotten",
            "Closed stagings' rows deleted by retention (their repositories were gone)",
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "stager_client_auth_failures",
            "Refused client assertions, by kind (missing, malformed, rejected, invalid, replayed, "
            "clock_skew)",
            ["reason"],
            registry=self.registry,
        )

        self.chain_intact = Gauge(
            "stager_audit_chain_intact",
            "1 when the last full verification of the audit log found it intact, else 0",
            registry=self.registry,
        )
        self.chain_verified_at = Gauge(
            "stager_audit_chain_verified_timestamp_seconds",
            "When the last full verification of the audit log finished (Unix time)",
            registry=self.registry,
        )
        self.chain_events = Gauge(
            "stager_audit_chain_events",
            "Events the last full verification of the audit log read",
            registry=self.registry,
        )

        self.log_size = Gauge(
            "stager_audit_log_size",
            "Events in the audit log's tree (integrated) as this broker last integrated it",
            registry=self.registry,
        )
        self.log_halted = Gauge(
            "stager_audit_integration_halted",
            "1 when this broker stopped integrating events because the stored tree no longer"
            " matches the last signed checkpoint (the log was cut or rewritten), else 0",
            registry=self.registry,
        )

    def on_integrated(self, done: Integrated | None, halted: str | None) -> None:
        self.log_halted.set(1 if halted else 0)
        if done is not None:
            self.log_size.set(done.size)

    def on_verified(self, done: Verification) -> None:
        self.chain_intact.set(1 if done.report.intact else 0)
        self.chain_events.set(done.report.events_total)
        self.chain_verified_at.set(done.finished_at)

    def on_event(self, event: AuditEvent) -> None:
        kind = CATALOG.get(event.event)
        if kind is events.TOKEN_ISSUED:
            self.issued.inc()
        elif kind is events.TOKEN_REDEEMED:
            self.redeemed.inc()
        elif kind is events.TOKEN_REFUSED:
            # Public: which action, never why ("not the bound tailor", "replay" are the
            # audit log's). Actions are the catalog's fixed pair.
            action = event.detail.get("action")
            self.refused.labels(action=action if action in ("lookup", "redeem") else "other").inc()
        elif kind is events.REQUEST_REPEATED:
            action = event.detail.get("action")
            self.repeated.labels(
                action=action if action in ("mint", "redeem", "complete") else "other"
            ).inc()
        elif kind is events.STAGINGS_FORGOTTEN:
            count = event.detail.get("count")
            self.forgotten.inc(count if isinstance(count, int) and count > 0 else 0)
        elif kind is not None and kind.closes:
            self.closed.labels(state=kind.closes).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
