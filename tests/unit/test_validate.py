"""validate on page tables the reference model builds: clean as built, and every injected
defect flagged exactly once, at the slot it was injected into.

Values are encoded with inspector/model/<arch>.py (the kernel's macros, transliterated),
so a defect is "what the kernel would have written, changed one way".
"""
from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner

from ptinspect.archs import get_arch
from ptinspect.archs.common import Kind
from ptinspect.archs.versions import release_layout
from ptinspect.commands.cli import main
from ptinspect.inspector.kernel import Vma
from ptinspect.inspector.model.base import Prot, SwpFields
from ptinspect.inspector.model.builder import Builder, MapBlock, MapLeaf, MapSoftleaf, model_for
from ptinspect.inspector.records import hx
from ptinspect.inspector.snapshot import Snapshot
from ptinspect.inspector.validate import validate

from .test_snapshot import CONFIG, GIB, VM_R, VM_W, document, model_snapshot, mutated

X86 = ("x86_64", "4-level")
X86_USER = [
    *(MapLeaf(0x10000000 + i * 0x1000, "pte", 0x1000 + i, Prot(dirty=True)) for i in range(8)),
    MapSoftleaf(0x10010000, "pte", Kind.SWAP, value=5),
    MapSoftleaf(0x10011000, "pte", Kind.SWAP, value=6),
    MapSoftleaf(0x10012000, "pte", Kind.MARKER, markers=("guard",)),
    MapSoftleaf(0x10013000, "pte", Kind.HWPOISON, value=0x2345),
    MapSoftleaf(0x10014000, "pte", Kind.MIGRATION_WRITE, value=0x2346, young=True),
    MapSoftleaf(0x10015000, "pte", Kind.DEVICE_PRIVATE_WRITE, value=0xC0000),  # 3 GiB: device memory
    MapLeaf(0x10200000, "pmd", 0x40000, Prot(dirty=True)),
    *(MapLeaf(0x20000000 + i * 0x1000, "pte", 0x3000 + i, Prot(write=False)) for i in range(4)),
]
X86_VMAS = [Vma(0x10000000, 0x10400000, VM_R | VM_W, "[anon]"), Vma(0x20000000, 0x20004000, VM_R, "/lib/ro")]
X86_KERNEL = [
    MapLeaf(0xFFFF888000000000, "pmd", 0, Prot(user=False, dirty=True)),
    *(MapLeaf(0xFFFFFFFF81000000 + i * 0x1000, "pte", 0x1000 + i, Prot(user=False, write=False, exec=True))
      for i in range(4)),
    *(MapLeaf(0xFFFFFFFF82000000 + i * 0x1000, "pte", 0x2000 + i, Prot(user=False, dirty=True)) for i in range(4)),
    MapLeaf(0xFFFFFFFFFF600000, "pte", 0x3000, Prot(write=False)),  # vsyscall=emulate's page: user-readable
]
ARM64 = ("arm64", "4k-48")
ARM64_USER = [
    MapBlock(0x10000000, "pte", 0x10000, Prot(dirty=True)),
    MapBlock(0x10010000, "pte", 0x10010, Prot(young=False)),
    *(MapLeaf(0x10100000 + i * 0x1000, "pte", 0x2000 + i, Prot()) for i in range(4)),
    MapBlock(0x12000000, "pmd", 0x40000, Prot(dirty=True)),  # a 32 MiB hugetlb contiguous-PMD block
    MapSoftleaf(0x10020000, "pte", Kind.SWAP, value=9),
]
ARM64_VMAS = [Vma(0x10000000, 0x14000000, VM_R | VM_W, "[anon]")]
ARM64_KERNEL = [*(MapLeaf(0xFFFF800010000000 + i * 0x1000, "pte", 0x1000 + i, Prot(user=False, write=False, exec=True))
                  for i in range(4))]
RISCV = ("riscv64", "sv48")
RISCV_USER = [
    MapBlock(0x10000000, "pte", 0x10000, Prot(dirty=True)),
    *(MapLeaf(0x10100000 + i * 0x1000, "pte", 0x2000 + i, Prot()) for i in range(4)),
    MapLeaf(0x10200000, "pmd", 0x40000, Prot()),
    MapSoftleaf(0x10020000, "pte", Kind.SWAP, value=9),
]
RISCV_VMAS = [Vma(0x10000000, 0x10400000, VM_R | VM_W, "[anon]")]
FACTS = {"phys_addr_bits": 40}


