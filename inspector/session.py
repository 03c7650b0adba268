"""One inspection session: a target, its architecture and paging modes, and
(when a vmlinux is given) the kernel's own answers, read with the vmlinux's cached
layout (inspector/layout.py, inspector/rawkernel/).

Paging modes and the kernel root come from the CPU's paging registers (gdbstub)
or, for targets without registers (vmcores, /proc/kcore, QMP), from the kernel's
VMCOREINFO.  Commands get a Session from `start()` and ask it for roots and
walkers; they never know which target is underneath.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from ptinspect.archs import get_arch
from ptinspect.archs.common import Arch, Fact, KernelFacts, Kind, PagingMode, vmcoreinfo_int
from ptinspect.archs.versions import release_layout

from . import vmlinux as vml
from .devmem import SOURCE as DEVMEM_SOURCE
from .devmem import device_private_ranges
from .entry import ENTRY_BYTES
from .facts import read_config_file
from .kernel import KernelError, Vma
from .layout import KernelLayout, LayoutError, layout_for, program_layout
from .rawkernel import RawKernel
from .reader import PhysReader, ReadError, TableCache
from .vmcoreinfo import VmcoreinfoError, check_vmlinux, parse
from .walker import Walker

MIN_PAGE_SHIFT = 12  # the smallest page of every mode: kernel VA translations are cached per 4 KiB
MIN_PAGE_MASK = (1 << MIN_PAGE_SHIFT) - 1


class Target(PhysReader, Protocol):
    """What every target serves: physical memory, its RAM, paging registers (may be none)."""

    arch: str
    source: str

    def set_ram(self, ranges: list[tuple[int, int]]) -> None: ...
    def read_registers(self) -> dict[str, int]: ...
    def close(self) -> None: ...


class SessionError(Exception):
    """A user-facing failure to set up an inspection."""


class KernelVaError(SessionError, ReadError):
    """A kernel virtual address the kernel's own tables do not map."""


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
    registers: dict[str, int]  # paging registers; empty when modes come from VMCOREINFO
    source: str
    vmcoreinfo: bytes | None = None  # the kernel's VMCOREINFO text, once known
    facts: KernelFacts = field(default_factory=KernelFacts)
    kernel: RawKernel | None = None
    kernel_root_pa: int | None = None  # the upper-half root once known (proven or from VMCOREINFO)
    # Device-private memory (inspector/devmem.py), once the kernel is readable; else why not known.
    device_private: list[tuple[int, int]] | None = None
    device_private_unknown: str = "the kernel is not readable (give --vmlinux)"
    tables: TableCache = field(init=False)
    _parsed: tuple[bytes, dict[str, str]] | None = field(default=None, init=False, repr=False)
    _pages: dict[tuple[int, int], int] = field(default_factory=dict, init=False, repr=False)  # (root, va page) -> pa

    def __post_init__(self) -> None:
        self.tables = TableCache(self.reader)

    @property
    def numbers(self) -> dict[str, str]:
        """VMCOREINFO as key -> value text (empty when not known)."""
        if self.vmcoreinfo is None:
            return {}
        if self._parsed is None or self._parsed[0] is not self.vmcoreinfo:
            self._parsed = (self.vmcoreinfo, parse(self.vmcoreinfo))
        return self._parsed[1]

    def mode(self, upper: bool) -> PagingMode:
        """The paging mode of a half: from the registers when the target has them, else VMCOREINFO."""
        try:
            if self.registers:
                return self.arch.mode_from_registers({**self.registers, "half": int(upper)})
            if self.vmcoreinfo is not None:
                return self.arch.mode_from_vmcoreinfo(self.numbers, upper)
        except ValueError as exc:
            origin = "registers" if self.registers else "VMCOREINFO"
            raise SessionError(f"cannot derive the paging mode from the {origin}: {exc}") from None
        raise SessionError(f"{self.source} gives neither paging registers nor VMCOREINFO")

    def walker(self, mode: PagingMode) -> Walker:
        return Walker(self.tables, self.arch, mode, self.facts)

    @property
    def ram_known(self) -> bool:
        """Whether the reader's ranges() are the target's RAM; live targets know it only from
        the kernel (memblock), dumps from their own headers."""
        return bool(getattr(self.reader, "ram_known", True))

    def root_table(self, root: Root) -> bytes:
        """The root's whole table (RefusedRead when the target says it cannot be read)."""
        return self.tables.table(root.pa, root.mode.levels[0].entries * ENTRY_BYTES)

    def register_root(self, upper: bool) -> int:
        """The root the target selects: for the upper half the proven (gdbstub) or VMCOREINFO
        kernel root, else what the paging registers point at."""
        if upper and self.kernel_root_pa is not None:
            return self.kernel_root_pa
        if not self.registers:
            raise SessionError(f"{self.source} has no paging registers: give --root PA, --kernel or --pid")
        try:
            return self.arch.root_candidates(self.registers, upper)[0]
        except ValueError as exc:
            raise SessionError(str(exc)) from None

    def translate_kernel_va(self, va: int) -> int:
        """Physical address of a kernel virtual address, through our own walk of the kernel root
        (each 4 KiB page walked once: the tables do not change while the target is stopped)."""
        root = self.register_root(True)
        key = (root, va >> MIN_PAGE_SHIFT)
        page = self._pages.get(key)
        if page is None:
            path = self.walker(self.mode(True)).translate(root, va, upper=True)
            leaf = path[-1]
            pa = leaf.phys(va)
            if pa is None:
                raise KernelVaError(f"kernel address {va:#x} is not mapped ({leaf.hw.kind.value} at {leaf.ref.level})")
            page = self._pages[key] = pa - (va & MIN_PAGE_MASK)
        return page + (va & MIN_PAGE_MASK)

    def read_kernel_va(self, va: int, size: int) -> bytes:
        """Read kernel virtual memory page by page through our own translation."""
        out = bytearray()
        while len(out) < size:
            cur = va + len(out)
            n = min(size - len(out), 4096 - (cur & 0xFFF))
            out += self.reader.read(self.translate_kernel_va(cur), n)
        return bytes(out)

    def root(self, *, pid: int | None = None, comm: str | None = None, kernel: bool = False,
             root_pa: int | None = None, upper: bool = False, mm: int | None = None) -> Root:
        """The root a command asked for (`mm`: the address of an mm_struct, as a drgn user holds it)."""
        if root_pa is not None:
            return Root(root_pa, self.mode(upper), upper, f"root {root_pa:#x}")
        if pid is None and comm is None and not kernel and mm is None:
            raise SessionError("say what to walk: --pid N, --comm NAME, --kernel or --root PA")
        if self.kernel is None:
            if kernel:
                pa = self.register_root(True)
                origin = "registers" if self.registers else f"VMCOREINFO ({self.arch.kernel_root_symbol})"
                return Root(pa, self.mode(True), True, f"kernel root from {origin} {pa:#x}")
            raise SessionError("--pid and --comm need the kernel's debug info: give --vmlinux")
        try:
            if kernel:
                mm = self.kernel.init_mm()
                label = "init_mm"
                vmas: tuple[Vma, ...] = ()
            else:
                if mm is None:
                    task = self.kernel.find_task(pid=pid, comm=comm)
                    mm = self.kernel.task_mm(task)
                    label = f"pid {task.pid} ({task.comm})"
                else:
                    label = f"mm_struct {mm:#x}"
                try:
                    vmas = tuple(self.kernel.vmas(mm))
                    self.kernel.pgd(mm)
                except KernelError as exc:
                    raise SessionError(unreadable_mm(label, mm, exc)) from None
            pa = self.translate_kernel_va(self.kernel.pgd(mm))
        except KernelError as exc:
            raise SessionError(str(exc)) from None
        except ReadError as exc:
            raise SessionError(f"reading the kernel's {label_of(pid, comm, kernel, mm)} failed: {exc}") from None
        upper = kernel and self.arch.split_roots
        return Root(pa, self.mode(upper), upper, label, vmas, process=not kernel)


