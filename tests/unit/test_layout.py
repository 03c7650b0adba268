"""The cached kernel layout: extracted from each test kernel's debug vmlinux and checked against
what the kernel headers and the kernel's own config imply, and against the ELF symbol table read
without drgn; the cache file is reused, keyed to the file, and rebuilt when damaged.

These need the fetched test kernels (`ptinspect vm fetch --all`); a missing one fails the test.
"""
from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from ptinspect.inspector import layout as layout_mod
from ptinspect.inspector import vmlinux as vml
from ptinspect.inspector.layout import KernelLayout, LayoutError, cache_path, layout_for
from ptinspect.inspector.vm.images import KernelImage, ensure_image, image_for

IMAGES = [("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2"), ("x86_64", "6.12"), ("arm64", "6.12")]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private layout cache directory (the kernels stay in the real cache)."""
    where = tmp_path / "layout"
    where.mkdir()
    monkeypatch.setattr(layout_mod, "subdir", lambda *parts: where)
    return where


@pytest.fixture(scope="module", params=IMAGES, ids=lambda p: f"{p[0]}-{p[1]}")
def extracted(request: pytest.FixtureRequest) -> tuple[KernelImage, str, KernelLayout, float]:
    """Each kernel's layout, freshly extracted (no cache), with the time it took."""
    arch, series = request.param
    image = ensure_image(image_for(arch, series))
    began = time.perf_counter()
    layout = layout_mod.extract(image.vmlinux)
    return image, series, layout, time.perf_counter() - began


def config_of(image: KernelImage) -> dict[str, bool]:
    return {line.split("=")[0]: True for line in image.config.read_text().splitlines() if line.endswith("=y")}


def test_maple_tree_constants_match_maple_tree_h(extracted) -> None:
    image, series, layout, seconds = extracted
    print(f"{image.id}: extracted in {seconds:.2f} s, {len(layout.to_json())} bytes of JSON")
    # include/linux/maple_tree.h (64-bit): MAPLE_RANGE64_SLOTS 16, MAPLE_ARANGE64_SLOTS 10, and a
    # pivot fewer than slots; "256 bytes including ->parent"; enum maple_type in declaration order.
    assert layout.lengths["maple_range_64.slot"] == 16
    assert layout.lengths["maple_range_64.pivot"] == 15
    assert layout.lengths["maple_arange_64.slot"] == 10
    assert layout.lengths["maple_arange_64.pivot"] == 9
    assert layout.sizes["maple_node"] == 256
    types = layout.enums["maple_type"]
    assert [types[t] for t in ("maple_dense", "maple_leaf_64", "maple_range_64", "maple_arange_64")] == [0, 1, 2, 3]
    # struct maple_range_64: the metadata sits in the last slot's bytes (union with slot[]).
    slot_off, slot_size = layout.members["maple_range_64.slot"]
    assert layout.offset("maple_range_64.meta") == slot_off + slot_size - 8
    assert layout.sizes["maple_metadata"] == 2


def test_bounds_match_the_headers_and_the_config(extracted) -> None:
    image, series, layout, _ = extracted
    config = config_of(image)
    # include/linux/swap.h: MAX_SWAPFILES = (1 << 5) - SWP_DEVICE_NUM - SWP_MIGRATION_NUM
    #   - SWP_HWPOISON_NUM - SWP_PTE_MARKER_NUM; SWP_DEVICE_NUM is 3 in 7.2 (7.2:77), 4 in 6.12 (6.12:31).
    device = 3 if series == "7.2" else 4
    expected = (32 - device * config.get("CONFIG_DEVICE_PRIVATE", False) - 3 * config.get("CONFIG_MIGRATION", False)
                - config.get("CONFIG_MEMORY_FAILURE", False) - 1)
    assert layout.lengths["swap_info"] == expected
    assert layout.constants["SWP_USED"] == 1  # include/linux/swap.h: SWP_USED = (1 << 0)
    assert layout.lengths["task_struct.comm"] == 16  # TASK_COMM_LEN
    assert layout.lengths["uts_namespace.name.release"] == 65  # __NEW_UTS_LEN + 1
    # Functions are built exactly when their config option is.
    assert ("memory_failure" in layout.symbols) == config.get("CONFIG_MEMORY_FAILURE", False)
    assert ("migrate_pages" in layout.symbols) == config.get("CONFIG_MIGRATION", False)
    assert ("vm_area_struct.anon_name" in layout.members) == config.get("CONFIG_ANON_VMA_NAME", False)
    assert ("cpuinfo_x86.x86_phys_bits" in layout.members) == (image.arch == "x86_64")
    if image.arch == "x86_64":
        assert layout.size("cpuinfo_x86.x86_phys_bits") == 1  # __u8 (arch/x86/include/asm/processor.h)
    assert layout.arch == image.arch


