"""The client side of Docker's credential helper protocol: ``docker-credential-NAME get``.

The registry's server URL goes to the helper's stdin; it answers ``{"ServerURL", "Username",
"Secret"}`` on stdout, or the protocol's "credentials not found" line and a non-zero exit
status. A ``Username`` of ``<token>`` makes ``Secret`` an identity (OAuth2 refresh) token.
(:mod:`tailor.credhelper` is the other side: the platform's own helper.)

Nothing a helper answers reaches an error message: a failure says which helper, for which
registry, and how it ended.
"""

from __future__ import annotations

import json
import re
import subprocess

from tailor.errors import ConfigError

__all__ = ["NOT_FOUND", "TOKEN_USERNAME", "get", "valid_name"]

NOT_FOUND = "credentials not found in native keychain"
"""The protocol's answer for a registry a helper has nothing for."""
TOKEN_USERNAME = "<token>"  # noqa: S105 (a marker, not a password)
"""The ``Username`` that says ``Secret`` is an identity token."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_MAX_ANSWER = 64 * 1024
TIMEOUT = 30.0


def valid_name(name: str) -> bool:
    """A helper name is the suffix of a program name found on PATH, never a path."""
    return bool(_NAME.fullmatch(name))


def get(name: str, server: str, *, timeout: float = TIMEOUT) -> tuple[str, str] | None:
    """``(Username, Secret)`` from ``docker-credential-NAME get`` for ``server``, or None when
    the helper has nothing for it. Any other failure is a :class:`ConfigError`."""
    program = f"docker-credential-{name}"
    if not valid_name(name):
        raise ConfigError(f"credential helper name {name!r} is not a program name suffix")
    try:
        out = subprocess.run(
            [program, "get"],
            input=server.encode(),
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except FileNotFoundError:
        raise ConfigError(f"credential helper {program} is not on PATH") from None
    except subprocess.TimeoutExpired:
        raise ConfigError(
            f"credential helper {program} did not answer for {server} in {timeout:g} s"
        ) from None
    except OSError as exc:
        raise ConfigError(f"credential helper {program} could not run: {exc.strerror}") from None
    if out.returncode != 0:
        if out.stdout.decode(errors="replace").strip() == NOT_FOUND:
            return None
        # Its message is not shown: whatever a helper prints stays with the helper.
        raise ConfigError(
            f"credential helper {program} failed for {server} (exit status {out.returncode})"
        )
    try:
        data = json.loads(out.stdout[:_MAX_ANSWER])
        username, secret = data.get("Username", ""), data.get("Secret", "")
        if not (isinstance(username, str) and isinstance(secret, str)):
            raise ValueError
    except (ValueError, AttributeError):
        raise ConfigError(
            f"credential helper {program} gave an unreadable answer for {server}"
        ) from None
    if not secret:
        return None
    return username, secret
