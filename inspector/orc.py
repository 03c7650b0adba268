"""A stopped x86-64 vCPU's kernel callers from the vmlinux's ORC tables, the way the kernel finds
them (arch/x86/kernel/unwind_orc.c unwind_next_frame(), 5.10..7.3), so that watch's call chains on
x86 are the kernel's own, not a scan of the stack.

The tables are the vmlinux's `.orc_unwind_ip` (s32 offsets, each relative to its own slot) and
`.orc_unwind` (6-byte entries); link-time addresses, so a run-time IP is looked up less the KASLR
offset.  Before 5.12 the kernel sorted them at boot (scripts/sorttable does it at build time since
57fa18994285 scripts/sorttable: Implement build-time ORC unwind table sorting): they are sorted here
when the file's are not.  A loaded module's tables are read from its struct module
(inspector/rawkernel/modules.py); a BPF program's or a trampoline's IP ends the unwind (named), where
the kernel would fall back to a frame-pointer guess.
"""
from __future__ import annotations

import bisect
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs.versions import Layout
from ptinspect.archs.x86_orc import (
    BP,
    BP_INDIRECT,
    CALL,
    DRAP,
    END_OF_STACK,
    ENTRY_BYTES,
    GDB_REGISTERS,
    IRET_FRAME,
    PREV_SP,
    PT_REGS,
    REGS,
    REGS_PARTIAL,
    SP,
    SP_INDIRECT,
    TEXT_RANGES,
    UNDEFINED,
    USER_RPL,
    OrcEntry,
    OrcLayout,
    layout_for,
)


class OrcError(Exception):
    """The vmlinux's ORC tables cannot be used (named why)."""


@dataclass(frozen=True)
class OrcTables:
    """A vmlinux's ORC tables, searchable by link-time IP."""

    layout: OrcLayout
    ips: list[int]  # link-time IPs, ascending
    order: list[int] | None  # entry index of each sorted IP, where the file's table is not sorted
    entries: bytes
    text: tuple[tuple[int, int], ...]  # the link-time ranges the tables cover

    @classmethod
    def load(cls, vmlinux: Path, symbols: dict[str, int], layout: Layout | None) -> OrcTables:
        """The tables of `vmlinux` with the layout its .orc_header names (or, before 6.4, its
        release's); OrcError naming what is missing."""
        from elftools.common.exceptions import ELFError
        from elftools.elf.elffile import ELFFile

        try:
            with vmlinux.open("rb") as f:
                elf = ELFFile(f)
                sections = {name: elf.get_section_by_name(name)
                            for name in (".orc_unwind_ip", ".orc_unwind", ".orc_header")}
                if sections[".orc_unwind_ip"] is None or sections[".orc_unwind"] is None:
                    raise OrcError(f"{vmlinux} has no ORC tables (a kernel built without CONFIG_UNWINDER_ORC)")
                ip_section = sections[".orc_unwind_ip"]
                base = ip_section["sh_addr"]
                raw_ips = ip_section.data()
                entries = sections[".orc_unwind"].data()
                header = sections[".orc_header"].data() if sections[".orc_header"] is not None else None
        except (OSError, ELFError) as exc:
            raise OrcError(f"cannot read the ORC tables of {vmlinux}: {exc}") from None
        orc_hash = header.hex() if header is not None else None
        if orc_hash is None and layout is None:
            raise OrcError(f"{vmlinux} has no .orc_header and the kernel's release is not known: "
                           "before 6.4 the release decides the ORC layout")
        chosen = layout_for(orc_hash, layout is not None and layout.has("x86_orc_sp_indirect_deref"),
                            layout is not None and layout.has("x86_orc_type3"))
        if chosen is None:
            raise OrcError(f"the ORC layout of {vmlinux} is not one ptinspect knows "
                           + (f"(.orc_header SHA-1 {orc_hash})" if orc_hash else
                              "(no .orc_header, which every kernel from 6.4 has)"))
        offsets = array("i", raw_ips)
        if len(offsets) * ENTRY_BYTES != len(entries):
            raise OrcError(f"{vmlinux}: .orc_unwind_ip has {len(offsets)} entries, .orc_unwind {len(entries)} bytes")
        text = tuple((symbols[start], symbols[end]) for start, end in TEXT_RANGES
                     if start in symbols and end in symbols)
        if not text:
            raise OrcError(f"{vmlinux} names neither _stext/_etext nor _sinittext/_einittext")
        return cls.of(chosen, base, offsets, entries, text)

    @classmethod
    def of(cls, layout: OrcLayout, base: int, offsets: Sequence[int], entries: bytes,
           text: tuple[tuple[int, int], ...]) -> OrcTables:
        """Tables from an .orc_unwind_ip at `base` (each s32 relative to its own slot) and its entries;
        a module's are at run-time addresses (module_finalize() -> unwind_module_init(), which sorts them)."""
        ips = [base + 4 * i + offset for i, offset in enumerate(offsets)]
        order = None
        if any(a > b for a, b in zip(ips, ips[1:])):
            order = sorted(range(len(ips)), key=ips.__getitem__)
            ips = [ips[i] for i in order]
        return cls(layout, ips, order, entries, text)

    def covers(self, ip: int) -> bool:
        return any(start <= ip < end for start, end in self.text)

    def find(self, ip: int) -> OrcEntry | None:
        """The entry for link-time `ip`: the last one at or below it (unwind_orc.c __orc_find())."""
        i = bisect.bisect_right(self.ips, ip) - 1
        if i < 0:
            return None
        index = self.order[i] if self.order is not None else i
        return self.layout.decode(self.entries[index * ENTRY_BYTES:(index + 1) * ENTRY_BYTES])


