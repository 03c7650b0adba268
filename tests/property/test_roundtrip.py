"""Random mapping sets -> reference-model builder -> walker -> the same mappings.

The builder encodes with inspector/model/<arch>.py (the kernel's macros,
transliterated); the walker decodes with archs/<arch>.py.  Agreement between
two independent statements of each layout, for every arch, mode and release (5.10..7.3).
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ptinspect.archs import ARCH_NAMES, get_arch
from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.softleaf import MIGRATION_KINDS, PFN_KINDS, config_options, pte_markers
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import Builder, MapBlock, MapLeaf, MapSoftleaf
from ptinspect.inspector.walker import Walker

SOFT_KINDS = [Kind.SWAP, Kind.MIGRATION_READ, Kind.MIGRATION_READ_EXCLUSIVE, Kind.MIGRATION_WRITE,
              Kind.DEVICE_PRIVATE_READ, Kind.DEVICE_PRIVATE_WRITE, Kind.DEVICE_EXCLUSIVE, Kind.HWPOISON,
              Kind.MARKER, Kind.SWAPIN_ERROR]
# LTS lines, the releases whose layouts are derived from Debian's sources, and ones between changes.
RELEASES = ("5.10", "5.15", "6.1", "6.2", "6.6", "6.9", "6.12", "6.15", "6.18", "7.2", "7.3")
# Facts the per-arch models assume (see their docstrings): THP on, SPARSEMEM, soft-dirty and uffd-wp built in.
BASE_FACTS = {"CONFIG_TRANSPARENT_HUGEPAGE": True, "CONFIG_SPARSEMEM": True, "CONFIG_MEM_SOFT_DIRTY": True,
              "CONFIG_HAVE_ARCH_USERFAULTFD_WP": True, "CONFIG_USERFAULTFD": True,
              "swap_migration_ad_supported": True,
              "CONFIG_ARM64_PA_BITS": 48}  # the arm64 model assumes a 48-bit-PA build outside -lpa modes


def cases():
    for arch_name in ARCH_NAMES:
        arch = get_arch(arch_name)
        for mode in arch.modes():
            yield pytest.param(arch_name, mode.name, id=f"{arch_name}-{mode.name}")


@st.composite
def scenario(draw, arch_name: str, mode_name: str):
    arch = get_arch(arch_name)
    mode = arch.mode(mode_name)
    layout = release_layout(draw(st.sampled_from(RELEASES)), arch_name)
    config = {o: draw(st.booleans()) for o in config_options(layout)}
    if layout.has("pte_marker_config") and arch_name != "x86_64":
        config["CONFIG_PTE_MARKER"] = False  # only x86 selects HAVE_ARCH_USERFAULTFD_WP before 6.2
    user_top = 1 << (mode.va_bits - 1 if not arch.split_roots else mode.va_bits)
    pfn_limit = 1 << min(30, mode.pa_bits - mode.page_shift - 1)
    used: list[tuple[int, int]] = []
    mappings = []
    for _ in range(draw(st.integers(1, 12))):
        leaf_depths = [d for d, lvl in enumerate(mode.levels) if lvl.leaf]
        depth = draw(st.sampled_from(leaf_depths))
        level = mode.levels[depth]
        what = draw(st.sampled_from(["leaf", "block", "soft"]))
        span = level.span
        va = draw(st.integers(0, user_top // span - 128)) * span
        count = 1
        if what == "block":
            count = 128  # upper bound on any block (arm64 16K contpte); the block is aligned to it
            va -= va % (span * count)
        if any(va < end and va + span * count > start for start, end in used):
            continue
        pfn = draw(st.integers(0, pfn_limit)) & ~((count * span >> mode.page_shift) - 1)
        if what == "leaf":
            prot = Prot(write=draw(st.booleans()), exec=draw(st.booleans()), young=draw(st.booleans()),
                        dirty=draw(st.booleans()), protnone=draw(st.booleans()))
            m = MapLeaf(va, level.name, pfn & ~((span >> mode.page_shift) - 1), prot)
        elif what == "block":
            m = MapBlock(va, level.name, pfn, Prot(young=draw(st.booleans()), dirty=draw(st.booleans())))
        elif (arch_name == "riscv64" and level.name != "pte" and layout.has("riscv_thp")
              and not layout.has("riscv_thp_migration")):
            continue  # 5.14..5.16: a PMD software entry (hugetlb's only) is present to pmd_present (fba88ede6a31)
        else:
            kind = draw(st.sampled_from(SOFT_KINDS))
            # swap offset 0 is the swap header, never mapped (it would encode to none on riscv)
            m = MapSoftleaf(va, level.name, kind, value=draw(st.integers(1, pfn_limit)),
                            swap_type=draw(st.integers(0, 3)),
                            markers=tuple(draw(st.sets(st.sampled_from(sorted(pte_markers(layout).values()) or ["uffd-wp"]),
                                                          min_size=1))),
                            young=kind in MIGRATION_KINDS and draw(st.booleans()),
                            dirty=kind in MIGRATION_KINDS and draw(st.booleans()),
                            access=draw(st.sampled_from(["read", "write"])) if kind is Kind.DEVICE_EXCLUSIVE and not layout.has("swp_device_exclusive_single") else None)
        used.append((va, va + span * count))
        mappings.append(m)
    return layout, config, mappings


@pytest.mark.parametrize("arch_name,mode_name", list(cases()))
@settings(max_examples=40, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
@given(data=st.data())
def test_model_walker_roundtrip(arch_name, mode_name, data):
    layout, config, mappings = data.draw(scenario(arch_name, mode_name))
    arch = get_arch(arch_name)
    mode = arch.mode(mode_name)
    builder = Builder(arch_name, mode, layout, config)
    placed = []
    for m in mappings:
        try:
            builder.add(m)
        except ValueError:
            continue  # the kind, flag or block does not exist for this arch/mode/release/config
        placed.append(m)
    assume(placed)
    facts = KernelFacts(layout=layout, facts={k: Fact(v, "test") for k, v in {**config, **BASE_FACTS}.items()})
    walker = Walker(builder.memory, arch, mode, facts)
    got = {e.va: e for e in walker.walk(builder.root)}
    expected_vas = set()
    for m in placed:
        depth = mode.level(m.level)
        span = mode.levels[depth].span
        if isinstance(m, MapBlock):
            n = len(builder.model.mk_block(m.pfn, depth, mode, m.prot, layout))
            for i in range(n):
                e = got[arch.canonical(mode, m.va + i * span, False)]
                expected_vas.add(e.va)
                assert e.kind is Kind.PRESENT and e.ref.level == m.level
                assert e.frame == m.pfn + i * (span >> mode.page_shift)
                assert e.hw.cont is not None and e.hw.cont.entries == n and e.block.index == i
                assert e.view.access.young == m.prot.young and e.view.access.dirty == m.prot.dirty
            continue
        e = got[arch.canonical(mode, m.va, False)]
        expected_vas.add(e.va)
        assert e.ref.level == m.level
        if isinstance(m, MapLeaf):
            assert e.kind is Kind.PRESENT, e.hw
            assert e.frame == m.pfn
            a = e.hw.access
            if m.prot.protnone:
                assert not (a.read or a.write or a.exec)
            else:
                assert (a.write, a.exec, a.user, a.young, a.dirty) == (
                    m.prot.write, m.prot.exec, m.prot.user, m.prot.young, m.prot.dirty)
        else:
            swp = builder.swp_fields(m)
            assert e.kind is m.kind, (e.hw, m)
            assert (e.hw.softleaf.type, e.hw.softleaf.offset) == (swp.type, swp.offset)
            if m.kind is Kind.MARKER:
                assert set(e.hw.markers) == set(m.markers)
            if m.kind in PFN_KINDS:
                assert e.frame == m.value
            if m.kind in MIGRATION_KINDS and layout.has("swp_migration_ad"):
                assert dict(e.hw.details).get("young") == str(m.young).lower()
                assert dict(e.hw.details).get("dirty") == str(m.dirty).lower()
            elif m.kind in MIGRATION_KINDS:  # before 6.1 the offset is the PFN alone
                assert "young" not in dict(e.hw.details) and "not stored" in dict(e.hw.details)["young/dirty"]
    assert set(got) == expected_vas  # nothing extra, nothing lost
