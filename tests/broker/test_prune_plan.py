"""broker.prune's decisions, pure: what is kept, what goes, how many bytes that frees."""

from __future__ import annotations

import time
from dataclasses import replace

import pytest

from broker.errors import PruneRefused
from broker.prune import (
    SETTLED,
    RepoState,
    Target,
    parse_duration,
    plan,
    read_lrps,
    sort_lrps,
    unnamed,
)
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
        target=Target.of("reg:5000"),
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
    assert p.kept == {}
    assert p.kept_images == [
        ("staging/app/s2", D["d"], f"a desired LRP runs it: reg:5000/staging/app/s2@{D['d']}")
    ]


def test_a_kept_image_keeps_its_signatures_and_attestations() -> None:
    """A staged image's referrers travel with it (the sha256-HEX referrers tag, cosign's
    .sig/.att/.sbom tags, a referrer's own referrers): pruning around an image an LRP
    runs keeps them all, or a cosign verification against the internal registry would
    fail after the first prune. An image no LRP runs loses them with it."""
    hexa, hexb = D["a"].split(":")[1], D["b"].split(":")[1]
    sbom, sig, sbom_sig, other = (
        "sha256:" + "1" * 64,
        "sha256:" + "2" * 64,
        "sha256:" + "3" * 64,
        "sha256:" + "4" * 64,
    )
    attached = {
        "v1": D["a"],  # the image an LRP runs
        f"sha256-{hexa}": D["c"],  # its referrers index: the SBOM and the signature
        f"sha256-{hexa}.sig": D["d"],  # cosign's signature tag
        f"sha256-{hexa}.att": D["e"],
        "sha256-" + sbom.split(":")[1]: D["f"],  # the SBOM's own referrers (a signature)
        "v0": D["b"],  # an older image, run by nobody
        f"sha256-{hexb}.sig": other,
    }
    states = [
        RepoState(
            "staging/app/s1",
            tags=attached,
            blobs={d: {} for d in [*attached.values(), sbom, sig, sbom_sig]},
            children={D["a"]: [], D["c"]: [sbom, sig], D["f"]: [sbom_sig], D["b"]: []},
        )
    ]
    p = plan(
        states,
        target=Target.of("reg:5000"),
        lrp_images=[f"reg:5000/staging/app/s1@{D['a']}"],
        stagings=[staging("s1")],
        prefix="staging",
        grace=3600,
        now=NOW,
    )
    assert p.delete == [  # by digest
        ("staging/app/s1", other, [f"sha256-{hexb}.sig"]),
        ("staging/app/s1", D["b"], ["v0"]),
    ]
    why = f"a signature or attestation of an image kept: reg:5000/staging/app/s1@{D['a']}"
    assert ("staging/app/s1", D["c"], why) in p.kept_images
    assert ("staging/app/s1", D["f"], why) in p.kept_images
    nobody = plan(
        states,
        target=Target.of("reg:5000"),
        lrp_images=[],
        stagings=[staging("s1")],
        prefix="staging",
        grace=3600,
        now=NOW,
    )
    assert {d for _, d, _ in nobody.delete} == {*attached.values(), sbom, sig, sbom_sig}


def test_the_signatures_of_a_kept_index_s_platform_manifests_are_kept() -> None:
    """cosign sign --recursive signs every platform manifest of an index: the copy brings
    their .sig tags too, and pruning around the index (or around the one platform
    manifest an LRP runs) keeps them."""
    hexa, hexb = D["a"].split(":")[1], D["b"].split(":")[1]
    tags = {"v1": D["a"], f"sha256-{hexa}.sig": D["c"], f"sha256-{hexb}.sig": D["d"]}
    states = [
        RepoState(
            "staging/app/s1",
            tags=tags,
            blobs={d: {} for d in tags.values()},
            children={D["a"]: [D["b"]], D["c"]: [], D["d"]: []},
        )
    ]
    for runs in (D["a"], D["b"]):  # the index, or its platform manifest
        p = plan(
            states,
            target=Target.of("reg:5000"),
            lrp_images=[f"reg:5000/staging/app/s1@{runs}"],
            stagings=[staging("s1")],
            prefix="staging",
            grace=3600,
            now=NOW,
        )
        assert p.delete == [], (runs, p.delete)
        assert {d for _, d, _ in p.kept_images} == {D["a"], D["c"], D["d"]} | {runs}


