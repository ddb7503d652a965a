"""`tailor copy` against real Distribution registries, checked with skopeo."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.cli import insecure
from tests.support.credentials import (
    UPSTREAM_PASSWORD,
    UPSTREAM_USER,
    assert_no_secret,
    write_authfile,
)
from tests.support.images import Layout, image, index
from tests.support.proxy import Proxy, Storage
from tests.support.registry import Registry
from tests.support.skopeo import Skopeo
from tests.support.tokenserver import TokenRegistry

SRC_ENV = {"TAILOR_SRC_PASSWORD": UPSTREAM_PASSWORD}


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture
def layout(tmp_path: Path) -> Layout:
    """Three tags: a two-platform OCI index, a single image, and one with a 2 MiB layer."""
    lay = Layout(tmp_path / "layout")
    amd = image(lay, seed=1, layers=3)
    arm = image(lay, seed=2, layers=3, arch="arm64")
    lay.tag("multi", index(lay, [amd, arm]))
    lay.tag("single", image(lay, seed=3, layers=4))
    lay.tag("big", image(lay, seed=4, layers=2, layer_size=2 * 1024 * 1024))
    return lay


@pytest.fixture
def pushed(upstream: Registry, skopeo: Skopeo, layout: Layout) -> Registry:
    skopeo.login(upstream)
    skopeo.push(layout, "multi", f"{upstream.host}/team/app:multi")
    skopeo.push(layout, "single", f"{upstream.host}/team/app:docker", docker_format=True)
    skopeo.push(layout, "multi", f"{upstream.host}/team/app:dlist", docker_format=True)
    skopeo.push(layout, "big", f"{upstream.host}/team/app:big", all_platforms=False)
    return upstream


@pytest.fixture
def proxy(pushed: Registry) -> Iterator[Proxy]:
    p = Proxy(pushed.host)
    yield p
    p.stop()


def copy_args(src: str, dst: str, *hosts: str, user: str | None = UPSTREAM_USER) -> list[str]:
    args = ["copy", *insecure(*hosts)]
    if user:
        args += ["--src-username", user]
    return [*args, src, dst]


def one_error(run) -> str:
    """Progress lines may come first; the failure itself is exactly one last line."""
    lines = run.stderr.strip().splitlines()
    assert "Traceback" not in run.stderr
    errors = [line for line in lines if line.startswith("tailor:")]
    assert errors == lines[-1:], run.stderr
    return errors[0]


def catalog(reg: Registry) -> list[str]:
    return list(requests.get(f"{reg.url}/v2/_catalog", timeout=5).json()["repositories"] or [])


def test_cold_copy_of_an_index_is_byte_identical(
    pushed: Registry, internal: Registry, skopeo: Skopeo, tailor, tmp_path: Path, layout: Layout
) -> None:
    skopeo.login(pushed)
    src_raw = skopeo.raw(f"{pushed.host}/team/app:multi")
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:multi",
            f"{internal.host}/staged/one:v1",
            pushed.host,
            internal.host,
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 0, run.stderr
    ref = run.stdout.strip().splitlines()[-1]
    assert ref == f"{internal.host}/staged/one@{sha(src_raw)}"
    assert skopeo.raw(ref) == src_raw
    assert skopeo.raw(f"{internal.host}/staged/one:v1") == src_raw
    # Both platforms' manifests came along, byte for byte.
    for child in json.loads(src_raw)["manifests"]:
        child_ref = f"{internal.host}/staged/one@{child['digest']}"
        assert sha(skopeo.raw(child_ref)) == child["digest"]
    # Pull everything back by digest with the independent client; blobs match the source.
    pulled = skopeo.pull(ref, tmp_path / "pulled")
    for digest, data in layout.blobs.items():
        path = pulled / "blobs" / "sha256" / digest[7:]
        if path.exists():
            assert path.read_bytes() == data
    assert len(list((pulled / "blobs" / "sha256").iterdir())) >= 10
    assert "copied" in run.stderr
    assert_no_secret(run, UPSTREAM_PASSWORD)
    for path in (tmp_path / "tailor-cache").rglob("*"):
        assert UPSTREAM_PASSWORD.encode() not in path.read_bytes()


@pytest.mark.parametrize(
    ("tag", "media_type"),
    [
        ("docker", "application/vnd.docker.distribution.manifest.v2+json"),
        ("dlist", "application/vnd.docker.distribution.manifest.list.v2+json"),
    ],
)
def test_docker_schema2_images_and_lists_copy_unchanged(
    pushed: Registry, internal: Registry, skopeo: Skopeo, tailor, tag: str, media_type: str
) -> None:
    skopeo.login(pushed)
    src_raw = skopeo.raw(f"{pushed.host}/team/app:{tag}")
    assert json.loads(src_raw)["mediaType"] == media_type
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:{tag}", f"{internal.host}/d/app", pushed.host, internal.host
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{internal.host}/d/app@{sha(src_raw)}"
    assert skopeo.raw(f"{internal.host}/d/app:latest") == src_raw
    assert skopeo.raw(f"{internal.host}/d/app@{sha(src_raw)}") == src_raw


def test_platform_option_copies_one_platform(
    pushed: Registry, internal: Registry, skopeo: Skopeo, tailor
) -> None:
    skopeo.login(pushed)
    children = json.loads(skopeo.raw(f"{pushed.host}/team/app:multi"))["manifests"]
    arm = next(c for c in children if c["platform"]["architecture"] == "arm64")
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:multi",
            f"{internal.host}/p/app:arm",
            pushed.host,
            internal.host,
        ),
        "--platform",
        "linux/arm64",
        env=SRC_ENV,
    )
    # copy_args puts SRC DST last; argparse accepts options after positionals too.
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == f"{internal.host}/p/app@{arm['digest']}"
    assert sha(skopeo.raw(f"{internal.host}/p/app:arm")) == arm["digest"]


def test_second_copy_downloads_no_blob(
    proxy: Proxy, internal: Registry, tailor, skopeo: Skopeo
) -> None:
    src = f"{proxy.host}/team/app:multi"
    first = tailor(
        *copy_args(src, f"{internal.host}/push/one", proxy.host, internal.host), env=SRC_ENV
    )
    assert first.returncode == 0, first.stderr
    downloaded = sum(proxy.blob_gets.values())
    assert downloaded == 8  # 2 configs + 6 layers, each once
    # A new push of the same image to a new repository: every blob is mounted.
    second = tailor(
        *copy_args(src, f"{internal.host}/push/two", proxy.host, internal.host), env=SRC_ENV
    )
    assert second.returncode == 0, second.stderr
    assert sum(proxy.blob_gets.values()) == downloaded
    assert "mounted 8" in second.stderr
    # Same repository again: everything is already there.
    third = tailor(
        *copy_args(src, f"{internal.host}/push/two", proxy.host, internal.host), env=SRC_ENV
    )
    assert third.returncode == 0, third.stderr
    assert "already present 8" in third.stderr
    assert sum(proxy.blob_gets.values()) == downloaded
    assert first.stdout == second.stdout.replace("push/two", "push/one")
    assert skopeo.raw(second.stdout.strip()) == skopeo.raw(first.stdout.strip())


def test_wrong_password_is_one_clear_line(pushed: Registry, internal: Registry, tailor) -> None:
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:multi", f"{internal.host}/x/y", pushed.host, internal.host
        ),
        env={"TAILOR_SRC_PASSWORD": "not-the-password-123"},
    )
    assert run.returncode == 1
    lines = run.stderr.strip().splitlines()
    assert lines == [
        f"tailor: error: unauthorized: registry {pushed.host} refused the basic credentials "
        f"for manifest {pushed.host}/team/app:multi (UNAUTHORIZED: authentication required)"
    ]
    assert "Traceback" not in run.stderr
    assert "not-the-password-123" not in run.stderr + run.stdout
    assert catalog(internal) == []


SRC_HINT = (
    "use --src-username with TAILOR_SRC_PASSWORD, an auth file entry, "
    "or the platform identity: TAILOR_BROKER_URL, TAILOR_CLIENT_ID, TAILOR_CLIENT_KEY"
)


def test_no_credentials_for_a_private_source_says_none_were_given(
    pushed: Registry, internal: Registry, tailor
) -> None:
    src, dst = f"{pushed.host}/team/app:multi", f"{internal.host}/x/y"
    run = tailor(*copy_args(src, dst, pushed.host, internal.host, user=None))
    assert run.returncode == 1
    assert one_error(run) == (
        f"tailor: error: unauthorized: registry {pushed.host} refused anonymous access to "
        f"manifest {src}: no credentials were given ({SRC_HINT})"
    )
    # With the platform identity configured, the hint says where that identity goes (the
    # key is not even read: nothing asked for it).
    identity = {
        "TAILOR_BROKER_URL": "https://broker.invalid",
        "TAILOR_CLIENT_ID": "cell-1",
        "TAILOR_CLIENT_KEY": "/nonexistent/cell-1.pem",
    }
    run = tailor(*copy_args(src, dst, pushed.host, internal.host, user=None), env=identity)
    assert run.returncode == 1
    assert one_error(run).endswith(
        "no credentials were given (use --src-username with TAILOR_SRC_PASSWORD or an "
        "auth file entry; the platform identity goes only to the broker's token realm)"
    )
    assert catalog(internal) == []


def test_no_credentials_for_a_private_destination_says_none_were_given(
    pushed: Registry, tailor
) -> None:
    src, dst = f"{pushed.host}/team/app:multi", f"{pushed.host}/copies/app:multi"
    run = tailor(*copy_args(src, dst, pushed.host), env=SRC_ENV)
    assert run.returncode == 1
    line = one_error(run)
    assert line.startswith(
        f"tailor: error: unauthorized: registry {pushed.host} refused anonymous access to "
        f"blob {pushed.host}/copies/app@sha256:"
    )
    assert line.endswith(
        "no credentials were given (use --dest-username with TAILOR_DEST_PASSWORD, an "
        "auth file entry, or the platform identity: TAILOR_BROKER_URL, TAILOR_CLIENT_ID, "
        "TAILOR_CLIENT_KEY)"
    )
    assert_no_secret(run, UPSTREAM_PASSWORD)


def test_a_token_server_refusing_anonymous_requests_is_no_credentials(
    token_upstream: TokenRegistry, internal: Registry, tailor, skopeo: Skopeo, layout: Layout
) -> None:
    """A realm that answers 401 to a token request without credentials (as the broker's
    does) is a refusal of anonymous access, not of credentials."""
    reg, server = token_upstream.registry, token_upstream.server
    skopeo.login(reg)
    skopeo.push(layout, "single", f"{reg.host}/team/app:single")
    server.refuse_anonymous = True
    hosts = (reg.host, internal.host, server.host)
    src = f"{reg.host}/team/app:single"
    run = tailor(*copy_args(src, f"{internal.host}/tok/anon", *hosts, user=None))
    assert run.returncode == 1
    assert one_error(run) == (
        f"tailor: error: unauthorized: token server {server.host} refused anonymous access to "
        f"manifest {src}: no credentials were given ({SRC_HINT})"
    )
    bad = tailor(
        *copy_args(src, f"{internal.host}/tok/anon", *hosts),
        env={"TAILOR_SRC_PASSWORD": "wrong-password-66"},
    )
    assert bad.returncode == 1
    assert one_error(bad) == (
        f"tailor: error: unauthorized: token server {server.host} refused the basic "
        f"credentials for manifest {src}"
    )
    assert_no_secret(bad, "wrong-password-66")
    assert catalog(internal) == []


def test_missing_image_is_not_found(pushed: Registry, internal: Registry, tailor) -> None:
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:nope", f"{internal.host}/x/y", pushed.host, internal.host
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 1
    assert run.stderr.startswith("tailor: error: not found")
    assert "MANIFEST_UNKNOWN" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert catalog(internal) == []


def test_corrupted_blob_publishes_nothing(
    proxy: Proxy, internal: Registry, tailor, skopeo: Skopeo, pushed: Registry
) -> None:
    skopeo.login(pushed)
    manifest = json.loads(skopeo.raw(f"{pushed.host}/team/app:big"))
    bad = manifest["layers"][1]["digest"]
    proxy.faults.corrupt.add(bad)
    run = tailor(
        *copy_args(
            f"{proxy.host}/team/app:big", f"{internal.host}/c/app:v1", proxy.host, internal.host
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 1
    line = one_error(run)
    assert "digest mismatch" in line and bad in line
    tags = requests.get(f"{internal.url}/v2/c/app/tags/list", timeout=5)
    assert tags.status_code == 404 or not tags.json().get("tags")
    head = requests.head(f"{internal.url}/v2/c/app/blobs/{bad}", timeout=5)
    assert head.status_code == 404


def test_cut_download_resumes_with_range(
    proxy: Proxy, internal: Registry, tailor, skopeo: Skopeo, pushed: Registry
) -> None:
    skopeo.login(pushed)
    manifest = json.loads(skopeo.raw(f"{pushed.host}/team/app:big"))
    layer = manifest["layers"][0]
    proxy.faults.cut_once.add(layer["digest"])
    run = tailor(
        *copy_args(
            f"{proxy.host}/team/app:big", f"{internal.host}/r/app:v1", proxy.host, internal.host
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 0, run.stderr
    assert proxy.ranges and proxy.ranges[0].startswith("bytes=")
    offset = int(proxy.ranges[0][6:].rstrip("-"))
    assert 0 < offset < layer["size"]
    blob = requests.get(f"{internal.url}/v2/r/app/blobs/{layer['digest']}", timeout=10)
    assert sha(blob.content) == layer["digest"]
    # Only the missing part was downloaded again.
    assert proxy.blob_bytes < sum(x["size"] for x in manifest["layers"]) + layer["size"] // 2 + 4096


def test_blob_redirect_to_another_host_carries_no_authorization(
    proxy: Proxy, pushed: Registry, internal: Registry, tailor
) -> None:
    storage = Storage(pushed.blob_path)
    try:
        proxy.faults.redirect_to = storage.url
        run = tailor(
            *copy_args(
                f"{proxy.host}/team/app:docker",
                f"{internal.host}/s/app:v1",
                proxy.host,
                internal.host,
                "127.0.0.2",
            ),
            env=SRC_ENV,
        )
        assert run.returncode == 0, run.stderr
        assert storage.hits == 5  # config + 4 layers, all served from "storage"
        assert storage.authorizations == [None] * storage.hits
        # The registry itself did get credentials (so there was something to leak).
        assert any("Authorization" in h for m, p, h in proxy.requests if "/manifests/" in p)
    finally:
        storage.stop()


def test_retryable_errors_are_retried(proxy: Proxy, internal: Registry, tailor) -> None:
    proxy.faults.statuses = [(503, {}), (429, {"Retry-After": "1"}), (502, {})]
    run = tailor(
        *copy_args(
            f"{proxy.host}/team/app:docker", f"{internal.host}/t/app:v1", proxy.host, internal.host
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 0, run.stderr
    assert proxy.faults.statuses == []


@pytest.fixture
def front(internal: Registry) -> Iterator[Proxy]:
    """The internal registry behind a "load balancer" that can fail upload PUTs."""
    p = Proxy(internal.host)
    yield p
    p.stop()


def copy_through(front: Proxy, pushed: Registry, tailor):
    return tailor(
        *copy_args(
            f"{pushed.host}/team/app:docker", f"{front.host}/lb/app:v1", pushed.host, front.host
        ),
        env=SRC_ENV,
    )


def test_an_upload_cut_by_a_502_starts_a_fresh_session(
    front: Proxy, pushed: Registry, internal: Registry, tailor, skopeo: Skopeo, tmp_path: Path
) -> None:
    front.faults.fail_upload_puts = 2
    run = copy_through(front, pushed, tailor)
    assert run.returncode == 0, run.stderr
    assert front.faults.fail_upload_puts == 0
    # Each failed PUT was followed by a new session (POST), not a resend to the old one.
    posts = [p for m, p, _ in front.requests if m == "POST" and "/blobs/uploads/" in p]
    puts = [p for m, p, _ in front.requests if m == "PUT" and "/blobs/uploads/" in p]
    assert len(puts) == len(posts) and len(puts) >= 3
    ref = f"{internal.host}/lb/app:v1"
    assert skopeo.raw(ref) == skopeo.raw(f"{pushed.host}/team/app:docker")
    skopeo.pull(ref, tmp_path / "pulled")  # every layer is there and matches its digest


def test_an_upload_failing_every_time_gives_up_with_one_line(
    front: Proxy, pushed: Registry, tailor
) -> None:
    front.faults.fail_upload_puts = 1000
    run = copy_through(front, pushed, tailor)
    assert run.returncode == 1
    assert "HTTP 502" in one_error(run)
    manifests = [p for m, p, _ in front.requests if m == "PUT" and "/manifests/" in p]
    assert manifests == []  # nothing published


def test_credentials_from_docker_config(
    pushed: Registry, internal: Registry, tailor, tmp_path: Path
) -> None:
    write_authfile(
        tmp_path / "docker-config" / "config.json",
        {pushed.host: (UPSTREAM_USER, UPSTREAM_PASSWORD)},
    )
    run = tailor(
        *copy_args(
            f"{pushed.host}/team/app:docker",
            f"{internal.host}/cfg/app",
            pushed.host,
            internal.host,
            user=None,
        ),
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(f"{internal.host}/cfg/app@sha256:")


def test_token_auth_upstream_with_get_and_oauth2_post(
    token_upstream: TokenRegistry,
    internal: Registry,
    tailor,
    skopeo: Skopeo,
    layout: Layout,
    tmp_path: Path,
) -> None:
    reg, server = token_upstream.registry, token_upstream.server
    skopeo.login(reg)
    skopeo.push(layout, "multi", f"{reg.host}/team/app:multi")
    hosts = (reg.host, internal.host, server.host)
    start = len(server.calls)
    run = tailor(
        *copy_args(f"{reg.host}/team/app:multi", f"{internal.host}/tok/a", *hosts), env=SRC_ENV
    )
    assert run.returncode == 0, run.stderr
    # One token, fetched with GET and Basic credentials, serves the whole copy.
    assert [(c.method, c.scopes, c.authorized) for c in server.calls[start:]] == [
        ("GET", ["repository:team/app:pull"], True)
    ]
    before = len(server.calls)

    # An identity (refresh) token in config.json: the OAuth2 POST flow.
    refresh = server.new_refresh_token()
    (tmp_path / "docker-config").mkdir(exist_ok=True)
    (tmp_path / "docker-config" / "config.json").write_text(
        json.dumps({"auths": {reg.host: {"identitytoken": refresh}}})
    )
    run2 = tailor(
        *copy_args(f"{reg.host}/team/app:multi", f"{internal.host}/tok/b", *hosts, user=None)
    )
    assert run2.returncode == 0, run2.stderr
    posts = [c for c in server.calls[before:] if c.method == "POST"]
    assert posts and posts[0].grant == "refresh_token" and posts[0].authorized
    assert run.stdout.replace("tok/a", "tok/b") == run2.stdout
    assert_no_secret(run2, refresh)

    bad = tailor(
        *copy_args(f"{reg.host}/team/app:multi", f"{internal.host}/tok/c", *hosts),
        env={"TAILOR_SRC_PASSWORD": "wrong-password-55"},
    )
    assert bad.returncode == 1 and "unauthorized" in bad.stderr
    assert "tok/c" not in json.dumps(catalog(internal))


def test_oversized_token_response_is_refused(
    token_upstream: TokenRegistry, internal: Registry, tailor, skopeo: Skopeo, layout: Layout
) -> None:
    reg, server = token_upstream.registry, token_upstream.server
    server.oversized = True
    run = tailor(
        *copy_args(
            f"{reg.host}/team/app:multi",
            f"{internal.host}/o/a",
            reg.host,
            internal.host,
            server.host,
        ),
        env=SRC_ENV,
    )
    assert run.returncode == 1
    assert "oversized token response" in run.stderr


def test_plain_http_realm_needs_insecure_flag(
    token_upstream: TokenRegistry, internal: Registry, tailor
) -> None:
    reg = token_upstream.registry
    run = tailor(
        *copy_args(f"{reg.host}/team/app:multi", f"{internal.host}/o/a", reg.host, internal.host),
        env=SRC_ENV,
    )
    # 127.0.0.1 registries are named insecure by host:port here, the realm's port is not.
    assert run.returncode == 1
    assert "plain-HTTP token realm" in run.stderr


def test_https_is_the_default(pushed: Registry, internal: Registry, tailor) -> None:
    run = tailor(
        "copy",
        "--src-username",
        UPSTREAM_USER,
        f"{pushed.host}/team/app:multi",
        f"{internal.host}/h/a",
        env=SRC_ENV,
    )
    assert run.returncode == 1
    assert run.stderr.startswith(f"tailor: error: cannot reach {pushed.host}: TLS handshake")
    assert len(run.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("args", "env", "code", "message"),
    [
        (["copy", "UPPER/Case", "x/y"], {}, 1, "invalid image reference"),
        # Usage errors exit 2, as argparse's own do (reported: these exited 1).
        (["copy", "a/b", "x/y", "--jobs", "0"], {}, 2, "--jobs: must be between 1 and 64"),
        (["copy", "a/b", "x/y", "--platform", "linux"], {}, 2, "invalid platform 'linux'"),
        (["copy", "a/b", "x/y", "--src-username", "u"], {}, 1, "TAILOR_SRC_PASSWORD"),
        (["copy", "a/b", "x/y"], {"TAILOR_DEST_PASSWORD": "pw-xyz-1"}, 1, "--dest-username"),
        (["copy", "--src-password", "pw", "a/b", "x/y"], {}, 2, "unknown option '--src-password'"),
        (["copy", "a/b", "x/y", "z"], {}, 2, "unrecognized arguments: z (see 'tailor copy -h')"),
        # A typo: the nearest command or option, and whose help to read (reported: the
        # message said "see 'tailor tailor -h'").
        (
            ["cpy", "a/b", "x/y"],
            {},
            2,
            "unknown command 'cpy'; did you mean 'copy'? (see 'tailor -h')",
        ),
        (
            ["copy", "--platfrom", "linux/amd64", "a/b", "x/y"],
            {},
            2,
            "unknown option '--platfrom'; did you mean '--platform'? (see 'tailor copy -h')",
        ),
        (["stage", "--jobs", "65"], {}, 2, "(see 'tailor stage -h')"),
        # The hidden --docker-password only refuses: never suggested (the review found it).
        (
            ["push", "--docker-image", "a/b", "--app-guid", "g", "--docker-pasword=x"],
            {},
            2,
            "unknown option '--docker-pasword'; did you mean '--docker-username'?",
        ),
    ],
)
def test_bad_input_is_one_line(
    tailor, args: list[str], env: dict[str, str], code: int, message: str
) -> None:
    run = tailor(*args, env=env)
    assert run.returncode == code, run.stderr
    assert message in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stderr and "tailor tailor" not in run.stderr
    assert run.stdout == ""


def test_every_option_and_variable_is_explained(tailor) -> None:
    """Reported: --src-username and --dest-username had no help text, and the variables
    the Tailor reads were not in --help. Each command's help has its examples."""
    import argparse

    from tailor.cli import _parser

    top = tailor("-h")
    for variable in ("DOCKER_CONFIG", "TAILOR_CACHE_DIR", "TAILOR_CLIENT_ID", "TAILOR_CLIENT_KEY"):
        assert variable in top.stdout, variable
    for command in ("copy", "stage", "egress-rules", "push"):
        shown = tailor(command, "-h")
        assert shown.returncode == 0 and "example" in shown.stdout, command
    (commands,) = [a for a in _parser()._actions if isinstance(a, argparse._SubParsersAction)]
    silent = [
        f"{name} {option}"
        for name in ("copy", "stage", "egress-rules", "push")
        for action in commands.choices[name]._actions
        for option in action.option_strings[:1]
        if not action.help
    ]
    assert silent == [], silent
    assert "log in to SRC as USER, with the password in TAILOR_SRC_PASSWORD" in " ".join(
        tailor("copy", "-h").stdout.split()
    )


