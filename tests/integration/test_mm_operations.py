"""Diffs of real mm operations on a live VM (issue 6).

The workload does each operation on request (inspector/vm/ops.py) on a fresh region of its own:
MADV_GUARD_INSTALL and MADV_GUARD_REMOVE, mprotect(PROT_READ), MADV_PAGEOUT (present → swap on
zram), a THP split (mprotect of one page: PMD leaf → PTE table) and MADV_COLLAPSE (PTE table →
PMD leaf). Between snapshots taken before and after each step, `ptinspect diff` must name exactly
the operation's entries, and the snapshot after it must validate clean.

Expectations come from the guest (the pagemap and smaps the workload reads right after each step)
and from the kernel headers (how pte_modify() rewrites an entry), not from ptinspect's output.
Outside the operation two things may change, and nothing else: an accessed bit anywhere in the
process (reclaim and MGLRU aging clear them, MADV_PAGEOUT's look-around among others; the
workload's own accesses set them again), and the workload's own working memory, its [heap] and
[stack], where answering a request can touch a page for the first time (seen on x86_64 6.12: a
heap page added between two snapshots).
"""
from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptinspect.commands.vm_op import op as vm_op
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.ops import OpResult, parse_result, request
from ptinspect.inspector.vm.state import VM
from ptinspect.inspector.vmlinux import _read_symbols

from .kernels import IDS, IMAGES
from .pagemap_check import Dump, check_page

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
Entries = dict[tuple[int, str], tuple[str, frozenset[str]]]

# Accessed bits: x86 _PAGE_BIT_ACCESSED 5 (arch/x86/include/asm/pgtable_types.h:15), arm64 PTE_AF bit 10
# (arch/arm64/include/asm/pgtable-hwdef.h:170), riscv _PAGE_ACCESSED bit 6 (arch/riscv/include/asm/pgtable-bits.h:17).
ACCESSED = {"x86_64": 1 << 5, "arm64": 1 << 10, "riscv64": 1 << 6}
AGING = frozenset({"_PAGE_ACCESSED 1→0", "_PAGE_ACCESSED 0→1", "PTE_AF 1→0", "PTE_AF 0→1"})
# The write permission: x86 _PAGE_BIT_RW 1 (pgtable_types.h:11), arm64 PTE_WRITE = PTE_DBM bit 51
# (pgtable-prot.h:16, pgtable-hwdef.h:173), riscv _PAGE_WRITE bit 2 (pgtable-bits.h:13).
WRITE = {"x86_64": 1 << 1, "arm64": 1 << 51, "riscv64": 1 << 2}
# mprotect(PROT_READ) of written private pages, as the decoders name each arch's bits.
READ_ONLY_CHANGES = {
    "x86_64": {"_PAGE_RW 1→0", "_PAGE_DIRTY → _PAGE_SAVED_DIRTY"},  # 6.6+; before, _PAGE_RW alone (see read_only)
    "arm64": {"PTE_WRITE 1→0", "PTE_RDONLY 0→1", "AP[2:1] EL1 RW, EL0 RW → EL1 RO, EL0 RO"},
    "riscv64": {"_PAGE_WRITE 1→0"},
}


def saved_dirty(release: str) -> bool:
    """x86 pte_modify() moves _PAGE_DIRTY to _PAGE_SAVED_DIRTY from 6.6 (fca4d413c5f7 "x86/mm: Introduce
    _PAGE_SAVED_DIRTY", bb3aadf7d446 "x86/mm: Start actually marking _PAGE_SAVED_DIRTY")."""
    major, minor = (int(x) for x in release.split(".")[:2])
    return (major, minor) >= (6, 6)


def read_only_changes(arch: str, release: str) -> set[str]:
    if arch == "x86_64" and not saved_dirty(release):
        return {"_PAGE_RW 1→0"}  # 5.10 pte_modify(): PAGE_READONLY keeps _PAGE_DIRTY as it was
    return READ_ONLY_CHANGES[arch]


