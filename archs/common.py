"""Types every architecture module returns: paging geometry and decoded entries.

Pure data: nothing here reads memory or knows a transport.  A decoded entry is
what one *value* means; where the value lives (a live table slot) is the
inspector's EntryRef, a different type on purpose.
"""
from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Protocol

from .versions import Feature, Layout

# Kernel names of the five levels, root first (include/linux/pgtable.h).
LEVEL_NAMES = ("pgd", "p4d", "pud", "pmd", "pte")


@dataclass(frozen=True)
class Level:
    """One level of a paging mode."""

    name: str  # kernel name: pgd / p4d / pud / pmd / pte
    hw: str  # hardware name: "PML4", "L0", "VPN[3]"...
    shift: int  # lowest VA bit this level's index covers
    bits: int  # index width; the table has 1 << bits entries
    leaf: bool  # may hold a leaf (block / huge page) in Linux's use

    @property
    def entries(self) -> int:
        return 1 << self.bits

    @property
    def span(self) -> int:
        """Bytes of VA one entry of this level covers."""
        return 1 << self.shift


@dataclass(frozen=True)
class PagingMode:
    """Geometry of one translation regime (one root)."""

    arch: str  # "x86_64" | "arm64" | "riscv64"
    name: str  # "4-level", "la57", "sv48", "4k-48"...
    levels: tuple[Level, ...]  # root first
    page_shift: int
    va_bits: int  # VA bits translated by the root
    pa_bits: int  # output-address width the walker accepts
    options: frozenset[str] = frozenset()  # "la57", "lpa2", "pti", "svnapot"...

    @property
    def page_size(self) -> int:
        return 1 << self.page_shift

    def level(self, name: str) -> int:
        """Depth (0 = root) of a level by kernel name."""
        for depth, lvl in enumerate(self.levels):
            if lvl.name == name:
                return depth
        raise KeyError(f"{self.arch} {self.name} has no {name} level")


def find_mode(modes: Sequence[PagingMode], name: str) -> PagingMode:
    """The mode called `name` (ValueError naming the choices otherwise)."""
    for m in modes:
        if m.name == name:
            return m
    arch = modes[0].arch if modes else "this architecture"
    raise ValueError(f"unknown {arch} paging mode {name!r}; choose one of {', '.join(m.name for m in modes)}")


class Kind(str, Enum):
    """What an entry is, as the kernel classifies it (leafops.h in 7.2)."""

    NONE = "none"
    TABLE = "table"
    PRESENT = "present"
    SWAP = "swap"
    MIGRATION_READ = "migration-read"
    MIGRATION_READ_EXCLUSIVE = "migration-read-exclusive"
    MIGRATION_WRITE = "migration-write"
    DEVICE_PRIVATE_READ = "device-private-read"
    DEVICE_PRIVATE_WRITE = "device-private-write"
    DEVICE_EXCLUSIVE = "device-exclusive"
    HWPOISON = "hwpoison"
    MARKER = "marker"
    SWAPIN_ERROR = "swapin-error"  # 6.1 SWP_SWAPIN_ERROR
    UNKNOWN = "unknown"


SOFTLEAF_KINDS = frozenset(
    {
        Kind.SWAP,
        Kind.MIGRATION_READ,
        Kind.MIGRATION_READ_EXCLUSIVE,
        Kind.MIGRATION_WRITE,
        Kind.DEVICE_PRIVATE_READ,
        Kind.DEVICE_PRIVATE_WRITE,
        Kind.DEVICE_EXCLUSIVE,
        Kind.HWPOISON,
        Kind.MARKER,
        Kind.SWAPIN_ERROR,
    }
)


@dataclass(frozen=True)
class Fact:
    """One fact about the kernel, with where it came from."""

    value: object
    source: str  # "debuginfo", "config", "vmcoreinfo", "user", "release"


