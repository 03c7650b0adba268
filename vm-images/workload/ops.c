// SPDX-License-Identifier: GPL-2.0-only
/*
 * Memory-management operations on request (workload --ops). After the
 * manifest the workload reads one request per line from stdin (the serial
 * console in the VM) and answers each with one line on stdout:
 *
 *   SEQ prepare OP      map and populate a fresh region fit for OP
 *   SEQ OP [START]      do OP on the region prepared at START (default: the
 *                       region of the latest successful prepare)
 *
 *   PTINSPECT-OP {"seq": "SEQ", "op": ..., "status": ..., "pagemap": [...]}
 *
 *   SEQ run PATH [ARG...]  start program PATH in the background (the kernel's
 *                       selftests): "PTINSPECT-RUN-START SEQ", its output as "PTINSPECT-RUN SEQ LINE"
 *                       lines, then "PTINSPECT-RUN-END SEQ status=N"
 *
 * Each region has its own arena slot after the manifest's regions, so that
 * an operation changes nothing but its region. The protocol is documented in
 * vm-images/README-workload.md.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <spawn.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "uapi.h"
#include "workload.h"

#define OP_FIRST_SLOT 64 /* the manifest's regions use the slots below */
#define OP_SLOTS 64
#define PAGES_4K 16      /* a "4k" region: 16 written base pages ... */
#define PART_FIRST 4     /* ... of which pages 4..11 are operated on */
#define PART_PAGES 8
#define MAX_CALLS 3      /* MADV_PAGEOUT / MADV_COLLAPSE attempts */
#define SEQ_MAX 32

enum shape {
	SHAPE_4K,      /* 16 pages, MADV_NOHUGEPAGE, written */
	SHAPE_GUARDED, /* a 4k region with guards on pages 4..11 */
	SHAPE_THP,     /* a PMD's size, MADV_HUGEPAGE, written: one PMD-mapped THP */
	SHAPE_4K_2M,   /* a PMD's size, MADV_NOHUGEPAGE, written: base pages */
	SHAPE_MTHP,    /* two 64 KiB blocks, MADV_HUGEPAGE, written: 64 KiB mTHPs (arm64: contpte) */
	SHAPE_MIGRATE, /* a 4k region whose pages 8..9 are read-only and 10..11 shared memory, read-only */
};

struct op_region {
	uintptr_t start;
	size_t length;
	enum shape shape;
};

/* What one request did; rendered as the PTINSPECT-OP line. */
struct result {
	const char *op;      /* the operation, or "prepare" */
	const char *for_op;  /* prepare: the operation prepared for */
	enum status status;  /* ST_OK, ST_UNSUPPORTED or ST_FAILED */
	int err;             /* errno of the failing call, 0 if none */
	char reason[320];
	const struct op_region *region;
	uintptr_t op_start;  /* the part the step acted on */
	size_t op_length;
	int calls;           /* madvise calls made (pageout, collapse) */
	bool maps;           /* the answer carries /proc/self/maps (request "maps") */
};

struct op {
	const char *name;
	enum shape shape; /* the region `prepare NAME` makes */
	bool (*fits)(enum shape shape);
	void (*run)(struct op_region *reg, struct result *res);
};

static struct op_region regions[OP_SLOTS];
static size_t nregions;
static struct op_region *latest;

