"""Architecture modules: paging modes, hardware bits and software-leaf layouts as data."""
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
    return importlib.import_module(f"archs.{key}").ARCH