def read_only(arch: str, raw: int, release: str) -> int:
    """The PTE pte_modify() makes of a written, writable private anonymous PTE for PROT_READ."""
    if arch == "x86_64" and not saved_dirty(release):
        return raw & ~(1 << 1)
    if arch == "x86_64":
        # arch/x86/include/asm/pgtable.h:771-802: keep _PAGE_CHG_MASK, take PAGE_READONLY (no _PAGE_RW);
        # the old entry was writable, so mksaveddirty_shift() (:365) moves _PAGE_DIRTY (bit 6) to
        # _PAGE_SAVED_DIRTY (_PAGE_BIT_SOFTW5, bit 58: pgtable_types.h:25,39).
        return raw & ~(1 << 1 | 1 << 6) | (raw >> 6 & 1) << 58
    if arch == "arm64":
        # arch/arm64/include/asm/pgtable.h:1225-1247: hardware dirt (PTE_WRITE and not PTE_RDONLY) becomes
        # PTE_DIRTY (bit 55), then the prot bits are PAGE_READONLY's (pgtable-prot.h:63: PTE_RDONLY bit 7,
        # no PTE_WRITE); pte_mkdirty() leaves PTE_RDONLY set on a read-only entry.
        if raw & 1 << 51 and not raw & 1 << 7:
            raw |= 1 << 55
        return raw & ~(1 << 51) | 1 << 7
    # arch/riscv/include/asm/pgtable.h:553-560: (pte & _PAGE_CHG_MASK) | PAGE_READ: only _PAGE_WRITE goes.
    return raw & ~(1 << 2)


def cli(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ptinspect.commands.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)


def snapshot(target: list[str], pid: int, path: Path) -> dict:
    proc = cli("snapshot", *target, "--pid", str(pid), str(path))
    assert proc.returncode == 0, proc.stderr
    return json.loads(path.read_text())


def records(doc: dict) -> dict[tuple[int, str], dict]:
    return {(int(r["va"], 16), r["level"]): r for r in doc["entries"]}


