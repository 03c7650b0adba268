"""arm64 (VMSAv8-64 stage 1) page tables as Linux 6.1 / 6.12 / 7.2 build them.

Citations `file:a/b/c` give line numbers in 6.1 / 6.12 / 7.2 (`-` = absent); paths are
under arch/arm64/ unless they start with include/ or mm/.

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

Architecture facts this module reads from KernelFacts (all optional):
  "MAIR_EL1"              int: resolves AttrIndx to a memory type ("Normal WB", "Device-nGnRE").
                          Without it only the kernel's MT_* name of the index is given
                          (include/asm/memory.h:140-144/172-176/171-175, same in all three).
  "CONFIG_ARM64_PA_BITS"  48 | 52: needed for SWP_PFN_BITS of a 64K mode without -lpa (a
                          PA_BITS_52 kernel on a CPU without FEAT_LPA runs with IPS < 52).
  "MAX_PHYSMEM_BITS"      int: overrides the SWP_PFN_BITS derivation (include/asm/sparsemem.h:8/10/10).
Shared facts: CONFIG_HAVE_ARCH_USERFAULTFD_WP (bit 3 of 6.12+ swap entries, bit 58 of
leaves) and the software-leaf facts of archs/softleaf.py.

Contiguous blocks: `kernel_view()` ORs young/dirty over a valid PTE_CONT block as
contpte_ptep_get() (mm/contpte.c:-/155/313) and hugetlb's huge_ptep_get()
(mm/hugetlbpage.c:151/123/119) do; huge_ptep_get() tests pte_present() rather than
pte_valid(), which only differs for PROT_NONE blocks, whose entries the MMU cannot update.
`Decoded.cont` is set for any present leaf with PTE_CONT (pte_leaf_size() does not test
PTE_VALID either, pgtable.h:597/713/791).
"""
from __future__ import annotations

import re
from dataclasses import replace
from typing import Mapping, Sequence

from .common import Access, ContInfo, Decoded, Kind, KernelFacts, Level, PagingMode, Softleaf, vmcoreinfo_int
from .softleaf import decode_softleaf
FAMILIES = ("6.1", "6.12", "7.2")  # TODO(features): being replaced by FEATURES
from .versions import Feature

# This architecture's layout changes (archs/versions.py); TODO(features): filled per feature.
FEATURES: tuple[Feature, ...] = ()

MASK64 = (1 << 64) - 1


def _bit(n: int) -> int:
    return 1 << n


def _genmask(hi: int, lo: int) -> int:
    return ((1 << (hi + 1)) - 1) & ~((1 << lo) - 1)


# Descriptor bits, include/asm/pgtable-hwdef.h:143-156/158-171/164-176.
PTE_VALID = _bit(0)
PTE_TYPE_MASK = 3  # PTE_TYPE_PAGE / PMD_TYPE_TABLE = 3, PMD_TYPE_SECT = 1
PTE_TABLE_BIT = _bit(1)  # PTE_TABLE_BIT/PMD_TABLE_BIT (146,117 / 161,133 / removed in 7.2)
PTE_ATTRINDX_SHIFT, PTE_ATTRINDX_MASK = 2, 7 << 2  # (170/191/196)
PTE_USER, PTE_RDONLY = _bit(6), _bit(7)  # AP[1], AP[2]
PTE_SHARED_SHIFT, PTE_SHARED = 8, 3 << 8  # SH[1:0]; with LPA2 active these are OA[51:50]
PTE_AF, PTE_NG = _bit(10), _bit(11)
PTE_WRITE, PTE_CONT = _bit(51), _bit(52)  # PTE_WRITE == PTE_DBM (pgtable-prot.h:16); GP is bit 50
PTE_PXN, PTE_UXN = _bit(53), _bit(54)
# Software bits, include/asm/pgtable-prot.h:16-28/16-34/16-35.
PTE_DIRTY = _bit(55)  # PTE_SPECIAL is bit 56
PTE_PRESENT_INVALID = PTE_NG  # 6.12+, only when !PTE_VALID (-/27/26)
PTE_PROT_NONE = _bit(58)  # 6.1 only, only when !PTE_VALID (21/-/-)
PMD_PRESENT_INVALID = _bit(59)  # 6.1 only, PMDs only (28/-/-)
PTE_PO_IDX_SHIFT, PTE_PO_IDX_MASK = 60, _genmask(62, 60)  # POIndex (pgtable-hwdef.h:-/208/213)

