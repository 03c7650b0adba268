"""The `ptinspect` command line."""
from __future__ import annotations

import click

from .decode import decode
from .diff import diff
from .dump import dump, translate
from .snapshot import snapshot
from .validate import validate
from .vm import vm
from .vmcore import vmcore


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ptinspect")
def main() -> None:
    """Inspect kernel page tables the way the hardware walks them.

    Decodes x86-64, arm64 and riscv64 entries, including every software-leaf
    (swap, migration, device, hwpoison, marker) entry, per kernel version.
    """


main.add_command(decode)
main.add_command(dump)
main.add_command(translate)
main.add_command(vm)
main.add_command(vmcore)
main.add_command(snapshot)
main.add_command(diff)
main.add_command(validate)


if __name__ == "__main__":
    main()
