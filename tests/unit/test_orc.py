"""inspector/orc.py: ORC entries and the unwind, on tables laid out as the kernel lays them out.

Entries are packed as each release's arch/x86/include/asm/orc_types.h struct orc_entry is (s16 sp_offset,
s16 bp_offset, then little-endian bitfields sp_reg:4, bp_reg:4, type:2|3, end:1|signal:1) with the
ORC_REG_*/ORC_TYPE_* numbers of that header, written out here from the header, not from archs/x86_orc.py.
The live check is the integration tests' comparison with drgn's unwinder (test_rawkernel, test_watch).
"""
from __future__ import annotations

import struct

import pytest

from ptinspect.archs.x86_orc import LAYOUTS, layout_for
from ptinspect.inspector.orc import OrcTables, unwind

# 7.2 orc_types.h: ORC_REG_SP 3, ORC_REG_BP 4, ORC_REG_PREV_SP 8, ORC_REG_SP_INDIRECT 9, ORC_REG_UNDEFINED 0;
# ORC_TYPE_END_OF_STACK 1, ORC_TYPE_CALL 2, ORC_TYPE_REGS 3
R7 = {"undefined": 0, "sp": 3, "bp": 4, "prev_sp": 8, "sp_indirect": 9}
T7 = {"end": 1, "call": 2, "regs": 3}
# 5.10 orc_types.h: ORC_REG_PREV_SP 1, ORC_REG_BP 4, ORC_REG_SP 5, ORC_REG_SP_INDIRECT 9;
# include/linux/objtool.h UNWIND_HINT_TYPE_CALL 0, UNWIND_HINT_TYPE_REGS 1
R5 = {"undefined": 0, "prev_sp": 1, "bp": 4, "sp": 5, "sp_indirect": 9}
T5 = {"call": 0, "regs": 1}
TEXT = (0xFFFFFFFF81000000, 0xFFFFFFFF82000000)
KASLR = 0x1000000


def entry(sp_offset: int, bp_offset: int, sp_reg: int, bp_reg: int, kind: int, flag: int, type_bits: int) -> bytes:
    return struct.pack("<hhH", sp_offset, bp_offset, sp_reg | bp_reg << 4 | kind << 8 | flag << (8 + type_bits))


def tables(name: str, rows: list[tuple[int, bytes]]) -> OrcTables:
    layout = next(layout for layout in LAYOUTS if layout.name == name)
    rows = sorted(rows)
    return OrcTables(layout, [ip for ip, _ in rows], None, b"".join(raw for _, raw in rows), (TEXT,))


class Stack(dict):
    def word(self, va: int) -> int:
        if va not in self:
            raise LookupError(f"{va:#x} not mapped")
        return self[va]


F1, F2, F3 = TEXT[0] + 0x1000, TEXT[0] + 0x2000, TEXT[0] + 0x3000  # three functions, link-time


def test_call_frames_to_user_mode_7x() -> None:
    """F1 (16 bytes of frame) called by F2 (an SP_INDIRECT frame), called from an entry REGS frame
    whose saved CS is user mode: two callers, and the end."""
    t = tables("7.x", [
        (F1, entry(16, 0, R7["sp"], R7["undefined"], T7["call"], 0, 3)),
        (F2, entry(8, -16, R7["sp_indirect"], R7["prev_sp"], T7["call"], 0, 3)),
        (F3, entry(0, 0, R7["sp"], R7["undefined"], T7["regs"], 1, 3)),
    ])
    sp, stack = 0xFFFFC90000001000, Stack()
    stack[sp + 8] = F2 + 0x40 + KASLR  # F1's return address, at its CFA - 8
    stack[sp + 16] = sp + 0x100 - 8  # F2's CFA is *sp + 8 (after 87ccc826bf1c): sp + 0x100
    stack[sp + 0x100 - 8] = F3 + 0x20 + KASLR
    stack[sp + 0x100 - 16] = 0xB0  # F2's caller's BP at CFA - 16 (PREV_SP)
    regs_at = sp + 0x100  # F3's REGS frame: a struct pt_regs at its CFA
    stack.update({regs_at + off: 0 for off in (16, 32, 56, 80, 96, 112)})
    stack.update({regs_at + 128: 0x401000, regs_at + 136: 0x33, regs_at + 152: 0x7FFF0000})  # user ip, cs, sp
    walked = unwind(t, {"ip": F1 + 4 + KASLR, "sp": sp, "bp": 0xA0}, stack.word, KASLR, 16)
    assert [(ip - KASLR, ret) for ip, ret in walked.frames] == [(F2 + 0x40, True), (F3 + 0x20, True)]
    assert walked.end == "complete"  # F3's REGS frame holds a user CS (cs & 3): the syscall's user side


def test_sp_indirect_before_5_12() -> None:
    """5.10: SP_INDIRECT is *(sp + offset) (unwind_orc.c 5.10), no offset after."""
    t = tables("5.10", [(F1, entry(8, 0, R5["sp_indirect"], R5["undefined"], T5["call"], 0, 2)),
                        (F2, entry(0, 0, R5["undefined"], R5["undefined"], T5["call"], 1, 2))])
    sp, stack = 0xFFFFC90000002000, Stack()
    stack[sp + 8] = sp + 0x80
    stack[sp + 0x80 - 8] = F2 + 0x10 + KASLR
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp, "bp": 0}, stack.word, KASLR, 16)
    assert [ip - KASLR for ip, _ in walked.frames] == [F2 + 0x10]
    assert walked.end == "complete"  # sp_reg UNDEFINED with end:1 at F2: the end of the stack


