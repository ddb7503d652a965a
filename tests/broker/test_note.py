"""C2SP signed notes, checkpoints, cosignatures and tlog-proof files (broker/audit/note.py).

Known answers come from the Go checksum database's own tests (golang.org/x/mod/sumdb/note,
note_test.go: the PeterNeumann and EnochRoot keys and their signatures); the Go package
itself (the ``go_tlog`` fixture) opens what we sign and refuses what we tamper with.
"""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from broker.audit.note import (
    ALG_COSIGNATURE,
    ALG_ED25519,
    MAX_NOTE_BYTES,
    MAX_SIGNATURES,
    Checkpoint,
    Cosigner,
    NoteError,
    Signature,
    Signer,
    TlogProof,
    Verifier,
    add_signatures,
    cosign,
    cosignatures,
    key_id,
    new_key,
    open_note,
    parse_checkpoint,
    parse_note,
    parse_tlog_proof,
    parse_verifier_key,
    read_private_key,
    sign_note,
    verifier_key,
    verify_cosignature,
    write_private_key,
)
from tests.support.gotlog import GoTlog

# --- Known answers: golang.org/x/mod/sumdb/note's note_test.go --------------------------

PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
    "XgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01"
    "oOTGwnWLox33WWd1RvMc+QQ=\n"
)
PETER_NOTE = (TEXT + "\n" + PETER_SIG).encode()
BOTH_NOTE = (TEXT + "\n" + PETER_SIG + ENOCH_SIG).encode()

# The examples of c2sp.org/tlog-checkpoint and c2sp.org/tlog-cosignature (no public keys
# are published for them, and tlog-proof's signatures are elided: form only).
SPEC_COSIGNED = (
    "example.com/behind-the-sofa\n"
    "20852163\n"
    "CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    "\n"
    "— example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URY"
    "N7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n"
    "— witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZC"
    "B9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n"
).encode()
SPEC_PROOF_HEADER = (
    "c2sp.org/tlog-proof@v1\n"
    "extra YWdlLXYxLjIuMS1kYXJ3aW4tYXJtNjQudGFyLmd6kYXJ3aW4tYXJ\n"
    "index 73894\n"
    "gSKyXoYZUgZ6jduWYrkDOARinOMGJveXjgMkBTcdPlQ=\n"
    "B95lDa8R83lS8n0eG+o0buTxRKQTYFi//1U8anccXmA=\n"
    "EKNzoDWG8LGC0Yp9o+sv3qllpMP9uHQ9B20KNL+Q1zs=\n"
    "RoopEkOdqkYqMB4MJXrbt/hMjOxsVn0IrWjpz1ZMMes=\n"
    "AHCioX9nLjsrse6YhjRRmk1WUEirVOLLRoOQ6vfO5vk=\n"
    "\n"
)


def go_signer(skey: str) -> Signer:
    """Go's private key form ``PRIVATE+KEY+name+id+base64(alg || seed)``, as a Signer."""
    private, keyword, name, hex_id, encoded = skey.split("+", 4)
    assert (private, keyword) == ("PRIVATE", "KEY")
    raw = base64.b64decode(encoded)
    assert raw[0] == ALG_ED25519 and len(raw) == 33
    signer = Signer(name, Ed25519PrivateKey.from_private_bytes(raw[1:]))
    assert signer.key_id.hex() == hex_id
    return signer


PETER = parse_verifier_key(PETER_VKEY)
ENOCH = parse_verifier_key(ENOCH_VKEY)

ROOT = bytes(range(32))
LOG = Signer("example.com/log", Ed25519PrivateKey.from_private_bytes(b"\x01" * 32))
W1 = Cosigner("witness.example/w1", Ed25519PrivateKey.from_private_bytes(b"\x02" * 32))
W2 = Cosigner("witness.example/w2", Ed25519PrivateKey.from_private_bytes(b"\x03" * 32))


def checkpoint_note(
    size: int = 5, origin: str = "example.com/log", extensions: tuple[str, ...] = ()
) -> tuple[str, bytes]:
    body = Checkpoint(origin, size, ROOT, extensions).body()
    return body, sign_note(body, [LOG])


def replace_line(note: bytes, number: int, line: str) -> bytes:
    """``note`` with its line ``number`` (0-based, without newline) replaced."""
    lines = note.decode().split("\n")
    lines[number] = line
    return "\n".join(lines).encode()


# --- keys and known answers ---------------------------------------------------------------


def test_go_keys_known_answer() -> None:
    peter = go_signer(PETER_SKEY)
    assert peter.vkey() == PETER_VKEY
    assert peter.verifier() == PETER
    assert PETER.vkey() == PETER_VKEY and str(PETER) == PETER_VKEY
    assert (PETER.name, PETER.alg, PETER.key_id.hex()) == ("PeterNeumann", 1, "c74f20a3")
    assert key_id("PeterNeumann", ALG_ED25519, PETER.public) == bytes.fromhex("c74f20a3")
    assert verifier_key("PeterNeumann", ALG_ED25519, PETER.public) == PETER_VKEY
    assert ENOCH.vkey() == ENOCH_VKEY and ENOCH.key_id.hex() == "af0cfe78"


def test_sign_known_answer() -> None:
    """Ed25519 is deterministic: our note is Go's, byte for byte."""
    assert sign_note(TEXT, [go_signer(PETER_SKEY)]) == PETER_NOTE


