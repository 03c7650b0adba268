"""inspector/vmlinux.symbol_table against binutils' own reading of a compiled ELF file (`nm -S`).

The watch names PCs from these functions and sizes, so a misread st_info or st_size would name the
wrong function.  gcc and nm are the host toolchain the test-VM harness needs anyway.
"""
from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest

from ptinspect.inspector.vmlinux import symbol_table

SOURCE = """
int counter = 3;
static long table[4] = {1, 2, 3, 4};
long first(long x) { return table[x & 3] + counter; }
long second(long x) { return first(x) * 2 + first(x + 1); }
asm(".text\\n.globl asm_entry\\nasm_entry: nop\\nnop\\nret\\n.size asm_entry, 3\\n"
    ".globl asm_label\\nasm_label: ret\\n");
"""


def test_functions_and_objects_as_nm_reads_them(tmp_path: Path) -> None:
    if platform.machine() != "x86_64" or not shutil.which("gcc") or not shutil.which("nm"):
        pytest.fail("this test needs the x86_64 host gcc and nm (the harness's build tools)")
    src, obj = tmp_path / "s.c", tmp_path / "s.o"
    src.write_text(SOURCE)
    subprocess.run(["gcc", "-O1", "-c", "-o", str(obj), str(src)], check=True)
    nm = subprocess.run(["nm", "-S", "--defined-only", str(obj)], check=True, capture_output=True, text=True)
    expected_funcs, expected_objects = [], {}
    for line in nm.stdout.splitlines():
        parts = line.split()
        if len(parts) != 4:
            continue
        value, size, kind, name = int(parts[0], 16), int(parts[1], 16), parts[2], parts[3]
        if kind in "Tt":
            expected_funcs.append((value, size, name))
        elif kind in "DdBbRr":
            expected_objects[name] = value
    table = symbol_table(obj)
    assert table.machine == "x86_64"
    # a sized assembly symbol (no type, as the kernel's SYM_CODE_START/END make) is code nm lists with
    # its size; a bare label has none, and is not a function
    assert {"first", "second", "asm_entry"} <= {name for _, _, name in expected_funcs}
    assert "asm_label" not in {name for _, _, name in expected_funcs}
    assert sorted(expected_funcs) == table.functions
    assert expected_objects == table.objects
    assert table.values["counter"] == expected_objects["counter"]
