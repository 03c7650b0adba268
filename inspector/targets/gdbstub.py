"""A live QEMU target over its gdbstub: physical reads and the paging registers.

Connecting to QEMU's gdbstub stops the VM; `close()` detaches (the VM runs
again) unless the user asked to keep it stopped.  Physical-memory mode
(Qqemu.PhyMemMode) is switched on for reads and restored to what it was.
`watch` alone adds write watchpoints and resumes the VM between reads; every
watchpoint is recorded in the run's marker and removed by close() (or by the
next run, after a SIGKILL).
"""
from __future__ import annotations

from collections import OrderedDict

from ptinspect.archs import all_arches, get_arch, names_text

from ..reader import RefusedRead
from ..runstate import Marker, warn
from .rsp import RspClient, RspError, RspRefused, StopReply

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
# QEMU's single-step flags (gdbstub.c SSTEP_NOIRQ 0x2, SSTEP_NOTIMER 0x4): no interrupt, no timer during a step
SSTEP_QUIET = 0x2 | 0x4
CACHED_PAGES = 8192  # 32 MiB: drgn's repeated small reads of kernel data, not every table of a walk


def _runs(pages: list[int]) -> list[tuple[int, int]]:
    """Consecutive runs (start, length) of sorted page numbers."""
    runs: list[tuple[int, int]] = []
    for p in pages:
        if runs and runs[-1][0] + runs[-1][1] == p:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((p, 1))
    return runs


class GdbstubError(Exception):
    """The gdbstub target cannot do what was asked."""


class GdbstubReadError(GdbstubError, RefusedRead):
    """The stub refused to read some physical memory (an error reply): the walk names the table."""


def parse_address(text: str) -> tuple[str, int]:
    """HOST:PORT (or just PORT, meaning localhost)."""
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port)
    except ValueError:
        raise GdbstubError(f"{text!r} is not HOST:PORT") from None
    if not 0 < number < 65536:
        raise GdbstubError(f"port {number} is out of range")
    return host or "127.0.0.1", number


