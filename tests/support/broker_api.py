"""Requests to the broker's API: the staging-token body with its defaults, and the calls a
test makes over HTTP to a broker process (or the balancer in front of replicas)."""

from __future__ import annotations

import base64

import requests

from tests.support.clients import Client
from tests.support.credentials import PASSWORD

STAGING_TOKENS = "/v1/staging-tokens"


def staging_token_body(**override: object) -> dict[str, object]:
    """The body of ``POST /v1/staging-tokens``: these defaults, then ``override``. A field
    overridden with None is left out (``username=None, password=None``: a public image)."""
    body: dict[str, object] = {
        "app_guid": "app-1",
        "staging_guid": "stg-1",
        "image": "registry.example.com/team/app:1.0",
        "username": "alice",
        "password": PASSWORD,
        "tailor": "tailor-1",
    }
    body.update(override)
    return {k: v for k, v in body.items() if v is not None}


def mint(url: str, cc: Client, *, audience: str | None = None, **body: object) -> requests.Response:
    """Mint at the broker on ``url``; the assertion is for ``audience`` (default: ``url``)."""
    return requests.post(
        url + STAGING_TOKENS,
        headers=cc.headers(audience or url),
        json=staging_token_body(**body),
        timeout=30,
    )


def minted_token(url: str, cc: Client, *, audience: str | None = None, **body: object) -> str:
    """Mint, insist on 201, return the token."""
    answer = mint(url, cc, audience=audience, **body)
    assert answer.status_code == 201, answer.text
    return str(answer.json()["token"])


def registry_token(
    url: str,
    client: Client,
    *scopes: str,
    service: str = "internal-registry",
    basic: bool = True,
    issuer: str | None = None,
) -> requests.Response:
    """``GET /v1/registry-token`` as Distribution's clients ask: Basic ``name:assertion``
    (``issuer`` names another client than the signer), or the assertion as a Bearer."""
    assertion = client.assertion(url)
    if basic:
        pair = f"{issuer or client.name}:{assertion}".encode()
        authorization = "Basic " + base64.b64encode(pair).decode()
    else:
        authorization = f"Bearer {assertion}"
    return requests.get(
        url + "/v1/registry-token",
        params=[("service", service), *[("scope", s) for s in scopes]],
        headers={"Authorization": authorization},
        timeout=30,
    )