def x86_user() -> Snapshot:
    return model_snapshot(*X86, X86_USER, X86_VMAS, facts=FACTS)


def located(report) -> list[tuple]:
    return [(f.check, f.va, f.level, f.table, f.index) for f in report.findings]


def expect_one(snap: Snapshot, rec: dict, check: str) -> None:
    """validate flags exactly the injected defect, at the mutated record's slot."""
    report = validate(snap)
    assert located(report) == [(check, int(rec["va"], 16), rec["level"], int(rec["table"], 16), rec["index"])], \
        [f.message for f in report.findings]
    assert report.failed


@pytest.mark.parametrize(("scene", "kernel"), [
    ((*X86, X86_USER, X86_VMAS), False), ((*X86, X86_KERNEL, ()), True),
    ((*ARM64, ARM64_USER, ARM64_VMAS), False), (("arm64", "4k-48-ttbr1", ARM64_KERNEL, ()), True),
    ((*RISCV, RISCV_USER, RISCV_VMAS), False),
], ids=["x86-user", "x86-kernel", "arm64-user", "arm64-kernel", "riscv-user"])
def test_built_tables_validate_clean(scene, kernel) -> None:
    arch, mode, mappings, vmas = scene
    report = validate(model_snapshot(arch, mode, mappings, vmas, kernel=kernel, facts=FACTS))
    assert not report.findings, [(f.check, hex(f.va), f.message) for f in report.findings]
    status = {o.check.id: o.status for o in report.outcomes}
    assert set(status.values()) <= {"pass", "skipped", "n/a"}
    assert status["model-view"] == status["well-formed"] == status["table-cycle"] == "pass"
    if kernel:
        assert status["kernel-wx"] == status["kernel-user"] == "pass" and status["vma-perms"] == "skipped"
    else:
        assert status["vma-cover"] == status["vma-perms"] == status["swap-offset"] == "pass"
    assert status["contpte"] == ("pass" if arch == "arm64" else "n/a")


def _x86_raw(depth: str, **kw) -> int:
    """A value the x86 model encodes (kw: swp=SwpFields or table=PA)."""
    mode = get_arch("x86_64").mode("4-level")
    model = model_for("x86_64")
    d = mode.level(depth)
    return model.mk_table(kw["table"], d, mode) if "table" in kw else model.mk_softleaf(kw["swp"], d, mode, release_layout("7.2", "x86_64"))


def _swp(m: MapSoftleaf) -> SwpFields:
    return Builder("x86_64", get_arch("x86_64").mode("4-level"), release_layout("7.2", "x86_64"), CONFIG).swp_fields(m)


X86_DEFECTS: list[tuple[str, int, str, Callable[[int, dict], int]]] = [
    ("reserved-bits", 0x10000000, "pte", lambda raw, rec: raw | 1 << 52),
    ("leaf-alignment", 0x10200000, "pmd", lambda raw, rec: raw | 1 << 13),
    ("pa-width", 0x10001000, "pte", lambda raw, rec: raw | 1 << 45),  # the CPU has 40 bits
    ("swap-type", 0x10010000, "pte", lambda raw, rec: _x86_raw("pte", swp=SwpFields(5, 5))),
    ("swap-offset", 0x10011000, "pte", lambda raw, rec: _x86_raw("pte", swp=SwpFields(0, 4096))),
    ("swap-offset", 0x10011000, "pte", lambda raw, rec: _x86_raw("pte", swp=SwpFields(0, 0))),
    ("softleaf-pfn", 0x10013000, "pte",
     lambda raw, rec: _x86_raw("pte", swp=_swp(MapSoftleaf(0, "pte", Kind.HWPOISON, value=0x90000)))),
    ("softleaf-pfn", 0x10015000, "pte",
     lambda raw, rec: _x86_raw("pte", swp=_swp(MapSoftleaf(0, "pte", Kind.DEVICE_PRIVATE_WRITE, value=0x100)))),
    ("marker-bits", 0x10012000, "pte",
     lambda raw, rec: _x86_raw("pte", swp=dataclasses.replace(
         s := _swp(MapSoftleaf(0, "pte", Kind.MARKER, markers=("guard",))), offset=s.offset | 1 << 3))),
    ("table-cycle", 0x10000000, "pmd", lambda raw, rec: _x86_raw("pmd", table=int(rec["table"], 16))),
    ("table-ram", 0x10000000, "pmd", lambda raw, rec: _x86_raw("pmd", table=3 * GIB)),
    ("vma-perms", 0x20001000, "pte", lambda raw, rec: raw | 1 << 1),  # _PAGE_RW in an r--p VMA
    ("well-formed", 0, "pgd", lambda raw, rec: raw | 1 << 7),  # PS in a PML4 entry is reserved
]


