"""The `ptinspect` command line.

Each subcommand's module is imported only when that subcommand runs (or help lists it):
a dump should not pay for importing every other command.
"""
from __future__ import annotations

import importlib

import click

# name -> (module, attribute); `ptinspect --help` lists them in this order
COMMANDS = {
    "decode": ("ptinspect.commands.decode", "decode"),
    "dump": ("ptinspect.commands.dump", "dump"),
    "translate": ("ptinspect.commands.dump", "translate"),
    "vm": ("ptinspect.commands.vm", "vm"),
    "vmcore": ("ptinspect.commands.vmcore", "vmcore"),
    "snapshot": ("ptinspect.commands.snapshot", "snapshot"),
    "diff": ("ptinspect.commands.diff", "diff"),
    "validate": ("ptinspect.commands.validate", "validate"),
    "watch": ("ptinspect.commands.watch", "watch"),
    "gdb-path": ("ptinspect.commands.gdb_path", "gdb_path"),
    "summary": ("ptinspect.commands.summary", "summary"),
    "map": ("ptinspect.commands.map", "map_"),
}


class LazyGroup(click.Group):
    """A group whose commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in COMMANDS:
            return None
        module, attr = COMMANDS[cmd_name]
        return getattr(importlib.import_module(module), attr)


def option_names() -> dict[str, list[str]]:
    """Each subcommand's option names: what `pt SUBCOMMAND` completes on TAB in gdb
    (commands/gdb_pt.py asks this once of ptinspect's Python; gdb's own has no click)."""
    ctx = click.Context(main)
    out = {}
    for name in COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None
        out[name] = sorted(o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-"))
    return out


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ptinspect")
def main() -> None:
    """Inspect kernel page tables the way the hardware walks them.

    Decodes x86-64, arm64 and riscv64 entries, including every software-leaf
    (swap, migration, device, hwpoison, marker) entry, per kernel version.
    """


if __name__ == "__main__":
    main()
