"""arm64 (VMSAv8-64 stage 1) page tables as Linux 5.10 .. 7.3 build them.

Kernel citations name the file and symbol with the release ("pgtable-prot.h PTE_UFFD, 7.3");
paths are under arch/arm64/ (include/asm/, mm/, kernel/) unless they start with include/linux/.  Layout changes between
releases are the features of `FEATURES` (archs/versions.py); the decoder asks
`facts.has("arm64_...")`, which is None when the release is not known.

Paging modes are named "<granule>k-<VA bits>[-lpa2|-lpa][-pa<N>][-ttbr1]":
  -lpa2   4K/16K with TCR_EL1.DS=1 (FEAT_LPA2): OA[51:50] in descriptor bits 9:8, no SH field.
  -lpa    64K with a 52-bit output size (FEAT_LPA): OA[51:48] in descriptor bits 15:12.
  -pa<N>  the output-address size (TCR_EL1.IPS) when it differs from the default
          (48, or 52 with -lpa/-lpa2); the "-lpa" of a 64K mode is implied by -pa52.
  -ttbr1  the kernel half (TTBR1_EL1, init_mm): `Access.exec` is then !PXN (privileged
          execute); in the user half (TTBR0_EL1, the default) it is !UXN (pte_user_exec()).
Level names follow Linux's folding (the root is always "pgd"); `Level.hw` is "L-1".."L3".
`mode_from_registers()` reads TCR_EL1 and, when present, ID_AA64MMFR0_EL1 (PARange caps
IPS); the extra key "half" (0 = TTBR0/user, the default; 1 = TTBR1/kernel) picks the half.
The granules' block geometry is the same in every release 5.10..7.3 (arch/arm64/Kconfig
ARM64_CONT_PTE_SHIFT / ARM64_CONT_PMD_SHIFT): 4K 16 x 4K contpte, 2 MiB PMD, 16 x 2 MiB
contpmd; 16K 128 x 16K contpte, 32 MiB PMD, 32 x 32 MiB contpmd; 64K 32 x 64K, 512 MiB, 32 x 512 MiB.

Architecture facts this module reads from KernelFacts (all optional):
  "MAIR_EL1"              int: resolves AttrIndx to a memory type ("Normal WB", "Device-nGnRE").
                          Without it only the kernel's MT_* name of the index is given
                          (asm/memory.h MT_*, renumbered in 5.14: arm64_mt_device_renumbered).
  "CONFIG_ARM64_PA_BITS"  48 | 52 (or the CONFIG_ARM64_PA_BITS_48/_52 options): SWP_PFN_BITS of a
                          64K mode without -lpa, and of a non-LPA2 4K/16K mode of 6.9..6.13.
  "CONFIG_ARM64_LPA2"     bool: with it off, a 4K/16K kernel's MAX_PHYSMEM_BITS is 48.
  "MAX_PHYSMEM_BITS"      int: overrides the SWP_PFN_BITS derivation (asm/sparsemem.h).
Shared facts: CONFIG_HAVE_ARCH_USERFAULTFD_WP (bit 3 of 6.10+ swap entries, bit 58 of
leaves) and the software-leaf facts of archs/softleaf.py.

Contiguous blocks: `kernel_view()` ORs young/dirty over a valid PTE_CONT block as
contpte_ptep_get() (mm/contpte.c, 6.9+) and hugetlb's huge_ptep_get() (mm/hugetlbpage.c,
5.19+) do; huge_ptep_get() tests pte_present() rather than pte_valid(), which only differs
for PROT_NONE blocks, whose entries the MMU cannot update.  `Decoded.cont` is set for any
present leaf with PTE_CONT (pte_leaf_size() does not test PTE_VALID either, pgtable.h 7.2).
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace

from .common import (
    Access,
    Arch,
    ArchDefaults,
    ContInfo,
    Decoded,
    ExceptionRegs,
    FrameRecords,
    KernelFacts,
    Kind,
    Level,
    MetaRecord,
    PagingMode,
    Softleaf,
    vmcoreinfo_int,
)
from .softleaf import decode_softleaf
from .versions import Feature, Layout

# This architecture's layout changes, oldest first (mainline releases; archs/versions.py).
FEATURES: tuple[Feature, ...] = (
    # 5.3..6.16: PTE_DEVMAP bit 57 (pgtable-prot.h PTE_DEVMAP, 5.10/6.1/6.12; absent in 7.2).
    Feature("arm64_pte_devmap", (5, 3), "arch/arm64/include/asm/pgtable-prot.h PTE_DEVMAP (bit 57)",
            "73b20c84d42d arm64: mm: implement pte_devmap support",
            until=(6, 17), removed_by="d438d2734170 mm: remove devmap related functions and page table bits"),
    # 5.10: MT_NORMAL_WT 3, MT_DEVICE_nGnRnE 4, MT_DEVICE_nGnRE 5, MT_DEVICE_GRE 6;
    # 6.1+: MT_DEVICE_nGnRnE 3, MT_DEVICE_nGnRE 4 (asm/memory.h).
    Feature("arm64_mt_device_renumbered", (5, 14),
            "arch/arm64/include/asm/memory.h MT_DEVICE_nGnRnE 4->3, MT_DEVICE_nGnRE 5->4, "
            "MT_NORMAL_WT and MT_DEVICE_GRE removed",
            "21cfe6edbadb arm64: mm: Remove unused support for Normal-WT memory type "
            "(with 58cc6b72a212 arm64: mm: Remove unused support for Device-GRE memory type)"),
    # 5.10: __SWP_TYPE_SHIFT 2, __SWP_TYPE_BITS 6, offset 57:8; 6.1: PTE_SWP_EXCLUSIVE bit 2,
    # __SWP_TYPE_SHIFT 3, __SWP_TYPE_BITS 5, offset still 57:8 (asm/pgtable.h).
    Feature("arm64_swp_exclusive", (5, 19),
            "arch/arm64/include/asm/pgtable-prot.h PTE_SWP_EXCLUSIVE (bit 2); pgtable.h "
            "__SWP_TYPE_SHIFT 2->3, __SWP_TYPE_BITS 6->5",
            "570ef363509b arm64/pgtable: support __HAVE_ARCH_PTE_SWP_EXCLUSIVE"),
    # 5.10 has no arm64 huge_ptep_get(): the generic one is ptep_get(), no young/dirty gathering.
    Feature("arm64_huge_ptep_get", (5, 19),
            "arch/arm64/mm/hugetlbpage.c huge_ptep_get(): young/dirty of every PTE_CONT entry",
            "bc5dfb4fd7bd arm64/hugetlb: Implement arm64 specific huge_ptep_get()"),
    # The LPA2 series also widened PTE_ADDR_LOW to GENMASK(49, PAGE_SHIFT) for every granule
    # (pgtable-hwdef.h PTE_ADDR_LOW, 48 - PAGE_SHIFT in 6.1, 50 - PAGE_SHIFT in 6.12) in
    # "arm64: mm: Add LPA2 support to phys<->pte conversion routines" (hash not established).
    Feature("arm64_lpa2", (6, 9),
            "arch/arm64/Kconfig ARM64_LPA2; asm/pgtable-hwdef.h PTE_ADDR_HIGH (0x3 << 8), "
            "PTE_ADDR_HIGH_SHIFT 42, PTE_ADDR_LOW GENMASK(49, PAGE_SHIFT); pgtable-prot.h PTE_MAYBE_SHARED",
            "352b0395b505 arm64: Enable 52-bit virtual addressing for 4k and 16k granule configs"),
    Feature("arm64_contpte", (6, 9),
            "arch/arm64/mm/contpte.c contpte_ptep_get(); Kconfig ARM64_CONTPTE (user PTE_CONT blocks)",
            "4602e5757bcc arm64/mm: wire up PTE_CONT for user mappings"),
    # 6.1: PTE_PROT_NONE bit 58, PMD_PRESENT_INVALID bit 59; 6.12: PTE_PRESENT_INVALID = PTE_NG
    # (bit 11, only when !PTE_VALID), PROT_NONE = present-invalid && !PTE_USER && PTE_UXN.
    Feature("arm64_present_invalid", (6, 10),
            "arch/arm64/include/asm/pgtable-prot.h PTE_PRESENT_INVALID (PTE_NG); pgtable.h "
            "pte_present_invalid(), pte_protnone()",
            "55564814a838 arm64/mm: Move PTE_PRESENT_INVALID to overlay PTE_NG (series with "
            "b28c74e25967 arm64/mm: generalize PMD_PRESENT_INVALID for all levels, "
            "f0f5863a0fb0 arm64/mm: Remove PTE_PROT_NONE bit)"),
    Feature("arm64_swp_type_shift_6", (6, 10),
            "arch/arm64/include/asm/pgtable.h __SWP_TYPE_SHIFT 6, __SWP_OFFSET_SHIFT 12",
            "55564814a838 arm64/mm: Move PTE_PRESENT_INVALID to overlay PTE_NG"),
    # Bit names: PTE_UFFD_WP / PTE_SWP_UFFD_WP until 7.2, PTE_UFFD / PTE_SWP_UFFD from 7.3
    # (the generic feature "uffd_rwp").
    Feature("arm64_uffd_wp", (6, 10),
            "arch/arm64/include/asm/pgtable-prot.h PTE_UFFD_WP (bit 58), PTE_SWP_UFFD_WP (bit 3)",
            "5b32510af77b arm64/mm: Add uffd write-protect support"),
    Feature("arm64_poe", (6, 12), "arch/arm64/include/asm/pgtable-hwdef.h PTE_PO_IDX_MASK GENMASK(62, 60)",
            "b66db4f3ccde arm64: add POIndex defines"),
    # 6.9..6.13: MAX_PHYSMEM_BITS = CONFIG_ARM64_PA_BITS (52 on an LPA2 kernel even without
    # LPA2 at run time); then PHYS_MASK_SHIFT = lpa2_is_enabled() ? CONFIG_ARM64_PA_BITS : 48.
    # Debian's 6.12.117 carries the 6.12-stable backport.
    Feature("arm64_phys_mask_48_without_lpa2", (6, 14),
            "arch/arm64/include/asm/pgtable-prot.h PHYS_MASK_SHIFT; asm/sparsemem.h MAX_PHYSMEM_BITS",
            "bf74bb73cd87 arm64/mm: Reduce PA space to 48 bits when LPA2 is not enabled"),
    # Not a page-table layout: how the frame records end and cross exceptions (watch's call chains;
    # 6.12's tree has no asm/stacktrace/frame.h, 7.2's has).
    Feature("arm64_frame_record_meta", (6, 13),
            "arch/arm64/include/asm/stacktrace/frame.h struct frame_record_meta; kernel/entry.S kernel_entry",
            "c2c6b27b5aa1 arm64: stacktrace: unwind exception boundaries"),
)

MASK64 = (1 << 64) - 1


def _bit(n: int) -> int:
    return 1 << n


def _genmask(hi: int, lo: int) -> int:
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


# Descriptor bits, asm/pgtable-hwdef.h (5.10..7.3).
PTE_VALID = _bit(0)
# pgtable-hwdef.h PTE_TYPE_MASK, PTE_TYPE_PAGE (L3), PMD_TYPE_TABLE (L0-L2), PMD_TYPE_SECT (5.10..7.3)
PTE_TYPE_MASK = 3
PTE_TYPE_PAGE = PMD_TYPE_TABLE = 3
PMD_TYPE_SECT = 1
PTE_TABLE_BIT = _bit(1)  # PTE_TABLE_BIT/PMD_TABLE_BIT (removed in 7.2, the bit stays)
PTE_ATTRINDX_SHIFT, PTE_ATTRINDX_MASK = 2, 7 << 2
PTE_USER, PTE_RDONLY = _bit(6), _bit(7)  # AP[1], AP[2]
PTE_SHARED_SHIFT, PTE_SHARED = 8, 3 << 8  # SH[1:0]; with LPA2 active these are OA[51:50]
PTE_AF, PTE_NG = _bit(10), _bit(11)
PTE_WRITE, PTE_CONT = _bit(51), _bit(52)  # PTE_WRITE == PTE_DBM (pgtable-prot.h); GP is bit 50
PTE_PXN, PTE_UXN = _bit(53), _bit(54)
# Software bits, asm/pgtable-prot.h.
PTE_DIRTY = _bit(55)  # PTE_SPECIAL is bit 56
PTE_PRESENT_INVALID = PTE_NG  # arm64_present_invalid, only when !PTE_VALID
PTE_PROT_NONE = _bit(58)  # before arm64_present_invalid, only when !PTE_VALID
PMD_PRESENT_INVALID = _bit(59)  # before arm64_present_invalid, PMDs only
PTE_PO_IDX_SHIFT, PTE_PO_IDX_MASK = 60, _genmask(62, 60)  # POIndex (arm64_poe)

# Names of leaf bits that mean the same in every release 5.10..7.3.
LEAF_NAMES = {0: "PTE_VALID", 6: "PTE_USER", 7: "PTE_RDONLY", 10: "PTE_AF", 50: "PTE_GP",
              51: "PTE_WRITE", 52: "PTE_CONT", 53: "PTE_PXN", 54: "PTE_UXN", 55: "PTE_DIRTY",
              56: "PTE_SPECIAL"}
VERSION_DEPENDENT_BITS = (57, 58, 59, 60, 61, 62)  # named per release (_sw_names), or POIndex

# Table descriptor attributes, by hardware level: PGD (L-1), P4D (L0), PUD (L1), PMD (L2)
# *_TABLE_PXN bit 59, *_TABLE_UXN bit 60 (pgtable-hwdef.h P4D_TABLE_PXN..., 6.1),
# *_TABLE_AF bit 10 (FEAT_HAFT, pgtable-hwdef.h PMD_TABLE_AF, 7.2), S1_TABLE_AP 62:61
# (pgtable-hwdef.h S1_TABLE_AP, 6.12): hardware bits, named alike in every release.
TABLE_PREFIX = {-1: "PGD", 0: "P4D", 1: "PUD", 2: "PMD"}
TABLE_AF, TABLE_PXN, TABLE_UXN = _bit(10), _bit(59), _bit(60)
S1_TABLE_AP_SHIFT, S1_TABLE_AP = 61, 3 << 61
APTABLE_TEXT = {1: "no EL0 access below", 2: "no write access below",
                3: "no write, no EL0 access below"}

# Memory types: the kernel's AttrIndx numbers (asm/memory.h MT_*): 5.10 (before
# arm64_mt_device_renumbered) and 6.1..7.3.
MT_NAMES_OLD = {0: "MT_NORMAL", 1: "MT_NORMAL_TAGGED", 2: "MT_NORMAL_NC", 3: "MT_NORMAL_WT",
                4: "MT_DEVICE_nGnRnE", 5: "MT_DEVICE_nGnRE", 6: "MT_DEVICE_GRE"}
MT_NAMES = {0: "MT_NORMAL", 1: "MT_NORMAL_TAGGED", 2: "MT_NORMAL_NC", 3: "MT_DEVICE_nGnRnE",
            4: "MT_DEVICE_nGnRE"}
SH_TEXT = {0: "Non-shareable", 1: "reserved", 2: "Outer Shareable", 3: "Inner Shareable"}
AP_TEXT = {0: "EL1 RW, EL0 none", 1: "EL1 RW, EL0 RW", 2: "EL1 RO, EL0 none", 3: "EL1 RO, EL0 RO"}

# Swap entries (asm/pgtable.h __SWP_TYPE_SHIFT, __SWP_TYPE_BITS, __SWP_OFFSET_SHIFT):
#   5.10:  type 7:2 (6 bits), offset 57:8 (50 bits); no flag bits
#   6.1:   bit 2 PTE_SWP_EXCLUSIVE, type 7:3 (5 bits), offset 57:8
#   6.12+: bit 2 PTE_SWP_EXCLUSIVE, bit 3 PTE_SWP_UFFD_WP (PTE_SWP_UFFD in 7.3, only with
#          CONFIG_HAVE_ARCH_USERFAULTFD_WP), type 10:6, offset 61:12
SWP_OFFSET_BITS = 50
PTE_SWP_EXCLUSIVE_BIT, PTE_SWP_UFFD_BIT = 2, 3

# CONFIG_ARM64_CONT_PTE_SHIFT / CONFIG_ARM64_CONT_PMD_SHIFT per PAGE_SHIFT (arch/arm64/Kconfig,
# the same defaults in 5.10, 6.1, 6.12, 7.2 and 7.3).
CONT_PTE_SHIFT = {12: 4, 14: 7, 16: 5}
CONT_PMD_SHIFT = {12: 4, 14: 5, 16: 5}

# TCR_EL1 fields (pgtable-hwdef.h 6.12 TCR_T0SZ_OFFSET, TCR_T1SZ_OFFSET, TCR_TxSZ_WIDTH, TCR_TG0_SHIFT,
# TCR_TG1_SHIFT, TCR_IPS_SHIFT/TCR_IPS_MASK, TCR_DS; 7.2 spells them TCR_EL1_*_SHIFT from arch/arm64/tools/sysreg).
TCR_T0SZ_OFFSET, TCR_T1SZ_OFFSET, TCR_TxSZ_WIDTH = 0, 16, 6
TCR_TG0_SHIFT, TCR_TG1_SHIFT, TCR_TG_WIDTH = 14, 30, 2  # TCR_TG0_MASK = UL(3) << TCR_TG0_SHIFT
TCR_IPS_SHIFT, TCR_IPS_WIDTH = 32, 3  # TCR_IPS_MASK = UL(7) << TCR_IPS_SHIFT
TG0_PAGE_SHIFT = {0: 12, 1: 16, 2: 14}  # TCR_TG0_4K 0, _64K 1, _16K 2
TG1_PAGE_SHIFT = {2: 12, 3: 16, 1: 14}  # TCR_TG1_16K 1, _4K 2, _64K 3: not TG0's encoding
TCR_DS = _bit(59)
# TCR_EL1.IPS and ID_AA64MMFR0_EL1.PARange share this encoding (Arm ARM).
PA_RANGE_BITS = {0: 32, 1: 36, 2: 40, 3: 42, 4: 44, 5: 48, 6: 52, 7: 56}

LEVEL_NAMES = {2: ("pgd", "pte"), 3: ("pgd", "pmd", "pte"), 4: ("pgd", "pud", "pmd", "pte"),
               5: ("pgd", "p4d", "pud", "pmd", "pte")}
SEMANTIC_LEVEL = {3: "pte", 2: "pmd", 1: "pud"}  # the kernel accessor family of a leaf level
MODE_RE = re.compile(r"(4|16|64)k-(\d+)(-lpa2|-lpa)?(?:-pa(\d+))?(-ttbr1)?")
STANDARD = ((12, 39, False), (12, 48, False), (12, 52, True), (14, 36, False), (14, 47, False),
            (14, 48, False), (14, 52, True), (16, 42, False), (16, 48, False), (16, 52, False))


def _level_shift(page_shift: int, hw: int) -> int:
    """ARM64_HW_PGTABLE_LEVEL_SHIFT(n) (pgtable-hwdef.h, 5.10..7.3)."""
    return (page_shift - 3) * (4 - hw) + 3


def build_mode(page_shift: int, va_bits: int, *, lpa2: bool = False, pa_bits: int | None = None,
               ttbr1: bool = False) -> PagingMode:
    """The paging mode of a granule and VA size (start level as the Arm ARM derives it).

    ValueError for a combination the architecture does not allow.
    """
    if page_shift not in CONT_PTE_SHIFT:
        raise ValueError(f"no {page_shift}-bit granule on arm64 (12, 14 or 16)")
    if lpa2 and page_shift == 16:
        raise ValueError("LPA2 (TCR_EL1.DS) applies to 4K and 16K granules only")
    wide = lpa2 or page_shift == 16
    max_va = 52 if wide else 48
    levels = -(-(va_bits - page_shift) // (page_shift - 3))
    if not va_bits <= max_va or not 2 <= levels <= 5:
        raise ValueError(f"{va_bits}-bit VA is not a 2..5-level {1 << (page_shift - 10)}K mode"
                         + ("" if wide else " (52 bits need LPA2)"))
    default_pa = 52 if lpa2 else 48
    pa = default_pa if pa_bits is None else pa_bits
    if pa > (52 if wide else 48) or pa not in PA_RANGE_BITS.values():
        raise ValueError(f"{pa}-bit output addresses are not possible in this mode")
    lpa = page_shift == 16 and pa == 52
    hw_levels = range(4 - levels, 4)
    level_list = tuple(
        Level(name, f"L{hw}", _level_shift(page_shift, hw),
              va_bits - _level_shift(page_shift, hw) if hw == hw_levels[0] else page_shift - 3,
              hw in (2, 3) or (hw == 1 and page_shift == 12))
        for name, hw in zip(LEVEL_NAMES[levels], hw_levels)
    )
    name = (f"{1 << (page_shift - 10)}k-{va_bits}" + ("-lpa2" if lpa2 else "-lpa" if lpa else "")
            + ("" if pa == (52 if lpa else default_pa) else f"-pa{pa}") + ("-ttbr1" if ttbr1 else ""))
    options = {"lpa2"} if lpa2 else {"lpa"} if lpa else set()
    return PagingMode("arm64", name, level_list, page_shift, va_bits, pa,
                      frozenset(options | ({"ttbr1"} if ttbr1 else set())))


def strip_pac(address: int, va_bits: int) -> int:
    """XPACLRI, the kernel's ptrauth_strip_kernel_insn_pac() (asm/compiler.h, 7.2): the PAC field,
    bits 63..VA_BITS but bit 55, becomes copies of bit 55 (a signed zero, a task's last record
    before 6.13, strips to zero)."""
    field = ((1 << 64) - (1 << va_bits)) & ~_bit(55)
    return address | field if address & _bit(55) else address & ~field


def _hw_level(mode: PagingMode, depth: int) -> int:
    return int(mode.levels[depth].hw[1:])


def _has(layout: Layout | None, feature: str) -> bool | None:
    """Whether an arm64 layout feature is in force; None when the release is not known."""
    return None if layout is None else layout.has(feature)


def _uffd_names(layout: Layout) -> tuple[str, str]:
    """The leaf and swap uffd bits as the release names them: PTE_UFFD_WP / PTE_SWP_UFFD_WP
    (pgtable-prot.h, 6.12 and 7.2), PTE_UFFD / PTE_SWP_UFFD from 7.3 ("userfaultfd tracking")."""
    if layout.has("uffd_rwp"):
        return "PTE_UFFD", "PTE_SWP_UFFD"
    return "PTE_UFFD_WP", "PTE_SWP_UFFD_WP"


def _sw_names(layout: Layout, hw: int) -> dict[int, str]:
    """Software bits 57-59 of a leaf as `layout` names them (pgtable-prot.h): PTE_DEVMAP 57
    (until 6.17), PTE_PROT_NONE 58 and PMD_PRESENT_INVALID 59 (PMDs) until 6.10, PTE_UFFD_WP
    58 from 6.10."""
    names: dict[int, str] = {}
    if layout.has("arm64_pte_devmap"):
        names[57] = "PTE_DEVMAP"
    if not layout.has("arm64_present_invalid"):
        names[58] = "PTE_PROT_NONE"
        if hw == 2:
            names[59] = "PMD_PRESENT_INVALID"
    elif layout.has("arm64_uffd_wp"):
        names[58] = _uffd_names(layout)[0]
    return names


# ---------------------------------------------------------------- output addresses

def output_address(raw: int, mode: PagingMode, layout: Layout | None) -> tuple[int, list[str]]:
    """__pte_to_phys() of a descriptor (asm/pgtable.h) and notes.

    PTE_ADDR_LOW is GENMASK(47, PAGE_SHIFT) before 6.9 and GENMASK(49, PAGE_SHIFT) from 6.9
    (pgtable-hwdef.h PTE_ADDR_LOW, 6.1 / 6.12; arm64_lpa2); with the release unknown the MMU's
    view (47) is used.
    """
    ps = mode.page_shift
    notes: list[str] = []
    lpa2 = _has(layout, "arm64_lpa2")
    if "lpa2" in mode.options:
        # PTE_ADDR_HIGH (0x3 << 8) << PTE_ADDR_HIGH_SHIFT 42 (pgtable-hwdef.h, 6.12)
        if lpa2 is False:
            notes.append(f"{layout.name if layout else ''} has no LPA2 support (CONFIG_ARM64_LPA2 is 6.9+)")
        return (raw & _genmask(49, ps)) | ((raw & PTE_SHARED) << 42), notes
    top = 49 if lpa2 else 47
    pa = raw & _genmask(top, ps)
    high = raw & _genmask(49, 48)
    if "lpa" in mode.options:
        # PTE_ADDR_HIGH (0xf << 12) << 36 (pgtable-hwdef.h, 5.10..7.3)
        pa |= (raw & _genmask(15, 12)) << 36
        if high and lpa2 and high >> 48 != (raw >> 12) & 3:
            notes.append("bits 49:48 differ from OA[49:48] in bits 13:12 (__phys_to_pte_val() "
                         "writes both)")
        elif high and lpa2 is None:
            notes.append("bits 49:48 set: __pte_to_phys() ORs them in from 6.9 (PTE_ADDR_LOW to bit 49), "
                         "not before; the release is not known")
        return pa, notes
    if ps == 16 and raw & _genmask(15, 12):
        notes.append("bits 15:12 set: OA[51:48] only with a 52-bit output size; RES0 here")
    if high:
        notes.append("bits 49:48 set: RES0 to the MMU without LPA/LPA2; "
                     + ("pte_pfn() counts them (PTE_ADDR_LOW to bit 49, 6.9+)" if top == 49
                        else "not part of the output address (GENMASK(47, PAGE_SHIFT) before 6.9)"
                        if lpa2 is False else "whether pte_pfn() counts them depends on the release "
                        "(PTE_ADDR_LOW reaches bit 49 from 6.9)"))
    return pa, notes


def _pa_note(pa: int, mode: PagingMode) -> list[str]:
    if pa >> mode.pa_bits:
        return [f"output address {pa:#x} exceeds the {mode.pa_bits}-bit PA size (Address size fault)"]
    return []


# ---------------------------------------------------------------- memory types

def _cache_policy(nibble: int) -> str:
    """One MAIR inner/outer nibble of Normal memory (Arm ARM MAIR_ELx.Attr<n>)."""
    if nibble == 0b0100:
        return "NC"
    policy = "WB" if nibble & 0b0100 else "WT"
    if nibble < 0b1000:
        policy += " transient"
    return policy + {0: " no-alloc", 1: " WA", 2: " RA", 3: ""}[nibble & 3]


def mair_attr_name(attr: int) -> str:
    """The memory type of a MAIR_EL1 attribute byte ("Normal WB" is write-back RW-allocate)."""
    outer, inner = attr >> 4, attr & 0xF
    if outer == 0:
        if inner & 3 == 0:
            return "Device-" + ("nGnRnE", "nGnRE", "nGRE", "GRE")[inner >> 2]
        return f"UNPREDICTABLE device attribute {attr:#04x}"
    if inner == 0:
        special = {0xF0: "Normal Tagged (MTE)", 0x40: "Normal NC, XS=0", 0xA0: "Normal WT, XS=0"}
        return special.get(attr, f"UNPREDICTABLE normal attribute {attr:#04x}")
    if inner == outer:
        return f"Normal {_cache_policy(inner)}"
    return f"Normal inner {_cache_policy(inner)}, outer {_cache_policy(outer)}"


def _mt_name(idx: int, layout: Layout | None) -> str:
    """The kernel's MT_* name of an AttrIndx (asm/memory.h, renumbered in 5.14)."""
    renumbered = _has(layout, "arm64_mt_device_renumbered")
    if renumbered is None:
        new, old = MT_NAMES.get(idx), MT_NAMES_OLD.get(idx)
        if new == old:
            return new or "no MT_* index"
        return f"{new or 'no MT_* index'} from 5.14, {old or 'no MT_* index'} before; release unknown"
    return (MT_NAMES if renumbered else MT_NAMES_OLD).get(idx, "no MT_* index")


