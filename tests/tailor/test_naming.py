"""The one staging repository naming rule, as the broker and the tailor use it."""

from __future__ import annotations

import pytest

from tailor.errors import ConfigError
from tailor.naming import (
    app_namespace,
    checked_staging_repository,
    prefix_namespace,
    staging_repository,
)


@pytest.mark.parametrize(
    ("prefix", "app", "staging", "name", "checked"),
    [
        ("staging", "app-1", "stg-1", "staging/app-1/stg-1", "staging/app-1/stg-1"),
        ("staging", "App-1", "STG-1", "staging/app-1/stg-1", "staging/app-1/stg-1"),
        ("team/staging", "a", "s", "team/staging/a/s", "team/staging/a/s"),
        ("/staging/", "a", "s", "staging/a/s", "staging/a/s"),
        ("", "a", "s", "a/s", "a/s"),
        ("staging", None, "s", "staging/s", "staging/s"),
        ("staging", "", "s", "staging/s", "staging/s"),
        # The tailor checks the prefix as given; the broker only names (lower-cased).
        ("Staging", "a", "s", "staging/a/s", None),
        ("staging", "a", "s_x!", "staging/a/s_x!", None),
        ("staging", "a..b", "s", "staging/a..b/s", None),
        ("st//aging", "a", "s", "st//aging/a/s", None),
        ("", None, "", "", None),
    ],
)
def test_the_naming_rule(
    prefix: str, app: str | None, staging: str, name: str, checked: str | None
) -> None:
    assert staging_repository(prefix, app, staging) == name
    if checked is None:
        with pytest.raises(ConfigError, match="cannot name an internal repository"):
            checked_staging_repository(prefix, app, staging)
    else:
        assert checked_staging_repository(prefix, app, staging) == checked == name


def test_the_refusal_names_the_path_as_given() -> None:
    with pytest.raises(ConfigError) as info:
        checked_staging_repository("Staging", "App", "S")
    assert str(info.value) == (
        "cannot name an internal repository 'Staging/app/s': prefix and staging guid must "
        "be lower-case letters, digits, '.', '_' or '-'"
    )


@pytest.mark.parametrize(
    ("prefix", "app", "namespace"),
    [
        ("staging", "App-1", "staging/app-1/"),
        ("/team/staging/", "a", "team/staging/a/"),
        ("", "a", "a/"),
        ("staging", "", "staging//"),  # matches no repository, never the whole prefix
    ],
)
def test_the_app_namespace(prefix: str, app: str, namespace: str) -> None:
    assert app_namespace(prefix, app) == namespace
    if app:
        assert staging_repository(prefix, app, "s").startswith(namespace)


@pytest.mark.parametrize(
    ("prefix", "namespace"),
    [("staging", "staging/"), ("/Team/Staging/", "team/staging/"), ("", "/")],
)
def test_the_prefix_namespace_holds_every_staging(prefix: str, namespace: str) -> None:
    assert prefix_namespace(prefix) == namespace
    if prefix:
        assert staging_repository(prefix, "A", "s").startswith(namespace)
        assert app_namespace(prefix, "a").startswith(namespace)
