"""`ptinspect snapshot`, and what diff and validate share: a side that is a file or a live target."""
from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from ptinspect.inspector.session import SessionError
from ptinspect.inspector.snapshot import Snapshot, SnapshotError, live_snapshot, write_snapshot

from .dump import checked_range, parse_range, root_options, select_root, selection
from .targets import open_session, target_options

ROOT_OPTIONS = ("pid", "comm", "kernel_root", "root_pa", "upper")


class Failure(click.ClickException):
    """An error of a command whose exit statuses 0 and 1 are results (diff, validate)."""

    exit_code = 2


@contextlib.contextmanager
def errors_exit_2() -> Iterator[None]:
    """Every error as one line with exit status 2 (usage errors already exit 2)."""
    try:
        yield
    except click.UsageError:
        raise
    except click.ClickException as exc:
        raise Failure(exc.message) from None
    except (SnapshotError, SessionError, ValueError) as exc:
        raise Failure(str(exc)) from None


def split_options(options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(root options, target options) of a command decorated with both."""
    roots = {k: options.pop(k) for k in ROOT_OPTIONS}
    return roots, options


def root_chosen(roots: dict[str, Any]) -> bool:
    """Whether any root option (--pid, --comm, --kernel, --root, --upper) was given."""
    return any(v not in (None, False) for v in roots.values())


def live_side(target: dict[str, Any], roots: dict[str, Any], like: Snapshot | None = None) -> Snapshot:
    """A live walk as a snapshot; without root options, the root (and VA range) `like` recorded."""
    va_range = None
    if not root_chosen(roots) and like is not None:
        sel = like.selection
        roots = {"pid": sel.get("pid"), "comm": sel.get("comm"), "kernel_root": bool(sel.get("kernel")),
                 "root_pa": sel.get("root"), "upper": bool(sel.get("upper"))}
        va_range = like.va_range
    with open_session(**target) as session:
        root = select_root(session, **roots)
        rng = checked_range(session, root, va_range)
        return live_snapshot(session, root, selection(**roots), rng)


@click.command()
@target_options
@root_options
@click.option("--range", "va_range", metavar="START-END", help="Only entries overlapping this VA range.")
@click.argument("out", type=click.Path(dir_okay=False, writable=True, path_type=Path))
def snapshot(out: Path, va_range: str | None, **options: Any) -> None:
    """Write every entry of a root, its table entries included, to OUT (ptinspect.snapshot/1 JSON).

    The file appears only once complete (written aside, then renamed): an error or Ctrl-C
    leaves no partial file.  It records the arch, paging mode, kernel release, layout (and why it was assumed),
    the facts with their sources, RAM and the VMAs, so that `validate` and `diff` can use it
    without the target.
    """
    roots, target = split_options(options)
    rng = parse_range(va_range) if va_range else None
    with open_session(**target) as session:
        root = select_root(session, **roots)
        rng = checked_range(session, root, rng)
        try:
            n = write_snapshot(out, session, root, selection(**roots), rng)
        except SnapshotError as exc:
            raise click.ClickException(str(exc)) from None
    click.echo(f"{out}: {n} entries of {root.label} ({session.arch.name} {root.mode.name}, kernel "
               f"{session.facts.release or 'unknown'})", file=sys.stderr)