# Names of leaf bits that mean the same in every family.
LEAF_NAMES = {0: "PTE_VALID", 6: "PTE_USER", 7: "PTE_RDONLY", 10: "PTE_AF", 50: "PTE_GP",
              51: "PTE_WRITE", 52: "PTE_CONT", 53: "PTE_PXN", 54: "PTE_UXN", 55: "PTE_DIRTY",
              56: "PTE_SPECIAL"}
# Software bits 57-59 by family (pgtable-prot.h:20-28 / 20-31 / 31).
SW_NAMES = {"6.1": {57: "PTE_DEVMAP", 58: "PTE_PROT_NONE"},
            "6.12": {57: "PTE_DEVMAP", 58: "PTE_UFFD_WP"},
            "7.2": {58: "PTE_UFFD_WP"}}
VERSION_DEPENDENT_BITS = (57, 58, 59, 60, 61, 62)  # named per family above, or POIndex (6.12+)

# Table descriptor attributes, by hardware level: PGD (L-1), P4D (L0), PUD (L1), PMD (L2)
# *_TABLE_PXN bit 59, *_TABLE_UXN bit 60 (pgtable-hwdef.h:131-132/146-147/152-153),
# *_TABLE_AF bit 10 (FEAT_HAFT; 7.2 only, 107/118/129/139), S1_TABLE_AP 62:61 (-/219/224).
TABLE_PREFIX = {-1: "PGD", 0: "P4D", 1: "PUD", 2: "PMD"}
TABLE_AF, TABLE_PXN, TABLE_UXN = _bit(10), _bit(59), _bit(60)
S1_TABLE_AP_SHIFT, S1_TABLE_AP = 61, 3 << 61
APTABLE_TEXT = {1: "no EL0 access below", 2: "no write access below",
                3: "no write, no EL0 access below"}

# Memory types: the kernel's AttrIndx numbers (include/asm/memory.h:140-144/172-176/171-175).
MT_NAMES = {0: "MT_NORMAL", 1: "MT_NORMAL_TAGGED", 2: "MT_NORMAL_NC", 3: "MT_DEVICE_nGnRnE",
            4: "MT_DEVICE_nGnRE"}
SH_TEXT = {0: "Non-shareable", 1: "reserved", 2: "Outer Shareable", 3: "Inner Shareable"}
AP_TEXT = {0: "EL1 RW, EL0 none", 1: "EL1 RW, EL0 RW", 2: "EL1 RO, EL0 none", 3: "EL1 RO, EL0 RO"}

# Swap entries (pgtable.h:1000-1019 / 1424-1444 / 1515-1535):
#   6.1:   bit 2 PTE_SWP_EXCLUSIVE, type 7:3 (__SWP_TYPE_SHIFT 3), offset 57:8 (50 bits)
#   6.12+: bit 2 PTE_SWP_EXCLUSIVE, bit 3 PTE_SWP_UFFD_WP, type 10:6, offset 61:12 (50 bits)
SWP_TYPE_BITS, SWP_OFFSET_BITS = 5, 50
SWP_SHIFTS = {"6.1": (3, 8), "6.12": (6, 12), "7.2": (6, 12)}  # (__SWP_TYPE_SHIFT, __SWP_OFFSET_SHIFT)
# PTE_SWP_EXCLUSIVE bit 2 (pgtable-prot.h:17, all), PTE_SWP_UFFD_WP bit 3 (-/31/32,
# CONFIG_HAVE_ARCH_USERFAULTFD_WP): the arch flag bits of each family.
SWP_FLAGS = {"6.1": {2: "PTE_SWP_EXCLUSIVE"},
             "6.12": {2: "PTE_SWP_EXCLUSIVE", 3: "PTE_SWP_UFFD_WP"},
             "7.2": {2: "PTE_SWP_EXCLUSIVE", 3: "PTE_SWP_UFFD_WP"}}

