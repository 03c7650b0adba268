"""ptinspect is read-only towards a live VM (issue 12): every command a user runs, through a
recording proxy between ptinspect and QEMU's gdbstub (rsp_proxy.py), on every architecture.

What is asserted comes from the wire and from QEMU, not from ptinspect: the proxy's own parse of
every packet ptinspect sent (no memory or register write, no breakpoint, no monitor command;
`watch` alone places write watchpoints, and removes each), QEMU's physical-memory mode asked on a
connection of the test's own before and after, and QMP's run state after each command.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import KernelImage, ensure_image, image_for
from ptinspect.inspector.vm.manifest import Manifest, parse
from ptinspect.inspector.vm.qemu import boot
from ptinspect.inspector.vm.state import VM

from .kernels import IMAGES
from .rsp_proxy import Proxy, Session, phys_mode_sets, stub_query, unmatched_watchpoints, violations

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ARCHES = [(arch, series) for arch, series in IMAGES if series == "7.2"]  # one kernel per architecture
# The top 2 GiB of the address space: canonical for every root of the three (x86-64 and riscv64 map
# the kernel image at 0xffffffff80000000; arm64's TTBR1 half holds its fixmap there).
KERNEL_TOP = "0xffffffff80000000-0x10000000000000000"
# 2 TiB: beyond the RAM of every test VM (1 GiB at 0, 0x40000000 or 0x80000000) and beyond QEMU
# virt's high PCIe window (512 GiB-1 TiB, hw/arm/virt.c), inside every paging mode's PA width.
BEYOND_RAM = 0x200_0000_0000


@pytest.fixture(scope="module", params=ARCHES, ids=[f"{a}-{s}" for a, s in ARCHES])
def live_vm(request: pytest.FixtureRequest) -> Iterator[tuple[VM, KernelImage]]:
    arch, series = request.param
    image = ensure_image(image_for(arch, series))
    vm = boot(arch, series, detach=False)
    try:
        yield vm, image
    finally:
        vm.stop()


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def status(vm: VM) -> str:
    with Qmp(vm.qmp, timeout=10) as qmp:
        return qmp.execute("query-status")["status"]


def proxied(vm: VM, name: str, *args: str, watch: bool = False,
            capsys: pytest.CaptureFixture[str] | None = None) -> tuple[subprocess.CompletedProcess, Session]:
    """`ptinspect NAME ARGS --gdb PROXY`, and the assertions every live command must pass: only
    read-only requests (watch: its debug requests too), the physical-memory mode as it was, the
    session ended by a detach the stub accepted (QEMU resumes the VM then) and the VM running."""
    mode = stub_query(vm.gdb, b"qqemu.PhyMemMode")
    assert mode in (b"0", b"1"), mode
    proxy = Proxy(vm.gdb)
    try:
        proc = cli(name, "--gdb", proxy.address, *args)
        (session,) = proxy.settled(1)
    finally:
        proxy.close()
    counts = dict(sorted(session.counts().items()))
    if capsys is not None:
        with capsys.disabled():
            shown = " ".join(Path(a).name if a.startswith("/") else a for a in args[:2])
            print(f"\n[proxy] {vm.arch} {name} {shown}: exit {proc.returncode}, {counts}", flush=True)
    assert violations(session, watch) == [], violations(session, watch)
    sets = phys_mode_sets(session)
    assert sets[:1] == [b"1"] and set(sets) <= {b"1", mode}, sets  # switched on, then back to what it was
    if mode == b"0":
        assert sets[-1] == b"0", sets
    assert stub_query(vm.gdb, b"qqemu.PhyMemMode") == mode
    requests = session.requests()
    replies = [u.payload for u in session.units if u.side == "stub" and u.kind == "packet"]
    assert requests[-1][:1] == b"D" and replies[-1] == b"OK", (requests[-3:], replies[-3:])
    assert status(vm) == "running"
    return proc, session


def present_page(manifest: Manifest) -> tuple[int, int]:
    """A present page of the workload and its PA, from the guest's pagemap."""
    page = next(p for r in manifest.regions if r.pid == manifest.pid and r.status == "ok"
                for p in r.pages if p.pagemap.present)
    assert page.pagemap.pfn is not None
    return page.va, page.pagemap.pfn * manifest.page_size + page.va % manifest.page_size


