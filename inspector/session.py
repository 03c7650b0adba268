"""One inspection session: a target, its architecture and paging modes, and
(when a vmlinux is given) the kernel's own answers through drgn.

Commands build a Session from their options and ask it for roots and walkers;
they never know which transport is underneath.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

from archs import get_arch
from archs.common import Arch, Kind, KernelFacts, PagingMode

from . import vmlinux as vml
from .facts import read_config_file
from .kernel import Kernel, KernelError, Vma, open_program
from .reader import PhysReader, TableCache
from .walker import Walker


class SessionError(Exception):
    """A user-facing failure to set up an inspection."""


@dataclass(frozen=True)
class Root:
    """A table root to walk: its physical address, mode, half, and what it is."""

    pa: int
    mode: PagingMode
    upper: bool
    label: str  # "pid 123 (workload)", "init_mm", "root 0x...", ...
    vmas: tuple[Vma, ...] = ()
    process: bool = False  # a process's mm: its kernel half is the kernel's


@dataclass
class Session:
    reader: PhysReader
    arch: Arch
    registers: dict[str, int]
    source: str
    facts: KernelFacts = field(default_factory=KernelFacts)
    kernel: Kernel | None = None
    kernel_root_pa: int | None = None  # the upper-half root once proven (attach_kernel)
    tables: TableCache = field(init=False)

    def __post_init__(self) -> None:
        self.tables = TableCache(self.reader)

    def mode(self, upper: bool) -> PagingMode:
        try:
            return self.arch.mode_from_registers({**self.registers, "half": int(upper)})
        except ValueError as exc:
            raise SessionError(f"cannot derive the paging mode from the registers: {exc}") from None

    def walker(self, mode: PagingMode) -> Walker:
        return Walker(self.tables, self.arch, mode, self.facts)

    def register_root(self, upper: bool) -> int:
        """The root the paging registers select (the proven kernel root for the upper half)."""
        if upper and self.kernel_root_pa is not None:
            return self.kernel_root_pa
        try:
            return self.arch.root_candidates(self.registers, upper)[0]
        except ValueError as exc:
            raise SessionError(str(exc)) from None

    def translate_kernel_va(self, va: int) -> int:
        """Physical address of a kernel virtual address, through our own walk of the kernel root."""
        mode = self.mode(True)
        path = self.walker(mode).translate(self.register_root(True), va, upper=True)
        leaf = path[-1]
        pa = leaf.phys(va)
        if pa is None:
            raise SessionError(f"kernel address {va:#x} is not mapped ({leaf.hw.kind.value} at {leaf.ref.level})")
        return pa

    def read_kernel_va(self, va: int, size: int) -> bytes:
        """Read kernel virtual memory page by page through our own translation."""
        out = bytearray()
        while len(out) < size:
            cur = va + len(out)
            n = min(size - len(out), 4096 - (cur & 0xFFF))
            out += self.reader.read(self.translate_kernel_va(cur), n)
        return bytes(out)

    def root(self, *, pid: int | None = None, comm: str | None = None, kernel: bool = False,
             root_pa: int | None = None, upper: bool = False) -> Root:
        """The root a command asked for."""
        if root_pa is not None:
            return Root(root_pa, self.mode(upper), upper, f"root {root_pa:#x}")
        if pid is None and comm is None and not kernel:
            raise SessionError("say what to walk: --pid N, --comm NAME, --kernel or --root PA")
        if self.kernel is None:
            if kernel:
                pa = self.register_root(True)
                return Root(pa, self.mode(True), True, f"kernel root from registers {pa:#x}")
            raise SessionError("--pid and --comm need the kernel's debug info: give --vmlinux")
        try:
            if kernel:
                mm = self.kernel.init_mm()
                label = "init_mm"
                vmas: tuple[Vma, ...] = ()
            else:
                task = self.kernel.find_task(pid=pid, comm=comm)
                mm = self.kernel.task_mm(task)
                label = f"pid {int(task.pid)} ({task.comm.string_().decode()})"
                vmas = tuple(self.kernel.vmas(mm))
            pa = self.translate_kernel_va(int(mm.pgd))
        except KernelError as exc:
            raise SessionError(str(exc)) from None
        upper = kernel and self.arch.split_roots
        return Root(pa, self.mode(upper), upper, label, vmas, process=not kernel)


def attach_kernel(session: Session, vmlinux: Path, config_file: Path | None = None) -> None:
    """Identify the kernel in a live session (VMCOREINFO from guest memory) and open drgn on it.

    Each candidate kernel root from the registers is tried; the one through which
    the vmlinux's VMCOREINFO is found is kept for the session's kernel walks.
    """
    arch_of_file = vml.machine(vmlinux)
    if arch_of_file != session.arch.name:
        raise SessionError(f"{vmlinux} is an {arch_of_file} kernel but the target is {session.arch.name}")
    problem = "no root candidate"
    for root in session.arch.root_candidates(session.registers, True):
        session.kernel_root_pa = root
        session.tables = TableCache(session.reader)
        info = None
        try:
            offsets = dict.fromkeys((kaslr_offset(session, vmlinux), 0))  # the anchor may have moved
        except SessionError as exc:
            problem = str(exc)
            continue
        for offset in offsets:
            try:
                info = find_vmcoreinfo(session, vmlinux, offset)
                break
            except SessionError as exc:
                problem = str(exc)
        if info is not None:
            break
    else:
        session.kernel_root_pa = None
        raise SessionError(problem)
    release = vml.release(vmlinux)
    if f"OSRELEASE={release}\n".encode() not in info:
        raise SessionError(f"{vmlinux} is {release}, but the running kernel's VMCOREINFO says otherwise: "
                           "give the vmlinux of the kernel that is running")
    try:
        prog = open_program(session.reader, session.arch.name, vmlinux, info)
        session.kernel = Kernel(prog, session.arch.name)
        config = read_config_file(config_file) if config_file else None
        session.facts = session.kernel.facts(config, f"config file {config_file}")
    except KernelError as exc:
        raise SessionError(str(exc)) from None


def kaslr_offset(session: Session, vmlinux: Path) -> int:
    """The kernel image's relocation: anchor register minus its symbol's link address,
    or (x86) the first mapped page of the kernel-text region minus _text."""
    anchor = session.arch.kaslr_anchor
    if anchor is not None:
        reg, sym = anchor
        if reg in session.registers:
            return session.registers[reg] - vml.symbol(vmlinux, sym)
    region = session.arch.kernel_text_region
    if region is None:
        return 0
    mode = session.mode(True)
    walker = session.walker(mode)
    for entry in walker.walk(session.register_root(True), upper=True, va_range=region):
        if entry.kind is Kind.PRESENT:
            return entry.va - (vml.symbol(vmlinux, "_text") & ~(entry.size - 1))
    raise SessionError("no kernel text is mapped in the kernel root: is this a Linux kernel?")


def find_vmcoreinfo(session: Session, vmlinux: Path, offset: int) -> bytes:
    """The VMCOREINFO text: vmcoreinfo_data / vmcoreinfo_size (kernel/vmcore_info.c)."""
    try:
        ptr = struct.unpack("<Q", session.read_kernel_va(vml.symbol(vmlinux, "vmcoreinfo_data") + offset, 8))[0]
        size = struct.unpack("<Q", session.read_kernel_va(vml.symbol(vmlinux, "vmcoreinfo_size") + offset, 8))[0]
    except SessionError as exc:
        raise SessionError(f"cannot find VMCOREINFO in guest memory ({exc}); is {vmlinux} the running kernel?") from None
    if not ptr or not 0 < size <= 4096:
        raise SessionError("the kernel has no VMCOREINFO yet (vmcoreinfo_data is empty); "
                           "is it still booting, or is this vmlinux from another build?")
    info = session.read_kernel_va(ptr, size)
    if not info.startswith(b"OSRELEASE="):
        raise SessionError("guest memory at vmcoreinfo_data holds no VMCOREINFO: "
                           "the vmlinux does not match the running kernel (or KASLR was not resolved)")
    return info
