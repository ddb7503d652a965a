"""Signatures, attestations and SBOMs travel with the image (issue #16): `tailor copy` and
`tailor stage` against real Distribution registries, checked by listing and fetching at the
destination and with skopeo.

The referrers are pushed with plain distribution-spec requests, as any OCI 1.1 tool pushes
them to a registry without the Referrers API (Debian's Distribution 2.8.2 has none: it stores
a manifest with ``subject`` and ``artifactType`` byte for byte, sends no ``OCI-Subject`` and
answers 404 to ``/referrers/``): the artifact by digest, then the referrers tag index
``sha256-HEX`` updated. cosign's tags are ``sha256-HEX.sig`` and ``.att``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tailor.authn import Basic
from tailor.errors import ManifestError
from tailor.referrers import Finder
from tailor.registry import Repository
from tailor.transport import InsecureHosts, Transport
from tests.support.cli import Run, insecure
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER, assert_no_secret
from tests.support.images import (
    OCI_INDEX,
    OCI_MANIFEST,
    Layout,
    attach,
    cosign_like,
    image,
    index,
    push_raw,
    referrer,
    referrers_tag,
)
from tests.support.proxy import Proxy
from tests.support.registry import Registry
from tests.support.skopeo import Skopeo

AUTH = (UPSTREAM_USER, UPSTREAM_PASSWORD)
SRC_ENV = {"TAILOR_SRC_PASSWORD": UPSTREAM_PASSWORD}
ACCEPT = ", ".join([OCI_INDEX, OCI_MANIFEST])


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Signed:
    """What was pushed to the source repository ``team/app``."""

    layout: Layout
    image: dict  # tagged v1
    sbom: dict  # its referrers (listed in its referrers tag)
    sig: dict
    sbom_sig: dict  # a referrer of the SBOM
    cosign: dict[str, dict]  # cosign's tags of the image: {".sig": ..., ".att": ...}
    multi: dict  # an index of amd64 and arm64, tagged multi
    amd: dict
    arm: dict
    arm_att: dict  # a referrer of the arm64 manifest
    multi_note: dict  # a referrer of the index itself


def _signed(url: str, lay: Layout, auth: tuple[str, str] | None) -> Signed:
    repo = "team/app"
    img = image(lay, seed=1, layers=1, layer_size=4096)
    push_raw(url, repo, lay, img, "v1", auth)
    sbom = referrer(
        lay,
        img,
        artifact_type="application/spdx+json",
        layer_type="application/spdx+json",
        payload=b'{"spdxVersion":"SPDX-2.3","name":"app"}',
        annotations={"org.opencontainers.image.created": "2026-01-01T00:00:00Z"},
    )
    # Signature-like, without artifactType: the index says its config's media type.
    sig = referrer(
        lay,
        img,
        config_type="application/vnd.dev.cosign.artifact.sig.v1+json",
        config=b'{"kind":"sig"}',
        layer_type="application/vnd.dev.cosign.simplesigning.v1+json",
        payload=b'{"critical":{"type":"cosign container image signature"}}',
        annotations={"dev.cosignproject.cosign/signature": "MEUCIQCfake=="},
    )
    sbom_sig = referrer(
        lay,
        sbom,
        artifact_type="application/vnd.cncf.notary.signature",
        layer_type="application/jose+json",
        payload=b'{"payload":"e30","signatures":[]}',
    )
    for ref, subject in ((sbom, img), (sig, img), (sbom_sig, sbom)):
        attach(url, repo, lay, ref, subject["digest"], auth)
    cosign = {}
    for kind in ("sig", "att"):
        cosign["." + kind] = cosign_like(lay, img["digest"], kind)
        push_raw(
            url, repo, lay, cosign["." + kind], referrers_tag(img["digest"]) + "." + kind, auth
        )
    amd = image(lay, seed=2, layers=1, layer_size=2048)
    arm = image(lay, seed=3, layers=1, layer_size=2048, arch="arm64")
    multi = index(lay, [amd, arm])
    push_raw(url, repo, lay, multi, "multi", auth)
    arm_att = referrer(
        lay,
        arm,
        artifact_type="application/vnd.in-toto+json",
        layer_type="application/vnd.in-toto+json",
        payload=b'{"_type":"https://in-toto.io/Statement/v1"}',
    )
    multi_note = referrer(
        lay,
        multi,
        artifact_type="application/vnd.example.note",
        layer_type="text/plain",
        payload=b"built by ci",
    )
    attach(url, repo, lay, arm_att, arm["digest"], auth)
    attach(url, repo, lay, multi_note, multi["digest"], auth)
    return Signed(lay, img, sbom, sig, sbom_sig, cosign, multi, amd, arm, arm_att, multi_note)


@pytest.fixture
def signed(upstream: Registry, tmp_path: Path) -> Signed:
    """The signed images in ``upstream`` (Basic auth: the lookups need the credentials)."""
    return _signed(upstream.url, Layout(tmp_path / "signed"), AUTH)


def copy(tailor: Callable[..., Run], src: str, dst: str, *args: str, hosts: tuple[str, ...]) -> Run:
    return tailor(
        "copy", *insecure(*hosts), "--src-username", UPSTREAM_USER, *args, src, dst, env=SRC_ENV
    )


def tags(reg: Registry, repo: str) -> list[str]:
    return sorted(requests.get(f"{reg.url}/v2/{repo}/tags/list", timeout=5).json()["tags"] or [])


def fetch(reg: Registry, repo: str, ref: str) -> requests.Response:
    return requests.get(
        f"{reg.url}/v2/{repo}/manifests/{ref}", headers={"Accept": ACCEPT}, timeout=5
    )


def listed(reg: Registry, repo: str, subject: str) -> list[dict]:
    """The referrers index at ``reg``'s referrers tag for ``subject``."""
    got = fetch(reg, repo, referrers_tag(subject))
    assert got.status_code == 200, got.text
    assert got.headers["Content-Type"] == OCI_INDEX
    body = got.json()
    assert body["mediaType"] == OCI_INDEX and body["schemaVersion"] == 2
    return body["manifests"]


