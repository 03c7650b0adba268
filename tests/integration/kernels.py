"""The test kernels every live test runs on: (arch, kernel name of vm-images/kernels.toml).

One list, so that a kernel added to the VMs is added to every live test. What a kernel cannot make
is not a reason to leave it out: the workload lists it with the reason, and the tests assert that.
"""
from __future__ import annotations

IMAGES = [
    ("x86_64", "7.3"), ("arm64", "7.3"),
    ("x86_64", "7.2"), ("arm64", "7.2"), ("riscv64", "7.2"), ("arm64", "7.2-16k"),
    ("x86_64", "6.12"), ("arm64", "6.12"),
    ("x86_64", "6.1"), ("arm64", "6.1"),
    ("x86_64", "5.10"), ("arm64", "5.10"),
]
IDS = [f"{arch}-{kernel}" for arch, kernel in IMAGES]

# Per kernel, the workload kinds it cannot make and why (the workload must say `unsupported` with a
# reason for exactly these; every other kind must be `ok`). From the kernels, not from the workload:
NO_HUGETLB_64K = "x86-64 has no 64 KiB hugetlb size (2 MiB and 1 GiB only: arch/x86/mm/hugetlbpage.c)"
NO_GUARD = "MADV_GUARD_INSTALL is 6.13+ (mm/madvise.c madvise_guard_install): EINVAL"
NO_MTHP = "mTHP sizes (transparent_hugepage/hugepages-<size>kB) are 6.8+"
NO_POISON = "no UFFDIO_POISON / UFFD_FEATURE_POISON (6.6+)"
BEFORE_6_6 = {
    "mthp_64k": NO_MTHP,
    "guard": NO_GUARD,
    "poison_marker": NO_POISON,
}
BEFORE_6_1 = {
    **BEFORE_6_6,
    "uffd_wp_marker": "no PTE markers (5.19+) and no UFFD_FEATURE_WP_UNPOPULATED (6.4+)",
    "uffd_wp_shmem_marker": "no UFFD_FEATURE_WP_HUGETLBFS_SHMEM (5.19+)",
}
NOT_MADE: dict[tuple[str, str], dict[str, str]] = {
    ("x86_64", "7.3"): {"hugetlb_64k": NO_HUGETLB_64K},
    ("arm64", "7.3"): {},
    ("x86_64", "7.2"): {"hugetlb_64k": NO_HUGETLB_64K},
    ("arm64", "7.2"): {},
    ("riscv64", "7.2"): {
        **{kind: "no uffd-wp bit without Svrsw60t59b, which QEMU 7.2 does not emulate "
                 "(arch/riscv/include/asm/pgtable-bits.h _PAGE_UFFD_WP)"
           for kind in ("uffd_wp_marker", "uffd_wp_present", "uffd_wp_shmem_marker")},
        "hwpoison": "CONFIG_MEMORY_FAILURE unset (riscv does not select ARCH_SUPPORTS_MEMORY_FAILURE)",
    },
    ("arm64", "7.2-16k"): {},
    ("x86_64", "6.12"): {"hugetlb_64k": NO_HUGETLB_64K, "guard": NO_GUARD},
    ("arm64", "6.12"): {"guard": NO_GUARD},
    ("x86_64", "6.1"): {
        **BEFORE_6_6, "hugetlb_64k": NO_HUGETLB_64K,
        "uffd_wp_marker": "PTE markers are there (5.19+) but not UFFD_FEATURE_WP_UNPOPULATED (6.4+; absent from "
                          "6.1's include/uapi/linux/userfaultfd.h): write-protecting empty PTEs installs no marker",
        "hwpoison": "CONFIG_MEMORY_FAILURE unset in Debian 12's cloud-amd64 config (no X86_SUPPORTS_MEMORY_FAILURE)",
    },
    ("arm64", "6.1"): {
        **BEFORE_6_6,
        **{kind: "CONFIG_HAVE_ARCH_USERFAULTFD_WP unset: arm64 has no uffd-wp bit before 6.10"
           for kind in ("uffd_wp_marker", "uffd_wp_present", "uffd_wp_shmem_marker")},
    },
    ("x86_64", "5.10"): {
        **BEFORE_6_1, "hugetlb_64k": NO_HUGETLB_64K,
        "uffd_wp_present": "made, but pagemap has no PM_UFFD_WP before 5.13 (fb8e37f35a2f): nothing can check it",
        "hwpoison": "CONFIG_MEMORY_FAILURE unset in Debian 11's cloud-amd64 config",
    },
    ("arm64", "5.10"): {
        **BEFORE_6_1,
        "uffd_wp_present": "CONFIG_HAVE_ARCH_USERFAULTFD_WP unset: arm64 has no uffd-wp bit in 5.10",
    },
}
