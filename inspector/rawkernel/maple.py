"""The maple tree (lib/maple_tree.c), as the VMAs of an mm are kept in it from 6.1."""
from __future__ import annotations

import struct
from collections.abc import Iterator

from ..kernel import KernelError
from ..layout import KernelLayout
from .memory import KernelMemory, ReadVa

# include/linux/maple_tree.h (macros, so not in DWARF; the same in 6.1, 6.12 and 7.2)
MAPLE_NODE_MASK = 255
MAPLE_NODE_TYPE_SHIFT = 0x03
MAPLE_NODE_TYPE_MASK = 0x0F
MAPLE_HEIGHT_MAX = 31
ULONG_MAX = (1 << 64) - 1
# include/linux/xarray.h: xa_is_internal() is (entry & 3) == 2; xa_is_node() is internal and > 4096.
XA_INTERNAL = 2
MAX_MAPLE_NODES = 1 << 20  # vm.max_map_count is 65530 by default (also the bound of a VMA list)


class MapleTree(KernelMemory):
    """Every entry of a maple tree of the kernel's, in index order."""

    def __init__(self, layout: KernelLayout, read_va: ReadVa, kaslr_offset: int, arch: str) -> None:
        super().__init__(layout, read_va, kaslr_offset, arch)
        m = layout.members
        # Per maple_type: (pivot offset, pivots, slot offset, slots, metadata end offset) in a maple_node.
        self._maple_shapes: dict[int, tuple[int, int, int, int, int]] = {}
        if "mm_struct.mm_mt" in m:  # a kernel with maple trees (6.1+)
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
