"""ptinspect inside gdb: `source commands/gdb_pt.py`, then `pt dump`, `pt translate`...

Each `pt` command runs the ptinspect CLI in a child process (gdb's embedded
Python cannot host drgn: both link elfutils) whose memory and register reads
are served here, through gdb's own connection to QEMU's gdbstub; no second
connection is made.  The commands take the CLI's options, without --gdb.
`pt watch` alone hands the connection over instead (PtWatch).
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import gdb  # gdb's embedded module: only inside gdb

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inspector.targets.gdbinternal import GdbInternalTarget  # noqa: E402
from inspector.targets.gdbstub import GdbstubError  # noqa: E402
from inspector.targets.pipe import ENV, serve  # noqa: E402

SUBCOMMANDS = {
    "dump": "Every non-none page-table entry of a process (--pid/--comm), the kernel (--kernel) or a root.",
    "translate": "The walk of one virtual address, level by level, every bit named.",
    "decode": "Decode raw entry values: pt decode --arch ARCH --kernel 7.2 --level pte VALUE.",
    "snapshot": "Write every entry of a root, table entries included, to a file: pt snapshot --pid N OUT.json.",
    "diff": "What changed between a snapshot and now (pt diff A.json) or two snapshots (pt diff A.json B.json).",
    "validate": "Check a root (--pid N / --kernel) or a snapshot file against the kernel's page-table rules.",
}
FOUND = {"diff", "validate"}  # exit 1 is their answer (differences, findings), not a failure


def python() -> str:
    """The interpreter ptinspect is installed in."""
    for candidate in (os.environ.get("PTINSPECT_PYTHON"), ROOT / ".venv/bin/python"):
        if candidate and Path(candidate).exists():
            return str(candidate)
    return shutil.which("python3") or "python3"


class PtPrefix(gdb.Command):
    """ptinspect: the page tables of the kernel gdb is attached to (QEMU's gdbstub).

Subcommands take the ptinspect CLI's options without --gdb; `pt SUBCOMMAND --help` lists them.
The vmlinux gdb has loaded (`file vmlinux`) is used unless --vmlinux is given.
pt dump --vmlinux VMLINUX --pid N     every entry of a process
pt translate --vmlinux VMLINUX --pid N VA
pt decode --arch arm64 --kernel 7.2 VALUE"""

    def __init__(self) -> None:
        super().__init__("pt", gdb.COMMAND_DATA, prefix=True)


EXIT_TIMEOUT = 120  # seconds a child may take to finish its output after its last read (a large table)


class PtCommand(gdb.Command):
    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = f"{doc}\nOptions: pt {name} --help"
        super().__init__(f"pt {name}", gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            args = shlex.split(argument)
        except ValueError as exc:
            raise gdb.GdbError(f"pt {self.name}: {exc}") from None
        needs_target = self.name != "decode" and not {"-h", "--help"} & set(args)
        loaded = gdb.current_progspace().filename  # `file vmlinux` in gdb stands for --vmlinux
        if needs_target and loaded and not any(a.startswith("--vmlinux") for a in args):
            args = ["--vmlinux", loaded, *args]
        target = GdbInternalTarget() if needs_target else None
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        env = dict(os.environ, **({ENV: f"{child_r},{child_w}"} if target else {}))
        gdb.flush()
        proc = None
        try:
            proc = subprocess.Popen([python(), "-m", "commands.cli", self.name, *args], cwd=ROOT, env=env,
                                    pass_fds=(child_r, child_w))
            os.close(child_r)
            os.close(child_w)
            with os.fdopen(parent_r, "rb") as requests, os.fdopen(parent_w, "wb") as replies:
                if target is not None:
                    serve(requests, replies, target, (GdbstubError, gdb.error, gdb.MemoryError))
            try:  # the child closed its end of the pipe: it is finishing its output
                proc.wait(timeout=EXIT_TIMEOUT)
            except subprocess.TimeoutExpired:
                raise gdb.GdbError(f"pt {self.name}: no exit {EXIT_TIMEOUT} s after its last read; "
                                   "stopped it") from None
            gdb.flush()
            if proc.returncode != 0 and not (proc.returncode == 1 and self.name in FOUND):
                raise gdb.GdbError(f"pt {self.name} failed (exit {proc.returncode})")
        finally:  # Ctrl-C, an error or a timeout: the child must not outlive the command
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            if target is not None:
                target.close()


class PtWatch(gdb.Command):
    """Watch a range's page-table entries change while the VM runs: pt watch --pid N --range START-END
[--until KIND] [--count N] [--for S] [--format json].  gdb's connection is handed to the watch and
taken back when it ends: gdb disconnects, `ptinspect watch --gdb ADDRESS` runs on QEMU's gdbstub (it
must resume the VM and take its watchpoint stops, and the stub serves one client), then gdb reconnects
to ADDRESS; the VM is stopped again, at the caught entry with --until.  Options: pt watch --help"""

    def __init__(self) -> None:
        super().__init__("pt watch", gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            args = shlex.split(argument)
        except ValueError as exc:
            raise gdb.GdbError(f"pt watch: {exc}") from None
        command = [python(), "-m", "commands.cli", "watch"]
        if {"-h", "--help"} & set(args):
            subprocess.run([*command, "--help"], cwd=ROOT)
            return
        connection = gdb.selected_inferior().connection
        address = connection.details if connection is not None and connection.type == "remote" else None
        if not address:
            raise gdb.GdbError("pt watch: gdb is not connected to QEMU's gdbstub (target remote HOST:PORT first)")
        loaded = gdb.current_progspace().filename
        if loaded and not any(a.startswith("--vmlinux") for a in args):
            args = ["--vmlinux", loaded, *args]
        gdb.flush()
        gdb.execute("disconnect", to_string=True)  # the VM stays stopped; the watch connects next
        proc = None
        try:
            proc = subprocess.Popen([*command, "--gdb", address, *args], cwd=ROOT)
            try:
                proc.wait()
            except KeyboardInterrupt:  # it reached the child too (same process group): it ends its watch
                try:
                    proc.wait(timeout=EXIT_TIMEOUT)
                except (subprocess.TimeoutExpired, KeyboardInterrupt):
                    pass  # killed below
        finally:
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait()
            gdb.execute(f"target remote {address}", to_string=True)  # QEMU stops the VM for gdb again
            gdb.flush()
        if proc.returncode != 0:
            raise gdb.GdbError(f"pt watch failed (exit {proc.returncode})")


PtPrefix()
for _name, _doc in SUBCOMMANDS.items():
    PtCommand(_name, _doc)
PtWatch()
