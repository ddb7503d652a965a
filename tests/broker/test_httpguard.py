"""The guarded protocol's transport for a request cycle (``broker/api/httpguard.py``): what a
cycle writes in one turn of the event loop goes out as one write, up to a bound."""

from __future__ import annotations

import asyncio
import socket

from broker.api.httpguard import _OneWritePerTurn


def _waiting(sock: socket.socket) -> bytes:
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


def test_writes_of_one_turn_go_out_together_and_a_large_one_at_once() -> None:
    async def main() -> tuple[bytes, bytes, bytes]:
        ours, peer = socket.socketpair()
        peer.setblocking(False)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_connection(asyncio.Protocol, sock=ours)
        try:
            cycle = _OneWritePerTurn(transport, loop)
            cycle.write(b"head;")
            cycle.write(b"body")
            within_turn = _waiting(peer)  # held until the turn ends
            await asyncio.sleep(0)
            after_turn = _waiting(peer)
            cycle.write(b"x" * _OneWritePerTurn.HOLD)  # past the bound: sent now
            large = _waiting(peer)
            return within_turn, after_turn, large
        finally:
            transport.close()
            peer.close()

    within_turn, after_turn, large = asyncio.run(main())
    assert within_turn == b""
    assert after_turn == b"head;body"
    assert large.startswith(b"x") and len(large) > 0