def test_what_is_always_kept() -> None:
    states = [
        RepoState(f"staging/app/{g}", tags={g: D["e"]}, blobs={D["e"]: {}})
        for g in ("open", "young", "tagged")
    ] + [RepoState("elsewhere/thing", tags={"v1": D["f"]}, blobs={D["f"]: {}})]
    p = plan(
        states,
        target=Target.of("reg:5000"),
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
        "elsewhere/thing": "no staging record: not made by this broker",
    }
    assert p.kept_images == [
        ("staging/app/tagged", D["e"], "a desired LRP runs it: reg:5000/staging/app/tagged:tagged")
    ]
    assert p.ignored == [
        ("not a ref", "not an image reference"),
        (
            "other:5000/x@" + D["a"],
            "another registry: other:5000, not reg:5000; "
            "if it is the same, name it with --registry-alias",
        ),
    ]


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


def closed(*guids: str) -> tuple[list[RepoState], list[StagingRow]]:
    """One closed, old staging repository per guid, each tagged with its guid on D['a']."""
    states = [
        RepoState(f"staging/app/{g}", tags={g: D["a"]}, blobs={D["a"]: {"sha256:l": 10}})
        for g in guids
    ]
    return states, [staging(g) for g in guids]


@pytest.mark.parametrize(
    ("registry", "insecure", "lrp_registry"),
    [
        ("localhost:5000", ["localhost:5000"], "127.0.0.1:5000"),  # issue #11.4 as reported
        ("127.0.0.1:5000", [], "localhost:5000"),
        ("localhost:5000", [], "[::1]:5000"),
        ("[::1]:5000", [], "LOCALHOST:5000"),
        ("Reg.Example", [], "reg.example:443"),
        ("reg.example:443", [], "reg.example"),
        ("reg.example", ["reg.example"], "reg.example:80"),
        ("registry-1.docker.io", [], "index.docker.io"),
    ],
)
def test_an_lrp_naming_the_registry_another_way_keeps_its_image(
    registry: str, insecure: list[str], lrp_registry: str
) -> None:
    states, stagings = closed("s1", "s2")
    running = f"{lrp_registry}/staging/app/s1@{D['a']}"
    p = plan(
        states,
        target=Target.of(registry, insecure=insecure),
        lrp_images=[running],
        stagings=stagings,
        prefix="staging",
        grace=0,
        now=NOW,
    )
    assert p.delete == [("staging/app/s2", D["a"], ["s2"])]
    assert p.kept_images == [("staging/app/s1", D["a"], f"a desired LRP runs it: {running}")]
    assert p.ignored == []


def test_a_default_port_is_the_schemes() -> None:
    """Plain HTTP (marked insecure) is port 80: reg.example:443 is another registry then
    (the LRP names a tag: only a digest is kept whatever registry name it comes with)."""
    states, stagings = closed("s1")
    running = "reg.example:443/staging/app/s1:s1"
    target = Target.of("reg.example", insecure=["reg.example"])
    assert str(target) == "reg.example:80"
    p = plan(
        states, target=target, lrp_images=[running], stagings=stagings, prefix="staging", grace=0
    )
    assert p.delete == [("staging/app/s1", D["a"], ["s1"])]
    assert p.ignored == [
        (
            running,
            "another registry: reg.example:443, not reg.example:80; "
            "if it is the same, name it with --registry-alias",
        )
    ]


