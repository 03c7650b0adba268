"""drgn's own view of a kernel, the independent reference the integration tests compare
ptinspect with (ptinspect itself reads the kernel through inspector/rawkernel/).

open_program() gives drgn a target's physical memory (drgn's custom-target API) and the
vmlinux; Kernel answers the questions ptinspect asks (release, facts, RAM, tasks, VMAs) with
drgn's helpers.  On riscv64, where drgn 0.3.0 has no page-table walker, serve_kernel_va()
serves kernel virtual addresses through the session's own walk.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ptinspect.archs.common import Fact, KernelFacts
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.kernel import KernelError, Vma, derive_remaining, drgn_program
from ptinspect.inspector.reader import PhysReader, ReadError
from ptinspect.inspector.session import Session, SessionError

# drgn 0.3.0 walks kernel page tables for x86-64 and arm64 (libdrgn has no riscv64 page-table
# iterator): on riscv64 drgn's reads of kernel virtual addresses go through our own walk.
OWN_KERNEL_VA = frozenset({"riscv64"})


def serve_kernel_va(session: Session, prog) -> None:
    """Where drgn cannot translate kernel addresses, give it the kernel half as one virtual
    segment read through the session's own walk of the kernel root."""
    if session.arch.name not in OWN_KERNEL_VA:
        return
    import drgn

    mode = session.mode(True)
    start = session.arch.canonical(mode, 1 << (mode.va_bits - 1), True)

    def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
        try:
            return session.read_kernel_va(address, count)
        except (SessionError, ReadError) as exc:
            raise drgn.FaultError(str(exc), address) from None

    prog.add_memory_segment(start, (1 << 64) - start, read_fn)


def drgn_kernel(session: Session, vmlinux: Path) -> Kernel:
    """drgn on a started session's target memory and VMCOREINFO."""
    assert session.vmcoreinfo is not None
    prog = open_program(session.reader, session.arch.name, vmlinux, session.vmcoreinfo,
                        setup=lambda p: serve_kernel_va(session, p))
    return Kernel(prog, session.arch.name)


def open_program(reader: PhysReader, arch: str, vmlinux: Path, vmcoreinfo: bytes,
                 setup: Callable[[Any], None] | None = None):
    """A drgn Program for a live or dumped kernel whose memory `reader` serves;
    `setup(prog)` runs before the debug info is loaded (which already reads memory)."""
    prog = drgn_program(arch)
    for start, end in reader.ranges():

        def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
            return reader.read(address, count)

        prog.add_memory_segment(start, end - start, read_fn, physical=True)
    try:
        prog.set_linux_kernel_custom(vmcoreinfo, True)
        if setup is not None:
            setup(prog)
        prog.load_debug_info([str(vmlinux)])
    except Exception as exc:  # drgn raises several types; all mean the same to a user
        raise KernelError(f"drgn could not load {vmlinux}: {exc}") from None
    return prog


