"""The guest workload's manifest (vm-images/README-workload.md): found in a console log, parsed, validated.

The workload prints one JSON document between the lines PTINSPECT-MANIFEST-BEGIN and
PTINSPECT-MANIFEST-END. Every value is checked here, so later comparisons with ptinspect's dump
can trust the dataclasses: every kind of region is present (made, or with the reason it could not
be), and every mapped region has one pagemap value per base page.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

BEGIN = "PTINSPECT-MANIFEST-BEGIN"
END = "PTINSPECT-MANIFEST-END"
WORKLOAD_EXIT = "PTINSPECT-WORKLOAD-EXIT"
FORMAT = "ptinspect-workload-manifest"
VERSION = 1

KINDS = (
    "cow_parent", "cow_child", "anon_4k", "anon_zero", "anon_none", "thp_2m", "mthp_64k",
    "hugetlb_64k", "hugetlb_2m", "file_private", "file_private_cow", "file_shared", "file_shared_ro",
    "readonly",
    "protnone", "guard", "uffd_wp_marker", "uffd_wp_present", "uffd_wp_shmem_marker",
    "poison_marker", "hwpoison", "swap",
)
STATUSES = ("ok", "mismatch", "unsupported", "failed", "skipped")
MAPPED_STATUSES = frozenset({"ok", "mismatch"})  # regions left mapped, with pages listed
CHILD_KIND = "cow_child"  # the one kind that lives in the fork child

# /proc/PID/pagemap bits, fs/proc/task_mmu.c:1949-1957 (7.2); PM_GUARD_REGION is 7.2 only.
PM_PFRAME_MASK = (1 << 55) - 1
PM_SWAP_TYPE_BITS = 5  # MAX_SWAPFILES_SHIFT: a swap frame is type | offset << 5
PM_SOFT_DIRTY = 1 << 55
PM_MMAP_EXCLUSIVE = 1 << 56
PM_UFFD_WP = 1 << 57
PM_GUARD_REGION = 1 << 58
PM_FILE = 1 << 61
PM_SWAP = 1 << 62
PM_PRESENT = 1 << 63

T = TypeVar("T")


class ManifestError(ValueError):
    """The console log holds no manifest, or the manifest breaks the format."""


@dataclass(frozen=True)
class PagemapEntry:
    """One raw /proc/PID/pagemap value, with its fields."""

    raw: int

    @property
    def present(self) -> bool:
        return bool(self.raw & PM_PRESENT)

    @property
    def swapped(self) -> bool:
        """PM_SWAP: any non-present, non-none entry (swap, marker, hwpoison, migration)."""
        return bool(self.raw & PM_SWAP)

    @property
    def file(self) -> bool:
        return bool(self.raw & PM_FILE)

    @property
    def exclusive(self) -> bool:
        return bool(self.raw & PM_MMAP_EXCLUSIVE)

    @property
    def uffd_wp(self) -> bool:
        return bool(self.raw & PM_UFFD_WP)

    @property
    def guard(self) -> bool:
        return bool(self.raw & PM_GUARD_REGION)

    @property
    def soft_dirty(self) -> bool:
        return bool(self.raw & PM_SOFT_DIRTY)

    @property
    def frame(self) -> int:
        return self.raw & PM_PFRAME_MASK

    @property
    def pfn(self) -> int | None:
        """The PFN of a present page (0 when read without CAP_SYS_ADMIN)."""
        return self.frame if self.present else None

    @property
    def swap_type(self) -> int | None:
        """The generic swap type (a swapfile, or a special type such as a marker) of a PM_SWAP entry."""
        return self.frame & ((1 << PM_SWAP_TYPE_BITS) - 1) if self.swapped else None

    @property
    def swap_offset(self) -> int | None:
        """The offset of a PM_SWAP entry; the PFN for hwpoison/migration entries, the marker bits for markers."""
        return self.frame >> PM_SWAP_TYPE_BITS if self.swapped else None


@dataclass(frozen=True)
class Page:
    """One base page of a region: its address and what the kernel reported for it."""

    va: int
    pagemap: PagemapEntry
    kpageflags: int | None  # /proc/kpageflags of its PFN, present pages only
    scan: int | None  # PAGEMAP_SCAN PAGE_IS_* categories; None when the kernel lacks the ioctl


@dataclass(frozen=True)
class Vma:
    """The smaps record of the VMA holding the region's start."""

    start: int
    end: int
    flags: tuple[str, ...]
    rss_kb: int
    anon_huge_kb: int
    swap_kb: int
    file_pmd_kb: int
    shmem_pmd_kb: int
    thp_eligible: int | None