def test_an_alias_names_the_registry_pruned() -> None:
    states, stagings = closed("s1", "s2")
    running = "registry.internal:5000/staging/app/s1:s1"
    lrps = [running, "docker.io/library/ubuntu:22.04"]

    without = Target.of("127.0.0.1:5000")
    p = plan(states, target=without, lrp_images=lrps, stagings=stagings, prefix="staging", grace=0)
    assert [d[0] for d in p.delete] == ["staging/app/s1", "staging/app/s2"]
    assert unnamed(sort_lrps(lrps, without), without) == (
        "no desired LRP image names the registry pruned (localhost:5000); they name "
        "docker.io:443, registry.internal:5000: check --registry, name the registry as the "
        "cells do with --registry-alias, or pass --allow-no-lrps if truly no app runs from it"
    )

    aliased = Target.of("127.0.0.1:5000", ["Registry.Internal:5000", "other:5000"])
    assert str(aliased) == "localhost:5000 or other:5000 or registry.internal:5000"
    p = plan(states, target=aliased, lrp_images=lrps, stagings=stagings, prefix="staging", grace=0)
    assert p.delete == [("staging/app/s2", D["a"], ["s2"])]
    assert p.kept_images == [("staging/app/s1", D["a"], f"a desired LRP runs it: {running}")]
    assert unnamed(sort_lrps(lrps, aliased), aliased) is None


def test_a_digest_this_registry_holds_is_kept_whatever_registry_name_it_comes_with() -> None:
    """One LRP names the registry as the operator does, another by a name nobody gave
    (no alias): its digest-pinned image is in this registry's staged repository, so
    it is kept all the same, and says so; a tag under a foreign name keeps nothing."""
    states, stagings = closed("s1", "s2", "s3")
    named = f"127.0.0.1:5000/staging/app/s1@{D['a']}"
    unknown_name = f"cells.internal:5000/staging/app/s2@{D['a']}"
    foreign_tag = "cells.internal:5000/staging/app/s3:s3"
    target = Target.of("127.0.0.1:5000")
    p = plan(
        states,
        target=target,
        lrp_images=[named, unknown_name, foreign_tag],
        stagings=stagings,
        prefix="staging",
        grace=0,
    )
    assert p.delete == [("staging/app/s3", D["a"], ["s3"])]
    assert p.kept_images == [
        ("staging/app/s1", D["a"], f"a desired LRP runs it: {named}"),
        (
            "staging/app/s2",
            D["a"],
            f"a desired LRP runs its digest by another name: {unknown_name}",
        ),
    ]
    assert [text for text, _ in p.ignored] == [foreign_tag]


def test_unnamed_says_what_the_lrps_name() -> None:
    target = Target.of("localhost:5000")
    assert unnamed(sort_lrps([f"localhost:5000/a@{D['a']}"], target), target) is None
    message = unnamed(sort_lrps(["Not A Ref"], target), target)
    assert message is not None and "none of them is an image reference" in message
    many = [f"r{i}.example/a@{D['a']}" for i in range(7)]
    message = unnamed(sort_lrps(many, target), target)
    assert message is not None
    assert "they name r0.example:443, r1.example:443, r2.example:443, r3.example:443, " in message
    assert "r4.example:443 and 2 more: check --registry" in message


@pytest.mark.parametrize("bad", ["http://localhost:5000", "localhost:5000/x", "a_b", "reg:0", ""])
def test_a_bad_registry_or_alias_is_refused(bad: str) -> None:
    with pytest.raises(PruneRefused, match="registry"):
        Target.of(bad)
    with pytest.raises(PruneRefused, match="registry"):
        Target.of("localhost:5000", [bad])


def test_an_lrp_running_a_platform_manifest_keeps_its_index() -> None:
    states = [
        RepoState(
            "staging/app/s1",
            tags={"s1": D["a"]},
            blobs={D["a"]: {"sha256:l1": 100}},
            children={D["a"]: [D["b"], D["c"]]},
        )
    ]
    running = f"reg:5000/staging/app/s1@{D['b']}"
    p = plan(
        states,
        target=Target.of("reg:5000"),
        lrp_images=[running],
        stagings=[staging("s1")],
        prefix="staging",
        grace=0,
        now=NOW,
    )
    assert p.delete == []
    assert p.freed_bytes == 0
    assert p.kept_images == [
        (
            "staging/app/s1",
            D["a"],
            f"an index of a platform manifest a desired LRP runs: {running}",
        ),
        ("staging/app/s1", D["b"], f"a desired LRP runs it: {running}"),
    ]


