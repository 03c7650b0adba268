#!/usr/bin/env bash
# Install what ptinspect needs on Debian/Ubuntu, then run the main job or the test suite.
#   ./bootstrap.sh demo [ARCH]   boot the default test VM and dump its workload's page tables
#   ./bootstrap.sh test [ARGS]   run the whole test suite (unit, property, QEMU integration)
set -euo pipefail
cd "$(dirname "$0")"

APT_PACKAGES=(python3 python3-venv qemu-system-x86 qemu-system-arm qemu-system-misc qemu-system-data
              gdb-multiarch gcc gcc-aarch64-linux-gnu gcc-riscv64-linux-gnu libc6-dev
              libc6-dev-arm64-cross libc6-dev-riscv64-cross cpio gzip xz-utils zstd dpkg apt debootstrap
              debian-archive-keyring chromium)
VENV=${PTINSPECT_VENV:-.venv}

log() { printf '[bootstrap %(%H:%M:%S)T] %s\n' -1 "$*"; }

install_system() {
    local missing=()
    for p in "${APT_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && { log "system packages present"; return; }
    log "installing: ${missing[*]}"
    local sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

install_python() {
    [ -x "$VENV/bin/python" ] || { log "creating $VENV"; python3 -m venv "$VENV"; }
    log "installing ptinspect into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check -e '.[test]'
}

cmd=${1:-}; shift || true
case "$cmd" in
    demo)
        install_system; install_python
        exec "$VENV/bin/python" -m ptinspect.commands.demo "$@" ;;
    test)
        install_system; install_python
        log "lint (ruff) and type check (mypy), configured in pyproject.toml"
        "$VENV/bin/ruff" check .
        "$VENV/bin/mypy"
        log "running the test suite"
        exec "$VENV/bin/python" -m pytest -ra "$@" ;;
    *)
        echo "usage: $0 demo [ARCH] | test [PYTEST ARGS]" >&2; exit 2 ;;
esac
