"""The internal registry's token policy: pure decisions, and what the API grants."""

from __future__ import annotations

import time

import pytest

from broker.registryauth import Scope, decide, parse_scope
from broker.store.model import StagingRow
from tests.support.brokerapp import Api

NOW = int(time.time())


def staging(guid: str, app: str = "app-1", tailor: str = "tailor-1", state: str = "open"):
    return StagingRow(
        staging_guid=guid,
        app_guid=app,
        space_guid=None,
        pushed_by=None,
        image="r.example/i:1",
        registry="r.example",
        registry_username="",
        tailor=tailor,
        cc_client="cc",
        token_id="t",
        token_fp="f",
        state=state,  # type: ignore[arg-type]
        created_at=NOW,
        expires_at=NOW + 900,
        redeemed_at=None,
        closed_at=None,
        result=None,
    )


OPEN = [staging("s1"), staging("old", state="completed"), staging("x", app="app-2", tailor="t9")]


@pytest.mark.parametrize(
    ("role", "scope", "granted"),
    [
        ("tailor", "repository:staging/app-1/s1:pull,push", ("pull", "push")),
        ("tailor", "repository:Staging/APP-1/S1:pull,push", ("pull", "push")),
        ("tailor", "repository:staging/app-1/old:pull,push", ("pull",)),  # a mount source
        ("tailor", "repository:staging/app-2/x:pull", ()),  # another tailor's app
        ("tailor", "repository:staging/app-1/s1:delete", ()),
        ("tailor", "registry:catalog:*", ()),
        ("puller", "repository:staging/app-2/x:pull,push", ("pull",)),
        ("puller", "repository:elsewhere/x:pull", ()),
        ("cc", "repository:staging/app-1/s1:pull", ()),
        # Not repository names: refused by the policy itself, not left to the registry.
        ("tailor", "repository:staging/app-1/s1/../../app-2/x:pull", ()),
        ("puller", "repository:staging/app-1/../app-2/x:pull", ()),
        ("puller", "repository:staging//x:pull", ()),
        ("puller", "repository:staging/x/:pull", ()),
    ],
)
def test_decide(role: str, scope: str, granted: tuple[str, ...]) -> None:
    parsed = parse_scope(scope)
    assert parsed is not None
    assert decide(role, "tailor-1", parsed, OPEN, "staging") == granted


def test_a_tailor_with_many_open_stagings_may_push_to_each(api: Api) -> None:
    """No silent cap on a tailor's open stagings: the 150th pushes like the first."""
    for n in range(150):
        assert api.mint(f"s-{n}", username=None, password=None).status_code == 201
    for n in (0, 149):
        scope = f"repository:staging/app-1/s-{n}:pull,push"
        r = api.call(
            "GET",
            "/v1/registry-token",
            api.clients.tailor,
            params={"service": "internal-registry", "scope": scope},
        )
        assert r.status_code == 200, r.text
        granted = [str(Scope(**g)) for g in _claims(r.json()["token"])["access"]]
        assert granted == [f"repository:staging/app-1/s-{n}:pull,push"], (n, granted)


def _claims(token: str) -> dict:
    import base64
    import json

    payload = token.split(".")[1]
    return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
