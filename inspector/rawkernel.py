"""Kernel introspection: kernel memory read through a cached KernelLayout.

Release, facts, RAM, tasks, mm and VMAs, answered by reading the kernel's own
structures at the offsets the vmlinux's DWARF gave once (inspector/layout.py);
VMAs are named as /proc/PID/maps names them.  Answers
are plain data.  Every read failure and every structure that cannot be what
the kernel builds (a cycle, an unknown node type, a bound exceeded) raises
KernelError naming what was being read.  Results are cached per instance: a
RawKernel describes one stopped kernel.
"""
from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import cached_property

from archs.common import Fact, KernelFacts
from archs.versions import release_layout

from .kernel import KernelError, Vma, confirmation, derive_remaining
from .layout import KernelLayout
from .reader import ReadError

ReadVa = Callable[[int, int], bytes]  # (kernel virtual address, size) -> bytes; ReadError when it cannot

SOURCE = "debuginfo (cached layout)"

# include/linux/maple_tree.h (macros, so not in DWARF; the same in 6.1, 6.12 and 7.2)
MAPLE_NODE_MASK = 255
MAPLE_NODE_TYPE_SHIFT = 0x03
MAPLE_NODE_TYPE_MASK = 0x0F
MAPLE_HEIGHT_MAX = 31
ULONG_MAX = (1 << 64) - 1
# include/linux/xarray.h: xa_is_internal() is (entry & 3) == 2; xa_is_node() is internal and > 4096.
XA_INTERNAL = 2

# Bounds that no kernel reaches; passing one means the structure is not what the kernel built.
MAX_TASKS = 1 << 22  # PID_MAX_LIMIT (include/linux/threads.h)
MAX_MAPLE_NODES = 1 << 20  # vm.max_map_count is 65530 by default (also the bound of a VMA list)
MAX_PATH_DEPTH = 4096  # PATH_MAX components of at least one byte
MAX_STRING = 4096
MAX_MEMBLOCK_REGIONS = 1 << 20


@dataclass(frozen=True)
class Task:
    """A task_struct: its pid, comm, address and mm (0 for a kernel thread)."""

    pid: int
    comm: str
    address: int
    mm: int


class _Fields:
    """A few members of one structure, read together as one span."""

    def __init__(self, what: str, spots: dict[str, tuple[int, int]], whole: int | None = None) -> None:
        """`whole`: read the whole structure of that size, not just the members' span."""
        self.what = what
        self.lo = 0 if whole else min(off for off, _ in spots.values())
        self.size = whole or max(off + size for off, size in spots.values()) - self.lo
        self.at = {name: (off - self.lo, size) for name, (off, size) in spots.items()}

    def read(self, kernel: RawKernel, address: int) -> dict[str, int]:
        return self.read_span(kernel, address)[0]

    def read_span(self, kernel: RawKernel, address: int) -> tuple[dict[str, int], bytes]:
        """The members as integers, and the span's bytes."""
        blob = kernel.read(address + self.lo, self.size, f"{self.what} at {address:#x}")
        return {name: int.from_bytes(blob[off:off + size], "little") for name, (off, size) in self.at.items()}, blob

    def raw(self, blob: bytes, name: str) -> bytes:
        off, size = self.at[name]
        return blob[off:off + size]


