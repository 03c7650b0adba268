"""The kselftest harness's TAP lines (tools/testing/selftests/kselftest_harness.h, as hmm-tests printed them
in a 7.2 guest) become one verdict per case; the selftests' compile commands; the vCPUs of a NUMA guest."""
from pathlib import Path

import pytest

from ptinspect.inspector.vm import VMError
from ptinspect.inspector.vm.mmselftests import HMM_TESTS, MIGRATION
from ptinspect.inspector.vm.qemu import boot, qemu_command
from ptinspect.inspector.vm.selftests import kselftest_verdicts

LINES = (
    "#  RUN           hmm.hmm_device_private.migrate ...",
    "#            OK  hmm.hmm_device_private.migrate",
    "ok 12 hmm.hmm_device_private.migrate",
    "ok 25 hmm.hmm_device_private.hmm_gup_test # SKIP Skipping test, could not find gup_test driver",
    "not ok 26 hmm.hmm_device_private.hmm_cow_in_device",
    "ok 27 hmm.hmm_device_private.compound # XFAIL known",
    "# Totals: pass:34 fail:0 xfail:0 xpass:0 skip:4 error:0",
)


def test_verdicts() -> None:
    assert kselftest_verdicts(LINES) == {
        "hmm.hmm_device_private.migrate": "pass",
        "hmm.hmm_device_private.hmm_gup_test": "skip",
        "hmm.hmm_device_private.hmm_cow_in_device": "fail",
        "hmm.hmm_device_private.compound": "xfail",
    }


def test_migration_verdict() -> None:
    """As the 7.2 migration selftest printed it in an x86_64 guest (`-t private_anon`)."""
    lines = ("#  RUN           migration.private_anon ...", "#            OK  migration.private_anon",
             "ok 1 migration.private_anon", "# Totals: pass:1 fail:0 xfail:0 xpass:0 skip:0 error:0")
    assert kselftest_verdicts(lines) == {"migration.private_anon": "pass"}


def test_selftest_commands_follow_the_makefile() -> None:
    """tools/testing/selftests/mm/Makefile (7.2): CFLAGS -Wall -O2 -I $(top_srcdir) -U_FORTIFY_SOURCE,
    LDLIBS -lrt -lpthread -lm (+ -lnuma for migration), vm_util.c and hugepage_settings.c linked in."""
    src, numa = Path("/s"), Path("/b/libnuma-dev")
    test = "/s/tools/testing/selftests/mm"
    assert HMM_TESTS.command("cc", src, Path("/o")) == [
        "cc", "-static", "-O2", "-Wall", "-U_FORTIFY_SOURCE", "-I/s", "-I/s/tools/testing/selftests",
        "-isystem", "/s/tools/include/uapi", "-o", "/o", f"{test}/hmm-tests.c", f"{test}/vm_util.c",
        f"{test}/hugepage_settings.c", "-lrt", "-lpthread", "-lm"]
    cmd = MIGRATION.command("cc", src, Path("/o"), (numa,), "riscv64-linux-gnu")
    assert cmd[cmd.index("-o") + 2:] == [f"{test}/migration.c", f"{test}/vm_util.c", f"{test}/hugepage_settings.c",
                                         "-L/b/libnuma-dev/usr/lib/riscv64-linux-gnu", "-lnuma", "-lrt", "-lpthread",
                                         "-lm"]
    assert cmd[cmd.index("/b/libnuma-dev/usr/include") - 1] == "-isystem"


def _numa(arch: str, nodes: int, cpus: int | None) -> tuple[str, list[str]]:
    cmd = qemu_command(arch, Path("k"), Path("i"), "", Path("s"), "q", "c", 1, numa_nodes=nodes, cpus=cpus)
    return cmd[cmd.index("-smp") + 1], [word for word in cmd if word.startswith("node,")]


def test_vcpus_are_split_over_the_nodes() -> None:
    assert _numa("x86_64", 2, None) == ("1", ["node,nodeid=0,memdev=numa0,cpus=0", "node,nodeid=1,memdev=numa1"])
    assert _numa("x86_64", 2, 3) == ("3", ["node,nodeid=0,memdev=numa0,cpus=0", "node,nodeid=1,memdev=numa1,cpus=1-2"])
    assert _numa("arm64", 2, 4) == ("4", ["node,nodeid=0,memdev=numa0,cpus=0-1", "node,nodeid=1,memdev=numa1,cpus=2-3"])
    assert _numa("riscv64", 2, None) == ("2", ["node,nodeid=0,memdev=numa0,cpus=0", "node,nodeid=1,memdev=numa1,cpus=1"])
    assert _numa("arm64", 1, 3) == ("3", [])


@pytest.mark.parametrize(("arch", "nodes", "cpus", "message"), [
    ("x86_64", 1, 9, "--cpus 9: choose 1 to 8"), ("x86_64", 1, 0, "--cpus 0: choose 1 to 8"),
    ("riscv64", 2, 1, "riscv64 with 2 NUMA nodes needs a vCPU per node")])
def test_bad_vcpu_counts_are_refused(arch: str, nodes: int, cpus: int, message: str) -> None:
    with pytest.raises(VMError, match=message):
        boot(arch, numa_nodes=nodes, cpus=cpus)
