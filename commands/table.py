"""The dump table: one line per entry (or merged range), fixed columns sized from the paging mode.

Columns: va, size, level, pfn, raw, table[index], vma (process dumps), kind, details.  Widths
come from the mode (address and frame widths, level names) and the VMA names, so a dump streams
without measuring its rows; only a long kind name (migration-read-exclusive...) pushes its own
row's details to the right.
"""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from typing import TextIO

from ptinspect.archs.common import Access, PagingMode, Softleaf
from ptinspect.archs.versions import Layout
from ptinspect.inspector.dump import Range, Row, RunRows
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.records import uffd_mode

from .render import human_size

HEADERS = ("va", "size", "level", "pfn", "raw", "table[index]", "vma", "kind", "details")
KIND_WIDTH = 8  # "present", "hwpoison", "unknown"
SLOT_TEXT = tuple(f"{i}]" for i in range(4096))  # the "index]" part of table[index], made once
FORMATS_KEPT = 1024  # run formats cached per (template, VMA)


size_text = functools.lru_cache(maxsize=64)(human_size)


# A device-private entry's number: a device frame outside RAM, or (after device_private_pfn) an offset.
DEVICE_PFN = {"device": "pfn=device-frame", "device-offset": "pfn=device-offset"}


@functools.lru_cache(maxsize=4096)
def short_flags(flags: tuple[str, ...]) -> str:
    """Flag names without their family prefix, for the table view (JSON keeps full names)."""
    out = []
    for f in flags:
        for prefix in ("_PAGE_", "PTE_", "PMD_", "PUD_"):
            if f.startswith(prefix):
                f = f[len(prefix):]
                break
        out.append(f)
    return " ".join(out)


def _perms(read: bool, write: bool, exec_: bool) -> str:
    return "".join(c if on else "-" for c, on in (("r", read), ("w", write), ("x", exec_)))


def detail(row: Row, layout: Layout | None = None) -> str:
    """The details column: permissions, flags, softleaf fields, markers, uffd mode, block position,
    kernel view."""
    e = row.entry
    hw = e.hw
    block = (e.block.index, hw.cont.scheme, hw.cont.entries) if e.block is not None and hw.cont is not None else None
    return _detail(hw.access is not None, e.view.access, hw.flags, hw.softleaf, hw.pfn_space, hw.markers,
                   uffd_mode(hw, row.vma, layout), hw.details, block,
                   tuple(f for f in e.kernel.flags if f not in hw.flags) if e.kernel is not None else None,
                   hw.reason)


@functools.lru_cache(maxsize=4096)
def _detail(has_access: bool, access: Access | None, flags: tuple[str, ...], softleaf: Softleaf | None,
            pfn_space: str, markers: tuple[str, ...], uffd: str | None, details: tuple[tuple[str, str], ...],
            block: tuple[int, str, int] | None, kernel_only: tuple[str, ...] | None, reason: str | None) -> str:
    """detail() from exactly what it shows: the text of a merged range's first entry is made once
    per distinct decode, not once per range."""
    parts = []
    if has_access and access is not None:
        parts.append(_perms(access.read, access.write, access.exec))
    if softleaf is None:
        parts.append(short_flags(flags))
    else:
        parts.append(f"type={softleaf.type} off={softleaf.offset:#x}"
                     + (f" {short_flags(softleaf.arch_flags)}" if softleaf.arch_flags else ""))
        if pfn_space in DEVICE_PFN:
            parts.append(DEVICE_PFN[pfn_space])
    if markers:
        parts.append("marker=" + ",".join(markers))
    if uffd is not None:
        parts.append(f"uffd={uffd}")
    parts.extend(f"{k}={v}" for k, v in details)
    if block is not None:
        parts.append(f"{block[1]} {block[0] + 1}/{block[2]}")
    if kernel_only is not None:
        parts.append("kernel-view:" + short_flags(kernel_only))
    if reason:
        parts.append(f"({reason})")
    return " ".join(p for p in parts if p)


