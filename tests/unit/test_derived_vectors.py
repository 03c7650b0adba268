"""ptinspect's decoders against the vectors compiled from each kernel's own macros.

Every tests/data/derived/*.json (made by `ptinspect vm derive`, re-derived in
tests/integration/test_derive.py) is checked through the public seams only:
build_facts() for the kernel, Arch.decode() for values, classify_type() for type numbers.
Each file, vector and check is its own case; expected values come from the JSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from ptinspect import archs
from ptinspect.archs.common import Decoded, Kind
from ptinspect.archs.softleaf import classify_type
from ptinspect.inspector.facts import build_facts
from tests.vectors import KIND_OF_DEFINE

DERIVED = Path(__file__).resolve().parents[1] / "data" / "derived"
DOCS = {path.stem: json.loads(path.read_text()) for path in sorted(DERIVED.glob("*.json"))}

# The kernel predicate of a swap PTE bit -> the macro names that bit has had (7.3 renamed *_UFFD_WP).
SWP_BIT_NAMES = {
    "pte_swp_exclusive": ("_PAGE_SWP_EXCLUSIVE", "PTE_SWP_EXCLUSIVE"),
    "pte_swp_soft_dirty": ("_PAGE_SWP_SOFT_DIRTY",),
    "pte_swp_uffd_wp": ("_PAGE_SWP_UFFD_WP", "PTE_SWP_UFFD_WP", "_PAGE_SWP_UFFD", "PTE_SWP_UFFD"),
    "pte_swp_uffd": ("_PAGE_SWP_UFFD_WP", "PTE_SWP_UFFD_WP", "_PAGE_SWP_UFFD", "PTE_SWP_UFFD"),
}
ACCESS = {"pte_write": "write", "pte_dirty": "dirty", "pte_young": "young"}


def _int(text: str | int) -> int:
    return text if isinstance(text, int) else int(text, 16)


def _bool_config(doc: dict) -> list[str]:
    """The derived kernel's boolean config as CONFIG_X=y|n (a type option absent from .config is off)."""
    out = []
    for name, value in doc["config"].items():
        if value in ("y", "m", "n"):
            out.append(f"{name}={'y' if value in ('y', 'm') else 'n'}")
        elif value is None and name in TYPE_OPTIONS:
            out.append(f"{name}=n")
    return out


TYPE_OPTIONS = ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE", "CONFIG_PTE_MARKER")


def _facts(doc: dict, config: list[str] | None = None):
    named = []
    if config is None:  # the configured kernel: its compile-time constants are facts about it
        for name in ("MAX_SWAPFILES", "MAX_PHYSMEM_BITS"):
            value = doc["constants"].get(name)
            if isinstance(value, str):
                named.append(f"{name}={_int(value)}")
    try:
        return build_facts(doc["arch"], kernel=doc["release"], config=_bool_config(doc) if config is None
                           else config, named=named)
    except ValueError as exc:
        pytest.fail(f"{doc['release']} ({doc['arch']}): ptinspect builds no facts for this release: {exc}")


def _mode(doc: dict):
    """The paging mode of the derived kernel: its PAGE_SHIFT; the default mode, else its VA_BITS
    (the plain mode where the kernel also runs one with LPA2)."""
    arch = archs.get_arch(doc["arch"])
    page_shift = _int(doc["constants"]["PAGE_SHIFT"])
    fits = [m for m in arch.modes() if m.page_shift == page_shift]
    assert fits, f"ptinspect has no {doc['arch']} paging mode with PAGE_SHIFT {page_shift}"
    va_bits = doc["config"].get("CONFIG_ARM64_VA_BITS")
    for mode in fits:
        if mode.name == arch.default_mode:
            return mode
    matching = [m for m in fits if va_bits and m.va_bits == int(va_bits)]
    assert matching, f"ptinspect has no {doc['arch']} mode for PAGE_SHIFT {page_shift} and VA_BITS {va_bits}"
    return min(matching, key=lambda m: len(m.options))  # the plain mode where there is one


