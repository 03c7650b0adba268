"""`ptinspect dump` and `ptinspect translate`."""
from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Iterable

import click

from ptinspect.archs.common import Kind
from ptinspect.inspector import inputs
from ptinspect.inspector.dump import Range, Row, RunRows, bulk_rows, default_range, ranges
from ptinspect.inspector.records import (
    SCHEMA,
    dump_filter,
    entry_record,
    hx,
    layout_label,
    target_record,
    write_document,
)
from ptinspect.inspector.session import Root, Session, SessionError

from .options import FORMATS, user_input
from .render import decoded_table, human_size
from .table import DumpTable
from .targets import open_session, target_options

KINDS = [k.value for k in Kind if k not in (Kind.NONE, Kind.TABLE)]


def parse_range(text: str) -> tuple[int, int]:
    with user_input():
        return inputs.va_range(text, "--range")


def checked_range(session: Session, root: Root, rng: tuple[int, int] | None) -> tuple[int, int] | None:
    """A --range the root can walk (both ends in its address space), or dump's default range."""
    if rng is None:
        return default_range(session, root)
    with user_input():
        inputs.check_range(session.arch, root.mode, root.upper, rng, "--range")
    return rng


def root_options(func):
    for decorator in reversed([
        click.option("--pid", type=int, help="Walk this process's page tables (mm->pgd)."),
        click.option("--comm", help="Walk the process with this command name."),
        click.option("--kernel", "kernel_root", is_flag=True, help="Walk the kernel's tables (init_mm)."),
        click.option("--root", "root_pa", metavar="PA",
                     help="Walk the table at this physical address (no vmlinux needed)."),
        click.option("--upper", is_flag=True, help="With --root: the root translates the upper (kernel) VA half."),
    ]):
        func = decorator(func)
    return func


def selection(pid, comm, kernel_root, root_pa, upper, va_range=None, **extra) -> dict:
    """How a command chose its entries, as recorded in a snapshot's target record."""
    rec = {k: v for k, v in (("pid", pid), ("comm", comm), ("root", root_pa)) if v is not None}
    if kernel_root:
        rec["kernel"] = True
    if upper:
        rec["upper"] = True
    if va_range is not None:
        rec["va_range"] = [hx(va_range[0]), hx(va_range[1])]
    rec.update(extra)
    return rec


def select_root(session: Session, pid, comm, kernel_root, root_pa, upper) -> Root:
    chosen = [x for x in (pid is not None, comm is not None, kernel_root, root_pa is not None) if x]
    if len(chosen) > 1:
        raise click.UsageError("give only one of --pid, --comm, --kernel, --root")
    with user_input():
        pa = inputs.address(root_pa, "--root") if root_pa is not None else None
    try:
        root = session.root(pid=pid, comm=comm, kernel=kernel_root, root_pa=pa, upper=upper)
    except SessionError as exc:
        raise click.ClickException(str(exc)) from None
    if pa is not None:
        with user_input():
            inputs.check_root(root.mode, pa, session.reader.ranges(), "--root")
            inputs.check_root_table(pa, lambda: session.root_table(root), session.ram_known, "--root")
    return root


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS),
              help="Only entries of these kinds (repeatable).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--ranges/--entries", "merge", default=False, help="Merge adjacent entries with equal attributes.")
def dump(pid, comm, kernel_root, root_pa, upper, va_range, kinds, fmt, merge, **target) -> None:
    """Every non-none page-table entry of a process, the kernel, or a raw root."""
    rng = parse_range(va_range) if va_range else None
    kind_set = frozenset(Kind(k) for k in kinds) if kinds else None
    with open_session(**target) as session:
        root = select_root(session, pid, comm, kernel_root, root_pa, upper)
        walked = checked_range(session, root, rng)
        items: Iterable[Row | RunRows | Range] = (ranges(bulk_rows(session, root, walked, kind_set)) if merge
                                                  else bulk_rows(session, root, walked, kind_set))
        out = sys.stdout
        if fmt == "json":
            chosen = selection(pid, comm, kernel_root, root_pa, upper, walked, kinds=list(kinds), merged=merge,
                               tables=False)
            # Valid or absent: the document streams to an unnamed temporary file (memory stays
            # bounded however large the walk) and reaches stdout only once complete, so that a read
            # error mid-walk leaves no truncated JSON behind.
            with tempfile.TemporaryFile("w+", encoding="utf-8") as staged:
                write_document(staged, target_record(session, root, chosen), items, session.facts.layout)
                staged.seek(0)
                shutil.copyfileobj(staged, out)
        else:
            out.write(f"# {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}, "
                      f"kernel {session.facts.release or 'unknown'} (layout {layout_label(session.facts)})\n")
            filtered = dump_filter(session)
            if filtered is not None:
                out.write(f"# {session.source}: {filtered}; tables in excluded pages are shown as unknown\n")
            n = DumpTable(root.mode, root.vmas, merge, session.facts.layout).write(out, items)
            out.write(f"# {n} {'ranges' if merge else 'entries'}\n")


@click.command()
@target_options
@root_options
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.argument("vas", metavar="VA...", nargs=-1, required=True)
def translate(pid, comm, kernel_root, root_pa, upper, fmt, vas, **target) -> None:
    """The walk of each virtual address VA, level by level, every bit named.

    Several VAs are answered in one run (one connection, one stop): the text walks follow each
    other; --format json gives one document for one VA, one compact document per line for several."""
    with user_input():
        addresses = [inputs.address(va, "VA") for va in vas]
    with open_session(**target) as session:
        root = select_root(session, pid, comm, kernel_root, root_pa, upper)
        with user_input():
            for address in addresses:
                inputs.check_va(session.arch, root.mode, root.upper, address, "VA")
        walker = session.walker(root.mode)
        for n, address in enumerate(addresses):
            path = walker.translate(root.pa, address, upper=root.upper)
            pa = path[-1].phys(address)
            if fmt == "json":
                doc = {"schema": SCHEMA, "target": target_record(session, root), "va": hx(address),
                       "pa": hx(pa) if pa is not None else None, "walk": [entry_record(e) for e in path]}
                click.echo(json.dumps(doc, indent=2 if len(addresses) == 1 else None))
                continue
            if n:
                click.echo()
            click.echo(f"# {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}")
            for e in path:
                click.echo(f"\n{e.ref.level} ({root.mode.levels[e.ref.depth].hw}) slot {e.ref.table:#x}[{e.ref.index}]"
                           f" at {e.ref.address:#x}, covers {e.va:#x} + {human_size(e.size)}")
                click.echo(decoded_table(e.hw))
                if e.kernel is not None:
                    click.echo("kernel view (ptep_get): " + " ".join(e.kernel.flags))
            last = path[-1]
            if pa is not None:
                outcome = f"{pa:#x}"
            elif last.kind is Kind.UNKNOWN:  # not "not mapped": the walk could not tell
                outcome = f"unknown ({last.hw.reason})"
            else:
                outcome = f"not mapped ({last.kind.value})"
            click.echo(f"\n{address:#x} -> {outcome}")
