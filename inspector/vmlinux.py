"""What the vmlinux ELF file itself says: a few symbols and the release string.

Used before drgn can be set up (drgn needs VMCOREINFO, which a live gdbstub
target has to find in guest memory first).  pyelftools reads the symbol table
once; the answers are cached per file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs import arch_where, names_text

from .cache import subdir


class VmlinuxError(Exception):
    """The file is not a usable vmlinux."""


# The symbols ptinspect looks up before drgn is set up; kept in a small per-file cache.
WANTED = ("linux_banner", "vmcoreinfo_data", "vmcoreinfo_size", "_text", "vectors", "handle_exception")


CACHE_SCHEMA = 2  # bump when what the cache holds changes


@functools.lru_cache(maxsize=4)
def _facts(path: Path) -> dict:
    """The ELF machine, the WANTED symbols' values, the release and the GNU build ID, from
    the cache when the file is unchanged (reading them costs more than a whole small dump)."""
    st = path.stat()
    key = hashlib.sha256(f"{CACHE_SCHEMA}:{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cached = subdir("vmlinux") / f"{key}.json"
    try:
        data = json.loads(cached.read_text())
        if {"machine", "symbols", "release", "build_id"} <= data.keys():
            return data
    except (OSError, ValueError):
        pass
    machine, names = _read_symbols(path)
    data = {"path": str(path), "machine": machine, "symbols": {n: names[n] for n in WANTED if n in names}}
    data["release"] = _read_release(path, data["symbols"])
    data["build_id"] = _read_build_id(path)
    tmp = cached.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data))
    tmp.rename(cached)
    return data


STT_NOTYPE, STT_OBJECT, STT_FUNC = 0, 1, 2  # include/uapi/linux/elf.h
ELF64_SYM = "<IBBHQQ"  # Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16, st_value u64, st_size u64
SHF_EXECINSTR = 0x4


@dataclass(frozen=True)
class SymbolTable:
    """A vmlinux's .symtab, link-time values."""

    machine: str  # the Arch name
    values: dict[str, int]  # every named symbol (first definition wins)
    # (value, size, name), sorted, the first per address: STT_FUNC, and sized STT_NOTYPE code (assembly
    # entry points such as x86's entry_SYSCALL_64), where a return address can point too
    functions: list[tuple[int, int, str]]
    objects: dict[str, int]  # STT_OBJECT name -> value (first definition wins)


def _read_symbols(path: Path) -> tuple[str, dict[str, int]]:
    """The ELF machine and every named symbol's value (first definition wins)."""
    table = symbol_table(path)
    return table.machine, table.values


def symbol_table(path: Path) -> SymbolTable:
    """The ELF machine and the symbol table, functions with their sizes.

    pyelftools finds the sections; the 24-byte Elf64_Sym records are unpacked
    in bulk, which is ~50 times faster than iterating pyelftools symbols.
    """
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            arch = arch_where("elf_machine_name", elf["e_machine"])
            if arch is None:
                raise VmlinuxError(f"{path} is an ELF file for {elf['e_machine']}, not {names_text('or')}")
            machine = arch.name
            if elf.elfclass != 64 or not elf.little_endian:
                raise VmlinuxError(f"{path} is not a 64-bit little-endian ELF file")
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                raise VmlinuxError(f"{path} has no symbol table (is it the -dbg vmlinux?)")
            strtab = elf.get_section(symtab["sh_link"]).data()
            data = symtab.data()
            code = {i for i, section in enumerate(elf.iter_sections()) if section["sh_flags"] & SHF_EXECINSTR}
    except (OSError, ELFError) as exc:
        raise VmlinuxError(f"cannot read {path} as a vmlinux: {exc}") from None
    names: dict[str, int] = {}
    funcs: dict[int, tuple[int, int, str]] = {}
    asm: dict[int, tuple[int, int, str]] = {}  # sized code without a type: SYM_CODE_START..SYM_CODE_END
    objects: dict[str, int] = {}
    # Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16, st_value u64, st_size u64
    for st_name, info, _other, shndx, value, size in struct.iter_unpack(ELF64_SYM, data):
        if st_name:
            end = strtab.index(b"\0", st_name)
            name = strtab[st_name:end].decode(errors="replace")
            names.setdefault(name, value)
            kind = info & 0xF  # ELF64_ST_TYPE
            if kind == STT_FUNC:
                funcs.setdefault(value, (value, size, name))
            elif kind == STT_OBJECT:
                objects.setdefault(name, value)
            elif kind == STT_NOTYPE and size and shndx in code:
                asm.setdefault(value, (value, size, name))
    return SymbolTable(machine, names, sorted({**asm, **funcs}.values()), objects)


def _read_build_id(path: Path) -> str | None:
    """The GNU build ID note of an ELF file (hex), None if it has none."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile
    from elftools.elf.sections import NoteSection

    try:
        with path.open("rb") as f:
            for section in ELFFile(f).iter_sections():
                if isinstance(section, NoteSection):  # what pyelftools makes of every SHT_NOTE section
                    for note in section.iter_notes():
                        if note["n_name"] == "GNU" and note["n_type"] == "NT_GNU_BUILD_ID":
                            desc = note["n_desc"]
                            return desc.hex() if isinstance(desc, bytes) else desc
    except (OSError, ELFError) as exc:
        raise VmlinuxError(f"cannot read {path}: {exc}") from None
    return None


def _read_release(path: Path, symbols: dict[str, int]) -> str | None:
    """The kernel release (uname -r) in linux_banner; None without a readable banner."""
    if "linux_banner" not in symbols:
        return None
    try:
        m = re.match(rb"Linux version (\S+)", read_at(path, symbols["linux_banner"], 256))
    except VmlinuxError:
        return None
    return m.group(1).decode() if m else None


def machine(path: Path) -> str:
    """The architecture name of a vmlinux."""
    return _facts(path)["machine"]


def symbol(path: Path, name: str) -> int:
    """The link-time address of a symbol."""
    try:
        return _facts(path)["symbols"][name]
    except KeyError:
        raise VmlinuxError(f"{path} has no symbol {name}") from None


def read_at(path: Path, addr: int, size: int) -> bytes:
    """Bytes of the file's initialised data at link-time address `addr`."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            for seg in elf.iter_segments():
                if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= addr < seg["p_vaddr"] + seg["p_filesz"]:
                    f.seek(seg["p_offset"] + addr - seg["p_vaddr"])
                    return f.read(size)
    except (OSError, ELFError) as exc:
        raise VmlinuxError(f"cannot read {path}: {exc}") from None
    raise VmlinuxError(f"{path} has no file data at {addr:#x}")


def release(path: Path) -> str:
    """The kernel release (uname -r) the vmlinux was built as, from linux_banner."""
    found = _facts(path)["release"]
    if found is None:
        raise VmlinuxError(f"{path} has no linux_banner starting with 'Linux version': is it a vmlinux?")
    return found


def build_id(path: Path) -> str | None:
    """The GNU build ID of the vmlinux (hex), None if it has none."""
    return _facts(path)["build_id"]
