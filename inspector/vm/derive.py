"""Layout vectors derived by compiling a kernel tree's own macros with the cross compilers.

ptinspect's decoders are checked against these, so the expected values come from the kernel, not
from hand transcription.  Three parts, written as one JSON document:

- types: include/linux/swap.h's carving of the swap-type space for every combination of the config
  options it depends on (its preprocessor region only, compiled with -D for each combination);
- constants: the arch's page-table and swap-layout macros as the configured kernel defines them;
- vectors: swap/migration/marker entries encoded by the kernel's inline functions and raw values
  decoded by its predicates, read out of the compiler as Kbuild reads asm-offsets.s
  (include/linux/kbuild.h DEFINE: `.ascii "->SYM %0"` with an "i" operand, compiled -O2 -S).

The default input is Debian's linux-headers-<abi>-common + linux-headers-<abi>-<flavour> of a
series (a configured tree, as users build modules against), fetched through the private apt state.
"""
from __future__ import annotations

import itertools
import json
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from ptinspect.archs import all_arches

from ..cache import locked, subdir
from . import VMError, progress
from .apt import DEB_ARCH, AptState
from .images import (
    Recipe,
    _abi_key,
    _download,
    _run,
    _swap_in,
    _write_stamp,
    check_entry,
)

SERIES_SUITE = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie", "7.2": "sid",
                "7.3": "trixie-backports"}
DEFAULT_FLAVOUR = {"x86_64": "cloud-amd64", "arm64": "cloud-arm64", "riscv64": "riscv64"}
KARCH = {a.name: a.kernel_dir for a in all_arches()}
COMPILER = {"x86_64": "gcc", "arm64": "aarch64-linux-gnu-gcc", "riscv64": "riscv64-linux-gnu-gcc"}
# The arch flags of arch/<a>/Makefile that change what headers expand to (ABI, code model).
ARCH_CFLAGS = {
    "x86_64": ["-m64", "-mcmodel=kernel", "-mno-red-zone", "-mno-sse", "-mno-mmx", "-mno-sse2",
               "-mno-3dnow", "-mno-avx"],
    "arm64": ["-mgeneral-regs-only", "-mabi=lp64"],
    "riscv64": ["-mabi=lp64", "-march=rv64imac_zicsr_zifencei", "-mcmodel=medany", "-mno-save-restore"],
}
# Kbuild's c_flags common part (Makefile: KBUILD_CFLAGS, scripts/Makefile.lib: c_flags), minus warnings.
COMMON_CFLAGS = ["-nostdinc", "-D__KERNEL__", "-O2", "-S", "-w", "-fno-strict-aliasing", "-fno-common",
                 "-fshort-wchar", "-fno-PIE", "-fno-stack-protector", "-funsigned-char",
                 '-DKBUILD_MODNAME="derive"', '-DKBUILD_BASENAME="derive"', "-DKBUILD_MODFILE=\"derive\""]
DIALECT_CONFIG = ("CONFIG_CC_MS_EXTENSIONS",)  # -fms-extensions: anonymous tagged structs (7.x)
# Undone config: with it, x86 pte_val()/__pte() are paravirt calls that no compiler can fold;
# without it they are native_pte_val()/native_make_pte(), which is what the calls do on bare metal.
OVERRIDES = {"x86_64": ["CONFIG_PARAVIRT_XXL"]}
TYPE_OPTIONS = ("CONFIG_MEMORY_FAILURE", "CONFIG_MIGRATION", "CONFIG_DEVICE_PRIVATE", "CONFIG_PTE_MARKER")
# Config options recorded with the vectors (what a decoder needs to be told about this kernel).
RECORDED_CONFIG = TYPE_OPTIONS + (
    "CONFIG_PTE_MARKER_UFFD_WP", "CONFIG_HAVE_ARCH_USERFAULTFD_WP", "CONFIG_HAVE_ARCH_SOFT_DIRTY",
    "CONFIG_MEM_SOFT_DIRTY", "CONFIG_ARCH_ENABLE_THP_MIGRATION", "CONFIG_ARCH_HAS_PMD_SOFTLEAVES",
    "CONFIG_NUMA_BALANCING",
    "CONFIG_PGTABLE_LEVELS", "CONFIG_X86_5LEVEL", "CONFIG_ARM64_VA_BITS", "CONFIG_ARM64_PA_BITS",
    "CONFIG_ARM64_4K_PAGES", "CONFIG_ARM64_16K_PAGES", "CONFIG_ARM64_64K_PAGES", "CONFIG_ARM64_LPA2",
    "CONFIG_RISCV_ISA_SVNAPOT", "CONFIG_RISCV_ISA_SVPBMT", "CONFIG_ZONE_DEVICE", "CONFIG_DEVICE_MIGRATION",
    "CONFIG_SPARSEMEM", "CONFIG_FLATMEM", "CONFIG_PHYS_ADDR_T_64BIT",
)
COMPILE_TIMEOUT = 300.0
FETCH_LOCK_TIMEOUT = 7200.0
MAX_ROUNDS = 8
MASK64 = (1 << 64) - 1

