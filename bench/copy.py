"""Copy benchmark: `tailor copy` beside `skopeo copy` and a bare `curl | curl` stream.

Every timed copy goes into a freshly started destination registry, and the three
tools alternate round by round, so the ratios come from one run on one noisy
machine. Also measured: the bytes a warm re-stage downloads (through a counting
proxy) and tailor's peak memory while copying one large layer.

    python -m bench.copy [--layers 8] [--layer-mib 24] [--rounds 5] [--big-mib 1024]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from tests.support.images import OCI_CONFIG, OCI_LAYER, OCI_MANIFEST, Layout
from tests.support.proxy import Proxy
from tests.support.registry import Registry, start_registry

MiB = 1024 * 1024


def random_blob(layout: Layout, size: int) -> dict:
    """Write ``size`` random bytes as a blob, 1 MiB at a time (never all in memory)."""
    tmp = layout.path / "incoming"
    hasher = hashlib.sha256()
    with tmp.open("wb") as out:
        left = size
        while left:
            chunk = os.urandom(min(MiB, left))
            hasher.update(chunk)
            out.write(chunk)
            left -= len(chunk)
    digest = "sha256:" + hasher.hexdigest()
    tmp.rename(layout.path / "blobs" / "sha256" / digest[7:])
    return {"mediaType": OCI_LAYER, "digest": digest, "size": size}


def build(layout: Layout, tag: str, layers: int, size: int) -> None:
    descs = [random_blob(layout, size) for _ in range(layers)]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
    }
    cfg = layout.descriptor(OCI_CONFIG, json.dumps(config).encode())
    manifest = {"schemaVersion": 2, "mediaType": OCI_MANIFEST, "config": cfg, "layers": descs}
    layout.tag(tag, layout.descriptor(OCI_MANIFEST, json.dumps(manifest).encode()))


def skopeo(*args: str) -> None:
    subprocess.run(["skopeo", *args], check=True, stdout=subprocess.DEVNULL)


def run_tailor(src: str, dst: str, hosts: list[str], env: dict[str, str]) -> int:
    """Run ``tailor copy``; return its peak RSS in KiB."""
    argv = [sys.executable, "-m", "tailor.cli", "copy", "--no-blob-cache"]
    for h in hosts:
        argv += ["--insecure-registry", h]
    proc = subprocess.Popen(
        [*argv, src, dst], env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"tailor copy failed ({proc.returncode})")
    return int(usage.ru_maxrss)


def bare_stream(src: Registry, dst: Registry, repo: str, blobs: list[str], jobs: int) -> None:
    """The registries' own bound: unverified curl | curl per blob, ``jobs`` at once."""

    def one(digest: str) -> None:
        post = requests.post(f"{dst.url}/v2/{repo}/blobs/uploads/", timeout=30)
        location = post.headers["Location"]
        sep = "&" if "?" in location else "?"
        if location.startswith("/"):
            location = dst.url + location
        cmd = (
            f"curl -sSf {src.url}/v2/bench/app/blobs/{digest} | "
            f"curl -sSf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' "
            f"-T - '{location}{sep}digest={digest}'"
        )
        subprocess.run(["bash", "-o", "pipefail", "-c", cmd], check=True)

    with ThreadPoolExecutor(jobs) as pool:
        list(pool.map(one, blobs))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--layer-mib", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--big-mib", type=int, default=1024, help="0 skips the memory check")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-copy-") as tmp:
        root = Path(tmp)
        env = dict(os.environ, TAILOR_CACHE_DIR=str(root / "cache"))
        layout = Layout(root / "layout")
        print(f"building {args.layers} x {args.layer_mib} MiB layers ...", flush=True)
        build(layout, "bench", args.layers, args.layer_mib * MiB)
        src = start_registry(root / "src")
        dests: list[Registry] = []
        try:
            skopeo(
                "copy",
                "--quiet",
                "--dest-tls-verify=false",
                f"oci:{layout.path}:bench",
                f"docker://{src.host}/bench/app:v1",
            )
            # skopeo gzips our raw random layers on the way in: read what the registry holds.
            manifest = requests.get(
                f"{src.url}/v2/bench/app/manifests/v1",
                headers={"Accept": OCI_MANIFEST},
                timeout=30,
            ).json()
            blobs = [manifest["config"]["digest"]] + [d["digest"] for d in manifest["layers"]]
            times: dict[str, list[float]] = {"tailor": [], "skopeo": [], "bare": []}
            for n in range(args.rounds):
                for tool in ("tailor", "skopeo", "bare"):
                    dst = start_registry(root / f"dst-{tool}-{n}")
                    dests.append(dst)
                    start = time.perf_counter()
                    if tool == "tailor":
                        run_tailor(
                            f"{src.host}/bench/app:v1",
                            f"{dst.host}/bench/app:v1",
                            [src.host, dst.host],
                            env,
                        )
                    elif tool == "skopeo":
                        skopeo(
                            "copy",
                            "--quiet",
                            "--src-tls-verify=false",
                            "--dest-tls-verify=false",
                            f"docker://{src.host}/bench/app:v1",
                            f"docker://{dst.host}/bench/app:v1",
                        )
                    else:
                        bare_stream(src, dst, "bench/app", blobs, args.jobs)
                    times[tool].append(time.perf_counter() - start)
                    dst.stop()
                    shutil.rmtree(dst.root, ignore_errors=True)
                print(
                    f"round {n + 1}: " + ", ".join(f"{k} {v[-1]:.2f} s" for k, v in times.items()),
                    flush=True,
                )
            med = {k: statistics.median(v) for k, v in times.items()}
            total = args.layers * args.layer_mib
            print(f"\ncold copy of {args.layers} x {args.layer_mib} MiB, median of {args.rounds}:")
            for k in ("tailor", "skopeo", "bare"):
                print(f"  {k:7} {med[k]:6.2f} s  ({total / med[k]:6.0f} MiB/s)")
            print(f"  tailor/skopeo = {med['tailor'] / med['skopeo']:.2f}")
            print(f"  bare/skopeo   = {med['bare'] / med['skopeo']:.2f}")
            print(f"  tailor/bare   = {med['tailor'] / med['bare']:.2f}")

            # Warm re-stage: the same image into a new repository of a registry that has it.
            dst = start_registry(root / "dst-warm")
            dests.append(dst)
            proxy = Proxy(src.host)
            hosts = [proxy.host, dst.host]
            env_warm = dict(env, TAILOR_CACHE_DIR=str(root / "warm-cache"))
            warm_argv = [sys.executable, "-m", "tailor.cli", "copy"]
            for h in hosts:
                warm_argv += ["--insecure-registry", h]
            subprocess.run(
                [*warm_argv, f"{proxy.host}/bench/app:v1", f"{dst.host}/a/app:v1"],
                env=env_warm,
                check=True,
                capture_output=True,
            )
            first = proxy.blob_bytes
            start = time.perf_counter()
            subprocess.run(
                [*warm_argv, f"{proxy.host}/bench/app:v1", f"{dst.host}/b/app:v1"],
                env=env_warm,
                check=True,
                capture_output=True,
            )
            warm = time.perf_counter() - start
            proxy.stop()
            print(
                f"\nwarm re-stage into a new repository: {proxy.blob_bytes - first} blob "
                f"bytes downloaded (first stage: {first}), {warm:.2f} s"
            )

            if args.big_mib:
                big = Layout(root / "big")
                print(f"\nbuilding one {args.big_mib} MiB layer ...", flush=True)
                build(big, "big", 1, args.big_mib * MiB)
                skopeo(
                    "copy",
                    "--quiet",
                    "--dest-tls-verify=false",
                    f"oci:{big.path}:big",
                    f"docker://{src.host}/bench/big:v1",
                )
                shutil.rmtree(big.path)
                dst = start_registry(root / "dst-big")
                dests.append(dst)
                start = time.perf_counter()
                rss = run_tailor(
                    f"{src.host}/bench/big:v1",
                    f"{dst.host}/bench/big:v1",
                    [src.host, dst.host],
                    env,
                )
                took = time.perf_counter() - start
                print(
                    f"tailor copy of a {args.big_mib} MiB layer: peak RSS {rss / 1024:.1f} MiB,"
                    f" {took:.2f} s"
                )
        finally:
            src.stop()
            for d in dests:
                d.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
