"""The riscv64 kernel macros, transliterated from arch/riscv/include/asm/pgtable*.h of 5.10..7.3.

Written independently of archs/riscv64.py (tests compare the two); what differs between
releases is asked of the layout (archs/versions.py feature names, the releases read in the
5.10, 6.1, 6.12, 7.2 and 7.3 headers).  Assumptions the C code settles at boot and this model fixes:
- Svpbmt, not the T-Head memory types (ALT_SVPBMT patched to the Svpbmt values, ALT_THEAD_PMA a no-op),
  where the release has Svpbmt (5.19+); before, pgprot_noncached/writecombine change nothing;
- Svnapot present where the release supports it (6.4+, has_svnapot() true);
- 6.19+ with Svrsw60t59b and CONFIG_MEM_SOFT_DIRTY/uffd, so _PAGE_SWP_SOFT_DIRTY and
  _PAGE_SWP_UFFD_WP (7.3: _PAGE_SWP_UFFD) are bits 3 and 4; pte_mkdirty is modelled without
  _PAGE_SOFT_DIRTY;
- CONFIG_TRANSPARENT_HUGEPAGE where the release has it (5.14+: pmd_present tests _PAGE_LEAF too)
  and CONFIG_SPARSEMEM.
"""
from __future__ import annotations

from collections.abc import Sequence

from ptinspect.archs.common import PagingMode
from ptinspect.archs.versions import Layout

from .base import Prot, SwpFields

PAGE_SHIFT = 12
_PAGE_PRESENT = 1 << 0  # pgtable-bits.h (bits 0-9 the same 5.10..7.3)
_PAGE_READ = 1 << 1
_PAGE_WRITE = 1 << 2
_PAGE_EXEC = 1 << 3
_PAGE_USER = 1 << 4
_PAGE_GLOBAL = 1 << 5
_PAGE_ACCESSED = 1 << 6
_PAGE_DIRTY = 1 << 7
_PAGE_TABLE = _PAGE_PRESENT  # pgtable-bits.h _PAGE_TABLE
_PAGE_SWP_EXCLUSIVE = _PAGE_ACCESSED  # pgtable-bits.h (6.12, 7.2; absent in 6.1)
_PAGE_SWP_SOFT_DIRTY = _PAGE_EXEC  # pgtable-bits.h (7.2, 7.3; Svrsw60t59b)
_PAGE_SWP_UFFD = _PAGE_USER  # pgtable-bits.h _PAGE_SWP_UFFD_WP (7.2), _PAGE_SWP_UFFD (7.3)
_PAGE_PFN_SHIFT = 10  # pgtable-bits.h (5.10..7.3)
_PAGE_LEAF = _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC  # pgtable-bits.h (6.1+; 5.10 spells the three out)
_PAGE_PFN_MASK = sum(1 << b for b in range(10, 54))  # GENMASK(53, 10), pgtable-64.h (6.1+; 5.10 has none)
_PAGE_NOCACHE = 1 << 61  # _PAGE_NOCACHE_SVPBMT, pgtable-64.h (6.1+)
_PAGE_IO = 1 << 62  # _PAGE_IO_SVPBMT, pgtable-64.h (6.1+)
_PAGE_MTMASK = _PAGE_NOCACHE | _PAGE_IO
_PAGE_NAPOT = 1 << 63  # pgtable-64.h (6.12+; absent in 6.1)
NAPOT_CONT64KB_ORDER = 4  # pgtable-64.h enum napot_cont_order
PMD_SHIFT = 21
PUD_SHIFT = 30
MAX_PHYSMEM_BITS = 56  # sparsemem.h (CONFIG_PA_BITS = 56 in 5.10, 56 from 6.1)
ULONG = (1 << 64) - 1


def prot_none(layout: Layout) -> int:
    """_PAGE_PROT_NONE: _PAGE_READ in 5.10 (pgtable-bits.h), _PAGE_GLOBAL in 6.1..7.3."""
    return _PAGE_GLOBAL if layout.has("riscv_prot_none_global") else _PAGE_READ


def swp_type_shift(layout: Layout) -> int:
    """pgtable.h __SWP_TYPE_SHIFT: 2 in 5.10, 6 in 6.1, 7 in 6.12/7.2/7.3 (__SWP_TYPE_BITS 5)."""
    if layout.has("riscv_swp_exclusive"):
        return 7
    return 6 if layout.has("riscv_prot_none_global") else 2


