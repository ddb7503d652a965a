"""The desired-LRP list decides deletions: how `broker prune` fetches it (issue 11.5).

Seen: `--desired-lrps URL` followed cross-host redirects, honoured `http_proxy`
and took plain HTTP. Now it goes through the outbound guard (tailor/outbound.py).
"""

from __future__ import annotations

import json
from http.server import BaseHTTPRequestHandler

import pytest

from broker.errors import PruneRefused
from broker.prune import load_lrps
from tests.support.httpserver import reply, serve

LIST = {"domains": {"cf-apps": {"fresh": True}}, "desired_lrps": [{"image": "r/x@sha256:1"}]}
OTHER = {"domains": {"cf-apps": {"fresh": True}}, "desired_lrps": [{"image": "r/y@sha256:2"}]}


class Recorder:
    def __init__(self, body: object) -> None:
        self.body = json.dumps(body).encode()
        self.hits: list[str] = []

    def __call__(self, h: BaseHTTPRequestHandler) -> None:
        self.hits.append(h.path)
        reply(h, 200, self.body, {"Content-Type": "application/json"})


def test_plain_http_only_when_allowed() -> None:
    bbs = Recorder(LIST)
    with serve(bbs) as host:
        with pytest.raises(PruneRefused, match=r"plain HTTP to 127\.0\.0\.1 is refused"):
            load_lrps(f"http://{host}/v1/desired_lrps")
        assert bbs.hits == []
        assert load_lrps(f"http://{host}/v1/desired_lrps", allow_http=True) == LIST


def test_a_redirect_to_another_host_is_refused() -> None:
    """Another host's list could keep nothing the apps run: it is never read."""
    elsewhere = Recorder(OTHER)
    with serve(elsewhere, host="127.0.0.2") as other:

        def bbs(h: BaseHTTPRequestHandler) -> None:
            reply(h, 302, b"", {"Location": f"http://{other}/lrps"})

        with serve(bbs) as host, pytest.raises(PruneRefused, match="not a host this request"):
            load_lrps(f"http://{host}/v1/desired_lrps", allow_http=True)
    assert elsewhere.hits == []


def test_a_redirect_on_the_same_host_is_followed() -> None:
    bbs = Recorder(LIST)

    def moved(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/old":
            reply(h, 301, b"", {"Location": "/new"})
        else:
            bbs(h)

    with serve(moved) as host:
        assert load_lrps(f"http://{host}/old", allow_http=True) == LIST
    assert bbs.hits == ["/new"]


def test_the_environment_proxy_is_not_used(monkeypatch: pytest.MonkeyPatch) -> None:
    proxy = Recorder(OTHER)
    bbs = Recorder(LIST)
    with serve(proxy, host="127.0.0.3") as proxy_host, serve(bbs) as host:
        for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY"):
            monkeypatch.setenv(name, f"http://{proxy_host}")
        monkeypatch.delenv("no_proxy", raising=False)
        monkeypatch.delenv("NO_PROXY", raising=False)
        assert load_lrps(f"http://{host}/v1/desired_lrps", allow_http=True) == LIST
    assert proxy.hits == []
    assert bbs.hits == ["/v1/desired_lrps"]


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("ftp://127.0.0.1/lrps", "not an http"),
        ("https://user:secret@127.0.0.1:1/lrps", "credentials in it"),
    ],
)
def test_odd_urls_are_refused(url: str, message: str) -> None:
    with pytest.raises(PruneRefused, match=message) as caught:
        load_lrps(url)
    assert "secret" not in str(caught.value)


def test_https_that_is_not_tls_is_one_line() -> None:
    with serve(Recorder(LIST)) as host, pytest.raises(PruneRefused) as caught:
        load_lrps(f"https://{host}/lrps")
    assert str(caught.value).startswith("cannot read the desired LRPs from 127.0.0.1: ")
    assert "\n" not in str(caught.value)
