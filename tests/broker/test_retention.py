"""Retention of closed stagings (broker/service/retention.py), in-process, on SQLite and
PostgreSQL: only closed rows whose repository prune found gone are forgotten, audited."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace

import pytest
from pydantic import ValidationError

from broker.audit import events
from broker.metrics import Metrics
from broker.service.retention import BATCH
from broker.settings import Settings
from broker.store.model import StagingRow, State
from tests.support.brokerapp import Api, serve
from tests.support.clients import Clients

DAY = 86400
NOW = int(time.time())
ROW = StagingRow(
    staging_guid="s",
    app_guid="app",
    space_guid=None,
    pushed_by=None,
    image="r/i:1",
    registry="r",
    registry_username="",
    tailor="tailor-1",  # the registered tailor (tests/support/clients.py)
    cc_client="cc",
    token_id="tid",
    token_fp="hmac-sha256:x",
    state="completed",
    created_at=NOW - 50 * DAY,
    expires_at=NOW - 50 * DAY + 900,
    redeemed_at=NOW - 50 * DAY,
    closed_at=None,
    result=None,
)


def row(guid: str, state: State, closed_days_ago: float | None, **kw: object) -> StagingRow:
    closed_at = None if closed_days_ago is None else NOW - int(closed_days_ago * DAY)
    return replace(ROW, staging_guid=guid, state=state, closed_at=closed_at, **kw)  # type: ignore[arg-type]


def insert(api: Api, *rows: StagingRow, gone: Sequence[str] = ()) -> None:
    """The rows, and prune's mark on ``gone`` (set as ``broker prune --apply`` sets it)."""
    with api.store.transaction() as tx:
        for r in rows:
            assert tx.insert_staging(r)
        tx.mark_repositories_gone(list(gone), NOW - 10 * DAY)


def guids(api: Api) -> list[str]:
    with api.store.transaction(write=False) as tx:
        return sorted(s.staging_guid for s in tx.all_stagings())


def forgotten_events(api: Api) -> list[dict]:
    return [r.detail for r in api.service.audit.page(0, 10_000) if r.event == "stagings.forgotten"]


def test_closed_stagings_past_retention_whose_repository_is_gone_are_forgotten(
    api_each_store: Api,
) -> None:
    api = api_each_store
    assert api.service.retention.seconds == 30 * DAY  # the default
    insert(
        api,
        row("gone-1", "completed", 40),
        row("gone-2", "failed", 35),
        row("gone-young", "completed", 20),  # within retention
        row("redeemed-no-mark", "completed", 40),  # prune never found its repository gone
        row("never-redeemed", "expired", 40, redeemed_at=None),  # it could still have pushed
        row("open", "open", None),
        row("redeemed", "redeemed", None),
        gone=["gone-1", "gone-2", "gone-young", "open", "redeemed"],
    )
    assert api.service.retention.sweep() == 2
    assert guids(api) == ["gone-young", "never-redeemed", "open", "redeemed", "redeemed-no-mark"]
    assert forgotten_events(api) == [
        {
            "count": 2,
            "closed_from": events.timestamp(NOW - 40 * DAY),
            "closed_until": events.timestamp(NOW - 35 * DAY),
            "retention_seconds": 30 * DAY,
        }
    ]
    record = api.service.audit.page(0, 10_000)[-1]
    assert (record.event, record.client, record.staging_guid) == (
        "stagings.forgotten",
        "broker",
        None,
    )
    assert api.service.retention.sweep() == 0  # nothing more is due: no event either
    assert len(forgotten_events(api)) == 1
    counts = api.service.retention.counts()
    assert (counts.closed, counts.gone, counts.due) == (3, 1, 0)
    assert api.service.audit.verify().intact

    # Ten days on, the young one is due; the others stay for good.
    api.service.clock = lambda: time.time() + 10 * DAY + 60
    assert api.service.retention.sweep() == 1
    assert guids(api) == ["never-redeemed", "open", "redeemed", "redeemed-no-mark"]