# pgtable.h _PAGE_BASE / PAGE_* (5.10, 6.1, 6.12, 7.2, 7.3)
_PAGE_BASE = _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_USER
PAGE_READ = _PAGE_BASE | _PAGE_READ
PAGE_WRITE = _PAGE_BASE | _PAGE_READ | _PAGE_WRITE
PAGE_READ_EXEC = _PAGE_BASE | _PAGE_READ | _PAGE_EXEC
PAGE_WRITE_EXEC = _PAGE_BASE | _PAGE_READ | _PAGE_EXEC | _PAGE_WRITE
# pgtable.h _PAGE_KERNEL (5.10..7.3)
_PAGE_KERNEL = _PAGE_READ | _PAGE_WRITE | _PAGE_PRESENT | _PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_GLOBAL
PAGE_KERNEL = _PAGE_KERNEL
PAGE_KERNEL_READ = _PAGE_KERNEL & ~_PAGE_WRITE
PAGE_KERNEL_EXEC = _PAGE_KERNEL | _PAGE_EXEC
PAGE_KERNEL_READ_EXEC = (_PAGE_KERNEL & ~_PAGE_WRITE) | _PAGE_EXEC

SWP_TYPE_MASK = (1 << 5) - 1  # __SWP_TYPE_MASK


def _pte_depth(depth: int, mode: PagingMode) -> bool:
    return depth == len(mode.levels) - 1


def _shift(depth: int, mode: PagingMode) -> int:
    return mode.levels[depth].shift


def pgprot(prot: Prot, layout: Layout) -> int:
    """The pgprot_t a VMA or the kernel would use (protection_map, PAGE_KERNEL*, pgprot_*)."""
    if prot.protnone:
        # PAGE_NONE: _PAGE_PROT_NONE in 5.10, _PAGE_PROT_NONE | _PAGE_READ in 6.1..7.3
        val = prot_none(layout) | _PAGE_READ
    elif prot.user:
        val = (PAGE_WRITE_EXEC if prot.exec else PAGE_WRITE) if prot.write else (
            PAGE_READ_EXEC if prot.exec else PAGE_READ)
    else:
        val = (PAGE_KERNEL_EXEC if prot.exec else PAGE_KERNEL) if prot.write else (
            PAGE_KERNEL_READ_EXEC if prot.exec else PAGE_KERNEL_READ)
    if not layout.has("riscv_svpbmt"):
        return val  # 5.10: no riscv pgprot_noncached/writecombine, the generic ones return prot
    if prot.memtype == "nc":  # pgprot_writecombine (pgtable.h, 6.1..7.3)
        val = (val & ~_PAGE_MTMASK) | _PAGE_NOCACHE
    elif prot.memtype == "io":  # pgprot_noncached (pgtable.h, 6.1..7.3)
        val = (val & ~_PAGE_MTMASK) | _PAGE_IO
    return val


def pte_mkyoung_old_dirty(val: int, prot: Prot) -> int:
    """pte_mkyoung / pte_mkold and pte_mkdirty / pte_mkclean (pgtable.h)."""
    val = val | _PAGE_ACCESSED if prot.young else val & ~_PAGE_ACCESSED
    return val | _PAGE_DIRTY if prot.dirty else val & ~_PAGE_DIRTY


def pfn_pte(pfn: int, prot: int) -> int:
    """pfn_pte / pfn_pmd / pfn_pud: (pfn << _PAGE_PFN_SHIFT) | prot (pgtable.h, 5.10..7.3)."""
    return ((pfn << _PAGE_PFN_SHIFT) | prot) & ULONG


def pte_mknapot(pte: int, order: int) -> int:
    """pte_mknapot (pgtable.h, 6.12/7.2)."""
    pos = order - 1 + _PAGE_PFN_SHIFT
    napot_mask = ~sum(1 << b for b in range(_PAGE_PFN_SHIFT, pos + 1))
    return (pte & napot_mask & ULONG) | (1 << pos) | _PAGE_NAPOT


