"""Snapshots: written atomically, read back, walked again to the very entries the target gave.

`model_snapshot` (used by test_validate and test_diff too) lays out page tables with the
reference model's builder (the kernel's macros, transliterated) and snapshots them through
the same session/walker/records path a live target takes.
"""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from ptinspect.archs import get_arch
from ptinspect.archs.common import Fact, KernelFacts, Kind
from ptinspect.archs.versions import release_layout
from ptinspect.commands.cli import main
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import Builder, MapLeaf, Mapping, MapSoftleaf
from ptinspect.inspector.records import SCHEMA, hx
from ptinspect.inspector.session import Root, Session
from ptinspect.inspector.snapshot import Snapshot, SnapshotError, atomic_text, live_snapshot, load, write_snapshot
from ptinspect.inspector.walker import Walker

GIB = 1 << 30
RAM = [(0, 2 * GIB)]  # the memblock.memory the model snapshots record
CONFIG = {"CONFIG_MIGRATION": True, "CONFIG_DEVICE_PRIVATE": True, "CONFIG_MEMORY_FAILURE": True}
# Facts the reference models assume (see their docstrings), and one 4096-slot swap device.
BASE_FACTS = {"CONFIG_TRANSPARENT_HUGEPAGE": True, "CONFIG_SPARSEMEM": True, "CONFIG_MEM_SOFT_DIRTY": True,
              "CONFIG_HAVE_ARCH_USERFAULTFD_WP": True, "CONFIG_USERFAULTFD": True,
              "swap_migration_ad_supported": True, "nr_swapfiles": 1, "swap_info[0].max": 4096}
VM_R, VM_W, VM_X = 0x1, 0x2, 0x4  # include/linux/mm.h VM_READ / VM_WRITE / VM_EXEC


def model_snapshot(arch_name: str, mode_name: str, mappings: Sequence[Mapping], vmas: Sequence[Vma] = (), *,
                   kernel: bool = False, family: str = "7.2", facts: dict[str, Any] | None = None) -> Snapshot:
    """A snapshot of page tables built by the reference model: a process's (user half, with
    `vmas`) or, with `kernel`, a kernel root (arm64: its TTBR1 mode)."""
    arch = get_arch(arch_name)
    mode = arch.mode(mode_name)
    builder = Builder(arch_name, mode, release_layout(family, arch_name), CONFIG, mem_size=4 * GIB)
    built = builder.build(list(mappings))
    kf = KernelFacts(layout=release_layout(family, arch_name), release=None, facts={
        k: Fact(v, "test") for k, v in {**CONFIG, **BASE_FACTS, **(facts or {})}.items()})
    session = Session(built.memory, arch, {}, "model builder", facts=kf)
    upper = kernel and arch.split_roots
    root = Root(built.root, mode, upper, "init_mm" if kernel else "pid 1 (model)", tuple(vmas), process=not kernel)
    top = 1 << (mode.va_bits if arch.split_roots else mode.va_bits - 1)
    va_range = None if kernel else (0, top)
    snap = live_snapshot(session, root, {"kernel": True} if kernel else {"pid": 1}, va_range)
    target = {**snap.target, "ram": {"ranges": [[hx(a), hx(b)] for a, b in RAM], "source": "test"}}
    return Snapshot.from_document({"schema": SCHEMA, "target": target, "entries": snap.records}, "model")


def document(snap: Snapshot) -> dict[str, Any]:
    return {"schema": SCHEMA, "target": snap.target, "entries": snap.records}


def record(snap: Snapshot, va: int, level: str) -> dict[str, Any]:
    return next(r for r in snap.records if int(r["va"], 16) == va and r["level"] == level)


def mutated(snap: Snapshot, va: int, level: str, change: Callable[[int], int]) -> tuple[Snapshot, dict[str, Any]]:
    """A copy of `snap` whose entry at (va, level) holds change(raw); and that entry's record."""
    doc = copy.deepcopy(document(snap))
    rec = next(r for r in doc["entries"] if int(r["va"], 16) == va and r["level"] == level)
    rec["raw"] = hx(change(int(rec["raw"], 16)))
    return Snapshot.from_document(doc, "mutated"), rec


X86_MAPPINGS = [
    *(MapLeaf(0x10000000 + i * 0x1000, "pte", 0x1000 + i, Prot(dirty=True)) for i in range(8)),
    MapSoftleaf(0x10010000, "pte", Kind.SWAP, value=5),
    MapSoftleaf(0x10011000, "pte", Kind.MARKER, markers=("guard",)),
    MapLeaf(0x10200000, "pmd", 0x40000, Prot()),
]
X86_VMAS = [Vma(0x10000000, 0x10400000, VM_R | VM_W, "[anon]")]


