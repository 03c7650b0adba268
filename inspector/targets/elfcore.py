"""An ELF vmcore read by ptinspect itself: its PT_LOAD segments, memory-mapped.

QEMU's dump-guest-memory and /proc/vmcore copies are ELF cores whose PT_LOAD program headers
map physical addresses (p_paddr) to file offsets; a read is a slice of the mapped file.  The
kernel identifies itself through the VMCOREINFO note, as with every dump target.
"""
from __future__ import annotations

import bisect
import mmap

from ..dumpfile import DumpFile
from ..reader import ReadError


class ElfCoreTarget:
    """Physical memory of an ELF vmcore; no CPU registers (modes come from VMCOREINFO)."""

    def __init__(self, dump: DumpFile) -> None:
        assert dump.format == "elf" and dump.arch is not None
        self.arch = dump.arch
        self.source = "vmcore:elf"
        self.vmcoreinfo = dump.vmcoreinfo
        self._ram = list(dump.ram)
        self._segments = dump.segments
        self._starts = [pa for pa, _, _ in dump.segments]
        self._file = dump.path.open("rb")
        try:
            self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError) as exc:
            self._file.close()
            raise ReadError(f"cannot map {dump.path}: {exc}") from None

    def read(self, pa: int, size: int) -> bytes:
        """`size` bytes at physical `pa`, across adjacent segments if need be."""
        out = b""
        at = pa
        while len(out) < size:
            i = bisect.bisect_right(self._starts, at) - 1
            if i < 0:
                break
            start, offset, length = self._segments[i]
            if at >= start + length:
                break
            n = min(size - len(out), start + length - at)
            out += self._map[offset + at - start:offset + at - start + n]
            at += n
        if len(out) != size:
            raise ReadError(f"{self.source}: physical {at:#x} is not in the dump (reading {size} bytes at {pa:#x})")
        return out

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram

    def read_registers(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        if not self._map.closed:
            self._map.close()
        self._file.close()
