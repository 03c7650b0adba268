"""The kselftest harness's TAP lines (tools/testing/selftests/kselftest_harness.h, as hmm-tests printed them
in a 7.2 guest) become one verdict per case."""
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
