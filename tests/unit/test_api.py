"""The Python API on a snapshot file (no target needed): the same entries, translations, checks
and diffs as the core, and one clear Error for what it cannot use."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptinspect.archs.common import Kind
from ptinspect.inspector import api
from ptinspect.inspector.records import SCHEMA

from .test_snapshot import X86_MAPPINGS, X86_VMAS, document, model_snapshot, mutated


@pytest.fixture
def snapshot_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.json"
    path.write_text(json.dumps(document(model_snapshot("x86_64", "4-level", X86_MAPPINGS, X86_VMAS))))
    return path


def test_a_snapshot_file_is_a_target(snapshot_file: Path) -> None:
    with api.open_target(snapshot_file) as t:
        assert t.arch == "x86_64" and t.source == f"snapshot {snapshot_file}"
        rows = list(t.walk())
        # The model's 8 pages, the swap entry, the guard marker and the 2 MiB leaf, in VA order, with their VMA.
        assert [(r.va, r.level, r.kind) for r in rows] == [
            *((0x10000000 + i * 0x1000, "pte", Kind.PRESENT) for i in range(8)),
            (0x10010000, "pte", Kind.SWAP), (0x10011000, "pte", Kind.MARKER), (0x10200000, "pmd", Kind.PRESENT)]
        assert all(r.vma == X86_VMAS[0] for r in rows)
        assert len(list(t.walk(tables=True))) == len(rows) + 3  # the pgd, pud and pmd entries above the pte table
        assert [r.va for r in t.walk(kinds=[Kind.SWAP, Kind.MARKER])] == [0x10010000, 0x10011000]
        assert [r.va for r in t.walk(va_range=(0x10001000, 0x10003000))] == [0x10001000, 0x10002000]
        hit = t.translate(0x10000123)  # MapLeaf(0x10000000, "pte", pfn 0x1000)
        assert hit.pa == 0x1000123 and [e.ref.level for e in hit.path] == ["pgd", "pud", "pmd", "pte"]
        assert t.translate(0x10200000 + 0x1234).pa == 0x40000 * 4096 + 0x1234
        assert t.translate(0x10010000).pa is None and t.translate(0x10010000).leaf.kind is Kind.SWAP
        assert not t.validate().failed
        assert t.tables().record(rows[0])["va"] == "0x10000000"


def test_diff_names_what_changed(snapshot_file: Path) -> None:
    snap = api.load_snapshot(snapshot_file)
    assert api.diff(snapshot_file, snap).equal
    changed, _ = mutated(snap, 0x10000000, "pte", lambda raw: raw & ~2)  # _PAGE_RW cleared
    result = api.diff(snap, changed)
    assert [(d.status, d.start, d.level) for d in result.deltas] == [("changed", 0x10000000, "pte")]
    assert "_PAGE_RW" in result.deltas[0].text


@pytest.mark.parametrize("spec, message", [
    ("/nonexistent/vmcore", "no such file, and not a gdbstub HOST:PORT"),
    ("/", "neither a file nor a QMP socket"),
])
def test_targets_it_cannot_open_are_one_error(spec: str, message: str) -> None:
    with pytest.raises(api.Error, match=message):
        api.open_target(spec)


def test_a_snapshot_has_one_root(snapshot_file: Path) -> None:
    with api.open_target(snapshot_file) as t, pytest.raises(api.Error, match="holds one root"):
        t.tables(1)


def test_a_snapshot_that_is_not_one_is_an_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": SCHEMA, "target": {}, "entries": []}))
    with pytest.raises(api.Error):
        api.open_target(bad)


def test_a_gdbstub_that_does_not_answer_is_an_error() -> None:
    with pytest.raises(api.Error, match="127.0.0.1:1"):
        api.open_target("127.0.0.1:1", timeout=1)


def test_one_root_at_a_time(snapshot_file: Path) -> None:
    with api.open_target(snapshot_file) as t, pytest.raises(api.Error, match="give one root"):
        t.tables(1, kernel=True)


def test_summary_counts_the_model_mappings(snapshot_file: Path) -> None:
    # The model maps 8 base pages and one 2 MiB PMD leaf, a swap entry and a guard marker, through one
    # table per level, all in its one VMA.
    with api.open_target(snapshot_file) as t:
        s = t.summary()
    counts = {k: (c.entries, c.bytes) for k, c in s.total.sizes.items()}
    assert counts == {"pte 4K": (8, 8 * 4096), "pmd 2M": (1, 2 << 20)}
    kinds = {k: (c.entries, c.bytes) for k, c in s.total.kinds.items()}
    assert kinds == {"present": (9, 8 * 4096 + (2 << 20)), "swap": (1, 4096), "marker guard": (1, 4096)}
    assert s.total.tables == {"pgd": 1, "pud": 1, "pmd": 1, "pte": 1}
    assert [(p.vma, p.present_bytes) for p in s.vmas] == [(X86_VMAS[0], 8 * 4096 + (2 << 20))]
