"""The kernel's release and the facts the decoders need (swap.h config, swap devices, x86's physical
address width), read from memory and the layout."""
from __future__ import annotations

from dataclasses import replace

from ptinspect.archs.common import Fact, KernelFacts
from ptinspect.archs.versions import release_layout

from ..kernel import KernelError, confirmation, derive_remaining
from ..reader import ReadError
from .memory import SOURCE, KernelMemory, _Fields


class ReleaseFacts(KernelMemory):
    """init_uts_ns's release; KernelFacts from the layout, swap_info[] and boot_cpu_data."""

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
