"""`ptinspect watch` on a live VM (issue 16): the stores of real mm operations, caught as they happen.

The workload does each operation on request (inspector/vm/ops.py) while a watch runs in a
subprocess.  Expectations come from the guest (its pagemap right after the step) and the kernel
sources (how pte_modify() rewrites an entry, which functions store the entries), never from
ptinspect: the entry before the first event is what the pagemap said, the entry after the last
is what pte_modify() makes of it, and the stub afterwards holds none of the watchpoints.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.api import open_target
from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.targets.rsp import RspClient
from ptinspect.inspector.vm.images import KernelImage, ensure_image, image_for
from ptinspect.inspector.vm.manifest import PagemapEntry
from ptinspect.inspector.vm.ops import PAGE, OpResult, request
from ptinspect.inspector.vm.state import VM

from .drgn_view import drgn_callers, drgn_kernel
from .gdb_view import gdb_callers
from .test_mm_operations import ACCESSED, cli, prepare, read_only

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# arm64 and riscv64 store page-table entries with atomic read-modify-writes that QEMU stops before
# they write: the watch steps over them (inspector/watch.py Watcher.step_over).
IMAGES = [("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2")]
# mm/mprotect.c change_pte_range() takes each entry with modify_prot_start_ptes() ->
# ptep_modify_prot_start(): x86 through pv_ops to __ptep_modify_prot_start (include/linux/pgtable.h),
# arm64 its own modify_prot_start_ptes (7.2 arch/arm64/mm/mmu.c:2236), or the contpte helpers beneath it;
# riscv64 takes the generic inline ones (include/linux/pgtable.h), and Debian's 7.2 riscv64 vmlinux has no
# change_pte_range symbol either: all of it is inlined into change_protection (mm/mprotect.c).
MPROTECT_CLEAR = ("ptep_modify_prot_start", "__ptep_modify_prot_start", "modify_prot_start_ptes", "contpte_",
                  "change_protection+")
# mm/rmap.c try_to_unmap_one() clears the present entry (ptep_clear_flush / get_and_clear) before it
# writes the swap entry.
PAGEOUT_CLEAR = ("try_to_unmap_one", "ptep_clear_flush", "ptep_get_and_clear", "__ptep_get_and_clear")


class Watch:
    """A watch in a subprocess whose output is read as it comes: a watch writes while the VM is
    stopped, so a full pipe would stop the guest too."""

    def __init__(self, proc: subprocess.Popen) -> None:
        self.proc, self.lines = proc, []
        self.reader = threading.Thread(target=lambda: self.lines.extend(proc.stdout), daemon=True)  # type: ignore[arg-type]
        self.reader.start()


def start_watch(target: list[str], pid: int, region: OpResult, *extra: str) -> tuple[Watch, dict]:
    """A watch of REGION in a subprocess, once its watchpoints are in place (its first JSON line)."""
    proc = subprocess.Popen([sys.executable, "-m", "ptinspect.commands.cli", "watch", *target, "--pid", str(pid),
                             "--range", f"{region.start:#x}-{region.end:#x}", "--format", "json", *extra],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    if not first:
        proc.wait(10)
        pytest.fail(f"watch ended before watching: {proc.stderr.read() if proc.stderr else ''}")  # type: ignore[union-attr]
    return Watch(proc), json.loads(first)["watching"]


def finish(watch: Watch, timeout: float) -> tuple[list[dict], dict]:
    watch.proc.wait(timeout=timeout)
    watch.reader.join(10)
    err = watch.proc.stderr.read() if watch.proc.stderr else ""
    assert watch.proc.returncode == 0, err
    lines = [json.loads(line) for line in watch.lines]
    assert "summary" in lines[-1], lines[-1:]
    return lines[:-1], lines[-1]["summary"]


def no_watchpoints_left(machine: VM, summary: dict) -> None:
    """QEMU answers z2 of every watchpoint the watch placed with an error: none is left."""
    host, port = machine.gdb.rsplit(":", 1)
    client = RspClient(host, int(port))
    try:
        client.stop_reason()
        left = [va for va, n in summary["watchpoints_placed"] if client.remove_watchpoint(int(va, 16), n)]
    finally:
        client.detach()
    assert summary["watchpoints_placed"] and not left, left


def watched_vm(vm: Callable[..., VM], arch: str, series: str, **boot: int) -> tuple[VM, KernelImage, list[str], int]:
    """A booted test VM, its kernel image, the target options of a command on it and the workload's pid."""
    machine = vm(arch, series, **boot)
    image = ensure_image(image_for(arch, series))
    assert machine.workload_pid is not None
    return (machine, image, ["--gdb", machine.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config)],
            machine.workload_pid)


