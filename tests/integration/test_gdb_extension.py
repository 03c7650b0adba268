"""The gdb extension: `source commands/gdb_pt.py` in gdb-multiarch attached to a test VM, then
`pt dump`, `pt translate`, `pt snapshot`, `pt validate` and `pt diff` through gdb's own connection.

Per architecture, against the CLI over the gdbstub on the same stopped VM: `pt dump --format json`
must give the CLI's document (only "source" differs), `pt translate` the CLI's text, `pt snapshot`
a file the CLI validates clean, and `pt diff` of that snapshot against the live root (read through
gdb) no difference.  The vmlinux's layout is cached by the CLI's run, so every command runs in gdb's
own Python (no child process but the one asked for with `set ptinspect-child on`: $_pt_children) and
all share one session until a `stepi` lets the VM run ($_pt_sessions).  All in one gdb session: its
detach resumes the VM.
These fail, never skip, when gdb-multiarch, QEMU or a kernel is missing: run the README's setup.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.state import VM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GDB_TIMEOUT = 300


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def in_gdb(address: str, *commands: str) -> subprocess.CompletedProcess:
    """gdb-multiarch in batch mode: source the extension, attach, run `commands`, detach.
    ptinspect's interpreter is this one."""
    args = ["gdb-multiarch", "-nx", "-batch", "-ex", f"source {ROOT / 'commands' / 'gdb_pt.py'}",
            "-ex", f"target remote {address}"]
    for command in commands:
        args += ["-ex", command]
    env = dict(os.environ, PTINSPECT_PYTHON=sys.executable, PTINSPECT_GDB_CHILD="0")
    return subprocess.run([*args, "-ex", "detach"], cwd=ROOT, capture_output=True, text=True, timeout=GDB_TIMEOUT,
                          env=env)


def counters(stdout: str) -> list[tuple[str, int]]:
    """The values of `pt-counter NAME` lines (printed with `printf "pt-counter NAME %d\\n", $NAME`)."""
    return [(m[1], int(m[2])) for m in re.finditer(r"^pt-counter (\S+) (\d+)$", stdout, re.M)]


def count(name: str) -> str:
    return f'printf "pt-counter {name} %d\\n", ${name}'


def translation(stdout: str) -> str:
    """The text of one translate (its header line to its `VA -> PA` line) among gdb's lines."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# ") and ", root 0x" in line)
    end = next(i for i in range(start, len(lines)) if " -> " in lines[i] and lines[i].startswith("0x"))
    return "\n".join(lines[start:end + 1])


def json_document(stdout: str) -> dict:
    """The one ptinspect.snapshot/1 document among gdb's own lines."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith('{"schema": "ptinspect.snapshot/1"'))
    end = next(i for i in range(start, len(lines)) if lines[i] == "]}")
    return json.loads("\n".join(lines[start:end + 1]))


def without_source(doc: dict) -> dict:
    target = dict(doc["target"])
    target.pop("source")
    return {**doc, "target": target}


def check_ranges(merged: list[dict], entries: list[dict]) -> None:
    """`--ranges` against the per-entry dump of the same stop: every entry in exactly one range,
    a range's entries adjacent, of one level, kind, flag set and VMA, their frames consecutive."""
    by_va = sorted(entries, key=lambda e: int(e["va"], 16))
    covered = 0
    for r in merged:
        start, end, count = int(r["va"], 16), int(r["range"]["end"], 16), r["range"]["entries"]
        members = [e for e in by_va if start <= int(e["va"], 16) < end]
        assert len(members) == count and members[0]["va"] == r["va"], r
        first = members[0]
        for i, e in enumerate(members):
            assert int(e["va"], 16) == start + i * first["size"], (r, e)
            same = ("level", "kind", "flags", "vma")
            assert [e.get(k) for k in same] == [first.get(k) for k in same], (r, e)
            if "pfn" in first:
                assert int(e["pfn"], 16) == int(first["pfn"], 16) + i * (first["size"] >> 12), (r, e)
        covered += count
    assert covered == len(entries)
    assert len(merged) < len(entries)  # a process's text and stacks give neighbours that merge


@pytest.mark.parametrize("arch", ["x86_64", "arm64", "riscv64"])
def test_pt_commands_inside_gdb(vm: Callable[..., VM], arch: str, tmp_path: Path) -> None:
    image = ensure_image(image_for(arch, "7.2"))
    machine = vm(arch)
    pid = str(machine.workload_pid)
    kernel = ["--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
    with Qmp(machine.qmp, timeout=30) as qmp:
        qmp.execute("stop")  # one state for the CLI and gdb: the gdb session's detach resumes it
    proc = cli("dump", "--gdb", machine.gdb, "--keep-stopped", *kernel, "--pid", pid, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    reference = json.loads(proc.stdout)

    proc = cli("dump", "--gdb", machine.gdb, "--keep-stopped", *kernel, "--pid", pid, "--format", "json", "--ranges")
    assert proc.returncode == 0, proc.stderr
    merged = json.loads(proc.stdout)
    check_ranges(merged["entries"], reference["entries"])

    va = reference["entries"][0]["va"]
    proc = cli("translate", "--gdb", machine.gdb, "--keep-stopped", *kernel, "--pid", pid, va)
    assert proc.returncode == 0, proc.stderr
    walk = proc.stdout.strip()

    opts = " ".join(kernel)
    snap = tmp_path / "gdb.json"
    proc = in_gdb(machine.gdb,
                  "set ptinspect-child on",
                  f"pt dump {opts} --pid {pid} --format json",
                  count("_pt_children"),
                  "set ptinspect-child off",
                  f"pt dump {opts} --pid {pid} --format json --ranges",
                  f"pt dump {opts} --pid {pid} --format json",
                  f"pt snapshot {opts} --pid {pid} {snap}",
                  f"pt diff {snap} {opts} --pid {pid}",
                  f"pt validate {opts} --pid {pid}",
                  count("_pt_sessions"),
                  "stepi",  # the VM runs: the next command reads it afresh
                  f"pt translate {opts} --pid {pid} {va}",
                  count("_pt_sessions"), count("_pt_children"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    child, here = proc.stdout.split("pt-counter _pt_children 1", 1)
    assert without_source(json_document(child)) == without_source(reference)
    ranges_doc = json_document(here)
    assert without_source(ranges_doc) == without_source(merged)
    doc = json_document(here.split('"merged": true', 1)[1])
    assert doc["target"]["source"] == "gdb"
    assert without_source(doc) == without_source(reference)
    assert "0 entries changed (equal)" in proc.stdout, proc.stdout[-2000:]
    assert "clean: no check failed" in proc.stdout, proc.stdout[-2000:]
    assert translation(proc.stdout.split("pt-counter _pt_sessions 1", 1)[-1]) == walk
    assert counters(proc.stdout) == [("_pt_children", 1), ("_pt_sessions", 1), ("_pt_sessions", 2),
                                     ("_pt_children", 1)]  # the child run only

    proc = cli("validate", snap)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snapshot = json.loads(snap.read_text())
    assert snapshot["target"]["source"] == "gdb" and snapshot["target"]["selection"]["tables"] is True
    leaves = {e["va"]: e for e in snapshot["entries"] if e["kind"] != "table"}
    assert leaves == {e["va"]: e for e in reference["entries"]}  # the snapshot adds table entries only
