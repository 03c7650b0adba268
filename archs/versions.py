"""Kernel releases as data: every page-table layout change is a feature with the release that made it.

A release's layout on an architecture is the set of generic features (this module) and that
architecture's features (`FEATURES` of archs/<arch>.py) in force at its version.  Decoders ask
`layout.has("feature")`; nothing outside archs/ compares release strings.

Boundaries are mainline releases (the vX.Y tag that first has the change), each with the kernel
file and symbol it concerns and the commit that made it.  Distribution kernels can carry
backports; a user who knows better pins a layout (`--layout`).  Releases from OLDEST to NEWEST
are supported; a newer release is inspected with NEWEST's layout and says so (`Layout.assumed`);
an older one is refused.
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

Version = tuple[int, int]

# The oldest release whose layouts were derived from its source (Debian bullseye's 5.10) and the
# newest (trixie-backports' 7.3.4): tests/data/derived/ holds what their headers compile to.
OLDEST: Version = (5, 10)
NEWEST: Version = (7, 3)


@dataclass(frozen=True)
class Feature:
    """One layout change: in force from `since` up to (not including) `until`."""

    name: str
    since: Version
    source: str  # kernel file and symbol(s) the feature is about
    commit: str  # "<12-hex> <subject>" of the mainline commit that introduced it
    until: Version | None = None  # first release without it
    removed_by: str = ""  # "<12-hex> <subject>" of the commit that removed it
    # How sure the boundary is: "derived" (both neighbouring releases compiled from source agree
    # with it and the commit is in the mainline release), "high", "medium" (one source only).
    confidence: str = "high"

    def in_force(self, version: Version) -> bool:
        return self.since <= version and (self.until is None or version < self.until)


# Generic software-leaf features (include/linux/swap.h, swapops.h, leafops.h).
GENERIC: tuple[Feature, ...] = (
    Feature("swp_device_exclusive", (5, 14),
            "include/linux/swap.h SWP_DEVICE_EXCLUSIVE_WRITE/READ (SWP_DEVICE_NUM 2 -> 4)",
            "b756a3b5e7ea mm: device exclusive memory access"),
    Feature("swp_device_exclusive_single", (6, 15),
            "include/linux/swap.h SWP_DEVICE_EXCLUSIVE (SWP_DEVICE_NUM 4 -> 3)",
            "c25465eb7630 mm: use single SWP_DEVICE_EXCLUSIVE entry type",
            confidence="high (release), medium (hash: one source)"),
    Feature("swp_migration_read_exclusive", (5, 19),
            "include/linux/swap.h SWP_MIGRATION_READ_EXCLUSIVE (SWP_MIGRATION_NUM 2 -> 3)",
            "6c287605fd56 mm: remember exclusively mapped anonymous pages with PG_anon_exclusive"),
    Feature("pte_marker", (5, 19),
            "include/linux/swap.h SWP_PTE_MARKER, include/linux/swapops.h PTE_MARKER_UFFD_WP BIT(0)",
            "679d10331910 mm: introduce PTE_MARKER swap entry"),
    # Until 6.2 the marker type exists only with CONFIG_PTE_MARKER.
    Feature("pte_marker_config", (5, 19), "mm/Kconfig PTE_MARKER",
            "679d10331910 mm: introduce PTE_MARKER swap entry",
            until=(6, 2), removed_by="ca92ea3dc5a2 mm: always compile in pte markers"),
    Feature("swp_swapin_error", (5, 19), "include/linux/swap.h SWP_SWAPIN_ERROR (SWP_SWAPIN_ERROR_NUM 1)",
            "9f186f9e5fa9 mm/swapfile: unuse_pte can map random data if swap read fails",
            until=(6, 2), removed_by="15520a3f0469 mm: use pte markers for swap errors"),
    # BIT(1) is PTE_MARKER_SWAPIN_ERROR from 6.2, renamed PTE_MARKER_POISONED in 6.6 (af19487f00f3).
    Feature("pte_marker_bit1", (6, 2), "include/linux/swapops.h PTE_MARKER_SWAPIN_ERROR / PTE_MARKER_POISONED BIT(1)",
            "15520a3f0469 mm: use pte markers for swap errors"),
    Feature("pte_marker_poisoned", (6, 6), "include/linux/swapops.h PTE_MARKER_POISONED BIT(1)",
            "af19487f00f3 mm: make PTE_MARKER_SWAPIN_ERROR more general"),
    Feature("pte_marker_guard", (6, 13), "include/linux/swapops.h PTE_MARKER_GUARD BIT(2)",
            "7c53dfbdb024 mm: add PTE_MARKER_GUARD PTE marker"),
    Feature("swp_migration_ad", (6, 1), "include/linux/swapops.h SWP_MIG_YOUNG_BIT/SWP_MIG_DIRTY_BIT",
            "2e3468778dbe mm: remember young/dirty bit for page migrations"),
    Feature("softleaf", (6, 19), "include/linux/leafops.h softleaf_t, softleaf_from_pte()",
            "68aa2fdbf57f mm: introduce leaf entry type and use to simplify leaf entry logic",
            confidence="medium (6.19 merge-window revlist; the MM pull mail not seen)"),
    Feature("pmd_device_private", (6, 19),
            "include/linux/leafops.h softleaf_is_valid_pmd_entry(): device-private PMD entries",
            "368076f52ebe mm/huge_memory: add device-private THP support to PMD operations",
            confidence="medium (6.19 merge-window revlist)"),
    # The number in a device-private entry is the device page's PFN: a frame of the physical address
    # space, outside RAM, inside the dev_pagemap range the driver took (request_free_mem_region()).
    # Since the entries exist (4.14, older than OLDEST); still so in 7.3. The seed series that makes
    # it an offset into the device's own space would end this feature (`until`), and the decoder
    # then stops calling the number a frame.
    Feature("device_private_pfn", (5, 10),
            "mm/migrate_device.c migrate_vma_insert_page(): make_writable_device_private_entry("
            "page_to_pfn(page)); include/linux/leafops.h softleaf_has_pfn()/softleaf_to_pfn() "
            "(7.3); mm/memremap.c pagemap_range(): a MEMORY_DEVICE_PRIVATE range must not "
            "intersect System RAM (region_intersects)",
            "5042db43cc26 mm/ZONE_DEVICE: new type of ZONE_DEVICE for unaddressable memory (4.14)"),
    # 7.3 (Debian 7.3.4 source): the uffd bit is "userfaultfd tracking" for VM_UFFD_WP and the new
    # VM_UFFD_RWP (include/linux/mm.h VM_UFFD_RWP, DECLARE_VMA_BIT(UFFD_RWP, 43);
    # include/linux/userfaultfd_k.h mrwprotect_range()); the arch bits are renamed *_UFFD.
    Feature("uffd_rwp", (7, 3), "include/linux/mm.h VM_UFFD_RWP; arch pte_uffd()/pte_swp_uffd()",
            "mainline 7.3 merge window (hash not established)",
            confidence="derived (absent from 7.2.13's source, present in 7.3.4's)"),
)


def parse_version(release: str) -> Version | None:
    """(major, minor) of a release ("7.3.4+bpo-cloud-amd64", "6.12", "7.4-rc1"), None if none."""
    m = re.match(r"\s*(\d+)\.(\d+)", release)
    return (int(m.group(1)), int(m.group(2))) if m else None


def _text(version: Version) -> str:
    return f"{version[0]}.{version[1]}"


@dataclass(frozen=True)
class Layout:
    """The features of one release on one architecture (arch None: the generic ones only).

    `version` is the release whose features apply; `assumed` says why that is not simply the
    kernel's own release (a newer kernel, or a layout the user pinned), for every output to show.
    """

    arch: str | None
    version: Version
    features: frozenset[str]
    known: frozenset[str] = field(repr=False, default=frozenset())
    release: str | None = None
    assumed: str | None = None

    @property
    def name(self) -> str:
        """The release whose layout this is, as "7.3"."""
        return _text(self.version)

    def has(self, feature: str) -> bool:
        """Whether `feature` is in force; KeyError for a name no table defines (a typo is a bug)."""
        if feature not in self.known:
            raise KeyError(f"no layout feature {feature!r} for {self.arch or 'generic'}")
        return feature in self.features


def _arch_features(arch: str | None) -> tuple[Feature, ...]:
    if arch is None:
        return ()
    from . import get_arch  # the arch modules import this one

    return tuple(get_arch(arch).features)


def _build(arch: str | None, version: Version, release: str | None, assumed: str | None) -> Layout:
    table: Iterable[Feature] = GENERIC + _arch_features(arch)
    table = tuple(table)
    return Layout(
        arch, version, frozenset(f.name for f in table if f.in_force(version)),
        frozenset(f.name for f in table), release, assumed,
    )


def supported_range() -> str:
    return f"{_text(OLDEST)} to {_text(NEWEST)}"


def release_layout(release: str, arch: str | None = None, pin: str | None = None) -> Layout:
    """The layout of `release` on `arch`.

    A release newer than NEWEST gets NEWEST's layout with `assumed` saying so; `pin` ("7.2")
    imposes a release's layout whatever the kernel's own release is.  ValueError, naming the
    supported range, for a release older than OLDEST or one that is not a version at all.
    """
    if pin is not None:
        pinned = parse_version(pin)
        if pinned is None or not OLDEST <= pinned <= NEWEST:
            raise ValueError(f"--layout {pin!r}: give a release from {supported_range()} (e.g. 7.2)")
        return _build(arch, pinned, release, f"layout of {_text(pinned)} pinned by the user"
                      + (f" (kernel {release})" if release and release != pin else ""))
    version = parse_version(release)
    if version is None:
        raise ValueError(f"{release!r} is not a kernel release (expected e.g. 6.12 or 7.3.4-cloud-amd64)")
    if version < OLDEST:
        raise ValueError(f"kernel {release} is older than the oldest release ptinspect knows the page-table "
                         f"layouts of ({supported_range()}); its layouts are not known here")
    if version > NEWEST:
        return _build(arch, NEWEST, release,
                      f"kernel {release} is newer than the newest release ptinspect knows "
                      f"({_text(NEWEST)}): its layout is assumed to be {_text(NEWEST)}'s")
    return _build(arch, version, release, None)


def feature_table(arch: str | None) -> tuple[Feature, ...]:
    """Every feature that applies to `arch` (generic first), for documentation and tests."""
    return GENERIC + _arch_features(arch)


def recorded_layout(arch: str | None, name: str | None, release: str | None, assumed: str | None) -> Layout | None:
    """The layout a snapshot recorded (its name and why it was assumed), rebuilt from the tables;
    ValueError when the name is not a supported release."""
    if name is None:
        return None
    version = parse_version(name)
    if version is None or not OLDEST <= version <= NEWEST:
        raise ValueError(f"layout {name!r} is not a release from {supported_range()}")
    return _build(arch, version, release, assumed)


def markdown() -> str:
    """archs/VERSIONS.md: every feature table as Markdown (`python -m ptinspect.archs`)."""
    from . import ARCH_NAMES

    out = [
        "# Kernel releases ptinspect knows: page-table layout features",
        "",
        "Generated from archs/versions.py and archs/<arch>.py by `python -m ptinspect.archs > archs/VERSIONS.md`;",
        "a unit test keeps this file equal to the tables.  Supported releases: "
        f"{supported_range()}; a newer release is decoded with {_text(NEWEST)}'s layout and every output says so.",
        "",
        "A release's layout is the set of features in force at its version (`since` <= version < `until`).",
        "Boundaries are mainline releases.  The layouts of 5.10, 6.1, 6.12, 7.2 and 7.3 are checked against what",
        "Debian's headers of those releases compile to (tests/data/derived/); the boundaries between them rest on",
        "the commit named in each row, and `confidence` says how sure that is.",
    ]
    for arch in (None, *ARCH_NAMES):
        out += ["", f"## {arch or 'generic (include/linux)'}", "",
                "| feature | since | until | kernel source | commit | confidence |",
                "|---|---|---|---|---|---|"]
        rows = GENERIC if arch is None else _arch_features(arch)
        for f in rows:
            until = _text(f.until) + (f" ({f.removed_by})" if f.removed_by else "") if f.until else ""
            out.append(f"| {f.name} | {_text(f.since)} | {until} | {f.source} | {f.commit} | {f.confidence} |")
    return "\n".join(out) + "\n"
