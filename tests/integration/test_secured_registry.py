"""A real Distribution whose token auth is the broker (config from `broker registry-config`)."""

from __future__ import annotations

import hashlib
import json

import requests

from tests.support.broker_api import minted_token, registry_token
from tests.support.cli import Run, broker_settings, insecure, tailor_cli, tailor_env
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.images import Layout, image
from tests.support.registry import start_registry
from tests.support.secured import Secured
from tests.support.skopeo import Skopeo


def test_config_is_what_distribution_runs(secured: Secured) -> None:
    config = json.loads((secured.tmp / "internal.yml").read_text())
    assert config["auth"]["token"]["realm"] == f"{secured.broker.url}/v1/registry-token"
    assert config["storage"]["delete"] == {"enabled": True}
    assert len(config["http"]["secret"]) >= 32
    anonymous = requests.get(f"http://{secured.internal_host}/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert "registry-token" in anonymous.headers["WWW-Authenticate"]


def test_stage_into_the_secured_registry_with_broker_tokens(
    secured: Secured, skopeo: Skopeo
) -> None:
    s = secured
    run = s.push("stg-1", "app-1")
    assert run.returncode == 0, run.stderr
    ref = run.stdout.strip().splitlines()[-1]
    assert ref.startswith(f"{s.internal_host}/staging/app-1/stg-1@sha256:")
    digest = ref.split("@")[1]
    upstream_raw = skopeo.raw(f"{s.upstream.host}/acme/web:v1")
    got = s.manifest("puller", "staging/app-1/stg-1", digest)
    assert got.status_code == 200
    assert (
        got.content == upstream_raw
        and "sha256:" + hashlib.sha256(got.content).hexdigest() == digest
    )
    # Without a token nothing is readable.
    plain = requests.get(
        f"http://{s.internal_host}/v2/staging/app-1/stg-1/manifests/{digest}", timeout=5
    )
    assert plain.status_code == 401

    # The same app again: the tailor may pull (mount) from app-1's earlier staging.
    again = s.push("stg-2", "app-1", "--mount-from", "staging/app-1/stg-1")
    assert again.returncode == 0, again.stderr
    assert "mounted" in again.stderr and " copied sha256" not in again.stderr
    grants = [json.loads(d) for e, c, r, d in s.audit() if c == "tailor-1"]
    assert any("repository:staging/app-1/stg-1:pull" in g["granted"] for g in grants)


def test_a_public_image_is_staged_into_the_secured_registry(
    secured: Secured, skopeo: Skopeo
) -> None:
    s = secured
    public = start_registry(s.tmp / "public")  # anonymous pulls, like Docker Hub
    try:
        layout = Layout(s.tmp / "public-layout")
        layout.tag("v1", image(layout, seed=41))
        skopeo.push(layout, "v1", f"{public.host}/library/hello:v1")
        ref = f"{public.host}/library/hello:v1"
        run = s.push("stg-pub", "app-9", *insecure(public.host), image=ref, public=True)
        assert run.returncode == 0, run.stderr
        staged = run.stdout.strip().splitlines()[-1]
        assert staged.startswith(f"{s.internal_host}/staging/app-9/stg-pub@sha256:")
        got = s.manifest("puller", "staging/app-9/stg-pub", staged.split("@")[1])
        assert got.status_code == 200 and got.content == skopeo.raw(ref)
        events = [(e, c, r) for e, c, r, _ in s.audit_all()]
        assert ("token.issued", "cloud-controller", None) in events
        assert ("token.redeemed", "tailor-1", None) in events
        assert ("staging.completed", "tailor-1", None) in events
        users = s.sql(
            "SELECT DISTINCT registry_username FROM audit_events WHERE staging_guid='stg-pub'"
        )
        assert users == [(None,)]  # no credentials were given, none recorded
    finally:
        public.stop()


def test_the_isolation_policy(secured: Secured) -> None:
    s = secured
    cc = s.clients["cc"]
    minted_token(s.broker.url, cc, app_guid="app-7", staging_guid="stg-7")
    own = "repository:staging/app-7/stg-7:pull,push"
    assert s.access("tailor", own) == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull", "push"]}
    ]
    # Another tailor holds no staging there; nobody gets delete or the catalog.
    assert s.access("tailor2", own) == []
    assert s.access("tailor", "repository:staging/app-7/stg-7:delete,pull") == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull"]}
    ]
    assert s.access("tailor", "registry:catalog:*") == []
    # Other apps' repositories stay closed to this tailor; the cells may only pull.
    assert s.access("tailor", "repository:staging/app-8/stg-1:pull") == []
    assert s.access("puller", own) == [
        {"type": "repository", "name": "staging/app-7/stg-7", "actions": ["pull"]}
    ]
    assert s.access("puller", "repository:other/thing:pull") == []
    # A cc client may not ask at all; a Basic user that is not the assertion's issuer fails.
    assert s.token("cc", own).status_code == 403
    forged = registry_token(s.broker.url, s.clients["tailor2"], own, issuer="tailor-1")
    assert forged.status_code == 401
    assert s.token("tailor", own, basic=False).status_code == 200
    wrong_service = registry_token(
        s.broker.url, s.clients["tailor"], own, service="elsewhere", basic=False
    )
    assert wrong_service.status_code == 422
    # Once the staging is closed, its tailor loses push.
    requests.delete(
        f"{s.broker.url}/v1/stagings/stg-7", headers=cc.headers(s.broker.url), timeout=10
    )
    assert s.access("tailor", own) == []
    refusals = [r for e, c, r, d in s.audit() if r == "refused"]
    assert len(refusals) >= 5


