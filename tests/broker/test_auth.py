"""Client assertions: the algorithm allow-list and algorithm confusion (pyjwt's advisories)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from broker.auth import _check_signature, load_client_key, verify_assertion
from broker.errors import ClockSkew, Unauthenticated
from broker.store.model import ClientRow
from tailor.assertion import ClientKey
from tests.support.clients import new_client

AUD = "http://broker.test"
ED = new_client("ed", "cc")
EC = new_client("ec", "tailor", "p256")
ROWS = {c.name: ClientRow(c.name, c.role, c.public_pem, 0) for c in (ED, EC)}


def verify(token: str):
    return verify_assertion(
        token, lookup=ROWS.get, audience=AUD, now=int(time.time()), max_lifetime=300, skew=30
    )


def reason(token: str) -> str:
    with pytest.raises(Unauthenticated) as info:
        verify(token)
    assert str(info.value) == "client authentication failed"  # the same to every caller
    return info.value.reason


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{b64(signature)}"


def claims_for(name: str) -> dict:
    now = int(time.time())
    return {"iss": name, "sub": name, "aud": AUD, "exp": now + 60, "jti": "j1"}


def test_valid_assertions_for_both_key_types() -> None:
    assert verify(ED.assertion(AUD)).client.name == "ed"
    assert verify(EC.assertion(AUD)).client.role == "tailor"


def test_alg_none_never_verifies() -> None:
    assert "not allowed" in reason(forged({"alg": "none", "typ": "JWT"}, claims_for("ed")))


def test_hmac_with_the_public_key_as_secret_never_verifies() -> None:
    # CVE-2022-29217-style confusion: sign HS256 with the client's public PEM.
    header = {"alg": "HS256", "typ": "JWT"}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for('ed')).encode())}"
    mac = hmac.new(ED.public_pem.encode(), signing.encode(), hashlib.sha256).digest()
    assert "not allowed" in reason(f"{signing}.{b64(mac)}")


def test_alg_must_fit_the_clients_key() -> None:
    claims = claims_for("ed")
    token = EC.assertion(AUD, iss="ed", sub="ed")  # ES256 presented for an Ed25519 client
    assert claims["iss"] == "ed"
    assert "does not match" in reason(token)


def test_signature_by_another_key_fails() -> None:
    impostor = new_client("ed", "cc")
    assert "invalid assertion" in reason(impostor.assertion(AUD))


@pytest.mark.parametrize(
    ("override", "expected"),
    [
        ({"aud": "http://other"}, "wrong audience"),
        ({"lifetime": -100}, "expired"),
        ({"lifetime": 1000}, "too long"),
        ({"sub": "someone"}, "sub is not iss"),
        ({"jti": None}, "bad jti"),
        ({"iat": 2**40}, "clock skew"),
        ({"nbf": 2**40}, "clock skew"),
        ({"exp": "soon"}, "bad exp"),
        ({"iss": "ghost", "sub": "ghost"}, "unknown client"),
    ],
)
def test_claim_checks(override: dict, expected: str) -> None:
    kwargs = dict(override)
    aud = kwargs.pop("aud", AUD)
    lifetime = kwargs.pop("lifetime", 60)
    assert expected in reason(ED.assertion(aud, lifetime=lifetime, **kwargs))


def test_only_ed25519_and_p256_keys_register() -> None:
    from cryptography.hazmat.primitives import serialization

    rsa_pem = (
        rsa.generate_private_key(65537, 2048)
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    with pytest.raises(ValueError, match="Ed25519 or EC P-256"):
        load_client_key(rsa_pem)
    with pytest.raises(ValueError, match="not a PEM"):
        load_client_key("hello")
    assert load_client_key(ED.public_pem) is not None


def test_es256_signatures_must_be_raw_r_s() -> None:
    from cryptography.hazmat.primitives import hashes as h
    from cryptography.hazmat.primitives.asymmetric import ec as ecm

    header = {"alg": "ES256", "typ": "JWT"}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for('ec')).encode())}"
    der = EC.key.sign(signing.encode(), ecm.ECDSA(h.SHA256()))  # type: ignore[call-arg]
    assert "invalid assertion" in reason(f"{signing}.{b64(der)}")


def test_non_canonical_base64_and_crit_are_refused() -> None:
    good = ED.assertion(AUD)
    head, body, sig = good.split(".")
    assert "malformed" in reason(f"{head}=.{body}.{sig}")
    assert "malformed" in reason(f"{head}.{body}.{sig}!")
    crit = forged({"alg": "EdDSA", "crit": ["x"]}, claims_for("ed"))
    assert "critical" in reason(crit)


def test_audience_may_be_a_list() -> None:
    assert verify(ED.assertion(["http://other", AUD])).client.name == "ed"  # type: ignore[arg-type]


def _ed_signing_input() -> str:
    header = {"alg": "EdDSA", "typ": "JWT"}
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for('ed')).encode())}"


def test_ed25519_signatures_must_be_64_bytes_and_cover_the_claims() -> None:
    signing = _ed_signing_input()
    good = ED.key.sign(signing.encode())  # type: ignore[call-arg]
    assert verify(f"{signing}.{b64(good)}").client.name == "ed"
    assert "invalid assertion" in reason(f"{signing}.{b64(good[:63])}")
    assert "invalid assertion" in reason(f"{signing}.{b64(good + b'x')}")
    head = signing.split(".")[0]
    claims = claims_for("ed") | {"jti": "j2"}  # same header and signature, other claims
    assert "invalid assertion" in reason(f"{head}.{b64(json.dumps(claims).encode())}.{b64(good)}")


def test_ed25519_malleated_signature_is_refused() -> None:
    # S + L is the same point arithmetic but a non-canonical encoding: lax verifiers accept it.
    order = 2**252 + 27742317777372353535851937790883648493
    signing = _ed_signing_input()
    good = ED.key.sign(signing.encode())  # type: ignore[call-arg]
    s = int.from_bytes(good[32:], "little") + order
    assert s < 2**256
    malleated = good[:32] + s.to_bytes(32, "little")
    assert "invalid assertion" in reason(f"{signing}.{b64(malleated)}")


def test_ed25519_small_order_key_verifies_nothing() -> None:
    # The identity point as a public key, with R = identity and S = 0, "signs" any message
    # under a verifier that skips the small-order checks.
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    identity = b"\x01" + b"\x00" * 31
    pem = (
        ed25519.Ed25519PublicKey.from_public_bytes(identity)
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with pytest.raises(ValueError, match="small-order"):
        load_client_key(pem)  # `broker clients add` refuses it
    rows = {"weak": ClientRow("weak", "cc", pem, 0)}  # were it stored anyway:
    header = {"alg": "EdDSA", "typ": "JWT"}
    signing = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims_for('weak')).encode())}"
    forgery = identity + bytes(32)
    with pytest.raises(Unauthenticated) as info:
        verify_assertion(
            f"{signing}.{b64(forgery)}",
            lookup=rows.get,
            audience=AUD,
            now=int(time.time()),
            max_lifetime=300,
            skew=30,
        )
    assert info.value.reason == "client key unusable"
    # And the signature check itself refuses the forgery (OpenSSL's Ed25519 accepts it).
    weak = ed25519.Ed25519PublicKey.from_public_bytes(identity)
    with pytest.raises(Unauthenticated):
        _check_signature(weak, signing.encode(), forgery)


def signed(claims: dict) -> str:
    """A correctly signed assertion whose claims are exactly ``claims`` (any JSON Python
    writes, non-standard constants too)."""
    signing = f"{b64(json.dumps({'alg': 'EdDSA', 'typ': 'JWT'}).encode())}."
    signing += b64(json.dumps(claims).encode())
    return f"{signing}.{b64(ED.key.sign(signing.encode()))}"  # type: ignore[call-arg]


@pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan"), 1e999, 10**400])
@pytest.mark.parametrize("claim", ["exp", "iat", "nbf"])
def test_a_number_no_clock_can_hold_is_refused_not_a_crash(claim: str, value: object) -> None:
    claims = claims_for("ed") | {claim: value}
    assert reason(signed(claims))  # Unauthenticated (401), not OverflowError/ValueError (500)


NOW = 1_700_000_000


@pytest.mark.parametrize("client", [ED, EC], ids=["ed25519", "p256"])
@pytest.mark.parametrize("offset", [-31, -29, 29, 31])
def test_clock_skew_is_allowed_the_same_either_way(client, offset: int) -> None:
    """A client whose clock is ``offset`` s off the broker's (30 s allowed): the Tailor's own
    assertions (60 s lives) and pyjwt's alike. Was: accepted from -89 s to +30 s."""
    tailor_key = ClientKey(client.name, client.key).assertion(AUD, now=NOW + offset)
    pyjwt_made = client.assertion(AUD, iat=NOW + offset, exp=NOW + offset + 60)
    for token in (tailor_key, pyjwt_made):

        def check(token: str = token) -> str:
            return verify_assertion(
                token, lookup=ROWS.get, audience=AUD, now=NOW, max_lifetime=300, skew=30
            ).client.name

        if abs(offset) <= 30:
            assert check() == client.name
            continue
        with pytest.raises(ClockSkew) as info:
            check()
        assert str(info.value) == "client authentication failed"
        side = "ahead of" if offset > 0 else "behind"
        assert info.value.detail == (
            f"clock skew: the assertion was issued {abs(offset)} s {side} the broker's clock; "
            "30 s allowed either way"
        )
        assert info.value.kind == "clock_skew"


