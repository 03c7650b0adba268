"""The kernel's own HMM selftest (tools/testing/selftests/mm/hmm-tests.c) for a test kernel, and running
guest programs on request: a witness of what test_hmm.ko does that does not come from ptinspect's code.

hmm-tests is compiled statically with the host's compiler for the guest architecture (the ones that
build the workload, initramfs.compiler) from the kernel's own linux-source of the module's version,
linked as the selftest Makefile links it (hmm-tests.c vm_util.c hugepage_settings.c -lrt -lpthread -lm,
-I the source root for lib/test_hmm_uapi.h and mm/gup_test.h). The host's libc headers are older than
the kernel's uapi (PAGEMAP_SCAN, PROCMAP_QUERY used by vm_util.c), so the source's include/uapi comes
before them, as the Makefile's KHDR_INCLUDES does with installed headers.

Cache (under $PTINSPECT_CACHE/hmm/):
  selftest-src/<series>_<version>/   the files below (+ stamp.json)
  selftests/<release>/hmm-tests      the static binary, build.log (+ stamp.json)

In the guest the binary is /ptinspect/hmm/hmm-tests; `start(vm, [path, args...])` asks the workload to
run it (request `SEQ run PATH ARG...`, vm-images/README-workload.md), `finish()` collects its output.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache import locked
from . import VMError, initramfs, progress
from .apt import AptState
from .hmm import LOCK_TIMEOUT, SOURCE_TIMEOUT, _call, build_module, cache_root
from .images import KernelImage, _run, _write_stamp, check_entry, load_manifest
from .state import VM

SELFTEST = "tools/testing/selftests/mm"
SOURCES = (f"{SELFTEST}/hmm-tests.c", f"{SELFTEST}/vm_util.c", f"{SELFTEST}/hugepage_settings.c")
HEADERS = (f"{SELFTEST}/vm_util.h", f"{SELFTEST}/hugepage_settings.h", "tools/testing/selftests/kselftest.h",
           "tools/testing/selftests/kselftest_harness.h", "lib/test_hmm_uapi.h", "mm/gup_test.h")
UAPI_DIR = "include/uapi"
# What scripts/headers_install.sh does to a uapi header, as macros: unifdef -D__EXPORTED_HEADERS__, and its
# sed of __user, __force, __iomem, __attribute_const__ (to nothing) and __packed (7.3's linux/userfaultfd.h).
CFLAGS = ("-static", "-O2", "-Wall", "-U_FORTIFY_SOURCE", "-D__EXPORTED_HEADERS__", "-D__user=", "-D__force=",
          "-D__iomem=", "-D__attribute_const__=", "-D__packed=__attribute__((packed))")
LIBS = ("-lrt", "-lpthread", "-lm")
BINARY = "hmm-tests"
GUEST_PATH = "/ptinspect/hmm/hmm-tests"
COMPILE_TIMEOUT = 300.0
RUN_START = "PTINSPECT-RUN-START "
RUN = "PTINSPECT-RUN "
RUN_END = "PTINSPECT-RUN-END "


def source_dir(series: str, version: str) -> Path:
    return cache_root() / "selftest-src" / f"{series}_{version}"


def binary_dir(release: str) -> Path:
    return cache_root() / "selftests" / release


def fetch_selftest_source(series: str, version: str) -> Path:
    """The hmm-tests sources, headers and include/uapi of Debian's linux-source-SERIES VERSION."""
    dest = source_dir(series, version)
    with locked(dest.with_name(dest.name + ".lock"), LOCK_TIMEOUT):
        stamp, _ = check_entry(dest, full=False)
        if stamp:
            return dest
        apt = AptState()
        apt.update()
        work = dest.with_name(dest.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        try:
            package = f"linux-source-{series}={version}"
            progress(f"downloading {package} for {SELFTEST}/hmm-tests.c ...")
            apt.download([package], work / "debs")
            [deb] = sorted((work / "debs").glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(work / "pkg")], f"dpkg-deb -x {deb.name}")
            deb.unlink()
            tarballs = sorted((work / "pkg/usr/src").glob(f"linux-source-{series}.tar.*"))
            if len(tarballs) != 1:
                raise VMError(f"{package} holds no single usr/src/linux-source-{series}.tar.*")
            top = f"linux-source-{series}"
            members = [f"{top}/{name}" for name in (*SOURCES, *HEADERS, UAPI_DIR)]
            _call(["tar", "-x", "-C", str(work), "-f", str(tarballs[0]), *members],
                  f"extracting hmm-tests from {tarballs[0].name}", SOURCE_TIMEOUT)
            shutil.rmtree(work / "pkg")
            (work / top).rename(work / "entry")
            _write_stamp(work / "entry", {"package": package})
            shutil.rmtree(dest, ignore_errors=True)
            (work / "entry").rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def selftest_status(image: KernelImage) -> Path | None:
    """The cached hmm-tests of IMAGE, or None (not built)."""
    dest = binary_dir(image.release)
    stamp, _ = check_entry(dest, full=False)
    return dest / BINARY if stamp and stamp.get("release") == image.release and "command" in stamp else None


