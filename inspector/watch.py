"""Watch a VA range's page-table entries change while the VM runs (issue 16).

Write watchpoints (QEMU's gdbstub under TCG) sit on the slots of every table page that holds
the range's entries, through the tables' kernel linear-map addresses: the kernel writes page
tables there.  The VM runs; each time a watchpoint fires, every watched table is read again and
each changed slot becomes an event, in `diff`'s words (inspector/diff.py), with the vCPU, the
kernel function at its PC and the task it was running.  A change found in a table whose
watchpoint did not fire is not a kernel store: when it is only accessed/dirty bits the MMU sets,
it is reported as a hardware update, else as a change no watchpoint saw.

QEMU reports a plain write watchpoint after the store (the instruction is re-executed alone,
then the debug exception is raised: accel/tcg/watchpoint.c cpu_check_watchpoint), so the PC is
just past the storing instruction, in the function that stored.  An atomic read-modify-write
(arm64 SWP/CAS, riscv AMOSWAP, or a store-exclusive) is reported *before* it has written: the
PC is still on it, and resuming runs it into the same watchpoint again, forever (seen on arm64
7.2: modify_prot_start_ptes's SWP, 300 hits and no change).  So a hit that changed no entry is
stepped over: see Watcher.step_over.
"""
from __future__ import annotations

import bisect
import struct
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ptinspect.archs.common import ExceptionRegs, FrameRecords, Kind, OrcUnwind, StackScan
from ptinspect.archs.versions import Layout
from ptinspect.archs.x86_orc import OrcLayout

from .diff import Change, Differ, entry_label
from .dump import Row
from .entry import ENTRY_BYTES, Entry
from .kernel import KernelError
from .orc import OrcError, OrcTables, first_registers
from .orc import unwind as unwind_orc
from .rawkernel import LoadedModule
from .reader import ReadError, TableCache, contains
from .records import item_record, target_record
from .session import Root, Session, SessionError
from .snapshot import SCHEMA, Snapshot
from .targets.rsp import StopReply, thread_number
from .vmlinux import VmlinuxError, symbol_table

Record = dict[str, Any]
POLL = 0.2  # seconds between checks of the deadline while the VM runs
# Watchpoint hits in a row that change no entry and that stepping cannot get past before the watch gives
# up: a store-exclusive loop (arm64 LL/SC, riscv LR/SC) can fail its store-conditional on every stop and
# retry forever.  A store that writes what was there (ageing an old entry: contpte_test_and_clear_young_ptes
# over a THP's 512 entries) changes nothing either, but the step gets past it: that is progress.
IDLE_HITS = 300
# Stepping over a hit that changed nothing (Watcher.step_over): at most STEP_LIMIT instructions, while
# the PC stays within [hit PC - STEP_BEFORE, hit PC + STEP_AFTER): the storing instruction itself, or
# the few instructions of a load/store-exclusive retry loop around it (its branch goes back a handful
# of instructions, to the load-exclusive).  Leaving that window means the store is behind us.
STEP_LIMIT, STEP_BEFORE, STEP_AFTER = 64, 64, 16
# The source of access/dirty-only changes a hit found where the hit's own store cannot be told from the
# MMU's updates (Watcher.resolve).
UNSURE = "kernel-or-hardware"


class WatchError(Exception):
    """The watch cannot be set up or continued."""


class WatchTarget(Protocol):
    """What a watch needs of a target beyond reads (inspector/targets/gdbstub.py)."""

    keep_stopped: bool
    running: bool

    def read_many(self, requests: list[tuple[int, int]]) -> list[bytes]: ...
    def ranges(self) -> list[tuple[int, int]]: ...
    def forget(self) -> None: ...
    def insert_watchpoint(self, va: int, length: int) -> None: ...
    def remove_watchpoint(self, va: int, length: int) -> None: ...
    def resume(self) -> None: ...
    def wait_stop(self, timeout: float) -> StopReply | None: ...
    def stop(self) -> StopReply: ...
    def step(self, thread: str) -> StopReply: ...
    def cpu_registers(self, thread: str, names: tuple[str, ...]) -> dict[str, int]: ...


# -- symbols -------------------------------------------------------------------------------------

