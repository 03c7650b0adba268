"""Command-line inputs checked once, in one place: numbers, VAs and VA ranges, table roots, timeouts.

Every command parses its numbers here and checks them against the paging mode it walks, so that
a VA beyond 64 bits, a non-canonical VA, an unaligned root or an absurd timeout is one clear
error naming the option, never a walk of some other address.  What is canonical is the
architecture's own statement (`Arch.canonical`, `PagingMode.va_bits`), not re-encoded here.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from ptinspect.archs.common import Arch, PagingMode

from .entry import ENTRY_BYTES
from .reader import RefusedRead

U64 = 1 << 64
MAX_TIMEOUT = 24 * 3600.0  # a day: longer is a typo, and select()/settimeout() refuse huge values
MIN_TABLE_ALIGN = 64  # arm64 TTBR BADDR: a root table smaller than 64 bytes is still 64-byte aligned


class InputError(ValueError):
    """A user input that is wrong; `what` names it (an option or argument)."""

    def __init__(self, what: str, message: str) -> None:
        super().__init__(f"{what}: {message}")
        self.what = what
        self.message = message


def number(text: str, what: str) -> int:
    """A non-negative integer (decimal, or 0x/0o/0b-prefixed)."""
    try:
        value = int(text.strip(), 0)
    except ValueError:
        raise InputError(what, f"{text!r} is not a number (use 0x... for hex)") from None
    if value < 0:
        raise InputError(what, f"{text!r} is negative")
    return value


def address(text: str, what: str) -> int:
    """A 64-bit address."""
    value = number(text, what)
    if value >= U64:
        raise InputError(what, f"{text} is beyond 64 bits")
    return value


def va_range(text: str, what: str = "--range") -> tuple[int, int]:
    """START-END, END exclusive and at most 2^64."""
    start, sep, end = text.partition("-")
    if not sep:
        raise InputError(what, "use START-END, e.g. 0x400000-0x500000")
    lo, hi = number(start, what), number(end, what)
    if lo >= U64 or hi > U64:
        raise InputError(what, f"{text} is beyond 64 bits")
    if not lo < hi:
        raise InputError(what, "START must be below END")
    return lo, hi


def timeout(value: float, what: str = "--timeout") -> float:
    """Seconds to wait for a reply: finite, positive, at most a day."""
    if not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT:
        raise InputError(what, f"{value} is not a number of seconds between 0 and {MAX_TIMEOUT:.0f}")
    return value


def halves(arch: Arch, mode: PagingMode, upper: bool) -> list[tuple[int, int]]:
    """The VAs (inclusive bounds) a root of `mode` translates in the half `upper` selects
    (x86-64 and riscv64: both halves; arm64: the TTBR0 or the TTBR1 half), as the arch's
    canonical form maps the table-index space [0, 2^va_bits) onto 64-bit VAs."""
    mid, top = 1 << (mode.va_bits - 1), (1 << mode.va_bits) - 1
    pieces = [(arch.canonical(mode, 0, upper), arch.canonical(mode, mid - 1, upper)),
              (arch.canonical(mode, mid, upper), arch.canonical(mode, top, upper))]
    pieces.sort()
    if pieces[1][0] == pieces[0][1] + 1:
        return [(pieces[0][0], pieces[1][1])]
    return pieces


def _describe(arch: Arch, mode: PagingMode, upper: bool) -> str:
    spans = " and ".join(f"{lo:#x}-{hi:#x}" for lo, hi in halves(arch, mode, upper))
    half = ""
    if arch.split_roots:
        half = " (the upper half)" if upper else " (the lower half; the upper half needs --kernel or --upper)"
    return f"{arch.name} {mode.name} translates {spans}{half}"


def _inside(arch: Arch, mode: PagingMode, upper: bool, va: int) -> bool:
    return any(lo <= va <= hi for lo, hi in halves(arch, mode, upper))


def check_va(arch: Arch, mode: PagingMode, upper: bool, va: int, what: str) -> int:
    """`va` itself, if the root walks it; else an error naming the mode's valid VAs."""
    if not _inside(arch, mode, upper, va):
        raise InputError(what, f"{va:#x} is not a canonical address of this root: {_describe(arch, mode, upper)}")
    return va


def check_range(arch: Arch, mode: PagingMode, upper: bool, rng: tuple[int, int], what: str = "--range") -> None:
    """Both ends of [lo, hi) lie in the VAs the root translates (the non-canonical hole
    between the halves may lie inside: it holds no entries)."""
    lo, hi = rng
    for va in (lo, hi - 1):
        if not _inside(arch, mode, upper, va):
            raise InputError(what, f"{lo:#x}-{hi:#x} reaches {va:#x}, outside this root's address space: "
                                   f"{_describe(arch, mode, upper)}")


def outside(pa: int, why: str, what: str = "--root") -> InputError:
    """The one message for a root table outside the memory a target can read."""
    return InputError(what, f"the root table at {pa:#x} is outside the readable physical memory: {why}")


def check_root(mode: PagingMode, pa: int, ram: Iterable[tuple[int, int]] | None, what: str = "--root") -> None:
    """A root table must be aligned to its size and lie in RAM (or, where RAM is unknown,
    below the mode's physical-address width); the same rule on every target."""
    size = mode.levels[0].entries * ENTRY_BYTES
    align = max(size, MIN_TABLE_ALIGN)
    if pa % align:
        raise InputError(what, f"{pa:#x} is not aligned to the {mode.name} root table's {align} bytes")
    if pa + size > 1 << mode.pa_bits:
        raise outside(pa, f"beyond the {mode.pa_bits}-bit physical addresses of {mode.name}", what)
    if ram is not None:
        ranges = list(ram)
        if not any(start <= pa and pa + size <= end for start, end in ranges):
            shown = ", ".join(f"{a:#x}-{b:#x}" for a, b in ranges[:8]) + (" ..." if len(ranges) > 8 else "")
            raise outside(pa, f"not in the target's RAM ({shown})", what)


def check_root_table(pa: int, read: Callable[[], bytes], ram_known: bool, what: str = "--root") -> None:
    """The root table, read before the walk: a root the target cannot read is an error naming it,
    never an empty table.  Where the target's RAM is unknown (a live QEMU without the kernel's
    memblock: its gdbstub reads zeros where no memory is), an all-zero root cannot be told from
    memory that is not there, so it is refused with the way to tell (--vmlinux)."""
    try:
        data = read()
    except RefusedRead as exc:
        raise outside(pa, f"the target cannot read it ({exc})", what) from None
    if not ram_known and not any(data):
        raise InputError(what, f"the root table at {pa:#x} reads as all zeros: it is outside the readable "
                               "physical memory (QEMU's gdbstub reads zeros where there is no memory) or a table "
                               "with no entries, and the target's RAM is unknown, so the two cannot be told "
                               "apart (give --vmlinux: the kernel's memblock says where RAM is)")
