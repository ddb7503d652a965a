"""The broker's HTTP API as the Tailor and the push client use it. HTTP only: the
Tailor runs in a staging container and never imports ``broker``."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import secrets
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import requests
import urllib3

from tailor.errors import TailorError
from tailor.neterrors import classify
from tailor.retry import RetryPolicy, parse_retry_after

if TYPE_CHECKING:
    from tailor.assertion import ClientKey

__all__ = ["BrokerClient", "BrokerError", "Redemption", "UpstreamGrant"]

_MAX_ANSWER = 64 * 1024
_MAX_IDLE = 2.0
"""Seconds a kept-alive connection to the broker may idle and still be reused: well
under the 5 s after which the broker (uvicorn) and the shipped HAProxy close one."""
RETRY = RetryPolicy(attempts=5, base=0.5, cap=4.0, max_retry_after=10.0)
"""A call whose answer was lost (the connection failed, or a balancer answered 502, 503
or 504) is sent again, at most this often: safely, because each try carries a fresh
assertion and a mint, redemption or completion carries the same Idempotency-Key in
every try (the broker answers a repeat with the first answer); a lookup writes nothing
and a cancellation of a cancelled staging is a success."""
_LOST = frozenset({502, 503, 504})
_NOT_LOST = (
    requests.exceptions.SSLError,
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidHeader,
)


class _Lost(Exception):
    """A try whose answer never arrived (``name``: how it failed)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.name = name


class BrokerError(TailorError):
    """The broker refused or could not be reached; the message is one line, no secret."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class UpstreamGrant:
    """A pull token of the upstream registry the broker traded the user's credentials for:
    for that registry and repository only, until ``expires_at`` (Unix time)."""

    token: str = field(repr=False)
    expires_at: float
    scope: str


def _grant(data: Any) -> UpstreamGrant:
    try:
        when = datetime.datetime.fromisoformat(str(data["expires_at"]).replace("Z", "+00:00"))
        return UpstreamGrant(str(data["token"]), when.timestamp(), str(data.get("scope") or ""))
    except (KeyError, TypeError, ValueError):
        raise BrokerError("the broker's upstream token answer is incomplete") from None


@dataclass(frozen=True)
class Redemption:
    staging_guid: str
    """The staging the token opened: the one to report the end of."""
    registry: str
    image: str
    username: str | None  # None (with the password): a public image, pulled anonymously
    password: str | None
    expires_at: str
    app_guid: str = ""
    upstream: UpstreamGrant | None = None
    """Set when the broker traded the credentials for a token: then no username, no password."""
    policy: dict[str, Any] | None = None
    """The operator's staging policy document (tailor/trust/served.py), or None."""

    def __repr__(self) -> str:  # never the password
        return f"Redemption(registry={self.registry!r}, image={self.image!r})"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def insecure_broker_allowed() -> bool:
    """``TAILOR_INSECURE_BROKER=1``: the operator allows plain HTTP to a non-loopback broker."""
    return os.environ.get("TAILOR_INSECURE_BROKER") == "1"


