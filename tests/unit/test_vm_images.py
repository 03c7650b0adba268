"""The VM side without QEMU or network: apt source parsing, the kernel manifest, cache completeness."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptinspect.inspector.cache import cache_dir
from ptinspect.inspector.vm import VMError, apt, images, sysdeps
from ptinspect.inspector.vm.qemu import read_manifest

DEB822 = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://mirror.example/debian-security
Suites: bookworm-security
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main

Enabled: no
Types: deb
URIs: http://disabled.example/debian
Suites: bookworm
Components: main
"""

ONE_LINE = """\
# comment
deb [arch=amd64 signed-by=/usr/share/keyrings/nodesource.gpg] https://deb.nodesource.example/node_20.x nodistro main
deb-src http://src.example/debian trixie main
deb http://local.example/debian trixie main contrib  # trailing comment
"""


def test_deb822_keeps_enabled_deb_entries() -> None:
    entries = apt.parse_deb822(DEB822)
    assert [e.uri for e in entries] == ["http://mirror.example/debian", "http://mirror.example/debian-security"]
    assert entries[0].suites == ("bookworm", "bookworm-updates")
    assert entries[0].components == ("main",)


def test_one_line_format_drops_options_comments_and_sources() -> None:
    entries = apt.parse_one_line(ONE_LINE)
    assert [(e.uri, e.suites, e.components) for e in entries] == [
        ("https://deb.nodesource.example/node_20.x", ("nodistro",), ("main",)),
        ("http://local.example/debian", ("trixie",), ("main", "contrib")),
    ]


