"""What a run changed on a live VM, kept where a killed run cannot take it with it.

A run that stops a VM (gdbstub connection, QMP `stop`) or switches QEMU's physical-memory
mode writes a marker naming itself and what it must undo, and removes it once it has undone
it.  SIGTERM, SIGHUP and Ctrl-C are handled (see `terminating`); SIGKILL cannot be, so the next
run on the same target finds the marker of a dead process, says that the VM was left stopped by
an interrupted run, and undoes what that run would have undone (resuming the VM unless
--keep-stopped).
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .cache import subdir

TERMINATING = (signal.SIGTERM, signal.SIGHUP)


@dataclass(frozen=True)
class Left:
    """What an interrupted run left behind on a target."""

    pid: int
    started: float
    state: dict[str, Any]

    def describe(self, target: str) -> str:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.started))
        return f"the VM at {target} was left stopped by an interrupted ptinspect run (pid {self.pid}, {when})"


class Marker:
    """The marker of one target (a gdbstub address or a QMP socket)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.path = subdir("runs") / (re.sub(r"[^A-Za-z0-9._-]", "_", target) + ".json")

    def left(self) -> Left | None:
        """The marker of a run that died without undoing its changes, if any."""
        try:
            data = json.loads(self.path.read_text())
            pid, started, state = int(data["pid"]), float(data["started"]), dict(data["state"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if pid != os.getpid() and _alive(pid):
            return None  # another run is at work on it
        return Left(pid, started, state)

    def write(self, state: dict[str, Any]) -> None:
        """Record what this run must undo (best effort: a read-only cache only loses the notice)."""
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps({"pid": os.getpid(), "started": time.time(), "target": self.target,
                                       "state": state}))
            os.replace(tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.unlink()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def warn(message: str) -> None:
    sys.stderr.write(f"ptinspect: warning: {message}\n")


@contextlib.contextmanager
def terminating() -> Iterator[None]:
    """SIGTERM and SIGHUP raise KeyboardInterrupt, as Ctrl-C does, so that the cleanup every
    target and the snapshot writer already do for Ctrl-C runs for `kill`, `timeout` and a
    closing terminal too.  Only the main thread can handle signals; elsewhere nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")

    before = {sig: signal.signal(sig, interrupt) for sig in TERMINATING}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """SIGTERM and SIGHUP held off while a target undoes its changes (a second `kill` must not
    cut the restore short); one that came meanwhile is delivered afterwards."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    before = {sig: signal.signal(sig, lambda signum, frame: pending.append(signum)) for sig in TERMINATING}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
        for signum in pending[:1]:
            signal.raise_signal(signum)
