"""Egress discovery for the API: the user's image probed through the outbound guard.

The image is the end user's choice, so the probe is a request made on a stranger's
say-so (tailor/outbound.py: pinned host, checked addresses, one deadline). Here:
- **Its own threads, a cap.** Probes run on ``egress_probes`` threads of their
  own, never the pool that serves tokens and stagings; when every slot is taken
  the answer is 503 ``Busy`` at once, so a tarpit registry slows nothing else.
- **One answer for every failure.** A refused address, a name that does not
  resolve, a closed port, a TLS port that is not a registry, silence: the caller
  reads the same detail, so the API is no port scanner. The log says which.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from broker.errors import Busy, Invalid, SetupError
from broker.settings import Settings
from tailor.egress import discover, security_group_rules
from tailor.errors import TailorError
from tailor.reference import parse_reference
from tailor.transport import InsecureHosts
from tailor.trust.served import from_document

__all__ = ["EgressProbes"]

log = logging.getLogger("broker.egress")


class EgressProbes:
    def __init__(self, settings: Settings, staging_policy: dict[str, Any] | None = None) -> None:
        self._settings = settings
        # Where the staging policy's signatures are read: one more hole, when it is http(s).
        self._storage = from_document(staging_policy).storage if staging_policy else None
        self._policy = settings.outbound_policy()
        self._insecure = InsecureHosts(settings.insecure_hosts())
        self._slots = threading.BoundedSemaphore(settings.egress_probes)
        self._pool = ThreadPoolExecutor(settings.egress_probes, thread_name_prefix="egress-probe")

    def rules(self, staging_guid: str, image: str) -> list[dict[str, Any]]:
        """The BBS SecurityGroupRules one staging of ``image`` needs (blocking)."""
        s = self._settings
        try:
            reference = parse_reference(image)
            endpoints = discover(
                reference,
                policy=self._policy,
                broker_url=s.public_url,
                internal_registry=s.internal_registry,
                insecure=self._insecure,
                deadline=s.egress_probe_seconds,
                signature_storage=(
                    self._storage.lookaside_for(reference) if self._storage else None
                ),
            )
        except TailorError as exc:
            log.info("egress probe failed", extra={"staging_guid": staging_guid, "error": str(exc)})
            raise Invalid(
                "cannot discover this staging's egress: its registry gave no answer the "
                "broker may use (unreachable, not allowed, or too slow)"
            ) from None
        for ep in endpoints:
            if ep.refused is not None:
                log.info(
                    "egress endpoint left out",
                    extra={"staging_guid": staging_guid, "why": ep.why, "error": ep.refused},
                )
        try:
            return security_group_rules(endpoints)
        except TailorError as exc:  # the platform's own hosts (the user's are resolved)
            raise SetupError(f"egress rules: {exc}") from None

    async def rules_async(self, staging_guid: str, image: str) -> list[dict[str, Any]]:
        """``rules`` on a probe thread; ``Busy`` at once when every probe slot is taken."""
        if not self._slots.acquire(blocking=False):
            raise Busy("every egress probe slot is in use; try again shortly")
        try:
            future: Future[list[dict[str, Any]]] = self._pool.submit(
                self.rules, staging_guid, image
            )
        except RuntimeError:  # shut down
            self._slots.release()
            raise Busy("the broker is stopping") from None
        # The slot is free when the probe ends, not when a caller stops waiting for it.
        future.add_done_callback(lambda done: self._slots.release())
        return await asyncio.wrap_future(future)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
