"""`ptinspect diff A [B]`: what changed between two snapshots, or a snapshot and the live target."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ptinspect.inspector.diff import Delta, diff_notes
from ptinspect.inspector.records import hx
from ptinspect.inspector.snapshot import Snapshot, load

from .dump import parse_range, root_options
from .options import FORMATS
from .render import human_size
from .snapshot import errors_exit_2, live_side, split_options
from .targets import target_chosen, target_options


def describe(snap: Snapshot) -> dict[str, Any]:
    t = snap.target
    return {"name": snap.name, "arch": snap.arch.name, "mode": snap.mode.name, "root": hx(snap.root),
            "root_label": snap.label, "kernel_release": t.get("kernel_release"), "layout": t.get("layout")}


def delta_record(d: Delta) -> dict[str, Any]:
    return {"status": d.status, "level": d.level, "start": hx(d.start), "end": hx(d.end), "entries": d.count,
            "changes": [{"field": c.field, "before": c.before, "after": c.after, "text": c.text} for c in d.changes],
            "before": d.before, "after": d.after}


def delta_row(d: Delta) -> list[str]:
    va = f"{d.start:#018x}" if d.count == 1 else f"{d.start:#018x}-{d.end:#018x}"
    rec = d.before or d.after or {}
    raw = " → ".join(r["raw"] for r in (d.before, d.after) if r is not None)
    return [d.status, va, d.level, f"{d.count}x{human_size(int(rec['size']))}", d.text, raw]


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range.")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.argument("files", nargs=-1, metavar="A [B]", type=click.Path(dir_okay=False, path_type=Path))
def diff(files: tuple[Path, ...], va_range: str | None, fmt: str, **options: Any) -> None:
    """Entries added, removed and changed from snapshot A to snapshot B (or to the live target,
    with a target option and no B), each change named bit by bit, alike neighbours merged.

    Without root options the live side walks the root A recorded.  Exit status: 0 equal,
    1 different, 2 on error.
    """
    roots, target = split_options(options)
    rng = parse_range(va_range) if va_range else None
    if not 1 <= len(files) <= 2 or (len(files) == 2 and target_chosen(target)):
        raise click.UsageError("give two snapshot files, or one and a live target")
    with errors_exit_2():
        a = load(files[0])
        b = load(files[1]) if len(files) == 2 else live_side(target, roots, like=a)
        deltas, notes = diff_notes(a, b, rng)
    out = sys.stdout
    if fmt == "json":
        json.dump({"schema": "ptinspect.diff/1", "a": describe(a), "b": describe(b), "equal": not deltas,
                   "notes": notes, "differences": [delta_record(d) for d in deltas]}, out, indent=1)
        out.write("\n")
    else:
        for tag, snap in (("a", a), ("b", b)):
            out.write(f"# {tag}: {snap.name}: {snap.label}, {snap.arch.name} {snap.mode.name}, root {snap.root:#x}, "
                      f"kernel {snap.target.get('kernel_release') or 'unknown'}\n")
        for note in notes:
            out.write(f"# note: {note}\n")
        if deltas:
            out.write(tabulate([delta_row(d) for d in deltas], ["", "va", "level", "entries", "change", "raw"],
                               tablefmt="plain", disable_numparse=True) + "\n")
        counts = {s: sum(d.count for d in deltas if d.status == s) for s in ("added", "removed", "changed")}
        out.write(f"# {len(deltas)} ranges: " + ", ".join(f"{n} entries {s}" for s, n in counts.items())
                  + ("" if deltas else " (equal)") + "\n")
    click.get_current_context().exit(1 if deltas else 0)
