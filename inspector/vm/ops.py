"""Operations on request: the running workload changes its memory when asked over the serial console.

The harness's serial console is a unix socket (VM.console) that QEMU also logs to serial.log.
`request()` writes one line `SEQ WORDS...` into it and reads the guest's answer, one line
`PTINSPECT-OP {json}` with the same seq (protocol: vm-images/README-workload.md).
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..cache import locked
from ..targets.qmp import Qmp, QmpError
from . import VMError
from .manifest import WORKLOAD_EXIT, ManifestError, PagemapEntry, _hex, _int, _lines, _list, _Obj, _opt, _str
from .qemu import tail
from .state import VM

OPERATIONS = ("guard-install", "guard-remove", "mprotect", "pageout", "thp-split", "collapse", "migrate", "age",
              "uaccess-fault", "contpte-mprotect")
# Forwarded by the workload to the HMM guest program (vm-images/hmm/hmmop.c) where test_hmm.ko loaded.
HMM_OPERATIONS = ("hmm-prepare", "hmm-prepare-thp", "hmm-migrate-dev", "hmm-migrate-sys", "hmm-exclusive",
                  "hmm-readonly", "hmm-touch", "hmm-snapshot", "hmm-selftest")
RESULT = "PTINSPECT-OP "
FAILURE_MARKS = ("Kernel panic - not syncing", WORKLOAD_EXIT)
STATUSES = ("ok", "unsupported", "failed")
PAGE = 4096  # the base page of the test kernels but the 16 KiB granule one (answers carry page_size)
_seqs = itertools.count(1)


@dataclass(frozen=True)
class OpResult:
    """One answer of the workload: what it did, and its pagemap of the region afterwards."""

    seq: str
    op: str | None  # the operation, or "prepare"
    for_op: str | None  # prepare: the operation the region is for
    status: str  # ok | unsupported | failed
    reason: str | None
    errno: int | None  # of the failing call
    shape: str | None  # the region's shape now: 4k, guarded, thp, 4k-2m, mthp
    start: int | None  # the region
    length: int
    page_size: int  # the guest's base page: one pagemap value per page_size bytes
    op_start: int | None  # the part the step acted on
    op_length: int
    calls: int  # madvise calls made (pageout, collapse)
    anon_huge_kb: int  # smaps AnonHugePages summed over the region's VMAs
    swap_kb: int  # smaps Swap, likewise
    pagemap: tuple[PagemapEntry, ...]  # one /proc/self/pagemap value per base page of the region
    maps: tuple[str, ...] | None  # request "maps": the workload's /proc/self/maps lines
    line: str  # the answer as the guest printed it

    @property
    def end(self) -> int:
        assert self.start is not None
        return self.start + self.length

    @property
    def op_end(self) -> int:
        assert self.op_start is not None
        return self.op_start + self.op_length

    @property
    def errno_name(self) -> str | None:
        return errno.errorcode.get(self.errno) if self.errno else None

    def pages(self) -> list[tuple[int, PagemapEntry]]:
        """(va, pagemap entry) of every base page of the region."""
        assert self.start is not None or not self.pagemap
        return [(self.start + i * self.page_size, pm) for i, pm in enumerate(self.pagemap)]  # type: ignore[operator]


def parse_result(line: str) -> OpResult:
    """The answer in one `PTINSPECT-OP {...}` line; VMError if it breaks the protocol."""
    if not line.startswith(RESULT):
        raise VMError(f"not an operation answer: {line[:80]!r}")
    try:
        obj = _Obj(json.loads(line[len(RESULT):]), "PTINSPECT-OP")
        status = obj.get("status", _str)
        if status not in STATUSES:
            raise ManifestError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        start, length = obj.get("start", _opt(_hex)), obj.get("length", _int)
        page_size = obj.get("page_size", _int)
        if page_size < PAGE or page_size & (page_size - 1):
            raise ManifestError(f"page_size {page_size} is not a power of two of at least {PAGE}")
        pagemap = tuple(PagemapEntry(_hex(v, f"pagemap[{i}]")) for i, v in enumerate(obj.get("pagemap", _list)))
        if start is not None and len(pagemap) != length // page_size:
            raise ManifestError(f"{len(pagemap)} pagemap values for {length // page_size} pages")
        return OpResult(seq=obj.get("seq", _opt(_str)) or "", op=obj.get("op", _opt(_str)),
                        for_op=obj.get("for", _opt(_str)), status=status, reason=obj.get("reason", _opt(_str)),
                        errno=obj.get("errno", _opt(_int)), shape=obj.get("shape", _opt(_str)), start=start,
                        length=length, page_size=page_size, op_start=obj.get("op_start", _opt(_hex)),
                        op_length=obj.get("op_length", _int), calls=obj.get("calls", _int),
                        anon_huge_kb=obj.get("anon_huge_kb", _int), swap_kb=obj.get("swap_kb", _int),
                        pagemap=pagemap, maps=obj.get("maps", _opt(_lines)), line=line)
    except (ManifestError, ValueError) as exc:
        raise VMError(f"malformed operation answer ({exc}): {line[:200]}") from None


def _wait_running(vm: VM, deadline: float) -> None:
    """Return once QMP says the VM runs; VMError if it is still stopped (a debugger?) at DEADLINE."""
    status = "unknown"
    while True:
        try:
            with Qmp(vm.qmp, timeout=max(1.0, deadline - time.monotonic())) as qmp:
                status = qmp.execute("query-status")["status"]
        except QmpError as exc:
            raise VMError(f"VM {vm.name}: cannot ask QEMU whether the VM runs: {exc}") from None
        if status == "running":
            return
        if time.monotonic() > deadline:
            raise VMError(f"VM {vm.name} is {status}, not running (is a debugger holding it?); "
                          "an operation is requested only while it runs")
        time.sleep(0.2)


def _answer(sock: socket.socket, vm: VM, seq: str, deadline: float) -> OpResult:
    """Read console output from SOCK until the answer to SEQ; the socket is drained as it comes,
    so the guest's console never blocks on it."""
    buffer = b""
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise VMError(f"VM {vm.name}: no answer to request {seq} within the timeout (is another client "
                          f"connected to {vm.console}? QEMU serves one at a time)\n"
                          f"--- last lines of {vm.serial_log} ---\n{tail(Path(vm.serial_log))}")
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            continue
        if not chunk:
            raise VMError(f"VM {vm.name}: QEMU closed the console socket (did the VM stop?)")
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode(errors="replace").rstrip("\r")
            if any(mark in line for mark in FAILURE_MARKS):
                time.sleep(2)  # let the rest of the report reach the log
                raise VMError(f"VM {vm.name}: {line}\n--- last lines of {vm.serial_log} ---\n"
                              f"{tail(Path(vm.serial_log))}")
            if line.startswith(RESULT):
                result = parse_result(line)
                if result.seq == seq:
                    return result