def test_the_commands_only_read(live_vm, tmp_path: Path, capsys) -> None:
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    kernel = ["--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
    pid = ["--pid", str(manifest.pid)]

    proc, _ = proxied(vm, "dump", *pid, *kernel, "--format", "json", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert len(json.loads(proc.stdout)["entries"]) > 100

    proc, _ = proxied(vm, "dump", "--kernel", "--range", KERNEL_TOP, *kernel, "--format", "json", capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert any(e["kind"] == "present" for e in json.loads(proc.stdout)["entries"])

    va, pa = present_page(manifest)
    proc, _ = proxied(vm, "translate", *pid, *kernel, "--format", "json", hex(va), capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    assert int(json.loads(proc.stdout)["pa"], 16) == pa

    a, b = tmp_path / "a.json", tmp_path / "b.json"
    for path in (a, b):
        proc, _ = proxied(vm, "snapshot", *pid, *kernel, str(path), capsys=capsys)
        assert proc.returncode == 0 and path.is_file(), proc.stderr

    # Offline: no target at all.  0 equal, 1 different (the idle workload's pages may age between the two).
    proc = cli("diff", str(a), str(b), "--format", "json")
    assert proc.returncode in (0, 1) and "differences" in json.loads(proc.stdout), proc.stderr
    proc = cli("validate", str(a))
    assert proc.returncode == 0 and "# clean" in proc.stdout, proc.stdout + proc.stderr

    # The live forms of both.
    proc, _ = proxied(vm, "diff", str(a), *kernel, "--format", "json", capsys=capsys)
    assert proc.returncode in (0, 1) and "differences" in json.loads(proc.stdout), proc.stderr
    proc, _ = proxied(vm, "validate", *pid, *kernel, capsys=capsys)
    assert proc.returncode == 0 and "# clean" in proc.stdout, proc.stdout + proc.stderr


@pytest.mark.only_arches("x86_64")  # watch exists for x86-64 (tests/integration/test_watch.py says why)
def test_watch_removes_every_watchpoint_it_placed(live_vm, capsys) -> None:
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    va, _ = present_page(manifest)
    page = va & ~(manifest.page_size - 1)
    proc, session = proxied(vm, "watch", "--pid", str(manifest.pid), "--vmlinux", str(image.vmlinux),
                            "--config-file", str(image.config), "--range", f"{page:#x}-{page + 0x200000:#x}",
                            "--for", "5", "--format", "json", watch=True, capsys=capsys)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout.splitlines()[-1])["summary"]
    assert summary["vm"] == "running", summary
    inserted = [p for p in session.requests() if p.startswith(b"Z2,")]
    assert inserted and len(inserted) >= len(summary["watchpoints_placed"]) > 0, (inserted, summary)
    assert unmatched_watchpoints(session) == []
    assert b"c" in session.requests()  # the VM ran under the watch


@pytest.mark.parametrize("with_kernel", [False, True], ids=["no-vmlinux", "vmlinux"])
def test_a_root_beyond_ram_is_refused_by_name(live_vm, tmp_path: Path, with_kernel: bool, capsys) -> None:
    """Without the kernel QEMU's stub reads zeros there (its RAM is unknown); with it, memblock
    says where RAM is.  Either way: exit 2 naming the root, never an empty table, and the VM as it was."""
    vm, image = live_vm
    kernel = ["--vmlinux", str(image.vmlinux)] if with_kernel else []
    root = ["--root", hex(BEYOND_RAM)]
    out = tmp_path / "s.json"
    for name, args in (("dump", root), ("translate", [*root, "0x1000"]), ("snapshot", [*root, str(out)])):
        proc, _ = proxied(vm, name, *kernel, *args, capsys=capsys)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert f"the root table at {BEYOND_RAM:#x}" in proc.stderr, proc.stderr
        assert "outside the readable physical memory" in proc.stderr, proc.stderr
        assert proc.stdout == "" and not out.exists()
    # The same command on the root the CPU uses is a walk (the refusal is about the root, not --root).
    proc, _ = proxied(vm, "dump", *kernel, "--kernel", "--range", KERNEL_TOP, capsys=capsys)
    assert proc.returncode == 0 and " entries" in proc.stdout, proc.stderr

