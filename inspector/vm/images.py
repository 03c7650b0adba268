"""Kernel images named in vm-images/kernels.toml, and busybox-static per arch: fetched, verified, cached.

A cache entry is $CACHE/kernels/<id>/ with vmlinuz, vmlinux, config, lib/modules/<release>/ and a
stamp.json (written last) holding every file's size and sha256. An entry without a stamp, or whose
files disagree with it, is fetched again; a new entry is built next to the old one and swapped in.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from ..cache import locked, subdir
from . import VMError, progress
from .apt import DEB_ARCH, AptState

MANIFEST = Path(__file__).resolve().parents[2] / "vm-images" / "kernels.toml"
BUSYBOX_SUITE = "trixie"  # bookworm has no riscv64
EXTRACT_TIMEOUT = 1800.0
FETCH_LOCK_TIMEOUT = 7200.0
STAMP = "stamp.json"


@dataclass(frozen=True)
class Recipe:
    """One [[image]] of the manifest; package fields are templates over {abi} and {flavour}."""

    id: str
    arch: str
    debian_arch: str
    suite: str
    series: str
    flavour: str
    image: str
    config: str
    modules: str
    dbg: str
    tested_release: str
    tested_version: str
    kernel: str = ""  # what --kernel selects it by; the series unless a second image shares arch and series

    def __post_init__(self) -> None:
        if not self.kernel:
            object.__setattr__(self, "kernel", self.series)

    def package(self, role: str, abi: str) -> str:
        """The package name that holds ROLE (image, config, modules, dbg) for kernel ABI ABI."""
        return getattr(self, role).format(abi=abi, flavour=self.flavour)

    def abi_pattern(self) -> re.Pattern[str]:
        """Matches the dbg package names of this series and flavour; group `abi` is the ABI name."""
        abi = re.escape(self.series) + r"(?:[.+][^-]*)?(?:-\d+)?"
        escaped = re.escape(self.dbg).replace(re.escape("{abi}"), f"(?P<abi>{abi})")
        return re.compile("^" + escaped.replace(re.escape("{flavour}"), re.escape(self.flavour)) + "$")


@dataclass(frozen=True)
class KernelImage:
    """A fetched kernel: paths into the cache and what it is."""

    id: str
    arch: str
    release: str
    vmlinuz: Path
    vmlinux: Path
    config: Path
    modules_dir: Path
    version: str


def load_manifest(path: Path = MANIFEST) -> dict[str, Recipe]:
    """The manifest's images by id."""
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise VMError(f"cannot read the kernel manifest {path}: {exc}") from None
    names = [field.name for field in fields(Recipe) if field.name != "kernel"]
    recipes: dict[str, Recipe] = {}
    for entry in data.get("image", []):
        missing = [name for name in names if not isinstance(entry.get(name), str)]
        if (missing or entry["arch"] not in DEB_ARCH or entry["id"] in recipes
                or not isinstance(entry.get("kernel", ""), str)):
            raise VMError(f"{path}: bad image entry {entry.get('id', '?')!r} (missing {missing}, "
                          f"or unknown arch, or duplicate id, or a non-string kernel)")
        recipe = Recipe(**{name: entry[name] for name in names}, kernel=entry.get("kernel", ""))
        if any((other.arch, other.kernel) == (recipe.arch, recipe.kernel) for other in recipes.values()):
            raise VMError(f"{path}: image {recipe.id!r}: a second {recipe.arch} image for kernel "
                          f"{recipe.kernel!r} (give it its own `kernel` name)")
        recipes[recipe.id] = recipe
    return recipes


def image_for(arch: str, kernel: str) -> str:
    """The id of the manifest image for ARCH and KERNEL (its `kernel` name: the series, e.g. "7.2", or
    e.g. "7.2-16k")."""
    for recipe in load_manifest().values():
        if recipe.arch == arch and recipe.kernel == kernel:
            return recipe.id
    known = ", ".join(sorted(load_manifest()))
    raise VMError(f"no kernel image for arch {arch} kernel {kernel} in {MANIFEST} (known: {known})")


def _abi_key(abi: str) -> tuple[int, ...]:
    return tuple(int(number) for number in re.findall(r"\d+", abi))


def resolve(recipe: Recipe, apt: AptState) -> tuple[str, str, list[str]]:
    """(abi, version, [pkg:arch=version ...]) of the newest kernel of the series in the suite."""
    pattern = recipe.abi_pattern()
    prefix = recipe.dbg.split("{abi}")[0] + recipe.series
    abis = {match["abi"] for name in apt.package_names(prefix) if (match := pattern.match(name))}
    for abi in sorted(abis, key=_abi_key, reverse=True):
        names = dict.fromkeys(recipe.package(role, abi) for role in ("image", "config", "modules", "dbg"))
        found = {name: apt.versions(name, recipe.debian_arch).get(recipe.suite) for name in names}
        version = found[recipe.package("image", abi)]
        if version is not None and all(found.values()):
            return abi, version, [f"{name}:{recipe.debian_arch}={ver}" for name, ver in found.items()]
    raise VMError(f"no {recipe.series} kernel ({recipe.flavour}, {recipe.debian_arch}) with all of its "
                  f"packages in {recipe.suite}")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _inventory(root: Path, hashed: bool) -> dict[str, dict[str, int | str]]:
    """{relative path: {size[, sha256]}} of every regular file under ROOT, except the stamp."""
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.name != STAMP:
            entry: dict[str, int | str] = {"size": path.stat().st_size}
            if hashed:
                entry["sha256"] = _sha256(path)
            files[str(path.relative_to(root))] = entry
    return files