def _attrindx_text(raw: int, facts: KernelFacts) -> str:
    idx = (raw & PTE_ATTRINDX_MASK) >> PTE_ATTRINDX_SHIFT
    text = f"{idx} ({_mt_name(idx, facts.layout)})"
    mair = facts.get("MAIR_EL1")
    if isinstance(mair, int):
        text += f"; MAIR_EL1: {mair_attr_name((mair >> (8 * idx)) & 0xFF)}"
    return text


# ---------------------------------------------------------------- entries

def _bits(value: int) -> list[int]:
    return [b for b in range(64) if value >> b & 1]


def _oa_bits(mode: PagingMode) -> int:
    """Descriptor bits output_address() reads or reports on."""
    bits = _genmask(49, mode.page_shift)
    if mode.page_shift == 16:
        bits |= _genmask(15, 12)
    return bits | (PTE_SHARED if "lpa2" in mode.options else 0)


def _leaf_flags(raw: int, hw: int, mode: PagingMode,
                layout: Layout | None) -> tuple[tuple[str, ...], list[int]]:
    """Kernel names of a leaf's set single bits, low bit first, and the set bits Linux gives no meaning."""
    names: list[str] = []
    unnamed: list[int] = []
    fields = _oa_bits(mode) | PTE_TABLE_BIT | PTE_ATTRINDX_MASK | PTE_SHARED
    sw = {} if layout is None else _sw_names(layout, hw)
    poe = layout is not None and layout.has("arm64_poe")
    for b in _bits(raw & ~fields):
        if b in LEAF_NAMES:
            names.append(LEAF_NAMES[b])
        elif b == 11:
            if raw & PTE_VALID or _has(layout, "arm64_present_invalid") is False:
                names.append("PTE_NG")
            elif layout is None:
                names.append("PTE_NG (PTE_PRESENT_INVALID from 6.10; release unknown)")
            else:
                names.append("PTE_PRESENT_INVALID")
        elif layout is None and b in VERSION_DEPENDENT_BITS:
            names.append(f"SW bit {b} (meaning depends on kernel version)")
        elif b in sw:
            names.append(sw[b])
        elif not (poe and b in (60, 61, 62)):  # POIndex: a field
            unnamed.append(b)
    return tuple(names), unnamed