@dataclass(frozen=True)
class KernelFacts:
    """What the decoders need to know about the kernel; absent means unknown.

    `layout` is the release's page-table layout on this architecture (archs/versions.py), None
    when the release is not known.  `facts` holds config options by their CONFIG_ name (bool)
    and named runtime facts ("MAX_SWAPFILES", "swap_migration_ad_supported", "MAX_PHYSMEM_BITS",
    arch extension flags such as "svrsw60t59b"), each with its source.
    """

    layout: Layout | None = None
    release: str | None = None
    facts: Mapping[str, Fact] = field(default_factory=dict)

    def get(self, name: str) -> object | None:
        fact = self.facts.get(name)
        return None if fact is None else fact.value

    def known(self, name: str) -> bool:
        return name in self.facts

    def has(self, feature: str) -> bool | None:
        """Whether a layout feature is in force; None when the release is not known."""
        return None if self.layout is None else self.layout.has(feature)


@dataclass(frozen=True)
class Access:
    """The kernel accessors' view of a present leaf (pte_write(), pte_young()...)."""

    read: bool
    write: bool
    exec: bool
    user: bool
    young: bool
    dirty: bool


# BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT (include/linux/swapops.h, 5.10..7.3): where the
# generic swp_entry_t keeps its type.
SWP_TYPE_SHIFT = 58


@dataclass(frozen=True)
class Softleaf:
    """A non-present, non-none entry converted as softleaf_from_pte() does."""

    type: int  # generic swap type (arch __swp_type), 0..31
    offset: int  # generic swap offset (arch __swp_offset)
    arch_flags: tuple[str, ...] = ()  # set pte_swp_* bits, kernel names

    @property
    def val(self) -> int:
        """Generic swp_entry_t.val (type << SWP_TYPE_SHIFT | offset)."""
        return (self.type << SWP_TYPE_SHIFT) | self.offset


@dataclass(frozen=True)
class ContInfo:
    """What one value says about a contiguous block it belongs to."""

    scheme: str  # "contpte" / "contpmd" (arm64 PTE_CONT), "napot" (riscv Svnapot)
    entries: int  # entries in the block
    size: int  # bytes the whole block maps
    # Every entry holds the identical value and its pfn is the block's base
    # (RISC-V NAPOT): the frame behind entry i of the block is pfn + i * (size // entries) / page size.
    same_value: bool = False


@dataclass(frozen=True)
class Decoded:
    """What one raw value means at one level of one paging mode.

    `pfn` (in PAGE_SIZE units, as the kernel's pte_pfn) is the first frame the entry maps (present leaves) or carries
    (PFN-carrying softleaf entries); `pfn_space` says whether that is a
    physical frame ("phys"), a device-private frame outside RAM ("device"), or, in a release where
    device_private_pfn no longer holds, an offset in the device's own space ("device-offset").
    """

    raw: int
    level: str
    kind: Kind
    size: int = 0  # bytes of VA this entry covers (leaf size; table span)
    pfn: int | None = None
    pfn_space: str | None = None
    next_table: int | None = None  # physical address of the next-level table
    flags: tuple[str, ...] = ()  # set bits by kernel name, low bit first
    fields: tuple[tuple[str, str], ...] = ()  # multi-bit fields: (name, text)
    access: Access | None = None
    softleaf: Softleaf | None = None
    markers: tuple[str, ...] = ()  # "uffd-wp", "poison", "guard"
    details: tuple[tuple[str, str], ...] = ()  # kind details: migration young/dirty...
    cont: ContInfo | None = None
    notes: tuple[str, ...] = ()  # facts a reader must not miss (inverted PFN...)
    reason: str | None = None  # why the kind is unknown

    @property
    def soft(self) -> tuple[str, ...]:
        """The kernel's software bits set here under their arch-neutral names (soft_bits), the
        softleaf's own flags included: "uffd", "soft-dirty", "exclusive", "saved-dirty"..."""
        return soft_bits(self.flags + self.softleaf.arch_flags if self.softleaf else self.flags)


# The kernel's software bits under one name for every architecture, from the kernel's own naming of
# them (x86 _PAGE_UFFD_WP / _PAGE_SWP_UFFD, arm64 PTE_UFFD_WP, riscv _PAGE_SOFT_DIRTY ...): a script
# asks "uffd" or "soft-dirty" without knowing three architectures' macro names.
SOFT_BITS = (("UFFD", "uffd"), ("SOFT_DIRTY", "soft-dirty"), ("SWP_EXCLUSIVE", "exclusive"),
             ("SAVED_DIRTY", "saved-dirty"), ("SPECIAL", "special"), ("DEVMAP", "devmap"))


