"""The README's Python API examples, run as written against a vmcore, a drgn Program and a live VM,
and their results checked against the guest kernel's own view: /proc/PID/pagemap (frames, swap and
marker entries, uffd-wp, soft-dirty), as the workload recorded it.

One x86-64 VM: its kernel has both CONFIG_MEM_SOFT_DIRTY and uffd-wp, and the workload makes
uffd-wp protected present pages.  Fails, never skips, when QEMU or the kernel image is missing.
"""
from __future__ import annotations

import bisect
import contextlib
import importlib
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import drgn
import pytest

from ptinspect.inspector import api
from ptinspect.inspector.dump import Row
from ptinspect.inspector.records import item_record
from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.manifest import MAPPED_STATUSES, Manifest, parse
from ptinspect.inspector.vm.state import VM

from .pagemap_check import compare

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PTINSPECT = [sys.executable, "-m", "ptinspect.commands.cli"]


def readme_blocks(section: str = "## Python API") -> list[str]:
    """The ```python blocks of one README section, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(section)
    end = text.find("\n## ", start + len(section))
    return re.findall(r"```python\n(.*?)```", text[start:end if end >= 0 else None], re.S)


def ptinspect_module() -> Any:
    """The `ptinspect` the README imports: the installed package once it exists, else this API."""
    try:
        return importlib.import_module("ptinspect")
    except ImportError:
        return api


def check_rows(manifest: Manifest, pid: int, rows: list[Row], what: str) -> tuple[int, int, int]:
    """The API's rows against the kernel's pagemap for every mapped page of the workload; returns
    (pages compared, soft-dirty pages, uffd-wp pages).

    uffd-wp: PM_UFFD_WP is the entry's own bit (pte_uffd_wp / pte_swp_uffd_wp).  Soft-dirty:
    PM_SOFT_DIRTY is the entry's bit OR the VMA's VM_SOFTDIRTY (pte_to_pagemap_entry, 7.2
    fs/proc/task_mmu.c:2036 and :2081; PAGEMAP_SCAN ORs it too, :2709), so an entry's soft-dirty bit
    must show in the pagemap, and where the VMA is not soft-dirty (smaps VmFlags without "sd") the
    two must agree."""
    doc = {"entries": [item_record(r) for r in rows]}
    mismatches, compared = compare(manifest, doc, pid)
    assert not mismatches, f"{what}: " + "\n".join(map(str, mismatches[:40]))
    assert compared > 100, f"{what}: only {compared} pages compared"
    starts = [r.va for r in rows]
    soft_dirty = uffd = 0
    wrong = []
    for region in manifest.regions:
        if region.pid != pid or region.status not in MAPPED_STATUSES:
            continue
        vma_soft_dirty = region.vma is None or "sd" in region.vma.flags
        for page in region.pages:
            i = bisect.bisect_right(starts, page.va) - 1
            row = rows[i] if i >= 0 and page.va < rows[i].va + rows[i].size else None
            if row is None:
                continue
            pte_soft_dirty = "soft-dirty" in row.soft
            if (pte_soft_dirty and not page.pagemap.soft_dirty) or (
                    not vma_soft_dirty and pte_soft_dirty != page.pagemap.soft_dirty):
                wrong.append(f"{region.name} {page.va:#x}: pagemap soft-dirty {page.pagemap.soft_dirty}, "
                             f"row.soft {row.soft} ({row.flags})")
            soft_dirty += pte_soft_dirty
            if page.pagemap.present:
                assert page.pagemap.uffd_wp == ("uffd" in row.soft), (region.name, hex(page.va), row.soft)
                uffd += "uffd" in row.soft
    assert not wrong, f"{what}: " + "\n".join(wrong[:20])
    return compared, soft_dirty, uffd


def qemu_running(machine: VM) -> bool:
    with Qmp(machine.qmp, timeout=30) as qmp:
        return bool(qmp.execute("query-status")["running"])


def drgn_over_qmp(machine: VM, vmlinux: Path, config: Path, pid: int) -> list[Row]:
    """from_drgn on a live kernel: drgn reading the stopped guest over QMP with the vmlinux's debug info."""
    from drgn.helpers.linux.pid import find_task

    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
        conn.settimeout(30)
        conn.connect(machine.qmp)
        conn.settimeout(None)
        prog = drgn.Program()
        prog.set_qemu_qmp(os.dup(conn.fileno()))
        prog.load_debug_info([str(vmlinux)])
        with api.from_drgn(prog, config_file=config) as target:
            rows = list(target.walk(find_task(prog, pid).mm))
        del prog
        with contextlib.suppress(OSError):
            conn.shutdown(socket.SHUT_RDWR)
    return rows


