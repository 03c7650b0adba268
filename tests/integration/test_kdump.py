"""Vmcores as kdump makes them (inspector/vm/kdump.py): a crash kernel loaded with Debian's kexec-tools,
/proc/vmcore saved by cp and by Debian's makedumpfile in every form, compared with ptinspect
snapshots of the same guest taken just before the crash.

For each file form: `dump --pid` and `dump --kernel` give the live snapshot's entries (diff: accessed
bits aside, as the kernel ages pages between the snapshot and the crash) and the guest's pagemap,
`validate` finds nothing,
and where makedumpfile's filter (-d 31) removed a page ptinspect needed, it says so: per entry for a
table, or in one error naming the process for its mm_struct.  A form the guest could not make (arm64
makedumpfile refuses these kernels) is an expected failure with makedumpfile's own message, never a
pass.  These fail, never skip, when QEMU or a kernel image is missing: run the README's setup.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from ptinspect.inspector import vmcorefile
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.kdump import FORMS, make_vmcores
from ptinspect.inspector.vm.manifest import parse

from .pagemap_check import compare

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
PTINSPECT = [sys.executable, "-m", "ptinspect.commands.cli"]
AGING = frozenset({"_PAGE_ACCESSED 1→0", "_PAGE_ACCESSED 0→1", "PTE_AF 1→0", "PTE_AF 0→1"})
EXCLUDED = "excluded by the dump's filter"
# The format identify() must find in each form (what makedumpfile writes for those options).
FORMAT = {"copy": "elf", "lzo-d31": "kdump", "zlib-d31": "kdump", "elf-d31": "elf", "lzo-d0": "kdump",
          "zlib-d0": "kdump", "elf-d0": "elf", "flat-zlib-d31": "kdump-flattened", "flat-elf-d31": "elf-flattened"}
RUNS: dict[tuple[str, str], Path] = {}
SERIES = ["7.2", "7.3"]  # the kernels (6.12 was checked by hand: the same results, see the issue note;
# 6.1 x86_64 too, all 9 forms; 6.1 arm64's capture kernel faults reading /proc/vmcore, no file to test)


def cli(*args: str | Path, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run([*PTINSPECT, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def run_of(arch: str, series: str) -> Path:
    """The cached kdump run of a kernel (made on first use: one VM boot and crash)."""
    if (arch, series) not in RUNS:
        RUNS[arch, series] = make_vmcores(arch, series)
    return RUNS[arch, series]


def entries_excluded(doc: dict) -> list[dict]:
    return [e for e in doc["entries"] if e.get("kind") == "unknown" and EXCLUDED in (e.get("reason") or "")]


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("arch", ["x86_64", "arm64"])
@pytest.mark.parametrize("series", SERIES)
def test_kdump_file_gives_the_live_answer(series: str, arch: str, form: str,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    run = run_of(arch, series)
    meta = json.loads((run / "meta.json").read_text())
    made = meta["forms"][form]
    if made.get("file") is None:
        assert form != "copy", f"the plain copy of /proc/vmcore failed: {made}"
        # Debian's makedumpfile 1.7.8 knows no arm64 4K/52-bit-VA configuration (Debian's 7.x arm64
        # kernels are built with 52-bit VA), whatever the CPU: the plain copy is what users have.
        assert arch == "arm64" and "VA Bits 52 not supported" in made["log"], made
        pytest.xfail(f"makedumpfile {' '.join(FORMS[form][0] or ())} failed in the {arch} crash kernel "
                     f"(status {made['status']}): {made['log']}")
    path = run / made["file"]
    dump = vmcorefile.identify(path)
    assert dump.format == FORMAT[form] and dump.arch == arch
    image = ensure_image(image_for(arch, series))
    kernel = ["--vmcore", path, "--vmlinux", image.vmlinux, "--config-file", image.config]
    filtered = "-d" in (FORMS[form][0] or ()) and "31" in (FORMS[form][0] or ())
    pid = json.loads((run / "manifest.json").read_text())["pid"]
    notes = []
    for what, root in (("pid", ["--pid", str(pid)]), ("kernel", ["--kernel"])):
        live = run / f"live-{what}.json"
        proc = cli("dump", *kernel, *root, "--format", "json")
        if proc.returncode and what == "pid" and filtered and EXCLUDED in proc.stderr:
            # the task's mm_struct (or a VMA) sat in a page makedumpfile took for user data
            assert proc.stdout == "" and f"cannot read the mm of pid {pid}" in proc.stderr and "--root" in proc.stderr
            notes.append(f"--pid: {proc.stderr.strip()}")
            continue
        assert proc.returncode == 0, proc.stderr
        doc = json.loads(proc.stdout)
        excluded = entries_excluded(doc)
        assert not excluded or filtered, excluded[:3]
        if dump.kdump is not None and dump.excluded_pages:  # hwpoisoned pages go at every level
            assert doc["target"]["dump_filter"].startswith(f"{dump.excluded_pages} pages of RAM excluded")
        diff = cli("diff", live, *kernel, *root, "--format", "json")
        assert diff.returncode in (0, 1), diff.stderr
        for d in json.loads(diff.stdout)["differences"]:
            texts = {c["text"] for c in d["changes"]}
            after = d.get("after") or {}
            if filtered and after.get("kind") == "unknown" and EXCLUDED in (after.get("reason") or ""):
                continue  # a table the filter removed: said so for that entry
            assert d["status"] == "changed" and texts <= AGING, (what, d)
        check = cli("validate", *kernel, *root)
        assert check.returncode == 0 and "# clean" in check.stdout, check.stdout + check.stderr
        if what == "pid":  # and the guest's own pagemap of the workload's regions
            mismatches, compared = compare(parse((run / "manifest.json").read_text()), doc, pid)
            assert not mismatches, "\n".join(map(str, mismatches[:40]))
            notes.append(f"pagemap agrees on {compared} pages")
        notes.append(f"--{what}: {len(doc['entries'])} entries, {len(excluded)} said excluded")
    with capsys.disabled():
        print(f"\n[{arch} {series} {form}] {dump.format}, {made['bytes']} bytes, {made['seconds']} s in the "
              f"crash kernel{'; ' + dump.filtering() if dump.filtering() else ''}; " + "; ".join(notes))
