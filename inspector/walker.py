"""Walk a page-table tree and yield every non-none entry in VA order.

The walker knows no architecture: it splits VAs with the PagingMode's levels
and asks the Arch module what each value means.  Each table page is read once,
whole, through a TableCache; the tables a table points to are read together
(one pipelined batch on a gdbstub) before the walk descends into them.  Leaves
that differ only in their frame number share one decode (FrameDecoder).  A
table pointer outside the target's memory, to a table a vmcore's filter left
out or the target refuses to read, or one that would revisit a table on the
current path (a cycle), is reported as an `unknown` entry naming the problem
and is not followed.
"""
from __future__ import annotations

import dataclasses
import functools
import itertools
import operator
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal, NamedTuple, final

from ptinspect.archs.common import SOFTLEAF_KINDS, Arch, Decoded, KernelFacts, Kind, PagingMode, in_kernel_half

from .entry import ENTRY_BYTES, BlockPosition, Entry, EntryRef
from .reader import PhysReader, RefusedRead, TableCache

TEMPLATES = 4096  # decoded leaf templates kept per level
FAILED_TEMPLATES = 64  # leaves of a level whose frame bits were sought in vain before it stops seeking


@final
class _Template(NamedTuple):
    raw: int
    dec: Decoded
    frame_bits: int  # the bits of `raw` verified to carry nothing but the frame number
    shifts: tuple[tuple[int, int], ...]  # (raw mask, shift): pfn bit = raw bit - shift
    pfn_fields: tuple[int, ...]  # indices of `fields` that spell the pfn ("PPN": "0x...")
    fixed_bits: int  # ~frame_bits: a raw sharing this template equals `raw` in all of them
    plain: bool  # a leaf with no contiguous block: walks give it as part of a LeafRun
    pfn: int  # dec.pfn: templates are made of present leaves with a frame only


def _with_frame(dec: Decoded, raw: int, pfn: int, pfn_fields: tuple[int, ...]) -> Decoded:
    """`dec` for another raw value and frame (a frozen dataclass copied without __init__)."""
    new = object.__new__(Decoded)
    values = dec.__dict__.copy()
    values["raw"] = raw
    values["pfn"] = pfn
    if pfn_fields:
        fields = list(dec.fields)
        for i in pfn_fields:
            fields[i] = (fields[i][0], f"{pfn:#x}")
        values["fields"] = tuple(fields)
    object.__setattr__(new, "__dict__", values)
    return new


@final
@dataclass(frozen=True)
class LeafRun:
    """Present leaves of one table, in slot order, whose decodes are one template's apart
    from the frame number: the walk's bulk form of plain leaves (no contiguous block, no
    kernel view).  `entries()` gives exactly the Entry objects a walk yields one by one."""

    table: int
    depth: int
    level: str
    span: int
    page_shift: int
    va_base: int  # VA of the table's slot 0
    template: Decoded  # the decode of `template.raw`; every raw of the run differs from it in frame bits only
    pfn_base: int  # pfn(raw) = pfn_base ^ moved bits of raw (see pfn)
    shifts: tuple[tuple[int, int], ...]
    pfn_fields: tuple[int, ...]
    slots: tuple[int, ...]
    raws: tuple[int, ...]

    def pfn(self, raw: int) -> int:
        return self.pfn_base ^ _moved(self.shifts, raw)

    def pfns(self) -> list[int]:
        """pfn() of every raw of the run."""
        if len(self.shifts) == 1 and self.shifts[0][1] >= 0:
            (bits, shift), base = self.shifts[0], self.pfn_base
            return [base ^ (raw & bits) >> shift for raw in self.raws]
        return [self.pfn(raw) for raw in self.raws]

    @functools.cached_property
    def member_pfns(self) -> list[int]:
        """pfns(), kept: segments() and the entries --ranges builds at their ends share them."""
        return self.pfns()

    def va(self, slot: int) -> int:
        return self.va_base | slot * self.span

    def part(self, start: int, stop: int) -> LeafRun:
        """The run's members [start, stop)."""
        return dataclasses.replace(self, slots=self.slots[start:stop], raws=self.raws[start:stop])

    def entries(self) -> Iterator[Entry]:
        for slot, raw in zip(self.slots, self.raws):
            yield self._entry(slot, raw)

    def entry(self, i: int) -> Entry:
        """The Entry of member `i` alone (what entries() gives at that position)."""
        return self._entry(self.slots[i], self.raws[i], self.member_pfns[i])

    def _entry(self, slot: int, raw: int, pfn: int | None = None) -> Entry:
        if pfn is None:
            pfn = self.pfn(raw)
        dec = self.template if raw == self.template.raw else _with_frame(self.template, raw, pfn, self.pfn_fields)
        return Entry(self.va(slot), self.span, EntryRef(self.table, slot, self.depth, self.level), dec,
                     None, None, pfn, self.page_shift)

    def segments(self) -> Iterator[tuple[int, int]]:
        """[start, stop) member positions of the stretches that map consecutive frames at
        consecutive slots: what ranges() would merge, found without building an Entry per member
        (fields that spell the frame differ with it, as mergeable() allows)."""
        n = len(self.slots)
        if not n:
            return
        step = self.span >> self.page_shift
        slots, pfns = self.slots, self.member_pfns
        # pfn - slot * step is constant along a stretch; the positions where it changes (or a slot
        # is skipped) are found in C (map, compress): no Python step per member
        keys = list(map(operator.sub, pfns, slots if step == 1 else map(step.__mul__, slots)))
        cut = map(operator.ne, keys[1:], keys)
        if slots[-1] - slots[0] != n - 1:  # slots (increasing) with gaps: a gap ends a stretch too
            cut = map(operator.or_, cut, map(operator.ne, map(operator.sub, slots[1:], slots), itertools.repeat(1)))
        start = 0
        for i in itertools.compress(range(1, n), cut):
            yield start, i
            start = i
        yield start, n


