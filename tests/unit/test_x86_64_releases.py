"""x86-64 decoding per release, 5.10 to 7.3: what each layout change of archs/x86_64.FEATURES means.

Expected values are read from the headers of /work/ksrc/<release> (Debian's linux-source:
5.10.223, 6.1.176, 6.12.117, 7.2.13, 7.3.4), cited by file and symbol; in-between releases
take the mainline boundaries of the FEATURES table.
"""
from __future__ import annotations

import pytest

from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.versions import release_layout
from ptinspect.archs.x86_64 import ARCH, FEATURES, MODE_4, MODE_5, reserved_bits
from ptinspect.inspector.facts import build_facts
from ptinspect.inspector.model.base import Prot, SwpFields
from ptinspect.inspector.model.x86_64 import MODEL

PTE4, PMD4, PGD4 = 3, 2, 0
P4D5 = 1
CONFIG = ["CONFIG_MEMORY_FAILURE=y", "CONFIG_MIGRATION=y", "CONFIG_DEVICE_PRIVATE=y",
          "CONFIG_MEM_SOFT_DIRTY=y", "CONFIG_HAVE_ARCH_USERFAULTFD_WP=y", "CONFIG_PTE_MARKER=y"]


def facts(release: str | None, *extra: str) -> KernelFacts:
    return build_facts("x86_64", release, config=CONFIG, named=extra)


def L(release: str):
    return release_layout(release, "x86_64")


def swp(t: int, off: int) -> int:
    """__swp_entry(t, o) = (~o << SWP_OFFSET_SHIFT >> SWP_TYPE_BITS) | t << 59 (pgtable_64.h, 5.10..7.3)."""
    return (t << 59) | ((((1 << 50) - 1) ^ off) << 9)


def leaf_with(bits: int) -> int:
    return 0x8000000012345025 | bits  # P|US|A|NX, read-only, clean


def test_feature_table_is_well_formed():
    names = [f.name for f in FEATURES]
    assert len(names) == len(set(names)) and all(n.startswith("x86_") for n in names)
    for f in FEATURES:
        assert f.source and f.commit
        assert f.until is None or (f.until > f.since and f.removed_by)


def test_every_release_has_a_layout():
    for minor in range(10, 20):
        L(f"5.{minor}")
    for minor in range(0, 20):
        L(f"6.{minor}")
    for minor in range(0, 4):
        L(f"7.{minor}")


# ---------------------------------------------------------------- 5.10 (Debian 5.10.223 headers)


def test_510_swap_types():
    # include/linux/swap.h 5.10: MAX_SWAPFILES = 32 - SWP_DEVICE_NUM 2 - SWP_MIGRATION_NUM 2
    # - SWP_HWPOISON_NUM 1 = 27; HWPOISON 27, MIGRATION_READ/WRITE 28/29, DEVICE_WRITE/READ 30/31.
    f = facts("5.10")
    for t, kind, space in [(27, Kind.HWPOISON, "phys"), (28, Kind.MIGRATION_READ, "phys"),
                           (29, Kind.MIGRATION_WRITE, "phys"), (30, Kind.DEVICE_PRIVATE_WRITE, "device"),
                           (31, Kind.DEVICE_PRIVATE_READ, "device")]:
        d = ARCH.decode(swp(t, 0x12345), PTE4, MODE_4, f)
        assert d.kind is kind and d.pfn == 0x12345 and d.pfn_space == space
    assert ARCH.decode(swp(26, 0x99), PTE4, MODE_4, f).kind is Kind.SWAP


def test_510_has_no_swap_exclusive_bit():
    # 5.10 pgtable_64_types.h has no _PAGE_SWP_EXCLUSIVE (it came with 5.19); 6.1 has _PAGE_PWT.
    raw = 0x07FFFFFFFFDB9600 | 0x8
    d = ARCH.decode(raw, PTE4, MODE_4, facts("5.10"))
    assert d.kind is Kind.SWAP and d.softleaf.val == 0x1234 and d.softleaf.arch_flags == ()
    assert any("bit(s) 3" in n and "5.19" in n for n in d.notes)
    d = ARCH.decode(raw, PTE4, MODE_4, facts("5.19"))
    assert d.softleaf.arch_flags == ("_PAGE_SWP_EXCLUSIVE",)
    with pytest.raises(ValueError, match="pte_swp_mkexclusive"):
        MODEL.mk_softleaf(SwpFields(0, 0x1234, exclusive=True), PTE4, MODE_4, L("5.10"))
    assert MODEL.softleaf_from_pte(raw, PTE4, MODE_4, L("5.10")) == SwpFields(0, 0x1234)


