"""riscv64 page tables (Sv39 / Sv48 / Sv57, 4 KiB pages) as Linux 5.10 to 7.3 use them.

What changed between releases is the `FEATURES` table below (one row per layout change, with
the mainline release and commit); decoding asks `facts.has("riscv_...")`.  Header citations
name the file and symbol with a release; paths are under arch/riscv/include/asm/ unless they
say otherwise.  "priv spec" is the RISC-V privileged architecture (riscv-isa-manual
src/priv/supervisor.adoc, svnapot.adoc, svpbmt.adoc, svrsw60t59b.adoc).

Kernel facts read here besides the generic ones (softleaf.py):
- "svrsw60t59b" (bool): riscv_has_extension_unlikely(RISCV_ISA_EXT_SVRSW60T59B) in the
  running kernel (6.19+: PTE bits 59/60 become _PAGE_SOFT_DIRTY and _PAGE_UFFD_WP (7.3:
  _PAGE_UFFD), swap bits 3/4 _PAGE_SWP_SOFT_DIRTY and _PAGE_SWP_UFFD_WP (7.3: _PAGE_SWP_UFFD);
  pgtable-bits.h, 7.2 and 7.3).
- "thead_mae" (bool): the T-Head memory-type alternative is patched in (CONFIG_ERRATA_THEAD_PBMT
  5.19..6.x, CONFIG_ERRATA_THEAD_MAE "XTheadMae" in 6.12..7.3, on a T-Head CPU): bits 63:59 are
  then T-Head memory-type bits, not Svnapot/Svpbmt (errata_list.h ALT_SVPBMT).
- "CONFIG_TRANSPARENT_HUGEPAGE": selects the pmd_present() variant (pgtable.h pmd_present, 5.14+).
- "CONFIG_SPARSEMEM" / "CONFIG_FLATMEM": MAX_PHYSMEM_BITS (56) is defined only with SPARSEMEM
  (sparsemem.h, 5.10..7.3); without it swapops.h (6.1+) falls back to SWP_PFN_BITS = 52.
- "CONFIG_MEM_SOFT_DIRTY", "CONFIG_HAVE_ARCH_USERFAULTFD_WP", "CONFIG_USERFAULTFD",
  "CONFIG_RISCV_ISA_SVRSW60T59B": whether the 6.19+ soft-dirty / uffd bits exist at all.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from .common import (
    SOFTLEAF_KINDS,
    Access,
    Arch,
    ArchDefaults,
    ContInfo,
    Decoded,
    ExceptionRegs,
    Fact,
    FrameRecords,
    KernelFacts,
    Kind,
    Level,
    PagingMode,
    Softleaf,
    find_mode,
    vmcoreinfo_int,
)
from .softleaf import DEVICE_PRIVATE_KINDS, MIGRATION_KINDS, PFN_KINDS, classify_type, decode_softleaf
from .versions import Feature, Layout

# This architecture's layout changes, each with the mainline release that made it (archs/versions.py).
FEATURES: tuple[Feature, ...] = (
    Feature("riscv_thp", (5, 14),
            "arch/riscv/Kconfig HAVE_ARCH_TRANSPARENT_HUGEPAGE; pgtable.h pmd_present() also tests _PAGE_LEAF "
            "with CONFIG_TRANSPARENT_HUGEPAGE",
            "e88b333142e4 riscv: mm: add THP support on 64-bit"),
    Feature("riscv_prot_none_global", (5, 17),
            "pgtable-bits.h _PAGE_PROT_NONE _PAGE_READ -> _PAGE_GLOBAL; pgtable.h PAGE_NONE gains _PAGE_READ, "
            "__SWP_TYPE_SHIFT 2 -> 6",
            "fba88ede6a31 riscv/mm: Adjust PAGE_PROT_NONE to comply with THP semantics"),
    Feature("riscv_thp_migration", (5, 17),
            "arch/riscv/Kconfig ARCH_ENABLE_THP_MIGRATION; pgtable.h __pmd_to_swp_entry (PMD migration entries)",
            "d062a79b7c80 riscv/mm: Enable THP migration"),
    Feature("riscv_sv48", (5, 17), "pgtable-64.h PGDIR_SHIFT_L4, pgtable_l4_enabled (satp MODE Sv48)",
            "e8a62cc26ddf riscv: Implement sv48 support"),
    Feature("riscv_sv57", (5, 18), "pgtable-64.h PGDIR_SHIFT_L5, pgtable_l5_enabled (satp MODE Sv57)",
            "011f09d12052 riscv: mm: Set sv57 on defaultly"),
    Feature("riscv_pfn_mask", (5, 19), "pgtable-64.h _PAGE_PFN_MASK GENMASK(53, 10) (pte_pfn() was val >> 10)",
            "100631b48ded riscv: Fix accessing pfn bits in PTEs for non-32bit variants"),
    Feature("riscv_svpbmt", (5, 19), "pgtable-64.h _PAGE_NOCACHE_SVPBMT (bit 61), _PAGE_IO_SVPBMT (bit 62)",
            "ff689fd21cb1 riscv: add RISC-V Svpbmt extension support"),
    Feature("riscv_thead_memtype", (5, 19),
            "pgtable-64.h _PAGE_PMA_THEAD 01110, _PAGE_NOCACHE_THEAD 00000, _PAGE_IO_THEAD 10000 (bits 63:59)",
            "a35707c3d850 riscv: add memory-type errata for T-Head"),
    Feature("riscv_thead_memtype_shareable", (6, 7),
            "pgtable-64.h _PAGE_IO_THEAD 10010, _PAGE_NOCACHE_THEAD ((1UL < 61) | (1UL << 60)) = 00010 + bit 0",
            "dbfbda3bd6bf riscv: mm: update T-Head memory type definitions"),
    Feature("riscv_thead_nocache_fixed", (6, 8), "pgtable-64.h _PAGE_NOCACHE_THEAD 00110",
            "c21f01481860 riscv: mm: fix NOCACHE_THEAD does not set bit[61] correctly"),
    Feature("riscv_swp_exclusive", (6, 3),
            "pgtable-bits.h _PAGE_SWP_EXCLUSIVE (_PAGE_ACCESSED, bit 6); pgtable.h __SWP_TYPE_SHIFT 6 -> 7",
            "51a1007d4113 riscv/mm: support __HAVE_ARCH_PTE_SWP_EXCLUSIVE"),
    Feature("riscv_svnapot", (6, 4), "pgtable-64.h _PAGE_NAPOT (bit 63), NAPOT_CONT64KB_ORDER",
            "23ad288aaf15 riscv: mm: modify pte format for Svnapot"),
    Feature("riscv_devmap", (6, 11), "pgtable-bits.h _PAGE_DEVMAP (bit 9, RSW)",
            "216e04bf1e4d riscv: mm: Add support for ZONE_DEVICE",
            until=(6, 17), removed_by="d438d2734170 mm: remove devmap related functions and page table bits"),
    Feature("riscv_svrsw60t59b", (6, 19),
            "pgtable-bits.h _PAGE_SOFT_DIRTY (bit 59), _PAGE_UFFD_WP (bit 60), _PAGE_SWP_SOFT_DIRTY (bit 3), "
            "_PAGE_SWP_UFFD_WP (bit 4), all only with RISCV_ISA_EXT_SVRSW60T59B",
            "59f6acb4be02 riscv: add RISC-V Svrsw60t59b extension support (with 2a3ebad4db63 riscv: mm: add "
            "soft-dirty page tracking support, c64da3950cf4 riscv: mm: add userfaultfd write-protect support)"),
)

PAGE_SHIFT = 12
TABLE_BITS = 9  # PTRS_PER_* = PAGE_SIZE / sizeof(pte_t) = 512
PMD_SHIFT = 21  # pgtable-64.h PMD_SHIFT, 5.10..7.3
PUD_SHIFT = 30  # pgtable-64.h PUD_SHIFT (5.17+; 5.10's Sv39 PGDIR_SHIFT 30)
# 44-bit PPN + 12-bit page offset (priv spec Sv39/48/57 PA); pgtable-64.h MAX_POSSIBLE_PHYSMEM_BITS (7.2)
PA_BITS = 56
MASK64 = (1 << 64) - 1

# --- PTE bits: pgtable-bits.h _PAGE_* (same positions 5.10..7.3) ---------------------------------
_PAGE_PRESENT = 1 << 0  # V
_PAGE_READ = 1 << 1
_PAGE_WRITE = 1 << 2
_PAGE_EXEC = 1 << 3
_PAGE_USER = 1 << 4
_PAGE_GLOBAL = 1 << 5
_PAGE_ACCESSED = 1 << 6
_PAGE_DIRTY = 1 << 7
_PAGE_SPECIAL = 1 << 8  # _PAGE_SOFT (bit 8) in 5.10/6.1, its own define from 6.11
_PAGE_DEVMAP = 1 << 9  # riscv_devmap (6.11..6.16)
_PAGE_LEAF = _PAGE_READ | _PAGE_WRITE | _PAGE_EXEC  # pgtable-bits.h _PAGE_LEAF (5.14+)
_PAGE_SWP_EXCLUSIVE = _PAGE_ACCESSED  # riscv_swp_exclusive (6.3+)
_PAGE_SWP_SOFT_DIRTY = _PAGE_EXEC  # riscv_svrsw60t59b, only with the extension
_PAGE_SWP_UFFD = _PAGE_USER  # riscv_svrsw60t59b: _PAGE_SWP_UFFD_WP, renamed _PAGE_SWP_UFFD in 7.3
_PAGE_PFN_SHIFT = 10  # pgtable-bits.h _PAGE_PFN_SHIFT, 5.10..7.3
_PAGE_PFN_MASK = ((1 << 54) - 1) & ~((1 << 10) - 1)  # pgtable-64.h GENMASK(53, 10), riscv_pfn_mask
RESERVED_54_58 = ((1 << 59) - 1) & ~((1 << 54) - 1)  # priv spec: bits 60-54 reserved
BIT_59 = 1 << 59  # _PAGE_SOFT_DIRTY with Svrsw60t59b (6.19+)
BIT_60 = 1 << 60  # _PAGE_UFFD_WP (6.19..7.2) / _PAGE_UFFD (7.3) with Svrsw60t59b
_PAGE_NOCACHE_SVPBMT = 1 << 61  # pgtable-64.h, riscv_svpbmt
_PAGE_IO_SVPBMT = 1 << 62
PBMT_SHIFT = 61
_PAGE_NAPOT = 1 << 63  # pgtable-64.h _PAGE_NAPOT, riscv_svnapot
NAPOT_CONT64KB_ORDER = 4  # the only order: pgtable-64.h enum napot_cont_order (6.4..7.3)
THEAD_MT_SHIFT = 59  # _PAGE_MTMASK_THEAD = bits 63:59, pgtable-64.h (5.19..7.3)

# Low-bit names, low bit first (_PAGE_PROT_NONE renames its bit when V=0; bit 9 per release).
LOW_FLAGS = (
    (_PAGE_PRESENT, "_PAGE_PRESENT"),
    (_PAGE_READ, "_PAGE_READ"),
    (_PAGE_WRITE, "_PAGE_WRITE"),
    (_PAGE_EXEC, "_PAGE_EXEC"),
    (_PAGE_USER, "_PAGE_USER"),
    (_PAGE_GLOBAL, "_PAGE_GLOBAL"),
    (_PAGE_ACCESSED, "_PAGE_ACCESSED"),
    (_PAGE_DIRTY, "_PAGE_DIRTY"),
    (_PAGE_SPECIAL, "_PAGE_SPECIAL"),
)
PBMT_NAMES = ("PMA", "NC", "IO", "reserved")  # priv spec svpbmt.adoc table "pbmt"
# satp MODE names and the feature that lets the kernel use each (Sv39 always).
MODE_FEATURES = {"sv48": "riscv_sv48", "sv57": "riscv_sv57"}


def prot_none_bit(layout: Layout) -> int:
    """_PAGE_PROT_NONE: _PAGE_READ before 5.17, _PAGE_GLOBAL after (pgtable-bits.h, 5.10 and 6.1)."""
    return _PAGE_GLOBAL if layout.has("riscv_prot_none_global") else _PAGE_READ


def thead_memtypes(layout: Layout) -> dict[int, str]:
    """T-Head memory types (bits 63..59 = SO C B SH Sec) Linux writes: pgtable-64.h _PAGE_*_THEAD.

    5.19..6.6: PMA 01110, NC 00000, IO 10000; 6.7: IO 10010 and, by a typo ("1UL < 61"), NC
    00010 (plus bit 0, V); 6.8+: NC 00110 (5.19 and 6.1, 6.12 and 7.2 headers)."""
    nocache = 0b00000
    if layout.has("riscv_thead_nocache_fixed"):
        nocache = 0b00110
    elif layout.has("riscv_thead_memtype_shareable"):
        nocache = 0b00010
    io = 0b10010 if layout.has("riscv_thead_memtype_shareable") else 0b10000
    return {0b01110: "PMA", nocache: "NC", io: "IO"}


@dataclass(frozen=True)
class SwapLayout:
    """__swp_entry/__swp_type/__swp_offset of one release (type is 5 bits, offset above it)."""

    type_shift: int  # __SWP_TYPE_SHIFT
    exclusive: int  # _PAGE_SWP_EXCLUSIVE, 0 if the release has none

    @property
    def offset_shift(self) -> int:
        return self.type_shift + 5  # __SWP_OFFSET_SHIFT = __SWP_TYPE_BITS + __SWP_TYPE_SHIFT

    @property
    def zero(self) -> int:
        """Bits below the type that __swp_entry leaves zero (V aside: a set V is present)."""
        return ((1 << self.type_shift) - 1) & ~(_PAGE_PRESENT | self.exclusive)


def swap_layout(layout: Layout) -> SwapLayout:
    """pgtable.h __SWP_TYPE_SHIFT: 2 (5.10: type 6:2, offset 63:7), 6 from 5.17 (fba88ede6a31: type
    10:6, offset 63:11), 7 from 6.3 with _PAGE_SWP_EXCLUSIVE at bit 6 (type 11:7, offset 63:12)."""
    if layout.has("riscv_swp_exclusive"):
        return SwapLayout(7, _PAGE_SWP_EXCLUSIVE)
    if layout.has("riscv_prot_none_global"):
        return SwapLayout(6, 0)
    return SwapLayout(2, 0)


# SWP_PFN_BITS: MAX_PHYSMEM_BITS (56, sparsemem.h, only with CONFIG_SPARSEMEM) - PAGE_SHIFT, else the
# swapops.h fallback min(sizeof(phys_addr_t) * 8 - PAGE_SHIFT, SWP_TYPE_SHIFT) = 52 (6.1+; before 6.1
# swp_offset() is the PFN, all of it).
SWP_PFN_BITS_SPARSEMEM = 56 - PAGE_SHIFT
SWP_PFN_BITS_FLATMEM = 64 - PAGE_SHIFT
SATP_MODE_SHIFT = 60  # csr.h SATP_MODE_SHIFT (7.2)
SATP_PPN = (1 << 44) - 1  # csr.h SATP_PPN (7.2)
SATP_MODES = {8: "sv39", 9: "sv48", 10: "sv57"}  # csr.h SATP_MODE_39/48/57; priv spec satp MODE table


def _mode(name: str, hw_top: int, names: tuple[str, ...], leaves: tuple[bool, ...]) -> PagingMode:
    """A mode whose levels are `names` root first; VPN[hw_top] is the root index."""
    n = len(names)
    levels = tuple(
        Level(name, f"VPN[{hw_top - d}]", PAGE_SHIFT + TABLE_BITS * (n - 1 - d), TABLE_BITS, leaf)
        for d, (name, leaf) in enumerate(zip(names, leaves))
    )
    return PagingMode("riscv64", name, levels, PAGE_SHIFT, PAGE_SHIFT + TABLE_BITS * n, PA_BITS)


# PGDIR_SHIFT_L3/L4/L5 = 30/39/48 and VA_BITS 39/48/57 (pgtable-64.h, pgtable.h, 7.2); 5.10 has Sv39
# only (PGDIR_SHIFT 30), Sv48 and Sv57 come with riscv_sv48 / riscv_sv57.  Linux has leaves at PMD
# and PUD (pud_leaf, pgtable-64.h); riscv defines no p4d_leaf/pgd_leaf, so 512 GiB and larger
# leaves are never made.
MODES = (
    _mode("sv39", 2, ("pgd", "pmd", "pte"), (True, True, True)),
    _mode("sv48", 3, ("pgd", "pud", "pmd", "pte"), (False, True, True, True)),
    _mode("sv57", 4, ("pgd", "p4d", "pud", "pmd", "pte"), (False, False, True, True, True)),
)


def root_from_registers(regs: Mapping[str, int]) -> int:
    """Physical address of the root table: satp.PPN << PAGE_SHIFT."""
    return (regs["satp"] & SATP_PPN) << PAGE_SHIFT


def _flag(facts: KernelFacts, name: str) -> bool | None:
    value = facts.get(name)
    return None if value is None else bool(value)


def _all(*values: bool | None) -> bool | None:
    """Three-valued AND: False if any is False, True if all are True, else unknown."""
    if any(v is False for v in values):
        return False
    return True if all(v is True for v in values) else None


@dataclass(frozen=True)
class _Ctx:
    """The facts decoding depends on, resolved once per call (None = unknown)."""

    layout: Layout | None
    prot_none: int  # _PAGE_PROT_NONE of the release (G when the release is unknown: V=0 is then not decoded)
    thead: bool | None  # bits 63:59 are the T-Head memory type
    svrsw: bool | None
    soft_dirty: bool | None  # _PAGE_SOFT_DIRTY / _PAGE_SWP_SOFT_DIRTY are nonzero
    uffd: bool | None  # _PAGE_UFFD_WP / _PAGE_SWP_UFFD_WP (7.3: _PAGE_UFFD / _PAGE_SWP_UFFD) are nonzero
    thp: bool | None

    def has(self, feature: str) -> bool | None:
        return None if self.layout is None else self.layout.has(feature)

    @property
    def uffd_names(self) -> tuple[str, str]:
        """The PTE and swap uffd bit names: _PAGE_UFFD / _PAGE_SWP_UFFD from 7.3 (userfaultfd tracking
        for VM_UFFD_WP and VM_UFFD_RWP), _PAGE_UFFD_WP / _PAGE_SWP_UFFD_WP before (pgtable-bits.h)."""
        if self.has("uffd_rwp"):
            return "_PAGE_UFFD", "_PAGE_SWP_UFFD"
        return "_PAGE_UFFD_WP", "_PAGE_SWP_UFFD_WP"

    @classmethod
    def of(cls, facts: KernelFacts) -> _Ctx:
        layout = facts.layout
        svrsw = _flag(facts, "svrsw60t59b")
        isa_cfg = _flag(facts, "CONFIG_RISCV_ISA_SVRSW60T59B")
        rsw_release = None if layout is None else layout.has("riscv_svrsw60t59b")
        soft_dirty: bool | None
        uffd: bool | None
        if rsw_release is False:
            soft_dirty = uffd = False  # neither HAVE_ARCH_SOFT_DIRTY nor HAVE_ARCH_USERFAULTFD_WP (Kconfig)
        elif rsw_release:
            mem_sd = _flag(facts, "CONFIG_MEM_SOFT_DIRTY")
            if mem_sd is None and isa_cfg is False:
                mem_sd = False  # HAVE_ARCH_SOFT_DIRTY needs RISCV_ISA_SVRSW60T59B (arch/riscv/Kconfig, 7.2)
            uffd_cfg = _flag(facts, "CONFIG_HAVE_ARCH_USERFAULTFD_WP")
            if uffd_cfg is None and (isa_cfg is False or _flag(facts, "CONFIG_USERFAULTFD") is False):
                uffd_cfg = False  # HAVE_ARCH_USERFAULTFD_WP needs USERFAULTFD && RISCV_ISA_SVRSW60T59B
            soft_dirty, uffd = _all(svrsw, mem_sd), _all(svrsw, uffd_cfg)
        else:
            soft_dirty = uffd = None
        thead = _flag(facts, "thead_mae")
        if layout is not None and not layout.has("riscv_thead_memtype"):
            thead = False  # no T-Head memory types before 5.19: the kernel writes zeros there
        thp = _flag(facts, "CONFIG_TRANSPARENT_HUGEPAGE")
        if layout is not None and not layout.has("riscv_thp"):
            thp = False  # HAVE_ARCH_TRANSPARENT_HUGEPAGE is 5.14+
        prot_none = _PAGE_GLOBAL if layout is None else prot_none_bit(layout)
        return cls(layout, prot_none, thead, svrsw, soft_dirty, uffd, thp)


def _bits(mask: int) -> str:
    return ", ".join(str(b) for b in range(64) if mask >> b & 1)


# What the MMU itself writes into an entry (not a store a watchpoint sees): (bits it sets, bits it
# clears, bits a clear needs).  arch/riscv/include/asm/pgtable-bits.h (7.2): _PAGE_ACCESSED (1 << 6)
# "Set by hardware on any access", _PAGE_DIRTY (1 << 7) "Set by hardware on any write" (Svadu).
HW_PTE_UPDATES = (_PAGE_ACCESSED | _PAGE_DIRTY, 0, 0)


class Riscv64(ArchDefaults):
    """The riscv64 Arch (module-level ARCH)."""

    name = "riscv64"
    elf_machine, elf_machine_name = 243, "EM_RISCV"  # include/uapi/linux/elf-em.h
    uname_machines = ("riscv64",)  # arch/riscv/Makefile UTS_MACHINE := riscv$(BITS)
    # VMCOREINFO_NUMBER(va_kernel_pa_offset) (arch/riscv/kernel/crash_core.c 6.1, vmcore_info.c 6.12/7.2)
    vmcoreinfo_key = "NUMBER(va_kernel_pa_offset)"
    qemu_arch = "riscv64"
    gdb_arch = "riscv:rv64"
    drgn_arch = "RISCV64"
    # riscv_cpu_dump_state() prints " satp     9000..." (QEMU 7.2 target/riscv/cpu.c)
    hmp_registers = r"(?m)^\s*(satp|stvec)\s+([0-9a-f]+)\s*$"
    current_registers = ("tp",)  # riscv_current_is_tp (arch/riscv/include/asm/current.h, 6.12/7.2)
    pc_registers = ("pc",)
    # CONFIG_FRAME_POINTER=y (Debian 7.2): s0 points just above {previous s0, ra}, walked as
    # `(struct stackframe *)fp - 1`; ra holds the caller of a function that has not saved its record.
    # arch/riscv/kernel/stacktrace.c walk_stackframe() (6.1, 7.2): "We hit function where ra is not
    # saved on the stack" (fp_is_valid() up to ALIGN(sp, THREAD_SIZE); THREAD_SIZE = PAGE_SIZE <<
    # THREAD_SIZE_ORDER, 2 for 64-bit without KASAN: asm/thread_info.h, 7.2); a return address in
    # handle_exception..ret_from_exception_end (7.2; == ret_from_exception in 6.1) goes on at the
    # pt_regs at the frame pointer, its epc and s0.
    unwind = FrameRecords(("s0", "fp"), "ra", -16, -8, None,
                          "arch/riscv/include/asm/stacktrace.h struct stackframe (7.2)", leaf_stack=16 << 10,
                          exceptions=ExceptionRegs(
                              ("pt_regs.epc", 0), ("pt_regs.s0", 0),
                              "arch/riscv/kernel/stacktrace.c walk_stackframe() (6.1, 7.2)",
                              entry_text=(("handle_exception", "ret_from_exception_end"),
                                          ("ret_from_exception", None))))
    kernel_dir, gnu_triplet, debian_arch = "riscv", "riscv64-linux-gnu", "riscv64"
    cont_schemes = frozenset({"napot"})
    features: tuple[Feature, ...] = FEATURES
    hw_pte_updates = HW_PTE_UPDATES
    default_mode = "sv48"  # decode's default: what QEMU 7.2's virt machine offers by default
    split_roots = False  # satp's root holds both halves
    # stvec holds handle_exception once the kernel runs (setup_trap_vector, kernel/head.S, 7.2)
    kaslr_anchor = ("stvec", "handle_exception")
    gdb_registers = ("satp", "stvec")
    kernel_va_bit = 63  # the kernel lives in the upper half (Documentation/arch/riscv/vm-layout.rst)
    # VMCOREINFO_SYMBOL_ARRAY(swapper_pg_dir) (kernel/crash_core.c in 6.1, vmcore_info.c in 6.12/7.2):
    # init_mm's satp root
    kernel_root_symbol = "swapper_pg_dir"
    kernel_text_region = None

    def output_bits(self, mode: PagingMode, facts: KernelFacts) -> int:
        return output_bits(mode, facts)

    def reserved_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
        return reserved_bits(raw, depth, mode, facts, table)

    def misaligned_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
        return misaligned_bits(raw, depth, mode, facts)

    def cont_signature(self, raw: int, mode: PagingMode) -> int:
        return cont_signature(raw, mode)

    def root_candidates(self, regs: Mapping[str, int], upper: bool) -> tuple[int, ...]:
        """satp.PPN << PAGE_SHIFT: one root for both halves."""
        if "satp" not in regs:
            raise ValueError("riscv64 needs the satp register")
        return (root_from_registers(regs),)

    def modes(self) -> Sequence[PagingMode]:
        return MODES

    def mode(self, name: str) -> PagingMode:
        return find_mode(MODES, name)

    def mode_from_registers(self, regs: Mapping[str, int]) -> PagingMode:
        """satp.MODE (bits 63:60): 8 Sv39, 9 Sv48, 10 Sv57; Bare (0) translates nothing."""
        if "satp" not in regs:
            raise ValueError("riscv64 needs the satp register")
        field = regs["satp"] >> SATP_MODE_SHIFT & 0xF
        if field == 0:
            raise ValueError("satp.MODE is Bare (0): address translation is off, there is no page table")
        if field not in SATP_MODES:
            raise ValueError(f"satp.MODE {field} is not Sv39/Sv48/Sv57 (8/9/10)")
        return self.mode(SATP_MODES[field])

    def mode_from_vmcoreinfo(self, numbers: Mapping[str, str], upper: bool) -> PagingMode:
        """NUMBER(satp) (arch/riscv/kernel/vmcore_info.c, 7.2: satp at boot) when present, else
        NUMBER(VA_BITS) 39/48/57 (vmcore_info.c, 6.12/7.2: the runtime VA_BITS of pgtable.h);
        6.1 exports neither.  One root translates both halves."""
        by_bits = {m.va_bits: m for m in MODES}
        va_mode = None
        if "NUMBER(VA_BITS)" in numbers:
            bits = vmcoreinfo_int(numbers, "NUMBER(VA_BITS)")
            va_mode = by_bits.get(bits)
            if va_mode is None:
                raise ValueError(f"VMCOREINFO NUMBER(VA_BITS)={bits} is not Sv39/Sv48/Sv57")
        if "NUMBER(satp)" not in numbers:
            if va_mode is None:
                raise ValueError("VMCOREINFO has neither NUMBER(satp) nor NUMBER(VA_BITS) (Linux < 6.3?)")
            return va_mode
        mode = self.mode_from_registers({"satp": vmcoreinfo_int(numbers, "NUMBER(satp)")})
        if va_mode is not None and va_mode is not mode:
            raise ValueError(f"VMCOREINFO disagrees with itself: NUMBER(satp) selects {mode.name}, "
                             f"NUMBER(VA_BITS) {va_mode.va_bits}")
        return mode

    def kernel_image_pa(self, numbers: Mapping[str, str], va: int) -> int:
        """kernel_mapping_va_to_pa(): va - kernel_map.va_kernel_pa_offset (page.h, 6.12/7.2),
        exported as NUMBER(va_kernel_pa_offset) (vmcore_info.c)."""
        return (va - vmcoreinfo_int(numbers, "NUMBER(va_kernel_pa_offset)")) & MASK64

    def canonical(self, mode: PagingMode, va: int, upper: bool) -> int:
        """Sign-extend from bit va_bits-1 (priv spec: bits 63..VA_BITS equal bit VA_BITS-1).

        One root translates both halves, so the index bits already say which half.
        """
        va &= (1 << mode.va_bits) - 1
        if va >> (mode.va_bits - 1):
            va |= MASK64 & ~((1 << mode.va_bits) - 1)
        return va

    def decode(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
        raw &= MASK64
        level = mode.levels[depth]
        if raw == 0:  # pte_none/pmd_none/pud_none: val == 0 (pgtable.h, 5.10..7.3)
            return Decoded(raw, level.name, Kind.NONE)
        ctx = _Ctx.of(facts)
        dec = self._decode(raw, depth, level, ctx, facts)
        unusable = _mode_note(mode, depth, ctx)
        return dataclasses.replace(dec, notes=dec.notes + (unusable,)) if unusable else dec

    def _decode(self, raw: int, depth: int, level: Level, ctx: _Ctx, facts: KernelFacts) -> Decoded:
        last = level.shift == PAGE_SHIFT
        if ctx.layout is None and not raw & _PAGE_PRESENT and level.shift <= PUD_SHIFT:
            return Decoded(
                raw, level.name, Kind.UNKNOWN, size=level.span, flags=_low_flags(raw, ctx),
                reason="a V=0 entry is PROT_NONE, a PMD being split or a software entry depending on the "
                "release (_PAGE_PROT_NONE is _PAGE_READ before 5.17 and _PAGE_GLOBAL from 5.17; swap type "
                "bits 6:2, 10:6 from 5.17, 11:7 from 6.3): kernel release unknown (give it)",
            )
        present, notes = _present(raw, level, last, ctx)
        if present:
            if raw & _PAGE_PRESENT and not raw & _PAGE_LEAF:
                return _table(raw, level, last, ctx)
            dec = _leaf(raw, level, last, ctx)
        elif level.shift > PUD_SHIFT:
            return Decoded(
                raw, level.name, Kind.UNKNOWN, size=level.span, flags=_low_flags(raw, ctx),
                reason=f"non-present value at {level.name} ({level.hw}): the kernel writes no swap or "
                "other software entry above PUD level (p4d/pgd_present test V only, pgtable-64.h)",
            )
        else:
            dec = _softleaf(raw, level, ctx, facts)
        return dataclasses.replace(dec, notes=dec.notes + notes) if notes else dec

    def kernel_view(
        self, block: Sequence[int], index: int, depth: int, mode: PagingMode, facts: KernelFacts
    ) -> int:
        """huge_ptep_get() for a 16-entry NAPOT block (arch/riscv/mm/hugetlbpage.c, 6.4+).

        hugetlb reads a NAPOT block through its first PTE (huge_pte_offset aligns the address)
        and ORs pte_mkdirty/pte_mkyoung in for every dirty/young entry (hugetlbpage.c
        huge_ptep_get, 6.12/7.2).  From 6.19 pte_mkdirty also sets _PAGE_SOFT_DIRTY when that bit
        exists (pgtable.h pte_mkdirty, 7.2).  Anything else: the entry itself (ptep_get is READ_ONCE).
        """
        ctx = _Ctx.of(facts)
        if (depth != len(mode.levels) - 1 or len(block) != 1 << NAPOT_CONT64KB_ORDER
                or not ctx.has("riscv_svnapot") or ctx.thead):
            return block[index]
        first = block[0]
        if not first & (_PAGE_PRESENT | ctx.prot_none) or not first & _PAGE_NAPOT:
            return first
        dirty = _PAGE_DIRTY | (BIT_59 if ctx.soft_dirty else 0)
        for value in block:
            if value & _PAGE_DIRTY:
                first |= dirty
            if value & _PAGE_ACCESSED:
                first |= _PAGE_ACCESSED
        return first


def _mode_note(mode: PagingMode, depth: int, ctx: _Ctx) -> str | None:
    """On root entries: the release cannot run this paging mode (the release or the mode is wrong)."""
    feature = MODE_FEATURES.get(mode.name)
    if depth != 0 or feature is None or ctx.has(feature) is not False:
        return None
    first = next(f.since for f in FEATURES if f.name == feature)
    assert ctx.layout is not None  # has() answered
    return (f"Linux {ctx.layout.name} cannot use {mode.name} (riscv {mode.name} support is {first[0]}.{first[1]}+): "
            "the kernel release given or the paging mode is wrong")


def _present(raw: int, level: Level, last: bool, ctx: _Ctx) -> tuple[bool, tuple[str, ...]]:
    """The kernel's *_present() for this level, and a note when a missing fact mattered."""
    v_or_pn = bool(raw & (_PAGE_PRESENT | ctx.prot_none))
    if last:
        return v_or_pn, ()  # pte_present: V | PROT_NONE (pgtable.h, 5.10..7.3)
    if level.shift == PMD_SHIFT:
        if ctx.thp is False:  # pmd_present without THP: V | PROT_NONE (pgtable.h)
            return v_or_pn, ()
        # With THP (5.14+) also _PAGE_LEAF: a PMD being split keeps RWX with V cleared (pgtable.h pmd_present).
        present = v_or_pn or bool(raw & _PAGE_LEAF)
        if ctx.thp is None and not v_or_pn and present:
            return True, ("CONFIG_TRANSPARENT_HUGEPAGE unknown: decoded with THP's pmd_present() "
                          "(V|PROT_NONE|R|W|X); without THP this value would be a software entry",)
        return present, ()
    if level.shift == PUD_SHIFT:
        # pud_present tests V only (pgtable-64.h), but only hugetlb (1 GiB) writes non-present values
        # here (set_huge_pte_at) and reads them back with huge_ptep_get() and pte_present(), so
        # PROT_NONE counts as present at this level too.
        return v_or_pn, ()
    return bool(raw & _PAGE_PRESENT), ()  # p4d_present / pgd_present: V (pgtable-64.h)