@dataclass(frozen=True)
class Unwound:
    """Callers found by ORC: (address, is a return address) innermost first, and how it ended."""

    frames: tuple[tuple[int, bool], ...]
    end: str  # "complete" (end of stack or user mode), "the first N callers", or "stopped: why"


def first_registers(read: Callable[[tuple[str, ...]], dict[str, int]]) -> dict[str, int]:
    """The registers a first frame may need, by ORC name, from the gdbstub's names."""
    regs = read(tuple(GDB_REGISTERS.values()))
    return {name: regs[gdb] for name, gdb in GDB_REGISTERS.items() if gdb in regs}


def unwind(tables: OrcTables, regs: dict[str, int], read_word: Callable[[int], int], kaslr_offset: int,
           limit: int, module_tables: Callable[[int], OrcTables | None] = lambda ip: None) -> Unwound:
    """Walk up to `limit` callers from a stopped vCPU's registers (ORC names: ip, sp, bp and the DRAP
    registers), as unwind_next_frame() does from a pt_regs.  `read_word` reads a kernel VA and
    raises LookupError on a fault; `module_tables` gives the tables of the module a run-time IP
    outside the vmlinux is in (orc_module_find()), or None."""
    frames: list[tuple[int, bool]] = []
    ip, sp, bp = regs["ip"], regs["sp"], regs["bp"]
    known: dict[str, int] = dict(regs)  # registers whose values this frame has (full pt_regs or the stub's)
    signal = True  # the first IP is where the vCPU stopped, not a return address

    def stopped(why: str) -> Unwound:
        return Unwound(tuple(frames), f"stopped: {why}")

    while len(frames) < limit:
        lookup = ip if signal else ip - 1
        if tables.covers(lookup - kaslr_offset):
            table, lookup = tables, lookup - kaslr_offset
        else:
            found = module_tables(lookup)
            if found is None:
                return stopped(f"{ip:#x} is outside the vmlinux's and every module's text (BPF or a trampoline: "
                               "their ORC is not read)")
            table = found
        orc = table.find(lookup)
        if orc is None or orc.kind == UNDEFINED:
            return stopped(f"no ORC data for {ip:#x}")
        if orc.kind == END_OF_STACK:
            return Unwound(tuple(frames), "complete")
        try:
            if orc.sp_reg == SP:
                cfa = sp + orc.sp_offset
            elif orc.sp_reg == BP:
                cfa = bp + orc.sp_offset
            elif orc.sp_reg == SP_INDIRECT:
                if tables.layout.indirect_offset_after:
                    cfa = read_word(sp) + orc.sp_offset
                else:
                    cfa = read_word(sp + orc.sp_offset)
            elif orc.sp_reg == BP_INDIRECT:
                cfa = read_word(bp + orc.sp_offset)
            elif orc.sp_reg in DRAP:
                if orc.sp_reg not in known:
                    return stopped(f"the stack is in {orc.sp_reg} at {ip:#x}, which this frame does not have")
                cfa = known[orc.sp_reg]
            else:
                return stopped(f"ORC names {orc.sp_reg} as the stack at {ip:#x}")
            prev_sp = sp
            if orc.kind == CALL:
                ip, sp, known = read_word(cfa - 8), cfa, {}
            elif orc.kind == REGS:
                known = {name: read_word(cfa + offset) for name, offset in PT_REGS.items()}
                ip, sp = known["ip"], known["sp"]
            elif orc.kind == REGS_PARTIAL:
                known = {name: read_word(cfa + offset) for name, offset in IRET_FRAME.items()}
                ip, sp = known["ip"], known["sp"]
            else:
                return stopped(f"ORC frame type {orc.kind} at {ip:#x}")
            if orc.bp_reg == UNDEFINED:
                bp = known.get("bp", bp)
            elif orc.bp_reg == PREV_SP:
                bp = read_word(cfa + orc.bp_offset)
            elif orc.bp_reg == BP:
                bp = read_word(bp + orc.bp_offset)
            else:
                return stopped(f"ORC names {orc.bp_reg} for BP at {ip:#x}")
        except LookupError as exc:
            return stopped(f"the stack could not be read ({exc})")
        if "cs" in known and known["cs"] & USER_RPL:  # user_mode(regs): the syscall or fault came from user space
            return Unwound(tuple(frames), "complete")
        if orc.kind == CALL and sp <= prev_sp:
            return stopped(f"the stack goes the wrong way at {ip:#x}")
        signal = orc.signal
        frames.append((ip, not signal))
    return Unwound(tuple(frames), f"the first {limit} callers")
