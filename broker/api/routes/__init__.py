"""HTTP routes, one module per resource. Handlers are short; the work is in ``broker.service``."""

from fastapi import APIRouter

from broker.api.routes import apps, audit, auditpage, meta, registry, stagings, tokens

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router for module in (registry, tokens, stagings, meta, apps, audit, auditpage)
)
"""Every router the app serves, in the order it includes them: the most requested first
(a cell's registry token, a push's mint and redemption, the staging's end, the platform's
probes), since a request is matched against the routes one after another (each try was
about 3 us: with the audit routes first, a mint tried 16 routes before its own)."""
