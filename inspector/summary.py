"""How a root maps its address space, counted per VMA and in total: bytes and entries by mapping
size and by kind, huge-leaf and contiguous-block coverage, page-table pages per level.

Counts come from the walk's bulk form (dump.bulk_rows): a LeafRun of plain leaves is counted as
one item, never expanded into Entry objects, so a summary costs the walk and little more.
"""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from ptinspect.archs.common import Decoded, Kind, PagingMode

from .dump import Row, RunRows, VmaIndex
from .entry import Entry
from .kernel import VM_HUGETLB, Vma
from .records import vma_record
from .snapshot import Snapshot

SCHEMA = "ptinspect.summary/1"

# What a page-table walk cannot show, said with every summary.
NOTES = (
    "THP and hugetlb are told apart by the VMA's VM_HUGETLB flag, not by the entries",
    "a large folio mapped by plain PTEs (mTHP without contpte/Svnapot) looks like base pages to a "
    "page-table walk: the folio size is in struct folio, which a summary does not read",
    "page-table pages per VMA count every table whose span overlaps the VMA: a table shared by two VMAs "
    "counts in both (the total counts it once)",
)


def short_size(size: int) -> str:
    """4K, 64K, 2M, 1G: the sizes mm developers name mappings by."""
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


def size_class(level: str, span: int, dec: Decoded) -> tuple[str, int, bool]:
    """(label, block bytes, contiguous) of a present leaf: "pte 4K", "contpte 64K", "napot 64K",
    "pmd 2M", "contpmd 32M", "pud 1G"."""
    cont = dec.cont
    if cont is not None and cont.entries > 1:
        return f"{cont.scheme} {short_size(cont.size)}", cont.size, True
    return f"{level} {short_size(span)}", span, False


def kind_label(dec: Decoded) -> str:
    """The kind, and for a PTE marker its marker bits: "swap", "marker guard", "marker uffd-wp"."""
    if dec.kind is Kind.MARKER:
        return "marker " + (",".join(dec.markers) or "none")
    return dec.kind.value


@dataclass
class Count:
    entries: int = 0
    bytes: int = 0

    def add(self, entries: int, nbytes: int) -> None:
        self.entries += entries
        self.bytes += nbytes


@dataclass
class Part:
    """The counts of one VMA, of the entries outside every VMA, or of the whole root."""

    label: str
    vma: Vma | None = None
    sizes: dict[str, Count] = field(default_factory=dict)  # present leaves by mapping size
    kinds: dict[str, Count] = field(default_factory=dict)  # every leaf and problem entry by kind
    tables: dict[str, int] = field(default_factory=dict)  # page-table pages by level name
    huge_bytes: int = 0  # present leaves above the last level (PMD, PUD)
    cont_bytes: int = 0  # present leaves in contiguous blocks (contpte, contpmd, Svnapot)
    span: int | None = None  # bytes of VA the part stands for (VMA sizes); None outside VMAs

    @property
    def hugetlb(self) -> bool:
        return self.vma is not None and bool(self.vma.flags & VM_HUGETLB)

    @property
    def present_bytes(self) -> int:
        c = self.kinds.get(Kind.PRESENT.value)
        return c.bytes if c else 0

    def pct(self, nbytes: int) -> float | None:
        return None if not self.span else 100.0 * nbytes / self.span

    def count(self, where: dict[str, Count], key: str, entries: int, nbytes: int) -> None:
        c = where.get(key)
        if c is None:
            c = where[key] = Count()
        c.add(entries, nbytes)

    def merge(self, other: Part) -> None:
        for mine, theirs in ((self.sizes, other.sizes), (self.kinds, other.kinds)):
            for key, c in theirs.items():
                self.count(mine, key, c.entries, c.bytes)
        self.huge_bytes += other.huge_bytes
        self.cont_bytes += other.cont_bytes


@dataclass
class Summary:
    mode: PagingMode
    vmas: list[Part]  # one per VMA, in address order (empty when the root has no VMA list)
    outside: Part  # entries outside every VMA (every entry when there is no VMA list)
    total: Part
    size_order: dict[str, int]  # mapping-size label -> block bytes (for ordering columns)
    notes: tuple[str, ...] = NOTES

    def sizes(self) -> list[str]:
        """The mapping-size labels seen, smallest block first."""
        return sorted(self.size_order, key=lambda s: (self.size_order[s], s))


