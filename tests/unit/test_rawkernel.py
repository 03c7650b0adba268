"""RawKernel on synthetic kernel memory laid out with real kernels' layouts: maple trees encoded
as lib/maple_tree.c encodes them, task lists, dentries and mounts; and every kind of damage
(cycles, unknown node types, bad pivots, freed nodes, unreadable memory) giving KernelError."""
from __future__ import annotations

import pytest

from ptinspect.inspector.kernel import KernelError, Vma
from ptinspect.inspector.layout import KernelLayout, layout_for
from ptinspect.inspector.rawkernel import RawKernel
from ptinspect.inspector.reader import ReadError
from ptinspect.inspector.vm.images import ensure_image, image_for

KASLR = 0x3A00000
HEAP = 0xFFFF888000100000
ULONG_MAX = (1 << 64) - 1
# lib/maple_tree.c: mt_mk_node() = node | type << MAPLE_ENODE_TYPE_SHIFT (3) | MAPLE_ENODE_NULL (4);
# mte_mk_root() adds MAPLE_ROOT_NODE (2); the root's parent is the tree | MA_ROOT_PARENT (1).
XA_ZERO_ENTRY = 257 << 2 | 2  # xa_mk_internal(257), include/linux/xarray.h
VM_READ, VM_WRITE = 0x1, 0x2


class Memory:
    """Kernel memory mapped page by page; a read touching an unmapped page fails."""

    def __init__(self, layout: KernelLayout) -> None:
        self.layout = layout
        self.pages: dict[int, bytearray] = {}
        self.next = HEAP
        self.reads = 0

    def map(self, va: int, size: int) -> None:
        for page in range(va >> 12, ((va + size - 1) >> 12) + 1):
            self.pages.setdefault(page, bytearray(4096))

    def alloc(self, size: int, align: int = 256) -> int:
        addr = (self.next + align - 1) & ~(align - 1)
        self.next = addr + size
        self.map(addr, size)
        return addr

    def struct(self, name: str) -> int:
        return self.alloc(self.layout.sizes[name])

    def at_symbol(self, name: str, size: int) -> int:
        addr = self.layout.symbols[name] + KASLR
        self.map(addr, size)
        return addr

    def _chunks(self, va: int, size: int) -> list[tuple[bytearray, int, int]]:
        out = []
        while size:
            n = min(size, 4096 - (va & 0xFFF))
            if va >> 12 not in self.pages:
                raise ReadError(f"kernel address {va:#x} is not mapped")
            out.append((self.pages[va >> 12], va & 0xFFF, n))
            va, size = va + n, size - n
        return out

    def write(self, va: int, data: bytes) -> None:
        at = 0
        for page, off, n in self._chunks(va, len(data)):
            page[off:off + n] = data[at:at + n]
            at += n

    def set(self, base: int, member: str, value: int | bytes) -> None:
        off, size = self.layout.members[member]
        self.write(base + off, value if isinstance(value, bytes) else value.to_bytes(size, "little"))

    def read(self, va: int, size: int) -> bytes:
        self.reads += 1
        return b"".join(bytes(page[off:off + n]) for page, off, n in self._chunks(va, size))


# Kernels whose VMAs are in the maple tree mm->mm_mt, and kernels (before 6.1) with the list mm->mmap.
MAPLE = [("x86_64", "7.2"), ("arm64", "6.12")]
LISTED = [("x86_64", "5.10"), ("arm64", "5.10")]


def kernel_id(param: tuple[str, str]) -> str:
    return f"{param[0]}-{param[1]}"


@pytest.fixture(scope="module", params=MAPLE, ids=kernel_id)
def layout(request: pytest.FixtureRequest) -> KernelLayout:
    arch, series = request.param
    return layout_for(ensure_image(image_for(arch, series)).vmlinux)


# For what does not depend on how the VMAs are kept: every layout.
every_layout = pytest.mark.parametrize("layout", MAPLE + LISTED, indirect=True, ids=kernel_id)


def kernel(mem: Memory) -> RawKernel:
    return RawKernel(mem.layout, mem.read, KASLR, mem.layout.arch)


# -- maple trees ---------------------------------------------------------------------------------

