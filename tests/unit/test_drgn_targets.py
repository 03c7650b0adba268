"""vmcore, /proc/kcore and QMP targets without a VM: synthetic dumps (ELF, kdump, flattened
kdump) holding a small x86-64 page table, the VMCOREINFO-derived modes of every arch, and
every kind of bad input giving one clear line, exit status != 0 and no traceback."""
from __future__ import annotations

import json
import socket
import struct
import threading
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptinspect.archs import get_arch
from ptinspect.commands.cli import main
from ptinspect.inspector import vmcorefile
from ptinspect.inspector.targets import drgn as drgn_target
from ptinspect.inspector.vmcoreinfo import add_elf_note, add_kdump_note, parse

PAGE = 4096
RAM = 16 * PAGE
KERNEL_VA = 0xFFFFFFFF80000000
BUILD_ID = "11" * 20
INFO = (f"OSRELEASE=7.2.0-test\nBUILD-ID={BUILD_ID}\nPAGESIZE=4096\nSYMBOL(swapper_pg_dir)=ffffffff80001000\n"
        "NUMBER(phys_base)=0\nSYMBOL(init_top_pgt)=ffffffff80001000\nNUMBER(pgtable_l5_enabled)=0\n"
        "KERNELOFFSET=0\n").encode()
P, RW, A, D, PSE, G = 1, 2, 0x20, 0x40, 0x80, 0x100
NX = 1 << 63
TABLE = P | RW | A | D


def page_tables() -> dict[int, bytes]:
    """A 4-level kernel half: PGD 0x1000 -> PUD 0x2000 -> PMD 0x3000 -> PTE 0x4000.

    KERNEL_VA maps 0x5000 and 0x6000 (4 KiB), KERNEL_VA + 2 MiB is a 2 MiB leaf at 0x200000."""
    tables = {
        0x1000: {511: 0x2000 | TABLE},
        0x2000: {510: 0x3000 | TABLE},
        0x3000: {0: 0x4000 | TABLE, 1: 0x200000 | TABLE | PSE | G | NX},
        0x4000: {0: 0x5000 | TABLE | G | NX, 1: 0x6000 | TABLE | G},
    }
    return {pa: b"".join(struct.pack("<Q", entries.get(i, 0)) for i in range(512)) for pa, entries in tables.items()}


def memory() -> bytes:
    ram = bytearray(RAM)
    for pa, data in page_tables().items():
        ram[pa:pa + PAGE] = data
    return bytes(ram)


def elf_core(path: Path, info: bytes | None = INFO, machine: int = 62) -> Path:
    """An ELF vmcore as QEMU writes one: PT_NOTE (VMCOREINFO) and one PT_LOAD of all RAM."""
    note = b""
    if info is not None:
        name = b"VMCOREINFO\0\0"
        note = struct.pack("<III", 11, len(info), 0) + name + info + bytes(-len(info) % 4)
    phnum = 2
    note_at = 64 + 56 * phnum
    load_at = (note_at + len(note) + PAGE - 1) // PAGE * PAGE
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 4, machine, 1, 0, 64, 0, 0, 64, 56, phnum, 0, 0, 0))
    phdrs = (struct.pack("<IIQQQQQQ", 4, 0, note_at, 0, 0, len(note), len(note), 0)
             + struct.pack("<IIQQQQQQ", 1, 7, load_at, 0, 0, RAM, RAM, 0))
    data = header + phdrs + note
    path.write_bytes(data + bytes(load_at - len(data)) + memory())
    return path


