"""A witness no one here wrote (issue 16): the kernel's own tools/testing/selftests/mm/migration.c runs in a
two-node guest under `ptinspect watch`.

Its `private_anon` case maps 2 MiB of private anonymous memory, writes it, and for RUNTIME (20 s) moves the
first page back and forth between the two nodes with move_pages(2) while another thread reads it (7.2
migration.c migrate(), access_mem()); `private_anon_thp` does the same with a PMD-mapped THP. The watch is bounded (--count) so that the case's own run stays clean;
the verdict is the kselftest harness's TAP line. The frames' nodes come from the kernel's own boot log
(mm/mm_init.c free_area_init(): "Initmem setup node N [mem START-END]"), the functions that store the
entries from the kernel's migration code (test_watch.py TO_MIGRATION, FROM_MIGRATION), never from ptinspect.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.api import open_target
from ptinspect.inspector.vm.images import KernelImage, ensure_image, image_for
from ptinspect.inspector.vm.mmselftests import build_program
from ptinspect.inspector.vm.selftests import MIGRATION_PATH, finish, kselftest_verdicts, start
from ptinspect.inspector.vm.state import VM

from .test_watch import FROM_MIGRATION, TO_MIGRATION, Watch, named, no_watchpoints_left
from .test_watch import finish as finish_watch

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGES = [("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2")]
# 7.2 migration.c FIXTURE_SETUP(migration): nthreads = numa_num_task_cpus() - 2, every case SKIPs below 1
# (6.12's: numa_num_task_cpus() - 1 below 2, also three vCPUs); the reader threads spin, so one is cheapest
# under TCG.
CPUS = 3
TWOMEG = 2 << 20  # migration.c TWOMEG; also read_pmd_pagesize() of these 4 KiB-page guests
PAGE = 4096
VM_HUGEPAGE = 1 << 29  # 7.2 include/linux/mm.h DECLARE_VMA_BIT(HUGEPAGE, 29): MADV_HUGEPAGE marked this vma
# case -> (the level of the entries it migrates, whether its mapping is MADV_HUGEPAGE). private_anon maps
# 2 MiB and writes it; the init's mTHP knob (hugepages-64kB always) may make it 64 KiB folios, so a round
# moves up to 16 pages. private_anon_thp ("Tests the pmd migration entry paths") madvises one aligned PMD
# of a 4 MiB mapping (THP `madvise` in the guest): the THP moves whole, under a PMD migration entry
# (mm/huge_memory.c set_pmd_migration_entry() from try_to_migrate_one(), remove_migration_pmd() from
# remove_migration_pte()).
CASES = {"private_anon": ("pte", False), "private_anon_thp": ("pmd", True)}
PMD_TO, PMD_FROM = "set_pmd_migration_entry", "remove_migration_pmd"
# Events the watch takes before it ends: each round of migration is three stores per entry (the present
# entry cleared or invalidated, the migration entry set, the new frame mapped); each stops the VM (guest
# time stands still meanwhile, so the case's 20 s are not used up by the watch).
EVENTS = 120
NODE_LINE = re.compile(r"Initmem setup node (\d+) \[mem (0x[0-9a-f]+)-(0x[0-9a-f]+)\]")


def guest(machine: VM, *argv: str) -> tuple[int, tuple[str, ...]]:
    result = finish(machine, start(machine, list(argv)), 120)
    return result.status, result.lines


def node_ranges(machine: VM) -> dict[int, tuple[int, int]]:
    """node -> (first, last) physical address, as the kernel's boot log says."""
    _, lines = guest(machine, "/bin/busybox", "dmesg")
    nodes = {int(m[1]): (int(m[2], 16), int(m[3], 16)) for line in lines if (m := NODE_LINE.search(line))}
    assert len(nodes) == 2, [line for line in lines if "node" in line.lower()][:20]
    return nodes


def node_of(nodes: dict[int, tuple[int, int]], pfn: int) -> int:
    [node] = [n for n, (lo, hi) in nodes.items() if lo <= pfn * PAGE <= hi]
    return node


def case_mapping(machine: VM, vmlinux: Path, config: Path, huge: bool, deadline: float) -> tuple[int, int]:
    """(pid, start) of the selftest task that holds the case's 2 MiB private anonymous mapping (HUGE: the
    one MADV_HUGEPAGE marked): the harness forks each case, so the tasks named `migration` are asked for
    their VMAs (the VM is stopped while the Target is open). ptinspect lists the pids in order, so the first
    with the mapping is the case's main thread (its reader threads come later): the one calling move_pages()."""
    seen = ""
    while time.monotonic() < deadline:
        with open_target(machine.gdb, vmlinux=vmlinux, config_file=config) as target:
            pids = [task.pid for task in target.tasks("migration")]
            seen = f"tasks named migration: {pids}"
            for pid in pids:
                tables = target.tables(pid=pid)
                mine = [v for v in tables.vmas if v.end - v.start == TWOMEG and v.perms == "rw-p" and v.name == "[anon]"
                        and bool(v.flags & VM_HUGEPAGE) == huge]
                if len(mine) == 1:
                    return pid, mine[0].start
                seen = f"pid {pid}: " + ", ".join(f"{v.start:#x}-{v.end:#x} {v.perms} {v.flags:#x} {v.name}"
                                                  for v in tables.vmas)
        time.sleep(1)
    pytest.fail(f"no migration task with one 2 MiB private anonymous mapping (MADV_HUGEPAGE {huge}): {seen}")


