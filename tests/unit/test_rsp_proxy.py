"""The recording proxy's rule (tests/integration/rsp_proxy.py) on requests it must flag: the
read-only test on live VMs can fail only if its classifier sees a write for what it is."""
from __future__ import annotations

from ..integration.rsp_proxy import Parser, Session, classify, decode, unmatched_watchpoints, violations


def frame(payload: bytes) -> bytes:
    return b"$" + payload + b"#" + b"%02x" % (sum(payload) & 0xFF)


def session_of(*payloads: bytes) -> Session:
    session = Session()
    session.add(Parser("client").feed(b"".join(frame(p) for p in payloads)))
    return session


WRITES = [b"M1000,4:deadbeef", b"X2000,1:}]", b"P8=0100000000000000", b"G" + b"00" * 16,
          b"Z0,ffffffff81000000,1", b"Z1,ffffffff81000000,1", b"Z2,ffff888000001000,8",
          b"Z3,ffff888000001000,8", b"Z4,ffff888000001000,8", b"qRcmd,73797374656d5f7265736574",
          b"s", b"c", b"vCont;c", b"k", b"Qqemu.PhyMemMode:2"]
READS = [b"qSupported:xmlRegisters=i386", b"?", b"qXfer:features:read:target.xml:0,fff", b"qqemu.PhyMemMode",
         b"Qqemu.PhyMemMode:1", b"Qqemu.PhyMemMode:0", b"m5a84800,800", b"p2a", b"Hgp1.2", b"D", b"D;1"]


def test_a_recorded_write_is_flagged() -> None:
    session = session_of(*READS, *WRITES)
    assert session.requests() == [*READS, *[decode(p, reply=False) for p in WRITES]]
    assert [classify(p) is not None for p in session.requests()] == [False] * len(READS) + [True] * len(WRITES)
    assert len(violations(session)) == len(WRITES)
    assert "writes guest memory" in violations(session_of(b"M1000,4:deadbeef"))[0]


def test_watch_may_place_write_watchpoints_and_run_the_vm_only() -> None:
    allowed = [p for p in WRITES if classify(p, watch=True) is None]
    assert allowed == [b"Z2,ffff888000001000,8", b"c", b"vCont;c"]
    assert classify(b"\x03") is not None and classify(b"\x03", watch=True) is None


def test_every_z2_needs_its_z2_removal() -> None:
    placed = [b"Z2,ffff888000001000,8", b"Z2,ffff888000002000,8", b"Z2,ffff888000001000,8"]
    assert unmatched_watchpoints(session_of(*placed, b"z2,ffff888000001000,8")) == [
        b"Z2,ffff888000001000,8", b"Z2,ffff888000002000,8"]
    assert unmatched_watchpoints(session_of(*placed, b"z2,ffff888000001000,8", b"z2,ffff888000002000,8",
                                            b"z2,ffff888000001000,8")) == []
    assert unmatched_watchpoints(session_of(b"Z2,1000,8", b"z2,1000,4")) == [b"Z2,1000,8"]  # length too


def test_framing_checksums_and_run_lengths() -> None:
    session = Session()
    session.add(Parser("client").feed(b"+$m1000,8#00\x03"))
    assert [u.kind for u in session.units] == ["ack", "packet", "interrupt"]
    assert violations(session) == ["b'\\x03' is not a request known to be read-only",  # interrupt: watch only
                                   f"bad checksum on {b'm1000,8'!r}"]
    parser = Parser("stub")
    whole = frame(b"0* 1")
    assert parser.feed(whole[:4]) == []  # split across reads: kept until complete
    (reply,) = parser.feed(whole[4:])
    assert reply.payload == b"0" * 4 + b"1"  # "0* " is 0 and (32 - 29) more
    (reply,) = Parser("client").feed(whole)
    assert reply.payload == b"0* 1"  # requests carry no run lengths
