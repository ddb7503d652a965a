"""What a signature policy check costs a copy: `tailor copy` of a signed image with and
without `--policy` (signedBy, one GPG signature in a file:// lookaside, checked by gpgv),
alternating, into a new repository of a registry that has every blob (a warm re-stage,
where the check is the largest share). Prints the medians and their ratio.

    python -m bench.policy [--rounds 15] [--layers 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.support.images import Layout, image
from tests.support.registry import start_registry
from tests.support.signing import gnupg, sign_copy, write_registries_d

TAILOR = [sys.executable, "-m", "tailor.cli"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--layers", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-policy-") as tmp, gnupg() as gpg:
        root = Path(tmp)
        key = gpg.generate("bench")
        src, dst = start_registry(root / "src"), start_registry(root / "dst")
        try:
            rd = write_registries_d(root / "rd", src.host, lookaside=f"file://{root / 'sigs'}")
            layout = Layout(root / "layout")
            layout.tag("v1", image(layout, seed=5, layers=args.layers))
            (root / "home").mkdir()
            ref = f"{src.host}/bench/app:v1"
            sign_copy(gpg, key, f"oci:{layout.path}:v1", ref, rd, home=root / "home")
            (root / "signer.gpg").write_bytes(gpg.export(key))
            signed_by = {
                "type": "signedBy",
                "keyType": "GPGKeys",
                "keyPath": str(root / "signer.gpg"),
            }
            policy = root / "policy.json"
            policy.write_text(
                json.dumps(
                    {
                        "default": [{"type": "reject"}],
                        "transports": {"docker": {src.host: [signed_by]}},
                    }
                )
            )
            env = dict(os.environ, TAILOR_CACHE_DIR=str(root / "cache"), HOME=str(root / "home"))
            hosts = ["--insecure-registry", src.host, "--insecure-registry", dst.host]
            checked = ["--policy", str(policy), "--registries.d", str(rd)]

            def run(extra: list[str], repo: str) -> float:
                started = time.perf_counter()
                done = subprocess.run(
                    [*TAILOR, "copy", *hosts, *extra, ref, f"{dst.host}/{repo}/app:v1"],
                    env=env,
                    capture_output=True,
                    check=False,
                )
                if done.returncode != 0:
                    raise SystemExit(done.stderr.decode(errors="replace"))
                return time.perf_counter() - started

            run([], "first")  # every blob at the destination from here on
            times: dict[str, list[float]] = {"without --policy": [], "with --policy": []}
            for n in range(args.rounds):
                times["without --policy"].append(run([], f"plain-{n}"))
                times["with --policy"].append(run(checked, f"checked-{n}"))
        finally:
            src.stop()
            dst.stop()
    med = {k: statistics.median(v) for k, v in times.items()}
    print(
        f"warm re-stage of a signed image ({args.layers} layers), whole process, "
        f"median of {args.rounds}:"
    )
    for name, took in med.items():
        print(f"  {name:17} {took:.3f} s (min {min(times[name]):.3f})")
    plain, checked_s = med["without --policy"], med["with --policy"]
    extra = 1000 * (checked_s - plain)
    print(f"  with/without      = {checked_s / plain:.2f} ({extra:.0f} ms a check)")


if __name__ == "__main__":
    main()
