"""`ptinspect vm`: fetch Debian kernels, boot them under QEMU with the workload, list and stop VMs."""
from __future__ import annotations

import json
import shlex
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click
from tabulate import tabulate

from ptinspect.inspector.vm import VMError, state
from ptinspect.inspector.vm import derive as derive_mod
from ptinspect.inspector.vm.images import busybox_path, ensure_image, load_manifest
from ptinspect.inspector.vm.qemu import MACHINES
from ptinspect.inspector.vm.qemu import boot as boot_vm
from ptinspect.inspector.vm.sysdeps import check_system

from .options import TIMEOUT
from .vm_hmm import hmm
from .vm_op import op
from .vm_selftests import selftests

ARCH = click.Choice(list(MACHINES))
FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@contextmanager
def _user_errors() -> Iterator[None]:
    """VMError (a missing tool, a failed download or boot) as one click error, never a traceback."""
    try:
        yield
    except (VMError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
def vm() -> None:
    """Test VMs: Debian kernels under QEMU with a gdbstub, QMP and the page-table workload."""


@vm.command()
@click.option("--arch", type=ARCH, help="Only images of this architecture.")
@click.option("--kernel", "series", metavar="SERIES",
              help="Only images of this kernel (7.3, 7.2, 7.2-16k, 6.12, 5.10).")
@click.option("--all", "everything", is_flag=True, help="Every image of vm-images/kernels.toml.")
@click.option("--verify", is_flag=True, help="Check every cached file's sha256, not only its size.")
@click.option("--refresh", is_flag=True, help="Re-resolve the newest version of each series; fetch if newer.")
def fetch(arch: str | None, series: str | None, everything: bool, verify: bool, refresh: bool) -> None:
    """Download, verify and cache kernels (vmlinuz, debug vmlinux, config, modules) and busybox."""
    with _user_errors():
        recipes = load_manifest()
        if not (arch or series or everything):
            raise click.UsageError("name --arch and/or --kernel, or --all")
        chosen = [r for r in recipes.values()
                  if (arch is None or r.arch == arch) and (series is None or r.kernel == series)]
        if not chosen:
            series_known = ", ".join(sorted({r.kernel for r in recipes.values()}))
            raise click.UsageError(f"no image for arch {arch or 'any'} kernel {series or 'any'} "
                                   f"(series: {series_known})")
        check_system([r.arch for r in chosen], fetch_only=True)
        rows = []
        for recipe in chosen:
            start = time.monotonic()
            image = ensure_image(recipe.id, verify=verify, refresh=refresh)
            busybox_path(recipe.arch)
            rows.append([image.id, image.release, image.version, f"{time.monotonic() - start:.1f}",
                         image.vmlinuz.parent])
    click.echo(tabulate(rows, headers=["image", "release", "version", "seconds", "path"]))


def _print_facts(facts: dict) -> None:
    for key, value in facts.items():
        click.echo(f"{key + ':':16}{value}")
    click.echo(f"\nconnect: gdb-multiarch {facts['vmlinux'] or ''} -ex 'target remote {facts['gdb']}'")
    click.echo(f"stop:    ptinspect vm stop {facts['name']}")


@vm.command()
@click.option("--arch", type=ARCH, required=True, help="Guest architecture.")
@click.option("--kernel", "series", default="7.2", show_default=True, metavar="SERIES",
              help="Kernel from vm-images/kernels.toml (7.3, 7.2, 7.2-16k, 6.12, 5.10).")
@click.option("--image", type=FILE, help="Boot this kernel image instead (bzImage / Image).")
@click.option("--vmlinux", type=FILE, help="Debug vmlinux of --image (reported to clients).")
@click.option("--initrd", type=FILE, help="Initramfs instead of the workload's (must print the manifest).")
@click.option("--append", help="Extra kernel command line (after console=... nokaslr).")
@click.option("--qemu-arg", "qemu_args", multiple=True, metavar="ARGS", help="Extra QEMU arguments (repeatable).")
@click.option("--la57", is_flag=True, help="x86_64: 5-level paging (-cpu qemu64,+la57).")
@click.option("--numa-nodes", type=click.IntRange(1), default=1, show_default=True,
              help="NUMA nodes (1, 2 or 4) sharing the 1 GiB evenly; 2 for `vm op NAME migrate`.")
@click.option("--cpus", type=int, metavar="N", help="vCPUs (1-8), split evenly over the NUMA nodes "
              "(default 1; riscv64 with NUMA: one per node). The kernel's migration selftest needs 3.")
@click.option("--accel", type=click.Choice(["auto", "tcg", "kvm"]), default="auto", show_default=True,
              help="auto: KVM only if it really runs the kernel here (probed once per host boot), else TCG.")
@click.option("--name", help="VM name (default: the image id, made unique).")
@click.option("--timeout", type=TIMEOUT, help="Seconds to wait for the manifest (default per arch).")
@click.option("--json", "as_json", is_flag=True, help="Print the connection facts as JSON.")
def boot(arch: str, series: str, image: Path | None, vmlinux: Path | None, initrd: Path | None,
         append: str | None, qemu_args: tuple[str, ...], la57: bool, numa_nodes: int, cpus: int | None,
         accel: str, name: str | None, timeout: float | None, as_json: bool) -> None:
    """Boot a kernel with the workload; print gdbstub, QMP, vmlinux and workload pid once it runs."""
    extra = [word for arg in qemu_args for word in shlex.split(arg)]
    with _user_errors():
        machine = boot_vm(arch, series=series, image=image, vmlinux=vmlinux, initrd=initrd, append=append,
                          qemu_args=extra, timeout=timeout, name=name, la57=la57, accel=accel,
                          numa_nodes=numa_nodes, cpus=cpus)
    if as_json:
        click.echo(json.dumps(machine.facts(), indent=1))
    else:
        _print_facts(machine.facts())


@vm.command()
@click.argument("target", required=False, metavar="NAME|PID")
@click.option("--all", "everything", is_flag=True, help="Stop every running VM.")
def stop(target: str | None, everything: bool) -> None:
    """Stop a VM (QMP quit, then SIGTERM, then SIGKILL)."""
    if bool(target) == everything:
        raise click.UsageError("give a VM name or QEMU pid, or --all")
    with _user_errors():
        machines = state.running() if everything else [state.find(target or "")]
        for machine in machines:
            machine.stop()
            click.echo(f"stopped {machine.name} (QEMU pid {machine.qemu_pid})")


@vm.command(name="list")
@click.option("--json", "as_json", is_flag=True, help="Print the connection facts as JSON.")
def list_vms(as_json: bool) -> None:
    """Running VMs and how to reach them."""
    machines = state.running()
    if as_json:
        click.echo(json.dumps([m.facts() for m in machines], indent=1))
        return
    if not machines:
        click.echo("no running VMs")
        return
    rows = [[m.name, m.arch, m.kernel_release, m.qemu_pid, m.gdb, m.workload_pid, m.qmp,
             f"{(time.time() - m.started) / 60:.0f} min"] for m in machines]
    click.echo(tabulate(rows, headers=["name", "arch", "kernel", "qemu pid", "gdb", "workload pid", "qmp", "up"]))


@vm.command()
@click.option("--series", required=True, type=click.Choice(list(derive_mod.SERIES_SUITE)), help="Kernel series.")
@click.option("--arch", type=ARCH, required=True, help="Architecture.")
@click.option("--flavour", help="Debian headers flavour (default: cloud-amd64 / cloud-arm64 / riscv64).")
@click.option("--tree", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="A kernel source or headers tree instead of Debian's headers packages.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON here (default: stdout).")
def derive(series: str, arch: str, flavour: str | None, tree: Path | None, out: Path | None) -> None:
    """Derive layout vectors by compiling the kernel's own macros (types, constants, encodings)."""
    with _user_errors():
        text = derive_mod.dump(derive_mod.run(series, arch, flavour, tree))
    if out:
        out.write_text(text)
        click.echo(f"wrote {out}")
    else:
        click.echo(text, nl=False)


vm.add_command(op)
vm.add_command(hmm)
vm.add_command(selftests)
