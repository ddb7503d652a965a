"""Who may call: registered clients, their assertions, and the rule that each is used once.

:meth:`Clients.act` is the one way a request acts as a client: it verifies the
assertion and the role, runs the action, and guarantees the assertion's ``jti``
is spent exactly once, in the action's own unit of work when it has one, else
on its own (before a read, after a refusal). When the store itself fails, no
second spending is tried: the failed unit was rolled back (nothing was done, and
nothing can be written now), or, when the answer to its COMMIT was lost
(``OutcomeUnknown``), its spending may have committed with the action, and a second
try would only turn that answer into a "replayed" refusal that hides it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection
from typing import TypeVar

from broker.audit import events
from broker.auth import Authenticated, load_client_key, verify_assertion
from broker.errors import Conflict, Forbidden, Invalid, NotFound, Unauthenticated, Unavailable
from broker.service.unit import Units
from broker.settings import Settings
from broker.store import Store
from broker.store.model import ROLES, ClientRow

__all__ = ["Clients"]

T = TypeVar("T")
_CACHE_SECONDS = 2.0


class Clients:
    def __init__(
        self, store: Store, units: Units, settings: Settings, clock: Callable[[], float]
    ) -> None:
        self._store = store
        self._units = units
        self._settings = settings
        self._clock = clock
        self._cache: dict[str, tuple[float, ClientRow | None]] = {}

    def get(self, name: str) -> ClientRow | None:
        """The registered client; cached a couple of seconds (a removal takes that long)."""
        now = time.monotonic()
        hit = self._cache.get(name)
        if hit and now - hit[0] < _CACHE_SECONDS:
            return hit[1]
        with self._store.transaction(write=False) as tx:
            row = tx.get_client(name)
        if len(self._cache) > 10000:
            self._cache.clear()
        self._cache[name] = (now, row)
        return row

    # -- acting as a client ---------------------------------------------------------------

    def verify(self, assertion: str) -> Authenticated:
        """The caller ``assertion`` proves, or Unauthenticated (nothing is spent)."""
        if not assertion:
            raise Unauthenticated("no bearer assertion", "missing")
        s = self._settings
        return verify_assertion(
            assertion,
            lookup=self.get,
            audience=s.public_url,
            now=int(self._clock()),
            max_lifetime=s.assertion_max_lifetime_seconds,
            skew=s.clock_skew_seconds,
        )

    def spend(self, caller: Authenticated) -> None:
        """Spend the caller's jti in a transaction of its own (if no unit spent it)."""
        with self._units(caller):
            pass

    def use_once(self, client: str, nonce: str, expires_at: int) -> bool:
        """Record a single-use value (an assertion id, a login ticket); False if seen before."""
        with self._units() as unit:
            return unit.tx.use_assertion(client, nonce, expires_at)

    def was_used(self, client: str, nonce: str) -> bool:
        """Whether :meth:`use_once` has recorded ``nonce`` (and it has not expired)."""
        with self._store.transaction(write=False) as tx:
            return tx.assertion_used(client, nonce)

    def act(
        self,
        assertion: str,
        roles: Collection[str],
        action: Callable[[Authenticated], T],
        *,
        read: bool = False,
        basic_user: str | None = None,
    ) -> T:
        """Verify ``assertion`` for one of ``roles`` and run ``action`` as that caller.

        ``read``: the action writes nothing, so the jti is spent first (a replayed
        assertion then costs no work). ``basic_user``: the user name of HTTP Basic
        credentials, which must name the assertion's issuer."""
        caller = self.verify(assertion)
        unavailable = False
        try:
            if caller.role not in roles:
                raise Forbidden()
            if basic_user is not None and basic_user != caller.name:
                raise Unauthenticated("basic user is not the assertion's issuer")
            if read:
                self.spend(caller)
            return action(caller)
        except Unavailable:
            # Rolled back and the store failing; or (OutcomeUnknown) perhaps committed,
            # jti and all: either way not spent again here (see the module docstring).
            unavailable = True
            raise
        finally:
            if not caller.spent and not unavailable:
                self.spend(caller)

    # -- registration (the `broker clients` command) ----------------------------------------

    def add(self, name: str, role: str, public_pem: str) -> None:
        if role not in ROLES:
            raise Invalid(f"no role {role!r}: one of {', '.join(ROLES)}")
        if name.startswith("app-"):
            # The user names of apps' pull credentials: the audit log must tell them apart.
            raise Invalid(f"client names starting with 'app-' are reserved: {name!r}")
        try:
            load_client_key(public_pem)
        except ValueError as exc:
            raise Invalid(str(exc)) from None
        with self._units() as unit:
            if not unit.tx.add_client(ClientRow(name, role, public_pem, int(self._clock()))):
                raise Conflict(f"client {name!r} exists; remove it first")
            unit.audit(events.CLIENT_ADDED(client=name, detail={"role": role}))

    def remove(self, name: str) -> None:
        with self._units() as unit:
            if not unit.tx.remove_client(name):
                raise NotFound(f"no client {name!r}")
            unit.audit(events.CLIENT_REMOVED(client=name))