def request(vm: VM, words: Sequence[str], timeout: float = 60.0) -> OpResult:
    """Ask VM's workload to do WORDS (`prepare OP`, or `OP [START]`) and return its answer.

    Sent only while the VM runs (waits for that within TIMEOUT); requests to one VM are
    serialized by a lock. VMError when the VM is gone, stays stopped, or does not answer in time.
    """
    if not words or any(not w or any(c.isspace() for c in w) for w in words):
        raise VMError(f"bad request {list(words)!r}: give `prepare OPERATION`, `OPERATION [START]` or `maps`")
    if not vm.console:
        raise VMError(f"VM {vm.name} has no console socket (booted by an older ptinspect): boot it again")
    if not vm.alive():
        raise VMError(f"VM {vm.name} is not running")
    deadline = time.monotonic() + timeout
    seq = f"{os.getpid()}-{next(_seqs)}"
    with locked(Path(vm.run_dir) / "console.lock", timeout):
        _wait_running(vm, deadline)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(max(1.0, deadline - time.monotonic()))
            try:
                sock.connect(vm.console)
                sock.sendall(f"{seq} {' '.join(words)}\n".encode())
            except OSError as exc:
                raise VMError(f"VM {vm.name}: console socket {vm.console}: {exc}") from None
            return _answer(sock, vm, seq, deadline)