def maple_node(mem: Memory, kind: str, pivots: list[int], slots: list[int], parent: int, end: int | None = None,
               node: int | None = None) -> int:
    """A maple node of `kind` ("leaf", "range" or "arange"), at `node` or a new one; its encoded pointer."""
    layout = mem.layout
    struct, union = ("maple_arange_64", "ma64") if kind == "arange" else ("maple_range_64", "mr64")
    node = mem.alloc(layout.sizes["maple_node"]) if node is None else node
    base = node + layout.offset(f"maple_node.{union}")
    mem.set(node, "maple_node.parent", parent)
    for i, pivot in enumerate(pivots):
        mem.write(base + layout.offset(f"{struct}.pivot") + 8 * i, pivot.to_bytes(8, "little"))
    for i, slot in enumerate(slots):
        mem.write(base + layout.offset(f"{struct}.slot") + 8 * i, slot.to_bytes(8, "little"))
    if end is not None:  # ma_set_meta: the data end (kept in the last slot's bytes for range nodes)
        mem.write(base + layout.offset(f"{struct}.meta") + layout.offset("maple_metadata.end"), bytes([end]))
    kind_number = layout.enums["maple_type"][{"leaf": "maple_leaf_64", "range": "maple_range_64",
                                              "arange": "maple_arange_64"}[kind]]
    return node | kind_number << 3 | 4


def leaf_for(mem: Memory, ranges: list[tuple[int, int, int]], lo: int, hi: int, parent: int,
             slot15: int = 0) -> int:
    """A leaf holding (first, last, entry) ranges in order, gaps as NULL slots, covering lo..hi.

    The last slot's range ends at the node's max, so its pivot is not stored; the data end is
    found as ma_data_end finds it: 15 from pivot[14] below max, 14 from pivot[14] == max, else
    from the metadata.  `slot15` is what an unused 16th slot holds (ignored by the kernel)."""
    pivots: list[int] = []
    slots: list[int] = []
    at = lo
    for first, last, entry in ranges:
        if first > at:
            pivots.append(first - 1)
            slots.append(0)
        pivots.append(last)
        slots.append(entry)
        at = last + 1
    if at <= hi:
        pivots.append(hi)
        slots.append(0)
    end = len(slots) - 1
    assert end <= 15 and pivots[-1] == hi
    if end == 15:
        return maple_node(mem, "leaf", pivots[:15], slots, parent)
    if end == 14:
        return maple_node(mem, "leaf", pivots, slots + [slot15], parent)
    return maple_node(mem, "leaf", pivots[:end], slots, parent, end=end)


def vma(mem: Memory, mm: int, start: int, end: int, flags: int = VM_READ | VM_WRITE, file: int = 0,
        ops: int = 0, private: int = 0) -> int:
    v = mem.struct("vm_area_struct")
    for member, value in (("vm_start", start), ("vm_end", end), ("vm_mm", mm), ("vm_flags", flags),
                          ("vm_file", file), ("vm_ops", ops), ("vm_private_data", private)):
        mem.set(v, f"vm_area_struct.{member}", value)
    return v


def mm_with_root(mem: Memory, root: int, brk: tuple[int, int] = (0, 0), start_stack: int = 0) -> int:
    mm = mem.struct("mm_struct")
    mem.write(mm + mem.layout.offset("mm_struct.mm_mt") + mem.layout.offset("maple_tree.ma_root"),
              root.to_bytes(8, "little"))
    mem.set(mm, "mm_struct.start_brk", brk[0])
    mem.set(mm, "mm_struct.brk", brk[1])
    mem.set(mm, "mm_struct.start_stack", start_stack)
    return mm


def tree_mm(mem: Memory, leaves: list[tuple[int, list[tuple[int, int]]]], kind: str = "arange",
            slot15: int = 0) -> tuple[int, list[Vma]]:
    """An mm whose root (`kind`) has one leaf per (max, [(start, end) of VMAs]), the last max
    ULONG_MAX; with the VMAs the walk must give."""
    mm = mm_with_root(mem, 0)
    expected = []
    children: list[int] = []
    root_node = mem.alloc(mem.layout.sizes["maple_node"])  # its address is the children's parent
    lo = 0
    for hi, span in leaves:
        ranges = []
        for start, end in span:
            ranges.append((start, end - 1, vma(mem, mm, start, end)))
            expected.append(Vma(start, end, VM_READ | VM_WRITE, "[anon]"))
        children.append(leaf_for(mem, ranges, lo, hi, root_node, slot15))
        lo = hi + 1
    root = maple_node(mem, kind, [hi for hi, _ in leaves[:-1]], children, parent=mm | 1, end=len(children) - 1,
                      node=root_node)
    set_root(mem, mm, root | 2)
    return mm, expected


def set_root(mem: Memory, mm: int, root: int) -> None:
    mem.write(mm + mem.layout.offset("mm_struct.mm_mt") + mem.layout.offset("maple_tree.ma_root"),
              root.to_bytes(8, "little"))


def root_of(mem: Memory, mm: int) -> int:
    return int.from_bytes(mem.read(mm + mem.layout.offset("mm_struct.mm_mt") +
                                   mem.layout.offset("maple_tree.ma_root"), 8), "little")


