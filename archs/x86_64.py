"""x86-64 page tables as Linux 5.10 to 7.3 build them: 4-level and 5-level (LA57).

What changed between releases is in FEATURES (archs/versions.py); a decode asks
`facts.has("x86_...")`, which is None when the kernel's release is not known: then the
decode says what depends on the release.  Citations name the kernel file (a bare header
name is in arch/x86/include/asm/) and symbol, with the release they were read in.

Architecture facts this module reads from KernelFacts (all optional):
  "physical_mask"      int: the kernel's runtime `physical_mask` (arch/x86/mm/pgtable.c
                       physical_mask), which SME/SEV (C-bit) and TDX (shared bit) narrow; it
                       narrows PTE_PFN_MASK and the PMD/PUD leaf masks (page_types.h
                       PHYSICAL_PAGE_MASK/PHYSICAL_PMD_PAGE_MASK/PHYSICAL_PUD_PAGE_MASK).
  "X86_FEATURE_SHSTK"  bool: cpu_feature_enabled(X86_FEATURE_USER_SHSTK); with it a Write=0,Dirty=1
                       PTE/PMD is shadow stack and pte_write()/pmd_write() are true (since 6.6).
  "IA32_PAT"           int: the PAT MSR; without it the cache type of a PAT slot is the one in
                       the PAT Linux programs on full-PAT CPUs (arch/x86/mm/pat/memtype.c).
  "MAX_PHYSMEM_BITS"   int: overrides `pgtable_l5_enabled() ? 52 : 46` (sparsemem.h).
Shared facts: CONFIG_MEM_SOFT_DIRTY and CONFIG_HAVE_ARCH_USERFAULTFD_WP (only to name bits 1/2
of swap entries and 10/11 of leaves), and the software-leaf facts of archs/softleaf.py.

PTI: a process has a kernel PGD and, with CONFIG_MITIGATION_PAGE_TABLE_ISOLATION active, a
user PGD in the other half of the same order-1 (8 KiB) allocation; see `X86_64Arch.user_pgd`.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace

from .common import (
    Access,
    Arch,
    ArchDefaults,
    Decoded,
    KernelFacts,
    Kind,
    Level,
    OrcUnwind,
    PagingMode,
    Softleaf,
    StackScan,
    find_mode,
    vmcoreinfo_int,
)
from .softleaf import decode_softleaf
from .versions import OLDEST, Feature

# This architecture's layout changes, each with the mainline release that made it.
FEATURES: tuple[Feature, ...] = (
    # _PAGE_DEVMAP is _PAGE_BIT_SOFTW4 on leaves from before the oldest supported release
    # (pgtable_types.h _PAGE_BIT_DEVMAP, 5.10) until devmap went away.
    Feature("x86_devmap", OLDEST, "pgtable_types.h _PAGE_BIT_DEVMAP = _PAGE_BIT_SOFTW4",
            "(before 5.10, the oldest supported release)",
            until=(6, 17), removed_by="d438d2734170 mm: remove devmap related functions and page table bits"),
    Feature("x86_swp_exclusive", (5, 19),
            "pgtable_64_types.h _PAGE_SWP_EXCLUSIVE (_PAGE_PWT, bit 3); pgtable.h pte_swp_exclusive()",
            "(hash not established) x86/pgtable: support __HAVE_ARCH_PTE_SWP_EXCLUSIVE"),
    # _PAGE_BIT_SOFTW4 58 -> 57 (so _PAGE_DEVMAP moves to 57), _PAGE_BIT_SOFTW5 58 = _PAGE_BIT_SAVED_DIRTY.
    Feature("x86_softw5", (6, 6),
            "pgtable_types.h _PAGE_BIT_SOFTW4 57, _PAGE_BIT_SOFTW5 58, _PAGE_BIT_SAVED_DIRTY",
            "fca4d413c5f7 x86/mm: Introduce _PAGE_SAVED_DIRTY"),
    # pte_dirty() tests _PAGE_DIRTY_BITS, pte_mkdirty()/pte_wrprotect() move D to SavedDirty
    # when Write=0, pte_write()/pmd_write() are true for shadow stack (pte_shstk()).
    Feature("x86_saved_dirty", (6, 6),
            "pgtable.h pte_dirty() (_PAGE_DIRTY_BITS), pte_shstk(), pte_write(), mksaveddirty_shift()",
            "bb3aadf7d446 x86/mm: Start actually marking _PAGE_SAVED_DIRTY"),
    Feature("x86_kernel_ro_clean", (6, 6), "pgtable_types.h __PAGE_KERNEL_RO/__PAGE_KERNEL_ROX without ___D",
            "f788b71768ff x86/mm: Remove _PAGE_DIRTY from kernel RO pages"),
    # Mainline 6.13 (d0ceea662d45, merged for 6.13-rc2); the stable series 6.6.y and 6.12.y
    # carry it as a backport (Debian's 6.12.117 source has it), which the decode notes.
    Feature("x86_noptishadow", (6, 13),
            "pgtable_types.h _PAGE_BIT_NOPTISHADOW = _PAGE_BIT_SOFTW5 (PGD/P4D); arch/x86/mm/pti.c "
            "__pti_set_user_pgtbl()",
            "d0ceea662d45 x86/mm: Add _PAGE_NOPTISHADOW bit to avoid updating userspace page tables"),
    # The ORC unwind tables (archs/x86_orc.py): from 6.4 a vmlinux names its layout by .orc_header's hash;
    # these two decide it before then.
    Feature("x86_orc_sp_indirect_deref", (5, 12),
            "unwind_orc.c unwind_next_frame() ORC_REG_SP_INDIRECT: sp = *state->sp + sp_offset",
            "87ccc826bf1c x86/unwind/orc: Change REG_SP_INDIRECT"),
    Feature("x86_orc_type3", (6, 4),
            "orc_types.h struct orc_entry type:3 (ORC_TYPE_UNDEFINED, ORC_TYPE_END_OF_STACK), signal:1",
            "fb799447ae29 x86,objtool: Split UNWIND_HINT_EMPTY in two (with ffb1b4a41016 "
            "x86/unwind/orc: Add 'signal' field to ORC metadata)"),
    Feature("x86_kernel_4k", (6, 15),
            "pgtable_types.h _PAGE_BIT_KERNEL_4K = _PAGE_BIT_SOFTW3 (kernel mappings)",
            "41d88484c71c x86/mm/pat: restore large ROX pages after fragmentation"),
)

MASK64 = (1 << 64) - 1
PAGE_SHIFT = 12

# Hardware bits, pgtable_types.h _PAGE_BIT_PRESENT.._PAGE_BIT_NX (5.10..7.3).
P, RW, US, PWT, PCD, A, D, PSE, G = (1 << b for b in range(9))
PAT_4K = PSE  # _PAGE_BIT_PAT 7 on 4 KiB pages
PROTNONE = G  # _PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL when P=0 (pgtable_types.h)
SOFTW3 = 1 << 11  # _PAGE_BIT_SOFTW3: _PAGE_SOFT_DIRTY, and _PAGE_KERNEL_4K since 6.15
PAT_LARGE = 1 << 12  # _PAGE_BIT_PAT_LARGE (pgtable_types.h)
NX = 1 << 63
PKEY_SHIFT, PKEY_MASK = 59, 0xF << 59  # _PAGE_BIT_PKEY_BIT0..3 (pgtable_types.h)
BIT57, BIT58 = 1 << 57, 1 << 58
KNL_ERRATUM_MASK = A | D  # _PAGE_KNL_ERRATUM_MASK (pgtable_types.h)

# Names of the low bits that do not depend on the kind of entry.
LOW_NAMES = {0: "_PAGE_PRESENT", 1: "_PAGE_RW", 2: "_PAGE_USER", 3: "_PAGE_PWT",
             4: "_PAGE_PCD", 5: "_PAGE_ACCESSED", 6: "_PAGE_DIRTY"}
UNDEFINED_HIGH_BITS = (52, 53, 54, 55, 56)  # SW-available, no kernel #define in any release 5.10..7.3

# __PHYSICAL_MASK_SHIFT 52 (page_64_types.h); PAGE_MASK / PMD_MASK / PUD_MASK.
PHYS_MASK_52 = (1 << 52) - 1
PAGE_MASK = MASK64 & ~((1 << 12) - 1)
PMD_MASK = MASK64 & ~((1 << 21) - 1)
PUD_MASK = MASK64 & ~((1 << 30) - 1)

# Swap entries, pgtable_64.h __swp_entry/__swp_type/__swp_offset (the same 5.10..7.3):
# type in 63:59, ~offset in 58:9.
SWP_TYPE_BITS = 5
SWP_OFFSET_SHIFT = 9 + SWP_TYPE_BITS  # SWP_OFFSET_FIRST_BIT (_PAGE_BIT_PROTNONE + 1) + TYPE_BITS
SWP_SOFT_DIRTY = RW  # _PAGE_SWP_SOFT_DIRTY (pgtable_types.h), CONFIG_MEM_SOFT_DIRTY
SWP_UFFD = US  # _PAGE_SWP_UFFD_WP, _PAGE_SWP_UFFD from 7.3 (pgtable_types.h), CONFIG_HAVE_ARCH_USERFAULTFD_WP
SWP_EXCLUSIVE = PWT  # _PAGE_SWP_EXCLUSIVE (pgtable_64_types.h), feature x86_swp_exclusive

# MAX_PHYSMEM_BITS = pgtable_l5_enabled() ? 52 : 46 (sparsemem.h, 5.10..7.3).
MAX_PHYSMEM_BITS = {False: 46, True: 52}

# Memory types of the PAT MSR encoding, and the PAT Linux programs on full-PAT CPUs:
# PAT(4, WB) | PAT(5, WP) | PAT(6, UC_MINUS) | PAT(7, WT) (arch/x86/mm/pat/memtype.c pat_init(),
# 5.10/6.1; PAT_VALUE(WB, WC, UC_MINUS, UC, WB, WP, UC_MINUS, WT) in pat_bp_init(), 6.12..7.3).
PAT_TYPES = {0: "UC", 1: "WC", 4: "WT", 5: "WP", 6: "WB", 7: "UC-"}
LINUX_PAT = ("WB", "WC", "UC-", "UC", "WB", "WP", "UC-", "WT")

# CR0.PG, CR4.PAE, CR4.LA57 (arch/x86/include/uapi/asm/processor-flags.h X86_CR0_PG,
# X86_CR4_PAE, X86_CR4_LA57), EFER.LMA (msr-index.h _EFER_LMA).
CR0_PG, CR4_PAE, CR4_LA57, EFER_LMA = 1 << 31, 1 << 5, 1 << 12, 1 << 10

# __START_KERNEL_map (page_64_types.h): where the kernel image is mapped.
START_KERNEL_MAP = 0xFFFFFFFF80000000

# PTI_PGTABLE_SWITCH_BIT = PAGE_SHIFT (pgtable.h).
PTI_PGTABLE_SWITCH = 1 << PAGE_SHIFT


def _level(name: str, hw: str, shift: int, leaf: bool) -> Level:
    return Level(name, hw, shift, 9, leaf)  # 512 entries at every level (pgtable_64_types.h)


# PGDIR_SHIFT is pgdir_shift: 39, set to 48 at boot with LA57 (arch/x86/kernel/head64.c
# pgdir_shift); P4D_SHIFT 39, PUD_SHIFT 30, PMD_SHIFT 21 (pgtable_64_types.h, 5.10..7.3).
# No 512 GiB leaves (p4d_pfn_mask).
MODE_4 = PagingMode(
    "x86_64", "4-level",
    (_level("pgd", "PML4", 39, False), _level("pud", "PDPT", 30, True),
     _level("pmd", "PD", 21, True), _level("pte", "PT", 12, True)),
    page_shift=12, va_bits=48, pa_bits=52,
)
MODE_5 = PagingMode(
    "x86_64", "5-level",
    (_level("pgd", "PML5", 48, False), _level("p4d", "PML4", 39, False),
     _level("pud", "PDPT", 30, True), _level("pmd", "PD", 21, True), _level("pte", "PT", 12, True)),
    page_shift=12, va_bits=57, pa_bits=52, options=frozenset({"la57"}),
)
MODES = (MODE_4, MODE_5)
LEAF_SIZE = {"pte": 1 << 12, "pmd": 1 << 21, "pud": 1 << 30}
LEAF_MASK = {"pte": PAGE_MASK, "pmd": PMD_MASK, "pud": PUD_MASK}


@dataclass(frozen=True)
class _Entry:
    """One value being decoded, with what its meaning depends on."""

    raw: int
    level: Level
    mode: PagingMode
    facts: KernelFacts
    phys_mask: int

    def bit(self, mask: int) -> bool:
        return bool(self.raw & mask)

    def has(self, feature: str) -> bool | None:
        """Whether a layout feature is in force; None when the release is not known."""
        return self.facts.has(feature)

    @property
    def name(self) -> str:
        return self.level.name

    @property
    def pte_pfn_mask(self) -> int:
        """PTE_PFN_MASK = PAGE_MASK & __PHYSICAL_MASK (pgtable_types.h PTE_PFN_MASK)."""
        return PAGE_MASK & self.phys_mask

    def leaf_pfn_mask(self) -> int:
        """pte_pfn / pmd_pfn_mask / pud_pfn_mask of a leaf (pgtable_types.h)."""
        return LEAF_MASK[self.name] & self.phys_mask

    def config(self, name: str) -> object | None:
        return self.facts.get(name)


def _phys_mask(facts: KernelFacts) -> int:
    value = facts.get("physical_mask")
    if isinstance(value, int) and not isinstance(value, bool):
        return value & PHYS_MASK_52
    return PHYS_MASK_52


def _bit57_name(e: _Entry, leaf: bool) -> str | None:
    """_PAGE_BIT_SOFTW4 is 58 up to 6.5 and 57 from 6.6 (x86_softw5), where it is _PAGE_DEVMAP
    on leaves until 6.17 (x86_devmap); None where the release defines no bit 57."""
    softw5 = e.has("x86_softw5")
    if softw5 is None:
        return "SW bit 57 (meaning depends on kernel version)"
    if not softw5:
        return None
    if leaf and e.has("x86_devmap"):
        return "_PAGE_DEVMAP"
    return "_PAGE_SOFTW4"


def _bit58_name(e: _Entry, leaf: bool) -> str:
    """Up to 6.5 _PAGE_SOFTW4 (_PAGE_DEVMAP on leaves); from 6.6 _PAGE_SOFTW5: _PAGE_SAVED_DIRTY on
    leaves, _PAGE_NOPTISHADOW on PGD/P4D entries from 6.13 (pgtable_types.h)."""
    if e.has("x86_softw5") is None:
        return "SW bit 58 (meaning depends on kernel version)"
    if not e.has("x86_softw5"):
        return "_PAGE_DEVMAP" if leaf and e.has("x86_devmap") else "_PAGE_SOFTW4"
    if leaf:
        return "_PAGE_SAVED_DIRTY"
    # Written with set_pgd/set_p4d by arch/x86/mm/ident_map.c ident_p4d_init()/
    # kernel_ident_mapping_init() (6.13..7.3).
    if e.name in ("pgd", "p4d") and e.has("x86_noptishadow"):
        return "_PAGE_NOPTISHADOW"
    return "_PAGE_SOFTW5"


def _uffd_name(e: _Entry, swap: bool) -> str:
    """_PAGE_UFFD_WP / _PAGE_SWP_UFFD_WP, renamed _PAGE_UFFD / _PAGE_SWP_UFFD in 7.3
    ("userfaultfd tracking" for VM_UFFD_WP and VM_UFFD_RWP; pgtable_types.h _PAGE_BIT_UFFD)."""
    base = "_PAGE_SWP_UFFD" if swap else "_PAGE_UFFD"
    return base if e.has("uffd_rwp") else base + "_WP"


def _soft_bit_names(e: _Entry, leaf: bool) -> dict[int, str]:
    """Bits 9-11: _PAGE_SPECIAL, the uffd bit, _PAGE_SOFT_DIRTY on leaves (pgtable_types.h
    _PAGE_BIT_SOFTW1..3); from 6.15 bit 11 is _PAGE_KERNEL_4K on kernel mappings."""
    if not leaf:
        return {9: "_PAGE_SOFTW1", 10: "_PAGE_SOFTW2", 11: "_PAGE_SOFTW3"}
    uffd = e.config("CONFIG_HAVE_ARCH_USERFAULTFD_WP") is not False
    soft_dirty = e.config("CONFIG_MEM_SOFT_DIRTY") is not False
    names = {9: "_PAGE_SPECIAL", 10: _uffd_name(e, swap=False) if uffd else "_PAGE_SOFTW2"}
    if e.has("x86_kernel_4k") is not False and not e.bit(US):
        names[11] = "_PAGE_SOFTW3"  # _PAGE_SOFT_DIRTY or _PAGE_KERNEL_4K: see _hw_flags
    else:
        names[11] = "_PAGE_SOFT_DIRTY" if soft_dirty else "_PAGE_SOFTW3"
    return names


def _hw_flags(e: _Entry, leaf: bool) -> tuple[tuple[str, ...], list[str]]:
    """Names of the set bits of a present/PROT_NONE/table entry, and notes on undefined bits."""
    names = dict(LOW_NAMES)
    names[7] = "_PAGE_PAT" if e.name == "pte" else "_PAGE_PSE"
    names[8] = "_PAGE_GLOBAL" if e.bit(P) else "_PAGE_PROTNONE"
    names.update(_soft_bit_names(e, leaf))
    if leaf and e.name != "pte" and not _pte_style_inverted(e):
        names[12] = "_PAGE_PAT_LARGE"
    b57 = _bit57_name(e, leaf)
    if b57:
        names[57] = b57
    names[58] = _bit58_name(e, leaf)
    names[63] = "_PAGE_NX"
    flags = tuple(names[b] for b in sorted(names) if e.raw >> b & 1)
    undefined = [b for b in UNDEFINED_HIGH_BITS if e.raw >> b & 1]
    if b57 is None and e.bit(BIT57):
        undefined.append(57)
    notes = []
    if undefined:
        notes.append(f"bits {', '.join(map(str, undefined))} set: no kernel definition in this version")
    kernel_4k = e.has("x86_kernel_4k")
    if leaf and kernel_4k is not False and e.bit(SOFTW3) and not e.bit(US):
        since = "" if kernel_4k else " since 6.15 (the kernel's release is not known)"
        notes.append(f"bit 11 is _PAGE_SOFT_DIRTY on user mappings and _PAGE_KERNEL_4K on kernel mappings"
                     f"{since} (pgtable_types.h _PAGE_BIT_KERNEL_4K); _PAGE_USER is clear, so either is possible")
    if not leaf and e.bit(BIT58) and e.name in ("pgd", "p4d") and e.has("x86_softw5") and \
            not e.has("x86_noptishadow"):
        notes.append("bit 58 is _PAGE_NOPTISHADOW in 6.6.y/6.12.y stable kernels that carry the 6.13 "
                     "commit d0ceea662d45 as a backport (Debian 6.12 does)")
    return flags, notes


def _pte_style_inverted(e: _Entry) -> bool:
    """A P=0 huge leaf whose PFN was inverted over PTE_PFN_MASK (bits 51:12), not over the
    PMD/PUD leaf mask: hugetlb's huge_pte_modify() is pte_modify(), whose flip_protnone_guard
    uses PTE_PFN_MASK (pgtable.h pte_modify(), 5.10..7.3).  Bits 20:13 (PMD) or 29:13 (PUD) then read all
    ones, and bit 12 holds the inverted _PAGE_PAT_LARGE."""
    if e.name == "pte" or e.bit(P):
        return False
    low = (LEAF_SIZE[e.name] - 1) & ~((1 << 13) - 1)
    return e.raw & low == low


def _outside_phys(e: _Entry, addr_mask: int) -> list[tuple[str, str]]:
    """Address-field bits the physical_mask excludes (SME C-bit, TDX shared bit)."""
    stray = e.raw & addr_mask & ~e.phys_mask
    return [("outside physical_mask", f"{stray:#x}")] if stray else []


def _cache(e: _Entry, huge: bool) -> str:
    """Cache type from the PAT slot PAT:PCD:PWT (PAT is bit 12 on huge leaves, bit 7 on 4 KiB)."""
    pat = e.bit(PAT_LARGE if huge else PAT_4K) != (huge and _pte_style_inverted(e))
    slot = (pat << 2) | (e.bit(PCD) << 1) | e.bit(PWT)
    msr = e.facts.get("IA32_PAT")
    if isinstance(msr, int) and not isinstance(msr, bool):
        code = (msr >> (8 * slot)) & 0xFF
        return f"{PAT_TYPES.get(code, f'reserved type {code}')} (PAT slot {slot}, IA32_PAT)"
    return f"{LINUX_PAT[slot]} (PAT slot {slot} in Linux's full-PAT setting; give IA32_PAT to confirm)"


def _dirty(e: _Entry, notes: list[str]) -> bool:
    """pte_dirty: D up to 6.5, D|SAVED_DIRTY (_PAGE_DIRTY_BITS) from 6.6 (pgtable.h pte_dirty())."""
    saved = e.has("x86_saved_dirty")
    if saved is None:
        if e.bit(BIT58):
            notes.append("bit 58 is _PAGE_DEVMAP up to 6.5 but _PAGE_SAVED_DIRTY from 6.6 (then the "
                         "leaf is dirty); dirty here is D alone")
        return e.bit(D)
    return e.bit(D) or (saved and e.bit(BIT58))


def _write(e: _Entry, notes: list[str]) -> bool:
    """pte_write/pmd_write: RW, or from 6.6 shadow stack (RW=0, D=1: pgtable.h pte_shstk());
    pud_write is RW only."""
    if e.bit(RW) or not e.bit(D) or e.name == "pud" or e.has("x86_saved_dirty") is False:
        return e.bit(RW)
    since = "" if e.has("x86_saved_dirty") else " and the kernel is 6.6 or later"
    shstk = e.facts.get("X86_FEATURE_SHSTK")
    if shstk and not since:
        notes.append("Write=0,Dirty=1: shadow-stack page, pte_write() is true (pgtable.h pte_shstk())")
        return True
    if shstk is None or since:
        notes.append(f"Write=0,Dirty=1: a shadow-stack page (then writable) if X86_FEATURE_SHSTK is "
                     f"enabled{since} (pgtable.h pte_shstk()); not known here")
    return False


def _leaf(e: _Entry, *, protnone: bool, notes: list[str]) -> Decoded:
    """A present leaf (4K PTE, PSE PMD/PUD), PROT_NONE included."""
    huge = e.name != "pte"
    flags, flag_notes = _hw_flags(e, leaf=True)
    notes = notes + flag_notes
    inverted = e.raw != 0 and not e.bit(P)  # __pte_needs_invert (pgtable-invert.h)
    value = e.raw ^ MASK64 if inverted else e.raw
    pfn = (value & e.leaf_pfn_mask()) >> PAGE_SHIFT
    if inverted:
        notes.append("PFN stored inverted while P=0 (L1TF: pfn_pte/pte_pfn protnone_mask, pgtable-invert.h)")
    if _pte_style_inverted(e):
        notes.append("PFN inverted over bits 51:12 as hugetlb's pte_modify() does: bits 20/29:13 read "
                     "all ones and bit 12 is the inverted _PAGE_PAT_LARGE")
    elif huge and e.raw & (LEAF_SIZE[e.name] - 1) & ~((1 << 13) - 1):
        reserved = e.raw & (LEAF_SIZE[e.name] - 1) & ~((1 << 13) - 1)
        notes.append(f"reserved bits {reserved:#x} set in a huge leaf (outside pmd/pud_pfn_mask)")
    fields = [("cache", _cache(e, huge))]
    pkey = (e.raw & PKEY_MASK) >> PKEY_SHIFT
    if pkey:
        fields.append(("pkey", str(pkey)))  # pte_flags_pkey (pgtable.h)
    fields += _outside_phys(e, LEAF_MASK[e.name] & PHYS_MASK_52)
    access = Access(
        read=not protnone, write=not protnone and _write(e, notes), exec=not protnone and not e.bit(NX),
        user=e.bit(US), young=e.bit(A), dirty=_dirty(e, notes),
    )
    return Decoded(
        e.raw, e.name, Kind.PRESENT, size=LEAF_SIZE[e.name], pfn=pfn, pfn_space="phys",
        flags=flags, fields=tuple(fields), access=access, notes=tuple(notes),
    )


def _table(e: _Entry) -> Decoded:
    """A present non-leaf entry: next_table = value & PTE_PFN_MASK."""
    flags, notes = _hw_flags(e, leaf=False)
    if e.raw & PKEY_MASK:
        notes.append("bits 62:59 set: protection keys apply to leaves only; ignored in a table entry")
    if e.bit(BIT58) and e.has("x86_noptishadow") and e.name == "pgd":
        notes.append("_PAGE_NOPTISHADOW: __pti_set_user_pgtbl() does not copy it to the PTI user PGD "
                     "(arch/x86/mm/pti.c __pti_set_user_pgtbl())")
    return Decoded(
        e.raw, e.name, Kind.TABLE, size=e.level.span, next_table=e.raw & e.pte_pfn_mask,
        flags=flags, fields=tuple(_outside_phys(e, PAGE_MASK & PHYS_MASK_52)), notes=tuple(notes),
    )


def _swp_pfn_bits(mode: PagingMode, facts: KernelFacts) -> int:
    """SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT (include/linux/swapops.h SWP_PFN_BITS)."""
    known = facts.get("MAX_PHYSMEM_BITS")
    if isinstance(known, int) and not isinstance(known, bool):
        return known - PAGE_SHIFT
    return MAX_PHYSMEM_BITS["la57" in mode.options] - PAGE_SHIFT


def _swp_flag(e: _Entry, mask: int, name: str, config: str | None, notes: list[str]) -> list[str]:
    """The kernel name of a set swap flag bit, if the config defines it."""
    if not e.bit(mask):
        return []
    if config is not None and e.config(config) is False:
        notes.append(f"bit {mask.bit_length() - 1} set but {config} is off: {name} is 0 in this kernel")
        return []
    return [name]


def _softleaf(e: _Entry) -> Decoded:
    """A non-present, non-none PTE/PMD (or hugetlb PUD): the swap layout of pgtable_64.h
    __swp_entry() (5.10..7.3)."""
    notes: list[str] = []
    flags = _swp_flag(e, SWP_SOFT_DIRTY, "_PAGE_SWP_SOFT_DIRTY", "CONFIG_MEM_SOFT_DIRTY", notes)
    flags += _swp_flag(e, SWP_UFFD, _uffd_name(e, swap=True), "CONFIG_HAVE_ARCH_USERFAULTFD_WP", notes)
    stray = [b for b in (4, 7) if e.raw >> b & 1]
    exclusive = e.has("x86_swp_exclusive")
    if e.name == "pmd":
        if e.bit(SWP_EXCLUSIVE):
            notes.append("bit 3 set: PMD swap entries have no exclusive bit (softleaf_from_pmd keeps it; "
                         "it lies below the offset)")
    elif exclusive is False:
        stray.insert(0, 3)  # _PAGE_SWP_EXCLUSIVE came with 5.19
    else:
        flags += _swp_flag(e, SWP_EXCLUSIVE, "_PAGE_SWP_EXCLUSIVE", None, notes)
        if exclusive is None and e.bit(SWP_EXCLUSIVE):
            notes.append("bit 3 is _PAGE_SWP_EXCLUSIVE from 5.19 (the kernel's release is not known); "
                         "no kernel sets it before")
    if stray:
        notes.append(f"bit(s) {', '.join(map(str, stray))} set: __swp_entry never sets them"
                     + (" (no _PAGE_SWP_EXCLUSIVE before 5.19)" if 3 in stray else ""))
    if e.raw & KNL_ERRATUM_MASK:
        notes.append("A/D set on a non-present entry (Knights Landing erratum); ignored")
    notes.append("swap offset stored inverted (L1TF: __swp_entry/__swp_offset, pgtable_64.h)")
    if e.name == "pud":
        notes.append("a non-present PUD is a hugetlb 1 GiB entry: huge_ptep_get() reads it as a pte_t "
                     "(pud_present() itself is false)")
    swp_type = e.raw >> (64 - SWP_TYPE_BITS)
    offset = ((~e.raw << SWP_TYPE_BITS) & MASK64) >> SWP_OFFSET_SHIFT
    leaf = Softleaf(swp_type, offset, tuple(flags))
    d = decode_softleaf(e.raw, e.name, LEAF_SIZE[e.name], leaf, e.facts,
                        _swp_pfn_bits(e.mode, e.facts), tuple(flags))
    kind_notes = [n + ", unless this is a hugetlb PMD (also hwpoison entries and PTE markers)"
                  if n.startswith("not a kind the kernel writes at PMD level") else n for n in d.notes]
    return replace(d, notes=tuple(kind_notes + notes))


def _unknown(e: _Entry, reason: str, fields: tuple[tuple[str, str], ...] = ()) -> Decoded:
    flags, notes = _hw_flags(e, leaf=False)
    return Decoded(e.raw, e.name, Kind.UNKNOWN, size=e.level.span, flags=flags, fields=fields,
                   notes=tuple(notes), reason=reason)


def _is_none(e: _Entry, depth: int) -> bool:
    """pte/pmd/pud/p4d_none ignore stray A/D (KNL erratum); 5-level pgd_none is exact
    (pgtable.h pgd_none())."""
    if depth == 0 and "la57" in e.mode.options:
        return e.raw == 0
    return e.raw & ~KNL_ERRATUM_MASK == 0


def _decode_top(e: _Entry) -> Decoded:
    """PGD/P4D: tables or nothing (no 512 GiB pages: p4d_pfn_mask, pgtable_types.h)."""
    if not e.bit(P):
        if e.raw & ~KNL_ERRATUM_MASK == 0:
            return _unknown(e, "only A/D set in a 5-level PGD entry: pgd_none() is exact there "
                               "(pgtable.h pgd_none()) and pgd_bad() is true")
        return _unknown(e, f"non-present {e.name} entry: the kernel writes no software entries above PUD level")
    if e.bit(PSE):
        return _unknown(e, f"PS (bit 7) set in a {e.level.hw} entry: reserved (no 512 GiB pages); "
                           f"{e.name}_bad() is true")
    return _table(e)


def _decode_pud(e: _Entry) -> Decoded:
    """PUD: pud_present is P only (pgtable.h pud_present()); hugetlb 1 GiB entries read as pte_t."""
    if e.bit(P):
        return _leaf(e, protnone=False, notes=[]) if e.bit(PSE) else _table(e)
    if e.bit(PROTNONE):
        if not e.bit(PSE):
            return _unknown(e, "_PAGE_PROTNONE without PSE in a PUD: hugetlb PROT_NONE keeps PSE; "
                               "the kernel does not write this")
        return _leaf(e, protnone=True, notes=[
            "PROT_NONE hugetlb 1 GiB leaf: present to huge_ptep_get()/pte_present(), not valid to "
            "the MMU (pud_present() is false)"])
    if e.bit(PSE):
        inverted_pfn = ((e.raw ^ MASK64) & e.leaf_pfn_mask()) >> PAGE_SHIFT
        return _unknown(
            e, "P=0 with PSE in a PUD: left only transiently by pud_mkinvalid() under the PUD lock "
               "(pudp_invalidate, pgtable.h pud_mkinvalid(), 6.12..7.3); pud_present() is false",
            fields=(("pfn if an invalidated leaf", f"{inverted_pfn:#x}"),),
        )
    return _softleaf(e)


def _protnone_notes(e: _Entry, accessor: str) -> list[str]:
    """What a PROT_NONE leaf is; from 7.3 one with the uffd bit may be userfaultfd
    read-write protection (mm/memory.c do_uffd_rwp(), include/linux/userfaultfd_k.h
    userfaultfd_rwp())."""
    notes = [f"PROT_NONE: present to the kernel ({accessor}), not valid to the MMU"]
    if e.bit(1 << 10) and e.has("uffd_rwp") and e.config("CONFIG_HAVE_ARCH_USERFAULTFD_WP") is not False:
        notes.append("PROT_NONE with _PAGE_UFFD: userfaultfd read-write protection if the VMA has "
                     "VM_UFFD_RWP (do_uffd_rwp), else a PROT_NONE/NUMA-hinting entry that keeps the bit")
    return notes


def _decode_pmd(e: _Entry) -> Decoded:
    """PMD: pmd_present = P|PROTNONE|PSE (pgtable.h pmd_present(), 5.10..7.3)."""
    if e.bit(P):
        return _leaf(e, protnone=False, notes=[]) if e.bit(PSE) else _table(e)
    if e.bit(PROTNONE):
        if not e.bit(PSE):
            return _unknown(e, "_PAGE_PROTNONE without PSE in a PMD: pmd_present() is true but it is "
                               "neither a huge leaf nor a table the kernel writes")
        return _leaf(e, protnone=True, notes=_protnone_notes(e, "pmd_present"))
    if e.bit(PSE):
        return _leaf(e, protnone=False, notes=[
            "P=0 with PSE: a huge leaf invalidated by pmd_mkinvalid() (pgtable.h pmd_mkinvalid()) while "
            "it is changed or split; pmd_present() is still true, the MMU does not use it"])
    return _softleaf(e)


def _decode_pte(e: _Entry) -> Decoded:
    """PTE: pte_present = P|PROTNONE (pgtable.h pte_present(), 5.10..7.3)."""
    if e.bit(P):
        return _leaf(e, protnone=False, notes=[])
    if e.bit(PROTNONE):
        return _leaf(e, protnone=True, notes=_protnone_notes(e, "pte_present"))
    return _softleaf(e)


DECODERS = {"pgd": _decode_top, "p4d": _decode_top, "pud": _decode_pud, "pmd": _decode_pmd, "pte": _decode_pte}


# ---------------------------------------------------------------- rules `ptinspect validate` checks

# Flag pairs whose one-for-the-other exchange is one kernel operation, named "A → B" by diff:
# pte_wrprotect()/pte_mkwrite() move _PAGE_DIRTY to _PAGE_SAVED_DIRTY and back (mksaveddirty_shift,
# clear_saveddirty_shift; pgtable.h, 6.6..7.3).
FLAG_MOVES = (("_PAGE_DIRTY", "_PAGE_SAVED_DIRTY"),)


# The one kernel page user mode may read: the legacy vsyscall page at VSYSCALL_ADDR
# (-10UL << 20, arch/x86/include/uapi/asm/vsyscall.h VSYSCALL_ADDR), mapped read-only and NX
# with __PAGE_KERNEL_VVAR (_USR; pgtable_types.h) by map_vsyscall() under vsyscall=emulate
# (arch/x86/entry/vsyscall/vsyscall_64.c map_vsyscall(), 7.2).
USER_KERNEL_PAGES = frozenset({0xFFFFFFFFFF600000})


def output_bits(mode: PagingMode, facts: KernelFacts) -> int:
    """The CPU's physical-address width: the fact "phys_addr_bits" (boot_cpu_data.x86_phys_bits,
    CPUID 0x80000008 EAX[7:0]; arch/x86/kernel/cpu/common.c get_cpu_address_sizes(), 7.2) when known, else 52
    (__PHYSICAL_MASK_SHIFT).  Address bits from it up to 51 are reserved (SDM Vol. 3A 4.5)."""
    bits = facts.get("phys_addr_bits")
    return bits if isinstance(bits, int) and not isinstance(bits, bool) and 0 < bits <= 52 else mode.pa_bits


def reserved_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
    """Bits set in a present leaf or a table entry that no kernel writes there: 52-56 (no
    #define in any release 5.10..7.3, pgtable_types.h _PAGE_BIT_*), 57 up to 6.5 (_PAGE_BIT_SOFTW4
    was 58 before x86_softw5), and the protection-key bits 62:59 in a table entry (keys apply
    to leaves only; _KERNPG_TABLE/_PAGE_TABLE have none, pgtable_types.h)."""
    mask = sum(1 << b for b in UNDEFINED_HIGH_BITS)
    if facts.has("x86_softw5") is False:
        mask |= BIT57
    if table:
        mask |= PKEY_MASK
    return raw & mask


def misaligned_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
    """Address bits below a huge leaf's size that are set: bits 20:13 of a 2 MiB and 29:13 of a
    1 GiB leaf are reserved (SDM Vol. 3A tables 4-17/4-18; pmd_pfn_mask/pud_pfn_mask drop them,
    pgtable_types.h pmd_pfn_mask()/pud_pfn_mask()).  A P=0 leaf inverted as hugetlb's pte_modify() does has them all
    set (see _pte_style_inverted); 4 KiB leaves have no such bits."""
    level = mode.levels[depth]
    if level.name not in ("pmd", "pud"):
        return 0
    e = _Entry(raw, level, mode, facts, _phys_mask(facts))
    if _pte_style_inverted(e):
        return 0
    return raw & (LEAF_SIZE[level.name] - 1) & ~((1 << 13) - 1)


# What the MMU itself writes into an entry (not a store a watchpoint sees): (bits it sets, bits it
# clears, bits a clear needs).  arch/x86/include/asm/pgtable_types.h (7.2): _PAGE_BIT_ACCESSED 5
# "was accessed (raised by CPU)", _PAGE_BIT_DIRTY 6 "was written to (raised by CPU)".
HW_PTE_UPDATES = (A | D, 0, 0)


def _is_call(before: bytes) -> bool:
    """Whether the 5 bytes before a return address end in a call: E8 rel32 (direct, retpoline
    thunks) or FF /2 with a register (FF D0+r, 41 FF D0+r); `call *[mem]` forms are not in the
    kernel's text after retpolines."""
    return before[0] == 0xE8 or (before[3] == 0xFF and 0xD0 <= before[4] <= 0xD7)


