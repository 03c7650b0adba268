"""Boot every required Debian kernel under QEMU and check the workload's manifest arrives.

These fail, never skip, when QEMU, a cross compiler or a kernel is missing: run the README's setup.
"""
from __future__ import annotations

import json
import re
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner

from ptinspect.commands.vm import vm as vm_group
from ptinspect.inspector.targets.qmp import Qmp
from ptinspect.inspector.vm import VMError, qemu, state

from .kernels import IDS, IMAGES

pytestmark = pytest.mark.integration



def _rsp(sock: socket.socket, payload: bytes, want: Callable[[bytes], bool]) -> bytes:
    """Send one gdb remote-protocol packet; ack replies until one satisfies WANT (stop replies may come first)."""
    sock.sendall(b"$%s#%02x" % (payload, sum(payload) % 256))
    buffer = b""
    while True:
        while not re.search(rb"\$([^#]*)#..", buffer):
            chunk = sock.recv(4096)
            assert chunk, "gdbstub closed the connection"
            buffer += chunk
        match = re.search(rb"\$([^#]*)#..", buffer)
        assert match
        buffer = buffer[match.end():]
        sock.sendall(b"+")
        if want(match[1]):
            return match[1]


@pytest.mark.parametrize(("arch", "series"), IMAGES, ids=IDS)
def test_boot_reaches_the_manifest(vm: Callable[..., state.VM], arch: str, series: str) -> None:
    machine = vm(arch, series)
    manifest = json.loads(Path(machine.manifest).read_text())
    assert manifest["pid"] == machine.workload_pid > 1
    assert machine.kernel_release.startswith(series.split("-")[0] + ".")  # 7.2-16k: a 7.2 release
    assert machine.vmlinux and Path(machine.vmlinux).stat().st_size > 10_000_000
    assert machine.name in {m.name for m in state.running()}
    with Qmp(machine.qmp) as qmp:
        assert qmp.execute("query-status")["status"] == "running"
        host, port = machine.gdb.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as gdb:  # stops the VM
            assert _rsp(gdb, b"?", lambda reply: reply[:1] in (b"S", b"T"))
            _rsp(gdb, b"D", lambda reply: reply == b"OK")
        # QEMU 7.2 leaves the VM paused after some detaches (about half of them, measured): resume it
        if qmp.execute("query-status")["status"] == "paused":
            qmp.execute("cont")
        assert qmp.execute("query-status")["status"] == "running"


def _qemus_in(run_dir: str) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if proc.name.isdigit() and b"qemu-system" in cmdline and run_dir.encode() in cmdline:
            pids.append(int(proc.name))
    return pids


def test_kernel_panic_gives_the_serial_tail_and_no_qemu(vm: Callable[..., state.VM]) -> None:
    with pytest.raises(VMError, match="Kernel panic") as failure:
        vm("x86_64", append="rdinit=/nonexistent", name="test-panic", timeout=120)
    assert "last 40 lines of the serial log" in str(failure.value)
    assert _qemus_in("/vms/test-panic/") == []


def test_taken_gdb_port_is_retried(vm: Callable[..., state.VM], monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = iter([busy.getsockname()[1]])
        free = qemu._free_port
        monkeypatch.setattr(qemu, "_free_port", lambda: next(ports, None) or free())
        machine = vm("x86_64")
        assert machine.gdb != f"127.0.0.1:{busy.getsockname()[1]}"


def test_cli_boot_list_stop_across_processes() -> None:
    runner = CliRunner()
    booted = runner.invoke(vm_group, ["boot", "--arch", "arm64", "--json", "--name", "test-cli"])
    assert booted.exit_code == 0, booted.output
    facts = json.loads(booted.stdout)
    try:
        assert set(facts) == set(state.FACT_KEYS)
        listed = json.loads(runner.invoke(vm_group, ["list", "--json"]).stdout)
        assert facts in listed
    finally:
        stopped = runner.invoke(vm_group, ["stop", str(facts["qemu_pid"])])
    assert stopped.exit_code == 0, stopped.output
    assert not state.is_our_qemu(facts["qemu_pid"], facts["qmp"])
    assert "test-cli" not in {m.name for m in state.running()}


def test_user_mistakes_are_one_line_errors() -> None:
    runner = CliRunner()
    result = runner.invoke(vm_group, ["stop", "no-such-vm"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.startswith("Error: no running VM named")
    result = runner.invoke(vm_group, ["boot", "--arch", "arm64", "--la57"])
    assert result.exit_code == 1 and result.output.strip() == "Error: --la57 applies to x86_64 only"
