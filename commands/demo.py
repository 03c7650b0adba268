"""The main job in one go: boot the default test VM and dump its workload's page tables.

`./bootstrap.sh demo [ARCH]` runs this after installing everything.  The VM is
stopped afterwards; `ptinspect vm boot` keeps one running for more commands.
"""
from __future__ import annotations

import sys

import click

from ptinspect.archs import ARCH_NAMES
from ptinspect.inspector.vm import VMError
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.qemu import boot

from .cli import main


@click.command()
@click.argument("arch", default="x86_64", type=click.Choice(ARCH_NAMES))
@click.option("--kernel", "series", default="7.2", show_default=True, help="Kernel series of the test VM.")
def demo(arch: str, series: str) -> None:
    """Boot ARCH's test VM, dump the workload process's page tables (merged into ranges), stop the VM."""
    try:
        image = ensure_image(image_for(arch, series))
        vm = boot(arch, series, detach=False)
    except VMError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        args = ["dump", "--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config),
                "--pid", str(vm.workload_pid), "--ranges"]
        click.echo(f"$ ptinspect {' '.join(args)}", err=True)
        main.main(args, prog_name="ptinspect", standalone_mode=False)
        click.echo(f"\nThe workload's own view is in {vm.manifest}; try `ptinspect vm boot --arch {arch}` "
                   "and the commands in README.md.", err=True)
    except click.ClickException as exc:
        exc.show()
        sys.exit(1)
    finally:
        vm.stop()


if __name__ == "__main__":
    demo()