class X86_64Arch(ArchDefaults):
    """The x86-64 Arch implementation (module-level ARCH)."""

    name = "x86_64"
    elf_machine, elf_machine_name = 62, "EM_X86_64"  # include/uapi/linux/elf-em.h
    uname_machines = ("x86_64",)  # arch/x86/Makefile UTS_MACHINE := x86_64 (CONFIG_X86_64)
    # VMCOREINFO_SYMBOL(init_top_pgt) (arch/x86/kernel/crash_core_64.c 6.1, vmcore_info_64.c 6.12/7.2)
    vmcoreinfo_key = "SYMBOL(init_top_pgt)"
    qemu_arch = "x86_64"
    gdb_arch = "i386:x86-64"
    drgn_arch = "X86_64"
    # x86_cpu_dump_state() prints "CR0=... CR3=... CR4=..." and "EFER=..." (QEMU 7.2 target/i386/cpu-dump.c)
    hmp_registers = r"\b(CR0|CR3|CR4|EFER)=([0-9a-f]+)\b"
    # `current` is the per-cpu current_task (pcpu_hot.current_task in 6.2..6.14), not a register
    # (arch/x86/include/asm/current.h, 6.12/7.2)
    current_registers = ()
    percpu_register = "gs_base"  # this_cpu_read() is %gs-relative (arch/x86/include/asm/percpu.h, 6.12/7.2)
    pc_registers = ("rip",)
    # Debian's kernels unwind with ORC tables (CONFIG_UNWINDER_ORC, 5.10..7.3), read from the vmlinux
    # (archs/x86_orc.py, inspector/orc.py); where they cannot be used, the stack is scanned for return
    # addresses, each checked to follow a call (what unwind_guess.c does not check), and called a guess.
    unwind = OrcUnwind(StackScan("rsp", 5, _is_call, "ORC tables not usable"),
                       "arch/x86/kernel/unwind_orc.c unwind_next_frame()")
    kernel_dir, gnu_triplet, debian_arch = "x86", "x86_64-linux-gnu", "amd64"
    user_kernel_pages = USER_KERNEL_PAGES
    flag_moves = FLAG_MOVES
    features: tuple[Feature, ...] = FEATURES
    hw_pte_updates = HW_PTE_UPDATES
    default_mode = "4-level"  # decode's default: the mode without LA57
    split_roots = False  # CR3's PGD holds both halves
    kaslr_anchor = None
    gdb_registers = ("cr3", "cr0", "cr4", "efer")
    kernel_va_bit = 63  # the kernel lives in the canonical upper half (Documentation/arch/x86/x86_64/mm.rst)
    # VMCOREINFO_SYMBOL(init_top_pgt) (arch/x86/kernel/crash_core_64.c arch_crash_save_vmcoreinfo()
    # in 5.10/6.1, vmcore_info_64.c arch_crash_save_vmcoreinfo() in 6.12..7.3): the kernel PGD
    kernel_root_symbol = "init_top_pgt"
    # __START_KERNEL_map .. + KERNEL_IMAGE_SIZE (1 GiB with RANDOMIZE_BASE): the kernel image
    # mapping; its first present page is _text (page_64_types.h __START_KERNEL_map, KERNEL_IMAGE_SIZE).
    kernel_text_region = (0xFFFFFFFF80000000, 0xFFFFFFFFC0000000)

    def modes(self) -> Sequence[PagingMode]:
        return MODES

    def mode(self, name: str) -> PagingMode:
        return find_mode(MODES, name)

    def mode_from_registers(self, regs: Mapping[str, int]) -> PagingMode:
        """4-level or 5-level from CR4.LA57; CR0.PG and EFER.LMA are checked when given."""
        if "cr4" not in regs:
            raise ValueError("CR4 is needed to choose between 4-level and 5-level paging (CR4.LA57, bit 12)")
        cr4 = regs["cr4"]
        cr0 = regs.get("cr0")
        if cr0 is not None and not cr0 & CR0_PG:
            raise ValueError(f"CR0.PG (bit 31) is clear in CR0={cr0:#x}: paging is disabled")
        efer = regs.get("efer")
        if efer is not None and not efer & EFER_LMA:
            raise ValueError(f"EFER.LMA (bit 10) is clear in EFER={efer:#x}: the CPU is not in long "
                             "mode, so it uses neither 4-level nor 5-level paging")
        if not cr4 & CR4_PAE:
            raise ValueError(f"CR4.PAE (bit 5) is clear in CR4={cr4:#x}: not 64-bit (4/5-level) paging")
        return MODE_5 if cr4 & CR4_LA57 else MODE_4

    def mode_from_vmcoreinfo(self, numbers: Mapping[str, str], upper: bool) -> PagingMode:
        """NUMBER(pgtable_l5_enabled), 0 or 1 (arch/x86/kernel/crash_core_64.c in 5.10/6.1,
        vmcore_info_64.c in 6.12..7.3, arch_crash_save_vmcoreinfo()); one root translates both halves."""
        return MODE_5 if vmcoreinfo_int(numbers, "NUMBER(pgtable_l5_enabled)") else MODE_4

    def kernel_image_pa(self, numbers: Mapping[str, str], va: int) -> int:
        """__phys_addr_symbol(): va - __START_KERNEL_map + phys_base (page_64.h __phys_addr_symbol());
        NUMBER(phys_base) is in VMCOREINFO (arch_crash_save_vmcoreinfo())."""
        if not START_KERNEL_MAP <= va <= MASK64:
            raise ValueError(f"{va:#x} is not a kernel-image address (below __START_KERNEL_map)")
        return (va - START_KERNEL_MAP + vmcoreinfo_int(numbers, "NUMBER(phys_base)")) & MASK64

    def canonical(self, mode: PagingMode, va: int, upper: bool) -> int:
        """Sign-extend from bit va_bits-1: one root translates both halves, so the
        index bits decide the half and `upper` is not needed."""
        low = va & ((1 << mode.va_bits) - 1)
        return low | (MASK64 & ~((1 << mode.va_bits) - 1)) if low >> (mode.va_bits - 1) else low

    def root_candidates(self, regs: Mapping[str, int], upper: bool) -> tuple[int, ...]:
        """The PGD CR3 points at (bits 51:12; PCID and NOFLUSH dropped), and for the
        kernel half, when bit 12 is set, the 8 KiB-aligned kernel copy it may be the
        PTI user half of: with PTI active the PGD is an order-1 pair and the user copy
        has bit 12 set (pgalloc.h pgd_allocation_order(), 7.2); without PTI,
        bit 12 is just part of the address.  The session keeps the one that proves
        to map the kernel."""
        if "cr3" not in regs:
            raise ValueError("CR3 is needed to find the page-table root")
        root = regs["cr3"] & PAGE_MASK & ((1 << 52) - 1)  # __PHYSICAL_MASK_SHIFT 52
        if upper and root & PTI_PGTABLE_SWITCH:
            return (root, root & ~PTI_PGTABLE_SWITCH)
        return (root,)

    def decode(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
        if not 0 <= depth < len(mode.levels):
            return Decoded(raw, f"depth {depth}", Kind.UNKNOWN,
                           reason=f"depth {depth} is outside {mode.name} ({len(mode.levels)} levels)")
        level = mode.levels[depth]
        if not 0 <= raw <= MASK64:
            return Decoded(raw, level.name, Kind.UNKNOWN, reason="not a 64-bit value")
        e = _Entry(raw, level, mode, facts, _phys_mask(facts))
        if _is_none(e, depth):
            return self._none(e)
        return DECODERS[level.name](e)

    @staticmethod
    def _none(e: _Entry) -> Decoded:
        flags = tuple(LOW_NAMES[b] for b in (5, 6) if e.raw >> b & 1)
        notes = ("only A/D set: none to the kernel (_PAGE_KNL_ERRATUM_MASK, Knights Landing erratum; "
                 "pgtable_types.h _PAGE_KNL_ERRATUM_MASK)",) if flags else ()
        return Decoded(e.raw, e.name, Kind.NONE, size=e.level.span, flags=flags, notes=notes)

    def kernel_view(
        self, block: Sequence[int], index: int, depth: int, mode: PagingMode, facts: KernelFacts
    ) -> int:
        """x86 has no contiguous-block bit: ptep_get() is the entry itself."""
        return block[index]

    def output_bits(self, mode: PagingMode, facts: KernelFacts) -> int:
        return output_bits(mode, facts)

    def reserved_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
        return reserved_bits(raw, depth, mode, facts, table)

    def misaligned_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
        return misaligned_bits(raw, depth, mode, facts)

    def wx_access(self, access: Access, tables: Sequence[int]) -> Access:
        return wx_access(access, tables)

    def swp_pfn_bits(self, mode: PagingMode, facts: KernelFacts) -> int:
        """SWP_PFN_BITS for this mode (a MAX_PHYSMEM_BITS fact overrides 46/52)."""
        return _swp_pfn_bits(mode, facts)

    @staticmethod
    def user_pgd(kernel_pgd_pa: int) -> int:
        """The PTI user PGD paired with a kernel PGD: the kernel one is the first 4 KiB of an
        8 KiB-aligned order-1 allocation, the user one the second (kernel_to_user_pgdp sets
        PTI_PGTABLE_SWITCH_BIT = PAGE_SHIFT, pgtable.h kernel_to_user_pgdp()).
        Only meaningful when PTI is active."""
        if kernel_pgd_pa & PTI_PGTABLE_SWITCH:
            raise ValueError(f"{kernel_pgd_pa:#x} has bit 12 set: not a PTI kernel PGD (8 KiB-aligned)")
        return kernel_pgd_pa | PTI_PGTABLE_SWITCH


ARCH: Arch = X86_64Arch()


def wx_access(access: Access, tables: Sequence[int]) -> Access:
    """A kernel leaf's access as the kernel's own W^X check sees it: R/W of every table entry on
    the path must allow writes, XD in any of them forbids execution (Intel SDM vol. 3 4.6.1;
    arch/x86/mm/dump_pagetables.c effective_prot(), note_wx(), 7.2)."""
    rw = all(t & RW for t in tables)
    nx = any(t & NX for t in tables)
    if rw and not nx:
        return access
    return replace(access, write=access.write and rw, exec=access.exec and not nx)

