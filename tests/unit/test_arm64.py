"""arm64 decoder and reference model against values from the kernel headers.

Expectations come from tests/data/encode-vectors.txt (compiled from the kernel's macros),
QEMU register reads, or are derived by hand from the headers with the line cited next to
them (`a/b/c` = 6.1/6.12/7.2 line numbers, paths under arch/arm64/; other releases named).
Releases are layouts (archs/versions.py release_layout), never family strings.
"""
from __future__ import annotations

import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptinspect.archs.arm64 import ARCH, build_mode, mair_attr_name, swp_pfn_bits
from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.model.arm64 import MODEL
from ptinspect.inspector.model.base import Prot, SwpFields
from tests.vectors import PATH, encode_vectors

ALL_ON = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True}


def L(release):
    """The arm64 layout of a release."""
    return release_layout(release, "arm64")


def facts(release, **values):
    layout = None if release is None else L(release)
    return KernelFacts(layout=layout, release=release, facts={k: Fact(v, "test") for k, v in values.items()})


def full(release, **extra):
    """All three type-carving options on; CONFIG_PTE_MARKER off (Debian's arm64 6.1 config has
    no PTE_MARKER: nothing selects it without HAVE_ARCH_USERFAULTFD_WP; ignored from 6.2)."""
    return facts(release, **ALL_ON, CONFIG_PTE_MARKER=False, swap_migration_ad_supported=True, **extra)


M4 = ARCH.mode("4k-48")
PTE, PMD, PUD, PGD = 3, 2, 1, 0  # depths in 4k-48


# ---------------------------------------------------------------- paging modes (ENCODINGS §3.2)

# (mode, [(name, hw, hi, lo)], PTRS_PER_PGD) from the §3.2 table, computed there with
# ARM64_HW_PGTABLE_LEVEL_SHIFT(n) = (PAGE_SHIFT-3)*(4-n)+3 (pgtable-hwdef.h:41/41/47).
VA_SPLITS = [
    ("4k-39", [("pgd", "L1", 38, 30), ("pmd", "L2", 29, 21), ("pte", "L3", 20, 12)], 512),
    ("4k-48", [("pgd", "L0", 47, 39), ("pud", "L1", 38, 30), ("pmd", "L2", 29, 21),
               ("pte", "L3", 20, 12)], 512),
    ("4k-52-lpa2", [("pgd", "L-1", 51, 48), ("p4d", "L0", 47, 39), ("pud", "L1", 38, 30),
                    ("pmd", "L2", 29, 21), ("pte", "L3", 20, 12)], 16),
    ("16k-36", [("pgd", "L2", 35, 25), ("pte", "L3", 24, 14)], 2048),
    ("16k-47", [("pgd", "L1", 46, 36), ("pmd", "L2", 35, 25), ("pte", "L3", 24, 14)], 2048),
    ("16k-48", [("pgd", "L0", 47, 47), ("pud", "L1", 46, 36), ("pmd", "L2", 35, 25),
                ("pte", "L3", 24, 14)], 2),
    ("16k-52-lpa2", [("pgd", "L0", 51, 47), ("pud", "L1", 46, 36), ("pmd", "L2", 35, 25),
                     ("pte", "L3", 24, 14)], 32),
    ("64k-42", [("pgd", "L2", 41, 29), ("pte", "L3", 28, 16)], 8192),
    ("64k-48", [("pgd", "L1", 47, 42), ("pmd", "L2", 41, 29), ("pte", "L3", 28, 16)], 64),
    ("64k-52", [("pgd", "L1", 51, 42), ("pmd", "L2", 41, 29), ("pte", "L3", 28, 16)], 1024),
]


@pytest.mark.parametrize("name,levels,ptrs_per_pgd", VA_SPLITS, ids=[r[0] for r in VA_SPLITS])
def test_va_split(name, levels, ptrs_per_pgd):
    mode = ARCH.mode(name)
    got = [(lvl.name, lvl.hw, lvl.shift + lvl.bits - 1, lvl.shift) for lvl in mode.levels]
    assert got == levels
    assert mode.levels[0].entries == ptrs_per_pgd
    assert mode.va_bits == levels[0][2] + 1


def test_every_listed_mode_has_a_row_and_round_trips_by_name():
    rows = {r[0] for r in VA_SPLITS}
    for mode in ARCH.modes():
        base = mode.name.replace("-lpa2", "").replace("-lpa", "")
        assert base in rows or base + "-lpa2" in rows
        assert ARCH.mode(mode.name) == mode
        kernel = ARCH.mode(mode.name + "-ttbr1")
        assert kernel.levels == mode.levels and kernel.options == mode.options | {"ttbr1"}


def test_leaf_levels_follow_linux():
    # PUD blocks only for 4K: pud_sect_supported() is PAGE_SIZE == SZ_4K (pgtable.h:1099/1518/1621).
    assert [lvl.leaf for lvl in M4.levels] == [False, True, True, True]
    assert [lvl.leaf for lvl in ARCH.mode("16k-48").levels] == [False, False, True, True]
    assert [lvl.leaf for lvl in ARCH.mode("64k-42").levels] == [True, True]  # pgd = folded pmd


@pytest.mark.parametrize("name", ["4k-52", "16k-52", "4k-48-lpa", "64k-48-lpa2", "64k-48-pa52",
                                  "8k-48", "4k-12", "4k-48-lpa2-pa52"])
def test_bad_mode_names(name):
    with pytest.raises(ValueError):
        ARCH.mode(name)


def test_canonical():
    assert ARCH.canonical(M4, 0x1234, upper=True) == 0xFFFF000000001234
    assert ARCH.canonical(M4, 0xFFFF000000001234, upper=False) == 0x1234
    m52 = ARCH.mode("4k-52-lpa2")
    assert ARCH.canonical(m52, 0x1234, upper=True) == 0xFFF0000000001234


# ---------------------------------------------------------------- TCR_EL1

