"""The bulk path (walk_runs -> RunRows -> table lines / JSON records made per run) gives exactly
what the entry-by-entry path gives, for tables laid out by the reference model's builder.

Tables of many neighbouring leaves, a few protections (so runs form and break), softleaf
entries and contiguous blocks among them, and VMAs whose boundaries cut runs.
"""
from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ptinspect.archs import get_arch
from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.versions import release_layout
from ptinspect.commands.table import DumpTable
from ptinspect.inspector.dump import Row, RunRows, VmaIndex, ranges
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import Builder, MapBlock, MapLeaf, MapSoftleaf
from ptinspect.inspector.records import item_record, run_records
from ptinspect.inspector.walker import LeafRun, Walker

from .test_roundtrip import BASE_FACTS, cases

RELEASE = "7.2"
CONFIG = {"CONFIG_MEMORY_FAILURE": True, "CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True}


@st.composite
def layout(draw, arch_name: str, mode_name: str):
    mode = get_arch(arch_name).mode(mode_name)
    depth = len(mode.levels) - draw(st.sampled_from([1, 1, 2]))  # the last level, or huge leaves above it
    level = mode.levels[depth]
    step = level.span >> mode.page_shift  # frames per leaf: --ranges merges leaves `step` frames apart
    pfn_limit = 1 << min(30, mode.pa_bits - mode.page_shift - 1)
    next_pfn = None
    prots = [Prot(write=w, young=y, dirty=d) for w, y, d in draw(st.lists(
        st.tuples(st.booleans(), st.booleans(), st.booleans()), min_size=1, max_size=3))]
    table_va = draw(st.integers(1, 64)) * level.span * level.entries
    mappings, slot = [], 0
    while slot < min(level.entries, 384):
        what = draw(st.sampled_from(["leaf"] * 8 + ["gap", "soft", "block"]))
        va = table_va + slot * level.span
        if what == "leaf":  # mostly the frame after the previous leaf's: stretches that merge
            pfn = next_pfn if next_pfn is not None and draw(st.integers(0, 3)) else draw(st.integers(0, pfn_limit)) // step * step
            mappings.append(MapLeaf(va, level.name, pfn, draw(st.sampled_from(prots))))
            next_pfn = pfn + step
        elif what == "soft":
            mappings.append(MapSoftleaf(va, level.name, Kind.SWAP, value=draw(st.integers(1, 1 << 20)), swap_type=1))
        elif what == "block" and slot % 128 == 0:
            mappings.append(MapBlock(va, level.name, draw(st.integers(0, pfn_limit)) & ~127, Prot()))
            slot += 127
        slot += draw(st.integers(1, 3))
    cuts = sorted(draw(st.sets(st.integers(0, 384), max_size=4)))
    vmas = [Vma(table_va + a * level.span, table_va + b * level.span, 0x73, f"[vma{i}]")
            for i, (a, b) in enumerate(zip(cuts, cuts[1:])) if a < b]
    return mappings, vmas


@pytest.mark.parametrize("arch_name,mode_name", list(cases()))
@settings(max_examples=15, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                                                  HealthCheck.large_base_example])
@given(data=st.data())
def test_runs_give_what_entries_give(arch_name: str, mode_name: str, data) -> None:
    mappings, vmas = data.draw(layout(arch_name, mode_name))
    arch = get_arch(arch_name)
    mode = arch.mode(mode_name)
    builder = Builder(arch_name, mode, release_layout(RELEASE, arch_name), CONFIG)
    placed = 0
    for m in mappings:
        try:
            builder.add(m)
            placed += 1
        except ValueError:
            continue  # e.g. no contiguous blocks in this mode
    assume(placed)
    facts = KernelFacts(layout=release_layout(RELEASE, arch_name), facts={k: Fact(v, "test") for k, v in {**CONFIG, **BASE_FACTS}.items()})
    one_by_one = list(Walker(builder.memory, arch, mode, facts).walk(builder.root))
    bulk = list(Walker(builder.memory, arch, mode, facts).walk_runs(builder.root))
    expanded = [e for item in bulk for e in (item.entries() if isinstance(item, LeafRun) else [item])]
    assert expanded == one_by_one
    runs = [item for item in bulk if isinstance(item, LeafRun)]
    assert all(r.template.kind is Kind.PRESENT and r.template.cont is None for r in runs)

    index, table = VmaIndex(vmas), DumpTable(mode, vmas)
    for run in runs:
        parts = list(index.split(run))
        assert [e for p in parts for e in p.run.entries()] == list(run.entries())
        for part in parts:
            rows = list(part.rows())
            assert all(index.find(r.entry.va) == part.vma for r in rows)
            assert table.run_lines(part) == [table.line(r) for r in rows]
            assert run_records(part) == [json.dumps(item_record(r)) for r in rows]
    assert len(runs) < len(one_by_one) or not runs  # runs do gather entries

    # --ranges: merging runs in bulk gives the ranges merging row by row gives.
    def span(r):
        return (r.first, r.end, r.count)
    bulk_items = [p for item in bulk for p in (index.split(item) if isinstance(item, LeafRun)
                                                else [Row(item, index.find(item.va))])]
    row_items = [Row(e, index.find(e.va)) for e in one_by_one]
    assert list(map(span, ranges(bulk_items))) == list(map(span, ranges(row_items)))
    merged = DumpTable(mode, vmas, merged=True)  # a range that starts in a run is formatted from it
    assert ([merged.range_line(r) for r in ranges(bulk_items)]
            == [merged.line(r.first, r.count, r.end) for r in ranges(row_items)])


def test_run_lines_of_a_real_x86_table() -> None:
    """A table of one real x86 leaf value (a 7.2 guest's anonymous page) with moving frames:
    one run, its lines equal to the per-entry lines, the frame in the pfn column."""
    arch = get_arch("x86_64")
    mode = arch.mode("4-level")
    builder = Builder("x86_64", mode, release_layout(RELEASE, "x86_64"), CONFIG)
    base = 0x7F0000000000
    for i in range(512):
        builder.add(MapLeaf(base + i * 4096, "pte", 0x31F7 + 7 * i, Prot(write=True, young=True, dirty=True)))
    facts = KernelFacts(layout=release_layout(RELEASE, "x86_64"), facts={k: Fact(v, "test") for k, v in BASE_FACTS.items()})
    items = list(Walker(builder.memory, arch, mode, facts).walk_runs(builder.root))
    runs = [i for i in items if isinstance(i, LeafRun)]
    assert len(runs) == 1 and len(runs[0].slots) == 511  # the first leaf made the template
    lines = DumpTable(mode, ()).run_lines(RunRows(runs[0], None))
    assert lines[0].split()[:4] == [f"{base + 4096:#018x}", "4", "KiB", "pte"]
    assert lines[0].split()[4] == f"{0x31F7 + 7:#x}"
    assert lines == [DumpTable(mode, ()).line(Row(e, None)) for e in runs[0].entries()]
