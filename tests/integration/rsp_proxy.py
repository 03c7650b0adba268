"""A recording TCP proxy between ptinspect and QEMU's gdbstub, and what its records may hold.

Every byte either side sends is forwarded unchanged and parsed into RSP units (GDB manual,
"Overview" of the Remote Protocol): `$payload#xx` packets, `+`/`-` acknowledgements and the
0x03 interrupt.  The proxy decodes on its own (binary escapes `}`, and run-length encoding,
which only replies use): nothing here comes from ptinspect's RSP client, so that the records
are an independent view of what ptinspect sent.  `classify` says what each request does to
the target; `violations` is the rule the proxy test asserts.
"""
from __future__ import annotations

import re
import select
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

TIMEOUT = 30.0  # seconds any one socket operation may wait


@dataclass(frozen=True)
class Unit:
    """One protocol unit on the wire: `kind` is "packet", "ack", "nak" or "interrupt"."""

    side: str  # "client" (ptinspect) or "stub" (QEMU)
    kind: str
    payload: bytes = b""
    checksum_ok: bool = True


def decode(payload: bytes, reply: bool) -> bytes:
    """A packet's payload with binary escapes undone and, in a reply, runs expanded
    ("X*n": X and n - 29 more copies of it)."""
    out = bytearray()
    i = 0
    while i < len(payload):
        c = payload[i]
        if c == 0x7D and i + 1 < len(payload):  # '}': the next byte XOR 0x20
            out.append(payload[i + 1] ^ 0x20)
            i += 2
        elif c == 0x2A and reply and out and i + 1 < len(payload):  # '*': run length
            out += bytes([out[-1]]) * (payload[i + 1] - 29)
            i += 2
        else:
            out.append(c)
            i += 1
    return bytes(out)


class Parser:
    """Splits one direction's byte stream into Units (bytes split across reads are kept)."""

    def __init__(self, side: str) -> None:
        self.side = side
        self.buf = b""

    def feed(self, data: bytes) -> list[Unit]:
        self.buf += data
        units: list[Unit] = []
        while self.buf:
            head = self.buf[:1]
            if head in (b"+", b"-", b"\x03"):
                units.append(Unit(self.side, {b"+": "ack", b"-": "nak", b"\x03": "interrupt"}[head]))
                self.buf = self.buf[1:]
                continue
            if head != b"$":
                start = self.buf.find(b"$")
                junk, self.buf = (self.buf, b"") if start < 0 else (self.buf[:start], self.buf[start:])
                units.append(Unit(self.side, "junk", junk))
                continue
            end = self.buf.find(b"#")
            if end < 0 or len(self.buf) < end + 3:
                break
            raw, cs = self.buf[1:end], self.buf[end + 1:end + 3]
            self.buf = self.buf[end + 3:]
            ok = cs.lower() == b"%02x" % (sum(raw) & 0xFF)
            units.append(Unit(self.side, "packet", decode(raw, reply=self.side == "stub"), ok))
        return units


@dataclass
class Session:
    """One client connection: every unit both sides sent, in the order the proxy saw them."""

    units: list[Unit] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, units: list[Unit]) -> None:
        with self.lock:
            self.units.extend(units)

    def requests(self) -> list[bytes]:
        """ptinspect's packets, 0x03 as b"\\x03"."""
        return [u.payload if u.kind == "packet" else b"\x03" for u in self.units
                if u.side == "client" and u.kind in ("packet", "interrupt")]

    def counts(self) -> Counter[str]:
        """ptinspect's requests by type (packet name), acknowledgements apart."""
        counted: Counter[str] = Counter()
        for u in self.units:
            if u.side == "client":
                counted[packet_type(u.payload) if u.kind == "packet" else u.kind] += 1
        return counted


def packet_type(payload: bytes) -> str:
    """A request's name: `m`, `p`, `Z2`, `qXfer:features:read`, `Qqemu.PhyMemMode:1`, ..."""
    if payload[:1] in (b"q", b"Q", b"v"):
        name = re.split(rb"[,;]", payload, maxsplit=1)[0]
        if name.startswith(b"qXfer:"):
            name = b":".join(name.split(b":")[:3])
        elif name.startswith(b"qSupported"):
            name = b"qSupported"
        return name.decode("ascii", "replace")
    if payload[:1] in (b"Z", b"z"):
        return payload[:2].decode("ascii", "replace")
    return payload[:1].decode("ascii", "replace") or "(empty)"


# What each request does to the target. Reads of memory, registers, the stop reason and the target
# description change nothing; QEMU's physical-memory mode (gdbstub.c handle_set_qemu_phy_mem_mode:
# "Qqemu.PhyMemMode:0|1") changes only how the stub reads; detaching resumes the VM
# (handle_detach -> gdb_continue).  Write watchpoints, continue and interrupt belong to `watch`.
READS = re.compile(rb"^(\?|qSupported(:.*)?|QStartNoAckMode|qXfer:features:read:[^:]+:[0-9a-f]+,[0-9a-f]+"
                   rb"|qqemu\.PhyMemMode|m[0-9a-f]+,[0-9a-f]+|p[0-9a-f]+|Hg[0-9a-fp.-]+|D(;[0-9a-f]+)?)$")