def _low_flags(raw: int, ctx: _Ctx) -> tuple[str, ...]:
    """Names of set bits 0-9, low first."""
    names = []
    for bit, name in LOW_FLAGS:
        if raw & bit:
            if bit == ctx.prot_none and not raw & _PAGE_PRESENT and ctx.layout is not None:
                name = "_PAGE_PROT_NONE"
            names.append(name)
    if raw & _PAGE_DEVMAP:
        devmap = ctx.has("riscv_devmap")
        if devmap is None:
            names.append("SW bit 9 (meaning depends on kernel version)")
        else:
            assert ctx.layout is not None
            names.append("_PAGE_DEVMAP" if devmap else f"RSW bit 9 (unused by {ctx.layout.name})")
    return tuple(names)


@dataclass
class _High:
    """What bits 54-63 say: flags, fields, notes and the Svnapot N bit as decoded."""

    flags: list[str] = dataclasses.field(default_factory=list)
    fields: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    napot: bool = False  # N (bit 63) set and meaning Svnapot


def _high_bits(raw: int, leaf: bool, ctx: _Ctx) -> _High:
    """Decode bits 54-63 of a present value (leaf or table)."""
    out = _High()
    reserved = raw & RESERVED_54_58
    if ctx.thead:
        _thead_memtype(raw, ctx, out)
    else:
        reserved |= _bits_59_60(raw, ctx, out)
        _svpbmt(raw, leaf, ctx, out)
        if ctx.thead is None and raw >> THEAD_MT_SHIFT:
            out.notes.append(
                "bits 63:59 decoded as standard Svnapot/Svpbmt/RSW; on a T-Head CPU with XTheadMae they "
                "are its memory type (pgtable-64.h _PAGE_MTMASK_THEAD): give the thead_mae fact")
    if reserved:
        out.fields.append(("reserved", f"{reserved:#x} (bits {_bits(reserved)})"))
        soft = " (bits 59/60 only without Svrsw60t59b)" if reserved & (BIT_59 | BIT_60) else ""
        out.notes.append(f"reserved bits set{soft}: the MMU raises a page fault on this entry "
                         "(priv spec Sv39 PTE: bits 60-54 must be zero)")
    if ctx.has("riscv_pfn_mask") is False and raw >> 54:
        out.notes.append(f"pte_pfn() of this release has no _PAGE_PFN_MASK (5.19+, 100631b48ded): the kernel "
                         f"reads PFN {raw >> _PAGE_PFN_SHIFT:#x}, bits 63:54 included")
    return out


