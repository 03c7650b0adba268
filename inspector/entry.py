"""A page-table entry as the walker reports it: where it lives and what it meant.

`EntryRef` is a live location (the kernel's proposed hw_ptep handle): only a
location can read its neighbours, as a contpte or NAPOT block needs.  `Entry`
pairs a location with the decoded copies of what was read there; copying an
Entry's value never turns it back into a location.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ptinspect.archs.common import Decoded, Kind

from .reader import TableCache

ENTRY_BYTES = 8


@dataclass(frozen=True)
class EntryRef:
    """A slot of a live table: table physical address, index, depth, level name."""

    table: int
    index: int
    depth: int
    level: str

    @property
    def address(self) -> int:
        """Physical address of the slot itself."""
        return self.table + self.index * ENTRY_BYTES

    def read(self, tables: TableCache, entries: int) -> int:
        """The slot's current value (through the stopped target's table cache)."""
        data = tables.table(self.table, entries * ENTRY_BYTES)
        return struct.unpack_from("<Q", data, self.index * ENTRY_BYTES)[0]

    def block(self, tables: TableCache, entries: int, block_entries: int) -> tuple[int, list[int]]:
        """The naturally aligned block of `block_entries` slots holding this one:
        the index of this slot inside it, and the raw values of the whole block."""
        first = self.index - self.index % block_entries
        data = tables.table(self.table, entries * ENTRY_BYTES)
        values = list(struct.unpack_from(f"<{block_entries}Q", data, first * ENTRY_BYTES))
        return self.index - first, values


@dataclass(frozen=True)
class BlockPosition:
    """Where an entry sits in its contiguous block (contpte, contpmd, NAPOT)."""

    index: int  # position inside the block
    first_va: int  # VA of the block's first entry
    first_slot: int  # table index of the block's first entry


@dataclass(frozen=True)
class Entry:
    """One non-none entry found by a walk.

    `hw` decodes the raw value the hardware sees; `kernel` decodes what the
    kernel's ptep_get() would return for this slot (the contpte access/dirty
    gather), present only when it differs from the raw value.  `frame` is the
    first physical (or device) frame behind this entry's own VA range.
    """

    va: int
    size: int  # bytes of VA this slot translates (the level's span)
    ref: EntryRef
    hw: Decoded
    kernel: Decoded | None = None
    block: BlockPosition | None = None
    frame: int | None = None
    page_shift: int = 12

    @property
    def kind(self) -> Kind:
        return self.hw.kind

    def phys(self, va: int) -> int | None:
        """The physical address `va` translates to through this leaf, if present."""
        if self.frame is None or self.hw.pfn_space != "phys" or self.kind is not Kind.PRESENT:
            return None
        return (self.frame << self.page_shift) + (va & (self.size - 1))

    @property
    def view(self) -> Decoded:
        """The kernel's view of this slot: the gathered value when there is one."""
        return self.kernel or self.hw
