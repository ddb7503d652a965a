"""`tailor copy --policy` against skopeo's verdicts, on a corpus skopeo signed itself.

One module-scoped corpus: two GnuPG keys made here ("trusted" and "other"), a real
Distribution registry holding images that ``skopeo copy --sign-by`` signed into a file://
lookaside, and the wrong signatures ``skopeo standalone-sign`` crafts (another digest,
another repository's identity, an index with one platform signed, two signatures of which
the first is by the other key). For each (image, policy, tag or digest reference) row of
the tables below both tools copy the image with the policy:

- skopeo 1.9.3 (Debian, containers/image 5.23.1): ``skopeo --policy P --registries.d D copy
  [--all | --override-os/--override-arch] docker://REF dir:OUT``: accepted iff it exits 0,
  refused iff it says ``Source image rejected: ``, anything else is an error of the test;
- the tailor: ``tailor copy --policy P --registries.d D [--platform OS/ARCH] REF DST``.

Each verdict must equal the one the table expects (so a wrong skopeo setup cannot make
both agree on nonsense), and so must the reason (containers/image's words, which the
tailor keeps); on a refusal the tailor names the scope and the requirement in one
``tailor: error:`` line, and the destination tag is absent.

The registry is started anew for each test on the corpus's storage and address
(tests/conftest.py reaps what a test leaves running); the destination is each test's own.
"""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import unquote

import pytest
import requests

from tests.support.cli import Run, insecure, tailor_cli, tailor_env
from tests.support.httpserver import reply, serve
from tests.support.images import OCI_INDEX, OCI_MANIFEST, Layout, image, index
from tests.support.processes import stop
from tests.support.registry import Registry, run_registry, start_registry
from tests.support.signing import (
    GnuPG,
    Key,
    gnupg,
    lookaside_path,
    sign_copy,
    signatures_of,
    standalone_sign,
    write_registries_d,
)

pytestmark = [pytest.mark.slow, pytest.mark.registry, pytest.mark.xdist_group("policy_peer")]

ACCEPTS = ", ".join(
    [
        OCI_MANIFEST,
        OCI_INDEX,
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
    ]
)
REJECTED = "Source image rejected: "
JOBS = 4
"""Rows checked at once (each runs one skopeo and one tailor)."""

# The corpus: case -> (repository, tag) on the source registry.
CASES: dict[str, tuple[str, str]] = {
    "trusted": ("ns/app", "trusted"),  # a. skopeo copy --sign-by the trusted key
    "other": ("ns/app", "other"),  # b. skopeo copy --sign-by the other key
    "unsigned": ("ns/app", "unsigned"),  # c.
    "moved": ("ns/app", "moved"),  # d. the tag moved after signing; the old signature stays
    "mirror": ("ns/mirror", "v1"),  # e. signed (trusted) as 127.0.0.1:P/ns/app:v1
    "half": ("ns/app", "multi"),  # f. an index: amd64 signed (trusted), arm64 unsigned
    "two": ("ns/app", "two"),  # g. signature-1 by the other key, signature-2 by the trusted
    "both": ("ns/app", "multi2"),  # skopeo copy --all --sign-by trusted: all three signed
    "listonly": ("ns/app", "listonly"),  # an index: only the index's own digest signed
    "bydigest": ("ns/app", "bydigest"),  # signed (trusted) as 127.0.0.1:P/ns/app@sha256:...
    "outside": ("nsx/app", "unsigned"),  # unsigned, in a namespace that is not ns/
}

# Why skopeo (and the tailor, in containers/image's words) refuses.
NOSIG = "A signature was required, but no signature exists"
BADKEY = "Invalid GPG signature"
DIGEST = "Signature for digest "
IDENTITY = "Signature for identity "
NONE_OF = "None of the signatures were accepted, reasons: "
REJECT = "is rejected by policy"

SRC = "{src}"
"""Stands for the source registry's ``127.0.0.1:PORT`` in scopes of the tables."""