def test_readme_api_examples(vm: Callable[..., VM], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                             capsys: pytest.CaptureFixture[str]) -> None:
    image = ensure_image(image_for("x86_64", "7.2"))
    machine = vm("x86_64")
    manifest = parse(Path(machine.manifest).read_text())
    pid = manifest.pid
    with Qmp(machine.qmp, timeout=30) as qmp:  # one moment for the vmcore and the live walk
        qmp.execute("stop")
    vmcore = tmp_path / "vmcore.elf"
    proc = subprocess.run([*PTINSPECT, "vmcore", "--qmp", machine.qmp, "--vmlinux", str(image.vmlinux),
                           "--format", "elf", str(vmcore)], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    live_drgn = drgn_over_qmp(machine, image.vmlinux, image.config, pid)

    blocks = readme_blocks()
    assert len(blocks) == 3, "the README's Python API section has changed: update this test"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "ptinspect", ptinspect_module())
    ns: dict[str, Any] = {"vmcore": str(vmcore), "vmlinux": str(image.vmlinux), "config": str(image.config),
                          "gdbstub": machine.gdb, "pid": pid}
    for block in blocks:
        exec(compile(block, "README.md", "exec"), ns)  # noqa: S102 - the README's own examples

    # Block 1 (vmcore): walk, translate, validate, snapshot.
    rows = ns["rows"]
    assert ns["tables"].label == f"pid {pid} (workload)"
    results = {"vmcore": check_rows(manifest, pid, rows, "vmcore")}
    # the workload's process and its forked child, by the names and pids the guest gave in its manifest
    assert {pid, manifest.child_pid} <= {task.pid for task in ns["named"]}
    assert {task.comm for task in ns["named"]} == {"workload"} and all(task.mm for task in ns["named"])
    hit = ns["hit"]
    assert hit.va == rows[0].va and hit.leaf.va <= hit.va < hit.leaf.va + hit.leaf.size
    assert hit.pa == rows[0].entry.phys(rows[0].va) and hit.leaf.hw.raw == rows[0].raw
    page = next(p for r in manifest.regions if r.pid == pid and r.status in MAPPED_STATUSES
                for p in r.pages if p.pagemap.present)
    with api.open_target(vmcore, vmlinux=image.vmlinux, config_file=image.config) as t:  # the guest's pfn for one of its pages
        assert t.translate(page.va, pid).pa == page.pagemap.pfn * manifest.page_size
    assert not ns["report"].failed, [f.message for f in ns["report"].findings]
    assert (tmp_path / "core.json").is_file() and ns["core"].label == ns["tables"].label

    # Block 2 (drgn on the vmcore): the same rows as ptinspect's own reading; uffd-wp pages found.
    assert [(r.va, r.raw) for r in ns["drgn_rows"]] == [(r.va, r.raw) for r in rows]
    assert ns["uffd_wp"], "the workload's uffd-wp protected pages are missing"
    # 7.2's one uffd bit is write-protect only (VM_UFFD_RWP is 7.3: include/linux/userfaultfd_k.h).
    assert {ns["tables"].uffd_mode(r) for r in ns["uffd_wp"]} == {"wp"}
    assert ns["tables"].record(ns["uffd_wp"][0])["soft"] == list(ns["uffd_wp"][0].soft)
    results["drgn over QMP"] = check_rows(manifest, pid, live_drgn, "drgn over QMP")
    bare = drgn.Program()  # no debug info: the kernel root (VMCOREINFO) walks, a process is one clear error
    bare.set_core_dump(str(vmcore))
    with api.from_drgn(bare) as t:
        with api.open_target(vmcore) as own:
            assert [(r.va, r.raw) for r in t.walk(kernel=True)] == [(r.va, r.raw) for r in own.walk(kernel=True)]
        with pytest.raises(api.Error, match="debug info"):
            t.tables(pid)

    # Block 3 (gdbstub): the live walk matches the pagemap; the VM was stopped throughout, so the
    # live snapshot equals the vmcore's.
    results["gdbstub"] = check_rows(manifest, pid, ns["live_rows"], "gdbstub")
    assert ns["changes"].equal, [(d.status, hex(d.start), d.text) for d in ns["changes"].deltas[:10]]
    # The run state: the gdbstub's close let the VM run (a detach resumes it); a target holds it
    # stopped while open and restores it on close, over the gdbstub and over QMP.
    assert qemu_running(machine)
    with api.open_target(machine.gdb, vmlinux=image.vmlinux, config_file=image.config) as t:
        assert not qemu_running(machine)
        assert [(r.va, r.level) for r in t.walk(pid, kinds=[api.Kind.MARKER])]
    assert qemu_running(machine)
    with api.open_target(machine.qmp, vmlinux=image.vmlinux, config_file=image.config) as t:
        results["qmp"] = check_rows(manifest, pid, list(t.walk(pid)), "qmp")
    assert qemu_running(machine)
    for what, (_, soft_dirty, uffd) in results.items():
        assert soft_dirty > 0 and uffd > 0, f"{what}: no soft-dirty ({soft_dirty}) or uffd-wp ({uffd}) page checked"
    with capsys.disabled():
        print("\n" + "; ".join(f"{w}: {c} pages, {s} soft-dirty, {u} uffd-wp" for w, (c, s, u) in results.items()))


