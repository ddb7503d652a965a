"""Simple-signing signatures: the blob's kind by its first byte, and the payload parsed
as strictly as containers/image parses it (containers-signature(5))."""

from __future__ import annotations

import json

import pytest

from tailor.trust.simplesign import (
    Payload,
    SignatureFormatError,
    SignatureRejected,
    parse_payload,
    simple_signing_blob,
)

DIGEST = "sha256:" + "e1" * 32


def payload(**changes: object) -> dict[str, object]:
    doc: dict[str, object] = {
        "critical": {
            "type": "atomic container signature",
            "image": {"docker-manifest-digest": DIGEST},
            "identity": {"docker-reference": "reg.test:5000/ns/app:v1"},
        },
        "optional": {"creator": "test", "timestamp": 1700000000},
    }
    doc.update(changes)
    return doc


def test_a_good_payload_says_which_digest_is_which_reference() -> None:
    got = parse_payload(json.dumps(payload()).encode())
    assert got == Payload(DIGEST, "reg.test:5000/ns/app:v1", "test", 1700000000)
    bare = parse_payload(json.dumps(payload(optional={"unknown": "ignored"})).encode())
    assert bare.creator is None and bare.timestamp is None


@pytest.mark.parametrize(
    ("doc", "says"),
    [
        (payload(extra=1), 'Unknown key "extra"'),
        ({"critical": payload()["critical"]}, 'Key "optional" missing'),
        (payload(optional=None), "JSON object expected"),
        (
            payload(critical={**payload()["critical"], "type": "cosign container image signature"}),  # type: ignore[dict-item]
            "Unrecognized signature type cosign container image signature",
        ),
        (
            payload(critical={**payload()["critical"], "more": 1}),  # type: ignore[dict-item]
            'Unknown key "more"',
        ),
        (
            payload(critical={**payload()["critical"], "image": {"docker-manifest-digest": 1}}),  # type: ignore[dict-item]
            "is not a string",
        ),
        (payload(optional={"timestamp": 1.5}), "optional.timestamp is not an integer"),
        (payload(optional={"creator": 7}), "optional.creator is not a string"),
    ],
)
def test_a_payload_out_of_shape_is_refused(doc: object, says: str) -> None:
    with pytest.raises(SignatureRejected) as info:
        parse_payload(json.dumps(doc).encode())
    assert says in str(info.value)


def test_duplicate_keys_and_non_json_are_refused() -> None:
    text = json.dumps(payload())
    for constant in ("NaN", "Infinity"):
        odd = text.replace("1700000000", constant)
        with pytest.raises(SignatureRejected, match=f"{constant} is no JSON number"):
            parse_payload(odd.encode())
    with pytest.raises(SignatureRejected, match='Duplicate key "optional"'):
        parse_payload((text[:-1] + ', "optional": {}}').encode())
    with pytest.raises(SignatureRejected, match="not JSON"):
        parse_payload(b"\xa3 not json")


def test_a_blob_is_known_by_its_first_byte() -> None:
    assert simple_signing_blob(b"\xa3rest") == b"\xa3rest"  # compressed data, as gpg writes
    assert simple_signing_blob(b"\x90rest") == b"\x90rest"  # an uncompressed signed message
    assert simple_signing_blob(b"\x00simple-signing\n\xa3x") == b"\xa3x"
    assert simple_signing_blob(b"\x00sigstore-json\n{}") is None
    with pytest.raises(SignatureFormatError, match="empty signature blob"):
        simple_signing_blob(b"")
    with pytest.raises(SignatureFormatError, match="starting with binary 0x2d"):
        simple_signing_blob(b"-----BEGIN PGP MESSAGE-----")
