"""Per-entry encoding rules: decodable, no reserved bits, aligned leaves, addresses within the PA width."""
from __future__ import annotations

from collections.abc import Iterator

from ptinspect.archs.common import SOFTLEAF_KINDS, Kind

from .base import Check, Context, Finding


def _bit_list(mask: int) -> str:
    return ", ".join(str(b) for b in range(64) if mask >> b & 1)


def well_formed(ctx: Context) -> Iterator[Finding]:
    """Unknown entries, except refused table pointers (the tree checks report them) and
    non-present kernel-half entries (set_memory_np, DEBUG_PAGEALLOC, KFENCE; see the walker)."""
    snap = ctx.snap
    for e in ctx.leaves:
        if e.kind is not Kind.UNKNOWN:
            continue
        again = snap.arch.decode(e.hw.raw, e.ref.depth, snap.mode, snap.facts) if ctx.kernel_half(e.va) else None
        if again is not None and again.kind in SOFTLEAF_KINDS:
            continue
        yield ctx.finding("well-formed", e, e.hw.reason or "the decoder cannot classify this value")


def reserved(ctx: Context) -> Iterator[Finding]:
    snap = ctx.snap
    for e in ctx.entries:
        table = e.kind is Kind.TABLE
        if not table and e.kind is not Kind.PRESENT:
            continue
        bits = ctx.rules.reserved_bits(e.hw.raw, e.ref.depth, snap.mode, snap.facts, table)
        if bits:
            yield ctx.finding("reserved-bits", e, f"reserved bits {_bit_list(bits)} set ({bits:#x}) in a "
                                                  f"{'table entry' if table else 'leaf'}")


def alignment(ctx: Context) -> Iterator[Finding]:
    snap = ctx.snap
    for e in ctx.leaves:
        if e.kind is not Kind.PRESENT:
            continue
        bits = ctx.rules.misaligned_bits(e.hw.raw, e.ref.depth, snap.mode, snap.facts)
        if bits:
            yield ctx.finding("leaf-alignment", e, f"output address bits {bits:#x} below the leaf's size "
                                                   f"({e.size:#x}) are set: a misaligned leaf")


def pa_width(ctx: Context) -> Iterator[Finding]:
    limit = 1 << ctx.output_bits
    for e in ctx.leaves:
        if e.kind is not Kind.PRESENT or e.frame is None:
            continue
        end = (e.frame << e.page_shift) + e.size
        if end > limit:
            yield ctx.finding("pa-width", e, f"maps {e.frame << e.page_shift:#x}-{end:#x}, beyond the "
                                             f"{ctx.output_bits}-bit physical address width")


CHECKS = (
    Check("well-formed", "every entry decodes to a kind the kernel writes (unknown entries are listed with "
          "the reason, missing facts included)",
          "include/linux/leafops.h:55-160 in 7.2 (softleaf_from_pte, softleaf_type), include/linux/swap.h "
          "(type space), arch pgtable.h pte_present/pmd_present; as cited in archs/<arch>.py", well_formed),
    Check("reserved-bits", "no bits the hardware reserves or the kernel never writes are set in a present "
          "leaf or table entry",
          "x86: arch/x86/include/asm/pgtable_types.h:20-30,219-221; arm64: arch/arm64/include/asm/"
          "pgtable-hwdef.h:164-176, pgtable-prot.h:16-35; riscv: arch/riscv/include/asm/pgtable-64.h:"
          "79-90, priv spec (bits 60-54 reserved), svpbmt.adoc, svnapot.adoc (all 7.2)", reserved),
    Check("leaf-alignment", "huge leaves and blocks map an output address aligned to their size",
          "x86: arch/x86/include/asm/pgtable.h:263 (pmd_pfn with pmd_pfn_mask), SDM Vol. 3A tables 4-17/4-18; "
          "arm64: arch/arm64/include/asm/pgtable.h:630 (pmd_pfn & PMD_MASK); riscv: arch/riscv/include/asm/"
          "pgtable.h:780 (pmd_pfn), priv spec 'misaligned superpage' (all 7.2)", alignment),
    Check("pa-width", "present leaves map output addresses within the physical address width",
          "x86: arch/x86/kernel/cpu/common.c:1124 (x86_phys_bits), __PHYSICAL_MASK_SHIFT 52; arm64: "
          "TCR_EL1.IPS (arch/arm64/include/asm/assembler.h tcr_compute_pa_size); riscv: 56-bit PA "
          "(arch/riscv/include/asm/pgtable-64.h:79 _PAGE_PFN_MASK)", pa_width),
)
