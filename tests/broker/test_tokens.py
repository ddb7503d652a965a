"""The staging token format: AEAD, key ring, no oracle. Flip any byte and it is refused."""

from __future__ import annotations

import base64
import secrets
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.errors import TokenRefused
from broker.keys import TokenKey, TokenKeyRing
from broker.tokens import (
    StagingClaims,
    fingerprint,
    open_credentials,
    open_token,
    seal_credentials,
    seal_token,
)

RING = TokenKeyRing(
    (
        TokenKey("tk-old", secrets.token_bytes(32), ""),
        TokenKey("tk-new", secrets.token_bytes(32), ""),
    )
)
NOW = int(time.time())
CLAIMS = StagingClaims(
    "tid",
    "stg",
    "app",
    "docker.io/library/x:1",
    "docker.io",
    "tailor-1",
    NOW,
    NOW + 900,
    secrets.token_bytes(32),
)


def test_round_trip_under_the_current_key() -> None:
    token = seal_token(CLAIMS, RING)
    assert token.startswith("st1.tk-new.")
    assert open_token(token, RING, NOW) == CLAIMS
    assert "data_key" not in repr(CLAIMS) and CLAIMS.data_key.hex() not in repr(CLAIMS)


def test_older_keys_decrypt_until_retired() -> None:
    old_ring = TokenKeyRing(RING.keys[:1])
    token = seal_token(CLAIMS, old_ring)
    assert open_token(token, RING, NOW).token_id == "tid"
    retired = TokenKeyRing(RING.keys[1:])
    with pytest.raises(TokenRefused) as info:
        open_token(token, retired, NOW)
    assert info.value.reason == "unknown or retired key"


def test_flipping_any_byte_is_refused() -> None:
    token = seal_token(CLAIMS, RING)
    for i in range(len(token)):
        for replacement in {"A", "_"} - {token[i]}:
            tampered = token[:i] + replacement + token[i + 1 :]
            with pytest.raises(TokenRefused):
                open_token(tampered, RING, NOW)
    # And at the byte level of the sealed part too.
    head, blob = token.rsplit(".", 1)
    raw = bytearray(base64.urlsafe_b64decode(blob + "=" * (-len(blob) % 4)))
    for i in range(len(raw)):
        raw[i] ^= 0x01
        bad = head + "." + base64.urlsafe_b64encode(bytes(raw)).rstrip(b"=").decode()
        with pytest.raises(TokenRefused):
            open_token(bad, RING, NOW)
        raw[i] ^= 0x01


def test_the_key_id_is_authenticated() -> None:
    token = seal_token(CLAIMS, RING)
    swapped = token.replace("st1.tk-new.", "st1.tk-old.")
    with pytest.raises(TokenRefused):
        open_token(swapped, RING, NOW)


def test_expiry() -> None:
    token = seal_token(CLAIMS, RING)
    with pytest.raises(TokenRefused) as info:
        open_token(token, RING, NOW + 900)
    assert info.value.reason == "expired"
    assert str(info.value) == "staging token refused"


@settings(max_examples=300)
@given(
    st.one_of(
        st.binary(max_size=600).map(lambda b: b.decode("latin-1")),
        st.text(max_size=600),
        st.builds(lambda s: "st1.tk-new." + s, st.text(max_size=300)),
    )
)
def test_any_input_is_refused_cleanly(text: str) -> None:
    with pytest.raises(TokenRefused) as info:
        open_token(text, RING, NOW)
    assert str(info.value) == "staging token refused"


@pytest.mark.parametrize("value", [None, 5, b"st1.x.y", "x" * 5000])
def test_wrong_types_and_oversize(value: object) -> None:
    with pytest.raises(TokenRefused):
        open_token(value, RING, NOW)


def test_sealed_credentials_are_bound_to_staging_and_image() -> None:
    key = secrets.token_bytes(32)
    sealed = seal_credentials(key, staging_guid="s1", image="i", username="u", password="pw")
    assert open_credentials(key, sealed, staging_guid="s1", image="i") == ("u", "pw")
    assert b"pw" not in sealed
    for kwargs in ({"staging_guid": "s2", "image": "i"}, {"staging_guid": "s1", "image": "j"}):
        with pytest.raises(TokenRefused):
            open_credentials(key, sealed, **kwargs)
    with pytest.raises(TokenRefused):
        open_credentials(secrets.token_bytes(32), sealed, staging_guid="s1", image="i")


def test_anonymous_credentials_seal_and_open_as_none() -> None:
    key = secrets.token_bytes(32)
    sealed = seal_credentials(key, staging_guid="s1", image="i", username=None, password=None)
    assert open_credentials(key, sealed, staging_guid="s1", image="i") == (None, None)
    with pytest.raises(TokenRefused):  # still bound: another staging cannot open it
        open_credentials(key, sealed, staging_guid="s2", image="i")
    half = seal_credentials(key, staging_guid="s1", image="i", username="u", password=None)
    with pytest.raises(TokenRefused):
        open_credentials(key, half, staging_guid="s1", image="i")


def test_fingerprints_are_keyed() -> None:
    a = fingerprint(b"k1" * 16, "token")
    assert a.startswith("hmac-sha256:") and "token" not in a
    assert a == fingerprint(b"k1" * 16, "token") != fingerprint(b"k2" * 16, "token")
