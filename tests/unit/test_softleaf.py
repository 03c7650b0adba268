"""The generic type space against values compiled from each version's swap.h."""
from __future__ import annotations

import pytest

from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.softleaf import classify_type, config_options, type_space
from ptinspect.archs.versions import release_layout
from tests.vectors import KIND_OF_DEFINE, type_vectors

VECTORS = type_vectors()


def test_every_combination_is_present():
    # 16 combinations for 6.1 (PTE_MARKER is a config there), 8 for 6.12 and 7.2.
    assert [sum(v.family == f for v in VECTORS) for f in ("6.1", "6.12", "7.2")] == [16, 8, 8]


def config_of(v):
    return {o: o in v.enabled for o in config_options(release_layout(v.family))}


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.family}-{'+'.join(sorted(v.enabled)) or 'none'}")
def test_type_space_matches_compiled_headers(v):
    max_swapfiles, slots = type_space(release_layout(v.family), config_of(v))
    assert max_swapfiles == v.defines["MAX_SWAPFILES"]
    expected = {num: name for name, num in v.defines.items() if name != "MAX_SWAPFILES"}
    assert {t: s.name for t, s in slots.items()} == expected
    for s in slots.values():
        assert s.kind is KIND_OF_DEFINE[s.name]


def facts(family, **values):
    return KernelFacts(layout=release_layout(family), facts={k: Fact(v, "test") for k, v in values.items()})


@pytest.mark.parametrize("v", VECTORS, ids=lambda v: f"{v.family}-{'+'.join(sorted(v.enabled)) or 'none'}")
def test_classify_with_full_config(v):
    f = facts(v.family, **config_of(v))
    for t in range(32):
        got = classify_type(t, f)
        names = [n for n, num in v.defines.items() if num == t and n != "MAX_SWAPFILES"]
        if t < v.defines["MAX_SWAPFILES"]:
            assert got.kind is Kind.SWAP
        elif names:
            assert got.kind is KIND_OF_DEFINE[names[0]]
        else:
            assert got.kind is Kind.UNKNOWN and got.reason


def test_missing_config_is_unknown_not_a_guess():
    # 7.2 type 27 is SWP_MIGRATION_WRITE with MF+MIG+DP but MAX_SWAPFILES with MF+DP only.
    got = classify_type(27, facts("7.2", CONFIG_MIGRATION=True))
    assert got.kind is Kind.UNKNOWN
    assert "CONFIG_MEMORY_FAILURE" in got.reason and "CONFIG_DEVICE_PRIVATE" in got.reason


def test_partial_facts_decide_what_is_certain():
    # type 31 is SWP_PTE_MARKER in every 6.12/7.2 config and SWP_SWAPIN_ERROR in every 6.1 config.
    assert classify_type(31, facts("7.2")).kind is Kind.MARKER
    assert classify_type(31, facts("6.12")).kind is Kind.MARKER
    assert classify_type(31, facts("6.1")).kind is Kind.SWAPIN_ERROR
    # MAX_SWAPFILES from the swap_info[] bound makes low types swap devices.
    assert classify_type(3, facts("7.2", MAX_SWAPFILES=27)).kind is Kind.SWAP
    # 27 in 7.2 is MF+DP or MF+MIG (swap.h: 32 - 1 - 3 - 1): type 27 is SWP_HWPOISON in both,
    # type 28 SWP_DEVICE_WRITE in one and SWP_MIGRATION_READ in the other.
    assert classify_type(27, facts("7.2", MAX_SWAPFILES=27)).kind is Kind.HWPOISON
    assert classify_type(28, facts("7.2", MAX_SWAPFILES=27)).kind is Kind.UNKNOWN


@pytest.mark.parametrize("family", ["6.1", "6.12", "7.2"])
def test_types_below_every_configs_max_swapfiles_are_swap(family):
    """A type below the smallest MAX_SWAPFILES any config gives is a swap device whatever the config."""
    smallest = min(v.defines["MAX_SWAPFILES"] for v in VECTORS if v.family == family)
    for t in range(smallest):
        assert classify_type(t, facts(family)).kind is Kind.SWAP
    assert classify_type(smallest, facts(family)).kind is Kind.UNKNOWN


def test_contradicting_max_swapfiles_is_reported():
    f = facts("7.2", CONFIG_MIGRATION=True, CONFIG_DEVICE_PRIVATE=True, CONFIG_MEMORY_FAILURE=True, MAX_SWAPFILES=27)
    got = classify_type(0, f)
    assert got.kind is Kind.UNKNOWN and "MAX_SWAPFILES" in got.reason


def test_unknown_release():
    assert classify_type(0, KernelFacts()).kind is Kind.UNKNOWN
