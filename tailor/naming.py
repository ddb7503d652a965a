"""Where a staging's image lives in the internal registry: one rule for broker and tailor.

``<prefix>/<app_guid>/<staging_guid>``, lower-cased. :func:`staging_repository` only
names (the broker compares names with it and never raises); the tailor, which will
push there, names with :func:`checked_staging_repository`, which refuses an invalid path.
"""

from __future__ import annotations

from tailor.errors import ConfigError
from tailor.reference import valid_repository

__all__ = [
    "app_namespace",
    "checked_staging_repository",
    "prefix_namespace",
    "staging_repository",
]


def _levels(prefix: str, app_guid: str | None, staging_guid: str) -> list[str]:
    # No prefix, or no app guid (a tailor run without one): that level is left out.
    return [level for level in (prefix.strip("/"), app_guid or "", staging_guid) if level]


def staging_repository(prefix: str, app_guid: str | None, staging_guid: str) -> str:
    """The repository of one staging, lower-cased; never raises, whatever the guids."""
    return "/".join(_levels(prefix, app_guid, staging_guid)).lower()


def prefix_namespace(prefix: str) -> str:
    """What every staging repository starts with: ``<prefix>/`` (what the cells may pull)."""
    return "/".join(_levels(prefix, None, "")).lower() + "/"


def app_namespace(prefix: str, app_guid: str) -> str:
    """What every repository of the app's stagings starts with: ``<prefix>/<app_guid>/``."""
    # The app level is never left out here: an empty guid must not widen this to the prefix.
    return "/".join([*_levels(prefix, None, ""), app_guid]).lower() + "/"


def checked_staging_repository(prefix: str, app_guid: str | None, staging_guid: str) -> str:
    """:func:`staging_repository`, or ConfigError unless the prefix as given and the
    lower-cased guids make a valid repository path."""
    # The prefix is checked as given, not lower-cased: "Staging" is refused, as it always was.
    name = "/".join(_levels(prefix, app_guid and app_guid.lower(), staging_guid.lower()))
    if not name or not valid_repository(name):
        raise ConfigError(
            f"cannot name an internal repository {name!r}: "
            "prefix and staging guid must be lower-case letters, digits, '.', '_' or '-'"
        )
    return name
