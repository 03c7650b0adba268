"""The reference model's kernel accessors against the decoders, entry by entry.

inspector/model/<arch>.py transliterates pte_present(), softleaf_from_pte(),
pte_pfn()/pmd_pfn() and ptep_get() (with the contpte / NAPOT gather) from the
kernel headers independently of archs/<arch>.py; where they disagree about a
real entry, one of the two misreads the kernel.
"""
from __future__ import annotations

from collections.abc import Iterator

from ptinspect.archs.common import Kind

from ..entry import Entry
from ..model.base import ArchModel
from ..model.builder import model_for
from .base import Check, Context, Finding


def _skip(ctx: Context) -> str | None:
    if ctx.snap.facts.layout is None:
        return "kernel release unknown"
    if ctx.snap.facts.get("thead_mae"):  # a riscv64 fact (XTheadMae)
        return "the riscv model assumes Svpbmt, not XTheadMae memory types"
    return None


def _problems(ctx: Context, model: ArchModel, e: Entry) -> list[str]:
    snap = ctx.snap
    raw, depth, layout = e.hw.raw, e.ref.depth, snap.facts.layout
    assert layout is not None  # _skip
    present = model.pte_present(raw, depth, snap.mode, layout)
    if present != (e.kind is Kind.PRESENT):
        return [f"{e.ref.level}_present() is {str(present).lower()} but the decoder says {e.kind.value}"]
    out = []
    if present:
        pfn = model.leaf_pfn(raw, depth, snap.mode)
        if pfn != e.hw.pfn:
            out.append(f"{e.ref.level}_pfn() is {pfn:#x}, the decoder's pfn {e.hw.pfn:#x}")
    else:
        swp = model.softleaf_from_pte(raw, depth, snap.mode, layout)
        leaf = e.hw.softleaf
        if swp is None or leaf is None or (swp.type, swp.offset) != (leaf.type, leaf.offset):
            got = "none" if swp is None else f"type {swp.type} offset {swp.offset:#x}"
            out.append(f"softleaf_from_pte() gives {got}, the decoder "
                       + ("none" if leaf is None else f"type {leaf.type} offset {leaf.offset:#x}"))
    if e.block is not None and e.hw.cont is not None:
        pos, block = e.ref.block(ctx.tables, snap.mode.levels[depth].entries, e.hw.cont.entries)
        view = model.ptep_get(block, pos, depth, snap.mode, layout)
        if view != e.view.raw:
            out.append(f"ptep_get() gives {view:#x}, the decoder's kernel view {e.view.raw:#x}")
    return out


def agree(ctx: Context) -> Iterator[Finding]:
    model = model_for(ctx.snap.arch.name)
    for e in ctx.leaves:
        if e.kind is Kind.UNKNOWN:
            continue
        try:
            problems = _problems(ctx, model, e)
        except ValueError as exc:  # a model macro refusing the value
            problems = [f"the reference model refuses this value: {exc}"]
        if problems:
            yield ctx.finding("model-view", e, "; ".join(problems))


CHECKS = (
    Check("model-view", "the reference model's pte_present(), softleaf_from_pte(), pte_pfn() and ptep_get() "
          "(contpte/NAPOT gather) agree with the decoder on every entry",
          "inspector/model/<arch>.py, transliterated from arch/*/include/asm/pgtable*.h, include/linux/"
          "leafops.h:55-110, arch/arm64/mm/contpte.c:313-356, arch/riscv/mm/hugetlbpage.c:6-28 (7.2)",
          agree, skip=_skip),
)