def test_same_registry_copy_mounts_under_token_auth(
    token_upstream: TokenRegistry, tailor, skopeo: Skopeo, layout: Layout
) -> None:
    reg, server = token_upstream.registry, token_upstream.server
    skopeo.login(reg)
    skopeo.push(layout, "multi", f"{reg.host}/team/app:multi")
    start = len(server.calls)
    env = {**SRC_ENV, "TAILOR_DEST_PASSWORD": UPSTREAM_PASSWORD}
    run = tailor(
        *copy_args(f"{reg.host}/team/app:multi", f"{reg.host}/other/app:v1", reg.host, server.host),
        "--dest-username",
        UPSTREAM_USER,
        env=env,
    )
    assert run.returncode == 0, run.stderr
    assert "mounted 8" in run.stderr
    # The mount asked for push on the target and pull on the source in one token.
    scopes = [sorted(c.scopes) for c in server.calls[start:]]
    assert ["repository:other/app:pull,push", "repository:team/app:pull"] in scopes
    assert sha(skopeo.raw(f"{reg.host}/other/app:v1")) == run.stdout.strip().split("@")[1]


def test_json_nested_too_deep_is_one_line(tailor, tmp_path: Path) -> None:
    """Python's JSON reader gives up on nesting thousands deep with RecursionError, which
    is no ValueError: an auth file (or a manifest, a referrers page, a helper's answer)
    built that way is one line, not a traceback (the review found it)."""
    auth = tmp_path / "deep-auth.json"
    auth.write_text("[" * 100_000 + "]" * 100_000)
    run = tailor("copy", "a.example/b:1", "x.example/y:1", env={"REGISTRY_AUTH_FILE": str(auth)})
    assert run.returncode == 1, run.stderr
    assert run.stderr.strip().splitlines() == [
        "tailor: error: a document is nested too deeply to read"
    ]
