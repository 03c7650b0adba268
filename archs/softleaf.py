"""The generic software-leaf (swap-entry) type space, per kernel release and config.

A non-present entry carries a 5-bit type and a 58-bit offset once the arch's
__swp_type/__swp_offset have been applied.  Which type numbers mean what is
carved from the top of the type space by #defines of include/linux/swap.h that
depend on the release (archs/versions.py features) and on CONFIG_MIGRATION,
CONFIG_DEVICE_PRIVATE, CONFIG_MEMORY_FAILURE (and, 5.19 to 6.1, CONFIG_PTE_MARKER).
None of these is in the debug info; a type whose meaning differs between the
configs still possible is "unknown" with the missing options named, never a guess,
while a type that means the same in all of them is decoded.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

from .common import SOFTLEAF_KINDS, Decoded, KernelFacts, Kind, Softleaf
from .versions import Layout

MAX_SWAPFILES_SHIFT = 5  # include/linux/swap.h, every release 5.10..7.3

# The kinds whose offset carries a PFN (softleaf_has_pfn, include/linux/leafops.h in 7.2); 6.1's
# SWP_SWAPIN_ERROR stores one too but is not in is_pfn_swap_entry().
PFN_KINDS = SOFTLEAF_KINDS - {Kind.SWAP, Kind.MARKER, Kind.SWAPIN_ERROR}
MIGRATION_KINDS = frozenset({Kind.MIGRATION_READ, Kind.MIGRATION_READ_EXCLUSIVE, Kind.MIGRATION_WRITE})
# Device-private frames are device memory; device-exclusive entries point at system RAM.
DEVICE_PRIVATE_KINDS = frozenset({Kind.DEVICE_PRIVATE_READ, Kind.DEVICE_PRIVATE_WRITE})
CARVING_OPTIONS = ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE")


def config_options(layout: Layout) -> tuple[str, ...]:
    """The config options the type carving of `layout` depends on."""
    return CARVING_OPTIONS + (("CONFIG_PTE_MARKER",) if layout.has("pte_marker_config") else ())


def pte_markers(layout: Layout) -> dict[int, str]:
    """PTE marker bits by name (include/linux/swapops.h PTE_MARKER_*): UFFD_WP BIT(0) since 5.19,
    BIT(1) SWAPIN_ERROR (6.2) renamed POISONED (6.6), GUARD BIT(2) since 6.13."""
    bits: dict[int, str] = {}
    if layout.has("pte_marker"):
        bits[0] = "uffd-wp"
    if layout.has("pte_marker_bit1"):
        bits[1] = "poison" if layout.has("pte_marker_poisoned") else "swapin-error"
    if layout.has("pte_marker_guard"):
        bits[2] = "guard"
    return bits


@dataclass(frozen=True)
class TypeSlot:
    """One special type number: its kind and, 5.14 to 6.14, the device-exclusive access."""

    kind: Kind
    access: str | None = None  # "read" / "write" for SWP_DEVICE_EXCLUSIVE_{READ,WRITE}
    name: str = ""  # kernel define, e.g. "SWP_MIGRATION_WRITE"


def type_space(layout: Layout, config: dict[str, bool]) -> tuple[int, dict[int, TypeSlot]]:
    """MAX_SWAPFILES and the special types for a layout and a complete config.

    The #define chain of include/linux/swap.h (5.10..7.3): from MAX_SWAPFILES up, HWPOISON,
    MIGRATION_*, DEVICE_*, PTE_MARKER, SWAPIN_ERROR; checked in tests against what each
    release's swap.h compiles to (tests/data/derived/).
    """
    mf = config["CONFIG_MEMORY_FAILURE"]
    mig = config["CONFIG_MIGRATION"]
    dp = config["CONFIG_DEVICE_PRIVATE"]
    marker = layout.has("pte_marker") and (not layout.has("pte_marker_config") or config["CONFIG_PTE_MARKER"])
    migration: list[TypeSlot] = []
    if mig:
        migration.append(TypeSlot(Kind.MIGRATION_READ, name="SWP_MIGRATION_READ"))
        if layout.has("swp_migration_read_exclusive"):
            migration.append(TypeSlot(Kind.MIGRATION_READ_EXCLUSIVE, name="SWP_MIGRATION_READ_EXCLUSIVE"))
        migration.append(TypeSlot(Kind.MIGRATION_WRITE, name="SWP_MIGRATION_WRITE"))
    device: list[TypeSlot] = []
    if dp:
        device += [TypeSlot(Kind.DEVICE_PRIVATE_WRITE, name="SWP_DEVICE_WRITE"),
                   TypeSlot(Kind.DEVICE_PRIVATE_READ, name="SWP_DEVICE_READ")]
        if layout.has("swp_device_exclusive_single"):
            device.append(TypeSlot(Kind.DEVICE_EXCLUSIVE, name="SWP_DEVICE_EXCLUSIVE"))
        elif layout.has("swp_device_exclusive"):
            device += [TypeSlot(Kind.DEVICE_EXCLUSIVE, "write", "SWP_DEVICE_EXCLUSIVE_WRITE"),
                       TypeSlot(Kind.DEVICE_EXCLUSIVE, "read", "SWP_DEVICE_EXCLUSIVE_READ")]
    ordered = ([TypeSlot(Kind.HWPOISON, name="SWP_HWPOISON")] if mf else []) + migration + device
    if marker:
        ordered.append(TypeSlot(Kind.MARKER, name="SWP_PTE_MARKER"))
    if layout.has("swp_swapin_error"):
        ordered.append(TypeSlot(Kind.SWAPIN_ERROR, name="SWP_SWAPIN_ERROR"))
    max_swapfiles = (1 << MAX_SWAPFILES_SHIFT) - len(ordered)
    return max_swapfiles, {max_swapfiles + i: slot for i, slot in enumerate(ordered)}


@dataclass(frozen=True)
class Classified:
    """A generic (type, offset) pair classified for one kernel."""

    kind: Kind
    slot: TypeSlot | None = None
    reason: str | None = None  # set when kind is UNKNOWN


def _classify(swp_type: int, layout: Layout, config: dict[str, bool]) -> Classified:
    max_swapfiles, slots = type_space(layout, config)
    if swp_type < max_swapfiles:
        return Classified(Kind.SWAP)
    slot = slots.get(swp_type)
    if slot is None:
        return Classified(Kind.UNKNOWN, reason=f"type {swp_type} is not defined for this kernel and config")
    return Classified(slot.kind, slot)


def classify_type(swp_type: int, facts: KernelFacts) -> Classified:
    """Classify a generic swap type number for the kernel described by `facts`.

    Every config the known facts still allow (options not known are tried both ways; a known
    MAX_SWAPFILES keeps only the configs that give it) is carved; a type that means the same in
    all of them is decoded, one that does not is UNKNOWN with the missing options named.
    """
    layout = facts.layout
    if layout is None:
        return Classified(Kind.UNKNOWN, reason="kernel release unknown: give it (--kernel) to decode swap types")
    options = config_options(layout)
    missing = [o for o in options if not facts.known(o)]
    known = {o: bool(facts.get(o)) for o in options if facts.known(o)}
    known_max = facts.get("MAX_SWAPFILES")
    answers: set[Classified] = set()
    for values in itertools.product((False, True), repeat=len(missing)):
        config = {**known, **dict(zip(missing, values))}
        if isinstance(known_max, int) and type_space(layout, config)[0] != known_max:
            continue
        answers.add(_classify(swp_type, layout, config))
    if not answers:
        return Classified(
            Kind.UNKNOWN,
            reason=f"MAX_SWAPFILES is {known_max} in the kernel but no config of {layout.name} with the "
            f"known options gives it: the config facts do not match this kernel",
        )
    if len(answers) == 1:
        return answers.pop()
    return Classified(
        Kind.UNKNOWN,
        reason=f"type {swp_type} depends on {', '.join(missing)}, not known for this kernel",
    )


def markers_of(offset: int, layout: Layout) -> tuple[tuple[str, ...], int]:
    """PTE marker names in a marker entry's offset, and any bits no marker defines."""
    bits = pte_markers(layout)
    names = tuple(name for bit, name in sorted(bits.items()) if offset & (1 << bit))
    return names, offset & ~sum(1 << bit for bit in bits)


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
        device = facts.layout is not None and facts.layout.has("pmd_device_private")
        valid = MIGRATION_KINDS | (DEVICE_PRIVATE_KINDS if device else frozenset())
        if cls.kind not in valid:
            notes.append("not a kind the kernel writes at PMD level (softleaf_is_valid_pmd_entry)")
    pfn = None
    pfn_space = None
    markers: tuple[str, ...] = ()
    if cls.kind is Kind.MARKER:
        assert facts.layout is not None  # classify_type answers UNKNOWN without one
        markers, stray = markers_of(leaf.offset, facts.layout)
        if stray:
            notes.append(f"marker offset bits {stray:#x} define no marker in {facts.layout.name}")
    elif cls.kind in PFN_KINDS or cls.kind is Kind.SWAPIN_ERROR:
        if swp_pfn_bits is None:
            # The kind is the type's; only where the frame ends in the offset is not known.
            details.append(("pfn", "unknown: SWP_PFN_BITS = MAX_PHYSMEM_BITS - PAGE_SHIFT is not known for this "
                            "kernel and mode (give --fact MAX_PHYSMEM_BITS=N; a vmcore or a live kernel with "
                            "its vmlinux states it in VMCOREINFO)"))
            return Decoded(raw, level, cls.kind, size=size, flags=flags, softleaf=leaf, details=tuple(details),
                           notes=tuple(notes))
        pfn = leaf.offset & ((1 << swp_pfn_bits) - 1)
        pfn_space = "phys"
        if cls.kind in DEVICE_PRIVATE_KINDS:
            # A device page's frame (outside RAM) while device_private_pfn holds; after it, an
            # offset in the device's own space, no frame at all.
            assert facts.layout is not None  # classify_type answers UNKNOWN without one
            pfn_space = "device" if facts.layout.has("device_private_pfn") else "device-offset"
        high = leaf.offset >> swp_pfn_bits
        if cls.kind in MIGRATION_KINDS:
            assert facts.layout is not None  # classify_type answers UNKNOWN without one
            ad = facts.get("swap_migration_ad_supported")
            if not facts.layout.has("swp_migration_ad"):
                details.append(("young/dirty", f"not stored in {facts.layout.name} (SWP_MIG_YOUNG_BIT came in 6.1, "
                                "include/linux/swapops.h)"))
            elif ad is None:
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