# CONFIG_ARM64_CONT_PTE_SHIFT / CONFIG_ARM64_CONT_PMD_SHIFT per PAGE_SHIFT (Kconfig:259-269/303-313/284-294).
CONT_PTE_SHIFT = {12: 4, 14: 7, 16: 5}
CONT_PMD_SHIFT = {12: 4, 14: 5, 16: 5}

# TCR_EL1 (pgtable-hwdef.h 6.12: T0SZ 0, T1SZ 16, TG0 14, TG1 30, IPS 32, DS 59 at 226-321).
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
    """ARM64_HW_PGTABLE_LEVEL_SHIFT(n) (pgtable-hwdef.h:41/41/47)."""
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


def _hw_level(mode: PagingMode, depth: int) -> int:
    return int(mode.levels[depth].hw[1:])


def _family(facts: KernelFacts) -> str | None:
    return facts.family if facts.family in FAMILIES else None


# ---------------------------------------------------------------- output addresses

def output_address(raw: int, mode: PagingMode, family: str | None) -> tuple[int, list[str]]:
    """__pte_to_phys() of a descriptor (pgtable.h:77-88/76-88/114-135), and notes.

    PTE_ADDR_LOW is GENMASK(47, PAGE_SHIFT) in 6.1 and GENMASK(49, PAGE_SHIFT) in 6.12+
    (pgtable-hwdef.h:158/174/179); with family unknown the MMU's view (47) is used.
    """
    ps = mode.page_shift
    notes: list[str] = []
    if "lpa2" in mode.options:
        # PTE_ADDR_HIGH (0x3 << 8) << PTE_ADDR_HIGH_SHIFT 42 (pgtable-hwdef.h:-/181-182/186-187)
        if family == "6.1":
            notes.append("6.1 has no LPA2 support (CONFIG_ARM64_LPA2 is 6.12+)")
        return (raw & _genmask(49, ps)) | ((raw & PTE_SHARED) << 42), notes
    top = 49 if family in ("6.12", "7.2") else 47
    pa = raw & _genmask(top, ps)
    high = raw & _genmask(49, 48)
    if "lpa" in mode.options:
        # PTE_ADDR_HIGH (0xf << 12) << 36 (pgtable-hwdef.h:160/177-178/182-183)
        pa |= (raw & _genmask(15, 12)) << 36
        if high and high >> 48 != (raw >> 12) & 3:
            notes.append("bits 49:48 differ from OA[49:48] in bits 13:12 (__phys_to_pte_val() "
                         "writes both)")
        return pa, notes
    if ps == 16 and raw & _genmask(15, 12):
        notes.append("bits 15:12 set: OA[51:48] only with a 52-bit output size; RES0 here")
    if high:
        notes.append("bits 49:48 set: RES0 to the MMU without LPA/LPA2; "
                     + ("pte_pfn() counts them (6.12+ PTE_ADDR_LOW)" if top == 49
                        else "not part of the output address (GENMASK(47, PAGE_SHIFT))"))
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


def _attrindx_text(raw: int, facts: KernelFacts) -> str:
    idx = (raw & PTE_ATTRINDX_MASK) >> PTE_ATTRINDX_SHIFT
    text = f"{idx} ({MT_NAMES.get(idx, 'no MT_* index')})"
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
                family: str | None) -> tuple[tuple[str, ...], list[int]]:
    """Kernel names of a leaf's set single bits, low bit first, and the set bits Linux gives no meaning."""
    names: list[str] = []
    unnamed: list[int] = []
    fields = _oa_bits(mode) | PTE_TABLE_BIT | PTE_ATTRINDX_MASK | PTE_SHARED
    for b in _bits(raw & ~fields):
        if b in LEAF_NAMES:
            names.append(LEAF_NAMES[b])
        elif b == 11:
            invalid_present = not raw & PTE_VALID and family in ("6.12", "7.2")
            names.append("PTE_PRESENT_INVALID" if invalid_present else "PTE_NG")
        elif family is None and b in VERSION_DEPENDENT_BITS:
            names.append(f"SW bit {b} (meaning depends on kernel version)")
        elif family is not None and b in SW_NAMES[family]:
            names.append(SW_NAMES[family][b])
        elif family == "6.1" and b == 59 and hw == 2:
            names.append("PMD_PRESENT_INVALID")
        elif not (family in ("6.12", "7.2") and b in (60, 61, 62)):  # POIndex: a field
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
    if _family(facts) in ("6.12", "7.2") and raw & PTE_PO_IDX_MASK:
        fields.append(("POIndex", str((raw & PTE_PO_IDX_MASK) >> PTE_PO_IDX_SHIFT)))
    return tuple(fields)