static void fail(struct result *res, enum status st, int err, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void fail(struct result *res, enum status st, int err, const char *fmt, ...)
{
	va_list ap;

	res->status = st;
	res->err = err;
	va_start(ap, fmt);
	vsnprintf(res->reason, sizeof(res->reason), fmt, ap);
	va_end(ap);
}

/* madvise() on [start, start + length); on error the result says why. */
static bool advise(struct result *res, uintptr_t start, size_t length, int advice,
		   const char *name, const char *hint)
{
	int err;

	if (madvise((void *)start, length, advice) == 0)
		return true;
	err = errno;
	fail(res, err == EINVAL && hint[0] ? ST_UNSUPPORTED : ST_FAILED, err,
	     "madvise(%s): %s%s", name, strerror(err), err == EINVAL ? hint : "");
	return false;
}

/* The base page: regions are PAGES_4K base pages or one PMD's size, whatever the granule. */
static size_t base_page(void)
{
	static size_t ps;

	if (!ps)
		ps = (size_t)sysconf(_SC_PAGESIZE);
	return ps;
}

static void part(const struct op_region *reg, struct result *res)
{
	res->op_start = reg->start + PART_FIRST * base_page();
	res->op_length = PART_PAGES * base_page();
}

static void whole(const struct op_region *reg, struct result *res)
{
	res->op_start = reg->start;
	res->op_length = reg->length;
}

/* Pages of [start, start + length) whose pagemap entry has every bit of mask. */
static size_t pages_with(uintptr_t start, size_t length, uint64_t mask)
{
	size_t n = length / base_page(), count = 0;
	uint64_t *pm = calloc(n, sizeof(*pm));

	if (!pm)
		abort();
	if (pagemap_read(getpid(), start, n, base_page(), pm) == 0)
		for (size_t i = 0; i < n; i++)
			count += (pm[i] & mask) == mask;
	free(pm);
	return count;
}

/* smaps AnonHugePages (or Swap, swap=true) summed over the VMAs of a range. */
static long smaps_sum(uintptr_t start, size_t length, bool swap)
{
	struct vma_info v;
	long kb = 0;

	for (uintptr_t at = start; at < start + length; at = v.end) {
		smaps_read(getpid(), at, &v);
		if (!v.found)
			break;
		kb += swap ? v.swap_kb : v.anon_huge_kb;
	}
	return kb;
}

/* ---- the operations -------------------------------------------------------- */

static bool fits_4k(enum shape s) { return s == SHAPE_4K; }
static bool fits_4k_or_guarded(enum shape s) { return s == SHAPE_4K || s == SHAPE_GUARDED; }
static bool fits_thp(enum shape s) { return s == SHAPE_THP; }
static bool fits_4k_2m(enum shape s) { return s == SHAPE_4K_2M; }
static bool fits_mthp(enum shape s) { return s == SHAPE_MTHP; }
static bool fits_migrate(enum shape s) { return s == SHAPE_MIGRATE || s == SHAPE_4K; }

/* MADV_GUARD_INSTALL zaps pages 4..11 and installs PTE_MARKER_GUARD. */
static void run_guard_install(struct op_region *reg, struct result *res)
{
	part(reg, res);
	if (advise(res, res->op_start, res->op_length, PT_MADV_GUARD_INSTALL,
		   "MADV_GUARD_INSTALL=102", " (needs Linux 6.13+)"))
		reg->shape = SHAPE_GUARDED;
}

/* MADV_GUARD_REMOVE over the whole region: guard markers become none. */
static void run_guard_remove(struct op_region *reg, struct result *res)
{
	whole(reg, res);
	if (advise(res, res->op_start, res->op_length, PT_MADV_GUARD_REMOVE,
		   "MADV_GUARD_REMOVE=103", " (needs Linux 6.13+)"))
		reg->shape = SHAPE_4K;
}

/* Pages 4..11 read-only: the VMA splits, the PTEs lose their write bit. */
static void run_mprotect(struct op_region *reg, struct result *res)
{
	part(reg, res);
	if (mprotect((void *)res->op_start, res->op_length, PROT_READ))
		fail(res, ST_FAILED, errno, "mprotect(PROT_READ): %s", strerror(errno));
}

/* MADV_PAGEOUT of pages 4..11 until every one is swapped (zram swap). */
static void run_pageout(struct op_region *reg, struct result *res)
{
	size_t swapped = 0;

	part(reg, res);
	if (!have_swap()) {
		fail(res, ST_UNSUPPORTED, 0, "no active swap device (see init_log)");
		return;
	}
	while (res->calls < MAX_CALLS && swapped < PART_PAGES) {
		res->calls++;
		if (!advise(res, res->op_start, res->op_length, PT_MADV_PAGEOUT,
			    "MADV_PAGEOUT=21", " (needs Linux 5.4+)"))
			return;
		swapped = pages_with(res->op_start, res->op_length, PM_SWAP);
	}
	if (swapped < PART_PAGES)
		fail(res, ST_FAILED, 0, "%zu of %d pages swapped after %d MADV_PAGEOUT calls",
		     swapped, PART_PAGES, res->calls);
}

/*
 * mprotect(PROT_READ) of the THP's first base page splits the VMA and the
 * PMD mapping into a PTE table (mm/huge_memory.c __split_huge_pmd()). Unlike
 * MADV_DONTNEED it leaves no none PTE, and khugepaged cannot collapse a range
 * that spans two VMAs, so the split stays.
 */
static void run_thp_split(struct op_region *reg, struct result *res)
{
	res->op_start = reg->start;
	res->op_length = base_page();
	if (mprotect((void *)res->op_start, res->op_length, PROT_READ))
		fail(res, ST_FAILED, errno, "mprotect(PROT_READ): %s", strerror(errno));
	else
		reg->shape = SHAPE_4K; /* no longer a THP region */
}

/*
 * MADV_COLLAPSE (6.1+) refuses VM_NOHUGEPAGE ranges (include/linux/huge_mm.h
 * vma_thp_disabled()), so MADV_HUGEPAGE lifts that first; EAGAIN (a page
 * briefly off the LRU) is retried.
 */
static void run_collapse(struct op_region *reg, struct result *res)
{
	long kb;

	whole(reg, res);
	if (!advise(res, reg->start, reg->length, PT_MADV_HUGEPAGE, "MADV_HUGEPAGE=14", ""))
		return;
	do {
		res->calls++;
		if (madvise((void *)reg->start, reg->length, PT_MADV_COLLAPSE) == 0) {
			res->err = 0;
			break;
		}
		res->err = errno;
	} while (res->err == EAGAIN && res->calls < MAX_CALLS);
	if (res->err) {
		fail(res, res->err == EINVAL ? ST_UNSUPPORTED : ST_FAILED, res->err,
		     "madvise(MADV_COLLAPSE=25): %s%s", strerror(res->err),
		     res->err == EINVAL ? " (needs Linux 6.1+ and a THP-eligible range)" : "");
		return;
	}
	kb = smaps_sum(reg->start, reg->length, false);
	if (kb < (long)(pmd_size(base_page()) / KIB))
		fail(res, ST_FAILED, 0, "MADV_COLLAPSE returned 0 but smaps AnonHugePages is %ld kB", kb);
	else
		reg->shape = SHAPE_THP;
}

/*
 * move_pages(2) of pages 4..11 to the other NUMA node (a VM booted with two
 * nodes: vm boot --numa-nodes 2): each page is unmapped to a migration entry,
 * copied and mapped again at its new frame (mm/migrate.c). The syscall, not
 * libnuma: nodes=NULL asks where each page is, then each goes to the node
 * that is not its own. In a `migrate` region the entries are of all three
 * kinds mm/rmap.c try_to_migrate_one() makes: pages 4..7 writable (a write
 * migration entry), 8..9 anonymous, exclusive and read-only (read-exclusive,
 * 5.19+), 10..11 shared memory mapped read-only (read).
 */
static void run_migrate(struct op_region *reg, struct result *res)
{
	void *pages[PART_PAGES];
	int nodes[PART_PAGES], status[PART_PAGES];

	part(reg, res);
	for (int i = 0; i < PART_PAGES; i++)
		pages[i] = (void *)(res->op_start + i * base_page());
	if (syscall(SYS_move_pages, 0, PART_PAGES, pages, NULL, status, 0)) {
		fail(res, errno == ENOSYS ? ST_UNSUPPORTED : ST_FAILED, errno,
		     "move_pages(query): %s%s", strerror(errno),
		     errno == ENOSYS ? " (a kernel without CONFIG_NUMA/CONFIG_MIGRATION)" : "");
		return;
	}
	for (int i = 0; i < PART_PAGES; i++) {
		if (status[i] < 0 || status[i] > 1) {
			fail(res, ST_FAILED, status[i] < 0 ? -status[i] : 0,
			     "move_pages(query): page %d is at %d, not on node 0 or 1", i, status[i]);
			return;
		}
		nodes[i] = !status[i];
	}
	if (syscall(SYS_move_pages, 0, PART_PAGES, pages, nodes, status, PT_MPOL_MF_MOVE)) {
		fail(res, errno == ENODEV ? ST_UNSUPPORTED : ST_FAILED, errno, "move_pages(MPOL_MF_MOVE): %s%s",
		     strerror(errno), errno == ENODEV ? " (needs a VM with two NUMA nodes: --numa-nodes 2)" : "");
		return;
	}
	for (int i = 0; i < PART_PAGES; i++)
		if (status[i] != nodes[i]) {
			fail(res, ST_FAILED, status[i] < 0 ? -status[i] : 0,
			     "move_pages(MPOL_MF_MOVE): page %d ended at %d, not on node %d", i,
			     status[i], nodes[i]);
			return;
		}
}

/*
 * MADV_COLD of pages 4..11: mm/madvise.c madvise_cold_or_pageout_pte_range() makes each young entry old
 * (clear_young_dirty_ptes(..., CYDP_CLEAR_YOUNG): its accessed bit cleared) and flushes them
 * from the TLB (tlb_remove_tlb_entry); then one read of each page, through which the MMU walks the
 * tables again and sets the accessed bit itself (x86 A, riscv A, arm64 AF where the CPU updates it in
 * hardware, FEAT_HAFDBS; else the kernel's access-flag fault path does).
 */
static void run_age(struct op_region *reg, struct result *res)
{
	part(reg, res);
	if (!advise(res, res->op_start, res->op_length, PT_MADV_COLD, "MADV_COLD=20", ""))
		return;
	for (size_t i = 0; i < PART_PAGES; i++)
		(void)*(volatile const char *)(res->op_start + i * base_page());
}

/*
 * The kernel faulting user pages in from kernel mode: MADV_DONTNEED of pages 4..11 empties their
 * entries, then getrandom(2) (GRND_INSECURE: never waits for entropy) copies random bytes into
 * them; each copy_to_user() faults in the kernel (x86 asm_exc_page_fault, arm64 el1h_64_sync,
 * riscv handle_exception), and the fault handler installs the page. A call chain of such an entry's
 * store crosses the exception entry into the syscall beneath it.
 */
static void run_uaccess_fault(struct op_region *reg, struct result *res)
{
	long got;

	part(reg, res);
	if (!advise(res, res->op_start, res->op_length, PT_MADV_DONTNEED, "MADV_DONTNEED", ""))
		return;
	got = syscall(SYS_getrandom, (void *)res->op_start, res->op_length, PT_GRND_INSECURE);
	if (got != (long)res->op_length)
		fail(res, ST_FAILED, got < 0 ? errno : 0, "getrandom(%zu bytes, GRND_INSECURE) = %ld: %s",
		     res->op_length, got, got < 0 ? strerror(errno) : "short");
}

#define MTHP_PAGES 16 /* a 64 KiB mTHP of 4 KiB pages: arm64's contpte block (CONT_PTES) */

/*
 * Three mprotect() calls over the first 64 KiB mTHP of an `mthp` region (arm64:
 * one contpte block). Pages 4..15 read-only unfolds the block: its 16 entries
 * are cleared and set again without PTE_CONT (arch/arm64/mm/contpte.c
 * contpte_convert). Pages 0..15 read-only then changes only 0..3 (the other
 * VMA is read-only already) and the VMAs merge. Pages 0..15 read-write changes
 * the whole folio in one batch: mm/mprotect.c commits the 16 entries with one
 * set_ptes(), and contpte_set_ptes() sets PTE_CONT on a whole aligned block:
 * the block is folded again. (contpte_try_fold, the other way back, runs only
 * where one entry, the block's last, is set alone.)
 */
static void run_contpte_mprotect(struct op_region *reg, struct result *res)
{
	static const struct { size_t first, pages; int prot; const char *name; } steps[] = {
		{ PART_FIRST, MTHP_PAGES - PART_FIRST, PROT_READ, "PROT_READ" },
		{ 0, MTHP_PAGES, PROT_READ, "PROT_READ" },
		{ 0, MTHP_PAGES, PROT_READ | PROT_WRITE, "PROT_READ|PROT_WRITE" },
	};

	res->op_start = reg->start;
	res->op_length = MTHP_PAGES * base_page();
	for (size_t i = 0; i < sizeof(steps) / sizeof(steps[0]); i++)
		if (mprotect((void *)(reg->start + steps[i].first * base_page()),
			     steps[i].pages * base_page(), steps[i].prot)) {
			fail(res, ST_FAILED, errno, "mprotect(pages %zu..%zu, %s): %s", steps[i].first,
			     steps[i].first + steps[i].pages - 1, steps[i].name, strerror(errno));
			return;
		}
}

static const struct op ops[] = {
	{ "guard-install", SHAPE_4K, fits_4k, run_guard_install },
	{ "guard-remove", SHAPE_GUARDED, fits_4k_or_guarded, run_guard_remove },
	{ "mprotect", SHAPE_4K, fits_4k, run_mprotect },
	{ "pageout", SHAPE_4K, fits_4k, run_pageout },
	{ "thp-split", SHAPE_THP, fits_thp, run_thp_split },
	{ "collapse", SHAPE_4K_2M, fits_4k_2m, run_collapse },
	{ "migrate", SHAPE_MIGRATE, fits_migrate, run_migrate },
	{ "age", SHAPE_4K, fits_4k, run_age },
	{ "uaccess-fault", SHAPE_4K, fits_4k, run_uaccess_fault },
	{ "contpte-mprotect", SHAPE_MTHP, fits_mthp, run_contpte_mprotect },
};

static const struct op *op_named(const char *name)
{
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++)
		if (!strcmp(ops[i].name, name))
			return &ops[i];
	return NULL;
}