@dataclass(frozen=True)
class Region:
    """One region: what was intended, what became of it, and its pages when it is mapped."""

    name: str
    kind: str
    pid: int
    status: str
    reason: str | None
    start: int | None
    length: int
    page_size: int  # intended mapping size (4 KiB, 64 KiB, 2 MiB; 16 KiB pages: 16 KiB, 2 MiB, 32 MiB)
    backing: str
    prot: str
    vma: Vma | None
    details: dict[str, str]
    pages: tuple[Page, ...]

    @property
    def mapped(self) -> bool:
        return self.start is not None


@dataclass(frozen=True)
class HugetlbPool:
    nr_hugepages: int | None
    free_hugepages: int | None


@dataclass(frozen=True)
class Settings:
    """The THP / mTHP / hugetlb / swap / feature facts in effect when the manifest was taken."""

    thp_enabled: str | None
    thp_defrag: str | None
    thp_shmem_enabled: str | None
    mthp: dict[str, str | None]  # "64kB" -> "always"
    hugetlb: dict[str, HugetlbPool]  # "2048kB" -> pool
    swaps: tuple[str, ...] | None  # /proc/swaps lines
    uffd_features_offered: int | None
    uffd_features_enabled: int | None
    uffd_error: str | None
    scan_categories: int | None  # PAGE_IS_* mask PAGEMAP_SCAN accepts; None without the ioctl
    scan_error: str | None
    kpageflags_readable: bool
    kpageflags_error: str | None
    config: dict[str, str] | None  # CONFIG_X -> y/m/n/value; None without the kernel config


@dataclass(frozen=True)
class Manifest:
    pid: int
    child_pid: int | None
    euid: int
    kernel_release: str
    kernel_version: str
    machine: str
    arch: str
    page_size: int
    arena: int
    settings: Settings
    init_log: tuple[str, ...] | None
    regions: tuple[Region, ...]

    def region(self, name: str) -> Region:
        """The region called NAME; KeyError if there is none."""
        for region in self.regions:
            if region.name == name:
                return region
        raise KeyError(name)


