"""Running guest programs on request, for the kernel's own selftests: a witness of what test_hmm.ko
does that does not come from ptinspect's code.

hmm-tests (tools/testing/selftests/mm/hmm-tests.c) is built from the kernel's own source with the
module (inspector/vm/hmm.py fetches it, initramfs.build_hmm_tests compiles it) and is
/ptinspect/hmm/hmm-tests in the guest; migration.c (two NUMA nodes, inspector/vm/mmselftests.py) is
/ptinspect/selftests/migration; `start(vm, [path, args...])` asks the workload to run it
(request `SEQ run PATH ARG...`, vm-images/README-workload.md), `finish()` collects its output.
"""
from __future__ import annotations

import os
import re
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import locked
from . import VMError
from .state import VM

GUEST_PATH = "/ptinspect/hmm/hmm-tests"
MIGRATION_PATH = "/ptinspect/selftests/migration"  # inspector/vm/mmselftests.py builds it
RUN_START = "PTINSPECT-RUN-START "
RUN = "PTINSPECT-RUN "
RUN_END = "PTINSPECT-RUN-END "


@dataclass(frozen=True)
class RunResult:
    """A guest program's output lines (as it printed them) and exit status."""

    seq: str
    lines: tuple[str, ...]
    status: int


def start(vm: VM, argv: list[str], timeout: float = 30.0) -> str:
    """Ask VM's workload to run ARGV (argv[0] an absolute guest path) in the background; its SEQ once the
    guest started it (the VM must run)."""
    if not argv or not argv[0].startswith("/") or any(not a or any(c.isspace() for c in a) for a in argv):
        raise VMError(f"bad guest command {argv!r}: an absolute path and arguments without spaces")
    if not vm.console:
        raise VMError(f"VM {vm.name} has no console socket: boot it again")
    seq = f"r{os.getpid()}-{time.monotonic_ns() % 10**9}"
    with locked(Path(vm.run_dir) / "console.lock", timeout), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(vm.console)
            sock.sendall(f"\n{seq} run {' '.join(argv)}\n".encode())  # the newline ends a torn earlier line
            # QEMU takes input as the guest UART has room and drops what is unread when the client goes:
            # the socket stays open until the guest says it started the program.
            buffer = b""
            while f"{RUN_START}{seq}".encode() not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise VMError(f"VM {vm.name}: QEMU closed the console socket")
                buffer = buffer[-4096:] + chunk
        except TimeoutError:
            raise VMError(f"VM {vm.name}: the guest did not start {argv[0]} within {timeout:.0f} s "
                          "(is the VM stopped?)") from None
        except OSError as exc:
            raise VMError(f"VM {vm.name}: console socket {vm.console}: {exc}") from None
    return seq


def finish(vm: VM, seq: str, timeout: float) -> RunResult:
    """The output of run SEQ from VM's serial log, once its end line is there; VMError after TIMEOUT."""
    deadline = time.monotonic() + timeout
    end = re.compile(rf"^{re.escape(RUN_END + seq)} status=(\d+)", re.MULTILINE)
    while True:
        text = Path(vm.serial_log).read_text(errors="replace").replace("\r", "")
        if match := end.search(text):
            prefix = f"{RUN}{seq} "
            lines = tuple(line[len(prefix):] for line in text.splitlines() if line.startswith(prefix))
            return RunResult(seq, lines, int(match[1]))
        if time.monotonic() > deadline or not vm.alive():
            raise VMError(f"VM {vm.name}: guest run {seq} did not end within {timeout:.0f} s"
                          + ("" if vm.alive() else " (the VM is gone)"))
        time.sleep(0.5)


def kselftest_verdicts(lines: tuple[str, ...]) -> dict[str, str]:
    """TAP verdicts of a kselftest harness run: test name -> pass, fail, skip, xfail (`ok N NAME # SKIP`)."""
    verdicts = {}
    for line in lines:
        if match := re.match(r"^(not ok|ok) \d+ (\S+)(?: # (\w+))?", line):
            directive = (match[3] or "").upper()
            verdicts[match[2]] = ("skip" if directive == "SKIP" else "xfail" if directive == "XFAIL"
                                  else "pass" if match[1] == "ok" else "fail")
    return verdicts
