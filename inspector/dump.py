"""The entries of a root, annotated with their VMA, filtered, optionally merged into ranges."""
from __future__ import annotations

import bisect
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple, final

from ptinspect.archs.common import Decoded, Kind

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
    """Adjacent entries with equal attributes and consecutive frames: the first one (`row`, or
    member `index` of `run` in `vma`, its Entry built only when asked for), where the last one
    ends, how many."""

    end: int
    count: int
    row: Row | None = None
    run: LeafRun | None = None
    index: int = 0
    vma: Vma | None = None

    @property
    def first(self) -> Row:
        if self.row is not None:
            return self.row
        assert self.run is not None  # a Range is made with a row or a run
        return Row(self.run.entry(self.index), self.vma)

    @property
    def start(self) -> int:
        if self.run is not None:
            return self.run.va(self.run.slots[self.index])
        return self.first.entry.va


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
    if ea.view.access != eb.view.access or not _same_fields(ea.hw, eb.hw):
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


def _same_fields(a: Decoded, b: Decoded) -> bool:
    """Equal fields, but for those that spell each value's own frame (riscv's "PPN"): the frames
    are compared apart, and a field that only restates them must not keep neighbours apart."""
    fa, fb = a.fields, b.fields
    if fa == fb:
        return True
    if len(fa) != len(fb) or a.pfn is None or b.pfn is None:
        return False
    sa, sb = f"{a.pfn:#x}", f"{b.pfn:#x}"
    return all(x == y or (x[0] == y[0] and x[1] == sa and y[1] == sb) for x, y in zip(fa, fb))


class _Stretch(NamedTuple):
    """Members [start, stop) of a run that merge (LeafRun.segments), with their VMA."""

    run: LeafRun
    start: int
    stop: int
    vma: Vma | None

    @property
    def end(self) -> int:
        return self.run.va(self.run.slots[self.stop - 1]) + self.run.span

    def continued_by(self, row: Row) -> bool:
        """mergeable(our last member's row, row), without building that member's Entry: a run's
        member is its template's decode (kernel view none) with its own raw value and frame (and
        the fields that spell it)."""
        run, last = self.run, self.stop - 1
        eb, t = row.entry, run.template
        if eb.va != self.end or eb.ref.level != run.level or eb.hw.kind is not t.kind or row.vma != self.vma:
            return False
        if eb.hw.flags != t.flags or eb.hw.markers != t.markers or eb.view.access != t.access:
            return False
        return (_same_fields(t, eb.hw) and eb.frame is not None
                and eb.frame == run.member_pfns[last] + (run.span >> run.page_shift))


    def followed_by(self, run: LeafRun, start: int, vma: Vma | None) -> bool:
        """mergeable() of our last member and member `start` of `run`, from the two runs'
        templates (their members differ from them only in raw value, frame and the fields that
        spell it): no Entry built."""
        mine, t, u = self.run, self.run.template, run.template
        if vma != self.vma or run.level != mine.level or self.end != run.va(run.slots[start]):
            return False
        if u is not t and (u.kind is not t.kind or u.flags != t.flags or u.markers != t.markers
                           or u.access != t.access or not _same_fields(t, u)):
            return False
        return run.member_pfns[start] == mine.member_pfns[self.stop - 1] + (mine.span >> mine.page_shift)

    def range(self, end: int, count: int) -> Range:
        """The range this stretch starts."""
        return Range(end, count, run=self.run, index=self.start, vma=self.vma)


def ranges(items: Iterable[Row | RunRows]) -> Iterator[Range]:
    """Merge mergeable rows into ranges; runs merge in bulk (bulk_rows is the fast input): a
    stretch of a run is compared with the previous one through their templates, so no Entry is
    built for a range that starts and ends in runs (the table formats it from its run)."""
    head: Row | _Stretch | None = None  # the current range's first piece
    last: Row | _Stretch | None = None  # and its last one
    count = 0
    for item in items:
        if type(item) is RunRows:
            run, vma = item.run, item.vma
            for start, stop in run.segments():
                piece = _Stretch(run, start, stop, vma)
                if type(last) is _Stretch:
                    merges = last.followed_by(run, start, vma)
                else:
                    merges = last is not None and mergeable(last, Row(run.entry(start), vma))  # type: ignore[arg-type]
                if merges:
                    last, count = piece, count + stop - start
                    continue
                if head is not None and last is not None:
                    yield _range(head, last, count)
                head, last, count = piece, piece, stop - start
        else:
            row = item
            if last is not None and _continues(last, row):
                last, count = row, count + 1
                continue
            if head is not None and last is not None:
                yield _range(head, last, count)
            head, last, count = row, row, 1
    if head is not None and last is not None:
        yield _range(head, last, count)


def _range(head: Row | _Stretch, last: Row | _Stretch, count: int) -> Range:
    end = last.end if type(last) is _Stretch else last.entry.va + last.entry.size  # type: ignore[union-attr]
    return head.range(end, count) if type(head) is _Stretch else Range(end, count, row=head)  # type: ignore[arg-type]


def _continues(last: Row | _Stretch, row: Row) -> bool:
    return last.continued_by(row) if type(last) is _Stretch else mergeable(last, row)  # type: ignore[arg-type]