@functools.lru_cache(maxsize=1024)
def soft_bits(flags: tuple[str, ...]) -> tuple[str, ...]:
    """The arch-neutral names of the software bits among a decoded entry's kernel flag names
    (cached: a dump asks for the same few flag sets once per entry)."""
    return tuple(neutral for part, neutral in SOFT_BITS if any(part in f for f in flags))


def vmcoreinfo_int(numbers: Mapping[str, str], key: str) -> int:
    """An integer of VMCOREINFO text (kernel/vmcore_info.c in 6.12/7.2, crash_core.c in 6.1):
    SYMBOL(x) and KERNELOFFSET are bare hex ("%lx"); NUMBER(x) is "%ld" from
    VMCOREINFO_NUMBER but "0x%lx" where an arch appends it itself; PAGESIZE is "%ld".
    ValueError naming the key when it is absent or not a number."""
    text = numbers.get(key)
    if text is None:
        raise ValueError(f"VMCOREINFO has no {key}")
    try:
        if key.startswith("SYMBOL(") or key == "KERNELOFFSET":
            return int(text, 16)
        return int(text, 0) & ((1 << 64) - 1)
    except ValueError:
        raise ValueError(f"VMCOREINFO {key}={text!r} is not a number") from None


@dataclass(frozen=True)
class MetaRecord:
    """A frame record of two zeros that is a `struct frame_record_meta`: its `type` word says
    whether the chain ends there or the record is the `member` of a struct pt_regs."""

    feature: str  # the layout feature (release) that introduced it; before it, two zeros end the chain
    member: str  # "struct.member" of the record inside struct pt_regs
    type_offset: int  # of the type word, from the record
    final: int  # the type of the last record of a task's stack
    pt_regs: int  # the type of a record inside an exception's pt_regs
    source: str


@dataclass(frozen=True)
class ExceptionRegs:
    """Where a frame-record chain crosses an exception entry and goes on, as the kernel's own
    unwinder does, from the struct pt_regs the entry saved: the interrupted PC (a PC, not a return
    address) and that context's frame pointer.  The entry is found by `entry_text` (a return
    address inside the text between two symbols, the pt_regs at the frame pointer; the first pair
    the vmlinux has symbols for) or by `meta`."""

    pc: tuple[str, int]  # "struct.member" of pt_regs holding the interrupted PC, bytes into it
    fp: tuple[str, int]  # ... the interrupted frame pointer
    source: str
    entry_text: tuple[tuple[str, str | None], ...] = ()  # (start, end); end None: that one address
    meta: MetaRecord | None = None


@dataclass(frozen=True)
class FrameRecords:
    """How the kernel's frame records chain, for naming a stopped vCPU's callers (watch): the frame
    pointer register points at a record holding the caller's frame pointer and the return address."""

    fp_registers: tuple[str, ...]  # the gdbstub's name(s) of the frame pointer
    link_register: str | None  # the return address of a function that has not saved its record yet
    prev_fp_offset: int  # where the caller's frame pointer lies, from the frame pointer
    ret_offset: int  # where the return address lies, from the frame pointer
    # saved return addresses carry a pointer-authentication code: (address, VA bits) -> the address
    strip_pac: Callable[[int, int], int] | None
    source: str  # the kernel's definition of the record
    # A function that saved only its frame pointer (no calls, so no return address to keep) leaves
    # the caller's frame pointer where the return address would be: in the first frame a word the
    # kernel's fp_is_valid() accepts (8-aligned, from fp + 16 up to fp aligned up to this many bytes,
    # THREAD_SIZE) is taken as that, and the link register as the return.  0: records always hold both.
    leaf_stack: int = 0
    exceptions: ExceptionRegs | None = None


