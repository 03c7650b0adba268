"""The gdb extension: `source commands/gdb_pt.py` in gdb-multiarch attached to a test VM, then
`pt dump`, `pt snapshot`, `pt validate` and `pt diff` through gdb's own connection.

Per architecture, against the CLI over the gdbstub on the same stopped VM: `pt dump --format json`
must give the CLI's document (only "source" differs), `pt snapshot` a file the CLI validates clean,
and `pt diff` of that snapshot against the live root (read through gdb) no difference.  These fail,
never skip, when gdb-multiarch, QEMU or a kernel is missing: run the README's setup.
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from inspector.targets.qmp import Qmp
from inspector.vm.images import ensure_image, image_for
from inspector.vm.state import VM

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
GDB_TIMEOUT = 300


def cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "commands.cli", *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, timeout=600)


def in_gdb(address: str, *commands: str) -> subprocess.CompletedProcess:
    """gdb-multiarch in batch mode: source the extension, attach, run `commands`, detach."""
    args = ["gdb-multiarch", "-nx", "-batch", "-ex", f"source {ROOT / 'commands' / 'gdb_pt.py'}",
            "-ex", f"target remote {address}"]
    for command in commands:
        args += ["-ex", command]
    return subprocess.run([*args, "-ex", "detach"], cwd=ROOT, capture_output=True, text=True, timeout=GDB_TIMEOUT)


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

    snap = tmp_path / "gdb.json"
    opts = " ".join(kernel)
    proc = in_gdb(machine.gdb,
                  f"pt dump {opts} --pid {pid} --format json",
                  f"pt snapshot {opts} --pid {pid} {snap}",
                  f"pt diff {snap} {opts} --pid {pid}",
                  f"pt validate {opts} --pid {pid}")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json_document(proc.stdout)
    assert doc["target"]["source"] == "gdb"
    assert without_source(doc) == without_source(reference)
    assert "0 entries changed (equal)" in proc.stdout, proc.stdout[-2000:]
    assert "clean: no check failed" in proc.stdout, proc.stdout[-2000:]

    proc = cli("validate", snap)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    snapshot = json.loads(snap.read_text())
    assert snapshot["target"]["source"] == "gdb" and snapshot["target"]["selection"]["tables"] is True
    leaves = {e["va"]: e for e in snapshot["entries"] if e["kind"] != "table"}
    assert leaves == {e["va"]: e for e in reference["entries"]}  # the snapshot adds table entries only
