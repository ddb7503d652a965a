"""Trade a user's registry password for a short-lived pull-only token of the upstream registry.

Groundwork for "the Tailor never holds the user's password" (issue 14): the broker, not
the Tailor, will make this trade, at redemption (the Tailor gets the token, never the
password) and at mint (a wrong password or a missing repository fails ``cf push`` at
once). **Not wired in yet**: nothing in the broker calls it so far.

``exchange`` talks to the upstream registry through the outbound guard
(``tailor/outbound.py``), as egress discovery does: only the registry's host, then its
token realm's (opened only once the realm passed ``check_realm``: https unless on the
registry's own host and marked insecure), every address checked after resolution, no
proxy, no redirect followed, one deadline for everything. It:

1. asks ``GET /v2/`` how the registry wants to be met;
2. for a Bearer challenge, requests a token for exactly ``repository:<repo>:pull``: the
   token spec's GET (Basic credentials, ``service``, ``scope``, ``account``) or, when the
   realm answers that GET 404/405 or ``prefer_post`` is set, the OAuth2 password grant
   (``grant_type=password``, ``username``, ``password``, ``service``, ``scope``,
   ``client_id``; no ``access_type=offline``, and a refresh token answered anyway is
   dropped: it would outlive the staging);
3. checks the token (or the Basic credentials) with one request the Tailor will make:
   ``HEAD`` of the image's manifest (a HEAD counts as no pull on Docker Hub), or
   ``GET /v2/<repo>/tags/list?n=1`` for a reference without tag or digest. A realm that
   narrows the scope to what the user may have (Docker Hub answers a token granting
   nothing) is caught here, not as a 401 in the middle of a staging. On a refusal a
   ``GET`` of the same URL reads the registry's own words (a refused GET is no pull).

Its answer is one of these outcomes, never an exception for anything the registry does:

============== ==============================================================================
``Token``      a pull token for exactly ``repository:<repo>:pull``, checked usable;
               ``expires_in`` as answered (60 when absent, as the spec says; not raised to
               a minimum), ``issued_at`` as answered (else when the answer came), the realm
               and service it belongs to; ``anonymous`` when got with no credentials (a
               public image on a token registry).
``Anonymous``  the registry serves the repository with no credentials at all.
``BasicOnly``  the registry challenges Basic: there is no token to trade. The credentials
               were accepted by one authenticated request (refused ones are ``Refused``).
``Refused``    the registry or its token server said no (4xx): ``kind`` is
               ``credentials`` (wrong, or none given where needed), ``scope`` (good
               credentials that do not grant pulling the repository: a narrowed token, a
               403), ``missing`` (no such repository, tag or digest) or ``other`` (an auth
               scheme the exchange does not do, an odd answer). ``message`` is its own
               words, one line, trimmed.
``Unreachable`` no answer, or none usable: a name that does not resolve, a refused
               connection, a TLS failure, the deadline, a 5xx or 429 (after one retry), a
               token answer without a token.
``PolicyRefused`` the exchange will not go where the registry points: an address the
               outbound policy refuses (the registry's or its realm's), a realm the
               password may not go to, a realm's redirect (never followed, the password
               would go along).
============== ==============================================================================

How the broker will use them (next step):

- **Redemption**: open the sealed credentials, ``exchange`` with them, and answer a
  ``Token`` as the token, its expiry and realm/service: no username, no password.
  ``BasicOnly``: release the password or refuse, as a broker setting says. ``Anonymous``:
  nothing to release. Anything else refuses the redemption, saying why.
- **Mint**: the same exchange checks the credentials: ``Refused`` fails ``cf push`` with
  ``str(outcome)`` (the registry's own message), ``PolicyRefused`` too (the redemption
  would be refused the same way); ``Unreachable`` is not a refusal (the registry may be
  back by staging time). ``Refused.kind`` and ``PolicyRefused`` go to the audit log.

``PolicyRefused`` is kept apart from ``Unreachable`` on purpose: it is certain and lasting,
where an unreachable registry may answer in a minute; the API may still answer both alike
to its caller (no port oracle, as egress discovery does), and log which.

The password is in no outcome, exception, log record or repr: an answer that repeats a
credential (or the token) has its words withheld, and outcomes carry no secret but
``Token.token`` (``repr=False``).
"""

from __future__ import annotations

import base64
import datetime
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, NoReturn
from urllib.parse import quote, quote_plus, urlsplit

import requests

