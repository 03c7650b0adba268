"""Run the named checks (inspector/checks/) over a snapshot walked again."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from .checks import CHECKS, Check, Context, Finding
from .snapshot import Snapshot


@dataclass(frozen=True)
class Outcome:
    """One check's result: "pass", "fail", "skipped" (a fact is missing) or "n/a" (other arch)."""

    check: Check
    status: str
    findings: tuple[Finding, ...] = ()
    reason: str | None = None


@dataclass(frozen=True)
class Report:
    snapshot: Snapshot
    entries: int  # entries walked, table entries included
    outcomes: tuple[Outcome, ...]

    @property
    def findings(self) -> list[Finding]:
        return sorted((f for o in self.outcomes for f in o.findings), key=lambda f: (f.va, f.check))

    @property
    def failed(self) -> bool:
        return any(o.status == "fail" for o in self.outcomes)


def check_ids() -> list[str]:
    return [c.id for c in CHECKS]


def validate(snap: Snapshot, only: Iterable[str] | None = None) -> Report:
    """Walk `snap` again and run every check (or those in `only`)."""
    wanted = set(only) if only else None
    if wanted is not None and wanted - set(check_ids()):
        raise ValueError(f"unknown check {', '.join(sorted(wanted - set(check_ids())))}; "
                         f"choose from {', '.join(check_ids())}")
    tables = snap.tables()
    ctx = Context(snap, list(snap.walk(tables)), tables)
    outcomes = []
    for check in CHECKS:
        if wanted is not None and check.id not in wanted:
            continue
        if snap.arch.name not in check.arches:
            outcomes.append(Outcome(check, "n/a", reason=f"not a rule of {snap.arch.name}"))
            continue
        reason = check.skip(ctx)
        if reason:
            outcomes.append(Outcome(check, "skipped", reason=reason))
            continue
        findings = tuple(check.run(ctx))
        outcomes.append(Outcome(check, "fail" if findings else "pass", findings))
    return Report(snap, len(ctx.entries), tuple(outcomes))
