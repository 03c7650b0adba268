"""Vmcores as kdump and makedumpfile write them, built synthetically: flattened ELF (-F -E), pages a
filter excluded (kdump bitmaps with a dump level, ELF PT_LOADs whose p_memsz exceeds p_filesz),
facts that cannot be read, JSON that is valid or absent, and diffs across output-address widths.

The layouts follow makedumpfile (makedumpfile.c write_elf_pages_cyclic, diskdump_mod.h
kdump_sub_header, the flattened stream's MakedumpfileDataHeader records); the page tables are
test_drgn_targets' small x86-64 kernel half (PGD 0x1000 -> PUD 0x2000 -> PMD 0x3000 -> PTE 0x4000).
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path

import pytest

from ptinspect.archs import get_arch
from ptinspect.inspector import vmcorefile
from ptinspect.inspector.diff import diff_notes
from ptinspect.inspector.kdumppages import KdumpReader
from ptinspect.inspector.kernel import KernelError
from ptinspect.inspector.model.base import Prot
from ptinspect.inspector.model.builder import MapLeaf
from ptinspect.inspector.rawkernel import RawKernel, Task
from ptinspect.inspector.reader import ReadError, SparseMemory
from ptinspect.inspector.session import Session, SessionError
from ptinspect.inspector.snapshot import Snapshot, SnapshotError
from ptinspect.inspector.targets import drgn as drgn_target
from ptinspect.inspector.targets.elfcore import ElfCoreTarget
from ptinspect.inspector.vmcorefile import ExcludedPage

from .test_drgn_targets import INFO, KERNEL_VA, PAGE, RAM, elf_core, kdump, kernel_entries, memory, private_cache, run
from .test_snapshot import document, model_snapshot

__all__ = ["private_cache"]  # the autouse fixture of test_drgn_targets, used here too

PTE_TABLE = 0x4000


def flatten(plain: bytes, path: Path, chunk: int = 3 * PAGE) -> Path:
    """makedumpfile's flattened stream of `plain`: records in reverse order, and the first chunk
    written twice, first with junk (a later record replaces what an earlier one wrote)."""
    out = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    out += struct.pack(">qq", 0, 64) + b"\xff" * 64
    for at in reversed(range(0, len(plain), chunk)):
        piece = plain[at:at + chunk]
        out += struct.pack(">qq", at, len(piece)) + piece
    path.write_bytes(bytes(out + struct.pack(">qq", -1, -1)))
    return path


def filtered_kdump(path: Path, excluded: set[int], level: int = 31) -> Path:
    """test_drgn_targets' kdump with the pages `excluded` (pfns) cleared from the second bitmap and
    their descriptors and data dropped, as makedumpfile -d writes it, with dump level `level`."""
    data = bytearray(kdump(path).read_bytes())
    pages = RAM // PAGE
    struct.pack_into("<i", data, PAGE + 8, level)  # KdumpSubHeader64.dump_level
    second = 4 * PAGE
    for pfn in excluded:
        data[second + pfn // 8] &= ~(1 << pfn % 8)
    desc_at = 5 * PAGE
    kept = [pfn for pfn in range(pages) if pfn not in excluded]
    at = desc_at + len(kept) * 24
    descs, pagedata = b"", b""
    ram = memory()
    for pfn in kept:
        descs += struct.pack("<QIIQ", at, PAGE, 0, 0)
        pagedata += ram[pfn * PAGE:(pfn + 1) * PAGE]
        at += PAGE
    path.write_bytes(bytes(data[:desc_at]) + descs + pagedata)
    return path


def filtered_elf(path: Path, held: int) -> Path:
    """An ELF as makedumpfile -E writes one after a long excluded run at the end of RAM: the
    PT_LOAD covers all RAM (p_memsz) but holds only its first `held` bytes (p_filesz)."""
    core = bytearray(elf_core(path).read_bytes())
    load = 64 + 56  # the second program header: the PT_LOAD
    offset, = struct.unpack_from("<Q", core, load + 8)
    struct.pack_into("<Q", core, load + 32, held)  # p_filesz; p_memsz stays RAM
    path.write_bytes(bytes(core[:offset + held]))
    return path


def entries_of(*target: str) -> list[dict]:
    return kernel_entries(*target)


# ----------------------------------------------------------------------------- flattened ELF

def test_a_flattened_elf_is_read_as_the_elf(tmp_path: Path) -> None:
    """makedumpfile -F -E: the stream's file starts with an ELF header, not KDUMP."""
    elf = elf_core(tmp_path / "core.elf")
    flat = flatten(elf.read_bytes(), tmp_path / "core.flat")
    dump = vmcorefile.identify(flat)
    assert (dump.format, dump.arch, dump.vmcoreinfo, dump.ram) == ("elf-flattened", "x86_64", INFO, ((0, RAM),))
    assert entries_of("--vmcore", str(flat)) == entries_of("--vmcore", str(elf))
    target = drgn_target.open_vmcore(flat)
    assert isinstance(target, ElfCoreTarget) and target.source == "vmcore:elf-flattened"
    assert target.read(0, RAM) == memory()
    target.close()


