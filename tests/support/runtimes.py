"""Real container runtimes as test peers: podman and containerd (``ctr``), isolated per test.

Nothing here reads or writes the machine's own runtime state, and everything goes with
the test (on leaving :func:`podman_home` and :func:`containerd`): podman's storage,
configuration, auth file and temporary files, and containerd's root, state and temporary
files live in the test's directory; podman's run state and containerd's sockets in short
directories of their own under /tmp (podman refuses a runroot longer than 50 characters,
a unix socket path has at most 107 bytes). Registries are on loopback; no container is
run, so no network is set up.

podman 4.3 as root here (a container, no systemd): ``--root`` and ``--runroot`` of the
test's, the ``vfs`` storage driver (no overlay or fuse mounts), ``--cgroup-manager
cgroupfs``, ``--events-backend none``, and a ``containers.conf``, ``registries.conf``
(the test registries ``insecure``: plain HTTP) and ``storage.conf`` of its own through
``CONTAINERS_CONF``, ``CONTAINERS_REGISTRIES_CONF`` and ``CONTAINERS_STORAGE_CONF``, with
``REGISTRY_AUTH_FILE``, ``HOME`` (its ``.config/containers/policy.json`` is read instead of
/etc's), ``XDG_*`` and ``TMPDIR`` in the test's directory. Three paths have no flag or
variable: the blob-info cache podman writes as root (``/var/lib/containers/cache``), its
lock segment (``/dev/shm/libpod_lock``, one for every store) and the registries drop-in
directory ``/etc/containers/registries.conf.d``. Each podman command runs in a mount
namespace of its own (``unshare --mount``) where the test's own are bind-mounted over
them.

containerd 1.6 runs with a config file of its own: root, state and temp in the test's
directory, no CRI plugin (it wants CNI and a kubelet) and no snapshotter needing a file
system or device this machine lacks; ``ctr`` pulls with the ``native`` snapshotter
(plain directories). ``ctr`` talks to it in the ``test`` namespace; it takes registry
credentials only as ``--user USER:SECRET`` (on its command line: without ``:SECRET`` it
wants a terminal to prompt on) or ``--refresh TOKEN`` (an OAuth2 refresh token), and
plain HTTP as ``--plain-http``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.support import markers
from tests.support.processes import spawn, stop

PODMAN_TIMEOUT = 60.0
CTR_TIMEOUT = 60.0
CONTAINERD_START_TIMEOUT = 15.0
NAMESPACE = "test"

# Plugins containerd must not load here: the CRI (a kubelet's, with CNI and cgroups), and
# snapshotters needing a file system or device this machine does not have.
CONTAINERD_DISABLED = (
    "io.containerd.grpc.v1.cri",
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
)

_BASE_ENV = ("PATH", "LANG", "LC_ALL")


def _q(path: Path) -> str:
    """A path as a TOML string."""
    return json.dumps(str(path))


# podman ---------------------------------------------------------------------------------


@contextmanager
def podman_home(tmp: Path, *, insecure: Sequence[str] = ()) -> Iterator[Path]:
    """podman's whole state for ``tmp`` (:func:`podman_state`), removed on leaving."""
    runroot = podman_runroot(tmp)
    try:
        yield podman_state(tmp, insecure=insecure)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(runroot, ignore_errors=True)


def podman_runroot(tmp: Path) -> Path:
    """podman's run state for ``tmp``: a short path of its own in /tmp (podman refuses a
    runroot longer than 50 characters), named after ``tmp``."""
    return Path("/tmp") / (
        "podman-run-" + hashlib.sha256(str(tmp.resolve()).encode()).hexdigest()[:12]
    )


