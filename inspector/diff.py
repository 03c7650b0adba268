"""What changed between two snapshots of page tables: entries added, removed and changed,
keyed by VA and level, each change named bit by bit, runs of alike changes merged into ranges.

Works on entry records (ptinspect.snapshot/1) decoded again from the raw values, so either
side may be a snapshot file, a live walk, or (as recorded) a `dump --format json` document.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from ptinspect.archs.common import PagingMode

from .snapshot import Snapshot, SnapshotError, decoded_records

Record = dict[str, Any]
VALUE_FIELDS = frozenset({"pfn", "offset", "table"})  # values that advance along a range


@dataclass(frozen=True)
class Change:
    """One named difference of a changed entry."""

    field: str  # "kind", a flag name, "pfn", "offset", "table", "cache", "vma", "contpte"...
    before: Any
    after: Any
    text: str  # "_PAGE_RW 1→0", "present → marker guard"

    @property
    def shape(self) -> tuple:
        """What must be equal for two entries' changes to merge into one range."""
        return (self.field,) if self.field in VALUE_FIELDS else (self.field, self.before, self.after)


@dataclass(frozen=True)
class Delta:
    """A run of adjacent entries of one level that changed alike (or were added/removed)."""

    status: str  # "added" | "removed" | "changed"
    level: str
    start: int
    end: int
    count: int
    changes: tuple[Change, ...]  # of the first entry; for added/removed, its kind
    before: Record | None  # the first entry's records
    after: Record | None

    @property
    def text(self) -> str:
        return ", ".join(c.text for c in self.changes)


def _hex(rec: Record, key: str) -> int | None:
    value = rec.get(key)
    return None if value is None else int(value, 16)


def kind_label(rec: Record) -> str:
    """The kind with its markers: "present", "swap", "marker guard"."""
    markers = rec.get("markers") or []
    return " ".join([rec["kind"], ",".join(markers)]) if markers else rec["kind"]


def entry_label(rec: Record) -> str:
    """What an added or removed entry is: its kind label and, for a present entry, its permissions
    and block scheme ("present rw- user contpte"), so that only alike entries merge into a range."""
    label = kind_label(rec)
    access = rec.get("access")
    if rec["kind"] == "present" and access is not None:
        perms = "".join(c if access[key] else "-" for c, key in (("r", "read"), ("w", "write"), ("x", "exec")))
        label += f" {perms} {'user' if access['user'] else 'kernel'}"
    if rec.get("cont"):
        label += f" {rec['cont']['scheme']}"
    return label


def _bit_changes(before: list[str], after: list[str], moves: Iterable[tuple[str, str]]) -> list[Change]:
    """Set bits that cleared or appeared, by name; a cleared/set pair the arch names as one
    move (x86 _PAGE_DIRTY → _PAGE_SAVED_DIRTY) is one change."""
    cleared = [f for f in before if f not in after]
    appeared = [f for f in after if f not in before]
    out = []
    for x, y in moves:
        for a, b in ((x, y), (y, x)):
            if a in cleared and b in appeared:
                cleared.remove(a)
                appeared.remove(b)
                out.append(Change(f"{a}→{b}", a, b, f"{a} → {b}"))
    out += [Change(f, 1, 0, f"{f} 1→0") for f in cleared]
    out += [Change(f, 0, 1, f"{f} 0→1") for f in appeared]
    return out


def layout_key(mode: PagingMode) -> tuple:
    """What entries mean in a mode, bar the output-address width: that is the CPU's (a live
    target's registers say it, a vmcore's VMCOREINFO does not), not the tables' layout."""
    return (mode.arch, mode.levels, mode.page_shift, mode.va_bits, mode.options)


def _short(text: str) -> str:
    return text.split(" (", 1)[0]


