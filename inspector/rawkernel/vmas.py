"""An mm's VMAs, from its maple tree (6.1+) or its mmap list (before), named as /proc/PID/maps names them."""
from __future__ import annotations

import re
from collections.abc import Iterator
from functools import cached_property

from ..kernel import KernelError, Vma
from ..layout import KernelLayout
from .facts import ReleaseFacts
from .maple import MAX_MAPLE_NODES, MapleTree
from .memory import ReadVa, _Fields
from .paths import Paths


class Vmas(MapleTree, Paths, ReleaseFacts):
    """mm_struct and vm_area_struct (mm/mmap.c, fs/proc/task_mmu.c)."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        super().__init__(layout, read_va, kaslr_offset, arch)
        m = layout.members
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
        self._mm_cache: dict[int, dict[str, int]] = {}
        self._vm_ops_names: dict[int, int] = {}

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
