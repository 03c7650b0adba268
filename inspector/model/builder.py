"""Lay out page tables in a SparseMemory from a declarative list of mappings.

The builder encodes with the per-arch reference model (inspector/model/<arch>.py,
the kernel's own macros transliterated) and the generic type space
(archs/softleaf.type_space); the walker then reads the memory back with the
decoders of archs/, so a round trip compares two independent statements.
"""
from __future__ import annotations

import importlib
import struct
from dataclasses import dataclass, field

from ptinspect.archs.common import Kind, PagingMode
from ptinspect.archs.softleaf import config_options, pte_markers, type_space
from ptinspect.archs.versions import Layout

from ..reader import SparseMemory
from .base import ArchModel, Prot, SwpFields


def model_for(arch: str) -> ArchModel:
    """The reference model of an architecture."""
    return importlib.import_module(f"ptinspect.inspector.model.{arch}").MODEL


@dataclass(frozen=True)
class MapLeaf:
    """A present leaf: a base page at "pte", or a huge leaf at a higher level."""

    va: int
    level: str
    pfn: int
    prot: Prot = Prot()


@dataclass(frozen=True)
class MapBlock:
    """A contiguous block at `level` (arm64 contpte/contpmd, RISC-V NAPOT) from `pfn`."""

    va: int
    level: str
    pfn: int
    prot: Prot = Prot()


@dataclass(frozen=True)
class MapSoftleaf:
    """A software-leaf entry of a given kind.

    `value` is the swap offset (SWAP), the PFN (PFN-carrying kinds), or the
    marker names (MARKER, in `markers`).  `swap_type` is the swap device for
    SWAP; `access` chooses 6.1/6.12's device-exclusive read/write type.
    """

    va: int
    level: str
    kind: Kind
    value: int = 0
    swap_type: int = 0
    markers: tuple[str, ...] = ()
    young: bool = False
    dirty: bool = False
    access: str | None = None
    exclusive: bool = False
    soft_dirty: bool = False
    uffd_wp: bool = False


Mapping = MapLeaf | MapBlock | MapSoftleaf


@dataclass
class Built:
    """The result of a build: memory, root table, and the tables allocated."""

    memory: SparseMemory
    root: int
    tables: list[int] = field(default_factory=list)


class Builder:
    """Allocates tables top-down and stores entries with the reference model."""

    def __init__(
        self,
        arch: str,
        mode: PagingMode,
        layout: Layout,
        config: dict[str, bool],
        mem_size: int = 1 << 32,
        table_base: int = 0x100000,
    ) -> None:
        self.model = model_for(arch)
        self.mode = mode
        self.layout = layout
        self.config = {o: config[o] for o in config_options(layout)}
        self.memory = SparseMemory(mem_size)
        self._next = table_base
        self.root = self._alloc(0)
        self.tables = [self.root]

    def _table_bytes(self, depth: int) -> int:
        return self.mode.levels[depth].entries * 8

    def _alloc(self, depth: int) -> int:
        size = max(self._table_bytes(depth), self.mode.page_size)
        pa = self._next
        self._next += size
        return pa

    def _slot(self, va: int, depth: int) -> int:
        """Physical address of the slot for `va` at `depth`, creating tables on the way."""
        table = self.root
        for d in range(depth):
            level = self.mode.levels[d]
            idx = (va >> level.shift) & (level.entries - 1)
            slot = table + idx * 8
            raw = struct.unpack("<Q", self.memory.read(slot, 8))[0]
            if raw == 0:
                nxt = self._alloc(d + 1)
                self.tables.append(nxt)
                self.memory.write(slot, struct.pack("<Q", self.model.mk_table(nxt, d, self.mode)))
                table = nxt
            else:
                table = self._table_of(raw, d)
        level = self.mode.levels[depth]
        return table + ((va >> level.shift) & (level.entries - 1)) * 8

    def _table_of(self, raw: int, depth: int) -> int:
        for pa in self.tables:
            if self.model.mk_table(pa, depth, self.mode) == raw:
                return pa
        raise ValueError(f"slot at depth {depth} already holds a non-table value {raw:#x}")

    def _store(self, va: int, depth: int, raw: int) -> None:
        self.memory.write(self._slot(va, depth), struct.pack("<Q", raw))

    def add(self, m: Mapping) -> None:
        depth = self.mode.level(m.level)
        if isinstance(m, MapLeaf):
            self._store(m.va, depth, self.model.mk_leaf(m.pfn, depth, self.mode, m.prot, self.layout))
        elif isinstance(m, MapBlock):
            values = self.model.mk_block(m.pfn, depth, self.mode, m.prot, self.layout)
            if not values:
                raise ValueError(f"{self.mode.arch} {self.mode.name} has no contiguous block at {m.level}")
            span = self.mode.levels[depth].span
            for i, raw in enumerate(values):
                self._store(m.va + i * span, depth, raw)
        else:
            swp = self.swp_fields(m)
            self._store(m.va, depth, self.model.mk_softleaf(swp, depth, self.mode, self.layout))

    def swp_fields(self, m: MapSoftleaf) -> SwpFields:
        """The generic (type, offset) the kernel would store for `m`."""
        _, slots = type_space(self.layout, self.config)
        flags = dict(exclusive=m.exclusive, soft_dirty=m.soft_dirty, uffd_wp=m.uffd_wp)
        if m.kind is Kind.SWAP:
            return SwpFields(m.swap_type, m.value, **flags)
        matches = [t for t, s in slots.items() if s.kind is m.kind and s.access == m.access]
        if not matches:
            raise ValueError(f"{m.kind.value} does not exist in {self.layout.name} with {self.config}")
        offset = m.value
        if m.kind is Kind.MARKER:
            bits = {name: bit for bit, name in pte_markers(self.layout).items()}
            offset = sum(1 << bits[name] for name in m.markers)
        elif m.young or m.dirty:
            if not self.layout.has("swp_migration_ad"):
                raise ValueError(f"migration entries keep no young/dirty bits in {self.layout.name} (6.1+)")
            pfn_bits = self.model.swp_pfn_bits(self.mode)
            offset |= (m.young << pfn_bits) | (m.dirty << (pfn_bits + 1))
        return SwpFields(matches[0], offset, **flags)

    def build(self, mappings: list[Mapping]) -> Built:
        for m in mappings:
            self.add(m)
        return Built(self.memory, self.root, self.tables)
