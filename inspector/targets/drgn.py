"""Targets drgn reads: a vmcore file, /proc/kcore, and a live QEMU over QMP.

Physical memory comes from drgn (`prog.read(pa, size, True)`); the kernel identifies
itself through VMCOREINFO, from which the session derives paging modes and the
kernel root.  There are no CPU registers, except over QMP when QEMU has no VMCOREINFO
(no -device vmcoreinfo, as riscv virt in QEMU 7.2): the monitor's `info registers`
then gives the paging registers and the session finds VMCOREINFO as on the gdbstub.
Nothing here writes guest memory; over QMP the VM is stopped for the session and
resumed afterwards (unless it was stopped already, or keep_stopped).
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import socket as sock
import stat
from collections.abc import Callable, Iterator
from pathlib import Path

from ptinspect.archs import arch_where, names_text
from ptinspect.archs.common import vmcoreinfo_int

from ..kdumppages import KdumpReader
from ..kernel import drgn_program
from ..reader import ReadError
from ..runstate import Marker, warn
from ..vmcorefile import DumpError, DumpFile, ExcludedPage, identify
from ..vmcoreinfo import VmcoreinfoError, parse
from .elfcore import ElfCoreTarget
from .qmp import Qmp, QmpError

KCORE = Path("/proc/kcore")
PREFER_PGTABLE = "DRGN_PREFER_PGTABLE_READER"


class DrgnTargetError(Exception):
    """The dump, /proc/kcore or QMP socket cannot be read."""


class NoVmcoreinfo(DrgnTargetError):
    """QEMU holds no VMCOREINFO and shows no paging registers: the guest's kernel cannot be found."""


def _vmcoreinfo(prog) -> bytes | None:
    """The VMCOREINFO drgn found (ELF note, kdump header, /sys/kernel/vmcoreinfo, QEMU's copy)."""
    import drgn

    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        return None
    return prog["VMCOREINFO"].to_bytes_().rstrip(b"\0")


class DrgnTarget:
    """Physical memory through a drgn Program; `prog` also serves the kernel's debug info."""

    def __init__(self, prog, arch: str, source: str, vmcoreinfo: bytes | None,
                 ram: list[tuple[int, int]] | None = None, registers: dict[str, int] | None = None,
                 on_close: Callable[[], None] | None = None, dump: DumpFile | None = None) -> None:
        self.prog = prog
        self.arch = arch
        self.source = source
        self.vmcoreinfo = vmcoreinfo
        self._ram = ram
        self._registers = registers or {}
        self._on_close = on_close
        self.dump = dump  # a vmcore's headers: which pages its filter excluded

    def read(self, pa: int, size: int) -> bytes:
        import drgn

        try:
            return self.prog.read(pa, size, True)
        except drgn.FaultError as exc:
            why = self.excluded(pa, size)
            if why is not None:
                raise ExcludedPage(f"{self.source}: {why} (reading {size} bytes at {pa:#x})") from None
            raise ReadError(f"{self.source}: cannot read {size} bytes at physical {pa:#x}: {exc}") from None

    def excluded(self, pa: int, size: int) -> str | None:
        """Why [pa, pa+size) is RAM whose contents a vmcore's filter left out; None otherwise."""
        return None if self.dump is None else self.dump.excluded(pa, size)

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram if self._ram is not None else [(0, 1 << 52)]

    @property
    def ram_known(self) -> bool:
        """Whether ranges() states the target's RAM (else reads outside it may give zeros)."""
        return self._ram is not None

    def read_registers(self) -> dict[str, int]:
        """Paging registers: only over QMP without VMCOREINFO (from `info registers`)."""
        return dict(self._registers)

    def close(self) -> None:
        self.prog = None
        if self._on_close is not None:
            self._on_close()
            self._on_close = None


@contextlib.contextmanager
def _kdump_reading() -> Iterator[None]:
    """How drgn opens kdump files: kernel addresses through drgn's own page-table walker, as for
    ELF vmcores (DRGN_PREFER_PGTABLE_READER, read while the dump is opened; libkdumpfile's own
    translation fails on arm64 LPA2), and without its logged advice to reassemble the flattened
    format (it reads that format itself)."""
    log = logging.getLogger("drgn")
    level, before = log.level, os.environ.get(PREFER_PGTABLE)
    log.setLevel(logging.ERROR)
    os.environ[PREFER_PGTABLE] = "1"
    try:
        yield
    finally:
        log.setLevel(level)
        if before is None:
            del os.environ[PREFER_PGTABLE]
        else:
            os.environ[PREFER_PGTABLE] = before