@dataclass(frozen=True)
class Row:
    """One copy, by both tools: ``case`` of the corpus under ``policy``, by tag or by
    digest, whole (every platform) or one ``platform``; accepted or refused, and then
    ``why`` and by which ``scope`` (the policy's key: ``None`` for ``default``)."""

    case: str
    policy: str
    accepted: bool
    digest: bool = False
    platform: str | None = None
    why: str = ""
    scope: str | None = SRC

    def __str__(self) -> str:
        how = "@digest" if self.digest else ":tag"
        where = f" --platform {self.platform}" if self.platform else ""
        return f"{self.case}{how}{where} under {self.policy}"


def ok(case: str, policy: str, *, digest: bool = False, platform: str | None = None) -> Row:
    return Row(case, policy, True, digest, platform)


def no(
    case: str,
    policy: str,
    why: str,
    *,
    scope: str | None = SRC,
    digest: bool = False,
    platform: str | None = None,
) -> Row:
    return Row(case, policy, False, digest, platform, why, scope)


def both_refs(row: Callable[..., Row], *args: object, **kwargs: object) -> list[Row]:
    return [row(*args, **kwargs), row(*args, digest=True, **kwargs)]


NS = SRC + "/ns"
SINGLE: list[Row] = [
    # signedBy the trusted key (keyPath, binary), default identity, the registry's scope.
    # A digest reference where it may change the verdict (matchRepoDigestOrExact: any
    # signed tag of the same repository will do).
    *both_refs(ok, "trusted", "keypath"),
    no("other", "keypath", BADKEY),
    no("unsigned", "keypath", NOSIG),
    *both_refs(no, "moved", "keypath", DIGEST),
    *both_refs(no, "mirror", "keypath", IDENTITY),
    ok("two", "keypath"),
    no("bydigest", "keypath", IDENTITY),
    ok("bydigest", "keypath", digest=True),
    no("outside", "keypath", NOSIG),
    # The same key as keyData (base64 of the armoured key).
    ok("trusted", "keydata"),
    no("other", "keydata", BADKEY),
    ok("two", "keydata"),
    # keyPaths: the other key (armoured) and the trusted one (binary), both trusted.
    ok("trusted", "keypaths"),
    ok("other", "keypaths"),
    ok("two", "keypaths"),
    no("moved", "keypaths", DIGEST),
    ok("trusted", "keypaths-binary"),  # [other.gpg, trusted.gpg]
    ok("other", "keypaths-binary"),
    # Only the other key: the first signature of "two" will do.
    no("trusted", "otherkey", BADKEY),
    ok("other", "otherkey"),
    ok("two", "otherkey"),
    # The namespace's scope beats the registry's, either way round.
    ok("trusted", "ns-signed"),
    no("other", "ns-signed", BADKEY, scope=NS),
    no("unsigned", "ns-signed", NOSIG, scope=NS),
    no("mirror", "ns-signed", IDENTITY, scope=NS),
    ok("outside", "ns-signed"),  # nsx/ is not under ns/
    ok("trusted", "ns-open"),
    ok("other", "ns-open"),
    ok("unsigned", "ns-open"),
    ok("moved", "ns-open"),
    no("outside", "ns-open", NOSIG),
    # Exact scopes: name:tag for tag references, name@digest for digest references.
    ok("trusted", "exact"),
    no("trusted", "exact", REJECT, digest=True),
    *both_refs(ok, "unsigned", "exact"),
    no("other", "exact", REJECT),
    no("two", "exact", REJECT),
    no("outside", "exact", REJECT),
    # Each signedIdentity (signedBy the trusted key on the registry's scope).
    ok("trusted", "id-digest-or-exact", digest=True),
    no("mirror", "id-digest-or-exact", IDENTITY),
    no("bydigest", "id-digest-or-exact", IDENTITY),
    ok("bydigest", "id-digest-or-exact", digest=True),
    ok("trusted", "id-repository"),
    no("mirror", "id-repository", IDENTITY),
    *both_refs(ok, "bydigest", "id-repository"),
    no("other", "id-repository", BADKEY),
    ok("trusted", "id-exact"),
    no("trusted", "id-exact", IDENTITY, digest=True),
    no("mirror", "id-exact", IDENTITY),
    no("bydigest", "id-exact", IDENTITY),
    ok("bydigest", "id-exact", digest=True),
    ok("two", "id-exact"),
    no("trusted", "id-exact-reference", IDENTITY),
    *both_refs(ok, "mirror", "id-exact-reference"),
    no("bydigest", "id-exact-reference", IDENTITY),
    no("two", "id-exact-reference", NONE_OF),
    ok("trusted", "id-exact-repository"),
    *both_refs(ok, "mirror", "id-exact-repository"),
    ok("bydigest", "id-exact-repository"),
    no("other", "id-exact-repository", BADKEY),
    no("moved", "id-exact-repository", DIGEST),
    ok("trusted", "id-remap"),  # ns/app is not under the prefix: not remapped
    *both_refs(ok, "mirror", "id-remap"),
    no("bydigest", "id-remap", IDENTITY),
    ok("bydigest", "id-remap", digest=True),
    # Plain reject and insecureAcceptAnything (the global default), and docker's "".
    no("trusted", "reject", REJECT, scope=None),
    no("unsigned", "reject", REJECT, scope=None, digest=True),
    ok("trusted", "accept"),
    ok("other", "accept"),
    ok("unsigned", "accept"),
    ok("moved", "accept"),
    ok("trusted", "docker-default"),
    no("unsigned", "docker-default", NOSIG, scope=""),
]