class Differ:
    """Compares the records of two snapshots of one architecture and paging mode."""

    def __init__(self, a: Snapshot, b: Snapshot, va_range: tuple[int, int] | None = None) -> None:
        if (a.arch.name, layout_key(a.mode)) != (b.arch.name, layout_key(b.mode)):
            raise SnapshotError(f"{a.name} is {a.arch.name} {a.mode.name} but {b.name} is "
                                f"{b.arch.name} {b.mode.name}: nothing to compare entry by entry")
        self.notes: list[str] = []
        if a.mode.pa_bits != b.mode.pa_bits:
            # The CPU's PA size (arm64 ID_AA64MMFR0_EL1.PARange via TCR_EL1.IPS) is known from its
            # registers only; VMCOREINFO does not state it, so a vmcore gives the mode's default.
            self.notes.append(f"output-address widths differ: {a.name} {a.mode.pa_bits} bits ({a.mode.name}), "
                              f"{b.name} {b.mode.pa_bits} bits ({b.mode.name}); the table layout is the same "
                              "and the entries are compared as they are")
        for snap in (a, b):
            if snap.selection.get("merged") or any("range" in r for r in snap.records):
                raise SnapshotError(f"{snap.name} holds merged ranges (dump --ranges), not entries")
        self.a, self.b, self.va_range = a, b, va_range
        self.levels = [lvl.name for lvl in a.mode.levels]
        self.moves = a.arch.flag_moves
        # Compare table entries only when both sides hold them.
        self.tables = all(any(r.get("kind") == "table" for r in s.records) for s in (a, b))

    def _index(self, snap: Snapshot) -> dict[tuple[int, int], Record]:
        out = {}
        lo, hi = self.va_range or (0, 1 << 64)
        for rec in decoded_records(snap):
            va = int(rec["va"], 16)
            if (rec.get("kind") == "table" and not self.tables) or not (va < hi and va + int(rec["size"]) > lo):
                continue
            out[(va, self.levels.index(rec["level"]))] = rec
        return out

    def changes(self, ra: Record, rb: Record) -> list[Change]:
        """The named differences between two records of one VA and level."""
        ka, kb = kind_label(ra), kind_label(rb)
        if ka != kb:
            return [self._kind_change(ra, rb, ka, kb)]
        out = _bit_changes(ra.get("flags", []), rb.get("flags", []), self.moves)
        ca, cb = ra.get("cont"), rb.get("cont")
        if bool(ca) != bool(cb):
            scheme = (ca or cb or {})["scheme"]  # one of them is set
            out.insert(0, Change(scheme, bool(ca), bool(cb), f"{scheme} block {'split' if ca else 'formed'}"))
        sa, sb = ra.get("softleaf"), rb.get("softleaf")
        if sa and sb:
            if sa["type"] != sb["type"]:
                out.append(Change("type", sa["type"], sb["type"], f"type {sa['type']} → {sb['type']}"))
            if sa["offset"] != sb["offset"]:
                out.append(Change("offset", sa["offset"], sb["offset"], f"offset {sa['offset']} → {sb['offset']}"))
            out += _bit_changes(sa.get("flags", []), sb.get("flags", []), self.moves)
        for key, name in (("pfn", "pfn"), ("next_table", "table")):
            if ra.get(key) != rb.get(key):
                out.append(Change(name, ra.get(key), rb.get(key), f"{name} {ra.get(key)} → {rb.get(key)}"))
        for key in ("fields", "details"):
            fa, fb = ra.get(key, {}), rb.get(key, {})
            for name in sorted(set(fa) | set(fb)):
                if fa.get(name) != fb.get(name):
                    out.append(Change(name, fa.get(name), fb.get(name),
                                      f"{name} {_short(str(fa.get(name)))} → {_short(str(fb.get(name)))}"))
        ua, ub = ra.get("uffd_mode"), rb.get("uffd_mode")
        if ua != ub:
            out.append(Change("uffd", ua, ub, f"uffd {ua or '-'} → {ub or '-'}"))
        va, vb = ra.get("vma"), rb.get("vma")
        if va and vb and va["perms"] != vb["perms"]:
            out.append(Change("vma", va["perms"], vb["perms"], f"vma {va['perms']} → {vb['perms']}"))
        if not out and ra["raw"] != rb["raw"]:
            out.append(Change("raw", ra["raw"], rb["raw"], f"raw {ra['raw']} → {rb['raw']}"))
        return out

    def _kind_change(self, ra: Record, rb: Record, ka: str, kb: str) -> Change:
        """present → swap; a table replaced by a leaf of its level (THP collapse) or back (split)."""
        depth = self.levels.index(ra["level"])
        if depth + 1 < len(self.levels) and "table" in (ka, kb) and "present" in (ka, kb):
            child, level = self.levels[depth + 1].upper(), ra["level"].upper()
            text = f"{child} table → {level} leaf" if ka == "table" else f"{level} leaf → {child} table"
            return Change("kind", ka, kb, text)
        return Change("kind", ka, kb, f"{ka} → {kb}")

    def entries(self) -> Iterator[tuple[str, int, Record | None, Record | None, list[Change]]]:
        """(status, va, before, after, changes) per differing entry, in VA then level order."""
        ia, ib = self._index(self.a), self._index(self.b)
        for key in sorted(set(ia) | set(ib)):
            ra, rb = ia.get(key), ib.get(key)
            if ra is not None and rb is not None:
                changes = self.changes(ra, rb)
                if changes:
                    yield "changed", key[0], ra, rb, changes
            elif ra is not None:
                yield "removed", key[0], ra, None, [Change("kind", entry_label(ra), None, entry_label(ra))]
            elif rb is not None:
                yield "added", key[0], None, rb, [Change("kind", None, entry_label(rb), entry_label(rb))]

    def deltas(self) -> list[Delta]:
        """The differing entries, adjacent alike ones merged into ranges."""
        out: list[Delta] = []
        last: dict[str, int] = {}  # level -> index in `out` of that level's latest range
        for status, va, ra, rb, changes in self.entries():
            rec = rb if ra is None else ra
            assert rec is not None  # entries() gives at least one side
            size, level = int(rec["size"]), rec["level"]
            i = last.get(level)
            prev = out[i] if i is not None else None
            if (i is not None and prev is not None and prev.status == status and prev.end == va
                    and [c.shape for c in prev.changes] == [c.shape for c in changes]):
                out[i] = Delta(status, level, prev.start, va + size, prev.count + 1, prev.changes,
                               prev.before, prev.after)
            else:
                last[level] = len(out)
                out.append(Delta(status, level, va, va + size, 1, tuple(changes), ra, rb))
        return out


def diff(a: Snapshot, b: Snapshot, va_range: tuple[int, int] | None = None) -> list[Delta]:
    """Entries added, removed and changed from `a` to `b` (those overlapping `va_range`), as merged ranges."""
    return Differ(a, b, va_range).deltas()


def diff_notes(a: Snapshot, b: Snapshot, va_range: tuple[int, int] | None = None) -> tuple[list[Delta], list[str]]:
    """diff(), and what the comparison should be read with (a PA width only one side knows)."""
    differ = Differ(a, b, va_range)
    return differ.deltas(), differ.notes