def test_go_notes_open() -> None:
    """note_test.go's TestOpen, as far as it is about the format."""
    opened = open_note(BOTH_NOTE, [PETER])
    assert opened.text == TEXT
    assert opened.verified == (PETER,)
    assert [s.line() for s in opened.signatures] == [PETER_SIG, ENOCH_SIG]
    assert open_note(BOTH_NOTE, [ENOCH]).verified == (ENOCH,)
    assert open_note(BOTH_NOTE, [PETER, ENOCH]).verified == (PETER, ENOCH)
    assert open_note(BOTH_NOTE, [ENOCH, PETER]).verified == (PETER, ENOCH)  # as signed
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(BOTH_NOTE, [])
    # The same key given twice is one key.
    assert open_note(PETER_NOTE, [PETER, PETER]).verified == (PETER,)
    # Duplicated and unknown lines are kept, not errors.
    tampered_enoch = ENOCH_SIG[:60] + "ABCD" + ENOCH_SIG[60:]
    note = (TEXT + "\n" + PETER_SIG + PETER_SIG + ENOCH_SIG + tampered_enoch).encode()
    assert len(open_note(note, [PETER]).signatures) == 4
    with pytest.raises(NoteError, match=r"invalid signature by known key EnochRoot\+af0cfe78"):
        open_note(note, [PETER, ENOCH])


def test_go_bad_notes_refused() -> None:
    tampered = TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:]
    with pytest.raises(NoteError, match=r"invalid signature by known key PeterNeumann\+c74f20a3"):
        open_note(tampered.encode(), [PETER])
    bad = [
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
        "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
        TEXT + "\n" + PETER_SIG * (MAX_SIGNATURES + 1),
    ]
    for msg in bad:
        with pytest.raises(NoteError):
            open_note(msg.encode(), [PETER])
    with pytest.raises(NoteError, match="UTF-8"):
        open_note(b"\xff" + PETER_NOTE, [PETER])
    # Exactly the limit is fine.
    assert open_note((TEXT + "\n" + PETER_SIG * MAX_SIGNATURES).encode(), [PETER])


def test_verifier_key_manglings_refused() -> None:
    """note_test.go's TestNewVerifier: every substring and every byte bumped is refused."""
    data = PETER_VKEY.encode()
    for i in range(len(data) + 1):
        for j in range(i + 1, len(data) + 1):
            if (i, j) != (0, len(data)):
                with pytest.raises(NoteError):
                    parse_verifier_key(data[i:j].decode())
    for i in range(len(data)):
        bumped = bytearray(data)
        bumped[i] += 1
        with pytest.raises(NoteError):
            parse_verifier_key(bumped.decode())
    # Go's wrong-length key (its base64 is not canonical either, which we see first) and
    # unknown algorithm, each with the key id adjusted to match.
    with pytest.raises(NoteError, match="canonical"):
        parse_verifier_key(
            "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
        )
    with pytest.raises(NoteError, match="unknown signature type"):
        parse_verifier_key("PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW")
    for public in (PETER.public[:31], PETER.public + b"x", b""):
        raw = bytes([ALG_ED25519]) + public
        hex_id = key_id("PeterNeumann", ALG_ED25519, public).hex()
        with pytest.raises(NoteError, match="32 bytes"):
            parse_verifier_key(f"PeterNeumann+{hex_id}+{base64.b64encode(raw).decode()}")