from tailor import outbound
from tailor.authn import ANONYMOUS
from tailor.bearer import MAX_TOKEN_RESPONSE, check_realm
from tailor.challenge import Challenge, parse_challenge
from tailor.errors import AuthError, ConfigError, TransportError
from tailor.manifest import ACCEPT
from tailor.outbound import AddressPolicy, Probe, Unresolvable
from tailor.reference import Reference, parse_reference
from tailor.retry import RETRYABLE_STATUS, RetryPolicy
from tailor.transport import REDIRECTS, InsecureHosts, Transport, pull_scope

__all__ = [
    "CLIENT_ID",
    "DEFAULT_EXPIRES_IN",
    "Anonymous",
    "BasicOnly",
    "Outcome",
    "PolicyRefused",
    "RefusalKind",
    "Refused",
    "Token",
    "Unreachable",
    "exchange",
]

log = logging.getLogger("tailor.exchange")

DEFAULT_EXPIRES_IN = 60  # the token spec's default when a realm leaves expires_in out
CLIENT_ID = "image-stager"  # the OAuth2 client_id of the password grant
_MAX_MESSAGE = 300
_MAX_ERROR_BODY = 64 * 1024
_WITHHELD = "(its answer repeated a credential and is withheld)"

RefusalKind = Literal["credentials", "scope", "missing", "other"]


@dataclass(frozen=True)
class Token:
    """A pull token for exactly ``scope``, checked usable against the registry."""

    token: str = field(repr=False)
    expires_in: int
    issued_at: datetime.datetime
    realm: str
    service: str
    scope: str
    anonymous: bool = False

    @property
    def expires_at(self) -> datetime.datetime:
        return self.issued_at + datetime.timedelta(seconds=self.expires_in)


@dataclass(frozen=True)
class Anonymous:
    """The registry serves the repository without any credentials."""


@dataclass(frozen=True)
class BasicOnly:
    """The registry challenges Basic (``realm`` is the challenge's): no token to trade. The
    credentials were accepted by one authenticated request."""

    realm: str = ""


@dataclass(frozen=True)
class Refused:
    """The registry (or its token server) said no. ``by`` is who (``registry H``, ``token
    server H``), ``what`` what it refused (our words), ``message`` its own, one line."""

    kind: RefusalKind
    by: str
    what: str
    status: int
    message: str

    def __str__(self) -> str:
        return f"{self.by} {self.what}: {self.message}"


@dataclass(frozen=True)
class Unreachable:
    """No answer, or none the exchange can use; may be transient."""

    reason: str

    def __str__(self) -> str:
        return self.reason


@dataclass(frozen=True)
class PolicyRefused:
    """Where the registry points is a destination the exchange will not go to."""

    reason: str

    def __str__(self) -> str:
        return self.reason


Outcome = Token | Anonymous | BasicOnly | Refused | Unreachable | PolicyRefused


class _Done(Exception):
    """Carries an outcome out of the steps (never leaves this module)."""

    def __init__(self, outcome: Outcome) -> None:
        super().__init__(type(outcome).__name__)
        self.outcome = outcome


def exchange(
    image: Reference | str,
    username: str = "",
    password: str = "",
    *,
    policy: AddressPolicy,
    insecure: Callable[[str], bool] | None = None,
    deadline: float = 10.0,
    prefer_post: bool = False,
    client_id: str = CLIENT_ID,
) -> Outcome:
    """Trade ``username``/``password`` (both, or neither: anonymous) for a pull token of
    ``image``'s repository, within ``deadline`` seconds in all.

    ``image``: a reference (its manifest is what the token is checked against), or one
    without tag or digest (``Reference(registry, repository)``, or a string parsed so:
    then ``tags/list`` is). ``insecure``: the hosts spoken to in plain HTTP (the registry,
    and a realm on its host). ``prefer_post``: the OAuth2 password grant first (the GET
    after a 404/405), for realms known to want it."""
    ref = parse_reference(image, default_tag=None) if isinstance(image, str) else image
    if bool(username) != bool(password):
        raise ConfigError("an exchange needs both a username and a password, or neither")
    started = time.monotonic()
    insecure = insecure or InsecureHosts()
    run = _Run(ref, username, password, policy, insecure, deadline, prefer_post, client_id)
    outcome = run.outcome()
    fields: dict[str, object] = {
        "registry": ref.endpoint,
        "repository": ref.repository,
        "outcome": type(outcome).__name__,
        "seconds": round(time.monotonic() - started, 3),
    }
    if isinstance(outcome, Refused):
        fields["refusal"] = outcome.kind
    if isinstance(outcome, Refused | Unreachable | PolicyRefused):
        fields["reason"] = str(outcome)
    log.info("upstream exchange", extra=fields)
    return outcome


