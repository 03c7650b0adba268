"""`ptinspect vm hmm build`: build the kernel's HMM test driver (test_hmm.ko) for test kernels."""
from __future__ import annotations

import time

import click
from tabulate import tabulate

from ptinspect.inspector.vm import VMError
from ptinspect.inspector.vm.hmm import build_module
from ptinspect.inspector.vm.images import ensure_image, load_manifest


@click.group()
def hmm() -> None:
    """The kernel's HMM test driver (lib/test_hmm.c) for the test kernels: device-private memory."""


@hmm.command()
@click.option("--kernel", "ids", multiple=True, metavar="ID", help="Image id from vm-images/kernels.toml "
              "(e.g. 7.2-x86_64; repeatable).")
@click.option("--all", "everything", is_flag=True, help="Every image of vm-images/kernels.toml.")
@click.option("--force", is_flag=True, help="Build again even when a verified module is cached.")
def build(ids: tuple[str, ...], everything: bool, force: bool) -> None:
    """Build test_hmm.ko out of tree in a chroot of the kernel's suite; cache it with the kernel.

    Exit status 1 if any kernel has no module (the reason is printed: e.g. CONFIG_DEVICE_PRIVATE unset).
    """
    recipes = load_manifest()
    if bool(ids) == everything:
        raise click.UsageError("name --kernel ID (repeatable) or --all")
    unknown = [name for name in ids if name not in recipes]
    if unknown:
        raise click.UsageError(f"unknown kernel {', '.join(unknown)}; known: {', '.join(sorted(recipes))}")
    rows, failed = [], False
    for image_id in (sorted(recipes) if everything else ids):
        start = time.monotonic()
        try:
            image = ensure_image(image_id)
            module = build_module(image, force=force)
            rows.append([image_id, "ok", f"{time.monotonic() - start:.0f}", module.vermagic, module.ko])
        except (VMError, TimeoutError) as exc:
            failed = True
            rows.append([image_id, "no module", f"{time.monotonic() - start:.0f}", "", str(exc)])
    click.echo(tabulate(rows, headers=["image", "status", "seconds", "vermagic", "module or reason"]))
    click.get_current_context().exit(1 if failed else 0)