def test_archive_uri_is_the_plain_debian_suite(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(apt.URI_ENV, raising=False)
    entries = apt.parse_deb822(DEB822)
    assert apt.debian_archive_uri(entries[1:] + entries[:1]) == "http://mirror.example/debian"
    assert apt.debian_archive_uri(apt.parse_one_line(ONE_LINE)) == "http://local.example/debian"


def test_no_debian_archive_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(apt.URI_ENV, raising=False)
    with pytest.raises(VMError, match=apt.URI_ENV):
        apt.debian_archive_uri(apt.parse_one_line(ONE_LINE.splitlines()[1]))
    monkeypatch.setenv(apt.URI_ENV, "http://override.example/debian")
    assert apt.debian_archive_uri([]) == "http://override.example/debian"


def test_system_sources_reads_both_formats(tmp_path: Path) -> None:
    (tmp_path / "sources.list.d").mkdir()
    (tmp_path / "sources.list").write_text(ONE_LINE)
    (tmp_path / "sources.list.d" / "debian.sources").write_text(DEB822)
    (tmp_path / "sources.list.d" / "old.list.disabled").write_text("deb http://no.example/debian sid main\n")
    uris = [e.uri for e in apt.system_sources(tmp_path)]
    assert uris == ["https://deb.nodesource.example/node_20.x", "http://local.example/debian",
                    "http://mirror.example/debian", "http://mirror.example/debian-security"]


def test_private_sources_lists_every_suite_and_arch() -> None:
    lines = apt.private_sources("http://mirror.example/debian").splitlines()
    assert [line.split()[-2] for line in lines] == list(apt.SUITES)
    for line in lines:
        assert line.startswith(f"deb [arch=amd64,arm64,riscv64 signed-by={apt.KEYRING}] http://mirror.example/debian ")


def test_no_archive_host_in_the_project() -> None:
    root = Path(__file__).resolve().parents[2]
    for path in [*root.glob("inspector/vm/*.py"), root / "vm-images" / "kernels.toml"]:
        assert "deb.debian.org" not in path.read_text(), path


REQUIRED = {("x86_64", "7.3"), ("arm64", "7.3"), ("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2"),
            ("arm64", "7.2-16k"), ("x86_64", "6.12"), ("arm64", "6.12"), ("x86_64", "5.10"), ("arm64", "5.10")}


def test_manifest_names_the_required_images() -> None:
    recipes = images.load_manifest()
    assert {(r.arch, r.kernel) for r in recipes.values()} >= REQUIRED
    for recipe in recipes.values():
        assert recipe.kernel.startswith(recipe.series)
        assert recipe.id == f"{recipe.series}-{recipe.arch}{recipe.kernel[len(recipe.series):]}"
        assert recipe.debian_arch == apt.DEB_ARCH[recipe.arch]
        assert recipe.suite in apt.SUITES
        assert recipe.tested_release.endswith("-" + recipe.flavour)
        assert recipe.tested_release.startswith(recipe.series + ".")
        assert images.image_for(recipe.arch, recipe.kernel) == recipe.id
    assert recipes["7.2-arm64-16k"].flavour == "arm64-16k"


def test_two_images_of_one_arch_and_kernel_name_are_refused(tmp_path: Path) -> None:
    text = images.MANIFEST.read_text()
    start = text.index("[[image]]")
    first = text[start:text.index("[[image]]", start + 1)]
    bad = tmp_path / "kernels.toml"
    bad.write_text(first + first.replace('id = "', 'id = "again-'))
    with pytest.raises(VMError, match="give it its own `kernel` name"):
        images.load_manifest(bad)


def test_bad_manifest_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "kernels.toml"
    bad.write_text('[[image]]\nid = "x"\narch = "sparc"\n')
    with pytest.raises(VMError, match="bad image entry"):
        images.load_manifest(bad)


def test_abi_pattern_picks_series_and_flavour_only() -> None:
    recipe = images.load_manifest()["7.2-x86_64"]
    pattern = recipe.abi_pattern()
    assert pattern.match("linux-image-7.2.13+deb14-cloud-amd64-dbg")["abi"] == "7.2.13+deb14"
    for other in ("linux-image-7.2.13+deb14-amd64-dbg", "linux-image-7.2.13+deb14-rt-amd64-dbg",
                  "linux-image-7.20.1+deb14-cloud-amd64-dbg", "linux-image-7.2.13+deb14-cloud-amd64"):
        assert pattern.match(other) is None, other
    bookworm = images.Recipe(**{**recipe.__dict__, "series": "6.1"})
    assert bookworm.abi_pattern().match("linux-image-6.1.0-37-cloud-amd64-dbg")["abi"] == "6.1.0-37"
    bullseye = images.load_manifest()["5.10-arm64"].abi_pattern()
    assert bullseye.match("linux-image-5.10.0-32-cloud-arm64-dbg")["abi"] == "5.10.0-32"
    assert bullseye.match("linux-image-5.10.0-32-arm64-dbg") is None
    granule = images.load_manifest()["7.2-arm64-16k"].abi_pattern()
    assert granule.match("linux-image-7.2.13+deb14-arm64-16k-dbg")["abi"] == "7.2.13+deb14"
    assert granule.match("linux-image-7.2.13+deb14-arm64-dbg") is None


class FakeApt:
    """Package names and {suite: version} as a private apt state would report them."""

    def __init__(self, versions: dict[str, dict[str, str]]) -> None:
        self.table = versions

    def package_names(self, prefix: str) -> list[str]:
        return [name for name in self.table if name.startswith(prefix)]

    def versions(self, package: str, deb_arch: str) -> dict[str, str]:
        return self.table.get(package, {})


def _kernel_packages(abi: str, suite: str, version: str, flavour: str = "cloud-amd64") -> dict[str, dict[str, str]]:
    names = ("linux-binary-{}-{}", "linux-base-{}-{}", "linux-modules-{}-{}", "linux-image-{}-{}-dbg")
    return {name.format(abi, flavour): {suite: version} for name in names}


def test_resolve_takes_the_newest_complete_version_of_the_suite() -> None:
    recipe = images.load_manifest()["7.2-x86_64"]
    table = {**_kernel_packages("7.2.9+deb14", "sid", "7.2.9-1"), **_kernel_packages("7.2.13+deb14", "sid", "7.2.13-1"),
             **_kernel_packages("7.2.20+deb14", "experimental", "7.2.20-1")}
    table |= {"linux-image-7.2.14+deb14-cloud-amd64-dbg": {"sid": "7.2.14-1"}}  # dbg without its kernel
    abi, version, packages = images.resolve(recipe, FakeApt(table))  # type: ignore[arg-type]
    assert (abi, version) == ("7.2.13+deb14", "7.2.13-1")
    assert "linux-image-7.2.13+deb14-cloud-amd64-dbg:amd64=7.2.13-1" in packages
    assert len(packages) == 4
    with pytest.raises(VMError, match="no 7.2 kernel"):
        images.resolve(recipe, FakeApt({}))  # type: ignore[arg-type]


def test_trixie_recipe_downloads_each_package_once() -> None:
    recipe = images.load_manifest()["6.12-arm64"]
    table = {f"linux-image-6.12.107+deb13-cloud-arm64{s}": {"trixie": "6.12.107-1"} for s in ("", "-dbg")}
    _, _, packages = images.resolve(recipe, FakeApt(table))  # type: ignore[arg-type]
    assert packages == ["linux-image-6.12.107+deb13-cloud-arm64:arm64=6.12.107-1",
                        "linux-image-6.12.107+deb13-cloud-arm64-dbg:arm64=6.12.107-1"]


@pytest.fixture
def entry(tmp_path: Path) -> Path:
    root = tmp_path / "7.2-x86_64"
    (root / "lib/modules/r/kernel").mkdir(parents=True)
    (root / "vmlinuz").write_bytes(b"kernel" * 100)
    (root / "vmlinux").write_bytes(b"\x7fELF" + bytes(1000))
    (root / "config").write_text("CONFIG_X=y\n")
    (root / "lib/modules/r/kernel/a.ko.xz").write_bytes(b"module")
    images._write_stamp(root, {"release": "r", "version": "1"})
    return root


def test_complete_entry_matches_its_stamp(entry: Path) -> None:
    stamp, reason = images.check_entry(entry, full=True)
    assert reason == "" and stamp is not None
    assert set(stamp["files"]) == {"vmlinuz", "vmlinux", "config", "lib/modules/r/kernel/a.ko.xz"}


def test_missing_stamp_is_incomplete(entry: Path, tmp_path: Path) -> None:
    (entry / images.STAMP).unlink()
    assert images.check_entry(entry, full=False) == (None, "incomplete (no completion stamp)")
    assert images.check_entry(tmp_path / "absent", full=False) == (None, "not fetched yet")


def test_truncated_file_is_detected(entry: Path) -> None:
    with open(entry / "vmlinux", "r+b") as handle:
        handle.truncate(10)
    stamp, reason = images.check_entry(entry, full=False)
    assert stamp is None and "vmlinux" in reason


def test_same_size_corruption_needs_the_full_check(entry: Path) -> None:
    data = bytearray((entry / "vmlinuz").read_bytes())
    data[3] ^= 0xFF
    (entry / "vmlinuz").write_bytes(bytes(data))
    assert images.check_entry(entry, full=False)[0] is not None
    stamp, reason = images.check_entry(entry, full=True)
    assert stamp is None and "vmlinuz" in reason


def test_missing_and_extra_files_are_detected(entry: Path) -> None:
    (entry / "lib/modules/r/kernel/a.ko.xz").unlink()
    assert "a.ko.xz is missing" in images.check_entry(entry, full=False)[1]
    images._write_stamp(entry, {"release": "r", "version": "1"})
    (entry / "leftover.deb").write_bytes(b"x")
    assert "leftover.deb" in images.check_entry(entry, full=False)[1]


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PTINSPECT_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("PTINSPECT_CACHE")
    assert cache_dir() == tmp_path / "xdg" / "ptinspect"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "ptinspect"


def test_missing_tools_name_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sysdeps.shutil, "which", lambda tool: None)
    gaps = dict(sysdeps.missing(["x86_64", "arm64", "riscv64"]))
    assert gaps["qemu-system-x86_64"] == "qemu-system-x86"
    assert gaps["qemu-system-aarch64"] == "qemu-system-arm"
    assert gaps["qemu-system-riscv64"] == "qemu-system-misc"
    assert gaps["aarch64-linux-gnu-gcc"] == "gcc-aarch64-linux-gnu"
    assert gaps["riscv64-linux-gnu-gcc"] == "gcc-riscv64-linux-gnu"
    assert gaps["gdb-multiarch"] == "gdb-multiarch"
    assert gaps["cpio"] == "cpio"
    assert gaps["dpkg-deb"] == "dpkg"
    assert gaps["apt-get"] == "apt"
    with pytest.raises(VMError, match="sudo apt-get install .*qemu-system-misc"):
        sysdeps.check_system(["riscv64"])
    assert {tool for tool, _ in sysdeps.missing(["riscv64"], fetch_only=True)} >= set(sysdeps.FETCH_TOOLS)


