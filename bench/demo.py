"""`make demo`: copy a private multi-layer image into an internal registry, end to end.

Until the broker lands this is the Tailor's half of a staging: a private upstream
Distribution (htpasswd) holding a generated two-platform image, an internal
Distribution, `tailor copy` between them, then skopeo pulls the result back by
digest to prove it. Everything runs on loopback and is stopped at the end.
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
from pathlib import Path

from tests.support.images import Layout, image, index
from tests.support.registry import start_registry


def step(text: str) -> None:
    print(f"==> {text}", flush=True)


def main() -> int:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="stager-demo-") as tmp:
        root = Path(tmp)
        password = secrets.token_urlsafe(18)  # lives only in this process and its children
        step("building a two-platform image (4 layers each) as an OCI layout")
        layout = Layout(root / "layout")
        amd = image(layout, seed=11, layers=4, layer_size=512 * 1024)
        arm = image(layout, seed=12, layers=4, layer_size=512 * 1024, arch="arm64")
        layout.tag("v1", index(layout, [amd, arm]))

        step("starting a private upstream registry (htpasswd) and an internal registry")
        upstream = start_registry(root / "upstream", htpasswd=("developer", password))
        internal = start_registry(root / "internal")
        try:
            authfile = root / "auth.json"
            token = base64.b64encode(f"developer:{password}".encode()).decode()
            authfile.write_text(json.dumps({"auths": {upstream.host: {"auth": token}}}))
            authfile.chmod(0o600)
            src = f"{upstream.host}/acme/web:v1"
            step(f"pushing it to {src} with skopeo")
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
            dst = f"{internal.host}/staging/{secrets.token_hex(8)}:staged"
            step(f"tailor copy {src} {dst}")
            env = dict(
                os.environ, TAILOR_SRC_PASSWORD=password, TAILOR_CACHE_DIR=str(root / "cache")
            )
            out = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "tailor.cli",
                    "copy",
                    "--insecure-registry",
                    upstream.host,
                    "--insecure-registry",
                    internal.host,
                    "--src-username",
                    "developer",
                    src,
                    dst,
                ],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
                check=False,
            )
            if out.returncode != 0:
                return out.returncode
            ref = out.stdout.strip().splitlines()[-1]
            step(f"pulling {ref} back with skopeo, by digest")
            subprocess.run(
                [
                    "skopeo",
                    "copy",
                    "--quiet",
                    "--all",
                    "--src-tls-verify=false",
                    f"docker://{ref}",
                    f"oci:{root / 'pulled'}:check",
                ],
                check=True,
            )
            step(f"done in {time.monotonic() - started:.1f} s; staged image:")
            print(ref)
        finally:
            upstream.stop()
            internal.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
