"""broker.prune's decisions, pure: what is kept, what goes, how many bytes that frees."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from broker.errors import PruneRefused
from broker.prune import RepoState, parse_duration, plan, read_lrps
from broker.store.model import StagingRow

NOW = time.time()
D = {n: "sha256:" + n * 64 for n in "abcdef"}
ROW = StagingRow(
    "s1",
    "app",
    None,
    None,
    "img",
    "reg",
    "u",
    "t",
    "cc",
    "tid",
    "fp",
    "completed",
    int(NOW) - 10 * 86400,
    0,
    None,
    None,
    None,
)


def staging(guid: str, **kw: object) -> StagingRow:
    return replace(ROW, staging_guid=guid, **kw)  # type: ignore[arg-type]


def test_an_index_goes_with_its_platform_manifests_and_bytes_are_unique() -> None:
    states = [
        RepoState(
            "staging/app/s1",
            tags={"s1": D["a"]},
            blobs={D["a"]: {"sha256:l1": 100, "sha256:shared": 50}},
            children={D["a"]: [D["b"], D["c"]]},
        ),
        RepoState(
            "staging/app/s2",
            tags={"s2": D["d"]},
            blobs={D["d"]: {"sha256:shared": 50}},
            children={D["d"]: []},
        ),
    ]
    p = plan(
        states,
        registry="reg:5000",
        lrp_images=[f"reg:5000/staging/app/s2@{D['d']}"],
        stagings=[staging("s1"), staging("s2")],
        prefix="staging",
        grace=3600,
        now=NOW,
    )
    assert p.delete == [
        ("staging/app/s1", D["a"], ["s1"]),
        ("staging/app/s1", D["b"], []),
        ("staging/app/s1", D["c"], []),
    ]
    assert p.freed_bytes == 100  # the shared blob stays: a kept image uses it
    assert p.kept == {"staging/app/s2": "a desired LRP runs it"}


def test_what_is_always_kept() -> None:
    states = [
        RepoState(f"staging/app/{g}", tags={g: D["e"]}, blobs={D["e"]: {}})
        for g in ("open", "young", "tagged")
    ] + [RepoState("elsewhere/thing", tags={"v1": D["f"]}, blobs={D["f"]: {}})]
    p = plan(
        states,
        registry="reg:5000",
        lrp_images=["reg:5000/staging/app/tagged:tagged", "not a ref", "other:5000/x@" + D["a"]],
        stagings=[
            staging("open", state="redeemed"),
            staging("young", created_at=int(NOW)),
            staging("tagged"),
        ],
        prefix="staging",
        grace=3600,
        now=NOW,
    )
    assert p.delete == []
    assert p.kept == {
        "staging/app/open": "staging still open",
        "staging/app/young": "younger than the grace period",
        "staging/app/tagged": "a desired LRP runs it",
        "elsewhere/thing": "no staging record: not made by this broker",
    }


def test_durations_and_list_checks() -> None:
    assert [parse_duration(x) for x in ("0s", "90s", "30m", "24h", "7d")] == [
        0,
        90,
        1800,
        86400,
        604800,
    ]
    with pytest.raises(PruneRefused, match="invalid duration"):
        parse_duration("1w")
    ok = {
        "domains": {"cf-apps": {"fresh": True}},
        "desired_lrps": [{"domain": "cf-apps", "image": "a"}, {"domain": "other", "image": "b"}],
    }
    assert read_lrps(ok, "cf-apps") == ["a"]