def _access(raw: int, mode: PagingMode, protnone: bool) -> Access:
    """pte_write/pte_dirty/pte_young/pte_user (pgtable.h:105-125/104-125/150-169)."""
    write = bool(raw & PTE_WRITE)
    dirty = bool(raw & PTE_DIRTY) or (write and not raw & PTE_RDONLY)
    user = bool(raw & PTE_USER)
    young = bool(raw & PTE_AF)
    if protnone:
        return Access(False, False, False, user, young, dirty)
    xn = PTE_PXN if "ttbr1" in mode.options else PTE_UXN
    return Access(True, write, not raw & xn, user, young, dirty)


def _cont(raw: int, hw: int, mode: PagingMode, notes: list[str]) -> ContInfo | None:
    """The block of a PTE_CONT leaf: CONT_PTES / CONT_PMDS entries (pgtable-hwdef.h:78,83/85,90/91,96)."""
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
    family = _family(facts)
    notes = list(notes)
    if protnone:
        notes[:0] = ["PROT_NONE"]
    pa, addr_notes = output_address(raw, mode, family)
    block_mask = level.span - 1
    if hw != 3 and pa & block_mask & ~(mode.page_size - 1):
        addr_notes.append("output address bits below the block size set (pmd_pfn/pud_pfn mask them)")
    if raw & PTE_VALID:
        descriptor = "page (0b11)" if hw == 3 else "block (0b01)"
    else:
        descriptor = f"not valid (0b{raw & 3:02b}), present to the kernel"
        if hw != 3 and raw & PTE_TABLE_BIT:
            notes.append("bit 1 set: pmd_trans_huge() treats this entry as a table")
    flags, unnamed = _leaf_flags(raw, hw, mode, family)
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
    pa, notes = output_address(raw, mode, _family(facts))
    pa &= ~(mode.page_size - 1)
    # The hardware bit keeps 7.2's name (*_TABLE_AF) in every family.
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


def _unknown(raw: int, depth: int, mode: PagingMode, reason: str, **extra: object) -> Decoded:
    level = mode.levels[depth]
    return Decoded(raw, level.name, Kind.UNKNOWN, size=level.span, reason=reason, **extra)


def _block_permitted(hw: int, mode: PagingMode) -> bool:
    """Block descriptors the Arm ARM allows: L2 always; L1 with 4K, or 16K+DS, or 64K+52-bit
    PA; L0 with 4K+DS."""
    ps, opts = mode.page_shift, mode.options
    if hw == 2:
        return True
    if hw == 1:
        return ps == 12 or "lpa2" in opts or "lpa" in opts
    return hw == 0 and ps == 12 and "lpa2" in opts


def swp_pfn_bits(mode: PagingMode, facts: KernelFacts) -> int | None:
    """SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT (include/linux/swapops.h:36), or None.

    MAX_PHYSMEM_BITS is CONFIG_ARM64_PA_BITS in 6.1 and PHYS_MASK_SHIFT in 6.12+
    (sparsemem.h:8/10/10): `lpa2_is_enabled() ? 52 : 48` on LPA2 kernels, else
    CONFIG_ARM64_PA_BITS (pgtable-prot.h:-/81,90/85,94).  4K/16K: 52 exactly when DS=1
    (6.1 allows PA_BITS_52 only with 64K, Kconfig:1374).  64K: 52 when IPS is 52 (only a
    PA_BITS_52 kernel programs that, assembler.h tcr_compute_pa_size), else the config.
    """
    given = facts.get("MAX_PHYSMEM_BITS")
    if isinstance(given, int):
        return given - mode.page_shift
    family = _family(facts)
    if family is None or (family == "6.1" and "lpa2" in mode.options):
        return None
    if mode.page_shift != 16:
        return (52 if "lpa2" in mode.options else 48) - mode.page_shift
    if "lpa" in mode.options:
        return 52 - 16
    config = facts.get("CONFIG_ARM64_PA_BITS")
    return config - 16 if config in (48, 52) else None


