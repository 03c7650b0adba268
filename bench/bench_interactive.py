"""Interactive speed: ptinspect in gdb and as a process, side by side with gdb-pt-dump.

Usage (from the repository root):

    .venv/bin/python bench/bench_interactive.py [--arch x86_64 ...] [--gdb-pt-dump DIR] [--reps 3]

Boots a test VM per architecture whose bulk process (init's `ptinspect.bulk=MIB`) maps MIB MiB of
written 4 KiB pages (as bench/bench_dump.py does) and times, for the workload process, one kernel
address, the kernel and the bulk process, with and without --ranges:

- `ptinspect` as a whole process (`python -m ptinspect.commands.cli ... --gdb`, stdout to /dev/null): it
  connects, stops the VM, answers, resumes it;
- `pt` inside one gdb-multiarch session (commands/gdb_pt.py) through gdb's connection, output
  captured by gdb (`gdb.execute(..., to_string=True)`): "cold" after a `stepi` (the VM ran: the
  per-stop session is read afresh; only the imports and the layout file are kept), "warm" the same
  command again while the VM stays stopped; the session's first command (imports) is not counted;
- with --gdb-pt-dump DIR (a checkout of https://github.com/martinradev/gdb-pt-dump; not on PyPI,
  never vendored): its `pt` in a gdb session (after a `stepi`, output captured the same way) and as
  a whole `gdb -batch` process.  It prints merged ranges only, so it is timed on the --ranges rows
  and on the address (`pt -walk VA`).  It reads the root given (`-cr3`, `-satp`) whole, both halves
  of a process's root; on arm64 its -ttbr0_el1/-ttbr1_el1 options do not select a root, so the
  bench calls its own traversal (arm_traverse_table + optimize + print_table, what its parse_tables
  runs) on the root.

Medians of --reps runs.  Ratios: ptinspect's time over gdb-pt-dump's (< 1: ptinspect is faster),
and --ranges over the per-entry dump (ptinspect, same root and tool).  Not part of the test suite.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptinspect.commands.targets import open_session  # noqa: E402
from ptinspect.inspector.vm.images import ensure_image, image_for  # noqa: E402
from ptinspect.inspector.vm.qemu import boot  # noqa: E402

ARCHES = ("x86_64", "arm64", "riscv64")
SATP_MODE = {"sv39": 8, "sv48": 9, "sv57": 10}
MARK = "BENCH-RESULT "
BULK = re.compile(r"PTINSPECT-BULK pid=(\d+) ")


def bulk_pid(serial_log: Path) -> int:
    match = BULK.search(serial_log.read_bytes().decode(errors="replace"))
    if match is None:
        raise RuntimeError(f"no PTINSPECT-BULK line in {serial_log}")
    return int(match[1])


@dataclass
class Row:
    arch: str
    case: str
    process_s: float | None = None  # ptinspect as a whole process
    gdb_cold_s: float | None = None  # pt in gdb after the VM ran (stepi)
    gdb_warm_s: float | None = None  # pt in gdb again, VM still stopped
    ptd_gdb_s: float | None = None  # gdb-pt-dump in a gdb session (after a stepi)
    ptd_process_s: float | None = None  # gdb-pt-dump as a gdb -batch process
    notes: dict[str, str] = field(default_factory=dict)


@dataclass
class Case:
    name: str
    pt: list[str]  # ptinspect arguments (without target options)
    ptd: str | None  # gdb-pt-dump command (or helper call), None: no counterpart


def env() -> dict[str, str]:
    """Child environment: bytecode caches read and written as on a user's machine."""
    out = dict(os.environ, PTINSPECT_PYTHON=sys.executable)
    out.pop("PYTHONDONTWRITEBYTECODE", None)
    return out


def median_wall(args: list[str], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        proc = subprocess.run(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env(),
                              timeout=600)
        times.append(time.perf_counter() - start)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:6])}...: exit {proc.returncode}: {proc.stderr.decode()[-500:]}")
    return statistics.median(times)


GDB_DRIVER = '''
import gdb, json, statistics, time
CASES = json.loads({cases!r})
REPS = {reps}
def timed(cmd):
    start = time.perf_counter()
    gdb.execute(cmd, to_string=True)
    return time.perf_counter() - start
{prelude}
for name, cmd, warm in CASES:
    cold, again = [], []
    for _ in range(REPS):
        gdb.execute("stepi", to_string=True)
        cold.append(timed(cmd))
        if warm:
            again.append(timed(cmd))
    print({mark!r} + json.dumps({{"case": name, "cold": statistics.median(cold),
                                 "warm": statistics.median(again) if again else None}}), flush=True)
'''

