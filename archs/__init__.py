"""Architecture modules: paging modes, hardware bits and software-leaf layouts as data.

Every fact that differs by architecture is an attribute of its `Arch` (archs/common.py); code outside
archs/ finds the Arch by any of its names with `get_arch` or `arch_where` and keeps no table of its own.
"""
from __future__ import annotations

import importlib

from .common import Arch

ARCH_NAMES = ("x86_64", "arm64", "riscv64")
_ALIASES = {"amd64": "x86_64", "x86-64": "x86_64", "aarch64": "arm64", "riscv": "riscv64"}


def get_arch(name: str) -> Arch:
    """The Arch object of an architecture by name (aliases accepted)."""
    key = _ALIASES.get(name, name)
    if key not in ARCH_NAMES:
        raise ValueError(f"unknown architecture {name!r}; choose one of {', '.join(ARCH_NAMES)}")
    arch: Arch = importlib.import_module(f"ptinspect.archs.{key}").ARCH
    return arch


def all_arches() -> tuple[Arch, ...]:
    """Every architecture ptinspect reads, in ARCH_NAMES order."""
    return tuple(get_arch(name) for name in ARCH_NAMES)


def arch_where(attribute: str, value: object) -> Arch | None:
    """The one Arch whose identity `attribute` is `value` (or, for a tuple attribute, contains it):
    arch_where("elf_machine", 183), arch_where("qemu_arch", "aarch64"), arch_where("uname_machines",
    "aarch64"); None when no architecture matches."""
    for arch in all_arches():
        have = getattr(arch, attribute)
        if value in have if isinstance(have, tuple) else value == have:
            return arch
    return None


def names_text(conjunction: str = "and") -> str:
    """"x86_64, arm64 and riscv64" (or "... or riscv64"), for messages naming what ptinspect reads."""
    return f"{', '.join(ARCH_NAMES[:-1])} {conjunction} {ARCH_NAMES[-1]}"
