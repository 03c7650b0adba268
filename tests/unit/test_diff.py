"""diff on tables the reference model builds before and after what an mm operation writes.

The "after" side is what the kernel's own helpers produce (inspector/model/<arch>.py,
transliterated): pte_wrprotect() on fork, mprotect(), a guard marker, a swap entry after
MADV_PAGEOUT, a PMD leaf after a khugepaged collapse, a contpte block unfolded.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptinspect.archs.common import Kind
from ptinspect.commands.cli import main
from ptinspect.inspector.diff import diff
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import MapBlock, MapLeaf, MapSoftleaf
from ptinspect.inspector.snapshot import Snapshot

from .test_snapshot import VM_R, VM_W, document, model_snapshot

BASE = 0x10000000
VMAS = [Vma(BASE, BASE + 0x800000, VM_R | VM_W, "[anon]")]
KEEP = [MapLeaf(BASE + 0x100000, "pte", 0x5000, Prot())]  # an untouched neighbour in the same PTE table


def pages(n: int, prot: Prot, start: int = BASE, pfn: int = 0x1000) -> list[MapLeaf]:
    return [MapLeaf(start + i * 0x1000, "pte", pfn + i, prot) for i in range(n)]


def x86(mappings: list) -> Snapshot:
    return model_snapshot("x86_64", "4-level", [*KEEP, *mappings], VMAS)


def summary(deltas) -> list[tuple]:
    return [(d.status, d.level, d.start, d.end, d.count, d.text) for d in deltas]


def test_fork_write_protect_moves_dirty_to_saved_dirty() -> None:
    # copy_present_pte() -> pte_wrprotect(): RW cleared and, since 6.6, D moved to SavedDirty
    # (arch/x86/include/asm/pgtable.h:365-412 in 7.2, mksaveddirty_shift).
    before = x86(pages(4, Prot(dirty=True)))
    after = x86(pages(4, Prot(write=False, dirty=True)))
    assert summary(diff(before, after)) == [
        ("changed", "pte", BASE, BASE + 0x4000, 4, "_PAGE_DIRTY → _PAGE_SAVED_DIRTY, _PAGE_RW 1→0")]


def test_mprotect_read_only() -> None:
    assert summary(diff(x86(pages(8, Prot())), x86(pages(8, Prot(write=False))))) == [
        ("changed", "pte", BASE, BASE + 0x8000, 8, "_PAGE_RW 1→0")]


def test_guard_install_and_remove() -> None:
    present = x86(pages(4, Prot()))
    guarded = x86([MapSoftleaf(BASE + i * 0x1000, "pte", Kind.MARKER, markers=("guard",)) for i in range(4)])
    assert summary(diff(present, guarded)) == [("changed", "pte", BASE, BASE + 0x4000, 4, "present → marker guard")]
    removed = x86([])  # MADV_GUARD_REMOVE clears the markers: the entries are none
    assert summary(diff(guarded, removed)) == [("removed", "pte", BASE, BASE + 0x4000, 4, "marker guard")]


def test_pageout_makes_swap_entries() -> None:
    swapped = x86([MapSoftleaf(BASE + i * 0x1000, "pte", Kind.SWAP, value=0x40 + i) for i in range(16)])
    deltas = diff(x86(pages(16, Prot(dirty=True))), swapped)
    assert summary(deltas) == [("changed", "pte", BASE, BASE + 0x10000, 16, "present → swap")]
    assert deltas[0].after["softleaf"]["offset"] == "0x40"


def test_thp_collapse_and_split() -> None:
    ptes = x86(pages(512, Prot(dirty=True), start=BASE + 0x200000, pfn=0x40000))
    huge = x86([MapLeaf(BASE + 0x200000, "pmd", 0x40000, Prot(dirty=True))])
    collapse = summary(diff(ptes, huge))
    assert collapse == [("changed", "pmd", BASE + 0x200000, BASE + 0x400000, 1, "PTE table → PMD leaf"),
                        ("removed", "pte", BASE + 0x200000, BASE + 0x400000, 512, "present rw- user")]
    split = summary(diff(huge, ptes))
    assert split == [("changed", "pmd", BASE + 0x200000, BASE + 0x400000, 1, "PMD leaf → PTE table"),
                     ("added", "pte", BASE + 0x200000, BASE + 0x400000, 512, "present rw- user")]


def test_added_entries_merge_only_when_alike() -> None:
    # A THP split by mprotect(PROT_READ) of its first page, as the test VM's workload does: one read-only
    # PTE, then 511 writable ones. One merged range would show the read-only entry's raw value for all 512.
    huge = x86([MapLeaf(BASE + 0x200000, "pmd", 0x40000, Prot(dirty=True))])
    split = x86([MapLeaf(BASE + 0x200000, "pte", 0x40000, Prot(write=False, dirty=True)),
                 *pages(511, Prot(dirty=True), start=BASE + 0x201000, pfn=0x40001)])
    assert summary(diff(huge, split))[1:] == [
        ("added", "pte", BASE + 0x200000, BASE + 0x201000, 1, "present r-- user"),
        ("added", "pte", BASE + 0x201000, BASE + 0x400000, 511, "present rw- user")]
    assert summary(diff(split, huge))[1:] == [
        ("removed", "pte", BASE + 0x200000, BASE + 0x201000, 1, "present r-- user"),
        ("removed", "pte", BASE + 0x201000, BASE + 0x400000, 511, "present rw- user")]
    # arm64 after such a split: the first 16 entries plain (their block unfolded), then contpte blocks
    vmas = [Vma(BASE, BASE + 0x200000, VM_R | VM_W, "[anon]")]
    empty = model_snapshot("arm64", "4k-48", [MapLeaf(BASE + 0x100000, "pte", 0x5000, Prot())], vmas)
    mixed = model_snapshot("arm64", "4k-48", [MapLeaf(BASE + 0x100000, "pte", 0x5000, Prot()),
                                              *pages(16, Prot(), pfn=0x10000),
                                              MapBlock(BASE + 0x10000, "pte", 0x10010, Prot())], vmas)
    assert summary(diff(empty, mixed)) == [
        ("added", "pte", BASE, BASE + 0x10000, 16, "present rw- user"),
        ("added", "pte", BASE + 0x10000, BASE + 0x20000, 16, "present rw- user contpte")]


def test_contpte_block_split() -> None:
    vmas = [Vma(BASE, BASE + 0x200000, VM_R | VM_W, "[anon]")]
    folded = model_snapshot("arm64", "4k-48", [MapBlock(BASE, "pte", 0x10000, Prot())], vmas)
    unfolded = model_snapshot("arm64", "4k-48", pages(16, Prot(), pfn=0x10000), vmas)
    assert summary(diff(folded, unfolded)) == [
        ("changed", "pte", BASE, BASE + 0x10000, 16, "contpte block split, PTE_CONT 1→0")]
    assert summary(diff(unfolded, folded))[0][-1] == "contpte block formed, PTE_CONT 0→1"


def test_cli_exit_status_and_json(tmp_path: Path) -> None:
    a, b, same, other = (tmp_path / f"{n}.json" for n in ("a", "b", "same", "other"))
    a.write_text(json.dumps(document(x86(pages(2, Prot())))))
    same.write_text(a.read_text())
    b.write_text(json.dumps(document(x86(pages(2, Prot(write=False))))))
    other.write_text(json.dumps(document(model_snapshot("arm64", "4k-48", pages(2, Prot()), VMAS))))
    runner = CliRunner()
    equal = runner.invoke(main, ["diff", str(a), str(same)])
    assert equal.exit_code == 0 and "(equal)" in equal.output
    changed = runner.invoke(main, ["diff", str(a), str(b), "--format", "json"])
    assert changed.exit_code == 1
    doc = json.loads(changed.output)
    assert doc["equal"] is False
    (delta,) = doc["differences"]
    assert (delta["status"], delta["start"], delta["end"], delta["entries"]) == ("changed", "0x10000000", "0x10002000", 2)
    assert delta["changes"] == [{"field": "_PAGE_RW", "before": 1, "after": 0, "text": "_PAGE_RW 1→0"}]
    table = runner.invoke(main, ["diff", str(a), str(b)])
    assert table.exit_code == 1 and "_PAGE_RW 1→0" in table.output and "2x4 KiB" in table.output
    mixed = runner.invoke(main, ["diff", str(a), str(other)])
    assert mixed.exit_code == 2 and "Traceback" not in mixed.output
    assert len(mixed.output.strip().splitlines()) == 1 and "nothing to compare" in mixed.output
    assert runner.invoke(main, ["diff", str(a), str(b), str(same)]).exit_code == 2


@pytest.mark.parametrize("one", ["a", "b"])
def test_tables_are_compared_only_when_both_sides_hold_them(one: str) -> None:
    with_tables = x86(pages(2, Prot()))
    doc = document(with_tables)
    no_tables = {**doc, "entries": [r for r in doc["entries"] if r["kind"] != "table"]}
    plain = Snapshot.from_document(no_tables, "dump.json")
    pair = (with_tables, plain) if one == "a" else (plain, with_tables)
    assert diff(*pair) == []


def test_range_limits_the_comparison() -> None:
    before = x86(pages(8, Prot()))
    after = x86(pages(8, Prot(write=False)))
    assert summary(diff(before, after, (BASE + 0x2000, BASE + 0x4000))) == [
        ("changed", "pte", BASE + 0x2000, BASE + 0x4000, 2, "_PAGE_RW 1→0")]
