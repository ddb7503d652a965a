"""tailor.referrers: tag names, index entries, the merge; what a source lists that is no
referrer (against a one-handler HTTP server)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

import pytest

from tailor.authn import ANONYMOUS
from tailor.errors import ManifestError
from tailor.manifest import OCI_INDEX, OCI_MANIFEST, parse_manifest
from tailor.referrers import (
    Finder,
    cosign_tags,
    descriptor_of,
    fallback_tag,
    merged_index,
    publish,
    subject_of,
)
from tailor.registry import Repository
from tailor.retry import RetryPolicy
from tailor.transport import InsecureHosts, Transport
from tests.support.httpserver import Handler, reply, serve
from tests.support.images import sha256

HEX = "ab" * 32
DIGEST = f"sha256:{HEX}"
CONFIG = {
    "mediaType": "application/vnd.oci.empty.v1+json",
    "digest": f"sha256:{'44' * 32}",
    "size": 2,
}


def test_tag_names() -> None:
    assert fallback_tag(DIGEST) == f"sha256-{HEX}"
    assert cosign_tags(DIGEST) == [f"sha256-{HEX}.sig", f"sha256-{HEX}.att", f"sha256-{HEX}.sbom"]
    # The distribution spec's own example: algorithm cut to 32, encoded to 64, and what a
    # tag may not hold replaced by '-'.
    odd = (
        "test+algorithm+using+algorithm+separators+and+lots+of+characters+to+excercise+"
        "overall+truncation:alsoSome=InTheEncodedSectionToShowHyphenReplacementAndLotsAndLots"
        "OfCharactersToExcerciseEncodedTruncation"
    )
    assert fallback_tag(odd) == (
        "test-algorithm-using-algorithm-s-alsoSome-InTheEncodedSectionToShowHyphenReplacement"
        "AndLotsAndLot"
    )


def _manifest(**fields: object) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, **fields}).encode()


def test_an_entry_says_what_the_manifest_says() -> None:
    sbom = parse_manifest(
        _manifest(
            artifactType="application/spdx+json",
            config=CONFIG,
            layers=[],
            subject={"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": 9},
            annotations={"a": "b"},
        ),
        None,
    )
    assert subject_of(sbom) == DIGEST
    assert descriptor_of(sbom) == {
        "mediaType": OCI_MANIFEST,
        "digest": sbom.digest,
        "size": len(sbom.raw),
        "artifactType": "application/spdx+json",
        "annotations": {"a": "b"},
    }
    # No artifactType: the config's media type; no annotations: none written.
    plain = parse_manifest(_manifest(config=CONFIG, layers=[]), None)
    assert subject_of(plain) is None
    assert descriptor_of(plain)["artifactType"] == "application/vnd.oci.empty.v1+json"
    assert "annotations" not in descriptor_of(plain)
    # An index without artifactType: none.
    idx = parse_manifest(json.dumps({"mediaType": OCI_INDEX, "manifests": []}).encode(), None)
    assert "artifactType" not in descriptor_of(idx)


def test_the_merge_keeps_what_is_there_and_adds_no_duplicate() -> None:
    a = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "1" * 64, "size": 1, "artifactType": "x"}
    b = {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "2" * 64, "size": 2}
    fresh = merged_index(None, [a, a])
    assert fresh is not None
    assert json.loads(fresh) == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a]}
    theirs = {
        "digest": a["digest"],
        "size": 1,
        "mediaType": OCI_MANIFEST,
        "annotations": {"k": "v"},
    }
    existing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [theirs],
            "annotations": {"z": "1"},
        }
    ).encode()
    merged = merged_index(existing, [a, b])
    assert merged is not None
    body = json.loads(merged)
    assert body["manifests"] == [theirs, b]  # theirs kept as it was, a not added twice
    assert body["annotations"] == {"z": "1"}
    assert merged_index(merged, [a, b]) is None  # nothing new: nothing to write


def test_what_cannot_be_read_or_does_not_refer_is_no_referrer() -> None:
    """A source (one handler, no Referrers API) whose referrers tag lists three manifests:
    one of the withdrawn 1.1-rc artifact type, one whose subject is another digest, one
    gone; and a cosign tag holding a manifest of the rc type too. None is a referrer."""
    other = f"sha256:{'cd' * 32}"
    rc = json.dumps(
        {"mediaType": "application/vnd.oci.artifact.manifest.v1+json", "subject": {}}
    ).encode()
    liar = _manifest(config=CONFIG, layers=[], subject={"digest": other, "size": 1})
    gone = f"sha256:{'ef' * 32}"
    listing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": sha256(body), "size": len(body)}
                for body in (rc, liar)
            ]
            + [{"mediaType": OCI_MANIFEST, "digest": gone, "size": 1}],
        }
    ).encode()
    served = {
        f"sha256-{HEX}": (OCI_INDEX, listing),
        f"sha256-{HEX}.sig": ("application/vnd.oci.artifact.manifest.v1+json", rc),
        sha256(rc): ("application/vnd.oci.artifact.manifest.v1+json", rc),
        sha256(liar): (OCI_MANIFEST, liar),
    }
    asked: list[str] = []

    def handler(h: BaseHTTPRequestHandler) -> None:
        path = unquote(h.path)
        asked.append(path)
        name = path.rsplit("/", 1)[-1]
        if path == "/v2/":
            reply(h, 200)
        elif "/manifests/" in path and name in served:
            kind, body = served[name]
            reply(h, 200, body, {"Content-Type": kind})
        else:
            reply(h, 404, b"404 page not found\n", {"Content-Type": "text/plain"})

    with serve(handler) as host:
        transport = Transport(
            host, ANONYMOUS, InsecureHosts([host]), policy=RetryPolicy(attempts=1)
        )
        assert Finder(Repository(transport, "r")).find([DIGEST]) == []
    assert f"/v2/r/referrers/{DIGEST}" in asked  # the API was asked first
    assert f"/v2/r/manifests/{gone}" in asked  # and every listed entry was looked at


def test_the_merge_drops_what_the_registry_no_longer_holds_and_only_that() -> None:
    a, b, c = ({"mediaType": OCI_MANIFEST, "digest": f"sha256:{n * 64}", "size": 1} for n in "123")
    existing = json.dumps(
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [a, b], "annotations": {"z": "1"}}
    ).encode()
    asked: list[str] = []

    def held(digest: str) -> bool:
        asked.append(digest)
        return digest != b["digest"]

    merged = merged_index(existing, [c], held)
    assert merged is not None
    assert json.loads(merged) == {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [a, c],
        "annotations": {"z": "1"},
    }
    assert asked == [a["digest"], b["digest"]]  # not the addition: it was just pushed
    # Nothing to add, one stale entry: written without it; nothing stale: nothing to write.
    dropped = merged_index(existing, [a], held)
    assert dropped is not None and json.loads(dropped)["manifests"] == [a]
    assert merged_index(existing, [a], lambda digest: True) is None


def _registry(
    answers: dict[tuple[str, str], tuple[int, bytes, str]], asked: list[tuple[str, str, bytes]]
) -> Handler:
    """A one-handler registry answering ``(method, path)`` as told, 404 to the rest."""

    def handler(h: BaseHTTPRequestHandler) -> None:
        path = unquote(h.path)
        body = h.rfile.read(int(h.headers.get("Content-Length") or 0))
        asked.append((h.command, path, body))
        status, data, kind = answers.get((h.command, path), (404, b"", "text/plain"))
        if path == "/v2/":
            status = 200
        reply(h, status, data, {"Content-Type": kind})

    return handler


def test_publish_keeps_an_entry_it_could_not_check() -> None:
    """Only a 404 drops an existing entry: a registry failing the HEAD (a blip) keeps it."""
    sick, gone = f"sha256:{'1' * 64}", f"sha256:{'2' * 64}"
    existing = json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {"mediaType": OCI_MANIFEST, "digest": d, "size": 1} for d in (sick, gone)
            ],
        }
    ).encode()
    ours = parse_manifest(
        _manifest(config=CONFIG, layers=[], subject={"digest": DIGEST, "size": 1}), None
    )
    answers = {
        ("GET", f"/v2/r/manifests/sha256-{HEX}"): (200, existing, OCI_INDEX),
        ("HEAD", f"/v2/r/manifests/{sick}"): (500, b"", "text/plain"),
        ("PUT", f"/v2/r/manifests/sha256-{HEX}"): (201, b"", "text/plain"),
    }
    asked: list[tuple[str, str, bytes]] = []
    with serve(_registry(answers, asked)) as host:
        transport = Transport(
            host, ANONYMOUS, InsecureHosts([host]), policy=RetryPolicy(attempts=1)
        )
        assert publish(Repository(transport, "r", push=True), DIGEST, [ours])
    written = [body for m, p, body in asked if m == "PUT"]
    assert [e["digest"] for e in json.loads(written[-1])["manifests"]] == [sick, ours.digest]
    assert ("HEAD", f"/v2/r/manifests/{gone}", b"") in asked


def test_the_referrers_api_is_read_no_further_than_the_limit() -> None:
    """A subject listing more referrers than a copy takes: the pages after the one that
    passes the limit are not read, and the copy fails in one line."""
    pages = {
        n: json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [
                    {"mediaType": OCI_MANIFEST, "digest": f"sha256:{n}{i}" + "0" * 62, "size": 1}
                    for i in range(2)
                ],
            }
        ).encode()
        for n in range(1, 4)
    }
    asked: list[str] = []

    def handler(h: BaseHTTPRequestHandler) -> None:
        path = unquote(h.path)
        asked.append(path)
        if path == "/v2/":
            reply(h, 200)
            return
        page = int(path.rsplit("page=", 1)[1]) if "page=" in path else 1
        link = {"Link": f'</v2/r/referrers/{DIGEST}?page={page + 1}>; rel="next"'}
        reply(h, 200, pages[page], {"Content-Type": OCI_INDEX, **(link if page < 3 else {})})

    with serve(handler) as host:
        transport = Transport(
            host, ANONYMOUS, InsecureHosts([host]), policy=RetryPolicy(attempts=1)
        )
        finder = Finder(Repository(transport, "r"), max_per_subject=3)
        with pytest.raises(ManifestError) as failed:
            finder.find([DIGEST])
    assert str(failed.value) == (
        f"{host}/r@{DIGEST} has more than 3 referrers (copy it with --no-referrers)"
    )
    assert [p for p in asked if "/referrers/" in p] == [
        f"/v2/r/referrers/{DIGEST}",
        f"/v2/r/referrers/{DIGEST}?page=2",
    ]
