"""registries.d (containers-registries.d(5)): where an image's simple-signing signatures
are stored, and reading them from there.

A signature of manifest ``sha256:HEX`` of ``host/ns/app`` is at
``BASE/ns/app@sha256=HEX/signature-1``, ``-2`` and so on, up to the first one missing.
``BASE`` is the ``lookaside`` (or its old name ``sigstore``) of the most specific
registries.d section that names one, walking the same scopes as the policy, then
``default-docker``, then containers/image's built-in default. ``file://`` bases are read
from disk, ``http(s)://`` ones with a GET: 404 ends the list, any other answer but 200
is an error, as in containers/image.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

from tailor.errors import ConfigError, TailorError
from tailor.reference import Reference
from tailor.trust.policy import scopes

__all__ = [
    "HttpGet",
    "LookasideError",
    "RegistriesD",
    "Section",
    "checked_url",
    "default_registries_d",
    "http_get",
    "load_registries_d",
    "parse_section",
    "read_signatures",
    "signature_urls",
]

MAX_SIGNATURE = 4 << 20
MAX_SIGNATURES = 128
"""A bound on one manifest's signatures (containers/image has none)."""
HTTP_DEADLINE = 30.0
"""Seconds one lookaside GET may take, whole; LIST_DEADLINE for one manifest's list."""
LIST_DEADLINE = 120.0
_MAX_CONFIG = 1 << 20

HttpGet = Callable[[str], tuple[int, bytes]]
"""``url -> (status, body)``, the body at most MAX_SIGNATURE + 1 bytes."""


class LookasideError(TailorError):
    """The signature storage could not be read: no verdict can rest on it."""


@dataclass(frozen=True)
class Section:
    lookaside: str | None = None
    use_sigstore_attachments: bool | None = None


@dataclass(frozen=True)
class RegistriesD:
    default: Section | None = None
    docker: dict[str, Section] = field(default_factory=dict)
    source: str = "registries.d"

    def _sections(self, image: Reference) -> list[Section]:
        """The sections that apply to ``image``, the most specific first."""
        out = [self.docker[s] for s in scopes(image) if s in self.docker]
        return out if self.default is None else [*out, self.default]

    def lookaside_for(self, image: Reference) -> str:
        """The base URL of ``image``'s signatures (the first section that names one)."""
        named = [s.lookaside for s in self._sections(image) if s.lookaside is not None]
        return named[0] if named else _builtin_lookaside()

    def use_attachments(self, image: Reference) -> bool:
        """Whether ``image``'s sigstore signatures are read from ``sha256-HEX.sig`` tags."""
        said = [
            s.use_sigstore_attachments
            for s in self._sections(image)
            if s.use_sigstore_attachments is not None
        ]
        return bool(said and said[0])


def _builtin_lookaside() -> str:
    if os.geteuid() == 0:
        return "file:///var/lib/containers/sigstore"
    return "file://" + str(Path.home() / ".local/share/containers/sigstore")


def default_registries_d() -> Path:
    """Where containers/image looks when no directory is given."""
    user = Path.home() / ".config/containers/registries.d"
    return user if user.exists() else Path("/etc/containers/registries.d")


def parse_section(value: object, where: str) -> Section:
    """One registries.d section (a mapping, or nothing); ConfigError when out of shape."""
    if value is None:
        return Section()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: a mapping expected")
    # lookaside wins over its old name (an empty one does not); the staging (write) keys
    # are not read here.
    url = value.get("lookaside") or value.get("sigstore")
    attach = value.get("use-sigstore-attachments")
    if attach is not None and not isinstance(attach, bool):
        raise ConfigError(f"{where}: use-sigstore-attachments must be true or false")
    return Section(checked_url(url, where) if url else None, attach)


def checked_url(url: object, where: str) -> str:
    """A lookaside URL that can be read: ``file://``, ``http://`` or ``https://`` with a
    path or host that parses, and no credentials in it (the URL is named in errors, which
    reach the audit log); ConfigError (one line) otherwise. Until it is known to hold no
    credentials, the URL is not repeated in the error."""
    if not isinstance(url, str):
        raise ConfigError(f"{where}: lookaside must be a URL")
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a bad port raises here
    except ValueError as exc:
        raise ConfigError(f"{where}: a lookaside is not a URL: {exc}") from None
    if "@" in parts.netloc:
        raise ConfigError(f"{where}: a lookaside URL must not carry credentials")
    if parts.scheme not in {"file", "http", "https"}:
        raise ConfigError(f"{where}: lookaside {url!r}: file, http or https only")
    if parts.scheme != "file" and not parts.hostname:
        raise ConfigError(f"{where}: lookaside {url!r} names no host")
    return url