LEAVES = [
    (0x7FFFFFFF, [(0x400000, 0x401000), (0x401000, 0x480000), (0x500000, 0x520000)]),
    (0x7F0000010000 - 1, [(0x7F0000000000 + 0x2000 * i, 0x7F0000000000 + 0x2000 * i + 0x1000) for i in range(7)]),
    (ULONG_MAX, [(0x7FFFF0000000, 0x7FFFF0021000)]),
]


@pytest.mark.parametrize("kind", ["arange", "range"])
def test_vmas_of_a_two_level_tree_in_address_order(layout: KernelLayout, kind: str) -> None:
    mem = Memory(layout)
    mm, expected = tree_mm(mem, LEAVES, kind)
    assert list(kernel(mem).vmas(mm)) == expected


def test_full_leaves_use_every_slot(layout: KernelLayout) -> None:
    """A leaf of 16 VMAs (data end 15: pivot[14] below the node's max) and one of 14 VMAs and a gap
    (data end 14: pivot[14] is the max, and the 16th slot's garbage is never read)."""
    mem = Memory(layout)
    sixteen = [(0x100000 + 0x1000 * i, 0x101000 + 0x1000 * i) for i in range(16)]
    fourteen = [(0x110000 + 0x1000 * i, 0x111000 + 0x1000 * i) for i in range(14)]
    mm, expected = tree_mm(mem, [(0xFFFFF, [(0x10000, 0x11000)]), (0x10FFFF, sixteen), (ULONG_MAX, fourteen)],
                           slot15=0xFFFF888000BAD000)
    got = list(kernel(mem).vmas(mm))
    assert got == expected and len(got) == 31


def test_null_zero_and_internal_slots_are_skipped(layout: KernelLayout) -> None:
    mem = Memory(layout)
    mm = mm_with_root(mem, 0)
    a = vma(mem, mm, 0x10000, 0x11000)
    b = vma(mem, mm, 0x13000, 0x14000)
    leaf = maple_node(mem, "leaf", [0xFFFF, 0x10FFF, 0x11FFF, 0x12FFF, 0x13FFF],
                      [0, a, XA_ZERO_ENTRY, 0x402, b, 0], parent=mm | 1, end=5)
    set_root(mem, mm, leaf | 2)
    assert [(v.start, v.end) for v in kernel(mem).vmas(mm)] == [(0x10000, 0x11000), (0x13000, 0x14000)]


def test_empty_tree_has_no_vmas(layout: KernelLayout) -> None:
    mem = Memory(layout)
    assert list(kernel(mem).vmas(mm_with_root(mem, 0))) == []


@pytest.mark.parametrize("damage, message", [
    ("cycle", "cycle"),
    ("unknown type", "maple_type 5"),
    ("dense type", "maple_type 0"),
    ("pivots backwards", "outside"),
    ("end past slots", "past its"),
    ("dead node", "dead"),
    ("unreadable node", "cannot read maple node"),
    ("vma disagrees", "but the tree says"),
    ("misaligned entry", "not a vm_area_struct pointer"),
    ("null child", "NULL"),
    ("root is an entry", "not a maple node"),
])
def test_damaged_trees_raise(layout: KernelLayout, damage: str, message: str) -> None:
    mem = Memory(layout)
    mm, _ = tree_mm(mem, LEAVES)
    root = root_of(mem, mm)
    node = root & ~0xFF
    slots = node + layout.offset("maple_node.ma64") + layout.offset("maple_arange_64.slot")
    pivots = node + layout.offset("maple_node.ma64") + layout.offset("maple_arange_64.pivot")
    first_leaf = int.from_bytes(mem.read(slots, 8), "little")
    first_vma_slot = (first_leaf & ~0xFF) + layout.offset("maple_range_64.slot") + 8  # slot 0 is the gap below
    if damage == "cycle":
        mem.write(slots + 8, (root & ~2).to_bytes(8, "little"))
    elif damage == "unknown type":
        mem.write(slots, (first_leaf & ~0x78 | 5 << 3).to_bytes(8, "little"))
    elif damage == "dense type":
        mem.write(slots, (first_leaf & ~0x78).to_bytes(8, "little"))
    elif damage == "pivots backwards":
        mem.write(pivots + 8, (0x100).to_bytes(8, "little"))
    elif damage == "end past slots":
        mem.write(node + layout.offset("maple_node.ma64") + layout.offset("maple_arange_64.meta"), bytes([12]))
    elif damage == "dead node":
        mem.set(first_leaf & ~0xFF, "maple_node.parent", first_leaf & ~0xFF)
    elif damage == "unreadable node":
        mem.write(slots, (0xFFFF888100000000 | first_leaf & 0xFF).to_bytes(8, "little"))
    elif damage == "vma disagrees":
        entry = int.from_bytes(mem.read(first_vma_slot, 8), "little")
        mem.set(entry, "vm_area_struct.vm_end", 0x400800)
    elif damage == "misaligned entry":
        entry = int.from_bytes(mem.read(first_vma_slot, 8), "little")
        mem.write(first_vma_slot, (entry | 1).to_bytes(8, "little"))
    elif damage == "null child":
        mem.write(slots + 8, bytes(8))
    else:
        set_root(mem, mm, 0xFFFF888000000000)
    with pytest.raises(KernelError, match=message):
        list(kernel(mem).vmas(mm))


