"""GET /v1/stagings/{guid}/egress-rules against a real upstream registry."""

from __future__ import annotations

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
