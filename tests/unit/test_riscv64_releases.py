"""riscv64 layouts of the releases between and around 6.1, 6.12 and 7.2 (5.10 .. 7.3).

5.10 and 7.3 vectors were compiled with gcc from the headers' own #defines (arch/riscv/include/
asm/pgtable.h __SWP_TYPE_SHIFT, __swp_entry, __swp_type, __swp_offset; pgtable-bits.h _PAGE_*;
pgtable.h PAGE_NONE) of Debian's 5.10.223 and 7.3.4 sources; generic type numbers are from
include/linux/swap.h of the same release.  In-between releases take the boundary commits of
archs/riscv64.py FEATURES.
"""
from __future__ import annotations

import pytest

from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.riscv64 import ARCH
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.model.base import Prot, SwpFields
from ptinspect.inspector.model.riscv64 import MODEL

SV39, SV48, SV57 = ARCH.mode("sv39"), ARCH.mode("sv48"), ARCH.mode("sv57")
PTE39, PMD39 = 2, 1
PTE48 = 3
ALL_ON = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True,
          "CONFIG_TRANSPARENT_HUGEPAGE": True, "CONFIG_SPARSEMEM": True}
RSW_ON = {"svrsw60t59b": True, "CONFIG_MEM_SOFT_DIRTY": True, "CONFIG_HAVE_ARCH_USERFAULTFD_WP": True}


def L(release):
    return release_layout(release, "riscv64")


def full(release, **more):
    values = {**ALL_ON, **more}
    return KernelFacts(layout=L(release), release=release, facts={k: Fact(v, "test") for k, v in values.items()})


# (type, offset, pte) compiled from 5.10's pgtable.h: __swp_entry = type << 2 | offset << 7
VECTORS_5_10 = [(0, 0x1234, 0x91A00), (1, 0, 0x4), (27, 0x300000012345, 0x1800000091A2EC),
                (31, 0x4, 0x27C), (31, 0x1, 0xFC)]
# 7.3's pgtable.h: (type & 31) << 7 | offset << 12 (the same as 6.12/7.2)
VECTORS_7_3 = [(0, 0x1234, 0x1234000), (1, 0, 0x80), (27, 0x300000012345, 0x300000012345D80),
               (31, 0x4, 0x4F80), (31, 0x1, 0x1F80)]


@pytest.mark.parametrize("release, vectors", [("5.10", VECTORS_5_10), ("5.16", VECTORS_5_10),
                                              ("7.3", VECTORS_7_3)])
def test_swap_vectors(release, vectors):
    for swp_type, offset, pte in vectors:
        dec = ARCH.decode(pte, PTE39, SV39, full(release))
        assert (dec.softleaf.type, dec.softleaf.offset) == (swp_type, offset)
        assert MODEL.mk_softleaf(SwpFields(swp_type, offset), PTE39, SV39, L(release)) == pte
        back = MODEL.softleaf_from_pte(pte, PTE39, SV39, L(release))
        assert (back.type, back.offset) == (swp_type, offset)


def test_5_10_type_space_and_migration_pfn():
    # 5.10 swap.h with MF+MIG+DP: MAX_SWAPFILES 27, SWP_HWPOISON 27, MIGRATION_READ 28, _WRITE 29,
    # DEVICE_WRITE 30, DEVICE_READ 31.  Before 6.1 swp_offset() is the PFN, all of it.
    dec = ARCH.decode(0x1800000091A2EC, PTE39, SV39, full("5.10"))
    assert dec.kind is Kind.HWPOISON and dec.pfn == 0x300000012345 and not dec.notes
    mig = ARCH.decode(0x1800000091A2F4, PTE39, SV39, full("5.10"))  # type 29 << 2 | offset << 7
    assert mig.kind is Kind.MIGRATION_WRITE and mig.pfn == 0x300000012345
    assert ("young/dirty", "not stored in 5.10 (SWP_MIG_YOUNG_BIT came in 6.1, include/linux/swapops.h)") in mig.details
    assert MODEL.mk_softleaf(SwpFields(29, 0x300000012345), PTE39, SV39, L("5.10")) == 0x1800000091A2F4
    dev = ARCH.decode(0x12345 << 7 | 31 << 2, PTE39, SV39, full("5.10"))
    assert dev.kind is Kind.DEVICE_PRIVATE_READ and dev.pfn_space == "device"
    # type 31 in 5.17..6.1 layouts: SWP_SWAPIN_ERROR only from 5.19 (generic swp_swapin_error)
    assert ARCH.decode(0xFC, PTE39, SV39, full("5.10")).kind is Kind.DEVICE_PRIVATE_READ