def test_what_an_lrp_image_keeps_nothing_of_is_listed_with_why() -> None:
    states, stagings = closed("s1")
    lrps = [
        f"reg:5000/staging/app/s1@{D['a']}",
        f"reg:5000/staging/app/s1@{D['a']}",  # the same text twice: one line
        "reg:5000/staging/app/s1:gone",
        f"reg:5000/staging/app/s1@{D['f']}",
        f"reg:5000/staging/app/zz@{D['a']}",
    ]
    p = plan(
        states,
        target=Target.of("reg:5000"),
        lrp_images=lrps,
        stagings=stagings,
        prefix="staging",
        grace=0,
        now=NOW,
    )
    assert p.delete == []
    assert p.kept_images == [("staging/app/s1", D["a"], f"a desired LRP runs it: {lrps[0]}")]
    assert p.ignored == [
        ("reg:5000/staging/app/s1:gone", "staging/app/s1 has no tag gone"),
        (
            f"reg:5000/staging/app/s1@{D['f']}",
            f"no tag of staging/app/s1 leads to {D['f']}: prune leaves it alone",
        ),
        (
            f"reg:5000/staging/app/zz@{D['a']}",
            "the registry holds no repository staging/app/zz",
        ),
    ]


def test_closed_stagings_whose_repository_is_gone_for_good() -> None:
    """``gone``: closed long enough that nothing can push (SETTLED), and the repository
    emptied of every tagged manifest by this plan, holding none, or not in the catalog."""
    long_ago, lately = int(NOW) - SETTLED - 1, int(NOW) - SETTLED + 60
    guids = ("emptied", "runs", "lately", "open", "untagged", "young", "marked")
    states = [
        RepoState(f"staging/app/{g}", tags={g: D["a"]}, blobs={D["a"]: {}})
        for g in guids
        if g != "untagged"
    ] + [RepoState("staging/app/untagged")]  # blobs of a copy that never pushed its manifest
    stagings = [
        staging("emptied", closed_at=long_ago),
        staging("runs", closed_at=long_ago),  # a desired LRP runs its image
        staging("lately", closed_at=lately),  # a push token may still be valid
        staging("open", state="redeemed"),
        staging("untagged", state="failed", closed_at=long_ago),
        staging("young", created_at=int(NOW) - SETTLED - 60, closed_at=long_ago),
        staging("marked", closed_at=long_ago, repository_gone_at=long_ago),
        staging("absent", state="expired", closed_at=long_ago),  # never pushed at all
        staging("absent-lately", state="cancelled", closed_at=lately),
        staging("absent-marked", closed_at=long_ago, repository_gone_at=long_ago),
    ]
    p = plan(
        states,
        target=Target.of("reg:5000"),
        lrp_images=[f"reg:5000/staging/app/runs@{D['a']}"],
        stagings=stagings,
        prefix="staging",
        grace=SETTLED + 3600,
        now=NOW,
    )
    assert p.kept["staging/app/young"] == "younger than the grace period"
    assert [repo for repo, _, _ in p.delete] == [
        "staging/app/emptied",
        "staging/app/lately",
        "staging/app/marked",
    ]
    assert p.gone == ["absent", "emptied", "untagged"]


def test_a_catalog_without_any_of_this_brokers_repositories_proves_nothing_gone() -> None:
    """Another registry (or empty storage) lists none of the stagings: none is gone."""
    old = int(NOW) - SETTLED - 1
    p = plan(
        [RepoState("elsewhere/thing", tags={"v1": D["f"]}, blobs={D["f"]: {}})],
        target=Target.of("reg:5000"),
        lrp_images=["reg:5000/elsewhere/thing:v1"],
        stagings=[staging("s1", closed_at=old), staging("s2", state="expired", closed_at=old)],
        prefix="staging",
        grace=3600,
        now=NOW,
    )
    assert p.delete == [] and p.gone == []