def test_ends_are_named() -> None:
    t = tables("7.x", [(F1, entry(8, 0, R7["sp"], R7["undefined"], T7["call"], 0, 3)),
                       (F2, entry(8, 0, R7["sp"], R7["undefined"], T7["call"], 0, 3))])
    sp, stack = 0xFFFFC90000003000, Stack()
    stack[sp] = TEXT[1] + 0x100 + KASLR  # F1's return address (at its CFA sp + 8, - 8): outside the vmlinux's text (a module)
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp, "bp": 0}, stack.word, KASLR, 16)
    assert walked.end.startswith("stopped: ") and "outside the vmlinux's and every module's text" in walked.end
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp + 0x800, "bp": 0}, stack.word, KASLR, 16)
    assert walked.end.startswith("stopped: the stack could not be read")
    stack[sp] = F2 + 1 + KASLR  # F2 calls F2 with the same frame, forever: cut at the limit
    stack[sp + 8] = F2 + 1 + KASLR
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp, "bp": 0}, stack.word, KASLR, 2)
    assert len(walked.frames) == 2 and walked.end == "the first 2 callers"


def test_layouts_by_header_hash_and_release() -> None:
    assert layout_for(None, False, False) is LAYOUTS[0] and layout_for(None, True, False) is LAYOUTS[1]
    assert layout_for(None, True, True) is None  # a 6.4+ kernel without .orc_header: not ORC as known
    assert layout_for("00" * 20, True, True) is None  # a layout no table has: refused, not guessed
    assert {layout.orc_hash for layout in LAYOUTS if layout.orc_hash} == {
        "fe5d32bf581bd63b2ca9a5c65ba5a625eab3fe24", "edfa4d15552fdd2e1d56679728416379f2fe4534",
        "137c36ad7627c4dd55932176bb0ecdbd5041fc82"}


@pytest.mark.parametrize("name", ["5.10", "5.12", "6.4", "6.4+ax", "7.x"])
def test_decode_reads_each_bitfield(name: str) -> None:
    layout = next(layout for layout in LAYOUTS if layout.name == name)
    bits = layout.type_bits
    numbers = {v: k for k, v in layout.registers.items()}
    kinds = {v: k for k, v in layout.types.items()}
    got = layout.decode(entry(-24, 300, numbers["bp"], numbers["prev_sp"], kinds["regs"], 1, bits))
    assert (got.sp_offset, got.bp_offset, got.sp_reg, got.bp_reg, got.kind) == (-24, 300, "bp", "prev_sp", "regs")
    assert got.signal  # REGS frames are signal frames: end:1 (5.10) or signal:1 (6.4) alike


def test_module_tables_continue_the_walk() -> None:
    """A return address in a loaded module (run-time, no KASLR offset applies) is looked up in the
    module's own tables (orc_module_find()): .orc_unwind_ip as the module holds it, each s32 relative
    to its own slot, in any order (OrcTables.of sorts); the walk goes on from the module's frame."""
    layout = next(layout for layout in LAYOUTS if layout.name == "7.x")
    t = tables("7.x", [(F1, entry(8, 0, R7["sp"], R7["undefined"], T7["call"], 0, 3)),
                       (F3, entry(0, 0, R7["undefined"], R7["undefined"], T7["end"], 0, 3))])
    module_text = (0xFFFFFFFFC0000000, 0xFFFFFFFFC0001000)
    m1, m2 = module_text[0] + 0x100, module_text[0] + 0x400  # two module functions
    base = 0xFFFFFFFFC0100000  # the module's .orc_unwind_ip: m2's slot first
    offsets = [m2 - base, m1 - (base + 4)]
    entries = entry(16, 0, R7["sp"], R7["undefined"], T7["call"], 0, 3) + entry(8, 0, R7["sp"], R7["undefined"],
                                                                                   T7["call"], 0, 3)
    module = OrcTables.of(layout, base, offsets, entries, (module_text,))
    sp, stack = 0xFFFFC90000004000, Stack()
    stack[sp] = m2 + 0x10  # F1 (8 bytes of frame) returns into m2
    stack[sp + 8 + 8] = m1 + 0x20  # m2 (16 bytes of frame) returns into m1
    stack[sp + 8 + 16] = F3 + 0x8 + KASLR  # m1 (8 bytes) returns into F3: the end of the stack
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp, "bp": 0}, stack.word, KASLR, 16,
                    lambda ip: module if module_text[0] <= ip < module_text[1] else None)
    assert [ip for ip, _ in walked.frames] == [m2 + 0x10, m1 + 0x20, F3 + 0x8 + KASLR], walked
    assert walked.end == "complete"
    walked = unwind(t, {"ip": F1 + KASLR, "sp": sp, "bp": 0}, stack.word, KASLR, 16)
    assert [ip for ip, _ in walked.frames] == [m2 + 0x10] and "every module's text" in walked.end
