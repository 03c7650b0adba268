"""The kernel's mm selftests that link a Debian library, built static for the guest: migration
(tools/testing/selftests/mm/migration.c, `$(OUTPUT)/migration: LDLIBS += -lnuma` in its Makefile).

libnuma.a is Debian's (libnuma-dev of the guest architecture, the version the kernel's suite has),
built against that suite's glibc: it links only with that glibc (its objects call glibc 2.38's
__isoc23_strtol and friends), so the program is compiled in the kernel's build chroot
(inspector/vm/hmm.py build_root, the same one test_hmm.ko is built in) with the kernel's own
compiler, which targets the guest architecture, and the suite's libc for that architecture
(libc6-dev, or libc6-dev-<arch>-cross). The source is the tree hmm-tests is built from
(hmm.fetch_selftest_source: the kernel's linux-source of the same version).

Cache (under $PTINSPECT_CACHE/hmm/):
  selftest-bin/<release>/       migration, build.log (+ stamp.json: sources, libnuma-dev version, compiler)
"""
from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs import arch_where

from ..cache import locked
from . import VMError, progress
from .apt import AptState
from .hmm import (
    BUILD_SUITE,
    BUILD_TIMEOUT,
    LOCK_TIMEOUT,
    SELFTEST,
    _call,
    _host,
    _in_root,
    build_root,
    cache_root,
    compiler_package,
    config_compiler,
    fetch_selftest_source,
    root_lock,
)
from .images import KernelImage, _run, _write_stamp, check_entry, load_manifest

# The Makefile's CFLAGS (-Wall -O2 -I $(top_srcdir) ... -U_FORTIFY_SOURCE) and LDLIBS (-lrt -lpthread -lm,
# + -lnuma for migration); its sources (`$(TEST_GEN_FILES): vm_util.c hugepage_settings.c`).
CFLAGS = ("-static", "-O2", "-Wall", "-U_FORTIFY_SOURCE")
LIBS = ("-lrt", "-lpthread", "-lm")


@dataclass(frozen=True)
class Program:
    """A selftest program: its sources in tools/testing/selftests/mm, the libraries it links and the
    Debian -dev packages (of the guest architecture) that provide them."""

    name: str
    sources: tuple[str, ...]
    libs: tuple[str, ...]
    packages: tuple[str, ...] = ()

    def command(self, cc: str, src: Path, out: Path, lib_roots: tuple[Path, ...] = (), triplet: str = "") -> list[str]:
        """The compiler command: the selftest Makefile's flags, SRC the tree (its relative includes hold),
        LIB_ROOTS extracted -dev packages (usr/include, usr/lib/TRIPLET)."""
        test = src / SELFTEST
        cmd = [cc, *CFLAGS, f"-I{src}", f"-I{test.parent}", "-isystem", str(src / "tools/include/uapi")]
        for root in lib_roots:
            cmd += ["-isystem", str(root / "usr/include")]
        cmd += ["-o", str(out), *(str(test / name) for name in self.sources)]
        cmd += [f"-L{root / 'usr/lib' / triplet}" for root in lib_roots]
        return cmd + [*self.libs, *LIBS]


HMM_TESTS = Program("hmm-tests", ("hmm-tests.c", "vm_util.c", "hugepage_settings.c"), ())
MIGRATION = Program("migration", ("migration.c", "vm_util.c", "hugepage_settings.c"), ("-lnuma",), ("libnuma-dev",))
GUEST_DIR = "/ptinspect/selftests"  # MIGRATION in the guest: /ptinspect/selftests/migration


def binary_dir(release: str) -> Path:
    return cache_root() / "selftest-bin" / release


def built(image: KernelImage, program: Program = MIGRATION) -> Path | None:
    """The cached PROGRAM for IMAGE's kernel, None when not built (build_program builds it)."""
    dest = binary_dir(image.release)
    stamp, _ = check_entry(dest, full=False)
    return dest / program.name if stamp and (dest / program.name).is_file() else None


def _dev_package(apt: AptState, package: str, deb_arch: str, suite: str, dest: Path) -> str:
    """PACKAGE:DEB_ARCH of SUITE extracted into DEST; its version."""
    version = apt.versions(package, deb_arch).get(suite)
    if version is None:
        raise VMError(f"{package}:{deb_arch} is not in {suite}: cannot build the selftest against it")
    debs = dest / "debs"
    apt.download([f"{package}:{deb_arch}={version}"], debs)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(dest)], f"dpkg-deb -x {deb.name}")
    shutil.rmtree(debs)
    return version


def build_program(image: KernelImage, program: Program = MIGRATION, force: bool = False) -> Path:
    """PROGRAM compiled static for IMAGE's guest in the kernel's build chroot; cached per release."""
    recipe = load_manifest().get(image.id)
    if recipe is None:
        raise VMError(f"{image.id} is not in the kernel manifest")
    dest = binary_dir(image.release)
    with locked(dest.with_name(dest.name + ".lock"), LOCK_TIMEOUT):
        if (done := built(image, program)) and not force:
            return done
        src = fetch_selftest_source(recipe.series, image.version)
        command, major = config_compiler(image.config.read_text(errors="replace"))
        host, host_triplet = _host()
        target = arch_where("debian_arch", recipe.debian_arch)
        assert target is not None
        libc = "libc6-dev" if recipe.debian_arch == host else f"libc6-dev-{recipe.debian_arch}-cross"
        suite = BUILD_SUITE.get(recipe.suite, recipe.suite)
        start = time.monotonic()
        apt = AptState()
        apt.update()
        with locked(root_lock(suite), LOCK_TIMEOUT):
            root = build_root(suite, [compiler_package(command, major, host_triplet), libc])
            work = root / "build" / f"selftests-{image.release}"
            shutil.rmtree(work, ignore_errors=True)
            shutil.copytree(src, work / "src")
            versions = {}
            for package in program.packages:
                versions[package] = _dev_package(apt, package, recipe.debian_arch, suite, work / package)
            inside = Path("/build") / work.name
            cmd = program.command(command, inside / "src", inside / program.name,
                                  tuple(inside / p for p in program.packages), target.gnu_triplet)
            log = work / "build.log"
            progress(f"{image.id}: building {program.name} with {command} in the {suite} build root")
            _in_root(root, cmd, f"building the {program.name} selftest for {image.release}", BUILD_TIMEOUT, log)
            entry = dest.with_name(dest.name + ".partial")
            shutil.rmtree(entry, ignore_errors=True)
            entry.mkdir(parents=True)
            shutil.copyfile(work / program.name, entry / program.name)
            shutil.copyfile(log, entry / "build.log")
            shutil.rmtree(work, ignore_errors=True)
        file = _call(["file", "-b", str(entry / program.name)], "file", 30) if shutil.which("file") else ""
        if file and "statically linked" not in file:
            raise VMError(f"the built {program.name} is not static: {file.strip()}")
        _write_stamp(entry, {"release": image.release, "program": program.name, "compiler": command,
                             "suite": suite, "packages": versions, "source": recipe.series + "_" + image.version})
        shutil.rmtree(dest, ignore_errors=True)
        entry.rename(dest)
        progress(f"{image.id}: {program.name} built in {time.monotonic() - start:.0f} s")
    result = built(image, program)
    if result is None:
        raise VMError(f"fresh {program.name} cache entry {dest} is inconsistent")
    return result