class RawKernel:
    """Questions about a kernel, answered from its memory and a KernelLayout."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        if layout.arch != arch:
            raise KernelError(f"the layout is of an {layout.arch} kernel, the target is {arch}")
        self.layout = layout
        self.read_va = read_va
        self.kaslr_offset = kaslr_offset
        self.arch = arch
        m = layout.members
        (nxt, ptr), prv = m["list_head.next"], m["list_head.prev"][0]
        tasks, thread = m["task_struct.tasks"][0], m["task_struct.thread_node"][0]
        self._task = _Fields("task_struct", {
            "tasks_next": (tasks + nxt, ptr), "thread_next": (thread + nxt, ptr), "thread_prev": (thread + prv, ptr),
            **{n: m[f"task_struct.{n}"] for n in ("pid", "comm", "mm", "signal")}})
        # The VMAs: the maple tree mm->mm_mt (6.1+), else the list mm->mmap / vma->vm_next (the vmlinux's
        # DWARF says which; layout.py OPTIONAL_MEMBERS has the commits).
        self._vma_list = "mm_struct.mm_mt" not in m
        if self._vma_list and ("mm_struct.mmap" not in m or "vm_area_struct.vm_next" not in m):
            raise KernelError("the vmlinux's mm_struct has neither mm_mt (the maple tree, 6.1+) nor mmap with "
                              "vm_area_struct.vm_next (the VMA list before 6.1): cannot find the VMAs")
        roots = {"first_vma": m["mm_struct.mmap"]} if self._vma_list else {
            "ma_root": (m["mm_struct.mm_mt"][0] + m["maple_tree.ma_root"][0], m["maple_tree.ma_root"][1])}
        self._mm = _Fields("mm_struct", {
            **roots, **{n: m[f"mm_struct.{n}"] for n in ("pgd", "start_brk", "brk", "start_stack")}})
        self._vma = _Fields("vm_area_struct", {n: m[f"vm_area_struct.{n}"] for n in (
            "vm_start", "vm_end", "vm_mm", "vm_flags", "vm_ops", "vm_file", "vm_private_data",
            *(n for n in ("anon_name", "vm_next") if f"vm_area_struct.{n}" in m))})
        dname = m["dentry.d_name"][0]
        # The whole dentry: a short name is stored inside it (d_iname, 7.2 d_shortname), read with it.
        self._dentry = _Fields("dentry", {
            "d_parent": m["dentry.d_parent"], "d_op": m["dentry.d_op"], "d_inode": m["dentry.d_inode"],
            "d_hash_pprev": (m["dentry.d_hash"][0] + m["hlist_bl_node.pprev"][0], m["hlist_bl_node.pprev"][1]),
            "len": (dname + m["qstr.len"][0], m["qstr.len"][1]),
            "name": (dname + m["qstr.name"][0], m["qstr.name"][1])}, whole=layout.sizes["dentry"])
        vfs = m["mount.mnt"][0]
        self._mount = _Fields("mount", {
            "mnt_parent": m["mount.mnt_parent"], "mnt_mountpoint": m["mount.mnt_mountpoint"],
            "mnt_root": (vfs + m["vfsmount.mnt_root"][0], m["vfsmount.mnt_root"][1])})
        fpath = m["file.f_path"][0]
        self._file = _Fields("file", {"mnt": (fpath + m["path.mnt"][0], m["path.mnt"][1]),
                                      "dentry": (fpath + m["path.dentry"][0], m["path.dentry"][1])})
        # Per maple_type: (pivot offset, pivots, slot offset, slots, metadata end offset) in a maple_node.
        self._maple_shapes: dict[int, tuple[int, int, int, int, int]] = {}
        if not self._vma_list:
            types = layout.enums["maple_type"]
            self._maple_leaf, self._maple_arange = types["maple_leaf_64"], types["maple_arange_64"]
            for kind, name, union in (("maple_leaf_64", "maple_range_64", "mr64"),
                                      ("maple_range_64", "maple_range_64", "mr64"),
                                      ("maple_arange_64", "maple_arange_64", "ma64")):
                base = m[f"maple_node.{union}"][0]
                self._maple_shapes[types[kind]] = (
                    base + m[f"{name}.pivot"][0], layout.lengths[f"{name}.pivot"],
                    base + m[f"{name}.slot"][0], layout.lengths[f"{name}.slot"],
                    base + m[f"{name}.meta"][0] + m["maple_metadata.end"][0])
            self._node_size = layout.sizes["maple_node"]
        self._tasks: list[Task] | None = None
        self._mm_cache: dict[int, dict[str, int]] = {}
        self._files: dict[int, str] = {}
        self._dname_ops: dict[int, int] = {}
        self._dentries: dict[int, tuple[dict[str, int], bytes]] = {}
        self._mounts: dict[int, dict[str, int]] = {}
        self._vm_ops_names: dict[int, int] = {}
        self._strings: dict[int, bytes] = {}

    # -- reading --------------------------------------------------------------------------------

    def read(self, va: int, size: int, what: str) -> bytes:
        """`size` bytes at kernel address `va`; KernelError naming `what` when they cannot be read."""
        try:
            data = self.read_va(va, size)
        except ReadError as exc:  # the reader's contract: unmapped or unreadable memory
            raise KernelError(f"cannot read {what} ({size} bytes at {va:#x}): {exc}") from exc
        if len(data) != size:
            raise KernelError(f"reading {what} at {va:#x} gave {len(data)} of {size} bytes")
        return data

    def _int(self, va: int, size: int, what: str) -> int:
        return int.from_bytes(self.read(va, size, what), "little")

    def _ptr(self, va: int, what: str) -> int:
        return self._int(va, 8, what)

    def _string(self, va: int, what: str, limit: int = MAX_STRING) -> bytes:
        """A NUL-terminated string, read up to page boundaries so that no read passes its end."""
        if va in self._strings:
            return self._strings[va]
        out = b""
        while len(out) < limit:
            cur = va + len(out)
            chunk = self.read(cur, min(limit - len(out), 4096 - (cur & 0xFFF)), what)
            nul = chunk.find(b"\0")
            if nul >= 0:
                self._strings[va] = out + chunk[:nul]
                return self._strings[va]
            out += chunk
        raise KernelError(f"{what} at {va:#x} has no NUL in {limit} bytes")

    def symbol(self, name: str) -> int:
        """The run-time address of a symbol (its link-time address plus the KASLR offset)."""
        try:
            return self.layout.symbols[name] + self.kaslr_offset
        except KeyError:
            raise KernelError(f"the vmlinux has no symbol {name}") from None

    def _member(self, name: str) -> int:
        return self.layout.members[name][0]

    # -- release and facts ----------------------------------------------------------------------

    @property
    def release(self) -> str:
        """init_uts_ns.name.release (uname -r)."""
        off, size = self.layout.members["uts_namespace.name.release"]
        raw = self.read(self.symbol("init_uts_ns") + off, size, "init_uts_ns.name.release")
        return raw.split(b"\0", 1)[0].decode(errors="replace")

    def facts(self, config: dict[str, bool] | None = None, config_source: str = "config") -> KernelFacts:
        """KernelFacts with the names and values Kernel.facts gives, from the cached layout.

        MAX_SWAPFILES is the bound of swap_info[] (mm/swapfile.c); CONFIG_MEMORY_FAILURE and
        CONFIG_MIGRATION the presence of memory_failure() and migrate_pages() when no config
        says; the rest is derive_remaining's, as in Kernel.facts.
        """
        release = self.release
        try:
            layout = release_layout(release, self.arch)
        except ValueError as exc:
            raise KernelError(str(exc)) from None
        facts: dict[str, Fact] = {}
        if config:
            for name, value in config.items():
                facts[name] = Fact(value, config_source)
        max_swapfiles = self.layout.lengths["swap_info"]
        facts["MAX_SWAPFILES"] = Fact(max_swapfiles, f"{SOURCE}: bound of swap_info[]")
        for option, symbol in (("CONFIG_MEMORY_FAILURE", "memory_failure"), ("CONFIG_MIGRATION", "migrate_pages")):
            if option not in facts:
                present = symbol in self.layout.symbols
                facts[option] = Fact(present, f"{SOURCE}: symbol {symbol} {'present' if present else 'absent'}")
        facts.update(derive_remaining(layout, facts, max_swapfiles))
        if layout.assumed:
            layout = replace(layout, assumed=f"{layout.assumed}; {confirmation(layout, facts, max_swapfiles)}")
        if "swap_migration_ad_supported" in self.layout.symbols:
            ad = self._int(self.symbol("swap_migration_ad_supported"),
                           self.layout.variable_sizes["swap_migration_ad_supported"], "swap_migration_ad_supported")
            facts["swap_migration_ad_supported"] = Fact(bool(ad), f"{SOURCE}: swap_migration_ad_supported")
        facts.update(self._swap_devices())
        if "cpuinfo_x86.x86_phys_bits" in self.layout.members:  # x86 only (struct cpuinfo_x86)
            off, size = self.layout.members["cpuinfo_x86.x86_phys_bits"]
            bits = self._int(self.symbol("boot_cpu_data") + off, size, "boot_cpu_data.x86_phys_bits")
            facts["phys_addr_bits"] = Fact(bits, f"{SOURCE}: boot_cpu_data.x86_phys_bits")
        return KernelFacts(layout=layout, release=release, facts=facts)

    def _swap_devices(self) -> dict[str, Fact]:
        """"nr_swapfiles" and, per SWP_USED device, "swap_info[N].max" (see Kernel._swap_devices).
        They matter only to check swap entries, so memory that cannot be read (a swap_info_struct
        a vmcore's filter excluded) leaves them unknown, with the reason as "swap_devices"."""
        try:
            return self._read_swap_devices()
        except KernelError as exc:
            if not isinstance(exc.__cause__, ReadError):  # a value no kernel holds: the error stands
                raise
            return {"swap_devices": Fact(None, f"unknown: {exc}")}

    def _read_swap_devices(self) -> dict[str, Fact]:
        n = self._int(self.symbol("nr_swapfiles"), self.layout.variable_sizes["nr_swapfiles"], "nr_swapfiles")
        bound = self.layout.lengths["swap_info"]
        if n > bound:
            raise KernelError(f"nr_swapfiles is {n}, more than swap_info[] holds ({bound})")
        out = {"nr_swapfiles": Fact(n, f"{SOURCE}: nr_swapfiles")}
        pointers = self.read(self.symbol("swap_info"), 8 * n, "swap_info[]") if n else b""
        fields = _Fields("swap_info_struct", {k: self.layout.members[f"swap_info_struct.{k}"]
                                              for k in ("flags", "max")})
        swp_used = self.layout.constants["SWP_USED"]
        for i in range(n):
            si = int.from_bytes(pointers[8 * i:8 * i + 8], "little")
            if not si:
                continue
            values = fields.read(self, si)
            if values["flags"] & swp_used:
                out[f"swap_info[{i}].max"] = Fact(values["max"], f"{SOURCE}: swap_info[{i}]->max")
        return out

    def ram_ranges(self) -> list[tuple[int, int]]:
        """Physical memory from memblock.memory (the kernel's own map of RAM)."""
        m = self.layout.members
        memory = self.symbol("memblock") + m["memblock.memory"][0]
        t = _Fields("memblock.memory", {k: m[f"memblock_type.{k}"] for k in ("cnt", "max", "regions")}
                    ).read(self, memory)
        cnt, regions = t["cnt"], t["regions"]
        if cnt > t["max"] or cnt > MAX_MEMBLOCK_REGIONS:
            raise KernelError(f"memblock.memory has cnt {cnt} but room for {t['max']}")
        size = self.layout.sizes["memblock_region"]
        data = self.read(regions, cnt * size, "memblock.memory.regions[]")
        (boff, bsize), (soff, ssize) = m["memblock_region.base"], m["memblock_region.size"]
        out = []
        for i in range(cnt):
            base = int.from_bytes(data[i * size + boff:i * size + boff + bsize], "little")
            length = int.from_bytes(data[i * size + soff:i * size + soff + ssize], "little")
            out.append((base, base + length))
        return out

    # -- tasks ----------------------------------------------------------------------------------

    def _list_next(self, head: int, what: str) -> int:
        return self._ptr(head + self._member("list_head.next"), f"{what} head")

    def tasks(self) -> list[Task]:
        """Every task but the idle tasks: each process on init_task.tasks and each of its threads
        on signal->thread_head (include/linux/sched/signal.h for_each_process_thread)."""
        if self._tasks is None:
            tasks_off = self._member("task_struct.tasks")
            head = self.symbol("init_task") + tasks_off
            node = self._list_next(head, "init_task.tasks")
            seen = {head}
            out: list[Task] = []
            while node != head:
                if node in seen or len(seen) > MAX_TASKS:
                    raise KernelError(f"init_task.tasks does not return to its head (at {node:#x}, "
                                      f"after {len(seen)} entries)")
                seen.add(node)
                leader = self._task.read_span(self, node - tasks_off)
                out.extend(self._threads(node - tasks_off, leader))
                node = leader[0]["tasks_next"]
            self._tasks = out
        return self._tasks

    def _threads(self, leader: int, read: tuple[dict[str, int], bytes]) -> Iterator[Task]:
        """The threads of a process, the leader's own fields already read."""
        node_off = self._member("task_struct.thread_node")
        fields = read[0]
        if not fields["signal"]:
            raise KernelError(f"task {fields['pid']} at {leader:#x} has no signal_struct")
        head = fields["signal"] + self._member("signal_struct.thread_head")
        what = f"thread list of pid {fields['pid']}"
        # The leader is normally first: its prev is the head, so head->next need not be read.
        node = leader + node_off if fields["thread_prev"] == head else self._list_next(head, what)
        seen = {head}
        while node != head:
            if node in seen or len(seen) > MAX_TASKS:
                raise KernelError(f"{what} does not return to its head (at {node:#x})")
            seen.add(node)
            address = node - node_off
            t, blob = read if address == leader else self._task.read_span(self, address)
            comm = self._task.raw(blob, "comm").split(b"\0", 1)[0].decode(errors="replace")
            yield Task(t["pid"], comm, address, t["mm"])
            node = t["thread_next"]

    def find_task(self, pid: int | None = None, comm: str | None = None) -> Task:
        """The task with a pid (any thread), or the one user task named `comm`."""
        if pid is not None:
            for task in self.tasks():
                if task.pid == pid:
                    return task
            raise KernelError(f"no task with pid {pid}")
        matches = sorted((t for t in self.tasks() if t.comm == comm and t.mm), key=lambda t: t.pid)
        if not matches:
            raise KernelError(f"no user task named {comm!r}")
        if len(matches) > 1:
            pids = ", ".join(str(t.pid) for t in matches)
            raise KernelError(f"{len(matches)} tasks are named {comm!r} (pids {pids}); pick one with --pid")
        return matches[0]

    def task_mm(self, task: Task) -> int:
        """The task's mm_struct address; KernelError for a kernel thread."""
        if not task.mm:
            raise KernelError(f"task {task.pid} ({task.comm}) is a kernel thread: it has no mm")
        return task.mm

    def init_mm(self) -> int:
        return self.symbol("init_mm")

    def pgd(self, mm: int) -> int:
        """mm->pgd: the kernel virtual address of the mm's top-level table."""
        return self._ptr(mm + self._member("mm_struct.pgd"), f"mm_struct.pgd of mm {mm:#x}")

    # -- VMAs -----------------------------------------------------------------------------------

    def _mm_fields(self, mm: int) -> dict[str, int]:
        if mm not in self._mm_cache:
            self._mm_cache[mm] = self._mm.read(self, mm)
        return self._mm_cache[mm]

    def vmas(self, mm: int) -> Iterator[Vma]:
        """The mm's VMAs in address order, from its maple tree mm->mm_mt (6.1+) or its list mm->mmap
        (before 6.1), named as /proc/PID/maps names them ("[anon]" where it gives no name)."""
        if self._vma_list:
            yield from self._listed_vmas(mm)
            return
        root = self._mm_fields(mm)["ma_root"]
        for first, last, entry in self._maple_entries(root, f"mm_mt of mm {mm:#x}"):
            if entry & 7:
                raise KernelError(f"mm_mt of mm {mm:#x}: slot for {first:#x}-{last:#x} holds {entry:#x}, "
                                  "not a vm_area_struct pointer")
            v = self._vma.read(self, entry)
            start, end = v["vm_start"], v["vm_end"]
            if (start, end - 1) != (first, last):
                raise KernelError(f"mm_mt of mm {mm:#x}: the vm_area_struct at {entry:#x} covers "
                                  f"{start:#x}-{end:#x} but the tree says {first:#x}-{last + 1:#x}")
            yield Vma(start, end, v["vm_flags"], self._vma_name(entry, v) or "[anon]")

    def _listed_vmas(self, mm: int) -> Iterator[Vma]:
        """The VMAs on mm->mmap, linked by vm_next in address order (mm/mmap.c __vma_link_list, before
        6.1); a cycle, an unordered or overlapping VMA, or one of another mm raises KernelError."""
        what = f"the VMA list mm->mmap of mm {mm:#x}"
        vma, previous_end = self._mm_fields(mm)["first_vma"], 0
        seen: set[int] = set()
        while vma:
            if vma in seen or len(seen) >= MAX_MAPLE_NODES:
                raise KernelError(f"{what} does not end (the vm_area_struct at {vma:#x} again, or over "
                                  f"{MAX_MAPLE_NODES} VMAs)")
            seen.add(vma)
            v = self._vma.read(self, vma)
            start, end = v["vm_start"], v["vm_end"]
            if v["vm_mm"] != mm or not previous_end <= start < end:
                raise KernelError(f"{what}: the vm_area_struct at {vma:#x} ({start:#x}-{end:#x}, vm_mm "
                                  f"{v['vm_mm']:#x}) is not the next VMA of this mm after {previous_end:#x}")
            previous_end = end
            yield Vma(start, end, v["vm_flags"], self._vma_name(vma, v) or "[anon]")
            vma = v["vm_next"]

    def _maple_entries(self, root: int, what: str) -> Iterator[tuple[int, int, int]]:
        """(first, last, entry) of every non-NULL, non-internal leaf slot of a maple tree whose
        ma_root is `root`, in index order (lib/maple_tree.c: mte_to_node, mte_node_type,
        ma_data_end, ma_is_leaf)."""
        if not root:
            return
        if root & 3 != XA_INTERNAL or root <= 4096:
            raise KernelError(f"{what}: ma_root {root:#x} is not a maple node")
        shapes = self._maple_shapes
        leaf, arange64 = self._maple_leaf, self._maple_arange
        parent_off = self._member("maple_node.parent")
        seen: set[int] = set()
        stack = [(root, 0, ULONG_MAX, 0)]  # (encoded node, min, max, depth)
        while stack:
            enode, lo, hi, depth = stack.pop()
            node = enode & ~MAPLE_NODE_MASK
            kind = (enode >> MAPLE_NODE_TYPE_SHIFT) & MAPLE_NODE_TYPE_MASK
            where = f"{what}: node {enode:#x} ({lo:#x}-{hi:#x})"
            if kind not in shapes:
                raise KernelError(f"{where} has maple_type {kind}, not leaf_64, range_64 or arange_64")
            if node in seen:
                raise KernelError(f"{where} is reached twice: the tree has a cycle")
            if depth >= MAPLE_HEIGHT_MAX or len(seen) >= MAX_MAPLE_NODES:
                raise KernelError(f"{where}: deeper than {MAPLE_HEIGHT_MAX} or more than {MAX_MAPLE_NODES} nodes")
            seen.add(node)
            data = self.read(node, self._node_size, f"maple node {enode:#x} of {what}")
            if int.from_bytes(data[parent_off:parent_off + 8], "little") & ~MAPLE_NODE_MASK == node:
                raise KernelError(f"{where} is dead (its parent is itself): freed while in the tree")
            pivot_off, npivots, slot_off, nslots, end_off = shapes[kind]
            pivots = struct.unpack_from(f"<{npivots}Q", data, pivot_off)
            slots = struct.unpack_from(f"<{nslots}Q", data, slot_off)
            end = self._data_end(kind == arange64, pivots, data[end_off], hi)
            if end >= nslots:
                raise KernelError(f"{where}: data end {end} is past its {nslots} slots")
            ranges = []
            first = lo
            for offset in range(end + 1):
                last = pivots[offset] if offset < end else hi
                if not first <= last <= hi:
                    raise KernelError(f"{where}: pivot {offset} ({last:#x}) is outside {first:#x}-{hi:#x}")
                ranges.append((first, last, slots[offset]))
                first = last + 1
            if kind == leaf:
                for first, last, entry in ranges:
                    if entry and entry & 3 != XA_INTERNAL:  # NULL, XA_ZERO_ENTRY and other internal entries
                        yield first, last, entry
            else:
                for first, last, child in reversed(ranges):
                    if not child:
                        raise KernelError(f"{where}: child slot for {first:#x}-{last:#x} is NULL")
                    stack.append((child, first, last, depth + 1))

    @staticmethod
    def _data_end(arange: bool, pivots: tuple[int, ...], meta_end: int, hi: int) -> int:
        """The offset of the last slot with data (lib/maple_tree.c ma_data_end)."""
        if arange:
            return meta_end
        last = len(pivots) - 1
        if not pivots[last]:
            return meta_end
        if pivots[last] == hi:
            return last
        return len(pivots)

    def _vma_name(self, vma: int, v: dict[str, int]) -> str:
        """The name /proc/PID/maps gives the VMA (fs/proc/task_mmu.c get_vma_name), "" for none."""
        mm, vm_file = v["vm_mm"], v["vm_file"]
        layout = self.layout
        anon_name = v.get("anon_name", 0)
        if vm_file:
            # 5.17-6.1: anon_name shares a union with vma->shared and means something only without a file.
            if mm and anon_name and layout.members["vm_area_struct.anon_name"][0] != \
                    layout.members["vm_area_struct.shared"][0]:
                return f"[anon_shmem:{self._anon_name(anon_name)}]"
            return self._d_path(vm_file)
        vm_ops = v["vm_ops"]
        name_fn = self._vm_ops_name(vm_ops) if vm_ops else 0
        if name_fn and name_fn == self.layout.symbols.get("special_mapping_name", -1) + self.kaslr_offset:
            pointer = self._ptr(v["vm_private_data"] + self._member("vm_special_mapping.name"),
                                f"vm_special_mapping.name of the vma at {vma:#x}")
            return self._string(pointer, f"special mapping name of the vma at {vma:#x}").decode(errors="replace")
        if name_fn:  # another vm_ops->name(): what it returns cannot be read from memory
            return f"[named by vm_ops->name {name_fn:#x}: not derived]"
        if not mm:
            return "[vdso]"
        f = self._mm_fields(mm)
        start, end = v["vm_start"], v["vm_end"]
        start_brk, brk, start_stack = f["start_brk"], f["brk"], f["start_stack"]
        heap = start < brk and end > start_brk  # vma_is_initial_heap (include/linux/mm.h, 6.6+)
        if heap != (start <= brk and end >= start_brk) and not self._initial_heap_strict:
            heap = True  # a VMA touching the heap's bounds: 6.1's show_map_vma counts it
        if heap:
            return "[heap]"
        if start <= start_stack <= end:  # vma_is_initial_stack; 6.1 is_stack
            return "[stack]"
        if anon_name:
            return f"[anon:{self._anon_name(anon_name)}]"
        return ""

    @cached_property
    def _initial_heap_strict(self) -> bool:
        """Whether [heap] excludes VMAs that only touch start_brk/brk: vma_is_initial_heap's
        strict test since 6.6 (mm: factor out VMA stack and heap checks), 6.1's inclusive one before."""
        match = re.match(r"(\d+)\.(\d+)", self.release)
        return match is None or (int(match.group(1)), int(match.group(2))) >= (6, 6)

    def _anon_name(self, anon_name: int) -> str:
        name = self._string(anon_name + self._member("anon_vma_name.name"), f"anon_vma_name at {anon_name:#x}")
        return name.decode(errors="replace")

    def _vm_ops_name(self, vm_ops: int) -> int:
        """vm_ops->name: the function /proc/PID/maps calls for a name, 0 if none."""
        if vm_ops not in self._vm_ops_names:
            self._vm_ops_names[vm_ops] = self._ptr(vm_ops + self._member("vm_operations_struct.name"),
                                              f"vm_operations_struct.name at {vm_ops:#x}")
        return self._vm_ops_names[vm_ops]

    def _dentry_at(self, dentry: int) -> tuple[dict[str, int], bytes]:
        if dentry not in self._dentries:
            self._dentries[dentry] = self._dentry.read_span(self, dentry)
        return self._dentries[dentry]

    def _mount_at(self, mount: int) -> dict[str, int]:
        if mount not in self._mounts:
            self._mounts[mount] = self._mount.read(self, mount)
        return self._mounts[mount]

    def _d_path(self, file: int) -> str:
        """d_path() of file->f_path (fs/d_path.c) from the global root: the name d_op->d_dname
        makes for pseudo files, else the path across mounts, " (deleted)" when unlinked."""
        if file not in self._files:
            f = self._file.read(self, file)
            self._files[file] = self._path(f["mnt"] - self._member("mount.mnt"), f["dentry"], file)
        return self._files[file]

    def _path(self, mount: int, dentry: int, file: int) -> str:
        d, blob = self._dentry_at(dentry)
        is_root = d["d_parent"] == dentry
        dname = self._d_dname(d["d_op"])
        if dname and (not is_root or dentry != self._mount_at(mount)["mnt_root"]):
            return self._dname_name(dname, dentry, d, blob)
        deleted = not d["d_hash_pprev"] and not is_root  # d_unlinked (include/linux/dcache.h)
        components: list[bytes] = []
        for _ in range(MAX_PATH_DEPTH):
            mnt = self._mount_at(mount)
            if dentry == mnt["mnt_root"]:
                parent = mnt["mnt_parent"]
                if parent == mount:
                    break
                dentry, mount = mnt["mnt_mountpoint"], parent
                continue
            d, blob = self._dentry_at(dentry)
            if d["d_parent"] == dentry:
                break
            components.append(self._dentry_name(dentry, d, blob))
            dentry = d["d_parent"]
        else:
            raise KernelError(f"the path of file {file:#x} is deeper than {MAX_PATH_DEPTH}: a dentry or mount cycle")
        path = (b"/" + b"/".join(reversed(components))).decode(errors="replace")
        return path + " (deleted)" if deleted else path

    def _d_dname(self, d_op: int) -> int:
        """d_op->d_dname, 0 if none."""
        if not d_op:
            return 0
        if d_op not in self._dname_ops:
            self._dname_ops[d_op] = self._ptr(d_op + self._member("dentry_operations.d_dname"),
                                              f"dentry_operations.d_dname at {d_op:#x}")
        return self._dname_ops[d_op]

    def _dname_name(self, dname: int, dentry: int, d: dict[str, int], blob: bytes) -> str:
        """What d_op->d_dname writes: simple_dname "/name (deleted)" (shmem, hugetlbfs and memfd
        files), anon_inodefs_dname "anon_inode:name"; another d_dname is named as not derived."""
        name = self._dentry_name(dentry, d, blob).decode(errors="replace")
        symbols = self.layout.symbols
        if dname == symbols.get("simple_dname", -1) + self.kaslr_offset:
            return f"/{name} (deleted)"
        if dname == symbols.get("anon_inodefs_dname", -1) + self.kaslr_offset:
            return f"anon_inode:{name}"
        return f"[{self._fs_type(d['d_inode'])} file {name!r}, named by d_dname {dname:#x}: not derived]"

    def _dentry_name(self, dentry: int, d: dict[str, int], whole: bytes) -> bytes:
        length, name = d["len"], d["name"]
        if length > MAX_STRING:
            raise KernelError(f"dentry {dentry:#x} has a name of {length} bytes")
        if dentry <= name and name + length <= dentry + len(whole):  # a short name, inside the dentry
            return whole[name - dentry:name - dentry + length]
        return self.read(name, length, f"d_name of dentry {dentry:#x}")

    def _fs_type(self, inode: int) -> str:
        """d_inode->i_sb->s_type->name."""
        m = self.layout.members
        sb = self._ptr(inode + m["inode.i_sb"][0], f"inode.i_sb at {inode:#x}")
        fstype = self._ptr(sb + m["super_block.s_type"][0], f"super_block.s_type at {sb:#x}")
        name = self._ptr(fstype + m["file_system_type.name"][0], f"file_system_type.name at {fstype:#x}")
        return self._string(name, f"file system type name at {name:#x}").decode(errors="replace")
