"""Copy benchmark: `tailor copy` beside `skopeo copy` and a bare `curl | curl` stream.

Every timed copy goes into a freshly started destination registry, and the three
tools alternate round by round, so the ratios come from one run on one noisy
machine. Also measured:

- a warm re-stage (every blob already in the destination registry, so each is
  cross-repository mounted): the whole `tailor copy` process beside skopeo's warm
  copy of the same image, through a proxy that counts the upstream blob bytes,
  the tools alternating ``--warm-rounds`` times;
- ``--concurrent N`` stagings (`tailor stage`, each into its own staging
  repository) of one ``--concurrent-mib`` image into one registry at once, against
  one alone: the upstream bytes fetched and the wall time;
- tailor's peak memory while copying one large layer.

The tailor processes run from bytecode (a cache in the run's directory, written by
the first run), as an installed package does; ``PYTHONDONTWRITEBYTECODE`` otherwise
has this checkout recompile every module at each start. The warm re-stage is also
timed that way, as "tailor (compiling)".

The issue's size is 8 x 64 MiB (`--layer-mib 64`); the default is 24 MiB layers,
which is quicker:

    python -m bench.copy [--layers 8] [--layer-mib 24] [--rounds 5] [--warm-rounds 10]
                         [--big-mib 1024] [--concurrent 10 --concurrent-mib 512]

``--rounds 0``, ``--warm-rounds 0`` and ``--big-mib 0`` skip their parts.
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
import uuid
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


def bytecode_env(env: dict[str, str], root: Path) -> dict[str, str]:
    """``env`` with Python writing and reading bytecode (in ``root``), as an installed
    tailor does; the first run compiles, the others load."""
    out = dict(env, PYTHONPYCACHEPREFIX=str(root / "pycache"))
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def compiling_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` with every module compiled at each start (no bytecode read or written)."""
    out = dict(env, PYTHONDONTWRITEBYTECODE="1")
    out.pop("PYTHONPYCACHEPREFIX", None)
    return out


def tailor_argv(command: str, hosts: list[str]) -> list[str]:
    argv = [sys.executable, "-m", "tailor.cli", command]
    for h in hosts:
        argv += ["--insecure-registry", h]
    return argv


def push_image(layout: Layout, tag: str, src: Registry, repo: str) -> None:
    skopeo(
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        f"oci:{layout.path}:{tag}",
        f"docker://{src.host}/{repo}:v1",
    )


def counting_proxy(backend: str) -> Proxy:
    proxy = Proxy(backend)
    # skopeo drops idle connections: no traceback on stderr for each.
    proxy.httpd.handle_error = lambda *args: None  # type: ignore[method-assign]
    return proxy


def warm_restage(root: Path, src: Registry, env: dict[str, str], rounds: int) -> list[Registry]:
    """A warm re-stage: the same image into new repositories of a registry that has every
    blob (mounted, none downloaded), tailor (from bytecode, and compiling at start) and
    skopeo alternating, each tool's first copy made beforehand. Returns what to stop."""
    dst = start_registry(root / "dst-warm")
    proxy = counting_proxy(src.host)
    hosts = [proxy.host, dst.host]
    envs = {
        "tailor": dict(env, TAILOR_CACHE_DIR=str(root / "warm-cache")),
        "tailor (compiling)": compiling_env(dict(env, TAILOR_CACHE_DIR=str(root / "warm-cache"))),
    }
    image = f"{proxy.host}/bench/app:v1"
    skopeo_argv = ["skopeo", "copy", "--quiet", "--src-tls-verify=false"]
    skopeo_argv += ["--dest-tls-verify=false", f"docker://{image}"]

    def run(tool: str, repo: str) -> float:
        """Copy; return the process's CPU time (user + system), less noisy than the wall."""
        if tool == "skopeo":
            argv, tool_env = [*skopeo_argv, f"docker://{dst.host}/{repo}/app:v1"], None
        else:
            argv = [*tailor_argv("copy", hosts), image, f"{dst.host}/{repo}/app:v1"]
            tool_env = envs[tool]
        proc = subprocess.Popen(
            argv, env=tool_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        _, status, usage = os.wait4(proc.pid, 0)
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"{tool} failed")
        return usage.ru_utime + usage.ru_stime

    try:
        run("tailor", "first")
        first = proxy.blob_bytes
        run("skopeo", "first-skopeo")
        times: dict[str, list[float]] = {"tailor": [], "tailor (compiling)": [], "skopeo": []}
        cpu: dict[str, list[float]] = {tool: [] for tool in times}
        fetched = dict.fromkeys(times, 0)
        for n in range(rounds):
            for k, tool in enumerate(times):
                before = proxy.blob_bytes
                start = time.perf_counter()
                cpu[tool].append(run(tool, f"w{n}-{k}"))
                times[tool].append(time.perf_counter() - start)
                fetched[tool] += proxy.blob_bytes - before
    finally:
        proxy.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"\nwarm re-stage into a new repository, whole process, median of {rounds}:")
    for tool, took in med.items():
        print(
            f"  {tool:18} {took:6.3f} s (min {min(times[tool]):.3f}), CPU "
            f"{statistics.median(cpu[tool]):.3f} s; {fetched[tool]} upstream blob bytes in all"
        )
    print(f"  tailor/skopeo             = {med['tailor'] / med['skopeo']:.2f}")
    print(f"  tailor (compiling)/skopeo = {med['tailor (compiling)'] / med['skopeo']:.2f}")
    print(f"  (the first tailor copy downloaded {first} blob bytes)")
    return [dst]


