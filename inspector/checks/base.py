"""What a check is, what it reports, and what it sees: one walked snapshot."""
from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from ptinspect.archs import ARCH_NAMES
from ptinspect.archs.common import Arch, Kind, in_kernel_half

from ..dump import VmaIndex
from ..entry import ENTRY_BYTES, Entry
from ..reader import TableCache
from ..snapshot import Snapshot


@dataclass(frozen=True)
class Finding:
    """One broken rule at one page-table slot."""

    check: str
    va: int
    level: str
    table: int  # physical address of the table holding the slot
    index: int
    message: str
    raw: int | None = None  # None: the slot is none (a missing block member)

    @property
    def slot(self) -> int:
        return self.table + self.index * ENTRY_BYTES


@dataclass
class Context:
    """A snapshot walked again, indexed for the checks."""

    snap: Snapshot
    entries: list[Entry]  # table entries included, VA order
    tables: TableCache  # the snapshot's memory, for reading whole blocks

    @property
    def rules(self) -> Arch:
        """The snapshot's architecture: reserved_bits, misaligned_bits, wx_access, ..."""
        return self.snap.arch

    @cached_property
    def leaves(self) -> list[Entry]:
        """Every non-table entry (present, softleaf and unknown ones)."""
        return [e for e in self.entries if e.kind is not Kind.TABLE and e.hw.next_table is None]

    @cached_property
    def pointers(self) -> list[Entry]:
        """Every entry holding a table pointer: followed tables and refused ones (cycle, outside RAM)."""
        return [e for e in self.entries if e.hw.next_table is not None]

    @cached_property
    def by_slot(self) -> dict[tuple[int, int], Entry]:
        return {(e.ref.table, e.ref.index): e for e in self.entries}

    @cached_property
    def _table_values(self) -> list[dict[int, int]]:
        """Per depth: the VA a table entry covers -> its raw value."""
        out: list[dict[int, int]] = [{} for _ in self.snap.mode.levels]
        for e in self.entries:
            if e.kind is Kind.TABLE:
                out[e.ref.depth][e.va] = e.hw.raw
        return out

    def path_tables(self, e: Entry) -> list[int]:
        """The raw table entries on the walk to `e`, root first."""
        levels = self.snap.mode.levels
        return [self._table_values[d][e.va & ~(levels[d].span - 1)] for d in range(e.ref.depth)
                if e.va & ~(levels[d].span - 1) in self._table_values[d]]

    @cached_property
    def vma_index(self) -> VmaIndex | None:
        return None if self.snap.vmas is None else VmaIndex(self.snap.vmas)

    @cached_property
    def output_bits(self) -> int:
        return self.rules.output_bits(self.snap.mode, self.snap.facts)

    def kernel_half(self, va: int) -> bool:
        return in_kernel_half(self.snap.arch, va)

    def table_bytes(self, depth: int) -> int:
        return self.snap.mode.levels[depth].entries * ENTRY_BYTES

    def finding(self, check: str, e: Entry, message: str) -> Finding:
        return Finding(check, e.va, e.ref.level, e.ref.table, e.ref.index, message, e.hw.raw)


@dataclass(frozen=True)
class Check:
    """A named rule: a short id, a one-line explanation, the kernel source it comes from.

    `skip` says why the rule cannot be checked on a snapshot (missing facts), or None.
    """

    id: str
    title: str
    source: str
    run: Callable[[Context], Iterable[Finding]]
    skip: Callable[[Context], str | None] = lambda ctx: None
    arches: frozenset[str] = frozenset(ARCH_NAMES)  # the architectures the rule applies to