def test_510_bits_57_58():
    # 5.10 pgtable_types.h: _PAGE_BIT_SOFTW4 58 = _PAGE_BIT_DEVMAP, no bit-57 define, no SOFTW5;
    # pte_dirty() is _PAGE_DIRTY alone.
    d = ARCH.decode(leaf_with(1 << 57 | 1 << 58), PTE4, MODE_4, facts("5.10"))
    assert "_PAGE_DEVMAP" in d.flags and not d.access.dirty
    assert any("57" in n and "no kernel definition" in n for n in d.notes)
    assert reserved_bits(1 << 57, PTE4, MODE_4, facts("5.10"), False) == 1 << 57
    assert reserved_bits(1 << 57, PTE4, MODE_4, facts("6.6"), False) == 0
    assert "_PAGE_SOFTW4" in ARCH.decode(0x1000067 | 1 << 58, PGD4, MODE_4, facts("5.10")).flags


def test_510_no_shadow_stack_and_dirty_kernel_ro():
    raw = 0x8000000012345065  # RW=0, D=1: before 6.6 only a dirty read-only page
    d = ARCH.decode(raw, PTE4, MODE_4, facts("5.10", "X86_FEATURE_SHSTK=y"))
    assert not d.access.write and d.access.dirty and not any("shadow" in n for n in d.notes)
    # 5.10 pgtable_types.h __PAGE_KERNEL_RO = __PP|___A|__NX|___D|___G; from 6.6 without ___D.
    ro = Prot(write=False, user=False, young=True, dirty=False)
    assert MODEL.mk_leaf(0x12345, PTE4, MODE_4, ro, L("5.10")) & 0xFFF == 0x121  # mkclean drops D
    assert MODEL.mk_leaf(0x12345, PTE4, MODE_4, Prot(write=False, user=False, dirty=True), L("5.10")) \
        == 0x8000000012345961  # __PP|___A|___D|___G|SOFT_DIRTY, NX, D kept (no saved dirty)
    assert MODEL.mk_leaf(0x12345, PTE4, MODE_4, Prot(write=False, user=False, dirty=True), L("6.6")) \
        == 0x8000000012345921 | 1 << 58  # D moved to _PAGE_SAVED_DIRTY


# ---------------------------------------------------------------- in-between releases


@pytest.mark.parametrize("release,leaf57,leaf58,dirty", [
    ("5.19", None, "_PAGE_DEVMAP", False),
    ("6.5", None, "_PAGE_DEVMAP", False),  # SOFTW4 still 58 until fca4d413c5f7 (6.6)
    ("6.6", "_PAGE_DEVMAP", "_PAGE_SAVED_DIRTY", True),
    ("6.16", "_PAGE_DEVMAP", "_PAGE_SAVED_DIRTY", True),
    ("6.17", "_PAGE_SOFTW4", "_PAGE_SAVED_DIRTY", True),  # DEVMAP removed by d438d2734170
    ("7.3", "_PAGE_SOFTW4", "_PAGE_SAVED_DIRTY", True),
])
def test_bits_57_58_per_release(release, leaf57, leaf58, dirty):
    d = ARCH.decode(leaf_with(1 << 57 | 1 << 58), PTE4, MODE_4, facts(release))
    expected = tuple(n for n in (leaf57, leaf58) if n)
    assert d.flags[-1 - len(expected):-1] == expected
    assert d.access.dirty is dirty


def test_shadow_stack_from_66():
    raw = 0x8000000012345065
    assert ARCH.decode(raw, PTE4, MODE_4, facts("6.6", "X86_FEATURE_SHSTK=y")).access.write
    assert not ARCH.decode(raw, PTE4, MODE_4, facts("6.5", "X86_FEATURE_SHSTK=y")).access.write


def test_noptishadow_from_613():
    raw = 0x0000000001000067 | 1 << 58
    d = ARCH.decode(raw, PGD4, MODE_4, facts("6.13"))
    assert "_PAGE_NOPTISHADOW" in d.flags and any("__pti_set_user_pgtbl" in n for n in d.notes)
    d = ARCH.decode(raw, PGD4, MODE_4, facts("6.6"))
    assert "_PAGE_SOFTW5" in d.flags and any("d0ceea662d45" in n for n in d.notes)


