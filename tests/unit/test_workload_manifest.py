"""Host-side tests of the workload manifest: finding it in a console log, parsing, validation.

Pagemap expectations come from fs/proc/task_mmu.c (7.2): PM_PRESENT bit 63, PM_SWAP 62, PM_FILE 61,
PM_GUARD_REGION 58, PM_UFFD_WP 57, PM_MMAP_EXCLUSIVE 56, PM_SOFT_DIRTY 55, frame bits 0-54; a
non-present entry's frame is swp_type | swp_offset << MAX_SWAPFILES_SHIFT (5).
"""
from __future__ import annotations

import copy
import json
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from ptinspect.inspector.vm import manifest as mf
from ptinspect.inspector.vm.manifest import ManifestError, PagemapEntry, extract, from_console, parse

PID, CHILD = 106, 107
BASE = 0x2000000000
WORKLOAD_DIR = Path(__file__).resolve().parents[2] / "vm-images" / "workload"


def region(kind: str, status: str = "ok", pages: int = 2, page_size: int = 4096, slot: int = 0,
           pagemap: list[str] | None = None) -> dict[str, Any]:
    """One region as the workload prints it; mapped when STATUS is ok or mismatch."""
    mapped = status in ("ok", "mismatch")
    count = pages if mapped else 0
    return {
        "name": kind, "kind": kind, "pid": CHILD if kind == "cow_child" and mapped else PID,
        "status": status, "reason": None if status == "ok" else f"{kind} is {status}",
        "start": hex(BASE + slot * 0x400000) if mapped else None,
        "length": pages * 4096, "page_size": page_size, "backing": "anon-private", "prot": "rw-",
        "vma": {"start": hex(BASE), "end": hex(BASE + pages * 4096), "flags": "rd wr mr mw me ac nh",
                "rss_kb": 8, "anon_huge_kb": 0, "swap_kb": 0, "file_pmd_kb": 0, "shmem_pmd_kb": 0,
                "thp_eligible": 0} if mapped else None,
        "details": {},
        "pagemap": (pagemap or ["0x81000000000031cc"] * count) if mapped else [],
        "kpageflags": ["0x40000582c"] * count,
        "scan": [10] * count,
    }


def manifest(**top: Any) -> dict[str, Any]:
    """A complete manifest: cow_parent/cow_child/anon_4k made, every other kind unsupported."""
    made = {"cow_parent": 0, "cow_child": 0, "anon_4k": 2}
    regions = [region(k, slot=made[k]) if k in made else region(k, "unsupported") for k in mf.KINDS]
    doc = {
        "format": "ptinspect-workload-manifest", "version": 1, "pid": PID, "child_pid": CHILD, "euid": 0,
        "kernel_release": "7.2.13+deb14-cloud-amd64", "kernel_version": "#1 SMP PREEMPT_DYNAMIC Debian",
        "machine": "x86_64", "arch": "x86_64", "page_size": 4096, "arena": hex(BASE),
        "settings": {
            "thp_enabled": "madvise", "thp_defrag": "madvise", "thp_shmem_enabled": "never",
            "mthp": {"64kB": "always", "8kB": None},
            "hugetlb": {"2048kB": {"nr_hugepages": 1, "free_hugepages": 0}},
            "swaps": ["Filename Type Size Used Priority", "/dev/zram0 partition 65532 64 -1"],
            "uffd": {"features_offered": "0x1ffff", "features_enabled": "0x7001", "error": None},
            "pagemap_scan": {"categories": "0x1ff", "error": None},
            "kpageflags": {"readable": True, "error": None},
            "config": {"CONFIG_MEMORY_FAILURE": "y", "CONFIG_ZRAM": "m"},
        },
        "init_log": [],
        "regions": regions,
    }
    doc.update(top)
    return doc


def text(doc: dict[str, Any]) -> str:
    return json.dumps(doc)