def timed(machine: VM, words: list[str]) -> tuple[OpResult, float]:
    began = time.monotonic()
    answer = request(machine, words, timeout=300)
    assert answer.status == "ok", answer.line[:300]
    return answer, time.monotonic() - began


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_sees_the_kernel_store_each_entry(vm: Callable[..., VM], arch: str, series: str,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    machine, image, target, pid = watched_vm(vm, arch, series)

    # mprotect(PROT_READ) without a watch, then with one: the cost of watching
    _, plain = timed(machine, ["mprotect", hex(prepare(machine, "mprotect").start)])  # type: ignore[arg-type]
    region = prepare(machine, "mprotect")
    proc, watching = start_watch(target, pid, region, "--for", "40")
    assert watching["watchpoints"]
    answer, watched = timed(machine, ["mprotect", hex(region.start)])  # type: ignore[arg-type]
    events, summary = finish(proc, 180)
    with capsys.disabled():
        print(f"\n[watch] {arch}: mprotect of {answer.op_length // PAGE} pages {plain:.3f} s unwatched, "
              f"{watched:.3f} s watched ({summary['watchpoint_hits']} hits)", flush=True)
    assert summary["end"] == "timeout" and summary["vm"] == "running"
    before = dict(region.pages())
    for va in range(answer.op_start, answer.op_end, PAGE):  # type: ignore[arg-type]
        mine = [e for e in events if int(e["va"], 16) == va and e["level"] == "pte"]
        kernel = [e for e in mine if e["source"] == "kernel"]
        assert kernel, (hex(va), mine)
        first, last = int(kernel[0]["before"]["raw"], 16), int(kernel[-1]["after"]["raw"], 16)
        assert before[va].present and kernel[0]["before"]["kind"] == "present", kernel[0]
        assert last & ~ACCESSED[arch] == read_only(arch, first, machine.kernel_release) & ~ACCESSED[arch], (hex(va), hex(first), hex(last))
        mine = [e for e in kernel if e["task"].endswith(f"[{pid}]")]  # the workload asked: its task stored
        assert any(e["function"] and e["function"].startswith(MPROTECT_CLEAR) for e in mine), \
            [(e["status"], e["function"], e["task"]) for e in kernel]
        for e in (e for e in kernel if e not in mine):  # another task may only age the page meanwhile
            assert e["before"] and e["after"], e  # (reclaim clears the accessed bit), never more
            assert (int(e["before"]["raw"], 16) ^ int(e["after"]["raw"], 16)) & ~ACCESSED[arch] == 0, e
    no_watchpoints_left(machine, summary)

    # MADV_PAGEOUT under --until swap: the VM stops at the first swap entry, which dump shows
    region = prepare(machine, "pageout")
    proc, _ = start_watch(target, pid, region, "--until", "swap", "--for", "120")
    done: dict[str, OpResult] = {}
    worker = threading.Thread(target=lambda: done.setdefault("answer", request(machine, ["pageout",
                                                                                         hex(region.start)], 300)))
    worker.start()
    events, summary = finish(proc, 240)
    assert summary["end"] == "until" and summary["vm"] == "stopped", summary
    caught = events[-1]
    assert caught["after"]["kind"] == "swap" and caught["source"] == "kernel", caught
    with Qmp(machine.qmp, timeout=10) as qmp:
        assert qmp.execute("query-status")["running"] is False  # left stopped at the catch
    va = int(caught["va"], 16)
    cleared = [e for e in events if e["va"] == caught["va"] and e["status"] == "removed"]
    assert cleared and cleared[0]["function"].startswith(PAGEOUT_CLEAR), cleared
    dump = cli("dump", *target, "--pid", str(pid), "--range", f"{va:#x}-{va + PAGE:#x}", "--format", "json")
    assert dump.returncode == 0, dump.stderr
    shown = json.loads(dump.stdout)["entries"]
    assert [(e["kind"], e["raw"]) for e in shown] == [("swap", caught["after"]["raw"])]
    worker.join(300)  # dump detached: the VM runs again and the workload answers
    assert done["answer"].status == "ok"
    assert dict(done["answer"].pages())[va].swapped
    no_watchpoints_left(machine, summary)
    assert request(machine, ["maps"]).status == "ok"  # the guest runs normally

    # Ctrl-C (SIGINT, as a terminal sends it) while the VM runs watched: the watch ends there, says so,
    # removes every watchpoint and lets the VM run on
    region = prepare(machine, "mprotect")
    proc, _ = start_watch(target, pid, region, "--for", "120")
    time.sleep(2)
    proc.proc.send_signal(signal.SIGINT)
    _, summary = finish(proc, 60)
    assert summary["end"] == "interrupted" and summary["vm"] == "running", summary
    no_watchpoints_left(machine, summary)
    assert request(machine, ["mprotect", hex(region.start)]).status == "ok"


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_pt_watch_inside_gdb(vm: Callable[..., VM], arch: str, series: str) -> None:
    """`pt watch` in gdb-multiarch: gdb hands its connection to the watch and takes it back; the
    workload's mprotect is seen, and `pt translate` afterwards reads through gdb's connection again."""
    machine = vm(arch, series)
    image = ensure_image(image_for(arch, series))
    pid = machine.workload_pid
    region = prepare(machine, "mprotect")
    kernel = f"--vmlinux {image.vmlinux} --config-file {image.config}"
    args = ["gdb-multiarch", "-nx", "-batch", "-ex", f"source {ROOT / 'commands' / 'gdb_pt.py'}",
            "-ex", f"target remote {machine.gdb}",
            "-ex", f"pt watch {kernel} --pid {pid} --range {region.start:#x}-{region.end:#x} --count 2 "
                   "--for 120 --format json",
            "-ex", f"pt translate {kernel} --pid {pid} {region.start:#x}", "-ex", "detach"]
    env = dict(os.environ, PTINSPECT_PYTHON=sys.executable)  # the pt children run in this interpreter
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    lines = []
    for line in proc.stdout:  # gdb's own lines, then the watch's, which the child writes itself
        lines.append(line)
        if line.startswith('{"watching"'):
            break
    else:
        pytest.fail("".join(lines) + (proc.stderr.read() if proc.stderr else ""))
    answer = request(machine, ["mprotect", hex(region.start)], timeout=300)  # type: ignore[arg-type]
    assert answer.status == "ok", answer.line[:300]
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:] + err[-3000:]
    records = [json.loads(line) for line in out.splitlines() if line.startswith(("{\"time\"", "{\"summary\""))]
    events, summary = records[:-1], records[-1]["summary"]
    assert summary["end"] == "count" and len(events) == 2, records
    first = events[0]
    assert first["source"] == "kernel" and first["task"].endswith(f"[{pid}]"), first
    assert first["va"] == hex(answer.op_start) and first["function"].startswith(MPROTECT_CLEAR), first
    assert f"\n{region.start:#x} -> 0x" in out.split('{"summary"', 1)[1], out[-2000:]  # pt translate ran after it
    no_watchpoints_left(machine, summary)


