"""GET /v1/stagings/{guid}/egress-rules against a real upstream registry."""

from __future__ import annotations

import json
from pathlib import Path

from broker.settings import Settings
from tests.support.broker_api import STAGING_TOKENS, staging_token_body
from tests.support.brokerapp import serve
from tests.support.clients import Clients
from tests.support.registry import Registry


def test_egress_rules_for_a_staging(
    settings: Settings, clients: Clients, internal: Registry
) -> None:
    public = "http://127.0.0.1:8443"
    s = settings.model_copy(
        update={
            "public_url": public,
            "internal_registry": "127.0.0.9:5000",
            "insecure_registries": f"{internal.host},127.0.0.9",
            "outbound_allow": "127.0.0.0/8",
        }
    )
    with serve(s, clients, sweep=False) as api:
        http = api.http
        body = staging_token_body(staging_guid="s1", image=f"{internal.host}/team/app:1")
        minted = http.post(STAGING_TOKENS, headers=clients.cc.headers(public), json=body)
        assert minted.status_code == 201
        r = http.get("/v1/stagings/s1/egress-rules", headers=clients.cc.headers(public))
        assert r.status_code == 200, r.text
        upstream_port = int(internal.host.rsplit(":", 1)[1])
        assert r.json() == [
            {"protocol": "tcp", "destinations": ["127.0.0.9"], "ports": [5000]},
            {
                "protocol": "tcp",
                "destinations": ["127.0.0.1"],
                "ports": sorted([8443, upstream_port]),
            },
        ] or r.json() == [
            {
                "protocol": "tcp",
                "destinations": ["127.0.0.1"],
                "ports": sorted([8443, upstream_port]),
            },
            {"protocol": "tcp", "destinations": ["127.0.0.9"], "ports": [5000]},
        ]
        assert (
            http.get(
                "/v1/stagings/nope/egress-rules", headers=clients.cc.headers(public)
            ).status_code
            == 404
        )
        assert (
            http.get(
                "/v1/stagings/s1/egress-rules", headers=clients.tailor.headers(public)
            ).status_code
            == 403
        )


def test_the_staging_policys_signature_storage_is_a_hole_too(
    settings: Settings, clients: Clients, internal: Registry, tmp_path: Path
) -> None:
    """Signatures the policy reads over http(s) come from the lookaside registries.d names
    for the image: the staging task must reach it."""
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    rd = tmp_path / "registries.d"
    rd.mkdir()
    (rd / "sigs.yaml").write_text(
        f"docker:\n  {internal.host}/team:\n    lookaside: http://127.0.0.7:8099/sigs\n"
        "default-docker:\n  lookaside: https://127.0.0.8/elsewhere\n"
    )
    public = "http://127.0.0.1:8443"
    s = settings.model_copy(
        update={
            "public_url": public,
            "insecure_registries": internal.host,
            "outbound_allow": "127.0.0.0/8",
            "staging_policy": policy,
            "registries_d": rd,
        }
    )
    with serve(s, clients, sweep=False) as api:
        for guid, repo, hole in [
            ("s1", "team/app", ("127.0.0.7", 8099)),
            ("s2", "other/app", ("127.0.0.8", 443)),
        ]:
            body = staging_token_body(staging_guid=guid, image=f"{internal.host}/{repo}:1")
            minted = api.http.post(STAGING_TOKENS, headers=clients.cc.headers(public), json=body)
            assert minted.status_code == 201, minted.text
            r = api.http.get(
                f"/v1/stagings/{guid}/egress-rules", headers=clients.cc.headers(public)
            )
            assert r.status_code == 200, r.text
            holes = {
                (d, p) for rule in r.json() for d in rule["destinations"] for p in rule["ports"]
            }
            assert hole in holes
