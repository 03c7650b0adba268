"""--ranges on riscv64: a leaf's fields spell its frame ("PPN"), so neighbours with consecutive frames
and equal bits differ in that field; they must still merge (as on x86-64 and arm64), in both the
row-by-row and the bulk (LeafRun) path, and a change of any other bit must still keep them apart."""
from __future__ import annotations

from ptinspect.archs import get_arch
from ptinspect.archs.common import Fact, KernelFacts
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.dump import Row, RunRows, ranges
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import Builder, MapLeaf
from ptinspect.inspector.walker import LeafRun, Walker

from ..property.test_roundtrip import BASE_FACTS
from ..property.test_runs import CONFIG, RELEASE

VA = 0x40000000


def walked(prots: list[Prot]) -> tuple[list[Row], list[Row | RunRows]]:
    arch = get_arch("riscv64")
    mode = arch.mode("sv39")
    builder = Builder("riscv64", mode, release_layout(RELEASE, "riscv64"), CONFIG)
    for i, prot in enumerate(prots):
        builder.add(MapLeaf(VA + i * 4096, "pte", 0x80200 + i, prot))
    facts = KernelFacts(layout=release_layout(RELEASE, "riscv64"),
                        facts={k: Fact(v, "test") for k, v in {**CONFIG, **BASE_FACTS}.items()})
    rows = [Row(e, None) for e in Walker(builder.memory, arch, mode, facts).walk(builder.root)]
    bulk = [RunRows(i, None) if isinstance(i, LeafRun) else Row(i, None)
            for i in Walker(builder.memory, arch, mode, facts).walk_runs(builder.root)]
    return rows, bulk


def test_consecutive_frames_merge_though_their_ppn_fields_differ() -> None:
    rows, bulk = walked([Prot()] * 5)
    assert [f for f in rows[0].entry.hw.fields if f[0] == "PPN"] == [("PPN", "0x80200")]
    for items in (rows, bulk):
        merged = list(ranges(items))
        assert [(r.start, r.end, r.count) for r in merged] == [(VA, VA + 5 * 4096, 5)]


def test_another_bit_keeps_them_apart() -> None:
    rows, bulk = walked([Prot(), Prot(), Prot(write=False), Prot()])
    for items in (rows, bulk):
        assert [r.count for r in ranges(items)] == [2, 1, 1]