# mm/rmap.c try_to_migrate_one() replaces each present entry of the folio with a migration entry
# (writable for a writable entry, else readable-exclusive for an exclusive anonymous page, else
# readable); mm/migrate.c remove_migration_pte() maps the new folio where the entry was.  The
# workload's pages are written, writable and private: their entries become migration-write.
TO_MIGRATION, FROM_MIGRATION = "try_to_migrate_one", "remove_migration_pte"
PART_PAGES = 8  # an operation acts on pages 4..11 of its region (vm-images/workload/ops.c PART_PAGES)
# How the watch unwinds; its chain is checked against drgn's unwinder from the same registers, or on
# riscv64 (drgn 0.3.0 cannot unwind it) against gdb's, from the vmlinux's DWARF call-frame information.
UNWOUND_BY = {"x86_64": "ORC", "arm64": "frame pointers", "riscv64": "frame pointers"}
# Where the witness's unwind ends before ours: arch/riscv/kernel/entry.S has no call-frame information,
# so gdb stops at the exception entry; past it our chain is checked by the functions the operation calls.
WITNESS_ENDS = {"riscv64": "handle_exception"}


def writable(maps: tuple[str, ...], va: int) -> bool:
    """Whether the guest's /proc/self/maps gives the VMA of VA write permission."""
    for line in maps:
        span, perms = line.split()[:2]
        start, end = (int(x, 16) for x in span.split("-"))
        if start <= va < end:
            return perms[1] == "w"
    raise AssertionError(f"{va:#x} is in no VMA of the workload")