def unreadable_mm(label: str, mm: int, exc: KernelError) -> str:
    """Why a process's mm (its mm_struct, VMAs) cannot be read, and what can still be done."""
    from .vmcorefile import ExcludedPage  # only dumps exclude pages: a live session need not load their reader

    text = f"cannot read the mm of {label} (mm_struct at {mm:#x}): {exc}"
    if isinstance(exc.__cause__, ExcludedPage):
        text += ("; the dump's filter excluded that memory (makedumpfile -d), so this dump does not say where "
                 "the process's page tables are: walk them with --root PA if the root is known from elsewhere "
                 "(a snapshot of the process, or a dump made with a lower dump level)")
    return text


def label_of(pid: int | None, comm: str | None, kernel: bool, mm: int | None = None) -> str:
    if mm is not None:
        return f"mm_struct {mm:#x}"
    return "init_mm" if kernel else f"task {pid if pid is not None else repr(comm)}"


def start(target: Target, vmlinux: Path | None, config_file: Path | None) -> Session:
    """A session on `target`; with a vmlinux, the kernel identified and readable.

    A target that carries VMCOREINFO (vmcores, /proc/kcore, QMP with -device
    vmcoreinfo) states its modes and kernel root itself; any other target is
    identified from its paging registers, as a gdbstub is.  Once the kernel is
    known, the target's RAM is the kernel's memblock.memory.
    """
    arch = get_arch(target.arch)
    vmcoreinfo = getattr(target, "vmcoreinfo", None)  # dump targets, /proc/kcore, QMP with -device vmcoreinfo
    if vmcoreinfo is not None:
        session = Session(target, arch, {}, target.source, vmcoreinfo=vmcoreinfo)
        _kernel_root_from_vmcoreinfo(session)
        if vmlinux is not None:
            attach_dumped_kernel(session, vmlinux, config_file)
        else:  # the release (hence the layout) is the kernel's own statement; config facts stay unknown
            release = session.numbers["OSRELEASE"]
            try:
                session.facts = KernelFacts(layout=release_layout(release, arch.name), release=release,
                                            facts=_vmcoreinfo_facts(session))
            except ValueError as exc:
                raise SessionError(f"{target.source}: {exc}") from None
    else:
        session = Session(target, arch, target.read_registers(), target.source)
        if vmlinux is not None:
            attach_kernel(session, vmlinux, config_file)
    _set_ram(session)
    return session


