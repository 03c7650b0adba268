"""x86-64 reference model: the kernel's page-table macros, transliterated from the headers.

Written from arch/x86/include/asm/{pgtable.h,pgtable_types.h,pgtable_64.h,pgtable-invert.h}
of 5.10 / 6.1 / 6.12 / 7.2 / 7.3 without using archs/x86_64.py, so that tests comparing the
two catch a mistake in either.  What differs between releases is asked of the Layout by the
feature names of archs/versions.py tables: x86_swp_exclusive (pte_swp_mkexclusive, 5.19),
x86_saved_dirty (pte_mkdirty/pte_mkclean with _PAGE_SAVED_DIRTY, 6.6) and x86_kernel_ro_clean
(__PAGE_KERNEL_RO/ROX without ___D, 6.6).

Assumptions (those of a usual x86_64 distro kernel): CONFIG_MEM_SOFT_DIRTY=y (pte_mkdirty
also sets _PAGE_SOFT_DIRTY), __supported_pte_mask allows every bit (check_pgprot is the
identity), physical_mask is (1 << 52) - 1, and the PAT is Linux's, where
_PAGE_CACHE_MODE_UC_MINUS is PCD and _PAGE_CACHE_MODE_UC is PCD|PWT
(arch/x86/mm/init.c __cachemode2pte_tbl).
"""
from __future__ import annotations

from collections.abc import Sequence

from ptinspect.archs.common import PagingMode
from ptinspect.archs.versions import Layout

from .base import Prot, SwpFields

U64 = (1 << 64) - 1

# pgtable_types.h _PAGE_BIT_* (5.10..7.3)
_PAGE_PRESENT = 1 << 0
_PAGE_RW = 1 << 1
_PAGE_USER = 1 << 2
_PAGE_PWT = 1 << 3
_PAGE_PCD = 1 << 4
_PAGE_ACCESSED = 1 << 5
_PAGE_DIRTY = 1 << 6
_PAGE_PSE = 1 << 7
_PAGE_GLOBAL = 1 << 8
_PAGE_PROTNONE = _PAGE_GLOBAL  # pgtable_types.h _PAGE_BIT_PROTNONE
_PAGE_SOFT_DIRTY = 1 << 11  # _PAGE_BIT_SOFTW3, CONFIG_MEM_SOFT_DIRTY
_PAGE_BIT_SAVED_DIRTY = 58  # _PAGE_BIT_SOFTW5 from 6.6; 5.10/6.1 have no saved-dirty bit
_PAGE_NX = 1 << 63
_PAGE_KNL_ERRATUM_MASK = _PAGE_DIRTY | _PAGE_ACCESSED  # pgtable_types.h

# page_types.h PTE_PFN_MASK/PHYSICAL_P?D_PAGE_MASK with __PHYSICAL_MASK = (1 << 52) - 1
__PHYSICAL_MASK = (1 << 52) - 1
PTE_PFN_MASK = U64 & ~0xFFF & __PHYSICAL_MASK
PHYSICAL_PMD_PAGE_MASK = U64 & ~((1 << 21) - 1) & __PHYSICAL_MASK
PHYSICAL_PUD_PAGE_MASK = U64 & ~((1 << 30) - 1) & __PHYSICAL_MASK

# Protections (pgtable_types.h PAGE_NONE.. __PAGE_KERNEL_ROX); __PAGE_KERNEL_RO had ___D up to 6.5.
__PP, __RW, _USR, ___A, ___D, ___G, __NX = (
    _PAGE_PRESENT, _PAGE_RW, _PAGE_USER, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_GLOBAL, _PAGE_NX)
PAGE_NONE = ___A | ___G
PAGE_SHARED = __PP | __RW | _USR | ___A | __NX
PAGE_SHARED_EXEC = __PP | __RW | _USR | ___A
PAGE_READONLY = __PP | _USR | ___A | __NX
PAGE_READONLY_EXEC = __PP | _USR | ___A
__PAGE_KERNEL = __PP | __RW | ___A | __NX | ___D | ___G
__PAGE_KERNEL_EXEC = __PP | __RW | ___A | ___D | ___G
_PAGE_TABLE = __PP | __RW | _USR | ___A | ___D  # pgtable_types.h _PAGE_TABLE, used by pmd_populate


def __PAGE_KERNEL_RO(layout: Layout) -> int:
    return __PP | ___A | __NX | ___G | (0 if layout.has("x86_kernel_ro_clean") else ___D)


def __PAGE_KERNEL_ROX(layout: Layout) -> int:
    return __PP | ___A | ___G | (0 if layout.has("x86_kernel_ro_clean") else ___D)


# cachemode2protval() with Linux's PAT (arch/x86/mm/init.c __cachemode2pte_tbl).
CACHEMODE_BITS = {"normal": 0, "nc": _PAGE_PCD, "io": _PAGE_PCD | _PAGE_PWT}

