/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Kernel uapi facts the workload relies on, copied from Linux 7.2.13
 * (linux-source-7.2). They are spelled out here, not taken from
 * <linux/userfaultfd.h> or <linux/fs.h>, because the build host's headers
 * (Debian bookworm: Linux 6.1 uapi) predate several of them. Values are ABI:
 * the same numbers are understood by the 6.12 and 6.1 kernels, which reject
 * what they do not know (EINVAL/ENOTTY); the workload reports that rejection.
 */
#ifndef PTINSPECT_UAPI_H
#define PTINSPECT_UAPI_H

#include <stdint.h>
#include <sys/ioctl.h>

/* --- madvise(2): include/uapi/asm-generic/mman-common.h ------------------- */
#define PT_MADV_DONTNEED 4        /* line 49 */
#define PT_MADV_HUGEPAGE 14       /* line 62 */
#define PT_MADV_NOHUGEPAGE 15     /* line 63 */
#define PT_MADV_COLD 20           /* line 72, Linux 5.4+ */
#define PT_MADV_PAGEOUT 21        /* line 73, Linux 5.4+ */
#define PT_MADV_COLLAPSE 25       /* line 80, Linux 6.1+ */
#define PT_MADV_HWPOISON 100      /* line 56, needs CONFIG_MEMORY_FAILURE */
#define PT_MADV_GUARD_INSTALL 102 /* line 82, Linux 6.13+ */
#define PT_MADV_GUARD_REMOVE 103  /* line 83, Linux 6.13+ */

/* --- getrandom(2): include/uapi/linux/random.h ------------------------------ */
#define PT_GRND_INSECURE 0x0004 /* line 56, Linux 5.6+ */

/* --- move_pages(2): include/uapi/linux/mempolicy.h ------------------------- */
#define PT_MPOL_MF_MOVE (1 << 1) /* line 52 */

/* --- mmap(2) flags: include/uapi/asm-generic/mman-common.h, hugetlb_encode.h */
#define PT_MAP_FIXED_NOREPLACE 0x100000 /* mman-common.h:31 */
#define PT_MAP_HUGE_SHIFT 26            /* hugetlb_encode.h:20: log2(size) << 26 */

/* --- statfs f_type: include/uapi/linux/magic.h ----------------------------- */
#define PT_RAMFS_MAGIC 0x858458f6 /* line 17 */
#define PT_TMPFS_MAGIC 0x01021994 /* line 18 */

/* --- /proc/PID/pagemap entry bits: fs/proc/task_mmu.c:1949-1957 (7.2) ----- */
#define PM_PFRAME_MASK ((1ULL << 55) - 1) /* PFN, or swap type | offset << 5 */
#define PM_SWAP_TYPE_BITS 5               /* MAX_SWAPFILES_SHIFT */
#define PM_SOFT_DIRTY (1ULL << 55)
#define PM_MMAP_EXCLUSIVE (1ULL << 56)
#define PM_UFFD_WP (1ULL << 57)
#define PM_GUARD_REGION (1ULL << 58) /* 7.2 only */
#define PM_FILE (1ULL << 61)
#define PM_SWAP (1ULL << 62)
#define PM_PRESENT (1ULL << 63)

/* --- /proc/kpageflags bits: include/uapi/linux/kernel-page-flags.h -------- */
#define KPF_ANON 12
#define KPF_COMPOUND_HEAD 15
#define KPF_HUGE 17 /* hugetlb folio */
#define KPF_HWPOISON 19
#define KPF_THP 22 /* any large anon/file folio: PMD THP and mTHP */
#define KPF_ZERO_PAGE 24

/* --- PAGEMAP_SCAN: include/uapi/linux/fs.h:459-521 (Linux 6.7+) ---------- */
#define PAGE_IS_WPALLOWED (1 << 0)
#define PAGE_IS_WRITTEN (1 << 1)
#define PAGE_IS_FILE (1 << 2)
#define PAGE_IS_PRESENT (1 << 3)
#define PAGE_IS_SWAPPED (1 << 4)
#define PAGE_IS_PFNZERO (1 << 5)
#define PAGE_IS_HUGE (1 << 6)
#define PAGE_IS_SOFT_DIRTY (1 << 7)
#define PAGE_IS_GUARD (1 << 8) /* 7.2; 6.7-6.12 reject it with EINVAL */
#define PM_SCAN_CATEGORIES_6_7 0xffULL
#define PM_SCAN_CATEGORIES_7_2 0x1ffULL

struct page_region {
	uint64_t start;
	uint64_t end; /* exclusive */
	uint64_t categories;
};

struct pm_scan_arg {
	uint64_t size; /* sizeof(struct pm_scan_arg) */
	uint64_t flags;
	uint64_t start;
	uint64_t end;
	uint64_t walk_end; /* written by the kernel */
	uint64_t vec;      /* struct page_region * */
	uint64_t vec_len;
	uint64_t max_pages;
	uint64_t category_inverted;
	uint64_t category_mask;
	uint64_t category_anyof_mask;
	uint64_t return_mask;
};

#define PROCFS_IOCTL_MAGIC 'f'
#define PAGEMAP_SCAN _IOWR(PROCFS_IOCTL_MAGIC, 16, struct pm_scan_arg)

/* --- userfaultfd: include/uapi/linux/userfaultfd.h (7.2) ------------------ */
#define UFFD_API ((uint64_t)0xAA)                  /* line 25 */
#define UFFD_FEATURE_PAGEFAULT_FLAG_WP (1ULL << 0) /* line 234 */
#define UFFD_FEATURE_WP_HUGETLBFS_SHMEM (1ULL << 12) /* line 246, 5.19+ */
#define UFFD_FEATURE_WP_UNPOPULATED (1ULL << 13)     /* line 247, 6.4+ */
#define UFFD_FEATURE_POISON (1ULL << 14)             /* line 248, 6.6+ */

struct uffdio_api { /* line 162 */
	uint64_t api;
	uint64_t features; /* in: requested; out: all the kernel offers */
	uint64_t ioctls;
};

struct uffdio_range { /* line 256 */
	uint64_t start;
	uint64_t len;
};

struct uffdio_register { /* line 261 */
	struct uffdio_range range;
	uint64_t mode;
	uint64_t ioctls;
};
#define UFFDIO_REGISTER_MODE_MISSING (1ULL << 0)
#define UFFDIO_REGISTER_MODE_WP (1ULL << 1)

struct uffdio_writeprotect { /* line 308 */
	struct uffdio_range range;
	uint64_t mode;
};
#define UFFDIO_WRITEPROTECT_MODE_WP (1ULL << 0) /* line 323 */

struct uffdio_poison { /* line 347 */
	struct uffdio_range range;
	uint64_t mode;
	int64_t updated;
};

#define UFFDIO 0xAA /* lines 73-105 */
#define UFFDIO_API _IOWR(UFFDIO, 0x3F, struct uffdio_api)
#define UFFDIO_REGISTER _IOWR(UFFDIO, 0x00, struct uffdio_register)
#define UFFDIO_WRITEPROTECT _IOWR(UFFDIO, 0x06, struct uffdio_writeprotect)
#define UFFDIO_POISON _IOWR(UFFDIO, 0x08, struct uffdio_poison)

#endif
