"""An ELF vmcore read by ptinspect itself: its PT_LOAD segments, memory-mapped.

QEMU's dump-guest-memory and /proc/vmcore copies are ELF cores whose PT_LOAD program headers
map physical addresses (p_paddr) to file offsets; a read is a slice of the mapped file.  The
kernel identifies itself through the VMCOREINFO note, as with every dump target.  A flattened
ELF (makedumpfile -F -E) is read through its index of records instead of a mapping.
"""
from __future__ import annotations

import bisect
import mmap

from ..reader import ReadError
from ..vmcorefile import DumpFile, ExcludedPage, FlatFile, Truncated


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
        assert dump.format in ("elf", "elf-flattened") and dump.arch is not None
        self.arch = dump.arch
        self.dump = dump
        self.source = f"vmcore:{dump.format}"
        self.vmcoreinfo = dump.vmcoreinfo
        self._ram = list(dump.ram)
        self._pieces = pieces(dump.segments)
        self._starts = [pa for pa, _, _ in self._pieces]
        self._file = dump.path.open("rb")
        self._map: mmap.mmap | None = None
        self._flat: FlatFile | None = None
        try:
            if dump.flattened:
                self._flat = FlatFile(self._file, self._file.seek(0, 2))
            else:
                self._map = mmap.mmap(self._file.fileno(), 0, access=mmap.ACCESS_READ)
        except (OSError, ValueError, Truncated) as exc:
            self._file.close()
            raise ReadError(f"cannot map {dump.path}: {exc}") from None

    def _bytes(self, offset: int, n: int) -> bytes:
        if self._map is not None:
            return self._map[offset:offset + n]
        assert self._flat is not None
        try:
            return self._flat.read(offset, n)
        except Truncated as exc:
            raise ReadError(f"{self.dump.path}: {exc}") from None

    def excluded(self, pa: int, size: int) -> str | None:
        """Why [pa, pa+size) is RAM whose contents the dump's filter left out; None otherwise."""
        return self.dump.excluded(pa, size)

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
            out += self._bytes(offset + at - start, n)
            at += n
        if len(out) != size:
            why = self.dump.excluded(at, 1)
            if why is not None:
                raise ExcludedPage(f"{self.source}: {why} (reading {size} bytes at {pa:#x})")
            raise ReadError(f"{self.source}: physical {at:#x} is not in the dump (reading {size} bytes at {pa:#x})")
        return out

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram

    def read_registers(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        if self._map is not None and not self._map.closed:
            self._map.close()
        self._file.close()