def test_5_10_prot_none_is_read():
    # 5.10: _PAGE_PROT_NONE = _PAGE_READ, PAGE_NONE = _PAGE_PROT_NONE = 0x2 (compiled);
    # pfn_pte(0x12345, PAGE_NONE) = 0x12345 << 10 | 0x2
    raw = 0x48D1402
    dec = ARCH.decode(raw, PTE39, SV39, full("5.10"))
    assert dec.kind is Kind.PRESENT and dec.pfn == 0x12345 and "_PAGE_PROT_NONE" in dec.flags
    assert any("_PAGE_PROT_NONE (R)" in n for n in dec.notes)
    assert (dec.access.read, dec.access.write) == (False, False)
    assert MODEL.mk_leaf(0x12345, PTE39, SV39, Prot(protnone=True, young=False), L("5.10")) == raw
    # From 5.17 (fba88ede6a31) R with V=0 is no longer present: type (raw >> 6) & 31, bit 1 stray
    later = ARCH.decode(raw, PTE39, SV39, full("5.17"))
    assert later.kind is Kind.SWAP and later.softleaf.type == (raw >> 6) & 31
    assert any("bits 1 are set" in n for n in later.notes)
    # 6.1's PAGE_NONE = G|R = 0x22 (7.3 compiled too): present from 5.17 on
    assert ARCH.decode(0x48D1422, PTE39, SV39, full("5.17")).kind is Kind.PRESENT


def test_thp_pmd_present_by_release():
    # V=0, R=0, W=1 (0x200000D4): pmd_present tests _PAGE_LEAF only with THP, which riscv has from
    # 5.14 (e88b333142e4); 5.10 cannot enable it whatever the config says.
    raw = 0x200000D4
    assert ARCH.decode(raw, PMD39, SV39, full("5.10")).kind is Kind.SWAP
    assert ARCH.decode(raw, PMD39, SV39, full("5.14")).kind is Kind.PRESENT
    assert not MODEL.pte_present(raw, PMD39, SV39, L("5.10"))
    assert MODEL.pte_present(raw, PMD39, SV39, L("5.14"))


def test_pmd_migration_entries_from_5_17():
    # THP migration (d062a79b7c80, 5.17): before it only hugetlb writes software PMDs.
    raw = 0x12345 << 11 | 26 << 6  # 6.1 layout MF+MIG+DP: SWP_MIGRATION_WRITE = 26
    old = 0x12345 << 7 | 29 << 2  # 5.10 layout: SWP_MIGRATION_WRITE = 29, bits 2/4 set
    before = ARCH.decode(old, PMD39, SV39, full("5.13"))
    assert before.kind is Kind.MIGRATION_WRITE and any("hugetlb" in n for n in before.notes)
    # 5.14..5.16 with THP: pmd_present tests R|W|X and the type bits 2..6 overlap them (what
    # fba88ede6a31 fixed); decoded as pmd_present says.
    assert ARCH.decode(old, PMD39, SV39, full("5.16")).kind is Kind.PRESENT
    after = ARCH.decode(raw, PMD39, SV39, full("6.1"))
    assert after.kind is Kind.MIGRATION_WRITE and not any("hugetlb" in n for n in after.notes)


@pytest.mark.parametrize("release, mode, usable", [
    ("5.10", SV39, True), ("5.16", SV48, False), ("5.17", SV48, True), ("5.17", SV57, False),
    ("5.18", SV57, True), ("7.3", SV57, True),
])
def test_paging_modes_by_release(release, mode, usable):
    # Sv48 from 5.17 (e8a62cc26ddf), Sv57 from 5.18 (011f09d12052); noted on root entries only.
    dec = ARCH.decode(0x20000001, 0, mode, full(release))
    assert dec.kind is Kind.TABLE
    assert any("cannot use" in n for n in dec.notes) is not usable
    assert not any("cannot use" in n for n in ARCH.decode(0x20000001, 1, mode, full(release)).notes)


def test_pre_5_19_pbmt_and_pfn_mask():
    # Svpbmt (ff689fd21cb1) and _PAGE_PFN_MASK (100631b48ded) are 5.19: 5.10's pte_pfn is val >> 10.
    raw = 0x2000_0000_048D_1457
    old = ARCH.decode(raw, PTE39, SV39, full("5.18"))
    assert old.pfn == 0x12345 and any("no Svpbmt support" in n for n in old.notes)
    assert any(f"reads PFN {raw >> 10:#x}" in n for n in old.notes)
    new = ARCH.decode(raw, PTE39, SV39, full("5.19", thead_mae=False))
    assert ("PBMT", "NC (1)") in new.fields and not new.notes
    assert MODEL.mk_leaf(0x12345, PTE39, SV39, Prot(memtype="nc"), L("5.18")) == 0x48D1457
    # no T-Head memory types before 5.19 (a35707c3d850): bits 63:59 stay Svpbmt/N/reserved
    pma = ARCH.decode(0x7000_0000_048D_1457, PTE39, SV39, full("5.18", thead_mae=True))
    assert not any(name.startswith("T-Head") for name, _ in pma.fields)


