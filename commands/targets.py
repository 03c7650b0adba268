"""Target options shared by every command that reads a kernel, and opening a session."""
from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Callable, Iterator, Protocol

import click

from archs import get_arch
from inspector.session import Session, SessionError, attach_kernel
from inspector.targets.gdbstub import GdbstubError, GdbstubTarget
from inspector.targets.pipe import ENV as PIPE_ENV
from inspector.targets.pipe import PipeError, PipeTarget
from inspector.vmlinux import VmlinuxError


class Target(Protocol):
    arch: str
    source: str

    def read(self, pa: int, size: int) -> bytes: ...
    def ranges(self) -> list[tuple[int, int]]: ...
    def set_ram(self, ranges: list[tuple[int, int]]) -> None: ...
    def read_registers(self) -> dict[str, int]: ...
    def close(self) -> None: ...


def target_options(func: Callable) -> Callable:
    """--gdb, --vmlinux, --config-file, --keep-stopped, --timeout."""
    for decorator in reversed([
        click.option("--gdb", "gdb_address", metavar="HOST:PORT", help="A QEMU gdbstub (qemu -gdb tcp::PORT)."),
        click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The running kernel's vmlinux with debug info (needed for --pid/--comm/--kernel and VMAs)."),
        click.option("--config-file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
                     help="The running kernel's .config: exact facts for the software-leaf type space."),
        click.option("--keep-stopped", is_flag=True, help="Leave the VM stopped afterwards (default: it runs on)."),
        click.option("--timeout", type=float, default=10.0, show_default=True, help="Seconds to wait for any one reply."),
    ]):
        func = decorator(func)
    return func


@contextlib.contextmanager
def open_session(gdb_address: str | None, vmlinux: Path | None, config_file: Path | None,
                 keep_stopped: bool, timeout: float) -> Iterator[Session]:
    """A session on the chosen target; user mistakes become one clear error line."""
    try:
        if gdb_address:
            target: Target = GdbstubTarget(gdb_address, keep_stopped=keep_stopped, timeout=timeout)
        elif os.environ.get(PIPE_ENV):  # a `pt` command inside gdb (commands/gdb_pt.py)
            target = PipeTarget(os.environ[PIPE_ENV])
        else:
            raise click.UsageError("choose a target: --gdb HOST:PORT")
    except (GdbstubError, PipeError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        arch = get_arch(target.arch)
        session = Session(target, arch, target.read_registers(), target.source)
        if vmlinux is not None:
            attach_kernel(session, vmlinux, config_file)
            assert session.kernel is not None
            target.set_ram(session.kernel.ram_ranges())
        yield session
    except (GdbstubError, PipeError, SessionError, VmlinuxError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        target.close()
