"""ptinspect inside gdb: `source commands/gdb_pt.py`, then `pt dump`, `pt translate`...

The commands take the CLI's options, without --gdb, and read through gdb's own
connection to QEMU's gdbstub; no second connection is made.  A command runs in
gdb's own Python when ptinspect's pure-Python dependencies import here and the
vmlinux's layout is cached (inspector/layout.py): its session (tables read,
kernel layout, facts, the kernel's structs read) is kept for the next command
until gdb reports that the VM ran.  Otherwise (the first use of a vmlinux, whose
layout drgn must extract: gdb's Python cannot host drgn, both link elfutils;
an explicit other target, or `set ptinspect-child on`) the command runs as a
ptinspect child process whose reads are served here.  $_pt_children and $_pt_sessions count the child
processes started and the in-gdb sessions opened.
`pt watch` alone hands the connection over instead (PtWatch).
"""
from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import gdb  # gdb's embedded module: only inside gdb

# The directory holding the `ptinspect` package: a checkout's root, or site-packages when installed.
ROOT = next(p for p in Path(__file__).resolve().parents if (p / "ptinspect" / "__init__.py").is_file())
sys.path.insert(0, str(ROOT))

from ptinspect.inspector.session import Session, start  # noqa: E402
from ptinspect.inspector.targets.gdbinternal import GdbInternalTarget  # noqa: E402
from ptinspect.inspector.targets.gdbstub import GdbstubError  # noqa: E402
from ptinspect.inspector.targets.pipe import ENV, serve  # noqa: E402

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


def _in_gdb_python() -> bool:
    """Whether ptinspect's commands import in gdb's Python: the site-packages of the interpreter
    ptinspect is installed in come right after ROOT (ahead of the system's older packages; its .pth
    files are not run: ROOT stays the ptinspect imported) when it is gdb's Python version."""
    try:
        out = subprocess.run([python(), "-c", "import sys, sysconfig; print(sys.version_info[:2]); "
                              "print(sysconfig.get_path('purelib'))"],
                             capture_output=True, text=True, timeout=30, check=True).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return False
    if out[0] != str(sys.version_info[:2]):
        return False
    if out[1] not in sys.path:
        sys.path.insert(1, out[1])
    try:
        import click  # noqa: F401
        import tabulate  # noqa: F401

        from ptinspect.commands import cli  # noqa: F401
    except ImportError:
        return False
    return True


IN_GDB = _in_gdb_python()


class ChildParameter(gdb.Parameter):
    """Run every pt command as a ptinspect child process (default: off, or PTINSPECT_GDB_CHILD=1)."""

    set_doc = "Set whether pt commands run as ptinspect child processes."
    show_doc = "Show whether pt commands run as ptinspect child processes."

    def __init__(self) -> None:
        super().__init__("ptinspect-child", gdb.COMMAND_DATA, gdb.PARAM_BOOLEAN)
        self.value = os.environ.get("PTINSPECT_GDB_CHILD") == "1"


CHILD = ChildParameter()
gdb.set_convenience_variable("_pt_children", 0)
gdb.set_convenience_variable("_pt_sessions", 0)


def _bump(name: str) -> None:
    gdb.set_convenience_variable(name, int(gdb.convenience_variable(name) or 0) + 1)


class StopCache:
    """The sessions of the stopped VM, per (vmlinux, config file); dropped when it runs."""

    def __init__(self) -> None:
        self.target: GdbInternalTarget | None = None
        self.sessions: dict[tuple[Path | None, Path | None], Session] = {}
        for event in (gdb.events.cont, gdb.events.stop, gdb.events.exited, gdb.events.memory_changed,
                      gdb.events.register_changed, gdb.events.inferior_call):
            event.connect(self.clear)

    def clear(self, *_: object) -> None:
        self.sessions.clear()
        self.target = None

    @contextlib.contextmanager
    def session(self, vmlinux: Path | None, config_file: Path | None) -> Iterator[Session]:
        """The kept session (physical-memory mode on while the command runs), or a new one."""
        if self.target is None:
            self.target = GdbInternalTarget()
        else:
            self.target.enter()
        try:
            key = (vmlinux.resolve() if vmlinux else None, config_file.resolve() if config_file else None)
            session = self.sessions.get(key)
            if session is None:
                session = self.sessions[key] = start(self.target, vmlinux, config_file)
                _bump("_pt_sessions")
            yield session
        finally:
            self.target.close()


CACHE = StopCache()


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
        if IN_GDB and not CHILD.value and _answerable_here(args):
            self.run_here(args)
        else:
            self.run_child(args, needs_target)

    def run_here(self, args: list[str]) -> None:
        """The command in gdb's Python, its session from the stop cache."""
        from ptinspect.commands import cli, targets

        targets.in_process = CACHE.session
        gdb.flush()
        try:
            cli.main.main([self.name, *args], prog_name="pt", standalone_mode=True)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1 if exc.code else 0
        else:
            code = 0
        finally:
            targets.in_process = None
            sys.stdout.flush()
            gdb.flush()
        if code != 0 and not (code == 1 and self.name in FOUND):
            raise gdb.GdbError(f"pt {self.name} failed (exit {code})")

    def run_child(self, args: list[str], needs_target: bool) -> None:
        """The command as a ptinspect child process whose reads are served here."""
        _bump("_pt_children")
        target = GdbInternalTarget() if needs_target else None
        child_r, parent_w = os.pipe()
        parent_r, child_w = os.pipe()
        env = dict(os.environ, **({ENV: f"{child_r},{child_w}"} if target else {}))
        gdb.flush()
        proc = None
        try:
            proc = subprocess.Popen([python(), "-m", "ptinspect.commands.cli", self.name, *args], cwd=ROOT, env=env,
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


def _answerable_here(args: list[str]) -> bool:
    """No other target is named, and the vmlinux (if any) has its layout cached: drgn not needed."""
    if any(a.split("=", 1)[0] in ("--gdb", "--vmcore", "--kcore", "--qmp") for a in args):
        return False
    vmlinux = None
    for i, a in enumerate(args):
        if a == "--vmlinux" and i + 1 < len(args):
            vmlinux = args[i + 1]
        elif a.startswith("--vmlinux="):
            vmlinux = a.split("=", 1)[1]
    if vmlinux is None:
        return True
    from ptinspect.inspector.layout import cache_path

    try:
        return cache_path(Path(vmlinux)).is_file()
    except OSError:
        return True  # the command itself says the file cannot be read


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
        command = [python(), "-m", "ptinspect.commands.cli", "watch"]
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