@pytest.mark.parametrize(("check", "va", "level", "change"), X86_DEFECTS,
                         ids=[f"{c}-{i}" for i, (c, *_rest) in enumerate(X86_DEFECTS)])
def test_x86_defect_is_flagged_exactly(check, va, level, change) -> None:
    base = x86_user()
    rec = next(r for r in base.records if int(r["va"], 16) == va and r["level"] == level)
    snap, rec = mutated(base, va, level, lambda raw: change(raw, rec))
    expect_one(snap, rec, check)


def test_shared_table_is_flagged_at_the_second_pointer() -> None:
    base = x86_user()
    first = next(r for r in base.records if r["va"] == "0x10000000" and r["level"] == "pmd")
    snap, rec = mutated(base, 0x10200000, "pmd", lambda raw: _x86_raw("pmd", table=int(first["next_table"], 16)))
    expect_one(snap, rec, "table-shared")


def test_entry_beyond_its_vma_is_flagged() -> None:
    base = x86_user()
    doc = copy.deepcopy(document(base))
    doc["target"]["vmas"][0]["end"] = hx(0x10300000)  # the VMA now ends inside the 2 MiB leaf
    expect_one(Snapshot.from_document(doc, "shrunk"), next(
        r for r in base.records if r["va"] == "0x10200000" and r["level"] == "pmd"), "vma-cover")


@pytest.mark.parametrize(("check", "va", "change"), [
    ("kernel-wx", 0xFFFFFFFF82001000, lambda raw: raw & ~(1 << 63)),  # an RW page loses NX
    ("kernel-user", 0xFFFFFFFF81002000, lambda raw: raw | 1 << 2),  # _PAGE_USER on kernel text
])
def test_x86_kernel_defect_is_flagged_exactly(check, va, change) -> None:
    snap, rec = mutated(model_snapshot(*X86, X86_KERNEL, kernel=True), va, "pte", change)
    expect_one(snap, rec, check)


@pytest.mark.parametrize(("table_change", "flagged"), [
    (lambda raw: raw, True),  # the PMD entry allows what the leaf allows: W+X
    (lambda raw: raw | 1 << 63, False),  # XD in the PMD entry: nothing below executes
    (lambda raw: raw & ~(1 << 1), False),  # R/W clear in the PMD entry: nothing below is writable
    (lambda raw: raw & ~(1 << 2), True),  # U/S clear: says nothing about W or X
])
def test_x86_wx_is_judged_through_the_table_entries(table_change, flagged) -> None:
    """x86's W^X rule is the kernel's effective_prot: R/W and XD of the table entries on the path
    restrict the leaf (arch/x86/mm/dump_pagetables.c:251-267 in 7.2)."""
    leaf_va = 0xFFFFFFFF82001000
    snap, leaf = mutated(model_snapshot(*X86, X86_KERNEL, kernel=True), leaf_va, "pte", lambda raw: raw & ~(1 << 63))
    pmd_va = leaf_va & ~((1 << 21) - 1)
    snap, pmd = mutated(snap, pmd_va, "pmd", table_change)
    assert pmd["kind"] == "table"
    report = validate(snap)
    assert located(report) == ([("kernel-wx", leaf_va, "pte", int(leaf["table"], 16), leaf["index"])] if flagged
                               else []), [f.message for f in report.findings]


def test_model_view_catches_a_decoder_that_misreads(monkeypatch: pytest.MonkeyPatch) -> None:
    snap = x86_user()
    arch = get_arch("x86_64")
    bad = int(next(r for r in snap.records if r["va"] == "0x10003000" and r["level"] == "pte")["raw"], 16)
    decode = arch.decode

    def misread(raw, depth, mode, facts):
        dec = decode(raw, depth, mode, facts)
        return dataclasses.replace(dec, pfn=dec.pfn + 1) if raw == bad else dec

    monkeypatch.setattr(arch, "decode", misread)
    report = validate(snap)
    assert [(f.check, f.va) for f in report.findings] == [("model-view", 0x10003000)]
    assert "pte_pfn() is 0x1003, the decoder's pfn 0x1004" in report.findings[0].message