# Every object-like macro of these names in any of 5.10, 6.1, 6.12, 7.2, 7.3 (arch/<a>/include/asm/
# pgtable*.h, page*.h, sparsemem.h; include/linux/swap.h, swapops.h, leafops.h): derived as its
# value, or null where the version does not define it.
CONSTANT_NAMES = {
    "x86_64": (
        "MAX_PHYSMEM_BITS", "PAGE_SHIFT", "PTE_PFN_MASK", "SWP_OFFSET_FIRST_BIT", "SWP_OFFSET_SHIFT",
        "SWP_TYPE_BITS", "_PAGE_ACCESSED", "_PAGE_BIT_ACCESSED", "_PAGE_BIT_CPA_TEST", "_PAGE_BIT_DEVMAP",
        "_PAGE_BIT_DIRTY", "_PAGE_BIT_GLOBAL", "_PAGE_BIT_KERNEL_4K", "_PAGE_BIT_NOPTISHADOW", "_PAGE_BIT_NX",
        "_PAGE_BIT_PAT", "_PAGE_BIT_PAT_LARGE", "_PAGE_BIT_PCD", "_PAGE_BIT_PKEY_BIT0", "_PAGE_BIT_PKEY_BIT1",
        "_PAGE_BIT_PKEY_BIT2", "_PAGE_BIT_PKEY_BIT3", "_PAGE_BIT_PRESENT", "_PAGE_BIT_PROTNONE",
        "_PAGE_BIT_PSE", "_PAGE_BIT_PWT", "_PAGE_BIT_RW", "_PAGE_BIT_SAVED_DIRTY", "_PAGE_BIT_SOFTW1",
        "_PAGE_BIT_SOFTW2", "_PAGE_BIT_SOFTW3", "_PAGE_BIT_SOFTW4", "_PAGE_BIT_SOFTW5",
        "_PAGE_BIT_SOFT_DIRTY", "_PAGE_BIT_SPECIAL", "_PAGE_BIT_UFFD", "_PAGE_BIT_UFFD_WP", "_PAGE_BIT_USER",
        "_PAGE_CACHE_MASK", "_PAGE_CACHE_WP", "_PAGE_CC", "_PAGE_CHG_MASK", "_PAGE_CPA_TEST", "_PAGE_DEVMAP",
        "_PAGE_DIRTY", "_PAGE_DIRTY_BITS", "_PAGE_ENC", "_PAGE_GLOBAL", "_PAGE_KERNEL_4K",
        "_PAGE_KNL_ERRATUM_MASK", "_PAGE_LARGE_CACHE_MASK", "_PAGE_NOCACHE", "_PAGE_NOPTISHADOW", "_PAGE_NX",
        "_PAGE_PAT", "_PAGE_PAT_LARGE", "_PAGE_PCD", "_PAGE_PKEY_BIT0", "_PAGE_PKEY_BIT1", "_PAGE_PKEY_BIT2",
        "_PAGE_PKEY_BIT3", "_PAGE_PKEY_MASK", "_PAGE_PRESENT", "_PAGE_PROTNONE", "_PAGE_PSE", "_PAGE_PWT",
        "_PAGE_RW", "_PAGE_SAVED_DIRTY", "_PAGE_SOFTW1", "_PAGE_SOFTW2", "_PAGE_SOFTW3", "_PAGE_SOFTW4",
        "_PAGE_SOFT_DIRTY", "_PAGE_SPECIAL", "_PAGE_SWP_EXCLUSIVE", "_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD",
        "_PAGE_SWP_UFFD_WP", "_PAGE_TABLE", "_PAGE_TABLE_NOENC", "_PAGE_UFFD", "_PAGE_UFFD_WP", "_PAGE_USER",
        "__PHYSICAL_MASK_SHIFT",
    ),
    "arm64": (
        "CONT_PMDS", "CONT_PMD_SHIFT", "CONT_PTES", "CONT_PTE_SHIFT", "MAX_PHYSMEM_BITS", "PAGE_SHIFT",
        "PMD_ATTRINDX_MASK", "PMD_MASK", "PMD_MAYBE_NG", "PMD_MAYBE_SHARED", "PMD_PRESENT_INVALID",
        "PMD_SECT_AF", "PMD_SECT_CONT", "PMD_SECT_NG", "PMD_SECT_PXN", "PMD_SECT_RDONLY", "PMD_SECT_S",
        "PMD_SECT_USER", "PMD_SECT_UXN", "PMD_SECT_VALID", "PMD_SHIFT", "PMD_SIZE", "PMD_TABLE_AF",
        "PMD_TABLE_BIT", "PMD_TABLE_PXN", "PMD_TABLE_UXN", "PMD_TYPE_MASK", "PMD_TYPE_SECT", "PMD_TYPE_TABLE",
        "PTE_ADDR_HIGH", "PTE_ADDR_HIGH_SHIFT", "PTE_ADDR_LOW", "PTE_ADDR_MASK", "PTE_AF", "PTE_ATTRINDX_MASK",
        "PTE_CONT", "PTE_DBM", "PTE_DEVMAP", "PTE_DIRTY", "PTE_GP", "PTE_MAYBE_GP", "PTE_MAYBE_NG",
        "PTE_MAYBE_SHARED", "PTE_NG", "PTE_PI_IDX_0", "PTE_PI_IDX_1", "PTE_PI_IDX_2", "PTE_PI_IDX_3",
        "PTE_PO_IDX_0", "PTE_PO_IDX_1", "PTE_PO_IDX_2", "PTE_PO_IDX_MASK", "PTE_PRESENT_INVALID",
        "PTE_PRESENT_VALID_KERNEL", "PTE_PROT_NONE", "PTE_PXN", "PTE_RDONLY", "PTE_SHARED", "PTE_SPECIAL",
        "PTE_SWBITS_MASK", "PTE_SWP_EXCLUSIVE", "PTE_SWP_UFFD", "PTE_SWP_UFFD_WP", "PTE_TABLE_BIT",
        "PTE_TYPE_MASK", "PTE_TYPE_PAGE", "PTE_UFFD", "PTE_UFFD_WP", "PTE_USER", "PTE_UXN", "PTE_VALID",
        "PTE_WRITE", "PUD_MASK", "PUD_SECT_RDONLY", "PUD_SHIFT", "PUD_SIZE", "PUD_TABLE_AF", "PUD_TABLE_BIT",
        "PUD_TABLE_PXN", "PUD_TABLE_UXN", "PUD_TYPE_MASK", "PUD_TYPE_SECT", "PUD_TYPE_TABLE",
        "_PAGE_DEFAULT", "_PAGE_EXECONLY", "_PAGE_GCS", "_PAGE_GCS_RO", "_PAGE_KERNEL", "_PAGE_KERNEL_EXEC",
        "_PAGE_KERNEL_EXEC_CONT", "_PAGE_KERNEL_RO", "_PAGE_KERNEL_ROX", "_PAGE_READONLY",
        "_PAGE_READONLY_EXEC", "_PAGE_SHARED", "_PAGE_SHARED_EXEC", "__SWP_OFFSET_BITS", "__SWP_OFFSET_MASK",
        "__SWP_OFFSET_SHIFT", "__SWP_TYPE_BITS", "__SWP_TYPE_MASK", "__SWP_TYPE_SHIFT",
    ),
    "riscv64": (
        "MAX_PHYSMEM_BITS", "PAGE_SHIFT", "_PAGE_ACCESSED", "_PAGE_ACCESSED_OFFSET", "_PAGE_BASE",
        "_PAGE_CHG_MASK", "_PAGE_DEVMAP", "_PAGE_DIRTY", "_PAGE_EXEC", "_PAGE_GLOBAL", "_PAGE_IO",
        "_PAGE_IOREMAP", "_PAGE_IO_SVPBMT", "_PAGE_IO_THEAD", "_PAGE_KERNEL", "_PAGE_KERNEL_NC", "_PAGE_LEAF",
        "_PAGE_MTMASK", "_PAGE_MTMASK_SVPBMT", "_PAGE_MTMASK_THEAD", "_PAGE_NAPOT", "_PAGE_NAPOT_SHIFT",
        "_PAGE_NOCACHE", "_PAGE_NOCACHE_SVPBMT", "_PAGE_NOCACHE_THEAD", "_PAGE_PFN_MASK", "_PAGE_PFN_SHIFT",
        "_PAGE_PMA_THEAD", "_PAGE_PRESENT", "_PAGE_PROT_NONE", "_PAGE_READ", "_PAGE_SOFT",
        "_PAGE_SOFT_DIRTY", "_PAGE_SPECIAL", "_PAGE_SWP_EXCLUSIVE", "_PAGE_SWP_SOFT_DIRTY", "_PAGE_SWP_UFFD",
        "_PAGE_SWP_UFFD_WP", "_PAGE_TABLE", "_PAGE_UFFD", "_PAGE_UFFD_WP", "_PAGE_USER", "_PAGE_WRITE",
        "__SWP_OFFSET_SHIFT", "__SWP_TYPE_BITS", "__SWP_TYPE_MASK", "__SWP_TYPE_SHIFT",
    ),
}
GENERIC_CONSTANTS = (
    "MAX_SWAPFILES", "MAX_SWAPFILES_SHIFT", "PTE_MARKER_GUARD", "PTE_MARKER_MASK", "PTE_MARKER_POISONED",
    "PTE_MARKER_UFFD_WP", "SWP_MIG_DIRTY", "SWP_MIG_DIRTY_BIT", "SWP_MIG_TOTAL_BITS", "SWP_MIG_YOUNG",
    "SWP_MIG_YOUNG_BIT", "SWP_OFFSET_MASK", "SWP_PFN_BITS", "SWP_PFN_MASK", "SWP_TYPE_SHIFT",
)

