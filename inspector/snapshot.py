"""Snapshots: one walk as a ptinspect.snapshot/1 document, written atomically and read back.

A snapshot is what `dump --format json` writes plus the table entries (kind
"table"), so that it can be walked again: read back, its raw values become a
physical memory that the same Walker decodes with the recorded paging mode and
facts.  A snapshot therefore validates exactly as the target it came from,
without that target.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from archs.common import Arch, KernelFacts, PagingMode

from .dump import Row, VmaIndex, bulk_rows, rows
from .entry import ENTRY_BYTES, Entry
from .kernel import Vma
from .reader import ReadError, TableCache, contains
from .records import SCHEMA, hx, item_record, target_record, write_document
from .session import Root, Session
from .snapshot_schema import SchemaError, check_document
from .walker import Walker


class SnapshotError(Exception):
    """A snapshot file that cannot be written, read or used."""


@contextlib.contextmanager
def atomic_text(path: Path) -> Iterator[TextIO]:
    """A text file that appears at `path` only once completely written.

    The data goes to a temporary file in the same directory, is flushed and
    fsync'ed, then renamed over `path`; on any exception, Ctrl-C included, the
    temporary file is removed and `path` is left as it was.
    """
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    except OSError as exc:
        raise SnapshotError(f"cannot write in {directory}: {exc.strerror}") from None
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)  # as open() would have made it; mkstemp makes 0600
        with os.fdopen(fd, "w") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def snapshot_rows(session: Session, root: Root, va_range: tuple[int, int] | None) -> Iterator[Row]:
    """Every entry a snapshot holds: leaves, softleaf and problem entries, and table entries."""
    return rows(session, root, va_range, None, tables=True)


def _target(session: Session, root: Root, selection: dict[str, Any], va_range: tuple[int, int] | None) -> dict:
    walked = {} if va_range is None else {"va_range": [hx(va_range[0]), hx(va_range[1])]}
    return target_record(session, root, {**selection, **walked, "tables": True})


def write_snapshot(path: Path, session: Session, root: Root, selection: dict[str, Any],
                   va_range: tuple[int, int] | None) -> int:
    """Walk `root` (within `va_range`) and write its snapshot to `path` atomically; returns the
    number of entries.  `selection` records how the root was chosen (--pid, --kernel...)."""
    target = _target(session, root, selection, va_range)
    try:
        with atomic_text(path) as out:
            return write_document(out, target, bulk_rows(session, root, va_range, None, tables=True),
                                  session.facts.layout)
    except OSError as exc:
        raise SnapshotError(f"cannot write {path}: {exc.strerror or exc}") from None


def live_snapshot(session: Session, root: Root, selection: dict[str, Any],
                  va_range: tuple[int, int] | None) -> Snapshot:
    """A snapshot of a live root, held in memory."""
    target = _target(session, root, selection, va_range)
    doc = {"schema": SCHEMA, "target": target,
           "entries": [item_record(row, session.facts.layout) for row in snapshot_rows(session, root, va_range)]}
    origin = session.source if session.source.startswith("vmcore") else f"live {session.source}"
    return Snapshot.from_document(doc, f"{origin} {root.label}")


class SnapshotMemory:
    """The recorded table slots as physical memory: unrecorded slots read as zero (none).

    `ranges()` is the recorded RAM, or everything below the paging mode's output-address
    width when the snapshot does not say where RAM is.
    """

    def __init__(self, slots: dict[int, int], ram: list[tuple[int, int]]) -> None:
        self.slots = slots
        self.ram = ram

    def ranges(self) -> list[tuple[int, int]]:
        return self.ram

    def read(self, pa: int, size: int) -> bytes:
        if not contains(self.ram, pa, size):
            raise ReadError(f"read of {size} bytes at {pa:#x} is outside the snapshot's memory")
        return b"".join(struct.pack("<Q", self.slots.get(pa + off, 0)) for off in range(0, size, ENTRY_BYTES))


@dataclass
class Snapshot:
    """A snapshot document with what is needed to walk and check it again."""

    name: str
    target: dict[str, Any]
    records: list[dict[str, Any]]
    arch: Arch
    mode: PagingMode
    facts: KernelFacts
    root: int
    upper: bool
    process: bool
    va_range: tuple[int, int] | None
    ram: list[tuple[int, int]] | None  # memblock.memory when recorded
    vmas: tuple[Vma, ...] | None  # the process's VMAs when recorded
    device_private: list[tuple[int, int]] | None = None  # device-private memory ranges when recorded

    @classmethod
    def from_document(cls, doc: Any, name: str) -> Snapshot:
        """Check a parsed ptinspect.snapshot/1 document whole (schema, types, ranges: see
        inspector/snapshot_schema.py) and index it; SnapshotError names the field otherwise."""
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise SnapshotError(f"{name} is not a {SCHEMA} document")
        try:
            c = check_document(doc)
        except SchemaError as exc:
            raise SnapshotError(f"{name}: {exc}") from None
        return cls(name, c.target, c.records, c.arch, c.mode, c.facts, c.root, c.upper, c.process, c.va_range,
                   c.ram, c.vmas, c.device_private)

    @property
    def selection(self) -> dict[str, Any]:
        return self.target.get("selection", {})

    @property
    def label(self) -> str:
        return str(self.target.get("root_label", f"root {self.root:#x}"))

    def walkable(self) -> str | None:
        """Why the snapshot cannot be walked again, or None: it must hold every entry
        (no --kind filter, no merged ranges) and its table entries."""
        sel = self.selection
        if sel.get("merged") or any("range" in r for r in self.records):
            return "it holds merged ranges (dump --ranges), not every entry"
        if sel.get("kinds"):
            return f"it holds only entries of kinds {', '.join(sel['kinds'])}"
        if self.records and not any(r.get("kind") == "table" for r in self.records):
            return "it holds no table entries (a `dump --format json`); take it with `ptinspect snapshot`"
        return None

    def memory(self) -> SnapshotMemory:
        slots: dict[int, int] = {}
        for i, rec in enumerate(self.records):  # every field was checked when the document was read
            slot = int(rec["table"], 16) + rec["index"] * ENTRY_BYTES
            raw = int(rec["raw"], 16)
            if slots.setdefault(slot, raw) != raw:
                raise SnapshotError(f"{self.name}: entries[{i}] gives slot {rec['table']}[{rec['index']}] the value "
                                    f"{rec['raw']}, but an earlier entry gives it {slots[slot]:#x}")
        return SnapshotMemory(slots, self.ram or [(0, 1 << self.mode.pa_bits)])

    def tables(self) -> TableCache:
        return TableCache(self.memory())

    def walk(self, tables: TableCache | None = None) -> Iterator[Entry]:
        """The recorded entries decoded again, table entries included, in VA order."""
        problem = self.walkable()
        if problem:
            raise SnapshotError(f"{self.name} cannot be walked again: {problem}")
        walker = Walker(tables or self.tables(), self.arch, self.mode, self.facts, shared_decodes=False)
        try:
            yield from walker.walk(self.root, upper=self.upper, va_range=self.va_range, tables=True)
        except ReadError as exc:
            raise SnapshotError(f"{self.name}: {exc}") from None


def decoded_records(snap: Snapshot) -> list[dict[str, Any]]:
    """The entry records decoded again from their raw values with the recorded facts; the
    recorded records themselves when the snapshot cannot be walked again (a plain dump)."""
    if snap.walkable() is not None:
        return snap.records
    vmas = VmaIndex(snap.vmas or ())
    return [item_record(Row(e, vmas.find(e.va) if snap.vmas else None), snap.facts.layout) for e in snap.walk()]


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


def load(path: Path) -> Snapshot:
    """Read a snapshot file: JSON text (no NaN or Infinity), then checked whole."""
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f, parse_constant=_no_constant)
    except OSError as exc:
        raise SnapshotError(f"cannot read {path}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise SnapshotError(f"{path} is not a snapshot: byte {exc.start} is not UTF-8 text") from None
    except json.JSONDecodeError as exc:
        raise SnapshotError(f"{path} is not JSON ({exc.msg} at line {exc.lineno}); a half-written file?") from None
    except ValueError as exc:  # a NaN or Infinity constant
        raise SnapshotError(f"{path} is not a snapshot: {exc}") from None
    except RecursionError:
        raise SnapshotError(f"{path} is not a snapshot: its JSON nests deeper than Python can read") from None
    return Snapshot.from_document(doc, str(path))
