"""arm64 layouts of the releases between and around the Debian ones (5.10 .. 7.3).

Expected values are derived by hand from the kernel headers in /work/ksrc/<release>
(Debian's linux-source 5.10.223, 6.1.176, 6.12.117, 7.2.13, 7.3.4); each is cited next to
it as file:line of that release (paths under arch/arm64/ unless include/linux/).  Releases
between those (5.13, 5.19, 6.9, 6.10, 6.14, 6.17) take the mainline boundaries of
archs/arm64.py FEATURES, checked here only through values whose header lines are cited.
"""
from __future__ import annotations

import re

import pytest

from ptinspect.archs.arm64 import ARCH, FEATURES, swp_pfn_bits
from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.versions import NEWEST, OLDEST, release_layout
from ptinspect.inspector.facts import build_facts
from ptinspect.inspector.model.arm64 import MODEL
from ptinspect.inspector.model.base import Prot, SwpFields

M4 = ARCH.mode("4k-48")
PTE, PMD = 3, 2
ALL_ON = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True,
          "CONFIG_PTE_MARKER": False}
# _PAGE_SHARED = _PAGE_DEFAULT | USER | RDONLY | NG | PXN | UXN | WRITE: the same bits in every
# release (5.10 pgtable-prot.h:86, 6.1:54, 7.3:61) = 0x0068000000000fc3.
PAGE_SHARED = 0x0068000000000FC3


def L(release):
    return release_layout(release, "arm64")


def facts(release, **values):
    return KernelFacts(layout=L(release), release=release,
                       facts={k: Fact(v, "test") for k, v in {**ALL_ON, **values}.items()})


# ---------------------------------------------------------------- the feature table

def test_feature_rows_are_well_formed():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names))
    for f in FEATURES:
        assert f.name.startswith("arm64_") and f.source
        assert re.match(r"[0-9a-f]{12} \S", f.commit), f.name
        assert f.since <= NEWEST and (f.until is None or f.since < f.until <= NEWEST)
        assert (f.until is None) == (not f.removed_by)
        if f.removed_by:
            assert re.match(r"[0-9a-f]{12} \S", f.removed_by), f.name


@pytest.mark.parametrize("release", [f"{a}.{b}" for a, b in
                                      [(5, m) for m in range(10, 20)] + [(6, m) for m in range(0, 20)]
                                      + [(7, 0), (7, 1), (7, 2), (7, 3)]])
def test_every_release_decodes(release):
    # Every release OLDEST..NEWEST has a layout and decodes a swap entry and a present page.
    f = facts(release, CONFIG_ARM64_PA_BITS=48)
    assert OLDEST <= f.layout.version <= NEWEST
    assert ARCH.decode(0x1234000, PTE, M4, f).kind is Kind.SWAP
    assert ARCH.decode(PAGE_SHARED | 0x12345000, PTE, M4, f).pfn == 0x12345


# ---------------------------------------------------------------- 5.10

def test_swap_5_10():
    # 5.10 pgtable.h:900-909: __SWP_TYPE_SHIFT 2, __SWP_TYPE_BITS 6, __SWP_OFFSET_SHIFT 8; no
    # PTE_SWP_EXCLUSIVE (pgtable-prot.h:16-20 has none).  Type 1, offset 0x1234: 1 << 2 | 0x1234 << 8.
    raw = 0x123404
    d = ARCH.decode(raw, PTE, M4, facts("5.10"))
    assert d.kind is Kind.SWAP and (d.softleaf.type, d.softleaf.offset) == (1, 0x1234) and d.flags == ()
    assert MODEL.mk_softleaf(SwpFields(1, 0x1234), PTE, M4, L("5.10")) == raw
    assert MODEL.softleaf_from_pte(raw, PTE, M4, L("5.10")) == SwpFields(1, 0x1234)
    with pytest.raises(ValueError):
        MODEL.mk_softleaf(SwpFields(0, 1, exclusive=True), PTE, M4, L("5.10"))
    # 6.1 pgtable.h:1007-1011 (type 7:3) and pgtable-prot.h:17 (PTE_SWP_EXCLUSIVE bit 2): the
    # same value is swapfile 0 with the exclusive bit.
    d = ARCH.decode(raw, PTE, M4, facts("6.1"))
    assert (d.softleaf.type, d.softleaf.offset, d.flags) == (0, 0x1234, ("PTE_SWP_EXCLUSIVE",))
    # Type bit 5 (PTE bit 7) is inside 5.10's 6-bit field, but core mm's types are 5 bits
    # (include/linux/swap.h:48 MAX_SWAPFILES_SHIFT 5).
    d = ARCH.decode(0x80, PTE, M4, facts("5.10"))
    assert d.kind is Kind.UNKNOWN and d.softleaf.type == 32 and "MAX_SWAPFILES_SHIFT" in d.reason