@pytest.mark.parametrize("release, mt, name", [
    # _PAGE_NOCACHE_THEAD: 0 (5.19..6.6, 6.1 header), (1UL < 61) | (1UL << 60) = bit 60 + bit 0 in 6.7
    # (dbfbda3bd6bf), bits 61|60 from 6.8 (c21f01481860; 6.12 header); _PAGE_IO_THEAD 63 then 63|60.
    ("6.6", 0b00000, "NC"), ("6.6", 0b10000, "IO"), ("6.7", 0b00010, "NC"), ("6.7", 0b10010, "IO"),
    ("6.7", 0b00110, "not a memory type Linux writes"), ("6.8", 0b00110, "NC"), ("7.3", 0b10010, "IO"),
    ("7.3", 0b01110, "PMA"),
])
def test_thead_memtypes_by_release(release, mt, name):
    dec = ARCH.decode(mt << 59 | 0x48D1457, PTE48, SV48, full(release, thead_mae=True))
    assert ("T-Head MT (SO C B SH Sec)", f"{mt:05b} {name}") in dec.fields


def test_swp_exclusive_from_6_3():
    # 51a1007d4113 (6.3): __SWP_TYPE_SHIFT 6 -> 7, _PAGE_SWP_EXCLUSIVE = bit 6
    raw = 0x1234040
    assert ARCH.decode(raw, PTE48, SV48, full("6.3")).softleaf.arch_flags == ("_PAGE_SWP_EXCLUSIVE",)
    old = ARCH.decode(raw, PTE48, SV48, full("6.2")).softleaf
    assert (old.type, old.offset, old.arch_flags) == (1, raw >> 11, ())


def test_napot_from_6_4():
    raw = 0x80000000048D20D7  # pte_mknapot(pfn_pte(0x12340, PAGE_WRITE|D), 4), 6.12/7.2 pgtable.h
    assert "_PAGE_NAPOT" in ARCH.decode(raw, PTE48, SV48, full("6.4")).flags
    old = ARCH.decode(raw, PTE48, SV48, full("6.3"))
    assert "N (bit 63, Svnapot)" in old.flags and any("no Svnapot support" in n for n in old.notes)
    assert MODEL.mk_block(0x12340, PTE48, SV48, Prot(dirty=True), L("6.3")) == []


def test_svrsw60t59b_from_6_19_and_7_3_names():
    # 6.19: _PAGE_SOFT_DIRTY bit 59, _PAGE_UFFD_WP bit 60; 7.3 renames them _PAGE_UFFD / _PAGE_SWP_UFFD
    # (pgtable-bits.h 7.2 vs 7.3); the swap bits are 3 and 4 in both.
    raw = 3 << 59 | 0x48D1457
    assert ARCH.decode(raw, PTE48, SV48, full("6.18", **RSW_ON)).fields[-1][0] == "reserved"
    assert ARCH.decode(raw, PTE48, SV48, full("6.19", **RSW_ON)).flags[-2:] == ("_PAGE_SOFT_DIRTY", "_PAGE_UFFD_WP")
    assert ARCH.decode(raw, PTE48, SV48, full("7.2", **RSW_ON)).flags[-2:] == ("_PAGE_SOFT_DIRTY", "_PAGE_UFFD_WP")
    assert ARCH.decode(raw, PTE48, SV48, full("7.3", **RSW_ON)).flags[-2:] == ("_PAGE_SOFT_DIRTY", "_PAGE_UFFD")
    swp = 0x1234018  # type 0, offset 0x1234, bits 3 and 4
    assert ARCH.decode(swp, PTE48, SV48, full("7.3", **RSW_ON)).softleaf.arch_flags == (
        "_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD")
    assert MODEL.mk_softleaf(SwpFields(0, 0x1234, soft_dirty=True, uffd_wp=True), PTE48, SV48, L("7.3")) == swp
    assert ARCH.decode(swp, PTE48, SV48, full("6.18", **RSW_ON)).softleaf.arch_flags == ()


def test_every_release_has_a_layout():
    for minor in range(10, 20):
        assert ARCH.decode(0x1234000, PTE39, SV39, full(f"5.{minor}")).kind is not Kind.UNKNOWN
    for minor in range(20):
        assert ARCH.decode(0x1234000, PTE48, SV48, full(f"6.{minor}")).kind is not Kind.UNKNOWN
    for minor in range(4):
        assert ARCH.decode(0x1234000, PTE48, SV48, full(f"7.{minor}")).kind is not Kind.UNKNOWN
