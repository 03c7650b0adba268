"""VMCOREINFO: the kernel's own description of itself (kernel/vmcore_info.c), as key=value text.

Parsed here, checked against a vmlinux, and wrapped as an ELF note for vmcores that lack it.
"""
from __future__ import annotations

import struct
from pathlib import Path

from . import vmlinux as vml

NOTE_NAME = b"VMCOREINFO"


class VmcoreinfoError(Exception):
    """VMCOREINFO is unusable, or does not describe the given vmlinux."""


def parse(text: bytes) -> dict[str, str]:
    """KEY=VALUE lines (OSRELEASE, PAGESIZE, SYMBOL(x), NUMBER(x), ...) as a dict."""
    out: dict[str, str] = {}
    for line in text.decode(errors="replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    if "OSRELEASE" not in out:
        raise VmcoreinfoError("the VMCOREINFO text has no OSRELEASE line: it is not VMCOREINFO")
    return out


def check_vmlinux(numbers: dict[str, str], vmlinux: Path, what: str) -> None:
    """That `vmlinux` is the kernel VMCOREINFO describes: same release and, where both
    carry one, the same build ID (VMCOREINFO_BUILD_ID, kernel/vmcore_info.c:160 in 7.2).
    `what` names the kernel for messages ("the running kernel", "the kernel in x.vmcore")."""
    try:
        release = vml.release(vmlinux)
    except vml.VmlinuxError as exc:
        raise VmcoreinfoError(str(exc)) from None
    if numbers["OSRELEASE"] != release:
        raise VmcoreinfoError(f"{vmlinux} is {release}, but {what} is {numbers['OSRELEASE']}: "
                              "give the vmlinux of that kernel")
    theirs = numbers.get("BUILD-ID")
    ours = vml.build_id(vmlinux)
    if theirs and ours and not ours.startswith(theirs.lower()):
        raise VmcoreinfoError(f"{vmlinux} is another build of {release} (build ID {ours}, {what} has {theirs}): "
                              "give the vmlinux of exactly that build")


def elf_note(text: bytes) -> bytes:
    """An Elf64_Nhdr note named VMCOREINFO (type 0) holding `text`, 4-byte aligned, as
    crash_save_vmcoreinfo writes it (kernel/vmcore_info.c)."""
    name = NOTE_NAME + b"\0"

    def pad(data: bytes) -> bytes:
        return data + bytes(-len(data) % 4)

    return struct.pack("<III", len(name), len(text), 0) + pad(name) + pad(text)


def add_elf_note(path: Path, text: bytes) -> None:
    """Give an ELF vmcore a VMCOREINFO note without rewriting its memory: append the note and a
    copy of the program header table plus one PT_NOTE for it, then point e_phoff/e_phnum there."""
    with path.open("r+b") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2 or header[5] != 1:
            raise VmcoreinfoError(f"{path} is not a 64-bit little-endian ELF file")
        e_phoff, = struct.unpack_from("<Q", header, 32)
        e_phentsize, e_phnum = struct.unpack_from("<HH", header, 54)
        if e_phnum + 1 >= 0xFFFF or e_phentsize != 56:
            raise VmcoreinfoError(f"{path}: cannot add a program header (e_phnum {e_phnum}, e_phentsize {e_phentsize})")
        f.seek(e_phoff)
        table = f.read(e_phnum * e_phentsize)
        end = f.seek(0, 2)
        note_at = end + (-end % 8)
        note = elf_note(text)
        phoff = note_at + len(note) + (-(note_at + len(note)) % 8)
        # Elf64_Phdr PT_NOTE: type, flags, offset, vaddr, paddr, filesz, memsz, align
        phdr = struct.pack("<IIQQQQQQ", 4, 0, note_at, 0, 0, len(note), len(note), 4)
        f.write(bytes(note_at - end) + note + bytes(phoff - note_at - len(note)) + table + phdr)
        f.seek(32)
        f.write(struct.pack("<Q", phoff))
        f.seek(56)
        f.write(struct.pack("<H", e_phnum + 1))


def add_kdump_note(path: Path, text: bytes) -> None:
    """Give a (reassembled) kdump-compressed file VMCOREINFO without moving its pages: append its
    notes plus a VMCOREINFO note and point KdumpSubHeader64's offset_note/note_size (read from
    header version 4 on) and offset_vmcoreinfo/size_vmcoreinfo (version 3) there."""
    with path.open("r+b") as f:
        header = f.read(464)
        if header[:8] != b"KDUMP   ":
            raise VmcoreinfoError(f"{path} is not a kdump-compressed file")
        version, = struct.unpack_from("<I", header, 8)
        block_size, = struct.unpack_from("<I", header, 428)
        if version < 3:
            raise VmcoreinfoError(f"{path}: kdump header version {version} has no place for VMCOREINFO")
        f.seek(block_size + 48)
        offset_note, size_note = struct.unpack("<QQ", f.read(16))
        f.seek(offset_note)
        notes = f.read(size_note) if offset_note and size_note else b""
        end = f.seek(0, 2)
        notes_at = end + (-end % 8)
        note = elf_note(text)
        f.write(bytes(notes_at - end) + notes + note)
        text_at = notes_at + len(notes) + 12 + (len(NOTE_NAME) + 1 + 3 & ~3)
        f.seek(block_size + 32)
        f.write(struct.pack("<QQQQ", text_at, len(text), notes_at, len(notes) + len(note)))
