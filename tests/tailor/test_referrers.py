"""tailor.referrers: tag names, index entries, the merge; what a source lists that is no
referrer (against a one-handler HTTP server)."""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler
from urllib.parse import unquote

from tailor.authn import ANONYMOUS
from tailor.manifest import OCI_INDEX, OCI_MANIFEST, parse_manifest
from tailor.referrers import (
    Finder,
    cosign_tags,
    descriptor_of,
    fallback_tag,
    merged_index,
    subject_of,
)
from tailor.registry import Repository
from tailor.retry import RetryPolicy
from tailor.transport import InsecureHosts, Transport
from tests.support.httpserver import reply, serve
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
