"""What ptinspect needs from a vmlinux's DWARF, extracted once and cached as JSON.

drgn reads the debug info once per vmlinux (about a second); the symbol
addresses, member offsets, struct sizes, array bounds and enumerator values
that inspector/rawkernel/ needs are kept in a small file under the cache, so
later runs answer kernel questions without loading the debug info.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ptinspect.archs import ARCH_NAMES

from . import vmlinux as vml
from .cache import subdir
from .kernel import drgn_program

# Bump when what is extracted (or how) changes: old cache files are then never read.
SCHEMA = 6

# Variables by name, with the file that defines them when the name is static there.
VARIABLES: dict[str, str | None] = {
    "init_uts_ns": None,
    "init_task": None,
    "init_mm": None,
    "memblock": None,
    "swap_info": "mm/swapfile.c",
    "nr_swapfiles": "mm/swapfile.c",
}
# Variables that some kernels (or architectures) do not have.
OPTIONAL_VARIABLES = ("swap_migration_ad_supported", "boot_cpu_data", "iomem_resource", "modules")
# Functions whose presence or address is a fact: RawKernel.facts reads CONFIG_MEMORY_FAILURE and
# CONFIG_MIGRATION from the first two; vm_ops->name == special_mapping_name marks a special
# mapping (mm/mmap.c); the d_op->d_dname functions whose names /proc/PID/maps shows are derived
# (fs/d_path.c simple_dname, fs/anon_inodes.c anon_inodefs_dname).
FUNCTIONS = ("memory_failure", "migrate_pages", "special_mapping_name", "simple_dname", "anon_inodefs_dname")

# struct -> members read at run time (dotted: through nested structs; anonymous unions are looked through).
MEMBERS: dict[str, tuple[str, ...]] = {
    "uts_namespace": ("name.release",),
    "list_head": ("next", "prev"),
    "task_struct": ("tasks", "pid", "comm", "mm", "signal", "thread_node"),
    "signal_struct": ("thread_head",),
    "mm_struct": ("pgd", "start_brk", "brk", "start_stack"),
    "vm_area_struct": ("vm_start", "vm_end", "vm_mm", "vm_flags", "vm_ops", "vm_file", "vm_private_data",
                       "shared"),
    "vm_operations_struct": ("name",),
    "vm_special_mapping": ("name",),
    "file": ("f_path",),
    "path": ("mnt", "dentry"),
    "dentry": ("d_parent", "d_name", "d_inode", "d_op", "d_hash"),
    "hlist_bl_node": ("pprev",),
    "qstr": ("len", "name"),
    "dentry_operations": ("d_dname",),
    "inode": ("i_sb",),
    "super_block": ("s_type",),
    "file_system_type": ("name",),
    "mount": ("mnt", "mnt_parent", "mnt_mountpoint"),
    "vfsmount": ("mnt_root",),
    "memblock": ("memory",),
    "memblock_type": ("cnt", "max", "regions"),
    "memblock_region": ("base", "size"),
    "swap_info_struct": ("flags", "max"),
}
# Members that exist only with some releases, configs or architectures: the VMAs are in the maple tree
# mm->mm_mt from 6.1 (commit d4af56c5c7c6 "mm: start tracking VMAs with maple tree"), before that on the
# list mm->mmap / vma->vm_next (removed by 763ecb035029 "mm: remove the vma linked list", 6.1);
# CONFIG_ANON_VMA_NAME (5.17+); x86 only.  RawKernel picks by what is present.
OPTIONAL_MEMBERS: dict[str, tuple[str, ...]] = {
    "mm_struct": ("mm_mt", "mmap"),
    "vm_area_struct": ("anon_name", "vm_next"),
    "maple_tree": ("ma_flags", "ma_root"),
    "maple_node": ("parent", "mr64", "ma64"),
    "maple_range_64": ("pivot", "slot", "meta"),
    "maple_arange_64": ("pivot", "slot", "meta"),
    "maple_metadata": ("end",),
    "anon_vma_name": ("name",),
    "cpuinfo_x86": ("x86_phys_bits",),
    "resource": ("start", "end", "desc", "sibling", "child"),  # inspector/devmem.py
    # where a frame-record chain goes on across an exception (archs: FrameRecords.exceptions)
    "pt_regs": ("pc", "regs", "stackframe", "epc", "s0"),
    # loaded modules' names, symbols and (x86 CONFIG_UNWINDER_ORC) ORC tables: inspector/rawkernel/modules.py
    "module": ("list", "name", "kallsyms", "arch.orc_unwind_ip", "arch.orc_unwind", "arch.num_orcs"),
    "mod_kallsyms": ("symtab", "num_symtab", "strtab"),
}
# Array members and variables whose bound is a kernel constant (the maple ones from 6.1 only).
ARRAYS = ("uts_namespace.name.release", "task_struct.comm")
OPTIONAL_ARRAYS = ("maple_range_64.pivot", "maple_range_64.slot", "maple_arange_64.pivot", "maple_arange_64.slot")
ARRAY_VARIABLES = ("swap_info",)  # its bound is MAX_SWAPFILES (mm/swapfile.c)
OPTIONAL_ENUMS = ("maple_type",)  # 6.1+
ENUMERATORS = ("SWP_USED",)  # include/linux/swap.h, an anonymous enum
OPTIONAL_ENUMERATORS = ("IORES_DESC_DEVICE_PRIVATE_MEMORY",)  # include/linux/ioport.h (inspector/devmem.py)


class LayoutError(Exception):
    """The vmlinux cannot give the layout (no debug info, or a structure is missing)."""


@dataclass(frozen=True)
class KernelLayout:
    """Link-time symbol addresses and type facts of one vmlinux.

    `members` maps "struct.member" to (offset, size); `sizes` maps a struct name
    to its size and `variable_sizes` a variable name to its size; `lengths` maps
    "struct.member" or a variable name to an array bound; `enums` maps an enum
    name to its enumerators; `constants` holds single enumerators.  A symbol or
    member absent from its dict is absent from the kernel.
    """

    arch: str
    symbols: dict[str, int]
    members: dict[str, tuple[int, int]]
    sizes: dict[str, int]
    variable_sizes: dict[str, int]
    lengths: dict[str, int]
    enums: dict[str, dict[str, int]]
    constants: dict[str, int]

    def offset(self, member: str) -> int:
        return self.members[member][0]

    def size(self, member: str) -> int:
        return self.members[member][1]

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, **asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> KernelLayout:
        """The layout a to_json() text holds; ValueError when it is not one of this schema."""
        try:
            data = json.loads(text)
            if data.pop("schema") != SCHEMA:
                raise ValueError("another schema")
            members = {k: (int(v[0]), int(v[1])) for k, v in data.pop("members").items()}
            layout = cls(members=members, **data)
            scalars = (layout.symbols, layout.sizes, layout.variable_sizes, layout.lengths, layout.constants,
                       *layout.enums.values())
            if layout.arch not in ARCH_NAMES or not all(isinstance(v, int) for d in scalars for v in d.values()):
                raise ValueError("wrong values")
        except (KeyError, TypeError, IndexError, AttributeError) as exc:
            raise ValueError(f"not a KernelLayout: {exc}") from None
        return layout


# Layouts read in this process, by cache file (whose name keys the vmlinux's size and mtime): gdb's
# `pt` commands open a session at every stop.  Frozen, so shared safely.
_LOADED: dict[Path, KernelLayout] = {}


def cache_path(vmlinux: Path) -> Path:
    """The cache file of a vmlinux: keyed by its resolved path, size, mtime and SCHEMA."""
    st = vmlinux.stat()
    key = f"{vmlinux.resolve()}:{st.st_size}:{st.st_mtime_ns}:schema{SCHEMA}"
    return subdir("layout") / f"{hashlib.sha256(key.encode()).hexdigest()[:24]}.json"


def layout_for(vmlinux: Path) -> KernelLayout:
    """The layout of a vmlinux: from the cache when the file is unchanged, else extracted and cached."""
    try:
        cached = cache_path(vmlinux)
    except OSError as exc:
        raise LayoutError(f"cannot read {vmlinux}: {exc}") from None
    if cached in _LOADED:
        return _LOADED[cached]
    try:
        _LOADED[cached] = KernelLayout.from_json(cached.read_text())
        return _LOADED[cached]
    except (OSError, ValueError):
        pass
    layout = extract(vmlinux)
    tmp = cached.with_name(f"{cached.stem}.{os.getpid()}.tmp")
    tmp.write_text(layout.to_json())
    tmp.replace(cached)
    return layout


def extract(vmlinux: Path) -> KernelLayout:
    """Read the layout from the vmlinux's DWARF with drgn (no kernel memory needed)."""
    import drgn

    try:
        arch = vml.machine(vmlinux)
    except vml.VmlinuxError as exc:
        raise LayoutError(str(exc)) from None
    prog = drgn_program(arch)
    # load_debug_info([vmlinux]) ignores a file no loaded module claims, and a Program with neither
    # memory nor VMCOREINFO has no modules: an extra module takes the file as it is.
    module = prog.extra_module("vmlinux", create=True)
    module.try_file(str(vmlinux), force=True)
    if module.debug_file_status != drgn.ModuleFileStatus.HAVE:
        raise LayoutError(f"{vmlinux} has no debug info (DWARF); give the -dbg vmlinux")
    try:
        return _extract(prog, arch)
    except LookupError as exc:
        raise LayoutError(f"{vmlinux}: {exc}") from None


