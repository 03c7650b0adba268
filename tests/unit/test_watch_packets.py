"""The watch requests of the RSP client and the gdbstub target against a fake stub: stop replies
parsed as the RSP specification spells them, and no watchpoint left behind on any exit path
(normal close, close of a running VM, refused insertion, lost connection, a killed run's marker);
a step (vCont;s) runs with interrupts and timers held off and leaves the stub's step flags as found.

The stub's answers follow QEMU's gdbstub: Z2/z2 answer OK, a removal of a watchpoint it does not
hold answers E22 (gdbstub.c handle_remove_bp: -ENOENT), `c` answers only with the next stop, and
0x03 stops a running VM with T02.
"""
from __future__ import annotations

import socket
import threading

import pytest

from ptinspect.inspector.runstate import Marker
from ptinspect.inspector.targets.gdbstub import GdbstubError, GdbstubTarget
from ptinspect.inspector.targets.rsp import RspError, parse_stop, thread_number

from .test_fake_gdbstub import FakeStub, frame, private_cache  # noqa: F401 (fixture)


class WatchStub(FakeStub):
    """A FakeStub that holds write watchpoints, runs on `c` and stops on 0x03 or a scripted hit."""

    def __init__(self, refuse: bool = False, drop_on_continue: bool = False) -> None:
        self.watchpoints: set[tuple[int, int]] = set()
        self.refuse = refuse
        self.drop_on_continue = drop_on_continue
        self.running = False
        self.hit = threading.Event()
        self.conn: socket.socket | None = None
        self.sstep = 0x7  # QEMU's default under TCG: ENABLE|NOIRQ|NOTIMER (gdbstub.c init_gdbserver_state)
        self.steps: list[tuple[str, int]] = []  # (thread, qqemu.sstep flags during the step)
        super().__init__()

    def _answer(self, packet: bytes) -> bytes:
        if packet[:2] in (b"Z2", b"z2"):
            addr, length = (int(x, 16) for x in packet[3:].split(b","))
            if packet.startswith(b"Z2"):
                if self.refuse:
                    return b"E22"
                self.watchpoints.add((addr, length))
                return b"OK"
            if (addr, length) in self.watchpoints:
                self.watchpoints.remove((addr, length))
                return b"OK"
            return b"E22"
        if packet.startswith(b"Hg"):
            return b"OK"
        if packet == b"qqemu.sstep":
            return b"%#x" % self.sstep
        if packet.startswith(b"Qqemu.sstep="):
            self.sstep = int(packet.split(b"=")[1], 16)
            return b"OK"
        if packet.startswith(b"vCont;s:"):  # QEMU answers a step with its stop (T05, the stepped thread)
            self.steps.append((packet[8:].decode(), self.sstep))
            return b"T05thread:%s;" % packet[8:]
        return super()._answer(packet)

    def _session(self, conn: socket.socket) -> None:
        self.conn = conn
        buf = b""
        try:
            while True:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                buf += chunk
                while buf:
                    if buf[:1] == b"\x03":
                        buf = buf[1:]
                        self.packets.append(b"\x03")
                        if self.running:
                            self.running = False
                            conn.sendall(frame(b"T02thread:p01.01;"))
                        continue
                    start, end = buf.find(b"$"), buf.find(b"#")
                    if start < 0 or end < 0 or len(buf) < end + 3:
                        break
                    packet, buf = buf[start + 1:end], buf[end + 3:]
                    self.packets.append(packet)
                    if packet == b"c":
                        if self.drop_on_continue:
                            conn.close()
                            return
                        self.running = True
                        continue
                    conn.sendall(frame(self._answer(packet)))
        except OSError:
            return

    def fire(self, addr: int) -> None:
        """The guest stores into a watched range: QEMU stops and reports the watchpoint's start."""
        assert self.running and self.conn is not None
        self.running = False
        self.conn.sendall(frame(b"T05thread:p01.02;watch:%x;" % addr))