def _thead_memtype(raw: int, ctx: _Ctx, out: _High) -> None:
    mt = raw >> THEAD_MT_SHIFT & 0x1F
    if ctx.layout is None:
        name = "meaning depends on kernel version" if mt != 0b01110 else "PMA"
    else:
        name = thead_memtypes(ctx.layout).get(mt, "not a memory type Linux writes")
    out.fields.append(("T-Head MT (SO C B SH Sec)", f"{mt:05b} {name}"))


def _bits_59_60(raw: int, ctx: _Ctx, out: _High) -> int:
    """Name bits 59/60 (6.19+ soft-dirty / uffd with Svrsw60t59b); return those that are reserved."""
    reserved = 0
    for bit, kernel_name, active in ((BIT_59, "_PAGE_SOFT_DIRTY", ctx.soft_dirty),
                                     (BIT_60, ctx.uffd_names[0], ctx.uffd)):
        if not raw & bit:
            continue
        n = bit.bit_length() - 1
        if ctx.layout is None:
            out.flags.append(f"SW bit {n} (meaning depends on kernel version)")
        elif active:
            out.flags.append(kernel_name)
        elif active is None:
            out.flags.append(f"bit {n} ({kernel_name} with Svrsw60t59b and its config, else reserved)")
        elif ctx.svrsw and ctx.has("riscv_svrsw60t59b"):
            out.flags.append(f"RSW bit {n} (Svrsw60t59b; {kernel_name} is 0 in this kernel's config)")
        else:
            reserved |= bit
    return reserved


