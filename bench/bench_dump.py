"""`ptinspect dump` against the transport floor, per architecture and target.

Usage (from the repository root):

    .venv/bin/python bench/bench_dump.py [--arch x86_64 --arch arm64 ...] [--mib 1024]

Boots a test VM per architecture whose bulk process (init's `ptinspect.bulk=MIB`) maps MIB MiB of
written 4 KiB pages, and for each target (gdbstub, QMP, an ELF vmcore of the VM) measures:

- the floor: reading exactly the table pages the dump walked, with the fastest raw read of the
  transport (gdbstub: pipelined `m` packets; QMP: drgn's `prog.read`; ELF vmcore: the mapped file), best of 3;
- `dump --pid BULK`, `dump --kernel` and `dump --pid WORKLOAD` (the small default workload, to show
  memory does not grow with the mapped size), in-process: time until the walk begins (setup: target,
  session, drgn, the root), then walk and output; the same walk with nothing printed (`--kind
  hwpoison`); table pages walked, requests to the target, bytes read; the tracemalloc peak (a run of
  its own); and end to end: a CLI process, its wall time, peak RSS (which counts the vmlinux drgn
  maps) and peak anonymous RSS.

On the gdbstub it also measures the other read paths for the same pages: RSP one request at a
time, gdb MI (`-data-read-memory-bytes` through pygdbmi) and drgn serving the RSP reader.
It prints a table, then one JSON line per case.  Not part of the test suite.
"""
from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pickle
import pstats
import re
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ptinspect.commands.cli import main as cli_main  # noqa: E402
from ptinspect.inspector.opening import SESSION_HOOKS  # noqa: E402
from ptinspect.inspector.session import Session  # noqa: E402
from ptinspect.inspector.targets.drgn import QmpTarget, open_vmcore  # noqa: E402
from ptinspect.inspector.targets.gdbstub import parse_address  # noqa: E402
from ptinspect.inspector.targets.rsp import RspClient  # noqa: E402
from ptinspect.inspector.vm.images import ensure_image, image_for  # noqa: E402
from ptinspect.inspector.vm.qemu import boot  # noqa: E402
from ptinspect.inspector.vm.state import VM  # noqa: E402

ARCHES = ("x86_64", "arm64", "riscv64")
TARGETS = ("gdbstub", "qmp", "vmcore")
BULK = re.compile(r"PTINSPECT-BULK pid=(\d+) ")
MIB = 1 << 20


@dataclass
class Case:
    """One measured dump: a target, a root, and its figures."""

    arch: str
    target: str
    case: str
    entries: int = 0
    table_pages: int = 0
    floor_s: float = 0.0
    floor_requests: int = 0
    inproc_s: float = 0.0
    setup_s: float = 0.0
    walk_output_s: float = 0.0
    walk_s: float = 0.0
    e2e_s: float = 0.0
    requests: int = 0
    bytes_read: int = 0
    tracemalloc_peak_mib: float = 0.0
    cli_maxrss_mib: float = 0.0
    cli_anon_mib: float = 0.0
    ratio_inproc: float = 0.0
    ratio_walk: float = 0.0
    ratio_walk_output: float = 0.0
    ratio_e2e: float = 0.0
    error: str | None = None
    notes: dict[str, float] = field(default_factory=dict)


class Probe:
    """Counts what one in-process dump asks of its target and which tables its walk reads, through
    the core's public hooks (inspector.opening.SESSION_HOOKS, TableCache.on_table)."""

    def __init__(self) -> None:
        self.tables: set[tuple[int, int]] = set()
        self.requests = 0
        self.bytes = 0
        self.walk_started: float | None = None
        self._sent: Callable[[], int] = lambda: len(self.tables)  # a table is read once (TableCache)

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        SESSION_HOOKS.append(self._observe)
        try:
            yield
        finally:
            SESSION_HOOKS.remove(self._observe)

    def _observe(self, session: Session) -> None:
        """RSP packets on a gdbstub (from now: the walk and the resume), table reads on the others."""
        session.tables.on_table = self._table
        rsp = getattr(session.reader, "rsp", None)
        if rsp is not None:
            before = rsp.packets
            self._sent = lambda: rsp.packets - before

    def _table(self, pa: int, size: int) -> None:
        if self.walk_started is None:
            self.walk_started = time.perf_counter()
        self.tables.add((pa, size))

    def finish(self) -> None:
        self.requests = self._sent()
        self.bytes = sum(size for _, size in self.tables)


@dataclass
class Run:
    """One in-process dump."""

    wall: float
    setup: float  # until the walk began: target, session, drgn, the root
    entries: int  # lines printed
    tables: list[tuple[int, int]]  # (pa, size) of the table pages the walk read
    requests: int
    bytes: int
    peak_mib: float  # tracemalloc peak (0 when not traced)
    profile: str  # cProfile's top functions ("" when not profiled)