def _decode(doc: dict, vector: dict) -> Decoded:
    arch = archs.get_arch(doc["arch"])
    mode = _mode(doc)
    depth = mode.level(vector["level"])
    return arch.decode(_int(vector["raw"]), depth, mode, _facts(doc))


def _configured_types(doc: dict) -> dict:
    """The types entry of the configured kernel's own config."""
    enabled = {name: doc["config"].get(name) in ("y", "m") for name in TYPE_OPTIONS}
    for entry in doc["types"]:
        if all(enabled[name] == on for name, on in entry["config"].items()):
            return entry
    raise AssertionError(f"no types entry for the kernel's config {enabled}")


def _expected_kind(doc: dict, vector: dict) -> Kind:
    decode = _predicates(vector)
    if decode.get("pte_none") is True and vector["level"] == "pte":
        return Kind.NONE
    if decode.get("pte_present") is True and vector["level"] == "pte":
        return Kind.PRESENT
    swp_type = decode["__swp_type"]
    entry = _configured_types(doc)
    if swp_type < entry["MAX_SWAPFILES"]:
        return Kind.SWAP
    names = [name for name, number in entry["defines"].items() if number == swp_type]
    assert names, f"type {swp_type} is not defined by the kernel"
    return KIND_OF_DEFINE[names[0]]


def _predicates(vector: dict) -> dict:
    """The vector's decode results with PMD predicates under their PTE names (pmd_present -> pte_present)."""
    return {(f"pte_{k[4:]}" if k.startswith("pmd_") else k): v for k, v in vector["decode"].items()}


def _flags(decoded: Decoded) -> set[str]:
    return set(decoded.flags) | set(decoded.softleaf.arch_flags if decoded.softleaf else ())


@dataclass(frozen=True)
class Case:
    doc: str
    vector: int
    check: str

    def __str__(self) -> str:
        return f"{self.doc}:{DOCS[self.doc]['vectors'][self.vector]['name']}:{self.check}"


def _cases() -> list[Case]:
    cases = []
    for stem, doc in DOCS.items():
        for index, vector in enumerate(doc.get("vectors") or ()):
            decode = _predicates(vector)
            checks = ["flag-names"]
            if isinstance(decode.get("__swp_type"), int) or decode.get("pte_none") is True \
                    or decode.get("pte_present") is True:
                checks.append("kind")
            # The kernel reads the swap fields only of entries that are neither none nor present.
            softleaf = decode.get("pte_none") is not True and decode.get("pte_present") is not True
            if softleaf and isinstance(decode.get("__swp_type"), int) and isinstance(decode.get("__swp_offset"), str):
                checks.append("type-offset")
                checks += [p for p in SWP_BIT_NAMES if isinstance(decode.get(p), bool)]
            checks += [p for p in ACCESS if isinstance(decode.get(p), bool) and decode.get("pte_present")]
            cases += [Case(stem, index, check) for check in checks]
    return cases


CASES = _cases()


# Every release 5.10..7.3 on every arch Debian builds it for (bookworm and bullseye have no riscv64).
EXPECTED = {f"{series}-{arch}" for series in ("5.10", "6.1", "6.12", "7.2", "7.3") for arch in ("x86_64", "arm64")}
EXPECTED |= {f"{series}-riscv64" for series in ("6.12", "7.2", "7.3")}


def test_derived_files_exist():
    assert not EXPECTED - set(DOCS), f"derived vectors missing: {sorted(EXPECTED - set(DOCS))}"