def _svpbmt(raw: int, leaf: bool, ctx: _Ctx, out: _High) -> None:
    """Bits 62:61 (Svpbmt) and 63 (Svnapot N)."""
    if raw & _PAGE_NOCACHE_SVPBMT:
        out.flags.append("_PAGE_NOCACHE_SVPBMT")
    if raw & _PAGE_IO_SVPBMT:
        out.flags.append("_PAGE_IO_SVPBMT")
    pbmt = raw >> PBMT_SHIFT & 3
    if pbmt:
        out.fields.append(("PBMT", f"{PBMT_NAMES[pbmt]} ({pbmt})"))
        if not leaf:
            out.notes.append("PBMT set in a non-leaf entry: reserved, the MMU raises a page fault "
                             "(priv spec svpbmt.adoc)")
        elif pbmt == 3:
            out.notes.append("PBMT=3 is reserved: the MMU raises a page fault (priv spec svpbmt.adoc)")
        if ctx.has("riscv_svpbmt") is False:
            assert ctx.layout is not None
            out.notes.append(f"{ctx.layout.name} has no Svpbmt support (_PAGE_*_SVPBMT are 5.19+) and never "
                             "sets PBMT")
    if raw & _PAGE_NAPOT:
        out.napot = True
        napot = ctx.has("riscv_svnapot")
        out.flags.append("_PAGE_NAPOT" if napot else "N (bit 63, Svnapot)")
        if napot is False:
            assert ctx.layout is not None
            thead = " except as T-Head's _PAGE_IO_THEAD" if ctx.has("riscv_thead_memtype") else ""
            out.notes.append(f"{ctx.layout.name} has no Svnapot support (_PAGE_NAPOT is 6.4+) and never sets "
                             f"bit 63{thead}")