class _Run:
    """One exchange: its probes, what it has learned, and the secrets to keep out of words."""

    def __init__(
        self,
        ref: Reference,
        username: str,
        password: str,
        policy: AddressPolicy,
        insecure: Callable[[str], bool],
        deadline: float,
        prefer_post: bool,
        client_id: str,
    ) -> None:
        self.ref = ref
        self.prefer_post = prefer_post
        self.client_id = client_id
        self.username = username
        self._password = password
        self.policy = policy
        self.insecure = insecure
        self.deadline = deadline
        self.scope = pull_scope(ref.repository)
        self.host = (urlsplit(f"//{ref.endpoint}").hostname or ref.endpoint).lower()
        self.registry = f"registry {ref.endpoint}"
        self.talking_to = ref.endpoint
        self.probes: list[Probe] = []
        self._secrets = [password, base64.b64encode(f"{username}:{password}".encode()).decode()]
        self._secrets += [quote_plus(password), quote(password, safe="")]

    def __repr__(self) -> str:
        return f"_Run({self.ref}, user={self.username!r})"

    @property
    def credentials(self) -> bool:
        return bool(self.username)

    # -- the whole exchange, every failure turned into an outcome ---------------------------

    def outcome(self) -> Outcome:
        try:
            upstream = self._transport(self.ref.endpoint, self.deadline)
            return self._exchange(upstream)
        except _Done as done:
            return done.outcome
        except Unresolvable as exc:
            return Unreachable(self.clean(str(exc)))
        except outbound.Refused as exc:
            return PolicyRefused(self.clean(str(exc)))
        except TransportError as exc:
            if any(p.expired for p in self.probes):
                return Unreachable(f"no answer from {self.talking_to} within {self.deadline:g} s")
            return Unreachable(self.clean(str(exc)))
        except requests.RequestException as exc:  # one the transport does not word
            return Unreachable(f"no usable answer from {self.talking_to}: {type(exc).__name__}")
        finally:
            for probe in self.probes:
                probe.close()

    def _transport(self, netloc: str, seconds: float) -> Transport:
        """The Tailor's registry client (scheme choice, retries, TLS and network errors
        made one line) whose every connection goes through a new guarded probe."""
        if seconds <= 0:
            raise _Done(Unreachable(f"no answer within {self.deadline:g} s"))
        probe = Probe(self.policy, [urlsplit(f"//{netloc}").hostname or netloc], seconds)
        self.probes.append(probe)
        return Transport(
            netloc,
            ANONYMOUS,
            self.insecure,
            policy=RetryPolicy(attempts=2),
            timeout=(seconds, seconds),
            sleep=lambda delay: time.sleep(max(0.0, min(delay, probe.remaining()))),
            sessions=probe.session,
        )

    def _exchange(self, upstream: Transport) -> Outcome:
        challenge = self._ping(upstream)
        if challenge is None:
            self._check(upstream, None, on_401="credentials")
            return Anonymous()
        if challenge.scheme == "basic":
            if not self.credentials:
                self._check(upstream, None, on_401="credentials")
                return Anonymous()  # /v2/ wants Basic, this repository does not
            basic = requests.Request("GET", upstream.base_url, auth=self._basic())
            self._check(upstream, basic.prepare().headers["Authorization"], on_401="credentials")
            return BasicOnly(challenge.params.get("realm", ""))
        if challenge.scheme == "bearer":
            token = self._token(upstream, challenge)
            self._secrets.append(token.token)
            self._check(
                upstream,
                f"Bearer {token.token}",
                on_401="scope" if self.credentials else "credentials",
            )
            return token
        raise _Done(
            Refused(
                "other",
                self.registry,
                "asks for an authentication the exchange does not do",
                401,
                self.clean(f"a {challenge.scheme!r} challenge"),
            )
        )

    # -- the steps ---------------------------------------------------------------------------

    def _send(
        self, transport: Transport, method: str, url: str, **kwargs: Any
    ) -> requests.Response:
        self.talking_to = urlsplit(url).netloc
        return transport.send(method, url, allow_redirects=False, stream=True, **kwargs)

    def _ping(self, upstream: Transport) -> Challenge | None:
        """How the registry wants to be met: None (no auth at all) or its challenge."""
        response = self._send(upstream, "GET", upstream.url("/v2/"))
        with response:
            if response.status_code == 200:
                return None
            if response.status_code != 401:
                self._fail(response, self.registry, "answered GET /v2/ with an error", "other")
            challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
            if challenge is None:
                self._fail(response, self.registry, "sent 401 to GET /v2/ without a challenge")
            return challenge

    def _token(self, upstream: Transport, challenge: Challenge) -> Token:
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        if not realm:
            raise _Done(
                Refused(
                    "other",
                    self.registry,
                    "sent a Bearer challenge",
                    401,
                    "it names no token realm",
                )
            )
        try:
            check_realm(realm, self.ref.endpoint, self.insecure)
        except AuthError as exc:
            raise _Done(PolicyRefused(self.clean(str(exc)))) from None
        parts = urlsplit(realm)
        if (parts.hostname or "").lower() == self.host:
            transport = upstream  # the registry's own host: its probe may go there
        else:
            left = min(p.remaining() for p in self.probes)
            transport = self._transport(parts.netloc, left)
        forms = ["get"]
        if self.credentials:
            forms = ["post", "get"] if self.prefer_post else ["get", "post"]
        for i, form in enumerate(forms):
            response = self._token_request(transport, form, realm, service)
            if response.status_code in (404, 405) and i + 1 < len(forms):
                response.close()  # this realm takes only the other form
                continue
            return self._read_token(response, realm, service)
        raise AssertionError("unreachable")  # pragma: no cover

    def _token_request(
        self, transport: Transport, form: str, realm: str, service: str
    ) -> requests.Response:
        if form == "post":
            data = {
                "grant_type": "password",
                "username": self.username,
                "password": self._password,
                "scope": self.scope,
                "client_id": self.client_id,
            }
            if service:
                data["service"] = service
            return self._send(transport, "POST", realm, data=data)
        params = [("service", service)] if service else []
        params.append(("scope", self.scope))
        if self.credentials:
            params.append(("account", self.username))
        auth = self._basic() if self.credentials else None
        return self._send(transport, "GET", realm, params=params, auth=auth)

    def _read_token(self, response: requests.Response, realm: str, service: str) -> Token:
        by = f"token server {urlsplit(realm).netloc}"
        with response:
            status = response.status_code
            if status in REDIRECTS:
                raise _Done(
                    PolicyRefused(
                        f"{by} redirected the token request; a realm's redirect is not "
                        "followed (the credentials would go along)"
                    )
                )
            if status != 200:
                said = _Said.read(response)
                kind: RefusalKind = "other"
                if status == 401 or (status == 400 and said.oauth2_error == "invalid_grant"):
                    kind = "credentials"  # OAuth2 answers a wrong password 400 invalid_grant
                elif status == 403:
                    kind = "scope"
                what = self._refusing(f"a token for {self.scope}")
                self._fail(response, by, what, kind, said)
            body = response.raw.read(MAX_TOKEN_RESPONSE + 1, decode_content=True)
            received = datetime.datetime.now(datetime.UTC)
        if len(body) > MAX_TOKEN_RESPONSE:
            raise _Done(Unreachable(f"{by} sent an oversized token answer"))
        try:
            data = json.loads(body)
        except ValueError:
            data = None
        token = data.get("token") or data.get("access_token") if isinstance(data, dict) else None
        if not isinstance(data, dict) or not isinstance(token, str) or not token:
            raise _Done(Unreachable(f"{by} sent a token answer without a token"))
        return Token(
            token=token,
            expires_in=_expires_in(data.get("expires_in")),
            issued_at=_issued_at(data.get("issued_at")) or received,
            realm=realm,
            service=service,
            scope=self.scope,
            anonymous=not self.credentials,
        )

    def _check(self, upstream: Transport, authorization: str | None, on_401: RefusalKind) -> None:
        """One request the staging will make, with ``authorization``: 2xx or a refusal."""
        repo = self.ref.repository
        headers = {"Accept": ACCEPT}
        if authorization:
            headers["Authorization"] = authorization
        tags = upstream.url(f"/v2/{repo}/tags/list?n=1")
        if self.ref.tag or self.ref.digest:
            url = upstream.url(f"/v2/{repo}/manifests/{quote(self.ref.identifier)}")
            with self._send(upstream, "HEAD", url, headers=headers) as head:
                if 200 <= head.status_code < 300:
                    return
            what = f"{repo}{'@' if self.ref.digest else ':'}{self.ref.identifier}"
        else:
            url, what = tags, f"repository {repo}"
        # A HEAD answer has no body: the same GET has the registry's words (a refused GET
        # is no pull). For a manifest that is not found, whether the repository is.
        response = self._send(upstream, "GET", url, headers=headers)
        if 200 <= response.status_code < 300:
            response.close()
            return
        if response.status_code == 404 and url != tags:
            listing = self._send(upstream, "GET", tags, headers=headers)
            if listing.status_code == 404:
                response.close()
                response, what = listing, f"repository {repo}"
            else:
                listing.close()
        with response:
            status = response.status_code
            if status == 404:
                self._fail(response, self.registry, f"has no {what}", "missing")
            if status == 401 and on_401 == "scope":
                doing = f"the token for {self.scope} (it does not grant pulling {repo})"
                self._fail(response, self.registry, f"refused {doing}", "scope")
            if status == 401:
                shown = self.credentials and authorization is not None
                self._fail(response, self.registry, self._refusing(what, shown), "credentials")
            if status == 403:
                self._fail(response, self.registry, f"denied pulling {what}", "scope")
            self._fail(response, self.registry, f"answered pulling {what} with an error", "other")

    # -- words --------------------------------------------------------------------------------

    def _refusing(self, what: str, shown: bool = True) -> str:
        if self.credentials and shown:
            return f"refused the credentials for {what}"
        return f"refused anonymous access to {what}"

    def _fail(
        self,
        response: requests.Response,
        by: str,
        what: str,
        kind: RefusalKind = "other",
        said: _Said | None = None,
    ) -> NoReturn:
        """End with the outcome an error answer makes: a retryable status (after the
        transport's retry) is unreachable, a redirect or any other 4xx a refusal."""
        status = response.status_code
        said = said or _Said.read(response)
        words = self.clean(said.words) or f"HTTP {status}, no reason given"
        if status in RETRYABLE_STATUS or status >= 500:
            raise _Done(Unreachable(f"{by} answered HTTP {status}: {words}"))
        if status in REDIRECTS:
            words = f"HTTP {status}, a redirect the exchange does not follow"
        raise _Done(Refused(kind, by, what, status, words))

    def clean(self, text: str) -> str:
        """``text`` on one line, trimmed; withheld whole when it repeats a credential."""
        if any(len(s) >= 4 and s in text for s in self._secrets):
            return _WITHHELD
        text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
        return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 3] + "..."

    def _basic(self) -> tuple[str, str]:
        return (self.username, self._password)