static const char *shape_name(enum shape s)
{
	static const char *const names[] = {
		[SHAPE_4K] = "4k", [SHAPE_GUARDED] = "guarded", [SHAPE_THP] = "thp",
		[SHAPE_4K_2M] = "4k-2m", [SHAPE_MTHP] = "mthp", [SHAPE_MIGRATE] = "migrate",
	};
	return names[s];
}

/* ---- prepare --------------------------------------------------------------- */

static void write_range(uintptr_t start, size_t length)
{
	for (uintptr_t va = start; va < start + length; va += base_page())
		*(volatile uint64_t *)va = va ^ 0x5054494e53504543ULL;
}

/* Whether [start, start + length) is mapped by aligned runs of MTHP_PAGES consecutive frames. */
static bool mthp_blocks(uintptr_t start, size_t length)
{
	size_t n = length / base_page();
	uint64_t pm[2 * MTHP_PAGES];
	bool ok = n <= 2 * MTHP_PAGES && pagemap_read(getpid(), start, n, base_page(), pm) == 0;

	for (size_t i = 0; ok && i < n; i++) {
		uint64_t pfn = pm[i] & PM_PFRAME_MASK, first = pm[i - i % MTHP_PAGES] & PM_PFRAME_MASK;

		ok = (pm[i] & PM_PRESENT) && first % MTHP_PAGES == 0 && pfn == first + i % MTHP_PAGES;
	}
	return ok;
}

