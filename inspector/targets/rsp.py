"""A minimal GDB Remote Serial Protocol client for QEMU's gdbstub.

Talks to the stub directly over TCP (no gdb process): about ten times cheaper
per read than gdb's MI (PLATFORM-NOTES.md).  Every wait has a timeout.  The
client reads memory and registers and toggles QEMU's physical-memory mode,
which it restores; it never writes guest memory or registers.  Only `watch`
uses the debug requests below the reads (write watchpoints, continue,
interrupt): they change QEMU's debug state, never the guest's.
"""
from __future__ import annotations

import re
import socket
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass


class RspError(Exception):
    """The stub refused a request or the connection failed."""


class RspRefused(RspError):
    """The stub answered a memory read with an error reply (E NN): that memory cannot be read,
    the connection is fine."""


@dataclass(frozen=True)
class Register:
    name: str
    regnum: int
    bitsize: int
    group: str | None


def excerpt(reply: bytes, limit: int = 24) -> str:
    """A stub's reply as a message may show it: printable ASCII only, at most `limit` bytes."""
    text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in reply[:limit])
    return repr(text + ("..." if len(reply) > limit else ""))


def hex_bytes(reply: bytes, what: str, address: str) -> bytes:
    """The bytes a hex reply spells; RspError naming what was asked otherwise."""
    try:
        return bytes.fromhex(reply.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        raise RspError(f"the gdbstub at {address} answered {what} with {excerpt(reply)}, not hex data") from None


def checksum(payload: bytes) -> bytes:
    return b"%02x" % (sum(payload) & 0xFF)


def _frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + checksum(payload)


RLE = re.compile(rb"(.)\*(.)", re.DOTALL)


def _expand(m: re.Match[bytes]) -> bytes:
    return m.group(1) * (m.group(2)[0] - 29 + 1)


def unescape(data: bytes) -> bytes:
    """Undo RSP binary escaping ('}' x^0x20) and run-length encoding ('X*n': X and n-29 more)."""
    if b"}" in data:  # rare (binary replies): one pass, as gdb's read_frame does
        out = bytearray()
        i = 0
        while i < len(data):
            c = data[i]
            if c == 0x7D:
                i += 1
                out.append(data[i] ^ 0x20)
            elif c == 0x2A and out:
                i += 1
                out += bytes([out[-1]]) * (data[i] - 29)
            else:
                out.append(c)
            i += 1
        return bytes(out)
    return RLE.sub(_expand, data) if b"*" in data else data


@dataclass(frozen=True)
class StopReply:
    """A stop reply (RSP "Stop Reply Packets"): why the target stopped.

    `kind` is "signal" (T/S), "exited" (W) or "terminated" (X); `thread` is the thread id as the
    stub spells it ("p1.2" or "2"; QEMU's threads are its vCPUs, cpu_index + 1); `watch` is the
    address of the watchpoint that fired (QEMU reports the watchpoint's start, not the store's)."""

    kind: str
    signal: int
    thread: str | None
    watch: int | None
    raw: bytes


WATCH_KEYS = (b"watch", b"rwatch", b"awatch")


def parse_stop(reply: bytes) -> StopReply:
    """The stop reply `reply`; RspError when it is not one."""
    head = reply[:1]
    if head in (b"W", b"X") and len(reply) >= 3:
        try:
            code = int(reply[1:3], 16)
        except ValueError:
            code = -1
        return StopReply("exited" if head == b"W" else "terminated", code, None, None, reply)
    if head not in (b"T", b"S") or len(reply) < 3:
        raise RspError(f"the gdbstub sent {excerpt(reply)}, not a stop reply")
    try:
        signal = int(reply[1:3], 16)
    except ValueError:
        raise RspError(f"the gdbstub sent {excerpt(reply)}, not a stop reply") from None
    thread = watch = None
    for part in reply[3:].split(b";") if head == b"T" else ():
        key, sep, value = part.partition(b":")
        if not sep:
            continue
        if key == b"thread":
            thread = value.decode("ascii", "replace")
        elif key in WATCH_KEYS:
            try:
                watch = int(value, 16)
            except ValueError:
                raise RspError(f"the gdbstub sent a stop reply whose watchpoint address is not hex: "
                               f"{excerpt(reply, 60)}") from None
    return StopReply("signal", signal, thread, watch, reply)


def thread_number(thread: str) -> int | None:
    """The thread number of a thread id ("p1.2" -> 2, "2" -> 2); None when it is not one."""
    tid = thread.rpartition(".")[2] if thread.startswith("p") else thread
    try:
        return int(tid, 16)
    except ValueError:
        return None


class RspClient:
    """One connection to a gdbstub."""

    WINDOW = 32  # pipelined `m` requests in flight: their replies (<= 4 KiB each) fit the socket buffers

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.timeout = timeout
        self.address = f"{host}:{port}"
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise RspError(f"cannot connect to the gdbstub at {self.address}: {exc.strerror or exc}") from None
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.ack = True
        self.packets = 0  # requests sent, for benchmarks
        self.packet_size = 0x800
        self.pid: int | None = None
        self.stale = 0  # replies still due to requests an interrupted call sent (Ctrl-C mid-read)
        self._drain()
        self._handshake()

    # -- framing ---------------------------------------------------------
    def _recv(self, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise RspError(f"the gdbstub at {self.address} did not answer within {self.timeout:g} s")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except TimeoutError:
            raise RspError(f"the gdbstub at {self.address} did not answer within {self.timeout:g} s") from None
        except OSError as exc:
            raise RspError(f"connection to the gdbstub at {self.address} failed: {exc}") from None
        if not chunk:
            raise RspError(f"the gdbstub at {self.address} closed the connection")
        self.buf += chunk

    def _drain(self) -> None:
        """Discard anything the stub sent before we asked and that has arrived (a stale stop reply);
        one still on its way is skipped by the handshake, so no time is spent waiting here."""
        self.sock.settimeout(0)
        try:
            while self.sock.recv(65536):
                pass
        except (TimeoutError, BlockingIOError):
            pass
        except OSError as exc:
            raise RspError(f"connection to the gdbstub at {self.address} failed: {exc}") from None

    def _send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError as exc:
            raise RspError(f"connection to the gdbstub at {self.address} failed: {exc}") from None

    def _read_packet(self, deadline: float) -> bytes:
        while True:
            start = self.buf.find(b"$")
            if start >= 0:
                end = self.buf.find(b"#", start)
                if end >= 0 and len(self.buf) >= end + 3:
                    payload = self.buf[start + 1 : end]
                    self.buf = self.buf[end + 3 :]
                    if self.ack:
                        self._send_raw(b"+")
                    return unescape(payload)
            self._recv(deadline)

    def _skip_stale(self, deadline: float) -> None:
        """Read and drop the replies still due to requests an interrupted call sent, so that the
        next reply read is the answer to the next request (the stub answers in order)."""
        while self.stale:
            self._read_packet(deadline)
            self.stale -= 1

    def request(self, payload: str | bytes, timeout: float | None = None) -> bytes:
        """Send one packet and return the reply payload."""
        data = payload.encode() if isinstance(payload, str) else payload
        deadline = time.monotonic() + (timeout or self.timeout)
        self._skip_stale(deadline)
        self.buf = b""
        self._send_raw(b"$" + data + b"#" + checksum(data))
        self.packets += 1
        try:
            return self._reply(deadline)
        except BaseException:
            self.stale += 1  # interrupted or timed out: its reply may still come
            raise

    def _reply(self, deadline: float) -> bytes:
        if self.ack:
            while not self.buf.lstrip(b"+"):
                if self.buf.startswith(b"-"):
                    raise RspError(f"the gdbstub at {self.address} rejected a packet")
                if b"+" in self.buf:
                    self.buf = self.buf[self.buf.index(b"+") + 1 :]
                    break
                self._recv(deadline)
        return self._read_packet(deadline)

    # -- session -----------------------------------------------------------
    def _handshake(self) -> None:
        reply = self.request(b"qSupported:xmlRegisters=i386")
        deadline = time.monotonic() + self.timeout
        while reply[:1] in (b"T", b"S"):  # the stop reply QEMU sends when our connection stopped the VM
            reply = self._read_packet(deadline)
        m = re.search(rb"PacketSize=([0-9a-fA-F]+)", reply)
        if m:
            self.packet_size = int(m.group(1), 16)
        if b"QStartNoAckMode+" in reply and self.request("QStartNoAckMode") == b"OK":
            self.ack = False
        self.supported = reply

    def stop_reason(self) -> bytes:
        """The stop reply; remembers the process id when the stub answers in the
        multiprocess form ("thread:pPID.TID"), which QEMU keeps once any client asked for it."""
        reply = self.request("?")
        m = re.search(rb"thread:p([0-9a-fA-F]+)\.", reply)
        self.pid = int(m.group(1), 16) if m else None
        return reply

    def query(self, name: str) -> bytes:
        return self.request(name)

    def xfer(self, obj: str, annex: str) -> bytes:
        """qXfer:OBJ:read:ANNEX, all chunks."""
        out = b""
        while True:
            reply = self.request(f"qXfer:{obj}:read:{annex}:{len(out):x},{0xFFF:x}")
            if not reply or reply[:1] not in b"ml":
                raise RspError(f"the gdbstub at {self.address} cannot read {obj} {annex}: {excerpt(reply)}")
            out += reply[1:]
            if reply[:1] == b"l":
                return out

    def registers(self) -> dict[str, Register]:
        """Register names to numbers, from the stub's target description (each document read
        once: a description that includes itself is not followed round)."""
        regs: dict[str, Register] = {}
        regnum = 0
        loaded: set[str] = set()

        def load(annex: str) -> None:
            nonlocal regnum
            if annex in loaded:
                return
            loaded.add(annex)
            text = self.xfer("features", annex).replace(b"<xi:include", b"<include")
            try:
                root = ET.fromstring(text)
            except ET.ParseError as exc:
                raise RspError(f"the gdbstub at {self.address} describes its registers ({annex}) in text that "
                               f"is not XML ({exc})") from None
            for el in root.iter():
                tag = el.tag.split("}")[-1]
                try:
                    if tag == "include":
                        load(el.attrib["href"])
                    elif tag == "reg":
                        regnum = int(el.attrib.get("regnum", regnum))
                        name = el.attrib["name"]
                        regs.setdefault(name, Register(name, regnum, int(el.attrib["bitsize"]),
                                                       el.attrib.get("group")))
                        regnum += 1
                except (KeyError, ValueError):
                    raise RspError(f"the gdbstub at {self.address} describes a register ({annex}) without a "
                                   f"valid name, number or size: {excerpt(ET.tostring(el), 60)}") from None

        load("target.xml")
        return regs

    def read_register(self, reg: Register) -> int:
        reply = self.request(f"p{reg.regnum:x}")
        if not reply or reply.startswith(b"E") and len(reply) == 3:
            raise RspError(f"the gdbstub cannot read register {reg.name}")
        value = hex_bytes(reply, f"a read of register {reg.name}", self.address)
        if not 0 < len(value) * 8 <= max(reg.bitsize, 8):  # QEMU may send 32 of 64 bits (x86 CRs outside long mode)
            raise RspError(f"the gdbstub at {self.address} gave {len(value) * 8} bits for the "
                           f"{reg.bitsize}-bit register {reg.name}")
        return int.from_bytes(value, "little")

    def read_memory(self, addr: int, size: int) -> bytes:
        """Read with as few `m` packets as the stub's packet size allows."""
        return self.read_many([(addr, size)])[0]

    @property
    def chunk(self) -> int:
        """Bytes per `m` packet: the hex reply fills the stub's packet (QEMU: 0x800 of PacketSize=0x1000)."""
        return max(16, min(self.packet_size // 2, 0x800) & ~0xF)

    def read_many(self, requests: list[tuple[int, int]]) -> list[bytes]:
        """Each (addr, size) of `requests`, read with pipelined `m` packets: up to WINDOW
        requests are in flight, so the stub never waits on us between packets (QEMU's
        gdbstub handles queued packets in order and answers each in turn)."""
        chunk = self.chunk
        packets = [(a, min(chunk, addr + size - a)) for addr, size in requests for a in range(addr, addr + size, chunk)]
        replies: list[bytes] = []
        deadline = time.monotonic() + self.timeout
        self._skip_stale(deadline)
        self.buf = b""
        sent = 0
        try:
            while len(replies) < len(packets):
                if sent < len(packets) and sent - len(replies) < self.WINDOW:
                    batch = packets[sent : len(replies) + self.WINDOW]
                    self._send_raw(b"".join(_frame(b"m%x,%x" % p) for p in batch))
                    self.packets += len(batch)
                    sent += len(batch)
                got = self._take_packets()
                if got:
                    replies += got
                    deadline = time.monotonic() + self.timeout
                else:
                    self._recv(deadline)
        except BaseException:
            self.stale += sent - len(replies)  # Ctrl-C or a timeout: these replies may still come
            raise
        out: list[bytes] = []
        at = 0
        for _addr, size in requests:
            data = bytearray()
            while len(data) < size:
                a, n = packets[at]
                reply = replies[at]
                at += 1
                if reply.startswith(b"E") and len(reply) == 3:
                    raise RspRefused(f"the gdbstub cannot read {n} bytes at {a:#x} ({reply.decode()})")
                part = hex_bytes(reply, f"a read of {n} bytes at {a:#x}", self.address)
                if len(part) != n:
                    raise RspError(f"the gdbstub returned {len(part)} of {n} bytes at {a:#x}")
                data += part
            out.append(bytes(data))
        return out

    def _take_packets(self) -> list[bytes]:
        """Every complete reply in the buffer (acknowledged in ack mode), in order."""
        found: list[bytes] = []
        while True:
            start = self.buf.find(b"$")
            if b"-" in self.buf[: start if start >= 0 else len(self.buf)]:
                raise RspError(f"the gdbstub at {self.address} rejected a packet")
            end = self.buf.find(b"#", start) if start >= 0 else -1
            if end < 0 or len(self.buf) < end + 3:
                break
            found.append(unescape(self.buf[start + 1 : end]))
            self.buf = self.buf[end + 3 :]
        if found and self.ack:
            self._send_raw(b"+" * len(found))
        return found

    def interrupt(self) -> bytes:
        """Stop the target (Ctrl-C) and return the stop reply."""
        deadline = time.monotonic() + self.timeout
        self.buf = b""
        self._send_raw(b"\x03")
        return self._read_packet(deadline)

    # -- debug requests (watch only) -----------------------------------------
    def insert_watchpoint(self, addr: int, length: int) -> None:
        """A write watchpoint (Z2) on guest virtual [addr, addr + length); RspError when refused."""
        reply = self.request(f"Z2,{addr:x},{length:x}")
        if reply == b"":
            raise RspError(f"the gdbstub at {self.address} does not support write watchpoints (Z2)")
        if reply != b"OK":
            raise RspError(f"the gdbstub at {self.address} refused a write watchpoint of {length} bytes at "
                           f"{addr:#x} ({excerpt(reply)})")

    def remove_watchpoint(self, addr: int, length: int) -> bool:
        """Remove a write watchpoint (z2); False when the stub says it has no such watchpoint."""
        reply = self.request(f"z2,{addr:x},{length:x}")
        if reply == b"OK":
            return True
        if reply.startswith(b"E"):
            return False
        raise RspError(f"the gdbstub at {self.address} answered the removal of the watchpoint at {addr:#x} "
                       f"with {excerpt(reply)}")

    def step(self, thread: str) -> StopReply:
        """Execute one instruction on vCPU `thread` alone (vCont;s), the others stay stopped; its stop reply."""
        reply = self.request(f"vCont;s:{thread}")
        if reply == b"":
            raise RspError(f"the gdbstub at {self.address} does not support vCont stepping")
        return parse_stop(reply)

    def select_thread(self, thread: str) -> None:
        """Hg: the thread (QEMU: vCPU) whose registers the next `p` requests read."""
        reply = self.request(f"Hg{thread}")
        if reply != b"OK":
            raise RspError(f"the gdbstub at {self.address} cannot select thread {thread} ({excerpt(reply)})")

    def resume(self) -> None:
        """Continue every vCPU (`c`); the stop reply comes later, to wait_stop()."""
        deadline = time.monotonic() + self.timeout
        self._skip_stale(deadline)
        self.buf = b""
        self._send_raw(_frame(b"c"))
        self.packets += 1

    def wait_stop(self, timeout: float) -> StopReply | None:
        """The stop reply that ends a resume(), or None when none came within `timeout` seconds
        (the target still runs).  Console output packets (O...) are skipped."""
        deadline = time.monotonic() + timeout
        while True:
            start = self.buf.find(b"$")
            end = self.buf.find(b"#", start) if start >= 0 else -1
            if end < 0 or len(self.buf) < end + 3:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return None
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except TimeoutError:
                    return None
                except OSError as exc:
                    raise RspError(f"connection to the gdbstub at {self.address} failed: {exc}") from None
                if not chunk:
                    raise RspError(f"the gdbstub at {self.address} closed the connection")
                self.buf += chunk
                continue
            reply = self._read_packet(deadline + self.timeout)
            if reply[:1] == b"O" and reply != b"OK":
                continue
            return parse_stop(reply)

    def stop(self) -> StopReply:
        """Stop a resumed target (0x03) and return its stop reply: the interrupt's, or the one
        already on its way (a watchpoint that fired first; QEMU ignores 0x03 once stopped)."""
        self._send_raw(b"\x03")
        reply = self.wait_stop(self.timeout)
        if reply is None:
            raise RspError(f"the gdbstub at {self.address} did not stop the VM within {self.timeout:g} s")
        return reply

    def detach(self) -> None:
        """Detach; QEMU resumes the VM once no process is attached (handle_detach).
        In multiprocess mode a bare "D" is refused (E22): name the process."""
        try:
            pid = self.pid
            reply = self.request("D" if pid is None else f"D;{pid:x}", timeout=min(self.timeout, 5.0))
            if reply != b"OK":
                raise RspError(f"the gdbstub at {self.address} refused to detach ({excerpt(reply)}); "
                               "the VM may still be stopped")
        finally:
            self.close()

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass
