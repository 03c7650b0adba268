"""A private apt state (Debian 11 to unstable and experimental, for amd64, arm64, riscv64) built from the
system's apt sources.

The archive URI is read from the system's own apt configuration; the system's sources, lists and
caches are never touched. apt verifies the archive signatures and the package hashes.
"""
from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs import all_arches

from ..cache import locked, subdir
from . import VMError, progress

# bullseye: 5.10; bookworm: 6.1; trixie: 6.12; trixie-backports: 7.2/7.3; sid: 7.2; experimental: the next rc.
SUITES = ("sid", "experimental", "trixie", "trixie-backports", "bookworm", "bullseye")
DEB_ARCH = {a.name: a.debian_arch for a in all_arches()}  # ptinspect name -> Debian
DEB_ARCHES = tuple(DEB_ARCH.values())
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
URI_ENV = "PTINSPECT_APT_URI"
# Debian's own suite names: a plain one of these marks an entry as the main Debian archive
# (not debian-security, -updates, -backports or a third-party repository).
DEBIAN_SUITES = frozenset({
    "unstable", "testing", "stable", "oldstable", "oldoldstable", "experimental",
    "sid", "forky", "trixie", "bookworm", "bullseye", "buster", "duke",
})
UPDATE_MAX_AGE = 24 * 3600.0
REFRESH_MAX_AGE = 600.0
UPDATE_TIMEOUT = 900.0
DOWNLOAD_TIMEOUT = 3600.0
QUERY_TIMEOUT = 120.0
LOCK_TIMEOUT = 3600.0


@dataclass(frozen=True)
class SourceEntry:
    """One `deb` source of the system's apt configuration."""

    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]


def parse_deb822(text: str) -> list[SourceEntry]:
    """The enabled `deb` entries of a deb822 .sources file."""
    entries = []
    for stanza in re.split(r"\n[ \t]*\n", text):
        fields: dict[str, str] = {}
        key = None
        for line in stanza.splitlines():
            if line.startswith("#") or not line.strip():
                continue
            if line[0] in " \t" and key:
                fields[key] += " " + line.strip()
            elif ":" in line:
                key, value = line.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split() or fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            entries.append(SourceEntry(uri, tuple(fields.get("suites", "").split()),
                                       tuple(fields.get("components", "").split())))
    return entries


def parse_one_line(text: str) -> list[SourceEntry]:
    """The `deb` entries of a one-line-style sources.list."""
    entries = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        line = re.sub(r"\[[^\]]*\]", " ", line)  # options such as [arch=... signed-by=...]
        words = line.split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append(SourceEntry(words[1], (words[2],), tuple(words[3:])))
    return entries


def system_sources(etc: Path = Path("/etc/apt")) -> list[SourceEntry]:
    """Every enabled `deb` entry of the system's apt configuration, in apt's reading order."""
    entries = []
    main_list = etc / "sources.list"
    if main_list.is_file():
        entries += parse_one_line(main_list.read_text(errors="replace"))
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".sources":
                entries += parse_deb822(path.read_text(errors="replace"))
            elif path.suffix == ".list":
                entries += parse_one_line(path.read_text(errors="replace"))
    return entries


def debian_archive_uri(entries: list[SourceEntry]) -> str:
    """The URI of the first entry that serves a plain Debian suite (e.g. bookworm) with `main`."""
    if explicit := os.environ.get(URI_ENV):
        return explicit
    for entry in entries:
        if entry.uri.startswith("cdrom:") or "main" not in entry.components:
            continue
        if any(suite.rstrip("/") in DEBIAN_SUITES for suite in entry.suites):
            return entry.uri
    raise VMError(
        "no Debian archive (a `deb` entry for a suite such as bookworm or trixie, component main) in "
        f"/etc/apt/sources.list or /etc/apt/sources.list.d/; set {URI_ENV} to a Debian archive URI"
    )


def private_sources(uri: str) -> str:
    """The private sources.list text: the same archive, every suite ptinspect fetches from."""
    options = f"[arch={','.join(DEB_ARCHES)} signed-by={KEYRING}]"
    return "".join(f"deb {options} {uri} {suite} main\n" for suite in SUITES)


class AptState:
    """apt-get/apt-cache run against a private state under $CACHE/apt."""

    def __init__(self) -> None:
        self.root = subdir("apt")
        self.sources = self.root / "sources.list"
        self.lists = self.root / "lists"
        self.cache = self.root / "cache"

    def options(self) -> list[str]:
        """The -o options that point apt at the private state."""
        opts = {
            "Dir::Etc::sourcelist": str(self.sources),
            "Dir::Etc::sourceparts": "-",
            "Dir::Etc::preferencesparts": "-",
            "Dir::State::Lists": str(self.lists),
            "Dir::Cache": str(self.cache),
            "Dir::Cache::pkgcache": "pkgcache.bin",  # some systems disable this on-disk cache
            "Acquire::Retries": "3",
            "Acquire::http::Timeout": "60",
            "Acquire::https::Timeout": "60",
        }
        if os.geteuid() == 0:  # the _apt sandbox user cannot enter a private cache under /root
            opts["APT::Sandbox::User"] = "root"
        args = [f"-o{key}={value}" for key, value in opts.items()]
        return args + [f"-oAPT::Architectures::={arch}" for arch in DEB_ARCHES]

    def _run(self, tool: str, args: list[str], timeout: float, cwd: Path | None = None) -> str:
        cmd = [tool, *self.options(), *args]
        try:
            done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise VMError(f"{tool} {' '.join(args)} did not finish within {timeout:.0f} s") from None
        if done.returncode != 0:
            tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-15:])
            raise VMError(f"{tool} {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
        return done.stdout

    def _fresh(self, text: str, max_age: float) -> bool:
        stamp = self.root / "updated"
        if not stamp.is_file() or stamp.read_text() != text:
            return False
        return time.time() - stamp.stat().st_mtime < max_age

    def update(self, force: bool = False) -> None:
        """apt-get update the private lists unless they are from the same sources and younger than a
        day (FORCE: than ten minutes, so one `fetch --refresh` of several images updates once)."""
        text = private_sources(debian_archive_uri(system_sources()))
        with locked(self.root / "lock", LOCK_TIMEOUT):
            if self._fresh(text, REFRESH_MAX_AGE if force else UPDATE_MAX_AGE):
                return
            (self.lists / "partial").mkdir(parents=True, exist_ok=True)
            self.sources.write_text(text)
            progress(f"apt-get update (private state in {self.root}) for {', '.join(SUITES)} ...")
            start = time.monotonic()
            self._run("apt-get", ["update"], UPDATE_TIMEOUT)
            (self.root / "updated").write_text(text)
            progress(f"apt-get update done in {time.monotonic() - start:.1f} s")

    def package_names(self, prefix: str) -> list[str]:
        """Names of all known packages that start with PREFIX."""
        return self._run("apt-cache", ["pkgnames", prefix], QUERY_TIMEOUT).split()

    def versions(self, package: str, deb_arch: str) -> dict[str, str]:
        """{suite: version} of PACKAGE for DEB_ARCH in the private lists."""
        out = self._run("apt-cache", ["madison", f"{package}:{deb_arch}"], QUERY_TIMEOUT)
        found: dict[str, str] = {}
        for line in out.splitlines():
            parts = [part.strip() for part in line.split("|")]
            if len(parts) == 3 and parts[2].endswith("Packages"):
                suite = parts[2].split()[1].split("/")[0]
                found.setdefault(suite, parts[1])
        return found

    def download(self, packages: list[str], dest: Path) -> None:
        """apt-get download PKG:ARCH=VERSION ... into DEST (apt checks signatures and hashes)."""
        dest.mkdir(parents=True, exist_ok=True)
        self._run("apt-get", ["download", *packages], DOWNLOAD_TIMEOUT, cwd=dest)
