"""riscv64 decoding against the kernel's own encodings.

Expected values come from encode-vectors.txt (compiled from the kernel macros), from the
5.10/7.3 vectors below (the headers' own #defines of __swp_entry/__swp_type/__swp_offset,
_PAGE_* and PAGE_NONE compiled with gcc), or are derived by hand from the headers cited beside
them (paths under arch/riscv/include/asm/, with the release).  The MODEL
(inspector/model/riscv64.py) is checked against the same values and then compared with the
decoder on random encodings over releases 5.10..7.3.
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.riscv64 import ARCH, root_from_registers
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.model.base import Prot, SwpFields
from ptinspect.inspector.model.riscv64 import MODEL
from tests.vectors import encode_vectors

SV39, SV48, SV57 = ARCH.mode("sv39"), ARCH.mode("sv48"), ARCH.mode("sv57")
PTE48, PMD48, PUD48 = 3, 2, 1  # depths in Sv48
ALL_ON = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True}
RSW_ON = {"svrsw60t59b": True, "CONFIG_MEM_SOFT_DIRTY": True, "CONFIG_HAVE_ARCH_USERFAULTFD_WP": True}


def L(release):
    return release_layout(release, "riscv64")


def facts(release, **values):
    layout = None if release is None else L(release)
    return KernelFacts(layout=layout, release=release, facts={k: Fact(v, "test") for k, v in values.items()})


def full(release, **more):
    """A release with every type-space option on, migration A/D kept and THP on; `more` overrides."""
    return facts(release, **{**ALL_ON, "swap_migration_ad_supported": True, "CONFIG_TRANSPARENT_HUGEPAGE": True,
                             **more})


# ---------------------------------------------------------------- paging modes, satp, canonical


@pytest.mark.parametrize(
    "mode, names, hw, shifts, leaves, va_bits",
    [  # ENCODINGS §4.4; pgtable-64.h:16-18 PGDIR_SHIFT_L3/L4/L5 = 30/39/48, PUD 30, PMD 21
        (SV39, ("pgd", "pmd", "pte"), ("VPN[2]", "VPN[1]", "VPN[0]"), (30, 21, 12), (True, True, True), 39),
        (SV48, ("pgd", "pud", "pmd", "pte"), ("VPN[3]", "VPN[2]", "VPN[1]", "VPN[0]"), (39, 30, 21, 12),
         (False, True, True, True), 48),
        (SV57, ("pgd", "p4d", "pud", "pmd", "pte"), ("VPN[4]", "VPN[3]", "VPN[2]", "VPN[1]", "VPN[0]"),
         (48, 39, 30, 21, 12), (False, False, True, True, True), 57),
    ],
)
def test_mode_splits(mode, names, hw, shifts, leaves, va_bits):
    assert tuple(lv.name for lv in mode.levels) == names
    assert tuple(lv.hw for lv in mode.levels) == hw
    assert tuple(lv.shift for lv in mode.levels) == shifts
    assert tuple(lv.leaf for lv in mode.levels) == leaves
    assert all(lv.entries == 512 for lv in mode.levels)
    assert (mode.va_bits, mode.pa_bits, mode.page_shift) == (va_bits, 56, 12)


def test_mode_by_name():
    assert [m.name for m in ARCH.modes()] == ["sv39", "sv48", "sv57"]
    with pytest.raises(ValueError, match="sv39"):
        ARCH.mode("sv32")


@pytest.mark.parametrize("satp, name", [  # csr.h SATP_MODE_39/48/57 = 8/9/10 << 60
    (0x8000000000080200, "sv39"), (0x9000000000080200, "sv48"), (0xA000000000080200, "sv57"),
])
def test_satp_mode_and_root(satp, name):
    assert ARCH.mode_from_registers({"satp": satp}).name == name
    assert root_from_registers({"satp": satp}) == 0x80200000


def test_satp_root_ignores_asid():
    # satp: MODE 63:60, ASID 59:44, PPN 43:0 (csr.h SATP_ASID_SHIFT 44, SATP_PPN 0xFFFFFFFFFFF)
    assert root_from_registers({"satp": 0x9000_0000_0008_0200 | 0xFFFF << 44}) == 0x80200000


@pytest.mark.parametrize("satp", [0, 0x0000000000080200, 0xB000000000080200, 0x1000000000080200])
def test_satp_bare_or_reserved(satp):
    with pytest.raises(ValueError):
        ARCH.mode_from_registers({"satp": satp})


@pytest.mark.parametrize("mode, va, full_va", [  # priv spec: bits 63..VA_BITS equal bit VA_BITS-1
    (SV39, 1 << 38, 0xFFFFFFC000000000), (SV48, 1 << 47, 0xFFFF800000000000),
    (SV57, 1 << 56, 0xFF00000000000000), (SV48, 0x7FFFFFFFF000, 0x7FFFFFFFF000),
])
def test_canonical(mode, va, full_va):
    assert ARCH.canonical(mode, va, upper=va >> (mode.va_bits - 1) == 1) == full_va


# ---------------------------------------------------------------- encode-vectors.txt


RISCV_VECTORS = [v for v in encode_vectors() if v.arch.startswith("riscv64")]


def families_of(arch):
    """The releases a vector's layout holds for: 6.1's swap layout is 5.17..6.2's, 6.12/7.2's is 6.3..7.3's."""
    return ("5.17", "6.1", "6.2") if arch == "riscv64 6.1" else ("6.3", "6.12", "7.2", "7.3")


