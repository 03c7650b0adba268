"""`ptinspect summary` and `ptinspect map` on a live VM, checked against what the guest kernel says.

Expected numbers come from the guest: /proc/PID/smaps per VMA (Rss, AnonHugePages, Swap: the
workload's manifest and its answers to operations), /proc/PID/pagemap and /proc/kpageflags per page,
and /proc/PID/maps for the VMA list. The map is loaded in a real browser (Debian's headless Chromium):
its DOM after the script ran, and a screenshot whose pixels must show the legend's colours.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.manifest import Manifest, Region, parse
from ptinspect.inspector.vm.ops import OpResult, request
from ptinspect.inspector.vm.qemu import boot

from .browser import Element, dump_dom, elements, png_colours, screenshot
from .test_mm_operations import AGING

pytestmark = pytest.mark.integration

PTINSPECT = [sys.executable, "-m", "ptinspect.commands.cli"]
ROOT = Path(__file__).resolve().parents[2]
# x86-64 (no contiguous bit), arm64 (contpte: mTHP and 64 KiB hugetlb; with 16 KiB pages, 2 MiB contpte
# blocks and 32 MiB PMD leaves), riscv64 (Svnapot hugetlb)
SUMMARY_IMAGES = [("x86_64", "7.2"), ("arm64", "7.2"), ("arm64", "7.2-16k"), ("riscv64", "7.2")]
# Regions whose VMA holds nothing smaps leaves out of Rss or counts in it without a present entry: no
# shared zero page (vm_normal_page() is NULL: not in Rss), no hugetlb (Private_Hugetlb, not Rss), no
# PFN-carrying software entry (hwpoison: smaps_account() counts its page as resident), per
# smaps_pte_entry/smaps_pmd_entry, fs/proc/task_mmu.c (7.2).
RSS_KINDS = ("cow_parent", "anon_4k", "anon_none", "thp_2m", "mthp_64k", "file_private", "file_private_cow",
             "file_shared", "readonly", "protnone", "guard", "uffd_wp_marker", "uffd_wp_present",
             "uffd_wp_shmem_marker", "poison_marker", "swap")
KIB = 1024


@pytest.fixture(scope="module", params=SUMMARY_IMAGES, ids=[f"{a}-{k}" for a, k in SUMMARY_IMAGES])
def live_vm(request):
    arch, series = request.param
    image = ensure_image(image_for(arch, series))
    vm = boot(arch, series, detach=False)
    try:
        yield vm, image
    finally:
        vm.stop()


def cli(*args: str, timeout: float = 300) -> str:
    proc = subprocess.run([*PTINSPECT, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def target(vm, image) -> list[str]:
    return ["--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]


def summary_json(vm, image, pid: int) -> dict:
    return json.loads(cli("summary", *target(vm, image), "--pid", str(pid), "--format", "json"))


def vma_part(doc: dict, start: int, end: int) -> dict:
    parts = [p for p in doc["vmas"] if int(p["vma"]["start"], 16) == start and int(p["vma"]["end"], 16) == end]
    assert len(parts) == 1, f"no summary VMA {start:#x}-{end:#x}: " + str([p["label"] for p in doc["vmas"]])
    return parts[0]


def kind_bytes(part: dict, kind: str) -> int:
    return part["by_kind"].get(kind, {}).get("bytes", 0)


def regions(manifest: Manifest) -> dict[str, Region]:
    return {r.kind: r for r in manifest.regions if r.pid == manifest.pid and r.status == "ok"}


def contiguous_expected(region: Region, block_pages: int, page_size: int) -> int:
    """Bytes of the region in naturally aligned blocks of `block_pages` present pages that map
    consecutive, equally aligned frames of one large folio (kpageflags KPF_THP or KPF_HUGE): what
    the kernel maps with a contiguous bit (arm64 contpte_set_ptes, set_huge_pte_at) or Svnapot."""
    kpf_huge, kpf_thp = 1 << 17, 1 << 22  # include/uapi/linux/kernel-page-flags.h
    block, pages, total = block_pages * page_size, region.pages, 0
    for i, first in enumerate(pages[:len(pages) - block_pages + 1]):
        pm = first.pagemap
        if first.va % block or pm.pfn is None or pm.pfn % block_pages:
            continue
        if all(p.pagemap.pfn == pm.pfn + k and (p.kpageflags or 0) & (kpf_thp | kpf_huge)
               for k, p in enumerate(pages[i:i + block_pages])):
            total += block
    return total


def test_summary_matches_smaps_and_pagemap(live_vm):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    doc = summary_json(vm, image, manifest.pid)
    made = regions(manifest)
    checked = 0
    for kind in RSS_KINDS:
        region = made.get(kind)
        if region is None:  # not made on this kernel: test_live_dump checks that only the expected ones are
            continue
        v = region.vma
        assert v is not None, region
        part = vma_part(doc, v.start, v.end)
        present = part["present_bytes"]
        assert present == v.rss_kb * KIB, (kind, present, v)
        huge = v.anon_huge_kb + v.file_pmd_kb + v.shmem_pmd_kb
        assert part["huge_leaf_bytes"] == huge * KIB, (kind, part["huge_leaf_bytes"], v)
        assert kind_bytes(part, "swap") == v.swap_kb * KIB, (kind, part["by_kind"], v)
        pagemap_present = sum(p.pagemap.present for p in region.pages) * manifest.page_size
        if v.start == region.start and v.end == region.start + region.length:
            assert present == pagemap_present, (kind, present, pagemap_present)
        checked += 1
    assert checked >= 10, checked
    thp = vma_part(doc, made["thp_2m"].vma.start, made["thp_2m"].vma.end)  # type: ignore[union-attr]
    assert thp["huge_leaf_bytes"] >= 2048 * KIB and thp["coverage_pct"]["huge_leaves"] > 0
    assert kind_bytes(vma_part(doc, made["swap"].vma.start, made["swap"].vma.end), "swap") > 0  # type: ignore[union-attr]
    # markers: one entry per page the pagemap calls PM_SWAP with the marker's flag
    for kind, label in (("guard", "marker guard"), ("uffd_wp_marker", "marker uffd-wp"),
                        ("poison_marker", "marker poison")):
        if kind in made:
            r = made[kind]
            part = vma_part(doc, r.vma.start, r.vma.end)  # type: ignore[union-attr]
            swapped = sum(p.pagemap.swapped for p in r.pages)
            assert part["by_kind"][label]["entries"] == swapped > 0, (kind, part["by_kind"])
    # contiguous blocks: what the pagemap and kpageflags say the kernel could map contiguously
    cont_kinds = {"arm64": ("mthp_64k", "hugetlb_64k"), "riscv64": ("hugetlb_64k",)}.get(vm.arch, ())
    for kind in cont_kinds:
        r = made[kind]
        part = vma_part(doc, r.vma.start, r.vma.end)  # type: ignore[union-attr]
        # the block: CONT_PTE_SIZE, 1 << CONFIG_ARM64_CONT_PTE_SHIFT pages (arch/arm64/Kconfig: 4 with 4 KiB,
        # 7 with 16 KiB pages; asm/pgtable-hwdef.h), the
        # Svnapot 64 KiB order (arch/riscv/include/asm/pgtable-64.h NAPOT_CONT64KB_ORDER)
        block = 64 * KIB if manifest.page_size == 4096 else 2048 * KIB
        expected = contiguous_expected(r, block // manifest.page_size, manifest.page_size)
        assert expected > 0 and part["cont_bytes"] == expected, (kind, part["cont_bytes"], expected)
        assert any(s.startswith(("contpte", "napot")) for s in part["by_size"]), part["by_size"]
    if vm.arch == "x86_64":  # no contiguous bit on x86-64: the 64 KiB mTHP is plain PTEs
        assert doc["total"]["cont_bytes"] == 0
        assert set(vma_part(doc, made["mthp_64k"].vma.start, made["mthp_64k"].vma.end)["by_size"]) == {"pte 4K"}  # type: ignore[union-attr]
    total = doc["total"]
    assert total["present_bytes"] == sum(p["present_bytes"] for p in [*doc["vmas"], doc["outside_vmas"]])
    assert total["table_pages"][doc["target"]["paging"]["levels"][0]] == 1
    print(f"{vm.arch}: {checked} VMAs agree with smaps; total present {total['present_bytes'] // KIB} kB, "
          f"tables {total['table_pages']}")


def test_summary_after_pageout_matches_smaps_swap(live_vm):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    prepared = request(vm, ["prepare", "pageout"])
    assert prepared.status == "ok", prepared.reason
    answer: OpResult = request(vm, ["pageout", hex(prepared.start)])  # type: ignore[arg-type]
    assert answer.status == "ok", answer.reason
    assert answer.swap_kb > 0
    doc = summary_json(vm, image, manifest.pid)
    parts = [p for p in doc["vmas"] if int(p["vma"]["start"], 16) < answer.end
             and int(p["vma"]["end"], 16) > answer.start]  # type: ignore[operator]
    assert parts
    assert sum(kind_bytes(p, "swap") for p in parts) == answer.swap_kb * KIB
    swapped = sum(pm.swapped for _, pm in answer.pages()) * answer.page_size
    present = sum(pm.present for _, pm in answer.pages()) * answer.page_size
    assert swapped == answer.swap_kb * KIB
    assert sum(p["present_bytes"] for p in parts) == present


def row_elements(els: list[Element]) -> list[Element]:
    return [e for e in els if e.tag == "g" and {"vma", "row"} <= e.classes]


def test_map_in_a_browser(live_vm, tmp_path):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    page = tmp_path / "map.html"
    cli("map", *target(vm, image), "--pid", str(manifest.pid), "-o", str(page))
    maps = request(vm, ["maps"]).maps
    assert maps
    # /proc/PID/maps: every VMA of the mm ([vsyscall] is the gate area, no VMA of the mm)
    expected = {tuple(int(x, 16) for x in line.split()[0].split("-")) for line in maps if "[vsyscall]" not in line}
    els = elements(dump_dom(page))
    rows = row_elements(els)
    got = {(int(e.attrs["data-start"], 16), int(e.attrs["data-end"], 16)) for e in rows}
    assert got == expected, (sorted(got ^ expected))
    # huge leaves where smaps says AnonHugePages: PMD segments covering that many bytes of the VMA's row
    pmd = manifest.page_size * 512 if manifest.page_size == 4096 else 32 << 20
    made = regions(manifest)
    for r in made.values():
        if r.vma is None or not r.vma.anon_huge_kb:
            continue
        segs = [e for e in els if e.tag == "rect" and "seg" in e.classes
                and r.vma.start <= int(e.attrs["data-start"], 16) < r.vma.end
                and e.attrs["data-cat"].startswith("pmd ")]
        covered = sum(int(e.attrs["data-end"], 16) - int(e.attrs["data-start"], 16) for e in segs)
        assert covered == r.vma.anon_huge_kb * KIB and covered % pmd == 0, (r.kind, covered, r.vma)
    # the script ran: the detail view drew the selected row
    assert any(e.tag == "rect" and "dseg" in e.classes for e in els)
    # the screenshot shows the colours of the base pages and of the PMD leaves
    png = screenshot(page, tmp_path / "map.png", (1400, 900))
    colours = png_colours(png)
    legend = legend_colours(els)
    assert len(colours) > 20, len(colours)
    for cat in (next(c for c in legend if c.startswith("pte ")), next(c for c in legend if c.startswith("pmd "))):
        assert colours.get(legend[cat], 0) > 50, (cat, legend[cat])


def legend_colours(els: list[Element]) -> dict[str, tuple[int, int, int]]:
    """Each legend key's category and the RGB of its swatch (the <i> that follows it)."""
    out = {}
    for key, swatch in zip(els, els[1:]):
        if key.tag == "span" and "key" in key.classes and "data-cat" in key.attrs:
            colour = swatch.attrs["style"].split("#")[1][:6]
            out[key.attrs["data-cat"]] = (int(colour[0:2], 16), int(colour[2:4], 16), int(colour[4:6], 16))
    return out


