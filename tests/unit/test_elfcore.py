"""ptinspect's own ELF vmcore reader: PT_LOAD segments (p_paddr -> p_offset) of a mapped file."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from inspector.dumpfile import identify
from inspector.reader import ReadError
from inspector.targets.drgn import open_vmcore
from inspector.targets.elfcore import ElfCoreTarget

INFO = b"OSRELEASE=7.2.0-test\nPAGESIZE=4096\n"
# (physical address, bytes): two adjacent segments stored out of order in the file, then one past a hole
SEGMENTS = [(0x3000, bytes(range(256)) * 16), (0x1000, b"\xaa" * 0x1000 + b"\xbb" * 0x1000),
            (0x10000, b"\xcc" * 0x800)]


def core(path: Path) -> Path:
    """An ELF core: a PT_NOTE with VMCOREINFO, then the PT_LOADs of SEGMENTS, each after the last."""
    name = b"VMCOREINFO\0\0"
    note = struct.pack("<III", 11, len(INFO), 0) + name + INFO + bytes(-len(INFO) % 4)
    phnum = 1 + len(SEGMENTS)
    at = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, at, 0, 0, len(note), len(note), 0)
    body = note
    at += len(note)
    for pa, data in SEGMENTS:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, at, 0, pa, len(data), len(data), 0)
        body += data
        at += len(data)
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0))
    path.write_bytes(header + phdrs + body)
    return path


def expected(pa: int, size: int) -> bytes:
    """What RAM holds at [pa, pa+size) according to SEGMENTS (None where nothing is)."""
    out = bytearray()
    for at in range(pa, pa + size):
        byte = next((data[at - start] for start, data in SEGMENTS if start <= at < start + len(data)), None)
        assert byte is not None
        out.append(byte)
    return bytes(out)


def test_reads_within_and_across_segments(tmp_path: Path) -> None:
    target = open_vmcore(core(tmp_path / "vmcore"))
    assert isinstance(target, ElfCoreTarget) and target.vmcoreinfo == INFO and target.source == "vmcore:elf"
    assert target.ranges() == [(0x1000, 0x4000), (0x10000, 0x10800)]  # adjacent segments merged
    for pa, size in [(0x1000, 8), (0x1ff8, 16), (0x2ff0, 0x20), (0x1000, 0x3000), (0x10400, 0x400)]:
        assert target.read(pa, size) == expected(pa, size), hex(pa)
    target.close()


@pytest.mark.parametrize("pa,size", [(0x0, 8), (0xff8, 16), (0x3ff8, 16), (0x10000, 0x801), (0x20000, 1)])
def test_reads_outside_the_dump_fail(tmp_path: Path, pa: int, size: int) -> None:
    target = ElfCoreTarget(identify(core(tmp_path / "vmcore")))
    with pytest.raises(ReadError, match="is not in the dump"):
        target.read(pa, size)
    target.close()
