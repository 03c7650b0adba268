"""ptinspect inside gdb: `source commands/gdb_pt.py`, then `pt dump`, `pt translate`...

The `pt` commands use gdb's own connection to QEMU's gdbstub (no second
connection) and take the same options as the ptinspect CLI, without --gdb.
"""
from __future__ import annotations

import shlex
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
for site in sorted(ROOT.glob(".venv/lib/python3*/site-packages")):
    if str(site) not in sys.path:
        sys.path.append(str(site))
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import click  # noqa: E402
import gdb  # type: ignore[import-not-found]  # noqa: E402

from commands import targets  # noqa: E402
from commands.cli import main  # noqa: E402
from inspector.targets.gdbinternal import GdbInternalTarget  # noqa: E402

targets.INTERNAL_TARGET = GdbInternalTarget


class PtPrefix(gdb.Command):
    """ptinspect: inspect the page tables of the kernel gdb is attached to.

Subcommands take the ptinspect CLI's options (see `pt SUBCOMMAND --help`),
reading through gdb's own connection: pt dump, pt translate, pt decode."""

    def __init__(self) -> None:
        super().__init__("pt", gdb.COMMAND_DATA, prefix=True)


class PtCommand(gdb.Command):
    """Run `ptinspect NAME` through gdb's connection."""

    def __init__(self, name: str) -> None:
        self.name = name
        command = main.commands[name]
        self.__doc__ = (command.help or name).replace("\b\n", "") + f"\n\nOptions: pt {name} --help"
        super().__init__(f"pt {name}", gdb.COMMAND_DATA)

    def invoke(self, argument: str, from_tty: bool) -> None:
        try:
            main.main([self.name, *shlex.split(argument)], prog_name="pt", standalone_mode=False)
        except click.exceptions.Exit:
            pass
        except click.ClickException as exc:
            raise gdb.GdbError(exc.format_message()) from None
        except click.Abort:
            raise gdb.GdbError("aborted") from None


PtPrefix()
for _name in ("dump", "translate", "decode"):
    PtCommand(_name)