def _table(raw: int, level: Level, last: bool, ctx: _Ctx) -> Decoded:
    """V=1, R=W=X=0: a pointer to the next level (priv spec translation step 4)."""
    flags = _low_flags(raw, ctx)
    if last:
        return Decoded(raw, level.name, Kind.UNKNOWN, size=level.span, flags=flags,
                       reason="V=1 with R=W=X=0 points to a next level, but there is none below PTE: "
                       "the MMU raises a page fault and Linux never writes this")
    high = _high_bits(raw, False, ctx)
    notes = list(high.notes)
    if raw & (_PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_USER):
        notes.append("D/A/U set in a non-leaf entry: reserved, software must clear them (priv spec)")
    if high.napot:
        notes.append("N set above the PTE level: reserved encoding (priv spec svnapot.adoc table "
                     "'ptenapot', i>=1), the MMU raises a page fault")
    return Decoded(
        raw, level.name, Kind.TABLE, size=level.span,
        next_table=(raw & _PAGE_PFN_MASK) >> _PAGE_PFN_SHIFT << PAGE_SHIFT,
        flags=flags + tuple(high.flags), fields=tuple(high.fields), notes=tuple(notes),
    )


def _leaf(raw: int, level: Level, last: bool, ctx: _Ctx) -> Decoded:
    """A present leaf (the kernel's view: hardware-valid, PROT_NONE or an invalidated THP PMD)."""
    ppn = (raw & _PAGE_PFN_MASK) >> _PAGE_PFN_SHIFT
    high = _high_bits(raw, True, ctx)
    flags = _low_flags(raw, ctx) + tuple(high.flags)
    fields = [("PPN", f"{ppn:#x}")] + high.fields
    notes = list(high.notes) + _leaf_notes(raw, ctx)
    cont = None
    if last:
        pfn = ppn
        if high.napot:
            order = (ppn & -ppn).bit_length() if ppn else 0  # napot_cont_order: ctz(ppn << 1)
            if order != NAPOT_CONT64KB_ORDER:
                return Decoded(
                    raw, level.name, Kind.UNKNOWN, size=level.span, flags=flags, fields=tuple(fields),
                    notes=tuple(high.notes),
                    reason=f"N=1 with PPN[3:0]={ppn & 0xF:04b} (NAPOT order {order}): only the 64 KiB "
                    "encoding PPN[3:0]=1000 exists (NAPOT_CONT64KB_ORDER, pgtable-64.h; priv spec "
                    "svnapot.adoc table 'ptenapot'); every other N=1 encoding is reserved and faults",
                )
            pfn = ppn & (ppn - 1)  # pte_pfn() clears the lowest set PPN bit (pgtable.h pte_pfn, 6.4+)
            cont = ContInfo("napot", 1 << NAPOT_CONT64KB_ORDER, 1 << (PAGE_SHIFT + NAPOT_CONT64KB_ORDER),
                            same_value=True)
            fields.append(("NAPOT", "64 KiB (order 4)"))
            notes.append("Svnapot 64 KiB block: all 16 PTEs hold this same value (set_huge_pte_at, "
                         "arch/riscv/mm/hugetlbpage.c) and pfn is the block's base; this page's own frame "
                         "is pfn + ((va >> 12) & 15)")
    else:
        frames = level.span >> PAGE_SHIFT
        pfn = ppn & ~(frames - 1)  # pmd_pfn / pud_pfn mask to the leaf size (pgtable.h, 6.1+)
        if ppn & (frames - 1):
            notes.append(f"misaligned superpage: PPN bits below {frames:#x} are set; the MMU raises a page "
                         "fault (priv spec translation step 5) and pmd_pfn()/pud_pfn() ignore them")
        if high.napot:
            notes.append("N set above the PTE level: reserved encoding (priv spec svnapot.adoc table "
                         "'ptenapot', i>=1), the MMU raises a page fault; Linux sets N only on 64 KiB "
                         "hugetlb PTEs (pte_mknapot)")
        if not level.leaf:
            notes.append(f"a leaf at {level.name}: Linux never maps one here (riscv has no p4d_leaf/"
                         "pgd_leaf) and its page-table walkers would treat it as a table")
    return Decoded(
        raw, level.name, Kind.PRESENT, size=level.span, pfn=pfn, pfn_space="phys", flags=flags,
        fields=tuple(fields), access=_access(raw, ctx), cont=cont, notes=tuple(notes),
    )


