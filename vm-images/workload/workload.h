/* SPDX-License-Identifier: GPL-2.0-only */
/* Shared declarations of the ptinspect guest workload. */
#ifndef PTINSPECT_WORKLOAD_H
#define PTINSPECT_WORKLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define KIB 1024UL
#define MIB (1024UL * KIB)

/*
 * Every region lives in its own slot of a fixed arena, so that no two
 * regions' VMAs can merge and every slot is aligned for the largest leaf
 * made, the PMD (THP, hugetlb). A slot is twice the PMD size: a table holds
 * ps / 8 entries, so a PMD maps ps * ps / 8 bytes (2 MiB with 4 KiB pages,
 * 32 MiB with arm64's 16 KiB granule) and a slot is 4 MiB or 64 MiB.
 * 128 GiB fits every user address space of the three architectures (Sv39:
 * 256 GiB; 128 slots of 64 MiB end at 136 GiB) and is far from the binary,
 * the brk heap and the mmap base.
 */
#define ARENA_BASE 0x2000000000UL

static inline size_t pmd_size(size_t ps) { return ps * (ps / 8); }
static inline size_t slot_size(size_t ps) { return 2 * pmd_size(ps); }

/* What became of a region (or an operation); spelled by status_name(). */
enum status {
	ST_OK,          /* created, and /proc says what was intended */
	ST_MISMATCH,    /* created, but /proc disagrees (reason says how) */
	ST_UNSUPPORTED, /* this kernel/arch/config cannot produce it */
	ST_FAILED,      /* an unexpected error; reason has the errno text */
	ST_SKIPPED,     /* not attempted on request (command-line flag) */
};

/* A region's /proc view of its VMA (from /proc/PID/smaps). */
struct vma_info {
	bool found;
	uintptr_t start, end;
	char flags[160]; /* VmFlags */
	long rss_kb, anon_huge_kb, swap_kb, file_pmd_kb, shmem_pmd_kb;
	int thp_eligible; /* -1 when the kernel does not print it */
};

#define MAX_DETAILS 6

struct region {
	const char *name;
	const char *kind;
	const char *backing; /* anon-private, anon-shared, file-private, ... */
	const char *prot;    /* final protection, "rwx" letters or '-' */
	size_t length;
	size_t page_size; /* intended mapping (leaf) size */
	pid_t pid;        /* address space holding the region */
	uintptr_t slot;   /* the arena address reserved for it */
	uintptr_t start;  /* 0 while not mapped */
	enum status status;
	char reason[320];

	/* filled by inspect_region() */
	uint64_t *pagemap;    /* one raw /proc/PID/pagemap value per page */
	uint64_t *kpageflags; /* per page, for present pages */
	bool *kpf_valid;
	uint64_t *scan; /* PAGEMAP_SCAN categories per page, NULL if none */
	struct vma_info vma;

	/* kind-specific facts, printed as strings */
	int ndetails;
	char detail_key[MAX_DETAILS][32];
	char detail_val[MAX_DETAILS][160];
	uint64_t aux[16]; /* kind-private scratch, e.g. PFNs before poisoning */
};

/* Facts shared by the region builders. */
struct ctx {
	size_t ps;
	pid_t pid, child;
	bool guest; /* in the test VM: MADV_HWPOISON allowed, files kept */
	int uffd;            /* -1 when userfaultfd is unavailable */
#define UFFD_NOT_OPENED (-2)
	uint64_t uffd_offered;   /* features the kernel offers (UFFDIO_API) */
	uint64_t uffd_features;  /* features enabled on uffd */
	char uffd_error[160];    /* why uffd is -1 */
	uint64_t scan_mask;      /* PAGEMAP_SCAN categories accepted; 0: none */
	char scan_error[160];
	bool kpageflags_ok;
	char kpageflags_error[160];
};

/* regions.c */
size_t region_count(void);
struct region *region_at(size_t i);
void build_regions(struct ctx *c);
void check_region(struct region *r, const struct ctx *c);
bool have_swap(void);

/* probe.c */
int pagemap_read(pid_t pid, uintptr_t start, size_t npages, size_t ps,
		 uint64_t *out);
int kpageflags_read(uint64_t pfn, uint64_t *out);
void scan_probe(struct ctx *c);
int pagemap_scan(pid_t pid, uintptr_t start, size_t npages, size_t ps,
		 uint64_t mask, uint64_t *out);
void smaps_read(pid_t pid, uintptr_t addr, struct vma_info *v);
bool read_line(const char *path, char *buf, size_t len);
bool sysfs_choice(const char *path, char *buf, size_t len);
void kconfig_load(const char *path);
const char *kconfig(const char *option);
void inspect_region(struct region *r, const struct ctx *c);

/* json.c */
struct json;
struct json *json_new(void);
void json_begin_object(struct json *j);
void json_end_object(struct json *j);
void json_begin_array(struct json *j);
void json_end_array(struct json *j);
void json_key(struct json *j, const char *key);
void json_string(struct json *j, const char *s);
void json_int(struct json *j, long long v);
void json_hex(struct json *j, uint64_t v);
void json_bool(struct json *j, bool v);
void json_null(struct json *j);
void json_newline(struct json *j);
const char *json_text(const struct json *j, size_t *len);
void json_free(struct json *j);
void json_lines(struct json *j, const char *path);

/* ops.c */
void serve_ops(void);

/* main.c */
const char *status_name(enum status st);
void write_all(const char *buf, size_t len);
void set_status(struct region *r, enum status st, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void add_detail(struct region *r, const char *key, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

#endif
