"""Fuzz the API from its own OpenAPI schema: no 5xx, and every answer matches the schema.

Schemathesis generates valid and invalid requests for every operation; each
request carries a fresh, valid client assertion so the handlers (not only the
authentication layer) are exercised.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode, checks

from broker.store.model import Role
from tests.support.brokerapp import AUD, Api

pytestmark = pytest.mark.slow  # seconds of generated requests

# Everything but positive_data_acceptance: a schema-valid mint naming an unregistered
# tailor is rightly 422, which that check counts as a failure.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]

ROLE_FOR: dict[str, Role] = {
    "/v1/staging-tokens": "cc",
    "/v1/staging-tokens/lookup": "cc",
    "/v1/redemptions": "tailor",
    "/v1/stagings/{staging_guid}/complete": "tailor",
    "/v1/stagings/{staging_guid}": "cc",
    "/v1/stagings/{staging_guid}/upstream-token": "tailor",
    "/v1/audit": "auditor",
    "/v1/registry-token": "puller",
    "/v1/puller-sessions": "puller",
    "/v1/apps/{app_guid}/pull-credentials": "cc",
}

NO_INPUT = {("POST", "/v1/puller-sessions")}
"""Acting operations with nothing to break but the caller (the assertion)."""


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_from_its_schema(api_each_store: Api, mode: GenerationMode) -> None:
    api = api_each_store
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.http.app)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert {op.path for op in operations} >= set(ROLE_FOR)
    seen: dict[int, int] = {}

    for operation in operations:
        if mode == GenerationMode.NEGATIVE and (
            operation.path not in ROLE_FOR or (operation.method.upper(), operation.path) in NO_INPUT
        ):
            continue  # /healthz, /metrics, JWKS, /openapi.json take no input to break

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(
            max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck)
        )
        def run(case: schemathesis.Case) -> None:
            role = ROLE_FOR.get(case.operation.path)
            headers = {}
            if role:
                client = {c.role: c for c in api.clients.all()}[role]
                headers = client.headers(AUD)
            response = case.call(headers={**dict(case.headers or {}), **headers})
            seen[response.status_code] = seen.get(response.status_code, 0) + 1
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            case.validate_response(response, checks=CHECKS)

        run()
    # The fuzzing reached past authentication into the handlers' own answers.
    assert set(seen) & {200, 201, 204, 400, 409, 422}, seen
