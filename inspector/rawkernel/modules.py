"""Loaded modules: their names, function symbols and (x86-64) ORC tables, so that a call chain
through module code is named and unwound as the kernel does it (%pB's "func+off/size [module]";
arch/x86/kernel/unwind_orc.c orc_module_find()).

Each module is on the `modules` list (kernel/module/main.c, 7.2; kernel/module.c before 6.0);
`mod->kallsyms` is the symbol table the kernel keeps (its core symbols once the module is live:
Elf64_Sym records whose st_value is the run-time address), and `mod->arch` holds the ORC tables
module_finalize() gave unwind_module_init() (arch/x86/kernel/unwind_orc.c), which sorted them.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from ptinspect.archs.x86_orc import ENTRY_BYTES

from ..kernel import KernelError
from ..vmlinux import ELF64_SYM, STT_FUNC
from .memory import KernelMemory, _Fields

MAX_MODULES = 1 << 16
MAX_SYMBOLS = 1 << 20  # a bound no module's symbol table reaches
SYM_BYTES = struct.calcsize(ELF64_SYM)
ORC_ENTRY_MAX = 1 << 22


@dataclass(frozen=True)
class LoadedModule:
    """One module: its functions (run-time start, size, name), ascending, and its raw ORC tables
    (x86-64: the s32 IP offsets' address and values, the entries' bytes), empty where it has none."""

    name: str
    functions: tuple[tuple[int, int, str], ...]
    starts: tuple[int, ...]  # the functions' starts, for bisect
    orc_ip_base: int = 0
    orc_ip_offsets: tuple[int, ...] = ()
    orc_entries: bytes = b""


class Modules(KernelMemory):
    """struct module on the `modules` list (include/linux/module.h)."""

    def modules(self) -> list[LoadedModule]:
        """Every live module ([] when the kernel has no module support or the layout lacks it), read
        at each call: modules come and go while a watched VM runs."""
        return self._read_modules()

    def _read_modules(self) -> list[LoadedModule]:
        m = self.layout.members
        if "modules" not in self.layout.symbols or "module.list" not in m or "mod_kallsyms.symtab" not in m:
            return []
        list_off = m["module.list"][0]
        fields = _Fields("struct module", {
            "next": (list_off + m["list_head.next"][0], 8),
            **{n: m[f"module.{n}"] for n in ("name", "kallsyms", "arch.orc_unwind_ip", "arch.orc_unwind",
                                              "arch.num_orcs") if f"module.{n}" in m}})
        kallsyms = _Fields("struct mod_kallsyms",
                           {n: m[f"mod_kallsyms.{n}"] for n in ("symtab", "num_symtab", "strtab")})
        head = self.symbol("modules")
        node = self._ptr(head + self._member("list_head.next"), "the modules list head")
        seen = {head}
        out: list[LoadedModule] = []
        while node != head:
            if node in seen or len(seen) > MAX_MODULES:
                raise KernelError(f"the modules list does not return to its head (at {node:#x})")
            seen.add(node)
            values, blob = fields.read_span(self, node - list_off)
            name = fields.raw(blob, "name").split(b"\0", 1)[0].decode(errors="replace")
            out.append(self._module(name, values, kallsyms))
            node = values["next"]
        return out

    def _module(self, name: str, values: dict[str, int], kallsyms: _Fields) -> LoadedModule:
        functions: list[tuple[int, int, str]] = []
        if values["kallsyms"]:
            syms = kallsyms.read(self, values["kallsyms"])
            count = syms["num_symtab"]
            if count > MAX_SYMBOLS:
                raise KernelError(f"module {name}: {count} symbols")
            table = self.read(syms["symtab"], count * SYM_BYTES, f"the symbol table of module {name}")
            records = [r for r in struct.iter_unpack(ELF64_SYM, table) if r[1] & 0xF == STT_FUNC and r[4] and r[0]]
            # the names up to the last one's start in one read; a name running past it, on its own
            last = max((r[0] for r in records), default=0)
            names = self.read(syms["strtab"], last, f"the symbol names of module {name}") if last else b""
            for st_name, _info, _other, _shndx, value, size in records:
                end = names.find(b"\0", st_name)
                raw = names[st_name:end] if end >= 0 else self._string(syms["strtab"] + st_name,
                                                                       f"a symbol name of module {name}")
                functions.append((value, size, raw.decode(errors="replace")))
        functions.sort()
        count = values.get("arch.num_orcs", 0)
        if not count or not values.get("arch.orc_unwind_ip") or not values.get("arch.orc_unwind"):
            return LoadedModule(name, tuple(functions), tuple(f[0] for f in functions))
        if count > ORC_ENTRY_MAX:
            raise KernelError(f"module {name}: {count} ORC entries")
        base = values["arch.orc_unwind_ip"]
        offsets = struct.unpack(f"<{count}i", self.read(base, 4 * count, f"the ORC IPs of module {name}"))
        entries = self.read(values["arch.orc_unwind"], ENTRY_BYTES * count, f"the ORC entries of module {name}")
        return LoadedModule(name, tuple(functions), tuple(f[0] for f in functions), base, offsets, entries)
