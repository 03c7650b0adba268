"""The gdbstub target against a fake stub (a local socket server speaking RSP) that answers each
packet type correctly, with garbage, with silence, by disconnecting or one byte at a time.

The rule every case asserts: a correct answer (the entries of the stub's page tables), or a
non-zero exit with one error line that names the gdbstub, and never a traceback.  The stub
records every packet: none may write memory or registers, set breakpoints or run monitor commands.
"""
from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptinspect.commands.cli import main
from ptinspect.inspector.targets.rsp import RspClient, RspError, checksum

from .test_drgn_targets import memory

CR0_PG, CR4_PAE, EFER_LME, EFER_LMA = 1 << 31, 1 << 5, 1 << 8, 1 << 10
REGS = {"cr3": 0x1000, "cr0": CR0_PG | 1, "cr4": CR4_PAE, "efer": EFER_LME | EFER_LMA}
TARGET_XML = ('<?xml version="1.0"?><target><feature name="org.qemu.gdb.i386.sys">'
              + "".join(f'<reg name="{n}" bitsize="64" regnum="{i + 40}"/>' for i, n in enumerate(REGS))
              + "</feature></target>").encode()
FORBIDDEN = re.compile(rb"^(M|X|P|G|Z|z|qRcmd|c|s|vCont|vRun|vKill|k)")  # writes, breakpoints, monitor, run


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + checksum(payload)


Fault = Callable[[socket.socket, bytes], bool]  # (connection, good reply) -> True when the answer was sent


def garbage(conn: socket.socket, good: bytes) -> bool:
    conn.sendall(frame(b"\xff\x00zz<not hex>\x1b[31m"))
    return True


def silence(conn: socket.socket, good: bytes) -> bool:
    return True  # the reply never comes


def disconnect(conn: socket.socket, good: bytes) -> bool:
    conn.close()
    raise ConnectionError


def slow(conn: socket.socket, good: bytes) -> bool:
    for byte in frame(good):
        conn.sendall(bytes([byte]))
        time.sleep(0.002)
    return True