def migration_kind(write: bool, page: PagemapEntry) -> str:
    """The entry mm/rmap.c try_to_migrate_one() (7.2) makes of a present page: writable ->
    make_writable_migration_entry, else an exclusive anonymous page (PageAnonExclusive; the pagemap's
    PM_MMAP_EXCLUSIVE and not PM_FILE) -> make_readable_exclusive_migration_entry, else readable."""
    if write:
        return "migration-write"
    return "migration-read-exclusive" if page.exclusive and not page.file else "migration-read"


def named(event: dict, function: str) -> bool:
    """Whether FUNCTION stored the entry or is among the callers the watch found."""
    return any(f and f.split("+", 1)[0] == function for f in [event["function"], *event["callers"]])


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_migration(vm: Callable[..., VM], arch: str, series: str, capsys: pytest.CaptureFixture[str],
                         tmp_path: Path) -> None:
    """move_pages(2) between two NUMA nodes: present → migration-write → present at the new frame,
    stored by the migration code; --until migration leaves the VM stopped at the migration entry."""
    machine, image, target, pid = watched_vm(vm, arch, series, numa_nodes=2)

    _, plain = timed(machine, ["migrate", hex(prepare(machine, "migrate").start)])  # type: ignore[arg-type]
    region = prepare(machine, "migrate")
    maps = request(machine, ["maps"]).maps
    assert maps
    proc, _ = start_watch(target, pid, region, "--for", "60")
    answer, watched = timed(machine, ["migrate", hex(region.start)])  # type: ignore[arg-type]
    events, summary = finish(proc, 240)
    with capsys.disabled():
        print(f"\n[watch] {arch}: migrate of {answer.op_length // PAGE} pages {plain:.3f} s unwatched, "
              f"{watched:.3f} s watched ({summary['watchpoint_hits']} hits)", flush=True)
    before, after = dict(region.pages()), dict(answer.pages())
    expected = {va: migration_kind(writable(maps, va), before[va]) for va in before}
    assert sorted(set(expected[va] for va in range(answer.op_start, answer.op_end, PAGE))) == \
        ["migration-read", "migration-read-exclusive", "migration-write"]  # the region makes all three
    for va in range(answer.op_start, answer.op_end, PAGE):  # type: ignore[arg-type]
        mine = [e for e in events if int(e["va"], 16) == va and e["level"] == "pte" and e["source"] == "kernel"
                and e["task"].endswith(f"[{pid}]")]
        kinds = [e["after"]["kind"] if e["after"] else None for e in mine]
        assert mine and mine[0]["before"]["kind"] == "present", (hex(va), kinds)
        assert int(mine[0]["before"]["pfn"], 16) == before[va].pfn != after[va].pfn
        to = [e for e in mine if e["after"] and e["after"]["kind"].startswith("migration")]
        assert to and to[0]["after"]["kind"] == expected[va] and named(to[0], TO_MIGRATION), (hex(va), kinds)
        assert int(to[0]["after"]["pfn"], 16) == before[va].pfn  # the entry names the old frame
        back = mine[kinds.index(expected[va]) + 1:]
        assert back and back[-1]["after"]["kind"] == "present", (hex(va), kinds)
        assert int(back[-1]["after"]["pfn"], 16) == after[va].pfn, (hex(va), back[-1])
        assert named(back[0], FROM_MIGRATION), (hex(va), back[0])
    no_watchpoints_left(machine, summary)

    # --until migration: the VM stops at the first migration entry; dump shows it, validate accepts it
    region = prepare(machine, "migrate")
    proc, _ = start_watch(target, pid, region, "--until", "migration", "--for", "120")
    done: dict[str, OpResult] = {}
    worker = threading.Thread(target=lambda: done.setdefault("answer", request(machine, ["migrate",
                                                                                         hex(region.start)], 300)))
    worker.start()
    events, summary = finish(proc, 240)
    assert summary["end"] == "until" and summary["vm"] == "stopped", summary
    caught = events[-1]
    assert caught["after"]["kind"].startswith("migration-") and named(caught, TO_MIGRATION), caught
    with Qmp(machine.qmp, timeout=10) as qmp:
        assert qmp.execute("query-status")["running"] is False
    va = int(caught["va"], 16)
    dump = cli("dump", *target, "--keep-stopped", "--pid", str(pid), "--range", f"{va:#x}-{va + PAGE:#x}",
               "--format", "json")
    assert dump.returncode == 0, dump.stderr
    assert [(e["kind"], e["raw"]) for e in json.loads(dump.stdout)["entries"]] == \
        [(caught["after"]["kind"], caught["after"]["raw"])]
    assert len(same_chain(machine, image, caught, tmp_path, capsys)) > 5
    valid = cli("validate", *target, "--pid", str(pid))  # detaches: the VM runs on
    assert valid.returncode == 0, valid.stdout[-2000:] + valid.stderr
    worker.join(300)
    assert done["answer"].status == "ok", done["answer"].line[:300]
    assert dict(done["answer"].pages())[va].pfn != dict(region.pages())[va].pfn
    no_watchpoints_left(machine, summary)


