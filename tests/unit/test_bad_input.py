"""Corrupted real inputs: snapshots written by ptinspect's own writer from model-built tables, and
vmcore/kdump files built as QEMU writes them, damaged field by field.

The rule each case asserts: the command exits 2 (diff, validate) or non-zero (dump) with one
error line that names the file and no traceback, or it gives the answer the intact input gives;
never exit 0 with another answer.
"""
from __future__ import annotations

import copy
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ptinspect.commands.cli import main
from ptinspect.inspector.kdumppages import KdumpReader
from ptinspect.inspector.reader import ReadError
from ptinspect.inspector.session import Session
from ptinspect.inspector.snapshot import write_snapshot
from ptinspect.inspector.vmcorefile import DumpError, identify

from .test_drgn_targets import elf_core, kdump
from .test_snapshot import X86_MAPPINGS, X86_VMAS, model_snapshot

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """A snapshot file of model-built x86-64 tables (that validates) and its document."""
    snap = model_snapshot("x86_64", "4-level", X86_MAPPINGS, X86_VMAS)
    path = tmp_path_factory.mktemp("snap") / "good.json"
    path.write_text(json.dumps({"schema": "ptinspect.snapshot/1", "target": snap.target, "entries": snap.records}))
    code, _, err = invoke("validate", str(path))
    assert code == 0, err
    return path, json.loads(path.read_text())


def test_the_writer_output_is_read_back(tmp_path: Path) -> None:
    """The schema check accepts what write_snapshot itself writes (its streamed run records too)."""
    snap = model_snapshot("x86_64", "4-level", X86_MAPPINGS, X86_VMAS)
    memory = snap.memory()
    session = Session(memory, snap.arch, {}, "model", facts=snap.facts)
    from ptinspect.inspector.session import Root

    root = Root(snap.root, snap.mode, snap.upper, snap.label, snap.vmas or (), process=snap.process)
    n = write_snapshot(tmp_path / "w.json", session, root, {"pid": 1}, snap.va_range)
    code, _, err = invoke("validate", str(tmp_path / "w.json"))
    assert n > 0 and code in (0, 1), err


# Values no structural field may hold: wrong types, negative or beyond-64-bit numbers, hex that is not.
JUNK = st.one_of(st.none(), st.booleans(), st.integers(max_value=-1), st.integers(min_value=1 << 64),
                 st.floats(allow_nan=False), st.just([]), st.just({}), st.just([[]]),
                 st.sampled_from(["", "0x", "0x1g", "0x" + "f" * 17, "-0x1", " 0x10", "0x1_0", "NaN", "pgd5",
                                  "\udcff", "x86_65"]))
ENTRY_FIELDS = ("va", "table", "index", "raw", "level", "kind", "size")
TARGET_PATHS = [("target",), ("target", "arch"), ("target", "root"), ("target", "paging"),
                ("target", "paging", "mode"), ("target", "upper"), ("target", "process")]