def _access(raw: int, ctx: _Ctx) -> Access:
    """pte_write/exec/user/young/dirty (pgtable.h); nothing is accessible through PROT_NONE."""
    # pte_protnone: (val & (V | _PAGE_PROT_NONE)) == _PAGE_PROT_NONE (pgtable.h, 5.10..7.3)
    protnone = (raw & (_PAGE_PRESENT | ctx.prot_none)) == ctx.prot_none
    return Access(
        read=bool(raw & _PAGE_READ) and not protnone,
        write=bool(raw & _PAGE_WRITE) and not protnone,
        exec=bool(raw & _PAGE_EXEC) and not protnone,
        user=bool(raw & _PAGE_USER),
        young=bool(raw & _PAGE_ACCESSED),
        dirty=bool(raw & _PAGE_DIRTY),
    )


def _leaf_notes(raw: int, ctx: _Ctx) -> list[str]:
    notes = []
    if not raw & _PAGE_PRESENT:
        if raw & ctx.prot_none:
            bit = "R" if ctx.prot_none == _PAGE_READ else "G"
            notes.append(f"PROT_NONE: V=0 with _PAGE_PROT_NONE ({bit}): present to the kernel, invalid to the "
                         "MMU (PAGE_NONE / NUMA hinting, pgtable.h; or a kernel mapping whose V bit was "
                         "cleared, mm/pageattr.c)")
        else:
            notes.append("V=0 with R/W/X kept: a PMD invalidated by pmd_mkinvalid() (THP split, "
                         "pmdp_invalidate); present to the kernel, invalid to the MMU")
            if ctx.has("riscv_svrsw60t59b") and raw & _PAGE_SWP_SOFT_DIRTY and ctx.soft_dirty is not False:
                notes.append("inconsistency (6.19+): a soft-dirty THP migration PMD also looks like this "
                             "(pmd_swp_mksoft_dirty sets bit 3 = _PAGE_EXEC, which pmd_present() tests; "
                             "pgtable.h, 7.2); decoded as pmd_present() says")
    if raw & (_PAGE_READ | _PAGE_WRITE) == _PAGE_WRITE:
        notes.append("W=1 with R=0: the Zicfiss shadow-stack encoding when XWR=010 (PAGE_SHADOWSTACK, "
                     "pgtable.h, 7.2), otherwise reserved")
    return notes