def _moved(shifts: tuple[tuple[int, int], ...], raw: int) -> int:
    """The pfn bits `raw`'s frame bits spell (a linear map over XOR)."""
    pfn = 0
    for bits, shift in shifts:
        pfn ^= (raw & bits) >> shift if shift >= 0 else (raw & bits) << -shift
    return pfn


class FrameDecoder:
    """`arch.decode` for one paging mode, sharing the work between present leaves that
    differ only in frame-number bits.

    For the first present leaf of a level, each of its 64 bits is flipped and decoded:
    a bit whose flip changes nothing but the raw value and exactly one bit of the pfn
    (and the fields that spell the pfn) carries only the frame number.  Leaves equal
    outside those bits share a template (decoded once, its own frame bits verified the
    same way); any other leaf of that template differs from it only in verified frame
    bits, so its decode is the template's with its own raw value and the pfn bits moved
    accordingly.  Anything else is decoded in full.
    """

    def __init__(self, arch: Arch, mode: PagingMode, facts: KernelFacts) -> None:
        self.arch = arch
        self.mode = mode
        self.facts = facts
        self._key_mask: dict[int, int] = {}  # depth -> ~frame bits of its first present leaf
        self._templates: list[dict[int, _Template | None]] = [{} for _ in mode.levels]
        self._failed = [0 for _ in mode.levels]

    def decode(self, raw: int, depth: int) -> Decoded:
        mask = self._key_mask.get(depth)
        if mask is not None:
            t: _Template | None | Literal[False] = self._templates[depth].get(raw & mask, False)
            if t is None:
                return self.arch.decode(raw, depth, self.mode, self.facts)
            if t is not False:
                diff = raw ^ t.raw
                if not diff & ~t.frame_bits:
                    pfn = t.pfn
                    for bits, shift in t.shifts:
                        pfn ^= (diff & bits) >> shift if shift >= 0 else (diff & bits) << -shift
                    return _with_frame(t.dec, raw, pfn, t.pfn_fields)
                return self.arch.decode(raw, depth, self.mode, self.facts)
        dec = self.arch.decode(raw, depth, self.mode, self.facts)
        if dec.kind is Kind.PRESENT and dec.pfn is not None and self._failed[depth] < FAILED_TEMPLATES:
            template = self._template(raw, dec, depth)
            if template is None:
                self._failed[depth] += 1
            if mask is None:
                if template is None:
                    return dec
                mask = self._key_mask[depth] = ~template.frame_bits
            templates = self._templates[depth]
            if len(templates) >= TEMPLATES:
                templates.clear()
            templates[raw & mask] = template
        return dec

    def template(self, raw: int, depth: int) -> _Template | None:
        """The verified template `raw` shares (differs from only in frame bits), if one exists yet."""
        mask = self._key_mask.get(depth)
        if mask is None:
            return None
        t = self._templates[depth].get(raw & mask)
        if t is None or (raw ^ t.raw) & ~t.frame_bits:
            return None
        return t

    def _template(self, raw: int, dec: Decoded, depth: int) -> _Template | None:
        """The frame bits of `raw` (see the class), or None when it has none."""
        assert dec.pfn is not None
        spelled = f"{dec.pfn:#x}"
        pfn_fields = tuple(i for i, (_, text) in enumerate(dec.fields) if text == spelled)
        shifts: dict[int, int] = {}
        for b in range(64):
            other = self.arch.decode(raw ^ (1 << b), depth, self.mode, self.facts)
            if other.pfn is None:
                continue
            moved = other.pfn ^ dec.pfn
            if not moved or moved & (moved - 1):
                continue
            if len(other.fields) != len(dec.fields) or any(
                    other.fields[i][1] != f"{other.pfn:#x}" for i in pfn_fields):
                continue
            if _with_frame(other, raw, dec.pfn, pfn_fields) != dec:
                continue
            shift = b - (moved.bit_length() - 1)
            shifts[shift] = shifts.get(shift, 0) | 1 << b
        if not shifts:
            return None
        frame_bits = 0
        for bits in shifts.values():
            frame_bits |= bits
        return _Template(raw, dec, frame_bits, tuple((bits, shift) for shift, bits in shifts.items()), pfn_fields,
                         ~frame_bits, dec.cont is None, dec.pfn)


