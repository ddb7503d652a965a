"""A Distribution whose token auth is a `broker serve` (config from `broker registry-config`),
with a private upstream holding a two-platform image ``acme/web:v1``."""

from __future__ import annotations

import base64
import json
import sqlite3
import subprocess
from dataclasses import dataclass
from pathlib import Path

import requests

from tests.support.broker_api import registry_token
from tests.support.brokerproc import BrokerProcess, settled
from tests.support.cli import Run, insecure, tailor_cli, tailor_env
from tests.support.clients import Client
from tests.support.credentials import UPSTREAM_PASSWORD, UPSTREAM_USER
from tests.support.registry import Registry

MANIFEST_TYPES = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
    ]
)


@dataclass
class Secured:
    tmp: Path
    broker: BrokerProcess
    env: dict[str, str]
    internal_host: str
    internal_proc: subprocess.Popen[bytes]
    upstream: Registry
    clients: dict[str, Client]
    keys: dict[str, Path]

    def token(self, who: str, *scopes: str, basic: bool = True) -> requests.Response:
        return registry_token(self.broker.url, self.clients[who], *scopes, basic=basic)

    def access(self, who: str, *scopes: str) -> list[dict]:
        answer = self.token(who, *scopes)
        assert answer.status_code == 200, answer.text
        claims = answer.json()["token"].split(".")[1]
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["access"]

    def manifest(self, who: str, repo: str, ref: str) -> requests.Response:
        token = self.token(who, f"repository:{repo}:pull").json()["token"]
        return requests.get(
            f"http://{self.internal_host}/v2/{repo}/manifests/{ref}",
            headers={"Authorization": f"Bearer {token}", "Accept": MANIFEST_TYPES},
            timeout=10,
        )

    def blob(self, who: str, repo: str, digest: str) -> bytes:
        token = self.token(who, f"repository:{repo}:pull").json()["token"]
        answer = requests.get(
            f"http://{self.internal_host}/v2/{repo}/blobs/{digest}",
            headers={"Authorization": f"Bearer {token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.status_code
        return answer.content

    def push(
        self, staging: str, app: str, *extra: str, image: str | None = None, public: bool = False
    ) -> Run:
        """`tailor push` of ``image`` (the upstream's acme/web:v1) as the platform runs it."""
        secret = {} if public else {"CF_DOCKER_PASSWORD": UPSTREAM_PASSWORD}
        return tailor_cli(
            "push",
            "--docker-image",
            image or f"{self.upstream.host}/acme/web:v1",
            *([] if public else ["--docker-username", UPSTREAM_USER]),
            "--app-guid",
            app,
            "--staging-guid",
            staging,
            "--internal-registry",
            self.internal_host,
            *insecure(
                self.upstream.host, self.internal_host, self.broker.url.removeprefix("http://")
            ),
            "--broker-url",
            self.broker.url,
            "--cc-client",
            "cloud-controller",
            "--cc-key",
            str(self.keys["cc"]),
            "--tailor-client",
            "tailor-1",
            "--tailor-key",
            str(self.keys["tailor"]),
            *extra,
            env=tailor_env(self.tmp, cache="cache", **secret),
        )

    def sql(self, query: str) -> list[tuple]:
        """Read the broker's SQLite store directly."""
        conn = sqlite3.connect(self.tmp / "broker.sqlite")
        try:
            return [tuple(r) for r in conn.execute(query)]
        finally:
            conn.close()

    def audit_all(self) -> list[tuple]:
        settled(f"sqlite:///{self.tmp / 'broker.sqlite'}")
        return self.sql("SELECT event, client, reason, detail FROM audit_events ORDER BY seq")

    def audit(self) -> list[tuple]:
        settled(f"sqlite:///{self.tmp / 'broker.sqlite'}")
        return self.sql(
            "SELECT event, client, reason, detail FROM audit_events"
            " WHERE event='registry.token' ORDER BY seq"
        )