AMD64 = "linux/amd64"
ARM64 = "linux/arm64"
INDEXES: list[Row] = [
    # Whole (skopeo --all): every instance, each against its own signatures.
    *both_refs(no, "half", "keypath", NOSIG),
    *both_refs(ok, "half", "keypath", platform=AMD64),
    no("half", "keypath", NOSIG, platform=ARM64),
    *both_refs(ok, "both", "keypath"),
    ok("both", "keypath", platform=ARM64),
    # The index's own signature plays no part.
    no("listonly", "keypath", NOSIG),
    no("listonly", "keypath", NOSIG, platform=AMD64),
    # The identity is the user's reference: the index's digest is no signed tag.
    ok("both", "id-exact"),
    no("both", "id-exact", IDENTITY, digest=True),
    ok("half", "accept"),
    ok("half", "ns-open"),
    no("both", "reject", REJECT, scope=None),
]

HTTP: list[Row] = [
    ok("trusted", "keypath"),
    no("other", "keypath", BADKEY),
    no("unsigned", "keypath", NOSIG),
    ok("two", "keypath"),
    no("moved", "keypath", DIGEST),
    no("half", "keypath", NOSIG),
    ok("half", "keypath", platform=AMD64),
]


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Corpus:
    root: Path
    src: str
    """The source registry's ``127.0.0.1:PORT``, the same for every test."""
    config: Path
    sigs: Path
    """The file:// lookaside."""
    registries_d: Path
    policies: dict[str, Path]
    digests: dict[str, str]
    """Each case's manifest (or index) digest."""
    platforms: dict[str, dict[str, str]]
    """Each index case's instance digest by platform."""
    secrets: list[bytes]

    def ref(self, row: Row) -> str:
        repository, tag = CASES[row.case]
        if row.digest:
            return f"{self.src}/{repository}@{self.digests[row.case]}"
        return f"{self.src}/{repository}:{tag}"

    def copied_digest(self, row: Row) -> str:
        if row.platform:
            return self.platforms[row.case][row.platform]
        return self.digests[row.case]


def fetch(host: str, repository: str, ref: str) -> requests.Response:
    return requests.get(
        f"http://{host}/v2/{repository}/manifests/{ref}", headers={"Accept": ACCEPTS}, timeout=10
    )


def signed_by(key: Path | None = None, **extra: object) -> dict:
    if key is not None:
        extra["keyPath"] = str(key)
    return {"type": "signedBy", "keyType": "GPGKeys", **extra}


ACCEPT = {"type": "insecureAcceptAnything"}
REJECT_ALL = {"type": "reject"}


