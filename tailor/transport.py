"""HTTP to one registry: scheme, ping and challenge, Basic or Bearer, retries, redirects.

Security decisions kept here, in one place:
- plain HTTP only for hosts the operator named insecure;
- Authorization goes only to the registry's own host[:port]; a redirect anywhere
  else (blob storage) is followed without it;
- error bodies and token responses are read with a size cap.
"""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters

from tailor import __version__
from tailor.authn import Authenticator
from tailor.bearer import TokenSource
from tailor.challenge import Challenge, parse_challenge
from tailor.errors import (
    AuthError,
    Denied,
    ErrorDetail,
    NotFound,
    RegistryError,
    TransportError,
    Unauthorized,
)
from tailor.neterrors import classify
from tailor.retry import RETRYABLE_STATUS, RetryPolicy, parse_retry_after

__all__ = [
    "CATALOG_SCOPE",
    "InsecureHosts",
    "Transport",
    "delete_scope",
    "pull_scope",
    "push_scope",
]

_MAX_ERROR_BODY = 64 * 1024
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
_NETWORK_ERRORS = (
    requests.ConnectionError,
    requests.Timeout,
    requests.exceptions.ChunkedEncodingError,
)
USER_AGENT = f"tailor/{__version__}"


def pull_scope(repository: str) -> str:
    return f"repository:{repository}:pull"


def push_scope(repository: str) -> str:
    return f"repository:{repository}:pull,push"


def delete_scope(repository: str) -> str:
    return f"repository:{repository}:pull,delete"


CATALOG_SCOPE = "registry:catalog:*"


def _host_port(text: str) -> tuple[str, str | None]:
    """``host[:port]`` as (host, port or None): the host lower-cased, an IP address in its
    canonical form, IPv6 in brackets whether it came with them or not (``::1``,
    ``[0::1]:5000``)."""
    text = text.strip().lower().removeprefix("http://").removeprefix("https://").rstrip("/")
    if text.startswith("["):
        inside, _, after = text[1:].partition("]")
        host, port = inside, after.removeprefix(":") or None
    elif text.count(":") > 1:
        host, port = text, None  # a bare IPv6 address: it has no port
    else:
        host, _, port_text = text.partition(":")
        port = port_text or None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host, port
    return (f"[{address.compressed}]" if address.version == 6 else str(address)), port


class InsecureHosts:
    """The ``--insecure-registry`` list: ``host`` matches every port, ``host:port`` one.
    An IPv6 address matches with or without brackets, in any of its spellings."""

    def __init__(self, hosts: Iterable[str] = ()) -> None:
        self._hosts = {_host_port(h) for h in hosts if h.strip()}

    def __call__(self, netloc: str) -> bool:
        host, port = _host_port(netloc)
        return (host, port) in self._hosts or (host, None) in self._hosts


_NO_INSECURE = InsecureHosts()
_DEFAULT_POLICY = RetryPolicy()


def _details(response: requests.Response) -> list[ErrorDetail]:
    """The registry's error codes, read with a cap; an unreadable body gives none."""
    try:
        body = response.raw.read(_MAX_ERROR_BODY, decode_content=True) if response.raw else b""
        data = json.loads(body or b"{}")
        errors = data.get("errors") if isinstance(data, dict) else None
    except (ValueError, OSError, requests.RequestException, AttributeError):
        return []
    out = []
    for item in errors if isinstance(errors, list) else []:
        if isinstance(item, dict) and isinstance(item.get("code"), str):
            message = item.get("message")
            out.append(ErrorDetail(item["code"][:64], str(message or "")[:200]))
    return out


def raise_for(response: requests.Response, what: str, sent: _Sent | None = None) -> None:
    """Turn an error status into a typed error carrying the registry's codes; a 401 says
    what was sent (``sent``: what this registry was shown; None when that is not known)."""
    status = response.status_code
    details = _details(response)
    response.close()
    if status == 401 and sent is not None:
        raise Unauthorized(status, what, details, by=sent.by, sent=sent.sent, hint=sent.hint)
    cls = {401: Unauthorized, 403: Denied, 404: NotFound}.get(status, RegistryError)
    raise cls(status, what, details)


