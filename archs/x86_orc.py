"""The x86-64 kernel's ORC unwind tables, as data: how an entry is laid out and what its numbers
mean in each release (arch/x86/include/asm/orc_types.h), and the pt_regs slots the unwinder reads
(arch/x86/include/asm/ptrace.h).  The unwinding itself is inspector/orc.py, after
arch/x86/kernel/unwind_orc.c unwind_next_frame().

Which layout a vmlinux uses is known for certain from 6.4 on: its `.orc_header` section holds the
SHA-1 that scripts/orc_hash.sh takes of orc_types.h's ORC_REG_*/ORC_TYPE_* defines and struct
orc_entry (b9f174c811e3 x86/unwind/orc: Add ELF section with ORC version identifier, 6.4), so a
layout is matched by that hash and a hash no layout has is refused, not guessed.  Before 6.4 the
release decides (features x86_orc_sp_indirect_deref, x86_orc_type3 in archs/x86_64.py).
"""
from __future__ import annotations

from dataclasses import dataclass

# The meanings ORC gives a register number: where the previous frame's stack (CFA) or BP is.
UNDEFINED, PREV_SP, SP, BP, SP_INDIRECT, BP_INDIRECT = "undefined", "prev_sp", "sp", "bp", "sp_indirect", "bp_indirect"
# ...or a register that holds the stack pointer during a DRAP sequence, read from full registers.
DRAP = ("ax", "dx", "di", "r10", "r13")

# Frame types.
CALL, REGS, REGS_PARTIAL, END_OF_STACK = "call", "regs", "regs_partial", "end_of_stack"

# orc_types.h ORC_REG_* in 5.10..6.12 (unchanged since 4.14 but for DI/DX).
_REGS_V1 = {0: UNDEFINED, 1: PREV_SP, 2: "dx", 3: "di", 4: BP, 5: SP, 6: "r10", 7: "r13",
            8: BP_INDIRECT, 9: SP_INDIRECT}


@dataclass(frozen=True)
class OrcLayout:
    """One release range's struct orc_entry: s16 sp_offset, s16 bp_offset, then (little-endian
    bitfields in a u16) sp_reg:4, bp_reg:4, type:`type_bits`, and either `end:1` (until 6.3) or
    `signal:1` (from 6.4)."""

    name: str
    orc_hash: str | None  # .orc_header's SHA-1 (hex), None for releases before the section existed
    registers: dict[int, str]  # ORC_REG_* number -> meaning (UNDEFINED, SP, ..., or a DRAP register)
    type_bits: int
    types: dict[int, str]  # ORC_TYPE_* / UNWIND_HINT_TYPE_* number -> CALL, REGS, REGS_PARTIAL, ...
    end_bit: bool  # `end:1` follows type: sp_reg UNDEFINED with end set is the end of the stack
    # SP_INDIRECT: the CFA is *(sp + offset) (before 87ccc826bf1c) or *sp + offset (after it)
    indirect_offset_after: bool
    source: str

    def decode(self, raw: bytes) -> OrcEntry:
        """One 6-byte struct orc_entry."""
        sp_offset = int.from_bytes(raw[0:2], "little", signed=True)
        bp_offset = int.from_bytes(raw[2:4], "little", signed=True)
        bits = int.from_bytes(raw[4:6], "little")
        type_number = (bits >> 8) & ((1 << self.type_bits) - 1)
        flag = bool(bits >> (8 + self.type_bits) & 1)
        kind = self.types.get(type_number, f"type {type_number}")
        sp_reg = self.registers.get(bits & 0xF, f"register {bits & 0xF}")
        bp_reg = self.registers.get(bits >> 4 & 0xF, f"register {bits >> 4 & 0xF}")
        if self.end_bit and sp_reg == UNDEFINED:  # 5.10 unwind_next_frame(): end of stack, or an error
            kind = END_OF_STACK if flag else UNDEFINED
        signal = flag if not self.end_bit else kind in (REGS, REGS_PARTIAL)
        return OrcEntry(sp_offset, bp_offset, sp_reg, bp_reg, kind, signal)


@dataclass(frozen=True)
class OrcEntry:
    """A decoded orc_entry: where the caller's stack and BP are, and what kind of frame this is.
    `signal`: the next frame's IP is where it was interrupted, not a return address (so it is
    looked up as is, not IP - 1)."""

    sp_offset: int
    bp_offset: int
    sp_reg: str
    bp_reg: str
    kind: str
    signal: bool


ENTRY_BYTES = 6  # sizeof(struct orc_entry), __packed

