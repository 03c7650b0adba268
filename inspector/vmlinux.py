"""What the vmlinux ELF file itself says: a few symbols and the release string.

Used before drgn can be set up (drgn needs VMCOREINFO, which a live gdbstub
target has to find in guest memory first).  pyelftools reads the symbol table
once; the answers are cached per file.
"""
from __future__ import annotations

import functools
import hashlib
import json
import re
import struct
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from .vm.cache import subdir

ELF_MACHINES = {"EM_X86_64": "x86_64", "EM_AARCH64": "arm64", "EM_RISCV": "riscv64"}


class VmlinuxError(Exception):
    """The file is not a usable vmlinux."""


# The symbols ptinspect looks up before drgn is set up; kept in a small per-file cache.
WANTED = ("linux_banner", "vmcoreinfo_data", "vmcoreinfo_size", "_text", "vectors", "handle_exception")


@functools.lru_cache(maxsize=4)
def _symbols(path: Path) -> tuple[str, dict[str, int]]:
    """The ELF machine and the WANTED symbols' values, from the cache when the file is unchanged."""
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:24]
    cached = subdir("vmlinux") / f"{key}.json"
    try:
        data = json.loads(cached.read_text())
        return data["machine"], data["symbols"]
    except (OSError, ValueError, KeyError):
        pass
    machine, names = _read_symbols(path)
    wanted = {n: names[n] for n in WANTED if n in names}
    tmp = cached.with_suffix(".tmp")
    tmp.write_text(json.dumps({"path": str(path), "machine": machine, "symbols": wanted}))
    tmp.rename(cached)
    return machine, wanted


def _read_symbols(path: Path) -> tuple[str, dict[str, int]]:
    """The ELF machine and every named symbol's value (first definition wins).

    pyelftools finds the sections; the 24-byte Elf64_Sym records are unpacked
    in bulk, which is ~50 times faster than iterating pyelftools symbols.
    """
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            machine = ELF_MACHINES.get(elf["e_machine"])
            if machine is None:
                raise VmlinuxError(f"{path} is an ELF file for {elf['e_machine']}, not x86-64, arm64 or riscv64")
            if elf.elfclass != 64 or not elf.little_endian:
                raise VmlinuxError(f"{path} is not a 64-bit little-endian ELF file")
            symtab = elf.get_section_by_name(".symtab")
            if symtab is None:
                raise VmlinuxError(f"{path} has no symbol table (is it the -dbg vmlinux?)")
            strtab = elf.get_section(symtab["sh_link"]).data()
            data = symtab.data()
    except (OSError, ELFError) as exc:
        raise VmlinuxError(f"cannot read {path} as a vmlinux: {exc}") from None
    names: dict[str, int] = {}
    # Elf64_Sym: st_name u32, st_info u8, st_other u8, st_shndx u16, st_value u64, st_size u64
    for st_name, _info, _other, _shndx, value, _size in struct.iter_unpack("<IBBHQQ", data):
        if st_name:
            end = strtab.index(b"\0", st_name)
            names.setdefault(strtab[st_name:end].decode(errors="replace"), value)
    return machine, names


def machine(path: Path) -> str:
    """The architecture name of a vmlinux."""
    return _symbols(path)[0]


def symbol(path: Path, name: str) -> int:
    """The link-time address of a symbol."""
    try:
        return _symbols(path)[1][name]
    except KeyError:
        raise VmlinuxError(f"{path} has no symbol {name}") from None


def read_at(path: Path, addr: int, size: int) -> bytes:
    """Bytes of the file's initialised data at link-time address `addr`."""
    with path.open("rb") as f:
        elf = ELFFile(f)
        for seg in elf.iter_segments():
            if seg["p_type"] == "PT_LOAD" and seg["p_vaddr"] <= addr < seg["p_vaddr"] + seg["p_filesz"]:
                f.seek(seg["p_offset"] + addr - seg["p_vaddr"])
                return f.read(size)
    raise VmlinuxError(f"{path} has no file data at {addr:#x}")


def release(path: Path) -> str:
    """The kernel release (uname -r) the vmlinux was built as, from linux_banner."""
    banner = read_at(path, symbol(path, "linux_banner"), 256)
    m = re.match(rb"Linux version (\S+)", banner)
    if not m:
        raise VmlinuxError(f"{path}: linux_banner does not start with 'Linux version'")
    return m.group(1).decode()
