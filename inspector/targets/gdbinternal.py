"""The target seen from inside gdb: gdb's own connection to QEMU's gdbstub.

Only importable inside gdb (it needs the `gdb` module).  Physical-memory mode
is switched on for reads (`enter`) and restored on close; gdb's connection and
the VM's run state are left as they were.  One target may serve several
commands while the VM stays stopped (commands/gdb_pt.py): reads smaller than a
table (the kernel's structs) are kept, as tables are in the session's cache.
"""
from __future__ import annotations

import gdb

from ptinspect.archs import arch_where, get_arch, names_text

from .gdbstub import GdbstubError

SMALL = 4096  # reads below a table's size are kept while the VM is stopped ...
SMALL_LIMIT = 1 << 16  # ... this many of them at most (a few MiB)


def _packet(text: str) -> str:
    out = gdb.execute(f"maintenance packet {text}", to_string=True)
    # gdb prints: sending: "..."\nreceived: "..."
    for line in out.splitlines():
        if line.startswith("received:"):
            return line.split(":", 1)[1].strip().strip('"')
    return ""


class GdbInternalTarget:
    """Reads through the inferior gdb is attached to."""

    source = "gdb"

    def __init__(self) -> None:
        if not gdb.selected_inferior().pid and not gdb.selected_inferior().threads():
            raise GdbstubError("gdb is not connected to a target (target remote :1234 first)")
        name = gdb.selected_frame().architecture().name()
        found = arch_where("gdb_arch", name)
        if found is None:
            raise GdbstubError(f"gdb's architecture is {name}, not {names_text('or')}")
        self.arch = found.name
        self._ram: list[tuple[int, int]] | None = None
        self._small: dict[tuple[int, int], bytes] = {}
        self._phys_before = ""
        self.inferior = gdb.selected_inferior()
        self.enter()

    def enter(self) -> None:
        """Switch QEMU's gdbstub to physical memory (again, after `close`)."""
        self._phys_before = _packet("qqemu.PhyMemMode")
        if _packet("Qqemu.PhyMemMode:1") != "OK":
            raise GdbstubError("this target has no physical-memory mode (is it QEMU's gdbstub?)")

    def set_ram(self, ranges: list[tuple[int, int]]) -> None:
        self._ram = ranges

    def ranges(self) -> list[tuple[int, int]]:
        return self._ram if self._ram is not None else [(0, 1 << 52)]

    @property
    def ram_known(self) -> bool:
        """Whether ranges() states the target's RAM (else reads outside it may give zeros)."""
        return self._ram is not None

    def read(self, pa: int, size: int) -> bytes:
        small = size < SMALL
        if small and (data := self._small.get((pa, size))) is not None:
            return data
        try:
            data = bytes(self.inferior.read_memory(pa, size))
        except gdb.MemoryError as exc:
            raise GdbstubError(f"gdb cannot read {size} bytes at {pa:#x}: {exc}") from None
        if small:
            if len(self._small) >= SMALL_LIMIT:
                self._small.clear()
            self._small[pa, size] = data
        return data

    def read_registers(self) -> dict[str, int]:
        frame = gdb.selected_frame()
        out: dict[str, int] = {}
        registers = get_arch(self.arch).gdb_registers
        for name in registers:
            try:
                out[name] = int(frame.read_register(name)) & (1 << 64) - 1
            except ValueError:
                continue
        if registers[0] not in out:
            raise GdbstubError(f"gdb cannot read {registers[0]} (is this QEMU's system gdbstub?)")
        return out

    def close(self) -> None:
        if self._phys_before in ("0", "1") and self._phys_before != "1":
            _packet(f"Qqemu.PhyMemMode:{self._phys_before}")
