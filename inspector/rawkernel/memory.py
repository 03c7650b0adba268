"""Reading the kernel's memory: bytes, integers, pointers, strings and a few members of a structure
at once, at the offsets of a cached KernelLayout, every failure a KernelError naming what was read."""
from __future__ import annotations

from collections.abc import Callable

from ..kernel import KernelError
from ..layout import KernelLayout
from ..reader import ReadError

ReadVa = Callable[[int, int], bytes]  # (kernel virtual address, size) -> bytes; ReadError when it cannot

SOURCE = "debuginfo (cached layout)"

MAX_STRING = 4096  # a bound no kernel string reaches


class _Fields:
    """A few members of one structure, read together as one span."""

    def __init__(self, what: str, spots: dict[str, tuple[int, int]], whole: int | None = None) -> None:
        """`whole`: read the whole structure of that size, not just the members' span."""
        self.what = what
        self.lo = 0 if whole else min(off for off, _ in spots.values())
        self.size = whole or max(off + size for off, size in spots.values()) - self.lo
        self.at = {name: (off - self.lo, size) for name, (off, size) in spots.items()}

    def read(self, kernel: KernelMemory, address: int) -> dict[str, int]:
        return self.read_span(kernel, address)[0]

    def read_span(self, kernel: KernelMemory, address: int) -> tuple[dict[str, int], bytes]:
        """The members as integers, and the span's bytes."""
        blob = kernel.read(address + self.lo, self.size, f"{self.what} at {address:#x}")
        return {name: int.from_bytes(blob[off:off + size], "little") for name, (off, size) in self.at.items()}, blob

    def raw(self, blob: bytes, name: str) -> bytes:
        off, size = self.at[name]
        return blob[off:off + size]


class KernelMemory:
    """One stopped kernel's memory and layout, the base of every RawKernel part."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        if layout.arch != arch:
            raise KernelError(f"the layout is of an {layout.arch} kernel, the target is {arch}")
        self.layout = layout
        self.read_va = read_va
        self.kaslr_offset = kaslr_offset
        self.arch = arch
        self._strings: dict[int, bytes] = {}

    def read(self, va: int, size: int, what: str) -> bytes:
        """`size` bytes at kernel address `va`; KernelError naming `what` when they cannot be read."""
        try:
            data = self.read_va(va, size)
        except ReadError as exc:  # the reader's contract: unmapped or unreadable memory
            raise KernelError(f"cannot read {what} ({size} bytes at {va:#x}): {exc}") from exc
        if len(data) != size:
            raise KernelError(f"reading {what} at {va:#x} gave {len(data)} of {size} bytes")
        return data

    def _int(self, va: int, size: int, what: str) -> int:
        return int.from_bytes(self.read(va, size, what), "little")

    def _ptr(self, va: int, what: str) -> int:
        return self._int(va, 8, what)

    def _string(self, va: int, what: str, limit: int = MAX_STRING) -> bytes:
        """A NUL-terminated string, read up to page boundaries so that no read passes its end."""
        if va in self._strings:
            return self._strings[va]
        out = b""
        while len(out) < limit:
            cur = va + len(out)
            chunk = self.read(cur, min(limit - len(out), 4096 - (cur & 0xFFF)), what)
            nul = chunk.find(b"\0")
            if nul >= 0:
                self._strings[va] = out + chunk[:nul]
                return self._strings[va]
            out += chunk
        raise KernelError(f"{what} at {va:#x} has no NUL in {limit} bytes")

    def symbol(self, name: str) -> int:
        """The run-time address of a symbol (its link-time address plus the KASLR offset)."""
        try:
            return self.layout.symbols[name] + self.kaslr_offset
        except KeyError:
            raise KernelError(f"the vmlinux has no symbol {name}") from None

    def _member(self, name: str) -> int:
        return self.layout.members[name][0]
