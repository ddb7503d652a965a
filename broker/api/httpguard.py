"""The HTTP/1.1 connection ``broker serve`` runs: uvicorn's httptools protocol with a cap on
the request head and deadlines for receiving the head and the body.

uvicorn by itself closes only an idle kept-alive connection (``timeout_keep_alive``, and not
even that once the client sends a byte): a client that sends nothing, or its head or its
body a byte at a time, holds a connection (and a file descriptor) for ever, and httptools
buffers a head of any size. Here, on every connection:

- the request head (request line and headers) is at most ``max_header_bytes``: the bytes
  read while a head is unfinished are counted as they arrive, and past the cap the client
  gets 431 and the connection is closed. The count is exact to within one network read (a
  head that begins in the read that finished the request before it is counted from the next
  read on), so no more than the cap and one read of a head is ever buffered;
- the head must have arrived ``header_seconds`` after the connection was made, or after the
  first byte of it on a connection kept alive (or behind a pipelined request);
- the body must have arrived ``body_seconds`` after its head.

A deadline missed (or the cap passed) is a 408 (431) and the close; the close alone where the
answer would break into another (one begun, or pipelined requests still to answer) or
follow one already given to the same request (the app answered early and the client goes on
sending its body). A warning is logged with the client's address. No deadline runs while a
kept-alive connection is idle (``timeout_keep_alive`` does that), and one that passes while
the server itself has stopped reading the connection (flow control: a body read ahead of
the app, requests pipelined behind one the app works on) starts again.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from broker.settings import Settings

__all__ = ["GuardedHttpToolsProtocol", "guarded_protocol"]

log = logging.getLogger("broker.http")

Phase = Literal["head", "body"]

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class _OneWritePerTurn:
    """A request cycle's transport: what the cycle writes in one turn of the event loop
    goes out in one write. uvicorn writes a response's head and its body apart, two
    writes, so two TCP segments and two wake-ups of the reader for every small answer;
    held until the end of the turn (the body follows its head in the same one), they
    are one. Everything else is the transport's own; closing sends what is held first."""

    HOLD = 64 * 1024
    """Bytes held at most: a body written in large parts in one turn goes out as it comes."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._size = 0

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._send)
        self._held.append(data)
        self._size += len(data)
        if self._size >= self.HOLD:
            self._send()

    def _send(self) -> None:
        data, self._held, self._size = b"".join(self._held), [], 0
        if data and not self._transport.is_closing():
            self._transport.write(data)

    def close(self) -> None:
        self._send()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """:class:`HttpToolsProtocol` with the cap and the deadlines of the module's docstring;
    they are class attributes (see :func:`guarded_protocol`).

    httptools' callbacks move the connection between phases (a head, a body, neither); a
    phase's deadline is armed at the end of the read it began in, so a request received
    whole in one read (the usual case) arms none."""

    max_header_bytes: ClassVar[int] = 16 * 1024
    header_seconds: ClassVar[float] = 10.0
    body_seconds: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None  # the current phase's
        self._head_bytes = 0  # read of the unfinished head so far
        self._ended_in_read = False  # a request was received whole in the current read

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("head")
        self._arm()

    def data_received(self, data: bytes) -> None:
        if self._phase is None and (self.cycle is None or self.cycle.response_complete):
            self._enter("head")  # the first byte after an idle keep-alive
        self._ended_in_read = False
        super().data_received(data)
        if self._phase is None or self.transport.is_closing():
            return
        if self._phase == "head" and not self._ended_in_read:
            # The whole read is this head's (a head begun after a request that ended in this
            # same read is counted from the next read on).
            self._head_bytes += len(data)
            if self._head_bytes > self.max_header_bytes:
                self._refuse("head", _TOO_LARGE, "request %s over the size limit")
                return
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    # httptools' callbacks

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_bytes = 0
        self._enter("head")  # kept alive (after blank lines) or pipelined behind a request

    def on_headers_complete(self) -> None:
        self._enter("body")
        super().on_headers_complete()
        self.cycle.transport = _OneWritePerTurn(self.transport, self.loop)  # type: ignore[assignment]

    def on_message_complete(self) -> None:
        self._ended_in_read = True
        self._enter(None)
        super().on_message_complete()

    def handle_websocket_upgrade(self) -> None:
        self._enter(None)  # the connection is the WebSocket protocol's from here on
        super().handle_websocket_upgrade()

    # the deadlines

    def _enter(self, phase: Phase | None) -> None:
        """Move to ``phase``; the deadline of the one left, if armed, is dropped."""
        if phase == self._phase:
            return  # a deadline runs from the start of its phase, not from the last byte
        self._phase = phase
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _arm(self) -> None:
        if self._phase is not None and self._deadline is None:
            seconds = self.header_seconds if self._phase == "head" else self.body_seconds
            self._deadline = self.loop.call_later(seconds, self._expired, self._phase)

    def _expired(self, phase: Phase) -> None:
        self._deadline = None
        if self.transport.is_closing():
            return
        if self.flow.read_paused:
            self._arm()  # the client is not the one late: we have not been reading
            return
        self._refuse(phase, _TIMEOUT, "request %s not received in time")

    def _refuse(self, phase: Phase, answer: bytes, why: str) -> None:
        """Log ``why`` (of ``phase``), send ``answer`` unless an answer to the request is under
        way or given, and close."""
        self._enter(None)
        client = self.client[0] if self.client else None
        log.warning(why, phase, extra={"client": client})
        cycle = self.cycle  # a head's request has no cycle yet: this is the one before it
        if phase == "head":
            free = (cycle is None or cycle.response_complete) and not self.pipeline
        else:
            free = cycle is None or not cycle.response_started
        if free:
            self.transport.write(answer)
        self.transport.close()


def guarded_protocol(settings: Settings) -> type[GuardedHttpToolsProtocol]:
    """The protocol class for uvicorn's ``http``, with the cap and deadlines of ``settings``."""

    class Guarded(GuardedHttpToolsProtocol):
        max_header_bytes = settings.max_header_bytes
        header_seconds = settings.header_timeout_seconds
        body_seconds = settings.body_timeout_seconds

    return Guarded
