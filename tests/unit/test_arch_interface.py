"""Every architecture module implements the whole Arch interface (archs/common.py), and every name
another program gives an architecture leads back to it.

A new archs/<arch>.py that leaves out a hook or an identity fact fails here, before any code
outside archs/ asks it (mypy checks the same through `ARCH: Arch`).  Expected identity values come
from the kernel's and the tools' own definitions, not from archs/.
"""
from __future__ import annotations

import importlib
import inspect

import pytest

from ptinspect.archs import ARCH_NAMES, all_arches, arch_where, get_arch
from ptinspect.archs.common import Arch, ArchDefaults


def _members() -> tuple[set[str], set[str]]:
    """The interface's data attributes and its methods, from the Protocol itself."""
    attributes = {name for name in Arch.__annotations__ if not name.startswith("_")}
    methods = {name for name, value in vars(Arch).items() if inspect.isfunction(value) and not name.startswith("_")}
    return attributes, methods


def test_interface_is_not_empty() -> None:
    attributes, methods = _members()
    assert {"elf_machine", "drgn_arch", "qemu_arch", "flag_moves", "user_kernel_pages"} <= attributes
    assert {"decode", "reserved_bits", "wx_access", "cont_signature", "user_exec_reason"} <= methods


@pytest.mark.parametrize("name", ARCH_NAMES)
def test_module_implements_every_member(name: str) -> None:
    arch = importlib.import_module(f"ptinspect.archs.{name}").ARCH
    assert isinstance(arch, ArchDefaults)
    attributes, methods = _members()
    missing = sorted(a for a in attributes if not hasattr(arch, a))
    assert not missing, f"archs/{name}.py ARCH lacks {missing}"
    # A method the class does not define falls back to the Protocol's empty body (returns None).
    unimplemented = sorted(m for m in methods if getattr(type(arch), m) is getattr(Arch, m))
    assert not unimplemented, f"archs/{name}.py ARCH does not implement {unimplemented}"
    assert arch.name == name


def test_every_arch_listed() -> None:
    """Every archs/<arch>.py with an ARCH is in ARCH_NAMES (so the lookups see it)."""
    import pkgutil

    from ptinspect import archs

    modules = {m.name for m in pkgutil.iter_modules(archs.__path__)}
    with_arch = {m for m in modules if hasattr(importlib.import_module(f"ptinspect.archs.{m}"), "ARCH")}
    assert with_arch == set(ARCH_NAMES)


# (arch, EM_* value in include/uapi/linux/elf-em.h, UTS_MACHINE of arch/*/Makefile, drgn.Architecture,
#  QEMU target, gdb BFD name)
IDENTITY = [
    ("x86_64", 62, "x86_64", "X86_64", "x86_64", "i386:x86-64"),
    ("arm64", 183, "aarch64", "AARCH64", "aarch64", "aarch64"),
    ("riscv64", 243, "riscv64", "RISCV64", "riscv64", "riscv:rv64"),
]


@pytest.mark.parametrize(("name", "em", "uts", "drgn_name", "qemu", "gdb"), IDENTITY)
def test_lookup_by_every_name(name: str, em: int, uts: str, drgn_name: str, qemu: str, gdb: str) -> None:
    arch = get_arch(name)
    assert arch_where("elf_machine", em) is arch
    assert arch_where("uname_machines", uts) is arch
    assert arch_where("drgn_arch", drgn_name) is arch
    assert arch_where("qemu_arch", qemu) is arch
    assert arch_where("gdb_arch", gdb) is arch


def test_elf_machine_names_match_pyelftools() -> None:
    from elftools.elf.enums import ENUM_E_MACHINE

    for arch in all_arches():
        assert ENUM_E_MACHINE[arch.elf_machine_name] == arch.elf_machine


def test_drgn_knows_every_platform() -> None:
    import drgn

    for arch in all_arches():
        assert getattr(drgn.Architecture, arch.drgn_arch).name == arch.drgn_arch


def test_identity_is_unique() -> None:
    for attribute in ("elf_machine", "vmcoreinfo_key", "qemu_arch", "gdb_arch", "drgn_arch", "kernel_dir",
                      "gnu_triplet", "debian_arch"):
        values = [getattr(a, attribute) for a in all_arches()]
        assert len(set(values)) == len(values), attribute
    assert arch_where("elf_machine", 3) is None  # EM_386
