"""Kernel mappings (the upper VA half): never writable and executable, never reachable from user mode."""
from __future__ import annotations

from collections.abc import Iterator

from ptinspect.archs.common import Kind

from ..entry import Entry
from .base import Check, Context, Finding


def _kernel_leaves(ctx: Context) -> Iterator[Entry]:
    """Present leaves of the upper half that the decoder gave permissions."""
    for e in ctx.leaves:
        if e.kind is Kind.PRESENT and e.view.access is not None and ctx.kernel_half(e.va):
            yield e


def wx(ctx: Context) -> Iterator[Finding]:
    for e in _kernel_leaves(ctx):
        access = e.view.access
        assert access is not None
        access = ctx.rules.wx_access(access, ctx.path_tables(e))  # x86: the kernel's check uses effective rights
        if access.write and access.exec:
            yield ctx.finding("kernel-wx", e, "kernel mapping is writable and executable")


def user(ctx: Context) -> Iterator[Finding]:
    allowed = ctx.rules.user_kernel_pages  # x86's vsyscall page
    for e in _kernel_leaves(ctx):
        access = e.view.access
        assert access is not None
        if access.user and not (e.va in allowed and not access.write and not access.exec):
            yield ctx.finding("kernel-user", e, "kernel mapping is accessible from user mode")
        elif (reason := ctx.rules.user_exec_reason(e.hw.raw)) is not None:
            yield ctx.finding("kernel-user", e, reason)


def _no_kernel_half(ctx: Context) -> str | None:
    rng = ctx.snap.va_range
    return "the kernel half was not walked" if rng is not None and rng[1] <= 1 << 63 else None


CHECKS = (
    Check("kernel-wx", "kernel mappings are never writable and executable at once (x86: under the table "
          "entries' R/W and XD, as the kernel's check; arm64, riscv64: leaf permissions, as theirs)",
          "mm/ptdump.c:200-214 and arch/x86/mm/dump_pagetables.c:227-267,338 in 7.2 (CONFIG_DEBUG_WX "
          "note_wx, effective_prot); arch/arm64/mm/ptdump.c:176-189, arch/riscv/mm/ptdump.c:264-277 "
          "(note_prot_wx)", wx,
          skip=_no_kernel_half),
    Check("kernel-user", "kernel mappings are not accessible from user mode (x86/riscv U bit; arm64 PTE_USER, "
          "or PTE_UXN clear)",
          "arch/arm64/mm/ptdump.c:162-174 in 7.2 (note_prot_uxn); arch/x86/include/asm/pgtable_types.h:"
          "223-230 (__PAGE_KERNEL* have no _PAGE_USER; __PAGE_KERNEL_VVAR only for the vsyscall page); "
          "arch/riscv/include/asm/pgtable.h:183-194 (PAGE_KERNEL* have no _PAGE_USER)", user,
          skip=_no_kernel_half),
)