def test_migration_5_10():
    # include/linux/swap.h:66-95 (5.10), MF+MIG+DP: MAX_SWAPFILES 32-1-2-2 = 27, HWPOISON 27,
    # MIGRATION_READ 28, MIGRATION_WRITE 29, DEVICE_WRITE 30, DEVICE_READ 31.  29 << 2 = 0x74.
    d = ARCH.decode(0x74 | (0x12345 << 8), PTE, M4, facts("5.10"))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0x12345
    assert ARCH.decode(0x7C | (0x12345 << 8), PTE, M4, facts("5.10")).kind is Kind.DEVICE_PRIVATE_READ
    assert ARCH.decode(0x6C | (0x12345 << 8), PTE, M4, facts("5.10")).kind is Kind.HWPOISON


def test_memory_types_5_10():
    # 5.10 memory.h:134-140: MT_NORMAL_WT 3, MT_DEVICE_nGnRnE 4, MT_DEVICE_nGnRE 5, MT_DEVICE_GRE 6;
    # 6.1 memory.h:140-144: MT_DEVICE_nGnRnE 3, MT_DEVICE_nGnRE 4.
    device = (PAGE_SHARED & ~(7 << 2)) | (5 << 2)
    assert ("AttrIndx", "5 (MT_DEVICE_nGnRE)") in ARCH.decode(device, PTE, M4, facts("5.10")).fields
    assert ("AttrIndx", "5 (no MT_* index)") in ARCH.decode(device, PTE, M4, facts("6.1")).fields
    assert ("AttrIndx", "3 (MT_NORMAL_WT)") in ARCH.decode(
        (PAGE_SHARED & ~(7 << 2)) | (3 << 2), PTE, M4, facts("5.13")).fields
    # pgprot_device (5.10 pgtable.h:491) uses MT_DEVICE_nGnRE.
    assert MODEL.mk_leaf(0x12345, PTE, M4, Prot(memtype="io"), L("5.10")) >> 2 & 7 == 5
    assert MODEL.mk_leaf(0x12345, PTE, M4, Prot(memtype="io"), L("5.14")) >> 2 & 7 == 4
    # Release unknown: indexes 0-2 mean the same, 3-6 do not.
    bare = KernelFacts()
    assert ("AttrIndx", "2 (MT_NORMAL_NC)") in ARCH.decode((PAGE_SHARED & ~(7 << 2)) | (2 << 2), PTE, M4,
                                                            bare).fields
    text = dict(ARCH.decode(device, PTE, M4, bare).fields)["AttrIndx"]
    assert "MT_DEVICE_nGnRE" in text and "release unknown" in text


def test_prot_none_5_10():
    # 5.10 pgtable-prot.h:84 PAGE_NONE = (_PAGE_DEFAULT & ~PTE_VALID) | PTE_PROT_NONE | PTE_RDONLY
    # | PTE_NG | PTE_PXN | PTE_UXN = 0x702 | 1<<58 | 0x80 | 0x800 | 1<<53 | 1<<54.
    prot_none = 0x0460000000000F82
    assert MODEL.mk_leaf(0, PTE, M4, Prot(protnone=True), L("5.10")) == prot_none
    d = ARCH.decode(prot_none | 0x12345000, PTE, M4, facts("5.10"))
    assert d.kind is Kind.PRESENT and "PROT_NONE" in d.notes and "PTE_PROT_NONE" in d.flags
    assert "PTE_DEVMAP" in ARCH.decode(PAGE_SHARED | 1 << 57, PTE, M4, facts("5.10")).flags


def test_no_contpte_young_dirty_before_5_19():
    # 5.10 mm/hugetlbpage.c has no huge_ptep_get (the generic one is ptep_get); 6.1's
    # (hugetlbpage.c:151-171) ORs young/dirty over the block.
    block = [0x0078000000000BC3 | ((0x1000 + i) << 12) for i in range(16)]
    block[5] |= 0x400
    assert ARCH.kernel_view(block, 0, PTE, M4, facts("5.10")) == block[0]
    assert ARCH.kernel_view(block, 0, PTE, M4, facts("5.18")) == block[0]
    assert ARCH.kernel_view(block, 0, PTE, M4, facts("5.19")) == block[0] | 0x400
    assert ARCH.kernel_view(block, 0, PTE, M4, KernelFacts()) == block[0]  # no claim without a release


# ---------------------------------------------------------------- 6.9 .. 6.17