@dataclass
class Symbols:
    """The vmlinux's function symbols (for PCs) and object symbols (per-cpu `current`), link-time."""

    starts: list[int]
    funcs: list[tuple[int, int, str]]  # (start, size, name), sorted
    objects: dict[str, int]
    values: dict[str, int] = field(default_factory=dict)  # every named symbol
    vmlinux: Path | None = None
    _orc: OrcTables | OrcError | None = None
    _module_orc: dict[tuple[str, int, bytes], OrcTables] = field(default_factory=dict)

    @classmethod
    def load(cls, vmlinux: Path) -> Symbols:
        try:
            table = symbol_table(vmlinux)
        except VmlinuxError as exc:
            raise WatchError(f"PCs cannot be named: {exc}") from None
        return cls([f[0] for f in table.functions], table.functions, table.objects, table.values, vmlinux)

    def orc(self, layout: Layout | None) -> OrcTables:
        """The vmlinux's ORC tables, loaded once; OrcError (kept) when they cannot be used."""
        if self._orc is None:
            if self.vmlinux is None:
                self._orc = OrcError("no vmlinux to read ORC tables from")
            else:
                try:
                    self._orc = OrcTables.load(self.vmlinux, self.values, layout)
                except OrcError as exc:
                    self._orc = exc
        if isinstance(self._orc, OrcError):
            raise self._orc
        return self._orc

    def name(self, pc: int, kaslr_offset: int, return_address: bool = False,
             modules: Callable[[], Sequence[LoadedModule]] | None = None) -> str | None:
        """"function+0xoff/0xsize" of a run-time PC (with " [module]" in a loaded module's text, the
        modules asked for only then), None outside every function.  A return address is named by the
        call before it (it can be the first byte after a function that does not return), as the
        kernel's %pB does."""
        found = _function(self.starts, self.funcs, pc - kaslr_offset, return_address)
        if found is not None or modules is None:
            return found
        for module in modules():
            found = _function(module.starts, module.functions, pc, return_address)
            if found is not None:
                return f"{found} [{module.name}]"
        return None

    def module_orc(self, modules: Sequence[LoadedModule], layout: OrcLayout, ip: int) -> OrcTables | None:
        """The ORC tables of the loaded module whose functions span run-time `ip`, built once."""
        for module in modules:
            if not module.orc_ip_offsets or not module.functions:
                continue
            text = (module.functions[0][0], max(start + size for start, size, _ in module.functions))
            if text[0] <= ip < text[1]:
                key = (module.name, module.orc_ip_base, module.orc_entries)  # the same module, still loaded
                if key not in self._module_orc:
                    self._module_orc[key] = OrcTables.of(layout, module.orc_ip_base, module.orc_ip_offsets,
                                                         module.orc_entries, (text,))
                return self._module_orc[key]
        return None


def _function(starts: Sequence[int], funcs: Sequence[tuple[int, int, str]], address: int,
              return_address: bool) -> str | None:
    """"function+0xoff/0xsize" of ADDRESS among functions sorted by start (STARTS their starts)."""
    i = bisect.bisect_right(starts, address - return_address) - 1
    if i < 0:
        return None
    start, size, name = funcs[i]
    if size and address - return_address >= start + size:
        return None
    return f"{name}+{address - start:#x}/{size:#x}"


def _modules(session: Session) -> Callable[[], Sequence[LoadedModule]]:
    """The stopped kernel's loaded modules, read when first asked for and kept for this one stop
    (a module may come or go while the VM runs); none where they cannot be read."""
    read: list[Sequence[LoadedModule]] = []

    def modules() -> Sequence[LoadedModule]:
        if not read:
            assert session.kernel is not None
            try:
                read.append(session.kernel.modules())
            except KernelError:
                read.append(())
        return read[0]
    return modules


# -- the running task -----------------------------------------------------------------------------

# Where `current` is while in the kernel: a register (Arch.current_registers), or where an
# architecture names none (x86_64) the per-cpu `current_task` (arch/x86/include/asm/current.h, 7.2),
# a member at offset 0 of the per-cpu `pcpu_hot` in 6.2..6.14 (6.12 current.h struct pcpu_hot),
# read at GS base + symbol.


@dataclass(frozen=True)
class Cpu:
    """What a stopped vCPU was doing: its number, PC, task and callers."""

    number: int | None
    pc: int | None
    function: str | None
    task: str  # "comm[pid]" or "unknown (why)"
    callers: tuple[str, ...] = ()  # innermost first, as far as `unwinder` goes
    unwinder: str | None = None


# -- the call chain -------------------------------------------------------------------------------

FRAMES = 16  # callers reported at most
SCAN_BYTES = 2048  # StackScan: stack bytes scanned for return addresses
# The text of Debian's 7.2 kernels sits in the top 16 bits all-ones half on all three; a return
# address whose top bits carry a pointer-authentication code gets them back by ORing (arm64).
KERNEL_TOP = 0xFFFF << 48


def _word(session: Session, va: int) -> int:
    return int.from_bytes(session.read_kernel_va(va, 8), "little")


def _called_from(session: Session, scan: StackScan, ret: int) -> bool:
    try:
        return scan.is_call(session.read_kernel_va(ret - scan.call_length, scan.call_length))
    except (ReadError, SessionError):
        return False