@dataclass(frozen=True)
class _Said:
    """What an error answer says, in whichever shape: Distribution's ``errors``, Docker
    Hub's ``details``, OAuth2's ``error_description``/``error``, a ``message``, or a short
    plain-text line (``words`` empty when it says nothing readable); and OAuth2's
    ``error`` code."""

    words: str = ""
    oauth2_error: str = ""

    @classmethod
    def read(cls, response: requests.Response) -> _Said:
        try:
            raw = response.raw.read(_MAX_ERROR_BODY, decode_content=True) if response.raw else b""
            text = (raw or b"").decode("utf-8", "replace")
        except (OSError, requests.RequestException, AttributeError, ValueError):
            return cls()
        try:
            data = json.loads(text)
        except ValueError:
            line = text.strip().split("\n", 1)[0]
            return cls(line if line and not line.startswith("<") else "")
        if not isinstance(data, dict):
            return cls()
        code = data.get("error") if isinstance(data.get("error"), str) else ""
        errors = data.get("errors")
        said = []
        for item in errors[:3] if isinstance(errors, list) else []:
            if isinstance(item, dict) and (item.get("message") or item.get("code")):
                said.append(str(item.get("message") or item.get("code")))
        if said:
            return cls("; ".join(said), str(code))
        for key in ("details", "error_description", "message", "error"):
            if isinstance(data.get(key), str) and data[key]:
                return cls(str(data[key]), str(code))
        return cls("", str(code))


def _expires_in(value: object) -> int:
    """Seconds the token lives: as answered, else the spec's 60."""
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        return DEFAULT_EXPIRES_IN
    return int(value)


def _issued_at(value: object) -> datetime.datetime | None:
    """The answer's RFC 3339 ``issued_at`` (nanoseconds allowed), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = datetime.datetime.fromisoformat(value)
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=datetime.UTC)