@pytest.mark.parametrize(
    ("vkey", "reason"),
    [
        ("PeterNeumann+C74F20A3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "lowercase hex"),
        ("PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW\n", "base64"),
        (" PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "space"),
        ("+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "empty"),
        ("PeterNeumann+c74f20a3", "name\\+keyid\\+key"),
        ("PeterNeumann+c74f20a3+", "empty"),
        ("PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "does not match"),
        ("Peter\u00a0Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "space"),
    ],
)
def test_verifier_key_refusals(vkey: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_verifier_key(vkey)


def test_verifiers_for_both_signature_types() -> None:
    log, witness = LOG.verifier(), W1.verifier()
    assert log.alg == ALG_ED25519 and witness.alg == ALG_COSIGNATURE
    assert parse_verifier_key(LOG.vkey()) == log
    assert parse_verifier_key(W1.vkey()) == witness
    # The same key under two signature types has two ids (the type is hashed in).
    both = Cosigner(LOG.name, LOG.key)
    assert both.key_id != LOG.key_id
    assert both.vkey().split("+")[2] != LOG.vkey().split("+")[2]
    with pytest.raises(NoteError, match="key id does not match"):
        Verifier(LOG.name, ALG_ED25519, b"\0" * 4, log.public)
    with pytest.raises(NoteError, match="unknown signature type"):
        Verifier.of(LOG.name, 0x02, log.public)
    with pytest.raises(NoteError, match="32 bytes"):
        verifier_key(LOG.name, ALG_ED25519, log.public[:31])
    for bad in ["", "a+b", "a b", "a\u3000b", "a\tb"]:
        with pytest.raises(NoteError):
            key_id(bad, ALG_ED25519, log.public)
        with pytest.raises(NoteError):
            Signer(bad, LOG.key)


def test_repr_holds_no_key_material() -> None:
    raw = LOG.key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    for text in (repr(LOG), repr(W1), str(LOG)):
        assert raw.hex() not in text and base64.b64encode(raw).decode() not in text
        assert "key=" not in text


# --- notes --------------------------------------------------------------------------------


def test_round_trip_two_signers() -> None:
    other = Signer("other.example/log", new_key())
    text = "line one\n\nline three after an empty line\n"
    note = sign_note(text, [LOG, other])
    parsed_text, signatures = parse_note(note)
    assert parsed_text == text
    assert [(s.name, s.key_id) for s in signatures] == [
        (LOG.name, LOG.key_id),
        (other.name, other.key_id),
    ]
    assert note == (text + "\n" + "".join(s.line() for s in signatures)).encode()
    assert open_note(note, [other.verifier()]).verified == (other.verifier(),)
    assert open_note(note, [LOG.verifier(), other.verifier()]).text == text


@hsettings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=30),
        min_size=1,
        max_size=5,
    )
)
def test_round_trip_any_text(lines: list[str]) -> None:
    text = "\n".join(lines) + "\n"
    note = sign_note(text, [LOG])
    assert parse_note(note)[0] == text
    assert open_note(note, [LOG.verifier()]).text == text


def test_sign_note_refusals() -> None:
    with pytest.raises(NoteError, match="newline"):
        sign_note("no newline", [LOG])
    with pytest.raises(NoteError, match="control"):
        sign_note("tab\there\n", [LOG])
    with pytest.raises(NoteError, match="control"):
        sign_note("crlf\r\n", [LOG])
    with pytest.raises(NoteError, match="at least one signature"):
        sign_note("text\n", [])
    with pytest.raises(NoteError, match="twice"):
        sign_note("text\n", [LOG, LOG])
    with pytest.raises(NoteError, match="larger"):
        sign_note("x" * MAX_NOTE_BYTES + "\n", [LOG])


SIG_B64 = PETER_SIG.split(" ")[2].strip()


@pytest.mark.parametrize(
    ("note", "reason"),
    [
        pytest.param(TEXT, "no blank line", id="no-signatures"),
        pytest.param(TEXT + "\n", "no signature lines", id="blank-line-only"),
        pytest.param(TEXT[:-1] + PETER_SIG, "no blank line", id="no-blank-line"),
        pytest.param(TEXT + "\n" + PETER_SIG[:-1], "newline", id="last-line-unterminated"),
        pytest.param(TEXT + "\n" + PETER_SIG + "\n", "no signature lines", id="trailing-blank"),
        pytest.param(TEXT + "\n" + "- PeterNeumann " + SIG_B64 + "\n", "em dash", id="hyphen"),
        pytest.param(TEXT + "\n" + "\u2013 PeterNeumann " + SIG_B64 + "\n", "em dash", id="en"),
        pytest.param(TEXT + "\n" + "—PeterNeumann " + SIG_B64 + "\n", "em dash", id="no-space"),
        pytest.param(TEXT + "\n" + "—  PeterNeumann " + SIG_B64 + "\n", "empty", id="2spaces"),
        pytest.param(TEXT + "\n" + "— PeterNeumann\n", "no signature", id="no-signature"),
        pytest.param(TEXT + "\n" + "— PeterNeumann \n", "too short", id="empty-signature"),
        pytest.param(TEXT + "\n" + "— Peter+Neumann " + SIG_B64 + "\n", "'\\+'", id="plus"),
        pytest.param(TEXT + "\n— Peter\u00a0Neumann " + SIG_B64 + "\n", "space", id="nbsp"),
        pytest.param(TEXT + "\n— Peter\u2003Neumann " + SIG_B64 + "\n", "space", id="emsp"),
        pytest.param(TEXT + "\n" + "— PeterNeumann " + SIG_B64 + " \n", "base64", id="trail"),
        pytest.param(TEXT + "\n" + "— PeterNeumann " + SIG_B64[:-1] + "\n", "base64", id="pad"),
        pytest.param(TEXT + "\n" + "— PeterNeumann AAAAAA==\n", "too short", id="4-bytes"),
        pytest.param(TEXT + "\n" + "— PeterNeumann AAAAAB==\n", "canonical", id="noncanonical"),
        pytest.param(TEXT + "\n" + "— PeterNeumann " + SIG_B64[:-3] + "\n", "base64", id="cut"),
        pytest.param("\x00" + TEXT + "\n" + PETER_SIG, "control", id="nul"),
        pytest.param(TEXT.replace("\n", "\r\n") + "\n" + PETER_SIG, "control", id="crlf"),
        pytest.param(TEXT + "\r\n" + PETER_SIG, "control", id="cr-blank"),
        pytest.param(TEXT + "\n" + PETER_SIG.replace("\n", "\r\n"), "control", id="cr-sig"),
        pytest.param(TEXT + "\n" + PETER_SIG + "Unexpected line.\n", "em dash", id="junk"),
    ],
)
def test_malformed_notes_refused(note: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason) as refused:
        parse_note(note.encode())
    assert "\n" not in str(refused.value)
    with pytest.raises(NoteError, match=reason):
        open_note(note.encode(), [PETER])


def test_size_limits() -> None:
    big = ("x" * 1000 + "\n") * (MAX_NOTE_BYTES // 1001 + 1)
    with pytest.raises(NoteError, match="larger"):
        parse_note((big + "\n" + PETER_SIG).encode())
    with pytest.raises(NoteError, match="more than 100"):
        parse_note((TEXT + "\n" + PETER_SIG * 101).encode())
    assert len(parse_note((TEXT + "\n" + PETER_SIG * 100).encode())[1]) == 100


def test_unknown_keys_ignored() -> None:
    body, note = checkpoint_note()
    stranger = Signer("stranger.example", new_key())
    same_name = Signer(LOG.name, new_key())  # the log's name, another key: another key id
    lines = [stranger.sign(body).line(), same_name.sign(body).line(), cosign(body, W1, 7)]
    noted = add_signatures(note, lines)
    opened = open_note(noted, [LOG.verifier()])
    assert opened.verified == (LOG.verifier(),) and len(opened.signatures) == 4
    # A line under the log's name with another key id is not the log's: the note alone
    # with it is unsigned, however well-formed.
    only = (body + "\n" + same_name.sign(body).line()).encode()
    with pytest.raises(NoteError, match="no signature by a known key"):
        open_note(only, [LOG.verifier()])
    # Garbage under an unknown name is ignored; under the log's name and id, refused.
    junk = Signature("stranger.example", b"\0\0\0\0", b"\1" * 64).line()
    assert open_note(add_signatures(note, [junk]), [LOG.verifier()])
    forged = Signature(LOG.name, LOG.key_id, b"\1" * 64).line()
    with pytest.raises(NoteError, match=r"invalid signature by known key example\.com/log\+"):
        open_note(add_signatures(note, [forged]), [LOG.verifier()])
    short = Signature(LOG.name, LOG.key_id, b"\1" * 10).line()
    with pytest.raises(NoteError, match="invalid signature"):
        open_note((body + "\n" + short).encode(), [LOG.verifier()])


def test_tampered_text_and_signature_refused() -> None:
    _, note = checkpoint_note(size=10)
    tampered_text = note.replace(b"\n10\n", b"\n11\n")
    with pytest.raises(NoteError, match="invalid signature by known key"):
        open_note(tampered_text, [LOG.verifier()])
    text, [sig] = parse_note(note)
    flipped = Signature(sig.name, sig.key_id, bytes([sig.raw[0] ^ 1]) + sig.raw[1:])
    with pytest.raises(NoteError, match="invalid signature by known key"):
        open_note((text + "\n" + flipped.line()).encode(), [LOG.verifier()])


def test_open_note_takes_log_keys_only() -> None:
    _, note = checkpoint_note()
    with pytest.raises(NoteError, match="signature type 0x04"):
        open_note(note, [LOG.verifier(), W1.verifier()])
    twin = Verifier.of(LOG.name, ALG_ED25519, bytes(ENOCH.public))
    assert twin.key_id != LOG.key_id  # different keys, different ids: both may be given
    assert open_note(note, [LOG.verifier(), twin]).verified == (LOG.verifier(),)


def test_add_signatures() -> None:
    body, note = checkpoint_note()
    c1, c2 = cosign(body, W1, 100), cosign(body, W2, 200)
    once = add_signatures(note, [c1, c2])
    assert once == note + (c1 + c2).encode()
    # Identical lines once; the log's first; without the newline too.
    assert add_signatures(once, [c2.rstrip("\n"), c1, c1]) == once
    assert add_signatures(note + note.split(b"\n\n")[1], [c1]) == note + c1.encode()
    assert parse_note(once)[1][0].name == LOG.name
    assert add_signatures(PETER_NOTE, [ENOCH_SIG]) == BOTH_NOTE
    for bad in ["— two lines\n— x AAAAAAA=", "not a signature", "— a b\r", ""]:
        with pytest.raises(NoteError):
            add_signatures(note, [bad])
    with pytest.raises(NoteError, match="at most 100"):
        add_signatures(
            note, [Signature(f"w{n}", b"\0" * 4, b"\1").line() for n in range(MAX_SIGNATURES)]
        )


# --- checkpoints --------------------------------------------------------------------------


def test_checkpoint_body_and_round_trip() -> None:
    spec_text = parse_note(SPEC_COSIGNED)[0]
    spec = parse_checkpoint(spec_text)
    assert spec.origin == "example.com/behind-the-sofa" and spec.size == 20852163
    assert spec.root == base64.b64decode("CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=")
    assert spec.body() == spec_text and spec.extensions == ()
    with_ext = Checkpoint("o", 0, ROOT, ("ext one", "— looks like a signature"))
    body = with_ext.body()
    assert body == f"o\n0\n{base64.b64encode(ROOT).decode()}\next one\n— looks like a signature\n"
    assert parse_checkpoint(body) == with_ext
    assert open_note(sign_note(body, [LOG]), [LOG.verifier()]).checkpoint() == with_ext
    big = Checkpoint("a log with spaces + plus", 2**63 - 1, ROOT)
    assert parse_checkpoint(big.body()) == big


ROOT64 = base64.b64encode(ROOT).decode()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (f"o\n5\n{ROOT64}", "newline"),
        ("o\n5\n", "fewer than three"),
        (f"\n5\n{ROOT64}\n", "origin is empty"),
        (f"o\n05\n{ROOT64}\n", "leading zeros"),
        (f"o\n00\n{ROOT64}\n", "leading zeros"),
        (f"o\n+5\n{ROOT64}\n", "decimal"),
        (f"o\n-5\n{ROOT64}\n", "decimal"),
        (f"o\n 5\n{ROOT64}\n", "decimal"),
        (f"o\n5_0\n{ROOT64}\n", "decimal"),
        (f"o\n\u0665\n{ROOT64}\n", "decimal"),  # ARABIC-INDIC DIGIT FIVE
        (f"o\n\n{ROOT64}\n", "decimal"),
        (f"o\n{2**63}\n{ROOT64}\n", "too large"),
        (f"o\n5\n{base64.b64encode(ROOT[:31]).decode()}\n", "31 bytes"),
        (f"o\n5\n{base64.b64encode(ROOT + b'x').decode()}\n", "33 bytes"),
        (f"o\n5\n{ROOT64.rstrip('=')}\n", "base64"),
        (f"o\n5\n{ROOT64[:-2]}B=\n", "canonical"),
        (f"o\n5\n{base64.urlsafe_b64encode(bytes([0xFB] * 32)).decode()}\n", "base64"),
        (f"o\n5\n{ROOT64}\n\n", "empty extension"),
        (f"o\n5\n{ROOT64}\next\n\nmore\n", "empty extension"),
        (f"o\r\n5\n{ROOT64}\n", "control"),
    ],
)
def test_malformed_checkpoints_refused(text: str, reason: str) -> None:
    with pytest.raises(NoteError, match=reason):
        parse_checkpoint(text)


def test_checkpoint_constructor_refusals() -> None:
    for args, reason in [
        (("", 1, ROOT), "origin is empty"),
        (("o\nx", 1, ROOT), "newline"),
        (("o", -1, ROOT), "out of range"),
        (("o", 2**63, ROOT), "out of range"),
        (("o", 1, ROOT[:31]), "31 bytes"),
        (("o", 1, ROOT, ("",)), "extension line is empty"),
        (("o", 1, ROOT, ("a\nb",)), "newline"),
    ]:
        with pytest.raises(NoteError, match=reason):
            Checkpoint(*args)  # type: ignore[arg-type]


# --- cosignatures -------------------------------------------------------------------------


def test_cosign_and_verify() -> None:
    body, note = checkpoint_note(size=42, extensions=("ext",))
    line = cosign(body, W1, 1_700_000_000)
    assert line.startswith(f"— {W1.name} ") and line.endswith("\n") and line.count("\n") == 1
    [sig] = parse_note((body + "\n" + line).encode())[1]
    assert sig.key_id == W1.key_id and len(sig.raw) == 72
    assert int.from_bytes(sig.raw[:8], "big") == 1_700_000_000
    # The signed message, checked independently of verify_cosignature.
    message = f"cosignature/v1\ntime 1700000000\n{body}".encode()
    W1.key.public_key().verify(sig.raw[8:], message)
    assert verify_cosignature(sig, body, W1.verifier()) == 1_700_000_000
    assert verify_cosignature(sig, body, parse_verifier_key(W1.vkey())) == 1_700_000_000
    # Timestamps 0 and 2^63 - 1 are fine.
    for ts in (0, 2**63 - 1):
        [edge] = parse_note((body + "\n" + cosign(body, W1, ts)).encode())[1]
        assert verify_cosignature(edge, body, W1.verifier()) == ts
    opened = open_note(add_signatures(note, [line, cosign(body, W2, 5)]), [LOG.verifier()])
    assert cosignatures(opened, [W1.verifier(), W2.verifier()]) == {
        W1.vkey(): 1_700_000_000,
        W2.vkey(): 5,
    }


def test_cosignature_refusals() -> None:
    body, _ = checkpoint_note(size=42)
    other_body, _ = checkpoint_note(size=43)
    w1 = W1.verifier()
    [sig] = parse_note((body + "\n" + cosign(body, W1, 1000)).encode())[1]
    # Over another checkpoint.
    with pytest.raises(NoteError, match=r"invalid cosignature by witness\.example/w1\+"):
        verify_cosignature(sig, other_body, w1)
    # At another timestamp (the 8 bytes changed, the Ed25519 signature kept).
    moved = Signature(sig.name, sig.key_id, (1001).to_bytes(8, "big") + sig.raw[8:])
    with pytest.raises(NoteError, match="invalid cosignature"):
        verify_cosignature(moved, body, w1)
    # W1's key registered under another name: the line is not that witness's; renamed to
    # it, the key id (which hashes the name) gives it away.
    renamed = Verifier.of("witness.example/elsewhere", ALG_COSIGNATURE, w1.public)
    with pytest.raises(NoteError, match=r"is not by cosigner witness\.example/elsewhere"):
        verify_cosignature(sig, body, renamed)
    relabeled = Signature(renamed.name, sig.key_id, sig.raw)
    with pytest.raises(NoteError, match="is not by cosigner"):
        verify_cosignature(relabeled, body, renamed)
    # By another witness; a log key; a plain Ed25519 signature in cosignature clothing.
    with pytest.raises(NoteError, match="is not by cosigner"):
        verify_cosignature(sig, body, W2.verifier())
    with pytest.raises(NoteError, match="not a cosigner key"):
        verify_cosignature(sig, body, Verifier.of(W1.name, ALG_ED25519, w1.public))
    plain = Signature(W1.name, W1.key_id, W1.key.sign(body.encode()))
    with pytest.raises(NoteError, match="not 72 bytes"):
        verify_cosignature(plain, body, w1)
    # A timestamp of 2^63, properly signed, is still refused; cosign will not make one.
    ts = 2**63
    raw = W1.key.sign(f"cosignature/v1\ntime {ts}\n{body}".encode())
    huge = Signature(W1.name, W1.key_id, ts.to_bytes(8, "big") + raw)
    with pytest.raises(NoteError, match="2\\^63"):
        verify_cosignature(huge, body, w1)
    for bad_ts in (2**63, -1):
        with pytest.raises(NoteError, match="out of range"):
            cosign(body, W1, bad_ts)
    with pytest.raises(NoteError):
        cosign("not a checkpoint\n", W1, 1)


def test_cosignatures_counts_valid_ones_only() -> None:
    body, note = checkpoint_note(size=9)
    other_body, _ = checkpoint_note(size=8)
    renamed = Verifier.of("witness.example/elsewhere", ALG_COSIGNATURE, W1.verifier().public)
    lines = [
        cosign(body, W1, 10),
        cosign(body, W1, 30),  # cosigned again later: the latest counts
        cosign(other_body, W2, 20),  # W2's line is over another checkpoint
    ]
    opened = open_note(add_signatures(note, lines), [LOG.verifier()])
    witnesses = [W1.verifier(), W2.verifier(), renamed]
    assert cosignatures(opened, witnesses) == {W1.vkey(): 30}
    assert cosignatures(opened, []) == {}
    with pytest.raises(NoteError, match="not 0x04"):
        cosignatures(opened, [LOG.verifier()])
    plain = open_note(sign_note("not a checkpoint\n", [LOG]), [LOG.verifier()])
    with pytest.raises(NoteError, match="checkpoint"):
        cosignatures(plain, witnesses)


def test_spec_cosigned_checkpoint_parses() -> None:
    """tlog-cosignature.md's example: its signatures cannot be verified (no keys are
    published), but its form is ours: the witness line carries time 1679315147."""
    text, (log_sig, witness_sig) = parse_note(SPEC_COSIGNED)
    assert parse_checkpoint(text).size == 20852163
    assert log_sig.name == "example.com/behind-the-sofa" and len(log_sig.raw) == 64
    assert witness_sig.name == "witness.example.com/w1" and len(witness_sig.raw) == 72
    assert int.from_bytes(witness_sig.raw[:8], "big") == 1679315147
    assert "".join(s.line() for s in (log_sig, witness_sig)).encode() in SPEC_COSIGNED


# --- tlog-proof ---------------------------------------------------------------------------


def spec_like_checkpoint() -> bytes:
    """tlog-proof.md's checkpoint, signed by our log and two witnesses."""
    root = base64.b64decode("sFodV/vSp5O8n9a8QpW6PRY97tfOSW5bsc2Xl/EQi08=")
    body = Checkpoint("example.com/fancylog", 109482, root).body()
    return add_signatures(sign_note(body, [LOG]), [cosign(body, W1, 1), cosign(body, W2, 2)])


def test_tlog_proof_spec_format() -> None:
    checkpoint = spec_like_checkpoint()
    data = SPEC_PROOF_HEADER.encode() + checkpoint
    proof = parse_tlog_proof(data)
    assert proof.index == 73894
    assert proof.extra is not None and proof.extra.startswith(b"age-v1.2.1-darwin-arm64.tar.gz")
    assert [base64.b64encode(h).decode() for h in proof.proof] == SPEC_PROOF_HEADER.split("\n")[3:8]
    assert proof.checkpoint == checkpoint
    assert proof.format() == data
    opened = open_note(proof.checkpoint, [LOG.verifier()])
    assert cosignatures(opened, [W1.verifier(), W2.verifier()]) == {W1.vkey(): 1, W2.vkey(): 2}


def test_tlog_proof_round_trips() -> None:
    _, note = checkpoint_note(size=1)
    bare = TlogProof(0, [], note)
    assert bare.format() == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note
    assert parse_tlog_proof(bare.format()) == bare
    _, note = checkpoint_note(size=7, extensions=("e",))
    full = TlogProof(6, [bytes([n]) * 32 for n in range(3)], note, extra=b"\x00\xffextra")
    data = full.format()
    h = [base64.b64encode(bytes([n]) * 32).decode() for n in range(3)]
    assert (
        data
        == (
            "c2sp.org/tlog-proof@v1\nextra AP9leHRyYQ==\nindex 6\n" + "\n".join(h) + "\n\n"
        ).encode()
        + note
    )
    assert parse_tlog_proof(data) == full


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ("", "start with"),
        ("c2sp.org/tlog-proof@v2\nindex 1\n", "start with"),
        ("c2sp.org/tlog-proof@v1 \nindex 1\n", "start with"),
        ("\nc2sp.org/tlog-proof@v1\nindex 1\n", "start with"),
        ("c2sp.org/tlog-proof@v1\r\nindex 1\n", "start with"),
        ("c2sp.org/tlog-proof@v1\n", "no index"),
        ("c2sp.org/tlog-proof@v1\nextra AAAA\n", "no index"),
        ("c2sp.org/tlog-proof@v1\nindex 01\n", "leading zeros"),
        ("c2sp.org/tlog-proof@v1\nindex -1\n", "decimal"),
        ("c2sp.org/tlog-proof@v1\nindex  1\n", "decimal"),
        ("c2sp.org/tlog-proof@v1\nindex\n", "no index"),
        ("c2sp.org/tlog-proof@v1\nINDEX 1\n", "no index"),
        ("c2sp.org/tlog-proof@v1\nindex 5\n", "below the checkpoint's tree size"),
        ("c2sp.org/tlog-proof@v1\nindex 1\nextra AAAA\n", "base64"),
        ("c2sp.org/tlog-proof@v1\nextra \nindex 1\n", "empty"),
        ("c2sp.org/tlog-proof@v1\nextra AAA\nindex 1\n", "base64"),
        ("c2sp.org/tlog-proof@v1\nextra AAAA\nextra AAAA\nindex 1\n", "no index"),
        ("c2sp.org/tlog-proof@v1\nindex 1\n" + "A" * 44 + "\n", "hash is not 32"),
        ("c2sp.org/tlog-proof@v1\nindex 1\n" + "A" * 42 + "==\n", "hash is not 32"),
        ("c2sp.org/tlog-proof@v1\nindex 1\n" + "A" * 42 + "B=\n", "hash 1 is not canonical"),
        ("c2sp.org/tlog-proof@v1\nindex 1\n" + ("A" * 43 + "=\n") * 65, "more than 64"),
        ("c2sp.org/tlog-proof@v1\nindex 1\u00a0\n", "ASCII"),
    ],
)
def test_malformed_tlog_proofs_refused(header: str, reason: str) -> None:
    _, note = checkpoint_note(size=5)
    with pytest.raises(NoteError, match=reason):
        parse_tlog_proof(header.encode() + b"\n" + note)