def run_inprocess(args: list[str], *, trace: bool = False, profile: bool = False) -> Run:
    """`ptinspect ARGS` run in a forked child of this process: modules are imported already (no
    CLI start), and no run inherits another's heap or garbage."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(read_fd)
        try:
            result: Run | str = _run_here(args, trace, profile)
        except BaseException as exc:  # reported by the parent
            result = f"{type(exc).__name__}: {exc}"
        with os.fdopen(write_fd, "wb") as pipe:
            pickle.dump(result, pipe)
        os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as pipe:
        result = pickle.load(pipe)
    os.waitpid(pid, 0)
    if isinstance(result, str):
        raise RuntimeError(f"in-process dump failed: {result}")
    return result


def _run_here(args: list[str], trace: bool, profile: bool) -> Run:
    probe = Probe()
    prof = cProfile.Profile() if profile else None
    with open(os.devnull, "w") as sink:
        out = EntryCounter(sink)
        if trace:
            tracemalloc.start()
        start = time.perf_counter()
        with probe.installed(), contextlib.redirect_stdout(out):
            if prof is not None:
                prof.enable()
            cli_main(args, standalone_mode=False)
            if prof is not None:
                prof.disable()
        wall = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1] / MIB if trace else 0.0
    probe.finish()
    text = ""
    if prof is not None:
        stream = io.StringIO()
        pstats.Stats(prof, stream=stream).sort_stats("tottime").print_stats(20)
        text = stream.getvalue()
    return Run(wall, (probe.walk_started or start) - start, out.lines, sorted(probe.tables), probe.requests,
               probe.bytes, peak, text)


class EntryCounter(io.TextIOBase):
    """A stdout that discards the dump and counts its lines."""

    def __init__(self, sink: io.TextIOBase) -> None:
        self.sink = sink
        self.lines = 0

    def write(self, text: str) -> int:
        self.lines += text.count("\n")
        return self.sink.write(text)


def run_cli(args: list[str]) -> tuple[float, float, float, int]:
    """(wall s, peak RSS MiB, peak anonymous RSS MiB, exit status) of `ptinspect ARGS` as its own
    process.  RSS counts the vmlinux drgn maps (file pages); RssAnon, sampled every 20 ms, does not."""
    errors = tempfile.TemporaryFile()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "ptinspect.commands.cli", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=errors)
    anon = 0
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        with contextlib.suppress(OSError, ValueError, TypeError):  # TypeError: a zombie has no RssAnon
            status_text = Path(f"/proc/{proc.pid}/status").read_text()
            anon = max(anon, int(re.search(r"RssAnon:\s+(\d+)", status_text)[1]))  # type: ignore[index]
        time.sleep(0.02)
    wall = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    with errors:
        if code:
            errors.seek(0)
            sys.stderr.write(errors.read().decode(errors="replace"))
    return wall, usage.ru_maxrss / 1024, anon / 1024, code


def best(times: int, fn: Callable[[], object]) -> float:
    out = []
    for _ in range(times):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return min(out)


# -- floors ------------------------------------------------------------------------------------

@contextlib.contextmanager
def rsp_physical(address: str) -> Iterator[RspClient]:
    """A raw RSP connection in physical-memory mode (restored and detached afterwards)."""
    host, port = parse_address(address)
    rsp = RspClient(host, port)
    rsp.stop_reason()
    before = rsp.query("qqemu.PhyMemMode")
    rsp.request("Qqemu.PhyMemMode:1")
    try:
        yield rsp
    finally:
        if before in (b"0",):
            rsp.request(b"Qqemu.PhyMemMode:" + before)
        rsp.detach()


def gdbstub_floor(address: str, tables: list[tuple[int, int]]) -> tuple[float, int, dict[str, float]]:
    """The pipelined RSP floor and the other gdbstub read paths for the same pages."""
    paths: dict[str, float] = {}
    with rsp_physical(address) as rsp:
        before = rsp.packets
        floor = best(3, lambda: rsp.read_many(tables))
        requests = (rsp.packets - before) // 3

        def one_at_a_time() -> None:
            chunk = rsp.chunk
            for pa, size in tables:
                for at in range(pa, pa + size, chunk):
                    rsp.request(b"m%x,%x" % (at, min(chunk, pa + size - at)))

        paths["rsp_sequential_s"] = best(1, one_at_a_time)
        paths["drgn_over_rsp_s"] = drgn_over_rsp(rsp, tables)
    paths["gdb_mi_s"] = gdb_mi(address, tables)
    return floor, requests, paths


def drgn_over_rsp(rsp: RspClient, tables: list[tuple[int, int]]) -> float:
    """drgn serving reads from a segment backed by the RSP client (a drgn-served reader; the
    platform does not matter to physical reads)."""
    import drgn

    prog = drgn.Program(drgn.Platform(drgn.Architecture.X86_64, drgn.PlatformFlags.IS_64_BIT
                                      | drgn.PlatformFlags.IS_LITTLE_ENDIAN))
    prog.add_memory_segment(0, 1 << 52, lambda address, count, offset, physical: rsp.read_memory(address, count),
                            physical=True)
    return best(1, lambda: [prog.read(pa, size, True) for pa, size in tables])


def gdb_mi(address: str, tables: list[tuple[int, int]]) -> float:
    """gdb's MI `-data-read-memory-bytes` per table page (gdb in QEMU's physical-memory mode)."""
    from pygdbmi.gdbcontroller import GdbController

    gdb = GdbController(["gdb-multiarch", "--nx", "--quiet", "--interpreter=mi3"],
                        time_to_check_for_additional_output_sec=0.001)
    try:
        for command in ("-gdb-set pagination off", f"-target-select remote {address}",
                        "-interpreter-exec console \"maintenance packet Qqemu.PhyMemMode:1\""):
            gdb.write(command, timeout_sec=30)

        def read_all() -> None:
            for pa, size in tables:
                reply = gdb.write(f"-data-read-memory-bytes {pa:#x} {size}", timeout_sec=30)
                if not any(r.get("message") == "done" for r in reply):
                    raise RuntimeError(f"gdb MI read at {pa:#x} failed: {reply}")

        return best(1, read_all)
    finally:
        with contextlib.suppress(Exception):
            gdb.write("-target-detach", timeout_sec=10)
        gdb.exit()


def read_floor(open_target: Callable[[], object], tables: list[tuple[int, int]]) -> tuple[float, int]:
    """The target's own physical read (drgn's prog.read over QMP; a slice of the mapped ELF
    vmcore) of every table page, best of 3."""
    target = open_target()
    try:
        read = target.read  # type: ignore[attr-defined]
        return best(3, lambda: [read(pa, size) for pa, size in tables]), len(tables)
    finally:
        target.close()  # type: ignore[attr-defined]


# -- one VM --------------------------------------------------------------------------------------

def bulk_pid(vm: VM) -> int:
    match = BULK.search(Path(vm.serial_log).read_bytes().decode(errors="replace"))
    if match is None:
        raise SystemExit(f"{vm.name}: no PTINSPECT-BULK line in {vm.serial_log}")
    return int(match[1])


def bench_arch(arch: str, series: str, mib: int, memory: str, targets: tuple[str, ...], fmt: str,
               profile: bool, workdir: Path) -> list[Case]:
    image = ensure_image(image_for(arch, series))
    vm = boot(arch, series, append=f"ptinspect.bulk={mib}", qemu_args=["-m", memory], name=f"bench-{arch}",
              detach=False)
    cases: list[Case] = []
    try:
        kernel = ["--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
        roots = {"pid-bulk": ["--pid", str(bulk_pid(vm))], "kernel": ["--kernel"],
                 "pid-workload": ["--pid", str(vm.workload_pid)]}
        vmcore = workdir / f"{arch}.vmcore"
        for target in targets:
            if target == "vmcore":
                wall, _, _, status = run_cli(["vmcore", "--qmp", vm.qmp, "--gdb", vm.gdb, "--vmlinux",
                                              str(image.vmlinux), "--force", str(vmcore)])
                print(f"# {arch}: vmcore of {memory} written in {wall:.1f} s (status {status})", file=sys.stderr)
            where = {"gdbstub": ["--gdb", vm.gdb], "qmp": ["--qmp", vm.qmp], "vmcore": ["--vmcore", str(vmcore)]}
            for name, root in roots.items():
                case = Case(arch, target, name)
                cases.append(case)
                args = ["dump", *where[target], *kernel, *root, "--format", fmt]
                try:
                    measure(case, args, vm, vmcore, profile and target == "gdbstub" and name == "pid-bulk")
                except Exception as exc:  # a failed case is reported, the others still run
                    case.error = f"{type(exc).__name__}: {exc}"
                print(json.dumps(asdict(case)), file=sys.stderr, flush=True)
        vmcore.unlink(missing_ok=True)
    finally:
        vm.stop()
    return cases


def measure(case: Case, args: list[str], vm: VM, vmcore: Path, profile: bool) -> None:
    run = run_inprocess(args)
    case.inproc_s, case.setup_s, case.entries = run.wall, run.setup, run.entries
    case.walk_output_s = run.wall - run.setup
    case.requests, case.bytes_read, case.table_pages = run.requests, run.bytes, len(run.tables)
    walk = run_inprocess([*args, "--kind", "hwpoison"])  # the same walk, (almost) nothing printed
    case.walk_s = walk.wall - walk.setup
    case.tracemalloc_peak_mib = run_inprocess(args, trace=True).peak_mib
    case.e2e_s, case.cli_maxrss_mib, case.cli_anon_mib, status = run_cli(args)
    if status:
        case.error = f"CLI exit status {status}"
    if case.target == "gdbstub":
        case.floor_s, case.floor_requests, case.notes = gdbstub_floor(vm.gdb, run.tables)
    elif case.target == "qmp":
        case.floor_s, case.floor_requests = read_floor(lambda: QmpTarget(vm.qmp), run.tables)
    else:
        case.floor_s, case.floor_requests = read_floor(lambda: open_vmcore(vmcore), run.tables)
    case.ratio_inproc = case.inproc_s / case.floor_s
    case.ratio_walk = case.walk_s / case.floor_s
    case.ratio_walk_output = case.walk_output_s / case.floor_s
    case.ratio_e2e = case.e2e_s / case.floor_s
    if profile:  # a run of its own: cProfile slows what it watches
        print(f"# profile of {case.arch} {case.target} {case.case} (in-process, cProfile)\n"
              f"{run_inprocess(args, profile=True).profile}", file=sys.stderr)


COLUMNS = [("arch", "arch", "{}"), ("target", "target", "{}"), ("case", "case", "{}"),
           ("entries", "lines", "{}"), ("table_pages", "tables", "{}"), ("floor_s", "floor ms", "ms"),
           ("inproc_s", "in-proc s", "{:.2f}"), ("setup_s", "setup s", "{:.2f}"),
           ("walk_s", "walk s", "{:.2f}"), ("walk_output_s", "walk+out s", "{:.2f}"), ("e2e_s", "CLI s", "{:.2f}"),
           ("ratio_walk", "walk/floor", "{:.0f}"), ("ratio_walk_output", "walk+out/floor", "{:.0f}"),
           ("ratio_e2e", "CLI/floor", "{:.0f}"),
           ("requests", "requests", "{}"), ("bytes_read", "MiB read", "mib"),
           ("tracemalloc_peak_mib", "py peak MiB", "{:.1f}"), ("cli_maxrss_mib", "CLI RSS MiB", "{:.0f}"),
           ("cli_anon_mib", "CLI anon MiB", "{:.0f}")]


def cell(value: object, fmt: str) -> str:
    if fmt == "ms":
        return f"{float(value) * 1e3:.1f}"  # type: ignore[arg-type]
    if fmt == "mib":
        return f"{int(value) / MIB:.1f}"  # type: ignore[call-overload]
    return fmt.format(value)


def print_table(cases: list[Case]) -> None:
    rows = [[title for _, title, _ in COLUMNS]]
    rows += [[cell(getattr(c, key), fmt) for key, _, fmt in COLUMNS] + ([f"ERROR {c.error}"] if c.error else [])
             for c in cases]
    widths = [max(len(r[i]) for r in rows if i < len(r)) for i in range(len(COLUMNS))]
    for row in rows:
        print("  ".join(v.rjust(w) if i >= 3 else v.ljust(w) for i, (v, w) in enumerate(zip(row, widths)))
              + ("  " + row[-1] if len(row) > len(COLUMNS) else ""))
    paths = [c for c in cases if c.notes]
    if paths:
        print("\ngdbstub read paths for the same table pages (ms):")
        for c in paths:
            print(f"  {c.arch} {c.case}: rsp pipelined {c.floor_s * 1e3:.1f}, "
                  + ", ".join(f"{k.removesuffix('_s').replace('_', ' ')} {v * 1e3:.1f}" for k, v in c.notes.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", choices=ARCHES, help="repeatable; default: all three")
    parser.add_argument("--series", default="7.2")
    parser.add_argument("--mib", type=int, default=1024, help="MiB of 4 KiB pages the bulk process maps")
    parser.add_argument("--memory", default="2G", help="guest RAM (QEMU -m; the harness's 1G is too small)")
    parser.add_argument("--target", action="append", choices=TARGETS, help="repeatable; default: all three")
    parser.add_argument("--format", default="table", choices=("table", "json"), help="the dumps' output format")
    parser.add_argument("--profile", action="store_true", help="cProfile the in-process gdbstub bulk dump")
    opts = parser.parse_args()
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="ptinspect-bench-", dir=os.environ.get("TMPDIR")) as tmp:
        for arch in opts.arch or ARCHES:
            cases += bench_arch(arch, opts.series, opts.mib, opts.memory, tuple(opts.target or TARGETS),
                                opts.format, opts.profile, Path(tmp))
    print_table(cases)
    for case in cases:
        print(json.dumps(asdict(case)))


if __name__ == "__main__":
    main()
