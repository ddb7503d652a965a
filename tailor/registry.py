"""The OCI Distribution API for one repository: manifests, blobs, uploads, mounts."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit, urlunsplit

import requests

from tailor.errors import DigestMismatch, ManifestError, RegistryError, TailorError
from tailor.manifest import ACCEPT, MAX_MANIFEST, Manifest, digest_of, parse_manifest
from tailor.transport import Transport, pull_scope, push_scope

__all__ = ["Repository"]


def _with_query(url: str, **params: str) -> str:
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True) + list(params.items())
    return urlunsplit(parts._replace(query=urlencode(query)))


class Repository:
    """One repository on one registry; ``push`` widens the token scope to pull,push."""

    def __init__(self, transport: Transport, repository: str, *, push: bool = False) -> None:
        self.transport = transport
        self.name = repository
        self.scopes = [push_scope(repository) if push else pull_scope(repository)]
        self._path = f"/v2/{repository}"

    def __str__(self) -> str:
        return f"{self.transport.registry}/{self.name}"

    # -- manifests --------------------------------------------------------------------------

    def get_manifest(self, identifier: str) -> Manifest:
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
        return manifest

    def put_manifest(self, identifier: str, manifest: Manifest) -> str:
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
        return digest_of(manifest.raw)

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