# -- the VMA list before 6.1 (mm->mmap, vma->vm_next) ------------------------------------------------

@pytest.fixture(scope="module", params=LISTED, ids=kernel_id)
def list_layout(request: pytest.FixtureRequest) -> KernelLayout:
    arch, series = request.param
    return layout_for(ensure_image(image_for(arch, series)).vmlinux)


def listed_mm(mem: Memory, spans: list[tuple[int, int]], brk: tuple[int, int] = (0, 0),
              start_stack: int = 0) -> tuple[int, list[int]]:
    """An mm whose mm->mmap list holds anonymous VMAs over SPANS in that order; (mm, the VMAs)."""
    mm = mem.struct("mm_struct")
    mem.set(mm, "mm_struct.start_brk", brk[0])
    mem.set(mm, "mm_struct.brk", brk[1])
    mem.set(mm, "mm_struct.start_stack", start_stack)
    vmas = [vma(mem, mm, start, end) for start, end in spans]
    for this, following in zip(vmas, vmas[1:] + [0]):
        mem.set(this, "vm_area_struct.vm_next", following)
    mem.set(mm, "mm_struct.mmap", vmas[0] if vmas else 0)
    return mm, vmas


SPANS = [(0x400000, 0x401000), (0x401000, 0x480000), (0x5CD000, 0x61E000), (0x7FFD73AC0000, 0x7FFD73AE1000)]


def test_the_layout_says_which_vma_structure(list_layout: KernelLayout, layout: KernelLayout) -> None:
    """Decided by the DWARF's members: mm_mt (maple tree) and mmap/vm_next (list) never both."""
    assert "mm_struct.mmap" in list_layout.members and "vm_area_struct.vm_next" in list_layout.members
    assert "mm_struct.mm_mt" not in list_layout.members and "maple_type" not in list_layout.enums
    assert "mm_struct.mm_mt" in layout.members and "mm_struct.mmap" not in layout.members
    assert "vm_area_struct.vm_next" not in layout.members


def test_listed_vmas_in_order_with_names(list_layout: KernelLayout) -> None:
    """5.10's show_map_vma (fs/proc/task_mmu.c): [heap] for a VMA touching start_brk..brk, [stack]
    for the one holding start_stack."""
    mem = Memory(list_layout)
    uts = mem.at_symbol("init_uts_ns", list_layout.sizes["uts_namespace"])
    mem.write(uts + list_layout.offset("uts_namespace.name.release"), b"5.10.0-32-cloud-amd64\0")
    mm, _ = listed_mm(mem, SPANS, brk=(0x5CD000, 0x61E000), start_stack=0x7FFD73AE0F00)
    got = [(v.start, v.end, v.flags, v.name) for v in kernel(mem).vmas(mm)]
    names = ["[anon]", "[anon]", "[heap]", "[stack]"]
    assert got == [(start, end, VM_READ | VM_WRITE, name) for (start, end), name in zip(SPANS, names)]
    assert list(kernel(mem).vmas(listed_mm(mem, [])[0])) == []


@pytest.mark.parametrize("damage, message", [
    ("cycle", "does not end"),
    ("unordered", "is not the next VMA"),
    ("overlap", "is not the next VMA"),
    ("empty", "is not the next VMA"),
    ("other mm", "is not the next VMA"),
    ("unreadable", "cannot read vm_area_struct"),
])
def test_damaged_vma_lists_raise(list_layout: KernelLayout, damage: str, message: str) -> None:
    mem = Memory(list_layout)
    mm, vmas = listed_mm(mem, SPANS)
    if damage == "cycle":
        mem.set(vmas[2], "vm_area_struct.vm_next", vmas[1])
    elif damage == "unordered":
        mem.set(vmas[0], "vm_area_struct.vm_next", vmas[2])
        mem.set(vmas[2], "vm_area_struct.vm_next", vmas[1])
    elif damage == "overlap":
        mem.set(vmas[1], "vm_area_struct.vm_start", 0x400800)
    elif damage == "empty":
        mem.set(vmas[1], "vm_area_struct.vm_end", 0x401000)
    elif damage == "other mm":
        mem.set(vmas[3], "vm_area_struct.vm_mm", mm + 0x1000)
    else:
        mem.set(vmas[1], "vm_area_struct.vm_next", 0xFFFF888100000000)
    with pytest.raises(KernelError, match=message):
        list(kernel(mem).vmas(mm))


