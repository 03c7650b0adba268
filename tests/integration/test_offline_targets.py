"""Every target gives the same page tables: one stopped test VM per architecture, dumped over the
gdbstub, over QMP and from vmcores (ELF and kdump-compressed) made of it while it stays stopped;
then drgn's own translation (follow_phys) and the guest's pagemap check the entries.

These fail, never skip, when QEMU or a kernel image is missing: run the README's setup.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm.images import ensure_image, image_for
from ptinspect.inspector.vm.manifest import parse
from ptinspect.inspector.vm.qemu import supports_device
from ptinspect.inspector.vm.state import VM

from .pagemap_check import compare

pytestmark = pytest.mark.integration

ARCHES = ["x86_64", "arm64", "riscv64"]
PTINSPECT = [sys.executable, "-m", "ptinspect.commands.cli"]
ROOT = Path(__file__).resolve().parents[2]
KERNEL_SAMPLES = 400  # kernel addresses checked against drgn's follow_phys
DRGN_WALKS = {"x86_64", "arm64"}  # drgn 0.3.0 has no riscv64 page-table iterator
HW_VALID = {"x86_64": "_PAGE_PRESENT", "arm64": "PTE_VALID", "riscv64": "_PAGE_PRESENT"}  # the MMU's valid bit


def run(*args: str | Path, timeout: float = 600) -> tuple[subprocess.CompletedProcess, float]:
    began = time.monotonic()
    proc = subprocess.run([*PTINSPECT, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    return proc, time.monotonic() - began


def without_source(doc: dict) -> dict:
    target = dict(doc["target"])
    assert target.pop("source")
    return {**doc, "target": target}


def first_difference(a: dict, b: dict) -> str:
    if a["target"] != b["target"]:
        keys = sorted(k for k in set(a["target"]) | set(b["target"]) if a["target"].get(k) != b["target"].get(k))
        return f"target fields differ: {keys}"
    for i, (x, y) in enumerate(zip(a["entries"], b["entries"])):
        if x != y:
            return f"entry {i}: {x} != {y}"
    return f"{len(a['entries'])} != {len(b['entries'])} entries"


def qemu_status(machine: VM) -> dict:
    with Qmp(machine.qmp, timeout=30) as qmp:
        return qmp.execute("query-status")


def check_follow_phys(vmcore: Path, vmlinux: Path, pid: int, user: dict, kernel: dict) -> int:
    """drgn's follow_phys against every present user page and sampled kernel addresses; pages checked."""
    import drgn
    from drgn import FaultError
    from drgn.helpers.linux.mm import follow_phys
    from drgn.helpers.linux.pid import find_task

    prog = drgn.Program()  # drgn alone: the vmcore and the vmlinux, nothing of ptinspect's
    prog.set_core_dump(str(vmcore))
    prog.load_debug_info([str(vmlinux)])
    page = prog["PAGE_SIZE"].value_()
    arch = {"X86_64": "x86_64", "AARCH64": "arm64", "RISCV64": "riscv64"}[prog.platform.arch.name]
    mm = find_task(prog, pid).mm
    init_mm = prog["init_mm"].address_of_()
    valid = HW_VALID[arch]
    user_present = [e for e in user["entries"] if e["kind"] == "present"]
    pairs = [(mm, va, pa) for e in user_present if valid in e["flags"] for va, pa in pages_of(e, page)]
    present = [e for e in kernel["entries"] if e["kind"] == "present" and valid in e["flags"]]
    step = max(1, len(present) // KERNEL_SAMPLES)
    pairs += [(init_mm, int(e["va"], 16) + e["size"] // 2, int(e["pfn"], 16) * page + e["size"] // 2)
              for e in present[::step]]
    wrong = [(hex(va), hex(pa), hex(int(follow_phys(m, va)))) for m, va, pa in pairs if int(follow_phys(m, va)) != pa]
    assert not wrong, f"{len(wrong)} of {len(pairs)} differ (va, ptinspect, drgn): {wrong[:10]}"
    # Present to the kernel but not to the MMU (PROT_NONE, arm64 present-invalid): drgn, which walks
    # as the MMU does, must find nothing there.
    for e in user_present:
        if valid not in e["flags"]:
            with pytest.raises(FaultError):
                follow_phys(mm, int(e["va"], 16))
    return len(pairs)


def pages_of(entry: dict, page: int) -> list[tuple[int, int]]:
    va, pfn = int(entry["va"], 16), int(entry["pfn"], 16)
    return [(va + off, pfn * page + off) for off in range(0, entry["size"], page)]


@pytest.mark.parametrize("arch", ARCHES)
def test_every_target_gives_the_same_tables(vm: Callable[..., VM], arch: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    image = ensure_image(image_for(arch, "7.2"))
    machine = vm(arch)
    with Qmp(machine.qmp, timeout=30) as qmp:
        qmp.execute("stop")
    pid = machine.workload_pid
    assert pid is not None
    kernel_files = ["--vmlinux", image.vmlinux, "--config-file", image.config]
    times: dict[str, float] = {}
    # A gdbstub detach resumes the VM even when QMP stopped it (QEMU handle_detach -> gdb_continue).
    targets = {"gdbstub": ["--gdb", machine.gdb, "--keep-stopped"], "qmp": ["--qmp", machine.qmp, "--keep-stopped"]}

    # QEMU holds VMCOREINFO where the machine takes -device vmcoreinfo; riscv virt in QEMU 7.2 does not,
    # and `ptinspect vmcore` then reads it from guest memory and adds it.
    origin = "from QEMU" if supports_device(arch, "vmcoreinfo") else "added from guest memory"
    vmcores = {"elf": tmp_path / "vmcore.elf", "kdump-zlib": tmp_path / "vmcore.kdump"}
    for fmt, path in vmcores.items():
        proc, times[f"vmcore {fmt}"] = run("vmcore", "--qmp", machine.qmp, "--gdb", machine.gdb,
                                           "--vmlinux", image.vmlinux, "--format", fmt, path)
        assert proc.returncode == 0, proc.stderr
        assert f"VMCOREINFO {origin}" in proc.stdout, proc.stdout
        targets[f"vmcore-{fmt.split('-')[0]}"] = ["--vmcore", path]
    elf = vmcores["elf"]

    docs: dict[str, dict] = {}
    for what, args in (("pid", ["--pid", str(pid)]), ("kernel", ["--kernel"])):
        reference = None
        for name, target in targets.items():
            proc, times[f"dump {what} {name}"] = run("dump", *target, *kernel_files, *args, "--format", "json")
            assert proc.returncode == 0, f"{name}: {proc.stderr}"
            doc = json.loads(proc.stdout)
            assert doc["target"]["source"].split(":")[0] == name.split("-")[0]
            if reference is None:
                reference, docs[what] = without_source(doc), doc
                continue
            assert without_source(doc) == reference, f"{name} vs gdbstub, --{what}: " \
                f"{first_difference(without_source(doc), reference)}"
    assert not qemu_status(machine)["running"], "a target let the stopped VM run"

    manifest = parse(Path(machine.manifest).read_text())
    mismatches, compared = compare(manifest, docs["pid"], pid)
    assert not mismatches, "\n".join(map(str, mismatches[:40]))
    if arch in DRGN_WALKS:
        checked = check_follow_phys(elf, image.vmlinux, pid, docs["pid"], docs["kernel"])
        verdict = f"follow_phys agrees on {checked} addresses"
    else:  # drgn reads no kernel virtual address of a riscv64 dump: nothing to ask it
        verdict = f"drgn 0.3.0 has no {arch} page-table walker; the guest's pagemap is the independent check"
    with capsys.disabled():
        print(f"\n[{arch}] {len(targets)} targets agree on {len(docs['pid']['entries'])} process and "
              f"{len(docs['kernel']['entries'])} kernel entries; pagemap: {compared} pages; {verdict}")
        print("  " + ", ".join(f"{k} {v:.1f} s" for k, v in times.items()))