def test_vectors_found():
    assert len(RISCV_VECTORS) == 14


@pytest.mark.parametrize("v", RISCV_VECTORS, ids=lambda v: f"{v.arch}-{v.pte:#x}")
def test_vector_type_and_offset(v):
    for family in families_of(v.arch):
        dec = ARCH.decode(v.pte, PTE48, SV48, facts(family))
        assert (dec.softleaf.type, dec.softleaf.offset) == (v.type, v.offset)
        assert MODEL.mk_softleaf(SwpFields(v.type, v.offset), PTE48, SV48, L(family)) == v.pte
        got = MODEL.softleaf_from_pte(v.pte, PTE48, SV48, L(family))
        assert (got.type, got.offset) == (v.type, v.offset)


def test_swap_entries():
    for family, pte in (("6.1", 0x91A000), ("6.12", 0x1234000), ("7.2", 0x1234000)):  # vectors
        dec = ARCH.decode(pte, PTE48, SV48, full(family))
        assert dec.kind is Kind.SWAP and (dec.softleaf.type, dec.softleaf.offset) == (0, 0x1234)
    for family, pte in (("6.1", 0x40), ("6.12", 0x80), ("7.2", 0x80)):  # type 1, offset 0
        dec = ARCH.decode(pte, PTE48, SV48, full(family))
        assert dec.kind is Kind.SWAP and dec.softleaf.type == 1


def test_migration_write_young_dirty_7_2():
    # 7.2 MF+MIG+DP: SWP_MIGRATION_WRITE = 27; riscv A/D at offset bits 44/45 (ENCODINGS §4.6)
    dec = ARCH.decode(0x0300000012345D80, PTE48, SV48, full("7.2"))
    assert dec.kind is Kind.MIGRATION_WRITE and dec.pfn == 0x12345 and dec.pfn_space == "phys"
    assert ("young", "true") in dec.details and ("dirty", "true") in dec.details
    assert dec.softleaf.val == 0x6C00300000012345


def test_migration_ad_not_stored():
    dec = ARCH.decode(0x0300000012345D80, PTE48, SV48,
                      facts("7.2", **ALL_ON, swap_migration_ad_supported=False, CONFIG_SPARSEMEM=True))
    assert dec.kind is Kind.MIGRATION_WRITE and dec.pfn == 0x12345
    assert any("not stored" in text for _, text in dec.details)
    assert any("above the PFN" in n for n in dec.notes)


def test_swp_pfn_bits_depends_on_sparsemem():
    # MAX_PHYSMEM_BITS 56 exists only with CONFIG_SPARSEMEM (sparsemem.h:6-8); else swapops.h:38 gives 52.
    raw = 0x0300000012345D80
    unknown = ARCH.decode(raw, PTE48, SV48, facts("7.2", **ALL_ON))
    assert unknown.kind is Kind.UNKNOWN and "CONFIG_SPARSEMEM" in unknown.reason
    flat = ARCH.decode(raw, PTE48, SV48, facts("7.2", **ALL_ON, CONFIG_SPARSEMEM=False))
    assert flat.kind is Kind.MIGRATION_WRITE and flat.pfn == 0x300000012345
    sparse = ARCH.decode(raw, PTE48, SV48, facts("7.2", **ALL_ON, CONFIG_SPARSEMEM=True))
    assert sparse.pfn == 0x12345
    override = ARCH.decode(raw, PTE48, SV48, facts("7.2", **ALL_ON, MAX_PHYSMEM_BITS=48))
    assert override.pfn == 0x300000012345 & ((1 << 36) - 1)
    # An offset below bit 44 reads the same either way.
    low = ARCH.decode(0x12345D80, PTE48, SV48, facts("7.2", **ALL_ON))
    assert low.kind is Kind.MIGRATION_WRITE and low.pfn == 0x12345


