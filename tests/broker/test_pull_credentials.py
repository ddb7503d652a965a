"""Per-app pull credentials: issued to cc once an app has a completed staging, accepted by
the realm (Basic on GET, the OAuth2 password and refresh_token grants on POST) for pull
on that app's repositories only, for many token requests; rotated with a grace, revoked;
every failed use counted; the secret nowhere but in the one answer that issues it."""

from __future__ import annotations

import base64
import json
import logging
import time

import pytest
from httpx2 import Response

from broker.registryauth import decide, parse_scope
from broker.store.sqlite import SqliteStore
from tests.support.brokerapp import Api

SERVICE = "internal-registry"
PROBLEM = "application/problem+json"
REPO = "staging/app-1/stg-1"


def staged(api: Api, staging: str = "stg-1", app: str = "app-1") -> None:
    token = api.mint(staging, app_guid=app).json()["token"]
    assert api.redeem(token).status_code == 200
    assert api.complete(staging, "succeeded").status_code == 200


def issue(api: Api, app: str = "app-1") -> Response:
    return api.call("POST", f"/v1/apps/{app}/pull-credentials", api.clients.cc)


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def token(api: Api, user: str, secret: str, *scopes: str, **params: str) -> Response:
    query = {"service": SERVICE, "scope": list(scopes), **params}
    return api.http.get("/v1/registry-token", params=query, headers=basic(user, secret))


def oauth(api: Api, **form: str) -> Response:
    return api.http.post("/v1/registry-token", data={"service": SERVICE, **form})


def granted(answer: Response) -> list[str]:
    payload = answer.json()["token"].split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return [f"{a['type']}:{a['name']}:{','.join(a['actions'])}" for a in claims["access"]]


@pytest.mark.parametrize(
    ("scope", "actions"),
    [
        ("repository:staging/app-1/stg-1:pull,push,delete", ("pull",)),
        ("repository:staging/app-1/other:pull", ("pull",)),
        ("repository:staging/app-10/stg-1:pull", ()),  # a prefix of another app's name
        ("repository:staging/app-2/stg-1:pull", ()),
        ("repository:staging/app-1/../app-2/x:pull", ()),
        ("registry:catalog:*", ()),
    ],
)
def test_an_app_may_pull_its_own_repositories_only(scope: str, actions: tuple[str, ...]) -> None:
    parsed = parse_scope(scope)
    assert parsed is not None
    assert decide("app", "app-1", parsed, [], "staging") == actions


def test_issue_needs_a_completed_staging(api: Api) -> None:
    r = issue(api)
    assert r.status_code == 409 and r.headers["content-type"] == PROBLEM
    assert "no completed staging" in r.json()["detail"]
    token_ = api.mint().json()["token"]
    assert api.redeem(token_).status_code == 200
    assert issue(api).status_code == 409  # redeemed is not completed
    assert api.complete("stg-1", "succeeded").status_code == 200
    r = issue(api)
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["username"] == "app-app-1" and body["password"].startswith("stpc1_")
    assert body["replaced_until"] is None
    assert r.headers["cache-control"] == "no-store"
    # Not the cc's to ask for by any other role.
    assert (
        api.call("POST", "/v1/apps/app-1/pull-credentials", api.clients.puller).status_code == 403
    )


def test_one_credential_many_token_requests_pull_only_its_app(api_each_store: Api) -> None:
    api = api_each_store
    staged(api)
    staged(api, "stg-2", app="app-2")
    cred = issue(api).json()
    user, secret = cred["username"], cred["password"]
    for _ in range(5):  # every cell, every instance start: the same credential
        r = token(api, user, secret, f"repository:{REPO}:pull,push")
        assert r.status_code == 200, r.text
        assert granted(r) == [f"repository:{REPO}:pull"]
        assert "refresh_token" not in r.json() or r.json()["refresh_token"] is None
    other = token(api, user, secret, "repository:staging/app-2/stg-2:pull", "registry:catalog:*")
    assert other.status_code == 200 and granted(other) == []
    # Offline (docker login's identity token): the secret comes back as the refresh token.
    offline = token(api, user, secret, f"repository:{REPO}:pull", offline_token="true")
    assert offline.json()["refresh_token"] == secret

    # The OAuth2 form: password grant, then refresh_token grant with what it gave.
    scope = f"repository:{REPO}:pull"
    r = oauth(api, grant_type="password", username=user, password=secret, scope=scope,
              client_id="containerd", access_type="offline")  # fmt: skip
    assert r.status_code == 200, r.text
    assert granted(r) == [scope] and r.json()["scope"] == scope
    refresh = r.json()["refresh_token"]
    r = oauth(api, grant_type="refresh_token", refresh_token=refresh, scope=scope,
              client_id="containerd")  # fmt: skip
    assert r.status_code == 200 and granted(r) == [scope], r.text

    events = [(e.event, e.client, e.app_guid) for e in api.service.audit.page(0, 1000)]
    assert ("pull_credential.issued", api.clients.cc.name, "app-1") in events
    assert events.count(("registry.token", "app-app-1", "app-1")) == 9


