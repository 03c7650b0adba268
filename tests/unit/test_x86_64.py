"""x86-64 decoder (archs/x86_64.py) and reference model (inspector/model/x86_64.py).

Expectations come from tests/data/encode-vectors.txt (compiled kernel macros) or are derived
by hand from the headers of /work/ksrc/<release>/arch/x86/include/asm/ (cited by file and
symbol) and include/linux/swap.h; releases are layouts of archs/versions.py.
"""
from __future__ import annotations

import dataclasses
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ptinspect.archs.common import SOFTLEAF_KINDS, Fact, KernelFacts, Kind
from ptinspect.archs.versions import release_layout
from ptinspect.archs.x86_64 import ARCH, MODE_4, MODE_5
from ptinspect.inspector.model.base import Prot, SwpFields
from ptinspect.inspector.model.x86_64 import MODEL
from tests.vectors import PATH, encode_vectors

X86_VECTORS = [v for v in encode_vectors() if v.arch == "x86_64"]
CONFIG_ALL = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True}


def L(release):
    """The x86_64 layout of a release."""
    return release_layout(release, "x86_64")


def facts(release, **values):
    layout = L(release) if release else None
    return KernelFacts(layout=layout, release=release, facts={k: Fact(v, "test") for k, v in values.items()})


def full(release, **extra):
    """All special types configured (5.19..6.1 also CONFIG_PTE_MARKER), A/D kept in migration
    entries where the release stores them (6.1 and later)."""
    cfg = dict(CONFIG_ALL, CONFIG_MEM_SOFT_DIRTY=True, CONFIG_HAVE_ARCH_USERFAULTFD_WP=True)
    if release and L(release).has("swp_migration_ad"):
        cfg["swap_migration_ad_supported"] = True
    if release and L(release).has("pte_marker_config"):
        cfg["CONFIG_PTE_MARKER"] = True
    cfg.update(extra)
    return facts(release, **cfg)


def swp(t, off):
    """__swp_entry(t, o) = (~o << 14 >> 5) | t << 59: type in 63:59, ~offset in 58:9
    (pgtable_64.h:234/235/231); worked by hand, not with the code under test."""
    return (t << 59) | ((((1 << 50) - 1) ^ off) << 9)


PTE4, PMD4, PUD4, PGD4 = 3, 2, 1, 0  # depths in 4-level
PTE5, PMD5, PUD5, P4D5, PGD5 = 4, 3, 2, 1, 0


# ---------------------------------------------------------------- encode-vectors.txt


def test_vectors_found():
    assert len(X86_VECTORS) == 7


@pytest.mark.parametrize("v", X86_VECTORS, ids=lambda v: v.title[:40])
def test_vector_decodes_to_type_and_offset(v):
    d = ARCH.decode(v.pte, PTE4, MODE_4, full("7.2"))
    assert d.softleaf is not None
    assert (d.softleaf.type, d.softleaf.offset) == (v.type, v.offset)
    assert d.softleaf.arch_flags == ()


@pytest.mark.parametrize("v", X86_VECTORS, ids=lambda v: v.title[:40])
def test_vector_model_encodes_and_reads_back(v):
    assert MODEL.mk_softleaf(SwpFields(v.type, v.offset), PTE4, MODE_4, L("7.2")) == v.pte
    assert MODEL.softleaf_from_pte(v.pte, PTE4, MODE_4, L("7.2")) == SwpFields(v.type, v.offset)


def test_protnone_vector():
    m = re.search(r"x86 PROT_NONE pte for pfn (0x[0-9a-f]+): (0x[0-9a-f]+)", PATH.read_text())
    pfn, pte = int(m.group(1), 16), int(m.group(2), 16)
    assert pte == 0x000FFFFFEDCBA120  # ENCODINGS.md §2.3 example
    for family in ("6.1", "6.12", "7.2", None):
        d = ARCH.decode(pte, PTE4, MODE_4, full(family) if family else facts(None))
        assert d.kind is Kind.PRESENT and d.pfn == pfn and d.size == 4096
        assert "PROT_NONE" in " ".join(d.notes)
        assert d.flags == ("_PAGE_ACCESSED", "_PAGE_PROTNONE")  # PAGE_NONE = A|G (pgtable_types.h:182/206/205)
        assert (d.access.read, d.access.write, d.access.exec) == (False, False, False)
    assert MODEL.mk_leaf(pfn, PTE4, MODE_4, Prot(protnone=True, user=False), L("7.2")) == pte
    assert MODEL.leaf_pfn(pte, PTE4, MODE_4) == pfn


# ---------------------------------------------------------------- ENCODINGS.md §2.4 examples


def test_plain_swap_entries():
    for family in ("6.1", "6.12", "7.2"):
        d = ARCH.decode(0x07FFFFFFFFDB9600, PTE4, MODE_4, full(family))
        assert d.kind is Kind.SWAP and d.softleaf.val == 0x1234
        d = ARCH.decode(0x0FFFFFFFFFFFFE00, PTE4, MODE_4, full(family))
        assert d.kind is Kind.SWAP and d.softleaf.val == 0x0400000000000000


def test_guard_marker_72():
    d = ARCH.decode(0xFFFFFFFFFFFFF600, PTE4, MODE_4, full("7.2"))
    assert d.kind is Kind.MARKER and d.markers == ("guard",)


