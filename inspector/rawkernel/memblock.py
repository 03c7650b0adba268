"""RAM as the kernel's memblock.memory lists it."""
from __future__ import annotations

from ..kernel import KernelError
from .memory import KernelMemory, _Fields

MAX_MEMBLOCK_REGIONS = 1 << 20  # a bound no kernel reaches


class Memblock(KernelMemory):
    """memblock.memory (mm/memblock.c)."""

    def ram_ranges(self) -> list[tuple[int, int]]:
        """Physical memory from memblock.memory (the kernel's own map of RAM)."""
        m = self.layout.members
        memory = self.symbol("memblock") + m["memblock.memory"][0]
        t = _Fields("memblock.memory", {k: m[f"memblock_type.{k}"] for k in ("cnt", "max", "regions")}
                    ).read(self, memory)
        cnt, regions = t["cnt"], t["regions"]
        if cnt > t["max"] or cnt > MAX_MEMBLOCK_REGIONS:
            raise KernelError(f"memblock.memory has cnt {cnt} but room for {t['max']}")
        size = self.layout.sizes["memblock_region"]
        data = self.read(regions, cnt * size, "memblock.memory.regions[]")
        (boff, bsize), (soff, ssize) = m["memblock_region.base"], m["memblock_region.size"]
        out = []
        for i in range(cnt):
            base = int.from_bytes(data[i * size + boff:i * size + boff + bsize], "little")
            length = int.from_bytes(data[i * size + soff:i * size + soff + ssize], "little")
            out.append((base, base + length))
        return out
