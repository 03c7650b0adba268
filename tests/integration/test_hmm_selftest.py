"""The kernel's own HMM selftest as a witness (issue 14): tools/testing/selftests/mm/hmm-tests.c runs in the
guest against test_hmm.ko, and ptinspect's view of its pages is taken while they sit in device memory.

The kernel's verdict comes from the kselftest harness's TAP lines (`ok N hmm.hmm_device_private.CASE`).
The moment to look is found by this test's own gdbstub connection (not ptinspect's): a breakpoint on
test_hmm.ko's mmu interval notifier `dmirror_interval_invalidate` (lib/test_hmm.c; the driver registers
it over the whole address space at open, and every invalidation of the test process calls it: the
munmap that ends `migrate`, the CPU fault that revokes `exclusive`, ...). At each hit the VM is left
stopped and `ptinspect dump --kind ...` is run on the hmm-tests tasks (pids from ptinspect's own answer
to `--comm hmm-tests`); the hit where one task's entries of the case's kind cover what the case moved is
the snapshot checked: device-private frames inside the driver's device memory (/proc/iomem
"hmm_dmirror", read in the guest after the case), device-exclusive ones in RAM (not in it).
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.targets.rsp import RspClient
from ptinspect.inspector.vm.hmm import build_module
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.selftests import GUEST_PATH, finish, kselftest_verdicts, start
from ptinspect.inspector.vm.state import VM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
IMAGES = [("x86_64", "7.2"), ("arm64", "7.2")]
NOTIFIER = "dmirror_interval_invalidate"  # lib/test_hmm.c
MAX_HITS = 100  # migrate_vma_setup() invalidates once per 16-page chunk of the 4 MiB buffer
HMM_BUFFER_SIZE = 1024 << 12  # tools/testing/selftests/mm/hmm-tests.c
PMD_SIZE = 2 << 20  # read_pmd_pagesize() of the 4 KiB-page guests
# case -> (the kind its pages have while the device holds them, the bytes it moves: hmm-tests.c, where to
# stop). The driver's notifier runs at every invalidation of the process: migrate_vma_setup() of each
# 16-page chunk, then the munmap that ends the case (device-private). make_device_exclusive() invalidates
# once per page; its entries are first read by the CPU fault on them (mm/memory.c do_swap_page()).
CASES = {
    "migrate": ("device-private-write", HMM_BUFFER_SIZE, NOTIFIER),
    "exclusive": ("device-exclusive", HMM_BUFFER_SIZE, "do_swap_page"),
    "migrate_anon_huge_empty": ("device-private-read", PMD_SIZE, NOTIFIER),  # PROT_READ, MADV_HUGEPAGE
}
KINDS = ("device-private-write", "device-private-read", "device-exclusive", "migration-read",
         "migration-read-exclusive", "migration-write")


def guest(machine: VM, *argv: str, timeout: float = 600) -> tuple[int, tuple[str, ...]]:
    result = finish(machine, start(machine, list(argv)), timeout)
    return result.status, result.lines


def dump(machine: VM, *args: str) -> subprocess.CompletedProcess[str]:
    kinds = [word for kind in KINDS for word in ("--kind", kind)]
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", "dump", "--gdb", machine.gdb, "--vmlinux",
                           str(machine.vmlinux), "--keep-stopped", *args, *kinds, "--entries", "--format", "json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)


def case_task(machine: VM) -> int:
    """The pid of the hmm-tests task running the case: the harness forks it last (the highest pid of the
    ones ptinspect names for --comm hmm-tests)."""
    ask = dump(machine, "--comm", "hmm-tests")
    assert ask.returncode != 0, "one hmm-tests task only: the harness did not fork the case"
    listed = re.search(r"tasks are named 'hmm-tests' \(pids ([\d, ]+)\)", ask.stderr)
    assert listed, f"ptinspect found no hmm-tests tasks: {ask.stderr}"
    return max(int(pid) for pid in listed[1].split(","))


def entries_of(machine: VM, pid: int) -> list[dict]:
    proc = dump(machine, "--pid", str(pid))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["entries"]


def snapshot_at_breakpoint(machine: VM, address: int, case: str, kind: str, size: int) -> tuple[list[dict], str]:
    """Run CASE; at each hit of the breakpoint dump the hmm-tests tasks; the entries of the first hit
    where one task's KIND entries cover SIZE bytes, and the run's seq (the VM runs on, the breakpoint gone)."""
    host, port = machine.gdb.rsplit(":", 1)
    seq: str | None = None
    seen: list[dict[str, int]] = []  # per stop: kind -> bytes
    pid = 0
    for _ in range(MAX_HITS):
        rsp = RspClient(host, int(port), timeout=30)  # connecting stops the VM
        try:
            if seq is not None:  # stopped on the breakpoint's address: one step off it before it goes back
                assert rsp.request("s", timeout=60).startswith(b"T"), "the gdbstub did not single-step"
            assert rsp.request(f"Z1,{address:x},1") == b"OK"
            rsp.resume()
            if seq is None:  # sent while the VM runs: the guest UART loses what comes while it is stopped
                seq = start(machine, [GUEST_PATH, "-r", f"hmm.hmm_device_private.{case}"])
            stop = rsp.wait_stop(600)
            assert stop is not None, f"{case}: {address:#x} was not reached within 600 s"
            assert rsp.request(f"z1,{address:x},1") == b"OK"
        finally:
            rsp.close()  # no detach: the VM stays stopped for ptinspect
        pid = pid or case_task(machine)
        entries = entries_of(machine, pid)
        seen.append({kind: sum(e["size"] for e in entries if e["kind"] == kind) for kind in {e["kind"] for e in entries}})
        mine = [entry for entry in entries if entry["kind"] == kind]
        if sum(entry["size"] for entry in mine) == size:
            with Qmp(machine.qmp, timeout=30) as qmp:
                qmp.execute("cont")
            return mine, seq
    raise AssertionError(f"{case}: no stop of {MAX_HITS} showed {size} bytes of {kind} entries: {seen}")


@pytest.mark.parametrize("arch,series", IMAGES, ids=[f"{a}-{s}" for a, s in IMAGES])
def test_hmm_selftest_witness(vm: Callable[..., VM], arch: str, series: str) -> None:
    image = ensure_image(image_for(arch, series))
    build_module(image)  # also fetches the selftest source the initramfs compiles hmm-tests from
    machine = vm(arch, series)
    init_log = json.loads(Path(machine.manifest).read_text()).get("init_log") or []
    assert any(line.startswith("hmm: test_hmm loaded") for line in init_log), init_log

    # The kernel's verdict on every device-private case, run as the selftest runs them.
    status, lines = guest(machine, GUEST_PATH, "-v", "hmm_device_private", "-v", "hmm2_device_private")
    verdicts = kselftest_verdicts(lines)
    print(f"\n[hmm-tests {arch} {series}] exit {status}: "
          + ", ".join(f"{name.split('.')[-1]}={v}" for name, v in verdicts.items()))
    assert verdicts, "\n".join(lines[-30:])
    for case in CASES:
        assert verdicts.get(f"hmm.hmm_device_private.{case}") == "pass", f"the kernel's own verdict on {case}"

    for case, (kind, size, symbol) in CASES.items():
        _, lines = guest(machine, "/bin/busybox", "grep", "-w", symbol, "/proc/kallsyms")
        found = [line.split()[0] for line in lines if line.split()[2:3] == [symbol]]  # not symbol.cold
        assert len(found) == 1, lines
        address = int(found[0], 16)
        # The case's own checks can fail for a reason of the guest's while it is stopped and resumed
        # (seen once, in a full run: migrate's verdict "fail" on arm64 7.2, a pass when run again): its
        # lines are printed and the case is run once more, which must pass.
        for attempt in (1, 2):
            entries, seq = snapshot_at_breakpoint(machine, address, case, kind, size)
            run = finish(machine, seq, 600)
            if kselftest_verdicts(run.lines) == {f"hmm.hmm_device_private.{case}": "pass"} or attempt == 2:
                break
            print(f"\n[hmm-tests {arch} {series}] {case} failed under the stops, run again; its lines:\n"
                  + "\n".join(run.lines[-40:]))
        assert kselftest_verdicts(run.lines) == {f"hmm.hmm_device_private.{case}": "pass"}, run.lines
        _, iomem = guest(machine, "/bin/busybox", "grep", "hmm_dmirror", "/proc/iomem")
        ranges = [tuple(int(x, 16) for x in line.split(":")[0].strip().split("-")) for line in iomem]
        assert ranges, "no hmm_dmirror device memory in /proc/iomem"
        for entry in entries:
            pa = int(entry["pfn"], 16) * 4096
            inside = any(lo <= pa <= hi for lo, hi in ranges)
            if kind == "device-exclusive":
                assert entry["pfn_space"] == "phys" and not inside, entry
            else:
                assert entry["pfn_space"] == "device" and inside, f"{entry} outside {iomem}"
        print(f"[hmm-tests {arch} {series}] {case}: pass; {len(entries)} {kind} entries ({size} bytes) "
              f"at the stop")