def test_kernel_4k_from_615():
    # pgtable_types.h _PAGE_BIT_KERNEL_4K = _PAGE_BIT_SOFTW3 (7.2; absent in 6.12).
    raw = 0x8000000012345963  # P|RW|A|D|G|SOFTW3, no _PAGE_USER
    d = ARCH.decode(raw, PTE4, MODE_4, facts("6.15"))
    assert "_PAGE_SOFTW3" in d.flags and any("_PAGE_KERNEL_4K" in n for n in d.notes)
    d = ARCH.decode(raw, PTE4, MODE_4, facts("6.14"))
    assert "_PAGE_SOFT_DIRTY" in d.flags and not any("_PAGE_KERNEL_4K" in n for n in d.notes)


# ---------------------------------------------------------------- 7.3 (Debian 7.3.4 headers)


def test_73_uffd_names():
    # 7.3 pgtable_types.h: _PAGE_BIT_UFFD = _PAGE_BIT_SOFTW2 ("userfaultfd tracking"),
    # _PAGE_SWP_UFFD = _PAGE_USER; 7.2 names them _PAGE_UFFD_WP / _PAGE_SWP_UFFD_WP.
    leaf = 0x8000000012345425  # P|US|A|SOFTW2|NX
    assert "_PAGE_UFFD" in ARCH.decode(leaf, PTE4, MODE_4, facts("7.3")).flags
    assert "_PAGE_UFFD_WP" in ARCH.decode(leaf, PTE4, MODE_4, facts("7.2")).flags
    swap = 0x07FFFFFFFFDB9604
    assert ARCH.decode(swap, PTE4, MODE_4, facts("7.3")).softleaf.arch_flags == ("_PAGE_SWP_UFFD",)
    assert ARCH.decode(swap, PTE4, MODE_4, facts("7.2")).softleaf.arch_flags == ("_PAGE_SWP_UFFD_WP",)
    assert MODEL.mk_softleaf(SwpFields(0, 0x1234, uffd_wp=True), PTE4, MODE_4, L("7.3")) == swap


def test_73_protnone_with_uffd_is_rwp_candidate():
    # 7.3 mm/memory.c do_uffd_rwp(): a PROT_NONE PTE with the uffd bit in a VM_UFFD_RWP VMA.
    raw = 0x000FFFFFEDCBA520  # PAGE_NONE (A|G) | _PAGE_UFFD, pfn 0x12345 inverted
    d = ARCH.decode(raw, PTE4, MODE_4, facts("7.3"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x12345 and "_PAGE_UFFD" in d.flags
    assert any("VM_UFFD_RWP" in n for n in d.notes)
    assert not any("VM_UFFD_RWP" in n for n in ARCH.decode(raw, PTE4, MODE_4, facts("7.2")).notes)


def test_73_types_and_markers_as_72():
    # include/linux/swap.h SWP_* and MAX_SWAPFILES are the same in 7.2 and 7.3.
    for t, kind in [(24, Kind.HWPOISON), (27, Kind.MIGRATION_WRITE), (30, Kind.DEVICE_EXCLUSIVE)]:
        assert ARCH.decode(swp(t, 0x12345), PTE4, MODE_4, facts("7.3")).kind is kind
    d = ARCH.decode(swp(31, 4), PTE4, MODE_4, facts("7.3"))
    assert d.kind is Kind.MARKER and d.markers == ("guard",)


def test_newer_release_uses_73_layout():
    f = facts("7.9.1")
    assert f.layout.name == "7.3" and f.layout.assumed
    assert "_PAGE_UFFD" in ARCH.decode(0x8000000012345425, PTE4, MODE_4, f).flags


# ---------------------------------------------------------------- release unknown


def test_unknown_release_says_what_depends_on_it():
    f = KernelFacts(facts={"CONFIG_HAVE_ARCH_USERFAULTFD_WP": Fact(True, "test")})
    d = ARCH.decode(0x07FFFFFFFFDB9608, PTE4, MODE_4, f)
    assert d.softleaf.arch_flags == ("_PAGE_SWP_EXCLUSIVE",) and any("5.19" in n for n in d.notes)
    d = ARCH.decode(0x8000000012345065, PTE4, MODE_4, KernelFacts(facts={"X86_FEATURE_SHSTK": Fact(True, "t")}))
    assert not d.access.write and any("6.6 or later" in n for n in d.notes)
    d = ARCH.decode(0x8000000012345963, PTE4, MODE_4, KernelFacts())
    assert any("_PAGE_KERNEL_4K" in n and "6.15" in n for n in d.notes)
    assert reserved_bits(1 << 57, PTE4, MODE_4, KernelFacts(), False) == 0
    d = ARCH.decode(0x0000000001000067 | 1 << 58, P4D5, MODE_5, KernelFacts())
    assert "SW bit 58 (meaning depends on kernel version)" in d.flags
