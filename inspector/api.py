"""ptinspect's Python API: open a target, pick a root, and get its entries, translations,
snapshots, diffs and validation reports as objects.

It is the command line's core, called directly: `open_target` opens what `--gdb`, `--qmp`,
`--vmcore` and `--kcore` open (or a snapshot file), `from_drgn` wraps a user's drgn Program
(physical reads through `prog.read(pa, size, True)`, kernel structures through the debug info
that program already loaded), and a live target stays stopped until the Target is closed.

    with open_target("localhost:1234", vmlinux="vmlinux") as t:
        for row in t.walk(pid=1):
            print(hex(row.va), row.level, row.kind.value, row.soft)
"""
from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ptinspect.archs import arch_where, names_text
from ptinspect.archs.common import KernelFacts, Kind

from . import inputs
from .diff import Delta, diff_notes
from .dump import Row, VmaIndex, bulk_rows, default_range, rows
from .entry import Entry
from .kernel import KernelError, Vma
from .opening import errors, opened
from .opening import open_target as open_raw
from .rawkernel.tasks import Task
from .records import hx, item_record, uffd_mode
from .session import Root, Session, SessionError, attach_program_kernel
from .snapshot import Snapshot, SnapshotError, live_snapshot, load, write_snapshot
from .summary import Summary, snapshot_rows, summarize
from .targets.drgn import DrgnTarget, _vmcoreinfo
from .validate import Report
from .validate import validate as run_checks
from .walker import Walker

__all__ = ["Delta", "Diff", "Entry", "Error", "Kind", "Report", "Row", "Snapshot", "Summary", "Tables", "Target",
           "Task", "Translation", "Vma", "diff", "from_drgn", "load_snapshot", "open_target"]

VaRange = tuple[int, int]
GDBSTUB = re.compile(r"[^/\s]*:\d+")  # HOST:PORT (an empty host is localhost)


class Error(Exception):
    """A target, root or address the API cannot use, as one sentence naming what is wrong."""


@contextlib.contextmanager
def _errors() -> Iterator[None]:
    try:
        yield
    except errors() + (inputs.InputError, SnapshotError, KernelError) as exc:
        raise Error(str(exc)) from None


@dataclass(frozen=True)
class Translation:
    """The walk of one VA: every entry from the root to the leaf, and where it ends."""

    va: int
    pa: int | None  # None: not mapped (the leaf's kind says why)
    path: list[Entry]

    @property
    def leaf(self) -> Entry:
        return self.path[-1]


@dataclass(frozen=True)
class Diff:
    """What changed from snapshot `a` to `b`: merged ranges, and what to read them with."""

    a: Snapshot
    b: Snapshot
    deltas: list[Delta]
    notes: list[str]  # e.g. a PA width only one side knows

    @property
    def equal(self) -> bool:
        return not self.deltas