def _softleaf(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, family: str) -> Decoded:
    """__swp_type/__swp_offset of a non-present entry, classified by decode_softleaf()."""
    hw = _hw_level(mode, depth)
    level = mode.levels[depth]
    type_shift, offset_shift = SWP_SHIFTS[family]
    flag_bits = SWP_FLAGS[family]
    flags = tuple(name for b, name in flag_bits.items() if raw >> b & 1)
    fields_mask = (_genmask(type_shift + SWP_TYPE_BITS - 1, type_shift)
                   | _genmask(offset_shift + SWP_OFFSET_BITS - 1, offset_shift)
                   | sum(1 << b for b in flag_bits))
    notes: list[str] = []
    stray = raw & ~fields_mask
    if stray:
        notes.append(f"bits outside the swap fields set (ignored by __swp_type/__swp_offset): {stray:#x}")
    if "PTE_SWP_UFFD_WP" in flags and facts.get("CONFIG_HAVE_ARCH_USERFAULTFD_WP") is False:
        notes.append("PTE_SWP_UFFD_WP set but the kernel has no CONFIG_HAVE_ARCH_USERFAULTFD_WP")
    if hw == 1:
        notes.append("only hugetlb (1 GiB pages) writes non-present entries at PUD level")
    leaf = Softleaf((raw >> type_shift) & ((1 << SWP_TYPE_BITS) - 1),
                    (raw >> offset_shift) & ((1 << SWP_OFFSET_BITS) - 1), flags)
    decoded = decode_softleaf(raw, SEMANTIC_LEVEL[hw], level.span, leaf, facts,
                              swp_pfn_bits(mode, facts), flags)
    return replace(decoded, level=level.name, notes=decoded.notes + tuple(notes))