@dataclass(frozen=True)
class _Sent:
    """What one request showed the registry: ``sent`` None for nothing (see Unauthorized)."""

    by: str
    sent: str | None
    hint: str = ""
    fixed_scopes: bool = False


class Transport:
    """Requests to one registry endpoint with one authenticator."""

    def __init__(
        self,
        registry: str,
        auth: Authenticator,
        insecure: Callable[[str], bool] = _NO_INSECURE,
        *,
        policy: RetryPolicy = _DEFAULT_POLICY,
        timeout: tuple[float, float] = (10.0, 120.0),
        pool_size: int = 16,
        sleep: Callable[[float], None] = time.sleep,
        sessions: Callable[[], requests.Session] | None = None,
        hint: str = "",
    ) -> None:
        """``hint``: where credentials for this registry could come from, said in the error
        when it refuses anonymous access (a command's options, for its user)."""
        self.registry = registry
        self._hint = hint
        self.scheme = "http" if insecure(registry) else "https"
        self.base_url = f"{self.scheme}://{registry}"
        self._netloc = urlsplit(self.base_url).netloc.lower()
        self._auth = auth
        self._policy = policy
        self._timeout = timeout
        self._pool_size = pool_size
        self._sleep = sleep
        self._sessions = sessions
        self._local = threading.local()
        self._ping_lock = threading.Lock()
        self._challenge: Challenge | None = None
        self._pinged = False
        self.tokens = TokenSource(registry, auth, self.send, insecure, hint=hint)

    # -- plain sending, with retries -------------------------------------------------------

    def session(self) -> requests.Session:
        """One session per thread: requests.Session is not documented as thread-safe.
        ``sessions`` (given) makes them, e.g. a guarded probe's (tailor/outbound.py)."""
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = self._sessions() if self._sessions else self._plain_session()
            session.headers["User-Agent"] = USER_AGENT
            self._local.session = session
        return session

    def _plain_session(self) -> requests.Session:
        session = requests.Session()
        session.trust_env = False  # no proxies or .netrc credentials from the environment
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=4, pool_maxsize=self._pool_size, max_retries=0
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        return session

    def send(
        self, method: str, url: str, *, retry: bool = True, **kwargs: Any
    ) -> requests.Response:
        """Send once, or with backoff on network errors and 408/429/5xx when ``retry``."""
        kwargs.setdefault("timeout", self._timeout)
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self.session().request(method, url, **kwargs)
            except _NETWORK_ERRORS as exc:
                # A name that does not resolve or a TLS failure is not retried: asking
                # again only delays the same answer (tailor/neterrors.py).
                failure = classify(exc)
                delay = self._policy.delay(attempt) if retry and failure.transient else None
                if delay is None:
                    host = urlsplit(url).netloc
                    tried = f" ({attempt} attempts)" if attempt > 1 else ""
                    raise TransportError(f"cannot reach {host}: {failure.what}{tried}") from None
                self._sleep(delay)
                continue
            if response.status_code not in RETRYABLE_STATUS or not retry:
                return response
            wait = parse_retry_after(response.headers.get("Retry-After"))
            delay = self._policy.delay(attempt, wait)
            if delay is None:
                return response
            response.close()
            self._sleep(delay)

    def backoff(self, attempt: int) -> None:
        """Wait as the retry policy says before a caller's own try ``attempt + 1``."""
        self._sleep(self._policy.delay(attempt) or 0.0)

    # -- authentication ---------------------------------------------------------------------

    def ping(self) -> Challenge | None:
        """GET /v2/ once, to learn how this registry wants us to authenticate."""
        with self._ping_lock:
            if self._pinged:
                return self._challenge
            url = f"{self.base_url}/v2/"
            response = self.send("GET", url, allow_redirects=False)
            with response:
                if response.status_code == 401:
                    self._challenge = parse_challenge(response.headers.get("WWW-Authenticate"))
                    if self._challenge is None:
                        raise AuthError(f"registry {self.registry} sent 401 without a challenge")
                elif response.status_code != 200:
                    raise_for(response, f"registry {self.registry} (GET /v2/)")
            self._pinged = True
            return self._challenge

    def _authorization(
        self, scopes: Sequence[str], fresh: bool = False, what: str = ""
    ) -> tuple[str | None, _Sent]:
        """The Authorization header for a request (None: send none), and what it shows."""
        by = f"registry {self.registry}"
        challenge = self.ping()
        if challenge is None:
            return None, _Sent(by, None, self._hint)
        if challenge.scheme == "basic":
            config = self._auth.authorization(None, sorted(scopes))
            if config.basic is None:
                return None, _Sent(by, None, self._hint)
            # requests builds the header; we only decide that it may be sent.
            request = requests.Request("GET", self.base_url, auth=config.basic)
            header = request.prepare().headers.get("Authorization")
            return header, _Sent(by, config.label or "the basic credentials", self._hint)
        if challenge.scheme == "bearer":
            grant = self.tokens.grant(challenge, scopes, fresh=fresh, what=what)
            return "Bearer " + grant.token, _Sent(by, grant.sent, self._hint, grant.fixed_scopes)
        raise AuthError(f"registry {self.registry} asks for unsupported auth {challenge.scheme!r}")

    def _same_host(self, url: str) -> bool:
        return urlsplit(url).netloc.lower() == self._netloc

    # -- the one entry point operations use ------------------------------------------------

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def request(
        self,
        method: str,
        url: str,
        *,
        scopes: Sequence[str],
        what: str,
        ok: Sequence[int] = (200,),
        headers: Mapping[str, str] | None = None,
        retry: bool = True,
        follow: bool = True,
        **kwargs: Any,
    ) -> requests.Response:
        """Send with auth, re-authenticating once on 401; raise a typed error unless ``ok``.

        ``follow=False`` answers a redirect as it is (to learn where it points)."""
        if not url.startswith(("http://", "https://")):
            url = self.url(url)
        # Streamed, so an error body can be read with a cap and large bodies never buffer.
        kwargs.setdefault("stream", True)
        fresh = False
        scope_list = list(scopes)
        for _ in range(2):
            response, sent = self._follow(
                method, url, scope_list, fresh, headers, retry, follow, what, kwargs
            )
            if response.status_code != 401 or self._challenge is None:
                break
            if self._challenge.scheme != "bearer":
                break
            # Token expired, or the registry wants more scope than we asked for: ask once more
            # (not more for a token that must cover only what the request names).
            again = parse_challenge(response.headers.get("WWW-Authenticate"))
            widen = sent is None or not sent.fixed_scopes
            if again is not None and again.scheme == "bearer" and widen:
                scope_list = sorted(set(scope_list) | set(again.scopes))
            if fresh:
                break
            response.close()
            fresh = True
        if response.status_code not in ok:
            raise_for(response, what, sent)
        return response

    def _follow(
        self,
        method: str,
        url: str,
        scopes: list[str],
        fresh: bool,
        headers: Mapping[str, str] | None,
        retry: bool,
        follow: bool,
        what: str,
        kwargs: dict[str, Any],
    ) -> tuple[requests.Response, _Sent | None]:
        """The answer, and what the last hop showed (None: another host, blob storage)."""
        for _ in range(MAX_REDIRECTS + 1):
            merged = dict(headers or {})
            sent = None
            if self._same_host(url):
                authorization, sent = self._authorization(scopes, fresh, what)
                if authorization:
                    merged["Authorization"] = authorization
            # Cross-host (blob storage): no Authorization, ever.
            response = self.send(
                method, url, headers=merged, allow_redirects=False, retry=retry, **kwargs
            )
            if not follow or response.status_code not in REDIRECTS or method not in ("GET", "HEAD"):
                return response, sent
            location = response.headers.get("Location")
            if not location:
                return response, sent
            response.close()
            url = urljoin(url, location)
            if urlsplit(url).scheme not in ("http", "https"):
                raise TransportError(f"registry {self.registry} redirected to a non-HTTP URL")
            if self.scheme == "https" and urlsplit(url).scheme == "http":
                raise TransportError(f"registry {self.registry} redirected from HTTPS to HTTP")
        raise TransportError(f"registry {self.registry}: too many redirects")
