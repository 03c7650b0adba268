"""Which VAs are the kernel's, per architecture: addresses from each kernel's documented layout."""
from __future__ import annotations

import pytest

from ptinspect.archs import get_arch
from ptinspect.archs.common import in_kernel_half


@pytest.mark.parametrize(("arch", "va", "kernel"), [
    ("x86_64", 0xFFFF888000000000, True),  # direct map (Documentation/arch/x86/x86_64/mm.rst)
    ("x86_64", 0xFFFFFFFF81000000, True),  # kernel text
    ("x86_64", 0x00007FFFFFFFF000, False),  # top of user space
    ("arm64", 0xFFFF800080000000, True),  # vmalloc/kimage, TTBR1 (Documentation/arch/arm64/memory.rst)
    ("arm64", 0xFFF0000000000000, True),  # 52-bit linear map start
    ("arm64", 0x0000FFFFFFFFF000, False),  # top of a 48-bit user space, TTBR0
    ("riscv64", 0xFFFFFFFF80000000, True),  # kernel image (Documentation/arch/riscv/vm-layout.rst)
    ("riscv64", 0xFFAF800000000000, True),  # Sv57 direct map
    ("riscv64", 0x00007FFFFFFFF000, False),  # top of Sv48 user space
])
def test_kernel_half(arch: str, va: int, kernel: bool) -> None:
    assert in_kernel_half(get_arch(arch), va) is kernel
