"""User entries against the process's VMAs: inside one, and no more permissive than it."""
from __future__ import annotations

from collections.abc import Iterator

from ptinspect.archs.common import Kind

from ..kernel import VM_EXEC, VM_READ, VM_WRITE
from .base import Check, Context, Finding


def _no_vmas(ctx: Context) -> str | None:
    if not ctx.snap.process:
        return "not a process's tables"
    return None if ctx.snap.vmas is not None else "the VMA list is not recorded (take the snapshot with --vmlinux)"


def cover(ctx: Context) -> Iterator[Finding]:
    assert ctx.vma_index is not None
    for e in ctx.leaves:
        if e.kind is Kind.UNKNOWN or ctx.kernel_half(e.va):
            continue
        vma = ctx.vma_index.find(e.va)
        if vma is None:
            yield ctx.finding("vma-cover", e, f"{e.kind.value} entry outside every VMA")
        elif e.va + e.size > vma.end:
            yield ctx.finding("vma-cover", e, f"{e.kind.value} entry ends at {e.va + e.size:#x}, beyond its VMA "
                                              f"{vma.start:#x}-{vma.end:#x} {vma.perms} {vma.name}")


def perms(ctx: Context) -> Iterator[Finding]:
    assert ctx.vma_index is not None
    for e in ctx.leaves:
        access = e.view.access
        if e.kind is not Kind.PRESENT or access is None or ctx.kernel_half(e.va):
            continue
        vma = ctx.vma_index.find(e.va)
        if vma is None:
            continue  # vma-cover reports it
        extra = [what for what, on, flag in (("writable", access.write, VM_WRITE), ("executable", access.exec, VM_EXEC),
                                             ("readable", access.read, VM_READ | VM_WRITE | VM_EXEC))
                 if on and not vma.flags & flag]
        if extra:
            yield ctx.finding("vma-perms", e, f"{' and '.join(extra)} in a {vma.perms} VMA "
                                              f"({vma.start:#x}-{vma.end:#x} {vma.name})")


CHECKS = (
    Check("vma-cover", "a process's entries (present and software leaves) lie inside one of its VMAs",
          "arch/x86/mm/fault.c:1366 in 7.2 (faults outside a VMA install nothing: lock_mm_and_find_vma); "
          "mm/vma.c, mm/memory.c unmap_page_range (munmap and VMA splits zap what they drop)", cover, skip=_no_vmas),
    Check("vma-perms", "a process's present entries are no more permissive than their VMA (write needs VM_WRITE, "
          "execute VM_EXEC)",
          "include/linux/pgtable.h:2492-2497 in 7.2 (vm_get_page_prot: protection_map[r|w|x|shared]); "
          "include/linux/mm.h:1997-2002 (maybe_mkwrite: writable only with VM_WRITE)", perms, skip=_no_vmas),
)
