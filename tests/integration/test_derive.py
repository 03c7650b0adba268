"""Every committed tests/data/derived/*.json is what `ptinspect vm derive` makes from Debian's headers.

Re-derives each file from its packages (downloaded through the private apt state, cached) with the
cross compilers and compares: the stored vectors are the kernel's own output, not edited by hand.
A package that cannot be had is a failure, not a skip.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from ptinspect.inspector.vm import VMError, derive

DERIVED = Path(__file__).resolve().parents[1] / "data" / "derived"
FILES = sorted(DERIVED.glob("*.json"))


def test_there_are_derived_files():
    assert FILES, f"no derived vectors in {DERIVED}"


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_rederive_matches_committed(path: Path) -> None:
    stored = json.loads(path.read_text())
    assert path.name == derive.output_name(stored["series"], stored["arch"], stored["flavour"])
    # A file made from a source tree (where the archive serves no headers) is re-derived from that tree.
    tree = stored["source"].get("tree")
    assert tree or stored["source"].get("packages"), f"{path.name}: no source recorded"
    if tree and not Path(tree).is_dir():
        pytest.fail(f"{path.name} was derived from the source tree {tree}, which is not here")
    try:
        fresh = derive.run(stored["series"], stored["arch"], stored["flavour"], Path(tree) if tree else None)
    except VMError as exc:
        pytest.fail(f"cannot re-derive {path.name}: {exc}")
    fresh = json.loads(derive.dump(fresh))
    assert fresh["source"] == stored["source"], (
        f"{path.name}: the source is now {fresh['source']}, the file was made from {stored['source']}; "
        f"regenerate it (tests/data/README.md)")
    for part in ("release", "compiler", "config", "types", "constants", "vectors", "not_derivable"):
        assert fresh.get(part) == stored.get(part), f"{path.name}: re-derived {part} differs from the committed file"
    assert fresh == stored
