"""The ptinspect.snapshot/1 document checked whole when it is read: schema, types and ranges.

A snapshot is input like any other: an entry whose index lies outside its table, a raw value
beyond 64 bits, a float where an integer belongs or an unknown level would otherwise be walked,
diffed or validated as if it were a fact.  Every field the commands use is checked here, and a
wrong one is named by its path (`entries[12].index`) with what is wrong with it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ptinspect.archs import ARCH_NAMES, get_arch
from ptinspect.archs.common import Arch, Fact, KernelFacts, Kind, PagingMode
from ptinspect.archs.versions import recorded_layout

from .kernel import Vma
from .records import SCHEMA

HEX = re.compile(r"0x[0-9a-fA-F]+\Z")
U64 = 1 << 64
KINDS = frozenset(k.value for k in Kind)
ACCESS = ("read", "write", "exec", "user", "young", "dirty")


class SchemaError(ValueError):
    """A document that is not a well-formed ptinspect.snapshot/1 snapshot."""


@dataclass(frozen=True)
class Checked:
    """What a checked document says, in Python values."""

    target: dict[str, Any]
    records: list[dict[str, Any]]
    arch: Arch
    mode: PagingMode
    facts: KernelFacts
    root: int
    upper: bool
    process: bool
    va_range: tuple[int, int] | None
    ram: list[tuple[int, int]] | None  # memblock.memory when recorded
    vmas: tuple[Vma, ...] | None  # the process's VMAs when recorded
    device_private: list[tuple[int, int]] | None  # device-private memory (inspector/devmem.py) when recorded


def _short(value: Any) -> str:
    """A value as the message shows it: at most 60 characters."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**40 else f"a {len(str(value))}-digit number"
    return text[:60] + "..." if len(text) > 60 else text


def _fail(where: str, value: Any, wanted: str) -> SchemaError:
    return SchemaError(f"{where} is {_short(value)}, not {wanted}")


def _hex(value: Any, where: str, limit: int = U64) -> int:
    """A 0x-prefixed hex string below `limit` (records write addresses and values so)."""
    if not isinstance(value, str) or not HEX.match(value):
        raise _fail(where, value, "a 0x-prefixed hex number")
    number = int(value, 16)
    if number >= limit:
        raise SchemaError(f"{where} is {_short(value)}, beyond {limit.bit_length() - 1} bits")
    return number


def _int(value: Any, where: str, lo: int, hi: int) -> int:
    """A JSON integer (not a float, not a boolean) in [lo, hi]."""
    if type(value) is not int:
        raise _fail(where, value, "an integer")
    if not lo <= value <= hi:
        raise SchemaError(f"{where} is {_short(value)}, outside {lo}..{hi}")
    return value


def _type(value: Any, kind: type, where: str, wanted: str) -> Any:
    if not isinstance(value, kind):
        raise _fail(where, value, wanted)
    return value


def _strings(value: Any, where: str, key: str) -> None:
    """A list of names (`where`.`key`; the path is only spelled out when it is wrong)."""
    if type(value) is list and all(type(item) is str for item in value):
        return
    _type(value, list, f"{where}.{key}", "a list of names")
    for i, item in enumerate(value):
        _type(item, str, f"{where}.{key}[{i}]", "a name")


def _scalars(value: Any, where: str) -> None:
    """A flat object of JSON scalars (decoded fields and details)."""
    if type(value) is dict and all(v is None or type(v) in (str, int, float, bool) for v in value.values()):
        return
    _type(value, dict, where, "an object")
    for key, item in value.items():
        if item is not None and not isinstance(item, (str, int, float, bool)):
            raise _fail(f"{where}.{key}", item, "a plain value")


def _need(obj: dict[str, Any], key: str, where: str) -> Any:
    if key not in obj:
        raise SchemaError(f"{where} has no {key!r}")
    return obj[key]