@dataclass(frozen=True)
class StackScan:
    """No frame records to follow (an unwinder the tool does not read): scan the stack for words
    that point just past a call instruction, a guess that can include stale frames."""

    sp_register: str
    call_length: int  # bytes of the call instruction before a return address
    is_call: Callable[[bytes], bool]  # whether those bytes are a call
    why: str  # what the kernel unwinds with instead


@dataclass(frozen=True)
class OrcUnwind:
    """The kernel's ORC unwind tables, read from the vmlinux (x86-64: archs/x86_orc.py says how they
    are laid out per release, inspector/orc.py walks them); `fallback` where they cannot be used."""

    fallback: StackScan
    source: str  # the kernel's unwinder this follows


class Arch(Protocol):
    """Everything ptinspect knows about one architecture, as each archs/<arch>.py module's `ARCH`:
    identity facts (how ELF, QEMU, gdb, drgn and the kernel name it), paging geometry, decoding,
    and the hooks the validate and diff rules use.  ArchDefaults gives the hooks an architecture
    has nothing to say about; tests/unit/test_arch_interface.py checks every ARCH has every member.
    """

    name: str
    # -- identity: how other programs name this architecture
    elf_machine: int  # e_machine of its vmlinux and ELF cores (include/uapi/linux/elf-em.h EM_*)
    elf_machine_name: str  # that EM_* macro's name, as pyelftools reports e_machine
    uname_machines: tuple[str, ...]  # utsname.machine (arch/*/Makefile UTS_MACHINE), kdump header spelling
    vmcoreinfo_key: str  # a VMCOREINFO key only this architecture's arch_crash_save_vmcoreinfo() writes
    qemu_arch: str  # QEMU's target name: qemu-system-<name>, QMP query-target "arch"
    gdb_arch: str  # gdb's BFD architecture name (gdb.Architecture.name())
    drgn_arch: str  # the drgn.Architecture member (a 64-bit little-endian platform)
    # A regular expression for the paging registers in QEMU's HMP `info registers` (groups: gdbstub
    # register name, hex value), None when that dump does not show them.
    hmp_registers: str | None
    # Where `current` is while in the kernel: the gdbstub registers holding the task_struct pointer,
    # empty when it is a per-cpu variable instead (x86).
    current_registers: tuple[str, ...]
    percpu_register: str | None  # the gdbstub register holding this CPU's per-cpu base, if `current` is per-cpu
    pc_registers: tuple[str, ...]  # the gdbstub's name(s) of the program counter
    unwind: FrameRecords | StackScan | OrcUnwind  # how a stopped vCPU's callers are found (watch's call chains)
    kernel_dir: str  # its directory under the kernel's arch/ (SRCARCH)
    gnu_triplet: str  # the GNU system triplet of its Linux userland (cross compilers, multiarch paths)
    debian_arch: str  # Debian's name for it (dpkg --print-architecture)
    # -- paging and the kernel's use of it
    default_mode: str  # the mode `decode` assumes when none is given
    split_roots: bool  # separate roots for the lower (user) and upper (kernel) halves
    kaslr_anchor: tuple[str, str] | None  # (register, symbol) whose difference is the KASLR offset
    kernel_text_region: tuple[int, int] | None  # VA range whose first mapped page is _text
    kernel_root_symbol: str  # the VMCOREINFO SYMBOL() of init_mm's root table
    # The registers the paging mode and roots come from, named as QEMU's gdbstub target
    # description names them (QEMU 7.2 gdb-xml/ and target/*/gdbstub*.c); the first one is found in
    # no other architecture's description, which tells which architecture a stub is.
    gdb_registers: tuple[str, ...]
    # The VA bit set in every kernel-half address (canonical upper half; arm64: the TTBR1 half).
    # The kernel writes no software-leaf entries there (set_memory_np, KFENCE: not present only).
    kernel_va_bit: int
    # This architecture's layout changes with the releases that made them (archs/versions.py).
    features: tuple[Feature, ...]
    # What the MMU itself writes into a leaf, which no store a watchpoint sees: (bits it sets, bits it
    # clears, bits a clear needs set) -- accessed/dirty, and arm64 DBM clearing PTE_RDONLY.
    hw_pte_updates: tuple[int, int, int]
    # -- rules `validate` and `diff` apply
    # Kernel-half pages user mode may read (x86's vsyscall page); the kernel-user check allows them
    # when read-only and not executable.
    user_kernel_pages: frozenset[int]
    # Flag pairs whose one-for-the-other exchange is one kernel operation, shown "A → B" by diff.
    flag_moves: tuple[tuple[str, str], ...]
    cont_schemes: frozenset[str]  # the ContInfo.scheme values its decoder gives ("contpte", "napot")

    def root_candidates(self, regs: Mapping[str, int], upper: bool) -> tuple[int, ...]:
        """Physical addresses of the root the registers select for the lower or upper
        half, most likely first (x86 PTI: the register may hold the user copy)."""

    def modes(self) -> Sequence[PagingMode]:
        """Every paging mode this module can walk."""

    def mode(self, name: str) -> PagingMode:
        """A paging mode by name (ValueError naming the choices if unknown)."""

    def mode_from_registers(self, regs: Mapping[str, int]) -> PagingMode:
        """The paging mode the root registers select (CR4/EFER, TCR_EL1, satp)."""

    def mode_from_vmcoreinfo(self, numbers: Mapping[str, str], upper: bool) -> PagingMode:
        """The paging mode of the lower or upper half as the kernel's VMCOREINFO
        (key -> value text, see vmcoreinfo_int) states it; ValueError naming what is missing."""

    def kernel_image_pa(self, numbers: Mapping[str, str], va: int) -> int:
        """Physical address of a kernel-image virtual address (a SYMBOL() of VMCOREINFO)."""

    def canonical(self, mode: PagingMode, va: int, upper: bool) -> int:
        """The full 64-bit VA for a table-index VA in the lower or upper half."""

    def decode(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> Decoded:
        """Decode one value found at `depth` (0 = root) of `mode`; never raises."""

    def kernel_view(
        self, block: Sequence[int], index: int, depth: int, mode: PagingMode, facts: KernelFacts
    ) -> int:
        """ptep_get() of entry `index` given the raw values of its whole block
        (the aligned contiguous block for a CONT/NAPOT entry, else [raw])."""

    def output_bits(self, mode: PagingMode, facts: KernelFacts) -> int:
        """The physical-address width a table pointer or leaf address must fit."""

    def reserved_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts, table: bool) -> int:
        """The bits set in a present leaf or table entry that no kernel writes there."""

    def misaligned_bits(self, raw: int, depth: int, mode: PagingMode, facts: KernelFacts) -> int:
        """Output-address bits below a huge leaf's size that are set."""

    def cont_signature(self, raw: int, mode: PagingMode) -> int:
        """What every entry of a contiguous block (cont_schemes) must share."""

    def wx_access(self, access: Access, tables: Sequence[int]) -> Access:
        """A kernel leaf's access as the kernel's own W^X check sees it, given the raw table
        entries on its path root first."""

    def user_exec_reason(self, raw: int) -> str | None:
        """Why user mode may execute through a kernel leaf its Access does not call user, or None."""


class ArchDefaults(Arch):
    """The base of every Arch class: the hooks an architecture has nothing to say about (no
    user-readable kernel pages, no flag moves, no contiguous blocks, W^X on the leaf's own rights,
    no separate user-execute bit).  Subclassing the protocol gives the attributes its types."""

    hmp_registers: str | None = None
    percpu_register: str | None = None
    user_kernel_pages: frozenset[int] = frozenset()
    flag_moves: tuple[tuple[str, str], ...] = ()
    cont_schemes: frozenset[str] = frozenset()

    def cont_signature(self, raw: int, mode: PagingMode) -> int:
        raise NotImplementedError("this architecture has no contiguous blocks (cont_schemes is empty)")

    def wx_access(self, access: Access, tables: Sequence[int]) -> Access:
        return access

    def user_exec_reason(self, raw: int) -> str | None:
        return None


def in_kernel_half(arch: Arch, va: int) -> bool:
    """Whether a canonical VA lies in the kernel's half of `arch`'s address space."""
    return bool(va >> arch.kernel_va_bit & 1)
