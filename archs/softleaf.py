"""The generic software-leaf (swap-entry) type space, per kernel family and config.

A non-present entry carries a 5-bit type and a 58-bit offset once the arch's
__swp_type/__swp_offset have been applied.  Which type numbers mean what is
carved from the top of the type space by #defines that depend on the kernel
version and on CONFIG_MIGRATION, CONFIG_DEVICE_PRIVATE, CONFIG_MEMORY_FAILURE
(and 6.1's CONFIG_PTE_MARKER): include/linux/swap.h, lines
6.1:59-125, 6.12:63-117, 7.2:60-113.  None of these is in the debug info, so a
missing config fact makes the affected types "unknown", never a guess.
"""
from __future__ import annotations

from dataclasses import dataclass

from .common import SOFTLEAF_KINDS, Decoded, Kind, KernelFacts, Softleaf
from .versions import family_for

SWP_TYPE_SHIFT = 58  # BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT (swapops.h:27)
SWP_OFFSET_MASK = (1 << SWP_TYPE_SHIFT) - 1
MAX_SWAPFILES_SHIFT = 5  # swap.h:50/50/47

FAMILIES = ("6.1", "6.12", "7.2")

# PTE marker bits (include/linux/swapops.h 6.1:463, 6.12:424-430; 7.2 leafops/swapops.h:283-299).
PTE_MARKERS = {
    "6.1": {0: "uffd-wp"},
    "6.12": {0: "uffd-wp", 1: "poison"},
    "7.2": {0: "uffd-wp", 1: "poison", 2: "guard"},
}
PTE_MARKER_MASK = {"6.1": 0x1, "6.12": 0x3, "7.2": 0x7}

# The config options each family's type carving depends on.
CONFIG_OPTIONS = {
    "6.1": ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE", "CONFIG_PTE_MARKER"),
    "6.12": ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE"),
    "7.2": ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE"),
}

# The kinds whose offset carries a PFN (softleaf_has_pfn, leafops.h:335 in 7.2); 6.1's
# SWP_SWAPIN_ERROR stores one too but is not in is_pfn_swap_entry().
PFN_KINDS = SOFTLEAF_KINDS - {Kind.SWAP, Kind.MARKER, Kind.SWAPIN_ERROR}
MIGRATION_KINDS = frozenset({Kind.MIGRATION_READ, Kind.MIGRATION_READ_EXCLUSIVE, Kind.MIGRATION_WRITE})
# Device-private frames are device memory; device-exclusive entries point at system RAM.
DEVICE_PRIVATE_KINDS = frozenset({Kind.DEVICE_PRIVATE_READ, Kind.DEVICE_PRIVATE_WRITE})


@dataclass(frozen=True)
class TypeSlot:
    """One special type number: its kind and, for 6.1/6.12 device-exclusive, the access."""

    kind: Kind
    access: str | None = None  # "read" / "write" for SWP_DEVICE_EXCLUSIVE_{READ,WRITE}
    name: str = ""  # kernel define, e.g. "SWP_MIGRATION_WRITE"