def test_a_round_forgets_one_bounded_batch_oldest_first(api_each_store: Api) -> None:
    api = api_each_store
    many = [row(f"g{n:04}", "completed", 40 + n / 1000) for n in range(BATCH + 3)]
    insert(api, *many, gone=[r.staging_guid for r in many])
    assert api.service.retention.sweep() == BATCH
    # The oldest went first: the three left are the most recently closed.
    assert guids(api) == ["g0000", "g0001", "g0002"]
    assert api.service.retention.sweep(limit=2) == 2
    assert api.service.retention.sweep() == 1
    assert [e["count"] for e in forgotten_events(api)] == [BATCH, 2, 1]


def test_retention_off_forgets_nothing(settings: Settings, clients: Clients) -> None:
    off = settings.model_copy(update={"staging_retention": 0})
    with serve(off, clients, sweep=False) as api:
        insert(api, row("gone", "completed", 4000), gone=["gone"])
        assert api.service.retention.sweep() == 0
        assert guids(api) == ["gone"]
        assert forgotten_events(api) == []
        assert api.service.retention.counts().due == 0
        # The background job does not even run.
        assert [j.every for j in api.service.jobs() if j.name == "retention"] == [0]


def test_the_sweeper_thread_forgets(settings: Settings, clients: Clients) -> None:
    fast = settings.model_copy(update={"sweep_interval_seconds": 0.05})
    with serve(fast, clients, sweep=True) as api:
        insert(api, row("gone", "completed", 31), row("kept", "completed", 31), gone=["gone"])
        deadline = time.time() + 10
        while guids(api) != ["kept"] and time.time() < deadline:
            time.sleep(0.05)
        assert guids(api) == ["kept"]
        metrics = api.call("GET", "/metrics", None).text
        assert "stager_stagings_forgotten_total 1.0" in metrics


def test_a_staging_minted_redeemed_and_completed_is_forgotten_once_its_repository_is_gone(
    api_each_store: Api,
) -> None:
    """Through the API: its token's lookup then says "unknown staging"; its events stay."""
    api = api_each_store
    token = api.mint("stg-life").json()["token"]
    assert api.redeem(token).status_code == 200
    assert api.complete("stg-life", "succeeded").status_code == 200
    real = time.time
    api.service.clock = lambda: real() + 31 * DAY
    assert api.service.retention.sweep() == 0  # closed long ago, but prune never said
    with api.store.transaction() as tx:
        assert tx.mark_repositories_gone(["stg-life"], int(real()) + 3 * 3600) == 1
    assert api.service.retention.sweep() == 1
    assert guids(api) == []
    api.service.clock = real
    assert api.lookup(token).status_code == 400
    life = [
        (r.event, r.reason)
        for r in api.service.audit.page(0, 1000)
        if r.staging_guid == "stg-life" and r.event != "registry.token"
    ]
    assert life == [
        ("token.issued", None),
        ("token.redeemed", None),
        ("staging.completed", None),
        ("credentials.purged", None),
        ("token.refused", "unknown staging"),
    ]
    assert api.service.audit.verify().intact


@pytest.mark.parametrize(
    ("text", "seconds"), [("30d", 30 * DAY), ("12h", 12 * 3600), ("0", 0), ("off", 0), ("OFF", 0)]
)
def test_the_retention_setting_is_a_duration(text: str, seconds: int) -> None:
    assert Settings(staging_retention=text).staging_retention == seconds  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["30", "1w", "-1d", "soon", -1])
def test_a_bad_retention_is_refused(bad: object) -> None:
    with pytest.raises(ValidationError):
        Settings(staging_retention=bad)  # type: ignore[arg-type]


def test_the_forgotten_count_is_a_metric() -> None:
    metrics = Metrics()
    detail = {"count": 3, "closed_from": "a", "closed_until": "b", "retention_seconds": 1}
    metrics.on_event(events.STAGINGS_FORGOTTEN(client="broker", detail=detail))
    assert b"stager_stagings_forgotten_total 3.0" in metrics.render()