/* Map, advise and write a fresh region in the next free slot. */
/*
 * A written 4k region made into a `migrate` one: pages 8..9 read-only (still
 * anonymous and exclusive), pages 10..11 replaced by shared memory
 * (MAP_SHARED|MAP_ANONYMOUS is shmem), written, then read-only.
 */
static void migrate_shape(const struct op_region *reg, struct result *res)
{
	uintptr_t ro = reg->start + 8 * base_page(), shared = reg->start + 10 * base_page();

	if (mprotect((void *)ro, 2 * base_page(), PROT_READ)) {
		fail(res, ST_FAILED, errno, "mprotect(pages 8..9, PROT_READ): %s", strerror(errno));
		return;
	}
	if (mmap((void *)shared, 2 * base_page(), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_FIXED,
		 -1, 0) == MAP_FAILED) {
		fail(res, ST_FAILED, errno, "mmap(pages 10..11, MAP_SHARED|MAP_ANONYMOUS): %s", strerror(errno));
		return;
	}
	write_range(shared, 2 * base_page());
	if (mprotect((void *)shared, 2 * base_page(), PROT_READ))
		fail(res, ST_FAILED, errno, "mprotect(pages 10..11, PROT_READ): %s", strerror(errno));
}

static void prepare(const struct op *op, struct result *res)
{
	struct op_region reg = { .shape = op->shape };
	bool huge = op->shape == SHAPE_THP || op->shape == SHAPE_MTHP;
	uintptr_t slot = ARENA_BASE + (OP_FIRST_SLOT + nregions) * slot_size(base_page());
	void *p;

	reg.length = op->shape == SHAPE_THP || op->shape == SHAPE_4K_2M ? pmd_size(base_page())
		     : op->shape == SHAPE_MTHP ? 2 * MTHP_PAGES * base_page() : PAGES_4K * base_page();
	if (op->shape == SHAPE_MTHP && base_page() != 4096) {
		fail(res, ST_UNSUPPORTED, 0, "the mthp shape is made of 4 KiB pages only");
		return;
	}
	if (nregions == OP_SLOTS) {
		fail(res, ST_FAILED, 0, "all %d operation slots are used", OP_SLOTS);
		return;
	}
	p = mmap((void *)slot, reg.length, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | PT_MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED) {
		fail(res, ST_FAILED, errno, "mmap at %#lx: %s", (unsigned long)slot,
		     strerror(errno));
		return;
	}
	if ((uintptr_t)p != slot) { /* a kernel that ignores MAP_FIXED_NOREPLACE */
		munmap(p, reg.length);
		fail(res, ST_FAILED, 0, "mmap placed the region at %p, not %#lx", p,
		     (unsigned long)slot);
		return;
	}
	reg.start = slot;
	if (advise(res, reg.start, reg.length, huge ? PT_MADV_HUGEPAGE : PT_MADV_NOHUGEPAGE,
		   huge ? "MADV_HUGEPAGE" : "MADV_NOHUGEPAGE", "")) {
		write_range(reg.start, reg.length);
		if (op->shape == SHAPE_MTHP && !mthp_blocks(reg.start, reg.length))
			fail(res, ST_UNSUPPORTED, 0, "the written range is not two 64 KiB mTHPs (aligned runs"
			     " of %d frames): is hugepages-64kB/enabled on?", MTHP_PAGES);
		else if (op->shape == SHAPE_THP && smaps_sum(reg.start, reg.length, false) < (long)(reg.length / KIB))
			fail(res, ST_FAILED, 0, "the written range is not one PMD-mapped THP"
			     " (smaps AnonHugePages %ld kB)", smaps_sum(reg.start, reg.length, false));
	}
	if (res->status == ST_OK && op->shape == SHAPE_MIGRATE)
		migrate_shape(&reg, res);
	regions[nregions] = reg;
	res->region = &regions[nregions];
	whole(&reg, res);
	if (res->status == ST_OK && op->shape == SHAPE_GUARDED) {
		run_guard_install(&regions[nregions], res);
		whole(&reg, res);
	}
	if (res->status != ST_OK) {
		munmap((void *)reg.start, reg.length);
		res->region = NULL;
		return;
	}
	latest = &regions[nregions++];
}

