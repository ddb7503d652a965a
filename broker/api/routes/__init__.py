"""HTTP routes, one module per resource. Handlers are short; the work is in ``broker.service``."""

from fastapi import APIRouter

from broker.api.routes import apps, audit, auditpage, meta, registry, stagings, tokens

__all__ = ["ROUTERS"]

ROUTERS: tuple[APIRouter, ...] = tuple(
    module.router for module in (audit, registry, auditpage, tokens, stagings, apps, meta)
)
"""Every router the app serves, in the order it includes them."""
