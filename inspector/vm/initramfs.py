"""The guest initramfs: busybox, vm-images/initramfs/init, the workload and the kernel modules it needs.

Layout inside the gzip cpio (newc):
  /init                       the busybox sh init script
  /bin/busybox                static busybox for the guest arch (images.busybox_path)
  /dev/console                character device 5:1, so init starts with a console
  /ptinspect/workload         the static workload (vm-images/workload/*.c)
  /ptinspect/kernel.config    the kernel's build config (the workload quotes it in reasons)
  /ptinspect/modules/*.ko     decompressed modules: qemu_fw_cfg (VMCOREINFO in QEMU dumps), zram (swap)
                              and, where it is a module, zram's default compressor
  /ptinspect/modules.list     "<name> <file>|builtin|missing", dependencies first: init's load order
  /ptinspect/hmm/             test_hmm.ko and hmmop (vm-images/hmm/) when the module is built for this
                              kernel (inspector/vm/hmm.py), else `unavailable`: why not (init logs it);
                              with them hmm-tests, the kernel's own selftest, when its source is cached
  /ptinspect/selftests/       migration (the kernel's migration selftest) once mmselftests built it

No QEMU device is needed beyond the harness's own: swap is zram, inside guest RAM.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import lzma
import platform
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from elftools.elf.elffile import ELFFile

from ptinspect.archs import arch_where

from ..cache import locked, subdir
from . import VMError, progress
from .hmm import HmmModule, module_status, selftest_source
from .images import STAMP, KernelImage, busybox_path
from .mmselftests import HMM_TESTS, MIGRATION, built

REPO = Path(__file__).resolve().parents[2]
WORKLOAD_DIR = REPO / "vm-images" / "workload"
INIT_SCRIPT = REPO / "vm-images" / "initramfs" / "init"
HMMOP = REPO / "vm-images" / "hmm" / "hmmop.c"
QEMU_DEVICES: tuple[str, ...] = ()  # zram needs no extra QEMU device
MODULES = ("qemu_fw_cfg", "zram")
CFLAGS = ("-static", "-O2", "-std=gnu11", "-Wall", "-Wextra", "-Werror")
COMPILE_TIMEOUT = 300.0
LOCK_TIMEOUT = 600.0
STALE_AFTER = 3600.0  # seconds before an older initramfs of an image is removed (a boot may be using it)
HOST_ARCH = getattr(arch_where("uname_machines", platform.machine()), "name", None)
# arch: (GNU triplet, Debian cross-compiler package, Debian cross libc package)
TOOLCHAINS = {
    "x86_64": ("x86_64-linux-gnu", "gcc-x86-64-linux-gnu", "libc6-dev-amd64-cross"),
    "arm64": ("aarch64-linux-gnu", "gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"),
    "riscv64": ("riscv64-linux-gnu", "gcc-riscv64-linux-gnu", "libc6-dev-riscv64-cross"),
}


def compiler(arch: str) -> tuple[str, str]:
    """(compiler path, Debian package of its static libc) for ARCH; VMError naming the package if absent."""
    triplet, package, libc = TOOLCHAINS[arch]
    names = [f"{triplet}-gcc"]
    if arch == HOST_ARCH:
        names, package, libc = ["gcc", *names], "gcc", "libc6-dev"
    for name in names:
        if path := shutil.which(name):
            return path, libc
    raise VMError(f"no C compiler for {arch}: install the Debian packages {package} {libc}")


def _sources() -> list[Path]:
    return sorted(WORKLOAD_DIR.glob("*.[ch]"))


def build_workload(arch: str, out: Path) -> Path:
    """Compile the workload statically for ARCH into OUT; VMError with the compiler's message on failure."""
    cc, libc = compiler(arch)
    cmd = [cc, *CFLAGS, "-o", str(out), *(str(p) for p in _sources() if p.suffix == ".c")]
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise VMError(f"compiling the workload for {arch} took over {COMPILE_TIMEOUT:.0f} s") from None
    if done.returncode:
        hint = ""
        if "cannot find -lc" in done.stderr or "crt1.o" in done.stderr:
            hint = f" (static libc missing: install the Debian package {libc})"
        raise VMError(f"compiling the workload for {arch} failed{hint}:\n{done.stderr.strip()[-3000:]}")
    return out


def build_hmmop(arch: str, module: HmmModule, out: Path) -> Path:
    """Compile vm-images/hmm/hmmop.c statically for ARCH against the uapi header of MODULE's source."""
    cc, _ = compiler(arch)
    return _compile([cc, *CFLAGS, f"-I{module.uapi.parent}", "-o", str(out), str(HMMOP)], f"hmmop for {arch}", out)