def type_space(family: str, config: dict[str, bool]) -> tuple[int, dict[int, TypeSlot]]:
    """MAX_SWAPFILES and the special types for a family and a complete config.

    Transcribes the #define chain of include/linux/swap.h; the numbers are
    checked in tests against encode-vectors.txt (compiled from those headers).
    """
    mf = config["CONFIG_MEMORY_FAILURE"]
    mig = config["CONFIG_MIGRATION"]
    dp = config["CONFIG_DEVICE_PRIVATE"]
    if family == "6.1":
        marker_num = 1 if config["CONFIG_PTE_MARKER"] else 0
        device_num = 4 if dp else 0
        swapin_error_num = 1
    elif family in ("6.12", "7.2"):
        marker_num = 1  # SWP_PTE_MARKER_NUM is 1 unconditionally since CONFIG_PTE_MARKER went away
        device_num = (3 if family == "7.2" else 4) if dp else 0
        swapin_error_num = 0
    else:
        raise ValueError(f"unknown layout family {family!r}")
    hwpoison_num = 1 if mf else 0
    migration_num = 3 if mig else 0
    max_swapfiles = 32 - device_num - migration_num - hwpoison_num - marker_num - swapin_error_num

    slots: dict[int, TypeSlot] = {}
    base = max_swapfiles
    if mf:
        slots[base] = TypeSlot(Kind.HWPOISON, name="SWP_HWPOISON")
    base += hwpoison_num
    if mig:
        slots[base] = TypeSlot(Kind.MIGRATION_READ, name="SWP_MIGRATION_READ")
        slots[base + 1] = TypeSlot(Kind.MIGRATION_READ_EXCLUSIVE, name="SWP_MIGRATION_READ_EXCLUSIVE")
        slots[base + 2] = TypeSlot(Kind.MIGRATION_WRITE, name="SWP_MIGRATION_WRITE")
    base += migration_num
    if dp:
        slots[base] = TypeSlot(Kind.DEVICE_PRIVATE_WRITE, name="SWP_DEVICE_WRITE")
        slots[base + 1] = TypeSlot(Kind.DEVICE_PRIVATE_READ, name="SWP_DEVICE_READ")
        if family == "7.2":
            slots[base + 2] = TypeSlot(Kind.DEVICE_EXCLUSIVE, name="SWP_DEVICE_EXCLUSIVE")
        else:
            slots[base + 2] = TypeSlot(Kind.DEVICE_EXCLUSIVE, "write", "SWP_DEVICE_EXCLUSIVE_WRITE")
            slots[base + 3] = TypeSlot(Kind.DEVICE_EXCLUSIVE, "read", "SWP_DEVICE_EXCLUSIVE_READ")
    base += device_num
    if marker_num:
        slots[base] = TypeSlot(Kind.MARKER, name="SWP_PTE_MARKER")
    base += marker_num
    if swapin_error_num:
        slots[base] = TypeSlot(Kind.SWAPIN_ERROR, name="SWP_SWAPIN_ERROR")
    return max_swapfiles, slots


@dataclass(frozen=True)
class Classified:
    """A generic (type, offset) pair classified for one kernel."""

    kind: Kind
    slot: TypeSlot | None = None
    reason: str | None = None  # set when kind is UNKNOWN


def family_of_release(release: str, arch: str | None = None) -> str | None:
    """The layout family of a kernel release, or None when no transcribed family
    matches it exactly (see archs/versions.py): guessing would be worse than
    asking the user to say which layout to apply."""
    return family_for(release, arch)


def classify_type(swp_type: int, facts: KernelFacts) -> Classified:
    """Classify a generic swap type number for the kernel described by `facts`.

    Uses the full config when every option is known; otherwise decides what
    is certain (type < MAX_SWAPFILES is a swap device, 6.12+/7.2 type 31 is
    always SWP_PTE_MARKER, 6.1 type 31 always SWP_SWAPIN_ERROR) and answers
    UNKNOWN with the missing facts named for the rest.
    """
    family = facts.family
    if family not in FAMILIES:
        return Classified(Kind.UNKNOWN, reason="kernel layout family unknown (give the kernel release)")
    options = CONFIG_OPTIONS[family]
    missing = [o for o in options if not facts.known(o)]
    if not missing:
        max_swapfiles, slots = type_space(family, {o: bool(facts.get(o)) for o in options})
        known_max = facts.get("MAX_SWAPFILES")
        if known_max is not None and known_max != max_swapfiles:
            return Classified(
                Kind.UNKNOWN,
                reason=f"MAX_SWAPFILES is {known_max} in the kernel but the config gives "
                f"{max_swapfiles}: the config facts do not match this kernel",
            )
        if swp_type < max_swapfiles:
            return Classified(Kind.SWAP)
        slot = slots.get(swp_type)
        if slot is None:
            return Classified(Kind.UNKNOWN, reason=f"type {swp_type} is not defined for this kernel and config")
        return Classified(slot.kind, slot)
    # Partial knowledge: only what holds for every config of this family.
    known_max = facts.get("MAX_SWAPFILES")
    if isinstance(known_max, int) and swp_type < known_max:
        return Classified(Kind.SWAP)
    if swp_type == 31:
        if family == "6.1":
            return Classified(Kind.SWAPIN_ERROR, TypeSlot(Kind.SWAPIN_ERROR, name="SWP_SWAPIN_ERROR"))
        return Classified(Kind.MARKER, TypeSlot(Kind.MARKER, name="SWP_PTE_MARKER"))
    return Classified(
        Kind.UNKNOWN,
        reason=f"type {swp_type} depends on {', '.join(missing)}, not known for this kernel",
    )