def test_a_wrong_secret_is_refused_and_counted(api: Api, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    staged(api)
    staged(api, "stg-2", app="app-2")
    cred = issue(api).json()
    user, secret = cred["username"], cred["password"]
    b_secret = issue(api, "app-2").json()["password"]
    wrong = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    unknown = "stpc1_0123456789abcdef_" + "A" * 43
    tries = [
        (user, wrong),  # the right id, a wrong secret
        (user, unknown),  # no such credential
        (user, "stpc1_short"),  # not even the shape
        ("app-app-2", secret),  # app-1's secret under app-2's name
        (user, b_secret),  # app-2's secret under app-1's name
    ]
    for u, s in tries:
        r = token(api, u, s, f"repository:{REPO}:pull")
        assert r.status_code == 401 and r.headers["content-type"] == PROBLEM, (u, r.text)
        assert r.json()["title"] == "client authentication failed" and "detail" not in r.json()
    r = oauth(api, grant_type="refresh_token", refresh_token=wrong)
    assert r.status_code == 401
    metrics = api.http.get("/metrics").text
    assert 'stager_client_auth_failures_total{reason="pull_credential"} 6.0' in metrics
    # Failed uses write nothing: no audit event per guess.
    assert not [e for e in api.service.audit.page(0, 1000) if e.event == "registry.token"]
    for leaked in (secret, wrong, b_secret):
        assert leaked not in caplog.text and leaked not in metrics
    reasons = [getattr(r, "reason", "") for r in caplog.records if r.getMessage() == (
        "client authentication failed")]  # fmt: skip
    assert "pull credential: unknown credential or wrong secret" in reasons
    assert any(r.endswith("presented for another user name") for r in reasons), reasons


def test_rotation_keeps_the_old_one_for_the_grace_and_revocation_ends_all(api: Api) -> None:
    staged(api)
    first = issue(api).json()
    second = issue(api).json()
    assert second["password"] != first["password"] and second["replaced_until"] is not None
    for cred in (first, second):  # both live during the grace: running instances keep pulling
        assert token(api, cred["username"], cred["password"]).status_code == 200
    listed = api.call("GET", "/v1/apps/app-1/pull-credentials", api.clients.cc).json()
    assert sorted(c["id"] for c in listed) == sorted([first["id"], second["id"]])
    assert all(c["live"] for c in listed)
    assert [c["expires_at"] is None for c in listed if c["id"] == second["id"]] == [True]
    assert [c["expires_at"] is None for c in listed if c["id"] == first["id"]] == [False]
    assert first["password"] not in json.dumps(listed)

    grace = api.service.settings.pull_credential_grace_seconds
    real = time.time
    api.service.clock = lambda: real() + grace + 1
    assert token(api, first["username"], first["password"]).status_code == 401  # rotated out
    assert token(api, second["username"], second["password"]).status_code == 200
    api.service.clock = real

    assert api.call("DELETE", "/v1/apps/app-1/pull-credentials", api.clients.cc).status_code == 204
    assert token(api, second["username"], second["password"]).status_code == 401
    assert api.call("DELETE", "/v1/apps/app-1/pull-credentials", api.clients.cc).status_code == 204
    events = [(e.event, e.detail) for e in api.service.audit.page(0, 1000)]
    issued = [d for e, d in events if e == "pull_credential.issued"]
    assert issued[1]["replaced"] == [first["id"]]
    revoked = [d for e, d in events if e == "pull_credential.revoked"]
    assert revoked == [{"revoked": sorted([first["id"], second["id"]])}]


def test_a_bad_token_request_is_a_4xx(api: Api) -> None:
    r = oauth(api, grant_type="client_credentials")
    assert r.status_code == 422 and r.headers["content-type"] == PROBLEM
    r = api.http.post("/v1/registry-token", json={"grant_type": "password"})
    assert r.status_code == 422
    r = oauth(api, grant_type="refresh_token", refresh_token="not-ours")
    assert r.status_code == 401


def test_the_secret_is_nowhere_but_in_its_answer(
    api: Api, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    staged(api)
    secret = issue(api).json()["password"]
    assert token(api, "app-app-1", secret, f"repository:{REPO}:pull").status_code == 200
    audit = json.dumps([e.as_dict() for e in api.service.audit.page(0, 1000)])
    assert secret not in audit and secret not in caplog.text
    assert secret not in api.http.get("/metrics").text
    assert isinstance(api.store, SqliteStore)
    api.store.close()
    files = api.store.path.parent.glob(api.store.path.name + "*")
    assert secret.encode() not in b"".join(p.read_bytes() for p in files)


def session(api: Api) -> Response:
    return api.call("POST", "/v1/puller-sessions", api.clients.puller)


def test_a_puller_session_serves_many_token_requests_for_pull_only(api: Api) -> None:
    staged(api)
    puller = api.clients.puller
    r = session(api)
    assert r.status_code == 201, r.text
    assert r.headers["cache-control"] == "no-store"
    user, secret = r.json()["username"], r.json()["password"]
    assert user == puller.name and secret.startswith("stps1.")
    for _ in range(5):
        got = token(api, user, secret, f"repository:{REPO}:pull,push", "registry:catalog:*")
        assert got.status_code == 200, got.text
        assert granted(got) == [f"repository:{REPO}:pull"]
    r = oauth(api, grant_type="password", username=user, password=secret,
              scope=f"repository:{REPO}:pull", access_type="offline")  # fmt: skip
    assert r.status_code == 200 and r.json()["refresh_token"] == secret
    r = oauth(api, grant_type="refresh_token", refresh_token=secret,
              scope=f"repository:{REPO}:pull")  # fmt: skip
    assert r.status_code == 200 and granted(r) == [f"repository:{REPO}:pull"]
    events = [(e.event, e.client) for e in api.service.audit.page(0, 1000)]
    assert events.count(("puller.session", puller.name)) == 1
    assert events.count(("registry.token", puller.name)) == 7
    # Only a puller gets one.
    assert api.call("POST", "/v1/puller-sessions", api.clients.cc).status_code == 403
    assert api.call("POST", "/v1/puller-sessions", api.clients.tailor).status_code == 403


def test_a_puller_session_ends(api: Api) -> None:
    puller = api.clients.puller
    secret = session(api).json()["password"]
    assert token(api, "someone-else", secret).status_code == 401
    body = secret[len("stps1.") :]
    flipped = "stps1." + body[:-2] + ("A" if body[-2] != "A" else "B") + body[-1]
    assert token(api, puller.name, flipped).status_code == 401
    real = time.time
    api.service.clock = lambda: real() + api.service.settings.puller_session_seconds + 1
    assert token(api, puller.name, secret).status_code == 401  # expired
    api.service.clock = real
    assert token(api, puller.name, secret).status_code == 200
    api.service.clients.remove(puller.name)
    api.service.clients._cache.clear()  # the client cache's two seconds, skipped
    assert token(api, puller.name, secret).status_code == 401  # no longer a puller
    metrics = api.http.get("/metrics").text
    assert 'stager_client_auth_failures_total{reason="pull_credential"} 4.0' in metrics


def test_a_rotated_puller_key_does_not_bring_its_sessions_back(api: Api) -> None:
    """A leak's cure is remove and add with a new key: the sessions of the old key stay
    ended."""
    from tests.support.clients import new_client

    puller = api.clients.puller
    secret = session(api).json()["password"]
    assert token(api, puller.name, secret).status_code == 200
    api.service.clients.remove(puller.name)
    fresh = new_client(puller.name, "puller")
    api.service.clients.add(puller.name, "puller", fresh.public_pem)
    api.service.clients._cache.clear()
    assert token(api, puller.name, secret).status_code == 401


def test_app_names_are_not_client_names(api: Api) -> None:
    from broker.errors import Invalid
    from tests.support.clients import new_client

    with pytest.raises(Invalid, match="reserved"):
        api.service.clients.add("app-1", "puller", new_client("app-1", "puller").public_pem)


def test_a_second_rotation_does_not_extend_the_first_credentials_end(api: Api) -> None:
    staged(api)
    first = issue(api).json()
    second = issue(api).json()

    def ends() -> dict[str, str | None]:
        listed = api.call("GET", "/v1/apps/app-1/pull-credentials", api.clients.cc).json()
        return {c["id"]: c["expires_at"] for c in listed}

    before = ends()
    assert before[first["id"]] is not None and before[second["id"]] is None
    real = time.time
    api.service.clock = lambda: real() + 3600
    issue(api)
    api.service.clock = real
    after = ends()
    assert after[first["id"]] == before[first["id"]]  # not pushed back by the next rotation
    assert str(after[second["id"]]) > str(before[first["id"]])  # ISO 8601: ordered as text
