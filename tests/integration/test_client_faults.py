"""The Tailor's broker client against a real ``broker serve``: what it says when the broker
refuses its assertion."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from tailor.assertion import ClientKey
from tailor.broker_client import BrokerClient, BrokerError
from tests.support.brokerproc import BrokerProcess, broker_env, provision, start_broker
from tests.support.clients import Clients, PrivateKey

pytestmark = pytest.mark.slow


def live_broker(tmp_path: Path, clients: Clients) -> BrokerProcess:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "http://unused")
    provision(env, tmp_path, clients.all())
    return start_broker(env, tmp_path / "broker.log", self_audience=True)


class SkewedKey(ClientKey):
    """The Tailor's own key and assertions, on a clock ``offset`` seconds off."""

    def __init__(self, name: str, key: PrivateKey, offset: int) -> None:
        super().__init__(name, key)
        self.offset = offset

    def assertion(self, audience: str, now: float | None = None) -> str:
        return super().assertion(audience, (time.time() if now is None else now) + self.offset)


def test_the_tailor_says_its_assertion_was_refused_for_clock_skew(
    tmp_path: Path, clients: Clients
) -> None:
    broker = live_broker(tmp_path, clients)
    tailor = clients.tailor
    # A second may tick between signing and the broker's check: 31 s behind may read 32,
    # and 32 s ahead 31 (never 30, which would be allowed).
    for offset in (-31, 32):
        client = BrokerClient(broker.url, SkewedKey(tailor.name, tailor.key, offset))
        with pytest.raises(BrokerError) as info:
            client.redeem("not-a-token")
        side = "ahead of" if offset > 0 else "behind"
        assert re.fullmatch(
            "broker refused this client's assertion \\(the staging token\\): client "
            f"authentication failed; clock skew: the assertion was issued 3[12] s {side} the "
            "broker's clock; 30 s allowed either way",
            str(info.value),
        ), str(info.value)
        assert info.value.status == 401
    for offset in (-29, 29):  # within the skew: the assertion passes, the token does not
        client = BrokerClient(broker.url, SkewedKey(tailor.name, tailor.key, offset))
        with pytest.raises(BrokerError) as refused:
            client.redeem("not-a-token")
        assert str(refused.value) == "broker refused the staging token: staging token refused"