def test_a_layout_with_neither_vma_structure_is_refused(list_layout: KernelLayout) -> None:
    members = {k: v for k, v in list_layout.members.items() if k != "mm_struct.mmap"}
    broken = KernelLayout(**{**list_layout.__dict__, "members": members})
    with pytest.raises(KernelError, match="neither mm_mt .* nor mmap"):
        RawKernel(broken, Memory(broken).read, KASLR, broken.arch)


# -- names -----------------------------------------------------------------------------------------

def dentry(mem: Memory, name: bytes, parent: int | None, d_op: int = 0, inode: int = 0, hashed: bool = True) -> int:
    """A dentry, hashed (d_hash.pprev set) unless unlinked; a short name is stored inside it, past the
    members RawKernel reads (as d_iname is)."""
    d = mem.struct("dentry")
    fields_end = max(sum(mem.layout.members[f"dentry.{m}"]) for m in ("d_parent", "d_name", "d_inode", "d_op",
                                                                        "d_hash"))
    inline = len(name) < mem.layout.sizes["dentry"] - fields_end
    text = d + fields_end if inline else mem.alloc(len(name) + 1, align=8)
    mem.write(text, name + b"\0")
    d_name = d + mem.layout.offset("dentry.d_name")
    mem.write(d_name + mem.layout.offset("qstr.name"), text.to_bytes(8, "little"))
    off, size = mem.layout.members["qstr.len"]
    mem.write(d_name + off, len(name).to_bytes(size, "little"))
    mem.set(d, "dentry.d_parent", d if parent is None else parent)
    mem.set(d, "dentry.d_op", d_op)
    mem.set(d, "dentry.d_inode", inode)
    if hashed:
        mem.write(d + mem.layout.offset("dentry.d_hash") + mem.layout.offset("hlist_bl_node.pprev"),
                  (HEAP - 8).to_bytes(8, "little"))  # any bucket: hashed is pprev != NULL
    return d


def mount(mem: Memory, root: int, parent: int | None, mountpoint: int) -> int:
    m = mem.struct("mount")
    mem.set(m, "mount.mnt_parent", m if parent is None else parent)
    mem.set(m, "mount.mnt_mountpoint", mountpoint)
    mem.write(m + mem.layout.offset("mount.mnt") + mem.layout.offset("vfsmount.mnt_root"), root.to_bytes(8, "little"))
    return m


def file(mem: Memory, mnt: int, d: int) -> int:
    f = mem.struct("file")
    path = f + mem.layout.offset("file.f_path")
    mem.write(path + mem.layout.offset("path.mnt"), (mnt + mem.layout.offset("mount.mnt")).to_bytes(8, "little"))
    mem.write(path + mem.layout.offset("path.dentry"), d.to_bytes(8, "little"))
    return f


def pseudo_file(mem: Memory, name: bytes, d_dname: int, fs: bytes) -> int:
    """A dentry of an unmounted pseudo file system (d_op->d_dname set, never hashed), its inode's
    i_sb->s_type->name FS."""
    ops = mem.struct("dentry_operations")
    mem.set(ops, "dentry_operations.d_dname", d_dname)
    fs_name = mem.alloc(16, align=8)
    mem.write(fs_name, fs + b"\0")
    fstype = mem.struct("file_system_type")
    mem.set(fstype, "file_system_type.name", fs_name)
    sb = mem.struct("super_block")
    mem.set(sb, "super_block.s_type", fstype)
    inode = mem.struct("inode")
    mem.set(inode, "inode.i_sb", sb)
    pseudo_root = dentry(mem, b"/", None, d_op=ops, inode=inode)
    return dentry(mem, name, pseudo_root, d_op=ops, inode=inode, hashed=False)


