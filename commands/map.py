"""`ptinspect map`: a self-contained HTML picture of a root's address space, or of a diff."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ptinspect.inspector.diff import diff_notes
from ptinspect.inspector.dump import bulk_rows
from ptinspect.inspector.mapview import MapModel, build, render
from ptinspect.inspector.records import layout_label
from ptinspect.inspector.snapshot import Snapshot, SnapshotError, atomic_text, load
from ptinspect.inspector.summary import snapshot_rows

from .dump import checked_range, parse_range, root_options, select_root
from .snapshot import root_chosen, split_options
from .targets import open_session, target_chosen, target_options


def describe(snap: Snapshot) -> str:
    return (f"{snap.name}: {snap.arch.name} {snap.mode.name}, {snap.label}, root {snap.root:#x}, "
            f"kernel {snap.target.get('kernel_release') or 'unknown'}")


def from_snapshot(path: Path) -> tuple[MapModel, str, list[str]]:
    snap = load(path)
    model = build(snapshot_rows(snap), snap.mode, snap.vmas or ())
    return model, f"ptinspect map: {snap.label}", [describe(snap)]


def from_diff(a_path: Path, b_path: Path) -> tuple[MapModel, str, list[str]]:
    a, b = load(a_path), load(b_path)
    deltas, notes = diff_notes(a, b)
    model = build(snapshot_rows(b), b.mode, b.vmas or (), deltas)
    model.notes = [f"note: {n}" for n in notes]
    counts = {s: sum(d.count for d in deltas if d.status == s) for s in ("added", "removed", "changed")}
    summary = f"{len(deltas)} changed ranges: " + ", ".join(f"{n} entries {s}" for s, n in counts.items())
    return model, f"ptinspect map --diff: {b.label}", [f"a: {describe(a)}", f"b (drawn): {describe(b)}", summary]


@click.command("map")
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range (live).")
@click.option("--diff", "diff_files", nargs=2, metavar="A B", type=click.Path(exists=True, dir_okay=False,
              path_type=Path), help="Draw snapshot B with what changed from snapshot A outlined.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The HTML file to write.")
@click.argument("snapshot", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def map_(snapshot: Path | None, diff_files: tuple[Path, Path] | None, va_range: str | None, output: Path,
         **options: Any) -> None:
    """Write a self-contained HTML picture (inline SVG, no external files) of a root's address
    space: one row per VMA, gaps compressed, each range coloured by mapping size and kind;
    click a row to zoom into it, down to the entries of one table.

    The root is a live target with root options (as for dump), a SNAPSHOT file, or with
    --diff A B two snapshots: B is drawn and what changed from A is outlined.
    """
    roots, target = split_options(options)
    sources = [n for n, given in (("a live target", target_chosen(target) or root_chosen(roots)),
                                  ("SNAPSHOT", snapshot is not None), ("--diff", bool(diff_files))) if given]
    if len(sources) != 1:
        raise click.UsageError("give one of: a live target with root options, a SNAPSHOT file, or --diff A B"
                               + (f" (not {' and '.join(sources)})" if sources else ""))
    if va_range and not target_chosen(target):
        raise click.UsageError("--range applies to a live target")
    try:
        if diff_files:
            model, title, info = from_diff(*diff_files)
        elif snapshot is not None:
            model, title, info = from_snapshot(snapshot)
        else:
            rng = parse_range(va_range) if va_range else None
            with open_session(**target) as session:
                root = select_root(session, **roots)
                walked = checked_range(session, root, rng)
                model = build(bulk_rows(session, root, walked, None), root.mode, root.vmas)
                title = f"ptinspect map: {root.label}"
                info = [f"{session.source}: {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}, "
                        f"kernel {session.facts.release or 'unknown'} (layout {layout_label(session.facts)})"]
        with atomic_text(output) as out:
            out.write(render(model, title, info))
    except (SnapshotError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{output}: {len(model.rows)} rows, {sum(len(r.segments) for r in model.rows)} segments, "
               f"{len(model.deltas)} changed ranges", err=True)