class Tables:
    """One root's page tables on a target: a process's mm, the kernel's, a raw root, or a snapshot's."""

    def __init__(self, target: Target, root: Root | None, selection: dict[str, Any]) -> None:
        self.target = target
        self._root = root  # None: the snapshot's own root
        self.selection = selection

    @property
    def label(self) -> str:
        return self._root.label if self._root is not None else self._snapshot.label

    @property
    def pa(self) -> int:
        """Physical address of the root table."""
        return self._root.pa if self._root is not None else self._snapshot.root

    @property
    def vmas(self) -> tuple[Vma, ...]:
        if self._root is not None:
            return self._root.vmas
        return self._snapshot.vmas or ()

    @property
    def _snapshot(self) -> Snapshot:
        assert self.target.snapshot_file is not None
        return self.target.snapshot_file

    def _range(self, va_range: VaRange | None) -> VaRange | None:
        """A range the root can walk, or dump's default (a process's user half)."""
        session, root = self.target._live(), self._root
        assert root is not None
        if va_range is None:
            return default_range(session, root)
        inputs.check_range(session.arch, root.mode, root.upper, va_range, "va_range")
        return va_range

    def walk(self, va_range: VaRange | None = None, kinds: Iterable[Kind] | None = None,
             tables: bool = False) -> Iterator[Row]:
        """Every non-none entry in VA order with its VMA (`tables`: table entries too), as `dump` lists them."""
        wanted = frozenset(kinds) if kinds is not None else None
        with _errors():
            if self._root is None:
                yield from self._snapshot_rows(va_range, wanted, tables)
                return
            yield from rows(self.target._live(), self._root, self._range(va_range), wanted, tables)

    entries = walk

    def _snapshot_rows(self, va_range: VaRange | None, kinds: frozenset[Kind] | None,
                       tables: bool) -> Iterator[Row]:
        snap = self._snapshot
        vmas = VmaIndex(snap.vmas or ())
        for e in snap.walk():
            if (e.kind is Kind.TABLE and not tables) or (kinds is not None and e.kind not in kinds):
                continue
            if va_range is not None and not (e.va < va_range[1] and va_range[0] < e.va + e.size):
                continue
            yield Row(e, vmas.find(e.va) if snap.vmas else None)

    def translate(self, va: int) -> Translation:
        """The walk of `va`, level by level, as `translate` shows it."""
        with _errors():
            if self._root is None:
                snap = self._snapshot
                walker = Walker(snap.tables(), snap.arch, snap.mode, snap.facts, shared_decodes=False)
                path = walker.translate(snap.root, va, upper=snap.upper)
            else:
                session, root = self.target._live(), self._root
                inputs.check_va(session.arch, root.mode, root.upper, va, "va")
                path = session.walker(root.mode).translate(root.pa, va, upper=root.upper)
        return Translation(va, path[-1].phys(va), path)

    def snapshot(self, path: str | os.PathLike[str] | None = None, va_range: VaRange | None = None) -> Snapshot:
        """Every entry, table entries included, as a Snapshot; written atomically to `path` if given."""
        with _errors():
            if self._root is None:
                if path is not None or va_range is not None:
                    raise Error("a snapshot file is already a snapshot: load it, or diff it with a range")
                return self._snapshot
            session, rng = self.target._live(), self._range(va_range)
            if path is None:
                return live_snapshot(session, self._root, self.selection, rng)
            write_snapshot(Path(path), session, self._root, self.selection, rng)
            return load(Path(path))

    def validate(self, checks: Iterable[str] | None = None) -> Report:
        """The kernel's page-table rules (inspector/checks), checked on this root; `checks`: some ids only."""
        snap = self.snapshot()
        with _errors():
            try:
                return run_checks(snap, checks)
            except ValueError as exc:  # an unknown check id
                raise Error(str(exc)) from None

    def summary(self, va_range: VaRange | None = None) -> Summary:
        """What `ptinspect summary` counts: bytes and entries per VMA and in total, by mapping size and
        kind, huge/contiguous coverage, table pages per level; counted from the walker's runs."""
        with _errors():
            if self._root is None:
                if va_range is not None:
                    raise Error("a snapshot file's summary covers the whole snapshot: give no va_range")
                snap = self._snapshot
                return summarize(snapshot_rows(snap), snap.mode, snap.vmas or ())
            session, root = self.target._live(), self._root
            return summarize(bulk_rows(session, root, self._range(va_range), None, tables=True), root.mode,
                             root.vmas)

    def record(self, row: Row) -> dict[str, Any]:
        """The entry's JSON record, as `dump --format json` writes it."""
        return item_record(row, self.target.facts.layout)

    def uffd_mode(self, row: Row) -> str | None:
        """What the entry's uffd bit tracks ("wp", from 7.3 "rwp" too), or None when it is clear."""
        return uffd_mode(row.entry.hw, row.vma, self.target.facts.layout)


