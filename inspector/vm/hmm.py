"""test_hmm.ko, the kernel's own HMM test driver (lib/test_hmm.c, CONFIG_TEST_HMM), built out of tree
for a test kernel, so that the guest can make device-private and device-exclusive entries.

Debian does not build the driver. It is compiled where the kernel was built: a minimal chroot of the
kernel's own suite (debootstrap from the archive of the system's apt configuration) with that suite's
gcc (the kernel's config names the compiler, e.g. `x86_64-linux-gnu-gcc-16`; an older gcc rejects its
flags) and the suite's glibc for the packaged kbuild tools (modpost, objtool). Into it go the kernel's
`linux-headers-<abi>-common`, `linux-headers-<abi>-<flavour>` (Module.symvers, .config, the cross
compiler named in its .kernelvariables) and `linux-kbuild-<abi>`; the source comes from the kernel's
`linux-source-<series>` of the same version. All packages come through apt, which checks signatures
and hashes.

Cache (under $PTINSPECT_CACHE/hmm/):
  root/<suite>/                 the build chroot (stamp `ptinspect-root.json`, written last)
  src/<series>_<version>/       lib/test_hmm.c, lib/test_hmm_uapi.h, lib/Kconfig.debug (+ stamp.json)
  selftest/<series>_<version>/  hmm-tests.c and what it includes, in the tree's shape (+ stamp.json)
  modules/<release>/            test_hmm.ko, test_hmm_uapi.h, build.log (+ stamp.json); or
                                unsupported.json: why this kernel cannot have the driver
"""
from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from ptinspect.archs import all_arches, arch_where

from ..cache import locked, subdir
from . import VMError, progress
from .apt import KEYRING, AptState, debian_archive_uri, system_sources
from .images import KernelImage, _run, _write_stamp, check_entry, load_manifest

SOURCE_FILES = ("lib/test_hmm.c", "lib/test_hmm_uapi.h", "lib/Kconfig.debug")
# The kernel's own HMM and migration selftests (tools/testing/selftests/mm/hmm-tests.c, migration.c; the
# latter built by inspector/vm/mmselftests.py) and what they include from the
# tree (gcc -M of it for x86_64, arm64 and riscv64 with the Makefile's -I/-isystem), kept in the tree's
# shape so that its relative includes hold; compiled into the initramfs (inspector/vm/initramfs.py).
SELFTEST = "tools/testing/selftests/mm"
SELFTEST_MEMBERS = (
    f"{SELFTEST}/hmm-tests.c", f"{SELFTEST}/migration.c", f"{SELFTEST}/vm_util.c", f"{SELFTEST}/vm_util.h",
    f"{SELFTEST}/hugepage_settings.c", f"{SELFTEST}/hugepage_settings.h",
    "tools/testing/selftests/kselftest.h", "tools/testing/selftests/kselftest_harness.h",
    "lib/test_hmm_uapi.h", "mm/gup_test.h", "tools/include/uapi",
    *(f"tools/arch/{arch}/include/uapi" for arch in ("x86", "arm64", "riscv")),
)
MODULE = "test_hmm.ko"
UAPI = "test_hmm_uapi.h"
UNSUPPORTED = "unsupported.json"
ROOT_STAMP = "ptinspect-root.json"
# The suite whose toolchain built a kernel of a given suite (backports are built in their base suite).
BUILD_SUITE = {"trixie-backports": "trixie", "bookworm-backports": "bookworm"}
DEBOOTSTRAP_TIMEOUT = 1800.0
APT_TIMEOUT = 1800.0
BUILD_TIMEOUT = 900.0
SOURCE_TIMEOUT = 900.0
LOCK_TIMEOUT = 3600.0
CHROOT_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LC_ALL": "C.UTF-8",
              "DEBIAN_FRONTEND": "noninteractive"}


@dataclass(frozen=True)
class HmmModule:
    """A built test_hmm.ko for one kernel release, and the uapi header of the same source."""

    release: str
    ko: Path
    uapi: Path
    vermagic: str
    compiler: str


