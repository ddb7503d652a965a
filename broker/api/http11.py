"""The HTTP/1.1 connection ``broker serve`` runs: uvicorn's h11 protocol with a cap on the
request head and deadlines for receiving the head and the body.

uvicorn by itself closes only an idle kept-alive connection (``timeout_keep_alive``): a
client that sends nothing, or its head or its body a byte at a time, holds a connection (and
a file descriptor) for ever, and with httptools (uvicorn's choice when it is installed) a
head of any size is buffered whole. Here, on every connection:

- the request head (request line and headers) is at most ``max_header_bytes``: h11 refuses
  a longer one as it arrives (``h11_max_incomplete_event_size``); the client gets 431 and the
  connection is closed;
- the head must have arrived ``header_seconds`` after the connection was made, or after its
  first byte on a connection kept alive;
- the body must have arrived ``body_seconds`` after its head.

A deadline missed is a 408 and the close, or the close alone when an answer has begun (the
app answered early and the client goes on sending). No deadline runs while the app works on
a request, nor while a kept-alive connection is idle (``timeout_keep_alive`` does that).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar, Literal

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from broker.settings import Settings

__all__ = ["LimitedH11Protocol", "limited_protocol"]

log = logging.getLogger("broker.http")

Phase = Literal["head", "body"]

_TIMEOUT = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
    b"content-length: 0\r\nconnection: close\r\n\r\n"
)


class LimitedH11Protocol(H11Protocol):
    """:class:`H11Protocol` with the deadlines of the module's docstring. The head cap is
    uvicorn's ``h11_max_incomplete_event_size``; the deadlines are class attributes (see
    :func:`limited_protocol`)."""

    header_seconds: ClassVar[float] = 10.0
    body_seconds: ClassVar[float] = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._phase: Phase | None = None
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._enter("head")

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(fresh=True)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow(fresh=False)

    def connection_lost(self, exc: Exception | None) -> None:
        self._enter(None)
        super().connection_lost(exc)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request; 431 when it was for a head over the cap."""
        limit = self.config.h11_max_incomplete_event_size
        if limit is not None and len(self.conn.trailing_data[0]) > limit:
            self.transport.write(_TOO_LARGE)
            self.transport.close()
            return
        super().send_400_response(msg)

    def _follow(self, *, fresh: bool) -> None:
        """The deadline that runs now, from what h11 has seen of the client's request:
        none yet (and some bytes just came, or the connection is new): the head's; the head
        and part of the body: the body's; the whole request, or an error: none."""
        state = self.conn.their_state
        if state is h11.SEND_BODY:
            self._enter("body")
        elif state is h11.IDLE and (fresh or self._phase == "head"):
            self._enter("head")
        else:
            self._enter(None)

    def _enter(self, phase: Phase | None) -> None:
        if phase == self._phase:
            return  # a deadline runs from the start of its phase, not from the last byte
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._phase = phase
        if phase is not None:
            seconds = self.header_seconds if phase == "head" else self.body_seconds
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

    def _expired(self, phase: Phase) -> None:
        self._deadline = None
        self._phase = None
        if self.transport.is_closing():
            return
        client = self.client[0] if self.client else None
        log.warning("request %s not received in time", phase, extra={"client": client})
        # An answer already begun (early, while the body still trickles in) is not broken
        # into; otherwise the client learns why.
        if phase == "head" or not (self.cycle and self.cycle.response_started):
            self.transport.write(_TIMEOUT)
        self.transport.close()


def limited_protocol(settings: Settings) -> type[LimitedH11Protocol]:
    """The protocol class for uvicorn's ``http``, with the deadlines of ``settings``."""

    class Limited(LimitedH11Protocol):
        header_seconds = settings.header_timeout_seconds
        body_seconds = settings.body_timeout_seconds

    return Limited