class Target:
    """An opened target (or snapshot file).  A live VM stays stopped until `close()`, which
    restores its run state (resumed, or left as it was) and QEMU's memory mode; use it as a
    context manager."""

    def __init__(self, session: Session | None, stack: contextlib.ExitStack | None = None,
                 snapshot_file: Snapshot | None = None, no_kernel: str | None = None) -> None:
        self.session = session
        self.snapshot_file = snapshot_file
        self._facts = session.facts if session is not None else None  # kept after close: rows still decode
        self._stack = stack
        if session is not None:
            self._source, self._arch = session.source, session.arch.name
        else:
            assert snapshot_file is not None
            self._source, self._arch = f"snapshot {snapshot_file.name}", snapshot_file.arch.name
        self._no_kernel = no_kernel  # why processes cannot be found (a drgn program without debug info)

    @property
    def source(self) -> str:
        return self._source

    @property
    def arch(self) -> str:
        return self._arch

    @property
    def facts(self) -> KernelFacts:
        """The kernel release, layout and facts with their sources."""
        return self._facts if self._facts is not None else self._snap().facts

    @property
    def release(self) -> str | None:
        return self.facts.release

    def _snap(self) -> Snapshot:
        assert self.snapshot_file is not None
        return self.snapshot_file

    def _live(self) -> Session:
        if self.session is None:
            raise Error("this target is closed" if self.snapshot_file is None else "a snapshot file has one root")
        return self.session

    def tables(self, which: Any = None, *, pid: int | None = None, comm: str | None = None, kernel: bool = False,
               mm: Any = None, root: int | None = None, upper: bool = False) -> Tables:
        """A root: `which` is a pid (int), a command name (str) or an mm_struct (drgn Object); or by
        keyword a pid, comm, the kernel's init_mm, an mm_struct (Object or address) or a raw root PA
        (`upper`: it translates the upper half).  A snapshot file has its one root (no arguments)."""
        if isinstance(which, bool) or (which is not None and (pid, comm, mm) != (None, None, None)):
            raise Error(f"give the root once: {which!r} and a keyword")
        if isinstance(which, int):
            pid = which
        elif isinstance(which, str):
            comm = which
        elif which is not None:
            mm = which
        if sum(x is not None for x in (pid, comm, mm, root)) + kernel > 1:
            raise Error("give one root: a pid, a command name, an mm_struct, kernel=True or root=PA")
        if self.snapshot_file is not None:
            if (pid, comm, mm, root) != (None, None, None, None) or kernel or upper:
                raise Error(f"{self.snapshot_file.name} holds one root ({self.snapshot_file.label}): choose none")
            return Tables(self, None, self.snapshot_file.selection)
        session = self._live()
        address = None if mm is None else _mm_address(mm)
        if self._no_kernel is not None and (pid, comm, address) != (None, None, None):
            raise Error(self._no_kernel)
        with _errors():
            if root is not None:
                inputs.check_root(session.mode(upper), root, session.reader.ranges(), "root")
            chosen = session.root(pid=pid, comm=comm, kernel=kernel, root_pa=root, upper=upper, mm=address)
        sel = {k: v for k, v in (("pid", pid), ("comm", comm)) if v is not None}
        sel.update({k: hx(v) for k, v in (("root", root), ("mm", address)) if v is not None})
        sel.update({k: True for k, v in (("kernel", kernel), ("upper", upper)) if v})
        return Tables(self, chosen, sel)

    def tasks(self, comm: str | None = None) -> list[Task]:
        """The kernel's tasks (each thread too; the idle tasks aside) by pid: what `pid=` and `comm=`
        choose from; only those named `comm` when given."""
        session = self._live()
        if self._no_kernel is not None:
            raise Error(self._no_kernel)
        kernel = session.kernel
        if kernel is None:
            raise Error("listing tasks needs the kernel's debug info: give vmlinux=")
        with _errors():
            return sorted((t for t in kernel.tasks() if comm is None or t.comm == comm),
                          key=lambda t: (t.pid, t.address))

    def walk(self, which: Any = None, *, va_range: VaRange | None = None, kinds: Iterable[Kind] | None = None,
             tables: bool = False, **root: Any) -> Iterator[Row]:
        """tables(which, **root).walk(...): every non-none entry of that root."""
        return self.tables(which, **root).walk(va_range, kinds, tables)

    entries = walk

    def translate(self, va: int, which: Any = None, **root: Any) -> Translation:
        return self.tables(which, **root).translate(va)

    def snapshot(self, which: Any = None, *, path: str | os.PathLike[str] | None = None,
                 va_range: VaRange | None = None, **root: Any) -> Snapshot:
        return self.tables(which, **root).snapshot(path, va_range)

    def validate(self, which: Any = None, *, checks: Iterable[str] | None = None, **root: Any) -> Report:
        return self.tables(which, **root).validate(checks)

    def summary(self, which: Any = None, *, va_range: VaRange | None = None, **root: Any) -> Summary:
        return self.tables(which, **root).summary(va_range)

    def close(self) -> None:
        """End the session: the VM runs again (or stays as it was, or stopped with keep_stopped)."""
        stack, self._stack, self.session = self._stack, None, None
        if stack is not None:
            with _errors():
                stack.close()

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _mm_address(mm: Any) -> int:
    """The address of an mm_struct given as a drgn Object (pointer or struct) or an int."""
    if isinstance(mm, int):
        return mm
    type_name = getattr(getattr(mm, "type_", None), "type_name", lambda: "")()
    if "mm_struct" not in type_name:
        raise Error(f"not an mm_struct: {type_name or type(mm).__name__} (give task.mm, a pid, or a command name)")
    value = mm.value_() if type_name.endswith("*") else mm.address_
    if not value:
        raise Error("the mm_struct pointer is NULL (a kernel thread has no mm): walk kernel=True")
    return int(value)


def _session(raw: Any, vmlinux: Path | None, config_file: Path | None) -> tuple[contextlib.ExitStack, Session]:
    stack = contextlib.ExitStack()
    with _errors():
        session = stack.enter_context(opened(raw, vmlinux, config_file))
    return stack, session


