"""arm64 reference model: the kernel's page-table macros, transliterated from the headers.

Written from arch/arm64/include/asm/{pgtable.h,pgtable-prot.h,pgtable-hwdef.h,pgalloc.h,memory.h},
arch/arm64/mm/{contpte.c,hugetlbpage.c,mmap.c} of 5.10, 6.1, 6.12, 7.2 and 7.3 (line numbers
`a/b/c` are 6.1/6.12/7.2) without using archs/arm64.py, so that tests comparing the two catch a
mistake in either.  Where the macros differ between releases the model asks the release's
`Layout` (archs/versions.py) for the feature that changed them.

A mode's options stand for the kernel configuration: "lpa2" is a CONFIG_ARM64_LPA2 kernel
with lpa2_is_enabled() (TCR_EL1.DS=1), "lpa" a 64K CONFIG_ARM64_PA_BITS_52 kernel, "ttbr1"
init_mm (kernel tables).  Assumptions: arm64_use_ng_mappings is false (PTE_MAYBE_NG = 0),
a 64K mode without "lpa" is CONFIG_ARM64_PA_BITS=48, and the layout-less helpers
(mk_table, leaf_pfn, ptep_get, swp_pfn_bits) follow 6.14..7.3.
"""
from __future__ import annotations

from collections.abc import Sequence

from ptinspect.archs.common import PagingMode
from ptinspect.archs.versions import Layout

from .base import Prot, SwpFields

U64 = (1 << 64) - 1


def GENMASK(h: int, lo: int) -> int:
    return ((1 << (h + 1)) - 1) & ~((1 << lo) - 1)


# pgtable-hwdef.h:143-156/158-171/164-176
PTE_VALID = 1 << 0
PTE_TYPE_PAGE = 3 << 0
PMD_TYPE_TABLE = 3 << 0
PMD_TYPE_SECT = 1 << 0
PTE_USER = 1 << 6
PTE_RDONLY = 1 << 7
PTE_SHARED = 3 << 8
PTE_AF = 1 << 10
PTE_NG = 1 << 11
PTE_DBM = 1 << 51
PTE_CONT = 1 << 52
PMD_SECT_CONT = 1 << 52  # pgtable-hwdef.h:128/143/149
PTE_PXN = 1 << 53
PTE_UXN = 1 << 54
PMD_TABLE_AF = 1 << 10  # 7.2 only (pgtable-hwdef.h:139)
PMD_TABLE_PXN = 1 << 59  # same bit as PGD/P4D/PUD_TABLE_PXN
PMD_TABLE_UXN = 1 << 60
PTE_ATTRINDX_MASK = 7 << 2


def PTE_ATTRINDX(t: int) -> int:
    return t << 2


# memory.h:140-144/172-176/171-175; 5.10 memory.h: MT_NORMAL_WT 3, MT_DEVICE_nGnRnE 4,
# MT_DEVICE_nGnRE 5, MT_DEVICE_GRE 6 (renumbered in 5.14).
MT_NORMAL, MT_NORMAL_NC = 0, 2


def MT_DEVICE_nGnRE(layout: Layout) -> int:
    return 4 if layout.has("arm64_mt_device_renumbered") else 5

# pgtable-prot.h:16-28/16-34/16-35
PTE_WRITE = PTE_DBM
PTE_SWP_EXCLUSIVE = 1 << 2
PTE_DIRTY = 1 << 55
PTE_PROT_NONE = 1 << 58  # 5.10, 6.1
PMD_PRESENT_INVALID = 1 << 59  # 5.10, 6.1
PTE_PRESENT_INVALID = PTE_NG  # 6.12+
PTE_SWP_UFFD_WP = 1 << 3  # 6.12, 7.2 (PTE_SWP_UFFD in 7.3), CONFIG_HAVE_ARCH_USERFAULTFD_WP