def tcr(*, t0sz, t1sz, tg0, tg1, ips, ds=False):
    """A TCR_EL1 value from its fields (pgtable-hwdef.h 6.12: T0SZ 0 (226), T1SZ 16 (227),
    TG0 14 (289), TG1 30 (295), IPS 32 (301), DS 59 (321)) plus the flags proc.S always sets:
    TCR_CACHE_FLAGS, TCR_SHARED, TCR_EL1_AS, TCR_EL1_TBI0, TCR_EL1_A1 (mm/proc.S:501-503 in 7.2)."""
    irgn_orgn = (1 << 8) | (1 << 10) | (1 << 24) | (1 << 26)  # TCR_IRGN_WBWA | TCR_ORGN_WBWA
    shared = (3 << 12) | (3 << 28)  # TCR_SH0_INNER | TCR_SH1_INNER
    always = irgn_orgn | shared | (1 << 36) | (1 << 37) | (1 << 22)  # AS, TBI0, A1
    return (t0sz | (t1sz << 16) | (tg0 << 14) | (tg1 << 30) | (ips << 32) | (int(ds) << 59)
            | always)


# ID_AA64MMFR0_EL1 read from QEMU 7.2.22 (qemu-system-aarch64 -M virt -cpu X -S, gdbstub
# register ID_AA64MMFR0_EL1 at reset): PARange [3:0] = 6 (52 bits) for max, 4 (44) for a57.
MMFR0_MAX = 0x32310201126
MMFR0_A57 = 0x1124


def test_tcr_qemu_max_lpa2_kernel():
    # A 7.2 4K LPA2 kernel on -cpu max: ARM64_HAS_VA52 sets T1SZ(52) and TCR_EL1_DS
    # (mm/proc.S:507-515); T0SZ is TCR_T0SZ(vabits_actual) (mmu_context.h:98); IPS is
    # PARange capped at PARANGE_MAX = 52 (assembler.h:346-359).
    value = tcr(t0sz=12, t1sz=12, tg0=0b00, tg1=0b10, ips=6, ds=True)
    kernel = ARCH.mode_from_registers({"TCR_EL1": value, "ID_AA64MMFR0_EL1": MMFR0_MAX, "half": 1})
    assert kernel.name == "4k-52-lpa2-ttbr1"
    assert len(kernel.levels) == 5 and kernel.levels[0].hw == "L-1" and kernel.levels[0].entries == 16
    assert kernel.pa_bits == 52 and {"lpa2", "ttbr1"} <= kernel.options
    user = ARCH.mode_from_registers({"TCR_EL1": value, "ID_AA64MMFR0_EL1": MMFR0_MAX})
    assert user.name == "4k-52-lpa2" and "ttbr1" not in user.options


def test_tcr_qemu_cortex_a57():
    # Same kernel on cortex-a57: no VA52, so T1SZ(VA_BITS_MIN = 48) (memory.h:60) and no DS;
    # IPS = PARange 4 (44 bits), below the PARANGE_48 cap (assembler.h:353).
    value = tcr(t0sz=16, t1sz=16, tg0=0b00, tg1=0b10, ips=4)
    mode = ARCH.mode_from_registers({"TCR_EL1": value, "ID_AA64MMFR0_EL1": MMFR0_A57, "half": 1})
    assert mode.name == "4k-48-pa44-ttbr1"
    assert [lvl.name for lvl in mode.levels] == ["pgd", "pud", "pmd", "pte"]
    assert mode.pa_bits == 44 and "lpa2" not in mode.options
    assert ARCH.mode(mode.name) == mode


# Registers read over the gdbstub from QEMU 7.2.22 booting Debian's 7.2.13+deb14-cloud-arm64
# vmlinuz ("console=ttyAMA0 nokaslr", stopped after the no-root panic).
QEMU_MAX = {"TCR_EL1": 0x0D5001F6B54C350C, "TTBR0_EL1": 0x4209B000, "TTBR1_EL1": 0x4209C001,
            "MAIR_EL1": 0x40044FFFF, "ID_AA64MMFR0_EL1": MMFR0_MAX}
QEMU_A57 = {"TCR_EL1": 0x04500074B5503510, "TTBR0_EL1": 0x4209B000, "TTBR1_EL1": 0x4209C000,
            "MAIR_EL1": 0x40044FFFF, "ID_AA64MMFR0_EL1": MMFR0_A57}


def test_tcr_measured_on_qemu():
    # max: T0SZ = T1SZ = 12, TG1 = 0b10 (4K), IPS = 6, DS (bit 59) set -> 5 levels from L-1.
    mode = ARCH.mode_from_registers({**QEMU_MAX, "half": 1})
    assert mode.name == "4k-52-lpa2-ttbr1" and len(mode.levels) == 5
    # cortex-a57: T0SZ = T1SZ = 16, IPS = 4 (44 bits), DS clear -> 4 levels.
    mode = ARCH.mode_from_registers({**QEMU_A57, "half": 1})
    assert mode.name == "4k-48-pa44-ttbr1" and len(mode.levels) == 4
    # The kernel root is swapper_pg_dir; TTBR1 bit 0 is CnP.  TTBR0 holds reserved_pg_dir, which
    # vmlinux places 0x1000 below swapper_pg_dir.  The second kernel candidate is for a CPU
    # stopped at EL0 under KPTI: TTBR1 = swapper_pg_dir - TRAMP_SWAPPER_OFFSET (memory.h:213).
    for regs in (QEMU_MAX, QEMU_A57):
        assert ARCH.root_candidates(regs, upper=True) == (0x4209C000, 0x4209E000)
        assert ARCH.root_candidates(regs, upper=False) == (0x4209B000,)


def test_ttbr_52_bit_baddr():
    # phys_to_ttbr (pgtable.h:1080/1499/1590): (phys | phys >> 46) & GENMASK(47, 2); for PA
    # 0x000f00004209c000, phys >> 46 = 0x3c, so TTBR = 0x4209c03c (BADDR[51:48] in bits 5:2).
    regs = {**QEMU_MAX, "TTBR1_EL1": 0x4209C03C | (1 << 48)}  # plus an ASID bit
    assert ARCH.root_candidates(regs, upper=True)[0] == 0x000F00004209C000
    with pytest.raises(ValueError):
        ARCH.root_candidates({"TTBR1_EL1": 0x4209C000}, upper=True)  # TCR_EL1 needed


