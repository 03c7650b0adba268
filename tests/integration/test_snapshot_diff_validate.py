"""snapshot, validate and diff against real Debian kernels booted under QEMU.

A fresh boot must validate clean (a finding there is a ptinspect bug until proven
otherwise); each defect injected into a real snapshot must be flagged exactly once, at
the slot it was injected into; diff must name what differs between fork's parent and
child (copy-on-write) and what a mutation changed.
"""
from __future__ import annotations

import copy
import dataclasses
import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from ptinspect.inspector.model.builder import model_for
from ptinspect.inspector.records import hx
from ptinspect.inspector.snapshot import Snapshot, load
from ptinspect.inspector.validate import validate
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.manifest import Manifest, parse

from .kernels import IDS, IMAGES

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def region(manifest: Manifest, name: str) -> tuple[int, int]:
    r = next(r for r in manifest.regions if r.name == name)
    assert r.status == "ok" and r.start is not None, (name, r.status)
    return r.start, r.start + r.length


def entry(snap: Snapshot, pred: Callable[[dict], bool]) -> dict:
    return next(r for r in snap.records if pred(r))


def inside(rec: dict, span: tuple[int, int], level: str) -> bool:
    return rec["level"] == level and span[0] <= int(rec["va"], 16) < span[1]


def mutate(snap: Snapshot, rec: dict, raw: int) -> Snapshot:
    doc = copy.deepcopy({"schema": "ptinspect.snapshot/1", "target": snap.target, "entries": snap.records})
    mine = next(r for r in doc["entries"] if (r["table"], r["index"]) == (rec["table"], rec["index"]))
    mine["raw"] = hx(raw)
    return Snapshot.from_document(doc, f"{snap.name} with {rec['va']} {rec['level']} = {hx(raw)}")


def flagged(snap: Snapshot, rec: dict) -> list[tuple]:
    return [(f.check, f.va, f.level, f.table, f.index) for f in validate(snap).findings]


def at(rec: dict, check: str) -> list[tuple]:
    return [(check, int(rec["va"], 16), rec["level"], int(rec["table"], 16), rec["index"])]


