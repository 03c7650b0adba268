"""`ptinspect validate`: the kernel's page-table rules, checked on a live root or a snapshot."""
from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click
from tabulate import tabulate

from ptinspect.archs import ARCH_NAMES
from ptinspect.inspector.checks import CHECKS
from ptinspect.inspector.records import hx
from ptinspect.inspector.snapshot import load
from ptinspect.inspector.validate import Report, check_ids
from ptinspect.inspector.validate import validate as run_checks

from .dump import root_options
from .options import FORMATS
from .snapshot import errors_exit_2, live_side, root_chosen, split_options
from .targets import target_chosen, target_options


def print_checks(fmt: str) -> None:
    if fmt == "json":
        click.echo(json.dumps([{"id": c.id, "title": c.title, "source": c.source, "arches": sorted(c.arches)}
                               for c in CHECKS], indent=1))
        return
    for c in CHECKS:
        arches = "" if c.arches == frozenset(ARCH_NAMES) else f" [{', '.join(sorted(c.arches))}]"
        click.echo(f"{c.id}{arches}\n    {c.title}\n    source: {c.source}")


def report_record(report: Report) -> dict[str, Any]:
    snap = report.snapshot
    return {
        "schema": "ptinspect.validate/1",
        "snapshot": snap.name,
        "target": {"arch": snap.arch.name, "mode": snap.mode.name, "root": hx(snap.root), "root_label": snap.label,
                   "kernel_release": snap.target.get("kernel_release"), "layout": snap.target.get("layout")},
        "entries": report.entries,
        "failed": report.failed,
        "checks": [{"id": o.check.id, "status": o.status, "findings": len(o.findings), "reason": o.reason,
                    "title": o.check.title, "source": o.check.source} for o in report.outcomes],
        "findings": [{"check": f.check, "va": hx(f.va), "level": f.level, "table": hx(f.table), "index": f.index,
                      "slot": hx(f.slot), "raw": None if f.raw is None else hx(f.raw), "message": f.message}
                     for f in report.findings],
    }


def write_report(report: Report) -> None:
    snap = report.snapshot
    out = sys.stdout
    out.write(f"# {snap.name}: {snap.label}, {snap.arch.name} {snap.mode.name}, root {snap.root:#x}, kernel "
              f"{snap.target.get('kernel_release') or 'unknown'} (layout {snap.target.get('layout') or 'unknown'}); "
              f"{report.entries} entries\n")
    findings = report.findings
    if findings:
        rows = [[f.check, f"{f.va:#018x}", f.level, f"{f.table:#x}[{f.index}]",
                 "none" if f.raw is None else f"{f.raw:#018x}", f.message] for f in findings]
        out.write(tabulate(rows, ["check", "va", "level", "table[index]", "raw", "finding"], tablefmt="plain",
                           disable_numparse=True) + "\n")
    for o in report.outcomes:
        if o.status != "n/a":
            detail = f" ({o.reason})" if o.reason else f" ({plural(len(o.findings), 'finding')})" if o.findings else ""
            out.write(f"# {o.status:7} {o.check.id}{detail}\n")
    failed = [o.check.id for o in report.outcomes if o.status == "fail"]
    out.write(f"# {plural(len(findings), 'finding')} in {', '.join(failed)}\n" if failed
              else "# clean: no check failed\n")


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@click.command()
@target_options
@root_options
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--check", "only", multiple=True, metavar="ID", help="Run only this check (repeatable).")
@click.option("--list-checks", is_flag=True, help="List the checks with their kernel sources and exit.")
@click.argument("snapshot_file", required=False, metavar="[SNAPSHOT]",
                type=click.Path(dir_okay=False, path_type=Path))
def validate(snapshot_file: Path | None, fmt: str, only: tuple[str, ...], list_checks: bool,
             **options: Any) -> None:
    """Check the page tables of a live root (target and root options) or of a SNAPSHOT file
    against the kernel's own rules; prints every finding with its location.

    Exit status: 0 when no check fails, 1 when one does, 2 on error.
    """
    if list_checks:
        print_checks(fmt)
        return
    roots, target = split_options(options)
    if snapshot_file is not None and (root_chosen(roots) or target_chosen(target)):
        raise click.UsageError("give a SNAPSHOT file or a target with root options, not both")
    unknown = set(only) - set(check_ids())
    if unknown:
        raise click.UsageError(f"unknown check {', '.join(sorted(unknown))}; see --list-checks")
    with errors_exit_2():
        snap = load(snapshot_file) if snapshot_file is not None else live_side(target, roots)
        report = run_checks(snap, only)
    if fmt == "json":
        click.echo(json.dumps(report_record(report), indent=1))
    else:
        write_report(report)
    click.get_current_context().exit(1 if report.failed else 0)