/* ---- requests -------------------------------------------------------------- */

static void render(const char *seq, const struct result *res)
{
	struct json *j = json_new();
	const struct op_region *reg = res->region;
	const char *text;
	size_t len, n = reg ? reg->length / base_page() : 0;
	uint64_t *pm = calloc(n ? n : 1, sizeof(*pm));

	if (!pm)
		abort();
	if (reg && pagemap_read(getpid(), reg->start, n, base_page(), pm))
		n = 0;
	json_begin_object(j);
	json_key(j, "seq");
	json_string(j, seq);
	json_key(j, "op");
	json_string(j, res->op);
	json_key(j, "for");
	json_string(j, res->for_op);
	json_key(j, "status");
	json_string(j, status_name(res->status));
	json_key(j, "reason");
	json_string(j, res->reason[0] ? res->reason : NULL);
	json_key(j, "errno");
	if (res->err)
		json_int(j, res->err);
	else
		json_null(j);
	json_key(j, "shape");
	json_string(j, reg ? shape_name(reg->shape) : NULL);
	json_key(j, "start");
	if (reg)
		json_hex(j, reg->start);
	else
		json_null(j);
	json_key(j, "length");
	json_int(j, reg ? (long long)reg->length : 0);
	json_key(j, "page_size");
	json_int(j, (long long)base_page());
	json_key(j, "op_start");
	if (reg && res->op_length)
		json_hex(j, res->op_start);
	else
		json_null(j);
	json_key(j, "op_length");
	json_int(j, (long long)res->op_length);
	json_key(j, "calls");
	json_int(j, res->calls);
	json_key(j, "anon_huge_kb");
	json_int(j, reg ? smaps_sum(reg->start, reg->length, false) : 0);
	json_key(j, "swap_kb");
	json_int(j, reg ? smaps_sum(reg->start, reg->length, true) : 0);
	json_key(j, "pagemap");
	json_begin_array(j);
	for (size_t i = 0; i < n; i++)
		json_hex(j, pm[i]);
	json_end_array(j);
	json_key(j, "maps");
	if (res->maps)
		json_lines(j, "/proc/self/maps");
	else
		json_null(j);
	json_end_object(j);
	text = json_text(j, &len);
	write_all("PTINSPECT-OP ", 13);
	write_all(text, len);
	write_all("\n", 1);
	json_free(j);
	free(pm);
}

