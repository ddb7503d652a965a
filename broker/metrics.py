"""Prometheus metrics, one registry per app (so tests and replicas in one process don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

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
            "stager_tokens_refused", "Staging tokens refused, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip
        self.closed = Counter(
            "stager_stagings_closed", "Stagings closed, by final state", ["state"],
            registry=self.registry,
        )  # fmt: skip
        self.auth_failures = Counter(
            "stager_client_auth_failures", "Refused client assertions, by reason", ["reason"],
            registry=self.registry,
        )  # fmt: skip

        self.chain_intact = Gauge(
            "stager_audit_chain_intact",
            "1 when the last full verification of the audit chain found it intact, else 0",
            registry=self.registry,
        )
        self.chain_verified_at = Gauge(
            "stager_audit_chain_verified_timestamp_seconds",
            "When the last full verification of the audit chain finished (Unix time)",
            registry=self.registry,
        )
        self.chain_events = Gauge(
            "stager_audit_chain_events",
            "Events the last full verification of the audit chain read",
            registry=self.registry,
        )

    def on_verified(self, intact: bool, events: int, finished_at: float) -> None:
        self.chain_intact.set(1 if intact else 0)
        self.chain_events.set(events)
        self.chain_verified_at.set(finished_at)

    def on_event(self, event: str, reason: str | None) -> None:
        if event == "token.issued":
            self.issued.inc()
        elif event == "token.redeemed":
            self.redeemed.inc()
        elif event == "token.refused":
            # Reasons are a small fixed set; "staging <state>" keeps it bounded too.
            self.refused.labels(reason=(reason or "unknown")[:40]).inc()
        elif event.startswith("staging."):
            self.closed.labels(state=event.split(".", 1)[1]).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
