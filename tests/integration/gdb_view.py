"""gdb's own unwinder as a witness of a stopped vCPU's kernel call chain, where drgn 0.3.0 has none
(riscv64): gdb-multiarch reads the vmlinux's DWARF call-frame information (`.debug_frame`) and the
vCPU's registers from QEMU's gdbstub and unwinds with its own code, none of it ptinspect's.
"""
from __future__ import annotations

import subprocess
from pathlib import Path

GDB_TIMEOUT = 180
MARK = "gdb-caller "

# Run inside gdb: select the vCPU whose QEMU thread id is p1.<N>, then name each real (not inlined)
# frame by the ELF symbol of its pc, a caller's by the call (pc - 1), as ptinspect names them.
SCRIPT = """
import gdb
wanted = int(gdb.parameter("args") or 0)
thread = next(t for t in gdb.selected_inferior().threads() if t.ptid[1] == wanted)
thread.switch()
frame = gdb.newest_frame()
while frame is not None:
    if frame.type() != gdb.INLINE_FRAME:
        pc = frame.pc() - (0 if frame.level() == 0 else 1)
        print("%s%s" % ({mark!r}, gdb.execute("info symbol %#x" % pc, to_string=True).split(" ", 1)[0]))
    try:
        frame = frame.older()
    except gdb.error:
        break
"""


def gdb_callers(address: str, vmlinux: Path, thread: int, workdir: Path, *, resume: bool = False) -> list[str]:
    """The functions on the stack of the vCPU QEMU calls thread p1.THREAD, innermost first, as
    gdb-multiarch unwinds them at the gdbstub ADDRESS; gdb then detaches (the VM runs on) if RESUME,
    else disconnects (a stopped VM stays stopped)."""
    script = workdir / "gdb_callers.py"
    script.write_text(SCRIPT.format(mark=MARK))
    proc = subprocess.run(["gdb-multiarch", "-nx", "-batch", "-ex", "set pagination off",
                           "-ex", f"file {vmlinux}", "-ex", f"target remote {address}",
                           "-ex", f"set args {thread}", "-ex", f"source {script}", "-ex", "detach" if resume else "disconnect"],
                          capture_output=True, text=True, timeout=GDB_TIMEOUT)
    names: list[str] = []
    for line in proc.stdout.splitlines():
        if line.startswith(MARK):
            name = line[len(MARK):]
            if name == "No":  # "No symbol matches ...": user space, the end of the kernel's part
                break
            if not names or names[-1] != name:
                names.append(name)
    assert names, f"gdb unwound nothing (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return names
