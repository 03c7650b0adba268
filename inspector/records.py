"""JSON records of decoded values and walked entries (schema ptinspect.snapshot/1).

Addresses and raw values are 0x-prefixed hex strings; sizes and indices are
integers.  Fields are extended, never renamed.
"""
from __future__ import annotations

import itertools
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from ptinspect.archs.common import Decoded, KernelFacts, Kind
from ptinspect.archs.versions import Layout

from .devmem import SOURCE as DEVMEM_SOURCE
from .dump import Range, Row, RunRows
from .entry import Entry
from .kernel import VM_UFFD_RWP, VM_UFFD_WP, Vma
from .session import Root, Session

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
    soft = dec.soft
    if soft:
        rec["soft"] = list(soft)
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


def vma_record(vma: Vma) -> dict[str, Any]:
    """A VMA: bounds, permissions, vm_flags (include/linux/mm.h VM_*) and name."""
    return {"start": hx(vma.start), "end": hx(vma.end), "perms": vma.perms, "flags": hx(vma.flags), "name": vma.name}


def uffd_mode(dec: Decoded, vma: Vma | None, layout: Layout | None) -> str | None:
    """What the uffd bit of an entry tracks: until 7.3 it is write-protect only; from 7.3 the one
    bit serves VM_UFFD_WP and VM_UFFD_RWP VMAs and only the VMA tells which
    (userfaultfd_pte_wp/_rwp, include/linux/userfaultfd_k.h 7.3)."""
    if "uffd" not in dec.soft:
        return None
    if layout is None:
        return "unknown (the kernel release is not known)"
    if not layout.has("uffd_rwp"):
        return "wp"
    if vma is None:
        return "unknown (no VMA to tell VM_UFFD_WP from VM_UFFD_RWP)"
    modes = [name for name, bit in (("wp", VM_UFFD_WP), ("rwp", VM_UFFD_RWP)) if vma.flags & bit]
    return "+".join(modes) or "none (the VMA has neither VM_UFFD_WP nor VM_UFFD_RWP)"


def item_record(item: Row | Range, layout: Layout | None = None) -> dict[str, Any]:
    """One dumped row (or the first row of a merged range) with its VMA."""
    row = item.first if isinstance(item, Range) else item
    rec = entry_record(row.entry)
    if row.vma is not None:
        rec["vma"] = vma_record(row.vma)
    mode = uffd_mode(row.entry.hw, row.vma, layout)
    if mode is not None:
        rec["uffd_mode"] = mode
    if isinstance(item, Range):
        rec["range"] = {"end": hx(item.end), "entries": item.count}
    return rec


# Stand-ins for the values that differ between the members of a run (see run_records),
# and how each is spelled in JSON (hx() for addresses and values, a bare int for the index).
_HOLES = {"va": '"%#x"', "table": '"%#x"', "index": "%d", "raw": '"%#x"', "pfn": '"%#x"'}
_HOLE = re.compile(r'"\\u0000(va|table|index|raw|pfn)\\u0000"')
_RUN_FORMATS: dict[tuple[int, Vma | None, Layout | None], tuple[Decoded, str, list[str]]] = {}
RUN_FORMATS_KEPT = 1024


def _run_format(rows_: RunRows, layout: Layout | None) -> tuple[str, list[str]]:
    """The record format of a run's members and the names of its holes in order: made once per
    template and VMA (runs of one template differ only in frames, slots and table)."""
    run = rows_.run
    key = (id(run.template), rows_.vma, layout)
    found = _RUN_FORMATS.get(key)
    if found is not None and found[0] is run.template:
        return found[1], found[2]
    rec = item_record(Row(next(run.entries()), rows_.vma), layout)
    for name in ("va", "table", "index", "raw", "pfn"):
        rec[name] = f"\0{name}\0"
    for i in run.pfn_fields:
        rec["fields"][run.template.fields[i][0]] = "\0pfn\0"
    pieces = _HOLE.split(json.dumps(rec))  # text, hole name, text, hole name, ..., text
    names = pieces[1::2]
    fmt = "".join(p.replace("%", "%%") + (_HOLES[n] if n else "")
                  for p, n in itertools.zip_longest(pieces[::2], names))
    if len(_RUN_FORMATS) >= RUN_FORMATS_KEPT:
        _RUN_FORMATS.clear()
    _RUN_FORMATS[key] = (run.template, fmt, names)
    return fmt, names


