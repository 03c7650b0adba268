"""What kernel introspection shares: the VMA record, its errors, the config facts solved from
MAX_SWAPFILES, and the VMCOREINFO note.  The kernel itself is read by inspector/rawkernel.py.
"""
from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass

from archs.common import Fact
from archs.softleaf import config_options, type_space
from archs.versions import Layout

from .reader import PhysReader

DRGN_ARCH = {"x86_64": "X86_64", "arm64": "AARCH64", "riscv64": "RISCV64"}


class KernelError(Exception):
    """The kernel could not be identified or read."""


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    flags: int
    name: str  # file path, [heap], [stack], [anon]...

    @property
    def perms(self) -> str:
        # VM_READ 0x1, VM_WRITE 0x2, VM_EXEC 0x4, VM_SHARED 0x8 (include/linux/mm.h)
        f = self.flags
        return "".join(
            c if f & bit else "-" for c, bit in (("r", 0x1), ("w", 0x2), ("x", 0x4))
        ) + ("s" if f & 0x8 else "p")


def derive_remaining(layout: Layout, facts: dict[str, Fact], max_swapfiles: int) -> dict[str, Fact]:
    """Config options not yet known, solved from MAX_SWAPFILES = 32 - the special types.

    Only when the solution is unique: every config of the unknown options is carved as the
    release's swap.h does (archs.softleaf.type_space) and kept if it gives MAX_SWAPFILES.
    """
    options = config_options(layout)
    known = {o: bool(facts[o].value) for o in options if o in facts}
    missing = [o for o in options if o not in known]
    if not missing:
        return {}
    solutions = []
    for values in itertools.product((False, True), repeat=len(missing)):
        chosen = dict(zip(missing, values))
        if type_space(layout, {**known, **chosen})[0] == max_swapfiles:
            solutions.append(chosen)
    if len(solutions) != 1:
        return {}
    return {o: Fact(v, f"derived from MAX_SWAPFILES={max_swapfiles}") for o, v in solutions[0].items()}


def read_vmcoreinfo_note(reader: PhysReader, pa: int, size: int = 4096) -> bytes:
    """The VMCOREINFO text of an ELF note at physical address `pa`."""
    data = reader.read(pa, size)
    namesz, descsz, _ = struct.unpack_from("<III", data)
    name = data[12 : 12 + namesz].rstrip(b"\0")
    if name != b"VMCOREINFO":
        raise KernelError(f"no VMCOREINFO note at {pa:#x}")
    start = 12 + ((namesz + 3) & ~3)
    return data[start : start + descsz]