def test_shell_completion_names_the_subcommands() -> None:
    """click's completion script, as the README tells a user to install it."""
    proc = subprocess.run([sys.executable, "-c", "from ptinspect.commands.cli import main; main(prog_name='ptinspect')"],
                          cwd=ROOT, env={**os.environ, "_PTINSPECT_COMPLETE": "bash_source"}, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "_PTINSPECT_COMPLETE=bash_complete" in proc.stdout and "complete " in proc.stdout, proc.stdout
    proc = subprocess.run([sys.executable, "-c", "from ptinspect.commands.cli import main; main(prog_name='ptinspect')"],
                          cwd=ROOT, env={**os.environ, "_PTINSPECT_COMPLETE": "bash_complete",
                                         "COMP_WORDS": "ptinspect ", "COMP_CWORD": "1"},
                          capture_output=True, text=True, timeout=60)
    names = {line.split(",", 1)[1] for line in proc.stdout.splitlines() if "," in line}
    assert {"dump", "translate", "snapshot", "diff", "validate", "gdb-path"} <= names, proc.stdout


def test_gdb_finds_the_extension_and_completes_pt(tmp_path: Path) -> None:
    """`ptinspect gdb-path --gdbinit` as ~/.gdbinit: gdb loads `pt`, and TAB completes subcommands and
    their options (through the Python the lines name, not a path into the source tree)."""
    proc = subprocess.run([*PTINSPECT, "gdb-path"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and Path(proc.stdout.strip()).is_file(), proc
    proc = subprocess.run([*PTINSPECT, "gdb-path", "--gdbinit"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    gdbinit = tmp_path / "gdbinit"
    gdbinit.write_text(proc.stdout)
    env = {k: v for k, v in os.environ.items() if k != "PTINSPECT_PYTHON"}
    proc = subprocess.run(["gdb", "-nx", "-batch", "-x", str(gdbinit), "-ex", "complete pt du",
                           "-ex", "complete pt dump --pi", "-ex", "complete pt validate --list"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:3] == ["pt dump", "pt dump --pid", "pt validate --list-checks"], proc.stdout
