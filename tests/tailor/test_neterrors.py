"""What the Tailor says when it cannot reach a registry: each failure made for real on
loopback (a closed port, a silent server, plain HTTP where TLS was expected, a
certificate nobody trusts, a name that does not resolve), named in words a user can act
on, and retried only when another try can go differently.

Reported: an unknown host and a refused connection both said "cannot reach H:
ConnectionError after 5 attempt(s)" after 3.5 s of retries."""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
import urllib3.exceptions

from tailor.authn import ANONYMOUS
from tailor.errors import TransportError
from tailor.neterrors import Failure, classify
from tailor.retry import RetryPolicy
from tailor.transport import Transport
from tests.support.httpserver import reply, serve
from tests.support.tls import loopback_certificate

FOUR_TRIES = RetryPolicy(attempts=4, base=0.001, cap=0.002, max_retry_after=0.01)


def _attempt(host: str, **kwargs: object) -> tuple[str, list[float]]:
    """``GET /v2/`` at ``host`` through a Transport: its error and the waits it made."""
    waits: list[float] = []
    transport = Transport(host, ANONYMOUS, policy=FOUR_TRIES, sleep=waits.append, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(TransportError) as caught:
        transport.send("GET", f"{transport.base_url}/v2/")
    return str(caught.value), waits


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _silent() -> Iterator[str]:
    """A server that takes connections and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield f"127.0.0.1:{s.getsockname()[1]}"


def _untrusted_tls(tmp_path: Path) -> ssl.SSLContext:
    """A server context with a self-signed certificate for 127.0.0.1 nobody trusts."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*loopback_certificate(tmp_path))
    return context


def test_a_name_that_does_not_resolve_is_said_and_not_retried() -> None:
    # .invalid never resolves (RFC 6761).
    error, waits = _attempt("no-such-registry.invalid")
    assert error == "cannot reach no-such-registry.invalid: name not found (DNS)"
    assert waits == []


def test_a_refused_connection_is_said_and_retried() -> None:
    host = f"127.0.0.1:{_closed_port()}"
    error, waits = _attempt(host, insecure=lambda _: True)
    assert error == f"cannot reach {host}: connection refused (4 attempts)"
    assert len(waits) == 3


def test_a_server_that_never_answers_times_out_and_is_retried() -> None:
    with _silent() as host:
        error, waits = _attempt(host, insecure=lambda _: True, timeout=(2.0, 0.2))
    assert error == f"cannot reach {host}: timed out waiting for an answer (4 attempts)"
    assert len(waits) == 3


def test_plain_http_where_tls_was_expected_says_insecure_registry() -> None:
    with serve(lambda h: reply(h, 200, b"{}")) as host:
        error, waits = _attempt(host)
    assert error == (
        f"cannot reach {host}: TLS handshake failed: it answers in plain HTTP (a plain-HTTP"
        " registry needs --insecure-registry)"
    )
    assert waits == []


def test_an_untrusted_certificate_is_said_without_suggesting_plain_http(tmp_path: Path) -> None:
    with serve(lambda h: reply(h, 200, b"{}"), tls=_untrusted_tls(tmp_path)) as host:
        error, waits = _attempt(host)
    assert error.startswith(f"cannot reach {host}: TLS handshake failed: its certificate is not")
    assert "self-signed certificate" in error and "--insecure-registry" not in error
    assert waits == []


def test_a_connect_timeout_is_named() -> None:
    """The one failure loopback cannot make (a SYN nobody answers), as requests raises it."""
    inner = urllib3.exceptions.ConnectTimeoutError(None, "timed out")
    exc = requests.exceptions.ConnectTimeout(urllib3.exceptions.MaxRetryError(None, "/", inner))  # type: ignore[arg-type]
    assert classify(exc) == Failure("timed out connecting", True)