def test_lpa2_needs_6_9():
    mode = ARCH.mode("4k-52-lpa2")
    leaf = len(mode.levels) - 1
    raw = 0x006B123456789FC3  # test_arm64 test_lpa2_output_address: PA 0x000f123456789000
    for release in ("6.9", "7.3"):
        d = ARCH.decode(raw, leaf, mode, facts(release))
        assert d.pfn == 0xF123456789 and not any("LPA2 support" in n for n in d.notes)
        assert swp_pfn_bits(mode, facts(release)) == 52 - 12
    assert any("no LPA2 support" in n for n in ARCH.decode(raw, leaf, mode, facts("6.8")).notes)
    assert swp_pfn_bits(mode, facts("6.8")) is None
    with pytest.raises(ValueError):
        MODEL.mk_leaf(0x1, leaf, mode, Prot(), L("6.8"))


def test_pte_addr_low_widened_in_6_9():
    # PTE_ADDR_LOW: 6.1 pgtable-hwdef.h:158 GENMASK(47, PAGE_SHIFT); 6.12 pgtable-hwdef.h:174
    # GENMASK(49, PAGE_SHIFT) (the LPA2 series, 6.9).  Bit 48 set in a 4k-48 leaf:
    raw = PAGE_SHARED | (1 << 48) | 0x12345000
    assert ARCH.decode(raw, PTE, M4, facts("6.8")).pfn == 0x12345
    assert ARCH.decode(raw, PTE, M4, facts("6.9")).pfn == 0x12345 | (1 << 36)


def test_swp_pfn_bits_between_6_9_and_6_13():
    # 6.9..6.13 sparsemem.h MAX_PHYSMEM_BITS = CONFIG_ARM64_PA_BITS (6.1 sparsemem.h:8); from
    # 6.14 (and the 6.12.117 header) PHYS_MASK_SHIFT = lpa2_is_enabled() ? PA_BITS : 48
    # (6.12 pgtable-prot.h:81,90).  4k-48 on an LPA2 (PA_BITS 52) kernel without DS:
    assert swp_pfn_bits(M4, facts("6.8")) == 36  # PA_BITS_52 needs 64K pages (6.1 Kconfig:1374)
    assert swp_pfn_bits(M4, facts("6.12")) is None
    assert swp_pfn_bits(M4, facts("6.12", CONFIG_ARM64_PA_BITS_52=True)) is None
    assert swp_pfn_bits(M4, facts("6.12", CONFIG_ARM64_PA_BITS=48)) == 36
    assert swp_pfn_bits(M4, facts("6.12", MAX_PHYSMEM_BITS=52)) == 40
    assert swp_pfn_bits(M4, facts("6.14")) == 36
    d = ARCH.decode(0x123456C0, PTE, M4, facts("6.12", swap_migration_ad_supported=True))
    # The type says the kind (type 27: 6.12 swap.h with MF+MIG+DP); the frame is what is not known.
    assert d.kind is Kind.DEVICE_PRIVATE_WRITE and d.pfn is None and "SWP_PFN_BITS" in dict(d.details)["pfn"]


def test_present_invalid_and_swap_move_in_6_10():
    # 6.1: PROT_NONE is bit 58 (pgtable-prot.h:21), swap type 7:3; 6.12: PTE_PRESENT_INVALID = nG
    # (pgtable-prot.h:27), type 10:6, offset 61:12 (pgtable.h:1432-1436); uffd-wp bit 58/3 (30-31).
    assert ARCH.decode(0x0460000000000F82, PTE, M4, facts("6.9")).notes[0] == "PROT_NONE"
    assert ARCH.decode(0x0060000000000F82, PTE, M4, facts("6.10")).notes[0] == "PROT_NONE"
    assert ARCH.decode(0x0060000000000F82, PTE, M4, facts("6.9")).kind is not Kind.PRESENT
    d = ARCH.decode(0x123400C, PTE, M4, facts("6.10"))
    assert (d.softleaf.val, d.flags) == (0x1234, ("PTE_SWP_EXCLUSIVE", "PTE_SWP_UFFD_WP"))
    d = ARCH.decode(0x123400C, PTE, M4, facts("6.9"))  # 7:3 / 57:8: type 1, offset 0x12340
    assert (d.softleaf.type, d.softleaf.offset, d.flags) == (1, 0x12340, ("PTE_SWP_EXCLUSIVE",))
    assert ARCH.decode(PAGE_SHARED | 1 << 58, PTE, M4, facts("6.9")).flags[-1] == "PTE_PROT_NONE"
    assert ARCH.decode(PAGE_SHARED | 1 << 58, PTE, M4, facts("6.10")).flags[-1] == "PTE_UFFD_WP"