@pytest.mark.parametrize("pte, kind", [
    # 7.2 MF+MIG+DP: HWPOISON 24, MIG 25/26/27, DEV_WRITE 28, DEV_READ 29, DEV_EXCL 30 (encode-vectors
    # TYPES); pte = type << 7 | pfn << 12 (pgtable.h:1179-1191), pfn 0x12345.
    (0x12345C00, Kind.HWPOISON),
    (0x12345C80, Kind.MIGRATION_READ),
    (0x12345D00, Kind.MIGRATION_READ_EXCLUSIVE),
    (0x12345D80, Kind.MIGRATION_WRITE),
    (0x12345E00, Kind.DEVICE_PRIVATE_WRITE),
    (0x12345E80, Kind.DEVICE_PRIVATE_READ),
    (0x12345F00, Kind.DEVICE_EXCLUSIVE),
])
def test_pfn_kinds_7_2(pte, kind):
    dec = ARCH.decode(pte, PTE48, SV48, full("7.2"))
    assert dec.kind is kind and dec.pfn == 0x12345
    assert dec.pfn_space == ("device" if kind.name.startswith("DEVICE_PRIVATE") else "phys")


def test_device_exclusive_6_12():
    # 6.12 MF+MIG+DP: SWP_DEVICE_EXCLUSIVE_WRITE 29, _READ 30 (encode-vectors TYPES); type << 7
    for pte, access in ((0x12345E80, "write"), (0x12345F00, "read")):
        dec = ARCH.decode(pte, PTE48, SV48, full("6.12"))
        assert dec.kind is Kind.DEVICE_EXCLUSIVE and dec.pfn == 0x12345
        assert ("type", f"SWP_DEVICE_EXCLUSIVE_{access.upper()} ({access})") in dec.details


def test_markers():
    guard = ARCH.decode(0x4F80, PTE48, SV48, full("7.2"))  # vector: PTE_MARKER_GUARD
    assert guard.kind is Kind.MARKER and guard.markers == ("guard",)
    for family in ("6.12", "7.2"):
        uffd = ARCH.decode(0x1F80, PTE48, SV48, full(family))  # vector: PTE_MARKER_UFFD_WP
        assert uffd.kind is Kind.MARKER and uffd.markers == ("uffd-wp",)
        # PTE_MARKER_POISONED = BIT(1) (swapops.h:-/430/293): 31 << 7 | 2 << 12
        poison = ARCH.decode(0x2F80, PTE48, SV48, full(family))
        assert poison.kind is Kind.MARKER and poison.markers == ("poison",)


def test_6_1_swapin_error_and_type_27():
    # 6.1 type 31 is SWP_SWAPIN_ERROR on riscv (PTE_MARKER needs HAVE_ARCH_USERFAULTFD_WP, x86 only in 6.1)
    dec = ARCH.decode(0xFC0, PTE48, SV48, full("6.1"))
    assert dec.kind is Kind.SWAPIN_ERROR and dec.pfn == 1
    # The vector's type 27 is SWP_DEVICE_WRITE in 6.1 MF+MIG+DP (encode-vectors TYPES [MF,MIG,DP,])
    dev = ARCH.decode(0x01800000091A2EC0, PTE48, SV48, full("6.1"))
    assert dev.kind is Kind.DEVICE_PRIVATE_WRITE and dev.pfn == 0x12345 and dev.pfn_space == "device"
    assert any("above the PFN" in n for n in dev.notes)
    hw = ARCH.decode(0x01800000091A2EC0, PTE48, SV48,
                     facts("6.1", CONFIG_MEMORY_FAILURE=True, CONFIG_MIGRATION=True, CONFIG_DEVICE_PRIVATE=False,
                           swap_migration_ad_supported=True))
    assert hw.kind is Kind.HWPOISON  # [MF,MIG,]: SWP_HWPOISON = 27


def test_6_1_migration_write():
    # 6.1 MF+MIG+DP: SWP_MIGRATION_WRITE = 26; pgtable.h:738-749: 26 << 6 | 0x300000012345 << 11
    dec = ARCH.decode(0x01800000091A2E80, PTE48, SV48, full("6.1"))
    assert dec.kind is Kind.MIGRATION_WRITE and dec.pfn == 0x12345
    assert ("young", "true") in dec.details and ("dirty", "true") in dec.details
    assert MODEL.mk_softleaf(SwpFields(26, 0x300000012345), PTE48, SV48, L("6.1")) == 0x01800000091A2E80


def test_swp_exclusive_and_rsw_flags():
    # _PAGE_SWP_EXCLUSIVE = _PAGE_ACCESSED, bit 6 (pgtable-bits.h:-/32/68)
    dec = ARCH.decode(0x1234040, PTE48, SV48, full("6.12"))
    assert dec.kind is Kind.SWAP and dec.softleaf.arch_flags == ("_PAGE_SWP_EXCLUSIVE",)
    assert MODEL.mk_softleaf(SwpFields(0, 0x1234, exclusive=True), PTE48, SV48, L("6.12")) == 0x1234040
    # 7.2 _PAGE_SWP_SOFT_DIRTY = bit 3, _PAGE_SWP_UFFD_WP = bit 4 with Svrsw60t59b (pgtable-bits.h:33, 51)
    on = ARCH.decode(0x1234018, PTE48, SV48, full("7.2", **RSW_ON))
    assert on.kind is Kind.SWAP and on.softleaf.arch_flags == ("_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD_WP")
    off = ARCH.decode(0x1234018, PTE48, SV48, full("7.2", svrsw60t59b=False))
    assert off.kind is Kind.SWAP and off.softleaf.arch_flags == ()
    assert any("bits 3, 4" in n for n in off.notes)
    unknown = ARCH.decode(0x1234008, PTE48, SV48, full("7.2"))
    assert unknown.kind is Kind.SWAP and "Svrsw60t59b" in unknown.softleaf.arch_flags[0]