def open_vmcore(path: Path) -> DrgnTarget | ElfCoreTarget:
    """An ELF vmcore (read by ptinspect itself) or a kdump-compressed one, plain or flattened
    (through drgn's libkdumpfile, or ptinspect's own reader where that misreads it)."""
    try:
        dump = identify(path)
    except DumpError as exc:
        raise DrgnTargetError(str(exc)) from None
    if dump.vmcoreinfo is None:
        raise DrgnTargetError(
            f"{path} has no VMCOREINFO, so the kernel in it cannot be identified (QEMU adds it only when the "
            "guest runs with -device vmcoreinfo and the qemu_fw_cfg module; QEMU 7.2's riscv virt machine "
            "cannot): make the dump with `ptinspect vmcore --qmp SOCKET --vmlinux VMLINUX OUT`, which adds it")
    if dump.arch is None:
        raise DrgnTargetError(f"{path}: neither its header nor its VMCOREINFO says which architecture it is")
    try:
        page_size = vmcoreinfo_int(parse(dump.vmcoreinfo), "PAGESIZE")
    except (ValueError, VmcoreinfoError) as exc:
        raise DrgnTargetError(f"{path}: {exc}") from None
    if dump.format in ("elf", "elf-flattened"):
        try:
            return ElfCoreTarget(dump)
        except ReadError as exc:
            raise DrgnTargetError(str(exc)) from None
    if dump.kdump is not None and dump.kdump.block_size != page_size:
        return _own_kdump(dump)
    prog = drgn_program(dump.arch)
    try:
        with _kdump_reading():
            prog.set_core_dump(str(path))
    except Exception as exc:  # drgn raises OSError, ValueError, drgn.Error...
        raise DrgnTargetError(f"drgn cannot open {path}: {exc}") from None
    return DrgnTarget(prog, dump.arch, f"vmcore:{dump.format}", dump.vmcoreinfo, list(dump.ram), dump=dump)


def _own_kdump(dump: DumpFile) -> DrgnTarget:
    """A kdump whose blocks are not the kernel's pages, read by ptinspect's KdumpReader under a
    custom drgn program (libkdumpfile finds no page in such a file)."""
    import drgn

    assert dump.arch is not None and dump.vmcoreinfo is not None
    reader = KdumpReader(dump)
    prog = drgn_program(dump.arch)

    def read_fn(address: int, count: int, offset: int, physical: bool) -> bytes:
        try:
            return reader.read(address, count)
        except ReadError as exc:
            raise drgn.FaultError(str(exc), address) from None

    for start, end in dump.ram:
        prog.add_memory_segment(start, end - start, read_fn, physical=True)
    try:
        prog.set_linux_kernel_custom(dump.vmcoreinfo, False)
    except Exception as exc:
        reader.close()
        raise DrgnTargetError(f"drgn cannot read the kernel in {dump.path}: {exc}") from None
    return DrgnTarget(prog, dump.arch, f"vmcore:{dump.format}", dump.vmcoreinfo, list(dump.ram), on_close=reader.close,
                      dump=dump)


def open_kcore() -> DrgnTarget:
    """The running machine's kernel through /proc/kcore (root only)."""
    if not KCORE.exists():
        raise DrgnTargetError(f"{KCORE} does not exist: this kernel is built without CONFIG_PROC_KCORE")
    try:
        KCORE.open("rb").close()
    except PermissionError:
        raise DrgnTargetError(f"reading {KCORE} needs root (CAP_SYS_RAWIO): run ptinspect as root") from None
    except OSError as exc:
        raise DrgnTargetError(f"cannot open {KCORE}: {exc.strerror or exc}") from None
    prog = drgn_program(None)
    try:
        prog.set_kernel()
    except Exception as exc:
        raise DrgnTargetError(f"drgn cannot open the running kernel through {KCORE}: {exc}") from None
    info = _vmcoreinfo(prog)
    found = arch_where("drgn_arch", prog.platform.arch.name)
    arch = None if found is None else found.name
    if arch is None or info is None:
        raise DrgnTargetError(f"{KCORE} is not an {names_text('or')} Linux kernel with VMCOREINFO")
    return DrgnTarget(prog, arch, "kcore", info)


