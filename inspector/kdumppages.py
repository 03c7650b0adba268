"""Pages of a kdump-compressed file, read by ptinspect itself.

Used where libkdumpfile (drgn's kdump reader) misreads a dump: QEMU writes kdump files in
blocks of its target page size (64 KiB for arm64) while the kernel's PAGESIZE may be 4 KiB,
and libkdumpfile then finds no page (drgn 0.3.0).  Page data is raw or zlib-compressed
(DUMP_DH_COMPRESSED_ZLIB, QEMU include/sysemu/dump.h); lzo, snappy and zstd pages are refused
with a clear error.
"""
from __future__ import annotations

import zlib
from collections import OrderedDict

from .reader import ReadError
from .vmcorefile import PAGE_DESC, DumpFile, ExcludedPage, Truncated, open_source

COMPRESSED_ZLIB = 0x1
COMPRESSED_OTHER = {0x2: "lzo", 0x4: "snappy", 0x20: "zstd"}  # DUMP_DH_COMPRESSED_*
RANK_CHUNK = 4096  # bitmap bytes per precomputed rank
CACHE_PAGES = 256


class KdumpReader:
    """Physical reads from a kdump file: pfn -> rank in the dumpable bitmap -> PageDescriptor -> data."""

    def __init__(self, dump: DumpFile) -> None:
        assert dump.kdump is not None
        self.dump = dump
        self.layout = dump.kdump
        self.file = dump.path.open("rb")
        self.src = open_source(self.file, self.file.seek(0, 2), dump.format)
        bitmap = self.layout.dumpable
        self.ranks = [0]
        for at in range(0, len(bitmap), RANK_CHUNK):
            self.ranks.append(self.ranks[-1] + int.from_bytes(bitmap[at:at + RANK_CHUNK], "little").bit_count())
        self.cache: OrderedDict[int, bytes] = OrderedDict()

    def _rank(self, pfn: int) -> int | None:
        """Index of pfn's descriptor, None when the page is not in the dump."""
        bitmap = self.layout.dumpable
        byte, bit = divmod(pfn, 8)
        if byte >= len(bitmap) or not bitmap[byte] >> bit & 1:
            return None
        chunk = byte // RANK_CHUNK
        below = int.from_bytes(bitmap[chunk * RANK_CHUNK:byte], "little").bit_count()
        return self.ranks[chunk] + below + (bitmap[byte] & ((1 << bit) - 1)).bit_count()

    def _page(self, pfn: int) -> bytes:
        page = self.cache.get(pfn)
        if page is not None:
            self.cache.move_to_end(pfn)
            return page
        rank = self._rank(pfn)
        block = self.layout.block_size
        if rank is None:
            why = self.dump.excluded(pfn * block, 1)
            if why is not None:
                raise ExcludedPage(f"{self.dump.path}: {why}")
            raise ReadError(f"{self.dump.path}: physical {pfn * block:#x} is not in the dump")
        try:
            offset, size, flags, _ = PAGE_DESC.unpack(self.src.read(self.layout.desc_at + rank * PAGE_DESC.size,
                                                                     PAGE_DESC.size))
            data = self.src.read(offset, size)
        except Truncated as exc:
            raise ReadError(f"{self.dump.path} is truncated: {exc}") from None
        if flags & COMPRESSED_ZLIB:
            try:  # at most one block more than a page holds: a damaged page cannot expand without bound
                data = zlib.decompressobj().decompress(data, block + 1)
            except zlib.error as exc:
                raise ReadError(f"{self.dump.path}: page at {pfn * block:#x} does not decompress: {exc}") from None
        elif flags & sum(COMPRESSED_OTHER):
            method = next(name for bit, name in COMPRESSED_OTHER.items() if flags & bit)
            raise ReadError(f"{self.dump.path} holds {method}-compressed pages in {block}-byte blocks, which "
                            "ptinspect cannot read: make the dump as ELF or kdump-zlib")
        if len(data) != block:
            raise ReadError(f"{self.dump.path}: page at {pfn * block:#x} has {len(data)} bytes, not {block}")
        self.cache[pfn] = data
        if len(self.cache) > CACHE_PAGES:
            self.cache.popitem(last=False)
        return data

    def read(self, pa: int, size: int) -> bytes:
        block = self.layout.block_size
        out = bytearray()
        while len(out) < size:
            here = pa + len(out)
            start = here % block
            out += self._page(here // block)[start:start + size - len(out)]
        return bytes(out)

    def close(self) -> None:
        self.file.close()