class _Counter:
    def __init__(self, mode: PagingMode, vmas: Sequence[Vma]) -> None:
        self.mode = mode
        self.last = len(mode.levels) - 1
        self.vmas = sorted(vmas, key=lambda v: v.start)
        self.starts = [v.start for v in self.vmas]
        self.parts = {v: Part(f"{v.start:#x}-{v.end:#x}", v, span=v.end - v.start) for v in self.vmas}
        self.outside = Part("outside VMAs" if self.vmas else "all entries")
        self.tables: dict[str, int] = {mode.levels[0].name: 1}  # the root table
        self.size_order: dict[str, int] = {}

    def part(self, vma: Vma | None) -> Part:
        return self.outside if vma is None else self.parts[vma]

    def run(self, item: RunRows) -> None:
        run = item.run
        n, span = len(run.slots), run.span
        part = self.part(item.vma)
        label, unit, _ = size_class(run.level, span, run.template)
        self.size_order[label] = unit
        part.count(part.sizes, label, n, n * span)
        part.count(part.kinds, Kind.PRESENT.value, n, n * span)
        if run.depth < self.last:
            part.huge_bytes += n * span

    def row(self, row: Row) -> None:
        e = row.entry
        if e.kind is Kind.TABLE:
            self.table(e)
            return
        part = self.part(row.vma)
        part.count(part.kinds, kind_label(e.hw), 1, e.size)
        if e.kind is Kind.PRESENT:
            label, unit, cont = size_class(e.ref.level, e.size, e.hw)
            self.size_order[label] = unit
            part.count(part.sizes, label, 1, e.size)
            if e.ref.depth < self.last:
                part.huge_bytes += e.size
            if cont:
                part.cont_bytes += e.size

    def table(self, e: Entry) -> None:
        """A table entry: one page-table page of the next level, counted in total and in every VMA it spans."""
        name = self.mode.levels[e.ref.depth + 1].name
        self.tables[name] = self.tables.get(name, 0) + 1
        i = max(bisect.bisect_right(self.starts, e.va) - 1, 0)
        while i < len(self.vmas) and self.vmas[i].start < e.va + e.size:
            v = self.vmas[i]
            if v.end > e.va:
                tables = self.parts[v].tables
                tables[name] = tables.get(name, 0) + 1
            i += 1

    def summary(self) -> Summary:
        total = Part("total", span=sum(v.end - v.start for v in self.vmas) or None)
        for p in [*self.parts.values(), self.outside]:
            total.merge(p)
        total.tables = dict(self.tables)
        return Summary(self.mode, list(self.parts.values()), self.outside, total, self.size_order)


def summarize(items: Iterable[Row | RunRows], mode: PagingMode, vmas: Sequence[Vma]) -> Summary:
    """Count the items of a walk with table entries (dump.bulk_rows(..., tables=True))."""
    counter = _Counter(mode, vmas)
    for item in items:
        if type(item) is RunRows:
            counter.run(item)
        else:
            counter.row(item)
    return counter.summary()


def snapshot_rows(snap: Snapshot) -> Iterator[Row]:
    """A snapshot's entries decoded again (table entries included), with their VMAs."""
    vmas = VmaIndex(snap.vmas or ())
    for e in snap.walk():
        yield Row(e, vmas.find(e.va) if snap.vmas else None)


def part_record(part: Part) -> dict[str, Any]:
    """A part as JSON: counts by mapping size and kind, coverage in percent of the VMA, tables per level."""
    rec: dict[str, Any] = {"label": part.label}
    if part.vma is not None:
        rec["vma"] = vma_record(part.vma)
        rec["hugetlb"] = part.hugetlb
    rec["bytes"] = part.span
    rec["present_bytes"] = part.present_bytes
    rec["by_size"] = {k: {"entries": c.entries, "bytes": c.bytes} for k, c in part.sizes.items()}
    rec["by_kind"] = {k: {"entries": c.entries, "bytes": c.bytes} for k, c in part.kinds.items()}
    rec["huge_leaf_bytes"] = part.huge_bytes
    rec["cont_bytes"] = part.cont_bytes
    rec["coverage_pct"] = {"huge_leaves": part.pct(part.huge_bytes), "cont": part.pct(part.cont_bytes),
                           "present": part.pct(part.present_bytes)}
    rec["table_pages"] = dict(part.tables)
    return rec


def summary_record(summary: Summary, target: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA, "target": target, "page_size": summary.mode.page_size,
            "sizes": {s: summary.size_order[s] for s in summary.sizes()},
            "total": part_record(summary.total), "vmas": [part_record(p) for p in summary.vmas],
            "outside_vmas": part_record(summary.outside), "notes": list(summary.notes)}