# The special swap types a configured kernel may define (macros of include/linux/swap.h).
SPECIAL_TYPES = ("SWP_HWPOISON", "SWP_MIGRATION_READ", "SWP_MIGRATION_READ_EXCLUSIVE", "SWP_MIGRATION_WRITE",
                 "SWP_DEVICE_WRITE", "SWP_DEVICE_READ", "SWP_DEVICE_EXCLUSIVE", "SWP_DEVICE_EXCLUSIVE_WRITE",
                 "SWP_DEVICE_EXCLUSIVE_READ", "SWP_PTE_MARKER", "SWP_SWAPIN_ERROR")
# Offset bits the arch's swap PTE holds (capped at the generic SWP_TYPE_SHIFT in the C prelude).
OFFSET_BITS = {"x86_64": "(64 - SWP_OFFSET_SHIFT)", "arm64": "__SWP_OFFSET_BITS",
               "riscv64": "(64 - __SWP_OFFSET_SHIFT)"}
OFFSETS = {"0": "0UL", "0x1234": "0x1234UL", "high": "(1UL << (DERIVE_OFF_BITS - 1))",
           "max": "((1UL << DERIVE_OFF_BITS) - 1)"}
# Present values to decode, built from the version's own bit macros: (name, C expression, needed macros).
PRESENT_SAMPLES = {
    "x86_64": (
        ("present-rw-dirty", ("(0x12345UL << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_RW | _PAGE_USER | "
         "_PAGE_ACCESSED | _PAGE_DIRTY | _PAGE_NX"), ()),
        ("present-ro-clean", "(0x12345UL << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_USER", ()),
        ("present-saved-dirty", ("(0x12345UL << PAGE_SHIFT) | _PAGE_PRESENT | _PAGE_USER | _PAGE_ACCESSED | "
         "_PAGE_SAVED_DIRTY"), ("_PAGE_SAVED_DIRTY",)),
        ("protnone", "pte_val(pfn_pte(0x12345UL, __pgprot(_PAGE_PROTNONE | _PAGE_ACCESSED)))", ()),
        ("protnone-raw", "(0x12345UL << PAGE_SHIFT) | _PAGE_PROTNONE | _PAGE_ACCESSED", ()),
    ),
    "arm64": (
        ("present-rw-dirty", ("(0x12345UL << PAGE_SHIFT) | PTE_TYPE_PAGE | PTE_AF | PTE_USER | PTE_UXN | "
         "PTE_PXN | PTE_NG | PTE_WRITE"), ()),
        ("present-rw-clean", ("(0x12345UL << PAGE_SHIFT) | PTE_TYPE_PAGE | PTE_AF | PTE_USER | PTE_UXN | "
         "PTE_PXN | PTE_NG | PTE_WRITE | PTE_RDONLY"), ()),
        ("present-ro-swdirty", ("(0x12345UL << PAGE_SHIFT) | PTE_TYPE_PAGE | PTE_USER | PTE_UXN | PTE_PXN | "
         "PTE_NG | PTE_RDONLY | PTE_DIRTY"), ()),
        ("protnone", ("(0x12345UL << PAGE_SHIFT) | PTE_PRESENT_INVALID | PTE_AF | PTE_NG | PTE_RDONLY | "
         "PTE_UXN | PTE_PXN"), ("PTE_PRESENT_INVALID",)),
        ("protnone", ("(0x12345UL << PAGE_SHIFT) | PTE_PROT_NONE | PTE_AF | PTE_NG | PTE_RDONLY | "
         "PTE_UXN | PTE_PXN"), ("PTE_PROT_NONE",)),
        ("present-cont", ("(0x12340UL << PAGE_SHIFT) | PTE_TYPE_PAGE | PTE_AF | PTE_USER | PTE_UXN | "
         "PTE_PXN | PTE_NG | PTE_CONT"), ()),
    ),
    "riscv64": (
        ("present-rw-dirty", ("(0x12345UL << _PAGE_PFN_SHIFT) | _PAGE_PRESENT | _PAGE_READ | _PAGE_WRITE | "
         "_PAGE_USER | _PAGE_ACCESSED | _PAGE_DIRTY"), ()),
        ("present-ro-clean", "(0x12345UL << _PAGE_PFN_SHIFT) | _PAGE_PRESENT | _PAGE_READ | _PAGE_USER", ()),
        ("protnone", "(0x12345UL << _PAGE_PFN_SHIFT) | _PAGE_PROT_NONE | _PAGE_ACCESSED", ()),
        ("present-napot", ("(0x12348UL << _PAGE_PFN_SHIFT) | _PAGE_NAPOT | _PAGE_PRESENT | _PAGE_READ | "
         "_PAGE_USER | _PAGE_ACCESSED"), ("_PAGE_NAPOT",)),
    ),
}
PRESENT_PREDICATES = ("pte_present", "pte_none", "pte_write", "pte_dirty", "pte_young", "pte_protnone")
SWAP_PREDICATES = ("pte_present", "pte_none", "pte_swp_exclusive", "pte_swp_soft_dirty", "pte_swp_uffd_wp",
                   "pte_swp_uffd")
