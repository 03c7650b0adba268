"""Running VMs as state files ($CACHE/vms/<name>.json), so any process can list and stop them."""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import time
from dataclasses import dataclass, fields
from pathlib import Path

from ..cache import subdir
from ..targets.qmp import Qmp, QmpError
from . import VMError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
FACT_KEYS = ("name", "qemu_pid", "gdb", "qmp", "console", "vmlinux", "workload_pid", "manifest", "serial_log",
             "arch", "kernel_release")


@dataclass
class VM:
    """A booted QEMU with its connection facts; `stop()` ends it."""

    name: str
    arch: str
    kernel_release: str
    qemu_pid: int
    gdb: str
    qmp: str
    vmlinux: str | None
    workload_pid: int | None  # None while booting
    manifest: str
    serial_log: str
    run_dir: str
    accel: str
    started: float
    console: str | None = None  # the serial console's unix socket (operation requests; ops.py)
    process: subprocess.Popen | None = None  # set in the process that booted it

    def facts(self) -> dict:
        """The connection facts `vm boot --json` prints."""
        return {key: getattr(self, key) for key in FACT_KEYS}

    def save(self) -> None:
        data = {field.name: getattr(self, field.name) for field in fields(self) if field.name != "process"}
        tmp = state_file(self.name).with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=1))
        tmp.rename(state_file(self.name))

    def alive(self) -> bool:
        """Whether the QEMU process of this VM still runs (pid checked against its command line)."""
        return is_our_qemu(self.qemu_pid, self.qmp)

    def stop(self, timeout: float = 10.0) -> None:
        """QMP quit, then SIGTERM, then SIGKILL, each bounded by TIMEOUT; remove the state file."""
        if self.alive():
            with contextlib.suppress(QmpError), Qmp(self.qmp, timeout=timeout) as qmp:
                qmp.execute("quit")
            for sig in (None, signal.SIGTERM, signal.SIGKILL):
                if sig is not None and self.alive():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.qemu_pid, sig)
                if _wait_gone(self, timeout):
                    break
            else:
                raise VMError(f"QEMU pid {self.qemu_pid} of VM {self.name} survived SIGKILL")
        if self.process is not None:
            self.process.wait(timeout=timeout)
        remove_state(self)


def state_file(name: str) -> Path:
    return subdir("vms") / f"{name}.json"


def remove_state(vm: VM) -> None:
    """Remove the state file and the QMP and console sockets (and their short-path directory, if any)."""
    state_file(vm.name).unlink(missing_ok=True)
    qmp = Path(vm.qmp)
    for sock in (qmp, Path(vm.console) if vm.console else None):
        if sock is not None:
            sock.unlink(missing_ok=True)
    if qmp.parent != Path(vm.run_dir):
        with contextlib.suppress(OSError):
            qmp.parent.rmdir()


def is_our_qemu(pid: int, qmp: str) -> bool:
    """PID is a live (non-zombie) QEMU whose command line names the QMP socket QMP."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    if stat.rsplit(")", 1)[1].split()[0] == "Z":
        return False
    return b"qemu-system" in cmdline[0] and any(qmp.encode() in arg for arg in cmdline)


def _wait_gone(vm: VM, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if vm.process is not None and vm.process.poll() is not None:
            return True
        if vm.process is None and not vm.alive():
            return True
        time.sleep(0.1)
    return False


def load(path: Path) -> VM | None:
    """The VM of a state file, or None if the file is unreadable."""
    try:
        return VM(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        return None


def booting(path: Path) -> bool:
    """PATH is the placeholder of a boot that is still choosing its QEMU (its process is alive)."""
    try:
        pid = json.loads(path.read_text()).get("booting")
    except (OSError, ValueError, AttributeError):
        return False
    return isinstance(pid, int) and Path(f"/proc/{pid}").exists()


def running() -> list[VM]:
    """Every VM whose QEMU still runs; state files of ended VMs are removed."""
    vms = []
    for path in sorted(subdir("vms").glob("*.json")):
        vm = load(path)
        if vm is not None and vm.alive():
            vms.append(vm)
        elif not booting(path):
            path.unlink(missing_ok=True)
    return vms


def find(name_or_pid: str) -> VM:
    """The running VM named NAME_OR_PID, or whose QEMU has that pid."""
    for vm in running():
        if name_or_pid in (vm.name, str(vm.qemu_pid)):
            return vm
    names = ", ".join(vm.name for vm in running()) or "none"
    raise VMError(f"no running VM named or with QEMU pid {name_or_pid!r} (running: {names})")
