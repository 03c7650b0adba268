"""ptinspect's own ELF vmcore reader: PT_LOAD segments (p_paddr -> p_offset) of a mapped file."""
from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ptinspect.inspector.reader import ReadError
from ptinspect.inspector.targets.drgn import open_vmcore
from ptinspect.inspector.targets.elfcore import ElfCoreTarget
from ptinspect.inspector.vmcorefile import DumpError, identify

INFO = b"OSRELEASE=7.2.0-test\nPAGESIZE=4096\n"
# (physical address, bytes): two adjacent segments stored out of order in the file, then one past a hole
SEGMENTS = [(0x3000, bytes(range(256)) * 16), (0x1000, b"\xaa" * 0x1000 + b"\xbb" * 0x1000),
            (0x10000, b"\xcc" * 0x800)]


def core(path: Path, segments: list[tuple[int, bytes]] = SEGMENTS) -> Path:
    """An ELF core: a PT_NOTE with VMCOREINFO, then the PT_LOADs of `segments`, each after the last."""
    name = b"VMCOREINFO\0\0"
    note = struct.pack("<III", 11, len(INFO), 0) + name + INFO + bytes(-len(INFO) % 4)
    phnum = 1 + len(segments)
    at = 64 + 56 * phnum
    phdrs = struct.pack("<IIQQQQQQ", 4, 0, at, 0, 0, len(note), len(note), 0)
    body = note
    at += len(note)
    for pa, data in segments:
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


# /proc/vmcore's shape (fs/proc/vmcore.c, kexec-tools crash_create_elf64_headers): the kernel-text
# PT_LOAD comes first and lies inside the System RAM PT_LOAD, each with its own copy in the file.
# Here the alias's bytes differ from RAM's, to show which segment answers.
RAM_BYTES = bytes(i * 7 & 0xFF for i in range(0x10000))
PROC_VMCORE = [(0x2000, b"\xee" * 0x2000), (0x0, RAM_BYTES)]


@pytest.mark.parametrize("pa,size", [(0x0, 8), (0x1ff8, 16), (0x2000, 8), (0x3ff8, 16), (0x4000, 8),
                                     (0x8000, 0x1000), (0xfff8, 8), (0x0, 0x10000)])
def test_a_kernel_text_alias_inside_ram_does_not_hide_ram(tmp_path: Path, pa: int, size: int) -> None:
    """Every read inside the RAM segment is RAM's, above the alias's end too (a lookup by start
    address stopped at the alias's end: every read above it failed)."""
    target = ElfCoreTarget(identify(core(tmp_path / "vmcore", PROC_VMCORE)))
    assert target.ranges() == [(0, 0x10000)]
    assert target.read(pa, size) == RAM_BYTES[pa:pa + size]
    target.close()


def _phdr(kind: int, offset: int, pa: int, size: int) -> bytes:
    return struct.pack("<IIQQQQQQ", kind, 7, offset, 0, pa, size, size, 0)


def raw_core(path: Path, phdrs: list[bytes], body_size: int = 0x3000, phentsize: int = 56) -> Path:
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, phentsize, len(phdrs), 0, 0, 0))
    data = header + b"".join(phdrs)
    path.write_bytes(data + bytes(body_size))
    return path


@pytest.mark.parametrize("phdrs,expect", [
    ([_phdr(1, 0, 0, 0x1000), _phdr(1, 0, 0x1000, 0x1000)], "overlaps"),  # all at file offset 0
    ([_phdr(1, 0x1000, 0, 0x1000), _phdr(1, 0x1800, 0x1000, 0x1000)], "overlaps"),
    ([_phdr(4, 0x1000, 0, 0x100), _phdr(1, 0x1000, 0, 0x1000)], "overlaps"),  # note inside a PT_LOAD
    ([_phdr(1, 0x1000, 0, 0x10000000)], "past the end of the file"),
    ([_phdr(1, 0xFFFFFFFFFFFF0000, 0, 0x1000)], "past the end of the file"),
    ([_phdr(1, 0x1000, 0xFFFFFFFFFFFFF000, 0x2000)], "beyond 64 bits"),
], ids=["offset-0", "shared-data", "note-in-load", "beyond-file", "huge-offset", "pa-wraps"])
def test_program_headers_whose_file_data_is_not_their_own_are_refused(tmp_path: Path, phdrs: list[bytes],
                                                                        expect: str) -> None:
    with pytest.raises(DumpError, match=expect) as info:
        identify(raw_core(tmp_path / "vmcore", phdrs))
    assert str(tmp_path / "vmcore") in str(info.value)


def test_short_program_headers_are_refused(tmp_path: Path) -> None:
    with pytest.raises(DumpError, match="program headers are 32 bytes each"):
        identify(raw_core(tmp_path / "vmcore", [_phdr(1, 0x1000, 0, 0x1000)[:32]], phentsize=32))


def test_physically_overlapping_segments_with_their_own_data_are_read(tmp_path: Path) -> None:
    """Physical overlap is normal (the alias above), so it is not refused."""
    dump = identify(core(tmp_path / "vmcore", PROC_VMCORE))
    assert dump.ram == ((0, 0x10000),) and len(dump.segments) == 2