def policies(src: str, keys: Path, unsigned_digest: str) -> dict[str, dict]:
    """The policies by name. All but ``accept`` reject by default; unless a name says
    otherwise, the registry's scope (``127.0.0.1:P``) has signedBy the trusted key
    (keyPath, binary) with the default identity (matchRepoDigestOrExact). ``ns-signed``:
    the registry accepts anything, ``…/ns`` wants the trusted key; ``ns-open`` the
    reverse. ``exact``: ``…/ns/app:trusted`` signed, ``…/ns/app:unsigned`` and
    ``…/ns/app@<its digest>`` anything, the registry rejects. ``id-*``: each signedIdentity;
    ``docker-default``: signedBy on ``transports.docker[""]`` alone."""
    trusted = keys / "trusted.gpg"

    def registry(*requirements: dict) -> dict:
        return {"default": [REJECT_ALL], "transports": {"docker": {src: list(requirements)}}}

    def identity(kind: str, **extra: str) -> dict:
        return registry(signed_by(trusted, signedIdentity={"type": kind, **extra}))

    keydata = base64.b64encode((keys / "trusted.asc").read_bytes()).decode()
    return {
        "keypath": registry(signed_by(trusted)),
        "keydata": registry(signed_by(keyData=keydata)),
        "keypaths": registry(signed_by(keyPaths=[str(keys / "other.asc"), str(trusted)])),
        "keypaths-binary": registry(signed_by(keyPaths=[str(keys / "other.gpg"), str(trusted)])),
        "otherkey": registry(signed_by(keys / "other.gpg")),
        "ns-signed": {
            "default": [REJECT_ALL],
            "transports": {"docker": {src: [ACCEPT], f"{src}/ns": [signed_by(trusted)]}},
        },
        "ns-open": {
            "default": [REJECT_ALL],
            "transports": {"docker": {f"{src}/ns": [ACCEPT], src: [signed_by(trusted)]}},
        },
        "exact": {
            "default": [REJECT_ALL],
            "transports": {
                "docker": {
                    f"{src}/ns/app:trusted": [signed_by(trusted)],
                    f"{src}/ns/app:unsigned": [ACCEPT],
                    f"{src}/ns/app@{unsigned_digest}": [ACCEPT],
                    src: [REJECT_ALL],
                }
            },
        },
        "id-digest-or-exact": identity("matchRepoDigestOrExact"),
        "id-repository": identity("matchRepository"),
        "id-exact": identity("matchExact"),
        "id-exact-reference": identity("exactReference", dockerReference=f"{src}/ns/app:v1"),
        "id-exact-repository": identity("exactRepository", dockerRepository=f"{src}/ns/app"),
        "id-remap": identity(
            "remapIdentity", prefix=f"{src}/ns/mirror", signedPrefix=f"{src}/ns/app"
        ),
        "reject": {"default": [REJECT_ALL]},
        "accept": {"default": [ACCEPT]},
        "docker-default": {
            "default": [REJECT_ALL],
            "transports": {"docker": {"": [signed_by(trusted)]}},
        },
    }


