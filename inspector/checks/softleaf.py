"""Software-leaf entries: swap entries name a live swap device and a slot in it, PFN-carrying
entries point at frames of the right kind, markers use only this version's bits."""
from __future__ import annotations

from collections.abc import Iterator

from ptinspect.archs.common import Kind
from ptinspect.archs.softleaf import DEVICE_PRIVATE_KINDS, PFN_KINDS, markers_of

from ..reader import contains
from .base import Check, Context, Finding


def _max(ctx: Context, swp_type: int) -> int | None:
    """swap_info[type]->max of a SWP_USED device, None when the type names no device."""
    value = ctx.snap.facts.get(f"swap_info[{swp_type}].max")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _no_swap_facts(ctx: Context) -> str | None:
    if ctx.snap.facts.known("nr_swapfiles"):
        return None
    unread = ctx.snap.facts.facts.get("swap_devices")  # RawKernel: swap_info could not be read
    if unread is not None:
        return f"the swap devices are not known ({unread.source})"
    return "the swap devices are not known (facts nr_swapfiles / swap_info[N].max come with --vmlinux)"


def swap_type(ctx: Context) -> Iterator[Finding]:
    nr = ctx.snap.facts.get("nr_swapfiles")
    for e in ctx.leaves:
        if e.kind is Kind.SWAP and e.hw.softleaf is not None and _max(ctx, e.hw.softleaf.type) is None:
            t = e.hw.softleaf.type
            why = (f"only {nr} swap device slots exist" if isinstance(nr, int) and t >= nr
                   else "no swap device uses that slot")
            yield ctx.finding("swap-type", e, f"swap entry of type {t}: {why}")


def swap_offset(ctx: Context) -> Iterator[Finding]:
    for e in ctx.leaves:
        if e.kind is not Kind.SWAP or e.hw.softleaf is None:
            continue
        size = _max(ctx, e.hw.softleaf.type)
        offset = e.hw.softleaf.offset
        if size is not None and not 0 < offset < size:
            what = "the swap header's slot" if offset == 0 else f"beyond the device's {size} slots"
            yield ctx.finding("swap-offset", e, f"swap offset {offset:#x} of type {e.hw.softleaf.type} is {what}")


def pfn_frames(ctx: Context) -> Iterator[Finding]:
    ram = ctx.snap.ram
    assert ram is not None
    for e in ctx.leaves:
        if e.kind not in PFN_KINDS or e.hw.pfn is None or e.hw.pfn_space == "device-offset":
            continue  # an offset in the device's own space (no device_private_pfn) is no frame
        pa = e.hw.pfn << ctx.snap.mode.page_shift
        inside = contains(ram, pa, 1)
        if e.kind in DEVICE_PRIVATE_KINDS and inside:
            yield ctx.finding("softleaf-pfn", e,
                              f"device-private frame {e.hw.pfn:#x} lies in RAM, not in device memory")
        elif e.kind not in DEVICE_PRIVATE_KINDS and not inside:
            yield ctx.finding("softleaf-pfn", e, f"{e.kind.value} entry for frame {e.hw.pfn:#x}, which is outside RAM")


def device_private_frames(ctx: Context) -> Iterator[Finding]:
    ranges = ctx.snap.device_private
    assert ranges is not None
    shift = ctx.snap.mode.page_shift
    for e in ctx.leaves:
        if e.kind in DEVICE_PRIVATE_KINDS and e.hw.pfn is not None and e.hw.pfn_space == "device":
            first, size = e.hw.pfn << shift, max(e.size, 1 << shift)
            if not any(lo <= first and first + size <= hi for lo, hi in ranges):
                where = ", ".join(f"{lo:#x}-{hi - 1:#x}" for lo, hi in ranges) or "none"
                yield ctx.finding("device-private-range", e, f"device-private frames {e.hw.pfn:#x}.. "
                                  f"({size:#x} bytes) lie outside the kernel's device-private memory ({where})")


def _no_device_ranges(ctx: Context) -> str | None:
    if ctx.snap.device_private is not None:
        return None
    why = (ctx.snap.target.get("device_private") or {}).get("unknown")
    return f"the device-private memory ranges are not recorded{f' ({why})' if why else ''}"


def marker_bits(ctx: Context) -> Iterator[Finding]:
    layout = ctx.snap.facts.layout
    for e in ctx.leaves:
        if e.kind is Kind.MARKER and e.hw.softleaf is not None and layout is not None:
            _, stray = markers_of(e.hw.softleaf.offset, layout)
            if stray:
                yield ctx.finding("marker-bits", e, f"marker bits {stray:#x} are not defined in {layout.name}")


CHECKS = (
    Check("swap-type", "swap entries name a swap device in use (swap_info[type] with SWP_USED)",
          "mm/swapfile.c:133-144,1878-1891 in 7.2 (swap_type_to_info, get_swap_device: Bad_file); "
          "include/linux/swap.h:204 (SWP_USED)", swap_type, skip=_no_swap_facts),
    Check("swap-offset", "swap offsets lie inside their device: 0 < offset < swap_info[type]->max",
          "mm/swapfile.c:1891 in 7.2 (offset >= si->max: Bad_offset), :3546-3551 (the header page, "
          "offset 0, is never allocated); include/linux/swap.h:255 (max)", swap_offset, skip=_no_swap_facts),
    Check("softleaf-pfn", "migration, hwpoison and device-exclusive entries point at RAM frames, "
          "device-private entries at device frames outside RAM",
          "include/linux/leafops.h:358 in 7.2 (softleaf_to_pfn); mm/migrate.c, mm/memory-failure.c (entries "
          "made from a RAM folio's pfn); kernel/resource.c:2118 (request_free_mem_region: device-private "
          "memory is placed outside System RAM)", pfn_frames,
          skip=lambda ctx: None if ctx.snap.ram is not None
          else "RAM ranges not recorded (take the snapshot with --vmlinux)"),
    Check("device-private-range", "device-private entries carry frames inside the kernel's device-private "
          "memory (iomem resources of IORES_DESC_DEVICE_PRIVATE_MEMORY), the whole leaf",
          "kernel/resource.c:2123-2130 in 7.3 (request_free_mem_region: IORES_DESC_DEVICE_PRIVATE_MEMORY); "
          "mm/memremap.c pagemap_range() (that range becomes the dev_pagemap); mm/migrate_device.c "
          "migrate_vma_insert_page() (make_*_device_private_entry(page_to_pfn(page)))", device_private_frames,
          skip=_no_device_ranges),
    Check("marker-bits", "PTE markers carry only the marker bits this kernel version defines",
          "include/linux/swapops.h:283-300 in 7.2 (PTE_MARKER_UFFD_WP/POISONED/GUARD, PTE_MARKER_MASK); "
          "6.12 swapops.h:424-430, 6.1 swapops.h:463", marker_bits,
          skip=lambda ctx: None if ctx.snap.facts.layout else "kernel release unknown"),
)