class _Obj:
    """A JSON object being read, with its path for error messages."""

    def __init__(self, data: Any, path: str) -> None:
        if not isinstance(data, dict):
            raise ManifestError(f"{path or 'manifest'}: expected an object, got {type(data).__name__}")
        self.data, self.path = data, path

    def _at(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def get(self, key: str, check: Callable[[Any, str], T]) -> T:
        if key not in self.data:
            raise ManifestError(f"{self._at(key)}: missing")
        return check(self.data[key], self._at(key))

    def obj(self, key: str) -> _Obj:
        return _Obj(self.get(key, lambda v, _: v), self._at(key))


def _typed(kind: type, name: str) -> Callable[[Any, str], Any]:
    def check(value: Any, path: str) -> Any:
        if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
            raise ManifestError(f"{path}: expected {name}, got {value!r}")
        return value
    return check


_str = _typed(str, "a string")
_int = _typed(int, "an integer")
_bool = _typed(bool, "a boolean")
_list = _typed(list, "a list")


def _opt(check: Callable[[Any, str], T]) -> Callable[[Any, str], T | None]:
    return lambda value, path: None if value is None else check(value, path)


def _hex(value: Any, path: str) -> int:
    if not isinstance(value, str) or not value.startswith("0x"):
        raise ManifestError(f"{path}: expected a hex string \"0x...\", got {value!r}")
    try:
        number = int(value, 16)
    except ValueError:
        raise ManifestError(f"{path}: not a hex number: {value!r}") from None
    if number >= 1 << 64:
        raise ManifestError(f"{path}: wider than 64 bits: {value}")
    return number


def _str_map(value: Any, path: str, item: Callable[[Any, str], T]) -> dict[str, T]:
    obj = _Obj(value, path)
    return {key: obj.get(key, item) for key in obj.data}


def _lines(value: Any, path: str) -> tuple[str, ...]:
    return tuple(_str(line, f"{path}[{i}]") for i, line in enumerate(_list(value, path)))


def _pool(value: Any, path: str) -> HugetlbPool:
    obj = _Obj(value, path)
    return HugetlbPool(obj.get("nr_hugepages", _opt(_int)), obj.get("free_hugepages", _opt(_int)))


def _settings(obj: _Obj) -> Settings:
    uffd, scan, kpf = obj.obj("uffd"), obj.obj("pagemap_scan"), obj.obj("kpageflags")
    return Settings(
        thp_enabled=obj.get("thp_enabled", _opt(_str)),
        thp_defrag=obj.get("thp_defrag", _opt(_str)),
        thp_shmem_enabled=obj.get("thp_shmem_enabled", _opt(_str)),
        mthp=obj.get("mthp", lambda v, p: _str_map(v, p, _opt(_str))),
        hugetlb=obj.get("hugetlb", lambda v, p: _str_map(v, p, _pool)),
        swaps=obj.get("swaps", _opt(_lines)),
        uffd_features_offered=uffd.get("features_offered", _opt(_hex)),
        uffd_features_enabled=uffd.get("features_enabled", _opt(_hex)),
        uffd_error=uffd.get("error", _opt(_str)),
        scan_categories=scan.get("categories", _opt(_hex)),
        scan_error=scan.get("error", _opt(_str)),
        kpageflags_readable=kpf.get("readable", _bool),
        kpageflags_error=kpf.get("error", _opt(_str)),
        config=obj.get("config", _opt(lambda v, p: _str_map(v, p, _str))),
    )


def _vma(value: Any, path: str) -> Vma:
    obj = _Obj(value, path)
    return Vma(start=obj.get("start", _hex), end=obj.get("end", _hex),
               flags=tuple(obj.get("flags", _str).split()), rss_kb=obj.get("rss_kb", _int),
               anon_huge_kb=obj.get("anon_huge_kb", _int), swap_kb=obj.get("swap_kb", _int),
               file_pmd_kb=obj.get("file_pmd_kb", _int), shmem_pmd_kb=obj.get("shmem_pmd_kb", _int),
               thp_eligible=obj.get("thp_eligible", _opt(_int)))


def _pages(obj: _Obj, start: int | None, length: int, base: int) -> tuple[Page, ...]:
    """The per-page lists, checked to have one item per base page of a mapped region (none otherwise)."""
    pagemap = [_hex(v, f"{obj.path}.pagemap[{i}]") for i, v in enumerate(obj.get("pagemap", _list))]
    kpf = [_opt(_hex)(v, f"{obj.path}.kpageflags[{i}]") for i, v in enumerate(obj.get("kpageflags", _list))]
    scan_list = obj.get("scan", _opt(_list))
    scan = None if scan_list is None else [_int(v, f"{obj.path}.scan[{i}]") for i, v in enumerate(scan_list)]
    count = length // base if start is not None else 0
    for name, items in (("pagemap", pagemap), ("kpageflags", kpf), ("scan", scan)):
        if items is not None and len(items) != count:
            raise ManifestError(f"{obj.path}.{name}: {len(items)} items, expected {count} (one per base page)")
    if start is None:
        return ()
    return tuple(Page(va=start + i * base, pagemap=PagemapEntry(pagemap[i]), kpageflags=kpf[i],
                      scan=None if scan is None else scan[i]) for i in range(count))


def _region(value: Any, path: str, base: int) -> Region:
    obj = _Obj(value, path)
    kind, status = obj.get("kind", _str), obj.get("status", _str)
    reason, start = obj.get("reason", _opt(_str)), obj.get("start", _opt(_hex))
    length, page_size = obj.get("length", _int), obj.get("page_size", _int)
    if kind not in KINDS:
        raise ManifestError(f"{path}.kind: unknown kind {kind!r}")
    if status not in STATUSES:
        raise ManifestError(f"{path}.status: unknown status {status!r}")
    if (status == "ok") != (reason is None) or reason == "":
        raise ManifestError(f"{path}: status {status!r} needs {'no' if status == 'ok' else 'a'} reason")
    if (status in MAPPED_STATUSES) != (start is not None):
        raise ManifestError(f"{path}: status {status!r} but start is {start!r}")
    if page_size <= 0 or page_size % base or length <= 0 or length % page_size:
        raise ManifestError(f"{path}: length {length} / page_size {page_size} not whole {base}-byte pages")
    if start is not None and start % page_size:
        raise ManifestError(f"{path}.start: {start:#x} is not aligned to page_size {page_size:#x}")
    return Region(name=obj.get("name", _str), kind=kind, pid=obj.get("pid", _int), status=status,
                  reason=reason, start=start, length=length, page_size=page_size,
                  backing=obj.get("backing", _str), prot=obj.get("prot", _str),
                  vma=obj.get("vma", _opt(_vma)),
                  details=obj.get("details", lambda v, p: _str_map(v, p, _str)),
                  pages=_pages(obj, start, length, base))


def parse(text: str) -> Manifest:
    """The manifest in TEXT (the JSON between the markers); ManifestError on any deviation."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ManifestError(f"manifest is not valid JSON: {exc}") from None
    top = _Obj(data, "")
    if top.get("format", _str) != FORMAT or top.get("version", _int) != VERSION:
        raise ManifestError(f"not a {FORMAT} version {VERSION} document")
    base = top.get("page_size", _int)
    if base <= 0 or base & (base - 1):
        raise ManifestError(f"page_size: {base} is not a power of two")
    pid, child = top.get("pid", _int), top.get("child_pid", _opt(_int))
    regions = tuple(_region(v, f"regions[{i}]", base) for i, v in enumerate(top.get("regions", _list)))
    names = [r.name for r in regions]
    if len(set(names)) != len(names):
        raise ManifestError(f"regions: duplicate names in {names}")
    if missing := [k for k in KINDS if k not in {r.kind for r in regions}]:
        raise ManifestError(f"regions: no region of kind {', '.join(missing)} (not even a reason)")
    for region in regions:
        owner = child if region.kind == CHILD_KIND and region.mapped else pid
        if region.pid != owner:
            raise ManifestError(f"region {region.name}: pid {region.pid}, expected {owner}")
    return Manifest(pid=pid, child_pid=child, euid=top.get("euid", _int),
                    kernel_release=top.get("kernel_release", _str),
                    kernel_version=top.get("kernel_version", _str), machine=top.get("machine", _str),
                    arch=top.get("arch", _str), page_size=base, arena=top.get("arena", _hex),
                    settings=_settings(top.obj("settings")), init_log=top.get("init_log", _opt(_lines)),
                    regions=regions)


def extract(console: str) -> str:
    """The manifest text between the markers of a console log (CR/LF line ends allowed)."""
    lines = console.replace("\r", "").split("\n")
    try:
        begin = lines.index(BEGIN)
    except ValueError:
        exited = [line for line in lines if line.startswith(WORKLOAD_EXIT)]
        raise ManifestError(f"no {BEGIN} line in the console log"
                            + (f"; the workload ended: {exited[0]}" if exited else "")) from None
    try:
        end = lines.index(END, begin)
    except ValueError:
        raise ManifestError(f"{BEGIN} without {END}: the manifest is truncated") from None
    return "\n".join(lines[begin + 1:end])


def from_console(console: str) -> Manifest:
    """The validated manifest of a console log."""
    return parse(extract(console))