@pytest.fixture
def stubs():
    made: list[WatchStub] = []

    def make(**kw: bool) -> WatchStub:
        made.append(WatchStub(**kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


def test_stop_replies() -> None:
    hit = parse_stop(b"T05thread:p01.02;watch:ffff888002fb6000;")
    assert (hit.kind, hit.signal, hit.thread, hit.watch) == ("signal", 5, "p01.02", 0xFFFF888002FB6000)
    assert thread_number(hit.thread) == 2 and thread_number("3") == 3 and thread_number("pzz.q") is None
    assert parse_stop(b"T02thread:01;").watch is None
    assert parse_stop(b"T05awatch:10;thread:p1.1;").watch == 0x10
    assert (parse_stop(b"S05").kind, parse_stop(b"S05").thread) == ("signal", None)
    assert (parse_stop(b"W00").kind, parse_stop(b"X09").kind, parse_stop(b"X09").signal) == ("exited", "terminated", 9)
    for bad in (b"OK", b"", b"T", b"Tzz", b"T05watch:nothex;"):
        with pytest.raises(RspError):
            parse_stop(bad)


def test_a_hit_is_reported_and_close_removes_every_watchpoint(stubs) -> None:
    stub = stubs()
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    target.insert_watchpoint(0x1000, 16)
    target.insert_watchpoint(0x3000, 8)
    assert stub.watchpoints == {(0x1000, 16), (0x3000, 8)}
    assert Marker(f"gdbstub-{target.address}").left().state["watchpoints"] == [[0x1000, 16], [0x3000, 8]]
    target.resume()
    assert target.wait_stop(0.1) is None and target.running  # nothing stored yet: still running
    stub.fire(0x3000)
    stop = target.wait_stop(2)
    assert stop is not None and (stop.watch, stop.thread) == (0x3000, "p01.02") and not target.running
    target.remove_watchpoint(0x3000, 8)
    target.resume()
    target.close()  # running: stopped with 0x03 first (QEMU takes no packet while running), then cleaned up
    assert stub.watchpoints == set()
    assert b"\x03" in stub.packets and stub.packets[-1].startswith(b"D")
    assert Marker(f"gdbstub-127.0.0.1:{stub.port}").left() is None


def test_a_refused_watchpoint_is_an_error_and_not_recorded(stubs) -> None:
    stub = stubs(refuse=True)
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    with pytest.raises(GdbstubError, match="refused a write watchpoint"):
        target.insert_watchpoint(0x1000, 8)
    assert target.watchpoints == []
    target.close()
    assert not [p for p in stub.packets if p.startswith(b"z2")]


def test_a_lost_connection_is_one_error_and_the_next_run_removes_what_was_left(stubs, capsys) -> None:
    stub = stubs(drop_on_continue=True)
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    target.insert_watchpoint(0x2000, 8)
    target.resume()
    with pytest.raises(GdbstubError, match="closed the connection"):
        target.wait_stop(2)
    target.close()  # cannot reach the stub: a warning, no traceback; the marker keeps the watchpoint
    assert "ptinspect: warning" in capsys.readouterr().err
    assert stub.watchpoints == {(0x2000, 8)}
    stub.drop_on_continue = False
    again = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)  # the next run finds the marker
    assert stub.watchpoints == set()
    assert "removed a write watchpoint at 0x2000" in capsys.readouterr().err
    again.close()
    assert Marker(f"gdbstub-127.0.0.1:{stub.port}").left() is None


def test_a_step_holds_interrupts_off_and_restores_the_flags_it_found(stubs) -> None:
    stub = stubs()
    stub.sstep = 0x1  # a client left interrupts on while stepping (gdb: maint packet Qqemu.sstep=0x1)
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    stop = target.step("p01.02")
    assert (stop.kind, stop.thread, stop.watch) == ("signal", "p01.02", None)
    target.step("p01.02")
    assert stub.steps == [("p01.02", 0x7), ("p01.02", 0x7)]  # NOIRQ|NOTIMER on for each step
    assert Marker(f"gdbstub-{target.address}").left().state["sstep_before"] == "0x1"
    target.close()
    assert stub.sstep == 0x1  # as found


def test_a_killed_run_s_step_flags_are_restored_by_the_next(stubs) -> None:
    stub = stubs()
    stub.sstep = 0x1
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    target.step("p01.01")
    target.rsp.close()  # killed: no close(), the marker stays
    assert stub.sstep == 0x7
    again = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    assert stub.sstep == 0x1
    again.close()


def test_quiet_flags_already_set_are_left_alone(stubs) -> None:
    stub = stubs()
    target = GdbstubTarget(f"127.0.0.1:{stub.port}", timeout=2)
    target.step("1")
    target.close()
    assert stub.sstep == 0x7 and not [p for p in stub.packets if p.startswith(b"Qqemu.sstep")]
