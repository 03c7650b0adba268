"""Check the host tools the VM side needs; name the Debian package of each missing one."""
from __future__ import annotations

import platform
import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

from ptinspect.archs import all_arches, arch_where

from . import VMError
from .apt import DEB_ARCH, KEYRING

QEMU = {a.name: f"qemu-system-{a.qemu_arch}" for a in all_arches()}
QEMU_PACKAGE = {"x86_64": "qemu-system-x86", "arm64": "qemu-system-arm", "riscv64": "qemu-system-misc"}
TRIPLET = {a.name: a.gnu_triplet for a in all_arches()}
# Firmware QEMU loads from its data directories for the machines the harness boots:
# SeaBIOS for x86 (`-kernel` still runs it), OpenSBI for riscv64 `-bios default`.
FIRMWARE = {"x86_64": ("bios-256k.bin", "seabios"),
            "riscv64": ("opensbi-riscv64-generic-fw_dynamic.bin", "qemu-system-data")}
FETCH_TOOLS = {"apt-get": "apt", "apt-cache": "apt", "dpkg-deb": "dpkg", "tar": "tar"}
BOOT_TOOLS = {"cpio": "cpio", "gzip": "gzip", "gdb-multiarch": "gdb-multiarch"}


def host_arch() -> str:
    """The host's architecture in ptinspect's names (x86_64, arm64, riscv64)."""
    machine = platform.machine()
    found = arch_where("uname_machines", machine)
    return machine if found is None else found.name


def cross_gcc(arch: str) -> tuple[str, str]:
    """(compiler command, Debian package) that builds static binaries for ARCH."""
    triplet = TRIPLET[arch]
    if arch == host_arch():
        return f"{triplet}-gcc", "gcc"
    return f"{triplet}-gcc", f"gcc-{triplet.replace('_', '-')}"


def _static_libc(arch: str) -> tuple[Path, str]:
    triplet = TRIPLET[arch]
    if arch == host_arch():
        return Path(f"/usr/lib/{triplet}/libc.a"), "libc6-dev"
    return Path(f"/usr/{triplet}/lib/libc.a"), f"libc6-dev-{DEB_ARCH[arch]}-cross"


def qemu_data_dirs(qemu: str) -> list[Path]:
    """The directories QEMU searches for firmware (`qemu-system-* -L help`)."""
    try:
        out = subprocess.run([qemu, "-L", "help"], capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [Path(line.strip()) for line in out.splitlines() if line.strip().startswith("/")]


def missing(arches: Iterable[str], fetch_only: bool = False) -> list[tuple[str, str]]:
    """[(what is missing, Debian package that provides it)] for fetching, and unless FETCH_ONLY booting, ARCHES."""
    wanted = dict(FETCH_TOOLS)
    if not fetch_only:
        wanted.update(BOOT_TOOLS)
    gaps = [(tool, package) for tool, package in wanted.items() if shutil.which(tool) is None]
    if not Path(KEYRING).is_file():
        gaps.append((KEYRING, "debian-archive-keyring"))
    if fetch_only:
        return gaps
    for arch in dict.fromkeys(arches):
        qemu = QEMU[arch]
        if shutil.which(qemu) is None:
            gaps.append((qemu, QEMU_PACKAGE[arch]))
        elif arch in FIRMWARE:
            name, package = FIRMWARE[arch]
            if not any((folder / name).is_file() for folder in qemu_data_dirs(qemu)):
                gaps.append((f"QEMU firmware {name}", package))
        gcc, package = cross_gcc(arch)
        if shutil.which(gcc) is None:
            gaps.append((gcc, package))
        libc, package = _static_libc(arch)
        if not libc.is_file():
            gaps.append((str(libc), package))
    return gaps


def check_system(arches: Iterable[str], fetch_only: bool = False) -> None:
    """Raise VMError naming the Debian package of every missing tool (see `missing`)."""
    gaps = missing(arches, fetch_only)
    if gaps:
        packages = " ".join(dict.fromkeys(package for _, package in gaps))
        what = ", ".join(f"{item} (package {package})" for item, package in gaps)
        raise VMError(f"missing host tools: {what}; install them with: sudo apt-get install {packages}")