# pgtable_64.h SWP_TYPE_BITS, SWP_OFFSET_FIRST_BIT, __swp_entry (5.10..7.3)
SWP_TYPE_BITS = 5
SWP_OFFSET_FIRST_BIT = 8 + 1  # _PAGE_BIT_PROTNONE + 1
SWP_OFFSET_SHIFT = SWP_OFFSET_FIRST_BIT + SWP_TYPE_BITS
_PAGE_SWP_EXCLUSIVE = _PAGE_PWT  # pgtable_64_types.h, from 5.19
_PAGE_SWP_SOFT_DIRTY = _PAGE_RW  # pgtable_types.h
_PAGE_SWP_UFFD_WP = _PAGE_USER  # pgtable_types.h (_PAGE_SWP_UFFD in 7.3)


def __pte_needs_invert(val: int) -> bool:
    """pgtable-invert.h __pte_needs_invert()."""
    return val != 0 and not val & _PAGE_PRESENT


def protnone_mask(val: int) -> int:
    """pgtable-invert.h protnone_mask()."""
    return U64 if __pte_needs_invert(val) else 0


def _pfn_entry(page_nr: int, pgprot: int, mask: int) -> int:
    """pfn_pte/pfn_pmd/pfn_pud (pgtable.h)."""
    pfn = (page_nr << 12) & U64
    pfn ^= protnone_mask(pgprot)
    pfn &= mask
    return pfn | pgprot


def mksaveddirty_shift(v: int) -> int:
    """pgtable.h mksaveddirty_shift() (6.6..7.3): move D to SavedDirty when Write=0."""
    cond = ((~v & U64) >> 1) & 1
    v |= ((v >> 6) & cond) << _PAGE_BIT_SAVED_DIRTY
    v &= ~(cond << 6) & U64
    return v


def mkdirty(v: int, layout: Layout) -> int:
    """pte/pmd/pud_mkdirty (pgtable.h): D|SOFT_DIRTY, then from 6.6 mksaveddirty_shift()."""
    v |= _PAGE_DIRTY | _PAGE_SOFT_DIRTY
    return mksaveddirty_shift(v) if layout.has("x86_saved_dirty") else v


def mkclean(v: int, layout: Layout) -> int:
    """pte_mkclean clears _PAGE_DIRTY (up to 6.5) or _PAGE_DIRTY_BITS (D|SavedDirty, from 6.6)."""
    bits = _PAGE_DIRTY | ((1 << _PAGE_BIT_SAVED_DIRTY) if layout.has("x86_saved_dirty") else 0)
    return v & ~bits & U64


def pgprot_of(prot: Prot, layout: Layout) -> int:
    """The protection_map / PAGE_KERNEL* value for a Prot, with its cache bits."""
    if prot.memtype not in CACHEMODE_BITS:
        raise ValueError(f"x86_64 model cannot encode memtype {prot.memtype!r}")
    if prot.protnone:
        return PAGE_NONE | CACHEMODE_BITS[prot.memtype]
    if prot.user:
        table = {(True, True): PAGE_SHARED_EXEC, (True, False): PAGE_SHARED,
                 (False, True): PAGE_READONLY_EXEC, (False, False): PAGE_READONLY}
    else:
        table = {(True, True): __PAGE_KERNEL_EXEC, (True, False): __PAGE_KERNEL,
                 (False, True): __PAGE_KERNEL_ROX(layout), (False, False): __PAGE_KERNEL_RO(layout)}
    return table[(prot.write, prot.exec)] | CACHEMODE_BITS[prot.memtype]