def test_symbols_match_the_elf_symbol_table(extracted) -> None:
    image, _, layout, _ = extracted
    _, names = vml._read_symbols(image.vmlinux)
    for name, address in layout.symbols.items():
        assert names[name] == address, (name, hex(names[name]), hex(address))
    assert layout.variable_sizes["nr_swapfiles"] == 4  # static unsigned int nr_swapfiles (mm/swapfile.c)
    assert layout.variable_sizes["swap_info"] == 8 * layout.lengths["swap_info"]


def test_anonymous_union_members_have_their_real_offsets(extracted) -> None:
    """vm_flags lives in an anonymous union since 6.3 (with vma_flags_t in 7.2), vm_start in an
    anonymous struct in 7.2: both must resolve to real, distinct, in-struct offsets."""
    _, _, layout, _ = extracted
    start, end, flags = (layout.offset(f"vm_area_struct.{m}") for m in ("vm_start", "vm_end", "vm_flags"))
    assert (start, end) == (0, 8)
    assert flags not in (start, end) and flags + 8 <= layout.sizes["vm_area_struct"]
    assert layout.size("vm_area_struct.vm_flags") == 8


def test_json_round_trip(extracted) -> None:
    _, _, layout, _ = extracted
    assert KernelLayout.from_json(layout.to_json()) == layout


def test_cache_hit_is_equal_and_fast(cache: Path) -> None:
    image = ensure_image(image_for("x86_64", "7.2"))
    began = time.perf_counter()
    first = layout_for(image.vmlinux)
    miss = time.perf_counter() - began
    assert list(cache.iterdir()) == [cache_path(image.vmlinux)]
    hits = []
    for _ in range(5):
        began = time.perf_counter()
        again = layout_for(image.vmlinux)
        hits.append(time.perf_counter() - began)
        assert again == first
    print(f"layout_for: miss {miss:.2f} s, hit {min(hits) * 1000:.2f} ms (best of 5)")
    assert min(hits) < 0.02


@pytest.mark.parametrize("damage", ["garbage", "truncated", "other schema", "missing field", "wrong type"])
def test_damaged_cache_is_rebuilt(cache: Path, damage: str) -> None:
    image = ensure_image(image_for("arm64", "7.2"))
    good = layout_for(image.vmlinux)
    path = cache_path(image.vmlinux)
    text = path.read_text()
    data = json.loads(text)
    if damage == "garbage":
        path.write_bytes(os.urandom(64))
    elif damage == "truncated":
        path.write_text(text[: len(text) // 2])
    elif damage == "other schema":
        path.write_text(json.dumps({**data, "schema": data["schema"] + 1}))
    elif damage == "missing field":
        del data["lengths"]
        path.write_text(json.dumps(data))
    else:
        data["symbols"]["init_task"] = "0xffff"
        path.write_text(json.dumps(data))
    assert layout_for(image.vmlinux) == good
    assert KernelLayout.from_json(path.read_text()) == good


def test_cache_key_follows_the_file(tmp_path: Path, cache: Path) -> None:
    f = tmp_path / "vmlinux"
    f.write_bytes(b"x")
    before = cache_path(f)
    os.utime(f, ns=(1, 1))
    assert cache_path(f) != before
    link = tmp_path / "link"
    link.symlink_to(f)
    assert cache_path(link) == cache_path(f)  # keyed by the resolved path


def test_a_file_without_debug_info_is_refused(tmp_path: Path, cache: Path) -> None:
    source = tmp_path / "t.c"
    source.write_text("int main(void) { return 0; }\n")
    binary = tmp_path / "t"
    subprocess.run(["cc", "-g0", "-o", binary, source], check=True)  # keeps .symtab, no DWARF
    with pytest.raises(LayoutError, match="no debug info"):
        layout_for(binary)
    assert not list(cache.iterdir())
    with pytest.raises(LayoutError, match="cannot read"):
        layout_for(tmp_path / "absent")
