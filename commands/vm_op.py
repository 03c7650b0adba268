"""`ptinspect vm op NAME ...`: ask a test VM's workload to do a memory-management operation."""
from __future__ import annotations

import json
from collections import Counter

import click

from ptinspect.inspector.vm import VMError, state
from ptinspect.inspector.vm.ops import HMM_OPERATIONS, OPERATIONS, OpResult, request

from .options import TIMEOUT


def _page_kinds(result: OpResult) -> str:
    """The region's pages as the guest's pagemap sees them: "8 present, 8 guard"."""
    kinds = Counter("guard" if pm.guard else "present" if pm.present else "swap-or-marker" if pm.swapped
                    else "none" for pm in result.pagemap)
    return ", ".join(f"{n} {kind}" for kind, n in kinds.items()) or "no pages"


@click.command(name="op")
@click.argument("target", metavar="NAME|PID")
@click.argument("words", nargs=-1, required=True, metavar="prepare OPERATION | OPERATION [START] | maps")
@click.option("--timeout", type=TIMEOUT, default=60.0, show_default=True,
              help="Seconds to wait for the VM to run and the workload to answer.")
@click.option("--json", "as_json", is_flag=True, help="Print the workload's answer as JSON.")
def op(target: str, words: tuple[str, ...], timeout: float, as_json: bool) -> None:
    """Have the workload of test VM NAME do an operation on a fresh region of its own.

    `prepare OPERATION` maps and populates a region fit for OPERATION and prints its start;
    `OPERATION [START]` does it on that region (default: the latest prepared); `maps` prints the
    workload's /proc/self/maps (the kernel's own names of its VMAs).  Operations:
    guard-install, guard-remove, mprotect, pageout, thp-split, collapse, migrate (a VM booted with
    --numa-nodes 2), age, uaccess-fault, contpte-mprotect
    (vm-images/README-workload.md); with the HMM test driver loaded, hmm-prepare [PAGES],
    hmm-prepare-thp (one PMD-sized THP),
    hmm-migrate-dev, hmm-migrate-sys, hmm-exclusive, hmm-readonly, hmm-touch, hmm-snapshot,
    hmm-selftest NAME[,NAME...] (the kernel's hmm-tests cases)
    (vm-images/README.md).  Exit status 0 when the workload reports ok, 1 otherwise.
    """
    if words[0] not in (*OPERATIONS, *HMM_OPERATIONS, "prepare", "maps"):
        raise click.UsageError(f"unknown operation {words[0]!r}; choose prepare, maps, "
                               f"{', '.join(OPERATIONS + HMM_OPERATIONS)}")
    try:
        result = request(state.find(target), words, timeout=timeout)
    except (VMError, TimeoutError) as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(json.loads(result.line.split(" ", 1)[1]), indent=1))
    elif result.maps is not None:
        click.echo("\n".join(result.maps))
    else:
        what = f"prepare {result.for_op}" if result.op == "prepare" else result.op
        click.echo(f"{what}: {result.status}" + (f" ({result.reason})" if result.reason else ""))
        if result.start is not None:
            acted = f", acted on {result.op_start:#x}-{result.op_end:#x}" if result.op_start is not None else ""
            click.echo(f"region {result.start:#x}-{result.end:#x} ({result.shape}){acted}; pagemap: "
                       f"{_page_kinds(result)}; smaps AnonHugePages {result.anon_huge_kb} kB, Swap {result.swap_kb} kB")
    click.get_current_context().exit(0 if result.status == "ok" else 1)