class BrokerClient:
    """The broker's API. Plain HTTP only to a loopback broker unless ``allow_http``: a
    redemption carries a registry password, and it must not cross a network in clear."""

    def __init__(
        self, url: str, key: ClientKey, *, timeout: float = 30.0, allow_http: bool = False
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise BrokerError(f"broker URL must be http(s)://HOST..., got {url[:60]!r}")
        if parts.scheme == "http" and not (allow_http or _loopback(parts.hostname)):
            raise BrokerError(
                f"refusing plain HTTP to the broker at {parts.netloc}: it hands out credentials; "
                "use https (or set TAILOR_INSECURE_BROKER=1 on a closed network)"
            )
        self.url = url.rstrip("/")
        self._key = key
        self._timeout = timeout
        self._session = requests.Session()
        self._session.trust_env = False
        self._last_used: float | None = None

    def _fresh_if_idle(self) -> None:
        """Drop a kept-alive connection that has idled past ``_MAX_IDLE``.

        A server closes an idle connection at its keep-alive timeout (5 s for uvicorn and
        the shipped HAProxy). A request sent on it just then crosses the close: the
        request is written, the server has already closed, and the client sees the
        connection reset or closed with no answer (13 of 120 requests after exactly 5 s
        idle). urllib3 checks a pooled connection before reuse, but cannot see a close
        that is still on its way. Such a failure is retried (see ``RETRY``: safely, with
        the action's Idempotency-Key), but avoiding it costs nothing: a connection idle
        longer than ``_MAX_IDLE`` is closed before a request and the request goes on a new
        one, which no server has had reason to close."""
        if self._last_used is not None and time.monotonic() - self._last_used > _MAX_IDLE:
            self._session.close()  # closes the pooled connections; the session stays usable

    def _call(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        what: str,
        *,
        repeatable: bool = False,
    ) -> Any:
        """One call, tried again while its answer is lost (see ``RETRY``). ``repeatable``:
        an action the broker does once, sent with an Idempotency-Key of its own."""
        key = f'"{secrets.token_urlsafe(24)}"' if repeatable else None
        attempt = 0
        while True:
            attempt += 1
            try:
                status, data, retry_after = self._try(method, path, body, key)
            except _Lost as lost:
                wait = RETRY.delay(attempt)
                if wait is None:
                    raise BrokerError(
                        f"cannot reach the broker for {what}: {lost.name} ({attempt} attempts)"
                    ) from None
            else:
                wait = RETRY.delay(attempt, retry_after) if status in _LOST else None
                if wait is None:
                    return self._answer(status, data, what)
            time.sleep(wait)

    def _try(
        self, method: str, path: str, body: dict[str, Any] | None, key: str | None
    ) -> tuple[int, Any, float | None]:
        headers = {"Authorization": f"Bearer {self._key.assertion(self.url)}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        self._fresh_if_idle()
        try:
            response = self._session.request(
                method,
                self.url + path,
                json=body,
                headers=headers,
                timeout=self._timeout,
                allow_redirects=False,
                stream=True,
            )
            with response:
                raw = response.raw.read(_MAX_ANSWER + 1, decode_content=True)
        except _NOT_LOST as exc:
            # Not a lost answer but a broken set-up (a bad certificate, a bad URL): asking
            # again changes nothing.
            self._last_used = None
            what = classify(exc).what if isinstance(exc, requests.ConnectionError) else None
            raise BrokerError(f"cannot reach the broker: {what or type(exc).__name__}") from None
        except (requests.RequestException, urllib3.exceptions.HTTPError, OSError) as exc:
            self._last_used = None
            self._session.close()  # the next try goes on a new connection
            failure = classify(exc)
            if not failure.transient:  # a name that does not resolve, say
                raise BrokerError(f"cannot reach the broker: {failure.what}") from None
            raise _Lost(failure.what) from None
        self._last_used = time.monotonic()
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {}
        return response.status_code, data, parse_retry_after(response.headers.get("Retry-After"))

    @staticmethod
    def _answer(status: int, data: Any, what: str) -> Any:
        if status >= 400:
            title = data.get("title") if isinstance(data, dict) else None
            detail = data.get("detail") if isinstance(data, dict) else None
            text = "; ".join(str(x) for x in (title, detail) if x) or f"HTTP {status}"
            if status == 401:
                # Our client assertion, not what we sent with it (e.g. its clock is off).
                what = f"this client's assertion ({what})"
            raise BrokerError(f"broker refused {what}: {text}", status)
        return data

    def mint(self, **body: Any) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "POST", "/v1/staging-tokens", body, "the staging token", repeatable=True
        )
        return answer

    def redeem(self, token: str) -> Redemption:
        data = self._call(
            "POST", "/v1/redemptions", {"token": token}, "the staging token", repeatable=True
        )
        try:
            username, password = data["username"], data["password"]
            if (username is None) != (password is None):
                raise TypeError
            upstream = data.get("upstream_token")
            policy = data.get("staging_policy")
            if policy is not None and not isinstance(policy, dict):
                raise TypeError
            return Redemption(
                str(data["staging_guid"]),
                str(data["registry"]),
                str(data["image"]),
                None if username is None else str(username),
                None if password is None else str(password),
                str(data["expires_at"]),
                str(data.get("app_guid") or ""),
                _grant(upstream) if upstream else None,
                policy,
            )
        except (KeyError, TypeError):
            raise BrokerError("the broker's redemption answer is incomplete") from None

    def upstream_token(self, staging_guid: str, token: str) -> UpstreamGrant:
        """A fresh upstream token for this open staging (the staging token presented again).
        A lost answer is asked again: each try is a new token, and a lost one only expires."""
        data = self._call(
            "POST",
            f"/v1/stagings/{staging_guid}/upstream-token",
            {"token": token},
            "a fresh upstream token",
        )
        return _grant(data)

    def lookup(self, token: str) -> dict[str, Any]:
        answer: dict[str, Any] = self._call(
            "POST", "/v1/staging-tokens/lookup", {"token": token}, "the lookup"
        )
        return answer

    def complete(
        self,
        staging_guid: str,
        *,
        succeeded: bool,
        result: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        body: dict[str, Any] = {"status": "succeeded" if succeeded else "failed"}
        if result:
            body["result"] = result
        if error:
            body["error"] = error[:2000]
        self._call(
            "POST",
            f"/v1/stagings/{staging_guid}/complete",
            body,
            "the completion",
            repeatable=True,
        )

    def puller_session(self) -> dict[str, Any]:
        """A puller session (``POST /v1/puller-sessions``): the client id and a secret the
        realm takes for many token requests. A lost answer is asked again: each try is a
        new session, and a lost one only ends."""
        answer: dict[str, Any] = self._call("POST", "/v1/puller-sessions", None, "a puller session")
        return answer

    def cancel(self, staging_guid: str) -> None:
        self._call("DELETE", f"/v1/stagings/{staging_guid}", None, "the cancellation")