@pytest.fixture(params=IMAGES, ids=IDS)
def booted(request, vm, tmp_path: Path) -> dict[str, Any]:
    """A freshly booted VM, and CLI snapshots of its workload, the fork child and the kernel."""
    arch, series = request.param
    machine = vm(arch, series)
    image = ensure_image(image_for(arch, series))
    manifest = parse(Path(machine.manifest).read_text())
    target = ["--gdb", machine.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
    files = {}
    for name, root in (("parent", ["--pid", str(manifest.pid)]), ("child", ["--pid", str(manifest.child_pid)]),
                       ("kernel", ["--kernel"])):
        files[name] = tmp_path / f"{name}.json"
        proc = cli("snapshot", *target, *root, str(files[name]))
        assert proc.returncode == 0, proc.stderr
    return {"arch": arch, "manifest": manifest, "target": target, "files": files, "tmp": tmp_path}


def fresh_boot_validates_clean(booted) -> None:
    for name, path in booted["files"].items():
        proc = cli("validate", str(path), "--format", "json")
        report = json.loads(proc.stdout)
        assert proc.returncode == 0, (name, report["findings"][:10])
        status = {c["id"]: c["status"] for c in report["checks"]}
        assert status["well-formed"] == status["model-view"] == status["table-ram"] == "pass"
        if name == "kernel":
            assert status["kernel-wx"] == status["kernel-user"] == "pass"
        else:
            assert status["vma-cover"] == status["vma-perms"] == status["swap-offset"] == "pass"
    live = cli("validate", *booted["target"], "--pid", str(booted["manifest"].pid))
    assert live.returncode == 0 and "# clean" in live.stdout, live.stdout + live.stderr


def injected_defects_are_flagged_exactly(booted) -> None:
    snap = load(booted["files"]["parent"])
    manifest = booted["manifest"]
    model = model_for(snap.arch.name)
    mode, layout = snap.mode, snap.facts.layout
    anon = entry(snap, lambda r: inside(r, region(manifest, "anon_4k"), "pte") and r["kind"] == "present")
    # The leaf kinds take the granule's sizes: a PMD maps page_size / 8 base pages (8-byte entries), so
    # 2 MiB with 4 KiB pages and 32 MiB with 16 KiB ones (arch/arm64/include/asm/pgtable-hwdef.h PMD_SIZE).
    page = manifest.page_size
    sized = {k: manifest.region(k).status for k in ("thp_2m", "mthp_64k", "hugetlb_64k")}
    assert manifest.region("thp_2m").page_size == page * (page // 8), manifest.region("thp_2m")
    swap = entry(snap, lambda r: inside(r, region(manifest, "swap"), "pte") and r["kind"] == "swap")
    table = entry(snap, lambda r: r["kind"] == "table" and r["level"] == "pmd")
    raw = lambda r: int(r["raw"], 16)  # noqa: E731
    swp = model.softleaf_from_pte(raw(swap), mode.level("pte"), mode, layout)
    defects = [
        ("reserved-bits", anon, raw(anon) | 1 << {"x86_64": 52, "arm64": 63, "riscv64": 55}[snap.arch.name]),
        ("swap-type", swap, model.mk_softleaf(dataclasses.replace(swp, type=5), mode.level("pte"), mode, layout)),
        ("table-cycle", table, model.mk_table(int(table["table"], 16), mode.level("pmd"), mode)),
    ]
    if sized["thp_2m"] == "ok":
        # a frame bit inside the block (the one above the page offset; riscv64: PPN from bit 10)
        thp = entry(snap, lambda r: inside(r, region(manifest, "thp_2m"), "pmd") and r["kind"] == "present")
        defects.append(("leaf-alignment", thp, raw(thp) | (page << 1 if snap.arch.name != "riscv64" else 1 << 11)))
    if snap.arch.name == "arm64" and "ok" in (sized["mthp_64k"], sized["hugetlb_64k"]):
        block = [r for r in snap.records if r.get("cont") and r["cont"]["scheme"] == "contpte"]
        fifth = next(r for r in block if r["cont"]["index"] == 5)
        defects += [("contpte", fifth, raw(fifth) & ~(1 << 52)),  # PTE_CONT cleared in one entry
                    ("contpte", fifth, raw(fifth) + page)]  # its frame shifted by one
    if snap.arch.name == "riscv64":
        block = [r for r in snap.records if r.get("cont") and r["cont"]["scheme"] == "napot"]
        fifth = next(r for r in block if r["cont"]["index"] == 5)
        defects += [("napot", fifth, raw(fifth) & ~(1 << 2))]  # _PAGE_WRITE cleared in one of 16
    for check, rec, value in defects:
        assert flagged(mutate(snap, rec, value), rec) == at(rec, check), (check, rec)
    bad = booted["tmp"] / "bad.json"
    m = mutate(snap, anon, defects[0][2])
    bad.write_text(json.dumps({"schema": "ptinspect.snapshot/1", "target": m.target, "entries": m.records}))
    proc = cli("validate", str(bad))
    assert proc.returncode == 1 and f"{int(anon['table'], 16):#x}[{anon['index']}]" in proc.stdout, proc.stdout


def diff_names_copy_on_write_and_mutations(booted) -> None:
    files, manifest = booted["files"], booted["manifest"]
    proc = cli("diff", str(files["parent"]), str(files["child"]), "--format", "json")
    assert proc.returncode == 1, proc.stderr
    cow = region(manifest, "cow_parent")
    parent, child = load(files["parent"]), load(files["child"])
    for snap in (parent, child):  # fork write-protected both sides (copy_present_pte)
        pages = [r for r in snap.records if inside(r, cow, "pte")]
        assert len(pages) == (cow[1] - cow[0]) // manifest.page_size
        assert all(r["kind"] == "present" and not r["access"]["write"] for r in pages)
    for d in json.loads(proc.stdout)["differences"]:
        if d["level"] == "pte" and cow[0] <= int(d["start"], 16) < cow[1]:
            # same frames; at most the young bit differs (the child's entries are made old)
            assert d["status"] == "changed" and {c["field"] for c in d["changes"]} <= {"_PAGE_ACCESSED", "PTE_AF"}, d
    # The idle workload, live: only the kernel's page aging (accessed bits cleared) may differ.
    live = cli("diff", str(files["parent"]), *booted["target"], "--format", "json")
    assert live.returncode in (0, 1), live.stderr
    for d in json.loads(live.stdout)["differences"]:
        assert d["status"] == "changed" and [c["text"] for c in d["changes"]] in (
            ["_PAGE_ACCESSED 1→0"], ["PTE_AF 1→0"]), d
    anon = entry(parent, lambda r: inside(r, region(manifest, "anon_4k"), "pte") and r["kind"] == "present")
    write_bit = {"x86_64": (1 << 1, "_PAGE_RW"), "arm64": (1 << 51, "PTE_WRITE"), "riscv64": (1 << 2, "_PAGE_WRITE")}
    bit, name = write_bit[parent.arch.name]
    m = mutate(parent, anon, int(anon["raw"], 16) & ~bit)
    changed = booted["tmp"] / "changed.json"
    changed.write_text(json.dumps({"schema": "ptinspect.snapshot/1", "target": m.target, "entries": m.records}))
    proc = cli("diff", str(files["parent"]), str(changed), "--format", "json")
    assert proc.returncode == 1
    (d,) = json.loads(proc.stdout)["differences"]
    assert (d["status"], d["start"], d["entries"]) == ("changed", anon["va"], 1)
    assert [c["text"] for c in d["changes"]] == [f"{name} 1→0"]


def test_snapshot_validate_diff(booted) -> None:
    """One boot per architecture for all three: clean, defects, diffs."""
    fresh_boot_validates_clean(booted)
    injected_defects_are_flagged_exactly(booted)
    diff_names_copy_on_write_and_mutations(booted)
