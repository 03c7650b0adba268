"""Kernel releases as data: the feature tables, the release → layout rule, and VERSIONS.md."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from ptinspect.archs import ARCH_NAMES
from ptinspect.archs.versions import NEWEST, OLDEST, feature_table, markdown, recorded_layout, release_layout

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("arch", [None, *ARCH_NAMES])
def test_feature_rows_are_well_formed(arch: str | None) -> None:
    names = [f.name for f in feature_table(arch)]
    assert len(names) == len(set(names)), "a feature name appears twice"
    for f in feature_table(arch):
        assert re.fullmatch(r"[a-z0-9_]+", f.name), f.name
        assert f.until is None or f.since < f.until, f.name
        assert f.source and f.commit and f.confidence, f.name
        # A commit is cited by its 12-hex mainline hash and subject, unless the row says why not.
        assert re.match(r"[0-9a-f]{12} \S", f.commit) or "not established" in f.commit or f.since == OLDEST, f.commit
        assert f.until is None or re.match(r"[0-9a-f]{12} \S", f.removed_by), f.name


def test_every_release_in_the_range_has_a_layout() -> None:
    for major, minors in ((5, range(10, 20)), (6, range(0, 20)), (7, range(0, 4))):
        for minor in minors:
            if OLDEST <= (major, minor) <= NEWEST:
                for arch in ARCH_NAMES:
                    layout = release_layout(f"{major}.{minor}.3-1-cloud", arch)
                    assert layout.version == (major, minor) and layout.assumed is None


def test_older_releases_are_refused_and_newer_ones_assumed() -> None:
    with pytest.raises(ValueError, match="older than the oldest"):
        release_layout("5.4.0-150-generic", "x86_64")
    newer = release_layout("7.4.0-rc1", "arm64")
    assert newer.version == NEWEST and "7.4.0-rc1 is newer" in (newer.assumed or "")
    with pytest.raises(ValueError, match="not a kernel release"):
        release_layout("linux", "x86_64")


def test_a_pinned_layout_says_so() -> None:
    pinned = release_layout("7.4.0-rc1", "x86_64", pin="7.2")
    assert pinned.version == (7, 2) and "pinned" in (pinned.assumed or "")
    with pytest.raises(ValueError, match="--layout"):
        release_layout("7.2", "x86_64", pin="4.19")


def test_unknown_feature_names_are_a_bug_not_false() -> None:
    with pytest.raises(KeyError):
        release_layout("7.2", "x86_64").has("no_such_feature")


def test_features_follow_their_boundaries() -> None:
    # The generic swap.h carving: SWP_PTE_MARKER from 5.19 (config-gated until 6.2), GUARD from 6.13.
    assert not release_layout("5.10").has("pte_marker")
    assert release_layout("6.1").has("pte_marker_config") and release_layout("6.1").has("swp_swapin_error")
    assert not release_layout("6.2").has("pte_marker_config") and not release_layout("6.2").has("swp_swapin_error")
    assert not release_layout("6.12").has("pte_marker_guard") and release_layout("6.13").has("pte_marker_guard")


def test_a_snapshot_layout_is_rebuilt_with_its_reason() -> None:
    layout = recorded_layout("x86_64", "7.3", "7.4-rc1", "kernel 7.4-rc1 is newer ...")
    assert layout is not None and layout.version == (7, 3) and layout.assumed == "kernel 7.4-rc1 is newer ..."
    with pytest.raises(ValueError):
        recorded_layout("x86_64", "4.19", None, None)


def test_versions_md_is_the_tables() -> None:
    assert (ROOT / "archs" / "VERSIONS.md").read_text() == markdown(), (
        "archs/VERSIONS.md differs from the feature tables: run `python -m ptinspect.archs > archs/VERSIONS.md`")
