"""The operation channel: answers parsed, requests sent over a console socket, the workload's side on the host.

The pagemap bits are fs/proc/task_mmu.c's (7.2): PM_PRESENT bit 63, PM_SWAP 62, frame bits 0-54.
"""
from __future__ import annotations

import json
import platform
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ptinspect.inspector.vm import VMError, ops
from ptinspect.inspector.vm.state import VM

WORKLOAD_DIR = Path(__file__).resolve().parents[2] / "vm-images" / "workload"
PRESENT = 1 << 63


def answer(**fields: Any) -> dict[str, Any]:
    """An answer as the workload prints it: prepare pageout, ok, two present pages."""
    doc = {"seq": "7-1", "op": "prepare", "for": "pageout", "status": "ok", "reason": None, "errno": None,
           "shape": "4k", "start": "0x2010000000", "length": 8192, "page_size": 4096, "op_start": "0x2010000000", "op_length": 8192,
           "calls": 0, "anon_huge_kb": 0, "swap_kb": 0, "pagemap": [hex(PRESENT | 0x41e36), hex(PRESENT | 0x41e37)],
           "maps": None}
    return {**doc, **fields}


def line(doc: dict[str, Any]) -> str:
    return "PTINSPECT-OP " + json.dumps(doc)


def test_parse_answer() -> None:
    r = ops.parse_result(line(answer()))
    assert (r.seq, r.op, r.for_op, r.status, r.shape) == ("7-1", "prepare", "pageout", "ok", "4k")
    assert (r.start, r.end, r.op_start, r.op_end) == (0x2010000000, 0x2010002000, 0x2010000000, 0x2010002000)
    assert [(va, pm.pfn) for va, pm in r.pages()] == [(0x2010000000, 0x41e36), (0x2010001000, 0x41e37)]
    refused = ops.parse_result(line(answer(op="guard-install", status="unsupported", errno=22, reason="EINVAL")))
    assert (refused.status, refused.errno_name) == ("unsupported", "EINVAL")


@pytest.mark.parametrize("text, message", [
    ("PTINSPECT-MANIFEST-BEGIN", "not an operation answer"),
    ("PTINSPECT-OP {", "malformed"),
    (line(answer(status="done")), "status 'done'"),
    (line(answer(pagemap=["0x0"])), "1 pagemap values for 2 pages"),
    (line(answer(start=12)), "expected a hex string"),
    (line({k: v for k, v in answer().items() if k != "calls"}), "calls: missing"),
])
def test_malformed_answers(text: str, message: str) -> None:
    with pytest.raises(VMError, match=message):
        ops.parse_result(text)


class FakeConsole:
    """A unix socket server standing in for QEMU's console: records what it receives, then sends the
    chunks REPLY(seq) returns, one by one."""

    def __init__(self, path: Path, reply: Any, hold: float = 0.5) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        self.server.listen(1)
        self.received = b""
        self.reply, self.hold = reply, hold
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        conn, _ = self.server.accept()
        with conn:
            while not self.received.endswith(b"\n"):
                self.received += conn.recv(4096)
            seq = self.received.split()[0].decode()
            for chunk in self.reply(seq):
                conn.sendall(chunk.encode())
                time.sleep(0.05)
            time.sleep(self.hold)  # the client reads and hangs up first

    def close(self) -> None:
        self.server.close()
        self.thread.join(timeout=5)