def _compile(cmd: list[str], what: str, out: Path) -> Path:
    """Run a compiler command (bounded); VMError with the end of its errors."""
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=COMPILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise VMError(f"compiling {what} took over {COMPILE_TIMEOUT:.0f} s") from None
    if done.returncode:
        raise VMError(f"compiling {what} failed:\n{done.stderr.strip()[-3000:]}")
    return out


def build_hmm_tests(arch: str, src: Path, out: Path) -> Path:
    """Compile the kernel's own hmm-tests statically for ARCH from its source tree SRC (hmm.SELFTEST_MEMBERS),
    with the flags of its Makefile (mmselftests.Program); its warnings are the kernel's, so no -Werror.
    It links only glibc, so the host's cross compiler does (migration links Debian's libnuma: mmselftests)."""
    cc, _ = compiler(arch)
    return _compile(HMM_TESTS.command(cc, src, out), f"hmm-tests for {arch}", out)


def _module_name(path: Path) -> str:
    """A module's name as the kernel spells it: file name without .ko[.xz|.zst|.gz], '-' as '_'."""
    return path.name.split(".ko")[0].replace("-", "_")


def _decompress(path: Path) -> bytes:
    """The plain .ko bytes of a possibly compressed module file."""
    data = path.read_bytes()
    if path.name.endswith(".ko"):
        return data
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(data)
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(data)
    if path.name.endswith(".ko.zst"):
        if not shutil.which("zstd"):
            raise VMError(f"{path.name} is zstd-compressed: install the Debian package zstd")
        return subprocess.run(["zstd", "-dc", str(path)], capture_output=True, check=True).stdout
    raise VMError(f"unknown module compression: {path}")


def _depends(module: bytes) -> list[str]:
    """The `depends=` names in a module's .modinfo section (modules.dep is not shipped by Debian)."""
    section = ELFFile(io.BytesIO(module)).get_section_by_name(".modinfo")
    if section is None:
        return []
    for field in section.data().split(b"\0"):
        if field.startswith(b"depends="):
            return [name.replace("-", "_") for name in field[8:].decode().split(",") if name]
    return []


def _builtin(modules_dir: Path) -> set[str]:
    try:
        lines = (modules_dir / "modules.builtin").read_text().split()
    except OSError:
        return set()
    return {_module_name(Path(line)) for line in lines}


# drivers/block/zram/zram_drv.c `default_compressor = "lzo-rle"` in kernels whose config has no
# CONFIG_ZRAM_DEF_COMP yet (5.10 among them).
ZRAM_FIXED_DEFAULT = "lzo-rle"


def zram_compressor(config: Path) -> str:
    """The module name of zram's default compressor (CONFIG_ZRAM_DEF_COMP, else lzo-rle).

    Before 6.12 zram compresses through the crypto API, so e.g. crypto/lzo-rle.ko must be loaded
    (or disksize fails with EINVAL); later kernels have the compressors built into zram.ko (that
    name then matches nothing or a builtin).
    """
    match = re.search(r'^CONFIG_ZRAM_DEF_COMP="([^"]+)"', config.read_text(errors="replace"), re.MULTILINE)
    return (match[1] if match else ZRAM_FIXED_DEFAULT).replace("-", "_")


def select_modules(modules_dir: Path, wanted: tuple[str, ...] = MODULES,
                   optional: tuple[str, ...] = ()) -> list[tuple[str, str, bytes]]:
    """[(name, builtin|missing|file name, .ko bytes)] for WANTED, the OPTIONAL ones that exist, and their
    dependencies, dependencies first."""
    files = {_module_name(p): p for p in (modules_dir / "kernel").rglob("*.ko*")}
    builtin = _builtin(modules_dir)
    order: list[tuple[str, str, bytes]] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        if name in builtin:
            order.append((name, "builtin", b""))
        elif name not in files:
            order.append((name, "missing", b""))
        else:
            data = _decompress(files[name])
            for dep in _depends(data):
                visit(dep)
            order.append((name, f"{name}.ko", data))

    for name in wanted:
        visit(name)
    for name in optional:
        if name in files or name in builtin:
            visit(name)
    return order


