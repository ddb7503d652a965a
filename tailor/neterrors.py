"""What went wrong reaching a host, in words a user can act on, and whether trying again
can help. Pure (it reads exceptions; it sends nothing).

``requests`` wraps the cause several layers deep (a ``ConnectionError`` holding urllib3's
``MaxRetryError`` holding a ``NewConnectionError`` caused by ``ConnectionRefusedError``);
:func:`classify` walks the chain and names the first cause it knows:

- the name does not resolve: not retried (asking DNS again gives the same answer; a
  temporary failure, EAI_AGAIN, is retried);
- the connection is refused, reset, or the host or network unreachable: retried (a
  registry restarting, a network blip);
- the connection or the answer timed out: retried;
- TLS fails: not retried; a plain-HTTP server on the other end is told from a
  certificate that is not trusted, and only the former suggests --insecure-registry.
"""

from __future__ import annotations

import errno
import http.client
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass

import requests
import urllib3.exceptions

__all__ = ["Failure", "classify"]


@dataclass(frozen=True)
class Failure:
    """``what`` failed, in a few words (no host: the caller says which); ``transient``:
    whether another try may go differently."""

    what: str
    transient: bool
    tls: bool = False


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and every exception inside it: causes, contexts, urllib3's ``reason`` and
    exceptions passed as arguments (requests wraps that way), each once."""
    seen: set[int] = set()
    todo: list[BaseException] = [exc]
    while todo:
        current = todo.pop(0)
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        inner = [getattr(current, "reason", None), current.__cause__, current.__context__]
        inner += list(current.args)
        todo += [e for e in inner if isinstance(e, BaseException)]


_PLAIN_HTTP = ("WRONG_VERSION_NUMBER", "record layer failure", "packet length too long")
_UNREACHABLE = {
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ECONNRESET: "connection reset",
    errno.ECONNREFUSED: "connection refused",
    errno.ECONNABORTED: "connection aborted",
}


def _tls(exc: BaseException) -> Failure:
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = str(exc.verify_message or "certificate verify failed")
        return Failure(
            f"TLS handshake failed: its certificate is not trusted ({reason})", False, tls=True
        )
    if any(marker in text for marker in _PLAIN_HTTP):
        return Failure(
            "TLS handshake failed: it answers in plain HTTP (a plain-HTTP registry needs"
            " --insecure-registry)",
            False,
            tls=True,
        )
    why = getattr(exc, "reason", None) or type(exc).__name__
    return Failure(f"TLS handshake failed ({why})", False, tls=True)


def classify(exc: BaseException) -> Failure:
    """The first cause in ``exc``'s chain that says what happened."""
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return _tls(cause)
    for cause in causes:
        if isinstance(cause, socket.gaierror):
            if cause.errno == socket.EAI_AGAIN:
                return Failure("its name could not be looked up (a temporary DNS failure)", True)
            return Failure("name not found (DNS)", False)
        if isinstance(cause, urllib3.exceptions.NameResolutionError):
            return Failure("name not found (DNS)", False)
    for cause in causes:
        if isinstance(cause, OSError) and cause.errno in _UNREACHABLE:
            return Failure(_UNREACHABLE[cause.errno], True)
    for cause in causes:
        if isinstance(cause, urllib3.exceptions.NewConnectionError):
            continue  # urllib3 makes it a ConnectTimeoutError whatever its cause
        if isinstance(
            cause, requests.exceptions.ConnectTimeout | urllib3.exceptions.ConnectTimeoutError
        ):
            return Failure("timed out connecting", True)
        if isinstance(cause, requests.exceptions.ReadTimeout | urllib3.exceptions.ReadTimeoutError):
            return Failure("timed out waiting for an answer", True)
    for cause in causes:
        if isinstance(cause, http.client.RemoteDisconnected):
            return Failure("the connection closed before an answer", True)
    for cause in causes:
        if isinstance(cause, requests.exceptions.SSLError):
            return _tls(cause)
        if isinstance(
            cause, requests.exceptions.ChunkedEncodingError | urllib3.exceptions.ProtocolError
        ):
            return Failure("the connection closed in the middle of an answer", True)
        if isinstance(cause, TimeoutError | socket.timeout):
            return Failure("timed out", True)
    return Failure(type(exc).__name__, True)
