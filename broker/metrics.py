"""Prometheus metrics, one registry per app (so tests and replicas in one process don't mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, generate_latest

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
