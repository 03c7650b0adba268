"""The gdb extension's `pt` subcommands are the CLI's commands (commands/cli.py COMMANDS), each
either offered in gdb or left out for a stated reason: the two lists cannot drift apart.  The
extension imports gdb's own module, so its table is read from its source."""
import ast
from pathlib import Path

from ptinspect.commands.cli import COMMANDS

GDB_PT = Path(__file__).resolve().parents[2] / "commands" / "gdb_pt.py"
# CLI commands with no `pt` subcommand of the same kind, and why.
NOT_RUN_IN_GDB = {
    "vm": "boots and drives test VMs: not a question about the kernel gdb is attached to",
    "vmcore": "writes a vmcore over QMP: a target of its own, not gdb's connection",
    "gdb-path": "tells gdb where the extension is: useless once it is loaded",
    "watch": "`pt watch` hands gdb's connection to the watch (PtWatch), it is not served through it",
}


def _subcommands() -> dict[str, str]:
    tree = ast.parse(GDB_PT.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "SUBCOMMANDS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("commands/gdb_pt.py has no SUBCOMMANDS table")


def test_every_cli_command_is_a_pt_subcommand_or_left_out_for_a_reason() -> None:
    subcommands = _subcommands()
    assert set(subcommands) | set(NOT_RUN_IN_GDB) == set(COMMANDS)
    assert not set(subcommands) & set(NOT_RUN_IN_GDB)
    assert all(doc.strip() for doc in subcommands.values())


def test_pt_watch_is_registered() -> None:
    assert "PtWatch()" in GDB_PT.read_text().splitlines()
