"""inspector/devmem.py on synthetic iomem resource trees laid out with a real kernel's struct resource
(7.3 x86_64 and arm64 vmlinux DWARF): the device-private resources are found wherever they hang,
and a damaged tree (a cycle, an unreadable node) gives KernelError."""
from __future__ import annotations

import pytest

from ptinspect.inspector.devmem import DESC, device_private_ranges
from ptinspect.inspector.kernel import KernelError
from ptinspect.inspector.layout import KernelLayout, layout_for
from ptinspect.inspector.vm.images import ensure_image, image_for

from .test_rawkernel import Memory, kernel


@pytest.fixture(scope="module", params=[("x86_64", "7.3"), ("arm64", "7.3")], ids=lambda p: f"{p[0]}-{p[1]}")
def layout(request: pytest.FixtureRequest) -> KernelLayout:
    arch, series = request.param
    return layout_for(ensure_image(image_for(arch, series)).vmlinux)


def resource(mem: Memory, start: int, end: int, desc: int, sibling: int = 0, child: int = 0,
             at: int | None = None) -> int:
    res = mem.struct("resource") if at is None else at
    for name, value in (("start", start), ("end", end), ("desc", desc), ("sibling", sibling), ("child", child)):
        mem.set(res, f"resource.{name}", value)
    return res


def test_the_kernel_enumerator_is_read(layout: KernelLayout) -> None:
    assert layout.constants[DESC] == 6  # include/linux/ioport.h 7.3: IORES_DESC_DEVICE_PRIVATE_MEMORY = 6


def test_device_private_resources_at_any_depth(layout: KernelLayout) -> None:
    mem = Memory(layout)
    dev = layout.constants[DESC]
    nested = resource(mem, 0x7F0000000, 0x7F00FFFFF, dev)
    second = resource(mem, 0x7E0000000, 0x7EFFFFFFF, dev)
    window = resource(mem, 0x700000000, 0x7FFFFFFFF, 0, child=nested)  # e.g. a PCI window
    ram = resource(mem, 0x100000, 0x7FFFFFFF, 0, sibling=window)  # System RAM: IORES_DESC_NONE
    mem.set(nested, "resource.sibling", second)
    resource(mem, 0, (1 << 64) - 1, 0, child=ram, at=mem.at_symbol("iomem_resource", layout.sizes["resource"]))
    assert device_private_ranges(kernel(mem)) == [(0x7E0000000, 0x7F0000000), (0x7F0000000, 0x7F0100000)]


def test_damaged_trees(layout: KernelLayout) -> None:
    mem = Memory(layout)
    root = mem.at_symbol("iomem_resource", layout.sizes["resource"])
    first = resource(mem, 0x1000, 0x1FFF, 0)
    mem.set(first, "resource.sibling", first)  # a cycle
    resource(mem, 0, (1 << 64) - 1, 0, child=first, at=root)
    with pytest.raises(KernelError, match="twice"):
        device_private_ranges(kernel(mem))
    mem.set(root, "resource.child", 0xFFFF888012345000)  # unmapped
    with pytest.raises(KernelError, match="iomem_resource tree"):
        device_private_ranges(kernel(mem))
