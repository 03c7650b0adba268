"""What every per-arch reference model provides, and the generic protection it encodes.

The per-arch models (inspector/model/<arch>.py) are transliterations of the
kernel's own macros (pfn_pte, __swp_entry, pte_mknapot, pte_present, ptep_get...)
written independently of the decoders in archs/, so that a test comparing the
two catches a mistake in either.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ptinspect.archs.common import PagingMode
from ptinspect.archs.versions import Layout


@dataclass(frozen=True)
class Prot:
    """A present leaf's protection as the kernel's accessors report it."""

    write: bool = True
    exec: bool = False
    user: bool = True
    young: bool = True
    dirty: bool = False
    protnone: bool = False  # PROT_NONE: present to the kernel, invalid to the MMU
    memtype: str = "normal"  # "normal" | "nc" | "io" (device)


@dataclass(frozen=True)
class SwpFields:
    """A software-leaf entry before the arch encodes it."""

    type: int
    offset: int
    exclusive: bool = False
    soft_dirty: bool = False
    uffd_wp: bool = False


class ArchModel(Protocol):
    """Per-arch kernel macros, as module-level `MODEL` in inspector/model/<arch>.py.

    `depth` is 0 for the root; `layout` is the release's layout (archs/versions.py).
    """

    name: str

    def mk_table(self, table_pa: int, depth: int, mode: PagingMode) -> int:
        """A table entry pointing at `table_pa` (pmd_populate / pud_populate...)."""

    def mk_leaf(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> int:
        """A leaf mapping `pfn` at `depth` (pfn_pte / pfn_pmd + pmd_mkhuge ...)."""

    def mk_block(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> list[int]:
        """The values of a contiguous block (arm64 contpte/contpmd, riscv NAPOT) whose
        first frame is `pfn`; empty when the arch/mode/level has no such block."""

    def mk_softleaf(self, swp: SwpFields, depth: int, mode: PagingMode, layout: Layout) -> int:
        """__swp_entry + the pte_swp_mk* flag setters (pmd_swp_* at PMD level)."""

    def pte_none(self, raw: int, depth: int, mode: PagingMode) -> bool: ...

    def pte_present(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> bool: ...

    def softleaf_from_pte(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> SwpFields | None:
        """None for none/present entries, else the type/offset and swp flag bits."""

    def leaf_pfn(self, raw: int, depth: int, mode: PagingMode) -> int:
        """pte_pfn / pmd_pfn / pud_pfn of a present leaf (first frame of the leaf)."""

    def ptep_get(self, block: Sequence[int], index: int, depth: int, mode: PagingMode, layout: Layout) -> int:
        """What ptep_get() returns for entry `index` of a block read from a live table."""

    def swp_pfn_bits(self, mode: PagingMode) -> int:
        """SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT for this mode."""