def test_unknown_when_facts_missing():
    dec = ARCH.decode(0x12345D80, PTE48, SV48, facts("7.2"))
    assert dec.kind is Kind.UNKNOWN and "CONFIG_" in dec.reason
    norel = ARCH.decode(0x1234000, PTE48, SV48, facts(None))
    assert norel.kind is Kind.UNKNOWN and "release unknown" in norel.reason
    # PROT_NONE too: _PAGE_PROT_NONE is R before 5.17 and G after (pgtable-bits.h 5.10 / 6.1)
    assert ARCH.decode(0x48D1462, PTE48, SV48, facts(None)).kind is Kind.UNKNOWN


def test_pmd_migration_entry():
    dec = ARCH.decode(0x0300000012345D80, PMD48, SV48, full("7.2"))
    assert dec.kind is Kind.MIGRATION_WRITE and dec.level == "pmd" and dec.size == 2 << 20
    assert dec.pfn == 0x12345 and not dec.notes


def test_7_2_soft_dirty_pmd_migration_looks_present():
    # ENCODINGS §4.6: pmd_swp_mksoft_dirty sets bit 3 (= _PAGE_EXEC), which pmd_present() tests.
    dec = ARCH.decode(0x0300000012345D88, PMD48, SV48, full("7.2", **RSW_ON))
    assert dec.kind is Kind.PRESENT
    assert any("inconsistency (6.19+)" in n for n in dec.notes)
    pte = ARCH.decode(0x0300000012345D88, PTE48, SV48, full("7.2", **RSW_ON))
    assert pte.kind is Kind.MIGRATION_WRITE and "_PAGE_SWP_SOFT_DIRTY" in pte.softleaf.arch_flags


def test_hugetlb_pud_softleaf_and_above():
    dec = ARCH.decode(0x1234000, PUD48, SV48, full("7.2"))
    assert dec.kind is Kind.SWAP and dec.size == 1 << 30
    assert any("hugetlb" in n for n in dec.notes)
    above = ARCH.decode(0x1234000, 1, SV57, full("7.2"))  # Sv57 p4d
    assert above.kind is Kind.UNKNOWN and "above PUD" in above.reason


# ---------------------------------------------------------------- present entries

# pgtable.h 6.12/7.2:167-174: _PAGE_BASE = V|A|U = 0x51; PAGE_WRITE = 0x57; PAGE_NONE = G|R = 0x22;
# _PAGE_KERNEL (182-188/183-188) = R|W|V|A|D|G = 0xE7.  pfn_pte = pfn << 10 | prot (pgtable.h:330).


def test_present_4k():
    dec = ARCH.decode(0x48D1457, PTE48, SV48, full("7.2"))
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x12345 and dec.size == 4096
    assert dec.flags == ("_PAGE_PRESENT", "_PAGE_READ", "_PAGE_WRITE", "_PAGE_USER", "_PAGE_ACCESSED")
    a = dec.access
    assert (a.read, a.write, a.exec, a.user, a.young, a.dirty) == (True, True, False, True, True, False)
    assert MODEL.mk_leaf(0x12345, PTE48, SV48, Prot(), L("7.2")) == 0x48D1457


def test_present_huge():
    pmd = ARCH.decode(0x200000E7, PMD48, SV48, full("7.2"))  # pfn 0x80000, PAGE_KERNEL
    assert pmd.kind is Kind.PRESENT and pmd.pfn == 0x80000 and pmd.size == 2 << 20
    pud = ARCH.decode(0x100000E7, PUD48, SV48, full("7.2"))  # pfn 0x40000
    assert pud.kind is Kind.PRESENT and pud.pfn == 0x40000 and pud.size == 1 << 30
    sv39 = ARCH.decode(0x100000E7, 0, SV39, full("7.2"))  # Sv39's pgd is the (folded) PUD
    assert sv39.kind is Kind.PRESENT and sv39.size == 1 << 30 and not sv39.notes
    kernel = Prot(write=True, user=False, dirty=True)
    assert MODEL.mk_leaf(0x80000, PMD48, SV48, kernel, L("7.2")) == 0x200000E7