def test_vma_names(layout: KernelLayout) -> None:
    """The names /proc/PID/maps gives (fs/proc/task_mmu.c get_vma_name, fs/d_path.c d_path): a file
    on a mount crossed at /tmp, an unlinked file, pseudo files whose d_dname is simple_dname or
    anon_inodefs_dname (and one whose d_dname is unknown: said so), a special mapping, another
    vm_ops->name (said so), heap, stack, anonymous."""
    mem = Memory(layout)
    # rootfs: "/" with "tmp"; a tmpfs mounted on /tmp holding "x.dat"
    root = dentry(mem, b"/", None)
    tmp = dentry(mem, b"tmp", root)
    rootfs = mount(mem, root, None, root)
    tmpfs_root = dentry(mem, b"/", None)
    long_name = b"a-name-longer-than-the-space-inside-a-dentry-" * 4 + b".dat"
    x = dentry(mem, long_name, tmpfs_root)
    gone = dentry(mem, b"gone.dat", tmpfs_root, hashed=False)
    tmpfs = mount(mem, tmpfs_root, rootfs, tmp)
    hugetlb = pseudo_file(mem, b"anon_hugepage", layout.symbols["simple_dname"] + KASLR, b"hugetlbfs")
    io_uring = pseudo_file(mem, b"[io_uring]", layout.symbols["anon_inodefs_dname"] + KASLR, b"anon_inodefs")
    odd = pseudo_file(mem, b"odd", 0xFFFFFFFF81234560, b"oddfs")
    pseudo_mnt = mount(mem, 0xFFFF888000001000, None, 0xFFFF888000001000)
    # special mapping: vm_ops->name == special_mapping_name, vm_private_data->name "[vdso]"
    vm_ops = mem.struct("vm_operations_struct")
    mem.set(vm_ops, "vm_operations_struct.name", layout.symbols["special_mapping_name"] + KASLR)
    other_ops = mem.struct("vm_operations_struct")
    named_ops = mem.struct("vm_operations_struct")
    mem.set(named_ops, "vm_operations_struct.name", 0xFFFFFFFF81234570)
    vdso_name = mem.alloc(8, align=8)
    mem.write(vdso_name, b"[vdso]\0")
    special = mem.struct("vm_special_mapping")
    mem.set(special, "vm_special_mapping.name", vdso_name)

    mm = mm_with_root(mem, 0, brk=(0x600000, 0x621000), start_stack=0x7FFFFFFDE000)
    entries = [
        (0x5FC000, 0x5FD000, dict(file=file(mem, tmpfs, x)), "/tmp/" + long_name.decode()),
        (0x5FD000, 0x5FE000, dict(file=file(mem, rootfs, tmp)), "/tmp"),  # the mountpoint itself, below the mount
        (0x5FE000, 0x5FF000, dict(file=file(mem, tmpfs, gone)), "/tmp/gone.dat (deleted)"),
        (0x5FF000, 0x600000, {}, "[anon]"),  # ends at start_brk: not the heap since 6.6 (vma_is_initial_heap)
        (0x600000, 0x621000, {}, "[heap]"),
        (0x621000, 0x622000, dict(file=file(mem, pseudo_mnt, hugetlb)), "/anon_hugepage (deleted)"),
        (0x622000, 0x623000, dict(file=file(mem, pseudo_mnt, io_uring)), "anon_inode:[io_uring]"),
        (0x623000, 0x624000, dict(file=file(mem, pseudo_mnt, odd)),
         "[oddfs file 'odd', named by d_dname 0xffffffff81234560: not derived]"),
        (0x7FFFF7FF0000, 0x7FFFF7FF2000, dict(ops=vm_ops, private=special), "[vdso]"),
        (0x7FFFF7FF2000, 0x7FFFF7FF3000, dict(ops=other_ops), "[anon]"),
        (0x7FFFF7FF3000, 0x7FFFF7FF4000, dict(ops=named_ops), "[named by vm_ops->name 0xffffffff81234570: not derived]"),
        (0x7FFFFFFDD000, 0x7FFFFFFFF000, {}, "[stack]"),
    ]
    ranges = [(start, end - 1, vma(mem, mm, start, end, **kw)) for start, end, kw, _ in entries]
    set_root(mem, mm, leaf_for(mem, ranges, 0, ULONG_MAX, mm | 1) | 2)
    uts = mem.at_symbol("init_uts_ns", layout.sizes["uts_namespace"])
    mem.write(uts + layout.offset("uts_namespace.name.release"), b"6.12.0\0")
    got = list(kernel(mem).vmas(mm))
    assert [(v.start, v.end, v.name) for v in got] == [(s, e, name) for s, e, _, name in entries]
    # 6.1's show_map_vma: a VMA that only touches the heap's bounds is [heap] too
    mem.write(uts + layout.offset("uts_namespace.name.release"), b"6.1.0-37-amd64\0")
    assert [v.name for v in kernel(mem).vmas(mm)][3] == "[heap]"


