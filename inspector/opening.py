"""Opening a target and ending it: what the CLI's commands and the Python API share.

A live target is stopped while a session reads it; `opened` closes it (restoring QEMU's
physical-memory mode, resuming the VM or leaving it in its run state) whatever ends the session.
"""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from . import runstate
from .reader import ReadError
from .session import Session, SessionError, Target, start
from .targets.gdbstub import GdbstubError, GdbstubTarget
from .targets.pipe import PipeError
from .vmcoreinfo import VmcoreinfoError
from .vmlinux import VmlinuxError

# What opening, reading or closing a target raises for a user's mistake or an unreadable target
# (with the vmcore/kcore/QMP targets' own error once their module is loaded: errors()).
ERRORS: tuple[type[Exception], ...] = (GdbstubError, PipeError, SessionError, VmlinuxError, VmcoreinfoError,
                                       ReadError)
DRGN_TARGETS = f"{__package__}.targets.drgn"  # vmcores, /proc/kcore, QMP: imported only when one is chosen


def errors() -> tuple[type[Exception], ...]:
    """ERRORS, and the drgn-read targets' error once their module is loaded (only they raise it)."""
    drgn_targets = sys.modules.get(DRGN_TARGETS)
    return ERRORS + (drgn_targets.DrgnTargetError,) if drgn_targets is not None else ERRORS
# Called with every session a command or the API opens, once it has started: a public hook for
# tools that measure a run (bench/bench_dump.py counts the tables a walk reads through it).
SESSION_HOOKS: list[Callable[[Session], None]] = []


class CloseError(SessionError):
    """The target could not be closed (the VM not resumed, QEMU's memory mode not restored)."""


def open_target(*, gdb_address: str | None = None, vmcore: Path | None = None, kcore: bool = False,
                qmp: str | None = None, keep_stopped: bool = False, timeout: float = 10.0) -> Target:
    """The one target named (a live one is stopped until closed)."""
    if gdb_address:
        return GdbstubTarget(gdb_address, keep_stopped=keep_stopped, timeout=timeout)
    if vmcore or kcore or qmp:  # drgn and the dump readers cost start-up time: only for these targets
        from .targets.drgn import QmpTarget, open_kcore, open_vmcore
    if vmcore:
        return open_vmcore(vmcore)
    if kcore:
        return open_kcore()
    if qmp:
        return QmpTarget(qmp, keep_stopped=keep_stopped, timeout=timeout)
    raise SessionError("choose a target: a gdbstub HOST:PORT, a vmcore, /proc/kcore or a QMP socket")


def close_target(target: Target, session: Session | None) -> str | None:
    """Close the target with SIGTERM/SIGHUP held off; what went wrong, if anything."""
    if session is not None:
        session.kernel = None
    with runstate.deferred():
        try:
            target.close()
        except errors() as exc:
            return str(exc)
    return None


@contextlib.contextmanager
def opened(target: Target, vmlinux: Path | None, config_file: Path | None) -> Iterator[Session]:
    """A session on `target`, closed at the end; a failure to close is a CloseError, or a warning
    when another error already ends the session (that error comes first)."""
    session = None
    try:
        session = start(target, vmlinux, config_file)
        for hook in SESSION_HOOKS:
            hook(session)
        yield session
    except BaseException:
        problem = close_target(target, session)
        if problem:
            runstate.warn(problem)
        raise
    problem = close_target(target, session)
    if problem:
        raise CloseError(problem)