def _not_valid(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
    """A non-zero entry with PTE_VALID clear: PROT_NONE/present-invalid leaf or softleaf."""
    hw = _hw_level(mode, depth)
    if not mode.levels[depth].leaf:
        return _unknown(raw, depth, mode, f"invalid descriptor with bits set at L{hw}: the kernel "
                        "writes no swap or PROT_NONE entries at this level")
    family = _family(facts)
    if family is None:
        return _unknown(raw, depth, mode, "kernel layout family unknown: whether this invalid entry "
                        "is PROT_NONE (6.1 bit 58, 6.12+ bit 11) or a swap entry depends on the version")
    if family == "6.1":
        # pte_present = VALID | PTE_PROT_NONE (102); pmd_present adds PMD_PRESENT_INVALID (464).
        if raw & PTE_PROT_NONE:
            return _leaf(raw, depth, mode, facts, protnone=True,
                         notes=["PTE_PROT_NONE (bit 58) with PTE_VALID clear: present to the kernel"])
        if hw == 2 and raw & PMD_PRESENT_INVALID:
            return _leaf(raw, depth, mode, facts, notes=[
                "present-invalid THP (pmd_mkinvalid: PMD_PRESENT_INVALID set, VALID clear)"])
    elif raw & PTE_PRESENT_INVALID:
        # pte_present_invalid (pgtable.h:-/128/172); pte_protnone adds !PTE_USER && PTE_UXN (-/546/571).
        if not raw & PTE_USER and raw & PTE_UXN:
            return _leaf(raw, depth, mode, facts, protnone=True,
                         notes=["PTE_PRESENT_INVALID with !PTE_USER && PTE_UXN (pte_protnone)"])
        return _leaf(raw, depth, mode, facts, notes=[
            "present-invalid, not PROT_NONE (PTE_USER set or PTE_UXN clear): as pmd_mkinvalid() leaves a THP"])
    return _softleaf(raw, depth, mode, facts, family)


# ---------------------------------------------------------------- rules `ptinspect validate` checks

def output_bits(mode: PagingMode, facts: KernelFacts) -> int:
    """The output-address size: TCR_EL1.IPS capped by ID_AA64MMFR0_EL1.PARange and the
    granule (mode_from_registers); a larger address is an Address size fault (Arm ARM D8.2)."""
    return mode.pa_bits


def _res0_address_bits(raw: int, mode: PagingMode, family: str | None) -> int:
    """Address bits the MMU treats as RES0 that pte_pfn() does not count: 15:12 of a 64K
    descriptor without FEAT_LPA, and 49:48 without LPA/LPA2 in 6.1, whose PTE_ADDR_LOW stops
    at bit 47 (pgtable-hwdef.h:158/174/179).  In 6.12+ bits 49:48 are part of the PFN, so
    the output-address width check sees them."""
    mask = _genmask(15, 12) if mode.page_shift == 16 and "lpa" not in mode.options else 0
    if not {"lpa", "lpa2"} & mode.options and family not in ("6.12", "7.2"):
        mask |= _genmask(49, 48)
    return raw & mask


def reserved_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
    """Bits set in a present leaf or table descriptor that Linux never writes there and the
    MMU treats as RES0 or ignores: the bits _leaf_flags/_table_unnamed give no meaning
    (pgtable-hwdef.h / pgtable-prot.h per family) and the RES0 address bits above."""
    family = _family(facts)
    unnamed = _table_unnamed(raw, mode) if table else _leaf_flags(raw, _hw_level(mode, depth), mode, family)[1]
    return sum(1 << b for b in unnamed) | _res0_address_bits(raw, mode, family)


def misaligned_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
    """Output-address bits below a block's size that are set: RES0 in a block descriptor
    (Arm ARM D8.3.1), and pmd_pfn()/pud_pfn() mask them (pgtable.h:-/601,613/630,654)."""
    if _hw_level(mode, depth) == 3:
        return 0
    pa, _ = output_address(raw, mode, _family(facts))
    return pa & (mode.levels[depth].span - 1) & ~(mode.page_size - 1)


def el0_executable(raw: int) -> bool:
    """Whether EL0 may execute through a leaf: PTE_UXN clear.  AP[1] (PTE_USER) gates data
    accesses only, so the kernel maps its own pages UXN and ptdump's W^X check warns
    otherwise (note_prot_uxn, arch/arm64/mm/ptdump.c:222/162/162)."""
    return not raw & PTE_UXN


def cont_signature(raw: int, mode: PagingMode) -> int:
    """What every entry of a PTE_CONT block shares: the value made old and clean
    (pte_mkold(pte_mkclean()): AF and PTE_DIRTY cleared, PTE_RDONLY set, pgtable.h:262,294 in
    7.2) without its output address, as __contpte_try_fold() and contpte_is_consistent()
    compare them (arch/arm64/mm/contpte.c:-/122-130/280-288 and 7.2:361-366)."""
    return ((raw & ~(PTE_AF | PTE_DIRTY)) | PTE_RDONLY) & ~_oa_bits(mode)


class Arm64Arch:
    """The arm64 Arch: modes from TCR_EL1, descriptors of 6.1 / 6.12 / 7.2."""

    name = "arm64"
    features: tuple[Feature, ...] = FEATURES
    default_mode = "4k-48"  # decode's default: Debian's arm64 kernels before LPA2 hardware: 4 KiB granule, 48-bit VA
    split_roots = True  # TTBR0_EL1 translates the lower (user) half, TTBR1_EL1 the upper
    # VBAR_EL1 holds `vectors` (kernel/head.S:224-225 in 7.2) unless the Spectre-BHB/KPTI
    # vector switch moved it to __bp_harden_el1_vectors or TRAMP_VALIAS (asm/vectors.h:63-71
    # in 7.2); a wrong offset then fails the session's VMCOREINFO check.  QEMU 7.2 -cpu max
    # and cortex-a57 booting 7.2.13 (nokaslr) both showed VBAR_EL1 == vectors.  QEMU's
    # target description names VBAR_EL1 "VBAR" (gdb-multiarch 13.1, QEMU 7.2).
    kaslr_anchor = ("VBAR", "vectors")
    # VMCOREINFO_SYMBOL_ARRAY(swapper_pg_dir) (kernel/crash_core.c:426, vmcore_info.c:146/167): TTBR1's table
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
        tramp_unmap_kernel; memory.h:175/209/213; vmlinux.lds.S:363/-/426).

        With a 52-bit output size BADDR[51:48] sits in bits 5:2: phys_to_ttbr() is
        (phys | phys >> 46) & GENMASK(47, 2) (pgtable.h:1080/1499/1590, pgtable-hwdef.h:286/330/284).
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
        tsz = (tcr >> (16 * half)) & 0x3F  # T0SZ 5:0, T1SZ 21:16
        tg = (tcr >> (30 if half else 14)) & 3
        ps = (TG1_PAGE_SHIFT if half else TG0_PAGE_SHIFT).get(tg)
        if ps is None:
            raise ValueError(f"TCR_EL1.TG{half} = {tg:#04b} is reserved")
        lpa2 = bool(tcr & TCR_DS) and ps != 16
        pa = PA_RANGE_BITS[(tcr >> 32) & 7]
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

        T1SZ is TCR_EL1 at boot (kernel/crash_core.c:33 in 6.1, vmcore_info.c:33/33); T0SZ is set
        to the same vabits_actual (cpu_set_default_tcr_t0sz, mmu_context.h:81/84/98).  TCR_EL1.DS
        (LPA2) is set exactly when the kernel runs with 52-bit VAs on a 4K/16K granule (mm/proc.S:
        -/485-488/510-513), which the architecture allows only with DS.  VMCOREINFO has no
        TCR_EL1.IPS: the output size is the kernel's PHYS_MASK_SHIFT (MAX_PHYSMEM_BITS,
        sparsemem.h:8/10/10; vmcore_info.c:185 in 7.2), which a CPU with a smaller PARange caps
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
        """__kimg_to_phys(): va - kimage_voffset (memory.h:278/336/341); NUMBER(kimage_voffset)
        is in VMCOREINFO (crash_core.c:29 in 6.1, vmcore_info.c:29/29)."""
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
        if raw == 0:  # pte_none/pmd_none/pud_none: !val (pgtable.h:95/95/140)
            return Decoded(raw, level.name, Kind.NONE, size=level.span)
        kind = raw & PTE_TYPE_MASK
        if kind == 3:
            return _leaf(raw, depth, mode, facts) if hw == 3 else _table(raw, depth, mode, facts)
        if kind == 1:
            if hw == 3:
                return _unknown(raw, depth, mode, "reserved descriptor at L3 (bits[1:0] = 0b01): "
                                "the MMU faults and Linux never writes it")
            if not _block_permitted(hw, mode):
                return _unknown(raw, depth, mode, f"block descriptor not permitted at L{hw} in "
                                f"{mode.name} (translation fault)")
            notes = [] if level.leaf else [f"Linux never maps a block at L{hw}"]
            return _leaf(raw, depth, mode, facts, notes=notes)
        return _not_valid(raw, depth, mode, facts)

    def kernel_view(
        self, block: Sequence[int], index: int, depth: int, mode: PagingMode, facts: KernelFacts
    ) -> int:
        """ptep_get(): a valid PTE_CONT entry gets the dirty/young of its whole block.

        contpte_ptep_get (mm/contpte.c:-/155/313) and huge_ptep_get (mm/hugetlbpage.c:
        151/123/119) apply pte_mkdirty()/pte_mkyoung() to the target's own value when any
        entry is dirty/young; PTE_CONT is kept ("deliberately allowed to leak through the
        getters", pgtable.h:1729-1730 in 7.2).  6.1 has no contpte: there only hugetlb and
        the kernel's own mappings set PTE_CONT, and hugetlb reads through huge_ptep_get.
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
        for pte in block:
            if pte & PTE_DIRTY or (pte & PTE_WRITE and not pte & PTE_RDONLY):  # pte_dirty
                raw |= PTE_DIRTY  # pte_mkdirty: set PTE_DIRTY, clear RDONLY if writable
                if raw & PTE_WRITE:
                    raw &= ~PTE_RDONLY
            if pte & PTE_AF:  # pte_young -> pte_mkyoung
                raw |= PTE_AF
        return raw


ARCH = Arm64Arch()