def open_target(target: str | os.PathLike[str] | Any, *, vmlinux: str | os.PathLike[str] | None = None,
                config_file: str | os.PathLike[str] | None = None, keep_stopped: bool = False,
                timeout: float = 10.0) -> Target:
    """Open a gdbstub ("HOST:PORT"), a QMP socket (its path, or "qmp:PATH"), a vmcore (ELF or
    kdump), "/proc/kcore", a snapshot file, or a drgn Program (as from_drgn).  `vmlinux` (with debug
    info) is needed for pids, command names and VMAs, as on the command line."""
    if not isinstance(target, (str, os.PathLike)):
        return from_drgn(target, config_file=config_file)
    text = os.fspath(target)
    vml = Path(vmlinux) if vmlinux is not None else None
    config = Path(config_file) if config_file is not None else None
    for path, what in ((vml, "vmlinux"), (config, "config_file")):
        if path is not None and not path.is_file():
            raise Error(f"{what} {path}: no such file")
    kind, where = _kind(text)
    if kind == "snapshot":
        with _errors():
            return Target(None, snapshot_file=load(Path(where)))
    if keep_stopped and kind in ("vmcore", "kcore"):
        raise Error("keep_stopped applies to a live VM (a gdbstub or QMP socket)")
    with _errors():
        raw = open_raw(gdb_address=where if kind == "gdb" else None, vmcore=Path(where) if kind == "vmcore" else None,
                       kcore=kind == "kcore", qmp=where if kind == "qmp" else None, keep_stopped=keep_stopped,
                       timeout=inputs.timeout(timeout, "timeout"))
    stack, session = _session(raw, vml, config)
    return Target(session, stack)


def _kind(text: str) -> tuple[str, str]:
    """What a target string names: (kind, the address or path)."""
    if text.startswith("qmp:"):
        return "qmp", text[4:]
    if os.path.realpath(text) == "/proc/kcore":
        return "kcore", text
    try:
        mode = os.stat(text).st_mode
    except OSError:
        if GDBSTUB.fullmatch(text):
            return "gdb", text
        raise Error(f"{text}: no such file, and not a gdbstub HOST:PORT") from None
    if stat.S_ISSOCK(mode):
        return "qmp", text
    if not stat.S_ISREG(mode):
        raise Error(f"{text} is neither a file nor a QMP socket")
    with open(text, "rb") as f:
        head = f.read(64).lstrip()
    return ("snapshot" if head.startswith(b"{") else "vmcore"), text


def from_drgn(prog: Any, *, config_file: str | os.PathLike[str] | None = None) -> Target:
    """A Target on the kernel a drgn Program reads (drgn -c VMCORE, drgn -k, QEMU over QMP):
    physical memory through prog.read(pa, size, True), the paging modes and kernel root from its
    VMCOREINFO, processes and VMAs through the debug info the program has loaded.  The program's
    run state is the user's: nothing is stopped or resumed."""
    platform = getattr(prog, "platform", None)
    found = arch_where("drgn_arch", platform.arch.name) if platform is not None else None
    if found is None:
        raise Error(f"the drgn program is not a kernel of {names_text('or')}")
    arch = found.name
    info = _vmcoreinfo(prog)
    if info is None:
        raise Error("the drgn program has no VMCOREINFO: open a kernel (drgn -c VMCORE, drgn -k)")
    stack, session = _session(DrgnTarget(prog, arch, "drgn", info), None, None)
    no_kernel = None
    try:
        attach_program_kernel(session, prog, Path(config_file) if config_file is not None else None)
    except SessionError as exc:  # no debug info: the kernel root and raw roots still walk
        no_kernel = str(exc)
    return Target(session, stack, no_kernel=no_kernel)


def load_snapshot(path: str | os.PathLike[str]) -> Snapshot:
    """A snapshot file (ptinspect.snapshot/1), checked whole."""
    with _errors():
        return load(Path(path))


def diff(a: Snapshot | str | os.PathLike[str], b: Snapshot | str | os.PathLike[str],
         va_range: VaRange | None = None) -> Diff:
    """Entries added, removed and changed from `a` to `b` (Snapshots or snapshot files)."""
    sa = a if isinstance(a, Snapshot) else load_snapshot(a)
    sb = b if isinstance(b, Snapshot) else load_snapshot(b)
    with _errors():
        try:
            deltas, notes = diff_notes(sa, sb, va_range)
        except ValueError as exc:  # snapshots that cannot be compared (another arch or layout)
            raise Error(str(exc)) from None
    return Diff(sa, sb, deltas, notes)