def test_manifest_is_read_between_the_markers(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_bytes(b"[ 1.0] boot\r\nPTINSPECT-MANIFEST-BEGIN\r\n{\"pid\": 7,\r\n \"regions\": []}\r\n")
    assert read_manifest(log) == (None, None)  # END not printed yet
    with open(log, "ab") as handle:
        handle.write(b"PTINSPECT-MANIFEST-END\r\n")
    body, failure = read_manifest(log)
    assert failure is None and json.loads(body or "") == {"pid": 7, "regions": []}


def test_panic_and_workload_exit_are_failures(tmp_path: Path) -> None:
    log = tmp_path / "serial.log"
    log.write_text("x\n[ 2.0] Kernel panic - not syncing: VFS: Unable to mount root fs\nmore\n")
    assert read_manifest(log) == (None, "Kernel panic - not syncing: VFS: Unable to mount root fs")
    log.write_text("ptinspect-init: workload pid 9\nPTINSPECT-WORKLOAD-EXIT status=139\n")
    assert read_manifest(log)[1] == "PTINSPECT-WORKLOAD-EXIT status=139"


def test_a_listed_package_the_archive_does_not_serve_is_named(tmp_path: Path) -> None:
    class NotServed:
        def download(self, packages: list[str], dest: Path) -> None:
            raise VMError("apt-get download x failed (exit 100):\nE: Failed to fetch http://mirror.example/"
                          "debian/pool/main/l/linux/x.deb  404  Not Found [IP: 192.0.2.1 80]")

    with pytest.raises(VMError, match=r"lists linux-base-7\.3\.4\+deb13-riscv64:riscv64=7\.3\.4-1 but the archive "
                                      r"does not serve them \(404 Not Found\)"):
        images._download(NotServed(), ["linux-base-7.3.4+deb13-riscv64:riscv64=7.3.4-1"], tmp_path, "7.3-riscv64")