def program_layout(prog: Any, arch: str) -> KernelLayout:
    """The layout from a drgn Program that already holds the kernel's debug info (a user's drgn
    session): run-time addresses, so no KASLR offset applies; nothing is loaded a second time."""
    try:
        return _extract(prog, arch)
    except LookupError as exc:
        raise LayoutError(f"the drgn program has not loaded the kernel's debug info ({exc}), which processes "
                          "and VMAs need: load it (drgn -s VMLINUX, or prog.load_debug_info([VMLINUX]))") from None


def _extract(prog: Any, arch: str) -> KernelLayout:
    import drgn

    symbols: dict[str, int] = {}
    variable_sizes: dict[str, int] = {}
    lengths: dict[str, int] = {}
    for name, filename in [*VARIABLES.items(), *((n, None) for n in OPTIONAL_VARIABLES)]:
        try:
            var = prog.variable(name, filename)
        except LookupError:
            if name in VARIABLES:
                raise
            continue
        symbols[name] = var.address_
        variable_sizes[name] = drgn.sizeof(var)
    for name in FUNCTIONS:
        try:
            symbols[name] = prog.symbol(name).address
        except LookupError:
            pass
    for name in ARRAY_VARIABLES:
        length = prog.variable(name, VARIABLES[name]).type_.length
        if length is None:
            raise LookupError(f"{name} has no array bound")
        lengths[name] = length

    members: dict[str, tuple[int, int]] = {}
    sizes: dict[str, int] = {}
    for table, required in ((MEMBERS, True), (OPTIONAL_MEMBERS, False)):
        for struct, names in table.items():
            try:
                stype = prog.type(f"struct {struct}")
            except LookupError:
                if required:
                    raise
                continue
            sizes[struct] = drgn.sizeof(stype)
            for name in names:
                try:
                    mtype = _member_type(stype, name)
                except LookupError:
                    if required:
                        raise
                    continue
                # offsetof looks through anonymous unions and structs (vm_area_struct.vm_flags, 6.3+)
                size = drgn.sizeof(mtype) if mtype.is_complete() else 0  # flexible arrays: 0
                members[f"{struct}.{name}"] = (drgn.offsetof(stype, name), size)
    for path in (*ARRAYS, *OPTIONAL_ARRAYS):
        struct, _, name = path.partition(".")
        if path in OPTIONAL_ARRAYS and path not in members:
            continue
        mtype = _member_type(prog.type(f"struct {struct}"), name)
        if mtype.length is None:
            raise LookupError(f"{path} has no array bound")
        lengths[path] = mtype.length
    enums = {}
    for name in OPTIONAL_ENUMS:
        try:
            enums[name] = {e.name: e.value for e in prog.type(f"enum {name}").enumerators}
        except LookupError:
            continue
    constants = {name: prog.constant(name).value_() for name in ENUMERATORS}
    for name in OPTIONAL_ENUMERATORS:
        try:
            constants[name] = prog.constant(name).value_()
        except LookupError:
            continue
    return KernelLayout(arch, symbols, members, sizes, variable_sizes, lengths, enums, constants)


def _member_type(stype: Any, dotted: str) -> Any:
    """The type of a (dotted) member, typedefs and qualifiers stripped."""
    import drgn

    t = stype
    for part in dotted.split("."):
        t = t.member(part).type
        while t.kind == drgn.TypeKind.TYPEDEF:
            t = t.type
        t = t.unqualified()
    return t