def _swp_pfn_bits(facts: KernelFacts, offset: int, layout: Layout, swap: SwapLayout) -> tuple[int | None, str]:
    """SWP_PFN_BITS, or None and why when it matters for this offset and cannot be told."""
    if not layout.has("swp_migration_ad"):
        return 64 - swap.offset_shift, ""  # before 6.1 swp_offset() is the PFN: no SWP_PFN_BITS
    mpb = facts.get("MAX_PHYSMEM_BITS")
    if isinstance(mpb, int) and not isinstance(mpb, bool):
        if PAGE_SHIFT < mpb <= 64:
            return mpb - PAGE_SHIFT, ""
        return None, f"MAX_PHYSMEM_BITS fact {mpb} is not a physical address width"
    sparse = _flag(facts, "CONFIG_SPARSEMEM")
    if sparse:
        return SWP_PFN_BITS_SPARSEMEM, ""
    if sparse is False or _flag(facts, "CONFIG_FLATMEM"):
        return SWP_PFN_BITS_FLATMEM, ""
    # With 52 PFN bits, SWP_MIG_TOTAL_BITS = 54 exceeds the arch's swap offset (53/52 bits), so
    # swap_migration_ad_supported is true only with SPARSEMEM (mm/swapfile.c swapfile_init).
    if facts.get("swap_migration_ad_supported") is True or offset >> SWP_PFN_BITS_SPARSEMEM == 0:
        return SWP_PFN_BITS_SPARSEMEM, ""
    return None, ("SWP_PFN_BITS is 44 with CONFIG_SPARSEMEM (asm/sparsemem.h) and 52 without "
                  "(include/linux/swapops.h); CONFIG_SPARSEMEM is not known and this offset has bits >= 44")