def check_document(doc: Any) -> Checked:
    """The document's target and entries, every field checked; SchemaError naming the first wrong one."""
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise SchemaError(f"not a {SCHEMA} document (its \"schema\" field must say so)")
    target = _type(_need(doc, "target", "the document"), dict, "target", "an object")
    records = _type(_need(doc, "entries", "the document"), list, "entries", "a list")
    arch_name = _need(target, "arch", "target")
    if type(arch_name) is not str or arch_name not in ARCH_NAMES:
        raise _fail("target.arch", arch_name, f"one of {', '.join(ARCH_NAMES)}")
    arch = get_arch(arch_name)
    paging = _type(_need(target, "paging", "target"), dict, "target.paging", "an object")
    mode_name = _type(_need(paging, "mode", "target.paging"), str, "target.paging.mode", "a mode name")
    try:
        mode = arch.mode(mode_name)
    except (KeyError, ValueError):
        raise _fail("target.paging.mode", mode_name, f"a {arch.name} paging mode") from None
    root = _hex(_need(target, "root", "target"), "target.root", 1 << mode.pa_bits)
    flags = {}
    for key in ("upper", "process"):
        flags[key] = _type(target.get(key, False), bool, f"target.{key}", "true or false")
    for key in ("layout", "layout_assumed", "kernel_release", "root_label", "source"):
        if target.get(key) is not None:
            _type(target[key], str, f"target.{key}", "a string")
    facts = {}
    for key, fact in _type(target.get("facts", {}), dict, "target.facts", "an object").items():
        where = f"target.facts.{key}"
        _type(fact, dict, where, "an object with value and source")
        value = _need(fact, "value", where)
        if value is not None and not isinstance(value, (bool, int, str)):
            raise _fail(f"{where}.value", value, "a boolean, integer or string")
        facts[key] = Fact(value, _type(_need(fact, "source", where), str, f"{where}.source", "a string"))
    selection = _type(target.get("selection", {}), dict, "target.selection", "an object")
    _check_selection(selection)
    va_range = None
    if selection.get("va_range") is not None:
        rng = _type(selection["va_range"], list, "target.selection.va_range", "[START, END]")
        if len(rng) != 2:
            raise _fail("target.selection.va_range", rng, "[START, END]")
        va_range = (_hex(rng[0], "target.selection.va_range[0]"), _hex(rng[1], "target.selection.va_range[1]", U64 + 1))
        if not va_range[0] < va_range[1]:
            raise SchemaError(f"target.selection.va_range {rng} is empty")
    ram = None
    if target.get("ram") is not None:
        ram_rec = _type(target["ram"], dict, "target.ram", "an object")
        ram = _ranges(_need(ram_rec, "ranges", "target.ram"), "target.ram.ranges")
    device_private = None
    if target.get("device_private") is not None:
        dev_rec = _type(target["device_private"], dict, "target.device_private", "an object")
        if dev_rec.get("ranges") is not None:
            device_private = _ranges(dev_rec["ranges"], "target.device_private.ranges")
    vmas = None
    if target.get("vmas") is not None:
        vmas = tuple(_vma(v, f"target.vmas[{i}]")
                     for i, v in enumerate(_type(target["vmas"], list, "target.vmas", "a list")))
    levels = {lvl.name: lvl for lvl in mode.levels}
    table_limit = 1 << mode.pa_bits
    for i, rec in enumerate(records):
        _check_entry(rec, f"entries[{i}]", arch, mode, levels, table_limit)
    try:
        layout = recorded_layout(arch.name, target.get("layout"), target.get("kernel_release"),
                                 target.get("layout_assumed"))
    except ValueError as exc:
        raise SchemaError(f"target.layout: {exc}") from None
    kfacts = KernelFacts(layout=layout, release=target.get("kernel_release"), facts=facts)
    return Checked(target, records, arch, mode, kfacts, root, flags["upper"], flags["process"], va_range, ram, vmas,
                   device_private)


def _ranges(value: Any, where: str) -> list[tuple[int, int]]:
    """A list of non-empty [START, END) physical ranges."""
    out = []
    for i, pair in enumerate(_type(value, list, where, "a list")):
        at = f"{where}[{i}]"
        if not isinstance(pair, list) or len(pair) != 2:
            raise _fail(at, pair, "[START, END]")
        lo, hi = _hex(pair[0], f"{at}[0]"), _hex(pair[1], f"{at}[1]", U64 + 1)
        if not lo < hi:
            raise SchemaError(f"{at} {pair} is empty")
        out.append((lo, hi))
    return out


def _check_selection(sel: dict[str, Any]) -> None:
    """The fields `diff` and `validate` act on: the root options a live side repeats."""
    for key, kind, wanted in (("comm", str, "a command name"),
                              ("root", str, "a physical address"), ("kernel", bool, "true or false"),
                              ("upper", bool, "true or false"), ("merged", bool, "true or false"),
                              ("tables", bool, "true or false")):
        if sel.get(key) is not None:
            _type(sel[key], kind, f"target.selection.{key}", wanted)
    if sel.get("pid") is not None:
        _int(sel["pid"], "target.selection.pid", 0, 1 << 31)
    if sel.get("root") is not None:
        _hex(sel["root"], "target.selection.root")
    if sel.get("kinds") is not None:
        _strings(sel["kinds"], "target.selection", "kinds")