def test_tailor_copy_needs_no_flag_for_the_secured_registry(secured: Secured) -> None:
    s = secured
    cc = s.clients["cc"]
    image = f"{s.upstream.host}/acme/web:v1"
    minted_token(s.broker.url, cc, app_guid="app-9", staging_guid="stg-9", image=image)
    env = tailor_env(
        s.tmp,
        cache="cache2",
        TAILOR_SRC_PASSWORD=UPSTREAM_PASSWORD,
        **broker_settings(s.broker.url, "tailor-1", s.keys["tailor"]),
    )

    def copy_to(destination: str) -> Run:
        hosts = insecure(s.upstream.host, s.internal_host, "127.0.0.1")
        return tailor_cli(
            "copy",
            "--src-username",
            UPSTREAM_USER,
            *hosts,
            image,
            f"{s.internal_host}/{destination}",
            env=env,
            timeout=120,
        )

    run = copy_to("staging/app-9/stg-9:v1")
    assert run.returncode == 0, run.stderr
    # And into a repository it holds no staging for: denied by the registry.
    denied = copy_to("staging/app-9/other:v1")
    assert denied.returncode == 1
    assert denied.stderr.strip().splitlines()[-1].startswith("tailor: error: unauthorized")


def test_tailor_copy_reads_a_staged_image_with_the_platform_identity(
    secured: Secured, skopeo: Skopeo
) -> None:
    """The source may be the secured registry too: the platform identity goes to the broker's
    realm for it, as for a destination. Who may read what is the broker's grants: a puller
    (the cells' role) every staged repository; a tailor only the repositories of the app
    whose staging it holds open."""
    s = secured
    staged_run = s.push("stg-out", "app-out")
    assert staged_run.returncode == 0, staged_run.stderr
    staged = staged_run.stdout.strip().splitlines()[-1]
    repo, digest = staged.removeprefix(f"{s.internal_host}/").split("@")
    broker_host = s.broker.url.removeprefix("http://")
    elsewhere = start_registry(s.tmp / "elsewhere")  # no auth
    try:

        def copy(identity: dict[str, str], destination: str) -> Run:
            return tailor_cli(
                "copy",
                *insecure(s.internal_host, elsewhere.host, "127.0.0.1"),
                staged,
                destination,
                env=tailor_env(s.tmp, cache="cache-out", **identity),
                timeout=120,
            )

        # Out of the secured registry, as a puller: nothing else configured.
        puller = broker_settings(s.broker.url, "cell-1", s.keys["puller"])
        out = copy(puller, f"{elsewhere.host}/copied/web:v1")
        assert out.returncode == 0, out.stderr
        assert out.stdout.strip() == f"{elsewhere.host}/copied/web@{digest}"
        assert skopeo.raw(out.stdout.strip()) == s.manifest("puller", repo, digest).content
        grants = [json.loads(d) for e, c, r, d in s.audit() if c == "cell-1"]
        assert any(f"repository:{repo}:pull" in g["granted"] for g in grants)

        # Within it, as the tailor of an open staging of the same app: pull from the app's
        # earlier staging, push into the open one (blobs mounted, none downloaded).
        image = f"{s.upstream.host}/acme/web:v1"
        minted_token(
            s.broker.url, s.clients["cc"], app_guid="app-out", staging_guid="stg-next", image=image
        )
        tailor = broker_settings(s.broker.url, "tailor-1", s.keys["tailor"])
        within = copy(tailor, f"{s.internal_host}/staging/app-out/stg-next:v1")
        assert within.returncode == 0, within.stderr
        assert within.stdout.strip() == f"{s.internal_host}/staging/app-out/stg-next@{digest}"
        assert "; 0 bytes downloaded;" in within.stderr

        # Another tailor holds no staging of that app: the broker grants it nothing, and the
        # line says the identity was refused.
        other = broker_settings(s.broker.url, "tailor-2", s.keys["tailor2"])
        refused = copy(other, f"{elsewhere.host}/copied/web:v2")
        assert refused.returncode == 1 and "Traceback" not in refused.stderr
        assert (
            refused.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"tailor: error: unauthorized: registry {s.internal_host} refused the platform "
                f"identity tailor-2 for manifest {staged}"
            )
        )

        # No identity at all: the broker's realm refuses an anonymous token request.
        anonymous = copy({}, f"{elsewhere.host}/copied/web:v3")
        assert anonymous.returncode == 1 and "Traceback" not in anonymous.stderr
        assert anonymous.stderr.strip().splitlines() == [
            f"tailor: error: unauthorized: token server {broker_host} refused anonymous access "
            f"to manifest {staged}: no credentials were given (use --src-username with "
            "TAILOR_SRC_PASSWORD, an auth file entry, or the platform identity: "
            "TAILOR_BROKER_URL, TAILOR_CLIENT_ID, TAILOR_CLIENT_KEY)"
        ]
        assert requests.get(f"{elsewhere.url}/v2/_catalog", timeout=5).json()["repositories"] == [
            "copied/web"
        ]
    finally:
        elsewhere.stop()