def test_tlog_proof_checkpoint_must_be_a_checkpoint_note() -> None:
    head = b"c2sp.org/tlog-proof@v1\nindex 0\n\n"
    _, note = checkpoint_note(size=5)
    with pytest.raises(NoteError, match="no empty line"):
        parse_tlog_proof(head.rstrip(b"\n") + b"\n")
    with pytest.raises(NoteError, match="no blank line"):
        parse_tlog_proof(head + parse_note(note)[0].encode())
    with pytest.raises(NoteError, match="newline"):
        parse_tlog_proof(head + note.rstrip(b"\n"))
    with pytest.raises(NoteError, match="checkpoint"):
        parse_tlog_proof(head + sign_note("not\na checkpoint\n", [LOG]))
    with pytest.raises(NoteError, match="below"):
        parse_tlog_proof(head + checkpoint_note(size=0)[1])
    with pytest.raises(NoteError, match="larger"):
        parse_tlog_proof(head + b"x" * (2 << 20))
    for proof, reason in [
        (TlogProof(0, [], note, extra=b""), "empty"),
        (TlogProof(-1, [], note), "out of range"),
        (TlogProof(0, [b"x" * 31], note), "32 bytes"),
        (TlogProof(0, [ROOT] * 65, note), "more than 64"),
        (TlogProof(0, [], b"junk"), "no blank line"),
    ]:
        with pytest.raises(NoteError, match=reason):
            proof.format()