def test_uffd_wp_marker_612():
    d = ARCH.decode(0xFFFFFFFFFFFFFC00, PTE4, MODE_4, full("6.12"))
    assert d.kind is Kind.MARKER and d.markers == ("uffd-wp",)


def test_migration_write_young_dirty_4level():
    d = ARCH.decode(0xDFFFE7FFFDB97400, PTE4, MODE_4, full("7.2"))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0x12345 and d.pfn_space == "phys"
    assert ("young", "true") in d.details and ("dirty", "true") in d.details
    assert not any("above the PFN" in n for n in d.notes)


def test_migration_write_in_5level_has_40_bit_pfn():
    # SWP_PFN_BITS = 52 - 12 = 40 with LA57 (sparsemem.h:29): bits 34/35 are PFN bits there.
    d = ARCH.decode(0xDFFFE7FFFDB97400, PTE5, MODE_5, full("7.2"))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0xC00012345
    assert ("young", "false") in d.details and ("dirty", "false") in d.details


def test_max_physmem_bits_fact_overrides():
    d = ARCH.decode(0xDFFFE7FFFDB97400, PTE5, MODE_5, full("7.2", MAX_PHYSMEM_BITS=46))
    assert d.pfn == 0x12345 and ("young", "true") in d.details
    assert ARCH.swp_pfn_bits(MODE_4, facts("7.2")) == 34
    assert ARCH.swp_pfn_bits(MODE_5, facts("7.2")) == 40
    assert MODEL.swp_pfn_bits(MODE_4) == 34 and MODEL.swp_pfn_bits(MODE_5) == 40


def test_migration_ad_unknown_is_said():
    f = facts("7.2", **CONFIG_ALL)  # swap_migration_ad_supported not known
    d = ARCH.decode(0xDFFFE7FFFDB97400, PTE4, MODE_4, f)
    assert d.kind is Kind.MIGRATION_WRITE
    assert any(k == "young/dirty" and "unknown" in v for k, v in d.details)


# ---------------------------------------------------------------- every softleaf kind per family

PFN = 0x12345
KINDS = [
    # 7.2 MF+MIG+DP: HWPOISON 24, MIGRATION 25/26/27, DEVICE_WRITE 28, DEVICE_READ 29, EXCLUSIVE 30
    ("7.2", 24, Kind.HWPOISON, "phys"),
    ("7.2", 25, Kind.MIGRATION_READ, "phys"),
    ("7.2", 26, Kind.MIGRATION_READ_EXCLUSIVE, "phys"),
    ("7.2", 27, Kind.MIGRATION_WRITE, "phys"),
    ("7.2", 28, Kind.DEVICE_PRIVATE_WRITE, "device"),
    ("7.2", 29, Kind.DEVICE_PRIVATE_READ, "device"),
    ("7.2", 30, Kind.DEVICE_EXCLUSIVE, "phys"),
    # 6.12 MF+MIG+DP: 23, 24/25/26, 27, 28, EXCLUSIVE_WRITE 29, EXCLUSIVE_READ 30
    ("6.12", 23, Kind.HWPOISON, "phys"),
    ("6.12", 24, Kind.MIGRATION_READ, "phys"),
    ("6.12", 26, Kind.MIGRATION_WRITE, "phys"),
    ("6.12", 27, Kind.DEVICE_PRIVATE_WRITE, "device"),
    ("6.12", 28, Kind.DEVICE_PRIVATE_READ, "device"),
    ("6.12", 29, Kind.DEVICE_EXCLUSIVE, "phys"),
    ("6.12", 30, Kind.DEVICE_EXCLUSIVE, "phys"),
    # 6.1 MF+MIG+DP+PTE_MARKER: 22, 23/24/25, 26, 27, 28, 29, MARKER 30, SWAPIN_ERROR 31
    ("6.1", 22, Kind.HWPOISON, "phys"),
    ("6.1", 25, Kind.MIGRATION_WRITE, "phys"),
    ("6.1", 26, Kind.DEVICE_PRIVATE_WRITE, "device"),
    ("6.1", 29, Kind.DEVICE_EXCLUSIVE, "phys"),
    ("6.1", 31, Kind.SWAPIN_ERROR, "phys"),
]


@pytest.mark.parametrize("family,t,kind,space", KINDS, ids=lambda x: str(x))
def test_pfn_kinds(family, t, kind, space):
    d = ARCH.decode(swp(t, PFN), PTE4, MODE_4, full(family))
    assert d.kind is kind and d.pfn == PFN and d.pfn_space == space
    assert MODEL.softleaf_from_pte(swp(t, PFN), PTE4, MODE_4, L(family)) == SwpFields(t, PFN)


