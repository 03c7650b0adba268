"""Target options shared by every command that reads a kernel, and opening a session.

Commands pass the target options through to `open_session` untouched (by keyword, or as
`**target`), so they never know which target they run on.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import click

from ptinspect.inspector import runstate
from ptinspect.inspector.opening import errors, open_target, opened
from ptinspect.inspector.session import Session, Target
from ptinspect.inspector.targets.pipe import ENV as PIPE_ENV
from ptinspect.inspector.targets.pipe import PipeTarget

from .options import TIMEOUT

TARGET_OPTIONS = ("gdb_address", "vmcore", "kcore", "qmp")  # the mutually exclusive target choices
# Set by the gdb extension (commands/gdb_pt.py) while a `pt` command runs inside gdb's own Python:
# (vmlinux, config_file) -> a context manager giving the session of the stopped VM, which it keeps
# (tables, layout, facts) until the VM runs again.  Used only when no target option is given.
SessionProvider = Callable[[Path | None, Path | None], contextlib.AbstractContextManager[Session]]
in_process: SessionProvider | None = None


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
    if chosen:
        return open_target(gdb_address=gdb_address, vmcore=vmcore, kcore=kcore, qmp=qmp, keep_stopped=keep_stopped,
                           timeout=timeout)
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
    """A session on the chosen target (inspector.opening.opened); user mistakes become one clear
    error line.  SIGTERM and SIGHUP end it as Ctrl-C does, so the target is closed whatever ends
    the command.  Inside gdb (in_process set, no target option) the extension's kept session."""
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
        try:
            with opened(target, vmlinux, config_file) as session:
                yield session
        except errors() as exc:
            raise click.ClickException(str(exc)) from None
