"""JSON records of decoded values and walked entries (schema ptinspect.snapshot/1).

Addresses and raw values are 0x-prefixed hex strings; sizes and indices are
integers.  Fields are extended, never renamed.
"""
from __future__ import annotations

from typing import Any

from archs.common import Decoded, Kind

from .entry import Entry

SCHEMA = "ptinspect.snapshot/1"


def hx(value: int) -> str:
    return f"{value:#x}"


def decoded_record(dec: Decoded) -> dict[str, Any]:
    """Everything a decoded value says, without its location."""
    rec: dict[str, Any] = {"level": dec.level, "raw": hx(dec.raw), "kind": dec.kind.value}
    if dec.size:
        rec["size"] = dec.size
    if dec.pfn is not None:
        rec["pfn"] = hx(dec.pfn)
        rec["pfn_space"] = dec.pfn_space
    if dec.next_table is not None:
        rec["next_table"] = hx(dec.next_table)
    rec["flags"] = list(dec.flags)
    if dec.fields:
        rec["fields"] = dict(dec.fields)
    if dec.access is not None:
        a = dec.access
        rec["access"] = {k: getattr(a, k) for k in ("read", "write", "exec", "user", "young", "dirty")}
    if dec.softleaf is not None:
        rec["softleaf"] = {
            "type": dec.softleaf.type,
            "offset": hx(dec.softleaf.offset),
            "val": hx(dec.softleaf.val),
            "flags": list(dec.softleaf.arch_flags),
        }
    if dec.kind is Kind.MARKER or dec.markers:
        rec["markers"] = list(dec.markers)
    if dec.details:
        rec["details"] = dict(dec.details)
    if dec.cont is not None:
        rec["cont"] = {"scheme": dec.cont.scheme, "entries": dec.cont.entries, "size": dec.cont.size}
    if dec.notes:
        rec["notes"] = list(dec.notes)
    if dec.reason:
        rec["reason"] = dec.reason
    return rec


def entry_record(entry: Entry) -> dict[str, Any]:
    """A walked entry: VA, location, hardware decoding and the kernel's view."""
    rec: dict[str, Any] = {
        "va": hx(entry.va),
        "table": hx(entry.ref.table),
        "index": entry.ref.index,
    }
    rec.update(decoded_record(entry.hw))
    rec["size"] = entry.size
    if entry.frame is not None:
        rec["pfn"] = hx(entry.frame)
    if entry.block is not None and "cont" in rec:
        rec["cont"].update(
            {"index": entry.block.index, "block_va": hx(entry.block.first_va), "first_slot": entry.block.first_slot}
        )
    if entry.kernel is not None:
        rec["kernel_view"] = {
            "raw": hx(entry.kernel.raw),
            "flags": list(entry.kernel.flags),
            **({"access": decoded_record(entry.kernel)["access"]} if entry.kernel.access else {}),
        }
    return rec
