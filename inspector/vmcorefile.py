"""What a vmcore file is before drgn opens it: format, architecture, VMCOREINFO, RAM, completeness.

Formats: ELF cores (QEMU dump-guest-memory, /proc/vmcore copies, makedumpfile -E),
kdump-compressed ("KDUMP   ", makedumpfile and QEMU -z/-l/-s), and makedumpfile's flattened
stream of either (makedumpfile -F, what a pipe or ssh gives; QEMU 7.2 writes kdump formats so).
Layouts: QEMU include/sysemu/dump.h (DiskDumpHeader64, KdumpSubHeader64,
MakedumpfileHeader/DataHeader, PageDescriptor) and makedumpfile diskdump_mod.h.  Only 64-bit
little-endian dumps are read.

Filtering (makedumpfile -d): a kdump file keeps every page of RAM in its first bitmap and only
the dumped ones in its second, and states its dump level; an ELF file from makedumpfile leaves
runs of at least PFN_EXCLUDED (256) excluded pages out of its PT_LOADs (p_memsz > p_filesz) and
keeps shorter runs with their contents (makedumpfile.c write_elf_pages_cyclic); it states no
dump level.  Reads of pages a filter left out raise ExcludedPage, saying so.
"""
from __future__ import annotations

import bisect
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from ptinspect.archs import all_arches, arch_where, names_text

from .reader import ReadError, contains

PT_LOAD, PT_NOTE, ET_CORE, PN_XNUM = 1, 4, 4, 0xFFFF
PT_NAMES = {PT_LOAD: "PT_LOAD", PT_NOTE: "PT_NOTE"}
PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
ELF_HEADER_SIZE = 64  # Elf64_Ehdr
UNNAMED = ("", "Unknown")  # QEMU's ELF_MACHINE_UNAME for targets without one (arm64, riscv64)
KDUMP_SIGNATURE = b"KDUMP   "
FLAT_SIGNATURE = b"makedumpfile\0"
FLAT_HEADER_SIZE = 4096  # MAX_SIZE_MDF_HEADER
PAGE_DESC = struct.Struct("<QIIQ")  # PageDescriptor: offset, size, flags, page_flags
# What each bit of makedumpfile's dump level leaves out (makedumpfile.h DL_EXCLUDE_*).
DUMP_LEVEL_BITS = {0x01: "zero", 0x02: "cache", 0x04: "private cache", 0x08: "user", 0x10: "free"}
PFN_EXCLUDED = 256  # makedumpfile.h: shorter runs of excluded pages stay in an ELF file
# makedumpfile.c __exclude_unnecessary_pages (1.7.8): these go whatever the dump level.
ALWAYS_EXCLUDED = "hwpoisoned and logically offline pages are excluded at every level"


class DumpError(Exception):
    """The file is not a vmcore ptinspect can read, or is damaged."""


class ExcludedPage(ReadError):
    """A page of RAM the dump's filter left out (makedumpfile -d): it existed, its contents are not
    in the file."""


def dump_level_text(level: int) -> str:
    """"dump level 31: zero, cache, private cache, user and free pages excluded"."""
    kinds = [name for bit, name in DUMP_LEVEL_BITS.items() if level & bit]
    if not kinds:
        return f"dump level {level}: no kind of page excluded by level"
    listed = kinds[0] if len(kinds) == 1 else ", ".join(kinds[:-1]) + " and " + kinds[-1]
    return f"dump level {level}: {listed} pages excluded"