@pytest.fixture
def machine(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[VM]:
    """A VM record whose console is a socket in TMP_PATH; it runs (QMP is not asked)."""
    monkeypatch.setattr(ops, "_wait_running", lambda vm, deadline: None)
    monkeypatch.setattr(VM, "alive", lambda self: True)
    yield VM(name="fake", arch="x86_64", kernel_release="7.2", qemu_pid=1, gdb="", qmp=str(tmp_path / "qmp.sock"),
             vmlinux=None, workload_pid=100, manifest="", serial_log=str(tmp_path / "serial.log"),
             run_dir=str(tmp_path), accel="tcg", started=0.0, console=str(tmp_path / "console.sock"))


def test_request_sends_one_line_and_takes_its_own_answer(machine: VM) -> None:
    console = FakeConsole(Path(machine.console or ""), lambda seq: [
        "[   12.3] some kernel line\r\n" + line(answer(seq="other-9")) + "\r\n" + line(answer(seq=seq))[:40],
        line(answer(seq=seq))[40:] + "\r\n"])  # the answer split across two reads
    try:
        result = ops.request(machine, ["prepare", "pageout"], timeout=10)
    finally:
        console.close()
    seq, rest = console.received.decode().split(" ", 1)
    assert rest == "prepare pageout\n" and result.seq == seq and result.for_op == "pageout"


def test_request_times_out_without_an_answer(machine: VM) -> None:
    Path(machine.serial_log).write_text("ptinspect-init: workload pid 100\n")
    console = FakeConsole(Path(machine.console or ""), lambda seq: ["no answer here\r\n"], hold=3)
    began = time.monotonic()
    try:
        with pytest.raises(VMError, match=r"no answer to request .* within the timeout(.|\n)*workload pid 100"):
            ops.request(machine, ["pageout"], timeout=1.5)
    finally:
        console.close()
    assert time.monotonic() - began < 5


def test_workload_exit_is_reported(machine: VM) -> None:
    console = FakeConsole(Path(machine.console or ""), lambda seq: ["PTINSPECT-WORKLOAD-EXIT status=139\r\n"])
    try:
        with pytest.raises(VMError, match="PTINSPECT-WORKLOAD-EXIT status=139"):
            ops.request(machine, ["pageout"], timeout=10)
    finally:
        console.close()


def test_bad_words_and_missing_console(machine: VM) -> None:
    with pytest.raises(VMError, match="bad request"):
        ops.request(machine, ["prepare", "two words"])
    machine.console = None
    with pytest.raises(VMError, match="no console socket"):
        ops.request(machine, ["pageout"])


def test_waits_while_the_vm_is_stopped(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    statuses = iter(["debug", "debug", "running"])

    class FakeQmp:
        def __init__(self, path: str, timeout: float) -> None:
            pass

        def __enter__(self) -> FakeQmp:
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def execute(self, command: str) -> dict[str, str]:
            assert command == "query-status"
            return {"status": next(statuses, "debug")}

    monkeypatch.setattr(ops, "Qmp", FakeQmp)
    vm = VM(name="fake", arch="x86_64", kernel_release="7.2", qemu_pid=1, gdb="", qmp="", vmlinux=None,
            workload_pid=1, manifest="", serial_log="", run_dir=str(tmp_path), accel="tcg", started=0.0)
    ops._wait_running(vm, time.monotonic() + 10)  # returns at the third answer
    with pytest.raises(VMError, match="is debug, not running"):
        ops._wait_running(vm, time.monotonic() + 0.5)


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("gcc"),
                    reason="builds and runs the workload natively (x86_64 host with gcc)")
def test_workload_answers_requests_on_host(tmp_path: Path) -> None:
    """The real workload's side: requests from a pipe, one answer per line, in order; bad ones refused."""
    binary = tmp_path / "workload"
    subprocess.run(["gcc", "-static", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    *map(str, sorted(WORKLOAD_DIR.glob("*.c")))], check=True, capture_output=True)
    requests = ["a prepare mprotect", "b mprotect", "c mprotect 0x2010000000", "d collapse", "e frob",
                "f mprotect 0x1234", "g prepare", "bad$seq mprotect", "h prepare pageout", "i", "", "j maps"]
    out = subprocess.run([str(binary), "--once", "--ops"], input="\n".join(requests) + "\n", check=True,
                         capture_output=True, text=True, timeout=120).stdout
    answers = [ops.parse_result(text) for text in out.splitlines() if text.startswith(ops.RESULT)]
    by_seq = {a.seq: a for a in answers}
    assert [a.seq for a in answers] == ["a", "b", "c", "d", "e", "f", "g", "", "h", "i", "", "j"]
    prepared = by_seq["a"]
    assert (prepared.status, prepared.shape, prepared.start, prepared.length) == ("ok", "4k", 0x2010000000, 16 * 4096)
    assert all(pm.present for pm in prepared.pagemap)  # written pages (PFNs read as 0 when not root)
    done = by_seq["b"]
    assert (done.status, done.op_start, done.op_length) == ("ok", 0x2010000000 + 4 * 4096, 8 * 4096)
    assert by_seq["c"].status == "ok"  # again, by START: mprotect of read-only pages is fine
    assert "collapse needs a 4k-2m region" in (by_seq["d"].reason or "")
    assert "unknown operation 'frob'" in (by_seq["e"].reason or "")
    assert "no prepared region starts at '0x1234'" in (by_seq["f"].reason or "")
    assert "prepare what?" in (by_seq["g"].reason or "")
    assert all(a.status == "failed" and a.start is None for a in answers[7:8] + answers[9:11])  # no seq, no region
    assert all(a.maps is None for a in answers[:11])
    maps = by_seq["j"].maps  # the process's own /proc/self/maps, the prepared regions in it
    assert by_seq["j"].status == "ok" and maps is not None
    assert any(m.startswith("2010004000-201000c000 r--p ") for m in maps), maps  # the mprotect of pages 4-11
    assert any(m.startswith("2010400000-2010410000 rw-p ") for m in maps), maps
    assert (by_seq["h"].status, by_seq["h"].start) == ("ok", 0x2010400000)  # the next slot; failed prepares take none