def truncated(conn: socket.socket, good: bytes) -> bool:
    conn.sendall(frame(good)[: max(1, len(good) // 2)])
    return True


class FakeStub:
    """A QEMU-like gdbstub (no-ack mode) of an x86-64 guest whose RAM is test_drgn_targets.memory()."""

    def __init__(self, faults: dict[str, Fault] | None = None, stop_on_connect: float | None = None) -> None:
        self.faults = faults or {}
        self.stop_on_connect = stop_on_connect  # seconds after accepting: QEMU's stop reply for the stop
        self.ram = memory()
        self.packets: list[bytes] = []
        self.phys = b"0"  # QEMU's physical-memory mode, as the client last set it
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(4)
        self.port = self.server.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _answer(self, packet: bytes) -> bytes:
        if packet.startswith(b"qSupported"):
            return b"PacketSize=1000;qXfer:features:read+;QStartNoAckMode+;multiprocess+"
        if packet.startswith(b"Qqemu.PhyMemMode:"):
            self.phys = packet.split(b":")[1]
            return b"OK"
        if packet == b"QStartNoAckMode":
            return b"OK"
        if packet == b"?":
            return b"T05thread:p01.01;"
        if packet.startswith(b"qXfer:features:read:target.xml:"):
            offset = int(packet.split(b":")[4].split(b",")[0], 16)
            return b"l" + TARGET_XML[offset:]
        if packet == b"qqemu.PhyMemMode":
            return self.phys
        if packet.startswith(b"p"):
            regnum = int(packet[1:], 16)
            value = list(REGS.values())[regnum - 40]
            return value.to_bytes(8, "little").hex().encode()
        if packet.startswith(b"m"):
            addr, size = (int(x, 16) for x in packet[1:].split(b","))
            return self.ram[addr:addr + size].ljust(size, b"\0").hex().encode()  # QEMU: zeros past RAM
        if packet.startswith(b"D"):
            return b"OK"
        return b""

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn: socket.socket) -> None:
        buf = b""
        try:
            if self.stop_on_connect is not None:  # QEMU stops the VM on a connection and reports it
                time.sleep(self.stop_on_connect)
                conn.sendall(frame(b"T02thread:p01.01;"))
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while True:
                    start = buf.find(b"$")
                    end = buf.find(b"#", start)
                    if start < 0 or end < 0 or len(buf) < end + 3:
                        buf = buf[start:] if start >= 0 else b""
                        break
                    packet, buf = buf[start + 1:end], buf[end + 3:]
                    self.packets.append(packet)
                    good = self._answer(packet)
                    fault = next((f for prefix, f in self.faults.items() if packet.startswith(prefix.encode())), None)
                    if fault is None:
                        conn.sendall(frame(good))
                    else:
                        fault(conn, good)
        except (ConnectionError, OSError):
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.server.close()

    def forbidden(self) -> list[bytes]:
        return [p for p in self.packets if FORBIDDEN.match(p)]


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run markers (inspector/runstate.py) go to the test's own directory."""
    monkeypatch.setenv("PTINSPECT_CACHE", str(tmp_path / "cache"))


@pytest.fixture
def stub_factory():
    stubs: list[FakeStub] = []

    def make(faults: dict[str, Fault] | None = None, stop_on_connect: float | None = None) -> FakeStub:
        stubs.append(FakeStub(faults, stop_on_connect))
        return stubs[-1]

    yield make
    for s in stubs:
        s.close()


@pytest.fixture(scope="module")
def good() -> tuple[int, str, str]:
    """What a good stub gives (the right answer every faulty run must match if it succeeds)."""
    stub = FakeStub()
    try:
        with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as cache:
            mp.setenv("PTINSPECT_CACHE", cache)
            return kernel_dump(stub)
    finally:
        stub.close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def kernel_dump(stub: FakeStub) -> tuple[int, str, str]:
    return run("dump", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "1", "--kernel")


def test_a_good_stub_gives_the_kernel_entries_read_only(stub_factory) -> None:
    stub = stub_factory()
    code, out, err = kernel_dump(stub)
    assert code == 0, err
    lines = [line for line in out.splitlines() if not line.startswith(("#", "va "))]
    assert [line.split()[0] for line in lines] == ["0xffffffff80000000", "0xffffffff80001000", "0xffffffff80200000"]
    assert stub.packets[-1].startswith(b"D") and not stub.forbidden()


PACKETS = ["qSupported", "?", "qXfer", "qqemu.PhyMemMode", "Qqemu.PhyMemMode:1", "p", "m", "D"]


@pytest.mark.parametrize("fault", [garbage, silence, disconnect, slow, truncated], ids=lambda f: f.__name__)
@pytest.mark.parametrize("packet", PACKETS)
def test_a_bad_answer_is_one_clear_error_or_the_right_answer(stub_factory, good: tuple[int, str, str], packet: str,
                                                            fault: Fault) -> None:
    stub = stub_factory({packet: fault})
    code, out, err = kernel_dump(stub)
    assert "Traceback" not in err and "Traceback" not in out
    assert not stub.forbidden(), stub.forbidden()
    if code == 0:  # the answer must then be the right one (the detach, say, may fail with a warning)
        assert out == good[1], err
        return
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1 and f"127.0.0.1:{stub.port}" in errors[0], err
    assert "\x1b" not in err and "\xff" not in err  # junk is never echoed raw


def test_a_target_description_that_is_not_xml(stub_factory) -> None:
    stub = stub_factory({"qXfer": lambda conn, good: conn.sendall(frame(b"l<target><reg name=")) or True})
    code, _, err = kernel_dump(stub)
    assert code != 0 and "is not XML" in err and "Traceback" not in err


def test_register_replies_that_are_not_hex(stub_factory) -> None:
    stub = stub_factory({"p": lambda conn, good: conn.sendall(frame(b"xyzzy")) or True})
    code, _, err = kernel_dump(stub)
    assert code != 0 and "read of register" in err and "'xyzzy'" in err, err


def test_a_stale_memory_reply_is_not_read_as_the_detach_answer(stub_factory) -> None:
    """A read given up (Ctrl-C or a timeout) leaves replies in flight: detach skips them."""
    delayed: list[bytes] = []

    def late(conn: socket.socket, good: bytes) -> bool:
        """Memory replies held back past the client's timeout, then sent together (as a busy
        QEMU would still send them after the user gave up)."""
        if not delayed:
            threading.Timer(0.8, lambda: conn.sendall(b"".join(delayed))).start()
        delayed.append(frame(good))
        return True

    stub = stub_factory({"m": late})
    client = RspClient("127.0.0.1", stub.port, timeout=0.5)
    client.stop_reason()
    with pytest.raises(RspError, match="did not answer"):
        client.read_many([(0x1000, 0x3000)])
    assert client.stale == len(delayed) > 0
    client.timeout = 2.0
    client.detach()  # raises if it read a memory reply as the answer
    assert client.stale == 0


@pytest.mark.parametrize("timeout", ["-5", "0", "nan", "inf", "1e400", "abc", "100000"])
def test_timeouts_out_of_bounds_are_usage_errors(timeout: str) -> None:
    code, _, err = run("dump", "--gdb", "127.0.0.1:1", "--timeout", timeout, "--kernel")
    assert code == 2 and "--timeout" in err and "Traceback" not in err, err


@pytest.mark.parametrize("args,expect", [
    (["--root", "0x1234"], "not aligned"),
    (["--root", "0x10000000000000"], "beyond the 52-bit physical addresses"),
    (["--root", "0x100000000000000000"], "beyond 64 bits"),
    (["--root", "-1"], "is negative"),
    (["--kernel", "--range", "0x0-0x100000000000000000"], "beyond 64 bits"),
    (["--kernel", "--range", "0x900000000000-0xa00000000000"], "outside this root's address space"),
])
def test_roots_and_ranges_beyond_bounds_are_usage_errors(stub_factory, tmp_path: Path, args: list[str],
                                                          expect: str) -> None:
    """The same rule on the gdbstub as on a vmcore (test_drgn_targets): a root must be a table in RAM."""
    from .test_drgn_targets import elf_core

    stub = stub_factory()
    for target in (["--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2"], ["--vmcore", str(elf_core(tmp_path / "c"))]):
        code, _, err = run("dump", *target, *args)
        assert code == 2 and expect in err and "Traceback" not in err, (target, err)


@pytest.mark.parametrize("va,expect", [("0x100000000000000000", "beyond 64 bits"),
                                       ("0x0000900000000000", "0x0-0x7fffffffffff and 0xffff800000000000"),
                                       ("-0x10", "is negative"), ("zz", "is not a number")])
def test_vas_outside_the_mode_are_usage_errors(stub_factory, va: str, expect: str) -> None:
    stub = stub_factory()
    code, _, err = run("translate", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--kernel", "--", va)
    assert code == 2 and expect in err and "Traceback" not in err, err


def test_a_canonical_va_is_translated(stub_factory) -> None:
    stub = stub_factory()
    code, out, err = run("translate", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--kernel",
                         "0xffffffff80001234")
    assert code == 0 and out.rstrip().endswith("0xffffffff80001234 -> 0x6234"), err


@pytest.mark.parametrize("delay", [0.0, 0.1], ids=["before-drain", "after-drain"])
def test_the_stop_reply_of_the_connection_is_not_an_answer(stub_factory, good: tuple[int, str, str],
                                                          delay: float) -> None:
    """QEMU sends a stop reply when a connection stops the VM; the client does not wait for it
    but skips it wherever it arrives before the first answer."""
    assert kernel_dump(stub_factory(stop_on_connect=delay)) == good


def test_several_vas_are_translated_in_one_run(stub_factory) -> None:
    stub = stub_factory()
    code, out, err = run("translate", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--kernel",
                         "0xffffffff80001234", "0xffffffff80001238")
    assert code == 0, err
    assert [line for line in out.splitlines() if " -> " in line] == ["0xffffffff80001234 -> 0x6234",
                                                                      "0xffffffff80001238 -> 0x6238"]
    assert sum(p == b"?" for p in stub.packets) == 1  # one connection, one stop
    code, out, err = run("translate", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--kernel",
                         "--format", "json", "0xffffffff80001234", "0xffffffff80001238")
    assert code == 0, err
    assert [json.loads(line)["pa"] for line in out.splitlines()] == ["0x6234", "0x6238"]


def slow_memory(conn: socket.socket, good: bytes) -> bool:
    time.sleep(0.3)
    conn.sendall(frame(good))
    return True


def start_snapshot(stub: FakeStub, out: Path, cache: Path) -> subprocess.Popen:
    """`ptinspect snapshot --gdb` in its own process, once it is reading memory."""
    proc = subprocess.Popen([sys.executable, "-m", "ptinspect.commands.cli", "snapshot", "--gdb", f"127.0.0.1:{stub.port}",
                             "--timeout", "5", "--kernel", str(out)], cwd=Path(__file__).parents[2],
                            env={**os.environ, "PTINSPECT_CACHE": str(cache)}, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not any(p.startswith(b"m") for p in stub.packets):
        assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.stderr else ""
        time.sleep(0.02)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP], ids=["SIGTERM", "SIGHUP"])
def test_a_terminated_snapshot_restores_the_vm_and_leaves_no_file(stub_factory, tmp_path: Path, signum: int) -> None:
    stub = stub_factory({"m": slow_memory})
    proc = start_snapshot(stub, tmp_path / "snap.json", tmp_path / "cache")
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0 and "Traceback" not in err, err
    after = stub.packets[next(i for i, p in enumerate(stub.packets) if p.startswith(b"m")):]
    assert b"Qqemu.PhyMemMode:0" in after and after[-1].startswith(b"D"), after[-3:]  # restored, resumed
    assert stub.phys == b"0"
    assert not list(tmp_path.glob(".snap.json.*.tmp")) and not (tmp_path / "snap.json").exists()
    assert not list((tmp_path / "cache" / "runs").glob("*.json"))  # the marker is gone


@pytest.mark.parametrize("keep", [False, True], ids=["resume", "keep-stopped"])
def test_the_run_after_a_killed_one_says_so_and_undoes_it(stub_factory, tmp_path: Path, keep: bool) -> None:
    stub = stub_factory({"m": slow_memory})
    proc = start_snapshot(stub, tmp_path / "snap.json", tmp_path / "cache")
    proc.kill()
    proc.wait(timeout=10)
    assert stub.phys == b"1" and not stub.packets[-1].startswith(b"D")  # what SIGKILL leaves
    stub.faults.clear()
    stub.packets.clear()
    result = subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", "dump", "--gdb", f"127.0.0.1:{stub.port}",
                             "--kernel", *(["--keep-stopped"] if keep else [])],
                            cwd=Path(__file__).parents[2], env={**os.environ, "PTINSPECT_CACHE": str(tmp_path / "cache")},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert f"left stopped by an interrupted ptinspect run (pid {proc.pid}" in result.stderr
    assert ("--keep-stopped leaves it stopped" if keep else "it runs again when this command ends") in result.stderr
    assert stub.phys == b"0"  # the mode the killed run found is restored
    assert stub.packets[-1].startswith(b"D") != keep
    assert not list((tmp_path / "cache" / "runs").glob("*.json"))


def refuse(conn: socket.socket, good: bytes) -> bool:
    conn.sendall(frame(b"E14"))  # what a stub answers a read it cannot serve
    return True


@pytest.mark.parametrize("command", [["dump"], ["translate", "0x1000"], ["snapshot", "OUT"]])
@pytest.mark.parametrize("root,faults,expect", [
    ("0x100000", {}, "reads as all zeros"),  # beyond the fake's 64 KiB of RAM: QEMU reads zeros there
    ("0x8000", {"m8000,": refuse}, "the target cannot read it"),  # the stub refuses the root's read
], ids=["zeros-beyond-ram", "refused"])
def test_a_root_outside_readable_memory_is_refused_by_name(stub_factory, tmp_path: Path, command: list[str],
                                                           root: str, faults: dict[str, Fault], expect: str) -> None:
    """Never an empty table: the root is named and said to be outside the readable memory, and the
    VM is left as it was (mode restored, detached)."""
    stub = stub_factory(faults)
    out = tmp_path / "snap.json"
    args = [str(out) if a == "OUT" else a for a in command]
    code, stdout, err = run(args[0], "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--root", root, *args[1:])
    assert code == 2 and f"the root table at {root}" in err and expect in err, err
    assert "outside the readable physical memory" in err and "Traceback" not in err
    assert stdout == "" and not out.exists()
    assert stub.phys == b"0" and stub.packets[-1].startswith(b"D") and not stub.forbidden()


def test_a_lower_table_the_stub_refuses_is_an_unknown_entry_naming_it(stub_factory) -> None:
    """The PTE table at 0x4000 refused: its PMD entry is `unknown` and names it; the rest is walked."""
    stub = stub_factory({"m4000,": refuse})
    code, out, err = kernel_dump(stub)
    assert code == 0, err
    lines = [line for line in out.splitlines() if not line.startswith(("#", "va "))]
    assert [line.split()[0] for line in lines] == ["0xffffffff80000000", "0xffffffff80200000"], out
    assert "unknown" in lines[0] and "table 0x4000 cannot be read" in lines[0] and "E14" in lines[0], lines[0]
    code, out, err = run("translate", "--gdb", f"127.0.0.1:{stub.port}", "--timeout", "2", "--kernel",
                         "0xffffffff80001234")
    assert code == 0 and out.splitlines()[-1].startswith("0xffffffff80001234 -> unknown (table 0x4000 cannot be "
                                                          "read"), out + err