def event_line(e: dict) -> str:
    def entry(rec: dict | None) -> str:
        if rec is None:
            return "none"
        access = rec.get("access")
        bits = " " + "".join(c if access[k] else "-" for c, k in (("r", "read"), ("w", "write"), ("d", "dirty"))) \
            if access else ""
        return f"{rec['kind']}{bits}" + (f" pfn {rec['pfn']}" if rec.get("pfn") else "")

    chain = " < ".join(f.split("+", 1)[0] for f in [e.get("function") or "?", *e.get("callers", [])[:3]])
    return (f"  {e['time']:7.3f}s cpu{e.get('cpu')} {e['source']:<8} {e['level']} {e['va']} {e['status']:<7} "
            f"{entry(e['before'])} -> {entry(e['after'])}   [{chain}] {e.get('task', '')}")


def watched_case(machine: VM, image: KernelImage,
                 case: str) -> tuple[tuple[str, ...], int, int, list[dict], dict, int]:
    """Run CASE; watch its mapping for EVENTS events while it runs; (its output, its task, mapping start,
    the events, the watch's summary, the case's exit status)."""
    seq = start(machine, [MIGRATION_PATH, "-t", case])
    pid, va = case_mapping(machine, image.vmlinux, image.config, CASES[case][1], time.monotonic() + 120)
    proc = subprocess.Popen([sys.executable, "-m", "ptinspect.commands.cli", "watch", "--gdb", machine.gdb,
                             "--vmlinux", str(image.vmlinux), "--config-file", str(image.config), "--pid", str(pid),
                             "--range", f"{va:#x}-{va + TWOMEG:#x}", "--count", str(EVENTS), "--for", "300",
                             "--format", "json"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    first = proc.stdout.readline()
    assert first, proc.communicate(timeout=30)[1]
    assert json.loads(first)["watching"]["watchpoints"]
    events, summary = finish_watch(Watch(proc), 600)
    run = finish(machine, seq, 600)
    return run.lines, pid, va, events, summary, run.status


def migration_rounds(events: list[dict], level: str, pid: int, va: int,
                     nodes: dict[int, tuple[int, int]]) -> tuple[int, int]:
    """(complete rounds, migration entries) of the kernel's stores at LEVEL: per entry, present -> a migration
    entry naming the old frame, set by the migration code in the case's own move_pages() (task PID) ->
    present at a frame of the other node."""
    kernel = [e for e in events if e["source"] == "kernel" and e["level"] == level]
    migration = [e for e in kernel if e["after"] and e["after"]["kind"].startswith("migration-")]
    to_names, from_names = (TO_MIGRATION, PMD_TO) if level == "pmd" else (TO_MIGRATION,), \
        (FROM_MIGRATION, PMD_FROM) if level == "pmd" else (FROM_MIGRATION,)
    rounds = 0
    for entry in sorted({e["va"] for e in migration}):
        mine = [e for e in kernel if e["va"] == entry]
        assert int(entry, 16) - va < 64 << 10, (entry, hex(va))  # ptr's page, or its folio
        for i, to in enumerate(mine):
            if to not in migration:
                continue
            assert all(named(to, f) for f in to_names), (to["function"], to["callers"])
            assert to["task"].endswith(f"[{pid}]"), to["task"]
            old = int(to["after"]["pfn"], 16)
            cleared = next((e for e in reversed(mine[:i]) if e["before"] and e["before"]["kind"] == "present"), None)
            back = next((e for e in mine[i + 1:] if e["after"] and e["after"]["kind"] == "present"), None)
            if cleared is None or back is None:
                continue  # the watch began or ended inside this round
            assert int(cleared["before"]["pfn"], 16) == old, (cleared, to)
            assert all(named(back, f) for f in from_names), (back["function"], back["callers"])
            new = int(back["after"]["pfn"], 16)
            assert node_of(nodes, new) != node_of(nodes, old), (hex(old), hex(new), nodes)
            rounds += 1
    assert rounds, [(e["va"], e["status"], e["after"] and e["after"]["kind"], e["function"]) for e in kernel]
    return rounds, len(migration)


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_migration_selftest_under_watch(vm: Callable[..., VM], arch: str, series: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    began = time.monotonic()
    image = ensure_image(image_for(arch, series))
    build_program(image)  # the initramfs holds it once built
    machine = vm(arch, series, numa_nodes=2, cpus=CPUS)
    nodes = node_ranges(machine)
    for case, (level, _) in CASES.items():
        case_began = time.monotonic()
        lines, pid, va, events, summary, status = watched_case(machine, image, case)
        with capsys.disabled():
            print(f"\n[migration {arch} {series}] {case}: exit {status}; "
                  + "; ".join(line for line in lines if line.startswith(("ok ", "not ok "))) + "; nodes "
                  + ", ".join(f"{n}: {lo:#x}-{hi:#x}" for n, (lo, hi) in sorted(nodes.items())))
            print("\n".join(event_line(e) for e in events[:16]))
        # (a) the kernel's own verdict, the watch bounded by its count
        assert kselftest_verdicts(lines) == {f"migration.{case}": "pass"}, lines
        assert summary["end"] == "count" and summary["vm"] == "running", summary
        # (b) present -> migration entry -> present at a frame of the other node, by the migration code
        rounds, entries = migration_rounds(events, level, pid, va, nodes)
        # (c) nothing left behind
        no_watchpoints_left(machine, summary)
        with capsys.disabled():
            print(f"[migration {arch} {series}] {case}: mapping {va:#x}-{va + TWOMEG:#x}, {len(events)} events "
                  f"({summary['watchpoint_hits']} watchpoint hits), {entries} {level} migration entries, "
                  f"{rounds} complete rounds; {time.monotonic() - case_began:.0f} s")
    with capsys.disabled():
        print(f"[migration {arch} {series}] {time.monotonic() - began:.0f} s in all (build, boot, both cases)")