def test_misaligned_superpage_and_top_level_leaf():
    dec = ARCH.decode(0x200004E7, PMD48, SV48, full("7.2"))  # PPN 0x80001
    assert dec.pfn == 0x80000 and any("misaligned" in n for n in dec.notes)
    top = ARCH.decode(0x100000E7, 0, SV48, full("7.2"))
    assert top.kind is Kind.PRESENT and any("never maps" in n for n in top.notes)


def test_table_entries():
    dec = ARCH.decode(0x20000001, 0, SV48, full("7.2"))  # pmd_populate: pfn << 10 | _PAGE_TABLE
    assert dec.kind is Kind.TABLE and dec.next_table == 0x80000000 and dec.size == 1 << 39
    assert MODEL.mk_table(0x80000000, 0, SV48) == 0x20000001
    last = ARCH.decode(0x20000001, PTE48, SV48, full("7.2"))
    assert last.kind is Kind.UNKNOWN and "below PTE" in last.reason


def test_prot_none():
    dec = ARCH.decode(0x48D1462, PTE48, SV48, full("7.2"))  # PAGE_NONE | A, pfn 0x12345
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x12345
    assert any("PROT_NONE" in n for n in dec.notes) and "_PAGE_PROT_NONE" in dec.flags
    a = dec.access
    assert (a.read, a.write, a.exec) == (False, False, False)
    assert MODEL.mk_leaf(0x12345, PTE48, SV48, Prot(protnone=True), L("7.2")) == 0x48D1462
    pmd = ARCH.decode(0x20000062, PMD48, SV48, full("7.2"))
    assert pmd.kind is Kind.PRESENT and any("PROT_NONE" in n for n in pmd.notes)


def test_splitting_thp_pmd_is_present():
    # pmd_mkinvalid clears V|G (pgtable.h:573/669/773); with THP pmd_present tests _PAGE_LEAF too
    # (pgtable.h:193/205/207): pfn 0x80000, PAGE_WRITE|D = 0xD7 -> 0x200000D6.
    raw = 0x200000D6
    dec = ARCH.decode(raw, PMD48, SV48, full("7.2"))
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x80000
    assert any("pmd_mkinvalid" in n for n in dec.notes)
    assert MODEL.pte_present(raw, PMD48, SV48, L("7.2"))
    unknown = ARCH.decode(raw, PMD48, SV48, facts("7.2", **ALL_ON))
    assert unknown.kind is Kind.PRESENT and any("CONFIG_TRANSPARENT_HUGEPAGE unknown" in n for n in unknown.notes)
    no_thp = ARCH.decode(raw, PMD48, SV48, full("7.2", CONFIG_TRANSPARENT_HUGEPAGE=False))
    assert no_thp.kind is Kind.SWAP  # type (0xD6 >> 7) & 31 = 1
    # The same value at PTE level: pte_present tests V|G only.
    assert ARCH.decode(raw, PTE48, SV48, full("7.2")).kind is Kind.SWAP


def test_svpbmt_fields():
    # _PAGE_NOCACHE_SVPBMT bit 61, _PAGE_IO_SVPBMT bit 62 (pgtable-64.h:89-90/121-122/123-124)
    nc = ARCH.decode(0x2000_0000_048D_1457, PTE48, SV48, full("7.2"))
    assert nc.kind is Kind.PRESENT and ("PBMT", "NC (1)") in nc.fields and "_PAGE_NOCACHE_SVPBMT" in nc.flags
    io = ARCH.decode(0x4000_0000_048D_1457, PTE48, SV48, full("7.2"))
    assert ("PBMT", "IO (2)") in io.fields and "_PAGE_IO_SVPBMT" in io.flags and io.pfn == 0x12345
    rsv = ARCH.decode(0x6000_0000_048D_1457, PTE48, SV48, full("7.2"))
    assert ("PBMT", "reserved (3)") in rsv.fields and any("PBMT=3" in n for n in rsv.notes)
    assert MODEL.mk_leaf(0x12345, PTE48, SV48, Prot(memtype="nc"), L("7.2")) == 0x2000_0000_048D_1457
    assert MODEL.mk_leaf(0x12345, PTE48, SV48, Prot(memtype="io"), L("7.2")) == 0x4000_0000_048D_1457


def test_thead_memory_types():
    # 7.2 _PAGE_IO_THEAD = bits 63|60, _PAGE_PMA_THEAD = 62|61|60 (pgtable-64.h:138-140)
    raw = (1 << 63) | (1 << 60) | 0x48D2057  # PPN 0x12348: PPN[3:0] = 1000, would be NAPOT
    dec = ARCH.decode(raw, PTE48, SV48, full("7.2", thead_mae=True))
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x12348 and dec.cont is None
    assert ("T-Head MT (SO C B SH Sec)", "10010 IO") in dec.fields
    assert "_PAGE_NAPOT" not in dec.flags
    pma = ARCH.decode(0x7000_0000_048D_1457, PTE48, SV48, full("6.1", thead_mae=True))
    assert ("T-Head MT (SO C B SH Sec)", "01110 PMA") in pma.fields and not pma.notes
    std = ARCH.decode(raw, PTE48, SV48, full("7.2"))  # fact unknown: standard decode, with a note
    assert any("thead_mae" in n for n in std.notes)