def test_tg1_encoding_differs_from_tg0():
    # TCR_TG0_4K 0, _64K 1, _16K 2; TCR_TG1_16K 1, _4K 2, _64K 3 (pgtable-hwdef.h 6.12:291-299).
    value = tcr(t0sz=17, t1sz=17, tg0=0b10, tg1=0b01, ips=5)  # both halves 16K, 47-bit
    assert ARCH.mode_from_registers({"TCR_EL1": value}).name == "16k-47"
    assert ARCH.mode_from_registers({"TCR_EL1": value, "half": 1}).name == "16k-47-ttbr1"
    value = tcr(t0sz=12, t1sz=12, tg0=0b01, tg1=0b11, ips=6)  # 64K, 52-bit VA, 52-bit PA
    assert ARCH.mode_from_registers({"TCR_EL1": value, "half": 1}).name == "64k-52-lpa-ttbr1"
    # DS is RES0 with 64K: a 64K mode never gets lpa2.
    value = tcr(t0sz=16, t1sz=16, tg0=0b01, tg1=0b11, ips=5, ds=True)
    assert ARCH.mode_from_registers({"TCR_EL1": value}).name == "64k-48"


@pytest.mark.parametrize("regs", [
    {"TCR_EL1": tcr(t0sz=16, t1sz=16, tg0=0b11, tg1=0b10, ips=5)},  # TG0 0b11 reserved
    {"TCR_EL1": tcr(t0sz=16, t1sz=16, tg0=0b00, tg1=0b00, ips=5), "half": 1},  # TG1 0b00 reserved
    {"TCR_EL1": tcr(t0sz=12, t1sz=12, tg0=0b00, tg1=0b10, ips=6), "half": 1},  # 52-bit VA without DS
    {"TCR_EL1": tcr(t0sz=16, t1sz=16, tg0=0b00, tg1=0b10, ips=5), "half": 2},
])
def test_tcr_rejects(regs):
    with pytest.raises(ValueError):
        ARCH.mode_from_registers(regs)


def test_lpa2_idmap_mode_is_buildable():
    # cpu_install_idmap uses T0SZ(IDMAP_VA_BITS = 48) (kernel-pgtable.h:33) while DS stays set.
    value = tcr(t0sz=16, t1sz=12, tg0=0b00, tg1=0b10, ips=6, ds=True)
    mode = ARCH.mode_from_registers({"TCR_EL1": value})
    assert mode.name == "4k-48-lpa2" and len(mode.levels) == 4 and mode.pa_bits == 52


# ---------------------------------------------------------------- software leaves (encode-vectors)

ARM64_VECTORS = [v for v in encode_vectors() if v.arch.startswith("arm64")]


def test_vectors_found():
    assert len(ARM64_VECTORS) == 14  # 7 vectors x the 6.1 and 6.12/7.2 swap layouts: none lost to parsing


@pytest.mark.parametrize("v", ARM64_VECTORS, ids=lambda v: f"{v.arch}:{v.title[:30]}")
def test_encode_vectors_decode(v):
    for family in (["6.1"] if v.arch == "arm64 6.1" else ["6.12", "7.2", "7.3"]):
        d = ARCH.decode(v.pte, PTE, M4, full(family))
        assert (d.softleaf.type, d.softleaf.offset) == (v.type, v.offset)
        assert MODEL.mk_softleaf(SwpFields(v.type, v.offset), PTE, M4, L(family)) == v.pte
        assert MODEL.softleaf_from_pte(v.pte, PTE, M4, L(family)) == SwpFields(v.type, v.offset)


def test_plain_swap_entries():
    # encode-vectors.txt: swapfile 0 slot 0x1234; swapfile 1 slot 0.
    for family, raw in (("6.1", 0x123400), ("6.12", 0x1234000), ("7.2", 0x1234000)):
        d = ARCH.decode(raw, PTE, M4, full(family))
        assert d.kind is Kind.SWAP and d.softleaf.val == 0x1234
    for family, raw in (("6.1", 0x8), ("7.2", 0x40)):
        d = ARCH.decode(raw, PTE, M4, full(family))
        assert d.kind is Kind.SWAP and d.softleaf.val == 0x0400000000000000


def test_swap_flag_bits():
    # PTE_SWP_EXCLUSIVE bit 2 (pgtable-prot.h:17), PTE_SWP_UFFD_WP bit 3 (-/31/32).
    d = ARCH.decode(0x1234000 | 0b1100, PTE, M4, full("7.2"))
    assert d.kind is Kind.SWAP and d.flags == ("PTE_SWP_EXCLUSIVE", "PTE_SWP_UFFD_WP")
    assert d.softleaf.val == 0x1234
    d = ARCH.decode(0x123400 | 0b100, PTE, M4, full("6.1"))
    assert d.flags == ("PTE_SWP_EXCLUSIVE",) and d.softleaf.val == 0x1234
    assert MODEL.mk_softleaf(SwpFields(0, 0x1234, exclusive=True, uffd_wp=True), PTE, M4, L("7.2")) == 0x123400C
    with pytest.raises(ValueError):
        MODEL.mk_softleaf(SwpFields(0, 1, uffd_wp=True), PTE, M4, L("6.1"))  # no uffd-wp on 6.1 arm64
    with pytest.raises(ValueError):
        MODEL.mk_softleaf(SwpFields(0, 1, soft_dirty=True), PTE, M4, L("7.2"))  # no soft-dirty


def test_migration_write_young_dirty_7_2():
    # encode-vectors.txt: 7.2 migration-write (type 27), pfn 0x12345, young+dirty at
    # SWP_PFN_BITS = 48 - 12 = 36 / 37 (ENCODINGS §1.3 arm64 row); 7.2 MF+MIG+DP: 27 = MIG_WRITE.
    for depth, level in ((PTE, "pte"), (PMD, "pmd")):
        d = ARCH.decode(0x00030000123456C0, depth, M4, full("7.2"))
        assert d.kind is Kind.MIGRATION_WRITE and d.level == level
        assert d.pfn == 0x12345 and d.pfn_space == "phys" and not d.notes
        assert ("young", "true") in d.details and ("dirty", "true") in d.details


# 7.2 MF+MIG+DP (encode-vectors TYPES): HWPOISON 24, MIG 25/26/27, DEV W 28, R 29, EXCL 30,
# MARKER 31.  7.2 layout: type << 6 | offset << 12 (pgtable.h:1523-1532).
KINDS_7_2 = [
    (0x12345600, Kind.HWPOISON, "phys"),
    (0x12345640, Kind.MIGRATION_READ, "phys"),
    (0x12345680, Kind.MIGRATION_READ_EXCLUSIVE, "phys"),
    (0x123456C0, Kind.MIGRATION_WRITE, "phys"),
    (0x12345700, Kind.DEVICE_PRIVATE_WRITE, "device"),
    (0x12345740, Kind.DEVICE_PRIVATE_READ, "device"),
    (0x12345780, Kind.DEVICE_EXCLUSIVE, "phys"),
]


