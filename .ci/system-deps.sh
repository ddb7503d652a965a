#!/usr/bin/env bash
# Install the system packages the suite and the demo need, when they are missing.
set -euo pipefail
need=()
command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
command -v skopeo >/dev/null 2>&1 || need+=(skopeo)
command -v podman >/dev/null 2>&1 || need+=(podman)
command -v containerd >/dev/null 2>&1 && command -v ctr >/dev/null 2>&1 || need+=(containerd)
command -v curl >/dev/null 2>&1 || need+=(curl)
# The signature policy: gpgv verifies (tailor/trust); gpg makes the tests' keys and
# signatures (skopeo --sign-by signs through gpgme, which runs gpg and gpg-agent).
command -v gpgv >/dev/null 2>&1 || need+=(gpgv)
command -v gpg >/dev/null 2>&1 && command -v gpg-agent >/dev/null 2>&1 || need+=(gnupg)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
[ -x /usr/sbin/haproxy ] || command -v haproxy >/dev/null 2>&1 || need+=(haproxy)
command -v pg_ctlcluster >/dev/null 2>&1 || need+=(postgresql)
command -v go >/dev/null 2>&1 || need+=(golang-go)
[ -d /usr/share/gocode/src/golang.org/x/mod/sumdb/tlog ] || need+=(golang-golang-x-mod-dev)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || need+=(python3-venv)
if ((${#need[@]})); then
    echo "installing: ${need[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