def build(root: Path, gpg: GnuPG, reg: Registry) -> Corpus:
    """Push and sign the corpus on ``reg``; keys, signatures and policies under ``root``."""
    src = reg.host
    home = root / "home"
    home.mkdir()
    sigs = root / "sigs"
    sigs.mkdir()
    signing_d = write_registries_d(root / "signing.d", src, staging=sigs.as_uri())
    reading_d = write_registries_d(root / "registries.d", src, lookaside=sigs.as_uri())

    keys = root / "keys"
    keys.mkdir()
    trusted = gpg.generate("trusted")  # ed25519
    other = gpg.generate("other", algorithm="rsa")
    for key in (trusted, other):
        (keys / f"{key.name}.gpg").write_bytes(gpg.export(key))
        (keys / f"{key.name}.asc").write_bytes(gpg.export(key, armor=True))

    lay = Layout(root / "layout")
    seeds = iter(range(1, 100))

    def one(arch: str = "amd64") -> dict:
        return image(lay, seed=next(seeds), layers=1, layer_size=512, arch=arch)

    for name in ("trusted", "other", "unsigned", "moved", "moved2", "mirror", "two", "bydigest"):
        lay.tag(name, one())
    for name in ("half", "both", "listonly"):
        lay.tag(name, index(lay, [one("amd64"), one("arm64")]))

    def push(case: str, tag: str | None = None, key: Key | None = None, **kw: bool) -> str:
        repository, dest_tag = CASES[case]
        dest = f"{src}/{repository}:{dest_tag}"
        sign_copy(gpg, key, f"oci:{lay.path}:{tag or case}", dest, signing_d, home=home, **kw)
        got = fetch(src, repository, dest_tag)
        got.raise_for_status()
        return sha256(got.content)

    def sign(case: str, digest: str, identity: str, key: Key, n: int = 1) -> None:
        repository = CASES[case][0]
        manifest = fetch(src, repository, digest)
        manifest.raise_for_status()
        out = lookaside_path(sigs, repository, digest, n)
        standalone_sign(gpg, key, manifest.content, identity, out, home=home)

    digests: dict[str, str] = {}
    digests["trusted"] = push("trusted", key=trusted)
    digests["other"] = push("other", key=other)
    digests["unsigned"] = push("unsigned")
    digests["outside"] = push("outside", tag="unsigned")
    # d. signed, then the tag moves to another image; the old signature is put where a
    # reader looks for the new one's (it names the old digest).
    old = push("moved", key=trusted)
    digests["moved"] = push("moved", tag="moved2")
    assert old != digests["moved"]
    moved_sig = lookaside_path(sigs, "ns/app", digests["moved"])
    moved_sig.parent.mkdir(parents=True)
    shutil.copyfile(lookaside_path(sigs, "ns/app", old), moved_sig)
    # e. in ns/mirror, signed as ns/app:v1.
    digests["mirror"] = push("mirror")
    sign("mirror", digests["mirror"], f"{src}/ns/app:v1", trusted)
    # g. the other key's signature first, then the trusted one's.
    digests["two"] = push("two", key=other)
    sign("two", digests["two"], f"{src}/ns/app:two", trusted, n=2)
    # A signature naming the image by its digest.
    digests["bydigest"] = push("bydigest")
    sign("bydigest", digests["bydigest"], f"{src}/ns/app@{digests['bydigest']}", trusted)
    # Indexes: f. amd64 signed alone; skopeo --all --sign-by; the index's digest signed alone.
    platforms: dict[str, dict[str, str]] = {}
    for case, signer in (("half", None), ("both", trusted), ("listonly", None)):
        digests[case] = push(case, key=signer, all_platforms=True)
        listed = fetch(src, CASES[case][0], digests[case]).json()["manifests"]
        platforms[case] = {
            f"{m['platform']['os']}/{m['platform']['architecture']}": m["digest"] for m in listed
        }
    sign("half", platforms["half"][AMD64], f"{src}/ns/app:multi", trusted)
    sign("listonly", digests["listonly"], f"{src}/ns/app:listonly", trusted)

    # What a reader finds, as each case needs it.
    def found(case: str, digest: str) -> int:
        return len(signatures_of(sigs, CASES[case][0], digest))

    signed = {"trusted": 1, "other": 1, "moved": 1, "mirror": 1, "two": 2, "bydigest": 1}
    signed |= {"listonly": 1, "both": 1}  # skopeo --all --sign-by signs the index too
    assert {c: found(c, digests[c]) for c in CASES} == {c: signed.get(c, 0) for c in CASES}
    assert found("half", platforms["half"][AMD64]) == 1
    assert found("half", platforms["half"][ARM64]) == 0
    assert found("both", platforms["both"][AMD64]) == found("both", platforms["both"][ARM64]) == 1
    assert found("listonly", platforms["listonly"][AMD64]) == 0

    written = {}
    policy_dir = root / "policies"
    policy_dir.mkdir()
    for name, doc in policies(src, keys, digests["unsigned"]).items():
        written[name] = policy_dir / f"{name}.json"
        written[name].write_text(json.dumps(doc, indent=2))
    return Corpus(
        root=root,
        src=src,
        config=reg.root / "config.yml",
        sigs=sigs,
        registries_d=reading_d,
        policies=written,
        digests=digests,
        platforms=platforms,
        secrets=gpg.secrets(),
    )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    root = tmp_path_factory.mktemp("policy-peer")
    with gnupg() as gpg:
        reg = start_registry(root / "src")
        try:
            built = build(root, gpg, reg)
        finally:
            reg.stop()
    yield built


@pytest.fixture
def source(corpus: Corpus) -> Iterator[str]:
    """The corpus's registry, running for this test on its own address."""
    proc = run_registry(corpus.config, corpus.src, corpus.root / "src" / "registry.log")
    yield corpus.src
    stop(proc)


