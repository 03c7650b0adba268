"""The table tree: pointers into RAM, no cycles, no table reached twice where the kernel never shares."""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from ptinspect.archs.common import Kind

from ..entry import Entry
from ..kernel import VM_HUGETLB, VM_MAYSHARE
from ..reader import contains
from .base import Check, Context, Finding


def _parents(ctx: Context) -> dict[int, Entry]:
    """Each followed table and the entry that first led to it."""
    parent: dict[int, Entry] = {}
    for e in ctx.pointers:  # entries whose next_table is set
        if e.kind is Kind.TABLE and e.hw.next_table is not None:
            parent.setdefault(e.hw.next_table, e)
    return parent


def _path(table: int, parent: dict[int, Entry]) -> list[int]:
    """The tables from `table` up to the root."""
    path: list[int] = []
    while table not in path:
        path.append(table)
        up = parent.get(table)
        if up is None:
            break
        table = up.ref.table
    return path


def cycles(ctx: Context) -> Iterator[Finding]:
    parent = _parents(ctx)
    for e in ctx.pointers:
        path = _path(e.ref.table, parent)
        if e.hw.next_table in path:
            up = path.index(e.hw.next_table)  # path[k] is the table k levels above e's
            which = "its own table" if up == 0 else f"the {ctx.snap.mode.levels[e.ref.depth - up].name} table above it"
            yield ctx.finding("table-cycle", e, f"points at {e.hw.next_table:#x}, {which}: a cycle")


def in_ram(ctx: Context) -> Iterator[Finding]:
    ram = ctx.snap.ram
    parent = _parents(ctx)
    for e in ctx.pointers:
        depth = e.ref.depth + 1
        nxt = e.hw.next_table
        assert nxt is not None
        if depth >= len(ctx.snap.mode.levels) or nxt in _path(e.ref.table, parent):
            continue
        size = ctx.table_bytes(depth)
        if ram is not None and not contains(ram, nxt, size):
            yield ctx.finding("table-ram", e, f"table pointer {nxt:#x} is outside RAM (memblock.memory)")
        elif ram is None and nxt + size > 1 << ctx.output_bits:
            yield ctx.finding("table-ram", e, f"table pointer {nxt:#x} is beyond the {ctx.output_bits}-bit "
                                              "physical address width")


def _hugetlb_shared(ctx: Context, entries: list[Entry]) -> bool:
    """hugetlb PMD sharing: a PMD table of VM_MAYSHARE hugetlb mappings (want_pmd_share)."""
    if ctx.vma_index is None or ctx.snap.mode.levels[entries[0].ref.depth + 1].name != "pmd":
        return False
    for e in entries:
        vma = ctx.vma_index.find(e.va)
        if vma is None or vma.flags & (VM_HUGETLB | VM_MAYSHARE) != VM_HUGETLB | VM_MAYSHARE:
            return False
    return True


def shared(ctx: Context) -> Iterator[Finding]:
    refs: dict[int, list[Entry]] = defaultdict(list)
    for e in ctx.pointers:  # entries whose next_table is set
        if e.kind is Kind.TABLE and e.hw.next_table is not None:
            refs[e.hw.next_table].append(e)
    for table, entries in refs.items():
        if len(entries) < 2 or _hugetlb_shared(ctx, entries):
            continue
        first = entries[0]
        for e in entries[1:]:
            yield ctx.finding("table-shared", e, f"points at table {table:#x}, which {first.ref.level} "
                                                 f"{first.ref.table:#x}[{first.ref.index}] (va {first.va:#x}) "
                                                 "also points at")


CHECKS = (
    Check("table-cycle", "no table entry points at its own table or a table above it",
          "mm/memory.c:425-461,6747-6790 in 7.2 (pmd_install, __pud_alloc, __pmd_alloc: each level points "
          "at a table newly allocated for it, include/linux/mm.h:3683 pagetable_alloc)", cycles),
    Check("table-ram", "table pointers point into RAM (beyond the PA width when RAM is not recorded)",
          "include/linux/mm.h:3683-3689 in 7.2 (pagetable_alloc: page tables come from the page "
          "allocator); mm/memblock.c (memblock.memory)", in_ram),
    Check("table-shared", "no table is reached from two entries of one root, except hugetlb PMD sharing",
          "mm/memory.c:425-461 in 7.2 (a new table per pmd_install); mm/hugetlb.c:6844-6905 in 7.2 "
          "(want_pmd_share/huge_pmd_share: VM_MAYSHARE hugetlb PMD tables only)", shared),
)