class Walker:
    """Walks one paging mode of one architecture over one reader."""

    def __init__(
        self,
        reader: PhysReader | TableCache,
        arch: Arch,
        mode: PagingMode,
        facts: KernelFacts,
        *,
        shared_decodes: bool = True,
    ) -> None:
        """`shared_decodes=False` decodes every value by itself (validation: a decoder
        wrong for one raw value must show), else through a FrameDecoder."""
        self.tables = reader if isinstance(reader, TableCache) else TableCache(reader)
        self.arch = arch
        self.mode = mode
        self.facts = facts
        self._frames = FrameDecoder(arch, mode, facts) if shared_decodes else None
        self._decode = (self._frames.decode if self._frames is not None
                        else lambda raw, depth: arch.decode(raw, depth, mode, facts))
        self._unpack = [struct.Struct(f"<{level.entries}Q").unpack for level in mode.levels]

    def table_bytes(self, depth: int) -> int:
        return self.mode.levels[depth].entries * ENTRY_BYTES

    def walk(
        self,
        root: int,
        *,
        upper: bool = False,
        va_range: tuple[int, int] | None = None,
        tables: bool = False,
    ) -> Iterator[Entry]:
        """Every non-none entry under `root` (leaves, softleaf entries, problems;
        table entries too when `tables`), in VA order.

        `upper` selects the upper VA half for roots that translate only one
        half (arm64 TTBR1); `va_range` is [start, end) in full 64-bit VAs.
        """
        for item in self._walk_table(root, 0, 0, upper, va_range, tables, frozenset(), False):
            if type(item) is LeafRun:
                yield from item.entries()
            else:
                yield item

    def walk_runs(
        self,
        root: int,
        *,
        upper: bool = False,
        va_range: tuple[int, int] | None = None,
        tables: bool = False,
    ) -> Iterator[Entry | LeafRun]:
        """walk(), with the plain present leaves of a table that share one decode
        (apart from the frame) given together as LeafRuns (needs shared decodes)."""
        assert self._frames is not None, "runs need shared decodes"
        return self._walk_table(root, 0, 0, upper, va_range, tables, frozenset(), True)

    def _walk_table(
        self,
        table: int,
        depth: int,
        va_base: int,
        upper: bool,
        va_range: tuple[int, int] | None,
        tables: bool,
        path: frozenset[int],
        runs: bool,
    ) -> Iterator[Entry | LeafRun]:
        level = self.mode.levels[depth]
        values = self._unpack[depth](self.tables.table(table, self.table_bytes(depth)))
        path = path | {table}
        shift, span = level.shift, level.span
        canonical, decode = self.arch.canonical, self._decode
        base = canonical(self.mode, va_base, upper)
        found: list[tuple[int, int, Decoded | _Template]] = []
        if runs and depth and (va_range is None or va_range[0] <= base and base + len(values) * span <= va_range[1]):
            found = self._scan_runs(values, depth, base, shift)
            values_left: Iterable[tuple[int, int]] = ()
        else:
            values_left = enumerate(values)
        template = self._frames.template if runs and depth and self._frames is not None else None
        for index, raw in values_left:
            if not raw:
                continue
            # below the root every index lies inside one half: only the low bits change
            va = canonical(self.mode, va_base | (index << shift), upper) if depth == 0 else base | (index << shift)
            if va_range is not None and not (va < va_range[1] and va + span > va_range[0]):
                continue
            if template is not None:
                t = template(raw, depth)
                if t is not None and t.plain:
                    found.append((index, va, t))
                    continue
            decoded = decode(raw, depth)
            if decoded.kind is not Kind.NONE:
                found.append((index, va, decoded))
        if depth + 1 < len(self.mode.levels):
            self.tables.prefetch((dec.next_table for _, _, dec in found
                                  if type(dec) is Decoded and dec.kind is Kind.TABLE and dec.next_table is not None
                                  and self._table_problem(dec, depth, path) is None),
                                 self.table_bytes(depth + 1))
        name, page_shift, present = level.name, self.mode.page_shift, Kind.PRESENT
        run: list[int] = []
        run_template: _Template | None = None
        for index, va, dec in found:
            if type(dec) is _Template:
                if dec is not run_template:
                    if run:
                        yield self._run(table, depth, base, run_template, run, values)
                    run, run_template = [], dec
                if type(index) is list:
                    run.extend(index)
                else:
                    run.append(index)
                continue
            if run:
                yield self._run(table, depth, base, run_template, run, values)
                run, run_template = [], None
            ref = EntryRef(table, index, depth, name)
            if dec.kind is present and dec.cont is None:
                yield Entry(va, span, ref, dec, None, None, dec.pfn, page_shift)  # what _leaf gives
                continue
            if dec.kind is Kind.TABLE:
                problem = self._table_problem(dec, depth, path) or self._unreadable(dec, depth)
                if problem:
                    yield Entry(va, span, ref, dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=problem))
                    continue
                if tables:
                    yield Entry(va, span, ref, dec)
                assert dec.next_table is not None
                yield from self._walk_table(dec.next_table, depth + 1, va_base | (index << shift), upper, va_range,
                                            tables, path, runs)
                continue
            yield self._leaf(va, ref, dec)
        if run:
            yield self._run(table, depth, base, run_template, run, values)

    def _scan_runs(self, values: tuple[int, ...], depth: int, base: int, shift: int) -> list[tuple]:
        """The found list of a table wholly inside the walked range, where plain leaves that
        share a template come as (slots, None, template): neighbours whose values agree outside
        the depth's frame bits are one group, decided once (this is where a large dump spends
        its time: per-entry work here is per-entry work for every table)."""
        assert self._frames is not None
        frames, decode, none = self._frames, self._decode, Kind.NONE
        templates = frames._templates[depth]
        found: list[tuple] = []
        nz = [i for i, raw in enumerate(values) if raw]
        pos, mask = 0, frames._key_mask.get(depth)
        while mask is None and pos < len(nz):  # no template at this depth yet: decode until one is made
            i = nz[pos]
            dec = decode(values[i], depth)
            if dec.kind is not none:
                found.append((i, base | (i << shift), dec))
            pos += 1
            mask = frames._key_mask.get(depth)
        if mask is None:
            return found
        pairs = [(i, values[i] & mask) for i in nz[pos:]]
        for key, group in itertools.groupby(pairs, key=operator.itemgetter(1)):
            t = templates.get(key)
            if t is not None and t.plain and t.fixed_bits == mask:  # key equality is membership
                found.append(([i for i, _ in group], None, t))
                continue
            for i, _ in group:
                raw = values[i]
                t = templates.get(raw & mask)
                if t is not None and t.plain and not (raw ^ t.raw) & t.fixed_bits:
                    found.append(([i], None, t))
                    continue
                dec = decode(raw, depth)
                if dec.kind is not none:
                    found.append((i, base | (i << shift), dec))
        return found

    def _run(self, table: int, depth: int, base: int, t: _Template | None, slots: list[int],
             values: tuple[int, ...]) -> LeafRun:
        assert t is not None and t.dec.pfn is not None
        level = self.mode.levels[depth]
        return LeafRun(table, depth, level.name, level.span, self.mode.page_shift, base, t.dec,
                       t.dec.pfn ^ _moved(t.shifts, t.raw), t.shifts, t.pfn_fields, tuple(slots),
                       tuple([values[i] for i in slots]))

    def translate(self, root: int, va: int, *, upper: bool = False) -> list[Entry]:
        """The walk of one VA, one entry per level visited, ending at the leaf,
        softleaf, none or problem entry that decides it (a NONE entry is kept here)."""
        path: list[Entry] = []
        table, seen = root, frozenset[int]()
        for depth, level in enumerate(self.mode.levels):
            index = (va >> level.shift) & (level.entries - 1)
            ref = EntryRef(table, index, depth, level.name)
            raw = ref.read(self.tables, level.entries)
            dec = self.arch.decode(raw, depth, self.mode, self.facts)
            entry_va = self.arch.canonical(self.mode, va & ~(level.span - 1) & ((1 << self.mode.va_bits) - 1), upper)
            seen = seen | {table}
            if dec.kind is Kind.TABLE:
                problem = self._table_problem(dec, depth, seen) or self._unreadable(dec, depth)
                if problem:
                    bad = dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=problem)
                    path.append(Entry(entry_va, level.span, ref, bad))
                    return path
                path.append(Entry(entry_va, level.span, ref, dec))
                assert dec.next_table is not None
                table = dec.next_table
                continue
            path.append(self._leaf(entry_va, ref, dec) if dec.kind is not Kind.NONE
                        else Entry(entry_va, level.span, ref, dec))
            return path
        return path

    def _table_problem(self, dec: Decoded, depth: int, path: frozenset[int]) -> str | None:
        nxt = dec.next_table
        if nxt is None or depth + 1 >= len(self.mode.levels):
            return "table entry at the last level"
        if nxt in path:
            return f"table pointer {nxt:#x} points back to a table on its own path (cycle)"
        if not self.tables.in_memory(nxt, self.table_bytes(depth + 1)):
            return f"table pointer {nxt:#x} is outside the target's memory"
        excluded = getattr(self.tables.reader, "excluded", None)  # vmcores: pages the dump's filter left out
        why = excluded(nxt, self.table_bytes(depth + 1)) if excluded is not None else None
        return None if why is None else f"table {nxt:#x} cannot be read: {why}"

    def _unreadable(self, dec: Decoded, depth: int) -> str | None:
        """Why the table `dec` points to cannot be read (the target refused the read), or None:
        read here, so that a refused table is this entry's problem, not the end of the walk."""
        assert dec.next_table is not None
        try:
            self.tables.table(dec.next_table, self.table_bytes(depth + 1))
        except RefusedRead as exc:
            return f"table {dec.next_table:#x} cannot be read: {exc}"
        return None

    def _leaf(self, va: int, ref: EntryRef, dec: Decoded) -> Entry:
        """A leaf entry with its block position, kernel view and own frame."""
        if dec.kind in SOFTLEAF_KINDS and in_kernel_half(self.arch, va):
            # The kernel never writes software-leaf entries in its own half: a non-present
            # kernel PTE (set_memory_np, DEBUG_PAGEALLOC, KFENCE) only looks like one.
            dec = dataclasses.replace(dec, kind=Kind.UNKNOWN, reason=(
                "not present: a kernel-half mapping, where the kernel writes no software-leaf "
                f"entries (as a softleaf it would read {dec.kind.value})"))
        cont = dec.cont
        span = self.mode.levels[ref.depth].span
        shift = self.mode.page_shift
        if cont is None or cont.entries <= 1:
            return Entry(va, span, ref, dec, frame=dec.pfn, page_shift=shift)
        entries = self.mode.levels[ref.depth].entries
        pos, block = ref.block(self.tables, entries, cont.entries)
        kernel_raw = self.arch.kernel_view(block, pos, ref.depth, self.mode, self.facts)
        kernel = None
        if kernel_raw != dec.raw:
            kernel = self.arch.decode(kernel_raw, ref.depth, self.mode, self.facts)
        position = BlockPosition(pos, va - pos * span, ref.index - pos)
        frame = dec.pfn
        if cont.same_value and frame is not None:
            frame += pos * (span >> shift)
        return Entry(va, span, ref, dec, kernel, position, frame, shift)