class Riscv64Model:
    """The kernel's riscv64 macros (module-level MODEL)."""

    name = "riscv64"

    def mk_table(self, table_pa: int, depth: int, mode: PagingMode) -> int:
        """pmd_populate / pud_populate / p4d_populate / pgd_populate (pgalloc.h, 7.2)."""
        return ((table_pa >> PAGE_SHIFT) << _PAGE_PFN_SHIFT) | _PAGE_TABLE

    def mk_leaf(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> int:
        """pfn_pte; pfn_pmd + pmd_mkhuge; pfn_pud + pud_mkhuge (both identities)."""
        if _shift(depth, mode) > PUD_SHIFT:
            raise ValueError(f"Linux makes no leaves at {mode.levels[depth].name} on riscv64")
        return pfn_pte(pfn, pte_mkyoung_old_dirty(pgprot(prot, layout), prot))

    def mk_block(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> list[int]:
        """A 64 KiB hugetlb page: arch_make_huge_pte -> pte_mknapot(entry, 4), written 16 times
        unchanged by set_huge_pte_at (arch/riscv/mm/hugetlbpage.c, 6.12/7.2); none without Svnapot."""
        if not layout.has("riscv_svnapot") or not _pte_depth(depth, mode):
            return []
        pte = pte_mknapot(self.mk_leaf(pfn, depth, mode, prot, layout), NAPOT_CONT64KB_ORDER)
        return [pte] * (1 << NAPOT_CONT64KB_ORDER)

    def mk_softleaf(self, swp: SwpFields, depth: int, mode: PagingMode, layout: Layout) -> int:
        """__swp_entry_to_pte(__swp_entry(type, offset)) plus pte_swp_mkexclusive,
        pte_swp_mksoft_dirty, pte_swp_mkuffd_wp / pte_swp_mkuffd (pmd_swp_* are the same bits)."""
        shift = swp_type_shift(layout)
        if layout.has("riscv_swp_exclusive"):
            val = ((swp.type & SWP_TYPE_MASK) << shift) | (swp.offset << (shift + 5))
        else:
            val = (swp.type << shift) | (swp.offset << (shift + 5))  # 5.10/6.1 do not mask the type
        val &= ULONG
        if swp.exclusive:
            if not layout.has("riscv_swp_exclusive"):
                raise ValueError(f"riscv {layout.name} has no _PAGE_SWP_EXCLUSIVE")
            val |= _PAGE_SWP_EXCLUSIVE
        if swp.soft_dirty or swp.uffd_wp:
            if not layout.has("riscv_svrsw60t59b"):
                raise ValueError(f"riscv {layout.name} has no swap soft-dirty/uffd bits")
            val |= (_PAGE_SWP_SOFT_DIRTY if swp.soft_dirty else 0) | (_PAGE_SWP_UFFD if swp.uffd_wp else 0)
        return val

    def pte_none(self, raw: int, depth: int, mode: PagingMode) -> bool:
        return raw == 0  # pte_none/pmd_none/pud_none (pgtable.h, 5.10..7.3)

    def pte_present(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> bool:
        """pte_present; pmd_present (with THP where the release has it); hugetlb's pte_present at
        PUD; p4d/pgd_present."""
        shift = _shift(depth, mode)
        none_bit = prot_none(layout)
        if shift == PMD_SHIFT and layout.has("riscv_thp"):
            return bool(raw & (_PAGE_PRESENT | none_bit | _PAGE_LEAF))  # pmd_present, THP (6.1..7.3)
        if shift > PUD_SHIFT:
            return bool(raw & _PAGE_PRESENT)
        return bool(raw & (_PAGE_PRESENT | none_bit))  # pte_present (5.10..7.3), pmd_present in 5.10

    def softleaf_from_pte(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> SwpFields | None:
        """pte_swp_clear_flags, then __swp_type / __swp_offset (generic swapops.h / leafops.h)."""
        if self.pte_none(raw, depth, mode) or self.pte_present(raw, depth, mode, layout):
            return None
        shift = swp_type_shift(layout)
        exclusive = layout.has("riscv_swp_exclusive") and bool(raw & _PAGE_SWP_EXCLUSIVE)
        rsw = layout.has("riscv_svrsw60t59b")
        soft_dirty = rsw and bool(raw & _PAGE_SWP_SOFT_DIRTY)
        uffd = rsw and bool(raw & _PAGE_SWP_UFFD)
        return SwpFields((raw >> shift) & SWP_TYPE_MASK, raw >> (shift + 5), exclusive, soft_dirty, uffd)

    def leaf_pfn(self, raw: int, depth: int, mode: PagingMode) -> int:
        """pte_pfn (NAPOT: clear the lowest set PPN bit, pgtable.h 6.12/7.2); pmd_pfn; pud_pfn."""
        res = (raw & _PAGE_PFN_MASK) >> _PAGE_PFN_SHIFT
        if _pte_depth(depth, mode):
            return res & (res - 1) if raw & _PAGE_NAPOT else res
        size = 1 << _shift(depth, mode)
        return ((res << PAGE_SHIFT) & ~(size - 1)) >> PAGE_SHIFT  # __pmd_to_phys & PMD_MASK

    def ptep_get(self, block: Sequence[int], index: int, depth: int, mode: PagingMode, layout: Layout) -> int:
        """huge_ptep_get for a NAPOT block (arch/riscv/mm/hugetlbpage.c, 6.4+): the block's first PTE
        with pte_mkdirty/pte_mkyoung for every dirty/young PTE; otherwise the entry itself."""
        if not layout.has("riscv_svnapot") or not _pte_depth(depth, mode) or len(block) != 1 << NAPOT_CONT64KB_ORDER:
            return block[index]
        orig = block[0]
        # NAPOT blocks exist from 6.4, where _PAGE_PROT_NONE is _PAGE_GLOBAL
        if not orig & (_PAGE_PRESENT | _PAGE_GLOBAL) or not orig & _PAGE_NAPOT:
            return orig
        for pte in block:
            if pte & _PAGE_DIRTY:
                orig |= _PAGE_DIRTY
            if pte & _PAGE_ACCESSED:
                orig |= _PAGE_ACCESSED
        return orig

    def swp_pfn_bits(self, mode: PagingMode) -> int:
        return MAX_PHYSMEM_BITS - PAGE_SHIFT  # include/linux/swapops.h SWP_PFN_BITS (6.1+)


MODEL = Riscv64Model()
