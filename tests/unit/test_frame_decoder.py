"""The walker's FrameDecoder gives exactly what the architecture's decode gives."""
from __future__ import annotations

import random

import pytest

from ptinspect.archs import ARCH_NAMES, get_arch
from ptinspect.archs.common import Fact, KernelFacts
from ptinspect.archs.versions import release_layout
from ptinspect.inspector.walker import FrameDecoder

FACTS = {"CONFIG_TRANSPARENT_HUGEPAGE": True, "CONFIG_MEM_SOFT_DIRTY": True, "CONFIG_HAVE_ARCH_USERFAULTFD_WP": True,
         "CONFIG_USERFAULTFD": True, "CONFIG_MIGRATION": True}
REAL = {"x86_64": 0x80000000031F7867, "arm64": 0x68000041A0BF43, "riscv64": 0x20000000C4B01FD7}


@pytest.mark.parametrize("arch_name", ARCH_NAMES)
def test_shared_decodes_equal_full_decodes(arch_name: str) -> None:
    """Random values in families of neighbours (a few bits apart, mostly in frame-number
    positions, as the leaves of one mapping are), decoded both ways."""
    rng = random.Random(arch_name)
    arch = get_arch(arch_name)
    for mode in arch.modes():
        for release in ("5.10", "6.1", "6.6", "6.12", "7.2", "7.3"):
            facts = KernelFacts(layout=release_layout(release, arch_name), facts={k: Fact(v, "test") for k, v in FACTS.items()})
            shared = FrameDecoder(arch, mode, facts)
            for depth in range(len(mode.levels)):
                for base in [REAL[arch_name]] + [rng.getrandbits(64) for _ in range(2)]:
                    for _ in range(30):
                        raw = base
                        for _ in range(rng.randint(0, 5)):
                            raw ^= 1 << (rng.randrange(64) if rng.random() < 0.2 else rng.randrange(8, 56))
                        assert shared.decode(raw, depth) == arch.decode(raw, depth, mode, facts), (
                            f"{mode.name} {release} depth {depth} raw {raw:#x}")