def check_entry(root: Path, full: bool) -> tuple[dict | None, str]:
    """(stamp, "") if ROOT matches its stamp (sizes; also hashes when FULL), else (None, reason)."""
    try:
        stamp = json.loads((root / STAMP).read_text())
    except FileNotFoundError:
        return None, "not fetched yet" if not root.exists() else "incomplete (no completion stamp)"
    except (OSError, ValueError):
        return None, "completion stamp unreadable"
    actual = _inventory(root, hashed=full)
    for name, want in stamp["files"].items():
        have = actual.get(name)
        if have is None:
            return None, f"{name} is missing"
        if have["size"] != want["size"] or (full and have["sha256"] != want["sha256"]):
            return None, f"{name} differs from its stamp (size or sha256)"
    if extra := set(actual) - set(stamp["files"]):
        return None, f"unexpected files such as {sorted(extra)[0]}"
    return stamp, ""


def _write_stamp(root: Path, info: dict) -> None:
    tmp = root / (STAMP + ".tmp")
    tmp.write_text(json.dumps({**info, "files": _inventory(root, hashed=True)}, indent=1))
    tmp.rename(root / STAMP)


def _swap_in(new: Path, dest: Path) -> None:
    old = dest.with_name(dest.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if dest.exists():
        dest.rename(old)
    new.rename(dest)
    shutil.rmtree(old, ignore_errors=True)


def _run(cmd: list[str], what: str) -> None:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=EXTRACT_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise VMError(f"{what} did not finish within {EXTRACT_TIMEOUT:.0f} s") from None
    if done.returncode:
        raise VMError(f"{what} failed: {done.stderr.strip()[-2000:]}")


def _extract_member(deb: Path, member: str, dest: Path) -> None:
    """Stream the members matching the pattern MEMBER out of DEB (`dpkg-deb --fsys-tarfile | tar -x`)."""
    dest.mkdir(parents=True, exist_ok=True)
    dpkg = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    procs = [dpkg]
    try:
        tar = subprocess.Popen(["tar", "-x", "-C", str(dest), "--wildcards", member], stdin=dpkg.stdout,
                               stderr=subprocess.PIPE)
        procs.append(tar)
        assert dpkg.stdout is not None
        dpkg.stdout.close()
        _, err = tar.communicate(timeout=EXTRACT_TIMEOUT)
        dpkg.wait(timeout=60)
    except subprocess.TimeoutExpired:
        raise VMError(f"extracting {member} from {deb.name} took over {EXTRACT_TIMEOUT:.0f} s") from None
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if tar.returncode or dpkg.returncode:
        raise VMError(f"extracting {member} from {deb.name} failed: {err.decode(errors='replace').strip()}")


def _download(apt: AptState, packages: list[str], where: Path, label: str) -> list[Path]:
    progress(f"{label}: downloading {', '.join(p.split(':')[0] for p in packages)}")
    start = time.monotonic()
    try:
        apt.download(packages, where)
    except VMError as exc:
        if " 404 " not in str(exc):
            raise
        # seen: riscv64 7.3 in trixie-backports, newer 5.10 in bullseye-security
        raise VMError(f"{label}: the archive's index lists {', '.join(packages)} but the archive does not "
                      f"serve them (404 Not Found); this kernel cannot be fetched from it.\n{exc}") from None
    debs = sorted(where.glob("*.deb"))
    size = sum(deb.stat().st_size for deb in debs) / 1e6
    took = time.monotonic() - start
    progress(f"{label}: downloaded {size:.0f} MB in {took:.1f} s ({size / max(took, 1e-3):.0f} MB/s)")
    return debs


def _first(*candidates: Path) -> Path:
    for path in candidates:
        if path.exists():
            return path
    raise VMError(f"the packages hold none of {', '.join(map(str, candidates))}")


def _fetch(recipe: Recipe, dest: Path) -> None:
    apt = AptState()
    apt.update()
    abi, version, packages = resolve(recipe, apt)
    release = f"{abi}-{recipe.flavour}"
    if (release, version) != (recipe.tested_release, recipe.tested_version):
        progress(f"{recipe.id}: resolved {release} {version}, tested with "
                 f"{recipe.tested_release} {recipe.tested_version}")
    work = dest.with_name(dest.name + ".partial")
    shutil.rmtree(work, ignore_errors=True)
    try:
        _build_entry(recipe, apt, packages, abi, release, version, work)
        _swap_in(work / "entry", dest)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _build_entry(recipe: Recipe, apt: AptState, packages: list[str], abi: str, release: str, version: str,
                 work: Path) -> None:
    """Download PACKAGES and lay out the cache entry in WORK/entry (stamp written last)."""
    debs = _download(apt, packages, work / "debs", recipe.id)
    start = time.monotonic()
    dbg_prefix = recipe.package("dbg", abi) + "_"
    staging = work / "staging"
    for deb in debs:
        if deb.name.startswith(dbg_prefix):
            _extract_member(deb, "./usr/lib/debug/*vmlinux*", staging)
        else:
            _run(["dpkg-deb", "-x", str(deb), str(staging)], f"dpkg-deb -x {deb.name}")
        deb.unlink()
    entry = work / "entry"
    modules = _first(staging / "usr/lib/modules" / release, staging / "lib/modules" / release)
    (entry / "lib/modules").mkdir(parents=True)
    _first(staging / "boot" / f"vmlinuz-{release}", modules / "vmlinuz").rename(entry / "vmlinuz")
    _first(staging / "boot" / f"config-{release}", modules / "config").rename(entry / "config")
    # sid ships the file here; trixie a symlink to usr/lib/debug/boot/vmlinux-<release>
    _first(staging / f"usr/lib/debug/lib/modules/{release}/vmlinux").resolve().rename(entry / "vmlinux")
    modules.rename(entry / "lib/modules" / release)
    _write_stamp(entry, {"id": recipe.id, "release": release, "version": version})
    progress(f"{recipe.id}: extracted {release} in {time.monotonic() - start:.1f} s")


def _image(recipe: Recipe, dest: Path, stamp: dict) -> KernelImage:
    return KernelImage(id=recipe.id, arch=recipe.arch, release=stamp["release"], vmlinuz=dest / "vmlinuz",
                       vmlinux=dest / "vmlinux", config=dest / "config",
                       modules_dir=dest / "lib/modules" / stamp["release"], version=stamp["version"])


def ensure_image(image_id: str, verify: bool = False, refresh: bool = False) -> KernelImage:
    """The cached image IMAGE_ID, fetched first when missing, partial or corrupt.

    VERIFY checks every file's sha256 (else sizes only); REFRESH re-resolves the newest version
    of the series and fetches it when it differs from the cached one.
    """
    recipes = load_manifest()
    if image_id not in recipes:
        raise VMError(f"unknown kernel image {image_id!r}; known: {', '.join(sorted(recipes))}")
    recipe = recipes[image_id]
    dest = subdir("kernels") / image_id
    with locked(dest.with_name(image_id + ".lock"), FETCH_LOCK_TIMEOUT):
        stamp, reason = check_entry(dest, full=verify)
        if stamp and refresh:
            apt = AptState()
            apt.update(force=True)
            abi, version, _ = resolve(recipe, apt)
            if (f"{abi}-{recipe.flavour}", version) != (stamp["release"], stamp["version"]):
                stamp, reason = None, f"newer kernel {abi} {version} available"
        if stamp is None:
            progress(f"{image_id}: {reason}; fetching")
            _fetch(recipe, dest)
            stamp, reason = check_entry(dest, full=False)
            if stamp is None:
                raise VMError(f"{image_id}: fresh cache entry {dest} is inconsistent: {reason}")
    return _image(recipe, dest, stamp)


def busybox_path(arch: str) -> Path:
    """A static busybox for ARCH (busybox-static from trixie), fetched into $CACHE/busybox/<arch>/."""
    if arch not in DEB_ARCH:
        raise VMError(f"unknown arch {arch!r}; choose one of {', '.join(DEB_ARCH)}")
    dest = subdir("busybox") / arch
    with locked(dest.with_name(arch + ".lock"), FETCH_LOCK_TIMEOUT):
        stamp, reason = check_entry(dest, full=False)
        if stamp is None:
            progress(f"busybox {arch}: {reason}; fetching")
            apt = AptState()
            apt.update()
            version = apt.versions("busybox-static", DEB_ARCH[arch]).get(BUSYBOX_SUITE)
            if version is None:
                raise VMError(f"busybox-static:{DEB_ARCH[arch]} is not in {BUSYBOX_SUITE}")
            work = dest.with_name(arch + ".partial")
            shutil.rmtree(work, ignore_errors=True)
            try:
                package = f"busybox-static:{DEB_ARCH[arch]}={version}"
                [deb] = _download(apt, [package], work / "debs", f"busybox {arch}")
                _run(["dpkg-deb", "-x", str(deb), str(work / "staging")], f"dpkg-deb -x {deb.name}")
                entry = work / "entry"
                entry.mkdir()
                _first(work / "staging/usr/bin/busybox", work / "staging/bin/busybox").rename(entry / "busybox")
                _write_stamp(entry, {"package": package})
                _swap_in(entry, dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    return dest / "busybox"
