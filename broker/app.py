"""The FastAPI application: wiring, the body-size guard, client authentication, the sweeper."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import __version__
from broker.audit import Report
from broker.auth import AuthFailed, Verified, verify_assertion
from broker.keys import RingWatcher, load_keys
from broker.metrics import Metrics
from broker.problems import install_handlers, problem
from broker.service import Broker
from broker.settings import Settings, get_settings
from broker.store import Store, open_store

__all__ = ["Assertion", "RoleDenied", "Rt", "Runtime", "Verification", "create_app"]

log = logging.getLogger("broker")
T = TypeVar("T")


class RoleDenied(Exception):
    """403: authenticated, but this client's role may not call the endpoint."""


@dataclass(frozen=True)
class Verification:
    """One full verification of the stored audit chain, and when it finished."""

    report: Report
    finished_at: float
    seconds: float


@dataclass
class Runtime:
    settings: Settings
    broker: Broker
    metrics: Metrics
    store: Store

    def verify_audit(self) -> Verification:
        """Verify the whole chain now (slow: never on the event loop) and publish the
        result in the metrics; a broken chain is also an error in the log."""
        started = time.monotonic()
        report = self.broker.verify_audit()
        done = Verification(report, time.time(), time.monotonic() - started)
        self.metrics.on_verified(report.intact, report.events_total, done.finished_at)
        if not report.intact:
            log.error(
                "audit chain verification failed",
                extra={"problems": len(report.problems), "first_problem": report.problems[0]},
            )
        return done

    async def run(self, work: Callable[[], T], *, slow: bool = False) -> T:
        """Run a request's blocking work: inline for SQLite (local, sub-millisecond calls
        that cost less than a thread hop, and the GIL allows no parallelism anyway), in
        the threadpool for PostgreSQL (network round trips must not stall the loop).
        ``slow`` work (verifying the whole audit chain) always goes to the threadpool:
        inline, it would hold every other request until it finished."""
        if self.store.inline and not slow:
            return work()
        return await run_in_threadpool(work)

    def authorize(self, assertion: str, *roles: str) -> Verified:
        """Verify the client assertion and the role. Its jti is spent by the action's own
        transaction (one write per request); a refused role spends it here."""
        if not assertion:
            raise AuthFailed("no bearer assertion")
        s = self.settings
        verified = verify_assertion(
            assertion,
            lookup=self.broker.client,
            audience=s.public_url,
            now=self.broker.now(),
            max_lifetime=s.assertion_max_lifetime_seconds,
            skew=s.clock_skew_seconds,
        )
        if verified.client.role not in roles:
            self.broker.spend_assertion(verified)
            raise RoleDenied
        return verified


class BodyLimit:
    """Refuse bodies over ``limit`` bytes with 413, declared or streamed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = self.limit + 1
                if declared > self.limit:
                    await problem("too-large", f"at most {self.limit} bytes")(scope, receive, send)
                    return
        # Bodies here are small JSON: read it all (bounded), then hand it on in one piece.
        body = b""
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await problem("too-large", f"at most {self.limit} bytes")(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def runtime(request: Request) -> Runtime:
    # async: no I/O here, and a sync dependency would cost a threadpool hop per request.
    rt: Runtime = request.app.state.runtime
    return rt


async def bearer(request: Request) -> str:
    """The raw client assertion; verified by ``Runtime.authorize`` in the handler's one
    trip to the threadpool (each extra trip costs more than the whole token work)."""
    scheme, _, token = request.headers.get("authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


Assertion = Annotated[str, Depends(bearer)]
Rt = Annotated[Runtime, Depends(runtime)]


def _sweeper(rt: Runtime, stop: threading.Event) -> None:
    while not stop.wait(rt.settings.sweep_interval_seconds):
        try:
            closed = rt.broker.sweep()
            if closed:
                log.info("expired stagings closed", extra={"count": closed})
        except Exception as exc:  # keep sweeping; the next round retries
            log.error("sweep failed", extra={"error_type": type(exc).__name__})


def _verifier(rt: Runtime, stop: threading.Event) -> None:
    """Verify the whole chain at start and then every ``audit_verify_seconds``."""
    every = rt.settings.audit_verify_seconds
    while every > 0 and not stop.is_set():
        try:
            rt.verify_audit()
        except Exception as exc:  # the store may be down for a while: try next round
            log.error("audit verification failed to run", extra={"error_type": type(exc).__name__})
        stop.wait(every)


def _checkpointer(rt: Runtime, stop: threading.Event) -> None:
    while not stop.wait(rt.settings.audit_checkpoint_seconds):
        _checkpoint(rt)


def _checkpoint(rt: Runtime) -> None:
    try:
        cp = rt.broker.checkpoint()
        if cp:
            log.info("audit checkpoint signed", extra={"seq": cp.seq, "head": cp.head,
                                                       "kid": cp.kid})  # fmt: skip
    except Exception as exc:
        log.error("audit checkpoint failed", extra={"error_type": type(exc).__name__})


def create_app(settings: Settings | None = None, *, sweep: bool = True) -> FastAPI:
    settings = settings or get_settings()
    material = load_keys(settings.keys_dir)
    store = open_store(settings.database_url)
    store.migrate()
    metrics = Metrics()
    broker = Broker(
        store=store,
        keys=material,
        ring=RingWatcher(settings.keys_dir, material.ring),
        default_ttl=settings.token_ttl_seconds,
        max_ttl=settings.token_max_ttl_seconds,
        on_event=metrics.on_event,
        checkpoint_every=settings.audit_checkpoint_events,
    )
    rt = Runtime(settings, broker, metrics, store)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_sweeper, args=(rt, stop), daemon=True, name="sweeper"),
            threading.Thread(target=_checkpointer, args=(rt, stop), daemon=True, name="audit"),
            threading.Thread(target=_verifier, args=(rt, stop), daemon=True, name="verify"),
        ]
        if sweep:
            for thread in threads:
                thread.start()
        log.info("broker started", extra={"store": store.url_for_humans, "version": __version__})
        yield
        stop.set()
        if sweep:
            for thread in threads:
                thread.join(timeout=5)
        _checkpoint(rt)  # on shutdown: the tail is vouched for before we go
        store.close()

    app = FastAPI(
        title="image-stager broker",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.runtime = rt
    install_handlers(app)

    @app.exception_handler(RoleDenied)
    async def _denied(request: Request, exc: RoleDenied) -> Any:
        return problem("forbidden")

    from broker.routes import audit, auditpage, meta, registry, stagings, tokens

    app.include_router(audit.router)
    app.include_router(registry.router)
    app.include_router(auditpage.router)
    app.include_router(tokens.router)
    app.include_router(stagings.router)
    app.include_router(meta.router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
