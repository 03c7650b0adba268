"""`ptinspect vmcore`: a vmcore of a running QEMU, with VMCOREINFO, through QMP dump-guest-memory."""
from __future__ import annotations

import time
from pathlib import Path

import click

from ptinspect.inspector.targets.drgn import DrgnTargetError, NoVmcoreinfo, QmpTarget
from ptinspect.inspector.targets.qmp import Qmp, QmpError
from ptinspect.inspector.vm import progress, state
from ptinspect.inspector.vmcorefile import DumpError, identify, reassemble
from ptinspect.inspector.vmcoreinfo import VmcoreinfoError, add_elf_note, add_kdump_note

from .options import TIMEOUT
from .targets import open_session

FORMATS = ("elf", "kdump-zlib", "kdump-lzo", "kdump-snappy")
POLL = 0.5  # seconds between query-dump polls


def _qmp_socket(qmp: str | None, gdb_address: str | None) -> str:
    """The QMP socket to dump through: --qmp, or that of the harness VM whose gdbstub is --gdb."""
    if qmp:
        return qmp
    if gdb_address:
        for machine in state.running():
            if machine.gdb == gdb_address or machine.gdb.endswith(f":{gdb_address}"):
                return machine.qmp
        raise click.UsageError(f"{gdb_address} is not the gdbstub of a `ptinspect vm` VM, so its QMP socket is "
                               "unknown: give --qmp SOCKET (dump-guest-memory runs over QMP)")
    raise click.UsageError("give --qmp SOCKET (or --gdb HOST:PORT of a `ptinspect vm` VM)")


def _guest_vmcoreinfo(socket: str, timeout: float) -> bytes | None:
    """VMCOREINFO as QEMU holds it (None: QEMU has none, the dump will lack it)."""
    try:
        target = QmpTarget(socket, timeout=timeout)
    except NoVmcoreinfo:
        return None  # nor paging registers over QMP: the gdbstub may still find it
    except DrgnTargetError as exc:
        raise click.ClickException(str(exc)) from None
    info = target.vmcoreinfo
    target.close()
    return info


def _vmcoreinfo_from_memory(socket: str, gdb_address: str | None, vmlinux: Path, timeout: float) -> bytes:
    """VMCOREINFO read out of the live guest, as the gdbstub session finds it (kernel/vmcore_info.c
    vmcoreinfo_data), through the gdbstub if given, else through QMP and `info registers`.  The VM
    is left stopped by the session and resumed here only if it ran before (a gdbstub detach would
    resume it even when it was paused)."""
    try:
        with Qmp(socket, timeout=timeout) as qmp:
            running = qmp.execute("query-status").get("running")
    except (QmpError, ValueError) as exc:
        raise click.ClickException(f"QMP at {socket}: {exc}") from None
    with open_session(gdb_address, vmlinux, None, True, timeout, qmp=None if gdb_address else socket) as session:
        info = session.vmcoreinfo
    if running:
        try:
            with Qmp(socket, timeout=timeout) as qmp:
                qmp.execute("cont")
        except QmpError as exc:
            raise click.ClickException(f"could not resume the VM over QMP at {socket}: {exc}") from None
    if info is None:
        raise click.ClickException("the guest's VMCOREINFO was not found")
    return info


