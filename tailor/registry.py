"""The OCI Distribution API: the catalog, and for one repository its tags, manifests,
blobs, uploads and mounts."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import requests

from tailor.errors import (
    ConfigError,
    DigestMismatch,
    ManifestError,
    ProtocolError,
    RegistryError,
    TailorError,
)
from tailor.manifest import ACCEPT, MAX_MANIFEST, OCI_INDEX, Manifest, digest_of, parse_manifest
from tailor.transport import CATALOG_SCOPE, Transport, delete_scope, pull_scope, push_scope

__all__ = ["Repository", "catalog"]

# A listing page is a few KiB; one page larger than this is a broken or hostile server.
_MAX_PAGE = 8 * 1024 * 1024
# 10,000 pages of 100 names: far more than any registry we list, and a sure end.
_MAX_PAGES = 10_000
_MAX_REFERRER_PAGES = 100
_LINK = re.compile(r"<([^>]*)>([^<]*)")
_REL = re.compile(r';\s*rel\s*=\s*(?:"([^"]*)"|([^\s;,"]+))', re.IGNORECASE)


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


def _next_link(header: str | None) -> str | None:
    """The target of the ``rel="next"`` link of an RFC 5988 ``Link`` header, if any."""
    for target, params in _LINK.findall(header or ""):
        rel = _REL.search(params)
        if rel and "next" in (rel.group(1) or rel.group(2) or "").lower().split():
            return str(target)
    return None


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _page(response: requests.Response, key: str, what: str) -> list[str]:
    with response:
        raw = response.raw.read(_MAX_PAGE + 1, decode_content=True)
    if len(raw) > _MAX_PAGE:
        raise ProtocolError(f"{what}: a page larger than 8 MiB")
    try:
        body = json.loads(raw)
        if not isinstance(body, dict):
            raise ValueError
        entries = body.get(key) or []  # Distribution answers "tags": null for none
        if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
            raise ValueError
    except ValueError:
        raise ProtocolError(f"{what}: an unreadable page") from None
    return entries


def _index_entries(raw: bytes, what: str) -> list[dict[str, Any]]:
    """The ``manifests`` of an OCI index page, each a JSON object."""
    try:
        body = json.loads(raw)
        entries = body.get("manifests") if isinstance(body, dict) else None
        entries = entries or []
        if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
            raise ValueError
    except ValueError:
        raise ProtocolError(f"{what}: an unreadable page") from None
    return entries


def _digests(entries: Sequence[dict[str, Any]]) -> set[Any]:
    return {entry.get("digest") for entry in entries}


def _paged(
    transport: Transport,
    path: str,
    key: str,
    *,
    page_size: int,
    scopes: Sequence[str],
    what: str,
    max_pages: int = _MAX_PAGES,
) -> list[str]:
    """Every entry of a listing, following ``Link: <...>; rel="next"`` page by page.

    Bounded: a next page on another host, a page seen before or too many pages is an error."""
    if page_size < 1:
        raise ConfigError("a page size must be at least 1")
    url = transport.url(f"{path}?n={page_size}")
    seen = {url}
    out: list[str] = []
    for _ in range(max_pages):
        response = transport.request("GET", url, scopes=scopes, what=what)
        out += _page(response, key, what)
        target = _next_link(response.headers.get("Link"))
        if target is None:
            return out
        url = urljoin(response.url or url, target)
        # Only the registry itself continues its listing; the transport would send it our
        # token only on its own host anyway, but a foreign list is no answer of this registry.
        if _origin(url) != _origin(transport.base_url):
            raise ProtocolError(f"{what}: the next page is on another host")
        if url in seen:
            raise ProtocolError(f"{what}: the pages loop")
        seen.add(url)
    raise ProtocolError(f"{what}: more than {max_pages} pages")


def catalog(transport: Transport, *, page_size: int = 100) -> list[str]:
    """Every repository of the registry (``GET /v2/_catalog``, page by page)."""
    return _paged(
        transport,
        "/v2/_catalog",
        "repositories",
        page_size=page_size,
        scopes=[CATALOG_SCOPE],
        what="the registry catalog",
    )


class Repository:
    """One repository on one registry; ``push`` widens the token scope to pull,push."""

    def __init__(self, transport: Transport, repository: str, *, push: bool = False) -> None:
        self.transport = transport
        self.name = repository
        self.scopes = [push_scope(repository) if push else pull_scope(repository)]
        self._path = f"/v2/{repository}"
        self._manifests: dict[str, Manifest] = {}
        """Manifests read here, by digest: what a digest names never changes, so one that
        was read is not read again (the staging's check, then the copy's plan)."""

    def __str__(self) -> str:
        return f"{self.transport.registry}/{self.name}"

    # -- tags and manifests -----------------------------------------------------------------

    def tags(self, *, page_size: int = 100) -> list[str]:
        """Every tag (``GET .../tags/list``, page by page); NotFound for no such repository."""
        # A 404 stays NotFound here: for a name nobody vouched for it means "no such
        # repository". A caller that knows the repository exists (prune, which got the name
        # from the catalog) may read it as "no manifest in it".
        return _paged(
            self.transport,
            f"{self._path}/tags/list",
            "tags",
            page_size=page_size,
            scopes=self.scopes,
            what=f"tags of {self}",
        )

    def get_manifest(self, identifier: str) -> Manifest:
        known = self._manifests.get(identifier)
        if known is not None:
            return known
        what = f"manifest {self}{'@' if ':' in identifier else ':'}{identifier}"
        response = self.transport.request(
            "GET",
            f"{self._path}/manifests/{quote(identifier)}",
            scopes=self.scopes,
            what=what,
            headers={"Accept": ACCEPT},
            stream=True,
        )
        with response:
            raw = response.raw.read(MAX_MANIFEST + 1, decode_content=True)
        if len(raw) > MAX_MANIFEST:
            raise ManifestError(f"{what}: larger than 4 MiB")
        manifest = parse_manifest(raw, response.headers.get("Content-Type"))
        if identifier.startswith("sha256:") and manifest.digest != identifier:
            raise DigestMismatch(f"digest mismatch: {what} has content {manifest.digest}")
        self._manifests[manifest.digest] = manifest  # a tag's is kept by its digest only
        return manifest

    def has_manifest(self, identifier: str) -> bool:
        """Whether the manifest is there (``HEAD``, accepting the manifest types): a HEAD is
        no pull on Docker Hub's count, a GET is. 404 is False; any other failure raises."""
        response = self.transport.request(
            "HEAD",
            f"{self._path}/manifests/{quote(identifier)}",
            scopes=self.scopes,
            what=f"manifest {self}{'@' if ':' in identifier else ':'}{identifier}",
            ok=(200, 404),
            headers={"Accept": ACCEPT},
        )
        response.close()
        return response.status_code == 200

    def put_manifest(self, identifier: str, manifest: Manifest) -> str:
        return self._put_manifest(identifier, manifest)[0]

    def put_referrer(self, identifier: str, manifest: Manifest) -> tuple[str, str | None]:
        """Push a manifest that has a ``subject``: its digest, and the registry's
        ``OCI-Subject`` header (the subject it processed: it lists the manifest in its
        Referrers API), or None when it sent none."""
        return self._put_manifest(identifier, manifest)

    def _put_manifest(self, identifier: str, manifest: Manifest) -> tuple[str, str | None]:
        what = f"push of manifest {self}:{identifier}"
        response = self.transport.request(
            "PUT",
            f"{self._path}/manifests/{quote(identifier)}",
            scopes=self.scopes,
            what=what,
            ok=(200, 201),
            headers={"Content-Type": manifest.media_type},
            data=manifest.raw,
        )
        response.close()
        stored = response.headers.get("Docker-Content-Digest")
        if stored and stored != digest_of(manifest.raw):
            raise DigestMismatch(f"digest mismatch: registry stored {what} as {stored}")
        return digest_of(manifest.raw), response.headers.get("OCI-Subject")

    def referrers(self, digest: str, *, limit: int | None = None) -> list[dict[str, Any]] | None:
        """The descriptors the Referrers API lists for ``digest`` (``GET
        .../referrers/DIGEST``, page by page), or None when the registry has no such API: any
        answer but 200 with an OCI index (Distribution 2.8 answers 404, others 400, 405
        or 406), as go-containerregistry reads it. With ``limit``, no further page is read
        once more than ``limit`` distinct digests are listed (the caller refuses that many)."""
        what = f"referrers of {self}@{digest}"
        url = self.transport.url(f"{self._path}/referrers/{quote(digest)}")
        seen = {url}
        out: list[dict[str, Any]] = []
        for _ in range(_MAX_REFERRER_PAGES):
            response = self.transport.request(
                "GET",
                url,
                scopes=self.scopes,
                what=what,
                ok=(200, 400, 404, 405, 406),
                headers={"Accept": OCI_INDEX},
            )
            with response:
                kind = response.headers.get("Content-Type", "").split(";")[0].strip()
                if response.status_code != 200 or kind != OCI_INDEX:
                    if not out:
                        return None
                    raise ProtocolError(f"{what}: a next page that is no OCI index")
                raw = response.raw.read(MAX_MANIFEST + 1, decode_content=True)
            if len(raw) > MAX_MANIFEST:
                raise ProtocolError(f"{what}: a page larger than 4 MiB")
            out += _index_entries(raw, what)
            target = _next_link(response.headers.get("Link"))
            if target is None or (limit is not None and len(_digests(out)) > limit):
                return out
            url = urljoin(response.url or url, target)
            if _origin(url) != _origin(self.transport.base_url):
                raise ProtocolError(f"{what}: the next page is on another host")
            if url in seen:
                raise ProtocolError(f"{what}: the pages loop")
            seen.add(url)
        raise ProtocolError(f"{what}: more than {_MAX_REFERRER_PAGES} pages")

    def delete_manifest(self, digest: str) -> None:
        """Delete the manifest ``digest`` and its tags; one already gone (404) is fine."""
        response = self.transport.request(
            "DELETE",
            f"{self._path}/manifests/{quote(digest)}",
            scopes=[delete_scope(self.name)],
            what=f"manifest {self}@{digest}",
            ok=(202, 404),
        )
        response.close()

    # -- blobs ------------------------------------------------------------------------------

    def has_blob(self, digest: str) -> bool:
        response = self.transport.request(
            "HEAD",
            f"{self._path}/blobs/{digest}",
            scopes=self.scopes,
            what=f"blob {self}@{digest}",
            ok=(200, 404),
        )
        response.close()
        return response.status_code == 200

    def open_blob(self, digest: str, offset: int = 0) -> requests.Response:
        """A streaming GET of the blob from ``offset`` (Range); follows storage redirects."""
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        return self.transport.request(
            "GET",
            f"{self._path}/blobs/{digest}",
            scopes=self.scopes,
            what=f"blob {self}@{digest}",
            ok=(200, 206),
            headers=headers,
            stream=True,
        )

    def mount_blob(self, digest: str, source: str) -> str | None:
        """Cross-repository mount from ``source``; None when mounted, else an upload URL."""
        response = self.transport.request(
            "POST",
            f"{self._path}/blobs/uploads/?mount={quote(digest)}&from={quote(source)}",
            scopes=[*self.scopes, pull_scope(source)],
            what=f"mount of blob {digest} into {self}",
            ok=(201, 202),
        )
        response.close()
        if response.status_code == 201:
            return None
        return self._location(response)

    def start_upload(self) -> str:
        response = self.transport.request(
            "POST",
            f"{self._path}/blobs/uploads/",
            scopes=self.scopes,
            what=f"blob upload to {self}",
            ok=(202,),
        )
        response.close()
        return self._location(response)

    def cancel_upload(self, location: str) -> None:
        """Best effort: drop an upload session we will not use."""
        try:
            self.transport.request(
                "DELETE", location, scopes=self.scopes, what="upload cancel", ok=(204, 404)
            ).close()
        except TailorError:
            pass

    def finish_upload(self, location: str, digest: str, body: Iterable[bytes]) -> None:
        """Monolithic PUT of the whole blob to an upload session; not retried (a stream)."""
        response = self.transport.request(
            "PUT",
            _with_query(location, digest=digest),
            scopes=self.scopes,
            what=f"upload of blob {digest} to {self}",
            ok=(201,),
            headers={"Content-Type": "application/octet-stream"},
            data=body,
            retry=False,
        )
        response.close()

    def _location(self, response: requests.Response) -> str:
        location = response.headers.get("Location")
        if not location:
            raise RegistryError(response.status_code, f"{self}: upload without a Location")
        return urljoin(self.transport.url(self._path + "/"), location)