@pytest.mark.parametrize("raw,kind,space", KINDS_7_2, ids=[k[1].value for k in KINDS_7_2])
def test_pfn_kinds_7_2(raw, kind, space):
    d = ARCH.decode(raw, PTE, M4, full("7.2"))
    assert d.kind is kind and d.pfn == 0x12345 and d.pfn_space == space


def test_migration_young_only():
    # Offset bit 36 (young) = PTE bit 48; type 25 = MIG_READ: 0x640 | (0x1000012345 << 12).
    d = ARCH.decode(0x0001000012345640, PTE, M4, full("7.2"))
    assert d.kind is Kind.MIGRATION_READ and ("young", "true") in d.details and ("dirty", "false") in d.details


def test_device_exclusive_6_12():
    # 6.12 MF+MIG+DP: DEVICE_EXCLUSIVE_WRITE 29, _READ 30; same layout as 7.2 (pgtable.h:1432-1441).
    # SWP_PFN_BITS of 4k-48 is 48 - 12 with CONFIG_ARM64_PA_BITS=48 (sparsemem.h:8 in 6.1).
    for raw, access in ((0x12345740, "write"), (0x12345780, "read")):
        d = ARCH.decode(raw, PTE, M4, full("6.12", CONFIG_ARM64_PA_BITS=48))
        assert d.kind is Kind.DEVICE_EXCLUSIVE and d.pfn == 0x12345
        assert ("type", f"SWP_DEVICE_EXCLUSIVE_{access.upper()} ({access})") in d.details


def test_markers():
    # encode-vectors.txt: GUARD 0x47c0 (7.2), UFFD_WP 0x17c0 (6.12/7.2); POISONED = BIT(1):
    # type 31 << 6 | 2 << 12 = 0x27c0.
    assert ARCH.decode(0x47C0, PTE, M4, full("7.2")).markers == ("guard",)
    assert ARCH.decode(0x17C0, PTE, M4, full("6.12")).markers == ("uffd-wp",)
    d = ARCH.decode(0x27C0, PTE, M4, full("7.2"))
    assert d.kind is Kind.MARKER and d.markers == ("poison",)
    # 6.12 has no GUARD (PTE_MARKER_MASK = 3): offset 4 is a stray bit.
    d = ARCH.decode(0x47C0, PTE, M4, full("6.12"))
    assert d.kind is Kind.MARKER and d.markers == () and d.notes


def test_6_1_kinds():
    # 6.1 MF+MIG+DP (no PTE_MARKER on arm64 6.1): HWPOISON 23, MIG 24/25/26, DEV W 27, R 28,
    # EXCL W 29, R 30, SWAPIN_ERROR 31.  6.1 layout: type << 3 | offset << 8 (pgtable.h:1007-1016).
    f = full("6.1")
    assert ARCH.decode(0x12345F8, PTE, M4, f).kind is Kind.SWAPIN_ERROR  # 31 << 3 = 0xf8
    d = ARCH.decode(0x00003000012345D0, PMD, M4, f)  # MIG_WRITE 26 << 3 = 0xd0, young+dirty
    assert d.kind is Kind.MIGRATION_WRITE and d.level == "pmd" and d.pfn == 0x12345
    assert ("young", "true") in d.details and ("dirty", "true") in d.details
    assert ARCH.decode(0x12345D8, PTE, M4, f).kind is Kind.DEVICE_PRIVATE_WRITE  # 27 << 3 = 0xd8
    # encode-vectors.txt GUARD row for 6.1 (0x4f8 = type 31, offset 4) is SWAPIN_ERROR in 6.1.
    assert ARCH.decode(0x4F8, PTE, M4, f).kind is Kind.SWAPIN_ERROR


def test_unknown_when_facts_are_missing():
    bare = facts("7.2")
    d = ARCH.decode(0x123456C0, PTE, M4, bare)
    assert d.kind is Kind.UNKNOWN and "CONFIG_" in d.reason and d.softleaf.type == 27
    assert ARCH.decode(0x47C0, PTE, M4, bare).kind is Kind.MARKER  # type 31 is always the marker
    d = ARCH.decode(0x123456C0, PTE, M4, facts(None))
    assert d.kind is Kind.UNKNOWN and "release unknown" in d.reason
    # 64K without 52-bit IPS: SWP_PFN_BITS depends on CONFIG_ARM64_PA_BITS.
    m64 = ARCH.mode("64k-48")
    d = ARCH.decode(0x123456C0, 2, m64, full("7.2"))  # 64k-48 has 3 levels: depth 2 is the PTE
    # The type says the kind; where the frame ends in the offset is what is not known.
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn is None and "SWP_PFN_BITS" in dict(d.details)["pfn"]
    d = ARCH.decode(0x123456C0, 2, m64, full("7.2", CONFIG_ARM64_PA_BITS=48))
    assert d.kind is Kind.MIGRATION_WRITE and d.pfn == 0x12345


# ENCODINGS §1.3 arm64 row: SWP_PFN_BITS per granule and PA.
@pytest.mark.parametrize("name,bits", [("4k-48", 36), ("16k-47", 34), ("64k-48", 32),
                                        ("64k-48-lpa", 36), ("4k-52-lpa2", 40), ("16k-52-lpa2", 38)])
def test_swp_pfn_bits(name, bits):
    mode = ARCH.mode(name)
    assert swp_pfn_bits(mode, full("7.2", CONFIG_ARM64_PA_BITS=48)) == bits
    assert MODEL.swp_pfn_bits(mode) == bits
    assert swp_pfn_bits(mode, full("7.2", MAX_PHYSMEM_BITS=44)) == 44 - mode.page_shift


# ---------------------------------------------------------------- present leaves and tables

# _PAGE_SHARED = _PAGE_DEFAULT | USER | RDONLY | NG | PXN | UXN | WRITE (pgtable-prot.h:54/61/61)
#   _PAGE_DEFAULT = PTE_TYPE_PAGE 0x3 | PTE_AF 0x400 | PTE_SHARED 0x300 | ATTRINDX(MT_NORMAL) 0
#   = 0x703 | 0x40 | 0x80 | 0x800 | 1<<53 | 1<<54 | 1<<51 = 0x0068000000000fc3
PAGE_SHARED = 0x0068000000000FC3


