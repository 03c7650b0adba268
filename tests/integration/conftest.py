"""The `vm` fixture: boots through the same harness as `ptinspect vm boot` and always stops what it booted."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from inspector.vm.qemu import boot
from inspector.vm.state import VM


@pytest.fixture
def vm(capsys: pytest.CaptureFixture[str]) -> Iterator[Callable[..., VM]]:
    """vm(arch, series="7.2", **boot_kwargs) -> VM; QEMU dies with the test process and at teardown."""
    booted: list[VM] = []

    def start(arch: str, series: str = "7.2", **kwargs: object) -> VM:
        began = time.monotonic()
        with capsys.disabled():  # download / build / boot progress lines reach the terminal
            print(f"\n[vm] booting {arch} {series} ...", flush=True)
            machine = boot(arch, series, detach=False, **kwargs)  # type: ignore[arg-type]
            print(f"[vm] {machine.name}: manifest after {time.monotonic() - began:.1f} s "
                  f"(incl. any fetch/build); gdb {machine.gdb}", flush=True)
        booted.append(machine)
        return machine

    yield start
    for machine in booted:
        machine.stop()