# gdb-pt-dump on arm64: its traversal of one root (what its parse_tables runs for a TTBR), because
# its -ttbr0_el1/-ttbr1_el1 options skip the half they name.
PTD_ARM64 = '''
from pt_gdb.pt_gdb import PageTableDumpGdbFrontend, QemuGdbMachine
from pt.pt_aarch64_parse import aarch64_semantically_similar
from pt.pt_common import optimize
_fe = PageTableDumpGdbFrontend()
class PtdRoot(gdb.Command):
    def __init__(self):
        super().__init__("ptd-root", gdb.COMMAND_USER)
    def invoke(self, arg, from_tty):
        root, upper = (int(x, 0) for x in arg.split())
        QemuGdbMachine.get_qemu_pid()
        _fe.lazy_init()
        b = _fe.pt.arch_backend
        if upper:
            granule, size = b.determine_ttbr1_granule_size(), b.determine_ttbr1_address_space_limit()
        else:
            granule, size = b.determine_ttbr0_granule_size(), b.determine_ttbr0_address_space_limit()
        blocks = optimize([], [], b.arm_traverse_table(root, size, granule, upper), aarch64_semantically_similar,
                          False)
        b.print_table(blocks, phys_verbose=False)
PtdRoot()
'''


def in_gdb(address: str, sources: list[str], cases: list[tuple[str, str, bool]], reps: int, prelude: str,
           workdir: Path) -> dict[str, dict]:
    script = workdir / "driver.py"
    script.write_text(GDB_DRIVER.format(cases=json.dumps(cases), reps=reps, prelude=prelude, mark=MARK))
    args = ["gdb-multiarch", "-nx", "-batch"]
    for source in sources:
        args += ["-ex", f"source {source}"]
    args += ["-ex", f"target remote {address}", "-ex", f"source {script}", "-ex", "detach"]
    proc = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env(), timeout=3600)
    found = {}
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            rec = json.loads(line[len(MARK):])
            found[rec["case"]] = rec
    if len(found) != len(cases):
        raise RuntimeError(f"gdb gave {len(found)} of {len(cases)} results: {proc.stdout[-1500:]}{proc.stderr[-1500:]}")
    return found


def bench_arch(arch: str, series: str, mib: int, memory: str, reps: int, ptd_dir: Path | None,
               workdir: Path) -> list[Row]:
    image = ensure_image(image_for(arch, series))
    vm = boot(arch, series, append=f"ptinspect.bulk={mib}", qemu_args=["-m", memory], name=f"bench-i-{arch}",
              detach=False)
    try:
        kernel = ["--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
        work, bulk = vm.workload_pid, bulk_pid(Path(vm.serial_log))
        with open_session(vm.gdb, image.vmlinux, image.config, False, 30.0) as session:
            assert session.kernel is not None
            roots = {"workload": session.root(pid=work), "kernel": session.root(kernel=True),
                     "bulk": session.root(pid=bulk)}
            va = session.kernel.init_mm()  # a kernel address every root maps

        def ptd(root_name: str) -> str:
            root = roots[root_name]
            if arch == "x86_64":
                return f"pt -cr3 {root.pa:#x}"
            if arch == "riscv64":
                return f"pt -satp {SATP_MODE[root.mode.name] << 60 | root.pa >> 12:#x}"
            return f"ptd-root {root.pa:#x} {int(root.upper)}"

        cases = [Case("address", ["translate", "--kernel", f"{va:#x}"], f"pt -walk {va:#x}")]
        for name, opts in (("workload", ["--pid", str(work)]), ("kernel", ["--kernel"]),
                           ("bulk", ["--pid", str(bulk)])):
            cases.append(Case(name, ["dump", *opts], None))
            cases.append(Case(f"{name} --ranges", ["dump", *opts, "--ranges"], ptd(name)))
        rows = {c.name: Row(arch, c.name) for c in cases}

        for c in cases:
            args = [sys.executable, "-m", "ptinspect.commands.cli", c.pt[0], "--gdb", vm.gdb, *kernel, *c.pt[1:]]
            rows[c.name].process_s = median_wall(args, reps)
            print(f"# {arch} {c.name}: process {rows[c.name].process_s:.3f} s", file=sys.stderr, flush=True)

        kernel_opts = " ".join(kernel)
        pt_cases = [(c.name, f"pt {c.pt[0]} {kernel_opts} {' '.join(c.pt[1:])}", True) for c in cases]
        warmup = f"gdb.execute({pt_cases[0][1]!r}, to_string=True)  # imports, the layout: not counted"
        for name, rec in in_gdb(vm.gdb, [str(ROOT / "commands" / "gdb_pt.py")], pt_cases, reps, warmup,
                                workdir).items():
            rows[name].gdb_cold_s, rows[name].gdb_warm_s = rec["cold"], rec["warm"]

        if ptd_dir is not None:
            try:
                measure_ptd(arch, vm.gdb, cases, rows, reps, ptd_dir, workdir)
            except Exception as exc:  # ptinspect's rows are kept
                print(f"# {arch}: gdb-pt-dump: {type(exc).__name__}: {exc}", file=sys.stderr)
        return list(rows.values())
    finally:
        vm.stop()


def measure_ptd(arch: str, address: str, cases: list[Case], rows: dict[str, Row], reps: int, ptd_dir: Path,
                workdir: Path) -> None:
    """gdb-pt-dump in one gdb session and as gdb -batch processes."""
    ptd_cases = [(c.name, c.ptd, False) for c in cases if c.ptd]
    prelude = PTD_ARM64 if arch == "arm64" else ""
    for name, rec in in_gdb(address, [str(ptd_dir / "pt.py")], ptd_cases, reps, prelude, workdir).items():
        rows[name].ptd_gdb_s = rec["cold"]
    for c in cases:
        if not c.ptd:
            continue
        args = ["gdb-multiarch", "-nx", "-batch", "-ex", f"source {ptd_dir / 'pt.py'}"]
        if arch == "arm64":
            script = workdir / "ptd_arm64.py"
            script.write_text("import gdb\n" + PTD_ARM64)
            args += ["-ex", f"source {script}"]
        args += ["-ex", f"target remote {address}", "-ex", c.ptd, "-ex", "detach"]
        rows[c.name].ptd_process_s = median_wall(args, reps)


def ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}" if a is not None and b else "-"