def _set(doc: Any, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        doc = doc[key]
    doc[path[-1]] = value


@FUZZ
@given(data=st.data())
def test_a_corrupted_structural_field_is_refused_by_name(written, tmp_path_factory, data: st.DataObject) -> None:
    """Every field the walk, diff and validation rest on, set to a value it can never hold: exit 2
    with one line naming the file, never a traceback, never an answer."""
    path, doc = written
    bad = copy.deepcopy(doc)
    where = data.draw(st.one_of(st.sampled_from(TARGET_PATHS),
                                st.tuples(st.just("entries"), st.integers(0, len(bad["entries"]) - 1),
                                          st.sampled_from(ENTRY_FIELDS))))
    flag = where[-1] in ("upper", "process")  # true and false are what these hold
    _set(bad, where, data.draw(JUNK.filter(lambda v: not (flag and isinstance(v, bool)))))
    out = tmp_path_factory.mktemp("bad") / "bad.json"
    out.write_text(json.dumps(bad))
    for args in (["validate", str(out)], ["diff", str(path), str(out)]):
        code, _, err = invoke(*args)
        errors = [line for line in err.splitlines() if line.startswith("Error:")]
        assert code == 2 and "Traceback" not in err and len(errors) == 1 and str(out) in errors[0], (where, err)


@pytest.mark.parametrize("field,value,expect", [
    ("index", -1, "entries[3].index is -1"), ("index", 10 ** 400, "a 401-digit number"),
    ("index", 3.0, "is 3.0, not an integer"), ("index", True, "not an integer"),
    ("raw", hex(1 << 64), "beyond 64 bits"), ("raw", 5, "not a 0x-prefixed hex number"),
    ("level", "pgd5", "not a 4-level level"), ("va", "0x0000900000000000", "not a canonical"),
    ("kind", "gone", "not an entry kind"), ("table", hex(1 << 60), "beyond 52 bits"),
])
def test_an_impossible_entry_names_file_entry_and_field(written, tmp_path: Path, field: str, value: Any,
                                                         expect: str) -> None:
    path, doc = written
    bad = copy.deepcopy(doc)
    bad["entries"][3][field] = value
    out = tmp_path / "bad.json"
    out.write_text(json.dumps(bad))
    for args in (["validate", str(out)], ["diff", str(path), str(out)]):
        code, _, err = invoke(*args)
        assert code == 2 and f"{out}: " in err and expect in err and "Traceback" not in err, err


@pytest.mark.parametrize("text", [b"[" * 100000 + b"]" * 100000, bytes(range(256)) * 64,
                                  b'{"schema": "ptinspect.snapshot/1", "target": NaN}', b"\xef\xbb\xbf{}", b""],
                         ids=["deep", "binary", "nan", "bom", "empty"])
def test_a_file_that_is_no_snapshot_is_named(written, tmp_path: Path, text: bytes) -> None:
    out = tmp_path / "junk.json"
    out.write_bytes(text)
    for args in (["validate", str(out)], ["diff", str(written[0]), str(out)]):
        code, _, err = invoke(*args)
        assert code == 2 and str(out) in err and "Traceback" not in err and "codec" not in err, err


def test_a_slot_given_two_values_is_refused(written, tmp_path: Path) -> None:
    _, doc = written
    bad = copy.deepcopy(doc)
    twin = copy.deepcopy(next(r for r in bad["entries"] if r["kind"] == "present"))
    twin["raw"] = hex(int(twin["raw"], 16) ^ 0x2)
    bad["entries"].append(twin)
    out = tmp_path / "twin.json"
    out.write_text(json.dumps(bad))
    code, _, err = invoke("validate", str(out))
    assert code == 2 and "but an earlier entry gives it" in err, err


# ----------------------------------------------------------------------------- vmcore headers

def _corrupt(data: bytes, st_data: st.DataObject, header_bytes: int) -> bytes:
    out = bytearray(data)
    for _ in range(st_data.draw(st.integers(1, 6))):
        at = st_data.draw(st.integers(0, min(header_bytes, len(out)) - 8)) & ~3
        width = st_data.draw(st.sampled_from([1, 4, 8]))
        value = st_data.draw(st.one_of(st.integers(0, (1 << 8 * width) - 1),
                                       st.sampled_from([0, (1 << 8 * width) - 1, 1 << (8 * width - 1)])))
        out[at:at + width] = value.to_bytes(width, "little")
    if st_data.draw(st.booleans()):
        out = out[:st_data.draw(st.integers(0, len(out)))]
    return bytes(out)


def _read_all(path: Path) -> None:
    """identify() and (kdump) every page read: DumpError or ReadError only."""
    try:
        dump = identify(path)
    except DumpError as exc:
        assert str(path) in str(exc)
        return
    if dump.kdump is not None:
        reader = KdumpReader(dump)
        try:
            for start, end in dump.ram[:4]:
                try:
                    reader.read(start, min(end - start, 4096))
                except ReadError as exc:
                    assert str(path) in str(exc)
        finally:
            reader.close()


@pytest.fixture(scope="module")
def dumps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    at = tmp_path_factory.mktemp("dumps")
    return {"elf": elf_core(at / "elf").read_bytes(), "kdump": kdump(at / "kdump").read_bytes(),
            "kdump-64k": kdump(at / "k64", block=65536, compress=True).read_bytes(),
            "flattened": kdump(at / "flat", flattened=True).read_bytes()}


@FUZZ
@given(data=st.data(), kind=st.sampled_from(["elf", "kdump", "kdump-64k", "flattened"]))
def test_corrupted_dump_headers_are_refused_by_name(dumps, tmp_path_factory, data: st.DataObject, kind: str) -> None:
    headers = {"elf": 64 + 2 * 56, "kdump": 5 * 4096 + 16 * 24, "kdump-64k": 5 * 65536 + 24,
               "flattened": 4096 + 16 + 5 * 4096}[kind]
    path = tmp_path_factory.mktemp("bad") / "core"
    path.write_bytes(_corrupt(dumps[kind], data, headers))
    _read_all(path)


@pytest.mark.parametrize("field,value", [(440, 0xFFFFFFFF), (436, 0xFFFFFFFF), (432, 0x7FFFFFFF)],
                         ids=["max_mapnr", "bitmap_blocks", "sub_hdr_size"])
def test_absurd_kdump_header_fields(dumps, tmp_path: Path, field: int, value: int) -> None:
    """Huge header values: a clear error (the file is damaged) through the CLI, never a traceback."""
    data = bytearray(dumps["kdump"])
    data[field:field + 4] = struct.pack("<I", value)
    path = tmp_path / "core"
    path.write_bytes(bytes(data))
    code, _, err = invoke("validate", "--vmcore", str(path), "--kernel")
    assert "Traceback" not in err and (code == 0 or (code == 2 and str(path) in err)), err


def test_random_sub_header_offsets(dumps, tmp_path: Path) -> None:
    """Offsets past 2^63 (seek() cannot take them) are a damaged file, named."""
    data = bytearray(dumps["kdump"])
    data[4096 + 48:4096 + 56] = struct.pack("<Q", 0xF00DF00DF00DF00D)  # offset_note
    path = tmp_path / "core"
    path.write_bytes(bytes(data))
    code, _, err = invoke("validate", "--vmcore", str(path), "--kernel")
    assert code == 2 and str(path) in err and "past the end of the file" in err and "Traceback" not in err, err
