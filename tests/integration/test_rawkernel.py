"""RawKernel (cached layout, no drgn) against drgn on the five test kernels, one boot each: the
same release, facts, RAM, every task, the workload's, its fork child's and init's VMAs with
names, init_mm and the PGDs, and the same error messages; with the time each takes.

These fail, never skip, when QEMU or a kernel image is missing: run the README's setup.
"""
from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.facts import read_config_file
from ptinspect.inspector.kernel import KernelError
from ptinspect.inspector.layout import layout_for
from ptinspect.inspector.rawkernel import SOURCE, RawKernel
from ptinspect.inspector.session import Session, start
from ptinspect.inspector.targets.gdbstub import GdbstubTarget
from ptinspect.inspector.vm.images import KernelImage, ensure_image, image_for
from ptinspect.inspector.vm.manifest import parse
from ptinspect.inspector.vm.ops import request
from ptinspect.inspector.vm.state import VM
from ptinspect.inspector.watch import Symbols, cpu_state

from .drgn_view import Kernel, drgn_callers, drgn_kernel
from .gdb_view import gdb_callers
from .kernels import IDS, IMAGES

pytestmark = pytest.mark.integration

ROUNDS = 3  # timing rounds; the best of each is reported
VM_SHARED, VM_MAYSHARE = 0x08, 0x80  # include/linux/mm.h (DECLARE_VMA_BIT(SHARED, 3), MAYSHARE 7 in 6.18+)


def error_of(call: Callable[[], object]) -> str:
    with pytest.raises(KernelError) as info:
        call()
    return str(info.value)


def vma_tuples(vmas) -> list[tuple[int, int, int, str]]:
    return [(v.start, v.end, v.flags, v.name) for v in vmas]


