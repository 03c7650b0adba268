"""Build KernelFacts from what a user says (release, config options, named facts)."""
from __future__ import annotations

import gzip
from pathlib import Path
from typing import Iterable

from archs.common import Fact, KernelFacts
from archs.softleaf import FAMILIES, family_of_release


def parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("y", "yes", "1", "true", "on", "m"):
        return True
    if t in ("n", "no", "0", "false", "off"):
        return False
    raise ValueError(f"{text!r} is not a yes/no value (use y or n)")


def parse_value(text: str) -> object:
    """A fact value: an integer (0x.. allowed) or a yes/no."""
    try:
        return int(text, 0)
    except ValueError:
        return parse_bool(text)


def read_config_file(path: Path) -> dict[str, bool]:
    """CONFIG_ options from a kernel .config (or config.gz): =y/=m true, 'is not set' false."""
    raw = path.read_bytes()
    text = (gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw).decode(errors="replace")
    return parse_config_text(text)


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
) -> KernelFacts:
    """KernelFacts for `arch` from a release or family (`kernel`), CONFIG_X=y pairs, a config
    file, and NAME=VALUE facts; raises ValueError with a user-facing message."""
    family = None
    if kernel is not None:
        family = kernel if kernel in FAMILIES else family_of_release(kernel, arch)
        if family is None:
            raise ValueError(
                f"no transcribed page-table layout matches kernel {kernel!r} on {arch} "
                f"(see archs/VERSIONS.md); pass the family to decode with: --kernel {{{','.join(FAMILIES)}}}"
            )
    facts: dict[str, Fact] = {}
    if config_file is not None:
        for name, value in read_config_file(config_file).items():
            facts[name] = Fact(value, f"config file {config_file}")
    for item in config:
        name, sep, value = item.partition("=")
        if not sep or not name.startswith("CONFIG_"):
            raise ValueError(f"--config takes CONFIG_NAME=y|n, not {item!r}")
        facts[name] = Fact(parse_bool(value), "user")
    for item in named:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ValueError(f"--fact takes NAME=VALUE, not {item!r}")
        facts[name] = Fact(parse_value(value), "user")
    release = kernel if kernel is not None and kernel not in FAMILIES else None
    return KernelFacts(family=family, release=release, facts=facts)
