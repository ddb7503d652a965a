"""The Tailor's broker client: where it agrees to send what a redemption carries."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from tailor.assertion import ClientKey
from tailor.broker_client import BrokerClient, BrokerError

KEY = ClientKey("tailor", ed25519.Ed25519PrivateKey.generate())


@pytest.mark.parametrize(
    "url",
    [
        "https://broker.platform.internal",
        "https://10.0.0.5:8443/",
        "http://127.0.0.1:8080",
        "http://127.9.9.9",
        "http://[::1]:8080",
        "http://localhost:8080",
    ],
)
def test_https_or_loopback_is_accepted(url: str) -> None:
    assert BrokerClient(url, KEY).url == url.rstrip("/")


@pytest.mark.parametrize(
    "url", ["http://broker.platform.internal", "http://10.0.0.5:8080", "http://[fd00::1]"]
)
def test_plain_http_across_a_network_needs_the_operators_say_so(url: str) -> None:
    with pytest.raises(BrokerError, match="refusing plain HTTP to the broker"):
        BrokerClient(url, KEY)
    assert BrokerClient(url, KEY, allow_http=True).url == url


@pytest.mark.parametrize("url", ["ftp://broker", "broker:8080", "https://", "http:///x"])
def test_not_a_broker_url(url: str) -> None:
    with pytest.raises(BrokerError, match="broker URL must be"):
        BrokerClient(url, KEY)
