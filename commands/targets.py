"""Target options shared by every command that reads a kernel, and opening a session.

Commands pass the target options through to `open_session` untouched (by keyword, or as
`**target`), so they never know which target they run on.
"""
from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from inspector import runstate
from inspector.reader import ReadError
from inspector.session import Session, SessionError, Target, start
from inspector.targets.gdbstub import GdbstubError, GdbstubTarget
from inspector.targets.pipe import ENV as PIPE_ENV
from inspector.targets.pipe import PipeError, PipeTarget
from inspector.vmcoreinfo import VmcoreinfoError
from inspector.vmlinux import VmlinuxError

from .options import TIMEOUT

TARGET_OPTIONS = ("gdb_address", "vmcore", "kcore", "qmp")  # the mutually exclusive target choices
# Set by the gdb extension (commands/gdb_pt.py) while a `pt` command runs inside gdb's own Python:
# (vmlinux, config_file) -> a context manager giving the session of the stopped VM, which it keeps
# (tables, layout, facts) until the VM runs again.  Used only when no target option is given.
SessionProvider = Callable[[Path | None, Path | None], contextlib.AbstractContextManager[Session]]
in_process: SessionProvider | None = None
ERRORS: tuple[type[Exception], ...] = (GdbstubError, PipeError, SessionError, VmlinuxError, VmcoreinfoError,
                                       ReadError)
DRGN_TARGETS = "inspector.targets.drgn"  # vmcores, /proc/kcore, QMP: imported only when one is chosen


def errors() -> tuple[type[Exception], ...]:
    """ERRORS, and the dump/kcore/QMP targets' error once their module is loaded (only they raise it)."""
    drgn_targets = sys.modules.get(DRGN_TARGETS)
    return ERRORS + (drgn_targets.DrgnTargetError,) if drgn_targets is not None else ERRORS


def target_options(func: Callable) -> Callable:
    """--gdb, --vmcore, --kcore, --qmp (one of them), --vmlinux, --config-file, --keep-stopped, --timeout."""
    for decorator in reversed([
        click.option("--gdb", "gdb_address", metavar="HOST:PORT", help="A QEMU gdbstub (qemu -gdb tcp::PORT)."),
        click.option("--vmcore", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="A vmcore: ELF or kdump-compressed (QEMU dump-guest-memory, makedumpfile, "
                          "ptinspect vmcore)."),
        click.option("--kcore", is_flag=True, help="The running machine's kernel through /proc/kcore (root only)."),
        click.option("--qmp", metavar="SOCKET",
                     help="A live QEMU's QMP unix socket (qemu -qmp unix:SOCKET,server=on,wait=off)."),
        click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The kernel's vmlinux with debug info (needed for --pid/--comm/--kernel and VMAs)."),
        click.option("--config-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The kernel's .config: exact facts for the software-leaf type space."),
        click.option("--keep-stopped", is_flag=True,
                     help="--gdb/--qmp: leave the VM stopped afterwards (default: --gdb resumes it, "
                          "--qmp restores its previous run state)."),
        click.option("--timeout", type=TIMEOUT, default=10.0, show_default=True,
                     help="Seconds to wait for any one reply."),
    ]):
        func = decorator(func)
    return func


def _open_target(gdb_address: str | None, vmcore: Path | None, kcore: bool, qmp: str | None,
                 keep_stopped: bool, timeout: float) -> Target:
    chosen = [f"--{n}" for n, v in (("gdb", gdb_address), ("vmcore", vmcore), ("kcore", kcore), ("qmp", qmp)) if v]
    if len(chosen) > 1:
        raise click.UsageError(f"give only one target, not {' and '.join(chosen)}")
    if keep_stopped and (vmcore or kcore):
        raise click.UsageError("--keep-stopped applies to a live VM (--gdb, --qmp)")
    if gdb_address:
        return GdbstubTarget(gdb_address, keep_stopped=keep_stopped, timeout=timeout)
    if vmcore or kcore or qmp:
        from inspector.targets.drgn import QmpTarget, open_kcore, open_vmcore
    if vmcore:
        return open_vmcore(vmcore)
    if kcore:
        return open_kcore()
    if qmp:
        return QmpTarget(qmp, keep_stopped=keep_stopped, timeout=timeout)
    if os.environ.get(PIPE_ENV):  # a `pt` command inside gdb (commands/gdb_pt.py)
        return PipeTarget(os.environ[PIPE_ENV])
    raise click.UsageError("choose a target: --gdb HOST:PORT, --vmcore FILE, --kcore or --qmp SOCKET")


def target_chosen(target: dict) -> bool:
    """Whether the target options (as a command received them) name a target."""
    return any(target.get(name) for name in TARGET_OPTIONS)


@contextlib.contextmanager
def open_session(gdb_address: str | None, vmlinux: Path | None, config_file: Path | None,
                 keep_stopped: bool, timeout: float, vmcore: Path | None = None, kcore: bool = False,
                 qmp: str | None = None) -> Iterator[Session]:
    """A session on the chosen target; user mistakes become one clear error line.

    SIGTERM and SIGHUP end it as Ctrl-C does: the target is closed (physical-memory mode
    restored, the VM resumed or left in its run state) whatever ends the command, and a failure
    to close is reported without hiding the error that ended the command."""
    if in_process is not None and not (gdb_address or vmcore or kcore or qmp):
        try:
            with in_process(vmlinux, config_file) as kept:
                yield kept
        except errors() as exc:
            raise click.ClickException(str(exc)) from None
        return
    with runstate.terminating():
        try:
            target = _open_target(gdb_address, vmcore, kcore, qmp, keep_stopped, timeout)
        except errors() as exc:
            raise click.ClickException(str(exc)) from None
        session = None
        try:
            session = start(target, vmlinux, config_file)
            yield session
        except BaseException as exc:
            problem = _close(target, session)
            if problem:  # the error that ended the command comes first
                runstate.warn(problem)
            if isinstance(exc, errors()):
                raise click.ClickException(str(exc)) from None
            raise
        problem = _close(target, session)
        if problem:
            raise click.ClickException(problem)


def _close(target: Target, session: Session | None) -> str | None:
    """Close the target with SIGTERM/SIGHUP held off; what went wrong, if anything."""
    if session is not None:
        session.kernel = None
    with runstate.deferred():
        try:
            target.close()
        except errors() as exc:
            return str(exc)
    return None