def _vma(v: Any, where: str) -> Vma:
    _type(v, dict, where, "an object")
    start, end = _hex(_need(v, "start", where), f"{where}.start"), _hex(_need(v, "end", where), f"{where}.end", U64 + 1)
    if not start < end:
        raise SchemaError(f"{where} {v.get('start')}-{v.get('end')} is empty")
    return Vma(start, end, _hex(_need(v, "flags", where), f"{where}.flags"),
               _type(_need(v, "name", where), str, f"{where}.name", "a string"))


def _check_entry(rec: Any, where: str, arch: Arch, mode: PagingMode, levels: dict, table_limit: int) -> None:
    """One entry record: location (table, index within the level's table, VA aligned to the
    level's span and canonical), raw value, kind, and the decoded fields diff compares.
    The common case is tested inline (a snapshot holds up to millions of entries); a
    failing field is then named by the helpers."""
    if type(rec) is not dict:
        raise _fail(where, rec, "an entry object")
    level_name = rec.get("level")
    level = levels.get(level_name) if type(level_name) is str else None
    if level is None:
        raise _fail(f"{where}.level", rec.get("level"), f"a {mode.name} level ({', '.join(levels)})")
    fields: Any = rec  # JSON values of any type, each checked below
    table, index, raw, va, size = (fields.get("table"), fields.get("index"), fields.get("raw"), fields.get("va"),
                                   fields.get("size"))
    if not (type(table) is str and HEX.match(table) and int(table, 16) < table_limit):
        _hex(_need(rec, "table", where), f"{where}.table", table_limit)
    if not (type(index) is int and 0 <= index < level.entries):
        _int(_need(rec, "index", where), f"{where}.index", 0, level.entries - 1)
    if not (type(raw) is str and HEX.match(raw) and len(raw) <= 18):
        _hex(_need(rec, "raw", where), f"{where}.raw")
    if not (type(va) is str and HEX.match(va) and len(va) <= 18):
        _hex(_need(rec, "va", where), f"{where}.va")
    number = int(va, 16)
    if number & (level.span - 1):
        raise SchemaError(f"{where}.va {va} is not aligned to the {level.name} span ({level.span:#x})")
    if arch.canonical(mode, number & ((1 << mode.va_bits) - 1), in_upper(mode, number)) != number:
        raise SchemaError(f"{where}.va {va} is not a canonical {arch.name} {mode.name} address")
    if type(rec.get("kind")) is not str or rec["kind"] not in KINDS:
        raise _fail(f"{where}.kind", _need(rec, "kind", where), "an entry kind")
    if size != level.span or type(size) is not int:
        _int(_need(rec, "size", where), f"{where}.size", 1, U64)
        raise SchemaError(f"{where}.size is {size}, not the {level.name} span {level.span}")
    for key in ("pfn", "next_table"):
        value = rec.get(key)
        if value is not None and not (type(value) is str and HEX.match(value) and len(value) <= 18):
            _hex(value, f"{where}.{key}")
    _strings(rec.get("flags", []), where, "flags")
    for key in ("markers", "notes"):
        if key in rec:
            _strings(rec[key], where, key)
    for key in ("fields", "details"):
        if key in rec:
            _scalars(rec[key], f"{where}.{key}")
    if rec.get("access") is not None:
        access = rec["access"]
        if not (type(access) is dict and all(type(access.get(k)) is bool for k in ACCESS)):
            _type(access, dict, f"{where}.access", "an object")
            for key in ACCESS:
                _type(_need(access, key, f"{where}.access"), bool, f"{where}.access.{key}", "true or false")
    if rec.get("softleaf") is not None:
        sl = _type(rec["softleaf"], dict, f"{where}.softleaf", "an object")
        _int(_need(sl, "type", f"{where}.softleaf"), f"{where}.softleaf.type", 0, 255)
        _hex(_need(sl, "offset", f"{where}.softleaf"), f"{where}.softleaf.offset")
        _strings(sl.get("flags", []), f"{where}.softleaf", "flags")
    if rec.get("cont") is not None:
        cont = _type(rec["cont"], dict, f"{where}.cont", "an object")
        _type(_need(cont, "scheme", f"{where}.cont"), str, f"{where}.cont.scheme", "a name")
        _int(_need(cont, "entries", f"{where}.cont"), f"{where}.cont.entries", 1, level.entries)
    if rec.get("vma") is not None:
        _vma(rec["vma"], f"{where}.vma")
    if rec.get("range") is not None:
        rng = _type(rec["range"], dict, f"{where}.range", "an object")
        _hex(_need(rng, "end", f"{where}.range"), f"{where}.range.end", U64 + 1)
        _int(_need(rng, "entries", f"{where}.range"), f"{where}.range.entries", 1, U64)


def in_upper(mode: PagingMode, va: int) -> bool:
    """Whether a 64-bit VA's bits above the mode's VA width are set (the upper half's form)."""
    return va >> mode.va_bits != 0