class X86_64Model:
    """x86-64 macros as an ArchModel (module-level MODEL)."""

    name = "x86_64"

    @staticmethod
    def _level(depth: int, mode: PagingMode) -> str:
        return mode.levels[depth].name

    def mk_table(self, table_pa: int, depth: int, mode: PagingMode) -> int:
        """pmd/pud/p4d/pgd_populate: __pa(table) | _PAGE_TABLE (pgalloc.h)."""
        return (table_pa & PTE_PFN_MASK) | _PAGE_TABLE

    def mk_leaf(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> int:
        """pfn_pte, or pfn_pmd/pfn_pud + pmd/pud_mkhuge; then mkyoung/mkold, mkdirty/mkclean."""
        level = self._level(depth, mode)
        masks = {"pte": PTE_PFN_MASK, "pmd": PHYSICAL_PMD_PAGE_MASK, "pud": PHYSICAL_PUD_PAGE_MASK}
        if level not in masks:
            raise ValueError(f"x86_64 has no leaves at {level}")
        v = _pfn_entry(pfn, pgprot_of(prot, layout), masks[level])
        if level != "pte":
            v |= _PAGE_PSE  # pmd_mkhuge / pud_mkhuge
        v = v | _PAGE_ACCESSED if prot.young else v & ~_PAGE_ACCESSED
        return mkdirty(v, layout) if prot.dirty else mkclean(v, layout)

    def mk_block(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> list[int]:
        """x86 has no contiguous-block hint."""
        return []

    def mk_softleaf(self, swp: SwpFields, depth: int, mode: PagingMode, layout: Layout) -> int:
        """__swp_entry + pte_swp_mk{exclusive,soft_dirty,uffd_wp} (pmd_swp_* at PMD level;
        hugetlb PUD entries go through the pte_* helpers)."""
        level = self._level(depth, mode)
        if level not in ("pte", "pmd", "pud"):
            raise ValueError(f"the kernel writes no software leaves at {level}")
        v = (((~swp.offset & U64) << SWP_OFFSET_SHIFT) & U64) >> SWP_TYPE_BITS
        v |= (swp.type << (64 - SWP_TYPE_BITS)) & U64
        if swp.exclusive:
            if level == "pmd":
                raise ValueError("there is no pmd_swp_mkexclusive")
            if not layout.has("x86_swp_exclusive"):
                raise ValueError(f"there is no pte_swp_mkexclusive in {layout.name} (5.19 and later)")
            v |= _PAGE_SWP_EXCLUSIVE
        if swp.soft_dirty:
            v |= _PAGE_SWP_SOFT_DIRTY
        if swp.uffd_wp:
            v |= _PAGE_SWP_UFFD_WP
        return v

    def pte_none(self, raw: int, depth: int, mode: PagingMode) -> bool:
        """pte/pmd/pud/p4d_none mask the KNL A/D erratum; 5-level pgd_none is `!val`
        (pgtable.h pte_none, pmd_none, pud_none, p4d_none, pgd_none)."""
        if depth == 0 and len(mode.levels) == 5:
            return raw == 0
        return raw & ~_PAGE_KNL_ERRATUM_MASK == 0

    def pte_present(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> bool:
        """pte_present (P|PROTNONE), pmd_present (P|PROTNONE|PSE), p4d/pgd_present (P).
        A PUD is read as hugetlb does (huge_ptep_get -> pte_present)."""
        level = self._level(depth, mode)
        if level in ("pte", "pud"):
            return bool(raw & (_PAGE_PRESENT | _PAGE_PROTNONE))
        if level == "pmd":
            return bool(raw & (_PAGE_PRESENT | _PAGE_PROTNONE | _PAGE_PSE))
        return bool(raw & _PAGE_PRESENT)

    def softleaf_from_pte(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> SwpFields | None:
        """softleaf_from_pte / softleaf_from_pmd (include/linux/leafops.h, 7.2; pte_to_swp_entry
        before 6.19): the flag bits lie below the offset, so clearing them does not change
        __swp_type/__swp_offset.  Bit 3 is pte_swp_exclusive() from 5.19 only."""
        if self.pte_present(raw, depth, mode, layout) or self.pte_none(raw, depth, mode):
            return None
        level = self._level(depth, mode)
        if level not in ("pte", "pmd", "pud"):
            raise ValueError(f"the kernel writes no software leaves at {level}")
        return SwpFields(
            type=raw >> (64 - SWP_TYPE_BITS),
            offset=((~raw & U64) << SWP_TYPE_BITS & U64) >> SWP_OFFSET_SHIFT,
            exclusive=level != "pmd" and layout.has("x86_swp_exclusive") and bool(raw & _PAGE_SWP_EXCLUSIVE),
            soft_dirty=bool(raw & _PAGE_SWP_SOFT_DIRTY),
            uffd_wp=bool(raw & _PAGE_SWP_UFFD_WP),
        )

    def leaf_pfn(self, raw: int, depth: int, mode: PagingMode) -> int:
        """pte_pfn / pmd_pfn / pud_pfn (pgtable.h)."""
        level = self._level(depth, mode)
        mask = PTE_PFN_MASK
        if raw & _PAGE_PSE and level == "pmd":
            mask = PHYSICAL_PMD_PAGE_MASK  # pmd_pfn_mask
        elif raw & _PAGE_PSE and level == "pud":
            mask = PHYSICAL_PUD_PAGE_MASK  # pud_pfn_mask
        return ((raw ^ protnone_mask(raw)) & mask) >> 12

    def ptep_get(self, block: Sequence[int], index: int, depth: int, mode: PagingMode, layout: Layout) -> int:
        """ptep_get is READ_ONCE(*ptep) on x86."""
        return block[index]

    def swp_pfn_bits(self, mode: PagingMode) -> int:
        """MAX_PHYSMEM_BITS (pgtable_l5_enabled() ? 52 : 46, sparsemem.h) - PAGE_SHIFT."""
        return (52 if len(mode.levels) == 5 else 46) - 12


MODEL = X86_64Model()