def assert_copied(reg: Registry, repo: str, lay: Layout, desc: dict, skopeo: Skopeo) -> None:
    """The manifest is at ``reg`` by digest, byte for byte, with every blob it names; skopeo,
    the independent client, reads it too."""
    raw = lay.blobs[desc["digest"]]
    got = fetch(reg, repo, desc["digest"])
    assert got.status_code == 200 and got.content == raw
    body = json.loads(raw)
    for blob in [body["config"], *body["layers"]]:
        data = requests.get(f"{reg.url}/v2/{repo}/blobs/{blob['digest']}", timeout=5).content
        assert sha(data) == blob["digest"] and data == lay.blobs[blob["digest"]]
    assert skopeo.raw(f"{reg.host}/{repo}@{desc['digest']}") == raw


def summary(run: Run) -> str:
    return [line for line in run.stderr.splitlines() if line.startswith("copied ")][-1]


def test_copy_brings_referrers_and_cosign_tags(
    upstream: Registry, internal: Registry, signed: Signed, skopeo: Skopeo, tailor
) -> None:
    s, lay = signed, signed.layout
    # Two entries that must not travel: a stale one (no such manifest at the source) and one
    # whose manifest's subject is another image (a referrers tag is anyone's to write).
    liar = referrer(lay, s.amd, artifact_type="text/plain", layer_type="text/plain", payload=b"x")
    attach(upstream.url, "team/app", lay, liar, s.image["digest"], AUTH)
    # Distribution refuses an index naming a manifest it lacks: list it, then delete it.
    stale = referrer(
        lay, s.image, artifact_type="text/plain", layer_type="text/plain", payload=b"y"
    )
    attach(upstream.url, "team/app", lay, stale, s.image["digest"], AUTH)
    gone = requests.delete(
        f"{upstream.url}/v2/team/app/manifests/{stale['digest']}", auth=AUTH, timeout=5
    )
    assert gone.status_code == 202

    run = copy(
        tailor,
        f"{upstream.host}/team/app:v1",
        f"{internal.host}/copied/app:v1",
        hosts=(upstream.host, internal.host),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{internal.host}/copied/app@{s.image['digest']}"
    # sbom, sig, the SBOM's signature, and cosign's .sig and .att.
    assert summary(run).endswith("; 5 referrer(s)")
    image_tag = referrers_tag(s.image["digest"])
    assert tags(internal, "copied/app") == sorted(
        ["v1", image_tag, image_tag + ".sig", image_tag + ".att", referrers_tag(s.sbom["digest"])]
    )
    # Exactly the copied referrers, with their artifactType and annotations, in the order
    # the source listed them; not the stale entry, not the liar.
    assert listed(internal, "copied/app", s.image["digest"]) == [s.sbom, s.sig]
    assert listed(internal, "copied/app", s.sbom["digest"]) == [s.sbom_sig]
    assert [e["artifactType"] for e in listed(internal, "copied/app", s.image["digest"])] == [
        "application/spdx+json",
        "application/vnd.dev.cosign.artifact.sig.v1+json",
    ]
    for desc in (s.image, s.sbom, s.sig, s.sbom_sig, *s.cosign.values()):
        assert_copied(internal, "copied/app", lay, desc, skopeo)
    for suffix, desc in s.cosign.items():
        assert (
            fetch(internal, "copied/app", image_tag + suffix).content == lay.blobs[desc["digest"]]
        )
    assert fetch(internal, "copied/app", liar["digest"]).status_code == 404
    assert fetch(internal, "copied/app", stale["digest"]).status_code == 404
    assert_no_secret(run, UPSTREAM_PASSWORD)


def test_referrers_api_at_the_source_is_used(
    upstream: Registry, internal: Registry, signed: Signed, skopeo: Skopeo, tailor
) -> None:
    """A source with the Referrers API: a proxy in front of the real registry answers it
    (Debian's Distribution 2.8.2 has no Referrers API), and the referrers tag is then not
    read."""
    s = signed
    with Proxy(upstream.host) as front:
        front.referrers_api = True
        run = copy(
            tailor,
            f"{front.host}/team/app:v1",
            f"{internal.host}/api/app:v1",
            hosts=(front.host, internal.host),
        )
        assert run.returncode == 0, run.stderr
        hexd = s.image["digest"][7:]
        # The image, then what refers to it, then what refers to those (run in parallel).
        subjects = [s.image, s.sbom, s.sig, *s.cosign.values(), s.sbom_sig]
        assert sorted(unquote(p) for p in front.referrer_gets) == sorted(
            f"/v2/team/app/referrers/{d['digest']}" for d in subjects
        )
        fetched = [unquote(p) for m, p, _ in front.requests if m == "GET" and "/manifests/" in p]
        assert f"/v2/team/app/manifests/sha256-{hexd}" not in fetched  # the API answered
        assert f"/v2/team/app/manifests/sha256-{hexd}.sig" in fetched  # cosign's: by tag
    assert summary(run).endswith("; 5 referrer(s)")
    assert listed(internal, "api/app", s.image["digest"]) == [s.sbom, s.sig]
    assert listed(internal, "api/app", s.sbom["digest"]) == [s.sbom_sig]
    for desc in (s.sbom, s.sig, s.sbom_sig):
        assert_copied(internal, "api/app", s.layout, desc, skopeo)


def test_an_index_brings_the_referrers_of_what_is_copied(
    upstream: Registry, internal: Registry, signed: Signed, skopeo: Skopeo, tailor
) -> None:
    s = signed
    hosts = (upstream.host, internal.host)
    src = f"{upstream.host}/team/app:multi"
    run = copy(tailor, src, f"{internal.host}/all/app:multi", hosts=hosts)
    assert run.returncode == 0, run.stderr
    assert summary(run).endswith("; 2 referrer(s)")
    assert tags(internal, "all/app") == sorted(
        ["multi", referrers_tag(s.multi["digest"]), referrers_tag(s.arm["digest"])]
    )
    assert listed(internal, "all/app", s.multi["digest"]) == [s.multi_note]
    assert listed(internal, "all/app", s.arm["digest"]) == [s.arm_att]
    assert_copied(internal, "all/app", s.layout, s.arm_att, skopeo)
    # One platform: the index is not copied, nor are its referrers; the platform's are.
    one = copy(tailor, src, f"{internal.host}/arm/app:v1", "--platform", "linux/arm64", hosts=hosts)
    assert one.returncode == 0, one.stderr
    assert one.stdout.strip() == f"{internal.host}/arm/app@{s.arm['digest']}"
    assert summary(one).endswith("; 1 referrer(s)")
    assert tags(internal, "arm/app") == sorted(["v1", referrers_tag(s.arm["digest"])])
    assert listed(internal, "arm/app", s.arm["digest"]) == [s.arm_att]
    assert fetch(internal, "arm/app", s.multi_note["digest"]).status_code == 404


@pytest.mark.parametrize("says", ["oci-subject", "referrers-api"])
def test_a_destination_that_processes_subjects_gets_no_referrers_tag(
    upstream: Registry, internal: Registry, signed: Signed, tailor, says: str
) -> None:
    """A destination that says it processed a subject (the ``OCI-Subject`` header on the
    PUT), or that has the Referrers API, keeps its own list: the Tailor writes no referrers
    tag there. A proxy in front of the real registry plays that registry (Debian's
    Distribution 2.8.2 does neither)."""
    s = signed
    with Proxy(internal.host) as front:
        front.oci_subject = says == "oci-subject"
        front.referrers_api = says == "referrers-api"
        run = copy(
            tailor,
            f"{upstream.host}/team/app:v1",
            f"{front.host}/modern/app:v1",
            hosts=(upstream.host, front.host),
        )
    assert run.returncode == 0, run.stderr
    assert summary(run).endswith("; 5 referrer(s)")
    image_tag = referrers_tag(s.image["digest"])
    # The referrers and cosign's tags are there; no referrers tag was written.
    assert tags(internal, "modern/app") == sorted(["v1", image_tag + ".sig", image_tag + ".att"])
    for desc in (s.sbom, s.sig, s.sbom_sig):
        assert (
            fetch(internal, "modern/app", desc["digest"]).content == s.layout.blobs[desc["digest"]]
        )
    asked = [p for m, p, _ in front.requests if m == "GET" and "/referrers/" in p]
    # Told by the header, the Tailor does not even ask; otherwise it asks once per subject.
    assert len(asked) == (0 if says == "oci-subject" else 2)


def test_no_referrers_copies_none(
    upstream: Registry, internal: Registry, signed: Signed, tailor
) -> None:
    s = signed
    run = copy(
        tailor,
        f"{upstream.host}/team/app:v1",
        f"{internal.host}/bare/app:v1",
        "--no-referrers",
        hosts=(upstream.host, internal.host),
    )
    assert run.returncode == 0, run.stderr
    assert summary(run).endswith("; 0 referrer(s)")
    assert tags(internal, "bare/app") == ["v1"]
    for desc in (s.sbom, s.sig, s.sbom_sig, *s.cosign.values()):
        assert fetch(internal, "bare/app", desc["digest"]).status_code == 404


def test_an_existing_referrers_index_is_merged_and_a_second_copy_adds_nothing(
    upstream: Registry, internal: Registry, signed: Signed, tmp_path: Path, tailor
) -> None:
    s = signed
    # The destination already lists a referrer of the image (someone signed it there).
    mine = Layout(tmp_path / "theirs")
    theirs = referrer(
        mine,
        s.image,
        artifact_type="application/vnd.example.approval",
        layer_type="text/plain",
        payload=b"approved",
        annotations={"example.com/by": "release-team"},
    )
    attach(internal.url, "merge/app", mine, theirs, s.image["digest"])
    args = (f"{upstream.host}/team/app:v1", f"{internal.host}/merge/app:v1")
    hosts = (upstream.host, internal.host)
    first = copy(tailor, *args, hosts=hosts)
    assert first.returncode == 0, first.stderr
    assert listed(internal, "merge/app", s.image["digest"]) == [theirs, s.sbom, s.sig]
    before = fetch(internal, "merge/app", referrers_tag(s.image["digest"])).content
    second = copy(tailor, *args, hosts=hosts)
    assert second.returncode == 0, second.stderr
    after = fetch(internal, "merge/app", referrers_tag(s.image["digest"])).content
    assert after == before  # no duplicates: the index was not even rewritten
    assert listed(internal, "merge/app", s.sbom["digest"]) == [s.sbom_sig]


def test_a_referrers_tag_holding_something_else_fails_the_copy_before_the_tag(
    upstream: Registry, internal: Registry, signed: Signed, tmp_path: Path, tailor
) -> None:
    """Writing at the destination is not best effort: an image must not lose its signatures
    silently. The image's tag is pushed last, so the failed copy publishes no tag."""
    s = signed
    other = Layout(tmp_path / "other")
    squatter = image(other, seed=9, layers=1, layer_size=512)
    push_raw(internal.url, "taken/app", other, squatter, referrers_tag(s.image["digest"]))
    run = copy(
        tailor,
        f"{upstream.host}/team/app:v1",
        f"{internal.host}/taken/app:v1",
        hosts=(upstream.host, internal.host),
    )
    assert run.returncode == 1
    assert "Traceback" not in run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert line == (
        f"tailor: error: {internal.host}/taken/app:{referrers_tag(s.image['digest'])} holds a "
        f"{OCI_MANIFEST}, not the OCI index of the referrers of {s.image['digest']}: "
        "not overwritten"
    )
    assert "v1" not in tags(internal, "taken/app")


def stage(tailor, src: Registry, dst: Registry, result: Path, guid: str, *extra: str) -> Run:
    return tailor(
        "stage",
        *insecure(src.host, dst.host),
        *["--image", f"{src.host}/team/app:v1", "--staging-guid", guid],
        *["--result-file", str(result), "--internal-registry", dst.host, *extra],
    )


def test_stage_brings_referrers_unless_told_not_to(
    public: Registry, internal: Registry, skopeo: Skopeo, tailor, tmp_path: Path
) -> None:
    s = _signed(public.url, Layout(tmp_path / "public-layout"), None)
    result = tmp_path / "result.json"
    run = stage(tailor, public, internal, result, "stg-1")
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{internal.host}/staging/stg-1@{s.image['digest']}"
    image_tag = referrers_tag(s.image["digest"])
    assert tags(internal, "staging/stg-1") == sorted(
        [
            "stg-1",
            image_tag,
            image_tag + ".sig",
            image_tag + ".att",
            referrers_tag(s.sbom["digest"]),
        ]
    )
    assert listed(internal, "staging/stg-1", s.image["digest"]) == [s.sbom, s.sig]
    for desc in (s.sbom, s.sig, s.sbom_sig, *s.cosign.values()):
        assert_copied(internal, "staging/stg-1", s.layout, desc, skopeo)
    bare = stage(tailor, public, internal, result, "stg-2", "--no-referrers")
    assert bare.returncode == 0, bare.stderr
    assert tags(internal, "staging/stg-2") == ["stg-2"]


def test_an_image_without_referrers_costs_no_manifest_get_for_an_absent_tag(
    upstream: Registry, internal: Registry, tmp_path: Path, tailor
) -> None:
    """Docker Hub counts every manifest GET against the pull limit, and no HEAD: the
    referrers tag and cosign's tags are asked for with HEAD, and nothing that is not there
    is fetched. What the source sees: the image's own GET, the Referrers API's GET (it is
    no manifest), four HEADs."""
    lay = Layout(tmp_path / "plain")
    img = image(lay, seed=4, layers=1, layer_size=1024)
    push_raw(upstream.url, "plain/app", lay, img, "v1", AUTH)
    with Proxy(upstream.host) as front:
        run = copy(
            tailor,
            f"{front.host}/plain/app:v1",
            f"{internal.host}/plain/app:v1",
            hosts=(front.host, internal.host),
        )
        seen = [(m, unquote(p)) for m, p, _ in front.requests]
    assert run.returncode == 0, run.stderr
    assert summary(run).endswith("; 0 referrer(s)")
    tag = referrers_tag(img["digest"])
    probed = [tag, tag + ".sig", tag + ".att", tag + ".sbom"]
    manifests = [(m, p) for m, p in seen if "/manifests/" in p]
    assert sorted(manifests) == sorted(
        [("GET", "/v2/plain/app/manifests/v1")]
        + [("HEAD", f"/v2/plain/app/manifests/{t}") for t in probed]
    )
    assert ("GET", f"/v2/plain/app/referrers/{img['digest']}") in seen


def test_a_stale_entry_of_the_destination_index_is_dropped(
    upstream: Registry, internal: Registry, signed: Signed, tmp_path: Path, tailor
) -> None:
    """The destination's referrers index lists a referrer it no longer holds (deleted
    there after it was listed): Distribution 2.8.2 refuses (400) an index naming a manifest
    it lacks, so the merge drops that entry, and keeps the one still there."""
    s = signed
    mine = Layout(tmp_path / "theirs")
    kept, stale = (
        referrer(mine, s.image, artifact_type=kind, layer_type="text/plain", payload=kind.encode())
        for kind in ("application/vnd.example.kept", "application/vnd.example.stale")
    )
    for ref in (kept, stale):
        attach(internal.url, "stale/app", mine, ref, s.image["digest"])
    gone = requests.delete(f"{internal.url}/v2/stale/app/manifests/{stale['digest']}", timeout=5)
    assert gone.status_code == 202
    assert listed(internal, "stale/app", s.image["digest"]) == [kept, stale]
    run = copy(
        tailor,
        f"{upstream.host}/team/app:v1",
        f"{internal.host}/stale/app:v1",
        hosts=(upstream.host, internal.host),
    )
    assert run.returncode == 0, run.stderr
    assert listed(internal, "stale/app", s.image["digest"]) == [kept, s.sbom, s.sig]
    assert "v1" in tags(internal, "stale/app")


def _finder(upstream: Registry, **limits: int) -> Finder:
    transport = Transport(
        upstream.host, Basic(UPSTREAM_USER, UPSTREAM_PASSWORD), InsecureHosts([upstream.host])
    )
    return Finder(Repository(transport, "team/app"), map, **limits)


def test_a_copy_finds_at_most_so_many_referrers_of_so_many_bytes(
    upstream: Registry, signed: Signed
) -> None:
    """One limit per copy, over every subject and level: the referrers' count and the sum
    of their manifests' sizes (held in memory before any blob moves), and per subject the
    number listed. The limits are the module's (1,000, 64 MiB, 1,000 per subject); a test
    passes small ones. The image v1 has five: the SBOM, the signature, cosign's .sig and
    .att (level 1), the SBOM's signature (level 2)."""
    s = signed
    five = [s.sbom, s.sig, *s.cosign.values(), s.sbom_sig]
    size = sum(d["size"] for d in five)
    subject = [s.image["digest"]]
    assert len(_finder(upstream, max_referrers=5, max_bytes=size).find(subject)) == 5
    src = f"{upstream.host}/team/app"
    failures = [
        ({"max_referrers": 4}, f"{src}: more than 4 referrers in all for this copy"),
        ({"max_bytes": size - 1}, f"{src}: more than {size - 1} bytes of referrer manifests"),
        ({"max_per_subject": 1}, f"{src}@{s.image['digest']} has more than 1 referrers"),
    ]
    for limits, says in failures:
        with pytest.raises(ManifestError) as failed:
            _finder(upstream, **limits).find(subject)
        line = str(failed.value)
        assert line.startswith(says) and line.endswith("(copy it with --no-referrers)")
        assert "\n" not in line


def test_a_copy_by_digest_pushes_the_image_before_its_referrers_tags(
    upstream: Registry, internal: Registry, signed: Signed, tailor
) -> None:
    """A destination named by digest (no tag): the image still goes first, so cosign's
    tags and the referrers tag never point at an image the destination does not hold
    yet (the review found them pushed first)."""
    s = signed
    digest = s.image["digest"]
    with Proxy(internal.host) as front:
        run = copy(
            tailor,
            f"{upstream.host}/team/app:v1",
            f"{front.host}/bydigest/app@{digest}",
            hosts=(upstream.host, front.host),
        )
    assert run.returncode == 0, run.stderr
    puts = [unquote(p).rsplit("/", 1)[1] for m, p, _ in front.requests
            if m == "PUT" and "/manifests/" in p]  # fmt: skip
    tagged = [i for i, ref in enumerate(puts) if ref.startswith("sha256-")]
    assert tagged and puts.index(digest) < min(tagged), puts
    assert puts.count(digest) == 1, puts  # and only once