@pytest.fixture
def x86_snapshot() -> Snapshot:
    return model_snapshot("x86_64", "4-level", X86_MAPPINGS, X86_VMAS)


def test_snapshot_walks_again_to_the_same_entries(x86_snapshot: Snapshot) -> None:
    arch = get_arch("x86_64")
    mode = arch.mode("4-level")
    builder = Builder("x86_64", mode, release_layout("7.2", "x86_64"), CONFIG, mem_size=4 * GIB)
    built = builder.build(list(X86_MAPPINGS))
    direct = [(e.va, e.ref, e.hw.raw, e.kind) for e in Walker(built.memory, arch, mode, x86_snapshot.facts)
              .walk(built.root, va_range=(0, 1 << 47), tables=True)]
    again = [(e.va, e.ref, e.hw.raw, e.kind) for e in x86_snapshot.walk()]
    assert again == direct
    kinds = [k for *_, k in again]
    # 4 table entries (pgd, pud, pmd -> pte table) + 8 pages, swap, marker + the 2 MiB leaf.
    assert kinds.count(Kind.TABLE) == 3 and kinds.count(Kind.PRESENT) == 9
    assert {Kind.SWAP, Kind.MARKER} <= set(kinds)


def test_target_record_has_what_decoding_needs(x86_snapshot: Snapshot) -> None:
    t = x86_snapshot.target
    assert (t["arch"], t["layout"], t["paging"]["mode"], t["paging"]["pa_bits"]) == ("x86_64", "7.2", "4-level", 52)
    assert t["facts"]["CONFIG_MIGRATION"] == {"value": True, "source": "test"}
    assert t["vmas"] == [{"start": "0x10000000", "end": "0x10400000", "perms": "rw-p", "flags": "0x3", "name": "[anon]"}]
    assert t["selection"] == {"pid": 1, "va_range": ["0x0", "0x800000000000"], "tables": True}
    assert x86_snapshot.walkable() is None


def test_write_and_load_round_trip(tmp_path: Path, x86_snapshot: Snapshot) -> None:
    arch = get_arch("x86_64")
    mode = arch.mode("4-level")
    built = Builder("x86_64", mode, release_layout("7.2", "x86_64"), CONFIG, mem_size=4 * GIB).build(list(X86_MAPPINGS))
    session = Session(built.memory, arch, {}, "model builder", facts=x86_snapshot.facts)
    root = Root(built.root, mode, False, "pid 1 (model)", tuple(X86_VMAS), process=True)
    out = tmp_path / "snap.json"
    n = write_snapshot(out, session, root, {"pid": 1}, (0, 1 << 47))
    back = load(out)
    assert n == len(back.records) == len(x86_snapshot.records)
    assert back.records == x86_snapshot.records
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]


class Boom(Exception):
    pass


@pytest.mark.parametrize("interrupt", [Boom, KeyboardInterrupt])
def test_atomic_write_leaves_nothing_half_written(tmp_path: Path, interrupt: type[BaseException]) -> None:
    out = tmp_path / "snap.json"
    out.write_text("the previous snapshot")
    with pytest.raises(interrupt):
        with atomic_text(out) as f:
            f.write('{"schema": "ptinspect.snapshot/1", "entries": [')
            raise interrupt()
    assert out.read_text() == "the previous snapshot"
    assert [p.name for p in tmp_path.iterdir()] == ["snap.json"]


def test_atomic_write_into_a_missing_directory_is_one_error(tmp_path: Path) -> None:
    with pytest.raises(SnapshotError, match="cannot write in"):
        with atomic_text(tmp_path / "nowhere" / "snap.json"):
            pass


def test_bad_files_are_one_clear_error(tmp_path: Path, x86_snapshot: Snapshot) -> None:
    cut = tmp_path / "cut.json"
    cut.write_text(json.dumps(document(x86_snapshot))[:500])
    with pytest.raises(SnapshotError, match="is not JSON"):
        load(cut)
    other = tmp_path / "other.json"
    other.write_text('{"schema": "something/2"}')
    with pytest.raises(SnapshotError, match="is not a ptinspect.snapshot/1 document"):
        load(other)
    runner = CliRunner()
    for args in (["validate", str(cut)], ["diff", str(cut), str(other)], ["validate", str(tmp_path / "none.json")]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, result.output
        assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_a_dump_without_tables_cannot_be_walked(x86_snapshot: Snapshot) -> None:
    doc = document(x86_snapshot)
    doc = {**doc, "target": {**doc["target"], "selection": {"pid": 1, "tables": False}},
           "entries": [r for r in doc["entries"] if r["kind"] != "table"]}
    snap = Snapshot.from_document(doc, "dump.json")
    with pytest.raises(SnapshotError, match="holds no table entries"):
        list(snap.walk())