def PTE_MAYBE_SHARED(mode: PagingMode) -> int:
    """pgtable-prot.h:79-88/83-92 (6.12+): lpa2_is_enabled() ? 0 : PTE_SHARED."""
    return 0 if "lpa2" in mode.options else PTE_SHARED


def _PROT_DEFAULT() -> int:
    return PTE_TYPE_PAGE | PTE_AF | PTE_SHARED  # pgtable-prot.h:30/37/38


def PROT_NORMAL(mode: PagingMode) -> int:
    """PROT_DEFAULT | PTE_PXN | PTE_UXN | PTE_WRITE | MT_NORMAL (pgtable-prot.h:39/46/46)."""
    prot_default = PTE_TYPE_PAGE | PTE_MAYBE_SHARED(mode) | PTE_AF  # PTE_MAYBE_NG = 0
    return prot_default | PTE_PXN | PTE_UXN | PTE_WRITE | PTE_ATTRINDX(MT_NORMAL)


_PAGE_DEFAULT = _PROT_DEFAULT() | PTE_ATTRINDX(MT_NORMAL)  # pgtable-prot.h:46/53/53
# pgtable-prot.h:54-58/61-65/61-65
_PAGE_SHARED = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN | PTE_WRITE
_PAGE_SHARED_EXEC = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_WRITE
_PAGE_READONLY = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN
_PAGE_READONLY_EXEC = _PAGE_DEFAULT | PTE_USER | PTE_RDONLY | PTE_NG | PTE_PXN


def PAGE_NONE(layout: Layout) -> int:
    """pgtable-prot.h:100/120/124 (5.10: 84): PTE_PROT_NONE up to 6.1, PTE_PRESENT_INVALID from 6.12."""
    marker = PTE_PRESENT_INVALID if layout.has("arm64_present_invalid") else PTE_PROT_NONE
    return (_PAGE_DEFAULT & ~PTE_VALID) | marker | PTE_RDONLY | PTE_NG | PTE_PXN | PTE_UXN


def _PAGE_KERNEL(mode: PagingMode, write: bool, exec_: bool) -> int:
    """_PAGE_KERNEL / _RO / _ROX / _EXEC (pgtable-prot.h:48-51/55-58/55-58)."""
    prot = PROT_NORMAL(mode)
    if not write:
        prot = (prot & ~PTE_WRITE) | PTE_RDONLY
    if exec_:
        prot &= ~PTE_PXN
    return prot | PTE_DIRTY


def pgprot_modify(prot: int, mask: int, bits: int) -> int:
    return (prot & ~mask) | bits


def MEMTYPE(memtype: str, layout: Layout) -> int | None:
    """pgprot_writecombine / pgprot_device (pgtable.h:563-566/679-682/753-756; 5.10: 489-492)."""
    return {"nc": PTE_ATTRINDX(MT_NORMAL_NC), "io": PTE_ATTRINDX(MT_DEVICE_nGnRE(layout))}.get(memtype)


def vm_prot(prot: Prot, mode: PagingMode, layout: Layout) -> int:
    """The pgprot a mapping with `prot` gets: protection_map (mm/mmap.c) or PAGE_KERNEL_*."""
    if prot.protnone:
        val = PAGE_NONE(layout)
    elif prot.user:
        if prot.write:
            val = _PAGE_SHARED_EXEC if prot.exec else _PAGE_SHARED
        else:
            val = _PAGE_READONLY_EXEC if prot.exec else _PAGE_READONLY
    else:
        val = _PAGE_KERNEL(mode, prot.write, prot.exec)
    if (prot.user or prot.protnone) and "lpa2" in mode.options:
        val &= ~PTE_SHARED  # adjust_protection_map (mm/mmap.c:-/78/80)
    memtype = MEMTYPE(prot.memtype, layout)
    if memtype is not None:
        val = pgprot_modify(val, PTE_ATTRINDX_MASK, memtype | PTE_PXN | PTE_UXN)
    return val