def test_reserved_and_rsw_bits():
    res = ARCH.decode((1 << 54) | 0x48D1457, PTE48, SV48, full("7.2"))
    assert res.kind is Kind.PRESENT and any("reserved bits" in n for n in res.notes)
    raw = (1 << 59) | 0x48D1457
    on = ARCH.decode(raw, PTE48, SV48, full("7.2", **RSW_ON, thead_mae=False))
    assert "_PAGE_SOFT_DIRTY" in on.flags and not on.notes
    off = ARCH.decode(raw, PTE48, SV48, full("7.2", svrsw60t59b=False))
    assert ("reserved", f"{1 << 59:#x} (bits 59)") in off.fields
    unknown = ARCH.decode(raw, PTE48, SV48, full("7.2"))
    assert any(f.startswith("bit 59 (_PAGE_SOFT_DIRTY") for f in unknown.flags)
    assert any("reserved bits" in n for n in ARCH.decode(raw, PTE48, SV48, full("6.12")).notes)
    uffd = ARCH.decode((1 << 60) | 0x48D1457, PTE48, SV48, full("7.2", **RSW_ON))
    assert "_PAGE_UFFD_WP" in uffd.flags


def test_rsw_bit_9_by_family():
    raw = 0x48D1757  # PAGE_WRITE, pfn 0x12345, _PAGE_SPECIAL (8) and bit 9
    assert ARCH.decode(raw, PTE48, SV48, full("6.12")).flags[-2:] == ("_PAGE_SPECIAL", "_PAGE_DEVMAP")
    assert ARCH.decode(raw, PTE48, SV48, full("6.1")).flags[-1] == "RSW bit 9 (unused by 6.1)"
    # _PAGE_DEVMAP is 6.11 (216e04bf1e4d) .. 6.16 (removed by d438d2734170 in 6.17)
    for release, name in (("6.10", "RSW bit 9 (unused by 6.10)"), ("6.11", "_PAGE_DEVMAP"),
                          ("6.16", "_PAGE_DEVMAP"), ("6.17", "RSW bit 9 (unused by 6.17)"),
                          ("7.3", "RSW bit 9 (unused by 7.3)")):
        assert ARCH.decode(raw, PTE48, SV48, full(release)).flags[-1] == name
    assert "depends on kernel version" in ARCH.decode(raw, PTE48, SV48, facts(None)).flags[-1]


# ---------------------------------------------------------------- NAPOT

# pfn 0x12340, PAGE_WRITE|D = 0xD7: pfn_pte = 0x48D00D7; pte_mknapot(pte, 4) (pgtable.h:-/295/296)
# clears bits 13:10, sets bit 13 and _PAGE_NAPOT (bit 63): 0x80000000048D20D7.
NAPOT_PTE = 0x80000000048D20D7


@pytest.mark.parametrize("family", ["6.4", "6.12", "7.2", "7.3"])
def test_napot_block(family):
    block = MODEL.mk_block(0x12340, PTE48, SV48, Prot(dirty=True), L(family))
    assert block == [NAPOT_PTE] * 16  # set_huge_pte_at writes one value 16 times (hugetlbpage.c:246-271)
    for index in range(16):
        dec = ARCH.decode(block[index], PTE48, SV48, full(family))
        assert dec.kind is Kind.PRESENT and dec.pfn == 0x12340 and dec.size == 4096
        assert dec.cont.scheme == "napot" and (dec.cont.entries, dec.cont.size) == (16, 65536)
        assert dec.cont.same_value and "_PAGE_NAPOT" in dec.flags
        assert ARCH.kernel_view(block, index, PTE48, SV48, full(family)) == NAPOT_PTE
    assert MODEL.leaf_pfn(NAPOT_PTE, PTE48, SV48) == 0x12340
    assert MODEL.mk_block(0x12340, PTE48, SV48, Prot(), L("6.1")) == []


@pytest.mark.parametrize("low", [0b0001, 0b0010, 0b0100, 0b1100, 0b0000])
def test_napot_reserved_orders(low):
    # Only PPN[3:0] = 1000 (order 4) is defined; priv spec svnapot.adoc table "ptenapot" reserves the rest.
    raw = (1 << 63) | (0x12340 | low) << 10 | 0xD7
    dec = ARCH.decode(raw, PTE48, SV48, full("7.2"))
    assert dec.kind is Kind.UNKNOWN and "PPN[3:0]" in dec.reason


