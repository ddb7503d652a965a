"""The FastAPI application: the service, the routes, the body-size guard, background jobs."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from wsgiref.simple_server import WSGIServer

from fastapi import FastAPI
from prometheus_client import start_http_server
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker import __version__
from broker.api.errors import install_handlers, problem
from broker.api.routes import ROUTERS
from broker.metrics import Metrics
from broker.service import Job, open_service
from broker.settings import Settings, get_settings

__all__ = ["BodyLimit", "create_app"]

log = logging.getLogger("broker")


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


def _repeat(job: Job, stop: threading.Event) -> None:
    """Run ``job`` every ``job.every`` seconds until ``stop``; a failure waits for the next
    round (the store may be down for a while)."""
    if job.every <= 0 or (not job.at_start and stop.wait(job.every)):
        return
    while True:
        try:
            job.run()
        except Exception as exc:
            log.error(job.failed, extra={"error_type": type(exc).__name__})
        if stop.wait(job.every):
            return


def _serve_metrics(addr: str, metrics: Metrics) -> WSGIServer:
    """``/metrics`` on its own address (a thread of its own), for a scrape network."""
    host, _, port = addr.rpartition(":")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=metrics.registry)
    log.info("metrics served apart", extra={"addr": addr})
    return server


def create_app(settings: Settings | None = None, *, sweep: bool = True) -> FastAPI:
    """The broker's app. ``sweep=False`` runs no background jobs (tests drive them)."""
    settings = settings or get_settings()
    metrics = Metrics()
    service = open_service(
        settings,
        on_event=metrics.on_event,
        on_verified=metrics.on_verified,
        on_integrated=metrics.on_integrated,
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = threading.Event()
        threads = [
            threading.Thread(target=_repeat, args=(job, stop), daemon=True, name=job.name)
            for job in service.jobs()
        ]
        if sweep:
            for thread in threads:
                thread.start()
        scrape = _serve_metrics(settings.metrics_addr, metrics) if settings.metrics_addr else None
        log.info("broker started", extra={"store": service.store_name, "version": __version__})
        yield
        stop.set()
        for thread in threads:
            if thread.is_alive():
                thread.join(timeout=5)
        if scrape is not None:
            scrape.shutdown()
            scrape.server_close()
        try:
            service.audit.checkpoint()  # on shutdown: the tail is vouched for before we go
        except Exception as exc:
            log.error("audit checkpoint failed", extra={"error_type": type(exc).__name__})
        service.close()

    app = FastAPI(
        title="image-stager broker",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    app.state.service = service
    app.state.metrics = metrics
    install_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    return app
