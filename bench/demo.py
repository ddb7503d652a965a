"""`make demo`: one private-image push, end to end, on this machine's loopback.

Generates broker keys and two client key pairs (the Cloud Controller and the
staging task) in a scratch folder, starts a private upstream registry with token
auth (as Docker Hub, GHCR, Quay and Harbor have; its realm a little token server)
holding a generated two-platform image, `broker serve` and the internal registry
it secures (its token realm is the broker), runs `tailor push` with the password
in CF_DOCKER_PASSWORD (the broker trades it for a pull token: the staging task
never holds it), gets the app's pull credential as the platform would for
its DesiredLRP, pulls the staged image by digest with skopeo as a cell would,
through the broker's realm with that credential, prints it and the audit trail,
and stops everything.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import requests

from broker.audit import AuditLog
from broker.store import open_store
from tests.support.brokerproc import broker_env, broker_registry, provision, start_broker
from tests.support.clients import new_client
from tests.support.images import Layout, image, index
from tests.support.processes import stop
from tests.support.registry import Registry, start_registry
from tests.support.tokenserver import TokenServer


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stager-demo-") as tmp:
        root = Path(tmp)
        password = secrets.token_urlsafe(18)  # only in this process's memory and env
        running: list[Registry] = []
        broker = None
        registry: subprocess.Popen[bytes] | None = None
        realm: TokenServer | None = None
        try:
            step("building a two-platform image (4 layers each) as an OCI layout")
            layout = Layout(root / "layout")
            config = {
                "Cmd": ["/app/server", "--port", "8080"],
                "WorkingDir": "/app",
                "ExposedPorts": {"8080/tcp": {}},
            }
            amd = image(layout, seed=11, layers=4, layer_size=512 * 1024, config=config)
            arm = image(
                layout, seed=12, layers=4, layer_size=512 * 1024, arch="arm64", config=config
            )
            layout.tag("v1", index(layout, [amd, arm]))

            step("starting a private upstream registry with token auth, and its token server")
            realm = TokenServer("developer", password, root / "upstream-realm")
            upstream = start_registry(root / "upstream", token=realm.registry_auth())
            running.append(upstream)
            src = f"{upstream.host}/acme/web:v1"
            authfile = root / "auth.json"
            auth = base64.b64encode(f"developer:{password}".encode()).decode()
            authfile.write_text(json.dumps({"auths": {upstream.host: {"auth": auth}}}))
            authfile.chmod(0o600)
            step(f"pushing the image to {src} with skopeo")
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--all",
                    "--authfile",
                    str(authfile),
                    "--dest-tls-verify=false",
                    f"oci:{layout.path}:v1",
                    f"docker://{src}",
                ],
                check=True,
            )
            authfile.unlink()

            step("broker keys init; registering the cc and tailor clients")
            env = broker_env(root, f"sqlite:///{root / 'broker.sqlite'}", "unused")
            # The broker trades the user's password for an upstream pull token at
            # redemption (the default); the upstream and its realm are on loopback,
            # which the broker may reach only when told, spoken to in plain HTTP.
            env.update(
                BROKER_OUTBOUND_ALLOW="127.0.0.0/8",
                BROKER_INSECURE_REGISTRIES="127.0.0.1",
            )
            env["BROKER_LOG_LEVEL"] = "WARNING"
            keys = root / "client-keys"
            keys.mkdir(mode=0o700)
            cc, tailor = new_client("cloud-controller", "cc"), new_client("tailor", "tailor")
            key_files = provision(env, keys, [cc, tailor])
            broker = start_broker(env, root / "broker.log", self_audience=True)
            env["BROKER_PUBLIC_URL"] = broker.url
            step(f"broker serving at {broker.url}")
            registry, internal_host = broker_registry(
                env, root, "internal", "--storage", "filesystem", "--root", str(root / "store")
            )
            step(f"internal registry at {internal_host}, its token realm the broker")

            staging, app = str(uuid.uuid4()), str(uuid.uuid4())
            step(
                f"tailor push --docker-image {src} --docker-username developer "
                f"(password from CF_DOCKER_PASSWORD; the broker trades it for a pull token), "
                f"staging {staging}"
            )
            push_env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
            push_env.update(CF_DOCKER_PASSWORD=password, TAILOR_CACHE_DIR=str(root / "cache"))
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tailor.cli",
                    "push",
                    "--docker-image",
                    src,
                    "--docker-username",
                    "developer",
                    "--app-guid",
                    app,
                    "--staging-guid",
                    staging,
                    "--user",
                    "developer@example.com",
                    "--internal-registry",
                    internal_host,
                    "--insecure-registry",
                    upstream.host,
                    "--insecure-registry",
                    internal_host,
                    "--insecure-registry",
                    broker.url.removeprefix("http://"),  # the realm, plain HTTP on loopback
                    "--broker-url",
                    broker.url,
                    "--cc-client",
                    "cloud-controller",
                    "--cc-key",
                    str(key_files[cc.name]),
                    "--tailor-client",
                    "tailor",
                    "--tailor-key",
                    str(key_files[tailor.name]),
                ],
                env=push_env,
                stdout=subprocess.PIPE,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                return out.returncode
            ref = out.stdout.strip().splitlines()[-1]

            step("the platform gets the app's pull credential (for its DesiredLRP)")
            got = requests.post(
                f"{broker.url}/v1/apps/{app}/pull-credentials",
                headers=cc.headers(broker.url),
                timeout=30,
            )
            got.raise_for_status()
            user, secret = got.json()["username"], got.json()["password"]
            cell_auth = root / "cell-auth.json"  # what a cell makes of the DesiredLRP's creds
            cell_auth.touch(mode=0o600)
            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            cell_auth.write_text(json.dumps({"auths": {internal_host: {"auth": token}}}))
            del secret, token
            step(f"as a cell: pulling {ref} with skopeo, by digest, as {user}")
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--all",
                    "--authfile",
                    str(cell_auth),
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"oci:{root / 'pulled'}:check",
                ],
                check=True,
            )

            step("audit trail")
            store = open_store(f"sqlite:///{root / 'broker.sqlite'}")
            for _ in range(300):  # the broker places new events in its log within a second
                with store.transaction(write=False) as tx:
                    if not tx.pending_count():
                        break
                time.sleep(0.05)
            for e in AuditLog(store, None, origin="demo").page(0, 1000):
                what = e.staging_guid or e.app_guid or e.detail.get("role", "")
                reason = f" ({e.reason})" if e.reason else ""
                print(f"    {e.seq:>3} {e.at} {e.event:<24} {e.client or '':<18} {what}{reason}")
            store.close()
            step(f"done in {time.monotonic() - started:.1f} s; the app runs from:")
            print(ref)
        finally:
            if registry is not None:
                stop(registry)
            if broker is not None:
                broker.stop()
            for reg in running:
                reg.stop()
            if realm is not None:
                realm.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