def test_napot_above_pte_level():
    dec = ARCH.decode((1 << 63) | 0x200000E7, PMD48, SV48, full("7.2"))
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x80000 and dec.cont is None
    assert any("N set above the PTE level" in n for n in dec.notes)


def test_napot_kernel_view_gathers_young_dirty():
    # huge_ptep_get: first PTE, pte_mkdirty/pte_mkyoung for every dirty/young entry (hugetlbpage.c:6-28)
    clean_old = NAPOT_PTE & ~0xC0
    block = [clean_old] * 16
    block[5] |= 0x80
    block[9] |= 0x40
    for family in ("6.12", "7.2"):
        assert ARCH.kernel_view(block, 3, PTE48, SV48, full(family)) == NAPOT_PTE
    assert MODEL.ptep_get(block, 3, PTE48, SV48, release_layout("7.2", "riscv64")) == NAPOT_PTE
    # 7.2 pte_mkdirty also sets _PAGE_SOFT_DIRTY (bit 59) when it exists (pgtable.h:465-468).
    assert ARCH.kernel_view(block, 3, PTE48, SV48, full("7.2", **RSW_ON)) == NAPOT_PTE | 1 << 59
    assert ARCH.kernel_view(block, 3, PTE48, SV48, full("6.1")) == clean_old
    plain = [0x48D1457] * 16
    assert ARCH.kernel_view(plain, 4, PTE48, SV48, full("7.2")) == 0x48D1457


# ---------------------------------------------------------------- properties

RELEASES = ["5.10", "5.14", "5.17", "5.19", "6.1", "6.3", "6.4", "6.7", "6.12", "6.17", "6.19", "7.2", "7.3"]
FAMILY = st.sampled_from([None, *RELEASES])
FACT_NAMES = ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE", "CONFIG_PTE_MARKER",
              "CONFIG_TRANSPARENT_HUGEPAGE", "CONFIG_SPARSEMEM", "swap_migration_ad_supported", "svrsw60t59b",
              "thead_mae", "CONFIG_MEM_SOFT_DIRTY", "CONFIG_HAVE_ARCH_USERFAULTFD_WP")
RANDOM_FACTS = st.builds(
    lambda fam, vals: facts(fam, **vals),
    FAMILY, st.dictionaries(st.sampled_from(FACT_NAMES), st.booleans()),
)
MODE_DEPTH = st.sampled_from([(m, d) for m in ARCH.modes() for d in range(len(m.levels))])


@settings(max_examples=3000)
@given(raw=st.integers(0, (1 << 64) - 1), md=MODE_DEPTH, f=RANDOM_FACTS)
def test_random_values_never_raise(raw, md, f):
    mode, depth = md
    dec = ARCH.decode(raw, depth, mode, f)
    assert isinstance(dec.kind, Kind) and dec.raw == raw
    if dec.kind is Kind.PRESENT:
        assert dec.access is not None and dec.pfn is not None and dec.pfn_space == "phys" and dec.size
    elif dec.kind is Kind.TABLE:
        assert dec.next_table is not None and dec.size == mode.levels[depth].span
    elif dec.kind is Kind.UNKNOWN:
        assert dec.reason
    elif dec.kind is Kind.NONE:
        assert raw == 0


LEAF_DEPTHS = st.sampled_from([(m, d) for m in ARCH.modes() for d, lv in enumerate(m.levels) if lv.leaf])
PROTS = st.builds(Prot, st.booleans(), st.booleans(), st.booleans(), st.booleans(), st.booleans(),
                  st.booleans(), st.sampled_from(["normal", "nc", "io"]))
KNOWN_FAMILY = st.sampled_from(RELEASES)


@settings(max_examples=1500)
@given(md=LEAF_DEPTHS, pfn=st.integers(0, (1 << 44) - 1), prot=PROTS, family=KNOWN_FAMILY)
def test_model_leaf_agrees(md, pfn, prot, family):
    mode, depth = md
    frames = mode.levels[depth].span >> 12
    pfn &= ~(frames - 1)
    raw = MODEL.mk_leaf(pfn, depth, mode, prot, L(family))
    dec = ARCH.decode(raw, depth, mode, full(family))
    assert dec.kind is Kind.PRESENT and dec.pfn == pfn == MODEL.leaf_pfn(raw, depth, mode)
    assert MODEL.pte_present(raw, depth, mode, L(family)) and not MODEL.pte_none(raw, depth, mode)
    a = dec.access
    if prot.protnone:  # PAGE_NONE = PROT_NONE (| READ from 5.17), no U (pgtable.h)
        assert (a.read, a.write, a.exec, a.user) == (False, False, False, False)
        assert any("PROT_NONE" in n for n in dec.notes)
    else:
        assert (a.read, a.write, a.exec, a.user) == (True, prot.write, prot.exec, prot.user)
    assert (a.young, a.dirty) == (prot.young, prot.dirty)
    pbmt = {"normal": None, "nc": "NC (1)", "io": "IO (2)"}[prot.memtype]
    assert dict(dec.fields).get("PBMT") == (pbmt if L(family).has("riscv_svpbmt") else None)