def maps_vmas(lines: tuple[str, ...]) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, name) of /proc/PID/maps lines ("start-end perms offset dev inode   name")."""
    out = []
    for line in lines:
        fields = line.split(None, 5)
        start, end = (int(x, 16) for x in fields[0].split("-"))
        out.append((start, end, fields[1], fields[5] if len(fields) > 5 else ""))
    return out


def queries(kernel: Kernel | RawKernel, config: dict[str, bool], pid: int) -> int:
    """What `dump --pid` asks of the kernel: release, facts, RAM, the task, its VMAs and PGD."""
    _ = kernel.release
    kernel.facts(config, "config")
    kernel.ram_ranges()
    mm = kernel.task_mm(kernel.find_task(pid=pid))
    list(kernel.vmas(mm))
    return int(mm.pgd) if isinstance(kernel, Kernel) else kernel.pgd(mm)


def timings(session: Session, image: KernelImage, config: dict[str, bool], pid: int) -> dict[str, float]:
    """Best-of-ROUNDS seconds: RawKernel with a warm layout cache vs drgn's load_debug_info and the
    same queries, both over the session's (warm) gdbstub reader; and RawKernel's reads (how many,
    how long: Session.read_kernel_va translates each through ptinspect's own kernel walk)."""
    arch = session.arch.name
    kaslr = int(session.numbers["KERNELOFFSET"], 16)
    reads = [0, 0.0]

    def counted(va: int, size: int) -> bytes:
        began = time.perf_counter()
        data = session.read_kernel_va(va, size)
        reads[0] += 1
        reads[1] += time.perf_counter() - began
        return data

    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        began = time.perf_counter()
        layout = layout_for(image.vmlinux)
        loaded = time.perf_counter()
        reads[:] = [0, 0.0]
        raw_pgd = queries(RawKernel(layout, counted, kaslr, arch), config, pid)
        done = time.perf_counter()
        drgn = drgn_kernel(session, image.vmlinux)
        drgn_loaded = time.perf_counter()
        drgn_pgd = queries(drgn, config, pid)
        drgn_done = time.perf_counter()
        assert raw_pgd == drgn_pgd
        for name, seconds in (("layout cache hit", loaded - began), ("raw queries", done - loaded),
                              ("raw total", done - began), ("raw in read_va", reads[1]),
                              ("drgn load_debug_info", drgn_loaded - done),
                              ("drgn queries", drgn_done - drgn_loaded), ("drgn total", drgn_done - done)):
            best[name] = min(best.get(name, seconds), seconds)
    best["raw reads"] = reads[0]
    return best


@pytest.mark.parametrize("arch, series", IMAGES, ids=IDS)
def test_rawkernel_agrees_with_drgn(vm: Callable[..., VM], arch: str, series: str,
                                    capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    image = ensure_image(image_for(arch, series))
    began = time.perf_counter()
    layout = layout_for(image.vmlinux)  # extracts on the first run after a change
    layout_seconds = time.perf_counter() - began
    machine = vm(arch, series)
    manifest = parse(Path(machine.manifest).read_text())
    assert manifest.pid is not None and manifest.child_pid is not None
    config = read_config_file(image.config)
    request(machine, ["maps"])  # the answer's buffers grow the heap once (it never shrinks) ...
    maps = request(machine, ["maps"]).maps  # ... so this is the kernel's own view just before the VM stops
    assert maps
    # stops the VM; close() lets it run on (riscv64: gdb's unwinder sees it stopped first, then resumes it)
    target = GdbstubTarget(machine.gdb, keep_stopped=arch == "riscv64")
    try:
        session = start(target, image.vmlinux, image.config)
        assert isinstance(session.kernel, RawKernel)  # what every command uses
        drgn = drgn_kernel(session, image.vmlinux)
        prog = drgn.prog
        raw = RawKernel(layout, session.read_kernel_va, int(session.numbers["KERNELOFFSET"], 16), arch)

        assert raw.release == drgn.release == manifest.kernel_release
        facts = raw.facts(config, f"config file {image.config}")
        theirs_facts = drgn.facts(config, f"config file {image.config}")
        assert {n: f.value for n, f in facts.facts.items()} == {n: f.value for n, f in theirs_facts.facts.items()}
        assert (facts.layout, facts.release) == (theirs_facts.layout, theirs_facts.release)
        # The session adds what VMCOREINFO states (NUMBER(MAX_PHYSMEM_BITS)) to the kernel's own facts.
        stated = {n: f for n, f in session.facts.facts.items() if f.source.startswith("vmcoreinfo:")}
        assert set(stated) == {"MAX_PHYSMEM_BITS"} and isinstance(stated["MAX_PHYSMEM_BITS"].value, int)
        assert session.facts == dataclasses.replace(facts, facts={**stated, **facts.facts})
        assert all(f.source.startswith((SOURCE, "config file", "derived from")) for f in facts.facts.values())
        assert facts.get("nr_swapfiles") == 1 and facts.get("swap_info[0].max")  # the guest's zram swap
        assert raw.ram_ranges() == drgn.ram_ranges()

        # The stopped vCPU's callers as watch finds them (x86-64: the vmlinux's ORC tables; arm64, riscv64:
        # frame records) are the ones drgn unwinds from the same registers (drgn 0.3.0 cannot unwind
        # riscv64's pt_regs: there gdb's unwinder, from the vmlinux's DWARF CFI, is the witness below).
        cpu = cpu_state(session, target, "p1.1", Symbols.load(image.vmlinux))
        ours = [name.split("+", 1)[0] for name in [cpu.function, *cpu.callers] if name]
        unwinder = cpu.unwinder or ""
        assert unwinder.startswith("ORC" if arch == "x86_64" else "frame pointers") and "stopped" not in unwinder, cpu
        assert len(ours) >= 3, cpu  # an idle vCPU: at least the idle loop and what started it
        with capsys.disabled():
            print(f"\n[chain] {arch}-{series} ({unwinder}): {' < '.join(ours)}", flush=True)
        if arch != "riscv64":
            assert drgn_callers(prog, session, "p1.1")[:len(ours)] == ours

        from drgn.helpers.linux.pid import find_task, for_each_task

        theirs = sorted((int(t.pid), t.comm.string_().decode(), t.value_(), int(t.mm.value_()))
                        for t in for_each_task(prog))
        mine = sorted((t.pid, t.comm, t.address, t.mm) for t in raw.tasks())
        assert mine == theirs
        assert len({t[0] for t in mine}) == len(mine)

        named = {}
        for pid in (manifest.pid, manifest.child_pid, 1):
            task = raw.find_task(pid=pid)
            mm = raw.task_mm(task)
            drgn_mm = find_task(prog, pid).mm
            assert mm == drgn_mm.value_()
            vmas = vma_tuples(raw.vmas(mm))
            assert [v[:3] for v in vmas] == [v[:3] for v in vma_tuples(drgn.vmas(drgn_mm))], f"pid {pid}"
            assert [v[0] for v in vmas] == sorted(v[0] for v in vmas) and len(vmas) > 5
            named[pid] = {v[3] for v in vmas}
        # Names as the kernel gives them: the workload's /proc/self/maps ("[anon]" where it has none).
        workload = list(raw.vmas(raw.task_mm(raw.find_task(pid=manifest.pid))))
        assert [(v.start, v.end, v.perms, v.name) for v in workload] == \
            [(s, e, p, n or "[anon]") for s, e, p, n in maps_vmas(maps)]
        # The comparison above covers 's' without VM_SHARED: MAP_SHARED of a file opened read-only
        # (the workload's file_shared_ro), whose smaps VmFlags have "ms" (VM_MAYSHARE) but no "sh".
        ro = manifest.region("file_shared_ro")
        assert ro.status == "ok" and ro.vma is not None, ro.reason
        assert "ms" in ro.vma.flags and "sh" not in ro.vma.flags
        assert [p for s, _, p, _ in maps_vmas(maps) if s == ro.start] == ["r--s"]
        mine = [v for v in workload if v.start == ro.start]
        assert len(mine) == 1 and not mine[0].flags & VM_SHARED and mine[0].flags & VM_MAYSHARE
        assert {"[heap]", "[stack]", "[vdso]"} <= named[manifest.pid]
        assert any(name.startswith("/") for name in named[1])
        workload_mm = raw.task_mm(raw.find_task(pid=manifest.pid))
        assert raw.pgd(workload_mm) == int(find_task(prog, manifest.pid).mm.pgd)
        assert raw.init_mm() == prog["init_mm"].address_of_().value_()
        assert raw.pgd(raw.init_mm()) == int(prog["init_mm"].pgd)

        # The same messages as the drgn-backed Kernel: a pid that does not exist, a kernel thread,
        # a name two tasks share (the workload and its fork child), a name one task has.
        assert error_of(lambda: raw.find_task(pid=999999)) == error_of(lambda: drgn.find_task(pid=999999)) \
            == "no task with pid 999999"
        kthread = error_of(lambda: raw.task_mm(raw.find_task(pid=2)))
        assert kthread == error_of(lambda: drgn.task_mm(drgn.find_task(pid=2)))
        assert kthread.endswith("is a kernel thread: it has no mm")
        comm = raw.find_task(pid=manifest.pid).comm
        assert error_of(lambda: raw.find_task(comm=comm)) == error_of(lambda: drgn.find_task(comm=comm))
        assert raw.find_task(comm="init").pid == int(drgn.find_task(comm="init").pid) == 1

        times = timings(session, image, config, manifest.pid)
    finally:
        target.close()
    if arch == "riscv64":
        assert gdb_callers(machine.gdb, image.vmlinux, 1, tmp_path, resume=True)[:len(ours)] == ours
    with capsys.disabled():
        print(f"\n[{arch} {series}] RawKernel == drgn: {len(mine)} tasks, VMAs of pids "
              f"{manifest.pid}, {manifest.child_pid}, 1; names == the workload's /proc/self/maps "
              f"({len(maps)} lines); first layout_for {layout_seconds:.2f} s")
        print("  " + ", ".join(f"{k} {v * 1000:.1f} ms" if k != "raw reads" else f"{k} {v}"
                               for k, v in times.items()))
