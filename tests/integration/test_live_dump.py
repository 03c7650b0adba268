"""ptinspect dump over the gdbstub against real Debian kernels, checked against the
guest kernel's own pagemap for every page of every workload region."""
from __future__ import annotations

import bisect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import ensure_image, image_for, load_manifest
from ptinspect.inspector.vm.manifest import parse
from ptinspect.inspector.vm.qemu import boot

from .kernels import IDS, IMAGES, NOT_MADE
from .pagemap_check import compare

pytestmark = pytest.mark.integration

PTINSPECT = [sys.executable, "-m", "ptinspect.commands.cli"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module", params=IMAGES, ids=IDS)
def live_vm(request):
    arch, series = request.param
    image = ensure_image(image_for(arch, series))
    vm = boot(arch, series, detach=False)  # the harness picks a free name
    try:
        yield vm, image
    finally:
        vm.stop()


def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    proc = subprocess.run([*PTINSPECT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc


def dump_json(vm, image, *args: str) -> dict:
    proc = run("dump", "--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config),
               "--format", "json", *args)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_workload_pages_match_pagemap(live_vm):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    for pid in filter(None, (manifest.pid, manifest.child_pid)):
        doc = dump_json(vm, image, "--pid", str(pid))
        assert doc["schema"] == "ptinspect.snapshot/1"
        assert doc["target"]["layout"] is not None, doc["target"]
        mismatches, compared = compare(manifest, doc, pid)
        print(f"{vm.arch} {manifest.kernel_release} pid {pid}: {compared} pages compared, {len(mismatches)} mismatches")
        assert not mismatches, "\n".join(map(str, mismatches[:40]))
        if pid == manifest.pid:
            assert compared > 100
        unknown = [e for e in doc["entries"] if e["kind"] == "unknown"]
        assert not unknown, unknown[:5]


def test_kinds_not_made_are_what_the_kernel_cannot_make(live_vm):
    """Every kind the kernel can make is made (`ok`); each one it cannot is listed `unsupported` with
    the workload's reason, and exactly those (kernels.NOT_MADE says why, from the kernel)."""
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    expected = NOT_MADE[(image.arch, load_manifest()[image.id].kernel)]
    not_made = {r.kind: (r.status, r.reason) for r in manifest.regions if r.status != "ok"}
    print(f"{vm.arch} {manifest.kernel_release}: not made: {not_made}")
    assert set(not_made) == set(expected), (not_made, expected)
    assert all(status == "unsupported" and reason for status, reason in not_made.values()), not_made
    # init set everything up (modules, knobs, zram swap); its one status line says whether the HMM test
    # driver is there (test_hmm.py makes device memory where it is).
    problems = [line for line in manifest.init_log
                if not line.startswith(("hmm: test_hmm loaded;", "hmm: no test_hmm driver:"))]
    assert problems == [], manifest.init_log


def test_kernel_tables_decode(live_vm):
    vm, image = live_vm
    doc = dump_json(vm, image, "--kernel")
    kinds = {e["kind"] for e in doc["entries"]}
    assert "present" in kinds
    unknown = [e for e in doc["entries"] if e["kind"] == "unknown"]
    assert not unknown, unknown[:5]


def test_translate_matches_pagemap(live_vm):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    page = next(p for r in manifest.regions if r.pid == manifest.pid and r.status == "ok"
                for p in r.pages if p.pagemap.present)
    proc = run("translate", "--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--pid", str(manifest.pid),
               "--format", "json", hex(page.va))
    assert proc.returncode == 0, proc.stderr
    walk = json.loads(proc.stdout)
    assert int(walk["pa"], 16) == page.pagemap.pfn * manifest.page_size + (page.va % manifest.page_size)


def test_bad_input_is_one_line(live_vm):
    vm, image = live_vm
    proc = run("dump", "--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--pid", "999999")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "no task with pid 999999" in proc.stderr


# The last page of the address space: canonical for every kernel root (arm64's TTBR1 root walks the
# upper half only).
TOP_PAGE = "0xfffffffffffff000-0x10000000000000000"


def test_vm_runs_on_after_a_dump_and_stays_stopped_when_asked(live_vm):
    vm, image = live_vm
    with Qmp(vm.qmp) as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        assert run("dump", "--gdb", vm.gdb, "--kernel", "--range", TOP_PAGE).returncode == 0
        assert qmp.execute("query-status")["status"] == "running"
        assert run("dump", "--gdb", vm.gdb, "--kernel", "--keep-stopped", "--range", TOP_PAGE).returncode == 0
        assert qmp.execute("query-status")["status"] == "paused"
        qmp.execute("cont")


def info_mem(vm) -> list[tuple[int, int, int | None, str]]:
    """QEMU's own walk of the current root ('info mem'): (va, size, pa or None, attributes)."""
    with Qmp(vm.qmp) as qmp:
        text = qmp.execute("human-monitor-command", **{"command-line": "info mem"})
    out = []
    for line in text.splitlines():
        parts = line.split()
        if vm.arch == "riscv64" and len(parts) == 4 and parts[0][0] in "0123456789abcdef":  # vaddr paddr size rwxugad
            # QEMU prints (pte >> 10) << 12 unmasked: Svpbmt bits 62:61 land in bits 64:63 of its
            # "paddr"; riscv PAs are 56 bits (Sv39/48/57), so keep those.
            out.append((int(parts[0], 16), int(parts[2], 16), int(parts[1], 16) & ((1 << 56) - 1), parts[3]))
        elif vm.arch == "x86_64" and len(parts) == 3 and "-" in parts[0]:  # start-end size urw
            start, end = (int(x, 16) for x in parts[0].split("-"))
            out.append((start, end - start, None, parts[2]))
    return out


# QEMU has no `info mem` for arm64: there drgn's follow_phys is the independent view of the kernel
# mappings (test_offline_targets.py).
@pytest.mark.only_arches("x86_64", "riscv64")
def test_kernel_mappings_match_qemu_info_mem(live_vm):
    """Every kernel-half range QEMU's monitor walks is mapped alike in ptinspect's init_mm dump
    (first, middle and last page of each range: physical address on riscv64, permissions on both)."""
    vm, image = live_vm
    ranges = [r for r in info_mem(vm) if r[0] >> 63]
    assert len(ranges) > 3
    doc = dump_json(vm, image, "--kernel")
    entries = sorted(doc["entries"], key=lambda e: int(e["va"], 16))
    starts = [int(e["va"], 16) for e in entries]
    checked = 0
    for va, size, pa, attr in ranges:
        for addr in dict.fromkeys((va, va + (size // 2 & ~0xFFF), va + size - 0x1000)):
            e = entries[bisect.bisect_right(starts, addr) - 1]
            assert int(e["va"], 16) <= addr < int(e["va"], 16) + e["size"], (hex(addr), attr)
            assert e["kind"] == "present", (hex(addr), e)
            a = e["access"]
            if vm.arch == "riscv64":
                phys = int(e["pfn"], 16) * 4096 + (addr - int(e["va"], 16))
                assert phys == pa + (addr - va), (hex(addr), hex(phys), hex(pa + addr - va))
                assert (a["read"], a["write"], a["exec"], a["user"]) == (
                    attr[0] == "r", attr[1] == "w", attr[2] == "x", attr[3] == "u"), (hex(addr), attr, a)
            else:
                assert (a["user"], a["write"]) == (attr[0] == "u", attr[2] == "w"), (hex(addr), attr, a)
            checked += 1
    print(f"{vm.arch}: {checked} kernel addresses in {len(ranges)} 'info mem' ranges agree")
