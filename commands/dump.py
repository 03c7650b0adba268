"""`ptinspect dump` and `ptinspect translate`."""
from __future__ import annotations

import functools
import json
import sys
from pathlib import Path
from typing import Iterable, TextIO

import click
from tabulate import tabulate

from archs.common import Kind
from inspector.dump import Range, Row, default_range, ranges, rows
from inspector.records import SCHEMA, entry_record, hx, target_record, write_document
from inspector.session import Root, Session, SessionError

from .options import FORMATS
from .render import decoded_rows, human_size
from .targets import open_session, target_options

KINDS = [k.value for k in Kind if k not in (Kind.NONE, Kind.TABLE)]
CHUNK = 256  # rows per tabulate call: output streams, memory stays bounded


def parse_int(text: str, what: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise click.BadParameter(f"{text!r} is not a number (use 0x... for hex)", param_hint=what) from None


def parse_range(text: str) -> tuple[int, int]:
    start, sep, end = text.partition("-")
    if not sep:
        raise click.BadParameter("use START-END, e.g. 0x400000-0x500000", param_hint="--range")
    lo, hi = parse_int(start, "--range"), parse_int(end, "--range")
    if not lo < hi:
        raise click.BadParameter("START must be below END", param_hint="--range")
    return lo, hi


def root_options(func):
    for decorator in reversed([
        click.option("--pid", type=int, help="Walk this process's page tables (mm->pgd)."),
        click.option("--comm", help="Walk the process with this command name."),
        click.option("--kernel", "kernel_root", is_flag=True, help="Walk the kernel's tables (init_mm)."),
        click.option("--root", "root_pa", metavar="PA", help="Walk the table at this physical address (no vmlinux needed)."),
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
    pa = parse_int(root_pa, "--root") if root_pa is not None else None
    try:
        return session.root(pid=pid, comm=comm, kernel=kernel_root, root_pa=pa, upper=upper)
    except SessionError as exc:
        raise click.ClickException(str(exc)) from None


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


@functools.lru_cache(maxsize=4096)
def leaf_detail(flags: tuple[str, ...], read: bool, write: bool, exec_: bool) -> str:
    """detail() of a leaf with nothing but permissions and flags: most of a dump, computed once per kind."""
    perms = "".join(c if on else "-" for c, on in (("r", read), ("w", write), ("x", exec_)))
    return " ".join(p for p in (perms, short_flags(flags)) if p)


def detail(row: Row) -> str:
    e = row.entry
    hw, a = e.hw, e.hw.access
    if (a is not None and e.kernel is None and e.block is None and hw.softleaf is None and not hw.markers
            and not hw.details and not hw.reason):
        return leaf_detail(hw.flags, a.read, a.write, a.exec)
    parts = []
    if e.hw.access is not None:
        a = e.view.access
        parts.append("".join(c if on else "-" for c, on in (("r", a.read), ("w", a.write), ("x", a.exec))))
    if e.hw.softleaf is None:
        parts.append(short_flags(e.hw.flags))
    else:
        s = e.hw.softleaf
        parts.append(f"type={s.type} off={s.offset:#x}" + (f" {short_flags(s.arch_flags)}" if s.arch_flags else ""))
    if e.hw.markers:
        parts.append("marker=" + ",".join(e.hw.markers))
    parts.extend(f"{k}={v}" for k, v in e.hw.details)
    if e.block is not None and e.hw.cont is not None:
        parts.append(f"{e.hw.cont.scheme} {e.block.index + 1}/{e.hw.cont.entries}")
    if e.kernel is not None:
        parts.append("kernel-view:" + short_flags(tuple(f for f in e.kernel.flags if f not in e.hw.flags)))
    if e.hw.reason:
        parts.append(f"({e.hw.reason})")
    return " ".join(p for p in parts if p)


size_text = functools.lru_cache(maxsize=64)(human_size)


def table_row(r: Row, count: int | None = None, end: int | None = None) -> list[str]:
    e = r.entry
    va = f"{e.va:#018x}" if end is None else f"{e.va:#018x}-{end:#018x}"
    size = size_text(e.size) if count is None else f"{count}x{size_text(e.size)}"
    return [va, size, e.ref.level, e.kind.value, "" if e.frame is None else hx(e.frame),
            f"{e.hw.raw:#018x}", f"{e.ref.table:#x}[{e.ref.index}]", detail(r), r.vma.name if r.vma else ""]


HEADERS = ["va", "size", "level", "kind", "pfn", "raw", "table[index]", "details", "vma"]


def plain_table(rows: list[list[str]], headers: list[str]) -> str:
    """What tabulate(rows, headers, tablefmt="plain", disable_numparse=True) gives for one-line
    ASCII cells (every dump cell), computed directly: tabulate's type inference costs more than
    the walk itself."""
    cells = [list(map(str.strip, row)) for row in rows]
    text = "".join(c for row in cells for c in row)
    if not text.isascii() or "\n" in text:
        return tabulate(rows, headers, tablefmt="plain", disable_numparse=True)
    columns = list(zip(*cells)) or [()] * len(headers)
    widths = [max(map(len, col), default=0) for col in columns]
    if headers:
        widths = [max(w, len(h) + 2) for w, h in zip(widths, headers)]
    line = "  ".join(f"{{:<{w}}}" for w in widths).format
    return "\n".join(line(*row).rstrip() for row in ([headers] if headers else []) + cells)


def write_table(out: TextIO, items: Iterable[Row | Range]) -> int:
    chunk: list[list[str]] = []
    n = 0
    first = True
    for item in items:
        n += 1
        chunk.append(table_row(item.first, item.count, item.end) if isinstance(item, Range) else table_row(item))
        if len(chunk) == CHUNK:
            out.write(plain_table(chunk, HEADERS if first else []) + "\n")
            chunk, first = [], False
    if chunk or first:
        out.write(plain_table(chunk, HEADERS if first else []) + "\n")
    return n


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range.")
@click.option("--kind", "kinds", multiple=True, type=click.Choice(KINDS), help="Only entries of these kinds (repeatable).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.option("--ranges/--entries", "merge", default=False, help="Merge adjacent entries with equal attributes.")
def dump(pid, comm, kernel_root, root_pa, upper, va_range, kinds, fmt, merge, **target) -> None:
    """Every non-none page-table entry of a process, the kernel, or a raw root."""
    rng = parse_range(va_range) if va_range else None
    kind_set = frozenset(Kind(k) for k in kinds) if kinds else None
    with open_session(**target) as session:
        root = select_root(session, pid, comm, kernel_root, root_pa, upper)
        walked = rng or default_range(session, root)
        items: Iterable[Row | Range] = rows(session, root, walked, kind_set)
        if merge:
            items = ranges(items)
        out = sys.stdout
        if fmt == "json":
            chosen = selection(pid, comm, kernel_root, root_pa, upper, walked, kinds=list(kinds), merged=merge,
                               tables=False)
            write_document(out, target_record(session, root, chosen), items)
        else:
            out.write(f"# {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}, "
                      f"kernel {session.facts.release or 'unknown'} (layout {session.facts.family or 'unknown'})\n")
            n = write_table(out, items)
            out.write(f"# {n} {'ranges' if merge else 'entries'}\n")


@click.command()
@target_options
@root_options
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
@click.argument("va")
def translate(pid, comm, kernel_root, root_pa, upper, fmt, va, **target) -> None:
    """The walk of one virtual address VA, level by level, every bit named."""
    address = parse_int(va, "VA")
    with open_session(**target) as session:
        root = select_root(session, pid, comm, kernel_root, root_pa, upper)
        path = session.walker(root.mode).translate(root.pa, address, upper=root.upper)
        pa = path[-1].phys(address)
        if fmt == "json":
            click.echo(json.dumps({"schema": SCHEMA, "target": target_record(session, root), "va": hx(address),
                                   "pa": hx(pa) if pa is not None else None,
                                   "walk": [entry_record(e) for e in path]}, indent=2))
            return
        click.echo(f"# {session.arch.name} {root.mode.name}, {root.label}, root {root.pa:#x}")
        for e in path:
            click.echo(f"\n{e.ref.level} ({root.mode.levels[e.ref.depth].hw}) slot {e.ref.table:#x}[{e.ref.index}]"
                       f" at {e.ref.address:#x}, covers {e.va:#x} + {human_size(e.size)}")
            click.echo(tabulate(decoded_rows(e.hw), tablefmt="plain", disable_numparse=True))
            if e.kernel is not None:
                click.echo("kernel view (ptep_get): " + " ".join(e.kernel.flags))
        click.echo(f"\n{address:#x} -> " + (f"{pa:#x}" if pa is not None else f"not mapped ({path[-1].kind.value})"))