def test_parse_complete_manifest() -> None:
    m = parse(text(manifest()))
    assert (m.pid, m.child_pid, m.arch, m.page_size, m.arena) == (PID, CHILD, "x86_64", 4096, BASE)
    assert [r.kind for r in m.regions] == list(mf.KINDS)
    anon = m.region("anon_4k")
    assert anon.mapped and anon.start == BASE + 2 * 0x400000
    assert [p.va for p in anon.pages] == [anon.start, anon.start + 4096]
    assert anon.pages[0].kpageflags == 0x40000582C and anon.pages[0].scan == 10
    assert anon.vma is not None and "nh" in anon.vma.flags
    assert m.region("cow_child").pid == CHILD
    guard = m.region("guard")
    assert not guard.mapped and guard.pages == () and guard.reason == "guard is unsupported"
    s = m.settings
    assert s.uffd_features_enabled == 0x7001 and s.scan_categories == 0x1FF and s.mthp["8kB"] is None
    assert s.hugetlb["2048kB"].nr_hugepages == 1 and s.config == {"CONFIG_MEMORY_FAILURE": "y", "CONFIG_ZRAM": "m"}


def test_nullable_settings() -> None:
    doc = manifest(init_log=None)
    doc["settings"].update(config=None, swaps=None)
    doc["settings"]["pagemap_scan"] = {"categories": None, "error": "PAGEMAP_SCAN ioctl: Inappropriate ioctl"}
    for r in doc["regions"]:
        r["scan"] = None
    m = parse(text(doc))
    assert m.settings.config is None and m.settings.scan_categories is None and m.init_log is None
    assert all(p.scan is None for p in m.region("anon_4k").pages)


@pytest.mark.parametrize("raw, fields", [
    # present anonymous page, PFN 0x31cc, mapped once: PM_PRESENT | PM_MMAP_EXCLUSIVE | pfn
    (0x81000000000031CC, {"present": True, "exclusive": True, "file": False, "pfn": 0x31CC, "swap_type": None}),
    # present shmem page with soft-dirty: + PM_FILE, PM_SOFT_DIRTY
    (0xA180000000003199, {"present": True, "file": True, "soft_dirty": True, "pfn": 0x3199}),
    # 7.2 guard marker: swp_entry(SWP_PTE_MARKER=31, PTE_MARKER_GUARD=BIT(2)) -> frame 31 | 4 << 5 = 0x9f
    (0x440000000000009F,
     {"present": False, "swapped": True, "guard": True, "swap_type": 31, "swap_offset": 4, "pfn": None}),
    # uffd-wp marker: PTE_MARKER_UFFD_WP = BIT(0) -> frame 31 | 1 << 5 = 0x3f, plus PM_UFFD_WP
    (0x420000000000003F, {"swapped": True, "uffd_wp": True, "swap_type": 31, "swap_offset": 1}),
    # poison marker: PTE_MARKER_POISONED = BIT(1) -> frame 0x5f
    (0x400000000000005F, {"swapped": True, "uffd_wp": False, "swap_type": 31, "swap_offset": 2}),
    # hwpoison on 7.2 MF+MIG+DP: SWP_HWPOISON = 24 (ENCODINGS.md 1.2), offset = PFN 0x3185
    (0x40000000000630B8, {"swapped": True, "swap_type": 24, "swap_offset": 0x3185}),
    # swapfile 0, slot 1
    (0x4000000000000020, {"swapped": True, "swap_type": 0, "swap_offset": 1}),
    # none
    (0x0, {"present": False, "swapped": False, "pfn": None, "swap_type": None, "swap_offset": None}),
])
def test_pagemap_entry_fields(raw: int, fields: dict[str, Any]) -> None:
    entry = PagemapEntry(raw)
    assert {name: getattr(entry, name) for name in fields} == fields


def test_extract_from_console_with_crlf_and_noise() -> None:
    body = text(manifest()).replace(",", ",\n")
    console = "[    9.7] Run /init as init process\r\nptinspect-init: workload pid 106\r\n" \
              f"{mf.BEGIN}\r\n{body.replace(chr(10), chr(13) + chr(10))}\r\n{mf.END}\r\nlater line\r\n"
    assert extract(console) == body
    assert from_console(console).pid == PID