# --- key files ----------------------------------------------------------------------------


def test_key_file_round_trip(tmp_path: Path) -> None:
    key = new_key()
    path = tmp_path / "witness.key"
    write_private_key(path, key)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")
    again = read_private_key(path)
    assert Cosigner("w", again).vkey() == Cosigner("w", key).vkey()
    before = path.read_bytes()
    with pytest.raises(NoteError, match="refusing to overwrite"):
        write_private_key(path, new_key())
    assert path.read_bytes() == before
    assert read_private_key(str(path)) is not None


def test_key_file_under_a_strict_umask(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        write_private_key(tmp_path / "k", new_key())
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "k").stat().st_mode) == 0o600


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o660, 0o644, 0o601, 0o610])
def test_key_file_open_to_others_refused(tmp_path: Path, mode: int) -> None:
    path = tmp_path / "key"
    write_private_key(path, new_key())
    secret = path.read_text()
    path.chmod(mode)
    with pytest.raises(NoteError, match=f"mode {mode:04o}") as refused:
        read_private_key(path)
    assert "\n" not in str(refused.value)
    body = secret.splitlines()[1]
    assert body not in str(refused.value)


def test_key_file_refusals(tmp_path: Path) -> None:
    with pytest.raises(NoteError, match="cannot read"):
        read_private_key(tmp_path / "missing")
    with pytest.raises(NoteError, match="cannot read: Is a directory"):
        read_private_key(tmp_path)
    junk = tmp_path / "junk"
    junk.write_bytes(b"-----BEGIN PRIVATE KEY-----\nc2VjcmV0IHN0dWZm\n-----END PRIVATE KEY-----\n")
    junk.chmod(0o600)
    with pytest.raises(NoteError, match="PKCS#8 PEM") as refused:
        read_private_key(junk)
    assert "c2VjcmV0" not in str(refused.value) and refused.value.__cause__ is None
    ec_key = tmp_path / "ec"
    ec_key.write_bytes(
        ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    ec_key.chmod(0o600)
    with pytest.raises(NoteError, match="not hold an Ed25519 key"):
        read_private_key(ec_key)
    encrypted = tmp_path / "encrypted"
    encrypted.write_bytes(
        new_key().private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"pw"),
        )
    )
    encrypted.chmod(0o600)
    with pytest.raises(NoteError, match="unencrypted"):
        read_private_key(encrypted)


