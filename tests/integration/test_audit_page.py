"""The /audit page in a real headless Chromium (Debian's), driven by Playwright."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from playwright.sync_api import Browser

from broker.audit import CATALOG
from tailor.assertion import load_client_key
from tailor.broker_client import BrokerClient, BrokerError
from tests.support.broker_api import staging_token_body
from tests.support.brokerproc import BrokerProcess, broker_cli, broker_env, provision, start_broker
from tests.support.clients import Clients
from tests.support.credentials import PASSWORD

pytestmark = pytest.mark.slow  # a `broker serve` behind every page

SCREENSHOT = os.environ.get("AUDIT_SCREENSHOT")  # set to write docs/audit-page.png


@pytest.fixture
def live(tmp_path: Path, clients: Clients) -> Iterator[tuple[BrokerProcess, dict[str, str]]]:
    env = broker_env(tmp_path, f"sqlite:///{tmp_path / 'broker.sqlite'}", "unused")
    keys = provision(env, tmp_path, clients.all())
    broker = start_broker(env, tmp_path / "broker.log", self_audience=True)
    env["BROKER_PUBLIC_URL"] = broker.url
    cc = BrokerClient(broker.url, load_client_key(clients.cc.name, keys[clients.cc.name]))
    tailor = BrokerClient(
        broker.url, load_client_key(clients.tailor.name, keys[clients.tailor.name])
    )
    intruder = BrokerClient(
        broker.url, load_client_key(clients.tailor2.name, keys[clients.tailor2.name])
    )
    for n, image in enumerate(
        ["registry.example.com/team/web:1", "registry.example.com/team/api:7"]
    ):
        body = staging_token_body(app_guid=f"app-{n}", staging_guid=f"stg-{n}", image=image)
        token = cc.mint(**body)["token"]
        with pytest.raises(BrokerError):
            intruder.redeem(token)  # refused: not the bound tailor
        tailor.redeem(token)
        tailor.complete(f"stg-{n}", succeeded=n == 0, error=None if n == 0 else "upstream 404")
    yield broker, env
    broker.stop()


def login_link(env: dict[str, str]) -> str:
    out = broker_cli(env, "audit", "login", "--client", "auditor")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_auditor_page(
    browser: Browser, live: tuple[BrokerProcess, dict[str, str]], clients: Clients
) -> None:
    broker, env = live
    page = browser.new_page(viewport={"width": 1400, "height": 900})
    page.goto(login_link(env))
    assert page.url.endswith("/audit")
    assert page.locator("#status").inner_text().startswith("Log intact: 17/17 events valid")
    assert page.locator("#verified").inner_text().startswith("verified in full at ")
    # The newest checkpoint, as anyone may fetch it: the same size and root.
    note = requests.get(f"{broker.url}/v1/audit/checkpoint", timeout=10).text.split("\n")
    shown = page.locator("#checkpoint").inner_text()
    assert note[1] == "17" and f"Newest checkpoint: 17 events, root {note[2]}" in shown
    assert page.locator("#events tbody tr").count() == 17
    assert PASSWORD not in page.content()

    # The filter offers every kind of event the catalog has (registry.token and
    # prune.deleted were once missing from a list of its own).
    options = page.locator("select[name=event] option").all_inner_texts()
    assert options == ["any", *CATALOG]
    page.select_option("select[name=event]", "token.refused")
    page.click("#filters button[type=submit]")
    rows = page.locator("#events tbody tr")
    assert rows.count() == 2
    assert all("not the bound tailor" in rows.nth(i).inner_text() for i in range(2))

    page.click("#events a:has-text('stg-1')")
    timeline = page.locator("#timeline li")
    steps = [timeline.nth(i).inner_text() for i in range(timeline.count())]
    assert steps == [
        "minted (cloud-controller)",
        "refused: not the bound tailor (tailor-2)",
        "redeemed (tailor-1)",
        "password released (tailor-1)",
        "failed (tailor-1)",
        "credentials purged (tailor-1)",
    ]
    if SCREENSHOT:
        page.goto(f"{broker.url}/audit?staging=stg-0")
        page.screenshot(path=SCREENSHOT, full_page=True)
    page.close()


def test_nobody_else_sees_it(
    browser: Browser, live: tuple[BrokerProcess, dict[str, str]], clients: Clients
) -> None:
    broker, env = live
    page = browser.new_page()
    answer = page.goto(f"{broker.url}/audit")
    assert answer is not None and answer.status == 401
    assert page.locator("#events").count() == 0 and page.locator("input[name=assertion]").count()

    link = login_link(env)
    page.goto(link)
    assert page.locator("#events").count() == 1
    other = browser.new_page()
    again = other.goto(link)  # the link is single-use
    assert again is not None and again.status == 401 and "used already" in other.content()
    # The link is a credential while unused: the access log keeps only its path.
    log = broker.log.read_text()
    assert "/audit/session" in log and link.split("ticket=")[1] not in log

    # A cc client's assertion does not open it; an auditor's does.
    login = browser.new_page()
    login.goto(f"{broker.url}/audit")
    login.fill("input[name=assertion]", clients.cc.assertion(broker.url))
    login.click("form button")
    assert "not an auditor" in login.content() and login.locator("#events").count() == 0
    login.fill("input[name=assertion]", clients.auditor.assertion(broker.url))
    login.click("form button")
    assert login.locator("#events tbody tr").count() == 17
    # A forged session cookie is refused.
    forged = browser.new_context()
    forged.add_cookies(
        [{"name": "stager_audit", "value": "eyJjIjoiYXVkaXRvciJ9.bm9wZQ", "url": broker.url}]
    )
    p2 = forged.new_page()
    answer = p2.goto(f"{broker.url}/audit")
    assert answer is not None and answer.status == 401
    forged.close()
