"""`ptinspect vm selftests`: the kernel's own mm selftests in a test VM (build them, run them in the guest)."""
from __future__ import annotations

import time

import click
from tabulate import tabulate

from ptinspect.inspector.vm import VMError, state
from ptinspect.inspector.vm.images import ensure_image, load_manifest
from ptinspect.inspector.vm.mmselftests import GUEST_DIR, MIGRATION, build_program
from ptinspect.inspector.vm.selftests import finish, start

from .options import TIMEOUT


@click.group()
def selftests() -> None:
    """The kernel's own mm selftests (tools/testing/selftests/mm) as witnesses in a test VM."""


@selftests.command()
@click.option("--kernel", "ids", multiple=True, required=True, metavar="ID",
              help="Image id from vm-images/kernels.toml (e.g. 7.2-x86_64; repeatable).")
@click.option("--force", is_flag=True, help="Build again even when it is cached.")
def build(ids: tuple[str, ...], force: bool) -> None:
    """Build migration.c static for each kernel's guest (Debian's libnuma of the kernel's suite, in the
    kernel's build chroot); the next boot's initramfs holds it at /ptinspect/selftests/migration."""
    recipes = load_manifest()
    if unknown := [name for name in ids if name not in recipes]:
        raise click.UsageError(f"unknown kernel {', '.join(unknown)}; known: {', '.join(sorted(recipes))}")
    rows, failed = [], False
    for image_id in ids:
        began = time.monotonic()
        try:
            path = build_program(ensure_image(image_id), MIGRATION, force=force)
            rows.append([image_id, "ok", f"{time.monotonic() - began:.0f}", f"{GUEST_DIR}/{MIGRATION.name}", path])
        except (VMError, TimeoutError) as exc:
            failed = True
            rows.append([image_id, "failed", f"{time.monotonic() - began:.0f}", "", str(exc)])
    click.echo(tabulate(rows, headers=["image", "status", "seconds", "in the guest", "built or reason"]))
    click.get_current_context().exit(1 if failed else 0)


@selftests.command(context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False})
@click.option("--timeout", type=TIMEOUT, default=600.0, show_default=True,
              help="Seconds to wait for the program to end.")
@click.argument("target", metavar="NAME|PID")
@click.argument("argv", nargs=-1, required=True, metavar="PROGRAM [ARG]...")
def run(timeout: float, target: str, argv: tuple[str, ...]) -> None:
    """Run a guest program (an absolute path, e.g. /ptinspect/selftests/migration -t private_anon) through
    the workload of test VM NAME; print its output; exit 0 if it exited 0, else 1."""
    try:
        machine = state.find(target)
        result = finish(machine, start(machine, list(argv)), timeout)
    except (VMError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    for line in result.lines:
        click.echo(line)
    click.echo(f"# exit status {result.status}")
    click.get_current_context().exit(0 if result.status == 0 else 1)
