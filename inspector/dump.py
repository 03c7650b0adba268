"""The entries of a root, annotated with their VMA, filtered, optionally merged into ranges."""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import final

from archs.common import Kind

from .entry import Entry
from .kernel import Vma
from .session import Root, Session
from .walker import LeafRun


@final
@dataclass(frozen=True)
class Row:
    """One entry and the VMA it lies in (None: outside every VMA, or no VMA list)."""

    entry: Entry
    vma: Vma | None

    # What a script asks of an entry most, without going through .entry.hw (the Python API's rows).
    @property
    def va(self) -> int:
        return self.entry.va

    @property
    def size(self) -> int:
        return self.entry.size

    @property
    def level(self) -> str:
        return self.entry.ref.level

    @property
    def raw(self) -> int:
        return self.entry.hw.raw

    @property
    def kind(self) -> Kind:
        return self.entry.kind

    @property
    def flags(self) -> tuple[str, ...]:
        """The set bits by the kernel's names for this architecture."""
        return self.entry.hw.flags

    @property
    def soft(self) -> tuple[str, ...]:
        """The kernel's software bits under arch-neutral names ("uffd", "soft-dirty", ...)."""
        return self.entry.hw.soft


@final
@dataclass(frozen=True)
class RunRows:
    """The rows of a LeafRun (or part of one) that lie in one VMA, kept in bulk."""

    run: LeafRun
    vma: Vma | None

    def rows(self) -> Iterator[Row]:
        return (Row(e, self.vma) for e in self.run.entries())


@final
@dataclass(frozen=True)
class Range:
    """Adjacent entries with equal attributes and consecutive frames."""

    first: Row
    last: Row
    count: int

    @property
    def start(self) -> int:
        return self.first.entry.va

    @property
    def end(self) -> int:
        return self.last.entry.va + self.last.entry.size


class VmaIndex:
    """Finds the VMA holding an address."""

    def __init__(self, vmas: Iterable[Vma]) -> None:
        self.vmas = sorted(vmas, key=lambda v: v.start)
        self.starts = [v.start for v in self.vmas]

    def find(self, va: int) -> Vma | None:
        i = bisect.bisect_right(self.starts, va) - 1
        if i >= 0 and va < self.vmas[i].end:
            return self.vmas[i]
        return None

    def split(self, run: LeafRun) -> Iterator[RunRows]:
        """`run` cut where its entries change VMA (each entry goes with the VMA its VA lies in)."""
        i, n = 0, len(run.slots)
        while i < n:
            va = run.va(run.slots[i])
            vma = self.find(va)
            if vma is not None:
                end = vma.end
            else:
                k = bisect.bisect_right(self.starts, va)
                end = self.starts[k] if k < len(self.starts) else 1 << 64
            j = bisect.bisect_left(run.slots, -(-(end - run.va_base) // run.span), i)
            yield RunRows(run if (i, j) == (0, n) else run.part(i, j), vma)
            i = j


def default_range(session: Session, root: Root) -> tuple[int, int] | None:
    """A user root without --range walks the user half only: the kernel half of
    a process's PGD is the kernel's, shared by every process (dump --kernel shows it)."""
    if not root.process:
        return None
    if session.arch.split_roots:
        return (0, 1 << root.mode.va_bits)
    return (0, 1 << (root.mode.va_bits - 1))


def rows(session: Session, root: Root, va_range: tuple[int, int] | None,
         kinds: frozenset[Kind] | None, tables: bool = False) -> Iterator[Row]:
    """Every non-none entry under `root` in VA order, with its VMA (table entries too when `tables`)."""
    vmas = VmaIndex(root.vmas)
    walker = session.walker(root.mode)
    for entry in walker.walk(root.pa, upper=root.upper, va_range=va_range, tables=tables):
        if kinds is not None and entry.kind not in kinds:
            continue
        yield Row(entry, vmas.find(entry.va) if root.vmas else None)


def bulk_rows(session: Session, root: Root, va_range: tuple[int, int] | None,
              kinds: frozenset[Kind] | None, tables: bool = False) -> Iterator[Row | RunRows]:
    """rows(), with the plain present leaves of a table that share one decode kept together
    as RunRows (what output formatters handle in bulk)."""
    vmas = VmaIndex(root.vmas)
    walker = session.walker(root.mode)
    for item in walker.walk_runs(root.pa, upper=root.upper, va_range=va_range, tables=tables):
        if type(item) is LeafRun:
            if kinds is None or Kind.PRESENT in kinds:
                yield from vmas.split(item) if root.vmas else (RunRows(item, None),)
        elif kinds is None or item.kind in kinds:
            yield Row(item, vmas.find(item.va) if root.vmas else None)


def mergeable(a: Row, b: Row) -> bool:
    """Whether b continues a: adjacent VA, same level/kind/bits/VMA, next frame."""
    ea, eb = a.entry, b.entry
    if eb.va != ea.va + ea.size or ea.ref.level != eb.ref.level or ea.kind is not eb.kind:
        return False
    if a.vma != b.vma or ea.hw.flags != eb.hw.flags or ea.hw.markers != eb.hw.markers:
        return False
    if ea.view.access != eb.view.access or ea.hw.fields != eb.hw.fields:
        return False
    if ea.frame is not None or eb.frame is not None:
        step = ea.size >> ea.page_shift
        return ea.frame is not None and eb.frame is not None and eb.frame == ea.frame + step
    if ea.hw.softleaf is not None and eb.hw.softleaf is not None:
        sa, sb = ea.hw.softleaf, eb.hw.softleaf
        if sa.type != sb.type or sa.arch_flags != sb.arch_flags:
            return False
        if ea.kind is Kind.MARKER:
            return sa.offset == sb.offset
        return ea.kind is Kind.SWAP and sb.offset == sa.offset + 1
    return False


def _pieces(items: Iterable[Row | RunRows]) -> Iterator[tuple[Row, Row, int]]:
    """(first, last, count) of rows already known to merge: a row alone, or a stretch of a run
    (LeafRun.segments) with only its two ends built as Entries."""
    for item in items:
        if type(item) is RunRows:
            run, vma = item.run, item.vma
            for start, stop in run.segments():
                first = Row(run.entry(start), vma)
                yield first, (first if stop == start + 1 else Row(run.entry(stop - 1), vma)), stop - start
        else:
            yield item, item, 1


def ranges(items: Iterable[Row | RunRows]) -> Iterator[Range]:
    """Merge mergeable rows into ranges; runs merge in bulk (bulk_rows is the fast input)."""
    current: Range | None = None
    for first, last, count in _pieces(items):
        if current is not None and mergeable(current.last, first):
            current = Range(current.first, last, current.count + count)
            continue
        if current is not None:
            yield current
        current = Range(first, last, count)
    if current is not None:
        yield current