def diff_entries(a: Path, b: Path) -> Entries:
    """(va, level) -> (status, change texts) of every entry `diff --format json` names, accessed-bit
    flips left out; entries that differ only in those, and the workload's [heap] and [stack], are
    left out entirely."""
    proc = cli("diff", str(a), str(b), "--format", "json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    out: Entries = {}
    for d in json.loads(proc.stdout)["differences"]:
        rec = d["after"] or d["before"]
        size = int(rec["size"])
        texts = frozenset(c["text"] for c in d["changes"]) - AGING
        if (d["status"] == "changed" and not texts) or (rec.get("vma") or {}).get("name") in ("[heap]", "[stack]"):
            continue
        for va in range(int(d["start"], 16), int(d["end"], 16), size):
            out[(va, d["level"])] = (d["status"], texts)
    return out


def validates_clean(path: Path) -> None:
    proc = cli("validate", str(path), "--format", "json")
    report = json.loads(proc.stdout)
    assert proc.returncode == 0 and report["findings"] == [], (path.name, report["findings"][:5])
    statuses = {c["id"]: c["status"] for c in report["checks"] if not c["id"].startswith("kernel-")}
    assert set(statuses.values()) <= {"pass", "n/a"}, (path.name, statuses)


def agrees_with_pagemap(doc: dict, result: OpResult) -> None:
    """ptinspect's view of every page of the region is the guest's pagemap right after the step."""
    dump = Dump(doc)
    bad = [(hex(va), what) for va, pm in result.pages() if (what := check_page(dump, va, pm, result.page_size))]
    assert not bad, (result.op, bad[:5])


def pmd_pages(page: int) -> int:
    """Entries of a PTE table, so base pages of a PMD leaf: PTRS_PER_PTE = PAGE_SIZE / 8 (8-byte entries:
    arch/arm64/include/asm/pgtable-hwdef.h PTRS_PER_PTE, 7.2; 512 on x86-64 and riscv64's 4 KiB pages)."""
    return page // 8


def prepare(machine: VM, op: str) -> OpResult:
    """A fresh region for OP, through the CLI (`ptinspect vm op NAME prepare OP --json`)."""
    run = CliRunner().invoke(vm_op, [machine.name, "prepare", op, "--json"])
    result = parse_result("PTINSPECT-OP " + json.dumps(json.loads(run.output)))
    assert run.exit_code == 0, run.output
    assert result.status == "ok" and result.start is not None, result.reason
    assert all(pm.present for pm in result.pagemap), result.line[:300]
    if op in ("thp-split", "collapse"):
        pfns, n = [pm.pfn for pm in result.pagemap], pmd_pages(result.page_size)
        assert len(pfns) == n and result.start % (n * result.page_size) == 0
        # thp-split: one PMD-mapped THP (smaps AnonHugePages), its PFNs one aligned run; collapse: base pages
        assert result.anon_huge_kb == (n * result.page_size // 1024 if op == "thp-split" else 0)
        if op == "thp-split":
            assert pfns[0] % n == 0 and pfns == list(range(pfns[0], pfns[0] + n))
    return result


def pages(start: int, end: int, page: int) -> range:
    return range(start, end, page)


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=IDS)
def test_operations_diff_exactly(vm: Callable[..., VM], arch: str, series: str, tmp_path: Path) -> None:
    machine = vm(arch, series)
    image = ensure_image(image_for(arch, series))
    target = ["--gdb", machine.gdb, "--vmlinux", str(image.vmlinux), "--config-file", str(image.config)]
    pid = machine.workload_pid
    assert pid is not None
    # What the kernel can do, from its own vmlinux: MADV_GUARD_INSTALL/REMOVE (mm/madvise.c
    # madvise_guard_install, 6.13) and MADV_COLLAPSE (mm/khugepaged.c madvise_collapse, 6.1) answer
    # EINVAL without them; arm64 folds contpte blocks by itself with CONFIG_ARM64_CONTPTE (6.9), blocks of
    # CONT_PTES = 1 << CONFIG_ARM64_CONT_PTE_SHIFT entries (pgtable-hwdef.h: 16 with 4 KiB pages, 128 with 16 KiB).
    functions = _read_symbols(image.vmlinux)[1]
    guards, collapse = "madvise_guard_install" in functions, "madvise_collapse" in functions
    config = dict(line.split("=", 1) for line in image.config.read_text().splitlines() if line.startswith("CONFIG_"))
    folds = arch == "arm64" and config.get("CONFIG_ARM64_CONTPTE") == "y"
    cont_ptes = 1 << int(config["CONFIG_ARM64_CONT_PTE_SHIFT"]) if folds else 0

    regions = {op: prepare(machine, op) for op in ("guard-install", "mprotect", "pageout", "thp-split", "collapse")}
    path = tmp_path / "s0.json"
    doc = snapshot(target, pid, path)
    for result in regions.values():
        agrees_with_pagemap(doc, result)
    same = cli("diff", str(path), str(path), "--format", "json")
    assert same.returncode == 0 and json.loads(same.stdout)["equal"] is True, same.stdout[:500] + same.stderr

    def step(op: str, region: OpResult) -> tuple[OpResult, Entries, dict, dict, Path]:
        """Do OP on REGION; (answer, diff entries, records before, records after, snapshot after)."""
        nonlocal path, doc
        answer = request(machine, [op, hex(region.start)])  # type: ignore[arg-type]
        assert answer.status == "ok" and answer.start == region.start, answer.line[:300]
        after = tmp_path / f"after-{op}.json"
        new = snapshot(target, pid, after)
        entries = diff_entries(path, after)
        agrees_with_pagemap(new, answer)
        validates_clean(after)
        before_records, path, doc = records(doc), after, new
        return answer, entries, before_records, records(new), after

    g = regions["guard-install"]
    if guards:
        answer, entries, _, _, _ = step("guard-install", g)
        guarded = [va for va, pm in answer.pages() if pm.guard]
        assert guarded == list(pages(answer.op_start, answer.op_end, answer.page_size))  # type: ignore[arg-type]
        assert entries == {(va, "pte"): ("changed", frozenset({"present → marker guard"})) for va in guarded}
        answer, entries, _, _, _ = step("guard-remove", g)
        assert [va for va, pm in answer.pages() if not pm.present] == guarded  # none again; the rest present
        assert not any(pm.swapped for pm in answer.pagemap)
        assert entries == {(va, "pte"): ("removed", frozenset({"marker guard"})) for va in guarded}
    else:
        for op in ("guard-install", "guard-remove"):  # the kernel refuses the unknown advice
            answer = request(machine, [op, hex(g.start)])  # type: ignore[arg-type]
            assert (answer.status, answer.errno_name) == ("unsupported", "EINVAL"), answer.line[:300]
            assert answer.pagemap == g.pagemap  # nothing changed: the next diff would show it too

    answer, entries, before, after, _ = step("mprotect", regions["mprotect"])
    part = pages(answer.op_start, answer.op_end, answer.page_size)  # type: ignore[arg-type]
    release = machine.kernel_release
    assert entries == {(va, "pte"): ("changed", frozenset(read_only_changes(arch, release) | {"vma rw-p → r--p"}))
                       for va in part}
    for va in part:
        raw_a, raw_b = int(before[(va, "pte")]["raw"], 16), int(after[(va, "pte")]["raw"], 16)
        assert raw_b & ~ACCESSED[arch] == read_only(arch, raw_a, release) & ~ACCESSED[arch], (hex(va), hex(raw_a), hex(raw_b))

    answer, entries, _, after, _ = step("pageout", regions["pageout"])
    swapped = [va for va, pm in answer.pages() if pm.swapped and not pm.present]
    assert swapped == list(pages(answer.op_start, answer.op_end, answer.page_size))  # type: ignore[arg-type]
    assert answer.swap_kb == answer.page_size // 1024 * len(swapped)
    assert entries == {(va, "pte"): ("changed", frozenset({"present → swap"})) for va in swapped}
    # the swap type and offset of each entry agree with the pagemap (agrees_with_pagemap); zram is swap type 0
    assert {after[(va, "pte")]["softleaf"]["type"] for va in swapped} == {0}

    thp = regions["thp-split"]
    page, n = thp.page_size, pmd_pages(thp.page_size)
    answer, entries, before, after, snap = step("thp-split", thp)
    assert answer.anon_huge_kb == 0 and [pm.pfn for pm in answer.pagemap] == [pm.pfn for pm in thp.pagemap]
    assert int(before[(thp.start, "pmd")]["pfn"], 16) == thp.pagemap[0].pfn  # type: ignore[index]
    # The first page was made read-only, the rest stay writable. On arm64 the split set_ptes() the whole
    # folio (mm/huge_memory.c:3387; 6.12: :2883) and contpte_set_ptes() (arch/arm64/mm/contpte.c:452) folded
    # every aligned run of CONT_PTES (16; 128 with 16 KiB pages) into a contpte block; mprotect of page 0
    # unfolded its run again.
    split = pages(thp.start, thp.end, page)
    contpte = [folds and i >= cont_ptes for i in range(n)]
    labels = [("present r-- user" if i == 0 else "present rw- user") + (" contpte" if contpte[i] else "")
              for i in range(n)]
    assert entries == {(thp.start, "pmd"): ("changed", frozenset({"PMD leaf → PTE table"})),
                       **{(va, "pte"): ("added", frozenset({label})) for va, label in zip(split, labels)}}
    assert [bool(int(after[(va, "pte")]["raw"], 16) & WRITE[arch]) for va in split] == [False] + [True] * (n - 1)
    assert [bool(after[(va, "pte")].get("cont")) for va in split] == contpte
    table = cli("diff", str(tmp_path / "after-pageout.json"), str(snap))
    assert table.returncode == 1, table.stderr
    rows = [" ".join(line.split()) for line in table.stdout.splitlines() if not line.startswith("#")]
    assert f"changed {thp.start:#018x} pmd 1x{n * page >> 20} MiB PMD leaf → PTE table" in "\n".join(rows)
    assert f"added {thp.start:#018x} pte 1x{page >> 10} KiB present r-- user" in "\n".join(rows)

    flat = regions["collapse"]
    if not collapse:  # the kernel refuses the unknown advice, and nothing changes
        answer = request(machine, ["collapse", hex(flat.start)])  # type: ignore[arg-type]
        assert (answer.status, answer.errno_name) == ("unsupported", "EINVAL"), answer.line[:300]
        assert answer.pagemap == flat.pagemap and answer.anon_huge_kb == 0
        return
    answer, entries, _, after, _ = step("collapse", flat)
    pfns = [pm.pfn for pm in answer.pagemap]
    assert answer.anon_huge_kb == n * page // 1024 and pfns[0] % n == 0 and pfns == list(range(pfns[0], pfns[0] + n))
    assert entries == {(flat.start, "pmd"): ("changed", frozenset({"PTE table → PMD leaf"})),
                       **{(va, "pte"): ("removed", frozenset({"present rw- user"}))
                          for va in pages(flat.start, flat.end, page)}}
    leaf = after[(flat.start, "pmd")]
    assert leaf["kind"] == "present" and int(leaf["pfn"], 16) == pfns[0]
