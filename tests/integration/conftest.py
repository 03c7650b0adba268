"""The `vm` fixture: boots through the same harness as `ptinspect vm boot` and always stops what it booted."""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from inspector.vm.qemu import boot
from inspector.vm.state import VM


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A test marked only_arches(...) exists only for those architectures' live_vm parameters:
    where a check has no meaning (QEMU has no `info mem` on arm64) it is not generated, not skipped."""
    dropped = []
    for item in items:
        mark = item.get_closest_marker("only_arches")
        callspec = getattr(item, "callspec", None)
        if mark is not None and callspec is not None and callspec.params["live_vm"][0] not in mark.args:
            dropped.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if item not in dropped]


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
