"""Where device-private memory lies, read from the kernel: the iomem resources handed out for it.

A driver with device-private memory asks for a free physical range outside System RAM with
request_free_mem_region() or devm_request_free_mem_region() (kernel/resource.c, 7.3: both call
get_free_mem_region() with IORES_DESC_DEVICE_PRIVATE_MEMORY) and hands that range to
memremap_pages() as its dev_pagemap (mm/memremap.c pagemap_range(): a MEMORY_DEVICE_PRIVATE range
must not intersect System RAM). The frames of its device pages, the numbers device-private entries
carry while the device_private_pfn feature holds, lie inside such a resource. The resources are
the tree under `iomem_resource` (what /proc/iomem prints), walked here from memory.
"""
from __future__ import annotations

from .kernel import KernelError
from .rawkernel import RawKernel

DESC = "IORES_DESC_DEVICE_PRIVATE_MEMORY"  # include/linux/ioport.h, an anonymous enum
FIELDS = ("start", "end", "desc", "sibling", "child")  # include/linux/ioport.h struct resource
MAX_RESOURCES = 1 << 16  # far above any machine's /proc/iomem; more means the tree is not what the kernel built
SOURCE = f"iomem_resource ({DESC})"


def device_private_ranges(kernel: RawKernel) -> list[tuple[int, int]]:
    """[start, end) of every iomem resource marked as device-private memory, sorted.

    KernelError when the vmlinux lacks what the walk needs or the tree cannot be what the kernel
    built (a cycle, a bound exceeded, an unreadable node)."""
    layout = kernel.layout
    missing = [f"resource.{f}" for f in FIELDS if f"resource.{f}" not in layout.members]
    missing += [name for name in ("iomem_resource",) if name not in layout.symbols]
    missing += [DESC] if DESC not in layout.constants else []
    if missing:
        raise KernelError(f"the vmlinux's debug info lacks {', '.join(missing)}")
    spots = {f: layout.members[f"resource.{f}"] for f in FIELDS}
    size = layout.sizes["resource"]
    want = layout.constants[DESC]

    def node(address: int) -> dict[str, int]:
        blob = kernel.read(address, size, f"struct resource at {address:#x} (iomem_resource tree)")
        return {f: int.from_bytes(blob[off:off + width], "little") for f, (off, width) in spots.items()}

    out: list[tuple[int, int]] = []
    seen: set[int] = set()
    pending = [node(kernel.symbol("iomem_resource"))["child"]]
    while pending:
        address = pending.pop()
        if not address:
            continue
        if address in seen:
            raise KernelError(f"the iomem_resource tree reaches struct resource {address:#x} twice")
        seen.add(address)
        if len(seen) > MAX_RESOURCES:
            raise KernelError(f"the iomem_resource tree has over {MAX_RESOURCES} resources")
        res = node(address)
        if res["desc"] == want:
            if res["end"] < res["start"]:
                raise KernelError(f"device-private resource {address:#x} ends ({res['end']:#x}) before it "
                                  f"starts ({res['start']:#x})")
            out.append((res["start"], res["end"] + 1))  # resource.end is inclusive
        pending += [res["sibling"], res["child"]]
    return sorted(out)
