"""`tailor push`: what the platform does at `cf push --docker-image` for a private image.

As the cc client it mints a staging token for the user's registry credentials,
then runs the staging as the Stager would: `tailor stage` in a child process with
the token in its environment (never on its command line), and prints the staged,
digest-pinned image. The password comes only from CF_DOCKER_PASSWORD.

A public image (no username) staged into the internal registry gets a staging
too when the broker is configured (URL and both keys), minted without
credentials: a registry the broker secures lets a tailor push only into a
staging it holds open. Without a broker, a public image is staged with no token.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

from tailor.assertion import load_client_key
from tailor.broker_client import BrokerClient, BrokerError, insecure_broker_allowed
from tailor.errors import ConfigError, TailorError

__all__ = ["PushRequest", "push"]


@dataclass
class PushRequest:
    docker_image: str
    app_guid: str
    broker_url: str
    cc_client: str
    cc_key: str
    tailor_client: str
    tailor_key: str
    docker_username: str | None = None
    staging_guid: str | None = None
    internal_registry: str | None = None
    insecure: tuple[str, ...] = ()
    mount_from: tuple[str, ...] = ()
    space_guid: str | None = None
    user: str | None = None
    ttl_seconds: int | None = None


def push(req: PushRequest) -> str:
    """Stage ``req.docker_image``; returns the digest-pinned image the app will run from."""
    staging_guid = req.staging_guid or str(uuid.uuid4())
    password = os.environ.get("CF_DOCKER_PASSWORD", "")
    if req.docker_username and not password:
        raise ConfigError("--docker-username needs the password in CF_DOCKER_PASSWORD")
    if password and not req.docker_username:
        raise ConfigError("CF_DOCKER_PASSWORD is set but --docker-username is not")
    env = {k: v for k, v in os.environ.items() if k not in ("CF_DOCKER_PASSWORD", "STAGING_TOKEN")}
    cc: BrokerClient | None = None
    brokered = bool(req.broker_url and req.cc_key and req.tailor_key)
    if req.docker_username or (req.internal_registry and brokered):
        cc = BrokerClient(
            req.broker_url,
            load_client_key(req.cc_client, req.cc_key),
            allow_http=insecure_broker_allowed(),
        )
        body: dict[str, str | int] = {
            "app_guid": req.app_guid,
            "staging_guid": staging_guid,
            "image": req.docker_image,
            "tailor": req.tailor_client,
        }
        if req.docker_username:
            body.update(username=req.docker_username, password=password)
        for key, value in (
            ("space_guid", req.space_guid),
            ("user", req.user),
            ("ttl_seconds", req.ttl_seconds),
        ):
            if value is not None:
                body[key] = value
        minted = cc.mint(**body)
        env["STAGING_TOKEN"] = str(minted["token"])
    if req.broker_url and req.tailor_key:
        # The staging task's identity: for the token and for a broker-secured registry.
        env.update(
            TAILOR_BROKER_URL=req.broker_url,
            TAILOR_CLIENT_ID=req.tailor_client,
            TAILOR_CLIENT_KEY=req.tailor_key,
        )
    del password
    with tempfile.TemporaryDirectory(prefix="tailor-push-") as tmp:
        result_file = Path(tmp) / "result.json"
        argv = [
            sys.executable,
            "-m",
            "tailor.cli",
            "stage",
            "--image",
            req.docker_image,
            "--staging-guid",
            staging_guid,
            "--app-guid",
            req.app_guid,
            "--result-file",
            str(result_file),
        ]
        if req.internal_registry:
            argv += ["--internal-registry", req.internal_registry]
        for host in req.insecure:
            argv += ["--insecure-registry", host]
        for repo in req.mount_from:
            argv += ["--mount-from", repo]
        # The staging task's stderr is the user's staging log.
        done = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            if cc is not None:
                # If the staging died without reporting, close it so the credentials go
                # now; if it did report, the broker answers 409 and nothing changes.
                _cancel_quietly(cc, staging_guid)
            raise TailorError(f"staging {staging_guid} failed (see the staging log above)")
        try:
            result = json.loads(result_file.read_text())
            return str(result["lifecycle_metadata"]["docker_image"])
        except (OSError, ValueError, KeyError, TypeError):
            raise TailorError(f"staging {staging_guid} wrote no readable result") from None


def _cancel_quietly(cc: BrokerClient, staging_guid: str) -> None:
    try:
        cc.cancel(staging_guid)
    except BrokerError:
        pass
