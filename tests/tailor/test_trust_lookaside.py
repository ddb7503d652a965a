"""registries.d and the lookaside storage: which base a signature is read from, the
layout under it, where the list ends, and what is an error (containers-registries.d(5))."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tailor.errors import ConfigError
from tailor.reference import parse_reference
from tailor.trust.lookaside import (
    LookasideError,
    RegistriesD,
    Section,
    load_registries_d,
    read_signatures,
)

HEX = "c0" * 32
DIGEST = f"sha256:{HEX}"
IMAGE = parse_reference("reg.test:5000/ns/app:v1")


def no_http(url: str) -> tuple[int, bytes]:
    raise AssertionError(f"no HTTP expected: {url}")


def write(directory: Path, name: str, text: str) -> None:
    directory.mkdir(exist_ok=True)
    (directory / name).write_text(text)


def test_the_most_specific_section_that_names_a_lookaside_wins(tmp_path: Path) -> None:
    d = tmp_path / "registries.d"
    write(d, "a.yaml", "default-docker:\n  lookaside: file:///default\n")
    write(
        d,
        "b.yaml",
        "docker:\n"
        "  reg.test:5000:\n    lookaside: file:///registry\n"
        "  reg.test:5000/ns:\n    sigstore: file:///old-name\n"
        "  reg.test:5000/ns/app:\n    lookaside-staging: file:///write-only\n"
        "  '*.test':\n    lookaside: https://sigs.test/\n",
    )
    write(d, "ignored.yml", "default-docker: {lookaside: file:///not-read}\n")
    config = load_registries_d(d)
    # The repository's section names only a write location: the namespace's is read.
    assert config.lookaside_for(IMAGE) == "file:///old-name"
    assert config.lookaside_for(parse_reference("reg.test:5000/other/app")) == "file:///registry"
    assert config.lookaside_for(parse_reference("x.test/app")) == "https://sigs.test/"
    assert config.lookaside_for(parse_reference("elsewhere.example/app")) == "file:///default"
    both = load_registries_d(tmp_path / "absent")
    assert both == RegistriesD(source=str(tmp_path / "absent"))


def test_a_section_defined_in_two_files_is_an_error(tmp_path: Path) -> None:
    d = tmp_path / "d"
    write(d, "a.yaml", "docker:\n  reg.test:5000:\n    lookaside: file:///a\n")
    write(d, "b.yaml", "docker:\n  reg.test:5000:\n    lookaside: file:///a\n")
    with pytest.raises(ConfigError, match=r'"docker" namespace "reg\.test:5000" defined both in'):
        load_registries_d(d)
    e = tmp_path / "e"
    write(e, "a.yaml", "default-docker: {lookaside: file:///a}\n")
    write(e, "b.yaml", "default-docker: {lookaside: file:///b}\n")
    with pytest.raises(ConfigError, match='"default-docker" defined both in'):
        load_registries_d(e)
    for bad, says in [
        ("http://[bad", "is not a URL"),
        ("https://robot:hunter2@sigs.test/x", "must not carry credentials"),
        ("ftp://sigs.test/x", "file, http or https only"),
        ("https:///nohost", "names no host"),
    ]:
        g = tmp_path / f"g{len(says)}"
        write(g, "a.yaml", f"default-docker:\n  lookaside: '{bad}'\n")
        with pytest.raises(ConfigError, match=says) as info:
            load_registries_d(g)
        assert "hunter2" not in str(info.value)
    h = tmp_path / "h"
    write(h, "a.yaml", "default-docker:\n  lookaside: ''\n  sigstore: file:///old\n")
    assert load_registries_d(h).lookaside_for(IMAGE) == "file:///old"
    f = tmp_path / "f"
    write(f, "a.yaml", "docker: [1, 2\n")
    with pytest.raises(ConfigError, match=r"parsing .*a\.yaml: not YAML") as info:
        load_registries_d(f)
    assert "\n" not in str(info.value)


def test_signatures_are_read_in_order_up_to_the_first_missing(tmp_path: Path) -> None:
    base = tmp_path / "sigs"
    here = base / "ns" / f"app@sha256={HEX}"
    here.mkdir(parents=True)
    (here / "signature-1").write_bytes(b"one")
    (here / "signature-2").write_bytes(b"two")
    (here / "signature-4").write_bytes(b"after a gap: never read")
    config = RegistriesD(default=Section(f"file://{base}"))
    assert read_signatures(config, IMAGE, DIGEST, no_http) == [b"one", b"two"]
    assert read_signatures(config, IMAGE, "sha256:" + "d0" * 32, no_http) == []


def test_http_storage_ends_at_404_and_fails_on_anything_else() -> None:
    seen: list[str] = []

    def answers(*statuses: int) -> Callable[[str], tuple[int, bytes]]:
        def get(url: str) -> tuple[int, bytes]:
            seen.append(url)
            status = statuses[len(seen) - 1]
            return status, b"sig" if status == 200 else b""

        return get

    config = RegistriesD(default=Section("https://sigs.test/base"))
    assert read_signatures(config, IMAGE, DIGEST, answers(200, 404)) == [b"sig"]
    assert seen == [
        f"https://sigs.test/base/ns/app@sha256={HEX}/signature-1",
        f"https://sigs.test/base/ns/app@sha256={HEX}/signature-2",
    ]
    seen.clear()
    with pytest.raises(LookasideError, match="signature-2: status 500"):
        read_signatures(config, IMAGE, DIGEST, answers(200, 500))
    with pytest.raises(LookasideError, match="Unsupported scheme"):
        read_signatures(RegistriesD(default=Section("ftp://x")), IMAGE, DIGEST, no_http)