def test_a_dentry_cycle_raises(layout: KernelLayout) -> None:
    mem = Memory(layout)
    a = dentry(mem, b"a", None)
    b = dentry(mem, b"b", a)
    mem.set(a, "dentry.d_parent", b)
    other_root = dentry(mem, b"/", None)
    mnt = mount(mem, other_root, None, other_root)
    mm = mm_with_root(mem, 0)
    v = vma(mem, mm, 0x400000, 0x401000, file=file(mem, mnt, b))
    set_root(mem, mm, leaf_for(mem, [(0x400000, 0x400FFF, v)], 0, ULONG_MAX, mm | 1) | 2)
    with pytest.raises(KernelError, match="deeper than"):
        list(kernel(mem).vmas(mm))


# -- tasks, release, facts ---------------------------------------------------------------------------

def task(mem: Memory, pid: int, comm: bytes, mm: int, signal: int, address: int | None = None) -> int:
    t = mem.struct("task_struct") if address is None else address
    mem.set(t, "task_struct.pid", pid)
    mem.set(t, "task_struct.comm", comm.ljust(16, b"\0"))
    mem.set(t, "task_struct.mm", mm)
    mem.set(t, "task_struct.signal", signal)
    return t


def link(mem: Memory, head: int, nodes: list[int]) -> None:
    """A circular list_head list: head, then nodes in order."""
    ring = [head, *nodes]
    for i, node in enumerate(ring):
        mem.write(node + mem.layout.offset("list_head.next"), ring[(i + 1) % len(ring)].to_bytes(8, "little"))
        mem.write(node + mem.layout.offset("list_head.prev"), ring[i - 1].to_bytes(8, "little"))


def task_world(mem: Memory) -> dict[str, int]:
    """init_task, kthreadd (pid 2), a two-thread "worker" process whose second thread (pid 11) is
    first on its thread list, and two single-thread "sh" processes."""
    layout = mem.layout
    init_task = mem.at_symbol("init_task", layout.sizes["task_struct"])
    signals = [mem.struct("signal_struct") for _ in range(5)]
    task(mem, 0, b"swapper/0", 0, signals[0], address=init_task)
    mm1, mm2, mm3 = (mem.struct("mm_struct") for _ in range(3))
    kthreadd = task(mem, 2, b"kthreadd", 0, signals[1])
    worker = task(mem, 10, b"worker", mm1, signals[2])
    worker_thread = task(mem, 11, b"worker", mm1, signals[2])
    sh1 = task(mem, 20, b"sh", mm2, signals[3])
    sh2 = task(mem, 21, b"sh", mm3, signals[4])
    tasks_off, node_off = layout.offset("task_struct.tasks"), layout.offset("task_struct.thread_node")
    head_off = layout.offset("signal_struct.thread_head")
    link(mem, init_task + tasks_off, [t + tasks_off for t in (kthreadd, worker, sh1, sh2)])
    link(mem, signals[0] + head_off, [init_task + node_off])
    link(mem, signals[1] + head_off, [kthreadd + node_off])
    link(mem, signals[2] + head_off, [worker_thread + node_off, worker + node_off])
    link(mem, signals[3] + head_off, [sh1 + node_off])
    link(mem, signals[4] + head_off, [sh2 + node_off])
    return {"init_task": init_task, "kthreadd": kthreadd, "worker": worker, "worker_thread": worker_thread,
            "sh1": sh1, "sh2": sh2, "mm1": mm1}


@every_layout
def test_tasks_and_find_task(layout: KernelLayout) -> None:
    mem = Memory(layout)
    w = task_world(mem)
    k = kernel(mem)
    assert sorted((t.pid, t.comm, t.address) for t in k.tasks()) == [
        (2, "kthreadd", w["kthreadd"]), (10, "worker", w["worker"]), (11, "worker", w["worker_thread"]),
        (20, "sh", w["sh1"]), (21, "sh", w["sh2"])]
    assert k.find_task(pid=11).mm == w["mm1"]
    with pytest.raises(KernelError, match="^no task with pid 0$"):
        k.find_task(pid=0)  # the idle task is not a task drgn's find_task finds
    with pytest.raises(KernelError, match=r"^task 2 \(kthreadd\) is a kernel thread: it has no mm$"):
        k.task_mm(k.find_task(pid=2))
    with pytest.raises(KernelError, match=r"^2 tasks are named 'sh' \(pids 20, 21\); pick one with --pid$"):
        k.find_task(comm="sh")
    with pytest.raises(KernelError, match="^no user task named 'kthreadd'$"):
        k.find_task(comm="kthreadd")
    reads = mem.reads
    k.find_task(pid=21)
    assert mem.reads == reads  # the task list is read once per RawKernel