def _set_ram(session: Session) -> None:
    """Once the kernel is known: the target's RAM (memblock.memory) and, for validate, the device-private ranges."""
    if session.kernel is not None:
        try:
            session.reader.set_ram(session.kernel.ram_ranges())  # type: ignore[attr-defined]
        except (KernelError, SessionError, ReadError) as exc:
            raise SessionError(f"cannot read the kernel's memblock.memory (its map of RAM): {exc}") from None
        try:  # a check's input, not the walk's: a failure only leaves it unknown, with the reason
            session.device_private = device_private_ranges(session.kernel)
        except (KernelError, ReadError) as exc:
            session.device_private_unknown = f"cannot read {DEVMEM_SOURCE}: {exc}"


def _kernel_root_from_vmcoreinfo(session: Session) -> None:
    """The kernel root: the physical address of SYMBOL(swapper_pg_dir) (x86: init_top_pgt)."""
    numbers = session.numbers
    try:
        symbol = vmcoreinfo_int(numbers, f"SYMBOL({session.arch.kernel_root_symbol})")
        session.kernel_root_pa = session.arch.kernel_image_pa(numbers, symbol)
        session.mode(True)  # every mode the kernel can use must be derivable up front
    except ValueError as exc:
        raise SessionError(f"{session.source}: VMCOREINFO does not give the kernel's page tables: {exc}") from None


def _check_arch(session: Session, vmlinux: Path, what: str) -> None:
    arch_of_file = vml.machine(vmlinux)
    if arch_of_file != session.arch.name:
        raise SessionError(f"{vmlinux} is an {arch_of_file} kernel but {what} is {session.arch.name}")


def _check_vmlinux(session: Session, vmlinux: Path, what: str) -> None:
    """That the vmlinux is the kernel the session's VMCOREINFO describes."""
    try:
        check_vmlinux(session.numbers, vmlinux, what)
    except VmcoreinfoError as exc:
        raise SessionError(str(exc)) from None


