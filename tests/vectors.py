"""Parse tests/data/encode-vectors.txt (values compiled from the kernel's own macros)."""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs.common import Kind

PATH = Path(__file__).parent / "data" / "encode-vectors.txt"
CONFIG_NAMES = {
    "MF": "CONFIG_MEMORY_FAILURE",
    "MIG": "CONFIG_MIGRATION",
    "DP": "CONFIG_DEVICE_PRIVATE",
    "PTEMARKER": "CONFIG_PTE_MARKER",
}


@dataclass(frozen=True)
class TypeVector:
    family: str
    enabled: frozenset[str]  # CONFIG_ names switched on
    defines: dict[str, int]  # SWP_* / MAX_SWAPFILES values


@dataclass(frozen=True)
class EncodeVector:
    title: str
    arch: str  # "x86_64", "arm64 6.1", "arm64 6.12/7.2", ...
    pte: int
    type: int
    offset: int


def type_vectors() -> list[TypeVector]:
    out: list[TypeVector] = []
    family = None
    for line in PATH.read_text().splitlines():
        if line.startswith("=== "):
            family = line[4:].strip()
            continue
        m = re.match(r"\[([A-Z,]*)\]: (.*)", line)
        if m and family:
            enabled = frozenset(CONFIG_NAMES[t] for t in m.group(1).split(",") if t)
            defines = {k: int(v) for k, v in re.findall(r"(\w+)=(\d+)", m.group(2))}
            out.append(TypeVector(family, enabled, defines))
    return out


def encode_vectors() -> list[EncodeVector]:
    out: list[EncodeVector] = []
    title = ""
    for line in PATH.read_text().splitlines():
        if line and not line.startswith(" ") and ": type=" in line:
            title = line.split(":")[0]
            continue
        m = re.match(r"\s+(\S+(?: [\d./]+)?)\s+pte=(0x[0-9a-f]+)\s+\(decode type=(\d+) off=(0x[0-9a-f]+)\)", line)
        if m:
            out.append(EncodeVector(title, m.group(1), int(m.group(2), 16), int(m.group(3)), int(m.group(4), 16)))
    return out


# The kind each swap.h type define names (include/linux/swap.h), for every release's carving.
KIND_OF_DEFINE = {
    "SWP_HWPOISON": Kind.HWPOISON,
    "SWP_MIGRATION_READ": Kind.MIGRATION_READ,
    "SWP_MIGRATION_READ_EXCLUSIVE": Kind.MIGRATION_READ_EXCLUSIVE,
    "SWP_MIGRATION_WRITE": Kind.MIGRATION_WRITE,
    "SWP_DEVICE_WRITE": Kind.DEVICE_PRIVATE_WRITE,
    "SWP_DEVICE_READ": Kind.DEVICE_PRIVATE_READ,
    "SWP_DEVICE_EXCLUSIVE": Kind.DEVICE_EXCLUSIVE,
    "SWP_DEVICE_EXCLUSIVE_WRITE": Kind.DEVICE_EXCLUSIVE,
    "SWP_DEVICE_EXCLUSIVE_READ": Kind.DEVICE_EXCLUSIVE,
    "SWP_PTE_MARKER": Kind.MARKER,
    "SWP_SWAPIN_ERROR": Kind.SWAPIN_ERROR,
}