class GdbstubTarget:
    """A stopped QEMU VM reached through its gdbstub."""

    source = "gdbstub"

    def __init__(self, address: str, *, keep_stopped: bool = False, timeout: float = 10.0) -> None:
        host, port = parse_address(address)
        self.address = f"{host}:{port}"
        try:
            self.rsp = RspClient(host, port, timeout)
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        self.keep_stopped = keep_stopped
        self.marker = Marker(f"gdbstub-{self.address}")
        self._phys_before: bytes | None = None
        self._sstep_checked = False
        self._sstep_before: bytes | None = None  # qqemu.sstep before step() changed it
        self._ram: list[tuple[int, int]] | None = None
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self.watchpoints: list[tuple[int, int]] = []  # (guest VA, length) inserted by this run
        self.running = False  # resumed by watch, not yet stopped again
        try:
            self.rsp.stop_reason()  # QEMU stopped the VM when we connected
            self.regs = self.rsp.registers()
            self.arch = self._detect_arch()
            before = self.rsp.query("qqemu.PhyMemMode")
            left = self.marker.left()
            if left is not None:  # a killed run: its mode is still on, and the VM stopped
                warn(left.describe(self.address) + ("; --keep-stopped leaves it stopped" if keep_stopped
                                                    else "; it runs again when this command ends"))
                before = str(left.state.get("phys_before", "")).encode() or before
            self._phys_before = before if before in (b"0", b"1") else None
            if left is not None:
                self._remove_left(left.state.get("watchpoints"))
                sstep = str(left.state.get("sstep_before", ""))
                if sstep.startswith("0x"):  # a killed watch changed the stepping flags: restore them
                    self.rsp.request(f"Qqemu.sstep={sstep}")
            self._mark()
            if self.rsp.request("Qqemu.PhyMemMode:1") != b"OK":
                raise GdbstubError(f"the gdbstub at {self.address} has no physical-memory mode (is it QEMU?)")
        except (RspError, GdbstubError) as exc:
            self.close()
            raise GdbstubError(str(exc)) from None

    def _mark(self) -> None:
        self.marker.write({"phys_before": (self._phys_before or b"").decode(), "resume": not self.keep_stopped,
                           "sstep_before": (self._sstep_before or b"").decode(),
                           "watchpoints": [[a, n] for a, n in self.watchpoints]})

    def _remove_left(self, left: object) -> None:
        """Remove the watchpoints a killed `watch` left in QEMU (its marker lists them)."""
        if not isinstance(left, list):
            return
        for item in left:
            if isinstance(item, list) and len(item) == 2 and all(isinstance(v, int) for v in item):
                if self.rsp.remove_watchpoint(item[0], item[1]):
                    warn(f"removed a write watchpoint at {item[0]:#x} ({item[1]} bytes) the interrupted run left")

    def _detect_arch(self) -> str:
        for arch in all_arches():
            if arch.gdb_registers[0] in self.regs:
                return arch.name
        raise GdbstubError(f"the gdbstub at {self.address} describes no {names_text('or')} paging registers")

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        """The guest's RAM ranges (QEMU reads beyond RAM return zeros, so bound them)."""
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram if self._ram is not None else [(0, 1 << 52)]

    @property
    def ram_known(self) -> bool:
        """Whether ranges() is the kernel's map of RAM: QEMU's stub cannot say, and reads zeros
        where no memory is (physical-memory mode never fails a read)."""
        return self._ram is not None

    def read(self, pa: int, size: int) -> bytes:
        """Physical memory through a page cache: memory cannot change while the VM is
        stopped, and drgn reads the same kernel pages in small pieces many times."""
        return self.read_many([(pa, size)])[0]

    def read_many(self, requests: list[tuple[int, int]]) -> list[bytes]:
        """Several reads at once: the pages not cached are fetched in one pipelined batch."""
        pages = self._pages
        wanted = [range(pa >> PAGE_SHIFT, ((pa + size - 1) >> PAGE_SHIFT) + 1) for pa, size in requests]
        missing = sorted({p for span in wanted for p in span if p not in pages})
        if missing:
            runs = _runs(missing)
            try:
                datas = self.rsp.read_many([(start << PAGE_SHIFT, length << PAGE_SHIFT) for start, length in runs])
            except RspRefused as exc:
                raise GdbstubReadError(str(exc)) from None
            except RspError as exc:
                raise GdbstubError(str(exc)) from None
            for (start, length), data in zip(runs, datas):
                for i in range(length):
                    pages[start + i] = data[i << PAGE_SHIFT : (i + 1) << PAGE_SHIFT]
        out = []
        for (pa, size), span in zip(requests, wanted):
            for p in span:
                pages.move_to_end(p)
            off = pa & (PAGE_SIZE - 1)
            data = pages[span[0]] if len(span) == 1 else b"".join(pages[p] for p in span)
            out.append(data[off : off + size])
        while len(pages) > max(CACHED_PAGES, len(missing)):
            pages.popitem(last=False)
        return out

    def read_registers(self, names: tuple[str, ...] | None = None) -> dict[str, int]:
        """The paging registers of the stopped CPU (those the stub describes)."""
        wanted = names or get_arch(self.arch).gdb_registers
        out: dict[str, int] = {}
        for name in wanted:
            reg = self.regs.get(name)
            if reg is not None:
                try:
                    out[name] = self.rsp.read_register(reg)
                except RspError as exc:
                    raise GdbstubError(str(exc)) from None
        return out

    # -- watch: the only requests that change QEMU's debug state ------------------------------
    def forget(self) -> None:
        """Drop the page cache: the VM ran, so memory may have changed."""
        self._pages.clear()

    def insert_watchpoint(self, va: int, length: int) -> None:
        """A write watchpoint on guest virtual [va, va + length), recorded in the marker first
        (a SIGKILL between the two leaves a name to remove, never an unnamed watchpoint)."""
        self.watchpoints.append((va, length))
        self._mark()
        try:
            self.rsp.insert_watchpoint(va, length)
        except RspError as exc:
            self.watchpoints.remove((va, length))
            self._mark()
            raise GdbstubError(str(exc)) from None

    def remove_watchpoint(self, va: int, length: int) -> None:
        try:
            self.rsp.remove_watchpoint(va, length)
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        self.watchpoints.remove((va, length))
        self._mark()

    def resume(self) -> None:
        try:
            self.rsp.resume()
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        self.running = True
        self.forget()

    def wait_stop(self, timeout: float) -> StopReply | None:
        """The stop reply within `timeout` seconds, or None (still running)."""
        try:
            reply = self.rsp.wait_stop(timeout)
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        if reply is not None:
            self.running = False
        return reply

    def stop(self) -> StopReply:
        """Stop the running VM."""
        try:
            reply = self.rsp.stop()
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        self.running = False
        return reply

    def step(self, thread: str) -> StopReply:
        """One instruction on vCPU `thread`, with interrupts and timers held off (QEMU's
        qqemu.sstep NOIRQ|NOTIMER, its default under TCG; set for the step if a client cleared
        them, and restored by close()): a step must not wander into an interrupt handler."""
        try:
            if not self._sstep_checked:
                self._sstep_checked = True
                current = self.rsp.request("qqemu.sstep")
                flags = int(current, 16) if current.startswith(b"0x") else None
                if flags is not None and flags & SSTEP_QUIET != SSTEP_QUIET:
                    self._sstep_before = current
                    self._mark()
                    if self.rsp.request(f"Qqemu.sstep={flags | SSTEP_QUIET:#x}") != b"OK":
                        raise GdbstubError(f"the gdbstub at {self.address} refused quiet single-stepping")
            reply = self.rsp.step(thread)
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        self.forget()
        return reply

    def cpu_registers(self, thread: str, names: tuple[str, ...]) -> dict[str, int]:
        """Registers of one vCPU (thread), those of `names` the stub describes."""
        try:
            self.rsp.select_thread(thread)
        except RspError as exc:
            raise GdbstubError(str(exc)) from None
        return self.read_registers(names)

    def close(self) -> None:
        """Stop a VM `watch` left running, remove its watchpoints, restore physical-memory mode
        and detach (or leave the VM stopped)."""
        rsp = getattr(self, "rsp", None)
        if rsp is None:
            return
        try:
            if self.running:
                self.stop()
            for va, length in list(self.watchpoints):
                self.remove_watchpoint(va, length)
            if self._sstep_before is not None:
                rsp.request(b"Qqemu.sstep=" + self._sstep_before)
            if self._phys_before is not None and self._phys_before != b"1":
                rsp.request(b"Qqemu.PhyMemMode:" + self._phys_before)
            if self.keep_stopped:
                rsp.close()
            else:
                rsp.detach()
            self.marker.remove()  # undone (or left stopped as asked)
        except (RspError, GdbstubError) as exc:
            rsp.close()
            warn(str(exc))
        self.rsp = None  # type: ignore[assignment]  # closed: a later read fails loudly instead of reusing it

    def __enter__(self) -> GdbstubTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