def concurrent_stagings(
    root: Path,
    src: Registry,
    env: dict[str, str],
    count: int,
    layers: int,
    mib: int,
    shared_cache: bool,
) -> list[Registry]:
    """``count`` `tailor stage` runs of one image (``layers`` layers, ``mib`` MiB in all)
    into one fresh registry at once, each into its own staging repository and with a blob
    record of its own (stagings run on separate cells; ``shared_cache``: one record for
    all, as runs on one host share it), against one staging alone into another fresh
    registry. Upstream bytes are counted by a proxy in front of the source."""
    layout = Layout(root / "conc")
    print(f"\nbuilding {layers} x {mib // layers} MiB layers ({mib} MiB) ...", flush=True)
    build(layout, "conc", layers, mib // layers * MiB)
    push_image(layout, "conc", src, "bench/conc")
    shutil.rmtree(layout.path)
    proxy = counting_proxy(src.host)
    stopped: list[Registry] = []
    app = str(uuid.uuid4())

    def stagings(dst: Registry, n: int, name: str) -> tuple[float, int]:
        before = proxy.blob_bytes
        procs = []
        start = time.perf_counter()
        for i in range(n):
            argv = tailor_argv("stage", [proxy.host, dst.host])
            argv += ["--image", f"{proxy.host}/bench/conc:v1", "--app-guid", app]
            argv += ["--staging-guid", str(uuid.uuid4()), "--internal-registry", dst.host]
            argv += ["--result-file", str(root / f"{name}-{i}.json")]
            record = f"{name}-cache" if shared_cache else f"{name}-cache-{i}"
            cache = dict(env, TAILOR_CACHE_DIR=str(root / record))
            procs.append(
                subprocess.Popen(
                    argv, env=cache, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
                )
            )
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("tailor stage failed")
        return time.perf_counter() - start, proxy.blob_bytes - before

    try:
        alone_dst = start_registry(root / "dst-alone")
        stopped.append(alone_dst)
        alone, alone_bytes = stagings(alone_dst, 1, "alone")
        together_dst = start_registry(root / "dst-together")
        stopped.append(together_dst)
        together, together_bytes = stagings(together_dst, count, "together")
    finally:
        proxy.stop()
    kind = "one blob record for all" if shared_cache else "a blob record each"
    print(f"{count} concurrent stagings of one {mib} MiB image into one registry ({kind}):")
    print(f"  one alone:         {alone:6.2f} s, {alone_bytes} upstream blob bytes")
    print(
        f"  {count} at once:        {together:6.2f} s, {together_bytes} upstream blob bytes"
        f" ({together_bytes / alone_bytes:.2f} x one image)"
    )
    print(f"  wall time, {count} at once / one alone = {together / alone:.2f}")
    return stopped


def run_tailor(src: str, dst: str, hosts: list[str], env: dict[str, str]) -> int:
    """Run ``tailor copy``; return its peak RSS in KiB."""
    argv = [*tailor_argv("copy", hosts), "--no-blob-cache"]
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
    parser.add_argument("--layer-mib", type=int, default=24, help="the issue's size is 64")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--warm-rounds", type=int, default=10, help="0 skips the warm re-stage")
    parser.add_argument("--big-mib", type=int, default=1024, help="0 skips the memory check")
    parser.add_argument("--concurrent", type=int, default=0, help="stagings at once (0: none)")
    parser.add_argument("--concurrent-mib", type=int, default=512)
    parser.add_argument(
        "--shared-cache", action="store_true", help="the concurrent stagings share a blob record"
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-copy-") as tmp:
        root = Path(tmp)
        env = bytecode_env(dict(os.environ, TAILOR_CACHE_DIR=str(root / "cache")), root)
        # Compile tailor's modules once, so that no timed run pays for it.
        subprocess.run(
            [sys.executable, "-m", "tailor.cli", "--version"],
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        layout = Layout(root / "layout")
        print(f"building {args.layers} x {args.layer_mib} MiB layers ...", flush=True)
        build(layout, "bench", args.layers, args.layer_mib * MiB)
        src = start_registry(root / "src")
        dests: list[Registry] = []
        try:
            push_image(layout, "bench", src, "bench/app")
            if args.rounds:
                dests += cold_copies(root, src, env, args)
            if args.warm_rounds:
                dests += warm_restage(root, src, env, args.warm_rounds)
            if args.concurrent:
                dests += concurrent_stagings(
                    root,
                    src,
                    env,
                    args.concurrent,
                    args.layers,
                    args.concurrent_mib,
                    args.shared_cache,
                )
            if args.big_mib:
                dests += memory(root, src, env, args.big_mib)
        finally:
            src.stop()
            for d in dests:
                d.stop()
    return 0


def cold_copies(
    root: Path, src: Registry, env: dict[str, str], args: argparse.Namespace
) -> list[Registry]:
    """Each tool, round by round, into a freshly started registry; returns what to stop."""
    dests: list[Registry] = []
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
    return dests


def memory(root: Path, src: Registry, env: dict[str, str], mib: int) -> list[Registry]:
    """Peak RSS of `tailor copy` of one ``mib`` MiB layer; returns what to stop."""
    big = Layout(root / "big")
    print(f"\nbuilding one {mib} MiB layer ...", flush=True)
    build(big, "big", 1, mib * MiB)
    push_image(big, "big", src, "bench/big")
    shutil.rmtree(big.path)
    dst = start_registry(root / "dst-big")
    start = time.perf_counter()
    rss = run_tailor(
        f"{src.host}/bench/big:v1",
        f"{dst.host}/bench/big:v1",
        [src.host, dst.host],
        env,
    )
    took = time.perf_counter() - start
    print(f"tailor copy of a {mib} MiB layer: peak RSS {rss / 1024:.1f} MiB, {took:.2f} s")
    return [dst]


if __name__ == "__main__":
    raise SystemExit(main())
