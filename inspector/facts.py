"""Build KernelFacts from what a user says (release, pinned layout, config options, named facts).

Every value is checked against its meaning before it can shape a decode: an unknown fact name,
an impossible number or a config file with no CONFIG_ line is refused with the input named.
"""
from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ptinspect.archs.common import Fact, KernelFacts
from ptinspect.archs.versions import release_layout

MASK64 = (1 << 64) - 1


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("y", "yes", "1", "true", "on", "m"):
        return True
    if t in ("n", "no", "0", "false", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use y or n)")


@dataclass(frozen=True)
class NamedFact:
    """What a named fact means and which values it can take."""

    meaning: str
    kind: type  # int or bool
    low: int = 0
    high: int = MASK64


# The facts decoders read (KernelFacts.get), with the range the kernel allows for each.
NAMED_FACTS: dict[str, NamedFact] = {
    # MAX_SWAPFILES = 32 minus the special types (include/linux/swap.h): at least 32 - 10 special.
    "MAX_SWAPFILES": NamedFact("the bound of swap_info[]", int, 1, 32),
    "nr_swapfiles": NamedFact("swap areas ever activated (mm/swapfile.c)", int, 0, 32),
    # PAGE_SHIFT (12) < MAX_PHYSMEM_BITS <= 56 (riscv Sv57; x86 and arm64 stop at 52).
    "MAX_PHYSMEM_BITS": NamedFact("SWP_PFN_BITS + PAGE_SHIFT (asm/sparsemem.h)", int, 32, 56),
    "phys_addr_bits": NamedFact("the CPU's physical-address width", int, 32, 56),
    "physical_mask": NamedFact("x86 physical_mask (SME/TDX narrow it)", int),
    "IA32_PAT": NamedFact("the x86 PAT MSR", int),
    "MAIR_EL1": NamedFact("the arm64 MAIR_EL1 register", int),
    "X86_FEATURE_SHSTK": NamedFact("x86 shadow stacks enabled", bool),
    "swap_migration_ad_supported": NamedFact("migration entries keep young/dirty", bool),
    "svrsw60t59b": NamedFact("RISC-V Svrsw60t59b (soft-dirty/uffd bits 59/60)", bool),
    "thead_mae": NamedFact("T-Head memory attribute extension", bool),
}


def parse_fact(item: str) -> tuple[str, object]:
    """NAME=VALUE of --fact, checked against NAMED_FACTS."""
    name, sep, text = item.partition("=")
    if not sep or not name:
        raise ValueError(f"--fact takes NAME=VALUE, not {item!r}")
    spec = NAMED_FACTS.get(name)
    if spec is None:
        raise ValueError(f"--fact {item!r}: unknown fact {name!r}; known facts: {', '.join(sorted(NAMED_FACTS))}")
    if spec.kind is bool:
        try:
            return name, parse_bool(text)
        except ValueError as exc:
            raise ValueError(f"--fact {item!r}: {exc}") from None
    try:
        value = int(text, 0)
    except ValueError:
        raise ValueError(f"--fact {item!r}: {name} ({spec.meaning}) takes an integer") from None
    if not spec.low <= value <= spec.high:
        high = f"{spec.high:#x}" if spec.high == MASK64 else str(spec.high)
        raise ValueError(f"--fact {item!r}: {name} ({spec.meaning}) must be between {spec.low} and {high}")
    return name, value


_CONFIGS: dict[tuple[str, int, int], dict[str, bool]] = {}  # (path, size, mtime) -> options, parsed once
CONFIGS_KEPT = 8


def read_config_file(path: Path) -> dict[str, bool]:
    """CONFIG_ options from a kernel .config (or config.gz): =y/=m true, 'is not set' false.
    ValueError naming the file when it is not a kernel config.  An unchanged file is parsed once
    per process (gdb's `pt` commands open a session at every stop)."""
    try:
        st = path.stat()
        key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    except OSError:
        key = None
    if key is not None and key in _CONFIGS:
        return dict(_CONFIGS[key])
    try:
        raw = path.read_bytes()
        text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode("utf-8")
    except (OSError, EOFError, zlib.error, gzip.BadGzipFile, UnicodeDecodeError) as exc:
        raise ValueError(f"--config-file {path}: not a readable kernel config ({exc})") from None
    options = parse_config_text(text)
    if not options:
        raise ValueError(f"--config-file {path}: no CONFIG_ lines; give the kernel's .config or /proc/config.gz")
    if key is not None:
        if len(_CONFIGS) >= CONFIGS_KEPT:
            _CONFIGS.clear()
        _CONFIGS[key] = options
    return dict(options)


def parse_config_text(text: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("# CONFIG_") and line.endswith(" is not set"):
            out[line[2:].split()[0]] = False
        elif line.startswith("CONFIG_") and "=" in line:
            name, value = line.split("=", 1)
            out[name] = value in ("y", "m")
    return out


def build_facts(
    arch: str,
    kernel: str | None,
    config: Iterable[str] = (),
    config_file: Path | None = None,
    named: Iterable[str] = (),
    pin: str | None = None,
) -> KernelFacts:
    """KernelFacts for `arch` from a release (`kernel`), a pinned layout (`pin`), CONFIG_X=y pairs,
    a config file, and NAME=VALUE facts; raises ValueError with a user-facing message."""
    layout = None
    if kernel is not None or pin is not None:
        layout = release_layout(kernel or pin or "", arch, pin)
    facts: dict[str, Fact] = {}
    if config_file is not None:
        for option, on in read_config_file(config_file).items():
            facts[option] = Fact(on, f"config file {config_file}")
    for item in config:
        option, sep, text = item.partition("=")
        if not sep or not option.startswith("CONFIG_") or len(option) <= len("CONFIG_"):
            raise ValueError(f"--config takes CONFIG_NAME=y|n, not {item!r}")
        try:
            facts[option] = Fact(parse_bool(text), "user")
        except ValueError as exc:
            raise ValueError(f"--config {item!r}: {exc}") from None
    for item in named:
        name, value = parse_fact(item)
        facts[name] = Fact(value, "user")
    return KernelFacts(layout=layout, release=kernel, facts=facts)