def test_without_iat_the_window_is_exps() -> None:
    """Without ``iat`` only ``exp`` can be checked: up to the skew past it, and a lifetime
    from now of at most the maximum plus the skew."""

    def check(exp: int) -> str:
        token = ED.assertion(AUD, iat=None, exp=exp)
        return verify_assertion(
            token, lookup=ROWS.get, audience=AUD, now=NOW, max_lifetime=300, skew=30
        ).client.name

    assert check(exp=NOW - 29) == "ed"
    assert check(exp=NOW + 330) == "ed"
    with pytest.raises(Unauthenticated, match="client authentication failed") as info:
        check(exp=NOW - 30)
    assert info.value.reason == "expired assertion"
    with pytest.raises(Unauthenticated) as info:
        check(exp=NOW + 331)
    assert info.value.reason == "assertion lives too long"


def test_clock_skew_is_not_told_before_the_signature_verified() -> None:
    """No oracle: a skewed assertion of an unknown client, or by another key, is refused
    as any other, without a detail."""
    ghost = new_client("ghost", "cc")
    impostor = new_client("ed", "cc")
    for token in (ghost.assertion(AUD, iat=NOW - 100), impostor.assertion(AUD, iat=NOW - 100)):
        with pytest.raises(Unauthenticated) as info:
            verify_assertion(
                token, lookup=ROWS.get, audience=AUD, now=NOW, max_lifetime=300, skew=30
            )
        assert not isinstance(info.value, ClockSkew)
        assert info.value.kind == "rejected"