def podman_state(tmp: Path, *, insecure: Sequence[str] = ()) -> Path:
    """Write podman's configuration under ``tmp`` (again if the hosts change): the
    registries in ``insecure`` (``host:port``) are spoken to over plain HTTP. Returns ``tmp``."""
    for sub in ("root", "tmp", "home", "xdg-runtime", "xdg-config", "networks"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    podman_runroot(tmp).mkdir(mode=0o700, exist_ok=True)
    registries = ["unqualified-search-registries = []", 'short-name-mode = "disabled"', ""]
    for host in insecure:
        registries += ["[[registry]]", f"location = {json.dumps(host)}", "insecure = true", ""]
    (tmp / "registries.conf").write_text("\n".join(registries))
    (tmp / "storage.conf").write_text(
        "[storage]\n"
        'driver = "vfs"\n'
        f"graphroot = {_q(tmp / 'root')}\n"
        f"runroot = {_q(podman_runroot(tmp))}\n"
    )
    (tmp / "containers.conf").write_text(
        "[containers]\n"
        'netns = "none"\n'
        "[engine]\n"
        'cgroup_manager = "cgroupfs"\n'
        'events_logger = "none"\n'
        f"tmp_dir = {_q(tmp / 'tmp')}\n"
        f"image_copy_tmp_dir = {_q(tmp / 'tmp')}\n"
        f"static_dir = {_q(tmp / 'root' / 'libpod')}\n"
        f"volume_path = {_q(tmp / 'root' / 'volumes')}\n"
        "[network]\n"
        f"network_config_dir = {_q(tmp / 'networks')}\n"
    )
    policy = tmp / "home" / ".config" / "containers" / "policy.json"  # read before /etc's
    policy.parent.mkdir(parents=True, exist_ok=True)
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    (tmp / "registries.conf.d").mkdir(exist_ok=True)
    (tmp / "blob-cache").mkdir(exist_ok=True)
    (tmp / "shm").mkdir(exist_ok=True)
    auth = tmp / "auth.json"
    if not auth.exists():  # podman refuses a REGISTRY_AUTH_FILE that is not there
        auth.write_text('{"auths": {}}')
    return tmp


def podman_env(tmp: Path) -> dict[str, str]:
    """The environment podman runs in: its configuration and auth file under ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k in _BASE_ENV}
    env.update(
        HOME=str(tmp / "home"),
        TMPDIR=str(tmp / "tmp"),
        XDG_RUNTIME_DIR=str(tmp / "xdg-runtime"),
        XDG_CONFIG_HOME=str(tmp / "xdg-config"),
        CONTAINERS_CONF=str(tmp / "containers.conf"),
        CONTAINERS_REGISTRIES_CONF=str(tmp / "registries.conf"),
        CONTAINERS_STORAGE_CONF=str(tmp / "storage.conf"),
        REGISTRY_AUTH_FILE=str(tmp / "auth.json"),
    )
    return env


def podman(
    tmp: Path,
    *args: str,
    input: str | None = None,
    timeout: float = PODMAN_TIMEOUT,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``podman ARGS`` with every piece of its state the test's (:func:`podman_state`, written
    here with no insecure registry if it was not yet; :func:`podman_home` removes it).
    ``env``: more environment (a credential helper's settings, a longer PATH)."""
    markers.require("slow", "podman")
    if not (tmp / "containers.conf").exists():
        podman_state(tmp)
    argv = [
        *_private_mounts(tmp),
        "podman",
        "--root",
        str(tmp / "root"),
        "--runroot",
        str(podman_runroot(tmp)),
        "--storage-driver",
        "vfs",
        "--cgroup-manager",
        "cgroupfs",
        "--events-backend",
        "none",
        "--tmpdir",
        str(tmp / "tmp"),
        *args,
    ]
    return subprocess.run(
        argv,
        input=input,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**podman_env(tmp), **(env or {})},
        check=False,
    )


# What podman 4.3 reads or writes outside the paths its flags and environment move (seen
# with strace): the blob-info cache it keeps as root (written on every pull), its lock
# segment (/dev/shm/libpod_lock as root, whatever the --root) and the registries drop-in
# directory.
_SYSTEM_PATHS = (
    ("blob-cache", Path("/var/lib/containers/cache")),
    ("shm", Path("/dev/shm")),
    ("registries.conf.d", Path("/etc/containers/registries.conf.d")),
)

_MOUNT_AND_EXEC = """set -e
while [ "$1" != -- ]; do mount --bind "$1" "$2"; shift 2; done
shift
exec "$@"
"""