def _leaf_fields(raw: int, mode: PagingMode, facts: KernelFacts,
                 descriptor: str) -> tuple[tuple[str, str], ...]:
    fields = [("descriptor", descriptor), ("AttrIndx", _attrindx_text(raw, facts)),
              ("AP[2:1]", AP_TEXT[(raw >> 6) & 3])]
    if "lpa2" in mode.options:
        fields.append(("OA[51:50]", f"{(raw & PTE_SHARED) >> PTE_SHARED_SHIFT:#04b}"))
    else:
        fields.append(("SH", SH_TEXT[(raw & PTE_SHARED) >> PTE_SHARED_SHIFT]))
    if facts.has("arm64_poe") and raw & PTE_PO_IDX_MASK:
        fields.append(("POIndex", str((raw & PTE_PO_IDX_MASK) >> PTE_PO_IDX_SHIFT)))
    return tuple(fields)


def _access(raw: int, mode: PagingMode, protnone: bool) -> Access:
    """pte_write/pte_dirty/pte_young/pte_user (pgtable.h, 5.10..7.3)."""
    write = bool(raw & PTE_WRITE)
    dirty = bool(raw & PTE_DIRTY) or (write and not raw & PTE_RDONLY)
    user = bool(raw & PTE_USER)
    young = bool(raw & PTE_AF)
    if protnone:
        return Access(False, False, False, user, young, dirty)
    xn = PTE_PXN if "ttbr1" in mode.options else PTE_UXN
    return Access(True, write, not raw & xn, user, young, dirty)


