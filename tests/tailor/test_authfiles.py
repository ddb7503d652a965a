"""Which credentials the files podman, skopeo and Docker write give an image
(tailor/authfiles.py, through tailor.authn.resolve as `tailor copy` asks): each file, its
order, each key shape, credHelpers and credsStore (with real helper programs on PATH)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from tailor.authfiles import AuthFile, auth_files, find
from tailor.authn import ANONYMOUS, Basic, IdentityToken, resolve
from tailor.errors import ConfigError
from tests.support.credentials import write_helper

HOST = "reg.example:5000"
SECRET = "file-pw-Kq77-never-shown"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def entry(user: str, password: str = SECRET) -> dict[str, str]:
    return {"auth": b64(f"{user}:{password}")}


@dataclass
class Files:
    """This test's environment: every file the lookup reads lives under tmp_path."""

    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    @property
    def runtime(self) -> Path:  # $XDG_RUNTIME_DIR/containers/auth.json
        return self.tmp / "run" / "containers" / "auth.json"

    @property
    def config_home(self) -> Path:  # ~/.config/containers/auth.json
        return self.tmp / "home" / ".config" / "containers" / "auth.json"

    @property
    def docker(self) -> Path:  # ~/.docker/config.json
        return self.tmp / "home" / ".docker" / "config.json"

    @property
    def dockercfg(self) -> Path:  # ~/.dockercfg
        return self.tmp / "home" / ".dockercfg"

    @property
    def log(self) -> Path:  # every server a helper was asked for
        return self.tmp / "helper.log"

    def write(self, path: Path, content: object) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content if isinstance(content, str) else json.dumps(content))
        return path

    def helper(self, name: str, answers: dict[str, tuple[str, str]]) -> None:
        write_helper(self.tmp / "bin", name, answers, self.log)

    def asked(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Files:
    for name in ("REGISTRY_AUTH_FILE", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return Files(tmp_path, monkeypatch)


def lookup(registry: str = HOST, repository: str | None = None):
    return resolve(registry, None, None, repository)


def test_the_placeholder_docker_login_writes_with_a_creds_store_asks_the_store(
    files: Files,
) -> None:
    # What `docker login` leaves with a credsStore: an empty entry, the secret in the store.
    files.helper(
        "teststore", {HOST: ("alice", SECRET), "https://index.docker.io/v1/": ("hub", "h")}
    )
    files.write(
        files.docker,
        {"auths": {HOST: {}, "https://index.docker.io/v1/": {}}, "credsStore": "teststore"},
    )
    assert lookup() == Basic("alice", SECRET)
    # Docker Hub's credentials are stored under the URL Docker asks the store with.
    assert lookup("docker.io", "library/alpine") == Basic("hub", "h")
    assert files.asked() == [HOST, "https://index.docker.io/v1/"]
    # A registry the store has nothing for: anonymous (the store was asked all the same).
    assert lookup("other.example") == ANONYMOUS
    assert files.asked()[-1] == "other.example"


def test_cred_helpers_win_over_the_creds_store_and_the_auths_entry(files: Files) -> None:
    files.helper("perhost", {HOST: ("from-helper", SECRET)})
    files.helper("store", {HOST: ("from-store", SECRET)})
    files.write(
        files.docker,
        {
            "auths": {HOST: entry("from-auths")},
            "credHelpers": {HOST: "perhost"},
            "credsStore": "store",
        },
    )
    assert lookup() == Basic("from-helper", SECRET)
    assert files.asked() == [HOST]  # and only the per-host helper was run
    # The store answers for every other registry; a real auths entry wins over the store.
    files.write(files.docker, {"auths": {HOST: entry("from-auths")}, "credsStore": "store"})
    assert lookup() == Basic("from-auths", SECRET)
    assert files.asked() == [HOST]


def test_a_helper_with_nothing_passes_to_the_next_file(files: Files) -> None:
    files.helper("empty", {})
    files.write(files.runtime, {"credHelpers": {HOST: "empty"}})
    files.write(files.docker, {"auths": {HOST: entry("docker-user")}})
    assert lookup() == Basic("docker-user", SECRET)
    assert files.asked() == [HOST]


def test_a_helper_gives_an_identity_token(files: Files) -> None:
    files.helper("tok", {HOST: ("<token>", "refresh-1")})
    files.write(files.docker, {"credsStore": "tok"})
    assert lookup() == IdentityToken("refresh-1")


@pytest.mark.parametrize(
    "key",
    [
        HOST,
        f"https://{HOST}",
        f"https://{HOST}/",
        f"https://{HOST}/v2/",
        f"http://{HOST}/",
        f"http://{HOST}/v1/",
        f"{HOST}/v1/",
        f"{HOST}/v2",
        f"{HOST}/",
        "REG.Example:5000",
        f"HTTPS://{HOST}/v1/",
    ],
)
def test_auths_keys_are_normalized_as_docker_and_containers_image_do(
    files: Files, key: str
) -> None:
    files.write(files.docker, {"auths": {key: entry("alice")}})
    assert lookup() == Basic("alice", SECRET)


@pytest.mark.parametrize(
    "key",
    [
        "reg.example",  # another port is another registry
        "reg.example:5001",
        f"https://{HOST}.evil.example/v2/",
        f"evil.example/{HOST}",
        f"{HOST}/other",  # a namespace the image is not in
        f"{HOST}/team/app/more",
    ],
)
def test_keys_of_other_registries_or_namespaces_do_not_match(files: Files, key: str) -> None:
    files.write(files.docker, {"auths": {key: entry("mallory")}})
    assert lookup(HOST, "team/app") == ANONYMOUS


@pytest.mark.parametrize(
    "key",
    [
        "https://index.docker.io/v1/",
        "index.docker.io",
        "registry-1.docker.io",
        "docker.io",
        "https://registry-1.docker.io/v2/",
        "docker.io/library",
    ],
)
def test_docker_hub_is_any_of_its_names(files: Files, key: str) -> None:
    files.write(files.docker, {"auths": {key: entry("hubuser")}})
    assert lookup("docker.io", "library/alpine") == Basic("hubuser", SECRET)


def test_repository_scoped_entries_most_specific_first(files: Files) -> None:
    files.write(
        files.runtime,
        {
            "auths": {
                HOST: entry("whole-registry"),
                f"{HOST}/team": entry("team"),
                f"{HOST}/team/app": entry("app"),
                f"https://{HOST}/team/other": entry("a-url-is-a-host-key"),
            }
        },
    )
    assert lookup(HOST, "team/app") == Basic("app", SECRET)
    assert lookup(HOST, "team/db") == Basic("team", SECRET)
    assert lookup(HOST, "team/app-two") == Basic("team", SECRET)  # whole components only
    assert lookup(HOST, "elsewhere/app") == Basic("whole-registry", SECRET)
    assert lookup(HOST) == Basic("whole-registry", SECRET)
    # An empty scoped entry gives nothing, so the broader one is used.
    files.write(files.runtime, {"auths": {f"{HOST}/team": {}, HOST: entry("whole-registry")}})
    assert lookup(HOST, "team/app") == Basic("whole-registry", SECRET)


def test_each_file_is_read(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    for path in (files.runtime, files.config_home, files.docker):
        files.write(path, {"auths": {HOST: entry(path.parent.name)}})
        assert lookup() == Basic(path.parent.name, SECRET)
        path.unlink()
    # ~/.dockercfg: the legacy shape, entries at the top level, keyed by URL.
    files.write(files.dockercfg, {f"https://{HOST}/v1/": {**entry("legacy"), "email": "x@y"}})
    assert lookup() == Basic("legacy", SECRET)
    files.dockercfg.unlink()
    # XDG_CONFIG_HOME and DOCKER_CONFIG move their files.
    monkeypatch.setenv("XDG_CONFIG_HOME", str(files.tmp / "xdg"))
    files.write(files.tmp / "xdg" / "containers" / "auth.json", {"auths": {HOST: entry("xdg")}})
    assert lookup() == Basic("xdg", SECRET)
    monkeypatch.delenv("XDG_CONFIG_HOME")
    monkeypatch.setenv("DOCKER_CONFIG", str(files.tmp / "dc"))
    files.write(files.docker, {"auths": {HOST: entry("not-read")}})
    assert lookup() == ANONYMOUS
    files.write(files.tmp / "dc" / "config.json", {"auths": {HOST: entry("docker-config")}})
    assert lookup() == Basic("docker-config", SECRET)


def test_the_first_file_with_credentials_wins(files: Files) -> None:
    order = [files.runtime, files.config_home, files.docker]
    for path in order:
        files.write(path, {"auths": {HOST: entry(path.parent.name)}})
    files.write(files.dockercfg, {HOST: entry("legacy")})
    for path in order:
        assert lookup() == Basic(path.parent.name, SECRET)
        # A placeholder (or a file without the registry) passes to the next file.
        files.write(path, {"auths": {HOST: {}, "other.example": entry("x")}})
    assert lookup() == Basic("legacy", SECRET)


def test_registry_auth_file_is_read_alone(files: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    files.write(files.runtime, {"auths": {HOST: entry("runtime")}})
    files.write(files.docker, {"auths": {"other.example": entry("docker")}})
    named = files.write(files.tmp / "named.json", {"auths": {HOST: entry("named")}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(named))
    assert lookup() == Basic("named", SECRET)
    # Not in the named file: no other file is read (as skopeo's and podman's --authfile).
    assert lookup("other.example") == ANONYMOUS
    # It may be a Docker config.json, credsStore and all.
    files.helper("store", {HOST: ("stored", SECRET)})
    files.write(named, {"auths": {HOST: {}}, "credsStore": "store"})
    assert lookup() == Basic("stored", SECRET)
    # A file named by the variable must be there.
    named.unlink()
    with pytest.raises(ConfigError, match=r"^REGISTRY_AUTH_FILE names .*named\.json, which"):
        lookup()


def test_where_the_files_are() -> None:
    home = Path("/h")
    env = {"XDG_RUNTIME_DIR": "/run/user/7", "DOCKER_CONFIG": "/dc"}
    assert auth_files(env, home, 7) == [
        AuthFile(Path("/run/user/7/containers/auth.json")),
        AuthFile(Path("/h/.config/containers/auth.json")),
        AuthFile(Path("/dc/config.json")),
        AuthFile(Path("/h/.dockercfg"), legacy=True),
    ]
    # No XDG_RUNTIME_DIR: podman's per-user file under /run/containers.
    assert auth_files({"XDG_CONFIG_HOME": "/x"}, home, 7)[:3] == [
        AuthFile(Path("/run/containers/7/auth.json")),
        AuthFile(Path("/x/containers/auth.json")),
        AuthFile(Path("/h/.docker/config.json")),
    ]
    assert auth_files({"REGISTRY_AUTH_FILE": "/a.json", **env}, home, 7) == [
        AuthFile(Path("/a.json"), named_by="REGISTRY_AUTH_FILE")
    ]


@pytest.mark.parametrize(
    ("content", "why"),
    [
        (f'{{"auths": {{"{HOST}": {{"auth": "{SECRET}"', "is not valid JSON (line 1 column"),
        (f'["{SECRET}"]', "is not a JSON object"),
        (f'{{"auths": ["{SECRET}"]}}', "'auths' is not a JSON object"),
        (f'{{"auths": {{"{HOST}": "{SECRET}"}}}}', f"the entry for '{HOST}' is not a JSON object"),
        (f'{{"auths": {{"{HOST}": {{"auth": "{SECRET}!"}}}}}}', "is not base64 of user:password"),
        (
            f'{{"auths": {{"{HOST}": {{"auth": "{b64(SECRET)}"}}}}}}',
            "is not base64 of user:password",
        ),
        (f'{{"credsStore": ["{SECRET}"]}}', "'credsStore' is not a helper name"),
        (f'{{"credHelpers": {{"{HOST}": 7}}}}', "every 'credHelpers' value must be"),
        (f'{{"credHelpers": {{"{HOST}": "../../bin/sh"}}}}', "is not a program name suffix"),
        (b'\xff\xfe{"auths": {}}', "is not UTF-8 text"),
    ],
)
def test_a_malformed_file_is_one_line_naming_it_never_its_contents(
    files: Files, content: str | bytes, why: str
) -> None:
    files.docker.parent.mkdir(parents=True)
    if isinstance(content, bytes):
        files.docker.write_bytes(content)
    else:
        files.docker.write_text(content)
    with pytest.raises(ConfigError) as raised:
        lookup()
    message = str(raised.value)
    assert why in message and str(files.docker) in message
    assert SECRET not in message and b64(SECRET) not in message and "\n" not in message


def test_missing_empty_and_unreadable_files(files: Files) -> None:
    assert lookup() == ANONYMOUS  # no file at all
    files.write(files.runtime, "")  # empty, as Docker reads it: nothing
    files.config_home.mkdir(parents=True)  # a directory where the file should be: unreadable
    files.write(files.docker, {"auths": {HOST: entry("docker")}})
    warned: list[str] = []
    found = find(HOST, warn=warned.append)
    assert found is not None and (found.username, found.source) == ("docker", str(files.docker))
    assert warned == [
        f"cannot read {files.config_home}: Is a directory; its credentials are not used"
    ]


def test_helper_failures_are_one_line_without_what_the_helper_said(files: Files) -> None:
    files.write(files.docker, {"credHelpers": {HOST: "missing"}})
    with pytest.raises(
        ConfigError, match=r"^credential helper docker-credential-missing is not on"
    ):
        lookup()
    bad = files.tmp / "bin" / "docker-credential-broken"
    bad.parent.mkdir(parents=True, exist_ok=True)
    bad.write_text(f"#!/bin/sh\necho 'storage locked: {SECRET}'\nexit 3\n")
    bad.chmod(0o755)
    files.write(files.docker, {"credsStore": "broken"})
    with pytest.raises(ConfigError) as raised:
        lookup()
    assert str(raised.value) == (
        f"credential helper docker-credential-broken failed for {HOST} (exit status 3)"
    )
    bad.write_text(f'#!/bin/sh\necho \'{{"Username": "{SECRET}\'\n')
    with pytest.raises(ConfigError, match="gave an unreadable answer") as raised:
        lookup()
    assert SECRET not in str(raised.value)