class Cpio:
    """A newc cpio archive with fixed owners and times, so equal inputs give equal bytes."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.ino = 0

    def _add(self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)) -> None:
        self.ino += 1
        fields = (self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0)
        self.buf.write(b"070701" + b"".join(b"%08X" % f for f in fields) + name.encode() + b"\0")
        self._pad()
        self.buf.write(data)
        self._pad()

    def _pad(self) -> None:
        self.buf.write(b"\0" * (-self.buf.tell() % 4))

    def directory(self, name: str) -> None:
        self._add(name, 0o040755)

    def file(self, name: str, data: bytes, executable: bool = False) -> None:
        self._add(name, 0o100755 if executable else 0o100644, data)

    def char_device(self, name: str, major: int, minor: int) -> None:
        self._add(name, 0o020600, rdev=(major, minor))

    def finish(self) -> bytes:
        self._add("TRAILER!!!", 0)
        return self.buf.getvalue()


def _inputs_digest(image: KernelImage, cc: str, busybox: Path, modules: list[tuple[str, str, bytes]],
                   hmm: tuple[HmmModule | None, str], selftest: Path | None, migration: Path | None) -> str:
    """sha256 over everything that goes into the initramfs, and the code that lays it out."""
    digest = hashlib.sha256()
    version = subprocess.run([cc, "--version"], check=True, capture_output=True, text=True).stdout.splitlines()[:1]
    parts: list[bytes] = [image.arch.encode(), " ".join([cc, *CFLAGS, *version]).encode(),
                          Path(__file__).read_bytes(), INIT_SCRIPT.read_bytes(), busybox.read_bytes(),
                          image.config.read_bytes()]
    parts += [p.name.encode() + b"\0" + p.read_bytes() for p in _sources()]
    parts += [f"{name} {where}".encode() + b"\0" + data for name, where, data in modules]
    module, reason = hmm
    parts += [HMMOP.read_bytes(), reason.encode()]
    if module:
        parts += [module.ko.read_bytes(), module.uapi.read_bytes()]
    if module and selftest:
        parts += [(selftest / STAMP).read_bytes()]  # names every file of the source with its sha256
    if migration:
        parts += [migration.read_bytes()]
    for part in parts:
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:16]


def build_initramfs(image: KernelImage) -> Path:
    """The initramfs for IMAGE under $CACHE/initramfs/, rebuilt only when an input changed."""
    cc, _ = compiler(image.arch)
    busybox = busybox_path(image.arch)
    compressor = zram_compressor(image.config)
    hmm, hmm_reason = module_status(image)
    selftest = selftest_source(image) if hmm else None
    hmm_deps = tuple(_depends(hmm.ko.read_bytes())) if hmm else ()
    modules = select_modules(image.modules_dir, wanted=(*MODULES, *hmm_deps), optional=(compressor,))
    migration = built(image, MIGRATION)
    out_dir = subdir("initramfs")
    digest = _inputs_digest(image, cc, busybox, modules, (hmm, hmm_reason), selftest, migration)
    dest = out_dir / f"{image.id}-{digest}.cpio.gz"
    with locked(out_dir / f"{image.id}.lock", LOCK_TIMEOUT):
        if dest.exists():
            return dest
        progress(f"{image.id}: building the initramfs ({dest.name})")
        with tempfile.TemporaryDirectory(prefix="ptinspect-workload-") as tmp:
            workload = build_workload(image.arch, Path(tmp) / "workload").read_bytes()
            hmmop = build_hmmop(image.arch, hmm, Path(tmp) / "hmmop").read_bytes() if hmm else b""
            tests = build_hmm_tests(image.arch, selftest, Path(tmp) / "hmm-tests").read_bytes() if selftest else b""
        cpio = Cpio()
        for name in ("bin", "dev", "proc", "sys", "tmp", "run", "ptinspect", "ptinspect/modules", "ptinspect/hmm",
                     "ptinspect/selftests"):
            cpio.directory(name)
        cpio.char_device("dev/console", 5, 1)
        cpio.file("init", INIT_SCRIPT.read_bytes(), executable=True)
        cpio.file("bin/busybox", busybox.read_bytes(), executable=True)
        cpio.file("ptinspect/workload", workload, executable=True)
        cpio.file("ptinspect/kernel.config", image.config.read_bytes())
        for _name, where, data in modules:
            if data:
                cpio.file(f"ptinspect/modules/{where}", data)
        if hmm:
            cpio.file("ptinspect/hmm/test_hmm.ko", hmm.ko.read_bytes())
            cpio.file("ptinspect/hmm/hmmop", hmmop, executable=True)
            if tests:
                cpio.file("ptinspect/hmm/hmm-tests", tests, executable=True)
        else:
            cpio.file("ptinspect/hmm/unavailable", hmm_reason.encode() + b"\n")
        if migration:
            cpio.file(f"ptinspect/selftests/{MIGRATION.name}", migration.read_bytes(), executable=True)
        cpio.file("ptinspect/modules.list", "".join(f"{n} {w}\n" for n, w, _ in modules).encode())
        tmp_dest = dest.with_suffix(".tmp")
        tmp_dest.write_bytes(gzip.compress(cpio.finish(), compresslevel=6, mtime=0))
        tmp_dest.rename(dest)
        for stale in out_dir.glob(f"{image.id}-*.cpio.gz"):
            if stale != dest and time.time() - stale.stat().st_mtime > STALE_AFTER:
                stale.unlink(missing_ok=True)
    return dest