LAYOUTS: tuple[OrcLayout, ...] = (
    # 5.10 orc_types.h: type:2, end:1; objtool.h UNWIND_HINT_TYPE_CALL 0, _REGS 1, _REGS_PARTIAL 2;
    # unwind_orc.c unwind_next_frame() ORC_REG_SP_INDIRECT: sp = state->sp + sp_offset, then deref.
    OrcLayout("5.10", None, _REGS_V1, 2, {0: CALL, 1: REGS, 2: REGS_PARTIAL}, True, False,
              "5.10 orc_types.h struct orc_entry; include/linux/objtool.h UNWIND_HINT_TYPE_*; unwind_orc.c"),
    # 87ccc826bf1c x86/unwind/orc: Change REG_SP_INDIRECT (5.12): sp = *state->sp, then + sp_offset.
    OrcLayout("5.12", None, _REGS_V1, 2, {0: CALL, 1: REGS, 2: REGS_PARTIAL}, True, True,
              "6.1 orc_types.h struct orc_entry; include/linux/objtool.h UNWIND_HINT_TYPE_*; unwind_orc.c"),
    # fb799447ae29 x86,objtool: Split UNWIND_HINT_EMPTY in two, ffb1b4a41016 x86/unwind/orc: Add
    # 'signal' field to ORC metadata (6.4): type:3 (ORC_TYPE_UNDEFINED 0, _END_OF_STACK 1, _CALL 2,
    # _REGS 3, _REGS_PARTIAL 4), signal:1.  Hash of the 6.12.117 header.
    OrcLayout("6.4", "fe5d32bf581bd63b2ca9a5c65ba5a625eab3fe24", _REGS_V1, 3,
              {0: UNDEFINED, 1: END_OF_STACK, 2: CALL, 3: REGS, 4: REGS_PARTIAL}, False, True,
              "6.12 orc_types.h ORC_REG_*, ORC_TYPE_*, struct orc_entry; unwind_orc.c unwind_next_frame()"),
    # 96f3b16a9de5 objtool: Support Clang RAX DRAP sequence: ORC_REG_AX 10 added to the 6.4 numbering
    # (stable backports to 6.12..7.0 were proposed); the hash of 6.12's header with that one line.
    OrcLayout("6.4+ax", "edfa4d15552fdd2e1d56679728416379f2fe4534", {**_REGS_V1, 10: "ax"}, 3,
              {0: UNDEFINED, 1: END_OF_STACK, 2: CALL, 3: REGS, 4: REGS_PARTIAL}, False, True,
              "96f3b16a9de5 objtool: Support Clang RAX DRAP sequence (orc_types.h ORC_REG_AX 10)"),
    # The numbering of 7.2.13 and 7.3.4's orc_types.h (the renumbering commit is not established
    # here; the hash identifies the layout whatever the release).
    OrcLayout("7.x", "137c36ad7627c4dd55932176bb0ecdbd5041fc82",
              {0: UNDEFINED, 1: "ax", 2: "dx", 3: SP, 4: BP, 5: "di", 6: "r10", 7: "r13", 8: PREV_SP,
               9: SP_INDIRECT, 10: BP_INDIRECT}, 3,
              {0: UNDEFINED, 1: END_OF_STACK, 2: CALL, 3: REGS, 4: REGS_PARTIAL}, False, True,
              "7.2 orc_types.h ORC_REG_*, ORC_TYPE_*, struct orc_entry; unwind_orc.c unwind_next_frame()"),
)


def layout_for(orc_hash: str | None, sp_indirect_deref: bool, type3: bool) -> OrcLayout | None:
    """The layout of a vmlinux: by its .orc_header hash when it has one (None: a layout not known),
    else by the release's features."""
    if orc_hash is not None:
        return next((layout for layout in LAYOUTS if layout.orc_hash == orc_hash), None)
    if type3:
        return None  # a 6.4+ kernel always has the header: without it the tables are not ORC's
    return LAYOUTS[1] if sp_indirect_deref else LAYOUTS[0]


# arch/x86/include/asm/ptrace.h struct pt_regs (64-bit, 5.10..7.3: cs/ss became unions with FRED
# fields in 6.9 at the same offsets): the slots the unwinder reads, in bytes.
PT_REGS = {"r13": 16, "bp": 32, "r10": 56, "ax": 80, "dx": 96, "di": 112, "ip": 128, "cs": 136, "sp": 152}
# An IRET frame (ORC_TYPE_REGS_PARTIAL): ip, cs, flags, sp, ss from its start (unwind_orc.c
# deref_stack_iret_regs(): the pt_regs from ip on, IRET_FRAME_OFFSET = offsetof(struct pt_regs, ip)).
IRET_FRAME = {name: offset - PT_REGS["ip"] for name, offset in PT_REGS.items() if name in ("ip", "cs", "sp")}
USER_RPL = 3  # ptrace.h user_mode(): regs->cs & SEGMENT_RPL_MASK (3) is user mode on 64-bit
# The text the vmlinux's tables cover (unwind_orc.c orc_find(): is_kernel_inittext(), then
# LOOKUP_START_IP = _stext .. LOOKUP_STOP_IP = _etext)
TEXT_RANGES = (("_stext", "_etext"), ("_sinittext", "_einittext"))
# The gdbstub's names of the registers a first frame may need (QEMU's i386-64bit.xml).
GDB_REGISTERS = {"ip": "rip", "sp": "rsp", "bp": "rbp", "ax": "rax", "dx": "rdx", "di": "rdi", "r10": "r10",
                 "r13": "r13"}