def _private_mounts(tmp: Path) -> list[str]:
    """The argv prefix running a command in a mount namespace of its own (gone when the
    command exits) where the system paths podman uses are the test's."""
    binds: list[str] = []
    for name, target in _SYSTEM_PATHS:
        if name == "blob-cache":
            target.mkdir(parents=True, exist_ok=True)  # where podman itself would make it
        elif not target.exists():
            continue  # nothing there to read
        binds += [str(tmp / name), str(target)]
    unshare = ["unshare", "--mount", "--propagation", "private", "--"]
    return [*unshare, "sh", "-c", _MOUNT_AND_EXEC, "sh", *binds, "--"]


# containerd -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Containerd:
    """A running private containerd: ``address`` is its gRPC socket."""

    root: Path
    address: str
    proc: subprocess.Popen[bytes]
    log: Path


def containerd_config(root: Path, sockets: Path) -> str:
    """containerd 1.6's configuration (version 2): everything under ``root``, the sockets
    in ``sockets``."""
    disabled = ", ".join(json.dumps(p) for p in CONTAINERD_DISABLED)
    return (
        "version = 2\n"
        f"root = {_q(root / 'root')}\n"
        f"state = {_q(root / 'state')}\n"
        f"temp = {_q(root / 'tmp')}\n"
        f"disabled_plugins = [{disabled}]\n"
        "[grpc]\n"
        f"  address = {_q(sockets / 'containerd.sock')}\n"
        "[ttrpc]\n"
        f"  address = {_q(sockets / 'containerd.sock.ttrpc')}\n"
        '[plugins."io.containerd.internal.v1.opt"]\n'
        f"  path = {_q(root / 'opt')}\n"
    )


@contextmanager
def containerd(tmp: Path, *, timeout: float = CONTAINERD_START_TIMEOUT) -> Iterator[Containerd]:
    """Start a private ``containerd`` with its state under ``tmp``, wait until it answers,
    and on leaving stop it (SIGTERM, then SIGKILL; reaped) and remove its directories."""
    markers.require("slow", "containerd")
    root = tmp.resolve()
    for sub in ("root", "state", "tmp", "opt"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    sockets = Path(tempfile.mkdtemp(prefix="ctrd-", dir="/tmp"))
    try:
        config = root / "config.toml"
        config.write_text(containerd_config(root, sockets))
        address = str(sockets / "containerd.sock")
        env = {k: v for k, v in os.environ.items() if k in _BASE_ENV}
        env["TMPDIR"] = str(root / "tmp")
        log = root / "containerd.log"
        with log.open("ab") as out:
            proc = spawn(
                ["containerd", "--config", str(config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )
        try:
            _wait_ready(address, proc, log, timeout)
            yield Containerd(root, address, proc, log)
        finally:
            stop(proc)
        _remove(root)
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def _wait_ready(address: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    """Until ``ctr version`` gets the server's answer through the socket."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"containerd exited with {proc.returncode}: {_tail(log)}")
        if Path(address).exists():
            answer = subprocess.run(
                ["ctr", "--address", address, "version"],
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            )
            if answer.returncode == 0 and "Server:" in answer.stdout:
                return
        time.sleep(0.05)
    raise RuntimeError(f"containerd did not answer in {timeout} s: {_tail(log)}")


def _remove(root: Path) -> None:
    """Remove a stopped containerd's directory, unless something is still mounted below it
    (a snapshot mount left by a killed unpack): removing through it could reach elsewhere."""
    below = str(root) + "/"
    with open("/proc/self/mounts") as mounts:
        held = [line.split()[1] for line in mounts if line.split()[1].startswith(below)]
    if held:
        raise RuntimeError(f"mounts left under {root}: {held}")
    shutil.rmtree(root, ignore_errors=True)


def _tail(log: Path, lines: int = 20) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


def ctr(
    address: str,
    *args: str,
    timeout: float = CTR_TIMEOUT,
) -> subprocess.CompletedProcess[str]:
    """``ctr --address SOCK --namespace test ARGS`` (the ``native`` snapshotter by default;
    stdin is empty: ``ctr`` prompts for a password only on a terminal)."""
    markers.require("slow", "ctr")
    env = {k: v for k, v in os.environ.items() if k in _BASE_ENV}
    env["CONTAINERD_SNAPSHOTTER"] = "native"
    return subprocess.run(
        ["ctr", "--address", address, "--namespace", NAMESPACE, *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