# --- Go, an independent implementation ----------------------------------------------------


def test_go_opens_our_checkpoints(go_tlog: GoTlog) -> None:
    cases = [
        ("example.com/log", 0, ()),
        ("example.com/log", 1, ()),
        ("example.com/log", 20852163, ("ext",)),
        ("example.com/log", 2**63 - 1, ("one extension", "two: — extensions")),
        ("example.com/log", 12, tuple(f"extension {n}" for n in range(5))),
    ]
    for origin, size, ext in cases:
        body, note = checkpoint_note(size=size, origin=origin, extensions=ext)
        assert go_tlog.open_note(LOG.vkey(), note) == body
        cosigned = add_signatures(note, [cosign(body, W1, size % 1000), cosign(body, W2, 9)])
        assert go_tlog.open_note(LOG.vkey(), cosigned) == body
        assert open_note(cosigned, [LOG.verifier()]).text == body
        tampered = cosigned.replace(f"\n{size}\n".encode(), f"\n{size + 1}\n".encode())
        assert "invalid signature" in str(go_tlog.note_error(LOG.vkey(), tampered))
        with pytest.raises(NoteError, match="invalid signature"):
            open_note(tampered, [LOG.verifier()])
    # Other logs, other names: Unicode origins and key names.
    for name in ("log.example/ünïcode", "例え.jp/log", "sigsum.org/v1/tree/abc"):
        log = Signer(name, new_key())
        body = Checkpoint(name, 3, ROOT).body()
        note = sign_note(body, [log])
        assert go_tlog.open_note(log.vkey(), note) == body
        assert go_tlog.note_error(LOG.vkey(), note) == "note has no verifiable signatures"