@pytest.fixture
def destination(tmp_path: Path) -> Iterator[Registry]:
    reg = start_registry(tmp_path / "dst")
    yield reg
    reg.stop()


@dataclass
class Verdicts:
    """What each tool said of one row, and what was wrong with it."""

    row: Row
    skopeo: bool | None = None
    tailor: bool | None = None
    problems: list[str] = field(default_factory=list)


def skopeo_verdict(
    corpus: Corpus, row: Row, registries_d: Path, out: Path, env: dict[str, str]
) -> tuple[bool | None, str]:
    args = ["skopeo", "--policy", str(corpus.policies[row.policy])]
    args += ["--registries.d", str(registries_d), "copy", "--src-tls-verify=false", "--quiet"]
    if row.platform:
        os_name, arch = row.platform.split("/")
        args += ["--override-os", os_name, "--override-arch", arch]
    else:
        args.append("--all")
    done = subprocess.run(
        [*args, f"docker://{corpus.ref(row)}", f"dir:{out}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    shutil.rmtree(out, ignore_errors=True)
    if done.returncode == 0:
        return True, done.stderr
    if REJECTED in done.stderr:
        return False, done.stderr
    return None, done.stderr


def one_error(run: Run) -> str | None:
    """The one ``tailor:`` line, the last one; None when there is not exactly that."""
    lines = run.stderr.strip().splitlines()
    errors = [line for line in lines if line.startswith("tailor:")]
    if "Traceback" in run.stderr or errors != lines[-1:]:
        return None
    return errors[0]


def check(
    corpus: Corpus,
    row: Row,
    number: int,
    registries_d: Path,
    dst: str,
    tmp: Path,
    probe: Callable[[], int] | None = None,
) -> Verdicts:
    """Both tools' verdicts on ``row``; with ``probe`` (a count of lookaside reads), each
    tool must have read the lookaside."""
    v = Verdicts(row)
    reads = [probe()] if probe else []
    scope = None if row.scope is None else row.scope.replace(SRC, corpus.src)
    work = tmp / f"row{number}"
    work.mkdir()
    env = tailor_env(work)  # for both: no keyring, no containers configuration of the user's
    env.pop("GNUPGHOME", None)
    for directory in ("HOME", "XDG_RUNTIME_DIR"):
        Path(env[directory]).mkdir()

    v.skopeo, said = skopeo_verdict(corpus, row, registries_d, work / "out", env)
    if probe:
        reads.append(probe())
    if v.skopeo is None:
        v.problems.append(f"skopeo neither accepted nor refused: {said.strip()}")
    elif v.skopeo != row.accepted:
        v.problems.append(f"skopeo {'accepted' if v.skopeo else 'refused'}: {said.strip()}")
    elif not row.accepted and row.why not in said:
        v.problems.append(f"skopeo refused, but not with {row.why!r}: {said.strip()}")

    repository = f"peer/row{number}"
    args = ["copy", "--policy", str(corpus.policies[row.policy])]
    args += ["--registries.d", str(registries_d), *insecure(corpus.src, dst)]
    if row.platform:
        args += ["--platform", row.platform]
    run = tailor_cli(*args, corpus.ref(row), f"{dst}/{repository}:t", env=env, timeout=120)
    if probe:
        reads.append(probe())
        for tool, before, after in (("skopeo", *reads[:2]), ("tailor", *reads[1:])):
            if after == before:
                v.problems.append(f"{tool} did not read the lookaside")
    for text in (said, run.stdout, run.stderr, *run.argv):
        if any(secret in text.encode(errors="replace") for secret in corpus.secrets):
            v.problems.append("private key material in an output")
    line = one_error(run)
    if run.returncode == 0:
        v.tailor = True
        want = f"{dst}/{repository}@{corpus.copied_digest(row)}"
        if run.stdout.strip().splitlines()[-1:] != [want]:
            v.problems.append(f"tailor accepted, but printed {run.stdout!r}, not {want}")
        copied = fetch(dst, repository, "t")
        if copied.status_code != 200 or sha256(copied.content) != corpus.copied_digest(row):
            v.problems.append(f"tailor accepted, but the destination tag answers {copied}")
    elif run.returncode == 1 and line and "refused by the signature policy" in line:
        v.tailor = False
        named = "default" if scope is None else f'"{scope}"'
        if named not in line:
            v.problems.append(f"tailor's refusal does not name the scope {named}: {line}")
        requirement = "reject" if row.why == REJECT else "signedBy"
        if requirement not in line:
            v.problems.append(f"tailor's refusal does not name {requirement}: {line}")
        if row.why not in line:
            v.problems.append(f"tailor refused, but not with {row.why!r}: {line}")
    else:
        v.problems.append(f"tailor exited {run.returncode}: {run.stderr.strip()}")
    if v.tailor is False or v.tailor is None:
        status = fetch(dst, repository, "t").status_code
        if status != 404:
            v.problems.append(f"after a refusal the destination tag answers {status}")
    if v.tailor is not None and v.tailor != row.accepted:
        v.problems.append(
            f"tailor {'accepted' if v.tailor else 'refused'}: {(line or run.stderr).strip()}"
        )
    shutil.rmtree(work, ignore_errors=True)
    return v


def check_all(
    corpus: Corpus, rows: list[Row], registries_d: Path, dst: str, tmp: Path, jobs: int = JOBS
) -> list[Verdicts]:
    with ThreadPoolExecutor(jobs) as pool:
        return list(
            pool.map(lambda n: check(corpus, rows[n], n, registries_d, dst, tmp), range(len(rows)))
        )


def report(results: list[Verdicts]) -> str:
    def said(value: bool | None) -> str:
        return "error" if value is None else "accepted" if value else "refused"

    lines = []
    for v in results:
        if v.problems:
            lines.append(
                f"{v.row}: expected {said(v.row.accepted)}, skopeo {said(v.skopeo)},"
                f" tailor {said(v.tailor)}"
            )
            lines += [f"    {p}" for p in v.problems]
    return "\n".join(lines)


def assert_agree(results: list[Verdicts]) -> None:
    failures = report(results)
    assert not failures, f"{sum(bool(v.problems) for v in results)} rows wrong:\n{failures}"


def test_single_images_get_skopeos_verdicts(
    corpus: Corpus, source: str, destination: Registry, tmp_path: Path
) -> None:
    assert_agree(check_all(corpus, SINGLE, corpus.registries_d, destination.host, tmp_path))


def test_indexes_are_judged_per_platform_as_skopeo_judges_them(
    corpus: Corpus, source: str, destination: Registry, tmp_path: Path
) -> None:
    assert_agree(check_all(corpus, INDEXES, corpus.registries_d, destination.host, tmp_path))


def test_a_lookaside_served_over_http_gets_the_same_verdicts(
    corpus: Corpus, source: str, destination: Registry, tmp_path: Path
) -> None:
    hits: list[str] = []
    lock = threading.Lock()

    def handler(h: BaseHTTPRequestHandler) -> None:
        with lock:
            hits.append(h.path)
        path = unquote(h.path.split("?", 1)[0])
        prefix = "/lookaside/"
        file = (corpus.sigs / path[len(prefix) :]).resolve()
        if (
            h.command == "GET"
            and path.startswith(prefix)
            and file.is_relative_to(corpus.sigs)
            and file.is_file()
        ):
            reply(h, 200, file.read_bytes(), {"Content-Type": "application/octet-stream"})
        else:
            reply(h, 404)

    with serve(handler) as server:
        rd = write_registries_d(
            tmp_path / "http.d", corpus.src, lookaside=f"http://{server}/lookaside"
        )
        results = [  # one at a time: each tool must ask the server
            check(corpus, row, n, rd, destination.host, tmp_path, probe=lambda: len(hits))
            for n, row in enumerate(HTTP)
        ]
    assert_agree(results)
    assert any("/signature-1" in hit for hit in hits)


def test_no_private_key_material_leaves_the_gnupg_home(corpus: Corpus) -> None:
    """The keys, signatures, policies and registry the corpus left: public material only
    (every tool's output is scanned row by row)."""
    holding = [
        path
        for path in corpus.root.rglob("*")
        if path.is_file() and any(secret in path.read_bytes() for secret in corpus.secrets)
    ]
    assert not holding