def test_poe_and_devmap_boundaries():
    # POIndex bits 62:60 (6.12 pgtable-hwdef.h:204-208); PTE_DEVMAP bit 57 in 6.12
    # (pgtable-prot.h:20), gone in 7.2.
    assert ("POIndex", "5") in ARCH.decode(PAGE_SHARED | 5 << 60, PTE, M4, facts("6.12")).fields
    d = ARCH.decode(PAGE_SHARED | 5 << 60, PTE, M4, facts("6.11"))
    assert not any(k == "POIndex" for k, _ in d.fields) and any("60" in n for n in d.notes)
    assert "PTE_DEVMAP" in ARCH.decode(PAGE_SHARED | 1 << 57, PTE, M4, facts("6.16")).flags
    d = ARCH.decode(PAGE_SHARED | 1 << 57, PTE, M4, facts("6.17"))
    assert "PTE_DEVMAP" not in d.flags and any("57" in n for n in d.notes)


# ---------------------------------------------------------------- 7.3

def test_uffd_bits_renamed_in_7_3():
    # 7.3 pgtable-prot.h:31-32: PTE_UFFD bit 58, PTE_SWP_UFFD bit 3 ("userfaultfd tracking");
    # 7.2 pgtable-prot.h:31-32 names them PTE_UFFD_WP / PTE_SWP_UFFD_WP.
    f = build_facts("arm64", "7.3.4+bpo-arm64", ["CONFIG_MEMORY_FAILURE=y", "CONFIG_MIGRATION=y",
                                                 "CONFIG_DEVICE_PRIVATE=y"])
    d = ARCH.decode(0x123400C, PTE, M4, f)
    assert d.kind is Kind.SWAP and d.flags == ("PTE_SWP_EXCLUSIVE", "PTE_SWP_UFFD") and d.softleaf.val == 0x1234
    assert ARCH.decode(PAGE_SHARED | 1 << 58, PTE, M4, f).flags[-1] == "PTE_UFFD"
    d = ARCH.decode(0x123400C, PTE, M4, facts("7.3", CONFIG_HAVE_ARCH_USERFAULTFD_WP=False))
    assert any("PTE_SWP_UFFD set" in n for n in d.notes)
    assert MODEL.mk_softleaf(SwpFields(0, 0x1234, exclusive=True, uffd_wp=True), PTE, M4, L("7.3")) == 0x123400C


def test_7_3_same_encodings_as_7_2():
    # 7.2 -> 7.3 diff of pgtable.h / pgtable-prot.h / pgtable-hwdef.h: only the uffd names,
    # pte_present() as an inline function and pte_protnone() under CONFIG_ARCH_HAS_PTE_PROTNONE.
    for raw, depth in ((0x0060000000000F82 | 0x12345000, PTE), (0x0068000040000FC0, PMD),
                       (0x00030000123456C0, PTE), (0x47C0, PTE), (PAGE_SHARED | 0x12345000, PTE)):
        a = ARCH.decode(raw, depth, M4, facts("7.2", swap_migration_ad_supported=True))
        b = ARCH.decode(raw, depth, M4, facts("7.3", swap_migration_ad_supported=True))
        assert (a.kind, a.pfn, a.notes, a.markers, a.details) == (b.kind, b.pfn, b.notes, b.markers, b.details)
        assert MODEL.pte_present(raw, depth, M4, L("7.2")) == MODEL.pte_present(raw, depth, M4, L("7.3"))


# ---------------------------------------------------------------- 16K granule in every release

@pytest.mark.parametrize("release", ["5.10", "6.1", "6.12", "7.2", "7.3"])
def test_16k_blocks(release):
    # Kconfig ARM64_CONT_PTE_SHIFT 7 / ARM64_CONT_PMD_SHIFT 5 for 16K in all five releases;
    # PMD_SHIFT = ARM64_HW_PGTABLE_LEVEL_SHIFT(2) = (14 - 3) * 2 + 3 = 25 (32 MiB).
    mode = ARCH.mode("16k-47")
    f = facts(release, CONFIG_ARM64_PA_BITS=48)
    pte_block = MODEL.mk_block(0, 2, mode, Prot(), L(release))
    c = ARCH.decode(pte_block[3], 2, mode, f).cont
    assert (c.entries, c.size) == (128, 2 << 20) and len(pte_block) == 128
    pmd = ARCH.decode(MODEL.mk_leaf(1 << 11, 1, mode, Prot(), L(release)), 1, mode, f)
    assert pmd.kind is Kind.PRESENT and pmd.size == 32 << 20 and pmd.pfn == 1 << 11
    pmd_block = MODEL.mk_block(0, 1, mode, Prot(), L(release))
    c = ARCH.decode(pmd_block[0], 1, mode, f).cont
    assert (c.entries, c.size) == (32, 1 << 30)
