"""What kernel introspection shares: the VMA record, its errors, the config facts solved from
MAX_SWAPFILES, and the VMCOREINFO note.  The kernel itself is read by inspector/rawkernel.py.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from archs.common import Fact
from archs.softleaf import CONFIG_OPTIONS

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


def derive_remaining(family: str, facts: dict[str, Fact], max_swapfiles: int) -> dict[str, Fact]:
    """Config options not yet known, solved from MAX_SWAPFILES = 32 - the special types.

    Only when the solution is unique: 6.1 has CONFIG_DEVICE_PRIVATE (4 types) and
    CONFIG_PTE_MARKER (1) both possibly unknown, whose sums 0/1/4/5 differ.
    """
    known = {o: bool(facts[o].value) for o in CONFIG_OPTIONS[family] if o in facts}
    missing = [o for o in CONFIG_OPTIONS[family] if o not in known]
    if not missing:
        return {}
    sizes = {
        "CONFIG_MEMORY_FAILURE": 1,
        "CONFIG_MIGRATION": 3,
        "CONFIG_DEVICE_PRIVATE": 3 if family == "7.2" else 4,
        "CONFIG_PTE_MARKER": 1,
    }
    # One type is always carved: SWP_PTE_MARKER (6.12+) or SWP_SWAPIN_ERROR (6.1).
    rest = 32 - max_swapfiles - 1 - sum(sizes[o] for o, on in known.items() if on)
    solutions = []
    for mask in range(1 << len(missing)):
        chosen = {o: bool(mask >> i & 1) for i, o in enumerate(missing)}
        if sum(sizes[o] for o, on in chosen.items() if on) == rest:
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