def build_hmm_tests(image: KernelImage) -> Path:
    """hmm-tests for IMAGE's architecture from the source of its test_hmm.ko (built first if needed)."""
    module = build_module(image)
    recipe = load_manifest()[image.id]
    dest = binary_dir(image.release)
    with locked(dest.with_name(image.release + ".lock"), LOCK_TIMEOUT):
        if binary := selftest_status(image):
            return binary
        src = fetch_selftest_source(recipe.series, image.version)
        if (src / "lib/test_hmm_uapi.h").read_bytes() != module.uapi.read_bytes():
            raise VMError(f"lib/test_hmm_uapi.h of {src} differs from the one test_hmm.ko was built with "
                          f"({module.uapi})")
        cc, _ = initramfs.compiler(image.arch)
        work = dest.with_name(dest.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        selftests = src / "tools/testing/selftests"
        cmd = [cc, *CFLAGS, f"-I{src}", f"-I{selftests}", f"-I{src / SELFTEST}", "-isystem", str(src / UAPI_DIR),
               "-o", str(work / BINARY), *(str(src / name) for name in SOURCES), *LIBS]
        progress(f"{image.id}: compiling {BINARY} ({os.path.basename(cc)})")
        (work / "build.log").write_text(" ".join(cmd) + "\n")
        _call(cmd, f"compiling {BINARY} for {image.arch}", COMPILE_TIMEOUT, log=work / "build.log")
        _write_stamp(work, {"release": image.release, "version": image.version, "command": cmd})
        shutil.rmtree(dest, ignore_errors=True)
        work.rename(dest)
    return dest / BINARY


# ---- running a guest program ---------------------------------------------------------------------

@dataclass(frozen=True)
class RunResult:
    """A guest program's output lines (as it printed them) and exit status."""

    seq: str
    lines: tuple[str, ...]
    status: int


def start(vm: VM, argv: list[str], timeout: float = 30.0) -> str:
    """Ask VM's workload to run ARGV (argv[0] an absolute guest path) in the background; its SEQ once the
    guest started it (the VM must run)."""
    if not argv or not argv[0].startswith("/") or any(not a or any(c.isspace() for c in a) for a in argv):
        raise VMError(f"bad guest command {argv!r}: an absolute path and arguments without spaces")
    if not vm.console:
        raise VMError(f"VM {vm.name} has no console socket: boot it again")
    seq = f"r{os.getpid()}-{time.monotonic_ns() % 10**9}"
    with locked(Path(vm.run_dir) / "console.lock", timeout), \
            socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        try:
            sock.connect(vm.console)
            sock.sendall(f"\n{seq} run {' '.join(argv)}\n".encode())  # the newline ends a torn earlier line
            # QEMU takes input as the guest UART has room and drops what is unread when the client goes:
            # the socket stays open until the guest says it started the program.
            buffer = b""
            while f"{RUN_START}{seq}".encode() not in buffer:
                chunk = sock.recv(65536)
                if not chunk:
                    raise VMError(f"VM {vm.name}: QEMU closed the console socket")
                buffer = buffer[-4096:] + chunk
        except TimeoutError:
            raise VMError(f"VM {vm.name}: the guest did not start {argv[0]} within {timeout:.0f} s "
                          "(is the VM stopped?)") from None
        except OSError as exc:
            raise VMError(f"VM {vm.name}: console socket {vm.console}: {exc}") from None
    return seq


def finish(vm: VM, seq: str, timeout: float) -> RunResult:
    """The output of run SEQ from VM's serial log, once its end line is there; VMError after TIMEOUT."""
    deadline = time.monotonic() + timeout
    end = re.compile(rf"^{re.escape(RUN_END + seq)} status=(\d+)", re.MULTILINE)
    while True:
        text = Path(vm.serial_log).read_text(errors="replace").replace("\r", "")
        if match := end.search(text):
            prefix = f"{RUN}{seq} "
            lines = tuple(line[len(prefix):] for line in text.splitlines() if line.startswith(prefix))
            return RunResult(seq, lines, int(match[1]))
        if time.monotonic() > deadline or not vm.alive():
            raise VMError(f"VM {vm.name}: guest run {seq} did not end within {timeout:.0f} s"
                          + ("" if vm.alive() else " (the VM is gone)"))
        time.sleep(0.5)


def kselftest_verdicts(lines: tuple[str, ...]) -> dict[str, str]:
    """TAP verdicts of a kselftest harness run: test name -> pass, fail, skip, xfail (`ok N NAME # SKIP`)."""
    verdicts = {}
    for line in lines:
        if match := re.match(r"^(not ok|ok) \d+ (\S+)(?: # (\w+))?", line):
            directive = (match[3] or "").upper()
            verdicts[match[2]] = ("skip" if directive == "SKIP" else "xfail" if directive == "XFAIL"
                                  else "pass" if match[1] == "ok" else "fail")
    return verdicts