def test_present_4k_page():
    raw = PAGE_SHARED | 0x12345000
    assert MODEL.mk_leaf(0x12345, PTE, M4, Prot(), L("7.2")) == raw
    d = ARCH.decode(raw, PTE, M4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x12345 and d.size == 4096
    assert d.flags == ("PTE_VALID", "PTE_USER", "PTE_RDONLY", "PTE_AF", "PTE_NG", "PTE_WRITE",
                       "PTE_PXN", "PTE_UXN")
    # writable-clean: PTE_WRITE with PTE_RDONLY (comment at pgtable-prot.h:101/121/125); pte_dirty false.
    a = d.access
    assert (a.read, a.write, a.exec, a.user, a.young, a.dirty) == (True, True, False, True, True, False)
    assert ("AttrIndx", "0 (MT_NORMAL)") in d.fields and ("SH", "Inner Shareable") in d.fields
    # DBM dirty: RDONLY cleared (pte_hw_dirty, pgtable.h:123/123/167).
    assert ARCH.decode(raw & ~0x80, PTE, M4, full("7.2")).access.dirty


def test_present_huge_blocks():
    # pmd_mkhuge clears PMD_TABLE_BIT (pgtable.h:505/581/607): 0x...fc3 -> 0x...fc1.
    raw = 0x0068000000000FC1 | 0x40000000
    assert MODEL.mk_leaf(0x40000, PMD, M4, Prot(), L("7.2")) == raw
    d = ARCH.decode(raw, PMD, M4, full("7.2"))
    assert d.kind is Kind.PRESENT and d.pfn == 0x40000 and d.size == 2 << 20 and d.level == "pmd"
    assert ("descriptor", "block (0b01)") in d.fields
    d = ARCH.decode(raw, PUD, M4, full("7.2"))  # 4K PUD block, 1 GiB (pud_sect_supported)
    assert d.kind is Kind.PRESENT and d.pfn == 0x40000 and d.size == 1 << 30
    # pmd_pfn masks with PMD_MASK (pgtable.h:517/601/630).
    d = ARCH.decode(raw | 0x5000, PMD, M4, full("7.2"))
    assert d.pfn == 0x40000 and any("below the block size" in n for n in d.notes)


def test_kernel_mapping_exec_uses_pxn_in_ttbr1():
    # _PAGE_KERNEL_ROX = (PROT_NORMAL & ~(PTE_WRITE | PTE_PXN)) | PTE_RDONLY | PTE_DIRTY
    # (pgtable-prot.h:50/57/57), PROT_NORMAL = 0x703 | PXN | UXN | WRITE -> 0x00c0000000000783.
    raw = 0x00C0000000000783 | 0x40200000
    kernel = ARCH.mode("4k-48-ttbr1")
    assert MODEL.mk_leaf(0x40200, PTE, kernel, Prot(write=False, exec=True, user=False, dirty=True), L("7.2")) == raw
    a = ARCH.decode(raw, PTE, kernel, full("7.2")).access
    assert (a.exec, a.write, a.user, a.dirty) == (True, False, False, True)
    assert not ARCH.decode(raw, PTE, M4, full("7.2")).access.exec  # user half: pte_user_exec = !UXN


def test_page_none_vectors():
    # encode-vectors.txt last line: arm64 PAGE_NONE prot bits per version.
    m = re.search(r"arm64 PAGE_NONE prot bits: 6\.1=(0x[0-9a-f]+)\s+6\.12/7\.2=(0x[0-9a-f]+)", PATH.read_text())
    assert m, "PAGE_NONE line missing from encode-vectors.txt"
    expected = {"6.1": int(m.group(1), 16), "6.12": int(m.group(2), 16), "7.2": int(m.group(2), 16)}
    assert expected == {"6.1": 0x0460000000000F82, "6.12": 0x0060000000000F82, "7.2": 0x0060000000000F82}
    for family, prot_none in expected.items():
        assert MODEL.mk_leaf(0, PTE, M4, Prot(protnone=True), L(family)) == prot_none
        d = ARCH.decode(prot_none | 0x12345000, PTE, M4, full(family))
        assert d.kind is Kind.PRESENT and "PROT_NONE" in d.notes and d.pfn == 0x12345
        assert (d.access.read, d.access.write, d.access.exec) == (False, False, False)
        assert "PTE_VALID" not in d.flags
    assert "PTE_PROT_NONE" in ARCH.decode(expected["6.1"], PTE, M4, full("6.1")).flags
    assert "PTE_PRESENT_INVALID" in ARCH.decode(expected["7.2"], PTE, M4, full("7.2")).flags


def test_prot_none_pmd():
    # pfn_pmd(pfn, PAGE_NONE) then pmd_mkhuge clears bit 1: 0x...f82 -> 0x...f80.
    raw = 0x0060000000000F80 | 0x40000000
    assert MODEL.mk_leaf(0x40000, PMD, M4, Prot(protnone=True), L("7.2")) == raw
    d = ARCH.decode(raw, PMD, M4, full("7.2"))
    assert d.kind is Kind.PRESENT and "PROT_NONE" in d.notes and d.size == 2 << 20


def test_present_invalid_thp_is_present_not_protnone():
    # 6.12+: pmd_mkinvalid = set PTE_PRESENT_INVALID (nG), clear VALID (pgtable.h:-/281/326);
    # pte_protnone also needs !PTE_USER && PTE_UXN (-/546/571), and PTE_USER is set here.
    raw = 0x0068000040000FC0
    d = ARCH.decode(raw, PMD, M4, full("7.2"))
    assert d.kind is Kind.PRESENT and "PROT_NONE" not in d.notes and d.access.read and d.access.write
    assert MODEL.pte_present(raw, PMD, M4, L("7.2"))
    # 6.1: pmd_mkinvalid sets PMD_PRESENT_INVALID (bit 59) and clears VALID (pgtable.h:493).
    raw61 = 0x0868000040000FC0
    d = ARCH.decode(raw61, PMD, M4, full("6.1"))
    assert d.kind is Kind.PRESENT and "PMD_PRESENT_INVALID" in d.flags and "PROT_NONE" not in d.notes
    assert MODEL.pte_present(raw61, PMD, M4, L("6.1")) and not MODEL.pte_present(raw61, PTE, M4, L("6.1"))
    assert ARCH.decode(raw61, PTE, M4, full("6.1")).kind is not Kind.PRESENT  # pte_present ignores bit 59


def test_table_entry():
    # 7.2 pmd_populate: PMD_TYPE_TABLE | PMD_TABLE_AF | PMD_TABLE_PXN (pgalloc.h:121),
    # bits 0-1, 10, 59 (pgtable-hwdef.h:137-153).
    raw = 0x0800000040000403
    assert MODEL.mk_table(0x40000000, PMD, M4) == raw
    d = ARCH.decode(raw, PMD, M4, full("7.2"))
    assert d.kind is Kind.TABLE and d.next_table == 0x40000000 and d.size == 2 << 20
    assert d.flags == ("PMD_TABLE_AF", "PMD_TABLE_PXN")
    d = ARCH.decode(raw | (1 << 61) | (1 << 60), PGD, M4, full("6.1"))
    assert d.flags == ("P4D_TABLE_AF", "P4D_TABLE_PXN", "P4D_TABLE_UXN") and d.level == "pgd"
    assert ("APTable", "0b01 (no EL0 access below)") in d.fields  # S1_TABLE_AP (-/219/224)


def test_none_and_structural_unknowns():
    assert ARCH.decode(0, PTE, M4, facts(None)).kind is Kind.NONE
    # bits[1:0] = 0b01 at L3 is reserved.
    assert ARCH.decode(0x12345001, PTE, M4, full("7.2")).kind is Kind.UNKNOWN
    # A block at L0 needs DS=1 with 4K; at L1 with 16K too.
    assert ARCH.decode(0x0068000000000FC1, PGD, M4, full("7.2")).kind is Kind.UNKNOWN
    assert ARCH.decode(0x0068000000000FC1, 1, ARCH.mode("16k-48"), full("7.2")).kind is Kind.UNKNOWN
    # The kernel writes no swap/PROT_NONE entries above the leaf levels.
    d = ARCH.decode(0x1234000, PGD, M4, full("7.2"))
    assert d.kind is Kind.UNKNOWN and "L0" in d.reason
    d = ARCH.decode(0x0068000000000FC1, PGD, ARCH.mode("4k-48-lpa2"), full("7.2"))
    assert d.kind is Kind.PRESENT and d.size == 1 << 39 and any("never" in n for n in d.notes)


def test_software_bits_per_release():
    raw = PAGE_SHARED | 0x12345000 | (1 << 57) | (1 << 58)
    assert ARCH.decode(raw, PTE, M4, full("6.1")).flags[-2:] == ("PTE_DEVMAP", "PTE_PROT_NONE")
    assert ARCH.decode(raw, PTE, M4, full("6.12")).flags[-2:] == ("PTE_DEVMAP", "PTE_UFFD_WP")
    d = ARCH.decode(raw, PTE, M4, full("7.2"))  # PTE_DEVMAP removed in 7.2
    assert d.flags[-1] == "PTE_UFFD_WP" and any("57" in n for n in d.notes)
    d = ARCH.decode(raw, PTE, M4, facts(None))
    assert d.flags[-2:] == ("SW bit 57 (meaning depends on kernel version)",
                            "SW bit 58 (meaning depends on kernel version)")
    d = ARCH.decode(PAGE_SHARED | (5 << 60), PTE, M4, full("7.2"))  # POIndex (-/208/213)
    assert ("POIndex", "5") in d.fields


def test_memory_types():
    # MAIR_EL1_SET (mm/proc.S: 66-71 in 6.1, 74-79 in 7.2): idx0/1 0xff, idx2 0x44, idx3 0x00, idx4 0x04
    # (MAIR_ATTR_* at sysreg.h 6.12:903-907).
    mair = 0x000000040044FFFF
    f = full("7.2", MAIR_EL1=mair)
    device = (PAGE_SHARED & ~(7 << 2)) | (4 << 2)  # PTE_ATTRINDX(MT_DEVICE_nGnRE)
    assert ("AttrIndx", "4 (MT_DEVICE_nGnRE); MAIR_EL1: Device-nGnRE") in ARCH.decode(device, PTE, M4, f).fields
    assert ("AttrIndx", "0 (MT_NORMAL); MAIR_EL1: Normal WB") in ARCH.decode(PAGE_SHARED, PTE, M4, f).fields
    assert [mair_attr_name(a) for a in (0x00, 0x44, 0xF0, 0xBB, 0x4F)] == [
        "Device-nGnRnE", "Normal NC", "Normal Tagged (MTE)", "Normal WT", "Normal inner WB, outer NC"]
    assert MODEL.mk_leaf(0x12345, PTE, M4, Prot(memtype="io"), L("7.2")) >> 2 & 7 == 4  # pgprot_device


# ---------------------------------------------------------------- LPA / LPA2 output addresses

def test_lpa2_output_address():
    # 4K LPA2, PA 0x000f123456789000.  __phys_to_pte_val (pgtable.h:-/82-85/120-123):
    # (phys | phys >> 42) & GENMASK(49, 8); phys >> 42 = 0x3c4, whose bits 9:8 = 0b11 (OA[51:50]),
    # phys & GENMASK(49, 8) = 0x0003123456789000  ->  0x0003123456789300.
    # PAGE_SHARED with PTE_SHARED stripped (mm/mmap.c:-/78/80): 0x0068000000000cc3.
    mode = ARCH.mode("4k-52-lpa2")
    leaf = len(mode.levels) - 1
    raw = 0x006B123456789FC3
    assert MODEL.mk_leaf(0xF123456789, leaf, mode, Prot(), L("7.2")) == raw
    # __pte_to_phys (-/76-80/114-119): (raw & GENMASK(49, 12)) | ((raw & 0x300) << 42)
    # = 0x0003123456789000 | 0x000c000000000000.
    d = ARCH.decode(raw, leaf, mode, full("7.2"))
    assert d.pfn == 0xF123456789 and ("OA[51:50]", "0b11") in d.fields
    assert not any(name == "SH" for name, _ in d.fields)
    assert MODEL.leaf_pfn(raw, leaf, mode) == 0xF123456789
    # The same value in a 48-bit mode: bits 9:8 are SH, bits 49:48 RES0 (6.12+ pte_pfn counts them).
    d = ARCH.decode(raw, PTE, M4, full("7.2"))
    assert d.pfn == 0x3123456789 and ("SH", "Inner Shareable") in d.fields and d.notes


def test_lpa_64k_output_address():
    # 64K PA52, PA 0x000abcdef0120000.  __phys_to_pte_val: (phys | phys >> 36) & mask;
    # phys >> 36 = 0xabcd -> bits 15:12 = 0xa (OA[51:48]).
    # 6.12+ mask GENMASK(49,16) | 0xf000 (pgtable-hwdef.h:-/174-179/179-184): 0x0002bcdef012a000
    # 6.1 mask GENMASK(47,16) | 0xf000 (pgtable-hwdef.h:158-161):              0x0000bcdef012a000
    mode = ARCH.mode("64k-48-lpa")
    leaf = len(mode.levels) - 1
    pte_612, pte_61 = 0x0002BCDEF012A000, 0x0000BCDEF012A000
    assert MODEL.mk_leaf(0xABCDEF012, leaf, mode, Prot(), L("7.2")) == PAGE_SHARED | pte_612
    assert MODEL.mk_leaf(0xABCDEF012, leaf, mode, Prot(), L("6.1")) == PAGE_SHARED | pte_61
    # __pte_to_phys (pgtable.h:77-80/76-80/114-119): (raw & ADDR_LOW) | ((raw & 0xf000) << 36).
    for family, addr in (("6.1", pte_61), ("6.12", pte_612), ("7.2", pte_612)):
        d = ARCH.decode(PAGE_SHARED | addr, leaf, mode, full(family))
        assert d.pfn == 0xABCDEF012 and not d.notes
    assert MODEL.leaf_pfn(PAGE_SHARED | pte_61, leaf, mode) == 0xABCDEF012


def test_address_above_pa_size_is_noted():
    mode = ARCH.mode("4k-48-pa44")
    d = ARCH.decode(PAGE_SHARED | (1 << 45), PTE, mode, full("7.2"))
    assert d.kind is Kind.PRESENT and any("Address size fault" in n for n in d.notes)


# ---------------------------------------------------------------- contiguous blocks

def test_contpte_block_and_kernel_view():
    # contpte fold (contpte_convert): 16 PTEs, PFN 0x1000+i, same attributes plus PTE_CONT (bit 52).
    # Old and clean PAGE_SHARED: 0x0068000000000fc3 & ~PTE_AF | PTE_CONT = 0x0078000000000bc3.
    block = [0x0078000000000BC3 | ((0x1000 + i) << 12) for i in range(16)]
    assert MODEL.mk_block(0x1000, PTE, M4, Prot(young=False), L("7.2")) == block
    block[5] |= 0x400  # hardware AF on entry 5
    block[9] &= ~0x80  # hardware DBM dirty on entry 9: RDONLY cleared
    # contpte_ptep_get (contpte.c:313-358): pte_mkdirty (set bit 55, clear RDONLY as PTE_WRITE
    # is set; pgtable.h:270) and pte_mkyoung (set AF); PTE_CONT kept (pgtable.h:1729-1730).
    assert ARCH.kernel_view(block, 0, PTE, M4, full("7.2")) == 0x00F8000001000F43
    assert ARCH.kernel_view(block, 9, PTE, M4, full("7.2")) == 0x00F8000001009F43
    for i in range(16):
        assert ARCH.kernel_view(block, i, PTE, M4, full("7.2")) == MODEL.ptep_get(block, i, PTE, M4, release_layout("7.2", "arm64"))
    raw0 = ARCH.decode(block[0], PTE, M4, full("7.2"))
    assert not raw0.access.young and not raw0.access.dirty
    assert raw0.cont.scheme == "contpte" and (raw0.cont.entries, raw0.cont.size) == (16, 64 << 10)
    view = ARCH.decode(ARCH.kernel_view(block, 0, PTE, M4, full("7.2")), PTE, M4, full("7.2"))
    assert view.access.young and view.access.dirty and view.pfn == 0x1000
    # Not valid or not CONT: the entry as read.
    assert ARCH.kernel_view([block[0] & ~1], 0, PTE, M4, full("7.2")) == block[0] & ~1
    with pytest.raises(ValueError):
        ARCH.kernel_view(block[:8], 0, PTE, M4, full("7.2"))


@pytest.mark.parametrize("name,pte,pmd", [
    # CONT_PTES / CONT_PMDS and sizes: hugetlbpage.c:22-30 support matrix (ENCODINGS §3.1).
    ("4k-48", (16, 64 << 10), (16, 32 << 20)),
    ("16k-47", (128, 2 << 20), (32, 1 << 30)),
    ("64k-48", (32, 2 << 20), (32, 16 << 30)),
])
def test_cont_geometry(name, pte, pmd):
    mode = ARCH.mode(name)
    f = full("7.2", CONFIG_ARM64_PA_BITS=48)
    pte_block = MODEL.mk_block(0, len(mode.levels) - 1, mode, Prot(), L("7.2"))
    pmd_block = MODEL.mk_block(0, len(mode.levels) - 2, mode, Prot(), L("7.2"))
    c = ARCH.decode(pte_block[1], len(mode.levels) - 1, mode, f).cont
    assert (c.scheme, c.entries, c.size) == ("contpte", *pte) and len(pte_block) == pte[0]
    c = ARCH.decode(pmd_block[1], len(mode.levels) - 2, mode, f).cont
    assert (c.scheme, c.entries, c.size) == ("contpmd", *pmd) and len(pmd_block) == pmd[0]


# ---------------------------------------------------------------- properties

EXTRA_MODES = [build_mode(12, 48, lpa2=True), build_mode(14, 48, lpa2=True), build_mode(12, 48, pa_bits=44),
               build_mode(12, 48, ttbr1=True), build_mode(12, 52, lpa2=True, ttbr1=True),
               build_mode(16, 42, pa_bits=52, ttbr1=True), build_mode(14, 36, ttbr1=True)]
MODES = list(ARCH.modes()) + EXTRA_MODES
# Releases on both sides of every arm64 boundary (archs/arm64.py FEATURES) and the Debian ones.
RELEASES = ["5.10", "5.14", "5.19", "6.1", "6.9", "6.10", "6.12", "6.14", "6.17", "7.2", "7.3"]
FACTS = [facts(None), full("5.10"), full("6.1"), full("6.9"), full("6.12"), full("7.2", MAIR_EL1=0x040044F0FF),
         facts("7.2"), full("7.3"),
         full("7.2", CONFIG_ARM64_PA_BITS=52, CONFIG_HAVE_ARCH_USERFAULTFD_WP=False)]


@st.composite
def mode_depth(draw, leaf_only=False):
    mode = draw(st.sampled_from(MODES))
    depths = [d for d, lvl in enumerate(mode.levels) if lvl.leaf or not leaf_only]
    return mode, draw(st.sampled_from(depths))


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(raw=st.integers(0, (1 << 64) - 1) | st.integers(0, (1 << 16) - 1).map(lambda x: x << 6),
       md=mode_depth(), f=st.sampled_from(FACTS))
def test_decode_never_raises_and_classifies(raw, md, f):
    mode, depth = md
    d = ARCH.decode(raw, depth, mode, f)
    assert isinstance(d.kind, Kind) and d.level == mode.levels[depth].name
    assert (d.kind is Kind.UNKNOWN) == (d.reason is not None)
    if d.kind is Kind.PRESENT:
        assert d.access is not None and d.pfn is not None and d.pfn_space == "phys"
    if d.kind is Kind.TABLE:
        assert d.next_table is not None
    assert (d.kind is Kind.NONE) == (raw == 0)


PROTS = st.builds(Prot, write=st.booleans(), exec=st.booleans(), young=st.booleans(),
                  dirty=st.booleans(), protnone=st.booleans(),
                  memtype=st.sampled_from(["normal", "nc", "io"]))


@settings(max_examples=800)
@given(md=mode_depth(leaf_only=True), prot=PROTS, family=st.sampled_from(RELEASES),
       data=st.data())
def test_model_leaf_agrees_with_decoder(md, prot, family, data):
    mode, depth = md
    if "lpa2" in mode.options and not L(family).has("arm64_lpa2"):
        return
    kernel = "ttbr1" in mode.options
    prot = Prot(prot.write, prot.exec, not kernel, prot.young, prot.dirty, prot.protnone and not kernel,
                prot.memtype)
    span_pages = mode.levels[depth].span >> mode.page_shift
    pfn = data.draw(st.integers(0, ((1 << mode.pa_bits) >> mode.page_shift) // span_pages - 1)) * span_pages
    raw = MODEL.mk_leaf(pfn, depth, mode, prot, L(family))
    d = ARCH.decode(raw, depth, mode, full(family, CONFIG_ARM64_PA_BITS=48))
    assert d.kind is Kind.PRESENT and d.pfn == pfn == MODEL.leaf_pfn(raw, depth, mode)
    assert MODEL.pte_present(raw, depth, mode, L(family))
    assert len(d.notes) == (2 if prot.protnone else 0)  # "PROT_NONE" and the rule that made it so
    a = d.access
    assert (a.young, a.dirty, a.user) == (prot.young, prot.dirty, prot.user and not prot.protnone)
    if prot.protnone:
        assert "PROT_NONE" in d.notes and not (a.read or a.write or a.exec)
    else:
        assert a.read and a.write == prot.write and a.exec == (prot.exec and prot.memtype == "normal")


@settings(max_examples=800)
@given(md=mode_depth(leaf_only=True), family=st.sampled_from(RELEASES),
       swp_type=st.integers(0, 31), offset=st.integers(0, (1 << 50) - 1), exclusive=st.booleans(),
       uffd_wp=st.booleans())
def test_model_softleaf_agrees_with_decoder(md, family, swp_type, offset, exclusive, uffd_wp):
    mode, depth = md
    layout = L(family)
    if "lpa2" in mode.options and not layout.has("arm64_lpa2"):
        return
    swp = SwpFields(swp_type, offset, exclusive=exclusive and layout.has("arm64_swp_exclusive"),
                    uffd_wp=uffd_wp and layout.has("arm64_uffd_wp"))
    raw = MODEL.mk_softleaf(swp, depth, mode, L(family))
    if raw == 0:
        return
    assert MODEL.softleaf_from_pte(raw, depth, mode, L(family)) == swp
    d = ARCH.decode(raw, depth, mode, full(family, CONFIG_ARM64_PA_BITS=48))
    assert (d.softleaf.type, d.softleaf.offset) == (swp_type, offset)
    assert ("PTE_SWP_EXCLUSIVE" in d.softleaf.arch_flags) == swp.exclusive
    uffd = "PTE_SWP_UFFD" if layout.has("uffd_rwp") else "PTE_SWP_UFFD_WP"  # pgtable-prot.h:32 in 7.2 / 7.3
    assert (uffd in d.softleaf.arch_flags) == swp.uffd_wp


@settings(max_examples=800)
@given(md=mode_depth(leaf_only=True), family=st.sampled_from(RELEASES),
       raw=st.integers(1, (1 << 64) - 1).map(lambda x: x & ~1))
def test_model_predicates_agree_with_decoder(md, family, raw):
    mode, depth = md
    d = ARCH.decode(raw, depth, mode, full(family, CONFIG_ARM64_PA_BITS=48))
    assert MODEL.pte_present(raw, depth, mode, L(family)) == (d.kind is Kind.PRESENT)
    swp = MODEL.softleaf_from_pte(raw, depth, mode, L(family))
    assert (swp is None) == (d.softleaf is None)
    if swp is not None:
        assert (d.softleaf.type, d.softleaf.offset) == (swp.type, swp.offset)


@settings(max_examples=300)
@given(name=st.sampled_from(["4k-48", "16k-47", "64k-48", "4k-52-lpa2", "64k-52-lpa"]),
       pmd=st.booleans(), prot=PROTS, data=st.data())
def test_model_block_view_agrees_with_decoder(name, pmd, prot, data):
    mode = ARCH.mode(name)
    depth = len(mode.levels) - (2 if pmd else 1)
    block = MODEL.mk_block(0, depth, mode, prot, L("7.2"))
    for i in data.draw(st.lists(st.integers(0, len(block) - 1), max_size=4)):
        block[i] |= 0x400  # AF
    for i in data.draw(st.lists(st.integers(0, len(block) - 1), max_size=4)):
        block[i] &= ~0x80  # RDONLY cleared by DBM
    for i in range(len(block)):
        assert ARCH.kernel_view(block, i, depth, mode, full("7.2")) == MODEL.ptep_get(block, i, depth, mode, release_layout("7.2", "arm64"))