def _swp_flags(raw: int, ctx: _Ctx, swap: SwapLayout) -> tuple[list[str], int]:
    """The pte_swp_* flag names set, and set bits the layout keeps zero."""
    flags = []
    stray = raw & swap.zero
    if swap.exclusive and raw & swap.exclusive:
        flags.append("_PAGE_SWP_EXCLUSIVE")
    for bit, name, active in ((_PAGE_SWP_SOFT_DIRTY, "_PAGE_SWP_SOFT_DIRTY", ctx.soft_dirty),
                              (_PAGE_SWP_UFFD, ctx.uffd_names[1], ctx.uffd)):
        if raw & bit and active is not False:
            stray &= ~bit
            flags.append(name if active else f"bit {bit.bit_length() - 1} ({name} with Svrsw60t59b "
                         "and its config)")
    return flags, stray


def _release_facts(facts: KernelFacts, layout: Layout) -> KernelFacts:
    """Config facts the release itself settles on riscv, added where the user gave none."""
    settled: dict[str, Fact] = {}
    if layout.has("pte_marker_config") and not facts.known("CONFIG_PTE_MARKER"):
        # PTE_MARKER is selected only by PTE_MARKER_UFFD_WP, which needs HAVE_ARCH_USERFAULTFD_WP
        # (mm/Kconfig, 6.1); riscv selects that only from 6.19 (riscv_svrsw60t59b).
        settled["CONFIG_PTE_MARKER"] = Fact(False, f"riscv {layout.name} cannot enable PTE_MARKER")
    return dataclasses.replace(facts, facts={**facts.facts, **settled}) if settled else facts


def _softleaf(raw: int, level: Level, ctx: _Ctx, facts: KernelFacts) -> Decoded:
    """A non-present, non-none value: the arch swap layout, then the generic type space."""
    layout = ctx.layout
    assert layout is not None  # _decode answers V=0 entries of an unknown release
    facts = _release_facts(facts, layout)
    swap = swap_layout(layout)
    flags, stray = _swp_flags(raw, ctx, swap)
    leaf = Softleaf((raw >> swap.type_shift) & 0x1F, raw >> swap.offset_shift, tuple(flags))
    pfn_bits, why = _swp_pfn_bits(facts, leaf.offset, layout, swap)
    if pfn_bits is None and classify_type(leaf.type, facts).kind in PFN_KINDS | {Kind.SWAPIN_ERROR}:
        return Decoded(raw, level.name, Kind.UNKNOWN, size=level.span, flags=tuple(flags), softleaf=leaf,
                       reason=why)
    dec = decode_softleaf(raw, level.name, level.span, leaf, facts, pfn_bits, flags=tuple(flags))
    notes = []
    if stray:
        notes.append(f"bits {_bits(stray)} are set, which this kernel's swap layout keeps zero (pgtable.h)")
    if level.shift == PUD_SHIFT:
        notes.append("only hugetlb (1 GiB, set_huge_pte_at) writes software entries at this level")
    thp_kinds: frozenset[Kind] = frozenset()
    if layout.has("riscv_thp_migration"):
        thp_kinds = MIGRATION_KINDS | (DEVICE_PRIVATE_KINDS if layout.has("pmd_device_private") else frozenset())
    if level.shift == PMD_SHIFT and dec.kind in SOFTLEAF_KINDS - thp_kinds:
        notes.append("a 2 MiB hugetlb PMD can hold it: set_huge_pte_at writes any software entry here")
    return dataclasses.replace(dec, notes=dec.notes + tuple(notes)) if notes else dec


# ---------------------------------------------------------------- rules `ptinspect validate` checks

def output_bits(mode: PagingMode, facts: KernelFacts) -> int:
    """The physical-address width: 56 bits (44-bit PPN; priv spec Sv39/48/57 PTE formats)."""
    return mode.pa_bits


def reserved_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
    """Bits set in a present leaf or table entry that must be zero (the MMU raises a page fault,
    priv spec): 54-58, and 59/60 unless Svrsw60t59b gives them a use (_bits_59_60); PBMT=3 in
    a leaf and any PBMT in a table (svpbmt.adoc); in a table also N (svnapot.adoc) and D/A/U
    ("reserved for future standard use", supervisor.adoc).  Bits 63:59 are T-Head's memory
    type with XTheadMae, so only 54-58 are checked there."""
    ctx = _Ctx.of(facts)
    mask = raw & RESERVED_54_58
    if ctx.thead:
        return mask
    mask |= _bits_59_60(raw, ctx, _High())
    pbmt = raw & (_PAGE_NOCACHE_SVPBMT | _PAGE_IO_SVPBMT)
    if table:
        mask |= pbmt | (raw & (_PAGE_NAPOT | _PAGE_DIRTY | _PAGE_ACCESSED | _PAGE_USER))
    elif pbmt == _PAGE_NOCACHE_SVPBMT | _PAGE_IO_SVPBMT:
        mask |= pbmt
    return mask


def misaligned_bits(raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
    """Output-address bits below a superpage's size that are set: a misaligned superpage, a
    page fault (priv spec, address translation: "misaligned superpage"); pmd_pfn()/pud_pfn()
    mask them (pgtable.h)."""
    level = mode.levels[depth]
    if depth == len(mode.levels) - 1:
        return 0
    ppn = (raw & _PAGE_PFN_MASK) >> _PAGE_PFN_SHIFT
    return (ppn << PAGE_SHIFT) & (level.span - 1)


def cont_signature(raw: int, mode: PagingMode) -> int:
    """The attributes every PTE of a NAPOT block shares, its PPN aside (the check compares the
    decoded frames): set_huge_pte_at() writes one value to all 16 (arch/riscv/mm/hugetlbpage.c,
    6.4+), so only the A/D bits the hardware sets per PTE may differ (huge_ptep_get ORs them)."""
    return raw & ~(_PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_PFN_MASK)


ARCH: Arch = Riscv64()