def test_go_reads_our_cosigner_keys_id(go_tlog: GoTlog) -> None:
    """Go knows no signature type 0x04, but checks a vkey's id before its type: it calling
    our cosigner key's type unknown (and not its id invalid) checks our id."""
    _, note = checkpoint_note()
    assert "unknown verifier algorithm" in str(go_tlog.note_error(W1.vkey(), note))
    bad_id = W1.vkey().replace(W1.key_id.hex(), "00000000")
    assert "invalid verifier hash" in str(go_tlog.note_error(bad_id, note))


def test_go_own_notes_and_refusals_agree(go_tlog: GoTlog) -> None:
    assert go_tlog.open_note(PETER_VKEY, BOTH_NOTE) == TEXT == open_note(BOTH_NOTE, [PETER]).text
    assert go_tlog.open_note(ENOCH_VKEY, BOTH_NOTE) == TEXT == open_note(BOTH_NOTE, [ENOCH]).text
    assert go_tlog.open_note(LOG.vkey(), sign_note(TEXT, [LOG])) == TEXT
    assert (
        go_tlog.open_note(
            PETER_VKEY, add_signatures(PETER_NOTE, [cosign(Checkpoint("o", 1, ROOT).body(), W1, 1)])
        )
        == TEXT
    )


def test_mutations_agree_with_go(go_tlog: GoTlog) -> None:
    """Every one-byte change (a bit flipped, a byte dropped) of a cosigned checkpoint note:
    what we open, Go opens to the same text; what Go opens and we refuse is only base64
    that is not canonical (which Go's decoder lets through)."""
    body, note = checkpoint_note(size=3, extensions=("e",))
    note = add_signatures(note, [cosign(body, W1, 1)])
    vkey = LOG.vkey()
    lenient = 0
    for i in range(len(note)):
        for mutated in (note[:i] + bytes([note[i] ^ 1]) + note[i + 1 :], note[:i] + note[i + 1 :]):
            try:
                mutated.decode()
            except UnicodeDecodeError:  # Go's JSON cannot carry it; ours must refuse it
                with pytest.raises(NoteError, match="UTF-8"):
                    open_note(mutated, [LOG.verifier()])
                continue
            go_error = go_tlog.note_error(vkey, mutated)
            try:
                ours: str | None = open_note(mutated, [LOG.verifier()]).text
            except NoteError as e:
                ours = None
                if go_error is None:
                    assert "canonical" in str(e), (i, mutated)
                    lenient += 1
            if ours is not None:
                assert go_error is None, (i, mutated)
                assert go_tlog.open_note(vkey, mutated) == ours
    assert lenient < 8, lenient


def test_non_canonical_base64_refused_where_go_is_lenient(go_tlog: GoTlog) -> None:
    """The one deliberate difference: Go's decoder ignores the unused low bits of the last
    base64 character, so one signature has several spellings; we take only the canonical
    one (what the log writes), so identical signatures are identical lines."""
    body, note = checkpoint_note(size=3)
    line = note.decode().split("\n")[-2]
    encoded = line.rsplit(" ", 1)[1]
    assert encoded.endswith("=") and not encoded.endswith("==")  # 68 bytes: 2 spare bits
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = alphabet.index(encoded[-2])
    respelled = encoded[:-2] + alphabet[last ^ 1] + "="
    assert base64.b64decode(respelled) == base64.b64decode(encoded)
    lenient = note.replace(encoded.encode(), respelled.encode())
    assert go_tlog.open_note(LOG.vkey(), lenient) == body
    with pytest.raises(NoteError, match="not canonical base64"):
        open_note(lenient, [LOG.verifier()])