def run_records(rows_: RunRows, layout: Layout | None = None) -> list[str]:
    """The JSON text of every row of a run, as json.dumps(item_record(row)) gives it: the
    template's record with the per-member values (va, table, index, raw, pfn and the fields
    spelling the pfn) filled in."""
    run = rows_.run
    fmt, names = _run_format(rows_, layout)
    base, span = run.va_base, run.span
    columns = {"va": [base | slot * span for slot in run.slots], "table": itertools.repeat(run.table),
               "index": run.slots, "raw": run.raws, "pfn": run.pfns()}
    return list(map(fmt.__mod__, zip(*(columns[n] for n in names))))


def layout_label(facts: KernelFacts) -> str:
    """The layout a decode used, as every output states it: "7.3", "7.3 (assumed: kernel 7.4-rc1
    is newer ...)", or unknown with what to give."""
    layout = facts.layout
    if layout is None:
        return "unknown (give the kernel release: --kernel)"
    return layout.name + (f" (assumed: {layout.assumed})" if layout.assumed else "")


def dump_filter(session: Session) -> str | None:
    """What the target (a vmcore) states about filtering: its dump level, or the RAM an ELF left out."""
    dump = getattr(session.reader, "dump", None)
    return None if dump is None else dump.filtering()


def target_record(session: Session, root: Root, selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """What was walked and what is known about the kernel: enough to decode and validate
    the entries again without the target.

    `selection` says how the entries were chosen (root options, VA range, kinds,
    merging, table entries included); "ram" is the kernel's memblock.memory and
    "vmas" the process's VMA list, present only when known; "device_private" the physical ranges
    of device-private memory (inspector/devmem.py), its "ranges" null with the reason when unknown.
    """
    mode = root.mode
    layout = session.facts.layout
    rec: dict[str, Any] = {
        "arch": session.arch.name,
        "kernel_release": session.facts.release,
        "layout": None if layout is None else layout.name,
        "layout_assumed": None if layout is None else layout.assumed,
        "paging": {"mode": mode.name, "levels": [lvl.name for lvl in mode.levels], "va_bits": mode.va_bits,
                   "pa_bits": mode.pa_bits, "page_size": mode.page_size, "options": sorted(mode.options)},
        "root": hx(root.pa),
        "root_label": root.label,
        "upper": root.upper,
        "process": root.process,
        "source": session.source,
        # what a vmcore states about pages its filter left out (makedumpfile -d); absent elsewhere
        **({"dump_filter": f} if (f := dump_filter(session)) is not None else {}),
        "facts": {k: {"value": v.value, "source": v.source} for k, v in sorted(session.facts.facts.items())},
    }
    if session.kernel is not None:
        rec["ram"] = {"ranges": [[hx(a), hx(b)] for a, b in session.reader.ranges()], "source": "memblock.memory"}
    rec["device_private"] = (
        {"ranges": [[hx(a), hx(b)] for a, b in session.device_private], "source": DEVMEM_SOURCE}
        if session.device_private is not None else {"ranges": None, "unknown": session.device_private_unknown})
    if root.process:
        rec["vmas"] = [vma_record(v) for v in root.vmas]
    if selection is not None:
        rec["selection"] = dict(selection)
    return rec


def write_document(out: TextIO, target: Mapping[str, Any], items: Iterable[Row | RunRows | Range],
                   layout: Layout | None = None) -> int:
    """Stream a ptinspect.snapshot/1 document; returns the number of entry records."""
    out.write(f'{{"schema": {json.dumps(SCHEMA)}, "target": {json.dumps(target)}, "entries": [')
    n = 0
    for item in items:
        texts = run_records(item, layout) if type(item) is RunRows else [json.dumps(item_record(item, layout))]
        out.write(("\n  " if n == 0 else ",\n  ") + ",\n  ".join(texts))
        n += len(texts)
    out.write("\n]}\n")
    return n
