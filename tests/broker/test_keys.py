from __future__ import annotations

import stat
from pathlib import Path

import pytest

from broker.errors import KeyFileError
from broker.keys import (
    init_keys,
    list_token_keys,
    load_keys,
    retire_token_key,
    rotate_token_keys,
)


def test_init_writes_private_files_and_refuses_to_overwrite(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    names = init_keys(keys)
    for name in names:
        mode = stat.S_IMODE((keys / name).stat().st_mode)
        assert mode == 0o600, name
    before = {n: (keys / n).read_bytes() for n in names}
    with pytest.raises(KeyFileError, match="refusing to overwrite"):
        init_keys(keys)
    assert before == {n: (keys / n).read_bytes() for n in names}
    material = load_keys(keys)
    assert len(material.ring.keys) == 1 and material.audit_kid.startswith("as-")


def test_rotate_list_retire(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    init_keys(keys)
    first = list_token_keys(keys)[0][0]
    second = rotate_token_keys(keys)
    listed = list_token_keys(keys)
    assert [(k, cur) for k, _, cur in listed] == [(first, False), (second, True)]
    assert stat.S_IMODE((keys / "token-keys.json").stat().st_mode) == 0o600
    with pytest.raises(KeyFileError, match="current token key"):
        retire_token_key(keys, second)
    with pytest.raises(KeyFileError, match="no token key"):
        retire_token_key(keys, "tk-nope")
    retire_token_key(keys, first)
    assert [k for k, _, _ in list_token_keys(keys)] == [second]


def test_missing_keys_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="broker keys init"):
        load_keys(tmp_path / "none")