def same_chain(machine: VM, image: KernelImage, caught: dict, workdir: Path, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The caught event's call chain (the function, then its callers), checked against the one an
    unwinder no one here wrote finds from the same registers of the stopped vCPU: drgn's, or on
    riscv64 (which drgn 0.3.0 cannot unwind) gdb's.  The VM stays stopped."""
    if image.arch == "riscv64":
        theirs = gdb_callers(machine.gdb, image.vmlinux, caught["cpu"] + 1, workdir)
    else:
        with open_target(machine.gdb, vmlinux=image.vmlinux, keep_stopped=True) as live:
            prog = drgn_kernel(live.session, image.vmlinux).prog
            theirs = drgn_callers(prog, live.session, f"p1.{caught['cpu'] + 1}")
    ours = [f.split("+", 1)[0] for f in [caught["function"], *caught["callers"]]]
    with capsys.disabled():
        print(f"\n[chain] {image.arch} ({caught['unwinder']}): {' < '.join(ours)}\n"
              f"[chain] witness: {' < '.join(theirs)}", flush=True)
    assert caught["unwinder"].startswith(UNWOUND_BY[image.arch]) and "stopped" not in caught["unwinder"], caught
    shown = min(len(ours), len(theirs))
    assert ours[:shown] == theirs[:shown], (ours, theirs)
    assert shown == len(ours) or theirs[-1] == WITNESS_ENDS.get(image.arch), (ours, theirs)
    return ours


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_chain_crosses_the_fault_exception(vm: Callable[..., VM], arch: str, series: str,
                                                 capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """getrandom(2) into pages MADV_DONTNEED emptied: copy_to_user() faults in kernel mode and the
    fault handler installs each page.  The call chain of that store goes through the exception entry
    into the syscall beneath it, as the kernel's own unwinders go (x86-64 ORC's pt_regs frame, arm64's
    frame_record_meta, riscv64's handle_exception): handle_mm_fault, then get_random_bytes_user."""
    machine, image, target, pid = watched_vm(vm, arch, series)
    region = prepare(machine, "uaccess-fault")
    proc, _ = start_watch(target, pid, region, "--until", "present", "--for", "120")
    done: dict[str, OpResult] = {}
    worker = threading.Thread(target=lambda: done.setdefault("answer", request(
        machine, ["uaccess-fault", hex(region.start)], 300)))  # type: ignore[arg-type]
    worker.start()
    events, summary = finish(proc, 240)
    assert summary["end"] == "until" and summary["vm"] == "stopped", summary
    caught = events[-1]
    assert caught["source"] == "kernel" and caught["task"].endswith(f"[{pid}]"), caught
    assert (caught["before"]["kind"] if caught["before"] else "none", caught["after"]["kind"]) == ("none", "present")
    ours = same_chain(machine, image, caught, tmp_path, capsys)
    assert "handle_mm_fault" in ours and "get_random_bytes_user" in ours[ours.index("handle_mm_fault"):], ours
    no_watchpoints_left(machine, summary)  # detaches: the VM runs on
    worker.join(300)
    answer = done["answer"]
    assert answer.status == "ok", answer.line[:300]
    assert all(page.present for va, page in answer.pages() if answer.op_start <= va < answer.op_end)  # type: ignore[operator]


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_tells_hardware_updates_from_kernel_stores(vm: Callable[..., VM], arch: str, series: str) -> None:
    """`age`: MADV_COLD makes the kernel clear pages 4..11's accessed bits and flush them from the TLB
    (stores the watchpoints see, in mm/madvise.c madvise_cold_or_pageout_pte_range), then a read of each
    page makes the MMU set the bit again, which no watchpoint sees: the watch reports those as hardware
    updates, attributed to no function."""
    machine, image, target, pid = watched_vm(vm, arch, series)
    region = prepare(machine, "age")
    proc, _ = start_watch(target, pid, region, "--for", "30")
    answer, _ = timed(machine, ["age", hex(region.start)])
    events, summary = finish(proc, 120)
    assert summary["end"] == "timeout", summary
    accessed = ACCESSED[arch]
    young = 0
    for va in range(region.start, region.end, PAGE):  # type: ignore[arg-type]
        mine = [e for e in events if int(e["va"], 16) == va and e["level"] == "pte"]
        seen = [(e["source"], e.get("function"), e.get("callers", [])[:3], e["changes"]) for e in mine]
        if not answer.op_start <= va < answer.op_end:
            assert not [e for e in mine if e["source"] != "kernel" or e["task"].endswith(f"[{pid}]")], seen
            continue
        cold = [e for e in mine if e["source"] == "kernel" and named(e, "madvise_cold_or_pageout_pte_range")]
        assert cold and not int(cold[-1]["after"]["raw"], 16) & accessed, seen  # the kernel made it old
        assert int(cold[0]["before"]["raw"], 16) & ~accessed == int(cold[-1]["after"]["raw"], 16) & ~accessed
        # the MMU made it young: no store.  Another task's store to the entry (reclaim, MGLRU or DAMON ageing
        # it) may clear the bit again before the watch reads the slot: then the MMU's update is not seen (the
        # slot is as it was, so not even that store is an event), and is not required.
        later = mine[mine.index(cold[-1]) + 1:]
        assert not [e for e in later if e["source"] == "kernel" and e["task"].endswith(f"[{pid}]")], seen
        if not later or any(e["source"] == "kernel" for e in later):
            continue
        assert [e["source"] for e in later] == ["hardware"], seen
        assert "function" not in later[0] and "cpu" not in later[0]
        assert int(later[0]["before"]["raw"], 16) ^ int(later[0]["after"]["raw"], 16) == accessed, seen
        young += 1
    assert young >= PART_PAGES // 2, young  # most of the 8 pages are left alone by other tasks
    no_watchpoints_left(machine, summary)


PTE_CONT = 1 << 52  # arch/arm64/include/asm/pgtable-hwdef.h:174 (7.2)
CONTPTE_PAGES = 16  # CONT_PTES with 4 KiB pages (arch/arm64/include/asm/pgtable-hwdef.h CONT_PTE_SHIFT 4)


def test_watch_contpte_unfold_and_fold(vm: Callable[..., VM]) -> None:
    """arm64 7.2: mprotect of part of a contpte block unfolds it (arch/arm64/mm/contpte.c contpte_convert
    clears the 16 entries and sets them again without PTE_CONT); a later mprotect of the whole block
    commits the 16 entries with one set_ptes and contpte_set_ptes makes them a block again."""
    machine, image, target, pid = watched_vm(vm, "arm64", "7.2")
    region = prepare(machine, "contpte-mprotect")
    pfns = [pm.pfn for _, pm in region.pages()]
    assert pfns[0] % CONTPTE_PAGES == 0 and pfns[:CONTPTE_PAGES] == list(range(pfns[0], pfns[0] + CONTPTE_PAGES))
    proc, _ = start_watch(target, pid, region, "--for", "60")
    answer, _ = timed(machine, ["contpte-mprotect", hex(region.start)])  # type: ignore[arg-type]
    events, summary = finish(proc, 240)
    after = dict(answer.pages())
    for i, (va, pm) in enumerate(list(region.pages())[:CONTPTE_PAGES]):
        mine = [e for e in events if int(e["va"], 16) == va and e["source"] == "kernel"
                and e["task"].endswith(f"[{pid}]")]
        raws = [(int(e["before"]["raw"], 16) if e["before"] else None, int(e["after"]["raw"], 16) if e["after"]
                 else None) for e in mine]
        assert mine and raws[0][0] is not None and raws[0][0] & PTE_CONT, (hex(va), mine[:1])  # a block at first
        unfold = [e for e, (_, b) in zip(mine, raws) if b is not None and not b & PTE_CONT
                  and named(e, "contpte_convert")]
        assert unfold, (hex(va), [(e["status"], e["function"]) for e in mine])
        last = raws[-1][1]
        assert last is not None and last & PTE_CONT and named(mine[-1], "contpte_set_ptes"), (hex(va), mine[-1])
        assert int(mine[-1]["after"]["pfn"], 16) == pm.pfn == after[va].pfn == pfns[0] + i
    no_watchpoints_left(machine, summary)


# mm/madvise.c (7.2) madvise_guard_install() walks the range with an install_pte callback
# (guard_install_set_pte(): the marker, into a local pte); the page walker stores it:
# mm/pagewalk.c walk_pte_range_inner() `set_pte_at(walk->mm, addr, pte, new_pte)` on each empty slot.
GUARD_INSTALL = ("walk_pte_range_inner", "madvise_guard_install")


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_guard_install(vm: Callable[..., VM], arch: str, series: str) -> None:
    """MADV_GUARD_INSTALL: the page walker, not a fault, puts a guard marker in every page of the range;
    the guest's pagemap (the op's answer) shows each page as the marker the watch saw."""
    machine, image, target, pid = watched_vm(vm, arch, series)
    region = prepare(machine, "guard-install")
    proc, watching = start_watch(target, pid, region, "--for", "40")
    assert watching["watchpoints"]
    answer, _ = timed(machine, ["guard-install", hex(region.start)])  # type: ignore[arg-type]
    events, summary = finish(proc, 180)
    assert summary["end"] == "timeout" and summary["vm"] == "running"
    pages = dict(answer.pages())
    for va in range(answer.op_start, answer.op_end, PAGE):  # type: ignore[arg-type]
        mine = [e for e in events if int(e["va"], 16) == va and e["level"] == "pte" and e["source"] == "kernel"]
        installed = [e for e in mine if e["after"] and e["after"]["kind"] == "marker"]
        assert installed, (hex(va), [(e["status"], e["function"]) for e in mine])
        assert installed[-1]["after"]["markers"] == ["guard"], installed[-1]["after"]
        assert all(named(installed[-1], f) for f in GUARD_INSTALL), (installed[-1]["function"],
                                                                     installed[-1]["callers"])
        assert installed[-1]["task"].endswith(f"[{pid}]")  # the workload's own madvise stored it
        assert not pages[va].present  # the pagemap: the page is gone (a marker is not a present entry)
    no_watchpoints_left(machine, summary)
    assert request(machine, ["maps"]).status == "ok"


# mm/huge_memory.c (7.2) __split_huge_pmd_locked(): pmdp_invalidate() on the PMD leaf, then
# pmd_populate(mm, pmd, pgtable) with the PTE table it filled; called through split_huge_pmd_locked()
# or __split_huge_pmd() (either may be inlined into the other), from mprotect's change_protection.
THP_SPLIT = ("__split_huge_pmd_locked", "split_huge_pmd_locked", "__split_huge_pmd")


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_watch_thp_split(vm: Callable[..., VM], arch: str, series: str) -> None:
    """mprotect of one base page of a PMD-mapped THP: the watch sees the PMD leaf become a PTE table,
    stored by the THP split, and follows the new table; the pagemap keeps every page present."""
    machine, image, target, pid = watched_vm(vm, arch, series)
    region = prepare(machine, "thp-split")
    assert region.anon_huge_kb  # one PMD-mapped THP (smaps AnonHugePages), as the op requires
    proc, watching = start_watch(target, pid, region, "--for", "40")
    assert watching["watchpoints"]
    answer, _ = timed(machine, ["thp-split", hex(region.start)])  # type: ignore[arg-type]
    events, summary = finish(proc, 180)
    assert summary["end"] == "timeout" and summary["vm"] == "running"
    pmd = [e for e in events if e["level"] == "pmd" and int(e["va"], 16) == region.start and e["source"] == "kernel"]
    assert pmd and pmd[0]["before"]["kind"] == "present" and pmd[-1]["after"]["kind"] == "table", \
        [(e["status"], e["before"] and e["before"]["kind"], e["after"] and e["after"]["kind"]) for e in pmd]
    assert any(named(e, f) for e in pmd for f in THP_SPLIT), [(e["function"], e["callers"]) for e in pmd]
    # The new PTE table is watched from the split on: mprotect's store into its first entry is seen.
    first = [e for e in events if e["level"] == "pte" and int(e["va"], 16) == region.start and e["source"] == "kernel"]
    assert first, "no store seen in the PTE table the split made"
    assert all(entry.present for _, entry in answer.pages())  # split, not unmapped
    no_watchpoints_left(machine, summary)