def phys_to_pte_val(phys: int, mode: PagingMode, layout: Layout | None = None) -> int:
    """pgtable.h:82-88/82-88/120-133; PHYS_TO_PTE_ADDR_MASK (pgtable-hwdef.h:161/179,183/184,188).
    PTE_ADDR_LOW is GENMASK(47, 16) with 64K pages up to 6.1 (5.10 pgtable-hwdef.h:150), 49 from
    6.12 (the LPA2 series); no layout: 6.12+."""
    if "lpa2" in mode.options:
        return (phys | (phys >> 42)) & GENMASK(49, 8)
    if "lpa" in mode.options:
        low = GENMASK(49 if layout is None or layout.has("arm64_lpa2") else 47, 16)
        return (phys | (phys >> 36)) & (low | (0xF << 12))
    return phys


def pte_to_phys(pte: int, mode: PagingMode) -> int:
    """6.12/7.2 pgtable.h:76-80/114-119 (PTE_ADDR_LOW = GENMASK(49, PAGE_SHIFT))."""
    if "lpa2" in mode.options:
        return (pte & GENMASK(49, mode.page_shift)) | ((pte & (0x3 << 8)) << 42)
    if "lpa" in mode.options:
        pte &= ~PTE_SHARED
        return (pte & GENMASK(49, 16)) | ((pte & (0xF << 12)) << 36)
    return pte & GENMASK(49, mode.page_shift)


def pte_dirty(pte: int) -> bool:
    """pte_sw_dirty || pte_hw_dirty (pgtable.h:123-125/123-125/167-169)."""
    return bool(pte & PTE_DIRTY) or (bool(pte & PTE_WRITE) and not pte & PTE_RDONLY)


def pte_mkdirty(pte: int) -> int:
    """pgtable.h:199/226/270."""
    pte |= PTE_DIRTY
    if pte & PTE_WRITE:
        pte &= ~PTE_RDONLY
    return pte


def pte_mkclean(pte: int) -> int:
    """pgtable.h:191/218/262."""
    return (pte & ~PTE_DIRTY) | PTE_RDONLY


def pte_mkyoung(pte: int) -> int:
    return pte | PTE_AF  # pgtable.h:228/255/299


def pte_mkold(pte: int) -> int:
    return pte & ~PTE_AF  # pgtable.h:223/250/294


def _hw(depth: int, mode: PagingMode) -> int:
    return int(mode.levels[depth].hw[1:])


def _shift(mode: PagingMode, n: int) -> int:
    """ARM64_HW_PGTABLE_LEVEL_SHIFT(n) (pgtable-hwdef.h:41/41/47)."""
    return (mode.page_shift - 3) * (4 - n) + 3


# CONFIG_ARM64_CONT_PTE_SHIFT / _CONT_PMD_SHIFT (Kconfig:259-269/303-313/284-294)
CONT_PTE_CFG = {12: 4, 14: 7, 16: 5}
CONT_PMD_CFG = {12: 4, 14: 5, 16: 5}


def _swp_shifts(layout: Layout) -> tuple[int, int, int]:
    """(__SWP_TYPE_SHIFT, __SWP_TYPE_BITS, __SWP_OFFSET_SHIFT) of pgtable.h: 5.10 2/6/8 (900-904),
    6.1 3/5/8 (1007-1011), 6.12..7.3 6/5/12 (1432-1435 / 1523-1527); __SWP_OFFSET_BITS 50."""
    if layout.has("arm64_swp_type_shift_6"):
        return 6, 5, 12
    if layout.has("arm64_swp_exclusive"):
        return 3, 5, 3 + 5
    return 2, 6, 2 + 6


