"""Catalog, tags and delete against real Distribution, and paging against hostile servers."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from urllib.parse import urlsplit

import pytest

from tailor.authn import ANONYMOUS
from tailor.errors import ConfigError, NotFound, ProtocolError
from tailor.manifest import OCI_MANIFEST, parse_manifest
from tailor.registry import Repository, _next_link, _paged, catalog
from tailor.retry import RetryPolicy
from tailor.transport import InsecureHosts, Transport
from tests.support.httpserver import reply, serve
from tests.support.images import OCI_CONFIG, sha256
from tests.support.proxy import Proxy
from tests.support.registry import Registry

NO_WAIT = RetryPolicy(attempts=2, base=0.001, cap=0.002)


def transport(host: str) -> Transport:
    return Transport(host, ANONYMOUS, InsecureHosts([host]), policy=NO_WAIT)


def put_image(repo: Repository, tag: str, seed: int) -> str:
    """A tiny image (a config, no layers) pushed with the library itself."""
    config = json.dumps({"architecture": "amd64", "os": "linux", "seed": seed}).encode()
    digest = sha256(config)
    if not repo.has_blob(digest):
        repo.finish_upload(repo.start_upload(), digest, iter([config]))
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": digest, "size": len(config)},
        "layers": [],
    }
    return repo.put_manifest(tag, parse_manifest(json.dumps(manifest).encode(), OCI_MANIFEST))


@pytest.fixture
def proxied(internal: Registry) -> Iterator[Proxy]:
    proxy = Proxy(internal.host)
    yield proxy
    proxy.stop()


def test_catalog_and_tags_follow_the_pages_of_a_real_registry(proxied: Proxy) -> None:
    t = transport(proxied.host)
    names = [f"team/app{i}" for i in range(5)]
    for i, name in enumerate(names):
        put_image(Repository(t, name, push=True), "v1", i)
    tags = [f"t{i:02d}" for i in range(7)]
    many = Repository(t, "team/app0", push=True)
    for tag in tags:
        put_image(many, tag, 0)

    assert catalog(t, page_size=2) == names
    pages = [p for m, p, _ in proxied.requests if m == "GET" and "/_catalog" in p]
    assert len(pages) >= 3 and all("n=2" in p for p in pages)
    # One page, when it holds everything.
    assert catalog(t) == names
    # Distribution 2.8 answers every tag on one page, in no order, whatever n says
    # (tag pages came with 3.0): the pages themselves are tested with a little server below.
    got = Repository(t, "team/app0").tags(page_size=3)
    assert sorted(got) == sorted([*tags, "v1"]) and len(got) == len(tags) + 1
    with pytest.raises(NotFound):
        Repository(t, "team/nothing").tags()
    with pytest.raises(ConfigError):
        catalog(t, page_size=0)


def test_delete_manifest_then_it_is_gone(internal: Registry) -> None:
    t = transport(internal.host)
    repo = Repository(t, "team/gone", push=True)
    digest = put_image(repo, "v1", 1)
    kept = put_image(repo, "v2", 2)
    repo.delete_manifest(digest)
    with pytest.raises(NotFound):
        repo.get_manifest(digest)
    with pytest.raises(NotFound):
        repo.get_manifest("v1")  # its tag went with it
    assert repo.get_manifest("v2").digest == kept
    assert repo.tags() == ["v2"]
    repo.delete_manifest(digest)  # already gone: fine
    repo.delete_manifest(kept)
    assert repo.tags() == []
    # A repository with blobs but no manifest (a copy that failed before its manifest):
    # the catalog names it, its tag list is 404.
    blobs_only = Repository(t, "team/blobs", push=True)
    blobs_only.finish_upload(blobs_only.start_upload(), sha256(b"x"), iter([b"x"]))
    assert catalog(t) == ["team/blobs", "team/gone"]
    with pytest.raises(NotFound):
        blobs_only.tags()


def listing(pages: dict[str, tuple[list[str], str | None]]):
    """A little registry whose catalog pages are ``path?query -> (names, Link)``."""
    seen: list[str] = []

    def handler(h: BaseHTTPRequestHandler) -> None:
        seen.append(h.path)
        if h.path == "/v2/":
            reply(h, 200, b"{}")
            return
        names, link = pages.get(h.path, ([], None))
        headers = {"Link": link} if link else {}
        reply(h, 200, json.dumps({"repositories": names}).encode(), headers)

    return handler, seen


def test_tags_follow_pages() -> None:
    pages = {
        "/v2/team/app/tags/list?n=2": (
            ["a", "b"],
            '</v2/team/app/tags/list?last=b&n=2>; rel="next"',
        ),
        "/v2/team/app/tags/list?last=b&n=2": (["c", "d"], '<?last=d&n=2>; rel="next"'),
        "/v2/team/app/tags/list?last=d&n=2": (["e"], None),
    }

    def handler(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/v2/":
            reply(h, 200, b"{}")
            return
        names, link = pages[h.path]
        reply(
            h,
            200,
            json.dumps({"name": "team/app", "tags": names}).encode(),
            {"Link": link} if link else {},
        )

    with serve(handler) as host:
        assert Repository(transport(host), "team/app").tags(page_size=2) == list("abcde")


@pytest.mark.timeout(30)
def test_a_link_loop_stops_with_an_error_not_a_hang() -> None:
    handler, seen = listing(
        {
            "/v2/_catalog?n=100": (["a"], '</v2/_catalog?last=a&n=100>; rel="next"'),
            "/v2/_catalog?last=a&n=100": (["b"], '</v2/_catalog?n=100>; rel="next"'),
        }
    )
    with serve(handler) as host, pytest.raises(ProtocolError, match="pages loop"):
        catalog(transport(host))
    assert seen.count("/v2/_catalog?n=100") == 1


@pytest.mark.slow  # 50 pages, each a new connection: about 2 s
@pytest.mark.timeout(30)
def test_endless_new_pages_stop_at_the_cap() -> None:
    def handler(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/v2/":
            reply(h, 200, b"{}")
            return
        n = int(h.path.rsplit("last=", 1)[-1]) if "last=" in h.path else 0
        link = f'</v2/_catalog?n=1&last={n + 1}>; rel="next"'
        reply(h, 200, json.dumps({"repositories": [f"r{n}"]}).encode(), {"Link": link})

    with serve(handler) as host, pytest.raises(ProtocolError, match="more than 50 pages"):
        _paged(
            transport(host),
            "/v2/_catalog",
            "repositories",
            page_size=1,
            scopes=[],
            what="the catalog",
            max_pages=50,
        )


def test_absolute_links_on_the_registry_are_followed_and_others_refused() -> None:
    with serve(lambda h: None) as elsewhere:
        pages: dict[str, tuple[list[str], str | None]] = {}
        handler, _ = listing(pages)
        with serve(handler) as host:
            pages["/v2/_catalog?n=100"] = (["a"], f"<http://{host}/v2/_catalog?last=a>; rel=next")
            pages["/v2/_catalog?last=a"] = (["b"], None)
            assert catalog(transport(host)) == ["a", "b"]
            pages["/v2/_catalog?last=a"] = (["b"], f'<http://{elsewhere}/v2/x>; rel="next"')
            with pytest.raises(ProtocolError, match="another host"):
                catalog(transport(host))


@pytest.mark.parametrize(
    "body", [b"not json", b"[1]", b'{"repositories": "a"}', b'{"repositories": [1]}']
)
def test_an_unreadable_page_is_a_protocol_error(body: bytes) -> None:
    def handler(h: BaseHTTPRequestHandler) -> None:
        reply(h, 200, b"{}" if h.path == "/v2/" else body)

    with serve(handler) as host, pytest.raises(ProtocolError, match="unreadable page"):
        catalog(transport(host))


@pytest.mark.parametrize(
    ("header", "target"),
    [
        ('</v2/_catalog?last=a&n=2>; rel="next"', "/v2/_catalog?last=a&n=2"),
        ("</v2/x>; rel=next", "/v2/x"),
        ('</p>; rel="prev", </n>; rel="next"', "/n"),
        ('</n>; type="text/html"; REL="Next"', "/n"),
        ('</n>; rel="prefetch next"', "/n"),
        ('</p>; rel="prev"', None),
        ("", None),
        (None, None),
        ("garbage", None),
    ],
)
def test_link_header_parsing(header: str | None, target: str | None) -> None:
    assert _next_link(header) == target


def test_page_urls_resolve_against_the_request() -> None:
    # Relative to the page that named it, as a browser would (RFC 3986).
    pages: dict[str, tuple[list[str], str | None]] = {
        "/v2/_catalog?n=100": (["a"], '<_catalog?last=a>; rel="next"'),
        "/v2/_catalog?last=a": (["b"], None),
    }
    handler, seen = listing(pages)
    with serve(handler) as host:
        assert catalog(transport(host)) == ["a", "b"]
    assert [urlsplit(p).path for p in seen[-2:]] == ["/v2/_catalog"] * 2