def cache_root() -> Path:
    return subdir("hmm")


def module_dir(release: str) -> Path:
    return cache_root() / "modules" / release


# ---- what the kernel's config allows -------------------------------------------------------------

def kconfig_requirements(kconfig_debug: str) -> list[str]:
    """The symbols `config TEST_HMM` of lib/Kconfig.debug depends on or selects: all must be y in the
    kernel, because a module cannot add built-in code (ZONE_DEVICE, DEVICE_PRIVATE, ...)."""
    match = re.search(r"^config TEST_HMM\n(.*?)(?=^\S)", kconfig_debug, re.MULTILINE | re.DOTALL)
    if match is None:
        raise VMError("lib/Kconfig.debug of this source has no `config TEST_HMM` entry")
    symbols: list[str] = []
    for line in match[1].splitlines():
        words = line.split()
        if words[:2] == ["depends", "on"] or words[:1] == ["select"]:
            expr = " ".join(words[2:] if words[0] == "depends" else words[1:])
            if "||" in expr or "!" in expr or " if " in f" {expr} ":
                raise VMError(f"config TEST_HMM: cannot judge the condition {line.strip()!r}")
            symbols += [word.strip("()") for word in expr.split("&&")]
    return symbols


def missing_config(config: str, requirements: list[str]) -> list[str]:
    """The REQUIREMENTS that are not `=y` in the kernel CONFIG text."""
    have = set(re.findall(r"^CONFIG_(\w+)=y$", config, re.MULTILINE))
    return [symbol for symbol in requirements if symbol not in have]


def config_compiler(config: str) -> tuple[str, str]:
    """(command, GCC major) of CONFIG_CC_VERSION_TEXT, e.g. ("x86_64-linux-gnu-gcc-16", "16")."""
    match = re.search(r'^CONFIG_CC_VERSION_TEXT="(\S+)', config, re.MULTILINE)
    major = re.search(r"^CONFIG_GCC_VERSION=(\d+)\d{4}$", config, re.MULTILINE)
    if match is None or major is None:
        raise VMError("the kernel config names no gcc (CONFIG_CC_VERSION_TEXT, CONFIG_GCC_VERSION): "
                      "only gcc-built kernels are supported")
    return match[1], major[1]


def compiler_package(command: str, major: str, host_triplet: str) -> str:
    """The Debian package of the compiler COMMAND (e.g. aarch64-linux-gnu-gcc-16) on a HOST_TRIPLET host."""
    triplet = command.removesuffix(f"-gcc-{major}")
    return f"gcc-{major}" if triplet == host_triplet else f"gcc-{major}-{triplet}"


def vermagic(ko: bytes) -> str:
    """The `vermagic=` of a module's .modinfo section."""
    try:
        section = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    except ELFError as exc:
        raise VMError(f"the built {MODULE} is not an ELF file: {exc}") from None
    for field in (section.data() if section else b"").split(b"\0"):
        if field.startswith(b"vermagic="):
            return field[9:].decode(errors="replace")
    raise VMError(f"the built {MODULE} has no vermagic in .modinfo")


# ---- processes -----------------------------------------------------------------------------------

def _call(cmd: list[str], what: str, timeout: float, log: Path | None = None) -> str:
    """Run CMD; its output (also appended to LOG); VMError with the tail on failure or timeout."""
    try:
        done = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise VMError(f"{what} did not finish within {timeout:.0f} s") from None
    except OSError as exc:
        raise VMError(f"{what}: cannot run {cmd[0]}: {exc}") from None
    output = done.stdout + done.stderr
    if log is not None:
        with open(log, "a") as handle:
            handle.write(f"$ {' '.join(cmd)}\n{output}\n")
    if done.returncode:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise VMError(f"{what} failed (exit {done.returncode}):\n{tail}")
    return output


