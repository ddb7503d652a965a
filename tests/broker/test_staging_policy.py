"""The staging policy: loaded and checked once at start, served to the bound tailor at
redemption with its keys inline, named in the audit log at redemption and at the end,
and required in a success's report (docs/tailor.md, "Signature policy")."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from broker.errors import SetupError
from broker.service import Service
from broker.settings import Settings
from broker.store import open_store
from tailor.errors import ConfigError
from tailor.trust.policy import PolicyError, SignedBy
from tailor.trust.served import from_document, load_document
from tests.support.brokerapp import Api, serve
from tests.support.clients import Clients

# A public key packet (new format, tag 6) in its framing only: the broker checks what a
# key file holds and carries it; it does not verify with it.
KEY = bytes([0xC6, 6]) + b"\x04\x00\x00\x00\x00\x16"
FPR = "E3F74B26CA5FBBEFBDCCD4BD28203117EDF0EDA4"


def write_policy(tmp_path: Path, *, key_name: str = "keys/signer.gpg", key: bytes = KEY) -> Path:
    (tmp_path / "keys").mkdir(exist_ok=True)
    (tmp_path / "keys" / "signer.gpg").write_bytes(key)
    policy = {
        "default": [{"type": "reject"}],
        "transports": {
            "docker": {
                "registry.example.com": [
                    {"type": "signedBy", "keyType": "GPGKeys", "keyPath": key_name}
                ],
                "registry.example.com/public": [{"type": "insecureAcceptAnything"}],
            }
        },
    }
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(policy))
    rd = tmp_path / "registries.d"
    rd.mkdir(exist_ok=True)
    (rd / "sigs.yaml").write_text(
        "docker:\n  registry.example.com:\n    lookaside: https://sigs.example.com/\n"
        "    lookaside-staging: file:///not/served\n"
    )
    return path


def test_the_document_carries_the_keys_inline_and_names_its_digest(tmp_path: Path) -> None:
    path = write_policy(tmp_path)
    doc = load_document(path, tmp_path / "registries.d")
    (req,) = doc["policy"]["transports"]["docker"]["registry.example.com"]  # type: ignore[index]
    assert req == {
        "type": "signedBy",
        "keyType": "GPGKeys",
        "keyData": base64.b64encode(KEY).decode(),
    }
    assert doc["registries.d"] == {
        "docker": {"registry.example.com": {"lookaside": "https://sigs.example.com/"}}
    }
    assert doc == load_document(path, tmp_path / "registries.d")  # the same files, the same
    served = from_document(json.loads(json.dumps(doc)))
    assert served.policy.digest == doc["digest"] and served.narrow is False
    (signed,) = served.policy.docker["registry.example.com"]
    assert isinstance(signed, SignedBy) and signed.keys.load() == KEY
    lookaside = served.storage.docker["registry.example.com"].lookaside
    assert lookaside == "https://sigs.example.com/"
    narrow = load_document(path, tmp_path / "registries.d", narrow=True)
    assert narrow["digest"] != doc["digest"]  # the choice is part of what the digest names
    assert from_document(narrow).narrow is True
    tampered = json.loads(json.dumps(doc))
    tampered["policy"]["default"] = [{"type": "insecureAcceptAnything"}]
    with pytest.raises(PolicyError, match="does not match its digest"):
        from_document(tampered)


def test_a_policy_the_broker_cannot_use_stops_it_at_start(
    tmp_path: Path, settings: Settings
) -> None:
    missing_key = write_policy(tmp_path, key_name="keys/absent.gpg")
    with pytest.raises(ConfigError, match=r"key file .*absent\.gpg: No such file"):
        load_document(missing_key, None)
    for secret, says in [
        (bytes([0xC5, 6]) + b"\x04\x00\x00\x00\x00\x16", "holds a secret key"),
        (b"-----BEGIN PGP PRIVATE KEY BLOCK-----\n...", "holds a secret key"),
        (b"not a key at all", "not an OpenPGP keyring"),
    ]:
        with pytest.raises(ConfigError, match=says):
            load_document(write_policy(tmp_path, key=secret), None)
    bad = tmp_path / "bad.json"
    bad.write_text('{"default": [{"type": "signedBy", "keyType": "GPGKeys"}]}')
    store = open_store(settings.database_url)
    try:
        for policy, says in [
            (bad, "none of them present"),
            (tmp_path / "nowhere.json", "cannot read the policy"),
        ]:
            with pytest.raises(SetupError, match="BROKER_STAGING_POLICY") as info:
                Service(settings.model_copy(update={"staging_policy": policy}), store)
            assert says in str(info.value) and "\n" not in str(info.value)
        with pytest.raises(SetupError, match="are read with BROKER_STAGING_POLICY only"):
            Service(settings.model_copy(update={"registries_d": tmp_path}), store)
    finally:
        store.close()


@pytest.fixture
def policed(tmp_path: Path, settings: Settings, clients: Clients) -> Iterator[Api]:
    path = write_policy(tmp_path)
    update = {"staging_policy": path, "registries_d": tmp_path / "registries.d"}
    with serve(settings.model_copy(update=update), clients, sweep=False) as api:
        yield api


def events(api: Api) -> list[tuple[str, str | None, dict[str, object]]]:
    return [(r.event, r.reason, r.detail) for r in api.service.audit.page(0, 1000)]


def test_the_redemption_serves_the_policy_and_the_log_names_it(policed: Api) -> None:
    api = policed
    token = api.mint().json()["token"]
    got = api.redeem(token)
    assert got.status_code == 200, got.text
    doc = got.json()["staging_policy"]
    digest = doc["digest"]
    assert from_document(doc).policy.digest == digest
    assert ("token.redeemed", None, {"policy": digest}) in events(api)

    # A success must say the policy accepted the image: without the verdict, 422.
    missing = api.complete("stg-1", "succeeded", result={"docker_image": "x@sha256:1"})
    assert missing.status_code == 422 and "verdict is missing" in missing.text
    for junk in [{"digest": "md5:1"}, {"digest": digest, "signers": ["not hex"]}, "accepted"]:
        bad = api.complete("stg-1", "succeeded", result={"docker_image": "x", "policy": junk})
        assert bad.status_code == 422, junk
    other = {"digest": "sha256:" + "0" * 64, "signers": [FPR]}
    wrong = api.complete("stg-1", "succeeded", result={"docker_image": "x", "policy": other})
    assert wrong.status_code == 422 and "this broker serves" in wrong.text
    verdict = {"digest": digest, "signers": [FPR]}
    done = api.complete("stg-1", "succeeded", result={"docker_image": "x", "policy": verdict})
    assert done.status_code == 200, done.text
    assert ("staging.completed", None, {"policy": digest, "signers": [FPR]}) in events(api)


def test_a_refusal_is_audited_with_reason_policy(policed: Api) -> None:
    api = policed
    token = api.mint().json()["token"]
    digest = api.redeem(token).json()["staging_policy"]["digest"]
    error = "registry.example.com/team/app:1.0 refused by the signature policy: ..."
    failed = api.complete(
        "stg-1",
        "failed",
        error=error,
        result={"reason": "policy", "policy": {"digest": digest}},
    )
    assert failed.status_code == 200, failed.text
    assert ("staging.failed", "policy", {"error": error, "policy": digest}) in events(api)


def test_without_a_policy_nothing_changes(api: Api) -> None:
    token = api.mint().json()["token"]
    assert api.redeem(token).json()["staging_policy"] is None
    done = api.complete("stg-1", "succeeded", result={"docker_image": "x@sha256:1"})
    assert done.status_code == 200
    assert ("token.redeemed", None, {}) in events(api)
