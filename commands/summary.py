"""`ptinspect summary`: how a root maps its address space, per VMA and in total."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ptinspect.inspector.dump import bulk_rows
from ptinspect.inspector.records import layout_label, target_record
from ptinspect.inspector.snapshot import SnapshotError, load
from ptinspect.inspector.summary import Part, Summary, snapshot_rows, summarize, summary_record

from .dump import checked_range, parse_range, root_options, select_root, selection
from .options import FORMATS
from .snapshot import root_chosen, split_options
from .targets import open_session, target_chosen, target_options


def kb(nbytes: int) -> str:
    """Bytes in kB, as /proc/PID/smaps states its sizes."""
    return f"{nbytes >> 10}" if nbytes % 1024 == 0 else f"{nbytes / 1024:.1f}"


def pct(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def others(part: Part) -> str:
    """The non-present kinds of a part: "swap 32(8) marker guard 32(8)" (kB and entries)."""
    return ", ".join(f"{k} {kb(c.bytes)}({c.entries})" for k, c in part.kinds.items() if k != "present") or "-"


def tables(counts: dict[str, int]) -> str:
    return " ".join(f"{level}:{n}" for level, n in counts.items()) or "-"


def vma_rows(summary: Summary) -> list[list[str]]:
    sizes = summary.sizes()
    rows = []
    # entries outside VMAs get a row when there are VMAs (else the total is that row)
    parts = [*summary.vmas, summary.outside] if summary.outside.kinds and summary.vmas else summary.vmas
    for p in [*parts, summary.total]:
        v = p.vma
        name = (v.name + (" [hugetlb]" if p.hugetlb else "")) if v is not None else p.label
        rng = p.label if v is not None else ""
        rows.append([rng, v.perms if v else "", name, kb(p.span) if p.span else "-", kb(p.present_bytes),
                     *(kb(p.sizes[s].bytes) if s in p.sizes else "" for s in sizes),
                     pct(p.pct(p.huge_bytes)), pct(p.pct(p.cont_bytes)), tables(p.tables), others(p)])
    return rows


def render(summary: Summary, out) -> None:
    sizes = summary.sizes()
    head = ["vma", "perms", "name", "size kB", "present kB", *(f"{s} kB" for s in sizes), "huge %", "cont %",
            "table pages", "other kinds kB(entries)"]
    out.write(tabulate(vma_rows(summary), head, tablefmt="simple", disable_numparse=True) + "\n\n")
    t = summary.total
    out.write(tabulate([[s, t.sizes[s].entries, kb(t.sizes[s].bytes)] for s in sizes],
                       ["present by mapping size", "entries", "kB"], tablefmt="simple") + "\n\n")
    out.write(tabulate([[k, c.entries, kb(c.bytes)] for k, c in t.kinds.items()],
                       ["by kind", "entries", "kB"], tablefmt="simple") + "\n\n")
    out.write("page-table pages: " + tables(t.tables) + f" ({sum(t.tables.values())} pages, "
              f"{kb(sum(t.tables.values()) * summary.mode.page_size)} kB)\n")
    for note in summary.notes:
        out.write(f"# note: {note}\n")


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.argument("snapshot", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def summary(snapshot: Path | None, va_range: str | None, fmt: str, **options: Any) -> None:
    """How a process, the kernel or a raw root maps its address space: per VMA and in total,
    present bytes by mapping size (base pages, contpte/Svnapot blocks, PMD and PUD leaves),
    every entry by kind, huge-leaf and contiguous-block coverage, page-table pages per level.

    The root is a live target with root options (as for dump), or a SNAPSHOT file."""
    roots, target = split_options(options)
    if snapshot is not None and (target_chosen(target) or root_chosen(roots) or va_range):
        raise click.UsageError("give a SNAPSHOT file or a live target with root options, not both")
    out = sys.stdout
    if snapshot is not None:
        try:
            snap = load(snapshot)
            result = summarize(snapshot_rows(snap), snap.mode, snap.vmas or ())
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
        if fmt == "json":
            json.dump(summary_record(result, snap.target), out, indent=1)
            out.write("\n")
            return
        out.write(f"# {snap.name}: {snap.arch.name} {snap.mode.name}, {snap.label}, root {snap.root:#x}, "
                  f"kernel {snap.target.get('kernel_release') or 'unknown'}\n")
        render(result, out)
        return
    rng = parse_range(va_range) if va_range else None
    with open_session(**target) as session:
        root = select_root(session, **roots)
        walked = checked_range(session, root, rng)
        result = summarize(bulk_rows(session, root, walked, None, tables=True), root.mode, root.vmas)
        if fmt == "json":
            rec = target_record(session, root, selection(**roots, va_range=walked))
            json.dump(summary_record(result, rec), out, indent=1)
            out.write("\n")
            return
        out.write(f"# {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}, "
                  f"kernel {session.facts.release or 'unknown'} (layout {layout_label(session.facts)})\n")
        render(result, out)