def load_registries_d(directory: Path) -> RegistriesD:
    """Every ``*.yaml`` file of ``directory``, in name order; a directory that does not
    exist is an empty configuration. A section defined in two files is an error."""
    import yaml

    if not directory.is_dir():
        if directory.exists():
            raise ConfigError(f"registries.d {directory} is not a directory")
        return RegistriesD(source=str(directory))
    default: Section | None = None
    default_from = ""
    docker: dict[str, Section] = {}
    docker_from: dict[str, str] = {}
    for path in sorted(p for p in directory.iterdir() if p.name.endswith(".yaml")):
        try:
            with path.open("rb") as f:
                text = f.read(_MAX_CONFIG + 1)
            if len(text) > _MAX_CONFIG:
                raise ConfigError(f"parsing {path}: larger than 1 MiB")
            doc = yaml.safe_load(text)
        except OSError as exc:
            raise ConfigError(f"reading {path}: {exc.strerror or exc}") from None
        except yaml.YAMLError as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise ConfigError(f"parsing {path}: not YAML: {first}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise ConfigError(f"parsing {path}: a mapping expected")
        if "default-docker" in doc:
            if default is not None:
                raise ConfigError(f'"default-docker" defined both in "{default_from}" and "{path}"')
            default = parse_section(doc["default-docker"], f"{path}: default-docker")
            default_from = str(path)
        scoped = doc.get("docker") or {}
        if not isinstance(scoped, dict):
            raise ConfigError(f"parsing {path}: docker must be a mapping of scopes")
        for scope, value in scoped.items():
            scope = str(scope)
            if scope in docker:
                raise ConfigError(
                    f'"docker" namespace "{scope}" defined both in "{docker_from[scope]}" '
                    f'and "{path}"'
                )
            docker[scope] = parse_section(value, f"{path}: docker {scope}")
            docker_from[scope] = str(path)
    return RegistriesD(default, docker, str(directory))


def signature_urls(base: str, image: Reference, digest: str) -> Callable[[int], str]:
    """``n -> the URL of signature n`` (from 1) of manifest ``digest`` of ``image``."""
    algo, _, hexpart = digest.partition(":")
    return lambda n: f"{base}/{image.repository}@{algo}={hexpart}/signature-{n}"


def read_signatures(
    config: RegistriesD, image: Reference, digest: str, http_get: HttpGet
) -> list[bytes]:
    """The stored signature blobs of manifest ``digest``, in order; LookasideError when
    the storage cannot be read (an answer other than 200 or 404, an unreadable file)."""
    base = config.lookaside_for(image)
    url_of = signature_urls(base, image, digest)
    scheme = urlsplit(base).scheme
    if scheme not in {"file", "http", "https"}:
        raise LookasideError(f"Unsupported scheme when reading signature from {url_of(1)}")
    out: list[bytes] = []
    started = time.monotonic()
    for n in range(1, MAX_SIGNATURES + 2):
        if n > MAX_SIGNATURES:
            raise LookasideError(f"more than {MAX_SIGNATURES} signatures of {digest}")
        if time.monotonic() - started > LIST_DEADLINE:
            raise LookasideError(f"reading the signatures of {digest}: more than 120 s")
        url = url_of(n)
        if scheme == "file":
            path = Path(unquote(urlsplit(url).path))
            try:
                with path.open("rb") as f:
                    blob = f.read(MAX_SIGNATURE + 1)
            except FileNotFoundError:
                break
            except OSError as exc:
                raise LookasideError(f"reading signature from {url}: {exc.strerror}") from None
        else:
            status, blob = http_get(url)
            if status == 404:
                break
            if status != 200:
                raise LookasideError(f"reading signature from {url}: status {status}")
        if len(blob) > MAX_SIGNATURE:
            raise LookasideError(f"signature {url} is larger than 4 MiB")
        out.append(blob)
    return out


def http_get(url: str) -> tuple[int, bytes]:
    """A lookaside GET: no credentials (not even ``.netrc``'s) and no proxy from the
    environment, TLS verified against the system's CAs, redirects followed (as
    containers/image does), the body cut at MAX_SIGNATURE + 1 bytes, and the whole GET
    given HTTP_DEADLINE seconds."""
    import requests

    started = time.monotonic()
    try:
        with requests.Session() as session:
            session.trust_env = False
            with session.get(url, timeout=(10, 10), stream=True) as answer:
                body = b""
                if answer.status_code == 200:
                    for chunk in answer.iter_content(64 << 10):
                        body += chunk
                        if len(body) > MAX_SIGNATURE:
                            break
                        if time.monotonic() - started > HTTP_DEADLINE:
                            raise LookasideError(
                                f"reading signature from {url}: more than {HTTP_DEADLINE:.0f} s"
                            )
                return answer.status_code, body
    except requests.RequestException as exc:
        raise LookasideError(f"reading signature from {url}: {type(exc).__name__}") from None
