"""The `vm` fixture: boots through the same harness as `ptinspect vm boot` and always stops what it booted."""
from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Generator, Iterator

import pytest

from ptinspect.inspector.vm.qemu import boot
from ptinspect.inspector.vm.state import VM

from .kernels import IMAGES

# Per test kernel: [seconds, tests, failed] over every test run on it (setup, i.e. fetch and boot, included).
KERNEL_TIME: dict[str, list[float]] = defaultdict(lambda: [0.0, 0, 0])


def kernel_of(item: pytest.Item) -> str | None:
    """The "arch-kernel" a live test runs on, from its parameters (a fixture param or arch/series)."""
    params = getattr(getattr(item, "callspec", None), "params", {})
    for value in params.values():
        if value in IMAGES:
            return "-".join(value)
    if "arch" in params and "series" in params:
        return f"{params['arch']}-{params['series']}"
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Generator[None, None, None]:
    began = time.monotonic()
    failed_before = item.session.testsfailed
    yield
    if (kernel := kernel_of(item)) is not None:
        entry = KERNEL_TIME[kernel]
        entry[0] += time.monotonic() - began
        entry[1] += 1
        entry[2] += item.session.testsfailed - failed_before


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Per-kernel time, so that CI logs show what each test kernel costs (fetch and boot included)."""
    if not KERNEL_TIME:
        return
    terminalreporter.write_sep("=", "time per test kernel (fetch, boot and tests)")
    for kernel in sorted(KERNEL_TIME, key=lambda k: -KERNEL_TIME[k][0]):
        seconds, tests, failed = KERNEL_TIME[kernel]
        terminalreporter.write_line(f"{kernel:16} {seconds:8.1f} s  {int(tests):3} tests  {int(failed):3} failed")
    terminalreporter.write_line(f"{'total':16} {sum(v[0] for v in KERNEL_TIME.values()):8.1f} s")


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