PTE_CONT, PTE_UXN = 1 << 52, 1 << 54


@pytest.mark.parametrize(("va", "level", "change", "words"), [
    (0x10005000, "pte", lambda raw: raw & ~PTE_CONT, "without it: a partial block"),
    (0x10005000, "pte", lambda raw: raw + (1 << 12), "frame 0x10006 where the block needs 0x10005"),
    (0x10005000, "pte", lambda raw: raw | 1 << 2, "attributes differ from the block's other entries in bits 0x4"),
    (0x10101000, "pte", lambda raw: raw | PTE_CONT, "only 1 of the 16 entries"),
    (0x12600000, "pmd", lambda raw: raw & ~PTE_CONT, "16-entry contpmd block at 0x12000000"),
    (0x10102000, "pte", lambda raw: raw | 1 << 63, None),
])
def test_arm64_defect_is_flagged_exactly(va, level, change, words) -> None:
    snap, rec = mutated(model_snapshot(*ARM64, ARM64_USER, ARM64_VMAS), va, level, change)
    expect_one(snap, rec, "contpte" if words else "reserved-bits")
    if words:
        assert words in validate(snap).findings[0].message


def test_arm64_block_on_misaligned_frames_is_one_finding() -> None:
    doc = copy.deepcopy(document(model_snapshot(*ARM64, ARM64_USER, ARM64_VMAS)))
    block = [r for r in doc["entries"] if r.get("cont") and r["cont"]["block_va"] == "0x10010000"]
    for r in block:
        r["raw"] = hx(int(r["raw"], 16) + (1 << 12))  # every frame one up: consistent, but not aligned
    report = validate(Snapshot.from_document(doc, "shifted"))
    assert located(report) == [("contpte", 0x10010000, "pte", int(block[0]["table"], 16), block[0]["index"])]
    assert "starts at frame 0x10011, not aligned to its 16 frames" in report.findings[0].message


def test_arm64_kernel_page_executable_at_el0() -> None:
    snap, rec = mutated(model_snapshot("arm64", "4k-48-ttbr1", ARM64_KERNEL, kernel=True), 0xFFFF800010001000,
                        "pte", lambda raw: raw & ~PTE_UXN)
    expect_one(snap, rec, "kernel-user")


@pytest.mark.parametrize(("check", "va", "level", "change"), [
    ("napot", 0x10005000, "pte", lambda raw: raw & ~(1 << 2)),  # _PAGE_WRITE off in one of 16
    ("napot", 0x10005000, "pte", lambda raw: raw + (16 << 10)),  # the next 64 KiB: another frame
    ("well-formed", 0x10005000, "pte", lambda raw: raw & ~(0xF << 10) | 0x4 << 10),  # NAPOT order 3
    ("reserved-bits", 0x10101000, "pte", lambda raw: raw | 1 << 55),
    ("leaf-alignment", 0x10200000, "pmd", lambda raw: raw | 1 << 11),  # PPN bit 1 of a 2 MiB leaf
])
def test_riscv_defect_is_flagged_exactly(check, va, level, change) -> None:
    snap, rec = mutated(model_snapshot(*RISCV, RISCV_USER, RISCV_VMAS), va, level, change)
    expect_one(snap, rec, check)


def test_missing_facts_skip_with_the_reason() -> None:
    doc = copy.deepcopy(document(x86_user()))
    for name in ("nr_swapfiles", "swap_info[0].max"):
        del doc["target"]["facts"][name]
    del doc["target"]["ram"]
    report = validate(Snapshot.from_document(doc, "sparse"))
    reasons = {o.check.id: o.reason for o in report.outcomes if o.status == "skipped"}
    assert "swap devices are not known" in reasons["swap-offset"]
    assert "RAM ranges not recorded" in reasons["softleaf-pfn"]


