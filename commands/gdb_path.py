"""`ptinspect gdb-path`: where the gdb extension is, so that an installed ptinspect needs no path
into site-packages (`source $(ptinspect gdb-path)` in a shell-expanded gdb command line, or the
lines of --gdbinit in ~/.gdbinit)."""
from __future__ import annotations

import sys
from pathlib import Path

import click

EXTENSION = Path(__file__).resolve().with_name("gdb_pt.py")


@click.command("gdb-path")
@click.option("--gdbinit", is_flag=True,
              help="Print the lines for ~/.gdbinit instead: this Python for the `pt` commands' child, then `source`.")
def gdb_path(gdbinit: bool) -> None:
    """Print the path of the gdb extension (commands/gdb_pt.py) that gdb's `source` loads."""
    if gdbinit:
        # gdb's embedded Python is not this one: the `pt` commands run ptinspect with PTINSPECT_PYTHON.
        click.echo(f"python import os; os.environ.setdefault('PTINSPECT_PYTHON', {sys.executable!r})")
        click.echo(f"source {EXTENSION}")
    else:
        click.echo(str(EXTENSION))
