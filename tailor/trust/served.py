"""The staging policy as the broker serves it to the bound tailor: one self-contained
document, the same bytes on every replica that has the same files.

``{"digest": "sha256:...", "policy": {...}, "registries.d": {...}, "narrow": false}``:
the policy with every ``keyPath``/``keyPaths`` replaced by ``keyData`` (the keys live on
the broker's machine, not in the staging container), registries.d's files merged into
one ``{"default-docker": ..., "docker": {...}}``, and whether an index's refused platforms
are left out instead of refusing the staging. The digest is SHA-256 of the canonical JSON
(sorted keys, no white space) of the other three members: the tailor recomputes it, and
the completion and the audit log name it as the policy that decided.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tailor.errors import ConfigError
from tailor.trust.lookaside import RegistriesD, Section, load_registries_d, parse_section
from tailor.trust.openpgp import public_keyring
from tailor.trust.policy import Policy, PolicyError, load_policy, parse_policy

__all__ = ["Served", "from_document", "load_document", "policy_digest"]


@dataclass(frozen=True)
class Served:
    policy: Policy
    storage: RegistriesD
    narrow: bool


def _canonical(value: object) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def policy_digest(policy: object, registries: object, narrow: object) -> str:
    """The digest a served document names."""
    body = _canonical({"narrow": narrow, "policy": policy, "registries.d": registries})
    return "sha256:" + hashlib.sha256(body).hexdigest()


def _inline_keys(doc: Any, source: Path) -> Any:
    """``doc`` with every requirement's key files read into ``keyData`` (a relative path
    is taken from the policy file's directory)."""
    out = copy.deepcopy(doc)
    scopes = [out.get("default", [])]
    for section in (out.get("transports") or {}).values():
        scopes += list(section.values())
    for requirements in scopes:
        for req in requirements:
            paths = [req.pop("keyPath")] if "keyPath" in req else req.pop("keyPaths", None)
            if paths is None:
                continue
            data = b""
            for name in paths:
                path = source.parent / name
                try:
                    # Each file's armour off before they are joined (one armoured file's
                    # blocks would otherwise hide the binary keys around them); a secret
                    # key named by mistake is refused, never served.
                    data += public_keyring(path.read_bytes(), f"{source}: key file {path}")
                except OSError as exc:
                    raise ConfigError(f"{source}: key file {path}: {exc.strerror}") from None
            req["keyData"] = base64.b64encode(data).decode()
    return out


def _section_document(section: Section) -> dict[str, object]:
    out: dict[str, object] = {}
    if section.lookaside is not None:
        out["lookaside"] = section.lookaside
    if section.use_sigstore_attachments is not None:
        out["use-sigstore-attachments"] = section.use_sigstore_attachments
    return out


def load_document(
    policy_path: Path, registries_d: Path | None, narrow: bool = False
) -> dict[str, object]:
    """The document to serve; ConfigError (one line) when the files cannot be used."""
    load_policy(policy_path)  # refused whole, with containers/image's rules, before anything
    doc = _inline_keys(json.loads(policy_path.read_bytes()), policy_path)
    parse_policy(_canonical(doc), str(policy_path))
    config = load_registries_d(registries_d) if registries_d else RegistriesD()
    registries: dict[str, object] = {}
    if config.default is not None:
        registries["default-docker"] = _section_document(config.default)
    if config.docker:
        registries["docker"] = {s: _section_document(v) for s, v in config.docker.items()}
    return {
        "digest": policy_digest(doc, registries, narrow),
        "policy": doc,
        "registries.d": registries,
        "narrow": narrow,
    }


def from_document(doc: object) -> Served:
    """What a served document holds, its digest checked."""
    if not isinstance(doc, dict) or set(doc) != {"digest", "policy", "registries.d", "narrow"}:
        raise PolicyError("the broker's staging policy is not a policy document")
    policy, registries, narrow = doc["policy"], doc["registries.d"], doc["narrow"]
    if not isinstance(narrow, bool):
        raise PolicyError("the broker's staging policy is not a policy document")
    if policy_digest(policy, registries, narrow) != doc["digest"]:
        raise PolicyError("the broker's staging policy does not match its digest")
    parsed = parse_policy(_canonical(policy), "the broker's staging policy")
    parsed = dataclasses.replace(parsed, digest=str(doc["digest"]))
    if not isinstance(registries, dict):
        raise PolicyError("the broker's registries.d is not a mapping")
    default = registries.get("default-docker")
    scoped = registries.get("docker") or {}
    if not isinstance(scoped, dict):
        raise PolicyError("the broker's registries.d docker section is not a mapping")
    storage = RegistriesD(
        None if default is None else _section(default),
        {str(k): _section(v) for k, v in scoped.items()},
        "the broker's registries.d",
    )
    return Served(parsed, storage, narrow)


def _section(value: object) -> Section:
    """A served section, read as registries.d's are (the same rules, one parser)."""
    try:
        return parse_section(value, "the broker's registries.d")
    except ConfigError as exc:
        raise PolicyError(str(exc)) from None