def _cont(raw: int, hw: int, mode: PagingMode, notes: list[str]) -> ContInfo | None:
    """The block of a PTE_CONT leaf: CONT_PTES / CONT_PMDS entries (pgtable-hwdef.h CONT_PTES, CONT_PMDS, 5.10..7.3)."""
    if not raw & PTE_CONT:
        return None
    ps = mode.page_shift
    if hw == 3:
        n = 1 << CONT_PTE_SHIFT[ps]
        return ContInfo("contpte", n, n << ps)
    if hw == 2:
        n = 1 << CONT_PMD_SHIFT[ps]
        return ContInfo("contpmd", n, n << _level_shift(ps, 2))
    notes.append(f"PTE_CONT on an L{hw} block: Linux never sets it")
    return None


def _leaf(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, *,
          protnone: bool = False, notes: Sequence[str] = ()) -> Decoded:
    """A present leaf, valid or present-invalid, decoded with the hardware layout."""
    hw = _hw_level(mode, depth)
    level = mode.levels[depth]
    notes = list(notes)
    if protnone:
        notes[:0] = ["PROT_NONE"]
    pa, addr_notes = output_address(raw, mode, facts.layout)
    block_mask = level.span - 1
    if hw != 3 and pa & block_mask & ~(mode.page_size - 1):
        addr_notes.append("output address bits below the block size set (pmd_pfn/pud_pfn mask them)")
    if raw & PTE_VALID:
        descriptor = "page (0b11)" if hw == 3 else "block (0b01)"
    else:
        descriptor = f"not valid (0b{raw & 3:02b}), present to the kernel"
        if hw != 3 and raw & PTE_TABLE_BIT:
            notes.append("bit 1 set: pmd_trans_huge() treats this entry as a table")
    flags, unnamed = _leaf_flags(raw, hw, mode, facts.layout)
    flag_notes = [f"bits with no Linux meaning set: {', '.join(map(str, unnamed))}"] if unnamed else []
    return Decoded(
        raw, level.name, Kind.PRESENT, size=level.span, pfn=(pa & ~block_mask) >> mode.page_shift,
        pfn_space="phys", flags=flags, fields=_leaf_fields(raw, mode, facts, descriptor),
        access=_access(raw, mode, protnone), cont=_cont(raw, hw, mode, notes),
        notes=tuple(notes + addr_notes + _pa_note(pa, mode) + flag_notes),
    )


