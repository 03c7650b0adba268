"""Contiguous blocks: arm64 PTE_CONT (contpte, contiguous PMDs) and RISC-V Svnapot.

A block is the naturally aligned group of `ContInfo.entries` slots of one table
holding a contiguous-hint entry.  What the block's entries must agree on is
the majority's: the odd entry out is the one reported, at its own slot.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import cast

from ptinspect.archs import all_arches
from ptinspect.archs.common import Kind

from ..entry import Entry
from .base import Check, Context, Finding

CONTPTE_SOURCE = ("arch/arm64/mm/contpte.c:-/76-138/234-296 (__contpte_try_fold: aligned, one folio, "
                  "consecutive PFNs, prots equal after pte_mkold(pte_mkclean())), 7.2:361-366 "
                  "(contpte_is_consistent); arch/arm64/mm/hugetlbpage.c:215-233 in 7.2 (set_huge_pte_at "
                  "writes CONT_PTES/CONT_PMDS entries with advancing PFNs); Arm ARM D8.6.1 (Contiguous bit)")
NAPOT_SOURCE = ("arch/riscv/mm/hugetlbpage.c:-/246-271/246-271 (set_huge_pte_at writes one value to "
                "all 16 PTEs), :6-28 (huge_ptep_get gathers A/D); arch/riscv/include/asm/pgtable-64.h:"
                "-/89-92/91-94 (NAPOT_CONT64KB_ORDER); priv spec svnapot.adoc")


def _blocks(ctx: Context, schemes: frozenset[str]) -> Iterator[Finding]:
    seen: set[tuple[int, int]] = set()
    for e in ctx.leaves:
        cont = e.hw.cont
        if e.kind is not Kind.PRESENT or cont is None or cont.scheme not in schemes or cont.entries <= 1:
            continue
        first = e.ref.index - e.ref.index % cont.entries
        if (e.ref.table, first) not in seen:
            seen.add((e.ref.table, first))
            yield from _block(ctx, e, first)


def _in_block(m: Entry | None, scheme: str) -> bool:
    return m is not None and m.kind is Kind.PRESENT and m.hw.cont is not None and m.hw.cont.scheme == scheme


def _block(ctx: Context, e: Entry, first: int) -> Iterator[Finding]:
    """The findings of the block starting at slot `first` of e's table."""
    cont = e.hw.cont
    assert cont is not None
    mode = ctx.snap.mode
    level = mode.levels[e.ref.depth]
    n, check = cont.entries, ("napot" if cont.scheme == "napot" else "contpte")
    frames = level.span >> mode.page_shift  # frames one entry maps
    step = 0 if cont.same_value else frames  # pfn advance from one entry's value to the next
    first_va = e.va - (e.ref.index - first) * level.span
    members = [ctx.by_slot.get((e.ref.table, first + i)) for i in range(n)]
    lo, hi = ctx.snap.va_range or (0, 1 << 64)
    walked = [i for i in range(n) if lo <= first_va + i * level.span < hi]  # slots the snapshot covers
    inside = {i: m for i, m in enumerate(members) if m is not None and _in_block(m, cont.scheme)}
    what = f"{n}-entry {cont.scheme} block at {first_va:#x}"
    if len(inside) * 2 < len(walked):  # a minority carries the hint: those entries are the odd ones out
        for entry in inside.values():
            yield ctx.finding(check, entry, f"contiguous bit set, but only {len(inside)} of the {n} entries of its "
                                        f"{what} have it (a partial block)")
        return
    sig = Counter(ctx.rules.cont_signature(x.hw.raw, mode) for x in inside.values()).most_common(1)[0][0]
    # a present leaf in a block always carries its frame (Decoded.pfn)
    base = Counter(cast(int, x.hw.pfn) - i * step for i, x in inside.items()).most_common(1)[0][0]
    ref = next(x for x in inside.values() if ctx.rules.cont_signature(x.hw.raw, mode) == sig)
    for i, m in enumerate(members):
        if i not in walked:
            continue  # outside the snapshot's VA range: not known
        if m is None:
            yield Finding(check, first_va + i * level.span, level.name, e.ref.table, first + i,
                          f"entry {i + 1} of the {what} is none: a partial block")
        elif m.kind is Kind.UNKNOWN:
            continue  # reported by well-formed
        elif i not in inside:
            yield ctx.finding(check, m, f"entry {i + 1} of the {what} ({len(inside)} of {n} entries have the "
                                        f"contiguous bit) is a {m.kind.value} entry without it: a partial block")
        else:
            yield from _member(ctx, check, m, i, what, sig, base + i * step, ref)
    if base % (n * frames):
        yield ctx.finding(check, next(iter(inside.values())), f"the {what} starts at frame {base:#x}, not aligned to "
                                                       f"its {n * frames} frames")


def _member(ctx: Context, check: str, m: Entry, i: int, what: str, sig: int, pfn: int, ref: Entry) -> Iterator[Finding]:
    problems = []
    mine = ctx.rules.cont_signature(m.hw.raw, ctx.snap.mode)
    if mine != sig:
        names = sorted(set(m.hw.flags) ^ set(ref.hw.flags))
        problems.append(f"attributes differ from the block's other entries in bits {mine ^ sig:#x}"
                        + (f" ({', '.join(names)})" if names else ""))
    if m.hw.pfn != pfn:
        problems.append(f"frame {m.hw.pfn:#x} where the block needs {pfn:#x}")
    if problems:
        yield ctx.finding(check, m, f"entry {i + 1} of the {what}: " + "; ".join(problems))


CONTPTE, NAPOT = frozenset({"contpte", "contpmd"}), frozenset({"napot"})


def arches_with(schemes: frozenset[str]) -> frozenset[str]:
    """The architectures whose decoder gives blocks of these ContInfo schemes."""
    return frozenset(a.name for a in all_arches() if a.cont_schemes & schemes)


CHECKS = (
    Check("contpte", "arm64 PTE_CONT blocks (16/128/32 PTEs, contiguous PMDs): aligned, complete, consecutive "
          "frames, identical attributes apart from access/dirty",
          CONTPTE_SOURCE, lambda ctx: _blocks(ctx, CONTPTE), arches=arches_with(CONTPTE)),
    Check("napot", "RISC-V Svnapot blocks: 16 aligned PTEs holding one value (apart from A/D); malformed "
          "orders are reported by well-formed", NAPOT_SOURCE,
          lambda ctx: _blocks(ctx, NAPOT), arches=arches_with(NAPOT)),
)
