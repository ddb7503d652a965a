"""The docker lifecycle's staging result, built from an image config (pure functions)."""

from __future__ import annotations

import json

from tailor.staging import execution_metadata, process_command, staging_result


def test_process_command_quotes_where_needed() -> None:
    assert process_command(["/bin/sh", "-c"], ["echo hello; sleep 1"]) == (
        "/bin/sh -c 'echo hello; sleep 1'"
    )
    assert process_command([], ["/app/server", "--port=8080"]) == "/app/server --port=8080"
    assert process_command(["/entry"], []) == "/entry"
    assert process_command([], ["it's"]) == "'it'\"'\"'s'"


def test_execution_metadata_from_config() -> None:
    config = {
        "config": {
            "Entrypoint": ["/entry"],
            "Cmd": ["serve", "--fast"],
            "WorkingDir": "/app",
            "ExposedPorts": {"9090/tcp": {}, "53/udp": {}, "8080/tcp": {}, "bogus": {}},
        }
    }
    meta = execution_metadata(config)
    assert meta == {
        "cmd": ["serve", "--fast"],
        "entrypoint": ["/entry"],
        "workdir": "/app",
        "user": "root",
        "ports": [
            {"Port": 53, "Protocol": "udp"},
            {"Port": 8080, "Protocol": "tcp"},
            {"Port": 9090, "Protocol": "tcp"},
        ],
    }


def test_string_cmd_and_explicit_user_and_empty_config() -> None:
    meta = execution_metadata({"config": {"Cmd": "run.sh", "User": "1000:1000"}})
    assert meta["cmd"] == ["run.sh"] and meta["user"] == "1000:1000"
    empty = execution_metadata({})
    assert empty == {"cmd": [], "entrypoint": [], "workdir": "", "user": "root", "ports": []}


def test_staging_result_shape() -> None:
    result = staging_result("reg/x@sha256:" + "a" * 64, {"config": {"Cmd": ["a b"]}})
    assert result["lifecycle_type"] == "docker"
    assert result["lifecycle_metadata"] == {"docker_image": "reg/x@sha256:" + "a" * 64}
    assert result["process_types"] == {"web": "'a b'"}
    assert isinstance(result["execution_metadata"], str)
    assert json.loads(result["execution_metadata"])["cmd"] == ["a b"]