class Kernel:
    """Questions about a kernel, answered by drgn."""

    def __init__(self, prog, arch: str) -> None:
        self.prog = prog
        self.arch = arch

    @property
    def release(self) -> str:
        return self.prog["init_uts_ns"].name.release.string_().decode()

    def _symbol(self, name: str) -> bool:
        try:
            self.prog.symbol(name)
            return True
        except LookupError:
            return False

    def facts(self, config: dict[str, bool] | None = None, config_source: str = "config") -> KernelFacts:
        """KernelFacts: release, config facts and runtime facts, each with its source.

        Config facts come from `config` when given; MAX_SWAPFILES from the
        DWARF bound of swap_info[] (mm/swapfile.c); CONFIG_MEMORY_FAILURE and
        CONFIG_MIGRATION from the presence of memory_failure() and migrate_pages();
        CONFIG_DEVICE_PRIVATE (and, 5.19 to 6.1, CONFIG_PTE_MARKER) from the remainder
        of the MAX_SWAPFILES sum (include/linux/swap.h) when no config says it.
        """
        release = self.release
        layout = release_layout(release, self.arch)
        facts: dict[str, Fact] = {}
        if config:
            for name, value in config.items():
                facts[name] = Fact(value, config_source)
        max_swapfiles = self._max_swapfiles()
        if max_swapfiles is not None:
            facts["MAX_SWAPFILES"] = Fact(max_swapfiles, "debuginfo: bound of swap_info[]")
        for option, symbol in (("CONFIG_MEMORY_FAILURE", "memory_failure"), ("CONFIG_MIGRATION", "migrate_pages")):
            if option not in facts:
                facts[option] = Fact(self._symbol(symbol), f"debuginfo: symbol {symbol} {'present' if self._symbol(symbol) else 'absent'}")
        if max_swapfiles is not None:
            facts.update(derive_remaining(layout, facts, max_swapfiles))
        try:
            ad = bool(self.prog["swap_migration_ad_supported"].value_())
            facts["swap_migration_ad_supported"] = Fact(ad, "debuginfo: swap_migration_ad_supported")
        except LookupError:
            pass  # no such variable in this kernel (before 6.1): the fact stays unknown
        facts.update(self._swap_devices())
        if self.arch == "x86_64":
            try:
                bits = int(self.prog["boot_cpu_data"].x86_phys_bits)
                facts["phys_addr_bits"] = Fact(bits, "debuginfo: boot_cpu_data.x86_phys_bits")
            except Exception:  # drgn: LookupError, FaultError
                pass
        return KernelFacts(layout=layout, release=release, facts=facts)

    def _swap_devices(self) -> dict[str, Fact]:
        """"nr_swapfiles" and, per SWP_USED device, "swap_info[N].max": its size in pages, the
        bound get_swap_device() checks offsets against (mm/swapfile.c 6.1:55,1285 / 7.2:67,1891;
        SWP_USED, include/linux/swap.h 6.1:201 / 7.2:204).  Empty when drgn cannot read them."""
        try:
            n = int(self.prog.variable("nr_swapfiles", "mm/swapfile.c").value_())
            out = {"nr_swapfiles": Fact(n, "debuginfo: nr_swapfiles")}
            for i in range(n):
                si = self.prog["swap_info"][i]
                if si and int(si.flags) & 1:  # SWP_USED
                    out[f"swap_info[{i}].max"] = Fact(int(si.max), f"debuginfo: swap_info[{i}]->max")
            return out
        except Exception:  # drgn: LookupError, FaultError
            return {}

    def _max_swapfiles(self) -> int | None:
        try:
            return self.prog.variable("swap_info", "mm/swapfile.c").type_.length
        except (LookupError, ValueError):
            try:
                return self.prog["swap_info"].type_.length
            except (LookupError, ValueError):
                return None

    def ram_ranges(self) -> list[tuple[int, int]]:
        """Physical memory from memblock.memory (the kernel's own map of RAM)."""
        mem = self.prog["memblock"].memory
        return [
            (int(r.base), int(r.base) + int(r.size))
            for r in (mem.regions[i] for i in range(int(mem.cnt)))
        ]

    def find_task(self, pid: int | None = None, comm: str | None = None):
        from drgn.helpers.linux.pid import find_task, for_each_task

        if pid is not None:
            task = find_task(self.prog, pid)
            if not task:
                raise KernelError(f"no task with pid {pid}")
            return task
        matches = [t for t in for_each_task(self.prog) if t.comm.string_().decode() == comm and t.mm]
        if not matches:
            raise KernelError(f"no user task named {comm!r}")
        if len(matches) > 1:
            pids = ", ".join(str(int(t.pid)) for t in matches)
            raise KernelError(f"{len(matches)} tasks are named {comm!r} (pids {pids}); pick one with --pid")
        return matches[0]

    def pgd_phys(self, mm) -> int:
        """Physical address of an mm's PGD (__pa of mm->pgd)."""
        from drgn.helpers.linux.mm import virt_to_phys

        return int(virt_to_phys(mm.pgd))

    def task_mm(self, task):
        mm = task.mm
        if not mm:
            raise KernelError(f"task {int(task.pid)} ({task.comm.string_().decode()}) is a kernel thread: it has no mm")
        return mm

    def init_mm(self):
        return self.prog["init_mm"].address_of_()

    def vmas(self, mm) -> Iterator[Vma]:
        from drgn.helpers.linux.mm import for_each_vma, vma_name

        for vma in for_each_vma(mm):
            try:
                name = vma_name(vma).decode(errors="replace")
            except Exception:
                name = ""
            yield Vma(int(vma.vm_start), int(vma.vm_end), int(vma.vm_flags), name or "[anon]")





# drgn's struct pt_regs members and the gdbstub's names of the same registers (arch/*/include/asm/ptrace.h;
# QEMU's gdb XML: i386-64bit.xml, aarch64-core.xml, riscv-64bit-cpu.xml)
PT_REGS = {
    "x86_64": {"r15": "r15", "r14": "r14", "r13": "r13", "r12": "r12", "bp": "rbp", "bx": "rbx", "r11": "r11",
               "r10": "r10", "r9": "r9", "r8": "r8", "ax": "rax", "cx": "rcx", "dx": "rdx", "si": "rsi",
               "di": "rdi", "ip": "rip", "cs": "cs", "flags": "eflags", "sp": "rsp", "ss": "ss"},
    "arm64": {**{f"regs[{i}]": f"x{i}" for i in range(31)}, "sp": "sp", "pc": "pc", "pstate": "cpsr"},
    "riscv64": {"epc": "pc", "ra": "ra", "sp": "sp", "gp": "gp", "tp": "tp", "s0": "fp", "s1": "s1",
                **{f"t{i}": f"t{i}" for i in range(7)}, **{f"a{i}": f"a{i}" for i in range(8)},
                **{f"s{i}": f"s{i}" for i in range(2, 12)}},
}


def drgn_callers(prog, session: Session, thread: str) -> list[str]:
    """The functions on a stopped vCPU's kernel stack as drgn (PROG, on the session's target) unwinds
    it with its own ORC, DWARF CFI or frame-pointer reader, from that vCPU's registers as a struct pt_regs: the function it is in
    first, then each caller, named by the ELF symbol of the call (as ptinspect names them), inlined
    frames folded into the function they are in."""
    import drgn

    members = PT_REGS[session.arch.name]
    regs = session.reader.cpu_registers(thread, tuple(members.values()))  # type: ignore[attr-defined]
    pt_regs = prog.type("struct pt_regs")
    raw = bytearray(pt_regs.size)
    for member, name in members.items():
        offset = drgn.offsetof(pt_regs, member)
        raw[offset:offset + 8] = regs[name].to_bytes(8, "little")
    names: list[str] = []
    for frame in prog.stack_trace(drgn.Object.from_bytes_(prog, pt_regs, bytes(raw))):
        if not frame.pc:
            break  # drgn's last frame of an idle task's stack: no caller
        try:
            name = prog.symbol(frame.pc - (0 if frame.interrupted else 1)).name
        except LookupError:
            break  # user space: the end of the kernel's part
        if not names or names[-1] != name:
            names.append(name)
    return names
