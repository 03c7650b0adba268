"""test_hmm.ko build logic without a chroot: what the kernel's Kconfig and config allow, which compiler,
the module's vermagic, and the cache's answer when nothing is built."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from ptinspect.inspector.vm import VMError, hmm
from ptinspect.inspector.vm.images import KernelImage

# lib/Kconfig.debug of linux-source-7.2 7.2.13-1, lines 3355-3366 (config TEST_HMM).
KCONFIG_7_2 = """\
config TEST_HMM
\ttristate "Test HMM (Heterogeneous Memory Management)"
\tdepends on TRANSPARENT_HUGEPAGE
\tdepends on DEVICE_PRIVATE
\tselect HMM_MIRROR
\tselect MMU_NOTIFIER
\thelp
\t  This is a pseudo device driver solely for testing HMM.
\t  Say M here if you want to build the HMM test module.
\t  Doing so will allow you to run tools/testing/selftest/vm/hmm-tests.

\t  If unsure, say N.

config TEST_FREE_PAGES
\ttristate "Test freeing pages"
"""


def test_requirements_of_the_7_2_entry() -> None:
    assert hmm.kconfig_requirements(KCONFIG_7_2) == ["TRANSPARENT_HUGEPAGE", "DEVICE_PRIVATE", "HMM_MIRROR",
                                                     "MMU_NOTIFIER"]


def test_requirements_refuse_conditions_they_cannot_judge() -> None:
    with pytest.raises(VMError, match="cannot judge"):
        hmm.kconfig_requirements(KCONFIG_7_2.replace("depends on DEVICE_PRIVATE", "depends on A || B"))
    with pytest.raises(VMError, match="no `config TEST_HMM`"):
        hmm.kconfig_requirements("config TEST_FREE_PAGES\n\ttristate \"x\"\n")


def test_missing_config_names_what_is_not_built_in() -> None:
    # The form of Debian's 6.12 config (config-6.12.117+deb13-cloud-amd64) and 7.2's.
    config_6_12 = "CONFIG_ZONE_DEVICE=y\nCONFIG_HMM_MIRROR=y\n# CONFIG_DEVICE_PRIVATE is not set\n" \
                  "CONFIG_TRANSPARENT_HUGEPAGE=y\nCONFIG_MMU_NOTIFIER=y\n"
    requirements = hmm.kconfig_requirements(KCONFIG_7_2)
    assert hmm.missing_config(config_6_12, requirements) == ["DEVICE_PRIVATE"]
    assert hmm.missing_config(config_6_12.replace("# CONFIG_DEVICE_PRIVATE is not set", "CONFIG_DEVICE_PRIVATE=y"),
                              requirements) == []
    assert hmm.missing_config("CONFIG_DEVICE_PRIVATE=m\n", ["DEVICE_PRIVATE"]) == ["DEVICE_PRIVATE"]


def test_compiler_from_the_kernel_config() -> None:
    config = 'CONFIG_CC_VERSION_TEXT="x86_64-linux-gnu-gcc-16 (Debian 16.2.0-4) 16.2.0"\nCONFIG_GCC_VERSION=160200\n'
    command, major = hmm.config_compiler(config)
    assert (command, major) == ("x86_64-linux-gnu-gcc-16", "16")
    assert hmm.compiler_package(command, major, "x86_64-linux-gnu") == "gcc-16"
    assert hmm.compiler_package("aarch64-linux-gnu-gcc-14", "14", "x86_64-linux-gnu") == "gcc-14-aarch64-linux-gnu"
    with pytest.raises(VMError, match="only gcc-built"):
        hmm.config_compiler('CONFIG_CC_VERSION_TEXT="Debian clang version 19"\nCONFIG_CLANG_VERSION=190100\n')


def test_depends_names_of_the_kbuild_package() -> None:
    # `dpkg-deb -f linux-kbuild-7.2.13+deb14_7.2.13-1_amd64.deb Depends`
    field = "pahole, libc6 (>= 2.38), libelf1t64 (>= 0.144), libssl3t64 (>= 3.0.0), zlib1g (>= 1:1.2.3.4)"
    assert hmm.depends_names(field) == ["pahole", "libc6", "libelf1t64", "libssl3t64", "zlib1g"]
    assert hmm.depends_names("a:any | b, c") == ["a", "c"]


def test_modpost_undefined_symbols_fail_the_build() -> None:
    # scripts/mod/modpost.c check_exports(): "\"%s\" [%s.ko] undefined!"
    log = 'MODPOST /build/x/Module.symvers\nWARNING: modpost: "memremap_pages" [/build/x/test_hmm.ko] undefined!\n'
    assert hmm._modpost_problems(log) == ['WARNING: modpost: "memremap_pages" [/build/x/test_hmm.ko] undefined!']
    assert hmm._modpost_problems("WARNING: modpost: missing MODULE_DESCRIPTION() in test_hmm.o\n") == []


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs the host gcc to make an ELF object")
def test_vermagic_read_from_a_real_modinfo_section(tmp_path: Path) -> None:
    source = tmp_path / "m.c"
    source.write_text('static const char v[] __attribute__((used, section(".modinfo"))) =\n'
                      '\t"license=GPL\\0vermagic=7.2.13+deb14-cloud-amd64 SMP preempt mod_unload ";\n')
    subprocess.run(["gcc", "-c", "-o", str(tmp_path / "m.o"), str(source)], check=True, timeout=60)
    assert hmm.vermagic((tmp_path / "m.o").read_bytes()) == "7.2.13+deb14-cloud-amd64 SMP preempt mod_unload "
    with pytest.raises(VMError, match="not an ELF"):
        hmm.vermagic(b"not an elf")


def _image(tmp_path: Path) -> KernelImage:
    return KernelImage(id="7.2-x86_64", arch="x86_64", release="7.2.13+deb14-cloud-amd64",
                       vmlinuz=tmp_path / "vmlinuz", vmlinux=tmp_path / "vmlinux", config=tmp_path / "config",
                       modules_dir=tmp_path / "modules", version="7.2.13-1")


def test_module_status_says_why_there_is_no_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PTINSPECT_CACHE", str(tmp_path / "cache"))
    image = _image(tmp_path)
    module, reason = hmm.module_status(image)
    assert module is None and "ptinspect vm hmm build --kernel 7.2-x86_64" in reason
    # a built entry whose file was damaged is not used
    dest = hmm.module_dir(image.release)
    dest.mkdir(parents=True)
    (dest / hmm.MODULE).write_bytes(b"x" * 10)
    (dest / hmm.UAPI).write_text("")
    (dest / "stamp.json").write_text(json.dumps({"release": image.release, "vermagic": "v", "compiler": "c",
                                                 "files": {hmm.MODULE: {"size": 11}, hmm.UAPI: {"size": 0}}}))
    module, reason = hmm.module_status(image)
    assert module is None and "differs from its stamp" in reason
    (dest / hmm.MODULE).write_bytes(b"x" * 11)
    module, reason = hmm.module_status(image)
    assert module is not None and module.ko == dest / hmm.MODULE and reason == ""
    hmm._unsupported_path(image.release).write_text(json.dumps({"reason": "CONFIG_DEVICE_PRIVATE not =y"}))
    assert hmm.module_status(image) == (None, "CONFIG_DEVICE_PRIVATE not =y")
