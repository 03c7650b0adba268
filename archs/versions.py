"""Which transcribed layout family a kernel release decodes with, per architecture.

Only three families were transcribed from headers (6.1, 6.12, 7.2).  A release
in between decodes with a family only when every layout that matters (the
generic swap-type carving and that architecture's bits) is the family's; any
other release is left unknown rather than guessed.  The boundaries are mainline
releases with the commits that moved each layout: archs/VERSIONS.md.
"""
from __future__ import annotations

import re

Version = tuple[int, int]

# Generic type space (include/linux/swap.h, swapops.h): 6.1 layout needs the
# migration A/D bits (6.1, 2e3468778dbe) and predates 6.2's always-on markers
# (ca92ea3dc5a2); 6.6 renamed the BIT(1) marker POISONED (af19487f00f3) and
# 6.13 added GUARD (7c53dfbdb024); 6.15 merged device-exclusive types (c25465eb7630).
GENERIC: dict[str, tuple[Version, Version]] = {
    "6.1": ((6, 1), (6, 1)),
    "6.12": ((6, 6), (6, 12)),
    "7.2": ((6, 15), (7, 2)),
}

# Per-architecture bit layouts.
ARCH_RANGES: dict[str, dict[str, tuple[Version, Version]]] = {
    # x86: _PAGE_SAVED_DIRTY / DEVMAP 58->57 in 6.6 (fca4d413c5f7), DEVMAP gone in 6.17 (d438d2734170).
    "x86_64": {"6.1": ((6, 1), (6, 5)), "6.12": ((6, 6), (6, 16)), "7.2": ((6, 17), (7, 2))},
    # arm64: swap layout / PRESENT_INVALID / uffd-wp in 6.10 (55564814a838, 5b32510af77b),
    # POE in 6.12 (b66db4f3ccde), PTE_DEVMAP gone in 6.17.
    "arm64": {"6.1": ((6, 1), (6, 9)), "6.12": ((6, 12), (6, 16)), "7.2": ((6, 17), (7, 2))},
    # riscv: swap layout + SWP_EXCLUSIVE in 6.3 (51a1007d4113), _PAGE_DEVMAP 6.11-6.16
    # (216e04bf1e4d, d438d2734170), Svrsw60t59b soft-dirty/uffd-wp in 6.19 (59f6acb4be02).
    "riscv64": {"6.1": ((6, 1), (6, 2)), "6.12": ((6, 11), (6, 16)), "7.2": ((6, 19), (7, 2))},
}


def parse_version(release: str) -> Version | None:
    m = re.match(r"(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def family_for(release: str, arch: str | None = None) -> str | None:
    """The layout family of `release` on `arch` (generic layout only when arch is None)."""
    version = parse_version(release)
    if version is None:
        return None
    for family, (low, high) in GENERIC.items():
        if not low <= version <= high:
            continue
        if arch is None:
            return family
        arch_low, arch_high = ARCH_RANGES[arch][family]
        return family if arch_low <= version <= arch_high else None
    return None