@every_layout
@pytest.mark.parametrize("which", ["tasks", "threads"])
def test_a_list_cycle_raises(layout: KernelLayout, which: str) -> None:
    mem = Memory(layout)
    w = task_world(mem)
    if which == "tasks":  # sh2 -> kthreadd instead of back to init_task
        mem.write(w["sh2"] + layout.offset("task_struct.tasks"),
                  (w["kthreadd"] + layout.offset("task_struct.tasks")).to_bytes(8, "little"))
    else:  # the worker's second thread points at itself
        node = w["worker_thread"] + layout.offset("task_struct.thread_node")
        mem.write(node, node.to_bytes(8, "little"))
    with pytest.raises(KernelError, match="does not return to its head"):
        kernel(mem).tasks()


@every_layout
def test_release_reads_at_the_relocated_symbol(layout: KernelLayout) -> None:
    mem = Memory(layout)
    uts = mem.at_symbol("init_uts_ns", layout.sizes["uts_namespace"])
    mem.write(uts + layout.offset("uts_namespace.name.release"), b"7.2.13+deb14-cloud-amd64\0")
    assert kernel(mem).release == "7.2.13+deb14-cloud-amd64"
    with pytest.raises(KernelError, match="cannot read init_uts_ns.name.release"):
        _ = RawKernel(layout, mem.read, 0, layout.arch).release


@every_layout
def test_facts_from_swap_devices(layout: KernelLayout) -> None:
    mem = Memory(layout)
    uts = mem.at_symbol("init_uts_ns", layout.sizes["uts_namespace"])
    mem.write(uts + layout.offset("uts_namespace.name.release"), b"7.2.13+deb14-cloud-amd64\0")
    ad_known = "swap_migration_ad_supported" in layout.symbols  # 6.12+
    if ad_known:
        ad = mem.at_symbol("swap_migration_ad_supported", layout.variable_sizes["swap_migration_ad_supported"])
        mem.write(ad, b"\1")
    nr = mem.at_symbol("nr_swapfiles", 4)
    mem.write(nr, (3).to_bytes(4, "little"))
    table = mem.at_symbol("swap_info", 8 * layout.lengths["swap_info"])
    devices = []
    for flags, size in ((1, 16384), (0, 999), (1 | 2, 4096)):  # SWP_USED; a freed slot; SWP_USED|SWP_WRITEOK
        si = mem.struct("swap_info_struct")
        mem.set(si, "swap_info_struct.flags", flags)
        mem.set(si, "swap_info_struct.max", size)
        devices.append(si)
    mem.write(table, b"".join(d.to_bytes(8, "little") for d in devices))
    if "boot_cpu_data" in layout.symbols and "cpuinfo_x86.x86_phys_bits" in layout.members:
        cpu = mem.at_symbol("boot_cpu_data", layout.sizes["cpuinfo_x86"])
        mem.set(cpu, "cpuinfo_x86.x86_phys_bits", 40)
    facts = kernel(mem).facts({"CONFIG_DEVICE_PRIVATE": True}, "config file c")
    values = {name: fact.value for name, fact in facts.facts.items()}
    assert values["MAX_SWAPFILES"] == layout.lengths["swap_info"]
    assert values.get("swap_migration_ad_supported") is (True if ad_known else None)
    assert values["nr_swapfiles"] == 3
    assert values["swap_info[0].max"] == 16384 and values["swap_info[2].max"] == 4096
    assert "swap_info[1].max" not in values
    assert values.get("phys_addr_bits") == (40 if layout.arch == "x86_64" else None)
    assert facts.facts["CONFIG_DEVICE_PRIVATE"].source == "config file c"
    mem.write(nr, (layout.lengths["swap_info"] + 1).to_bytes(4, "little"))
    with pytest.raises(KernelError, match="more than swap_info"):
        kernel(mem).facts()


@every_layout
def test_ram_ranges(layout: KernelLayout) -> None:
    mem = Memory(layout)
    memblock = mem.at_symbol("memblock", layout.sizes["memblock"])
    memory = memblock + layout.offset("memblock.memory")
    size = layout.sizes["memblock_region"]
    regions = mem.alloc(4 * size)
    for i, (base, length) in enumerate(((0x1000, 0x9F000), (0x100000, 0x3FEE0000))):
        mem.set(regions + i * size, "memblock_region.base", base)
        mem.set(regions + i * size, "memblock_region.size", length)
    mem.set(memory, "memblock_type.cnt", 2)
    mem.set(memory, "memblock_type.max", 4)
    mem.set(memory, "memblock_type.regions", regions)
    assert kernel(mem).ram_ranges() == [(0x1000, 0xA0000), (0x100000, 0x3FFE0000)]
    mem.set(memory, "memblock_type.cnt", 5)
    with pytest.raises(KernelError, match="memblock.memory has cnt 5"):
        kernel(mem).ram_ranges()
