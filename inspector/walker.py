"""Walk a page-table tree and yield every non-none entry in VA order.

The walker knows no architecture: it splits VAs with the PagingMode's levels
and asks the Arch module what each value means.  Each table page is read once,
whole, through a TableCache.  A table pointer outside the target's memory, or
one that would revisit a table on the current path (a cycle), is reported as
an `unknown` entry naming the problem and is not followed.
"""
from __future__ import annotations

import dataclasses
import struct
from typing import Iterator

from archs.common import SOFTLEAF_KINDS, Arch, Decoded, Kind, KernelFacts, PagingMode

from .entry import ENTRY_BYTES, BlockPosition, Entry, EntryRef
from .reader import PhysReader, TableCache


class Walker:
    """Walks one paging mode of one architecture over one reader."""

    def __init__(
        self,
        reader: PhysReader | TableCache,
        arch: Arch,
        mode: PagingMode,
        facts: KernelFacts,
    ) -> None:
        self.tables = reader if isinstance(reader, TableCache) else TableCache(reader)
        self.arch = arch
        self.mode = mode
        self.facts = facts

    def table_bytes(self, depth: int) -> int:
        return self.mode.levels[depth].entries * ENTRY_BYTES

    def walk(
        self,
        root: int,
        *,
        upper: bool = False,
        va_range: tuple[int, int] | None = None,
        tables: bool = False,
    ) -> Iterator[Entry]:
        """Every non-none entry under `root` (leaves, softleaf entries, problems;
        table entries too when `tables`), in VA order.

        `upper` selects the upper VA half for roots that translate only one
        half (arm64 TTBR1); `va_range` is [start, end) in full 64-bit VAs.
        """
        yield from self._walk_table(root, 0, 0, upper, va_range, tables, frozenset())

    def _walk_table(
        self,
        table: int,
        depth: int,
        va_base: int,
        upper: bool,
        va_range: tuple[int, int] | None,
        tables: bool,
        path: frozenset[int],
    ) -> Iterator[Entry]:
        level = self.mode.levels[depth]
        data = self.tables.table(table, self.table_bytes(depth))
        values = struct.unpack(f"<{level.entries}Q", data)
        path = path | {table}
        for index, raw in enumerate(values):
            if not raw:
                continue
            va_index = va_base | (index << level.shift)
            va = self.arch.canonical(self.mode, va_index, upper)
            if va_range is not None and not (va < va_range[1] and va + level.span > va_range[0]):
                continue
            dec = self.arch.decode(raw, depth, self.mode, self.facts)
            if dec.kind is Kind.NONE:
                continue
            ref = EntryRef(table, index, depth, level.name)
            if dec.kind is Kind.TABLE:
                problem = self._table_problem(dec, depth, path)
                if problem:
                    yield Entry(va, level.span, ref, dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=problem))
                    continue
                if tables:
                    yield Entry(va, level.span, ref, dec)
                assert dec.next_table is not None
                yield from self._walk_table(dec.next_table, depth + 1, va_index, upper, va_range, tables, path)
                continue
            yield self._leaf(va, ref, dec)

    def translate(self, root: int, va: int, *, upper: bool = False) -> list[Entry]:
        """The walk of one VA, one entry per level visited, ending at the leaf,
        softleaf, none or problem entry that decides it (a NONE entry is kept here)."""
        path: list[Entry] = []
        table, seen = root, frozenset[int]()
        for depth, level in enumerate(self.mode.levels):
            index = (va >> level.shift) & (level.entries - 1)
            ref = EntryRef(table, index, depth, level.name)
            raw = ref.read(self.tables, level.entries)
            dec = self.arch.decode(raw, depth, self.mode, self.facts)
            entry_va = self.arch.canonical(self.mode, va & ~(level.span - 1) & ((1 << self.mode.va_bits) - 1), upper)
            seen = seen | {table}
            if dec.kind is Kind.TABLE:
                problem = self._table_problem(dec, depth, seen)
                if problem:
                    path.append(Entry(entry_va, level.span, ref, dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=problem)))
                    return path
                path.append(Entry(entry_va, level.span, ref, dec))
                assert dec.next_table is not None
                table = dec.next_table
                continue
            path.append(self._leaf(entry_va, ref, dec) if dec.kind is not Kind.NONE else Entry(entry_va, level.span, ref, dec))
            return path
        return path

    def _table_problem(self, dec: Decoded, depth: int, path: frozenset[int]) -> str | None:
        nxt = dec.next_table
        if nxt is None or depth + 1 >= len(self.mode.levels):
            return "table entry at the last level"
        if nxt in path:
            return f"table pointer {nxt:#x} points back to a table on its own path (cycle)"
        if not self.tables.in_memory(nxt, self.table_bytes(depth + 1)):
            return f"table pointer {nxt:#x} is outside the target's memory"
        return None

    def _leaf(self, va: int, ref: EntryRef, dec: Decoded) -> Entry:
        """A leaf entry with its block position, kernel view and own frame."""
        if dec.kind in SOFTLEAF_KINDS and va >> 63:
            # All three architectures keep the kernel in the upper half, where the
            # kernel never writes software-leaf entries: a non-present kernel PTE
            # (set_memory_np, DEBUG_PAGEALLOC, KFENCE) only looks like one.
            dec = dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=(
                "not present: a kernel-half mapping, where the kernel writes no software-leaf "
                f"entries (as a softleaf it would read {dec.kind.value})"))
        cont = dec.cont
        span = self.mode.levels[ref.depth].span
        shift = self.mode.page_shift
        if cont is None or cont.entries <= 1:
            return Entry(va, span, ref, dec, frame=dec.pfn, page_shift=shift)
        entries = self.mode.levels[ref.depth].entries
        pos, block = ref.block(self.tables, entries, cont.entries)
        kernel_raw = self.arch.kernel_view(block, pos, ref.depth, self.mode, self.facts)
        kernel = None
        if kernel_raw != dec.raw:
            kernel = self.arch.decode(kernel_raw, ref.depth, self.mode, self.facts)
        position = BlockPosition(pos, va - pos * span, ref.index - pos)
        frame = dec.pfn
        if cont.same_value and frame is not None:
            frame += pos * (span >> shift)
        return Entry(va, span, ref, dec, kernel, position, frame, shift)