class QmpTarget(DrgnTarget):
    """A live QEMU over QMP (drgn reads guest RAM from the QEMU process)."""

    def __init__(self, socket: str, *, keep_stopped: bool = False, timeout: float = 10.0) -> None:
        self.socket, self.timeout, self.keep_stopped = socket, timeout, keep_stopped
        self.resume = False
        self.marker = Marker(f"qmp-{os.path.realpath(socket)}")
        self._sock: sock.socket | None = None
        arch, registers = self._prepare()
        prog = drgn_program(arch)
        try:
            # drgn gets a duplicate of our connection, so that close() can end it (and free QEMU's
            # single QMP slot) however long drgn objects live on.
            self._sock = sock.socket(sock.AF_UNIX, sock.SOCK_STREAM)
            self._sock.settimeout(timeout)
            self._sock.connect(socket)
            self._sock.settimeout(None)  # drgn needs a blocking descriptor
            prog.set_qemu_qmp(os.dup(self._sock.fileno()))
            problem = None
        except Exception as exc:
            problem = f"drgn cannot read guest memory over QMP at {socket}: {exc}"
        info = None if problem else _vmcoreinfo(prog)
        error = DrgnTargetError
        if not problem and info is None and not registers:
            problem = (f"QEMU at {socket} holds no VMCOREINFO for this guest (start it with -device vmcoreinfo "
                       f"and load the qemu_fw_cfg module) and its monitor shows no {arch} paging registers: "
                       "use --gdb, or a vmcore made with `ptinspect vmcore`")
            error = NoVmcoreinfo
        if problem:
            del prog
            self.close()
            raise error(problem)
        super().__init__(prog, arch, "qmp", info, registers=None if info else registers)

    def _qmp(self) -> Qmp:
        """A QMP connection; one clear error if the socket is not QEMU's monitor."""
        try:
            mode = os.stat(self.socket).st_mode
        except OSError as exc:
            raise DrgnTargetError(f"QMP socket {self.socket}: {exc.strerror or exc}") from None
        if not stat.S_ISSOCK(mode):
            raise DrgnTargetError(f"{self.socket} is not a socket (give QEMU's -qmp unix:PATH socket)")
        try:
            return Qmp(self.socket, timeout=self.timeout)
        except (QmpError, ValueError) as exc:  # ValueError: the peer does not speak JSON
            raise DrgnTargetError(f"{self.socket} is not a QEMU QMP socket (or QEMU is busy or has another "
                                  f"QMP client): {exc}") from None

    def _prepare(self) -> tuple[str, dict[str, int]]:
        """Architecture and the paging registers `info registers` shows; stop the VM if it runs
        (QMP serves one client, so this happens before drgn connects)."""
        with self._qmp() as qmp:
            try:
                machine = qmp.execute("query-target").get("arch")
                found = arch_where("qemu_arch", machine)
                if found is None:
                    raise DrgnTargetError(f"QEMU at {self.socket} emulates {machine}; ptinspect reads {names_text()}")
                arch = found.name
                left = self.marker.left()
                if qmp.execute("query-status").get("running"):
                    self.marker.write({"resume": True})
                    qmp.execute("stop")
                    self.resume = not self.keep_stopped
                elif left is not None and left.state.get("resume"):  # a killed run stopped it
                    warn(left.describe(self.socket) + ("; --keep-stopped leaves it stopped" if self.keep_stopped
                                                       else "; it runs again when this command ends"))
                    self.resume = not self.keep_stopped
                text = qmp.execute("human-monitor-command", **{"command-line": "info registers"})
            except (QmpError, AttributeError) as exc:
                if self.resume:
                    with contextlib.suppress(QmpError):
                        qmp.execute("cont")
                raise DrgnTargetError(f"QEMU at {self.socket} did not answer as expected: {exc}") from None
        pattern = found.hmp_registers
        if pattern is None or not isinstance(text, str):
            return arch, {}
        return arch, {name.lower(): int(value, 16) for name, value in re.findall(pattern, text)}

    def _resume(self) -> None:
        if not self.resume:
            self.marker.remove()  # nothing to undo, or left stopped as asked
            return
        self.resume = False
        try:
            with self._qmp() as qmp:
                qmp.execute("cont")
        except (DrgnTargetError, QmpError) as exc:
            raise DrgnTargetError(f"could not resume the VM over QMP ({exc}); resume it with QMP `cont`") from None
        self.marker.remove()

    def close(self) -> None:
        """End drgn's QMP connection (QEMU serves one client), then resume the VM if we stopped it."""
        self.prog = None
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.shutdown(sock.SHUT_RDWR)
            self._sock.close()
            self._sock = None
        self._resume()