def kdump(path: Path, info: bytes | None = INFO, machine: bytes = b"x86_64", flattened: bool = False,
          block: int = PAGE, compress: bool = False) -> Path:
    """A kdump-compressed file as QEMU writes one (DiskDumpHeader64 version 6, KdumpSubHeader64, the
    guest's VMCOREINFO note among the notes, two bitmaps, PageDescriptors, raw or zlib pages);
    `block`: QEMU's page size (64 KiB for arm64), `flattened`: makedumpfile's flattened stream."""
    ram = memory()
    pages = len(ram) // block
    uts = b"".join(f.ljust(65, b"\0") for f in (b"Linux", b"test", b"7.2.0-test", b"#1", machine, b""))
    header = (b"KDUMP   " + struct.pack("<I", 6) + uts + bytes(22)
              + struct.pack("<IIIIIIIIII", 0, block, 2, 2, pages, 0, 0, 0, 0, 1))
    note = b"" if info is None else struct.pack("<III", 11, len(info), 0) + b"VMCOREINFO\0\0" + info
    text_at = 2 * block + 24 if info else 0
    sub = struct.pack("<QIIQQQQQQQQQQQ", 0, 1, 0, 0, pages, text_at, len(info or b""), 2 * block if info else 0,
                      len(note), 0, 0, 0, pages, pages)
    bitmap = bytes([0xFF] * (pages // 8) + ([(1 << pages % 8) - 1] if pages % 8 else [])).ljust(block, b"\0")
    datas = [ram[i * block:(i + 1) * block] for i in range(pages)]
    datas = [zlib.compress(d) if compress else d for d in datas]
    at = 5 * block + pages * 24
    descs = b""
    for d in datas:
        descs += struct.pack("<QIIQ", at, len(d), 1 if compress else 0, 0)
        at += len(d)
    blocks = [header.ljust(block, b"\0"), sub.ljust(block, b"\0"), note.ljust(block, b"\0"), bitmap, bitmap]
    plain = b"".join(blocks) + descs + b"".join(datas)
    if not flattened:
        path.write_bytes(plain)
        return path
    out = bytearray(b"makedumpfile".ljust(16, b"\0") + struct.pack(">qq", 1, 1)).ljust(4096, b"\0")
    for at in range(0, len(plain), 3 * PAGE):
        chunk = plain[at:at + 3 * PAGE]
        out += struct.pack(">qq", at, len(chunk)) + chunk
    path.write_bytes(bytes(out + struct.pack(">qq", -1, -1)))
    return path


def fake_vmlinux(path: Path, release: str = "7.2.0-test", build_id: str = BUILD_ID, machine: int = 62) -> Path:
    """The least a vmlinux needs for ptinspect's checks: linux_banner in a PT_LOAD, a .symtab and a
    GNU build-ID note (sections: null, .note.gnu.build-id, .symtab, .strtab, .shstrtab)."""
    banner = f"Linux version {release} (test) #1\n\0".encode()
    note = struct.pack("<III", 4, 20, 3) + b"GNU\0" + bytes.fromhex(build_id)
    strtab = b"\0linux_banner\0"
    symtab = bytes(24) + struct.pack("<IBBHQQ", 1, 0x11, 0, 0xFFF1, 0xFFFFFFFF81000000, len(banner))
    shstrtab = b"\0.note.gnu.build-id\0.symtab\0.strtab\0.shstrtab\0"
    body = [(0x1000, banner), (0x2000, note), (0x3000, symtab), (0x4000, strtab), (0x5000, shstrtab)]
    shoff = 0x6000

    def sh(name: int, kind: int, offset: int, size: int, link: int = 0, entsize: int = 0) -> bytes:
        return struct.pack("<IIQQQQIIQQ", name, kind, 0, 0, offset, size, link, 0, 1, entsize)

    sections = (bytes(64) + sh(1, 7, 0x2000, len(note)) + sh(20, 2, 0x3000, len(symtab), 3, 24)
                + sh(28, 3, 0x4000, len(strtab)) + sh(36, 3, 0x5000, len(shstrtab)))
    header = (b"\x7fELF\x02\x01\x01" + bytes(9)
              + struct.pack("<HHIQQQIHHHHHH", 2, machine, 1, 0, 64, shoff, 0, 64, 56, 1, 64, 5, 4))
    phdr = struct.pack("<IIQQQQQQ", 1, 4, 0x1000, 0xFFFFFFFF81000000, 0x1000000, len(banner), len(banner), 0x1000)
    image = bytearray(shoff)
    image[:len(header) + len(phdr)] = header + phdr
    for at, blob in body:
        image[at:at + len(blob)] = blob
    path.write_bytes(bytes(image) + sections)
    return path


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTINSPECT_CACHE", str(tmp_path / "cache"))


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


def fails(*args: str, expect: str) -> str:
    """The command fails with one error line containing `expect`."""
    code, _, err = run(*args)
    errors = [line for line in err.splitlines() if line.startswith("Error:")]
    assert code != 0, err
    assert "Traceback" not in err and len(errors) == 1 and expect in errors[0], err
    if not err.startswith("Usage:"):  # a usage error adds click's usage lines
        assert err.strip() == errors[0], err
    return errors[0]


def kernel_entries(*target: str) -> list[dict]:
    code, out, err = run("dump", *target, "--kernel", "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert doc["target"]["root"] == "0x1000" and doc["target"]["paging"]["mode"] == "4-level"
    return doc["entries"]


# ----------------------------------------------------------------------------- reading dumps

def test_elf_vmcore_walks_the_kernel_root(tmp_path: Path) -> None:
    entries = kernel_entries("--vmcore", str(elf_core(tmp_path / "core.elf")))
    got = [(e["va"], e["level"], e["kind"], e["pfn"], e["raw"]) for e in entries]
    assert got == [
        (hex(KERNEL_VA), "pte", "present", "0x5", hex(0x5000 | TABLE | G | NX)),
        (hex(KERNEL_VA + PAGE), "pte", "present", "0x6", hex(0x6000 | TABLE | G)),
        (hex(KERNEL_VA + (2 << 20)), "pmd", "present", "0x200", hex(0x200000 | TABLE | PSE | G | NX)),
    ]


@pytest.mark.parametrize("flattened", [False, True], ids=["plain", "flattened"])
@pytest.mark.parametrize("compress", [False, True], ids=["raw", "zlib"])
@pytest.mark.parametrize("block", [PAGE, 16 * PAGE], ids=["4k-blocks", "64k-blocks"])
def test_kdump_gives_the_same_entries(tmp_path: Path, flattened: bool, compress: bool, block: int) -> None:
    """4 KiB blocks go through drgn's libkdumpfile, 64 KiB ones (QEMU arm64) through ptinspect's reader."""
    elf = kernel_entries("--vmcore", str(elf_core(tmp_path / "core.elf")))
    core = kdump(tmp_path / "core.kdump", flattened=flattened, compress=compress, block=block)
    assert kernel_entries("--vmcore", str(core)) == elf


def test_kdump_of_an_unnamed_machine(tmp_path: Path) -> None:
    """QEMU's arm64 and riscv64 kdumps say "Unknown": the VMCOREINFO keys tell the architecture."""
    assert vmcorefile.identify(kdump(tmp_path / "core", machine=b"Unknown")).arch == "x86_64"
    fails("dump", "--vmcore", str(kdump(tmp_path / "bare", machine=b"Unknown", info=None)), "--kernel",
          expect="has no VMCOREINFO")


def test_identify_reads_headers(tmp_path: Path) -> None:
    for dump in (vmcorefile.identify(elf_core(tmp_path / "a")), vmcorefile.identify(kdump(tmp_path / "b")),
                 vmcorefile.identify(kdump(tmp_path / "c", flattened=True))):
        assert dump.arch == "x86_64" and dump.vmcoreinfo == INFO and dump.ram == ((0, RAM),), dump


def test_reassembled_flattened_is_the_plain_kdump(tmp_path: Path) -> None:
    vmcorefile.reassemble(kdump(tmp_path / "flat", flattened=True), tmp_path / "out")
    assert (tmp_path / "out").read_bytes() == kdump(tmp_path / "plain").read_bytes()


@pytest.mark.parametrize("fmt", ["elf", "kdump"])
def test_added_note_identifies_a_dump(tmp_path: Path, fmt: str) -> None:
    core = elf_core(tmp_path / "core", info=None) if fmt == "elf" else kdump(tmp_path / "core", info=None)
    (add_elf_note if fmt == "elf" else add_kdump_note)(core, INFO)
    assert vmcorefile.identify(core).vmcoreinfo == INFO
    assert kernel_entries("--vmcore", str(core)) == kernel_entries("--vmcore", str(elf_core(tmp_path / "ref")))


# ----------------------------------------------------------------------------- modes from VMCOREINFO

def info(**numbers: str) -> dict[str, str]:
    return parse(b"OSRELEASE=x\n" + b"".join(f"{k}={v}\n".encode() for k, v in numbers.items()))


def test_x86_modes_and_image_address() -> None:
    x86 = get_arch("x86_64")
    assert x86.mode_from_vmcoreinfo({"NUMBER(pgtable_l5_enabled)": "1"}, True).name == "5-level"
    assert x86.mode_from_vmcoreinfo({"NUMBER(pgtable_l5_enabled)": "0"}, False).name == "4-level"
    assert x86.kernel_image_pa({"NUMBER(phys_base)": "16777216"}, 0xFFFFFFFF8322A000) == 0x422A000
    with pytest.raises(ValueError, match="pgtable_l5_enabled"):
        x86.mode_from_vmcoreinfo({}, True)


def test_arm64_modes_match_the_register_modes() -> None:
    arm = get_arch("arm64")
    lpa2 = {"PAGESIZE": "4096", "NUMBER(TCR_EL1_T1SZ)": "0xc", "NUMBER(MAX_PHYSMEM_BITS)": "52"}
    assert arm.mode_from_vmcoreinfo(lpa2, False).name == "4k-52-lpa2"
    assert arm.mode_from_vmcoreinfo(lpa2, True).name == "4k-52-lpa2-ttbr1"
    tcr = 12 | 12 << 16 | 2 << 30 | 6 << 32 | 1 << 59  # T0SZ/T1SZ 12, TG1 4K, IPS 52, DS
    for upper in (False, True):
        assert arm.mode_from_vmcoreinfo(lpa2, upper) == arm.mode_from_registers({"TCR_EL1": tcr, "half": int(upper)})
    plain = {"PAGESIZE": "4096", "NUMBER(TCR_EL1_T1SZ)": "0x10", "NUMBER(MAX_PHYSMEM_BITS)": "48"}
    assert arm.mode_from_vmcoreinfo(plain, False).name == "4k-48"
    big = {"PAGESIZE": "65536", "NUMBER(TCR_EL1_T1SZ)": "0xc", "NUMBER(MAX_PHYSMEM_BITS)": "52"}
    assert arm.mode_from_vmcoreinfo(big, False).name == "64k-52-lpa"
    assert arm.kernel_image_pa({"NUMBER(kimage_voffset)": "0xffff80003fe00000"}, 0xFFFF800080200000) == 0x40400000


def test_riscv_modes_and_image_address() -> None:
    rv = get_arch("riscv64")
    assert rv.mode_from_vmcoreinfo({"NUMBER(VA_BITS)": "48"}, True).name == "sv48"
    assert rv.mode_from_vmcoreinfo({"NUMBER(satp)": "0xa000000000082507"}, False).name == "sv57"
    with pytest.raises(ValueError, match="disagrees"):
        rv.mode_from_vmcoreinfo({"NUMBER(satp)": "0x9000000000082507", "NUMBER(VA_BITS)": "57"}, True)
    with pytest.raises(ValueError, match="neither"):
        rv.mode_from_vmcoreinfo({}, True)
    offset = "0xfffffffeffe00000"
    assert rv.kernel_image_pa({"NUMBER(va_kernel_pa_offset)": offset}, 0xFFFFFFFF8227E642) == 0x8247E642


# ----------------------------------------------------------------------------- bad input

def test_truncated_elf(tmp_path: Path) -> None:
    core = elf_core(tmp_path / "core.elf")
    core.write_bytes(core.read_bytes()[:-PAGE])
    fails("dump", "--vmcore", str(core), "--kernel", expect="is truncated")


@pytest.mark.parametrize("head", [b"\x7fELF", b"KDUMP   \x06", b"makedumpfile\0"], ids=["elf", "kdump", "flattened"])
def test_truncated_headers(tmp_path: Path, head: bytes) -> None:
    (tmp_path / "core").write_bytes(head)
    fails("dump", "--vmcore", str(tmp_path / "core"), "--kernel", expect="is truncated")


@pytest.mark.parametrize("flattened", [False, True], ids=["kdump", "flattened"])
def test_truncated_kdump(tmp_path: Path, flattened: bool) -> None:
    core = kdump(tmp_path / "core", flattened=flattened)
    core.write_bytes(core.read_bytes()[:-100])
    fails("dump", "--vmcore", str(core), "--kernel", expect="is truncated")


@pytest.mark.parametrize("make", [elf_core, kdump], ids=["elf", "kdump"])
def test_no_vmcoreinfo(tmp_path: Path, make) -> None:
    line = fails("dump", "--vmcore", str(make(tmp_path / "core", info=None)), "--kernel", expect="has no VMCOREINFO")
    assert "ptinspect vmcore" in line


def test_not_a_vmcore(tmp_path: Path) -> None:
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "text").write_text("hello\n")
    fails("dump", "--vmcore", str(tmp_path / "empty"), "--kernel", expect="is empty")
    fails("dump", "--vmcore", str(tmp_path / "text"), "--kernel", expect="is not a vmcore")
    vmlinux = fake_vmlinux(tmp_path / "vmlinux")
    fails("dump", "--vmcore", str(vmlinux), "--kernel", expect="not a core dump")


def test_vmcore_of_an_unsupported_machine(tmp_path: Path) -> None:
    fails("dump", "--vmcore", str(elf_core(tmp_path / "ppc", machine=21)), "--kernel", expect="ELF machine 21")
    fails("dump", "--vmcore", str(kdump(tmp_path / "s390", machine=b"s390x")), "--kernel", expect="s390x machine")


def test_vmlinux_of_another_architecture(tmp_path: Path) -> None:
    arm = fake_vmlinux(tmp_path / "vmlinux-arm64", machine=183)
    fails("dump", "--vmcore", str(elf_core(tmp_path / "core")), "--vmlinux", str(arm), "--kernel",
          expect="is an arm64 kernel but the kernel in the vmcore:elf target is x86_64")


def test_vmlinux_of_another_build(tmp_path: Path) -> None:
    core = str(elf_core(tmp_path / "core"))
    other_build = fake_vmlinux(tmp_path / "a", build_id="22" * 20)
    fails("dump", "--vmcore", core, "--vmlinux", str(other_build), "--kernel", expect="is another build of 7.2.0-test")
    other_release = fake_vmlinux(tmp_path / "b", release="6.1.0-other")
    fails("dump", "--vmcore", core, "--vmlinux", str(other_release), "--kernel",
          expect="is 6.1.0-other, but the kernel in the vmcore:elf target is 7.2.0-test")


class _Kcore:
    """Stands for /proc/kcore as a non-root user sees it."""

    def exists(self) -> bool:
        return True

    def open(self, mode: str) -> None:
        raise PermissionError(13, "Permission denied")

    def __str__(self) -> str:
        return "/proc/kcore"


def test_kcore_without_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drgn_target, "KCORE", _Kcore())
    fails("dump", "--kcore", "--kernel", expect="needs root")


def test_kcore_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(drgn_target, "KCORE", tmp_path / "kcore")
    fails("dump", "--kcore", "--kernel", expect="CONFIG_PROC_KCORE")


def _serve(path: Path, greeting: bytes | None) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def answer() -> None:
        conn, _ = server.accept()
        if greeting is not None:
            conn.sendall(greeting)
        conn.recv(1024)  # hold the connection until the client gives up
        conn.close()
        server.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return thread


@pytest.mark.parametrize("greeting", [b"SSH-2.0-OpenSSH_9.2\r\n", None], ids=["other-protocol", "silent"])
def test_qmp_socket_that_is_not_qemu(tmp_path: Path, greeting: bytes | None) -> None:
    path = tmp_path / "sock"
    thread = _serve(path, greeting)
    fails("dump", "--qmp", str(path), "--timeout", "1", "--kernel", expect="is not a QEMU QMP socket")
    thread.join(timeout=5)


def test_qmp_path_that_is_not_a_socket(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    fails("dump", "--qmp", str(tmp_path / "file"), "--kernel", expect="is not a socket")
    fails("dump", "--qmp", str(tmp_path / "none"), "--kernel", expect="No such file")


def test_one_target_only(tmp_path: Path) -> None:
    core = str(elf_core(tmp_path / "core"))
    fails("dump", "--vmcore", core, "--gdb", "1234", "--kernel", expect="only one target")
    fails("dump", "--vmcore", core, "--keep-stopped", "--kernel", expect="--keep-stopped applies to a live VM")


def test_vmcore_command_bad_input(tmp_path: Path) -> None:
    (tmp_path / "exists").write_text("")
    fails("vmcore", "--qmp", str(tmp_path / "none"), str(tmp_path / "exists"), expect="exists (--force overwrites it)")
    fails("vmcore", "--gdb", "127.0.0.1:1", str(tmp_path / "out"), expect="is not the gdbstub of a `ptinspect vm` VM")
    fails("vmcore", str(tmp_path / "out"), expect="give --qmp SOCKET")
    path = tmp_path / "sock"
    thread = _serve(path, b"hello\n")
    fails("vmcore", "--qmp", str(path), "--timeout", "1", str(tmp_path / "out"), expect="is not a QEMU QMP socket")
    thread.join(timeout=5)
    assert not (tmp_path / "out").exists()