def test_map_diff_in_a_browser(live_vm, tmp_path):
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    prepared = request(vm, ["prepare", "pageout"])
    assert prepared.status == "ok", prepared.reason
    a, b, page = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "diff.html"
    cli("snapshot", *target(vm, image), "--pid", str(manifest.pid), str(a))
    answer = request(vm, ["pageout", hex(prepared.start)])  # type: ignore[arg-type]
    assert answer.status == "ok", answer.reason
    cli("snapshot", *target(vm, image), "--pid", str(manifest.pid), str(b))
    cli("map", "--diff", str(a), str(b), "-o", str(page))
    els = elements(dump_dom(page))
    # every page the pagemap now calls swapped lies in a "changed" outline saying so; any other outline in
    # the region is an accessed bit that reclaim's look-around cleared (see test_mm_operations.py)
    swapped = {va for va, pm in answer.pages() if pm.swapped}
    assert swapped
    deltas = [(int(e.attrs["data-start"], 16), int(e.attrs["data-end"], 16), e.attrs["data-status"],
               e.attrs["data-change"]) for e in els if e.tag == "rect" and "delta" in e.classes]
    for va, _ in answer.pages():
        covering = [d for d in deltas if d[0] <= va < d[1]]
        if va in swapped:
            assert any(s == "changed" and "→ swap" in text for _, _, s, text in covering), (hex(va), covering)
        else:
            assert all(s == "changed" and set(text.split(", ")) <= AGING for _, _, s, text in covering), (
                hex(va), covering)
    swap_segs = [e for e in els if e.tag == "rect" and "seg" in e.classes and e.attrs["data-cat"] == "swap"
                 and answer.start <= int(e.attrs["data-start"], 16) < answer.end]  # type: ignore[operator]
    assert sum(int(e.attrs["data-entries"]) for e in swap_segs) == len(swapped)
    png = screenshot(page, tmp_path / "diff.png", (1400, 900), fragment="")
    assert len(png_colours(png)) > 20