@settings(max_examples=500)
@given(pfn=st.integers(0, (1 << 40) - 1), prot=PROTS, family=st.sampled_from(["6.4", "6.12", "7.2", "7.3"]),
       young=st.lists(st.booleans(), min_size=16, max_size=16),
       dirty=st.lists(st.booleans(), min_size=16, max_size=16))
def test_model_napot_block_agrees(pfn, prot, family, young, dirty):
    pfn <<= 4
    block = MODEL.mk_block(pfn, PTE48, SV48, prot, L(family))
    block = [(v & ~0xC0) | (0x40 if y else 0) | (0x80 if d else 0) for v, y, d in zip(block, young, dirty)]
    for index, value in enumerate(block):
        dec = ARCH.decode(value, PTE48, SV48, full(family))
        assert dec.kind is Kind.PRESENT and dec.pfn == pfn == MODEL.leaf_pfn(value, PTE48, SV48)
        assert dec.cont is not None and dec.cont.same_value
        kernel = ARCH.kernel_view(block, index, PTE48, SV48, full(family))
        assert kernel == MODEL.ptep_get(block, index, PTE48, SV48, release_layout("7.2", "riscv64"))


def swp_fields(family):
    layout = L(family)  # offset above bit 7 (5.10), 11 (5.17+), 12 (6.3+): pgtable.h __SWP_OFFSET_SHIFT
    bits = 64 - (12 if layout.has("riscv_swp_exclusive") else 11 if layout.has("riscv_prot_none_global") else 7)
    flag = st.booleans() if layout.has("riscv_swp_exclusive") else st.just(False)
    rsw = st.booleans() if layout.has("riscv_svrsw60t59b") else st.just(False)
    return st.builds(SwpFields, st.integers(0, 31), st.integers(0, (1 << bits) - 1), flag, rsw, rsw)


@settings(max_examples=1500)
@given(data=st.data(), family=KNOWN_FAMILY, md=st.sampled_from([(SV48, 3), (SV48, 2), (SV48, 1), (SV39, 0)]))
def test_model_softleaf_agrees(data, family, md):
    mode, depth = md
    swp = data.draw(swp_fields(family))
    raw = MODEL.mk_softleaf(swp, depth, mode, L(family))
    dec = ARCH.decode(raw, depth, mode, full(family, **RSW_ON))
    back = MODEL.softleaf_from_pte(raw, depth, mode, L(family))
    if back is None:  # none, or (PMD soft-dirty, ENCODINGS §4.6) present to the kernel
        assert dec.softleaf is None
        assert dec.kind is Kind.NONE or MODEL.pte_present(raw, depth, mode, L(family))
        return
    assert back == swp
    assert (dec.softleaf.type, dec.softleaf.offset) == (swp.type, swp.offset)
    uffd = "_PAGE_SWP_UFFD" if L(family).has("uffd_rwp") else "_PAGE_SWP_UFFD_WP"  # renamed in 7.3
    expected = tuple(name for on, name in ((swp.exclusive, "_PAGE_SWP_EXCLUSIVE"),
                                           (swp.soft_dirty, "_PAGE_SWP_SOFT_DIRTY"),
                                           (swp.uffd_wp, uffd)) if on)
    assert dec.softleaf.arch_flags == expected


@settings(max_examples=2000)
@given(raw=st.integers(1, (1 << 64) - 1), family=KNOWN_FAMILY,
       md=st.sampled_from([(SV48, 3), (SV48, 2), (SV48, 1), (SV57, 1), (SV48, 0)]))
def test_model_present_agrees(raw, family, md):
    mode, depth = md
    dec = ARCH.decode(raw, depth, mode, full(family, **RSW_ON))
    present = MODEL.pte_present(raw, depth, mode, L(family))
    assert (dec.softleaf is not None) == (not present and mode.levels[depth].shift <= 30)
    if dec.kind is Kind.TABLE:
        assert MODEL.mk_table(dec.next_table, depth, mode) == raw & (((1 << 54) - 1) & ~0x3FF) | 1


def test_none_at_every_depth():
    for mode in ARCH.modes():  # pte_none/pmd_none/pud_none: val == 0 (pgtable.h, 5.10..7.3)
        for depth in range(len(mode.levels)):
            assert ARCH.decode(0, depth, mode, full("7.2")).kind is Kind.NONE
            assert MODEL.pte_none(0, depth, mode)


def test_hugetlb_pmd_softleaf_note():
    dec = ARCH.decode(0x12345C00, PMD48, SV48, full("7.2"))  # SWP_HWPOISON 24 at PMD level
    assert dec.kind is Kind.HWPOISON and any("hugetlb" in n for n in dec.notes)