@pytest.mark.parametrize("console, message", [
    ("booting\nnothing else\n", "no PTINSPECT-MANIFEST-BEGIN"),
    ("ptinspect-init: workload pid 5\nPTINSPECT-WORKLOAD-EXIT status=139\n", "status=139"),
    (f"{mf.BEGIN}\n{{\"format\": \n", "truncated"),
])
def test_extract_errors(console: str, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        extract(console)


def _set(doc: dict[str, Any], path: tuple[Any, ...], value: Any) -> dict[str, Any]:
    doc = copy.deepcopy(doc)
    target = doc
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return doc


def _anon(field: str) -> tuple[Any, ...]:
    return ("regions", mf.KINDS.index("anon_4k"), field)


def _guard(field: str) -> tuple[Any, ...]:
    return ("regions", mf.KINDS.index("guard"), field)


@pytest.mark.parametrize("path, value, message", [
    (("format",), "something-else", "not a ptinspect-workload-manifest"),
    (("version",), 2, "version 1"),
    (("pid",), True, "pid: expected an integer"),
    (("page_size",), 3000, "power of two"),
    (("arena",), "2000000000", "hex string"),
    (_anon("kind"), "anon_8k", "unknown kind"),
    (_anon("status"), "great", "unknown status"),
    (_anon("reason"), "why", "needs no reason"),
    (_guard("reason"), None, "needs a reason"),
    (_guard("reason"), "", "needs a reason"),
    (_anon("start"), None, "status 'ok' but start is None"),
    (_guard("start"), "0x2003800000", "status 'unsupported' but start"),
    (_anon("start"), hex(BASE + 0x800), "not aligned"),
    (_anon("length"), 4096 + 512, "not whole"),
    (_anon("pagemap"), ["0x0"], "1 items, expected 2"),
    (_anon("kpageflags"), ["0x0"] * 3, "3 items, expected 2"),
    (_anon("scan"), [1], "1 items, expected 2"),
    (_anon("pagemap"), ["0x0", 5], r"pagemap\[1\]: expected a hex string"),
    (_anon("pagemap"), ["0x0", "0xzz"], "not a hex number"),
    (_anon("pagemap"), ["0x0", "0x1" + "0" * 16], "wider than 64 bits"),
    (_anon("pid"), CHILD, "pid 107, expected 106"),
    (("regions", mf.KINDS.index("cow_child"), "pid"), PID, "pid 106, expected 107"),
    (_anon("name"), "cow_parent", "duplicate names"),
    (_anon("details"), {"k": 1}, r"details.k: expected a string"),
    (_anon("vma"), {"start": "0x1"}, r"vma.end: missing"),
    (("settings", "kpageflags", "readable"), "yes", "expected a boolean"),
    (("settings", "hugetlb"), {"2048kB": {"nr_hugepages": "1", "free_hugepages": 0}}, "nr_hugepages"),
    (("regions",), {}, "regions: expected a list"),
])
def test_validation_errors(path: tuple[Any, ...], value: Any, message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        parse(text(_set(manifest(), path, value)))


def test_every_kind_must_be_reported() -> None:
    doc = manifest()
    doc["regions"] = [r for r in doc["regions"] if r["kind"] != "hwpoison"]
    with pytest.raises(ManifestError, match="no region of kind hwpoison"):
        parse(text(doc))


def test_missing_key_and_bad_json() -> None:
    doc = manifest()
    del doc["settings"]["uffd"]
    with pytest.raises(ManifestError, match="settings.uffd: missing"):
        parse(text(doc))
    with pytest.raises(ManifestError, match="not valid JSON"):
        parse("{\"format\": ")


@pytest.mark.skipif(platform.machine() != "x86_64" or not shutil.which("gcc"),
                    reason="builds and runs the workload natively (x86_64 host with gcc)")
def test_workload_output_on_host(tmp_path: Path) -> None:
    """The real workload's output parses; without --guest it never attempts MADV_HWPOISON."""
    binary = tmp_path / "workload"
    subprocess.run(["gcc", "-static", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-o", str(binary),
                    *map(str, sorted(WORKLOAD_DIR.glob("*.c")))], check=True, capture_output=True)
    out = subprocess.run([str(binary), "--once"], check=True, capture_output=True, text=True, timeout=60).stdout
    m = from_console(out)
    assert m.region("hwpoison").status == "skipped"
    assert m.region("anon_4k").status in ("ok", "mismatch")  # mismatch when not root: PFNs read as 0
    assert m.init_log is None and m.settings.config is None