def markers_of(offset: int, family: str) -> tuple[tuple[str, ...], int]:
    """PTE marker names in a marker entry's offset, and any bits no marker defines."""
    mask = PTE_MARKER_MASK[family]
    names = tuple(name for bit, name in sorted(PTE_MARKERS[family].items()) if offset & (1 << bit))
    return names, offset & ~mask


def decode_softleaf(
    raw: int,
    level: str,
    size: int,
    leaf: Softleaf,
    facts: KernelFacts,
    swp_pfn_bits: int | None,
    flags: tuple[str, ...] = (),
) -> Decoded:
    """The kernel-level meaning of a softleaf entry at `level` (pte or pmd).

    `swp_pfn_bits` is SWP_PFN_BITS (MAX_PHYSMEM_BITS - PAGE_SHIFT) for this
    kernel, None when the arch could not tell; it bounds the PFN in the offset
    and places the migration young/dirty bits (swapops.h:36,62).
    """
    cls = classify_type(leaf.type, facts)
    details: list[tuple[str, str]] = []
    notes: list[str] = []
    if cls.slot is not None and cls.slot.name:
        details.append(("type", cls.slot.name + (f" ({cls.slot.access})" if cls.slot.access else "")))
    if cls.kind is Kind.UNKNOWN:
        return Decoded(raw, level, Kind.UNKNOWN, size=size, flags=flags, softleaf=leaf, reason=cls.reason)
    if level == "pmd":
        valid = MIGRATION_KINDS | (DEVICE_PRIVATE_KINDS if facts.family == "7.2" else frozenset())
        if cls.kind not in valid:
            notes.append("not a kind the kernel writes at PMD level (softleaf_is_valid_pmd_entry)")
    pfn = None
    pfn_space = None
    markers: tuple[str, ...] = ()
    if cls.kind is Kind.MARKER:
        markers, stray = markers_of(leaf.offset, facts.family or "")
        if stray:
            notes.append(f"marker offset bits {stray:#x} define no marker in {facts.family}")
    elif cls.kind in PFN_KINDS or cls.kind is Kind.SWAPIN_ERROR:
        if swp_pfn_bits is None:
            return Decoded(
                raw, level, Kind.UNKNOWN, size=size, flags=flags, softleaf=leaf,
                reason="SWP_PFN_BITS unknown (MAX_PHYSMEM_BITS not known for this mode)",
            )
        pfn = leaf.offset & ((1 << swp_pfn_bits) - 1)
        pfn_space = "device" if cls.kind in DEVICE_PRIVATE_KINDS else "phys"
        high = leaf.offset >> swp_pfn_bits
        if cls.kind in MIGRATION_KINDS:
            ad = facts.get("swap_migration_ad_supported")
            if ad is None:
                details.append(("young/dirty", f"unknown (swap_migration_ad_supported not known); "
                                f"offset bits {swp_pfn_bits}/{swp_pfn_bits + 1} = {high & 1}/{high >> 1 & 1}"))
                high &= ~3  # shown above, whatever they mean
            elif ad:
                details.append(("young", str(bool(high & 1)).lower()))
                details.append(("dirty", str(bool(high & 2)).lower()))
                high &= ~3
            else:
                details.append(("young/dirty", "not stored (swap_migration_ad_supported is false)"))
        if high:
            notes.append(f"offset bits above the PFN are set: {high << swp_pfn_bits:#x}")
    return Decoded(
        raw, level, cls.kind, size=size, pfn=pfn, pfn_space=pfn_space, flags=flags,
        softleaf=leaf, markers=markers, details=tuple(details), notes=tuple(notes),
    )