class Arm64Model:
    """The arm64 macros of ArchModel."""

    name = "arm64"

    def mk_table(self, table_pa: int, depth: int, mode: PagingMode) -> int:
        """7.2 pXd_populate (pgalloc.h:31/53/82/121): TYPE_TABLE | TABLE_AF | TABLE_PXN
        (user) or TABLE_UXN (init_mm)."""
        if _hw(depth, mode) == 3:
            raise ValueError("no table below the PTE level")
        xn = PMD_TABLE_UXN if "ttbr1" in mode.options else PMD_TABLE_PXN
        return phys_to_pte_val(table_pa, mode) | PMD_TYPE_TABLE | PMD_TABLE_AF | xn

    def mk_leaf(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> int:
        """pfn_pte (pgtable.h:92/92/137), then pmd_mkhuge/pud_mkhuge above the PTE level."""
        if "lpa2" in mode.options and not layout.has("arm64_lpa2"):
            raise ValueError(f"{layout.name} has no LPA2 support (CONFIG_ARM64_LPA2)")
        hw = _hw(depth, mode)
        if hw < 1 or (hw == 1 and mode.page_shift != 12):
            raise ValueError(f"Linux maps no leaf at L{hw} of {mode.name}")
        pte = phys_to_pte_val(pfn << mode.page_shift, mode, layout) | vm_prot(prot, mode, layout)
        pte = pte_mkyoung(pte) if prot.young else pte_mkold(pte)
        pte = pte_mkdirty(pte) if prot.dirty else pte_mkclean(pte)
        if hw != 3:
            # pmd_mkhuge/pud_mkhuge: clear PMD_TABLE_BIT, keep VALID (pgtable.h:505,525/581,609/607,639)
            pte = (pte & ~(PMD_TYPE_TABLE & ~PTE_VALID)) | (PMD_TYPE_SECT & ~PTE_VALID)
        return pte

    def mk_block(self, pfn: int, depth: int, mode: PagingMode, prot: Prot, layout: Layout) -> list[int]:
        """A folded contpte block (contpte_convert: every entry its own PFN, same bits, PTE_CONT)
        at L3, or a hugetlb contiguous-PMD block (pmd_mkcont) at L2."""
        hw = _hw(depth, mode)
        if hw == 3:
            n, step = 1 << CONT_PTE_CFG[mode.page_shift], 1
        elif hw == 2:
            n, step = 1 << CONT_PMD_CFG[mode.page_shift], 1 << (mode.page_shift - 3)
        else:
            return []
        if pfn % (n * step):
            raise ValueError(f"pfn {pfn:#x} is not aligned to a {n}-entry block")
        # pte_mkcont (pgtable.h:238/265/309) / pmd_mkcont (254/288/333)
        cont = PTE_CONT if hw == 3 else PMD_SECT_CONT
        return [self.mk_leaf(pfn + i * step, depth, mode, prot, layout) | cont for i in range(n)]

    def mk_softleaf(self, swp: SwpFields, depth: int, mode: PagingMode, layout: Layout) -> int:
        """__swp_entry (pgtable.h:1016/1441/1532; 5.10: 909) + pte_swp_mkexclusive/mkuffd_wp."""
        if swp.soft_dirty:
            raise ValueError("arm64 has no soft-dirty (HAVE_ARCH_SOFT_DIRTY is not selected)")
        if "lpa2" in mode.options and not layout.has("arm64_lpa2"):
            raise ValueError(f"{layout.name} has no LPA2 support (CONFIG_ARM64_LPA2)")
        type_shift, type_bits, offset_shift = _swp_shifts(layout)
        if swp.exclusive and not layout.has("arm64_swp_exclusive"):
            raise ValueError(f"arm64 {layout.name} has no PTE_SWP_EXCLUSIVE")
        if swp.uffd_wp and not layout.has("arm64_uffd_wp"):
            raise ValueError(f"arm64 {layout.name} has no uffd-wp")
        if not 0 <= swp.type < 1 << type_bits:
            raise ValueError(f"swap type {swp.type} does not fit __SWP_TYPE_BITS {type_bits}")
        val = (swp.type << type_shift) | (swp.offset << offset_shift)
        if swp.uffd_wp:
            val |= PTE_SWP_UFFD_WP  # pte_swp_mkuffd_wp (-/515/540), pte_swp_mkuffd (7.3)
        if swp.exclusive:
            val |= PTE_SWP_EXCLUSIVE  # pte_swp_mkexclusive (422/499/524)
        return val & U64

    def pte_none(self, raw: int, depth: int, mode: PagingMode) -> bool:
        return raw == 0  # pgtable.h:95/95/140

    def pte_present(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> bool:
        if not layout.has("arm64_present_invalid"):
            present = bool(raw & (PTE_VALID | PTE_PROT_NONE))  # pgtable.h:102 (5.10: 97)
            if _hw(depth, mode) == 2:
                present = present or bool(raw & PMD_PRESENT_INVALID)  # pmd_present (464; 5.10: 405)
            return present
        # pte_valid || pte_present_invalid (pgtable.h:101,128/146,172; 7.3 inline pte_present)
        return bool(raw & PTE_VALID) or (raw & (PTE_VALID | PTE_PRESENT_INVALID)) == PTE_PRESENT_INVALID

    def softleaf_from_pte(self, raw: int, depth: int, mode: PagingMode, layout: Layout) -> SwpFields | None:
        if self.pte_none(raw, depth, mode) or self.pte_present(raw, depth, mode, layout):
            return None
        type_shift, type_bits, offset_shift = _swp_shifts(layout)
        exclusive = layout.has("arm64_swp_exclusive") and bool(raw & PTE_SWP_EXCLUSIVE)
        uffd_wp = layout.has("arm64_uffd_wp") and bool(raw & PTE_SWP_UFFD_WP)
        return SwpFields((raw >> type_shift) & ((1 << type_bits) - 1), (raw >> offset_shift) & ((1 << 50) - 1),
                         exclusive=exclusive, uffd_wp=uffd_wp)

    def leaf_pfn(self, raw: int, depth: int, mode: PagingMode) -> int:
        """pte_pfn / pmd_pfn / pud_pfn (pgtable.h:-/91,601,613/138,630,654)."""
        phys = pte_to_phys(raw, mode)
        hw = _hw(depth, mode)
        if hw != 3:
            phys &= ~((1 << _shift(mode, hw)) - 1)  # PMD_MASK / PUD_MASK
        return phys >> mode.page_shift

    def ptep_get(self, block: Sequence[int], index: int, depth: int, mode: PagingMode, layout: Layout) -> int:
        """ptep_get (arch/arm64/include/asm/pgtable.h) with contpte_ptep_get's loop (arch/arm64/mm/
        contpte.c, 6.9+).

        At L2 (hugetlb contiguous PMDs) huge_ptep_get (arch/arm64/mm/hugetlbpage.c, 5.19+) scans
        every entry without the early exits, which gives the same value.  Before 5.19 nothing
        gathers: ptep_get() is READ_ONCE(*ptep) and hugetlb used the generic huge_ptep_get().
        """
        orig_pte = block[index]
        if not (orig_pte & PTE_VALID and orig_pte & PTE_CONT) or not layout.has("arm64_huge_ptep_get"):
            return orig_pte
        if _hw(depth, mode) not in (2, 3):
            return orig_pte
        for i in range(len(block)):
            pte = block[i]
            if pte_dirty(pte):
                orig_pte = pte_mkdirty(orig_pte)
                for pte in block[i:]:
                    if pte & PTE_AF:
                        orig_pte = pte_mkyoung(orig_pte)
                        break
                break
            if pte & PTE_AF:
                orig_pte = pte_mkyoung(orig_pte)
                for pte in block[i + 1:]:
                    if pte_dirty(pte):
                        orig_pte = pte_mkdirty(orig_pte)
                        break
                break
        return orig_pte

    def swp_pfn_bits(self, mode: PagingMode) -> int:
        """MAX_PHYSMEM_BITS (PHYS_MASK_SHIFT, sparsemem.h:-/10/10) - PAGE_SHIFT."""
        return (52 if "lpa2" in mode.options or "lpa" in mode.options else 48) - mode.page_shift


MODEL = Arm64Model()