def _dump(socket: str, fmt: str, path: Path, timeout: float) -> None:
    """QMP dump-guest-memory into `path`, polling query-dump; QEMU pauses a running VM for the
    dump and resumes it afterwards (dump.c dump_init/dump_cleanup)."""
    try:
        with Qmp(socket, timeout=min(timeout, 30.0)) as qmp:
            formats = qmp.execute("query-dump-guest-memory-capability").get("formats", [])
            if fmt not in formats:
                raise click.ClickException(f"this QEMU cannot write {fmt} dumps (it can: {', '.join(formats)})")
            qmp.execute("dump-guest-memory", paging=False, protocol=f"file:{path}", format=fmt, detach=True)
            deadline = time.monotonic() + timeout
            shown = -1
            while True:
                status = qmp.execute("query-dump")
                done, total = status.get("completed", 0), status.get("total", 0) or 1
                if status.get("status") == "completed":
                    break
                if status.get("status") == "failed":
                    raise click.ClickException(f"QEMU's dump into {path} failed (see QEMU's log)")
                if time.monotonic() > deadline:
                    raise click.ClickException(f"the dump did not finish within {timeout:.0f} s; QEMU may still "
                                               f"be writing {path} (raise --timeout)")
                if done * 4 // total != shown:
                    shown = done * 4 // total
                    progress(f"vmcore: {done >> 20} of {total >> 20} MiB")
                time.sleep(POLL)
    except QmpError as exc:
        raise click.ClickException(f"QMP at {socket}: {exc}") from None


@click.command()
@click.option("--qmp", metavar="SOCKET", help="The QEMU's QMP unix socket.")
@click.option("--gdb", "gdb_address", metavar="HOST:PORT",
              help="Its gdbstub: finds VMCOREINFO in guest memory (with --vmlinux) and, for `ptinspect vm` "
                   "VMs, the QMP socket.")
@click.option("--vmlinux", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="The running kernel's vmlinux: to add VMCOREINFO when QEMU has none (riscv virt in QEMU 7.2).")
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="elf", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite OUT.")
@click.option("--timeout", type=TIMEOUT, default=600.0, show_default=True, help="Seconds to wait for the dump.")
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
def vmcore(qmp: str | None, gdb_address: str | None, vmlinux: Path | None, fmt: str, force: bool,
           timeout: float, out: Path) -> None:
    """Write a vmcore of a running QEMU to OUT, with VMCOREINFO (`dump --vmcore OUT` reads it).

    QEMU adds VMCOREINFO when the guest has -device vmcoreinfo and the qemu_fw_cfg module;
    otherwise ptinspect reads it from guest memory (give --vmlinux, and --gdb to read it
    through the gdbstub) and adds it: as a PT_NOTE to an ELF file, as a note that the kdump
    sub-header points at to a kdump file.  The VM is paused for the dump and left in its
    previous run state.
    """
    out = out.resolve()
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists (--force overwrites it)")
    if not out.parent.is_dir():
        raise click.ClickException(f"{out.parent} is not a directory")
    socket = _qmp_socket(qmp, gdb_address)
    began = time.monotonic()
    info = _guest_vmcoreinfo(socket, timeout)
    added = None
    if info is None:
        if vmlinux is None:
            raise click.ClickException("QEMU holds no VMCOREINFO for this guest: give --vmlinux (and --gdb) so "
                                       "ptinspect can read it from guest memory and add it")
        added = _vmcoreinfo_from_memory(socket, gdb_address, vmlinux, timeout)
    staged = out.with_name(out.name + ".partial")
    written = out.with_name(out.name + ".qemu") if fmt != "elf" else staged
    try:
        _dump(socket, fmt, written, timeout)
        if written != staged:
            if identify(written).format == "kdump-flattened":
                reassemble(written, staged)  # QEMU 7.2 writes kdump formats as makedumpfile's flattened stream
            else:
                written.replace(staged)
        if added is not None:
            (add_elf_note if fmt == "elf" else add_kdump_note)(staged, added)
        staged.replace(out)
        dump = identify(out)
    except (DumpError, VmcoreinfoError, OSError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        staged.unlink(missing_ok=True)
        written.unlink(missing_ok=True)
    if dump.vmcoreinfo is None:
        raise click.ClickException(f"{out} has no VMCOREINFO although QEMU had it")
    release = dump.vmcoreinfo.split(b"\n", 1)[0].removeprefix(b"OSRELEASE=").decode(errors="replace")
    origin = "added from guest memory" if added is not None else "from QEMU"
    click.echo(f"{out}: {dump.format} vmcore of {dump.arch} {release}, {out.stat().st_size >> 20} MiB, "
               f"VMCOREINFO {origin}, {time.monotonic() - began:.1f} s")
