"""``docker-credential-stager``: a Docker credential helper for a cell-wide ``puller``.

Docker, podman, skopeo, buildah (and nerdctl) run ``docker-credential-<name> get`` for
a registry named in ``credHelpers`` (or ``credsStore``), write the registry's URL to
its stdin, and read ``{"ServerURL", "Username", "Secret"}`` from its stdout. This
helper answers the puller's client id and a puller session: it signs a fresh client
assertion with the puller's key and trades it at the broker (``POST
/v1/puller-sessions``) for a secret the realm accepts for many token requests (for
``BROKER_PULLER_SESSION_SECONDS``), which a single-use assertion is not.

Configured by the environment the client runs it in: ``STAGER_REGISTRY`` (the internal
registry's ``host[:port]``: the one registry it answers for; any other gets the
protocol's "credentials not found", so a session never reaches another registry's
realm, even from a ``credsStore`` entry), ``STAGER_BROKER_URL``, ``STAGER_CLIENT_ID``
(a ``puller`` client) and ``STAGER_CLIENT_KEY`` (its private key file);
``TAILOR_INSECURE_BROKER=1`` allows plain HTTP to a broker off loopback.
``store`` is refused (it stores nothing: the platform identity is the credential),
``erase`` does nothing, ``list`` lists nothing. Errors are one line on stdout (the
protocol's place for them) and exit 1; never a key or a secret.
"""

from __future__ import annotations

import json
import os
import sys
from typing import TextIO

from tailor.assertion import load_client_key
from tailor.broker_client import BrokerClient, insecure_broker_allowed
from tailor.errors import ConfigError, TailorError
from tailor.helperclient import NOT_FOUND

__all__ = ["NOT_FOUND", "main"]

_MAX_INPUT = 4096
# NOT_FOUND: the protocol's answer for a registry the helper has nothing for (clients then
# go on without credentials, or to their next source).


class NotFound(TailorError):
    pass


def _host(server: str) -> str:
    """``host[:port]`` of a server URL as clients pass it (``https://h/v1/``, ``h:5000``)."""
    text = server.strip().lower()
    text = text.split("://", 1)[1] if "://" in text else text
    return text.split("/", 1)[0]


def _get(stdin: TextIO) -> dict[str, str]:
    server = stdin.read(_MAX_INPUT).strip()
    if not server:
        raise ConfigError("no server URL on stdin")
    names = ("STAGER_REGISTRY", "STAGER_BROKER_URL", "STAGER_CLIENT_ID", "STAGER_CLIENT_KEY")
    missing = [n for n in names if not os.environ.get(n)]
    if missing:
        raise ConfigError(
            f"set {', '.join(missing)} (the internal registry, the broker, a puller client,"
            " its key)"
        )
    if _host(server) != _host(os.environ["STAGER_REGISTRY"]):
        raise NotFound(NOT_FOUND)
    key = load_client_key(os.environ["STAGER_CLIENT_ID"], os.environ["STAGER_CLIENT_KEY"])
    broker = BrokerClient(
        os.environ["STAGER_BROKER_URL"], key, timeout=10.0, allow_http=insecure_broker_allowed()
    )
    got = broker.puller_session()
    try:
        return {
            "ServerURL": server,
            "Username": str(got["username"]),
            "Secret": str(got["password"]),
        }
    except (KeyError, TypeError):
        raise TailorError("the broker's puller session answer is incomplete") from None


def main(argv: list[str] | None = None, stdin: TextIO | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    action = args[0] if args else ""
    try:
        if action == "get":
            print(json.dumps(_get(stdin or sys.stdin)))
        elif action == "store":
            (stdin or sys.stdin).read(_MAX_INPUT)
            raise ConfigError("it stores nothing: the platform's puller identity is the credential")
        elif action == "erase":
            (stdin or sys.stdin).read(_MAX_INPUT)
        elif action == "list":
            print("{}")
        elif action == "version":
            print("docker-credential-stager 1")
        else:
            raise ConfigError("usage: docker-credential-stager get|store|erase|list|version")
    except NotFound:
        print(NOT_FOUND)
        return 1
    except TailorError as exc:
        print(f"docker-credential-stager: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