def attach_dumped_kernel(session: Session, vmlinux: Path, config_file: Path | None = None) -> None:
    """Read the kernel a VMCOREINFO target describes, after checking that the vmlinux is that
    kernel (architecture, release, build ID); its relocation is VMCOREINFO's KERNELOFFSET."""
    what = f"the kernel in the {session.source} target"
    _check_arch(session, vmlinux, what)
    _check_vmlinux(session, vmlinux, what)
    try:
        offset = vmcoreinfo_int(session.numbers, "KERNELOFFSET")
    except ValueError:
        offset = 0  # kernels built without RANDOMIZE_BASE write no KERNELOFFSET: not relocated
    _set_kernel(session, vmlinux, offset, config_file)


def _set_kernel(session: Session, vmlinux: Path, kaslr_offset: int, config_file: Path | None) -> None:
    """The kernel's answers through the vmlinux's cached layout, and its facts."""
    try:
        layout = layout_for(vmlinux)
    except LayoutError as exc:
        raise SessionError(str(exc)) from None
    _use_layout(session, layout, kaslr_offset, config_file)


def attach_program_kernel(session: Session, prog: Any, config_file: Path | None = None) -> None:
    """Read the kernel of a VMCOREINFO session with the layout of the drgn Program it reads from
    (the debug info that program loaded, which drgn matched to the kernel itself); RAM becomes the
    kernel's memblock.memory as in start()."""
    try:
        layout = program_layout(prog, session.arch.name)
    except LayoutError as exc:
        raise SessionError(str(exc)) from None
    _use_layout(session, layout, 0, config_file)
    _set_ram(session)


def _use_layout(session: Session, layout: KernelLayout, kaslr_offset: int, config_file: Path | None) -> None:
    session.kernel = RawKernel(layout, session.read_kernel_va, kaslr_offset, session.arch.name)
    try:
        config = read_config_file(config_file) if config_file else None
        facts = session.kernel.facts(config, f"config file {config_file}")
    except (KernelError, ReadError, ValueError) as exc:
        raise SessionError(str(exc)) from None
    session.facts = replace(facts, facts={**_vmcoreinfo_facts(session), **facts.facts})


def _vmcoreinfo_facts(session: Session) -> dict[str, Fact]:
    """Facts the kernel states in VMCOREINFO: NUMBER(MAX_PHYSMEM_BITS) (kernel/vmcore_info.c,
    crash_core.c before 6.6), the runtime value where it depends on the CPU or the boot (x86 LA57,
    arm64 LPA2 kernels before 6.14 without LPA2 hardware)."""
    if session.vmcoreinfo is None:
        return {}
    try:
        bits = vmcoreinfo_int(session.numbers, "NUMBER(MAX_PHYSMEM_BITS)")
    except ValueError:
        return {}
    return {"MAX_PHYSMEM_BITS": Fact(bits, "vmcoreinfo: NUMBER(MAX_PHYSMEM_BITS)")}


def attach_kernel(session: Session, vmlinux: Path, config_file: Path | None = None) -> None:
    """Identify the kernel in a live session (VMCOREINFO from guest memory) and read it.

    Each candidate kernel root from the registers is tried; the one through which
    the vmlinux's VMCOREINFO is found is kept for the session's kernel walks.
    """
    _check_arch(session, vmlinux, "the target")
    if not session.registers:
        raise SessionError(f"{session.source} gives no paging registers and no VMCOREINFO: the kernel cannot be found")
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
    session.vmcoreinfo = info
    _check_vmlinux(session, vmlinux, "the running kernel")
    _set_kernel(session, vmlinux, offset, config_file)


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
    except (SessionError, ReadError) as exc:
        raise SessionError(f"cannot find VMCOREINFO in guest memory ({exc}); "
                           f"is {vmlinux} the running kernel?") from None
    if not ptr or not 0 < size <= 4096:
        raise SessionError("the kernel has no VMCOREINFO yet (vmcoreinfo_data is empty); "
                           "is it still booting, or is this vmlinux from another build?")
    info = session.read_kernel_va(ptr, size)
    if not info.startswith(b"OSRELEASE="):
        raise SessionError("guest memory at vmcoreinfo_data holds no VMCOREINFO: "
                           "the vmlinux does not match the running kernel (or KASLR was not resolved)")
    return info