@dataclass(frozen=True)
class DumpFile:
    """A vmcore as its headers describe it."""

    path: Path
    format: str  # "elf", "elf-flattened", "kdump", "kdump-flattened"
    arch: str | None  # None: a kdump whose header and VMCOREINFO name no architecture
    vmcoreinfo: bytes | None
    ram: tuple[tuple[int, int], ...]  # physical ranges of RAM the dump describes (held or excluded)
    kdump: KdumpLayout | None = None
    segments: tuple[tuple[int, int, int], ...] = ()  # ELF: (physical address, file offset, size) per PT_LOAD
    left_out: tuple[tuple[int, int], ...] = ()  # ELF: [start, end) beyond a PT_LOAD's file data (p_memsz)
    dump_level: int | None = None  # kdump: makedumpfile's -d (KdumpSubHeader64.dump_level)
    excluded_pages: int = 0  # kdump: pages of RAM (first bitmap) not dumped (second bitmap)

    @property
    def flattened(self) -> bool:
        return self.format.endswith("-flattened")

    def filtering(self) -> str | None:
        """What the file states about filtering, None when it states none."""
        if self.kdump is not None:
            if not self.excluded_pages:  # QEMU states level 1 yet dumps every page
                return None
            level = "no dump level stated" if self.dump_level is None else dump_level_text(self.dump_level)
            pages = f"{self.excluded_pages} page{'' if self.excluded_pages == 1 else 's'}"
            return f"{pages} of RAM excluded by makedumpfile ({level}; {ALWAYS_EXCLUDED})"
        if self.left_out:
            return (f"{sum(b - a for a, b in self.left_out):#x} bytes of RAM left out of the file's PT_LOADs "
                    f"(p_memsz > p_filesz: makedumpfile -E drops runs of at least {PFN_EXCLUDED} excluded pages "
                    "and keeps shorter runs with their contents; it states no dump level)")
        return None

    def excluded(self, pa: int, size: int) -> str | None:
        """Why [pa, pa+size) cannot be read although it is RAM the dump describes: the reason
        if any page of it was left out by the dump's filter, else None."""
        if self.kdump is not None:
            block = self.kdump.block_size
            for pfn in range(pa // block, (pa + max(size, 1) - 1) // block + 1):
                byte, bit = divmod(pfn, 8)
                dumped = byte < len(self.kdump.dumpable) and self.kdump.dumpable[byte] >> bit & 1
                if not dumped and contains(self.ram, pfn * block, 1):
                    level = "no dump level stated" if self.dump_level is None else dump_level_text(self.dump_level)
                    return f"physical {pfn * block:#x} was excluded by the dump's filter (makedumpfile {level})"
            return None
        # left_out is sorted and disjoint: only the range starting at or before pa, and those
        # starting inside [pa, pa+size), can meet it
        at = max(bisect.bisect_right(self.left_out, (pa, 1 << 64)) - 1, 0)
        for start, end in self.left_out[at:]:
            if start >= pa + max(size, 1):
                break
            if pa < end:
                return (f"physical {max(pa, start):#x} was excluded by the dump's filter: it lies in "
                        f"[{start:#x}, {end:#x}), beyond a PT_LOAD's file data (p_memsz > p_filesz)")
        return None


@dataclass(frozen=True)
class KdumpLayout:
    """Where a kdump file keeps its pages: one PageDescriptor per set bit of `dumpable`, in pfn order."""

    block_size: int  # bytes per page of the dump (QEMU: its target page size, 64K on arm64)
    dumpable: bytes  # the second bitmap: pages with a descriptor
    desc_at: int  # file offset of the first PageDescriptor


def identify(path: Path) -> DumpFile:
    """Read the headers of `path`; DumpError saying what is wrong otherwise."""
    try:
        with path.open("rb") as f:
            size = f.seek(0, 2)
            f.seek(0)
            head = f.read(64)
            if head.startswith(FLAT_SIGNATURE):
                return _flattened(path, f, size)
            if head.startswith(b"\x7fELF"):
                return _checked(path, lambda: _elf(path, FileBytes(f, size), "elf"))
            if head.startswith(KDUMP_SIGNATURE):
                return _checked(path, lambda: _kdump_headers(path, FileBytes(f, size), "kdump"))
    except OSError as exc:
        raise DumpError(f"cannot read {path}: {exc.strerror or exc}") from None
    except struct.error:
        raise DumpError(f"{path} is truncated: its headers end early") from None
    except (ValueError, OverflowError, MemoryError) as exc:  # a header value no reader can follow
        raise DumpError(f"{path} is damaged: a header value cannot be followed ({exc})") from None
    if not head:
        raise DumpError(f"{path} is empty")
    raise DumpError(f"{path} is not a vmcore (neither ELF nor kdump-compressed)")


def _flattened(path: Path, f: BinaryIO, size: int) -> DumpFile:
    """A flattened stream: the file it describes starts with an ELF or a KDUMP header."""
    def read() -> DumpFile:
        src = FlatFile(f, size)
        head = src.read(0, min(8, src.size))
        if head.startswith(b"\x7fELF"):
            return _elf(path, src, "elf-flattened")
        if head.startswith(KDUMP_SIGNATURE):
            return _kdump_headers(path, src, "kdump-flattened")
        raise DumpError(f"{path} is a makedumpfile flattened stream, but the file it describes is neither "
                        f"ELF nor kdump-compressed (it starts with {head!r})")
    return _checked(path, read)


def _checked(path: Path, read: Callable[[], DumpFile]) -> DumpFile:
    try:
        return read()
    except Truncated as exc:
        raise DumpError(f"{path} is truncated or damaged: {exc}") from None


def _elf(path: Path, src: FileBytes, fmt: str) -> DumpFile:
    size = src.size
    _need(path, size, ELF_HEADER_SIZE, "its ELF header")
    ident = src.read(0, 16)
    if ident[4] != 2 or ident[5] != 1:  # EI_CLASS ELFCLASS64, EI_DATA ELFDATA2LSB
        raise DumpError(f"{path} is not a 64-bit little-endian ELF file")
    (e_type, e_machine, _, _, e_phoff, _, _, _, e_phentsize, e_phnum) = struct.unpack(
        "<HHIQQQIHHH", src.read(16, 42))
    if e_type != ET_CORE:
        raise DumpError(f"{path} is an ELF file but not a core dump (type {e_type}; a vmlinux is type 2)")
    found = arch_where("elf_machine", e_machine)
    if found is None:
        raise DumpError(f"{path} is a core dump for ELF machine {e_machine}; ptinspect reads {names_text()}")
    arch = found.name
    if e_phnum == PN_XNUM:
        raise DumpError(f"{path} has more than 65534 program headers (PN_XNUM), which ptinspect does not read")
    if e_phentsize < PHDR.size:
        raise DumpError(f"{path} is damaged: its program headers are {e_phentsize} bytes each, not {PHDR.size}")
    headers_end = e_phoff + e_phnum * e_phentsize
    _need(path, size, headers_end, "its program headers")
    table = src.read(e_phoff, e_phnum * e_phentsize)
    info = None
    ram = []
    segments = []
    beyond = []  # [start, end) past a PT_LOAD's file data
    places = [(0, ELF_HEADER_SIZE, "the ELF header"), (e_phoff, headers_end, "the program headers")]  # file bytes
    for i in range(e_phnum):
        p_type, _, p_offset, _, p_paddr, p_filesz, p_memsz, _ = PHDR.unpack_from(table, i * e_phentsize)
        what = f"program header {i} ({PT_NAMES.get(p_type, f'type {p_type}')})"
        if p_type == PT_LOAD and p_memsz > p_filesz:
            if p_paddr + p_memsz > 1 << 64:
                raise DumpError(f"{path} is damaged: {what} maps physical {p_paddr:#x} + {p_memsz:#x}, beyond 64 bits")
            beyond.append((p_paddr + p_filesz, p_paddr + p_memsz))
            ram.append((p_paddr, p_paddr + p_memsz))
        if p_type not in (PT_LOAD, PT_NOTE) or not p_filesz:
            continue
        if p_offset + p_filesz > size:
            raise DumpError(f"{path} is truncated or damaged: {what} places {p_filesz} bytes at file offset "
                            f"{p_offset:#x}, past the end of the file ({size} bytes)")
        places.append((p_offset, p_offset + p_filesz, what))
        if p_type == PT_LOAD:
            if p_paddr + p_filesz > 1 << 64:
                raise DumpError(f"{path} is damaged: {what} maps physical {p_paddr:#x} + {p_filesz:#x}, beyond 64 bits")
            ram.append((p_paddr, p_paddr + p_filesz))
            segments.append((p_paddr, p_offset, p_filesz))
        elif info is None:
            info = _note(src.read(p_offset, p_filesz))
    _disjoint(path, places)
    held = list(_merge([(pa, pa + n) for pa, _, n in segments]))
    left_out = tuple(piece for start, end in _merge(beyond) for piece in _minus(start, end, held))
    return DumpFile(path, fmt, arch, info, tuple(_merge(ram)), segments=tuple(sorted(segments)), left_out=left_out)


def _minus(start: int, end: int, held: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    """[start, end) less the sorted disjoint `held` ranges (another segment may hold the data)."""
    at = start
    for lo, hi in held:
        if hi <= at or lo >= end:
            continue
        if lo > at:
            yield at, lo
        at = max(at, hi)
    if at < end:
        yield at, end


def _disjoint(path: Path, places: list[tuple[int, int, str]]) -> None:
    """Each segment's file data is its own: data shared by two segments, or by a segment and the
    headers, means the headers are damaged (their physical ranges may overlap: /proc/vmcore maps
    the kernel text inside the RAM segment, each with its own copy in the file)."""
    places = sorted(places)
    for (_, end, first), (start, _, second) in zip(places, places[1:]):
        if start < end:
            raise DumpError(f"{path} is damaged: the file data of {second} (from offset {start:#x}) overlaps "
                            f"that of {first} (up to {end:#x})")


def _need(path: Path, size: int, end: int, what: str) -> None:
    if end > size:
        raise DumpError(f"{path} is truncated: it has {size} bytes, {what} need {end}")


def _note(data: bytes) -> bytes | None:
    """The VMCOREINFO descriptor among the notes of one PT_NOTE segment."""
    pos = 0
    while pos + 12 <= len(data):
        namesz, descsz, _ = struct.unpack_from("<III", data, pos)
        name_at = pos + 12
        desc_at = name_at + (namesz + 3 & ~3)
        if data[name_at:name_at + namesz].rstrip(b"\0") == b"VMCOREINFO":
            return data[desc_at:desc_at + descsz]
        pos = desc_at + (descsz + 3 & ~3)
    return None


def _merge(ranges: list[tuple[int, int]]) -> Iterator[tuple[int, int]]:
    current = None
    for start, end in sorted(ranges):
        if current is not None and start <= current[1]:
            current = (current[0], max(current[1], end))
            continue
        if current is not None:
            yield current
        current = (start, end)
    if current is not None:
        yield current


class Truncated(Exception):
    """Data lies (partly) beyond what the file holds."""


class FileBytes:
    """The bytes of a dump file, read in place."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        self.f, self.size = f, size

    def read(self, offset: int, n: int) -> bytes:
        """`n` bytes at `offset`; Truncated unless they all lie inside the file (offsets and
        sizes come from the file's own headers, so may be anything)."""
        _bounded(offset, n, self.size)
        self.f.seek(offset)
        data = self.f.read(n)
        if len(data) != n:
            raise Truncated(f"the file ends before byte {offset + n:#x}")
        return data


def _bounded(offset: int, n: int, size: int) -> None:
    if offset < 0 or n < 0:
        raise Truncated(f"its headers point at {n} bytes at offset {offset}, which no file has: they are damaged")
    if offset + n > size:
        raise Truncated(f"its headers place {n} bytes at offset {offset:#x}, past the end of the file "
                        f"({size} bytes): the file is truncated or its headers are damaged")


class FlatFile(FileBytes):
    """The file a makedumpfile flattened stream describes: a 4 KiB header, then (offset, size)
    records in big endian, each followed by its data, ending with offset -1
    (END_FLAG_FLAT_HEADER); read through an index of the records.  A later record replaces
    what an earlier one wrote at the same offsets, as `makedumpfile -R` writes them in turn."""

    def __init__(self, f: BinaryIO, size: int) -> None:
        super().__init__(f, size)
        self.records = _latest_wins(list(flat_records(f, size)))  # (offset in the file, stream position, size)
        self.starts = [offset for offset, _, _ in self.records]
        self.size = max((offset + length for offset, _, length in self.records), default=0)  # the file's size

    def read(self, offset: int, n: int) -> bytes:
        _bounded(offset, n, self.size)
        out = bytearray()
        at = bisect.bisect_right(self.starts, offset) - 1
        while len(out) < n and 0 <= at < len(self.records):
            start, pos, length = self.records[at]
            here = offset + len(out)
            if not start <= here < start + length:
                break
            take = min(start + length - here, n - len(out))
            self.f.seek(pos + here - start)
            out += self.f.read(take)
            at += 1
        if len(out) < n:
            raise Truncated(f"the flattened stream has no data for {offset + len(out):#x}")
        return bytes(out)


def _latest_wins(records: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """Records in stream order as disjoint pieces sorted by offset, each byte from the last
    record that wrote it."""
    ordered = sorted(records)
    if all(a[0] + a[2] <= b[0] for a, b in zip(ordered, ordered[1:])):
        return [r for r in ordered if r[2]]
    pieces: list[tuple[int, int, int]] = []
    covered: list[tuple[int, int]] = []
    for offset, pos, length in reversed(records):
        for lo, hi in _minus(offset, offset + length, covered):
            pieces.append((lo, pos + lo - offset, hi - lo))
        covered = list(_merge(covered + [(offset, offset + length)]))
    return sorted(pieces)


def open_source(f: BinaryIO, size: int, fmt: str) -> FileBytes:
    """The dump bytes of a plain or flattened file (DumpFile.format)."""
    return FlatFile(f, size) if fmt.endswith("-flattened") else FileBytes(f, size)


def flat_records(f: BinaryIO, size: int) -> Iterator[tuple[int, int, int]]:
    """(offset, file position, size) of every record of a flattened stream, in stream order."""
    pos = FLAT_HEADER_SIZE
    while True:
        if pos + 16 > size:
            raise Truncated(f"the flattened stream stops at byte {size} without its end record")
        f.seek(pos)
        offset, length = struct.unpack(">qq", f.read(16))
        if offset == -1:
            return
        if offset < 0 or length < 0 or pos + 16 + length > size:
            raise Truncated(f"the flattened stream's record at byte {pos} runs past the end of the file")
        yield offset, pos + 16, length
        pos += 16 + length


def _kdump_headers(path: Path, src: FileBytes, fmt: str) -> DumpFile:
    header = src.read(0, 464)  # DiskDumpHeader64
    if header[:8] != KDUMP_SIGNATURE:
        raise DumpError(f"{path}: no KDUMP signature at offset 0")
    version, = struct.unpack_from("<I", header, 8)
    machine = header[12 + 4 * 65:12 + 5 * 65].split(b"\0")[0].decode(errors="replace")
    named = arch_where("uname_machines", machine)
    if named is None and machine not in UNNAMED:
        raise DumpError(f"{path} is a kdump of a {machine} machine; ptinspect reads {names_text()}")
    block_size, sub_hdr_size, bitmap_blocks, max_mapnr = struct.unpack_from("<IIII", header, 428)
    dump_level = None
    if block_size not in (4096, 16384, 65536):  # the guest's page size (QEMU and makedumpfile)
        raise DumpError(f"{path}: kdump block size {block_size} is not a page size; the file is damaged")
    sub = src.read(block_size, 104)  # KdumpSubHeader64
    offset_info, size_info, offset_note, size_note = struct.unpack_from("<QQQQ", sub, 32)
    if version >= 1:
        dump_level, = struct.unpack_from("<i", sub, 8)
    if version >= 6:
        max_mapnr, = struct.unpack_from("<Q", sub, 96)
    # As libkdumpfile reads it (diskdump.c read_sub_hdr_64): from version 4 on, the VMCOREINFO
    # ELF note among the notes; in version 3, the raw text at offset_vmcoreinfo.
    info = None
    if version >= 4 and offset_note and size_note:
        info = _note(src.read(offset_note, size_note))
    elif version == 3 and offset_info and size_info:
        info = src.read(offset_info, size_info)
    bitmap_at = (1 + sub_hdr_size) * block_size
    half = bitmap_blocks * block_size // 2
    bitmap = src.read(bitmap_at, 2 * half)
    pfns = _bits(bitmap[:half], max_mapnr)
    dumped = int.from_bytes(bitmap[half:], "little").bit_count()
    desc_at = bitmap_at + 2 * half
    if dumped:  # every page descriptor's data must lie inside the file
        table = src.read(desc_at, dumped * PAGE_DESC.size)
        end = max(offset + length for offset, length, _, _ in PAGE_DESC.iter_unpack(table))
        src.read(end - 1, 1)
    ram = tuple(_merge([(a * block_size, b * block_size) for a, b in pfns]))
    excluded = sum(b - a for a, b in pfns) - dumped
    arch = named.name if named is not None else _arch_of_vmcoreinfo(info)
    return DumpFile(path, fmt, arch, info, ram, KdumpLayout(block_size, bitmap[half:], desc_at), dump_level=dump_level,
                    excluded_pages=max(excluded, 0))


def _arch_of_vmcoreinfo(info: bytes | None) -> str | None:
    """The architecture whose arch_crash_save_vmcoreinfo() wrote the text (for kdumps whose
    header says "Unknown", as QEMU's arm64 and riscv64 dumps do)."""
    keys = {line.split(b"=", 1)[0] for line in (info or b"").splitlines()}
    found = [arch.name for arch in all_arches() if arch.vmcoreinfo_key.encode() in keys]
    return found[0] if len(found) == 1 else None


def _bits(bitmap: bytes, limit: int) -> list[tuple[int, int]]:
    """Runs [start, end) of set bits (pfns) in a little-endian bitmap, below `limit`."""
    runs: list[tuple[int, int]] = []
    start = None
    for index, byte in enumerate(bitmap):
        if byte in (0, 0xFF) and (start is None) == (byte == 0):
            continue
        for bit in range(8):
            pfn = index * 8 + bit
            if pfn >= limit:
                break
            on = byte >> bit & 1
            if on and start is None:
                start = pfn
            elif not on and start is not None:
                runs.append((start, pfn))
                start = None
    if start is not None:
        runs.append((start, min(len(bitmap) * 8, limit)))
    return runs


def reassemble(flat: Path, out: Path) -> None:
    """Write the file (kdump-compressed or ELF) a flattened stream describes (makedumpfile -R)."""
    try:
        with flat.open("rb") as src, out.open("wb") as dst:
            size = src.seek(0, 2)
            src.seek(0)
            if src.read(len(FLAT_SIGNATURE)) != FLAT_SIGNATURE:
                raise DumpError(f"{flat} is not a makedumpfile flattened stream")
            for offset, pos, length in flat_records(src, size):
                src.seek(pos)
                dst.seek(offset)
                dst.write(src.read(length))
    except Truncated as exc:
        raise DumpError(f"{flat} is truncated: {exc}") from None
    except OSError as exc:
        raise DumpError(f"cannot reassemble {flat} into {out}: {exc.strerror or exc}") from None
