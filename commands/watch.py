"""`ptinspect watch`: every change to a range's page-table entries as the VM runs."""
from __future__ import annotations

import json
import sys

import click

from ptinspect.archs.common import Kind
from ptinspect.inspector.targets.gdbstub import GdbstubTarget
from ptinspect.inspector.watch import Event, Symbols, Watcher, WatchError

from .dump import parse_range, root_options, select_root, selection
from .options import FORMATS, TIMEOUT
from .targets import open_session, target_options

CALLERS_SHOWN = 4  # in the text line; JSON has every caller found
# --until takes a kind, or a family of kinds ("migration": any migration-*)
UNTIL = sorted({k.value for k in Kind if k not in (Kind.NONE, Kind.TABLE)}
               | {k.value.rsplit("-", 1)[0] for k in Kind if k.value.startswith(("migration-", "device-private-"))})


def _line(event: Event) -> str:
    cpu = event.cpu
    where = "-" if cpu is None else f"cpu{cpu.number if cpu.number is not None else '?'}"
    function = "-" if cpu is None else (cpu.function or (f"{cpu.pc:#x}" if cpu.pc is not None else "unknown"))
    task = "-" if cpu is None else cpu.task
    chain = "".join(f" < {c.split('+', 1)[0]}" for c in cpu.callers[:CALLERS_SHOWN]) if cpu else ""
    return (f"{event.time:9.3f}s {where:<5} {event.source:<8} {event.level:<4} {event.va:#018x} "
            f"{event.status:<7} {event.text}   [{function}{chain} {task}]")


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", required=True, help="The VA range whose entries to watch.")
@click.option("--until", type=click.Choice(UNTIL), metavar="KIND",
              help="Stop at the first event that makes an entry of KIND (migration: any migration-*) and "
                   "leave the VM stopped there.")
@click.option("--count", type=click.IntRange(min=1), help="End after N events.")
@click.option("--for", "duration", type=TIMEOUT, help="End after S seconds (default: until Ctrl-C).")
@click.option("--format", "fmt", type=FORMATS, default="table", show_default=True)
def watch(pid, comm, kernel_root, root_pa, upper, va_range, until, count, duration, fmt, **target) -> None:
    """Watch a range's page-table entries change while the VM runs (QEMU gdbstub, TCG).

    Write watchpoints on the table slots that hold the range's entries report each kernel store
    with its vCPU, function and task; accessed/dirty bits the MMU sets are reported as hardware
    updates.  Only QEMU's debug state changes: guest memory and registers are never written.
    Every watchpoint is removed when the watch ends; the VM runs again, unless --until caught
    its entry (then it stays stopped for dump/snapshot)."""
    rng = parse_range(va_range)
    if not target.get("gdb_address"):
        raise click.UsageError("watch needs a live QEMU: give --gdb HOST:PORT")
    if target.get("vmlinux") is None:
        raise click.UsageError("watch needs the kernel's vmlinux (--vmlinux): its linear map, symbols and tasks")
    if target.get("keep_stopped") and until is None:
        raise click.UsageError("--keep-stopped applies to watch only with --until (the VM stays stopped at the catch)")
    try:
        symbols = Symbols.load(target["vmlinux"])
    except WatchError as exc:
        raise click.ClickException(str(exc)) from None
    out = sys.stdout
    with open_session(**target) as session:
        live = session.reader
        assert isinstance(live, GdbstubTarget)
        root = select_root(session, pid, comm, kernel_root, root_pa, upper)
        try:
            watcher = Watcher(session, live, root, rng, symbols, selection(pid, comm, kernel_root, root_pa, upper, rng))
            watcher.start()
            if fmt == "json":
                out.write(json.dumps({"watching": {"root": root.label, "range": [hex(rng[0]), hex(rng[1])],
                                                   "linear_offset": hex(watcher.offset),
                                                   "watchpoints": [[hex(w.va), w.length]
                                                                   for w in watcher.watched.values()]}}) + "\n")
            else:
                out.write(f"# watching {root.label} {rng[0]:#x}-{rng[1]:#x}: {len(watcher.watched)} table(s), "
                          f"one write watchpoint each, linear map at PA + {watcher.offset:#x}\n")
            out.flush()

            def emit(event: Event) -> None:
                out.write(json.dumps(event.record()) + "\n" if fmt == "json" else _line(event) + "\n")
                out.flush()

            outcome = watcher.run(emit, count=count, timeout=duration, until=until)
            watcher.stop_all()
        except WatchError as exc:
            raise click.ClickException(str(exc)) from None
        summary = {"end": outcome.reason, "events": outcome.events, "watchpoint_hits": outcome.hits,
                   "tables": outcome.tables, "vm": "stopped" if outcome.caught else "running",
                   "watchpoints_placed": [[hex(va), n] for va, n in watcher.placed]}
        if fmt == "json":
            out.write(json.dumps({"summary": summary}) + "\n")
        else:
            out.write(f"# ended ({outcome.reason}): {outcome.events} events, {outcome.hits} watchpoint hits, "
                      f"{outcome.tables} table(s) watched at the end; every watchpoint removed\n")
            if outcome.caught is not None:
                out.write(f"# caught {outcome.caught.after['kind'] if outcome.caught.after else '?'} at "
                          f"{outcome.caught.va:#x}: the VM is left stopped there\n")
