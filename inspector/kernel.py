"""What kernel introspection shares: the VMA record and its vm_flags, its errors, and the config
facts solved from MAX_SWAPFILES.  The kernel itself is read by inspector/rawkernel/.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from ptinspect.archs import get_arch
from ptinspect.archs.common import Fact
from ptinspect.archs.softleaf import config_options, type_space
from ptinspect.archs.versions import Layout


class KernelError(Exception):
    """The kernel could not be identified or read."""


def drgn_program(arch: str | None):  # -> drgn.Program (drgn ships no type information)
    """A drgn Program for a 64-bit little-endian kernel of `arch`, or with no platform (drgn finds it
    in the core or /proc/kcore) when None."""
    import drgn

    if arch is None:
        return drgn.Program()
    flags = drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN
    return drgn.Program(drgn.Platform(getattr(drgn.Architecture, get_arch(arch).drgn_arch), flags))


# vm_flags bits (include/linux/mm.h VM_*; the same bit numbers in 5.10..7.3, where 6.18+ spell them
# DECLARE_VMA_BIT(NAME, bit)).  VM_UFFD_RWP is new in 7.3 (DECLARE_VMA_BIT(UFFD_RWP, 43)).
VM_READ, VM_WRITE, VM_EXEC, VM_SHARED = 1 << 0, 1 << 1, 1 << 2, 1 << 3
VM_MAYSHARE = 1 << 7
VM_UFFD_WP = 1 << 12
VM_HUGETLB = 1 << 22
VM_UFFD_RWP = 1 << 43


@dataclass(frozen=True)
class Vma:
    start: int
    end: int
    flags: int
    name: str  # file path, [heap], [stack], [anon]...

    @property
    def perms(self) -> str:
        """rwxs/p as /proc/PID/maps shows them: 's' is VM_MAYSHARE (show_vma_header_prefix,
        fs/proc/task_mmu.c), so a MAP_SHARED mapping of a read-only file is shared too."""
        f = self.flags
        return "".join(c if f & bit else "-" for c, bit in (("r", VM_READ), ("w", VM_WRITE), ("x", VM_EXEC))) + (
            "s" if f & VM_MAYSHARE else "p")


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


def confirmation(layout: Layout, facts: dict[str, Fact], max_swapfiles: int) -> str:
    """What the vmlinux says of an assumed layout: whether the bound of its swap_info[] is a
    MAX_SWAPFILES the assumed swap.h carving gives with the config known (the one part of the
    software-leaf layout the debug info states; struct layouts are read from the DWARF anyway)."""
    options = config_options(layout)
    known = {o: bool(facts[o].value) for o in options if o in facts}
    missing = [o for o in options if o not in known]
    fits = any(type_space(layout, {**known, **dict(zip(missing, values))})[0] == max_swapfiles
               for values in itertools.product((False, True), repeat=len(missing)))
    if fits:
        return (f"the vmlinux confirms the swap-type space (swap_info[] holds {max_swapfiles} = MAX_SWAPFILES "
                f"of this layout); struct layouts are read from its DWARF")
    return (f"the vmlinux CONTRADICTS the swap-type space: swap_info[] holds {max_swapfiles}, which no config "
            f"of this layout gives; software-leaf types may be misread")