def ms(value: float | None) -> str:
    return f"{value * 1000:.0f}" if value is not None else "-"


def print_table(rows: list[Row]) -> None:
    """Milliseconds; ratios ptinspect / gdb-pt-dump (process: process over process, gdb: cold over
    its session time) and --ranges over the per-entry dump."""
    head = ("arch", "case", "pt proc", "pt gdb cold", "pt gdb warm", "ptd gdb", "ptd proc", "proc/ptd proc",
            "gdb cold/ptd gdb", "ranges/entries proc", "ranges/entries gdb")
    by = {(r.arch, r.case): r for r in rows}
    lines = [head]
    for r in rows:
        entries = by.get((r.arch, r.case.removesuffix(" --ranges"))) if r.case.endswith("--ranges") else None
        lines.append((r.arch, r.case, ms(r.process_s), ms(r.gdb_cold_s), ms(r.gdb_warm_s), ms(r.ptd_gdb_s),
                      ms(r.ptd_process_s), ratio(r.process_s, r.ptd_process_s), ratio(r.gdb_cold_s, r.ptd_gdb_s),
                      ratio(r.process_s, entries.process_s) if entries else "-",
                      ratio(r.gdb_cold_s, entries.gdb_cold_s) if entries else "-"))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    for line in lines:
        print(" | ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=ARCHES, help="repeatable; default: all three")
    parser.add_argument("--series", default="7.2")
    parser.add_argument("--mib", type=int, default=1024, help="MiB of 4 KiB pages the bulk process maps")
    parser.add_argument("--memory", default="2G", help="guest RAM (QEMU -m)")
    parser.add_argument("--reps", type=int, default=3, help="runs per measurement (the median is shown)")
    parser.add_argument("--gdb-pt-dump", type=Path, metavar="DIR", help="a checkout of gdb-pt-dump (pt.py in it)")
    opts = parser.parse_args()
    if opts.gdb_pt_dump is not None and not (opts.gdb_pt_dump / "pt.py").is_file():
        parser.error(f"--gdb-pt-dump: no pt.py in {opts.gdb_pt_dump}")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ptinspect-bench-") as tmp:
        for arch in opts.arch or ARCHES:
            try:
                rows += bench_arch(arch, opts.series, opts.mib, opts.memory, opts.reps,
                                   opts.gdb_pt_dump and opts.gdb_pt_dump.resolve(), Path(tmp))
            except Exception as exc:  # one architecture's failure is reported, the others still run
                print(f"# {arch}: {type(exc).__name__}: {exc}", file=sys.stderr)
    print_table(rows)
    for row in rows:
        print(json.dumps(asdict(row)))


if __name__ == "__main__":
    main()