class DumpTable:
    """Formats rows, runs and ranges of one root's dump."""

    def __init__(self, mode: PagingMode, vmas: Sequence[Vma], merged: bool = False,
                 layout: Layout | None = None) -> None:
        self.layout = layout
        levels = mode.levels
        widths = {
            "va": 37 if merged else 18,
            "size": max(len(size_text(lvl.span)) for lvl in levels) + (7 if merged else 0),  # "262144x"
            "level": max(len(lvl.name) for lvl in levels),
            "pfn": 2 + -(-(mode.pa_bits - mode.page_shift) // 4),
            "raw": 18,
            "table[index]": 2 + -(-mode.pa_bits // 4) + 2 + len(str(max(lvl.entries for lvl in levels) - 1)),
            "vma": max((len(v.name) for v in vmas), default=0),
            "kind": KIND_WIDTH,
        }
        self.columns = tuple(h for h in HEADERS if h != "vma" or vmas)
        self.w = {h: max(widths.get(h, 0), len(h)) for h in self.columns}
        self._formats: dict[tuple[int, Vma | None], tuple[object, str]] = {}
        self._range_formats: dict[tuple[int, Vma | None], tuple[object, str]] = {}

    def header(self) -> str:
        return "  ".join(h.ljust(self.w[h]) for h in self.columns).rstrip()

    def _tail(self, row: Row) -> str:
        """The vma, kind and details columns (the same for every member of a run)."""
        e, w = row.entry, self.w
        vma = f"{(row.vma.name if row.vma else ''):<{w['vma']}}  " if "vma" in w else ""
        return f"{vma}{e.kind.value:<{w['kind']}}  {detail(row, self.layout)}".rstrip()

    def line(self, row: Row, count: int | None = None, end: int | None = None) -> str:
        """One entry, or (count, end) a merged range starting with it."""
        e, w = row.entry, self.w
        va = f"{e.va:#018x}" if end is None else f"{e.va:#018x}-{end:#018x}"
        size = size_text(e.size) if count is None else f"{count}x{size_text(e.size)}"
        pfn = "" if e.frame is None else f"{e.frame:#x}"
        return (f"{va:<{w['va']}}  {size:<{w['size']}}  {e.ref.level:<{w['level']}}  {pfn:<{w['pfn']}}  "
                f"{e.hw.raw:#018x}  {f'{e.ref.table:#x}[{e.ref.index}]':<{w['table[index]']}}  {self._tail(row)}")

    def _run_format(self, rows: RunRows) -> str:
        """The line format of a run's members: made once per template and VMA (runs of one
        template differ only in frames, slots and table)."""
        key = (id(rows.run.template), rows.vma)
        found = self._formats.get(key)
        if found is not None and found[0] is rows.run.template:
            return found[1]
        run, w = rows.run, self.w
        first = Row(next(run.entries()), rows.vma)
        fmt = (f"%#0{w['va']}x  {size_text(run.span):<{w['size']}}  {run.level:<{w['level']}}  %#-{w['pfn']}x  "
               f"%#018x  %-{w['table[index]']}s  " + self._tail(first).replace("%", "%%"))
        if len(self._formats) >= FORMATS_KEPT:
            self._formats.clear()
        self._formats[key] = (run.template, fmt)
        return fmt

    def run_lines(self, rows: RunRows) -> list[str]:
        """line() of every row of a run, from one format made for the run's template."""
        run, fmt = rows.run, self._run_format(rows)
        table, base, span = f"{run.table:#x}[", run.va_base, run.span
        vas = [base | slot * span for slot in run.slots]
        places = [table + SLOT_TEXT[slot] for slot in run.slots]
        return list(map(fmt.__mod__, zip(vas, run.pfns(), run.raws, places)))

    def range_line(self, rng: Range) -> str:
        """line() of a range's first entry, with its count and end; one that starts in a run is
        formatted from a format made once per template and VMA (no Entry built)."""
        run = rng.run
        if run is None:
            return self.line(rng.first, rng.count, rng.end)
        key = (id(run.template), rng.vma)
        found = self._range_formats.get(key)
        if found is None or found[0] is not run.template:
            w = self.w
            fmt = (f"%-{w['va']}s  %-{w['size']}s  {run.level:<{w['level']}}  %#-{w['pfn']}x  %#018x  "
                   f"%-{w['table[index]']}s  " + self._tail(rng.first).replace("%", "%%"))
            if len(self._range_formats) >= FORMATS_KEPT:
                self._range_formats.clear()
            found = self._range_formats[key] = (run.template, fmt)
        i = rng.index
        slot = run.slots[i]
        return found[1] % (f"{run.va(slot):#018x}-{rng.end:#018x}", f"{rng.count}x{size_text(run.span)}",
                           run.member_pfns[i], run.raws[i], f"{run.table:#x}[{slot}]")

    def write(self, out: TextIO, items: Iterable[Row | RunRows | Range]) -> int:
        """Stream the header and every item; returns the number of lines (entries or ranges)."""
        out.write(self.header() + "\n")
        n = 0
        for item in items:
            if type(item) is RunRows:
                lines = self.run_lines(item)
                out.write("\n".join(lines) + "\n")
                n += len(lines)
                continue
            out.write((self.range_line(item) if type(item) is Range else self.line(item)) + "\n")
            n += 1
        return n