def test_summary_and_map_on_every_target_and_in_gdb(live_vm, tmp_path):
    """The stopped VM seen through the gdbstub, QMP, an ELF vmcore of it and gdb's `pt`: one summary
    (the guest checks above pin its numbers; here every target must give them), and a map from each."""
    vm, image = live_vm
    manifest = parse(Path(vm.manifest).read_text())
    kernel = ["--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
    vmcore = tmp_path / "vmcore.elf"
    with Qmp(vm.qmp, timeout=30) as qmp:
        qmp.execute("stop")
    try:
        cli("vmcore", "--qmp", vm.qmp, "--gdb", vm.gdb, "--vmlinux", str(image.vmlinux), "--format", "elf",
            str(vmcore))
        targets = {"gdbstub": ["--gdb", vm.gdb, "--keep-stopped"], "qmp": ["--qmp", vm.qmp, "--keep-stopped"],
                   "vmcore": ["--vmcore", str(vmcore)]}
        docs = {}
        for name, where in targets.items():
            for what in (["--pid", str(manifest.pid)], ["--kernel"]):
                doc = json.loads(cli("summary", *where, *kernel, *what, "--format", "json"))
                doc["target"].pop("source")
                docs[name, what[0]] = doc
            cli("map", *where, *kernel, "--pid", str(manifest.pid), "-o", str(tmp_path / f"{name}.html"))
        for (name, what), doc in docs.items():
            assert doc == docs["gdbstub", what], (name, what)
        snap = tmp_path / "snap.json"  # a snapshot file, walked again, counts alike
        cli("snapshot", *targets["gdbstub"], *kernel, "--pid", str(manifest.pid), str(snap))
        again = json.loads(cli("summary", str(snap), "--format", "json"))
        assert {k: again[k] for k in ("total", "vmas", "outside_vmas")} == {
            k: docs["gdbstub", "--pid"][k] for k in ("total", "vmas", "outside_vmas")}
        assert docs["gdbstub", "--kernel"]["total"]["present_bytes"] > 0
        gdb = subprocess.run(
            ["gdb-multiarch", "-nx", "-batch", "-ex", f"source {ROOT / 'commands' / 'gdb_pt.py'}",
             "-ex", f"target remote {vm.gdb}",
             "-ex", f"pt summary {' '.join(kernel)} --pid {manifest.pid} --format json",
             "-ex", f"pt map {' '.join(kernel)} --pid {manifest.pid} -o {tmp_path / 'gdb.html'}",
             "-ex", "detach"], cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "PTINSPECT_PYTHON": sys.executable})  # this interpreter, in a worktree too
        assert gdb.returncode == 0, gdb.stdout[-2000:] + gdb.stderr[-2000:]
        lines = gdb.stdout.splitlines()
        assert "{" in lines, gdb.stdout[-3000:] + gdb.stderr[-3000:]
        start = lines.index("{")
        in_gdb = json.loads("\n".join(lines[start:lines.index("}", start) + 1]))
        assert in_gdb["target"].pop("source") == "gdb"
        assert in_gdb == docs["gdbstub", "--pid"]
        pages = {name: (tmp_path / f"{name}.html").read_text() for name in (*targets, "gdb")}
        rows = {name: sorted((e.attrs["data-start"], e.attrs["data-end"]) for e in row_elements(elements(page)))
                for name, page in pages.items()}
        assert all(r == rows["gdbstub"] for r in rows.values()) and rows["gdbstub"]
    finally:
        with Qmp(vm.qmp, timeout=30) as qmp:
            qmp.execute("cont")