def _in_root(root: Path, args: list[str], what: str, timeout: float, log: Path | None = None) -> str:
    """ARGS run in the chroot ROOT, with /proc (objtool reads it) mounted in a private mount and pid
    namespace, so nothing stays mounted when the command ends."""
    env = [f"{key}={value}" for key, value in CHROOT_ENV.items()]
    return _call(["unshare", "--fork", "--pid", f"--mount-proc={root / 'proc'}", "chroot", str(root),
                  "env", "-i", *env, *args], what, timeout, log)


# ---- the build chroot ----------------------------------------------------------------------------

def _root_stamp(root: Path) -> dict | None:
    try:
        return json.loads((root / ROOT_STAMP).read_text())
    except (OSError, ValueError):
        return None


def _debootstrap(suite: str, root: Path) -> None:
    """A minbase chroot of SUITE at ROOT (made beside it, renamed into place when complete)."""
    if os.geteuid() != 0:
        raise VMError("building test_hmm.ko needs root (debootstrap and chroot into the build root)")
    if not shutil.which("debootstrap"):
        raise VMError("building test_hmm.ko needs debootstrap: install the Debian package debootstrap")
    uri = debian_archive_uri(system_sources())
    work = root.with_name(root.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    progress(f"debootstrap {suite} build root into {root} ...")
    start = time.monotonic()
    _call(["debootstrap", "--variant=minbase", "--include=make,ca-certificates", f"--keyring={KEYRING}",
           suite, str(work), uri], f"debootstrap {suite}", DEBOOTSTRAP_TIMEOUT)
    lines = [f"deb [signed-by={KEYRING}] {uri} {suite} main\n"]
    if suite in BUILD_SUITE.values():
        lines.append(f"deb [signed-by={KEYRING}] {uri} {suite}-backports main\n")
    keyring = work / KEYRING.lstrip("/")
    keyring.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(KEYRING, keyring)
    (work / "etc/apt/sources.list").write_text("".join(lines))
    (work / ROOT_STAMP).write_text(json.dumps({"suite": suite, "packages": []}))
    shutil.rmtree(root, ignore_errors=True)
    work.rename(root)
    progress(f"debootstrap {suite} done in {time.monotonic() - start:.0f} s")


# Release-file checks the system's apt may relax (e.g. for an archive snapshot); the chroot's apt follows.
HOST_APT_KEYS = ("Acquire::Check-Valid-Until", "Acquire::Check-Date")


def host_apt_options() -> list[str]:
    """`-oKEY=VALUE` for the HOST_APT_KEYS the system's apt configuration sets."""
    out = _call(["apt-config", "dump"], "apt-config dump", 60)
    options = []
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        if key in HOST_APT_KEYS:
            options.append(f"-o{key}={value.strip().rstrip(';').strip(chr(34))}")
    return options


def build_root(suite: str, packages: list[str]) -> Path:
    """The build chroot of SUITE with PACKAGES installed (made and updated as needed). Hold the
    suite's lock (root_lock) around this and every use of the root."""
    root = cache_root() / "root" / suite
    stamp = _root_stamp(root)
    if stamp is None or stamp.get("suite") != suite:
        _debootstrap(suite, root)
        stamp = _root_stamp(root)
        assert stamp is not None
    wanted = [name for name in packages if name not in stamp["packages"]]
    if wanted:
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
        progress(f"{suite} build root: apt-get install {' '.join(wanted)}")
        options = host_apt_options()
        _in_root(root, ["apt-get", *options, "update"], f"apt-get update in the {suite} build root", APT_TIMEOUT)
        _in_root(root, ["apt-get", *options, "install", "-y", "--no-install-recommends", *wanted],
                 f"apt-get install {' '.join(wanted)} in the {suite} build root", APT_TIMEOUT)
        _in_root(root, ["apt-get", "clean"], "apt-get clean", APT_TIMEOUT)
        stamp["packages"] = sorted({*stamp["packages"], *wanted})
        tmp = root / (ROOT_STAMP + ".tmp")
        tmp.write_text(json.dumps(stamp))
        tmp.rename(root / ROOT_STAMP)
    return root


def root_lock(suite: str) -> Path:
    return cache_root() / "root" / f"{suite}.lock"


# ---- sources and headers -------------------------------------------------------------------------

def fetch_source(series: str, version: str) -> Path:
    """lib/test_hmm.c, test_hmm_uapi.h and Kconfig.debug of Debian's linux-source-SERIES VERSION."""
    return _extract_source(series, version, cache_root() / "src" / f"{series}_{version}", SOURCE_FILES,
                           "lib/test_hmm.c")


def fetch_selftest_source(series: str, version: str) -> Path:
    """hmm-tests.c, migration.c and the files they include (SELFTEST_MEMBERS) of linux-source-SERIES VERSION."""
    return _extract_source(series, version, selftest_dir(series, version), SELFTEST_MEMBERS, "hmm-tests")


def selftest_dir(series: str, version: str) -> Path:
    return cache_root() / "selftest" / f"{series}_{version}"


def _extract_source(series: str, version: str, dest: Path, names: tuple[str, ...], why: str) -> Path:
    """NAMES (files or directories, paths in the tree) of linux-source-SERIES VERSION, cached at DEST."""
    with locked(dest.with_name(dest.name + ".lock"), LOCK_TIMEOUT):
        stamp, _ = check_entry(dest, full=False)
        if stamp and all((dest / name).exists() for name in names):  # an entry from before a member was added
            return dest
        apt = AptState()
        apt.update()
        work = dest.with_name(dest.name + ".partial")
        shutil.rmtree(work, ignore_errors=True)
        try:
            package = f"linux-source-{series}={version}"
            progress(f"downloading {package} for {why} ...")
            apt.download([package], work / "debs")
            [deb] = sorted((work / "debs").glob("*.deb"))
            _run(["dpkg-deb", "-x", str(deb), str(work / "pkg")], f"dpkg-deb -x {deb.name}")
            deb.unlink()
            tarballs = sorted((work / "pkg/usr/src").glob(f"linux-source-{series}.tar.*"))
            if len(tarballs) != 1:
                raise VMError(f"{package} holds no single usr/src/linux-source-{series}.tar.*")
            members = [f"linux-source-{series}/{name}" for name in names]
            _call(["tar", "-x", "-C", str(work), "-f", str(tarballs[0]), *members],
                  f"extracting {', '.join(names)} from {tarballs[0].name}", SOURCE_TIMEOUT)
            entry = work / "entry"
            for name in names:
                (entry / name).parent.mkdir(parents=True, exist_ok=True)
                (work / f"linux-source-{series}" / name).rename(entry / name)
            _write_stamp(entry, {"package": package})
            shutil.rmtree(dest, ignore_errors=True)
            entry.rename(dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def depends_names(field: str) -> list[str]:
    """Package names of a Debian Depends field (first alternative of each, no versions or :any)."""
    names = []
    for clause in field.split(","):
        first = clause.split("|")[0].strip()
        if first:
            names.append(first.split()[0].split(":")[0])
    return names


def _download_headers(abi: str, release: str, version: str, deb_arch: str, host: str, dest: Path) -> list[Path]:
    """linux-headers-<abi>-common, linux-headers-<release> (DEB_ARCH) and linux-kbuild-<abi> (HOST)."""
    apt = AptState()
    apt.update()
    shutil.rmtree(dest, ignore_errors=True)
    packages = [f"linux-headers-{abi}-common={version}", f"linux-headers-{release}:{deb_arch}={version}",
                f"linux-kbuild-{abi}:{host}={version}"]
    progress(f"{release}: downloading {', '.join(p.split('=')[0] for p in packages)}")
    apt.download(packages, dest)
    debs = sorted(dest.glob("*.deb"))
    if len(debs) != 3:
        raise VMError(f"apt-get download of {', '.join(packages)} gave {len(debs)} packages, not 3")
    return debs


# ---- building ------------------------------------------------------------------------------------

def _unsupported_path(release: str) -> Path:
    return cache_root() / "modules" / f"{release}.{UNSUPPORTED}"


def _entry(dest: Path, stamp: dict) -> HmmModule:
    return HmmModule(release=stamp["release"], ko=dest / MODULE, uapi=dest / UAPI, vermagic=stamp["vermagic"],
                     compiler=stamp["compiler"])


def module_status(image: KernelImage) -> tuple[HmmModule | None, str]:
    """(the cached module, "") when built and intact, else (None, why this kernel has no driver)."""
    try:
        return None, json.loads(_unsupported_path(image.release).read_text())["reason"]
    except (OSError, ValueError, KeyError):
        pass
    dest = module_dir(image.release)
    stamp, reason = check_entry(dest, full=False)
    if stamp is None or stamp.get("release") != image.release:
        return None, (f"test_hmm.ko is not built for {image.release} ({reason or 'another release'}): "
                      f"run `ptinspect vm hmm build --kernel {image.id}`")
    return _entry(dest, stamp), ""


def _modpost_problems(log: str) -> list[str]:
    """modpost's complaints that make a module unloadable (symbols absent from Module.symvers, ...)."""
    return [line.strip() for line in log.splitlines()
            if line.lstrip().startswith(("WARNING: modpost:", "ERROR: modpost:")) and "undefined" in line]


def build_module(image: KernelImage, force: bool = False) -> HmmModule:
    """test_hmm.ko for IMAGE, from the cache or built; VMError saying why when the kernel cannot have it
    (the reason is cached too)."""
    recipes = load_manifest()
    if image.id not in recipes:
        raise VMError(f"{image.id} is not in the kernel manifest")
    recipe = recipes[image.id]
    dest = module_dir(image.release)
    with locked(dest.with_name(image.release + ".lock"), LOCK_TIMEOUT):
        module, reason = module_status(image)
        if module and not force:
            fetch_selftest_source(recipe.series, image.version)
            return module
        if not module and _unsupported_path(image.release).is_file() and not force:
            raise VMError(reason)
        config = image.config.read_text(errors="replace")
        src = fetch_source(recipe.series, image.version)
        requirements = kconfig_requirements((src / "lib/Kconfig.debug").read_text(errors="replace"))
        if missing := missing_config(config, requirements):
            reason = (f"{image.release} cannot have test_hmm: "
                      f"{', '.join('CONFIG_' + name for name in missing)} not =y in its config "
                      f"(lib/Kconfig.debug `config TEST_HMM` of linux-source-{recipe.series} {image.version} "
                      f"needs {', '.join(requirements)} built in)")
            _unsupported_path(image.release).write_text(json.dumps({"reason": reason}))
            raise VMError(reason)
        module = _build(image, recipe.suite, recipe.flavour, recipe.debian_arch, src, config, dest)
        fetch_selftest_source(recipe.series, image.version)
        return module


def _host() -> tuple[str, str]:
    """(Debian architecture, GNU triplet) of the build host."""
    out = _call(["dpkg-architecture", "-qDEB_HOST_ARCH"], "dpkg-architecture", 30).strip() \
        if shutil.which("dpkg-architecture") else ""
    arch = out or _call(["dpkg", "--print-architecture"], "dpkg --print-architecture", 30).strip()
    found = arch_where("debian_arch", arch)
    if found is None:
        raise VMError(f"building test_hmm.ko on a {arch} host is not supported "
                      f"({', '.join(a.debian_arch for a in all_arches())})")
    return arch, found.gnu_triplet


def _build(image: KernelImage, suite: str, flavour: str, deb_arch: str, src: Path, config: str,
           dest: Path) -> HmmModule:
    command, major = config_compiler(config)
    host, host_triplet = _host()
    build_suite = BUILD_SUITE.get(suite, suite)
    abi = image.release.removesuffix(f"-{flavour}")
    start = time.monotonic()
    with locked(root_lock(build_suite), LOCK_TIMEOUT):
        root = cache_root() / "root" / build_suite
        headers = Path("/usr/src") / f"linux-headers-{image.release}"
        marker = root / headers.relative_to("/") / ".ptinspect-complete"
        try:
            installed = json.loads(marker.read_text())
        except (OSError, ValueError):
            installed = {}
        if installed.get("version") != image.version:
            debs = _download_headers(abi, image.release, image.version, deb_arch, host,
                                     cache_root() / "debs" / image.release)
            try:
                [kbuild] = [deb for deb in debs if deb.name.startswith(f"linux-kbuild-{abi}_")]
                field = _call(["dpkg-deb", "-f", str(kbuild), "Depends"], "dpkg-deb -f", 60)
                packages = ["make", compiler_package(command, major, host_triplet), *depends_names(field)]
                root = build_root(build_suite, packages)
                for deb in debs:
                    _run(["dpkg-deb", "-x", str(deb), str(root)], f"dpkg-deb -x {deb.name}")
            finally:
                shutil.rmtree(debs[0].parent, ignore_errors=True)
            if not (root / headers.relative_to("/") / "Module.symvers").is_file():
                raise VMError(f"linux-headers-{image.release} has no Module.symvers")
            installed = {"version": image.version, "packages": packages}
            marker.write_text(json.dumps(installed))
        root = build_root(build_suite, installed["packages"])
        work = root / "build" / image.release
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for name in ("lib/test_hmm.c", "lib/test_hmm_uapi.h"):
            shutil.copyfile(src / name, work / Path(name).name)
        (work / "Kbuild").write_text("obj-m := test_hmm.o\n")
        log = work / "build.log"
        progress(f"{image.id}: building test_hmm.ko with {command} in the {build_suite} build root")
        # ARCH, CROSS_COMPILE and CC come from the headers' .kernelvariables (the kernel's own).
        _in_root(root, ["make", "-C", str(headers), f"M=/build/{image.release}", "modules"],
                 f"building test_hmm.ko for {image.release}", BUILD_TIMEOUT, log)
        if problems := _modpost_problems(log.read_text(errors="replace")):
            raise VMError(f"test_hmm.ko for {image.release} would not load:\n" + "\n".join(problems[:10]))
        ko = (work / MODULE).read_bytes()
        magic = vermagic(ko)
        if magic.split(" ")[0] != image.release:
            raise VMError(f"the built test_hmm.ko has vermagic {magic!r}, not of kernel {image.release}")
        entry = dest.with_name(dest.name + ".partial")
        shutil.rmtree(entry, ignore_errors=True)
        entry.mkdir(parents=True)
        (entry / MODULE).write_bytes(ko)
        shutil.copyfile(work / "test_hmm_uapi.h", entry / UAPI)
        shutil.copyfile(log, entry / "build.log")
        shutil.rmtree(work, ignore_errors=True)
    _write_stamp(entry, {"release": image.release, "version": image.version, "vermagic": magic,
                         "compiler": command, "suite": build_suite})
    shutil.rmtree(dest, ignore_errors=True)
    entry.rename(dest)
    progress(f"{image.id}: test_hmm.ko built in {time.monotonic() - start:.0f} s (vermagic {magic})")
    stamp, reason = check_entry(dest, full=False)
    if stamp is None:
        raise VMError(f"fresh test_hmm.ko cache entry {dest} is inconsistent: {reason}")
    return _entry(dest, stamp)


def selftest_source(image: KernelImage) -> Path | None:
    """The cached hmm-tests source of IMAGE's kernel (fetched by build_module), None when not fetched."""
    recipe = load_manifest().get(image.id)
    if recipe is None:
        return None
    dest = selftest_dir(recipe.series, image.version)
    stamp, _ = check_entry(dest, full=False)
    return dest if stamp else None
