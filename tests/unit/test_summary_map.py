"""summary and map on page tables laid out by the reference model's builder: the bulk walk (LeafRuns,
as on a live target) and the per-entry walk of a snapshot count alike, and the counts are the
mappings the test asked the builder for."""
from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from ptinspect.archs import get_arch
from ptinspect.archs.common import Kind
from ptinspect.archs.versions import release_layout
from ptinspect.commands.cli import main
from ptinspect.inspector import mapview
from ptinspect.inspector.dump import bulk_rows
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import Builder, MapBlock, MapLeaf, MapSoftleaf
from ptinspect.inspector.session import Root, Session
from ptinspect.inspector.summary import Summary, snapshot_rows, summarize

from .test_snapshot import CONFIG, GIB, document, model_snapshot

VM_R, VM_W = 0x1, 0x2
BASE = 0x10000000
ARM64 = [
    *(MapLeaf(BASE + i * 0x1000, "pte", 0x1000 + 2 * i, Prot(dirty=True)) for i in range(40)),  # no two frames in a row
    MapBlock(BASE + 0x100000, "pte", 0x20000, Prot(dirty=True)),  # one 64 KiB contpte block
    MapSoftleaf(BASE + 0x110000, "pte", Kind.SWAP, value=5),
    MapSoftleaf(BASE + 0x111000, "pte", Kind.MARKER, markers=("guard",)),
    *(MapLeaf(BASE + 0x200000 * i, "pmd", 0x40000 + 0x200 * i, Prot()) for i in (1, 2, 3)),  # a run of PMD leaves
    MapLeaf(BASE + 0x800000, "pte", 0x5000, Prot()),  # outside every VMA
]
VMAS = [Vma(BASE, BASE + 0x800000, VM_R | VM_W, "[anon]")]


def counts(s: Summary) -> tuple:
    part = s.vmas[0]
    return ({k: (c.entries, c.bytes) for k, c in part.sizes.items()},
            {k: (c.entries, c.bytes) for k, c in part.kinds.items()},
            part.huge_bytes, part.cont_bytes, part.tables, s.total.tables,
            {k: (c.entries, c.bytes) for k, c in s.outside.kinds.items()})


def test_bulk_and_entry_walks_count_what_was_mapped() -> None:
    arch = get_arch("arm64")
    mode = arch.mode("4k-48")
    snap = model_snapshot("arm64", "4k-48", ARM64, VMAS)
    built = Builder("arm64", mode, release_layout("7.2", "arm64"), CONFIG, mem_size=4 * GIB).build(list(ARM64))
    session = Session(built.memory, arch, {}, "model builder", facts=snap.facts)
    root = Root(built.root, mode, False, "pid 1 (model)", tuple(VMAS), process=True)
    bulk = summarize(bulk_rows(session, root, (0, 1 << 48), None, tables=True), mode, VMAS)
    again = summarize(snapshot_rows(snap), snap.mode, snap.vmas or ())
    assert counts(bulk) == counts(again)
    sizes, kinds, huge, cont, tables, total_tables, outside = counts(bulk)
    assert sizes == {"pte 4K": (40, 40 << 12), "contpte 64K": (16, 64 << 10), "pmd 2M": (3, 6 << 20)}
    assert kinds == {"present": (59, (56 << 12) + (6 << 20)), "swap": (1, 4096), "marker guard": (1, 4096)}
    assert (huge, cont) == (6 << 20, 64 << 10)
    # one PTE table under the VMA's 2 MiB (the 2 MiB leaf needs none); the one outside is another
    assert tables == {"pud": 1, "pmd": 1, "pte": 1}
    assert total_tables == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 2}
    assert outside == {"present": (1, 4096)}
    assert bulk.vmas[0].pct(cont) == 100 * (64 << 10) / 0x800000


def test_map_page_has_a_row_per_vma_and_each_category(tmp_path: Path) -> None:
    snap = model_snapshot("arm64", "4k-48", ARM64, VMAS)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(document(snap)))
    out = tmp_path / "map.html"
    run = CliRunner().invoke(main, ["map", str(path), "-o", str(out)])
    assert run.exit_code == 0, run.output
    page = out.read_text()
    assert page.count('class="vma row"') == 1 and page.count('class="outside row"') == 1
    for cat in ("pte 4K", "contpte 64K", "pmd 2M", "swap", "marker guard"):
        assert f'data-cat="{cat}"' in page
    assert "src=" not in page and "href=" not in page  # self-contained
    model = mapview.build(snapshot_rows(snap), snap.mode, snap.vmas or ())
    segs = next(r for r in model.rows if r.kind == "vma").segments
    assert [(s.cat, s.count) for s in segs] == [("pte 4K", 40), ("contpte 64K", 16), ("swap", 1),
                                                ("marker guard", 1), ("pmd 2M", 3)]


def test_map_refuses_two_sources(tmp_path: Path) -> None:
    run = CliRunner().invoke(main, ["map", "--pid", "1", str(tmp_path / "x"), "-o", str(tmp_path / "m.html")])
    assert run.exit_code == 2 and "Traceback" not in run.output


def test_summary_of_a_snapshot_file(tmp_path: Path) -> None:
    snap = model_snapshot("arm64", "4k-48", ARM64, VMAS)
    path = tmp_path / "snap.json"
    path.write_text(json.dumps(document(snap)))
    run = CliRunner().invoke(main, ["summary", str(path), "--format", "json"])
    assert run.exit_code == 0, run.output
    doc = json.loads(run.output)
    vma = doc["vmas"][0]
    assert vma["by_size"] == {"pte 4K": {"entries": 40, "bytes": 40 << 12},
                              "contpte 64K": {"entries": 16, "bytes": 64 << 10},
                              "pmd 2M": {"entries": 3, "bytes": 6 << 20}}
    assert vma["by_kind"]["marker guard"] == {"entries": 1, "bytes": 4096}
    assert doc["outside_vmas"]["present_bytes"] == 4096
    table = CliRunner().invoke(main, ["summary", str(path)])
    assert table.exit_code == 0 and "contpte 64K" in table.output
    both = CliRunner().invoke(main, ["summary", str(path), "--pid", "1"])
    assert both.exit_code == 2 and "not both" in both.output