def test_device_private_number_meaning_is_a_release_fact():
    """While device_private_pfn holds (7.3: make_writable_device_private_entry(page_to_pfn()) in
    mm/migrate_device.c) the number is a device frame; a release without it (the seed series:
    an offset in the device's own space) gets no frame claim."""
    dev = swp(28, PFN)  # SWP_DEVICE_WRITE with MF+MIG+DP, 7.2 as in KINDS above and 7.3 alike
    now = ARCH.decode(dev, PTE4, MODE_4, full("7.3"))
    assert now.kind is Kind.DEVICE_PRIVATE_WRITE and now.pfn_space == "device"
    later = full("7.3")
    layout = dataclasses.replace(later.layout, features=later.layout.features - {"device_private_pfn"})
    d = ARCH.decode(dev, PTE4, MODE_4, dataclasses.replace(later, layout=layout))
    assert d.kind is Kind.DEVICE_PRIVATE_WRITE and d.pfn_space == "device-offset"


def test_migration_read_young_only():
    d = ARCH.decode(swp(25, 1 << 34 | PFN), PTE4, MODE_4, full("7.2"))  # SWP_MIG_YOUNG_BIT = 34
    assert d.kind is Kind.MIGRATION_READ and d.pfn == PFN
    assert ("young", "true") in d.details and ("dirty", "false") in d.details


@pytest.mark.parametrize("family,t,offset,markers", [
    ("7.2", 31, 1, ("uffd-wp",)), ("7.2", 31, 2, ("poison",)), ("7.2", 31, 4, ("guard",)),
    ("6.12", 31, 2, ("poison",)), ("6.1", 30, 1, ("uffd-wp",)),
])
def test_markers(family, t, offset, markers):
    d = ARCH.decode(swp(t, offset), PTE4, MODE_4, full(family))
    assert d.kind is Kind.MARKER and d.markers == markers


def test_unknown_when_config_missing():
    d = ARCH.decode(swp(27, PFN), PTE4, MODE_4, facts("7.2"))
    assert d.kind is Kind.UNKNOWN and "CONFIG_" in d.reason and d.softleaf.type == 27
    d = ARCH.decode(swp(27, PFN), PTE4, MODE_4, facts(None))
    assert d.kind is Kind.UNKNOWN and d.reason
    d = ARCH.decode(swp(3, 0x99), PTE4, MODE_4, facts("7.2", MAX_SWAPFILES=24))
    assert d.kind is Kind.SWAP and d.softleaf.offset == 0x99


def test_swap_flag_bits_by_kernel_name():
    # _PAGE_SWP_SOFT_DIRTY bit 1 (pgtable_types.h:97/107/108), _PAGE_SWP_UFFD_WP bit 2
    # (104/114/115), _PAGE_SWP_EXCLUSIVE bit 3 (pgtable_64_types.h:221/222/196).
    d = ARCH.decode(0x07FFFFFFFFDB9600 | 0xE, PTE4, MODE_4, full("7.2"))
    assert d.kind is Kind.SWAP and d.softleaf.val == 0x1234
    assert d.softleaf.arch_flags == ("_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD_WP", "_PAGE_SWP_EXCLUSIVE")
    assert d.flags == d.softleaf.arch_flags
    swp_fields = SwpFields(0, 0x1234, exclusive=True, soft_dirty=True, uffd_wp=True)
    assert MODEL.mk_softleaf(swp_fields, PTE4, MODE_4, L("7.2")) == 0x07FFFFFFFFDB960E
    assert MODEL.softleaf_from_pte(0x07FFFFFFFFDB960E, PTE4, MODE_4, L("7.2")) == swp_fields


def test_swap_flag_named_only_when_configured():
    d = ARCH.decode(0x07FFFFFFFFDB9602, PTE4, MODE_4, full("7.2", CONFIG_MEM_SOFT_DIRTY=False))
    assert d.kind is Kind.SWAP and d.softleaf.arch_flags == ()
    assert any("CONFIG_MEM_SOFT_DIRTY is off" in n for n in d.notes)


def test_ad_erratum_bits_on_swap_entry_are_ignored():
    d = ARCH.decode(0x07FFFFFFFFDB9660, PTE4, MODE_4, full("7.2"))
    assert d.kind is Kind.SWAP and d.softleaf.val == 0x1234
    assert any("Knights Landing" in n for n in d.notes)


# ---------------------------------------------------------------- PMD / PUD software leaves