def test_cli_exit_status_and_locations(tmp_path) -> None:
    clean, bad = tmp_path / "clean.json", tmp_path / "bad.json"
    clean.write_text(json.dumps(document(x86_user())))
    snap, rec = mutated(x86_user(), 0x10000000, "pte", lambda raw: raw | 1 << 53)
    bad.write_text(json.dumps(document(snap)))
    runner = CliRunner()
    ok = runner.invoke(main, ["validate", str(clean)])
    assert ok.exit_code == 0 and "# clean: no check failed" in ok.output
    found = runner.invoke(main, ["validate", str(bad), "--format", "json"])
    assert found.exit_code == 1
    finding, = json.loads(found.output)["findings"]
    assert (finding["check"], finding["va"], finding["table"], finding["index"]) == (
        "reserved-bits", "0x10000000", rec["table"], rec["index"])
    table = runner.invoke(main, ["validate", str(bad)])
    assert f"{int(rec['table'], 16):#x}[{rec['index']}]" in table.output and "reserved bits 53" in table.output
    listed = runner.invoke(main, ["validate", "--list-checks"])
    assert listed.exit_code == 0 and "contpte [arm64]" in listed.output
    assert runner.invoke(main, ["validate", str(clean), "--check", "nonsense"]).exit_code == 2
    assert runner.invoke(main, ["validate", str(clean), "--pid", "1"]).exit_code == 2


def test_block_cut_by_the_snapshot_range_is_not_partial() -> None:
    doc = copy.deepcopy(document(model_snapshot(*ARM64, ARM64_USER, ARM64_VMAS)))
    lo = 0x10008000  # the snapshot was taken from the middle of the first contpte block
    doc["target"]["selection"]["va_range"] = [hx(lo), hx(0x14000000)]
    doc["entries"] = [r for r in doc["entries"] if r["kind"] == "table" or int(r["va"], 16) >= lo]
    report = validate(Snapshot.from_document(doc, "cut"))
    assert not report.findings, [f.message for f in report.findings]


def _with_device_memory(snap: Snapshot, ranges: list[tuple[int, int]]) -> Snapshot:
    doc = copy.deepcopy(document(snap))
    doc["target"]["device_private"] = {"ranges": [[hx(a), hx(b)] for a, b in ranges], "source": "test"}
    return Snapshot.from_document(doc, "with device memory")


DEVICE = [(3 * GIB, 3 * GIB + 0x1000000)]  # the model's device-private frame 0xC0000 is at 3 GiB


def test_device_private_frame_outside_the_device_memory_is_flagged() -> None:
    base = _with_device_memory(x86_user(), DEVICE)
    report = validate(base)
    assert not report.findings and {o.check.id: o.status for o in report.outcomes}["device-private-range"] == "pass"
    moved = _x86_raw("pte", swp=_swp(MapSoftleaf(0, "pte", Kind.DEVICE_PRIVATE_WRITE, value=0xC1000)))  # 3 GiB + 16 MiB
    snap, rec = mutated(base, 0x10015000, "pte", lambda raw: moved)
    expect_one(_with_device_memory(snap, DEVICE), rec, "device-private-range")


def test_device_private_range_unknown_skips_with_the_reason() -> None:
    doc = copy.deepcopy(document(x86_user()))
    doc["target"]["device_private"] = {"ranges": None, "unknown": "cannot read iomem_resource: test"}
    report = validate(Snapshot.from_document(doc, "unknown device memory"))
    reasons = {o.check.id: o.reason for o in report.outcomes if o.status == "skipped"}
    assert "cannot read iomem_resource: test" in reasons["device-private-range"]


def test_a_device_offset_is_no_frame_to_judge() -> None:
    """Without device_private_pfn (the seed series) the number is an offset in the device's own space:
    neither the RAM rule nor the device-range rule applies to it."""
    snap, rec = mutated(_with_device_memory(x86_user(), DEVICE), 0x10015000, "pte", lambda raw: _x86_raw(
        "pte", swp=_swp(MapSoftleaf(0, "pte", Kind.DEVICE_PRIVATE_WRITE, value=0x100))))  # in RAM if a frame
    layout = snap.facts.layout
    assert layout is not None
    offsets = dataclasses.replace(snap, facts=dataclasses.replace(snap.facts, layout=dataclasses.replace(
        layout, features=layout.features - {"device_private_pfn"})))
    assert located(validate(snap)) == [(c, 0x10015000, "pte", int(rec["table"], 16), rec["index"])
                                       for c in ("device-private-range", "softleaf-pfn")]
    assert located(validate(offsets)) == []