static bool seq_ok(const char *seq)
{
	size_t n = strlen(seq);

	return n && n <= SEQ_MAX && strspn(seq, "abcdefghijklmnopqrstuvwxyz"
				      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static struct op_region *region_at_start(uintptr_t start)
{
	for (size_t i = 0; i < nregions; i++)
		if (regions[i].start == start)
			return &regions[i];
	return NULL;
}

/* "SEQ hmm-..." requests belong to the HMM guest program (vm-images/hmm/hmmop.c): passed on whole to
 * its FIFO; it answers on the console itself. False when it does not run (no FIFO). */
#define HMM_FIFO "/run/ptinspect-hmm"
static bool forward_hmm(const char *line)
{
	const char *word = line + strspn(line, " \t");
	size_t len = strlen(line);
	bool sent;
	int fd;

	word += strcspn(word, " \t");
	word += strspn(word, " \t");
	if (strncmp(word, "hmm-", 4) || (fd = open(HMM_FIFO, O_WRONLY | O_NONBLOCK | O_CLOEXEC)) < 0)
		return false;
	sent = write(fd, line, len) == (ssize_t)len;
	close(fd);
	return sent;
}

/* "SEQ run PATH ARG...": a shell started with posix_spawn (no fork: this process's page tables stay
 * as they are) runs PATH in the background with stdin from /dev/null and prints its output prefixed,
 * then its exit status. */
#define RUN_ARGS 16
static const char run_script[] =
	"seq=$1; shift; echo \"PTINSPECT-RUN-START $seq\"; ( { \"$@\" < /dev/null 2>&1; echo $? > /tmp/run-status.$seq; } |"
	" while IFS= read -r l; do echo \"PTINSPECT-RUN $seq $l\"; done;"
	" echo \"PTINSPECT-RUN-END $seq status=$(cat /tmp/run-status.$seq)\" ) < /dev/null &";

static void run_program(char *seq)
{
	char *argv[RUN_ARGS + 6] = { "sh", "-c", (char *)run_script, "sh", seq };
	extern char **environ;
	int n = 5, status;
	pid_t pid;

	while (n < RUN_ARGS + 5 && (argv[n] = strtok(NULL, " \t\r\n")))
		n++;
	argv[n] = NULL;
	if (n == 5 || argv[5][0] != '/' || access(argv[5], X_OK)) {
		printf("PTINSPECT-RUN-END %s status=127 (no executable absolute path given)\n", seq);
	} else if ((errno = posix_spawn(&pid, "/bin/busybox", NULL, NULL, argv, environ))) {
		printf("PTINSPECT-RUN-END %s status=127 (posix_spawn: %s)\n", seq, strerror(errno));
	} else {
		waitpid(pid, &status, 0);  /* the shell returns at once, the program runs on */
	}
	fflush(stdout);
}

/* Parse and do one request line; answer it. */
static void answer(char *line)
{
	char *seq = strtok(line, " \t\r\n"), *word = strtok(NULL, " \t\r\n");
	char *arg, *end = NULL;
	struct result res = { .status = ST_OK, .op = word };
	struct op_region *reg = latest;
	const struct op *op;

	if (!seq || !seq_ok(seq) || !word) {
		res.op = NULL;
		fail(&res, ST_FAILED, 0, "bad request: want 'SEQ prepare OP', 'SEQ OP [START]' or 'SEQ maps'"
		     " with SEQ of 1-%d letters, digits, '.', '_', '-'", SEQ_MAX);
		render(seq && seq_ok(seq) ? seq : NULL, &res);
		return;
	}
	if (!strcmp(word, "run")) {
		run_program(seq);
		return;
	}
	arg = strtok(NULL, " \t\r\n");
	if (!strcmp(word, "maps")) {  /* the kernel's own list of this process's mappings */
		res.maps = true;
		render(seq, &res);
		return;
	}
	if (!strcmp(word, "prepare")) {
		res.for_op = arg;
		if (!arg || !(op = op_named(arg)))
			fail(&res, ST_FAILED, 0, "prepare what? unknown operation '%s'",
			     arg ? arg : "");
		else
			prepare(op, &res);
		render(seq, &res);
		return;
	}
	if (arg)
		reg = region_at_start(strtoull(arg, &end, 16));
	if (!strncmp(word, "hmm-", 4)) {
		fail(&res, ST_FAILED, 0, "%s: the HMM guest program is not running (no %s; the"
		     " manifest's init_log says why)", word, HMM_FIFO);
	} else if (!(op = op_named(word))) {
		fail(&res, ST_FAILED, 0, "unknown operation '%s'; known: prepare, guard-install,"
		     " guard-remove, mprotect, pageout, thp-split, collapse", word);
	} else if (arg && (*end || !reg)) {
		fail(&res, ST_FAILED, 0, "no prepared region starts at '%s'", arg);
	} else if (!reg) {
		fail(&res, ST_FAILED, 0, "no region prepared yet: 'SEQ prepare %s' first", word);
	} else if (!op->fits(reg->shape)) {
		res.region = reg;
		fail(&res, ST_FAILED, 0, "the region at %#lx is a %s region; %s needs a %s"
		     " region ('prepare %s')", (unsigned long)reg->start, shape_name(reg->shape),
		     word, shape_name(op->shape), word);
	} else {
		res.region = reg;
		op->run(reg, &res);
	}
	render(seq, &res);
}

void serve_ops(void)
{
	struct termios t;
	char line[256];

	/* In the VM stdin is the serial console: no echo of requests into the log. */
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &t) == 0) {
		t.c_lflag &= ~(tcflag_t)(ECHO | ECHONL);
		tcsetattr(STDIN_FILENO, TCSANOW, &t);
	}
	while (fgets(line, sizeof(line), stdin))
		if (!forward_hmm(line))
			answer(line);
}
