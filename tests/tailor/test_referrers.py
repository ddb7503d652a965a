"""tailor.referrers, the pure parts: tag names, index entries and the merge."""

from __future__ import annotations

import json

from tailor.manifest import OCI_INDEX, OCI_MANIFEST, parse_manifest
from tailor.referrers import (
    cosign_tags,
    descriptor_of,
    fallback_tag,
    merged_index,
    subject_of,
)

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