def test_pmd_migration_entry():
    # __pmd_to_swp_entry(pmd) = pmd_val (pgtable_64.h:239/240/236): same layout as a PTE.
    d = ARCH.decode(0xDFFFE7FFFDB97400, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0x12345 and d.size == 1 << 21
    assert not any("not a kind" in n for n in d.notes)


def test_pmd_swap_flags_exclude_exclusive():
    # softleaf_from_pmd clears only soft-dirty and uffd-wp (include/linux/leafops.h:94, 7.2).
    d = ARCH.decode(swp(27, PFN) | 0xE, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.MIGRATION_WRITE
    assert d.softleaf.arch_flags == ("_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD_WP")
    assert any("bit 3" in n for n in d.notes)
    with pytest.raises(ValueError):
        MODEL.mk_softleaf(SwpFields(27, PFN, exclusive=True), PMD4, MODE_4, L("7.2"))


def test_pmd_swap_kind_noted_as_not_thp():
    d = ARCH.decode(0x07FFFFFFFFDB9600, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.SWAP
    assert any("softleaf_is_valid_pmd_entry" in n and "hugetlb" in n for n in d.notes)


def test_pud_softleaf_is_hugetlb():
    d = ARCH.decode(swp(27, 0x40000), PUD4, MODE_4, full("7.2"))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0x40000 and d.size == 1 << 30
    assert any("hugetlb" in n for n in d.notes)


def test_pud_invalidated_leaf_is_unknown():
    # pud_mkinvalid (pgtable.h:-/814/763) of P|RW|US|A|D|PSE|NX at 1 GiB: P and PROTNONE cleared,
    # pfn_pud inverts: ~(0x40000 << 12) & PHYSICAL_PUD_PAGE_MASK = 0x000FFFFF80000000.
    d = ARCH.decode(0x800FFFFF800000E6, PUD4, MODE_4, full("7.2"))
    assert d.kind is Kind.UNKNOWN and "pud_mkinvalid" in d.reason
    assert dict(d.fields)["pfn if an invalidated leaf"] == "0x40000"


# ---------------------------------------------------------------- present leaves and tables


def test_user_4k_leaf():
    # PAGE_SHARED = P|RW|USR|A|NX (pgtable_types.h:183/207/206), pfn 0x12345,
    # pte_mkdirty sets D|SOFT_DIRTY (pgtable.h:329/484/445): 0x8000000012345867.
    d = ARCH.decode(0x8000000012345867, PTE4, MODE_4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x12345 and d.size == 4096 and d.pfn_space == "phys"
    assert d.flags == ("_PAGE_PRESENT", "_PAGE_RW", "_PAGE_USER", "_PAGE_ACCESSED", "_PAGE_DIRTY",
                       "_PAGE_SOFT_DIRTY", "_PAGE_NX")
    a = d.access
    assert (a.read, a.write, a.exec, a.user, a.young, a.dirty) == (True, True, False, True, True, True)
    assert dict(d.fields)["cache"].startswith("WB (PAT slot 0")
    prot = Prot(write=True, exec=False, user=True, young=True, dirty=True)
    for family in ("6.1", "6.12", "7.2"):
        assert MODEL.mk_leaf(0x12345, PTE4, MODE_4, prot, L(family)) == 0x8000000012345867


def test_kernel_2m_leaf():
    # __PAGE_KERNEL_LARGE = P|RW|A|NX|D|PSE|G (pgtable_types.h:201/233/229) at PA 1 GiB.
    d = ARCH.decode(0x80000000400001E3, PMD4, MODE_4, full("6.12"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x40000 and d.size == 1 << 21
    assert d.flags == ("_PAGE_PRESENT", "_PAGE_RW", "_PAGE_ACCESSED", "_PAGE_DIRTY", "_PAGE_PSE",
                       "_PAGE_GLOBAL", "_PAGE_NX")
    assert not d.access.user and d.access.write and not d.access.exec


def test_user_1g_leaf():
    # P|RW|US|A|D|PSE at PA 0x140000000; pud_pfn uses PHYSICAL_PUD_PAGE_MASK (pgtable_types.h:407/437/433).
    d = ARCH.decode(0x00000001400000E7, PUD4, MODE_4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x140000 and d.size == 1 << 30
    assert d.access.exec and d.access.user


def test_huge_leaf_pat_large_and_cache():
    # PAT_LARGE (bit 12) | PCD | PWT = PAT slot 7: WT in Linux's PAT (memtype.c:404/344/345);
    # with the PAT of a PAT-less boot, PAT_VALUE(WB, WT, UC_MINUS, UC, ...) = 0x0007040600070406,
    # slot 7 is UC (memtype.c:283, 7.2).
    raw = 0x80000000400011FB
    d = ARCH.decode(raw, PMD4, MODE_4, full("7.2"))
    assert d.pfn == 0x40000
    assert "_PAGE_PAT_LARGE" in d.flags and "_PAGE_PCD" in d.flags and "_PAGE_PWT" in d.flags
    assert dict(d.fields)["cache"].startswith("WT (PAT slot 7")
    d = ARCH.decode(raw, PMD4, MODE_4, full("7.2", IA32_PAT=0x0007040600070406))
    assert dict(d.fields)["cache"] == "UC (PAT slot 7, IA32_PAT)"


def test_4k_pat_bit_is_bit_7():
    d = ARCH.decode(0x8000000012345000 | 0x80 | 0x27, PTE4, MODE_4, full("7.2"))
    assert "_PAGE_PAT" in d.flags and "_PAGE_PSE" not in d.flags
    assert dict(d.fields)["cache"].startswith("WB (PAT slot 4")


def test_reserved_bits_in_huge_leaf_noted():
    d = ARCH.decode(0x80000000400021E3, PMD4, MODE_4, full("7.2"))
    assert d.pfn == 0x40000 and any("reserved bits 0x2000" in n for n in d.notes)


def test_pkey_field():
    # _PAGE_BIT_PKEY_BIT0..3 = 59..62 (pgtable_types.h:25/26/26); pte_flags_pkey >> 59.
    d = ARCH.decode(0xA800000012345867, PTE4, MODE_4, full("7.2"))
    assert dict(d.fields)["pkey"] == "5" and d.pfn == 0x12345


def test_table_entry():
    # _PAGE_TABLE = P|RW|USR|A|D (pgtable_types.h:196/225/221); pmd_populate (pgalloc.h:68/68/66).
    d = ARCH.decode(0x0000000123456067, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.TABLE and d.next_table == 0x123456000 and d.size == 1 << 21
    assert d.flags == ("_PAGE_PRESENT", "_PAGE_RW", "_PAGE_USER", "_PAGE_ACCESSED", "_PAGE_DIRTY")
    assert MODEL.mk_table(0x123456000, PMD4, MODE_4) == 0x0000000123456067


def test_physical_mask_narrows_pfn():
    # SME clears the C-bit from physical_mask (ENCODINGS.md §2.2); bit 47 here.
    f = full("7.2", physical_mask=((1 << 52) - 1) & ~(1 << 47))
    d = ARCH.decode(0x0000800123456063, PMD4, MODE_4, f)
    assert d.next_table == 0x123456000 and dict(d.fields)["outside physical_mask"] == "0x800000000000"
    d = ARCH.decode(0x8000800012345867, PTE4, MODE_4, f)
    assert d.pfn == 0x12345
    assert ARCH.decode(0x8000800012345867, PTE4, MODE_4, full("7.2")).pfn == 0x800012345


# ---------------------------------------------------------------- PROT_NONE and invalidated huge leaves


def test_protnone_pmd():
    # pfn_pmd(0x12200, PAGE_NONE) | _PAGE_PSE: PFN inverted over PHYSICAL_PMD_PAGE_MASK
    # (pgtable.h:586/792/741) = 0x000FFFFFEDC00000, | 0x120 | 0x80.
    raw = 0x000FFFFFEDC001A0
    d = ARCH.decode(raw, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x12200 and d.size == 1 << 21
    assert not d.access.read and "_PAGE_PROTNONE" in d.flags and "_PAGE_PAT_LARGE" not in d.flags
    assert MODEL.mk_leaf(0x12200, PMD4, MODE_4, Prot(protnone=True), L("7.2")) == raw


def test_invalidated_pmd_is_present():
    # pmd_mkinvalid (pgtable.h:602/808/757) of P|RW|US|A|D|PSE|NX at 0x12200000.
    d = ARCH.decode(0x800FFFFFEDC000E6, PMD4, MODE_4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x12200 and d.access.read and d.access.write
    assert any("pmd_mkinvalid" in n for n in d.notes)
    assert MODEL.pte_present(0x800FFFFFEDC000E6, PMD4, MODE_4, L("7.2"))


def test_hugetlb_protnone_pud_after_pte_modify():
    # huge_pte_modify = pte_modify (pgtable.h:610/822/771) of 0x1400000E7 with PAGE_NONE:
    # keep _PAGE_CHG_MASK -> 0x1400000E0, | G -> 0x1400001E0, flip_protnone_guard over
    # PTE_PFN_MASK -> 0x000FFFFEBFFFF1E0, then pte_mksaveddirty (old W=1) moves D to bit 58.
    raw = 0x040FFFFEBFFFF1A0
    d = ARCH.decode(raw, PUD4, MODE_4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x140000 and d.size == 1 << 30
    assert d.flags == ("_PAGE_ACCESSED", "_PAGE_PSE", "_PAGE_PROTNONE", "_PAGE_SAVED_DIRTY")
    assert d.access.dirty and d.access.young and not d.access.read
    assert dict(d.fields)["cache"].startswith("WB (PAT slot 0")


def test_protnone_without_pse_at_pmd_is_unknown():
    assert ARCH.decode(0x000FFFFFEDC00120, PMD4, MODE_4, full("7.2")).kind is Kind.UNKNOWN


# ---------------------------------------------------------------- none and the A/D erratum


@pytest.mark.parametrize("raw", [0x0, 0x20, 0x40, 0x60])
@pytest.mark.parametrize("depth", [PTE4, PMD4, PUD4, PGD4])
def test_ad_only_is_none(raw, depth):
    # pte/pmd/pud/p4d_none mask _PAGE_KNL_ERRATUM_MASK (pgtable.h:724,789,829,870/991,1064,1111,1145/940,1006,1037,1071).
    d = ARCH.decode(raw, depth, MODE_4, full("7.2"))
    assert d.kind is Kind.NONE
    assert MODEL.pte_none(raw, depth, MODE_4)
    if raw:
        assert any("Knights Landing" in n for n in d.notes)


def test_5level_root_none_is_exact():
    # pgd_none is !val with LA57 (pgtable.h:947/1222/1148); p4d_none masks A/D.
    assert ARCH.decode(0x0, PGD5, MODE_5, full("7.2")).kind is Kind.NONE
    d = ARCH.decode(0x20, PGD5, MODE_5, full("7.2"))
    assert d.kind is Kind.UNKNOWN and "pgd_none" in d.reason
    assert not MODEL.pte_none(0x20, PGD5, MODE_5)
    assert ARCH.decode(0x20, P4D5, MODE_5, full("7.2")).kind is Kind.NONE


# ---------------------------------------------------------------- per-version bits 57 / 58


def leaf_with(bits):
    return 0x8000000012345025 | bits  # P|US|A|NX, read-only, clean


@pytest.mark.parametrize("family,names,dirty", [
    ("6.1", ("_PAGE_DEVMAP",), False),  # _PAGE_BIT_SOFTW4 58 = DEVMAP (pgtable_types.h:24,35)
    ("6.12", ("_PAGE_DEVMAP", "_PAGE_SAVED_DIRTY"), True),  # 57 DEVMAP, 58 SAVED_DIRTY (-/24,36,39)
    ("7.2", ("_PAGE_SOFTW4", "_PAGE_SAVED_DIRTY"), True),  # DEVMAP removed (-/-/24,39)
    (None, ("SW bit 57 (meaning depends on kernel version)",
            "SW bit 58 (meaning depends on kernel version)"), False),
])
def test_bits_57_58_on_leaves(family, names, dirty):
    d = ARCH.decode(leaf_with(1 << 57 | 1 << 58), PTE4, MODE_4, full(family) if family else facts(None))
    assert d.flags[-1 - len(names):-1] == names
    assert d.access.dirty is dirty
    if family == "6.1":
        assert any("57" in n and "no kernel definition" in n for n in d.notes)
    if family is None:
        assert any("_PAGE_SAVED_DIRTY" in n for n in d.notes)


def test_bit58_on_tables():
    raw = 0x0000000001000067 | 1 << 58
    assert "_PAGE_NOPTISHADOW" in ARCH.decode(raw, PGD4, MODE_4, full("7.2")).flags
    assert "_PAGE_NOPTISHADOW" in ARCH.decode(raw, P4D5, MODE_5, full("6.13")).flags
    # Mainline 6.12 has _PAGE_BIT_SOFTW5 but not _PAGE_NOPTISHADOW (d0ceea662d45 is 6.13);
    # the 6.6.y/6.12.y stable backport is named in a note.
    d = ARCH.decode(raw, P4D5, MODE_5, full("6.12"))
    assert "_PAGE_SOFTW5" in d.flags and any("d0ceea662d45" in n for n in d.notes)
    assert "_PAGE_SOFTW5" in ARCH.decode(raw, PMD4, MODE_4, full("7.2")).flags
    assert "_PAGE_SOFTW4" in ARCH.decode(raw, PGD4, MODE_4, full("6.1")).flags


def test_saved_dirty_from_model():
    # 6.12/7.2 pte_mkdirty on a read-only PTE moves D to SavedDirty (mksaveddirty_shift, pgtable.h:-/404/365).
    prot = Prot(write=False, dirty=True)
    raw72 = MODEL.mk_leaf(0x12345, PTE4, MODE_4, prot, L("7.2"))
    raw61 = MODEL.mk_leaf(0x12345, PTE4, MODE_4, prot, L("6.1"))
    assert raw72 == 0x8000000012345825 | 1 << 58 and raw61 == 0x8000000012345865
    assert ARCH.decode(raw72, PTE4, MODE_4, full("7.2")).access.dirty
    assert ARCH.decode(raw61, PTE4, MODE_4, full("6.1")).access.dirty


def test_shadow_stack_write():
    raw = 0x8000000012345065  # RW=0, D=1
    assert ARCH.decode(raw, PTE4, MODE_4, full("7.2", X86_FEATURE_SHSTK=True)).access.write
    assert not ARCH.decode(raw, PTE4, MODE_4, full("7.2", X86_FEATURE_SHSTK=False)).access.write
    d = ARCH.decode(raw, PTE4, MODE_4, full("7.2"))
    assert not d.access.write and any("X86_FEATURE_SHSTK" in n for n in d.notes)
    d = ARCH.decode(raw, PTE4, MODE_4, full("6.1"))
    assert not d.access.write and not any("shadow" in n for n in d.notes)


def test_bit11_on_kernel_leaf_in_72():
    raw = 0x8000000012345963  # P|RW|A|D|G|SOFTW3, no _PAGE_USER
    d = ARCH.decode(raw, PTE4, MODE_4, full("7.2"))
    assert "_PAGE_SOFTW3" in d.flags and any("_PAGE_KERNEL_4K" in n for n in d.notes)
    assert "_PAGE_SOFT_DIRTY" in ARCH.decode(raw, PTE4, MODE_4, full("6.12")).flags


# ---------------------------------------------------------------- modes, registers, canonical, top levels


def test_mode_geometry():
    assert [(lv.name, lv.hw, lv.shift) for lv in MODE_4.levels] == [
        ("pgd", "PML4", 39), ("pud", "PDPT", 30), ("pmd", "PD", 21), ("pte", "PT", 12)]
    assert [(lv.name, lv.hw, lv.shift) for lv in MODE_5.levels] == [
        ("pgd", "PML5", 48), ("p4d", "PML4", 39), ("pud", "PDPT", 30), ("pmd", "PD", 21), ("pte", "PT", 12)]
    assert all(lv.entries == 512 for lv in MODE_4.levels + MODE_5.levels)
    assert (MODE_4.va_bits, MODE_5.va_bits, MODE_4.pa_bits) == (48, 57, 52)
    assert "la57" in MODE_5.options and ARCH.mode("5-level") is MODE_5
    with pytest.raises(ValueError, match="4-level"):
        ARCH.mode("sv48")


def test_mode_from_registers():
    cr0, efer = 0x80050033, 0xD01  # PG, LME|LMA|NXE|SCE
    assert ARCH.mode_from_registers({"cr4": 0x3506F0, "cr0": cr0, "efer": efer}) is MODE_4
    assert ARCH.mode_from_registers({"cr4": 0x3516F0}) is MODE_5  # bit 12 LA57
    with pytest.raises(ValueError, match="CR0.PG"):
        ARCH.mode_from_registers({"cr4": 0x3506F0, "cr0": 0x50033})
    with pytest.raises(ValueError, match="EFER.LMA"):
        ARCH.mode_from_registers({"cr4": 0x3506F0, "efer": 0x901})  # NXE|LME|SCE, no LMA
    with pytest.raises(ValueError, match="CR4"):
        ARCH.mode_from_registers({"cr0": cr0})
    with pytest.raises(ValueError, match="CR4.PAE"):
        ARCH.mode_from_registers({"cr4": 0x3506D0})  # bit 5 clear


def test_canonical():
    assert ARCH.canonical(MODE_4, 0x800000000000, True) == 0xFFFF800000000000
    assert ARCH.canonical(MODE_5, 1 << 56, True) == 0xFF00000000000000
    assert ARCH.canonical(MODE_4, 0x7FFFFFFFF000, False) == 0x7FFFFFFFF000
    # one root translates both halves: bit 47 (56 with LA57) alone decides (Intel SDM 3.4.7.1)
    assert ARCH.canonical(MODE_4, 0x1000, True) == 0x1000
    assert ARCH.canonical(MODE_4, 0x800000000000, False) == 0xFFFF800000000000


def test_5level_tables_and_spans():
    raw = 0x0000000001000067
    assert ARCH.decode(raw, PGD5, MODE_5, full("7.2")).size == 1 << 48
    d = ARCH.decode(raw, P4D5, MODE_5, full("7.2"))
    assert d.kind is Kind.TABLE and d.size == 1 << 39 and d.next_table == 0x1000000
    assert ARCH.decode(raw, PGD4, MODE_4, full("7.2")).size == 1 << 39


def test_top_levels_never_leaf_or_softleaf():
    assert "PS (bit 7)" in ARCH.decode(0x00000000400000E7, PGD4, MODE_4, full("7.2")).reason
    assert ARCH.decode(0x07FFFFFFFFDB9600, PGD4, MODE_4, full("7.2")).kind is Kind.UNKNOWN
    assert ARCH.decode(0x07FFFFFFFFDB9600, P4D5, MODE_5, full("7.2")).kind is Kind.UNKNOWN


def test_bad_depth_and_value_do_not_raise():
    assert ARCH.decode(0, 7, MODE_4, facts(None)).kind is Kind.UNKNOWN
    assert ARCH.decode(1 << 64, PTE4, MODE_4, facts(None)).kind is Kind.UNKNOWN


def test_kernel_view_and_user_pgd():
    assert ARCH.kernel_view([1, 2, 3], 1, PTE4, MODE_4, facts(None)) == 2
    assert MODEL.ptep_get([1, 2, 3], 1, PTE4, MODE_4, release_layout("7.2", "x86_64")) == 2
    assert MODEL.mk_block(1, PTE4, MODE_4, Prot(), L("7.2")) == []
    assert ARCH.user_pgd(0x1234000) == 0x1235000  # PTI_PGTABLE_SWITCH_BIT = PAGE_SHIFT
    with pytest.raises(ValueError):
        ARCH.user_pgd(0x1235000)


def test_model_memtypes():
    # _PAGE_CACHE_MODE_UC_MINUS = PCD, _PAGE_CACHE_MODE_UC = PWT|PCD (arch/x86/mm/init.c:57-58/57-58/58-59)
    nc = MODEL.mk_leaf(0x12345, PTE4, MODE_4, Prot(memtype="nc"), L("7.2"))
    io = MODEL.mk_leaf(0x12345, PTE4, MODE_4, Prot(memtype="io"), L("7.2"))
    assert nc & 0x18 == 0x10 and io & 0x18 == 0x18
    assert dict(ARCH.decode(nc, PTE4, MODE_4, full("7.2")).fields)["cache"].startswith("UC- (PAT slot 2")
    assert dict(ARCH.decode(io, PTE4, MODE_4, full("7.2")).fields)["cache"].startswith("UC (PAT slot 3")
    with pytest.raises(ValueError):
        MODEL.mk_leaf(0x12345, PTE4, MODE_4, Prot(memtype="wc"), L("7.2"))


# ---------------------------------------------------------------- properties

MODES_DEPTHS = [(m, d) for m in (MODE_4, MODE_5) for d in range(len(m.levels))]
FACT_SETS = [facts(None), facts("7.2"), full("5.10"), full("6.1"), full("6.6"), full("6.12"), full("7.2"), full("7.3"),
             full("7.2", physical_mask=(1 << 46) - 1, X86_FEATURE_SHSTK=True, IA32_PAT=0x0007040600070406)]
raw64 = st.one_of(
    st.integers(0, (1 << 64) - 1),
    st.integers(0, 0x1FF).map(lambda lo: lo | 0x000FFFFFFFFFF000),  # PROT_NONE-like / inverted
    st.integers(0, 0x1FF),
)


@settings(max_examples=2000, deadline=None)
@given(raw=raw64, md=st.sampled_from(MODES_DEPTHS), f=st.sampled_from(FACT_SETS))
def test_decode_never_raises_and_is_consistent(raw, md, f):
    mode, depth = md
    d = ARCH.decode(raw, depth, mode, f)
    assert isinstance(d.kind, Kind) and d.level == mode.levels[depth].name
    if d.kind is Kind.UNKNOWN:
        assert d.reason
    if d.kind is Kind.PRESENT:
        assert d.access is not None and d.pfn is not None and d.size in (1 << 12, 1 << 21, 1 << 30)
    if d.kind is Kind.TABLE:
        assert d.next_table is not None and d.next_table % 4096 == 0
    if d.kind in SOFTLEAF_KINDS:
        assert d.softleaf is not None
    if mode.levels[depth].name == "pte":
        # The kernel's own predicates decide none / present / softleaf at PTE level.
        assert (d.kind is Kind.NONE) == MODEL.pte_none(raw, depth, mode)
        present = not MODEL.pte_none(raw, depth, mode) and MODEL.pte_present(raw, depth, mode, L("7.2"))
        assert (d.kind is Kind.PRESENT) == present
    if d.kind is Kind.PRESENT:
        assert MODEL.pte_present(raw, depth, mode, L("7.2"))
        if f.get("physical_mask") is None:
            assert d.pfn == MODEL.leaf_pfn(raw, depth, mode)


# Every layout change of FEATURES on both sides: 5.10 (no exclusive bit), 5.19, 6.1, 6.5/6.6
# (saved dirty), 6.12, 6.13 (NOPTISHADOW), 6.15 (KERNEL_4K), 6.17 (no DEVMAP), 7.2, 7.3 (_PAGE_UFFD).
RELEASES = ["5.10", "5.19", "6.1", "6.5", "6.6", "6.12", "6.13", "6.15", "6.17", "7.2", "7.3"]
LEAF_DEPTHS = [(m, d) for m in (MODE_4, MODE_5) for d in range(len(m.levels)) if m.levels[d].leaf]
prots = st.builds(Prot, write=st.booleans(), exec=st.booleans(), user=st.booleans(),
                  young=st.booleans(), dirty=st.booleans(), protnone=st.booleans(),
                  memtype=st.sampled_from(["normal", "nc", "io"]))


@settings(max_examples=1000, deadline=None)
@given(pfn=st.integers(0, (1 << 40) - 1), md=st.sampled_from(LEAF_DEPTHS), prot=prots,
       family=st.sampled_from(RELEASES))
def test_model_leaf_agrees_with_decoder(pfn, md, prot, family):
    mode, depth = md
    raw = MODEL.mk_leaf(pfn, depth, mode, prot, L(family))
    d = ARCH.decode(raw, depth, mode, full(family))
    level = mode.levels[depth]
    assert d.kind is Kind.PRESENT and d.size == level.span
    assert d.pfn == MODEL.leaf_pfn(raw, depth, mode) == pfn & ~((level.span >> 12) - 1)
    a = d.access
    live = not prot.protnone
    assert (a.read, a.write, a.exec) == (live, live and prot.write, live and prot.exec)
    assert a.user == (live and prot.user)
    assert (a.young, a.dirty) == (prot.young, prot.dirty)
    assert ("PROT_NONE" in " ".join(d.notes)) == prot.protnone
    assert MODEL.pte_present(raw, depth, mode, L(family)) and not MODEL.pte_none(raw, depth, mode)
    assert MODEL.softleaf_from_pte(raw, depth, mode, L(family)) is None


@settings(max_examples=1000, deadline=None)
@given(t=st.integers(0, 31), off=st.integers(0, (1 << 50) - 1), md=st.sampled_from(LEAF_DEPTHS),
       flags=st.tuples(st.booleans(), st.booleans(), st.booleans()),
       family=st.sampled_from(RELEASES))
def test_model_softleaf_agrees_with_decoder(t, off, md, flags, family):
    mode, depth = md
    level = mode.levels[depth].name
    exclusive = flags[0] and level != "pmd" and L(family).has("x86_swp_exclusive")
    fields = SwpFields(t, off, exclusive=exclusive, soft_dirty=flags[1], uffd_wp=flags[2])
    raw = MODEL.mk_softleaf(fields, depth, mode, L(family))
    d = ARCH.decode(raw, depth, mode, full(family))
    if MODEL.pte_none(raw, depth, mode):  # type 0, offset 2^50-1 encodes to (nearly) 0 (mm/swapfile.c:3437, 7.2)
        assert d.kind is Kind.NONE
        return
    assert d.kind in SOFTLEAF_KINDS or d.kind is Kind.UNKNOWN
    assert (d.softleaf.type, d.softleaf.offset) == (t, off)
    assert MODEL.softleaf_from_pte(raw, depth, mode, L(family)) == fields
    uffd = "_PAGE_SWP_UFFD" if L(family).has("uffd_rwp") else "_PAGE_SWP_UFFD_WP"  # renamed in 7.3
    expected = tuple(n for n, on in (("_PAGE_SWP_SOFT_DIRTY", flags[1]), (uffd, flags[2]),
                                     ("_PAGE_SWP_EXCLUSIVE", exclusive)) if on)
    assert d.softleaf.arch_flags == expected