MODIFIERS = ("pte_swp_mkexclusive", "pte_swp_mksoft_dirty", "pte_swp_mkuffd_wp", "pte_swp_mkuffd")
MARKERS = ("PTE_MARKER_UFFD_WP", "PTE_MARKER_POISONED", "PTE_MARKER_GUARD")
# Headers whose identifiers decide which inline functions a version has (besides arch/<a>/include/asm).
API_HEADERS = ("include/linux/pgtable.h", "include/linux/swapops.h", "include/linux/leafops.h",
               "include/linux/swap.h", "include/linux/mm.h", "include/asm-generic/pgtable.h",
               "include/asm-generic/pgtable_uffd.h")


@dataclass(frozen=True)
class Tree:
    """A kernel tree: SRC holds include/ and arch/ (source or headers-common), OBJ the configured
    output (include/generated, .config) or None for an unconfigured source tree."""

    arch: str
    src: Path
    obj: Path | None
    origin: dict = field(default_factory=dict)

    @property
    def karch(self) -> str:
        return KARCH[self.arch]

    def release(self) -> str | None:
        """UTS_RELEASE of a configured tree, else the Makefile's VERSION.PATCHLEVEL.SUBLEVEL."""
        for base in filter(None, (self.obj, self.src)):
            path = base / "include/generated/utsrelease.h"
            if path.is_file():
                m = re.search(r'UTS_RELEASE\s+"([^"]+)"', path.read_text())
                return m.group(1) if m else None
        makefile = self.src / "Makefile"
        text = makefile.read_text(errors="replace") if makefile.is_file() else ""
        parts = [re.search(rf"^{key}\s*=\s*(\d+)", text, re.MULTILINE) for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL")]
        return ".".join(m.group(1) for m in parts if m) or None

    def config(self) -> dict[str, str]:
        """The tree's .config as {CONFIG_X: value} ("n" for `is not set`)."""
        path = (self.obj or self.src) / ".config"
        if not path.is_file():
            return {}
        out = {}
        for line in path.read_text(errors="replace").splitlines():
            if m := re.match(r"(CONFIG_\w+)=(.*)", line):
                out[m.group(1)] = m.group(2).strip('"')
            elif m := re.match(r"# (CONFIG_\w+) is not set", line):
                out[m.group(1)] = "n"
        return out


def _compiler_output(cc: str, arg: str) -> str:
    """The first line CC prints for ARG (--version, -print-file-name=include)."""
    try:
        done = subprocess.run([cc, arg], check=False, capture_output=True, text=True, timeout=60)
    except FileNotFoundError:
        raise VMError(f"compiler {cc} not found (Debian: gcc, gcc-aarch64-linux-gnu, "
                      f"gcc-riscv64-linux-gnu)") from None
    except subprocess.TimeoutExpired:
        raise VMError(f"{cc} {arg} did not finish within 60 s") from None
    return (done.stdout.strip().splitlines() or [""])[0]


def _compile(cc: str, args: list[str], source: str, work: Path, name: str) -> tuple[int, str, str]:
    """Compile SOURCE to assembly; (exit code, stderr, assembly text)."""
    c_file, s_file = work / f"{name}.c", work / f"{name}.s"
    c_file.write_text(source)
    s_file.unlink(missing_ok=True)
    try:
        done = subprocess.run([cc, *args, "-o", str(s_file), str(c_file)], check=False, capture_output=True,
                              text=True, timeout=COMPILE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise VMError(f"{cc} did not finish within {COMPILE_TIMEOUT:.0f} s") from None
    except FileNotFoundError:
        raise VMError(f"compiler {cc} not found (Debian: gcc, gcc-aarch64-linux-gnu, "
                      f"gcc-riscv64-linux-gnu)") from None
    return done.returncode, done.stderr, s_file.read_text() if s_file.is_file() else ""


NONCONSTANT = "not a compile-time constant (__builtin_constant_p is 0 after inlining)"
# A compiled value: the number, None (its guard was false), or {"not_derivable": why}.
Value = int | dict[str, str] | None


def _read_defines(asm: str) -> dict[str, Value]:
    """The `->KEY VALUE` / `->KEY absent` / `->KEY nonconstant` lines of compiled DEFINE()s."""
    out: dict[str, Value] = {}
    for key, value in re.findall(r'"->(\S+) ([^"\s]+)', asm):
        if value in ("absent", "nonconstant"):
            out[key] = None if value == "absent" else {"not_derivable": NONCONSTANT}
        else:
            out[key] = int(value.lstrip("#$")) & MASK64
    return out


# ---------------------------------------------------------------------------------------------- types

def swap_region(src: Path) -> str:
    """The directive lines of include/linux/swap.h from MAX_SWAPFILES_SHIFT to the MAX_SWAPFILES
    definition, continuation lines joined."""
    path = src / "include/linux/swap.h"
    if not path.is_file():
        raise VMError(f"{path} is missing: not a kernel tree")
    joined = re.sub(r"\\\n", " ", path.read_text())
    lines = joined.splitlines()
    start = next((i for i, line in enumerate(lines) if re.match(r"#\s*define\s+MAX_SWAPFILES_SHIFT\b", line)),
                 None)
    end = next((i for i, line in enumerate(lines) if re.match(r"#\s*define\s+MAX_SWAPFILES\s", line)), None)
    if start is None or end is None or end < start:
        raise VMError(f"{path}: no MAX_SWAPFILES_SHIFT ... MAX_SWAPFILES region")
    return "\n".join(line for line in lines[start:end + 1] if line.lstrip().startswith("#")) + "\n"


def derive_types(src: Path, work: Path) -> list[dict]:
    """MAX_SWAPFILES and every SWP_* type number for each combination of the options the region tests."""
    region = swap_region(src)
    options = [o for o in TYPE_OPTIONS if re.search(rf"\b{o}\b", region)]
    names = sorted({m for m in re.findall(r"#\s*define\s+(SWP_\w+)", region)
                    if not m.endswith("_NUM")}, key=region.index)
    body = "".join(
        f'#ifdef {name}\nasm volatile("\\n.ascii \\"->{name} %0\\"" : : "i" ((long)({name})));\n#endif\n'
        for name in ("MAX_SWAPFILES", *names))
    source = f"{region}\nvoid derive_types(void)\n{{\n{body}}}\n"
    out = []
    for values in itertools.product((False, True), repeat=len(options)):
        enabled = dict(zip(options, values))
        flags = ["-O2", "-S", *(f"-D{o}" for o, on in enabled.items() if on)]
        code, err, asm = _compile("gcc", flags, source, work, "types")
        if code:
            raise VMError(f"compiling the swap.h type region failed for {enabled}: {err.strip()[-1500:]}")
        defines = _read_defines(asm)
        out.append({"config": enabled, "MAX_SWAPFILES": defines.pop("MAX_SWAPFILES"),
                    "defines": dict(sorted(defines.items(),
                                           key=lambda kv: kv[1] if isinstance(kv[1], int) else 0))})
    return out


# ------------------------------------------------------------------------------------ compiled values

@dataclass
class Item:
    """One compile-time expression; GUARD is a preprocessor condition (absent when false)."""

    key: str
    expr: str
    guard: str = "1"


def _cflags(tree: Tree, prelude: Path) -> list[str]:
    src, obj, a = tree.src, tree.obj, tree.karch
    assert obj is not None
    makefile = (src / "Makefile").read_text(errors="replace")
    std = "-std=gnu11" if "-std=gnu11" in makefile else "-std=gnu89"
    # Dialect flags the Makefile takes from the config (CC_FLAGS_DIALECT += $(CONFIG_CC_MS_EXTENSIONS)).
    config = tree.config()
    language = [flag for name in DIALECT_CONFIG if f"$({name})" in makefile
                for flag in config.get(name, "").split()]
    isystem = _compiler_output(COMPILER[tree.arch], "-print-file-name=include")
    incs = [src / f"arch/{a}/include", obj / f"arch/{a}/include/generated", src / "include", obj / "include",
            src / f"arch/{a}/include/uapi", obj / f"arch/{a}/include/generated/uapi", src / "include/uapi",
            obj / "include/generated/uapi"]
    forced = [src / "include/linux/compiler-version.h", src / "include/linux/kconfig.h", prelude,
              src / "include/linux/compiler_types.h"]
    return [*COMMON_CFLAGS, std, *language, *ARCH_CFLAGS[tree.arch], "-isystem", isystem,
            *(f"-I{p}" for p in incs), *(arg for p in forced if p.is_file() for arg in ("-include", str(p)))]


def _source(items: list[Item], preamble: str) -> tuple[str, list[tuple[int, int]]]:
    """The C file and each item's (first line, last line)."""
    lines = preamble.splitlines()
    spans = []
    for n, item in enumerate(items):
        first = len(lines) + 1
        lines += [f"void derive_{n}(void)", "{", f"#if {item.guard}",
                  f"\tunsigned long v = (unsigned long)({item.expr});",
                  "\tif (__builtin_constant_p(v))",
                  f'\t\tasm volatile("\\n.ascii \\"->{n} %0\\"" : : "i" (v));',
                  "\telse", f'\t\tasm volatile("\\n.ascii \\"->{n} nonconstant\\"");',
                  "#else", f'\tasm volatile("\\n.ascii \\"->{n} absent\\"");', "#endif", "}"]
        spans.append((first, len(lines)))
    return "\n".join(lines) + "\n", spans


def compile_items(tree: Tree, items: list[Item], preamble: str, work: Path) -> dict[str, Value]:
    """{key: value | None (guard false) | {"not_derivable": compiler message}}; an item the compiler
    rejects is isolated (recompiled without it) and recorded with its message."""
    prelude = work / "prelude.h"
    prelude.write_text("".join(f"#undef {name}\n" for name in OVERRIDES.get(tree.arch, ())))
    flags = _cflags(tree, prelude)
    failed: dict[int, str] = {}
    live = list(range(len(items)))
    for _ in range(MAX_ROUNDS):
        source, spans = _source([items[i] for i in live], preamble)
        code, err, asm = _compile(COMPILER[tree.arch], flags, source, work, "values")
        if code == 0:
            values = _read_defines(asm)
            out: dict[str, Value] = {}
            for n, i in enumerate(live):
                out[items[i].key] = values[str(n)]
            for i, message in failed.items():
                out[items[i].key] = {"not_derivable": message}
            return out
        bad = _blame(err, spans, "values.c")
        if not bad:
            raise VMError(f"{COMPILER[tree.arch]} failed on the derive program outside any one expression:\n"
                          + "\n".join(err.strip().splitlines()[-25:]))
        for n, message in bad.items():
            failed[live[n]] = message
        live = [i for n, i in enumerate(live) if n not in bad]
    raise VMError(f"the derive program still fails after {MAX_ROUNDS} rounds of isolating expressions")


def _blame(stderr: str, spans: list[tuple[int, int]], name: str) -> dict[int, str]:
    """{item number: first error message} for the errors gcc attributes to the items' functions."""
    bad: dict[int, str] = {}
    function = None
    for line in stderr.splitlines():
        if m := re.search(r"In function '?derive_(\d+)'?", line):
            function = int(m.group(1))
            continue
        m = re.match(r"(.+?):(\d+):\d+: error: (.*)", line)
        if not m:
            continue
        number = None
        if Path(m.group(1)).name == name:
            number = next((n for n, (lo, hi) in enumerate(spans) if lo <= int(m.group(2)) <= hi), None)
        if number is None:
            number = function
        if number is not None:
            bad.setdefault(number, m.group(3).strip())
    return bad


def _api(tree: Tree) -> str:
    """The text of the headers that say which inline functions and macros this version has."""
    parts = [p.read_text(errors="replace") for p in sorted((tree.src / f"arch/{tree.karch}/include/asm").glob("*.h"))]
    parts += [(tree.src / h).read_text(errors="replace") for h in API_HEADERS if (tree.src / h).is_file()]
    return "\n".join(parts)


PREAMBLE = """\
#include <linux/mm.h>
#include <linux/swap.h>
#include <linux/swapops.h>
#if __has_include(<linux/leafops.h>)
#include <linux/leafops.h>
#endif
#define DERIVE_BITS_ ({bits})
#define DERIVE_OFF_BITS (DERIVE_BITS_ < SWP_TYPE_SHIFT ? DERIVE_BITS_ : SWP_TYPE_SHIFT)
"""


def _vector_items(tree: Tree) -> tuple[list[Item], list[dict]]:
    """The expressions of the vectors part, and the vector skeletons they fill."""
    api = _api(tree)

    def has(name: str) -> bool:
        return re.search(rf"\b{re.escape(name)}\b", api) is not None

    items: list[Item] = []
    vectors: list[dict] = []

    def add(name: str, level: str, raw: str, guard: str, swap: dict | None, predicates: tuple[str, ...]) -> None:
        key = f"v{len(vectors)}"
        vector: dict = {"name": name, "level": level, "expr": raw, "keys": {}}
        items.append(Item(f"{key}.raw", raw, guard))
        vector["keys"]["raw"] = f"{key}.raw"
        wrap = "__pte" if level == "pte" else "__pmd"
        for part, expr in (swap or {}).items():
            items.append(Item(f"{key}.{part}", expr, guard))
            vector["keys"][part] = f"{key}.{part}"
        if swap is not None:
            to_entry = "__pte_to_swp_entry" if level == "pte" else "__pmd_to_swp_entry"
            # The generic conversion: softleaf_from_pte/pmd since 6.19, pte/pmd_to_swp_entry before.
            generic = f"{level}_to_swp_entry" if has(f"{level}_to_swp_entry") else f"softleaf_from_{level}"
            for part, expr in (("__swp_type", f"__swp_type({to_entry}({wrap}({raw})))"),
                               ("__swp_offset", f"__swp_offset({to_entry}({wrap}({raw})))"),
                               ("swp_type", f"swp_type({generic}({wrap}({raw})))"),
                               ("swp_offset", f"swp_offset({generic}({wrap}({raw})))")):
                items.append(Item(f"{key}.{part}", expr, guard))
                vector["keys"][part] = f"{key}.{part}"
        for pred in predicates:
            if level == "pmd":
                pred = pred.replace("pte_", "pmd_")
            if has(pred):
                items.append(Item(f"{key}.{pred}", f"!!{pred}({wrap}({raw}))", guard))
                vector["keys"][pred] = f"{key}.{pred}"
        vectors.append(vector)

    def swap_vector(name: str, type_expr: str, off_expr: str, guard: str, mods: tuple[str, ...] = (),
                    level: str = "pte") -> None:
        entry = f"swp_entry({type_expr}, {off_expr})"
        raw = f"pte_val(swp_entry_to_pte({entry}))" if level == "pte" else f"pmd_val(swp_entry_to_pmd({entry}))"
        for mod in mods:
            raw = f"pte_val({mod}(__pte({raw})))"
        add(name, level, raw, guard, {"type": type_expr, "offset": off_expr}, SWAP_PREDICATES)

    types = [("0", "0", "1"), ("1", "1", "1"), ("5", "5", "1")]
    types += [(t, t, f"defined({t})") for t in SPECIAL_TYPES]
    for tname, texpr, guard in types:
        for oname, oexpr in OFFSETS.items():
            swap_vector(f"swap type={tname} offset={oname}", texpr, oexpr, guard)
    mods = [m for m in MODIFIERS if has(m)]
    for tname, texpr, guard in (("1", "1", "1"), ("SWP_MIGRATION_WRITE", "SWP_MIGRATION_WRITE",
                                                  "defined(SWP_MIGRATION_WRITE)")):
        for mod in mods:
            swap_vector(f"swap type={tname} offset=0x1234 +{mod}", texpr, "0x1234UL", guard, (mod,))
        if len(mods) > 1:
            swap_vector(f"swap type={tname} offset=0x1234 +{'+'.join(mods)}", texpr, "0x1234UL", guard,
                        tuple(mods))
    if has("make_pte_marker"):
        for marker in MARKERS:
            add(f"marker {marker}", "pte", f"pte_val(make_pte_marker({marker}))", f"defined({marker})",
                {"type": f"swp_type(make_pte_marker_entry({marker}))",
                 "offset": f"swp_offset(make_pte_marker_entry({marker}))"}, SWAP_PREDICATES)
    if has("SWP_MIG_YOUNG"):
        for ad in ("SWP_MIG_YOUNG", "SWP_MIG_DIRTY", "SWP_MIG_YOUNG | SWP_MIG_DIRTY"):
            swap_vector(f"migration-write young/dirty offset=0x12345|{ad} (as make_migration_entry_young/dirty "
                        "store them when swap_migration_ad_supported)", "SWP_MIGRATION_WRITE",
                        f"(0x12345UL | {ad})", "defined(SWP_MIGRATION_WRITE)")
        add("make_migration_entry_dirty(make_migration_entry_young(write 0x12345))", "pte",
            "pte_val(swp_entry_to_pte(make_migration_entry_dirty(make_migration_entry_young("
            "make_writable_migration_entry(0x12345UL)))))", "defined(SWP_MIGRATION_WRITE)", {}, SWAP_PREDICATES)
    if has("swp_entry_to_pmd"):
        for tname in ("SWP_MIGRATION_READ", "SWP_MIGRATION_WRITE", "SWP_DEVICE_WRITE", "SWP_DEVICE_READ"):
            # swapops.h's own guard: ARCH_ENABLE_THP_MIGRATION, ARCH_HAS_PMD_SOFTLEAVES since 7.3.
            guard = (f"defined({tname}) && (defined(CONFIG_ARCH_ENABLE_THP_MIGRATION) || "
                     "defined(CONFIG_ARCH_HAS_PMD_SOFTLEAVES))")
            swap_vector(f"pmd type={tname} offset=0x12345", tname, "0x12345UL", guard, level="pmd")
    for name, raw, needs in PRESENT_SAMPLES[tree.arch]:
        guard = " && ".join(f"defined({n})" for n in needs) or "1"
        add(name, "pte", raw, guard, None, PRESENT_PREDICATES)
    add("none", "pte", "0UL", "1", None, PRESENT_PREDICATES)
    return items, vectors


def _fill(vectors: list[dict], values: dict[str, Value]) -> tuple[list[dict], list[dict]]:
    """(vectors with values, vectors whose raw value the compiler could not fold: name + message)."""
    out, failed = [], []
    for vector in vectors:
        raw = values[vector["keys"]["raw"]]
        if raw is None:
            continue  # guard false: this kernel does not have it
        if isinstance(raw, dict):
            failed.append({"name": vector["name"], "expr": vector["expr"], **raw})
            continue
        entry: dict = {"name": vector["name"], "level": vector["level"], "expr": vector["expr"], "raw": hex(raw)}
        decode: dict = {}
        for part, key in vector["keys"].items():
            value = values[key]
            if part == "raw":
                continue
            if part in ("type", "offset"):
                entry[part] = hex(value) if part == "offset" and isinstance(value, int) else value
            elif isinstance(value, dict) or value is None:
                decode[part] = value
            elif part in ("__swp_offset", "swp_offset"):
                decode[part] = hex(value)
            elif part in ("__swp_type", "swp_type"):
                decode[part] = value
            else:
                decode[part] = bool(value)
        entry["decode"] = decode
        out.append(entry)
    return out, failed


def derive(tree: Tree) -> dict:
    """The derived document for TREE (types always; constants and vectors when it is configured)."""
    with tempfile.TemporaryDirectory(prefix="ptinspect-derive-") as tmp:
        work = Path(tmp)
        doc: dict = {"arch": tree.arch, "release": tree.release(), "source": tree.origin,
                     "compiler": _compiler_output(COMPILER[tree.arch], "--version"),
                     "types_compiler": _compiler_output("gcc", "--version"), "types": derive_types(tree.src, work)}
        if tree.obj is None:
            doc["constants"] = doc["vectors"] = None
            doc["not_configured"] = "no include/generated/autoconf.h: constants and vectors need a configured tree"
            return doc
        config = tree.config()
        doc["config"] = {name: config.get(name) for name in RECORDED_CONFIG}
        doc["overrides"] = [f"#undef {name} (paravirt pte_val/__pte cannot fold; native_ versions used)"
                            for name in OVERRIDES.get(tree.arch, ())]
        names = CONSTANT_NAMES[tree.arch] + GENERIC_CONSTANTS
        items = [Item(f"c.{name}", name, f"defined({name})") for name in names]
        vector_items, vectors = _vector_items(tree)
        preamble = PREAMBLE.format(bits=OFFSET_BITS[tree.arch])
        progress(f"derive {tree.arch} {doc['release']}: compiling {len(items) + len(vector_items)} expressions "
                 f"with {COMPILER[tree.arch]}")
        values = compile_items(tree, items + vector_items, preamble, work)
        doc["constants"] = {name: (hex(v) if isinstance(v, int) else v) for name in names
                            for v in [values[f"c.{name}"]]}
        doc["vectors"], doc["not_derivable"] = _fill(vectors, values)
        return doc


# ---------------------------------------------------------------------------------------------- input

def tree_from_dir(path: Path, arch: str) -> Tree:
    """A source tree (configured in place or not), or a Debian headers flavour directory whose
    common tree (named by its Makefile's `include .../Makefile`) lies beside it."""
    path = path.resolve()
    obj = path if (path / "include/generated/autoconf.h").is_file() else None
    src = path
    if obj is not None and not (path / "include/linux/swap.h").is_file():
        m = re.search(r"^include\s+(\S+)/Makefile", (path / "Makefile").read_text(errors="replace")
                      if (path / "Makefile").is_file() else "", re.MULTILINE)
        src = path.parent / Path(m.group(1)).name if m else path
    if not (src / "include/linux/swap.h").is_file():
        raise VMError(f"{path} is not a kernel tree (no include/linux/swap.h)")
    return Tree(arch, src, obj, {"tree": str(path)})


def _recipe(series: str, arch: str, flavour: str) -> Recipe:
    """The headers of a series as an images.Recipe: `dbg` names the flavour package whose names give
    the ABI (Recipe.abi_pattern), `config` the architecture-independent common package."""
    if series not in SERIES_SUITE:
        raise VMError(f"unknown series {series!r}; choose one of {', '.join(SERIES_SUITE)}")
    headers = "linux-headers-{abi}-{flavour}"
    return Recipe(id=f"headers-{series}-{flavour}", arch=arch, debian_arch=DEB_ARCH[arch],
                  suite=SERIES_SUITE[series], series=series, flavour=flavour, image=headers,
                  config="linux-headers-{abi}-common", modules=headers, dbg=headers,
                  tested_release="", tested_version="")


def resolve_headers(recipe: Recipe, apt: AptState) -> tuple[str, list[str]]:
    """(abi, [pkg:arch=version, ...]) of the newest ABI of the series whose flavour headers and
    (Architecture: all) common headers are both in the suite; images.resolve's search, but the
    common package is looked up as :all."""
    pattern = recipe.abi_pattern()
    prefix = recipe.dbg.split("{abi}")[0] + recipe.series
    abis = {match["abi"] for name in apt.package_names(prefix) if (match := pattern.match(name))}
    for abi in sorted(abis, key=_abi_key, reverse=True):
        wanted = ((recipe.package("dbg", abi), recipe.debian_arch), (recipe.package("config", abi), "all"))
        found = [(name, arch, apt.versions(name, arch).get(recipe.suite)) for name, arch in wanted]
        if all(version for _, _, version in found):
            return abi, [f"{name}:{arch}={version}" for name, arch, version in found]
    raise VMError(f"no {recipe.series} headers ({recipe.flavour}, {recipe.debian_arch}) with their common "
                  f"package in {recipe.suite}")


def headers_tree(series: str, arch: str, flavour: str | None = None) -> Tree:
    """Debian's configured headers of SERIES for ARCH/FLAVOUR, fetched and cached under
    $CACHE/derive/<series>-<flavour>/ (reused while it matches its stamp)."""
    recipe = _recipe(series, arch, flavour or DEFAULT_FLAVOUR[arch])
    dest = subdir("derive") / recipe.id
    with locked(dest.with_name(recipe.id + ".lock"), FETCH_LOCK_TIMEOUT):
        stamp, reason = check_entry(dest, full=False)
        if stamp is None:
            progress(f"{recipe.id}: {reason}; fetching")
            apt = AptState()
            apt.update()
            abi, packages = resolve_headers(recipe, apt)
            work = dest.with_name(recipe.id + ".partial")
            shutil.rmtree(work, ignore_errors=True)
            try:
                try:
                    debs = _download(apt, packages, work / "debs", recipe.id)
                except VMError as exc:
                    raise VMError(f"cannot download the {series} {recipe.flavour} headers ({', '.join(packages)}): "
                                  f"{exc}\nderive the types part from a source tree instead: "
                                  f"ptinspect vm derive --series {series} --arch {arch} --tree DIR") from None
                for deb in debs:
                    _run(["dpkg-deb", "-x", str(deb), str(work / "staging")], f"dpkg-deb -x {deb.name}")
                    deb.unlink()
                entry = work / "entry"
                (work / "staging/usr/src").rename(entry)
                _write_stamp(entry, {"abi": abi, "flavour": recipe.flavour, "packages": packages})
                _swap_in(entry, dest)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            stamp, reason = check_entry(dest, full=False)
            if stamp is None:
                raise VMError(f"{recipe.id}: fresh cache entry {dest} is inconsistent: {reason}")
    abi = stamp["abi"]
    return Tree(arch, dest / f"linux-headers-{abi}-common", dest / f"linux-headers-{abi}-{recipe.flavour}",
                {"packages": stamp["packages"]})


def output_name(series: str, arch: str, flavour: str | None) -> str:
    """tests/data/derived/<series>-<arch>[-<variant>].json: the variant is the flavour without the
    Debian arch word (arm64-16k -> 16k), none for the default flavour."""
    if not flavour or flavour == DEFAULT_FLAVOUR[arch]:
        return f"{series}-{arch}.json"
    variant = "-".join(word for word in flavour.split("-") if word != DEB_ARCH[arch]) or flavour
    return f"{series}-{arch}-{variant}.json"


def run(series: str, arch: str, flavour: str | None = None, tree: Path | None = None) -> dict:
    """Derive SERIES/ARCH from Debian's headers (or from TREE)."""
    if arch not in KARCH:
        raise VMError(f"unknown arch {arch!r}; choose one of {', '.join(KARCH)}")
    source = tree_from_dir(tree, arch) if tree else headers_tree(series, arch, flavour)
    doc = derive(source)
    return {"series": series, "flavour": flavour or DEFAULT_FLAVOUR[arch], **doc}


def dump(doc: dict) -> str:
    """The JSON text as committed (stable key order, one value per line)."""
    return json.dumps(doc, indent=1) + "\n"
