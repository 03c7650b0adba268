"""Physical-memory readers: the one interface every target serves.

A reader answers `read(pa, size)` for guest-physical addresses and knows which
ranges hold memory, so that the walker can refuse a table pointer outside RAM
instead of reading zeros (QEMU's gdbstub returns zeros past the end of RAM).
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol


class ReadError(Exception):
    """A physical read the target could not serve."""


class RefusedRead(ReadError):
    """The target answered that this memory cannot be read (a gdbstub's error reply), as opposed to
    failing: the walk names the table and goes on with the others."""


class PhysReader(Protocol):
    """Reads guest-physical memory."""

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes at `pa`, or ReadError."""

    def ranges(self) -> list[tuple[int, int]]:
        """Physical ranges [start, end) that hold memory."""


def contains(ranges: Iterable[tuple[int, int]], pa: int, size: int) -> bool:
    """Whether [pa, pa+size) lies inside one of `ranges`."""
    return any(start <= pa and pa + size <= end for start, end in ranges)


class SparseMemory:
    """Page-granular, dict-backed physical memory (the reference model's RAM).

    Pages never written read as zeros, as RAM would; `ranges()` is the whole
    declared size so that table pointers beyond it are caught.
    """

    PAGE = 4096

    def __init__(self, size: int) -> None:
        self.size = size
        self.pages: dict[int, bytearray] = {}
        self.reads = 0  # read() calls served, for tests and benchmarks

    def ranges(self) -> list[tuple[int, int]]:
        return [(0, self.size)]

    def write(self, pa: int, data: bytes) -> None:
        if not contains(self.ranges(), pa, len(data)):
            raise ReadError(f"write of {len(data)} bytes at {pa:#x} is outside memory")
        pos = 0
        while pos < len(data):
            page, off = divmod(pa + pos, self.PAGE)
            n = min(self.PAGE - off, len(data) - pos)
            buf = self.pages.setdefault(page, bytearray(self.PAGE))
            buf[off : off + n] = data[pos : pos + n]
            pos += n

    def read(self, pa: int, size: int) -> bytes:
        if not contains(self.ranges(), pa, size):
            raise ReadError(f"read of {size} bytes at {pa:#x} is outside memory")
        self.reads += 1
        out = bytearray()
        pos = 0
        while pos < size:
            page, off = divmod(pa + pos, self.PAGE)
            n = min(self.PAGE - off, size - pos)
            buf = self.pages.get(page)
            out += buf[off : off + n] if buf is not None else bytes(n)
            pos += n
        return bytes(out)


class TableCache:
    """Whole-table reads, cached (tables cannot change while the target is stopped) up to
    `limit` tables, least recently used first out: memory stays bounded whatever the
    address space, while tables shared between roots (the kernel half) are read once."""

    def __init__(self, reader: PhysReader, limit: int = 4096) -> None:
        self.reader = reader
        self.limit = limit
        self._tables: OrderedDict[tuple[int, int], bytes] = OrderedDict()
        # For tools that measure a walk (bench/): called with (pa, size) of every table the walk asks for.
        self.on_table: Callable[[int, int], None] | None = None

    def in_memory(self, pa: int, size: int) -> bool:
        return contains(self.reader.ranges(), pa, size)

    def table(self, pa: int, size: int) -> bytes:
        if self.on_table is not None:
            self.on_table(pa, size)
        key = (pa, size)
        data = self._tables.get(key)
        if data is None:
            data = self._store(key, self.reader.read(pa, size))
        else:
            self._tables.move_to_end(key)
        return data

    def prefetch(self, pas: Iterable[int], size: int) -> None:
        """Read the tables at `pas` now, in one batch where the reader has
        `read_many([(pa, size), ...]) -> [bytes, ...]` (a gdbstub pipelines them)."""
        read_many = getattr(self.reader, "read_many", None)
        wanted = [pa for pa in dict.fromkeys(pas) if (pa, size) not in self._tables][: self.limit // 2]
        if read_many is None or len(wanted) < 2:
            return
        try:
            datas = read_many([(pa, size) for pa in wanted])
        except RefusedRead:  # one is unreadable: each is read alone, and the walk names that one
            return
        for pa, data in zip(wanted, datas):
            self._store((pa, size), data)

    def _store(self, key: tuple[int, int], data: bytes) -> bytes:
        pa, size = key
        if len(data) != size:
            raise ReadError(f"short read at {pa:#x}: {len(data)} of {size} bytes")
        self._tables[key] = data
        if len(self._tables) > self.limit:
            self._tables.popitem(last=False)
        return data