def _table_unnamed(raw: int, mode: PagingMode) -> list[int]:
    """Set bits of a table descriptor with no Linux meaning."""
    return _bits(raw & ~(_oa_bits(mode) | S1_TABLE_AP | 3 | TABLE_AF | TABLE_PXN | TABLE_UXN))


def _table(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
    hw = _hw_level(mode, depth)
    level = mode.levels[depth]
    prefix = TABLE_PREFIX[hw]
    pa, notes = output_address(raw, mode, facts.layout)
    pa &= ~(mode.page_size - 1)
    # Hardware bits: 7.2's names (*_TABLE_AF, *_TABLE_PXN/UXN) in every release.
    names = {10: f"{prefix}_TABLE_AF", 59: f"{prefix}_TABLE_PXN", 60: f"{prefix}_TABLE_UXN"}
    flags = tuple(names[b] for b in _bits(raw) if b in names)
    other = _table_unnamed(raw, mode)
    if other:
        notes.append(f"table descriptor bits with no Linux meaning set: {', '.join(map(str, other))}")
    fields = [("descriptor", "table (0b11)")]
    if raw & S1_TABLE_AP:
        ap = (raw & S1_TABLE_AP) >> S1_TABLE_AP_SHIFT
        fields.append(("APTable", f"{ap:#04b} ({APTABLE_TEXT[ap]})"))
    return Decoded(raw, level.name, Kind.TABLE, size=level.span, next_table=pa, flags=flags,
                   fields=tuple(fields), notes=tuple(notes + _pa_note(pa, mode)))


def _unknown(raw: int, depth: int, mode: PagingMode, reason: str, *, softleaf: Softleaf | None = None,
             flags: tuple[str, ...] = ()) -> Decoded:
    level = mode.levels[depth]
    return Decoded(raw, level.name, Kind.UNKNOWN, size=level.span, flags=flags, softleaf=softleaf, reason=reason)


def _block_permitted(hw: int, mode: PagingMode) -> bool:
    """Block descriptors the Arm ARM allows: L2 always; L1 with 4K, or 16K+DS, or 64K+52-bit
    PA; L0 with 4K+DS."""
    ps, opts = mode.page_shift, mode.options
    if hw == 2:
        return True
    if hw == 1:
        return ps == 12 or "lpa2" in opts or "lpa" in opts
    return hw == 0 and ps == 12 and "lpa2" in opts


def _config_pa_bits(facts: KernelFacts) -> int | None:
    """CONFIG_ARM64_PA_BITS (48 or 52) from the int fact or the PA_BITS_48/_52 choice."""
    config = facts.get("CONFIG_ARM64_PA_BITS")
    if config in (48, 52):
        return int(config)
    if facts.get("CONFIG_ARM64_PA_BITS_52") is True or facts.get("CONFIG_ARM64_PA_BITS_48") is False:
        return 52
    if facts.get("CONFIG_ARM64_PA_BITS_48") is True or facts.get("CONFIG_ARM64_PA_BITS_52") is False:
        return 48
    return None


def swp_pfn_bits(mode: PagingMode, facts: KernelFacts) -> int | None:
    """SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT (include/linux/swapops.h), or None.

    MAX_PHYSMEM_BITS (asm/sparsemem.h) is CONFIG_ARM64_PA_BITS up to 6.13 and PHYS_MASK_SHIFT
    from 6.14 (arm64_phys_mask_48_without_lpa2): `lpa2_is_enabled() ? CONFIG_ARM64_PA_BITS : 48`
    on LPA2 kernels, else CONFIG_ARM64_PA_BITS (pgtable-prot.h PHYS_MASK_SHIFT, 7.2).
    4K/16K: PA_BITS_52 needs 64K pages before 6.9 (Kconfig ARM64_PA_BITS_52, 6.1) and LPA2
    (TCR_EL1.DS, the "-lpa2" modes) after, so DS=1 means 52; without DS a 6.9..6.13 LPA2 kernel
    has 52 unless it carries the stable backport (then 48), a 6.14+ one 48.  64K: 52 when IPS is 52
    (only a PA_BITS_52 kernel programs
    that, assembler.h tcr_compute_pa_size), else the config.
    """
    given = facts.get("MAX_PHYSMEM_BITS")
    if isinstance(given, int):
        return given - mode.page_shift
    layout = facts.layout
    if layout is None or ("lpa2" in mode.options and not layout.has("arm64_lpa2")):
        return None
    ps = mode.page_shift
    if ps != 16:
        if "lpa2" in mode.options:
            return 52 - ps
        if not layout.has("arm64_lpa2") or layout.has("arm64_phys_mask_48_without_lpa2"):
            return 48 - ps
        # 6.9..6.13: CONFIG_ARM64_PA_BITS whatever TCR_EL1.DS, so 48 for a non-LPA2 kernel; an
        # LPA2 kernel (PA_BITS_52, Debian's 6.12 and 7.x config) has 52 in mainline but 48 with
        # the stable backport of bf74bb73cd87 (Debian's 6.12.117 has it): not decidable here.
        config = _config_pa_bits(facts)
        if config == 48 or facts.get("CONFIG_ARM64_LPA2") is False:
            return 48 - ps
        return None
    if "lpa" in mode.options:
        return 52 - 16
    config = _config_pa_bits(facts)
    return None if config is None else config - 16


def _swap_layout(layout: Layout) -> tuple[int, int, int, dict[int, str]]:
    """(__SWP_TYPE_SHIFT, __SWP_TYPE_BITS, __SWP_OFFSET_SHIFT, flag bits by name) of a release
    (asm/pgtable.h __SWP_*, pgtable-prot.h PTE_SWP_*)."""
    if layout.has("arm64_swp_type_shift_6"):
        flags = {PTE_SWP_EXCLUSIVE_BIT: "PTE_SWP_EXCLUSIVE"}
        if layout.has("arm64_uffd_wp"):
            flags[PTE_SWP_UFFD_BIT] = _uffd_names(layout)[1]
        return 6, 5, 12, flags
    if layout.has("arm64_swp_exclusive"):
        return 3, 5, 8, {PTE_SWP_EXCLUSIVE_BIT: "PTE_SWP_EXCLUSIVE"}
    return 2, 6, 8, {}


def _softleaf(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, layout: Layout) -> Decoded:
    """__swp_type/__swp_offset of a non-present entry, classified by decode_softleaf()."""
    hw = _hw_level(mode, depth)
    level = mode.levels[depth]
    type_shift, type_bits, offset_shift, flag_bits = _swap_layout(layout)
    flags = tuple(name for b, name in flag_bits.items() if raw >> b & 1)
    fields_mask = (_genmask(type_shift + type_bits - 1, type_shift)
                   | _genmask(offset_shift + SWP_OFFSET_BITS - 1, offset_shift)
                   | sum(1 << b for b in flag_bits))
    notes: list[str] = []
    stray = raw & ~fields_mask
    if stray:
        notes.append(f"bits outside the swap fields set (ignored by __swp_type/__swp_offset): {stray:#x}")
    uffd = flag_bits.get(PTE_SWP_UFFD_BIT)
    if uffd in flags and facts.get("CONFIG_HAVE_ARCH_USERFAULTFD_WP") is False:
        notes.append(f"{uffd} set but the kernel has no CONFIG_HAVE_ARCH_USERFAULTFD_WP")
    if hw == 1:
        notes.append("only hugetlb (1 GiB pages) writes non-present entries at PUD level")
    swp_type = (raw >> type_shift) & ((1 << type_bits) - 1)
    leaf = Softleaf(swp_type, (raw >> offset_shift) & ((1 << SWP_OFFSET_BITS) - 1), flags)
    if swp_type >> 5:
        # 5.10: the arch type field is 6 bits wide; core mm's swp_entry_t has MAX_SWAPFILES_SHIFT 5.
        return _unknown(raw, depth, mode, f"swap type {swp_type} needs 6 bits: core mm writes types "
                        "below 32 (MAX_SWAPFILES_SHIFT 5)", softleaf=leaf, flags=flags)
    decoded = decode_softleaf(raw, SEMANTIC_LEVEL[hw], level.span, leaf, facts,
                              swp_pfn_bits(mode, facts), flags)
    return replace(decoded, level=level.name, notes=decoded.notes + tuple(notes))


def _not_valid(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
    """A non-zero entry with PTE_VALID clear: PROT_NONE/present-invalid leaf or softleaf."""
    hw = _hw_level(mode, depth)
    if not mode.levels[depth].leaf:
        return _unknown(raw, depth, mode, f"invalid descriptor with bits set at L{hw}: the kernel "
                        "writes no swap or PROT_NONE entries at this level")
    layout = facts.layout
    if layout is None:
        return _unknown(raw, depth, mode, "kernel release unknown: whether this invalid entry is "
                        "PROT_NONE (bit 58 before 6.10, bit 11 from 6.10) or a swap entry (type/offset "
                        "at 7:2/57:8, 7:3/57:8 from 5.19, 10:6/61:12 from 6.10) depends on it")
    if not layout.has("arm64_present_invalid"):
        # pte_present = VALID | PTE_PROT_NONE; pmd_present adds PMD_PRESENT_INVALID (pgtable.h, 5.10/6.1).
        if raw & PTE_PROT_NONE:
            return _leaf(raw, depth, mode, facts, protnone=True,
                         notes=["PTE_PROT_NONE (bit 58) with PTE_VALID clear: present to the kernel"])
        if hw == 2 and raw & PMD_PRESENT_INVALID:
            return _leaf(raw, depth, mode, facts, notes=[
                "present-invalid THP (pmd_mkinvalid: PMD_PRESENT_INVALID set, VALID clear)"])
    elif raw & PTE_PRESENT_INVALID:
        # pte_present_invalid(); pte_protnone adds !pte_user && !pte_user_exec (pgtable.h, 6.12..7.3;
        # 7.3 compiles pte_protnone() under CONFIG_ARCH_HAS_PTE_PROTNONE, the encoding is unchanged).
        if not raw & PTE_USER and raw & PTE_UXN:
            return _leaf(raw, depth, mode, facts, protnone=True,
                         notes=["PTE_PRESENT_INVALID with !PTE_USER && PTE_UXN (pte_protnone)"])
        return _leaf(raw, depth, mode, facts, notes=[
            "present-invalid, not PROT_NONE (PTE_USER set or PTE_UXN clear): as pmd_mkinvalid() leaves a THP"])
    return _softleaf(raw, depth, mode, facts, layout)


# ---------------------------------------------------------------- rules `ptinspect validate` checks

def output_bits(mode: PagingMode, facts: KernelFacts) -> int:
    """The output-address size: TCR_EL1.IPS capped by ID_AA64MMFR0_EL1.PARange and the
    granule (mode_from_registers); a larger address is an Address size fault (Arm ARM D8.2)."""
    return mode.pa_bits


def _res0_address_bits(raw: int, mode: PagingMode, layout: Layout | None) -> int:
    """Address bits the MMU treats as RES0 that pte_pfn() does not count: 15:12 of a 64K
    descriptor without FEAT_LPA, and 49:48 without LPA/LPA2 before 6.9, whose PTE_ADDR_LOW
    stops at bit 47 (pgtable-hwdef.h PTE_ADDR_LOW, 6.1; arm64_lpa2).  From 6.9 bits 49:48 are
    part of the PFN, so the output-address width check sees them; with the release unknown
    they are reported here too (RES0 to the MMU either way)."""
    mask = _genmask(15, 12) if mode.page_shift == 16 and "lpa" not in mode.options else 0
    if not {"lpa", "lpa2"} & mode.options and not _has(layout, "arm64_lpa2"):
        mask |= _genmask(49, 48)
    return raw & mask


def reserved_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
    """Bits set in a present leaf or table descriptor that Linux never writes there and the
    MMU treats as RES0 or ignores: the bits _leaf_flags/_table_unnamed give no meaning
    (pgtable-hwdef.h / pgtable-prot.h of the release) and the RES0 address bits above."""
    layout = facts.layout
    unnamed = _table_unnamed(raw, mode) if table else _leaf_flags(raw, _hw_level(mode, depth), mode, layout)[1]
    return sum(1 << b for b in unnamed) | _res0_address_bits(raw, mode, layout)


def misaligned_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
    """Output-address bits below a block's size that are set: RES0 in a block descriptor
    (Arm ARM D8.3.1), and pmd_pfn()/pud_pfn() mask them (pgtable.h pmd_pfn, pud_pfn, 7.2)."""
    if _hw_level(mode, depth) == 3:
        return 0
    pa, _ = output_address(raw, mode, facts.layout)
    return pa & (mode.levels[depth].span - 1) & ~(mode.page_size - 1)


def el0_executable(raw: int) -> bool:
    """Whether EL0 may execute through a leaf: PTE_UXN clear.  AP[1] (PTE_USER) gates data
    accesses only, so the kernel maps its own pages UXN and ptdump's W^X check warns
    otherwise (note_prot_uxn, arch/arm64/mm/ptdump.c, 6.1..7.2)."""
    return not raw & PTE_UXN


def cont_signature(raw: int, mode: PagingMode) -> int:
    """What every entry of a PTE_CONT block shares: the value made old and clean
    (pte_mkold(pte_mkclean()): AF and PTE_DIRTY cleared, PTE_RDONLY set, pgtable.h pte_mkold/pte_mkclean,
    7.2) without its output address, as __contpte_try_fold() and contpte_is_consistent()
    compare them (arch/arm64/mm/contpte.c __contpte_try_fold, contpte_is_consistent, 6.12/7.2)."""
    return ((raw & ~(PTE_AF | PTE_DIRTY)) | PTE_RDONLY) & ~_oa_bits(mode)


# What the MMU itself writes into an entry (not a store a watchpoint sees): (bits it sets, bits it
# clears, bits a clear needs).  arch/arm64/include/asm/pgtable-hwdef.h (7.2): PTE_AF bit 10 (hardware
# access flag update), PTE_RDONLY bit 7, PTE_DBM bit 51; pgtable.h pte_hw_dirty() is "pte_write(pte) &&
# !pte_rdonly(pte)": with DBM the MMU marks a write by clearing PTE_RDONLY.
HW_PTE_UPDATES = (PTE_AF, PTE_RDONLY, PTE_WRITE)  # PTE_WRITE is PTE_DBM


class Arm64Arch(ArchDefaults):
    """The arm64 Arch: modes from TCR_EL1, descriptors of every release 5.10..7.3."""

    name = "arm64"
    elf_machine, elf_machine_name = 183, "EM_AARCH64"  # include/uapi/linux/elf-em.h
    # arch/arm64/Makefile UTS_MACHINE := aarch64; kdump headers may spell it "arm64"
    uname_machines = ("aarch64", "arm64")
    # VMCOREINFO_NUMBER(kimage_voffset) (arch/arm64/kernel/crash_core.c 6.1, vmcore_info.c 6.12/7.2)
    vmcoreinfo_key = "NUMBER(kimage_voffset)"
    qemu_arch = "aarch64"
    gdb_arch = "aarch64"
    drgn_arch = "AARCH64"
    # arm64's `info registers` shows no TTBR/TCR (QEMU 7.2 target/arm/cpu.c aarch64_cpu_dump_state)
    hmp_registers = None
    current_registers = ("SP_EL0", "sp_el0")  # get_current() reads sp_el0 (arch/arm64/include/asm/current.h)
    pc_registers = ("pc",)
    # CONFIG_FRAME_POINTER=y (Debian 7.2): x29 points at {previous x29, return address}, and x30 holds
    # the caller of a function that has not saved its record yet; return addresses are signed
    # (paciasp): strip_pac() above.
    # From 6.13 an exception entry stores a struct frame_record_meta {0, 0, type} in its pt_regs
    # (entry.S kernel_entry): FRAME_META_TYPE_FINAL ends the chain, FRAME_META_TYPE_PT_REGS goes on at
    # pt_regs::pc and regs[29] (asm/stacktrace/frame.h; kernel/stacktrace.c kunwind_next_regs_pc(), 7.2,
    # without the LR since 32ed1205682e "arm64: stacktrace: Skip reporting LR at exception boundaries").
    # Before, the entry's record held {interrupted x29, ELR} and the final one two zeros.
    unwind = FrameRecords(("x29",), "x30", 0, 8, strip_pac,
                          "arch/arm64/include/asm/stacktrace/frame.h struct frame_record (7.2)",
                          exceptions=ExceptionRegs(
                              ("pt_regs.pc", 0), ("pt_regs.regs", 29 * 8),
                              "arch/arm64/kernel/stacktrace.c kunwind_next_frame_record_meta() (7.2)",
                              meta=MetaRecord("arm64_frame_record_meta", "pt_regs.stackframe", 16, 1, 2,
                                              "arch/arm64/include/asm/stacktrace/frame.h FRAME_META_TYPE_FINAL, "
                                              "FRAME_META_TYPE_PT_REGS (7.2)")))
    kernel_dir, gnu_triplet, debian_arch = "arm64", "aarch64-linux-gnu", "arm64"
    cont_schemes = frozenset({"contpte", "contpmd"})
    features: tuple[Feature, ...] = FEATURES
    hw_pte_updates = HW_PTE_UPDATES
    default_mode = "4k-48"  # decode's default: Debian's arm64 kernels before LPA2 hardware: 4 KiB granule, 48-bit VA
    split_roots = True  # TTBR0_EL1 translates the lower (user) half, TTBR1_EL1 the upper
    # VBAR_EL1 holds `vectors` (kernel/head.S, 7.2) unless the Spectre-BHB/KPTI
    # vector switch moved it to __bp_harden_el1_vectors or TRAMP_VALIAS (asm/vectors.h
    # in 7.2); a wrong offset then fails the session's VMCOREINFO check.  QEMU 7.2 -cpu max
    # and cortex-a57 booting 7.2.13 (nokaslr) both showed VBAR_EL1 == vectors.  QEMU's
    # target description names VBAR_EL1 "VBAR" (gdb-multiarch 13.1, QEMU 7.2).
    kaslr_anchor = ("VBAR", "vectors")
    # VMCOREINFO_SYMBOL_ARRAY(swapper_pg_dir) (kernel/crash_core.c 6.1, kernel/vmcore_info.c 6.12/7.2): TTBR1's table
    kernel_root_symbol = "swapper_pg_dir"
    kernel_text_region = None  # under KASLR vmalloc/module pages may precede the image
    gdb_registers = ("TTBR1_EL1", "TTBR0_EL1", "TCR_EL1", "MAIR_EL1", "SCTLR", "ID_AA64MMFR0_EL1", "VBAR")
    kernel_va_bit = 55  # VA bit 55 selects TTBR1_EL1, the kernel's half (Arm ARM D8.2.4; asm/memory.h)

    def __init__(self) -> None:
        self._modes = tuple(build_mode(ps, va, lpa2=lpa2, pa_bits=pa)
                            for ps, va, lpa2 in STANDARD
                            for pa in ((48, 52) if ps == 16 else (None,)))

    def modes(self) -> Sequence[PagingMode]:
        """The user-half modes of every Linux configuration (§3.2); "-ttbr1" variants and
        other TCR_EL1 settings are reached through mode() and mode_from_registers()."""
        return self._modes

    def root_candidates(self, regs: Mapping[str, int], upper: bool) -> tuple[int, ...]:
        """TTBR1_EL1 (upper) or TTBR0_EL1 BADDR, without ASID (63:48) and CnP (bit 0), and
        for the kernel half also BADDR + TRAMP_SWAPPER_OFFSET: with KPTI a CPU stopped at
        EL0 has TTBR1 on tramp_pg_dir, two pages below swapper_pg_dir (kernel/entry.S
        tramp_unmap_kernel; memory.h TRAMP_SWAPPER_OFFSET; vmlinux.lds.S, 6.1/7.2).

        With a 52-bit output size BADDR[51:48] sits in bits 5:2: phys_to_ttbr() is
        (phys | phys >> 46) & GENMASK(47, 2) (pgtable.h phys_to_ttbr, pgtable-hwdef.h TTBR_BADDR_MASK_52, 5.10..7.3).
        """
        name = "TTBR1_EL1" if upper else "TTBR0_EL1"
        if name not in regs or "TCR_EL1" not in regs:
            raise ValueError(f"arm64 needs {name} and TCR_EL1 to find the {'kernel' if upper else 'user'} root")
        ttbr = regs[name]
        mode = self.mode_from_registers({**regs, "half": int(upper)})
        if mode.pa_bits == 52:
            root = (ttbr & _genmask(47, 6)) | (((ttbr >> 2) & 0xF) << 48)
        else:
            root = ttbr & _genmask(47, 1)
        return (root, root + 2 * mode.page_size) if upper else (root,)

    def mode(self, name: str) -> PagingMode:
        m = MODE_RE.fullmatch(name)
        if m:
            granule, va, opt, pa, ttbr1 = m.groups()
            ps = {"4": 12, "16": 14, "64": 16}[granule]
            pa_bits = int(pa) if pa else (52 if opt else None)
            try:
                built = build_mode(ps, int(va), lpa2=opt == "-lpa2", pa_bits=pa_bits, ttbr1=bool(ttbr1))
            except ValueError:
                built = None
            if built is not None and built.name == name:
                return built
        choices = ", ".join(sorted({m.name for m in self._modes}))
        raise ValueError(f"unknown arm64 paging mode {name!r}; e.g. {choices} "
                         "(<4|16|64>k-<VA bits>[-lpa2|-lpa][-pa<N>][-ttbr1])")

    def mode_from_registers(self, regs: Mapping[str, int]) -> PagingMode:
        """The mode of one half: regs["TCR_EL1"], optional "ID_AA64MMFR0_EL1" and "half"."""
        tcr = regs["TCR_EL1"]
        half = regs.get("half", 0)
        if half not in (0, 1):
            raise ValueError(f"half must be 0 (TTBR0) or 1 (TTBR1), not {half!r}")
        tsz = (tcr >> (TCR_T1SZ_OFFSET if half else TCR_T0SZ_OFFSET)) & ((1 << TCR_TxSZ_WIDTH) - 1)
        tg = (tcr >> (TCR_TG1_SHIFT if half else TCR_TG0_SHIFT)) & ((1 << TCR_TG_WIDTH) - 1)
        ps = (TG1_PAGE_SHIFT if half else TG0_PAGE_SHIFT).get(tg)
        if ps is None:
            raise ValueError(f"TCR_EL1.TG{half} = {tg:#04b} is reserved")
        lpa2 = bool(tcr & TCR_DS) and ps != 16
        pa = PA_RANGE_BITS[(tcr >> TCR_IPS_SHIFT) & ((1 << TCR_IPS_WIDTH) - 1)]
        if "ID_AA64MMFR0_EL1" in regs:
            parange = regs["ID_AA64MMFR0_EL1"] & 0xF
            if parange not in PA_RANGE_BITS:
                raise ValueError(f"ID_AA64MMFR0_EL1.PARange {parange:#x} is reserved")
            pa = min(pa, PA_RANGE_BITS[parange])
        pa = min(pa, 52 if lpa2 or ps == 16 else 48)  # IPS above the granule's OA limit caps
        va = 64 - tsz
        if va > (52 if lpa2 or ps == 16 else 48):
            raise ValueError(f"T{half}SZ={tsz} ({va}-bit VA) needs TCR_EL1.DS=1 with a "
                             f"{1 << (ps - 10)}K granule")
        return build_mode(ps, va, lpa2=lpa2, pa_bits=pa, ttbr1=half == 1)

    def mode_from_vmcoreinfo(self, numbers: Mapping[str, str], upper: bool) -> PagingMode:
        """The mode of one half from PAGESIZE, NUMBER(TCR_EL1_T1SZ) and NUMBER(MAX_PHYSMEM_BITS).

        T1SZ is TCR_EL1 at boot (arch/arm64/kernel/crash_core.c 6.1, vmcore_info.c 6.12/7.2); T0SZ is set
        to the same vabits_actual (cpu_set_default_tcr_t0sz, mmu_context.h, 6.1..7.2).  TCR_EL1.DS
        (LPA2) is set exactly when the kernel runs with 52-bit VAs on a 4K/16K granule (mm/proc.S
        __cpu_setup, 6.12/7.2), which the architecture allows only with DS.  VMCOREINFO has no
        TCR_EL1.IPS: the output size is the kernel's PHYS_MASK_SHIFT (MAX_PHYSMEM_BITS,
        sparsemem.h MAX_PHYSMEM_BITS; kernel/vmcore_info.c, 7.2), which a CPU with a smaller PARange caps
        further (the gdbstub path then names a "-pa<N>" mode).
        """
        page_size = vmcoreinfo_int(numbers, "PAGESIZE")
        page_shift = {4096: 12, 16384: 14, 65536: 16}.get(page_size)
        if page_shift is None:
            raise ValueError(f"VMCOREINFO PAGESIZE={page_size} is not a 4K, 16K or 64K granule")
        t1sz = vmcoreinfo_int(numbers, "NUMBER(TCR_EL1_T1SZ)")
        va_bits = 64 - t1sz
        lpa2 = va_bits == 52 and page_shift != 16
        pa_bits = (vmcoreinfo_int(numbers, "NUMBER(MAX_PHYSMEM_BITS)")
                   if "NUMBER(MAX_PHYSMEM_BITS)" in numbers else None)
        return build_mode(page_shift, va_bits, lpa2=lpa2, pa_bits=pa_bits, ttbr1=upper)

    def kernel_image_pa(self, numbers: Mapping[str, str], va: int) -> int:
        """__kimg_to_phys(): va - kimage_voffset (memory.h __kimg_to_phys, 6.1..7.2); NUMBER(kimage_voffset)
        is in VMCOREINFO (arch/arm64/kernel/crash_core.c 6.1, vmcore_info.c 6.12/7.2)."""
        return (va - vmcoreinfo_int(numbers, "NUMBER(kimage_voffset)")) & MASK64

    def canonical(self, mode: PagingMode, va: int, upper: bool) -> int:
        mask = (1 << mode.va_bits) - 1
        return (va | (MASK64 & ~mask)) if upper else (va & mask)

    def decode(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
        if not 0 <= depth < len(mode.levels):
            return Decoded(raw, "?", Kind.UNKNOWN, reason=f"{mode.name} has no depth {depth}")
        if not 0 <= raw <= MASK64:
            return _unknown(raw, depth, mode, "not a 64-bit value")
        level = mode.levels[depth]
        hw = _hw_level(mode, depth)
        if raw == 0:  # pte_none/pmd_none/pud_none: !val (pgtable.h, 5.10..7.3)
            return Decoded(raw, level.name, Kind.NONE, size=level.span)
        kind = raw & PTE_TYPE_MASK
        if kind == PTE_TYPE_PAGE:  # == PMD_TYPE_TABLE above L3
            return _leaf(raw, depth, mode, facts) if hw == 3 else _table(raw, depth, mode, facts)
        if kind == PMD_TYPE_SECT:
            if hw == 3:
                return _unknown(raw, depth, mode, "reserved descriptor at L3 (bits[1:0] = 0b01): "
                                "the MMU faults and Linux never writes it")
            if not _block_permitted(hw, mode):
                return _unknown(raw, depth, mode, f"block descriptor not permitted at L{hw} in "
                                f"{mode.name} (translation fault)")
            notes = [] if level.leaf else [f"Linux never maps a block at L{hw}"]
            return _leaf(raw, depth, mode, facts, notes=notes)
        return _not_valid(raw, depth, mode, facts)

    def output_bits(self, mode: PagingMode, facts: KernelFacts) -> int:
        return output_bits(mode, facts)

    def reserved_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
        return reserved_bits(raw, depth, mode, facts, table)

    def misaligned_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
        return misaligned_bits(raw, depth, mode, facts)

    def cont_signature(self, raw: int, mode: PagingMode) -> int:
        return cont_signature(raw, mode)

    def user_exec_reason(self, raw: int) -> str | None:
        return "kernel mapping is executable at EL0 (PTE_UXN clear)" if el0_executable(raw) else None

    def kernel_view(
        self, block: Sequence[int], index: int, depth: int, mode: PagingMode, facts: KernelFacts
    ) -> int:
        """ptep_get(): a valid PTE_CONT entry gets the dirty/young of its whole block.

        contpte_ptep_get (mm/contpte.c, 6.9+: arm64_contpte) and huge_ptep_get
        (mm/hugetlbpage.c, 5.19+: arm64_huge_ptep_get) apply pte_mkdirty()/pte_mkyoung() to the
        target's own value when any entry is dirty/young; PTE_CONT is kept ("deliberately
        allowed to leak through the getters", pgtable.h ptep_get, 7.2).  Before 6.9 only hugetlb
        and the kernel's own mappings set PTE_CONT, and hugetlb reads through huge_ptep_get;
        before 5.19 huge_ptep_get is the generic ptep_get() and the entry reads as it is.  With
        the release unknown no kernel view is claimed (the entry as read).
        """
        raw = block[index]
        if not (raw & PTE_VALID and raw & PTE_CONT):
            return raw
        hw = _hw_level(mode, depth)
        shifts = {3: CONT_PTE_SHIFT, 2: CONT_PMD_SHIFT}.get(hw)
        if shifts is None:
            return raw
        n = 1 << shifts[mode.page_shift]
        if len(block) != n:
            raise ValueError(f"a PTE_CONT block at L{hw} of {mode.name} has {n} entries, got {len(block)}")
        if not facts.has("arm64_huge_ptep_get"):
            return raw
        for pte in block:
            if pte & PTE_DIRTY or (pte & PTE_WRITE and not pte & PTE_RDONLY):  # pte_dirty
                raw |= PTE_DIRTY  # pte_mkdirty: set PTE_DIRTY, clear RDONLY if writable
                if raw & PTE_WRITE:
                    raw &= ~PTE_RDONLY
            if pte & PTE_AF:  # pte_young -> pte_mkyoung
                raw |= PTE_AF
        return raw


ARCH: Arch = Arm64Arch()

