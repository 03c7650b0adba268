"""Compare ptinspect's dump of the workload with what the guest kernel said in its pagemap.

The kernel's own view (fs/proc/task_mmu.c pte_to_pagemap_entry, 7.2:2021):
present -> PM_PRESENT with pte_pfn; any other non-none entry -> PM_SWAP with
frame = swp_type | (pfn-or-offset << MAX_SWAPFILES_SHIFT); uffd-wp markers
and the uffd bit of any release (pte_swp_uffd_wp / pte_uffd_wp, 7.3 pte_uffd; the records'
"soft" names) -> PM_UFFD_WP; guard markers -> PM_GUARD_REGION.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass

from ptinspect.inspector.vm.manifest import MAPPED_STATUSES, PM_PFRAME_MASK, Manifest, PagemapEntry

PFN_KINDS = {"migration-read", "migration-read-exclusive", "migration-write", "device-private-read",
             "device-private-write", "device-exclusive", "hwpoison"}


@dataclass(frozen=True)
class Mismatch:
    region: str
    va: int
    what: str

    def __str__(self) -> str:
        return f"{self.region} {self.va:#x}: {self.what}"


class Dump:
    """The leaf and softleaf entries of a `dump --format json` or snapshot document, indexed by VA."""

    def __init__(self, doc: dict) -> None:
        self.entries = sorted((e for e in doc["entries"] if e["kind"] != "table"), key=lambda e: int(e["va"], 16))
        self.starts = [int(e["va"], 16) for e in self.entries]

    def at(self, va: int) -> dict | None:
        i = bisect.bisect_right(self.starts, va) - 1
        if i >= 0 and va < self.starts[i] + self.entries[i]["size"]:
            return self.entries[i]
        return None


def check_page(dump: Dump, va: int, pm: PagemapEntry, page_size: int) -> str | None:
    """What ptinspect's entry at VA gets wrong against the kernel's pagemap value PM, or None."""
    e = dump.at(va)
    if e is not None and e["kind"] == "unknown":
        return f"ptinspect says unknown: {e.get('reason')}"
    if pm.present:
        if e is None or e["kind"] != "present":
            return f"pagemap present pfn {pm.pfn:#x}, ptinspect {e and e['kind']}"
        frame = int(e["pfn"], 16) + (va - int(e["va"], 16)) // page_size
        if frame != pm.pfn:
            return f"pfn: pagemap {pm.pfn:#x}, ptinspect {frame:#x}"
        if pm.uffd_wp != ("uffd" in e.get("soft", ())):
            return f"uffd-wp: pagemap {pm.uffd_wp}, ptinspect flags {e['flags']}"
    elif pm.swapped:
        if e is None or "softleaf" not in e:
            return f"pagemap swap type {pm.swap_type} offset {pm.swap_offset:#x}, ptinspect {e and e['kind']}"
        leaf = e["softleaf"]
        offset = int(e["pfn"], 16) if e["kind"] in PFN_KINDS else int(leaf["offset"], 16)
        if leaf["type"] != pm.swap_type or (offset << 5 | leaf["type"]) & PM_PFRAME_MASK != pm.frame:
            return (f"softleaf: pagemap type {pm.swap_type} offset {pm.swap_offset:#x}, "
                    f"ptinspect type {leaf['type']} offset {offset:#x} ({e['kind']})")
        markers = set(e.get("markers", ()))
        uffd = "uffd-wp" in markers or "uffd" in e.get("soft", ())
        if pm.uffd_wp != uffd:
            return f"uffd-wp: pagemap {pm.uffd_wp}, ptinspect markers {markers} flags {leaf['flags']}"
        if pm.guard != ("guard" in markers):
            return f"guard: pagemap {pm.guard}, ptinspect markers {markers}"
    elif e is not None:
        return f"pagemap none, ptinspect {e['kind']} raw {e['raw']}"
    return None


def compare(manifest: Manifest, doc: dict, pid: int) -> tuple[list[Mismatch], int]:
    """Every page of every mapped region of `pid`: mismatches, and pages compared."""
    dump = Dump(doc)
    out: list[Mismatch] = []
    compared = 0
    for region in manifest.regions:
        if region.pid != pid or region.status not in MAPPED_STATUSES:
            continue
        for page in region.pages:
            compared += 1
            if (what := check_page(dump, page.va, page.pagemap, manifest.page_size)) is not None:
                out.append(Mismatch(region.name, page.va, what))
    return out, compared