def test_a_flattened_kdump_still_reads(tmp_path: Path) -> None:
    plain = kdump(tmp_path / "core.kdump")
    flat = flatten(plain.read_bytes(), tmp_path / "core.flat")
    assert vmcorefile.identify(flat).format == "kdump-flattened"
    assert entries_of("--vmcore", str(flat)) == entries_of("--vmcore", str(plain))


def test_reassembling_a_flattened_elf_gives_the_elf(tmp_path: Path) -> None:
    elf = elf_core(tmp_path / "core.elf")
    vmcorefile.reassemble(flatten(elf.read_bytes(), tmp_path / "flat"), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == elf.read_bytes()


def test_a_flattened_stream_of_something_else_is_refused(tmp_path: Path) -> None:
    flat = flatten(b"\x00" * 4096, tmp_path / "flat")
    with pytest.raises(vmcorefile.DumpError, match="neither ELF nor kdump-compressed"):
        vmcorefile.identify(flat)


# ----------------------------------------------------------------------------- excluded pages

LEVEL_31 = "makedumpfile dump level 31: zero, cache, private cache, user and free pages excluded"


def test_the_dump_filter_is_stated_in_the_output(tmp_path: Path) -> None:
    core = filtered_kdump(tmp_path / "core", {5})
    code, out, err = run("dump", "--vmcore", str(core), "--kernel", "--format", "json")
    assert code == 0, err
    assert json.loads(out)["target"]["dump_filter"].startswith("1 page of RAM excluded by makedumpfile (dump level 31")
    code, out, err = run("dump", "--vmcore", str(core), "--kernel")
    assert code == 0 and "# vmcore:kdump: 1 page of RAM excluded by makedumpfile" in out, err
    code, out, _ = run("dump", "--vmcore", str(elf_core(tmp_path / "plain")), "--kernel", "--format", "json")
    assert "dump_filter" not in json.loads(out)["target"]


@pytest.mark.parametrize("flattened", [False, True], ids=["plain", "flattened"])
def test_a_table_the_kdump_filter_excluded_is_said_per_entry(tmp_path: Path, flattened: bool) -> None:
    """The PTE table's page is RAM (first bitmap) but not dumped (second bitmap): the PMD entry
    pointing at it says so, and the walk goes on (the 2 MiB leaf)."""
    core = filtered_kdump(tmp_path / "core", {PTE_TABLE // PAGE})
    if flattened:
        core = flatten(core.read_bytes(), tmp_path / "core.flat")
    got = entries_of("--vmcore", str(core))
    assert [(e["va"], e["level"], e["kind"]) for e in got] == [
        (hex(KERNEL_VA), "pmd", "unknown"), (hex(KERNEL_VA + (2 << 20)), "pmd", "present")]
    assert got[0]["reason"] == (f"table {PTE_TABLE:#x} cannot be read: physical {PTE_TABLE:#x} was excluded "
                                f"by the dump's filter ({LEVEL_31})")


def test_reads_of_excluded_kdump_pages_say_why(tmp_path: Path) -> None:
    core = filtered_kdump(tmp_path / "core", {5})
    dump = vmcorefile.identify(core)
    assert dump.dump_level == 31 and dump.ram == ((0, RAM),)
    assert dump.filtering() == "1 page of RAM excluded by makedumpfile (dump level 31: zero, cache, private " \
                               "cache, user and free pages excluded; hwpoisoned and logically offline pages " \
                               "are excluded at every level)"
    target = drgn_target.open_vmcore(core)  # 4 KiB blocks: drgn's libkdumpfile
    assert target.read(0x6000, 8) == memory()[0x6000:0x6008]
    with pytest.raises(ExcludedPage, match=f"physical 0x5000 was excluded by the dump's filter \\({LEVEL_31}\\)"):
        target.read(0x5ff8, 16)
    target.close()
    reader = KdumpReader(dump)  # ptinspect's own reader (QEMU's 64 KiB-block arm64 dumps)
    with pytest.raises(ExcludedPage, match="0x5000 was excluded"):
        reader.read(0x5000, 8)
    reader.close()


def test_a_page_outside_ram_is_not_called_excluded(tmp_path: Path) -> None:
    dump = vmcorefile.identify(filtered_kdump(tmp_path / "core", {5}))
    assert dump.excluded(RAM, 8) is None and dump.excluded(0x6000, 8) is None
    with pytest.raises(ReadError, match="not in the dump") as info:
        KdumpReader(dump).read(RAM + 0x1000, 8)
    assert not isinstance(info.value, ExcludedPage)


def test_an_elf_pt_load_beyond_its_file_data_is_excluded(tmp_path: Path) -> None:
    """makedumpfile -E leaves runs of at least 256 excluded pages out of the file (p_memsz > p_filesz)."""
    core = filtered_elf(tmp_path / "core", held=PTE_TABLE)
    dump = vmcorefile.identify(core)
    assert dump.ram == ((0, RAM),) and dump.left_out == ((PTE_TABLE, RAM),)
    assert "p_memsz > p_filesz" in (dump.filtering() or "") and "states no dump level" in dump.filtering()
    got = entries_of("--vmcore", str(core))
    assert [(e["va"], e["level"], e["kind"]) for e in got] == [
        (hex(KERNEL_VA), "pmd", "unknown"), (hex(KERNEL_VA + (2 << 20)), "pmd", "present")]
    assert got[0]["reason"].startswith(f"table {PTE_TABLE:#x} cannot be read: physical {PTE_TABLE:#x} was "
                                       "excluded by the dump's filter")
    target = ElfCoreTarget(dump)
    with pytest.raises(ExcludedPage, match="beyond a PT_LOAD's file data"):
        target.read(PTE_TABLE - 8, 16)
    target.close()


def test_an_unfiltered_elf_states_no_filtering(tmp_path: Path) -> None:
    dump = vmcorefile.identify(elf_core(tmp_path / "core"))
    assert dump.filtering() is None and dump.left_out == () and dump.excluded(0, RAM) is None


def test_a_qemu_kdump_states_its_level(tmp_path: Path) -> None:
    """QEMU writes dump level 1 and dumps every page: nothing is excluded."""
    dump = vmcorefile.identify(kdump(tmp_path / "core"))
    assert dump.dump_level == 1 and dump.excluded(0, RAM) is None and dump.filtering() is None


# ----------------------------------------------------------------------------- facts and JSON

class _Layout:
    """The least of a KernelLayout RawKernel._swap_devices reads."""

    symbols = {"nr_swapfiles": 0x1000, "swap_info": 0x2000}
    variable_sizes = {"nr_swapfiles": 4}
    lengths = {"swap_info": 32}
    members = {"swap_info_struct.flags": (0, 8), "swap_info_struct.max": (8, 4),
               "mm_struct.mm_mt": (0, 8), "mm_struct.pgd": (8, 8), "mm_struct.start_brk": (16, 8),
               "mm_struct.brk": (24, 8), "mm_struct.start_stack": (32, 8)}
    constants = {"SWP_USED": 1}


def _swap_kernel(excluded_struct: bool) -> RawKernel:
    memory = {0x1000: (2).to_bytes(4, "little"),
              0x2000: (0x3000).to_bytes(8, "little") + (0x4000).to_bytes(8, "little"),
              0x3000: (1).to_bytes(8, "little") + (100).to_bytes(4, "little")}
    if not excluded_struct:
        memory[0x4000] = (1).to_bytes(8, "little") + (200).to_bytes(4, "little")

    def read_va(va: int, size: int) -> bytes:
        for start, data in memory.items():
            if start <= va and va + size <= start + len(data):
                return data[va - start:va - start + size]
        raise ExcludedPage(f"physical {va:#x} was excluded by the dump's filter (dump level 31)")

    kernel = object.__new__(RawKernel)
    kernel.layout = _Layout()  # type: ignore[assignment]
    kernel.read_va, kernel.kaslr_offset, kernel.arch = read_va, 0, "x86_64"
    return kernel


def test_an_unreadable_swap_info_struct_leaves_the_swap_facts_unknown() -> None:
    """A swap_info_struct in an excluded page: the swap facts are unknown with the reason, not an abort."""
    readable = _swap_kernel(False)._swap_devices()
    assert {k: f.value for k, f in readable.items()} == {"nr_swapfiles": 2, "swap_info[0].max": 100,
                                                         "swap_info[1].max": 200}
    facts = _swap_kernel(True)._swap_devices()
    assert list(facts) == ["swap_devices"] and facts["swap_devices"].value is None
    assert facts["swap_devices"].source.startswith("unknown: cannot read swap_info_struct at 0x4000")
    assert "excluded by the dump's filter" in facts["swap_devices"].source


def test_json_output_is_valid_or_absent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error in the middle of a walk leaves nothing on stdout (the document was complete
    up to the PTE table before)."""
    core = elf_core(tmp_path / "core")
    real = ElfCoreTarget.read

    def failing(self: ElfCoreTarget, pa: int, size: int) -> bytes:
        if pa == PTE_TABLE:
            raise ReadError("the disk went away")
        return real(self, pa, size)

    monkeypatch.setattr(ElfCoreTarget, "read", failing)
    code, out, err = run("dump", "--vmcore", str(core), "--kernel", "--format", "json")
    assert code != 0 and out == "" and "the disk went away" in err and "Traceback" not in err
    monkeypatch.setattr(ElfCoreTarget, "read", real)
    code, out, _ = run("dump", "--vmcore", str(core), "--kernel", "--format", "json")
    assert code == 0 and len(json.loads(out)["entries"]) == 3


# ----------------------------------------------------------------------------- modes across targets

def test_diff_across_pa_widths_compares_the_layout_and_notes_the_width() -> None:
    """A live arm64 target with a 44-bit PA CPU says 4k-48-pa44, its vmcore 4k-48 (VMCOREINFO has
    no PA width): the same tables, compared, with the width difference as a note."""
    base = 0x400000
    live = model_snapshot("arm64", "4k-48", [MapLeaf(base, "pte", 0x5000, Prot())])
    doc = copy.deepcopy(document(live))
    doc["target"]["paging"]["mode"] = "4k-48-pa44"
    doc["target"]["paging"]["pa_bits"] = 44
    pa44 = Snapshot.from_document(doc, "live pid 1")
    deltas, notes = diff_notes(pa44, live)
    assert deltas == [] and len(notes) == 1
    assert "44 bits (4k-48-pa44)" in notes[0] and "48 bits (4k-48)" in notes[0]
    other = model_snapshot("arm64", "4k-39", [MapLeaf(base, "pte", 0x5000, Prot())])
    with pytest.raises(SnapshotError, match="nothing to compare entry by entry"):
        diff_notes(live, other)


class _Kernel:
    """A kernel whose task 127's mm_struct lies in a page the dump's filter excluded."""

    def find_task(self, pid: int | None = None, comm: str | None = None) -> Task:
        return Task(pid=127, comm="workload", address=0xFFFF888000100000, mm=0xFFFF888001234000)

    def task_mm(self, task: Task) -> int:
        return task.mm

    def vmas(self, mm: int):
        try:
            raise ExcludedPage("vmcore:kdump: physical 0x1234000 was excluded by the dump's filter (dump level 31)")
        except ExcludedPage as exc:
            raise KernelError(f"cannot read mm_struct at {mm:#x} (40 bytes at {mm:#x}): {exc}") from exc


def test_an_unreadable_mm_struct_names_the_process_and_offers_root() -> None:
    session = Session(SparseMemory(RAM), get_arch("x86_64"), {}, "vmcore:kdump", kernel=_Kernel())  # type: ignore[arg-type]
    with pytest.raises(SessionError) as info:
        session.root(pid=127)
    text = str(info.value)
    assert text.startswith("cannot read the mm of pid 127 (workload) (mm_struct at 0xffff888001234000)")
    assert "excluded by the dump's filter" in text and "--root PA" in text


def test_a_vmcore_side_is_named_by_its_source(tmp_path: Path) -> None:
    """diff against a vmcore target names that side as the vmcore, not "live"."""
    core = elf_core(tmp_path / "core")
    code, out, err = run("dump", "--vmcore", str(core), "--kernel", "--format", "json")
    assert code == 0, err
    (tmp_path / "a.json").write_text(out)
    code, out, err = run("diff", str(tmp_path / "a.json"), "--vmcore", str(core), "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["b"]["name"].startswith("vmcore:elf kernel root") and doc["notes"] == [] and doc["equal"]


def test_excluded_ranges_of_several_pt_loads(tmp_path: Path) -> None:
    """Three PT_LOADs as makedumpfile -E splits RAM: each ends in a run it left out; a fourth segment
    holds part of one such run (another segment's data is data, not an exclusion)."""
    loads = [(0x0, 0x1000, 0x3000), (0x3000, 0x2000, 0x5000), (0x8000, 0x1000, 0x8000), (0xa000, 0x1000, 0x1000)]
    at = 64 + 56 * len(loads)
    phdrs = b""
    for pa, filesz, memsz in loads:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, at, 0, pa, filesz, memsz, 0)
        at += filesz
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 4, 62, 1, 0, 64, 0, 0, 64, 56, len(loads), 0, 0, 0))
    (tmp_path / "core").write_bytes(header + phdrs + bytes(at - 64 - 56 * len(loads)))
    dump = vmcorefile.identify(tmp_path / "core")
    assert dump.left_out == ((0x1000, 0x3000), (0x5000, 0x8000), (0x9000, 0xa000), (0xb000, 0x10000))
    assert dump.ram == ((0, 0x10000),)
    for pa, size, hit in [(0x0, 0x1000, None), (0xff8, 16, 0x1000), (0x2ff8, 8, 0x2ff8), (0x3000, 0x2000, None),
                          (0x4000, 0x1001, 0x5000), (0x9fff, 1, 0x9fff), (0xa000, 0x1000, None),
                          (0x0, 0x10000, 0x1000), (0xa800, 0x1000, 0xb000), (0x10000, 8, None)]:
        why = dump.excluded(pa, size)
        assert (why is None) == (hit is None), (hex(pa), why)
        assert hit is None or why.startswith(f"physical {hit:#x} was excluded"), (hex(pa), why)