@pytest.mark.parametrize("case", CASES, ids=str)
def test_vector(case: Case) -> None:
    doc = DOCS[case.doc]
    vector = doc["vectors"][case.vector]
    decode = _predicates(vector)
    decoded = _decode(doc, vector)
    what = f"{doc['release']} {vector['name']} raw={vector['raw']}"
    if case.check == "kind":
        expected = _expected_kind(doc, vector)
        assert decoded.kind is expected, (f"{what}: the kernel makes this {expected.value}, "
                                          f"ptinspect says {decoded.kind.value} ({decoded.reason})")
    elif case.check == "type-offset":
        got = (decoded.softleaf.type, decoded.softleaf.offset) if decoded.softleaf else None
        want = (decode["__swp_type"], _int(decode["__swp_offset"]))
        assert got == want, (f"{what}: kernel __swp_type/__swp_offset = {want[0]}/{want[1]:#x}, ptinspect "
                             f"{'no softleaf (' + decoded.kind.value + ')' if got is None else f'{got[0]}/{got[1]:#x}'}")
    elif case.check in SWP_BIT_NAMES:
        names = {n for n in SWP_BIT_NAMES[case.check] if isinstance(doc["constants"].get(n), str)}
        shown = _flags(decoded) & names
        assert bool(shown) == decode[case.check], (
            f"{what}: kernel {case.check}() = {decode[case.check]}, ptinspect names "
            f"{sorted(shown) or 'none'} of {sorted(names) or 'no defined bit'} (flags {sorted(_flags(decoded))})")
    elif case.check in ACCESS:
        assert decoded.access is not None, f"{what}: kernel pte_present, ptinspect gives no access view"
        got = getattr(decoded.access, ACCESS[case.check])
        assert got == decode[case.check], f"{what}: kernel {case.check}() = {decode[case.check]}, ptinspect {got}"
    elif case.check == "flag-names":
        raw = _int(vector["raw"])
        for flag in sorted(_flags(decoded)):
            if flag not in doc["constants"]:
                continue  # not a macro the derived list covers
            value = doc["constants"][flag]
            assert value is not None, f"{what}: ptinspect names {flag}, which {doc['release']} does not define"
            if isinstance(value, str):
                assert raw & _int(value), f"{what}: ptinspect names {flag} ({value}) but that bit is clear"


TYPE_CASES = [(stem, index) for stem, doc in DOCS.items() for index in range(len(doc["types"]))]


def _type_id(case: tuple[str, int]) -> str:
    stem, index = case
    enabled = [k.removeprefix("CONFIG_") for k, v in DOCS[stem]["types"][index]["config"].items() if v]
    return f"{stem}:{'+'.join(enabled) or 'none'}"


@pytest.mark.parametrize("case", TYPE_CASES, ids=_type_id)
def test_types(case: tuple[str, int]) -> None:
    stem, index = case
    doc = DOCS[stem]
    entry = doc["types"][index]
    facts = _facts(doc, [f"{k}={'y' if v else 'n'}" for k, v in entry["config"].items()])
    wrong = []
    for swp_type in range(32):
        names = [name for name, number in entry["defines"].items() if number == swp_type]
        expected = Kind.SWAP if swp_type < entry["MAX_SWAPFILES"] else (
            KIND_OF_DEFINE[names[0]] if names else Kind.UNKNOWN)
        got = classify_type(swp_type, facts)
        if got.kind is not expected:
            wrong.append(f"type {swp_type}: kernel {names[0] if names else expected.value}, "
                         f"ptinspect {got.kind.value} ({got.reason})")
    assert not wrong, f"{doc['release']} {entry['config']}:\n" + "\n".join(wrong)


def test_types_agree_with_encode_vectors():
    """The derived carving of 6.1/6.12/7.2 is the TYPES section of encode-vectors.txt."""
    from tests.vectors import type_vectors

    reference: dict[str, dict] = {}
    for v in type_vectors():
        reference.setdefault(v.family, {})[v.enabled] = v.defines
    compared = 0
    for stem, doc in DOCS.items():
        if doc["series"] not in reference:
            continue
        derived = {frozenset(k for k, on in e["config"].items() if on): {"MAX_SWAPFILES": e["MAX_SWAPFILES"],
                                                                         **e["defines"]} for e in doc["types"]}
        assert derived == reference[doc["series"]], f"{stem}: derived types differ from encode-vectors.txt"
        compared += 1
    assert compared, "no derived file of 6.1, 6.12 or 7.2 to compare"
