"""`broker registry-config`: a Distribution 2.8 configuration that trusts this broker. Pure."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

__all__ = ["registry_config"]


def registry_config(
    *,
    addr: str,
    storage: str,
    realm: str,
    service: str,
    issuer: str,
    cert: Path,
    root: str | None = None,
    bucket: str | None = None,
    region: str | None = None,
    endpoint: str | None = None,
    http_secret: str | None = None,
) -> dict[str, Any]:
    """The config as a dict (JSON is YAML, so it can be written as JSON).

    S3 credentials are deliberately absent: the registry takes them from its own
    environment (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or an instance role).
    """
    if storage == "filesystem":
        if not root:
            raise ValueError("--storage filesystem needs --root")
        store: dict[str, Any] = {"filesystem": {"rootdirectory": root}}
    elif storage == "s3":
        if not (bucket and region):
            raise ValueError("--storage s3 needs --bucket and --region")
        s3: dict[str, Any] = {
            "bucket": bucket,
            "region": region,
            "v4auth": True,
            "secure": not (endpoint or "").startswith("http://"),
        }
        if endpoint:
            s3["regionendpoint"] = endpoint
        if root:
            s3["rootdirectory"] = root
        store = {"s3": s3}
    else:
        raise ValueError("--storage is filesystem or s3")
    store["delete"] = {"enabled": True}
    store["cache"] = {"blobdescriptor": "inmemory"}
    return {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": store,
        "http": {
            "addr": addr,
            # Every replica behind one load balancer needs the same secret.
            "secret": http_secret or secrets.token_urlsafe(32),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
        "auth": {
            "token": {
                "realm": realm,
                "service": service,
                "issuer": issuer,
                "rootcertbundle": str(cert),
            }
        },
        "health": {"storagedriver": {"enabled": True, "interval": "10s", "threshold": 3}},
    }
