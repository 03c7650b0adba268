"""ptinspect inside gdb: `source commands/gdb_pt.py`, then `pt dump`, `pt translate`...

Each `pt` command runs the ptinspect CLI in a child process (gdb's embedded
Python cannot host drgn: both link elfutils) whose memory and register reads
are served here, through gdb's own connection to QEMU's gdbstub; no second
connection is made.  The commands take the CLI's options, without --gdb.
"""
from __future__ import annotations

import json
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
    "summary": "Mapped bytes per VMA by mapping size and kind, coverage, table pages: pt summary --pid N.",
    "map": "An HTML picture of a root's address space: pt map --pid N -o MAP.html.",
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


_OPTIONS: dict[str, list[str]] = {}


def options(name: str) -> list[str]:
    """The CLI options of a subcommand, asked once of ptinspect's Python (gdb's has no click)."""
    if not _OPTIONS:
        try:
            proc = subprocess.run([python(), "-c", "import json; from commands.cli import option_names; "
                                   "print(json.dumps(option_names()))"], cwd=ROOT, capture_output=True, text=True,
                                  timeout=30)
            _OPTIONS.update(json.loads(proc.stdout))
        except (OSError, ValueError, subprocess.SubprocessError):
            return []  # no completion rather than an error in the middle of typing
    return _OPTIONS.get(name, [])


EXIT_TIMEOUT = 120  # seconds a child may take to finish its output after its last read (a large table)


class PtCommand(gdb.Command):
    def __init__(self, name: str, doc: str) -> None:
        self.name = name
        self.__doc__ = f"{doc}\nOptions: pt {name} --help"
        super().__init__(f"pt {name}", gdb.COMMAND_DATA)

    def complete(self, text: str, word: str | None) -> object:
        """TAB: the subcommand's options; anything else is a file name (snapshots, output files)."""
        token = "" if not text or text[-1].isspace() else text.split()[-1]
        if not token.startswith("-"):
            return gdb.COMPLETE_FILENAME
        cut = len(token) - len(word or "")  # gdb replaces only `word`, the text after the last '-'
        return [o[cut:] for o in options(self.name) if o.startswith(token)]

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


PtPrefix()
for _name, _doc in SUBCOMMANDS.items():
    PtCommand(_name, _doc)