PHYS_MODE = re.compile(rb"^Qqemu\.PhyMemMode:[01]$")
WATCH = re.compile(rb"^([Zz]2,[0-9a-f]+,[0-9a-f]+|c|vCont;c(:[0-9a-fp.-]+)?|\x03)$")
FORBIDDEN = [  # (pattern, what it does)
    (re.compile(rb"^[MX]"), "writes guest memory"),
    (re.compile(rb"^[PG]"), "writes guest registers"),
    (re.compile(rb"^[Zz][0-4]"), "inserts or removes a breakpoint or watchpoint"),
    (re.compile(rb"^qRcmd,"), "runs a monitor command"),
    (re.compile(rb"^([sSCcik]|vCont|vRun|vKill|vFile|R)"), "runs, steps, kills or restarts the guest"),
]


def classify(payload: bytes, watch: bool = False) -> str | None:
    """None when the request is read-only (or, with `watch`, one of watch's debug requests);
    otherwise what it does to the target."""
    if READS.match(payload) or PHYS_MODE.match(payload) or (watch and WATCH.match(payload)):
        return None
    for pattern, what in FORBIDDEN:
        if pattern.match(payload):
            return what
    return "is not a request known to be read-only"


def violations(session: Session, watch: bool = False) -> list[str]:
    """Every request of `session` that is not allowed, and every framing error ptinspect made."""
    bad = [f"{p[:40]!r} {what}" for p in session.requests() if (what := classify(p, watch)) is not None]
    bad += [f"bad checksum on {u.payload[:40]!r}" for u in session.units if u.side == "client" and not u.checksum_ok]
    return bad


def unmatched_watchpoints(session: Session) -> list[bytes]:
    """Z2 insertions without a later z2 of the same address and length (multiset)."""
    open_: Counter[bytes] = Counter()
    for p in session.requests():
        if p.startswith(b"Z2,"):
            open_[p[3:]] += 1
        elif p.startswith(b"z2,") and open_[p[3:]]:
            open_[p[3:]] -= 1
    return [b"Z2," + k for k, n in open_.items() for _ in range(n)]


def phys_mode_sets(session: Session) -> list[bytes]:
    return [p.split(b":")[1] for p in session.requests() if PHYS_MODE.match(p)]


class Proxy:
    """Listens on 127.0.0.1 (a free port) and forwards each connection to `upstream` (HOST:PORT)."""

    def __init__(self, upstream: str) -> None:
        host, _, port = upstream.rpartition(":")
        self.upstream = (host or "127.0.0.1", int(port))
        self.sessions: list[Session] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.address = f"127.0.0.1:{self.server.getsockname()[1]}"
        self._closing = threading.Event()
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._start(self._accept)

    def _start(self, target: Callable[..., None], *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(t)
        t.start()

    def _accept(self) -> None:
        while not self._closing.is_set():
            try:
                client, _ = self.server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(TIMEOUT)  # bounds a send to a peer that stopped reading
            stub = socket.create_connection(self.upstream, timeout=TIMEOUT)
            session = Session()
            self.sessions.append(session)
            self._sockets += [client, stub]
            self._start(self._pump, client, stub, Parser("client"), session)
            self._start(self._pump, stub, client, Parser("stub"), session)

    def _pump(self, src: socket.socket, dst: socket.socket, parser: Parser, session: Session) -> None:
        try:
            while not self._closing.is_set():
                if not select.select([src], [], [], 0.2)[0]:
                    continue
                data = src.recv(65536)
                if not data:
                    break
                session.add(parser.feed(data))  # recorded before it is forwarded
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def settled(self, count: int, timeout: float = 10.0) -> list[Session]:
        """The sessions once `count` have been opened and every connection has ended."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.sessions) >= count and all(not t.is_alive() for t in self._threads[1:]):
                return self.sessions
            time.sleep(0.05)
        raise TimeoutError(f"the proxy saw {len(self.sessions)} of {count} sessions end within {timeout} s")

    def close(self) -> None:
        self._closing.set()
        self.server.close()
        for t in self._threads:
            t.join(timeout=5)
        for s in self._sockets:
            s.close()


STOP = re.compile(rb"^[TS][0-9a-f]{2}")


def stub_query(address: str, payload: bytes, timeout: float = TIMEOUT) -> bytes:
    """One request to a gdbstub on a connection of our own (ack mode), then a detach:
    the reply payload.  The test's own view of the stub's state (the physical-memory mode).
    The stop reply QEMU sends when a connection stops the VM is skipped (not asked for)."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout) as sock:
        parser = Parser("stub")
        deadline = time.monotonic() + timeout

        def ask(request: bytes) -> bytes:
            sock.sendall(b"$" + request + b"#" + b"%02x" % (sum(request) & 0xFF))
            while True:
                for unit in parser.feed(b""):
                    if unit.kind == "packet":
                        sock.sendall(b"+")
                        if not STOP.match(unit.payload):
                            return unit.payload
                    if unit.kind == "nak":
                        raise ConnectionError(f"the stub rejected {request!r}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"no reply to {request!r} within {timeout} s")
                chunk = sock.recv(65536)
                if not chunk:
                    raise ConnectionError("the stub closed the connection")
                parser.buf += chunk

        reply = ask(payload)
        if ask(b"D") != b"OK":
            raise ConnectionError("the stub refused to detach")
        return reply