def call_chain(session: Session, target: WatchTarget, thread: str, symbols: Symbols) -> tuple[tuple[str, ...], str]:
    """The callers of the stopped vCPU's function, and how they were found: the kernel's ORC tables
    (x86-64), the architecture's frame records (Arch.unwind: FrameRecords), or a scan of the stack
    (StackScan) where the kernel's unwinder is one ptinspect cannot read."""
    kernel = session.kernel
    assert kernel is not None
    unwind = session.arch.unwind
    if isinstance(unwind, OrcUnwind):
        try:
            tables = symbols.orc(session.facts.layout)
        except OrcError as exc:
            unwind = replace(unwind.fallback, why=str(exc))
        else:
            return _orc_chain(session, target, thread, symbols, tables)
    if isinstance(unwind, FrameRecords):
        return _frame_chain(session, target, thread, symbols, unwind)
    modules = _modules(session)
    out: list[str] = []
    try:
        sp = target.cpu_registers(thread, (unwind.sp_register,))[unwind.sp_register]
        end = min(sp + SCAN_BYTES, (sp | 0xFFF) + 1 + 0x1000)  # this page and the next (a 16 KiB stack)
        try:
            data = session.read_kernel_va(sp, end - sp)
        except (ReadError, SessionError):
            data = session.read_kernel_va(sp, (sp | 0xFFF) + 1 - sp)
    except (ReadError, SessionError, KeyError):
        data = b""
    for (word,) in struct.iter_unpack("<Q", data[: len(data) // 8 * 8]):
        if len(out) >= FRAMES:
            break
        name = symbols.name(word, kernel.kaslr_offset, True, modules) if word & KERNEL_TOP == KERNEL_TOP else None
        if name and _called_from(session, unwind, word) and (not out or out[-1] != name):
            out.append(name)
    return tuple(out), f"stack scan (a guess: {unwind.why})"


def _frame_chain(session: Session, target: WatchTarget, thread: str, symbols: Symbols,
                 unwind: FrameRecords) -> tuple[tuple[str, ...], str]:
    """The callers the frame records give, followed as the kernel's own unwinder follows them
    (arch/arm64/kernel/stacktrace.c, arch/riscv/kernel/stacktrace.c): return addresses named by
    their call, across exception entries through the saved pt_regs, and "frame pointers" with why
    the walk stopped where it did not reach the end of the records."""
    kernel = session.kernel
    assert kernel is not None
    modules = _modules(session)
    out: list[str] = []

    def add(address: int, is_return: bool) -> bool:
        name = symbols.name(address, kernel.kaslr_offset, is_return, modules)
        if name is not None and (not out or out[-1] != name):
            out.append(name)
        return name is not None

    def stopped(why: str) -> tuple[tuple[str, ...], str]:
        return tuple(out), f"frame pointers (stopped: {why})"

    def regs_member(base: int, where: tuple[str, int]) -> int:
        member, extra = where
        if member not in kernel.layout.members:
            raise LookupError(f"the vmlinux's debug info has no {member}")
        return _word(session, base + kernel.layout.members[member][0] + extra)

    link = (unwind.link_register,) if unwind.link_register else ()
    try:
        regs = target.cpu_registers(thread, (*unwind.fp_registers, *link))
        va_bits = session.mode(True).va_bits
    except (ReadError, SessionError, WatchError) as exc:
        return stopped(f"no registers: {exc}")

    def strip(address: int) -> int:
        return unwind.strip_pac(address, va_bits) if unwind.strip_pac else address

    fp = next((regs[r] for r in unwind.fp_registers if r in regs), None)
    if fp is None:
        return stopped(f"the gdbstub gives no {' or '.join(unwind.fp_registers)}")
    if unwind.link_register and regs.get(unwind.link_register):
        add(strip(regs[unwind.link_register]), True)
    exceptions = unwind.exceptions
    entry = _entry_text(symbols, kernel.kaslr_offset, exceptions)
    meta = exceptions.meta if exceptions is not None and exceptions.meta is not None and \
        session.facts.has(exceptions.meta.feature) else None
    seen: list[int] = []
    try:
        while len(out) < FRAMES:
            if not fp or fp & KERNEL_TOP != KERNEL_TOP:
                break  # the end of the records (or user space's frame pointer)
            if fp in seen:
                return stopped(f"the frame records loop at {fp:#x}")
            seen.append(fp)
            ret, prev = strip(_word(session, fp + unwind.ret_offset)), _word(session, fp + unwind.prev_fp_offset)
            if len(seen) == 1 and unwind.leaf_stack and ret % 8 == 0 and \
                    fp + 16 <= ret <= -(-fp // unwind.leaf_stack) * unwind.leaf_stack:
                fp = ret  # a function that saved no return address: the link register was its caller
                continue
            regs_at = None  # where the pt_regs of an exception entry lie, when this record is one
            if ret == 0 and prev == 0:  # the final record, or (arm64 6.13+) a frame_record_meta
                if meta is None:
                    break
                kind = _word(session, fp + meta.type_offset)
                if kind == meta.final:
                    break
                if kind != meta.pt_regs or meta.member not in kernel.layout.members:
                    return stopped(f"a frame_record_meta of type {kind} at {fp:#x}")
                regs_at = fp - kernel.layout.members[meta.member][0]
            else:
                if not add(ret, True):
                    return stopped(f"return address {ret:#x} is in no function of the vmlinux or a loaded module "
                                   "(BPF or a trampoline)")
                if any(start <= ret < end for start, end in entry):
                    regs_at = fp  # riscv64: the entry's pt_regs lie where the frame pointer points
            if regs_at is None:
                fp = prev
                continue
            pc, fp = regs_member(regs_at, exceptions.pc), regs_member(regs_at, exceptions.fp)  # type: ignore[union-attr]
            if pc & KERNEL_TOP != KERNEL_TOP:
                break  # the exception came from user space
            if not add(pc, False):
                return stopped(f"the interrupted PC {pc:#x} is in no function of the vmlinux or a loaded module")
    except (ReadError, SessionError) as exc:
        return stopped(f"cannot read the frame record at {fp:#x}: {exc}")
    except LookupError as exc:
        return stopped(str(exc))
    return tuple(out), "frame pointers"


def _entry_text(symbols: Symbols, kaslr_offset: int, exceptions: ExceptionRegs | None) -> list[tuple[int, int]]:
    """Run-time address ranges of the exception entry (riscv64), from the first pair of symbols
    the vmlinux has: a return address there crosses into the saved pt_regs."""
    if exceptions is None:
        return []
    for start, end in exceptions.entry_text:
        if start in symbols.values and (end is None or end in symbols.values):
            low = symbols.values[start] + kaslr_offset
            return [(low, symbols.values[end] + kaslr_offset if end else low + 1)]
    return []


def _orc_chain(session: Session, target: WatchTarget, thread: str, symbols: Symbols,
               tables: OrcTables) -> tuple[tuple[str, ...], str]:
    """The callers ORC finds (inspector/orc.py), and "ORC" with how the walk ended."""
    kernel = session.kernel
    assert kernel is not None

    def read_word(va: int) -> int:
        try:
            return _word(session, va)
        except (ReadError, SessionError) as exc:
            raise LookupError(str(exc)) from None

    regs = first_registers(lambda names: target.cpu_registers(thread, names))
    if not {"ip", "sp", "bp"} <= regs.keys():
        return (), "ORC (stopped: the gdbstub gives no rip/rsp/rbp)"
    modules = _modules(session)
    walked = unwind_orc(tables, regs, read_word, kernel.kaslr_offset, FRAMES,
                        lambda ip: symbols.module_orc(modules(), tables.layout, ip))
    out: list[str] = []
    for address, is_return in walked.frames:
        name = symbols.name(address, kernel.kaslr_offset, is_return, modules) or f"{address:#x}"
        if not out or out[-1].split("+", 1)[0] != name.split("+", 1)[0]:
            out.append(name)
    return tuple(out), "ORC" + ("" if walked.end == "complete" else f" ({walked.end})")


def _current_task(session: Session, target: WatchTarget, thread: str, symbols: Symbols) -> int:
    """The task_struct address the vCPU of `thread` runs."""
    kernel = session.kernel
    assert kernel is not None
    names = session.arch.current_registers
    if not names:
        base_name = session.arch.percpu_register
        if base_name is None:
            raise WatchError(f"{session.arch.name} names neither a register nor a per-cpu base for `current`")
        gs = target.cpu_registers(thread, (base_name,)).get(base_name)
        if gs is None:
            raise WatchError(f"the gdbstub gives no {base_name}")
        for name in ("current_task", "pcpu_hot"):
            if name in symbols.objects:
                sym = symbols.objects[name]
                # zero-based per-cpu symbols (x86_64 before 6.15) are offsets, not relocated by KASLR
                sym += kernel.kaslr_offset if sym >= symbols.starts[0] else 0
                return struct.unpack("<Q", session.read_kernel_va(gs + sym, 8))[0]
        raise WatchError("the vmlinux has neither current_task nor pcpu_hot")
    regs = target.cpu_registers(thread, names)
    for name in names:
        if name in regs:
            return regs[name]
    raise WatchError(f"the gdbstub describes no {' or '.join(names)} register")


def cpu_state(session: Session, target: WatchTarget, thread: str | None, symbols: Symbols) -> Cpu:
    """The vCPU of a stop reply's thread: number (QEMU's thread id is cpu_index + 1), PC, task."""
    if thread is None:
        return Cpu(None, None, None, "unknown (the stop reply names no thread)")
    number = thread_number(thread)
    kernel = session.kernel
    assert kernel is not None
    regs = target.cpu_registers(thread, session.arch.pc_registers)
    pc = next(iter(regs.values()), None)
    function = symbols.name(pc, kernel.kaslr_offset, False, _modules(session)) if pc is not None else None
    try:
        task = _current_task(session, target, thread, symbols)
        layout = kernel.layout.members
        pid_off, pid_size = layout["task_struct.pid"]
        comm_off, comm_size = layout["task_struct.comm"]
        pid = int.from_bytes(session.read_kernel_va(task + pid_off, pid_size), "little")
        comm = session.read_kernel_va(task + comm_off, comm_size).split(b"\0", 1)[0].decode(errors="replace")
        who = f"{comm}[{pid}]"
    except (WatchError, ReadError, SessionError, KernelError) as exc:
        who = f"unknown ({exc})"
    callers, unwinder = call_chain(session, target, thread, symbols)
    own = function.split("+", 1)[0] if function else None
    while callers and callers[0].split("+", 1)[0] == own:  # a link register left over from an earlier call
        callers = callers[1:]
    return Cpu(None if number is None else number - 1, pc, function, who, callers, unwinder)


# -- the linear map -------------------------------------------------------------------------------


def linear_offset(session: Session) -> int:
    """VA - PA of the kernel's linear map, from the kernel itself: a process's mm->pgd is a
    linear-map address on all three architectures (pgd_alloc: __get_free_page or a slab
    cache), and the session translates it through the kernel's own tables."""
    kernel = session.kernel
    if kernel is None:
        raise WatchError("watch needs the kernel's debug info to find its linear map: give --vmlinux")
    offsets = []
    try:
        for task in kernel.tasks():
            if task.mm:
                va = kernel.pgd(task.mm)
                offsets.append(va - session.translate_kernel_va(va))
                if len(offsets) == 2:
                    break
    except (KernelError, ReadError) as exc:
        raise WatchError(f"cannot read the kernel's tasks to find its linear map: {exc}") from None
    if not offsets or len(set(offsets)) != 1:
        raise WatchError("the kernel's page-table pages do not lie at one linear-map offset "
                         f"({', '.join(hex(o) for o in offsets) or 'no process has an mm'})")
    return offsets[0]


# -- events ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Event:
    """One changed entry."""

    time: float  # seconds since the watch began
    # "kernel" (a watched store), "hardware" (MMU access/dirty), "unseen" (no watchpoint fired), or
    # UNSURE: one of several access/dirty-only changes a hit found was the hit's own completed store
    source: str
    cpu: Cpu | None
    status: str  # added | removed | changed
    va: int
    level: str
    before: Record | None
    after: Record | None
    changes: tuple[Change, ...]

    @property
    def text(self) -> str:
        return ", ".join(c.text for c in self.changes)

    def record(self) -> Record:
        rec: Record = {"time": round(self.time, 6), "source": self.source, "status": self.status,
                       "va": f"{self.va:#x}", "level": self.level,
                       "changes": [{"field": c.field, "before": c.before, "after": c.after, "text": c.text}
                                   for c in self.changes],
                       "before": self.before, "after": self.after}
        if self.cpu is not None:
            rec["cpu"] = self.cpu.number
            rec["pc"] = None if self.cpu.pc is None else f"{self.cpu.pc:#x}"
            rec["function"] = self.cpu.function
            rec["task"] = self.cpu.task
            rec["callers"] = list(self.cpu.callers)
            rec["unwinder"] = self.cpu.unwinder
        return rec


def kind_matches(rec: Record | None, kind: str) -> bool:
    """Whether an entry record is of KIND ("migration" is any migration-*)."""
    return rec is not None and (rec["kind"] == kind or rec["kind"].startswith(kind + "-"))


class _Copies:
    """Table pages as read at one moment, as a PhysReader for a walk of that moment."""

    def __init__(self, pages: dict[int, bytes], live: WatchTarget) -> None:
        self.pages = pages
        self.live = live

    def ranges(self) -> list[tuple[int, int]]:
        return self.live.ranges()

    def read(self, pa: int, size: int) -> bytes:
        """A copy; a table not watched yet (just installed) as it is now."""
        data = self.pages.get(pa)
        if data is None or len(data) != size:
            return self.live.read_many([(pa, size)])[0]
        return data


@dataclass
class Watched:
    """One watched table: its depth, the slots of the range, the watchpoint on them."""

    pa: int
    depth: int
    first: int
    last: int
    base: int  # VA of the table's slot 0
    va: int  # the watchpoint's linear-map address
    length: int


@dataclass
class Outcome:
    """How a watch ended."""

    reason: str  # "count", "timeout", "interrupted", "until"
    hits: int = 0
    events: int = 0
    caught: Event | None = None
    tables: int = 0
    peak_tables: int = 0
    log: list[str] = field(default_factory=list)


class Watcher:
    """The watch of one root's VA range."""

    def __init__(self, session: Session, target: WatchTarget, root: Root, va_range: tuple[int, int],
                 symbols: Symbols, selection: dict[str, Any]) -> None:
        self.session, self.target, self.root, self.range = session, target, root, va_range
        self.symbols = symbols
        self.mode = root.mode
        self.offset = linear_offset(session)
        self.walker = session.walker(root.mode)
        self.hw_set, self.hw_clear, self.hw_needs = session.arch.hw_pte_updates
        empty = Snapshot.from_document({"schema": SCHEMA, "target": target_record(session, root, selection),
                                        "entries": []}, "watch")
        self.differ = Differ(empty, empty)
        self.watched: dict[int, Watched] = {}
        self.placed: list[tuple[int, int]] = []  # every watchpoint this watch inserted, in order
        self.suspended: set[int] = set()  # tables whose watchpoint is out while a hit is stepped over
        self.last_cpu: Cpu | None = None
        self.copies: dict[int, bytes] = {}
        self.began = time.monotonic()

    # -- tables ---------------------------------------------------------------------------------
    def _slots(self, depth: int, lo: int, hi: int) -> tuple[int, int]:
        level = self.mode.levels[depth]
        mask = level.entries - 1
        return (lo >> level.shift) & mask, ((hi - 1) >> level.shift) & mask

    def _table_va(self, pa: int) -> int:
        """The linear-map address of table `pa`, checked against the kernel's own tables."""
        va = pa + self.offset
        try:
            back = self.session.translate_kernel_va(va)
        except (ReadError, SessionError) as exc:
            raise WatchError(f"table {pa:#x} has no linear-map address: {exc}") from None
        if back != pa:
            raise WatchError(f"the linear-map address {va:#x} of table {pa:#x} maps {back:#x}")
        return va

    def _watch(self, pa: int, depth: int, lo: int, hi: int) -> None:
        first, last = self._slots(depth, lo, hi)
        va = self._table_va(pa) + first * ENTRY_BYTES
        level = self.mode.levels[depth]
        base = lo & ~((1 << (level.shift + level.bits)) - 1)
        w = Watched(pa, depth, first, last, base, va, (last - first + 1) * ENTRY_BYTES)
        self.target.insert_watchpoint(w.va, w.length)
        self.placed.append((w.va, w.length))
        self.watched[pa] = w

    def _unwatch(self, pa: int) -> None:
        w = self.watched.pop(pa)
        self.copies.pop(pa, None)
        if pa in self.suspended:
            self.suspended.discard(pa)  # already out of QEMU
        else:
            self.target.remove_watchpoint(w.va, w.length)

    def _children(self, pages: dict[int, bytes], pa: int) -> list[tuple[int, int, int, int]]:
        """(table, depth, lo, hi) of the tables the watched slots of `pa` point to, within the range."""
        w = self.watched[pa]
        if w.depth + 1 >= len(self.mode.levels):
            return []
        out = []
        walker = Walkers(self, pages)
        for e in walker.slots(pa):
            if e.kind is Kind.TABLE and e.hw.next_table is not None and not walker.problem(e):
                lo, hi = max(self.range[0], e.va), min(self.range[1], e.va + e.size)
                out.append((e.hw.next_table, w.depth + 1, lo, hi))
        return out

    def start(self) -> None:
        """Watch the root's slots of the range and every table below them."""
        self._watch(self.root.pa, 0, *self.range)
        todo = [self.root.pa]
        while todo:
            pa = todo.pop()
            self.copies.update(self._read([pa]))
            for child, depth, lo, hi in self._children(self.copies, pa):
                if child not in self.watched:
                    self._watch(child, depth, lo, hi)
                    todo.append(child)

    def _read(self, pas: list[int]) -> dict[int, bytes]:
        sizes = [self.walker.table_bytes(self.watched[pa].depth) for pa in pas]
        try:
            datas = self.target.read_many(list(zip(pas, sizes)))
        except ReadError as exc:
            raise WatchError(f"cannot read the watched tables: {exc}") from None
        return dict(zip(pas, datas))

    def stop_all(self) -> None:
        """Remove every watchpoint of this watch (the target removes what is left on close too)."""
        for pa in list(self.watched):
            self._unwatch(pa)

    # -- events ---------------------------------------------------------------------------------
    def _hardware_only(self, before: int, after: int) -> bool:
        """Whether before → after is only what the MMU does to a present entry: set accessed/dirty
        bits (and, arm64 DBM, clear PTE_RDONLY of a writable entry): Arch.hw_pte_updates."""
        set_, cleared = after & ~before, before & ~after
        if not (set_ or cleared) or set_ & ~self.hw_set or cleared & ~self.hw_clear:
            return False
        return not cleared or (before & self.hw_needs) == self.hw_needs

    def check(self, stop: StopReply | None) -> list[Event]:
        """Read every watched table again and turn each changed slot into an event; follow
        tables that appeared or went away under the watched slots."""
        self.target.forget()
        hit = next((w.pa for w in self.watched.values() if stop is not None and stop.watch == w.va), None)
        new = self._read(list(self.watched))
        cpu = None
        if hit is not None and self.session.kernel is not None:
            cpu = cpu_state(self.session, self.target, stop.thread if stop else None, self.symbols)
            self.last_cpu = cpu
        old_walk, new_walk = Walkers(self, self.copies), Walkers(self, new)
        changed: list[tuple[int, int, int, int]] = []  # (table, slot, old raw, new raw)
        for pa, w in self.watched.items():
            a, b = self.copies[pa], new[pa]
            lo, hi = w.first * ENTRY_BYTES, (w.last + 1) * ENTRY_BYTES
            if a[lo:hi] == b[lo:hi]:
                continue
            for slot in range(w.first, w.last + 1):
                ra, rb = (struct.unpack_from("<Q", d, slot * ENTRY_BYTES)[0] for d in (a, b))
                if ra != rb:
                    changed.append((pa, slot, ra, rb))
        kernel_slots = [(pa, s) for pa, s, ra, rb in changed if pa == hit and not self._hardware_only(ra, rb)]
        events = []
        now = time.monotonic() - self.began
        for pa, slot, ra, rb in changed:
            if (pa, slot) in kernel_slots:
                source = "kernel"
            elif pa == hit and not kernel_slots:
                source = UNSURE  # the hit's store, or the MMU's: resolve() tells, after one step
            else:
                source = "hardware" if self._hardware_only(ra, rb) else "unseen"
            ea, eb = old_walk.slot(pa, slot), new_walk.slot(pa, slot)
            rec_a, rec_b = (item_record(Row(e, None), self.session.facts.layout) if e else None for e in (ea, eb))
            if rec_a is not None and rec_b is not None:
                status, changes = "changed", self.differ.changes(rec_a, rec_b)
            elif rec_a is not None:
                status, changes = "removed", [Change("kind", entry_label(rec_a), None, f"{entry_label(rec_a)} → none")]
            elif rec_b is not None:
                status, changes = "added", [Change("kind", None, entry_label(rec_b), f"none → {entry_label(rec_b)}")]
            else:
                continue  # none to none: only bits no decode shows
            e = eb or ea
            assert e is not None
            events.append(Event(now, source, cpu if source in ("kernel", UNSURE) else None, status, e.va, e.ref.level,
                                rec_a, rec_b, tuple(changes)))
        self.copies = new
        self._follow(changed, old_walk, new_walk)
        return events

    def _follow(self, changed: list[tuple[int, int, int, int]], old_walk: Walkers, new_walk: Walkers) -> None:
        """Stop watching tables no watched slot points to any more; watch the new ones."""
        for pa, slot, _ra, _rb in changed:
            if pa not in self.watched:
                continue  # dropped with its parent earlier in this loop
            ea, eb = old_walk.slot(pa, slot), new_walk.slot(pa, slot)
            gone = ea.hw.next_table if ea is not None and ea.kind is Kind.TABLE else None
            came = eb.hw.next_table if eb is not None and eb.kind is Kind.TABLE and not new_walk.problem(eb) else None
            if gone == came:
                continue
            if gone is not None and gone in self.watched:
                self._drop(gone)
            if came is not None and came not in self.watched and eb is not None:
                lo, hi = max(self.range[0], eb.va), min(self.range[1], eb.va + eb.size)
                self._watch(came, self.watched[pa].depth + 1, lo, hi)
                todo = [came]
                while todo:
                    t = todo.pop()
                    self.copies.update(self._read([t]))
                    for child, depth, clo, chi in self._children(self.copies, t):
                        if child not in self.watched:
                            self._watch(child, depth, clo, chi)
                            todo.append(child)

    def _drop(self, pa: int) -> None:
        depth = self.watched[pa].depth
        below = [c for c, *_ in self._children(self.copies, pa)] if depth + 1 < len(self.mode.levels) else []
        self._unwatch(pa)
        for child in below:
            if child in self.watched:
                self._drop(child)

    # -- the loop -------------------------------------------------------------------------------
    def run(self, emit: Callable[[Event], None], *, count: int | None, timeout: float | None,
            until: str | None) -> Outcome:
        """Resume the VM and report events until `count` events, `timeout` seconds, an event that
        makes an entry of kind `until` (the VM is then left stopped there) or Ctrl-C."""
        out = Outcome("timeout")
        deadline = None if timeout is None else time.monotonic() + timeout
        idle = 0
        try:
            while True:
                self.target.resume()
                stop = None
                while stop is None:
                    wait = POLL if deadline is None else min(POLL, deadline - time.monotonic())
                    if wait <= 0:
                        break
                    stop = self.target.wait_stop(wait)
                if stop is None:  # the deadline passed
                    stop = self.target.stop()
                    out.reason = "timeout"
                    self._events(self.check(stop), emit, out, count, until)
                    return out
                if stop.kind != "signal":
                    raise WatchError(f"the VM ended while watched ({stop.raw.decode(errors='replace')})")
                out.hits += stop.watch is not None
                events = self.check(stop)
                stuck = False
                if stop.watch is not None and not any(e.source == "kernel" for e in events):
                    stepped, passed, stored_in_step = self.step_over(stop)
                    events = resolve(events, stored_in_step) + stepped
                    stuck = not passed
                idle = idle + 1 if stuck and not events else 0
                if idle >= IDLE_HITS:
                    where = self.last_cpu.function if self.last_cpu and self.last_cpu.function else "an unknown PC"
                    raise WatchError(f"{idle} watchpoint hits in a row changed no entry and could not be stepped past, "
                                     f"the last at {where}: "
                                     "the guest retries a store the stops keep failing (a store-exclusive loop?); "
                                     "the watch ends and removes its watchpoints")
                if self._events(events, emit, out, count, until):
                    return out
        except KeyboardInterrupt:
            out.reason = "interrupted"
            if self.target.running:
                stop = self.target.stop()
                self._events(self.check(stop), emit, out, None, None)
            return out
        finally:
            out.tables = len(self.watched)

    def step_over(self, stop: StopReply) -> tuple[list[Event], bool, bool]:
        """Let the store of a hit that changed no entry happen: take the hit table's watchpoint
        out, single-step the vCPU until a watched entry changes (the store ran: its events, with
        the PC just past it, as for a plain store) or the PC leaves the store's neighbourhood
        (STEP_*: a retry loop is left, or the store wrote what was there), then put it back.
        The events (all the stepping vCPU's stores: other vCPUs stay stopped), whether the vCPU got
        past the store (False: STEP_LIMIT steps did not), and whether the first step stored (the
        hit stopped before its store: what the hit itself found was not its store).

        Why: QEMU stops an atomic read-modify-write before it writes (module docstring), and a
        load/store-exclusive loop whose exclusive store fails retries into the watchpoint; one
        instruction at a time with the watchpoint out, the store completes.  The vCPU steps alone
        with interrupts and timers held off (GdbstubTarget.step), so the steps stay in this code."""
        hit = next((w for w in self.watched.values() if w.va == stop.watch), None)
        if hit is None or stop.thread is None:
            return [], False, False
        start = self._pc(stop.thread)
        self.target.remove_watchpoint(hit.va, hit.length)
        self.suspended.add(hit.pa)
        try:
            for n in range(STEP_LIMIT):
                step = self.target.step(stop.thread)
                if step.kind != "signal":
                    raise WatchError(f"the VM ended while stepped ({step.raw.decode(errors='replace')})")
                events = [replace(e, source="kernel") if e.source == UNSURE else e for e in self.check(stop)]
                pc = self._pc(stop.thread)
                if events or start is None or pc is None or not start - STEP_BEFORE <= pc < start + STEP_AFTER:
                    return events, True, bool(events) and n == 0
            return [], False, False
        finally:
            if hit.pa in self.suspended:  # still watched: back in QEMU
                self.suspended.discard(hit.pa)
                self.target.insert_watchpoint(hit.va, hit.length)

    def _pc(self, thread: str) -> int | None:
        return next(iter(self.target.cpu_registers(thread, self.session.arch.pc_registers).values()), None)

    def _events(self, events: list[Event], emit: Callable[[Event], None], out: Outcome, count: int | None,
                until: str | None) -> bool:
        """Emit events; True when the watch ends here (count reached, or `until` caught)."""
        for event in events:
            emit(event)
            out.events += 1
            out.peak_tables = max(out.peak_tables, len(self.watched))
            if until is not None and kind_matches(event.after, until):
                out.reason, out.caught = "until", event
                self.target.keep_stopped = True
                return True
            if count is not None and out.events >= count:
                out.reason = "count"
                return True
        return False


def resolve(events: list[Event], stored_in_step: bool) -> list[Event]:
    """A hit's access/dirty-only changes (UNSURE) once stepping has told: when the first step made
    the store, the hit stopped before it (an atomic read-modify-write) and they were the MMU's; else
    the hit's store had completed, so a lone one was it, and of several one was (which, unknown)."""
    unsure = [e for e in events if e.source == UNSURE]
    if stored_in_step:
        return [replace(e, source="hardware", cpu=None) if e.source == UNSURE else e for e in events]
    if len(unsure) == 1:
        return [replace(e, source="kernel") if e.source == UNSURE else e for e in events]
    return events


class Walkers:
    """Walks of one moment's table copies, slot by slot."""

    def __init__(self, watcher: Watcher, pages: dict[int, bytes]) -> None:
        self.w = watcher
        self.tables = TableCache(_Copies(pages, watcher.target))
        self.walker = type(watcher.walker)(self.tables, watcher.session.arch, watcher.mode, watcher.session.facts)
        self._path: dict[int, tuple[int, ...]] = {}

    def problem(self, e: Entry) -> bool:
        """Whether a table entry points outside memory (not followed, as the walker reports it)."""
        nt = e.hw.next_table
        depth = e.ref.depth + 1
        return nt is None or not contains(self.w.target.ranges(), nt, self.walker.table_bytes(depth))

    def slots(self, pa: int) -> list[Entry]:
        """The non-none entries of the watched slots of table `pa`."""
        w = self.w.watched[pa]
        return [e for e in (self.slot(pa, s) for s in range(w.first, w.last + 1)) if e is not None]

    def slot(self, pa: int, slot: int) -> Entry | None:
        """The entry in slot `slot` of table `pa` (None when it is none), decoded as a walk does."""
        w = self.w.watched.get(pa)
        if w is None:
            return None
        va = self._va(pa, slot)
        level = self.w.mode.levels[w.depth]
        for e in self.walker.walk(self.w.root.pa, upper=self.w.root.upper, va_range=(va, va + level.span),
                                  tables=True):
            if e.ref.table == pa and e.ref.index == slot:
                return e
        return None

    def _va(self, pa: int, slot: int) -> int:
        """The VA slot `slot` of table `pa` translates."""
        w = self.w.watched[pa]
        return w.base | slot << self.w.mode.levels[w.depth].shift
