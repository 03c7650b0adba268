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


def pieces(segments: tuple[tuple[int, int, int], ...]) -> list[tuple[int, int, int]]:
    """(physical address, file offset, size) pieces that do not overlap, each address served by
    the largest segment covering it.

    Segments may overlap physically: /proc/vmcore (and kexec-tools' ELF headers) carry a
    kernel-text PT_LOAD inside the System RAM PT_LOAD that holds it.  Both hold the same memory;
    the RAM segment is the authority, and the alias must not hide the rest of it (a lookup by
    start address alone would stop at the alias's end).
    """
    covered: list[tuple[int, int]] = []  # disjoint [start, end) already assigned, sorted
    out: list[tuple[int, int, int]] = []
    for pa, offset, size in sorted(segments, key=lambda s: (-s[2], s[0])):
        at, end = pa, pa + size
        for lo, hi in covered:
            if hi <= at or lo >= end:
                continue
            if lo > at:
                out.append((at, offset + at - pa, lo - at))
            at = max(at, hi)
        if at < end:
            out.append((at, offset + at - pa, end - at))
        covered = _union(sorted(covered + [(pa, end)]))
    return sorted(out)


def _union(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for lo, hi in ranges:
        if out and lo <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], hi))
        else:
            out.append((lo, hi))
    return out


class ElfCoreTarget:
    """Physical memory of an ELF vmcore; no CPU registers (modes come from VMCOREINFO)."""

    def __init__(self, dump: DumpFile) -> None:
        assert dump.format == "elf" and dump.arch is not None
        self.arch = dump.arch
        self.source = "vmcore:elf"
        self.vmcoreinfo = dump.vmcoreinfo
        self._ram = list(dump.ram)
        self._pieces = pieces(dump.segments)
        self._starts = [pa for pa, _, _ in self._pieces]
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
            start, offset, length = self._pieces[i]
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
