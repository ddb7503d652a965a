"""base64url, raw ES256 and compact JWS, checked against cryptography and pyjwt."""

from __future__ import annotations

import json
import secrets

import jwt
import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from tailor.jose import SigningKey, b64url, b64url_decode, compact_jws, es256_sign, es256_verify

P256 = ec.generate_private_key(ec.SECP256R1())
ED = ed25519.Ed25519PrivateKey.generate()


@pytest.mark.parametrize("n", range(0, 34))
def test_round_trips(n: int) -> None:
    data = secrets.token_bytes(n)
    text = b64url(data)
    assert "=" not in text and "+" not in text and "/" not in text
    assert b64url_decode(text) == data
    assert b64url_decode(text, canonical=False) == data


def test_known_values() -> None:
    assert b64url(b"") == "" and b64url(b"\xfb\xff") == "-_8"
    assert b64url_decode("-_8") == b"\xfb\xff"


@pytest.mark.parametrize(
    ("text", "lenient"),
    [
        ("QQ==", b"A"),  # padding
        ("QR", b"A"),  # non-zero trailing bits
        ("QUI=", b"AB"),
        ("QUJ", b"AB"),
        ("Q", None),  # no byte has one character
        ("Q+8", None),  # the standard alphabet
        ("Q/8", None),
        ("QQ Q", None),
        ("QQ\n", None),
        ("QQ=Q", None),
        ("QQ===", None),
        ("Q===", None),
        ("QUJD=", None),
        ("é", None),
        ("QQ!", None),
    ],
)
def test_non_canonical_spellings_are_refused(text: str, lenient: bytes | None) -> None:
    with pytest.raises(ValueError):
        b64url_decode(text)
    if lenient is None:
        with pytest.raises(ValueError):
            b64url_decode(text, canonical=False)
    else:
        assert b64url_decode(text, canonical=False) == lenient


def test_the_error_does_not_echo_the_input() -> None:
    with pytest.raises(ValueError) as info:
        b64url_decode("secret-ish+value")
    assert "secret" not in str(info.value)


def test_es256_signatures_verify_with_cryptography_and_pyjwt() -> None:
    data = b"header.claims"
    raw = es256_sign(P256, data)
    assert len(raw) == 64
    der = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
    P256.public_key().verify(der, data, ec.ECDSA(hashes.SHA256()))  # raises if wrong
    es256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)
    assert es256.verify(data, P256.public_key(), raw)
    # And the other way round: pyjwt's signature checks with ours.
    es256_verify(P256.public_key(), data, es256.sign(data, P256))


def test_es256_verify_refuses_bad_signatures() -> None:
    data = b"header.claims"
    raw = es256_sign(P256, data)
    es256_verify(P256.public_key(), data, raw)
    with pytest.raises(InvalidSignature):
        es256_verify(P256.public_key(), data + b"x", raw)
    with pytest.raises(InvalidSignature):
        es256_verify(P256.public_key(), data, raw[:-1] + bytes([raw[-1] ^ 1]))
    with pytest.raises(InvalidSignature):
        es256_verify(ec.generate_private_key(ec.SECP256R1()).public_key(), data, raw)
    with pytest.raises(InvalidSignature):
        es256_verify(P256.public_key(), data, bytes(64))
    for wrong in (raw[:63], raw + b"\0", b""):
        with pytest.raises(ValueError, match="64 bytes"):
            es256_verify(P256.public_key(), data, wrong)
    other = ec.generate_private_key(ec.SECP384R1())
    with pytest.raises(ValueError, match="P-256"):
        es256_sign(other, data)
    with pytest.raises(ValueError, match="P-256"):
        es256_verify(other.public_key(), data, raw)


@pytest.mark.parametrize(("key", "alg"), [(P256, "ES256"), (ED, "EdDSA")])
def test_compact_jws_is_what_pyjwt_reads(key: SigningKey, alg: str) -> None:
    claims = {"iss": "me", "aud": "you", "n": 1, "access": [{"type": "repository"}]}
    token = compact_jws({"typ": "JWT", "kid": "k1"}, claims, key)
    assert jwt.get_unverified_header(token) == {"alg": alg, "typ": "JWT", "kid": "k1"}
    got = jwt.decode(token, key.public_key(), algorithms=[alg], audience="you")
    assert got == claims
    head, body, _ = token.split(".")
    # Compact, sorted JSON: the same bytes whoever builds the same claims.
    assert b64url_decode(body) == json.dumps(claims, sort_keys=True, separators=(",", ":")).encode()
    assert json.loads(b64url_decode(head))["alg"] == alg
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(
            f"{head}.{b64url(b'{}')}.{token.split('.')[2]}",
            key.public_key(),
            algorithms=[alg],
            options={"verify_aud": False},
        )


def test_the_key_decides_the_algorithm() -> None:
    with pytest.raises(ValueError, match="key signs ES256"):
        compact_jws({"alg": "HS256"}, {}, P256)
    with pytest.raises(ValueError, match="key signs EdDSA"):
        compact_jws({"alg": "ES256"}, {}, ED)
    assert jwt.get_unverified_header(compact_jws({"alg": "ES256"}, {}, P256))["alg"] == "ES256"
