// SPDX-License-Identifier: GPL-2.0-only
/*
 * The regions: one per kind of page-table entry, each in its own arena slot.
 * A builder makes the kernel install the intended entries and says why when
 * it cannot; a checker then compares what /proc reports with the intent.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/utsname.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "uapi.h"
#include "workload.h"

#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"
#define HUGETLB_SYSFS "/sys/kernel/mm/hugepages"
#define FILE_DIR "/tmp"

typedef void (*build_fn)(struct region *r, struct ctx *c);
typedef void (*check_fn)(struct region *r, const struct ctx *c);

struct entry {
	struct region r; /* first member: a region pointer is its entry */
	build_fn build;
	uint64_t want_set;   /* pagemap bits every page must have ... */
	uint64_t want_clear; /* ... and must not have */
	check_fn check;      /* further checks, or NULL */
};

static struct entry *entry_of(struct region *r) { return (struct entry *)r; }

static size_t npages(const struct region *r, const struct ctx *c)
{
	return r->length / c->ps;
}

#define P4K (4 * KIB) /* the base page the region table is written in */

static const char *cfg(const char *option)
{
	const char *v = kconfig(option);

	return v ? v : "unknown (no kernel config in the initramfs)";
}

static const char *machine(void)
{
	static struct utsname u;

	if (!u.machine[0])
		uname(&u);
	return u.machine;
}

/* ---- building blocks ----------------------------------------------------- */

static bool map_region(struct region *r, int prot, int flags, int fd)
{
	uintptr_t want = r->slot;
	void *p = mmap((void *)want, r->length, prot,
		       flags | PT_MAP_FIXED_NOREPLACE, fd, 0);

	if (p == MAP_FAILED) {
		set_status(r, ST_FAILED, "mmap at %#lx: %s", (unsigned long)want,
			   strerror(errno));
		return false;
	}
	r->start = (uintptr_t)p;
	if (r->start != want) { /* a kernel that ignores MAP_FIXED_NOREPLACE */
		set_status(r, ST_FAILED, "mmap placed the region at %p, not %#lx",
			   p, (unsigned long)want);
		return false;
	}
	return true;
}

static bool map_anon(struct region *r, int flags)
{
	return map_region(r, PROT_READ | PROT_WRITE, flags | MAP_ANONYMOUS, -1);
}

static bool madv(struct region *r, int advice, const char *name)
{
	if (madvise((void *)r->start, r->length, advice) == 0)
		return true;
	set_status(r, ST_FAILED, "madvise(%s): %s", name, strerror(errno));
	return false;
}

/* Anonymous private memory that must stay in 4 KiB pages (no THP/mTHP). */
static bool map_anon_4k(struct region *r)
{
	return map_anon(r, MAP_PRIVATE) &&
	       madv(r, PT_MADV_NOHUGEPAGE, "MADV_NOHUGEPAGE");
}

/* Write one distinct word per page: faults every page in, writable. */
static void write_pages(struct region *r, const struct ctx *c)
{
	for (size_t i = 0; i < npages(r, c); i++) {
		uintptr_t va = r->start + i * c->ps;

		*(volatile uint64_t *)va = va ^ 0x5054494e53504543ULL;
	}
}

/* Read every page: maps the zero page or page-cache pages read-only. */
static void read_pages(struct region *r, const struct ctx *c)
{
	for (size_t i = 0; i < npages(r, c); i++)
		(void)*(volatile uint64_t *)(r->start + i * c->ps);
}

/* ---- userfaultfd ---------------------------------------------------------- */

static const struct {
	uint64_t bit;
	const char *name;
} uffd_feature_names[] = {
	{ UFFD_FEATURE_PAGEFAULT_FLAG_WP, "UFFD_FEATURE_PAGEFAULT_FLAG_WP" },
	{ UFFD_FEATURE_WP_HUGETLBFS_SHMEM, "UFFD_FEATURE_WP_HUGETLBFS_SHMEM" },
	{ UFFD_FEATURE_WP_UNPOPULATED, "UFFD_FEATURE_WP_UNPOPULATED" },
	{ UFFD_FEATURE_POISON, "UFFD_FEATURE_POISON" },
};

static int uffd_errno; /* why c->uffd is -1 */

/*
 * Opened on first use, after the fork, so that no child shares it.
 * A first UFFDIO_API with no features reports every feature the kernel
 * offers, but also fixes that context's features for good, so the context
 * used is a second descriptor asking for the wanted subset.
 */
static void uffd_open(struct ctx *c)
{
	uint64_t want = 0;
	struct uffdio_api api = { .api = UFFD_API };
	int fd;

	c->uffd = -1;
	for (int round = 0; round < 2; round++) {
		fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
		if (fd < 0) {
			uffd_errno = errno;
			snprintf(c->uffd_error, sizeof(c->uffd_error),
				 "userfaultfd(2): %s (CONFIG_USERFAULTFD=%s)",
				 strerror(errno), cfg("CONFIG_USERFAULTFD"));
			return;
		}
		api = (struct uffdio_api){ .api = UFFD_API, .features = want };
		if (ioctl(fd, UFFDIO_API, &api)) {
			uffd_errno = errno;
			snprintf(c->uffd_error, sizeof(c->uffd_error),
				 "UFFDIO_API(features=%#llx): %s",
				 (unsigned long long)want, strerror(errno));
			close(fd);
			return;
		}
		if (round == 0) {
			close(fd);
			c->uffd_offered = api.features;
			for (size_t i = 0; i < sizeof(uffd_feature_names) /
						       sizeof(uffd_feature_names[0]);
			     i++)
				want |= uffd_feature_names[i].bit;
			want &= c->uffd_offered;
		}
	}
	c->uffd = fd;
	c->uffd_features = want;
}

/* Does the uffd context have these features? If not, say why. */
static bool need_uffd(struct region *r, struct ctx *c, uint64_t features)
{
	char missing[200] = "";
	const char *hint = "";

	if (c->uffd == UFFD_NOT_OPENED)
		uffd_open(c);
	if (c->uffd < 0) {
		set_status(r, uffd_errno == ENOSYS ? ST_UNSUPPORTED : ST_FAILED,
			   "%s", c->uffd_error);
		return false;
	}
	if (!(features & ~c->uffd_features))
		return true;
	for (size_t i = 0;
	     i < sizeof(uffd_feature_names) / sizeof(uffd_feature_names[0]); i++)
		if (features & ~c->uffd_features & uffd_feature_names[i].bit)
			snprintf(missing + strlen(missing),
				 sizeof(missing) - strlen(missing), "%s%s",
				 missing[0] ? ", " : "", uffd_feature_names[i].name);
	if ((features & UFFD_FEATURE_PAGEFAULT_FLAG_WP) &&
	    !strcmp(machine(), "riscv64"))
		hint = "; riscv64 offers uffd-wp only on CPUs with the"
		       " Svrsw60t59b extension (pgtable_supports_uffd_wp(),"
		       " Linux 7.2), which QEMU does not emulate";
	else if (features & UFFD_FEATURE_POISON)
		hint = "; UFFDIO_POISON needs Linux 6.6+";
	set_status(r, ST_UNSUPPORTED,
		   "the kernel does not offer %s (UFFDIO_API features %#llx;"
		   " HAVE_ARCH_USERFAULTFD_WP=%s, PTE_MARKER_UFFD_WP=%s%s)",
		   missing, (unsigned long long)c->uffd_offered,
		   cfg("CONFIG_HAVE_ARCH_USERFAULTFD_WP"),
		   cfg("CONFIG_PTE_MARKER_UFFD_WP"), hint);
	return false;
}

static bool uffd_register(struct region *r, const struct ctx *c, uint64_t mode)
{
	struct uffdio_register reg = {
		.range = { .start = r->start, .len = r->length },
		.mode = mode,
	};

	if (ioctl(c->uffd, UFFDIO_REGISTER, &reg) == 0)
		return true;
	set_status(r, ST_FAILED, "UFFDIO_REGISTER(mode=%#llx): %s",
		   (unsigned long long)mode, strerror(errno));
	return false;
}

static bool uffd_writeprotect(struct region *r, const struct ctx *c)
{
	struct uffdio_writeprotect wp = {
		.range = { .start = r->start, .len = r->length },
		.mode = UFFDIO_WRITEPROTECT_MODE_WP,
	};

	if (ioctl(c->uffd, UFFDIO_WRITEPROTECT, &wp) == 0)
		return true;
	set_status(r, ST_FAILED, "UFFDIO_WRITEPROTECT: %s", strerror(errno));
	return false;
}

/* ---- builders ------------------------------------------------------------- */

static void build_anon_4k(struct region *r, struct ctx *c)
{
	if (map_anon_4k(r))
		write_pages(r, c);
}

/* Read faults on private anonymous memory map the shared zero page. */
static void build_anon_zero(struct region *r, struct ctx *c)
{
	if (map_anon_4k(r))
		read_pages(r, c);
}

/* Mapped, never touched: pagemap reports nothing (no entry, or none). */
static void build_anon_none(struct region *r, struct ctx *c)
{
	(void)c;
	map_anon_4k(r);
}

static void child_main(pid_t parent)
{
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	if (getppid() != parent)
		_exit(0);
	for (;;)
		pause();
}

/*
 * fork() write-protects the parent's private writable PTEs and shares the
 * pages with the child (mm/memory.c copy_present_pte()). It runs before any
 * other region exists, so only these pages (and the program's own) are shared.
 */
static void build_cow_parent(struct region *r, struct ctx *c)
{
	pid_t child;

	if (!map_anon_4k(r))
		return;
	write_pages(r, c);
	child = fork();
	if (child < 0) {
		set_status(r, ST_FAILED, "fork: %s", strerror(errno));
		return;
	}
	if (child == 0)
		child_main(c->pid);
	c->child = child;
}

static struct region *region_named(const char *name)
{
	for (size_t i = 0; i < region_count(); i++)
		if (!strcmp(region_at(i)->name, name))
			return region_at(i);
	abort();
}

/* The same pages seen from the fork child. */
static void build_cow_child(struct region *r, struct ctx *c)
{
	struct region *parent = region_named("cow_parent");

	if (c->child <= 0 || parent->status != ST_OK) {
		set_status(r, ST_FAILED, "no fork child: cow_parent %s",
			   parent->reason[0] ? parent->reason : "was not built");
		return;
	}
	r->pid = c->child;
	r->start = parent->start;
}

/* One PMD-mapped THP: 2 MiB with 4 KiB pages, 32 MiB with 16 KiB ones. */
static void build_thp_2m(struct region *r, struct ctx *c)
{
	char mode[32];

	if (!sysfs_choice(THP_SYSFS "/enabled", mode, sizeof(mode))) {
		set_status(r, ST_UNSUPPORTED,
			   "no " THP_SYSFS " (CONFIG_TRANSPARENT_HUGEPAGE=%s)",
			   cfg("CONFIG_TRANSPARENT_HUGEPAGE"));
		return;
	}
	if (!strcmp(mode, "never")) {
		set_status(r, ST_UNSUPPORTED, "THP is disabled (enabled=never)");
		return;
	}
	if (map_anon(r, MAP_PRIVATE) && madv(r, PT_MADV_HUGEPAGE, "MADV_HUGEPAGE"))
		write_pages(r, c);
}

/*
 * Anonymous folios of one contpte block (64 KiB with 4 KiB pages, 2 MiB
 * with 16 KiB ones); arm64 maps them with contpte blocks.
 */
static void build_mthp_64k(struct region *r, struct ctx *c)
{
	unsigned long kb = r->page_size / KIB;
	char mode[32], path[128];

	snprintf(path, sizeof(path), THP_SYSFS "/hugepages-%lukB/enabled", kb);
	if (!sysfs_choice(path, mode, sizeof(mode))) {
		set_status(r, ST_UNSUPPORTED,
			   "no " THP_SYSFS "/hugepages-%lukB (mTHP needs Linux 6.8+;"
			   " CONFIG_TRANSPARENT_HUGEPAGE=%s)",
			   kb, cfg("CONFIG_TRANSPARENT_HUGEPAGE"));
		return;
	}
	if (!strcmp(mode, "never")) {
		set_status(r, ST_UNSUPPORTED,
			   "%lu KiB mTHP is disabled (hugepages-%lukB/enabled=never)",
			   kb, kb);
		return;
	}
	if (!map_anon(r, MAP_PRIVATE))
		return;
	if (strcmp(mode, "always") &&
	    !madv(r, PT_MADV_HUGEPAGE, "MADV_HUGEPAGE"))
		return;
	write_pages(r, c);
}

/* Why an architecture may lack a hugetlb size. */
static const char *hugetlb_hint(unsigned long kb)
{
	if (kb == 64 && !strcmp(machine(), "x86_64"))
		return "; x86-64 has 2 MiB and 1 GiB only";
	if (kb == 64 && !strcmp(machine(), "riscv64"))
		return "; riscv64 needs Svnapot (CONFIG_RISCV_ISA_SVNAPOT and the"
		       " CPU extension)";
	return "";
}

/* MAP_HUGETLB with the size as log2 << MAP_HUGE_SHIFT (hugetlb_encode.h). */
static void build_hugetlb(struct region *r, struct ctx *c)
{
	unsigned long kb = r->page_size / KIB, free_pages;
	unsigned flag = (unsigned)__builtin_ctzl(r->page_size) << PT_MAP_HUGE_SHIFT;
	char path[128], line[32], nr[32] = "?";

	snprintf(path, sizeof(path), HUGETLB_SYSFS "/hugepages-%lukB/free_hugepages",
		 kb);
	if (!read_line(path, line, sizeof(line))) {
		set_status(r, ST_UNSUPPORTED,
			   "no %lu kB hugetlb size on this kernel/arch"
			   " (CONFIG_HUGETLBFS=%s%s)",
			   kb, cfg("CONFIG_HUGETLBFS"), hugetlb_hint(kb));
		return;
	}
	free_pages = strtoul(line, NULL, 10);
	if (free_pages < r->length / r->page_size) {
		snprintf(path, sizeof(path),
			 HUGETLB_SYSFS "/hugepages-%lukB/nr_hugepages", kb);
		read_line(path, nr, sizeof(nr));
		set_status(r, ST_FAILED,
			   "%lu free %lu kB huge pages, %zu needed (nr_hugepages=%s;"
			   " init reserves them)",
			   free_pages, kb, r->length / r->page_size, nr);
		return;
	}
	if (map_region(r, PROT_READ | PROT_WRITE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB | flag, -1))
		write_pages(r, c);
}


static const char *fs_name(long type)
{
	return type == PT_TMPFS_MAGIC ? "tmpfs" :
	       type == PT_RAMFS_MAGIC ? "ramfs" : "other";
}

/*
 * A file of the region's length with data in every page, mapped read-write,
 * or read-only through a descriptor opened O_RDONLY.
 */
static bool map_file_as(struct region *r, const struct ctx *c, int flags,
			bool readonly)
{
	char path[128];
	struct statfs st;
	bool ok = false;
	int fd;

	snprintf(path, sizeof(path), FILE_DIR "/ptinspect-%d-%s.dat", (int)c->pid,
		 r->name);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		set_status(r, ST_FAILED, "open %s: %s", path, strerror(errno));
		return false;
	}
	for (size_t i = 0; i < r->length / P4K; i++) { /* the whole mapping: no SIGBUS */
		char page[P4K];

		memset(page, 'a' + (int)(i % 26), sizeof(page));
		if (write(fd, page, sizeof(page)) != (ssize_t)sizeof(page)) {
			set_status(r, ST_FAILED, "write %s: %s", path,
				   strerror(errno));
			goto out;
		}
	}
	add_detail(r, "file", "%s", path);
	if (fstatfs(fd, &st) == 0)
		add_detail(r, "file_fs", "%s (f_type %#lx)", fs_name((long)st.f_type),
			   (unsigned long)st.f_type);
	if (readonly) {
		int ro = open(path, O_RDONLY | O_CLOEXEC);

		if (ro < 0)
			set_status(r, ST_FAILED, "open %s read-only: %s", path,
				   strerror(errno));
		else
			ok = map_region(r, PROT_READ, flags, ro);
		if (ro >= 0)
			close(ro);
	} else {
		ok = map_region(r, PROT_READ | PROT_WRITE, flags, fd);
	}
	if (!c->guest) /* a host run leaves nothing behind */
		unlink(path);
out:
	close(fd);
	return ok;
}

static bool map_file(struct region *r, const struct ctx *c, int flags)
{
	return map_file_as(r, c, flags, false);
}

/* Private file mapping, read: the PTEs map the page-cache pages. */
static void build_file_private(struct region *r, struct ctx *c)
{
	if (map_file(r, c, MAP_PRIVATE))
		read_pages(r, c);
}

/* Private file mapping, written: each page is an anonymous COW copy. */
static void build_file_private_cow(struct region *r, struct ctx *c)
{
	if (map_file(r, c, MAP_PRIVATE))
		write_pages(r, c);
}

static void build_file_shared(struct region *r, struct ctx *c)
{
	if (map_file(r, c, MAP_SHARED))
		write_pages(r, c);
}

/*
 * MAP_SHARED of a file opened read-only: do_mmap() sets VM_SHARED | VM_MAYSHARE
 * and then clears VM_SHARED (and VM_MAYWRITE) because the file is not open for
 * writing, so /proc/PID/maps shows 's' from VM_MAYSHARE alone
 * (mm/mmap.c do_mmap, fs/proc/task_mmu.c show_vma_header_prefix, 7.2).
 */
static void build_file_shared_ro(struct region *r, struct ctx *c)
{
	if (map_file_as(r, c, MAP_SHARED, true))
		read_pages(r, c);
}

/* Written (so the PTEs exist), then made read-only or inaccessible. */
static void build_protected(struct region *r, struct ctx *c, int prot,
			    const char *name)
{
	if (!map_anon_4k(r))
		return;
	write_pages(r, c);
	if (mprotect((void *)r->start, r->length, prot))
		set_status(r, ST_FAILED, "mprotect(%s): %s", name, strerror(errno));
}

static void build_readonly(struct region *r, struct ctx *c)
{
	build_protected(r, c, PROT_READ, "PROT_READ");
}

static void build_protnone(struct region *r, struct ctx *c)
{
	build_protected(r, c, PROT_NONE, "PROT_NONE");
}

/* MADV_GUARD_INSTALL zaps the pages and installs PTE_MARKER_GUARD. */
static void build_guard(struct region *r, struct ctx *c)
{
	if (!map_anon_4k(r))
		return;
	write_pages(r, c);
	if (madvise((void *)r->start, r->length, PT_MADV_GUARD_INSTALL) == 0)
		return;
	if (errno == EINVAL)
		set_status(r, ST_UNSUPPORTED,
			   "madvise(MADV_GUARD_INSTALL=102): EINVAL (needs Linux 6.13+)");
	else
		set_status(r, ST_FAILED, "madvise(MADV_GUARD_INSTALL): %s",
			   strerror(errno));
}

/*
 * With UFFD_FEATURE_WP_UNPOPULATED, write-protecting never-touched anonymous
 * memory installs PTE_MARKER_UFFD_WP in the empty PTEs (Linux 6.4+).
 */
static void build_uffd_wp_marker(struct region *r, struct ctx *c)
{
	if (need_uffd(r, c, UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				    UFFD_FEATURE_WP_UNPOPULATED) &&
	    map_anon_4k(r) && uffd_register(r, c, UFFDIO_REGISTER_MODE_WP))
		uffd_writeprotect(r, c);
}

/* Write-protecting populated memory sets the uffd-wp bit in present PTEs. */
static void build_uffd_wp_present(struct region *r, struct ctx *c)
{
	if (!need_uffd(r, c, UFFD_FEATURE_PAGEFAULT_FLAG_WP) || !map_anon_4k(r))
		return;
	write_pages(r, c);
	if (uffd_register(r, c, UFFDIO_REGISTER_MODE_WP))
		uffd_writeprotect(r, c);
}

/*
 * Shared anonymous memory is shmem. Zapping write-protected shmem PTEs
 * leaves PTE_MARKER_UFFD_WP behind (mm/memory.c
 * zap_install_uffd_wp_if_needed()), so the protection survives.
 */
static void build_uffd_wp_shmem_marker(struct region *r, struct ctx *c)
{
	if (!need_uffd(r, c, UFFD_FEATURE_PAGEFAULT_FLAG_WP |
				     UFFD_FEATURE_WP_HUGETLBFS_SHMEM) ||
	    !map_anon(r, MAP_SHARED))
		return;
	write_pages(r, c);
	if (uffd_register(r, c, UFFDIO_REGISTER_MODE_WP) &&
	    uffd_writeprotect(r, c))
		madv(r, PT_MADV_DONTNEED, "MADV_DONTNEED");
}

/* UFFDIO_POISON installs PTE_MARKER_POISONED in empty PTEs (Linux 6.6+). */
static void build_poison_marker(struct region *r, struct ctx *c)
{
	struct uffdio_poison p;

	if (!need_uffd(r, c, UFFD_FEATURE_POISON) || !map_anon_4k(r) ||
	    !uffd_register(r, c, UFFDIO_REGISTER_MODE_MISSING))
		return;
	p = (struct uffdio_poison){ .range = { r->start, r->length } };
	if (ioctl(c->uffd, UFFDIO_POISON, &p))
		set_status(r, ST_FAILED, "UFFDIO_POISON: %s", strerror(errno));
	else if ((size_t)p.updated != r->length)
		set_status(r, ST_FAILED, "UFFDIO_POISON covered %lld of %zu bytes",
			   (long long)p.updated, r->length);
}

static volatile sig_atomic_t sigbus_count;

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
	(void)sig, (void)si, (void)uc;
	sigbus_count++;
}

/*
 * MADV_HWPOISON runs memory_failure() on each page (mm/madvise.c
 * madvise_inject_error()): the PTE becomes a hwpoison entry carrying the
 * PFN, and the caller gets SIGBUS (BUS_MCEERR_AR), which is caught.
 */
static void build_hwpoison(struct region *r, struct ctx *c)
{
	struct sigaction sa = { .sa_sigaction = on_sigbus, .sa_flags = SA_SIGINFO };
	const char *mf = kconfig("CONFIG_MEMORY_FAILURE");
	size_t n = npages(r, c);
	char pfns[160] = "";

	if (!c->guest) {
		set_status(r, ST_SKIPPED,
			   "MADV_HWPOISON runs only inside the test VM (--guest)");
		return;
	}
	if (mf && !strcmp(mf, "n")) {
		set_status(r, ST_UNSUPPORTED,
			   "CONFIG_MEMORY_FAILURE is not set (the arch selects"
			   " ARCH_SUPPORTS_MEMORY_FAILURE: %s)",
			   cfg("CONFIG_ARCH_SUPPORTS_MEMORY_FAILURE"));
		return;
	}
	if (!map_anon_4k(r))
		return;
	write_pages(r, c);
	if (pagemap_read(c->pid, r->start, n, c->ps, r->aux)) {
		set_status(r, ST_FAILED, "reading pagemap before poisoning");
		return;
	}
	for (size_t i = 0; i < n; i++) {
		r->aux[i] &= PM_PFRAME_MASK;
		snprintf(pfns + strlen(pfns), sizeof(pfns) - strlen(pfns),
			 "%s%#llx", i ? " " : "", (unsigned long long)r->aux[i]);
	}
	add_detail(r, "pfns_before", "%s", pfns);
	sigaction(SIGBUS, &sa, NULL);
	if (madvise((void *)r->start, r->length, PT_MADV_HWPOISON)) {
		set_status(r, errno == EINVAL ? ST_UNSUPPORTED : ST_FAILED,
			   "madvise(MADV_HWPOISON): %s (CONFIG_MEMORY_FAILURE=%s)",
			   strerror(errno), cfg("CONFIG_MEMORY_FAILURE"));
		return;
	}
	add_detail(r, "sigbus", "%d", (int)sigbus_count);
}

bool have_swap(void)
{
	char line[256];
	FILE *f = fopen("/proc/swaps", "re");
	int lines = 0;

	if (!f)
		return false;
	while (fgets(line, sizeof(line), f))
		lines++;
	fclose(f);
	return lines > 1; /* a header, then one line per swap device */
}

/* MADV_PAGEOUT reclaims the pages now; with swap they become swap entries. */
static void build_swap(struct region *r, struct ctx *c)
{
	size_t n = npages(r, c), swapped = 0;
	uint64_t *pm;
	int tries;

	if (!have_swap()) {
		set_status(r, ST_UNSUPPORTED,
			   "no active swap device (CONFIG_SWAP=%s, CONFIG_ZRAM=%s;"
			   " see init_log)",
			   cfg("CONFIG_SWAP"), cfg("CONFIG_ZRAM"));
		return;
	}
	if (!map_anon_4k(r))
		return;
	pm = calloc(n, sizeof(*pm));
	if (!pm)
		abort();
	write_pages(r, c);
	for (tries = 1; tries <= 3 && swapped < n; tries++) {
		if (madvise((void *)r->start, r->length, PT_MADV_PAGEOUT)) {
			set_status(r, errno == EINVAL ? ST_UNSUPPORTED : ST_FAILED,
				   "madvise(MADV_PAGEOUT): %s", strerror(errno));
			goto out;
		}
		if (pagemap_read(c->pid, r->start, n, c->ps, pm))
			break;
		swapped = 0;
		for (size_t i = 0; i < n; i++)
			swapped += !!(pm[i] & PM_SWAP);
	}
	add_detail(r, "pageout_calls", "%d", tries - 1);
out:
	free(pm);
}

/* ---- checks --------------------------------------------------------------- */

static const struct {
	uint64_t bit;
	const char *name;
} pm_names[] = {
	{ PM_PRESENT, "PM_PRESENT" },	     { PM_SWAP, "PM_SWAP" },
	{ PM_FILE, "PM_FILE" },		     { PM_GUARD_REGION, "PM_GUARD_REGION" },
	{ PM_UFFD_WP, "PM_UFFD_WP" },	     { PM_MMAP_EXCLUSIVE, "PM_MMAP_EXCLUSIVE" },
	{ PM_SOFT_DIRTY, "PM_SOFT_DIRTY" },
};

static const char *pm_bits(uint64_t mask, char *buf, size_t len)
{
	buf[0] = '\0';
	for (size_t i = 0; i < sizeof(pm_names) / sizeof(pm_names[0]); i++)
		if (mask & pm_names[i].bit)
			snprintf(buf + strlen(buf), len - strlen(buf), "%s%s",
				 buf[0] ? "|" : "", pm_names[i].name);
	return buf[0] ? buf : "-";
}

static uint64_t pfn_at(const struct region *r, size_t i)
{
	return r->pagemap[i] & PM_PFRAME_MASK;
}

/* Every page with readable kpageflags has (want) or lacks (!want) KPF bit. */
static bool kpf_check(struct region *r, const struct ctx *c, int bit,
		      bool want, const char *name)
{
	for (size_t i = 0; i < npages(r, c); i++) {
		if (!r->kpf_valid[i] || !!(r->kpageflags[i] & (1ULL << bit)) == want)
			continue;
		set_status(r, ST_MISMATCH, "page %zu: kpageflags %#llx %s %s", i,
			   (unsigned long long)r->kpageflags[i],
			   want ? "lacks" : "has", name);
		return false;
	}
	return true;
}

/* Each aligned block of `block` pages maps consecutive, aligned PFNs. */
static bool blocks_check(struct region *r, const struct ctx *c, size_t block)
{
	for (size_t i = 0; i < npages(r, c); i++) {
		uint64_t base = pfn_at(r, i - i % block);

		if (base % block == 0 && pfn_at(r, i) == base + i % block)
			continue;
		set_status(r, ST_MISMATCH,
			   "page %zu: PFN %#llx is not part of an aligned run of %zu"
			   " (block starts at PFN %#llx)",
			   i, (unsigned long long)pfn_at(r, i), block,
			   (unsigned long long)base);
		return false;
	}
	return true;
}

static void check_no_thp(struct region *r, const struct ctx *c)
{
	kpf_check(r, c, KPF_THP, false, "KPF_THP");
}

static void check_zero(struct region *r, const struct ctx *c)
{
	for (size_t i = 1; i < npages(r, c); i++)
		if (pfn_at(r, i) != pfn_at(r, 0)) {
			set_status(r, ST_MISMATCH, "page %zu maps PFN %#llx, page 0"
				   " PFN %#llx: not one zero page", i,
				   (unsigned long long)pfn_at(r, i),
				   (unsigned long long)pfn_at(r, 0));
			return;
		}
	kpf_check(r, c, KPF_ZERO_PAGE, true, "KPF_ZERO_PAGE");
}

static void check_thp_2m(struct region *r, const struct ctx *c)
{
	if (!blocks_check(r, c, r->page_size / c->ps) ||
	    !kpf_check(r, c, KPF_THP, true, "KPF_THP"))
		return;
	if (r->vma.anon_huge_kb < (long)(r->page_size / KIB))
		set_status(r, ST_MISMATCH, "smaps AnonHugePages is %ld kB",
			   r->vma.anon_huge_kb);
}

static void check_mthp_64k(struct region *r, const struct ctx *c)
{
	if (blocks_check(r, c, r->page_size / c->ps) &&
	    kpf_check(r, c, KPF_THP, true, "KPF_THP") && r->vma.anon_huge_kb)
		set_status(r, ST_MISMATCH, "smaps AnonHugePages is %ld kB: PMD-mapped",
			   r->vma.anon_huge_kb);
}

static void check_hugetlb(struct region *r, const struct ctx *c)
{
	if (blocks_check(r, c, r->page_size / c->ps))
		kpf_check(r, c, KPF_HUGE, true, "KPF_HUGE");
}

static void check_cow_child(struct region *r, const struct ctx *c)
{
	const struct region *parent = region_named("cow_parent");

	if (!parent->pagemap)
		return;
	for (size_t i = 0; i < npages(r, c); i++)
		if (pfn_at(r, i) != pfn_at(parent, i)) {
			set_status(r, ST_MISMATCH, "page %zu: child PFN %#llx, parent"
				   " PFN %#llx: not shared", i,
				   (unsigned long long)pfn_at(r, i),
				   (unsigned long long)pfn_at(parent, i));
			return;
		}
}

/* pagemap shows a hwpoison entry as swap type | PFN << 5 (task_mmu.c). */
static void check_hwpoison(struct region *r, const struct ctx *c)
{
	for (size_t i = 0; i < npages(r, c); i++) {
		uint64_t pfn = pfn_at(r, i) >> PM_SWAP_TYPE_BITS, kpf;

		if (pfn != r->aux[i]) {
			set_status(r, ST_MISMATCH, "page %zu: entry offset %#llx, but"
				   " the poisoned PFN was %#llx", i,
				   (unsigned long long)pfn,
				   (unsigned long long)r->aux[i]);
			return;
		}
		if (c->kpageflags_ok && kpageflags_read(pfn, &kpf) == 0 &&
		    !(kpf & (1ULL << KPF_HWPOISON))) {
			set_status(r, ST_MISMATCH, "PFN %#llx: kpageflags %#llx lacks"
				   " KPF_HWPOISON", (unsigned long long)pfn,
				   (unsigned long long)kpf);
			return;
		}
	}
}

/* Whether the running kernel is older than MAJOR.MINOR (uname -r). */
static bool kernel_before(int major, int minor)
{
	struct utsname u;
	int ma = 0, mi = 0;

	if (uname(&u) || sscanf(u.release, "%d.%d", &ma, &mi) != 2)
		return false;
	return ma < major || (ma == major && mi < minor);
}

/*
 * pagemap reports PM_UFFD_WP from Linux 5.13 (commit fb8e37f35a2f "mm/pagemap: export
 * uffd-wp protection information"; 5.10's fs/proc/task_mmu.c has no PM_UFFD_WP). Before,
 * a region whose pages lack only that bit is write-protected as asked, but no /proc file
 * can confirm it: it is refused and unmapped, not shown as made.
 */
static bool refuse_unreported_uffd_wp(struct region *r, const struct ctx *c,
				      uint64_t want_set, uint64_t want_clear)
{
	if (!(want_set & PM_UFFD_WP) || !kernel_before(5, 13))
		return false;
	for (size_t i = 0; i < npages(r, c); i++) {
		uint64_t v = r->pagemap[i];

		if ((v & want_set) != (want_set & ~PM_UFFD_WP) || (v & want_clear))
			return false;
	}
	const char *arch_wp = kconfig("CONFIG_HAVE_ARCH_USERFAULTFD_WP");

	if (arch_wp && !strcmp(arch_wp, "n"))
		set_status(r, ST_UNSUPPORTED,
			   "CONFIG_HAVE_ARCH_USERFAULTFD_WP is not set: the arch has no uffd-wp bit "
			   "(UFFDIO_WRITEPROTECT succeeds and marks nothing); and the kernel's pagemap "
			   "has no PM_UFFD_WP (Linux 5.13+)");
	else
		set_status(r, ST_UNSUPPORTED,
			   "the kernel's pagemap has no PM_UFFD_WP (Linux 5.13+), so no /proc file can "
			   "confirm the write protection UFFDIO_WRITEPROTECT reported as done "
			   "(CONFIG_HAVE_ARCH_USERFAULTFD_WP=%s)", cfg("CONFIG_HAVE_ARCH_USERFAULTFD_WP"));
	if (r->pid == c->pid)
		munmap((void *)r->start, r->length);
	r->start = 0;
	free(r->pagemap);
	free(r->kpageflags);
	free(r->kpf_valid);
	free(r->scan);
	r->pagemap = NULL;
	r->kpageflags = NULL;
	r->kpf_valid = NULL;
	r->scan = NULL;
	memset(&r->vma, 0, sizeof(r->vma));
	return true;
}

void check_region(struct region *r, const struct ctx *c)
{
	struct entry *e = entry_of(r);
	size_t bad = 0, first = 0;
	char set[128], clear[128];

	if (r->status != ST_OK || !r->pagemap)
		return;
	for (size_t i = 0; i < npages(r, c); i++) {
		if ((r->pagemap[i] & PM_PRESENT) && !pfn_at(r, i)) {
			set_status(r, ST_MISMATCH, "page %zu: PFN reads as 0 (pagemap"
				   " shows PFNs only to CAP_SYS_ADMIN)", i);
			return;
		}
	}
	for (size_t i = 0; i < npages(r, c); i++) {
		uint64_t v = r->pagemap[i];

		if ((v & e->want_set) != e->want_set || (v & e->want_clear)) {
			if (!bad++)
				first = i;
		}
	}
	if (bad && refuse_unreported_uffd_wp(r, c, e->want_set, e->want_clear))
		return;
	if (bad) {
		set_status(r, ST_MISMATCH,
			   "%zu of %zu pages differ; page %zu is %#llx, wanted %s"
			   " set and %s clear",
			   bad, npages(r, c), first,
			   (unsigned long long)r->pagemap[first],
			   pm_bits(e->want_set, set, sizeof(set)),
			   pm_bits(e->want_clear, clear, sizeof(clear)));
		return;
	}
	if (e->check)
		e->check(r, c);
}

/* ---- the table ------------------------------------------------------------ */

#define REGION(n, back, pr, len, psz) \
	.r = { .name = n, .kind = n, .backing = back, .prot = pr, .length = len, \
	       .page_size = psz }

/* Built in this order: the fork happens first, before any other region. */
static struct entry entries[] = {
	{ REGION("cow_parent", "anon-private", "rw-", 8 * P4K, P4K),
	  build_cow_parent, PM_PRESENT, PM_MMAP_EXCLUSIVE | PM_FILE, NULL },
	{ REGION("cow_child", "anon-private", "rw-", 8 * P4K, P4K),
	  build_cow_child, PM_PRESENT, PM_MMAP_EXCLUSIVE | PM_FILE,
	  check_cow_child },
	{ REGION("anon_4k", "anon-private", "rw-", 16 * P4K, P4K), build_anon_4k,
	  PM_PRESENT | PM_MMAP_EXCLUSIVE, PM_FILE | PM_SWAP, check_no_thp },
	{ REGION("anon_zero", "anon-private", "rw-", 4 * P4K, P4K),
	  build_anon_zero, PM_PRESENT, PM_FILE | PM_SWAP, check_zero },
	{ REGION("anon_none", "anon-private", "rw-", 4 * P4K, P4K),
	  build_anon_none, 0, PM_PRESENT | PM_SWAP, NULL },
	{ REGION("thp_2m", "anon-private", "rw-", 2 * MIB, 2 * MIB), build_thp_2m,
	  PM_PRESENT, PM_FILE | PM_SWAP, check_thp_2m },
	{ REGION("mthp_64k", "anon-private", "rw-", 128 * KIB, 64 * KIB),
	  build_mthp_64k, PM_PRESENT, PM_FILE | PM_SWAP, check_mthp_64k },
	{ REGION("hugetlb_64k", "hugetlb-private", "rw-", 128 * KIB, 64 * KIB),
	  build_hugetlb, PM_PRESENT, PM_SWAP, check_hugetlb },
	{ REGION("hugetlb_2m", "hugetlb-private", "rw-", 2 * MIB, 2 * MIB),
	  build_hugetlb, PM_PRESENT, PM_SWAP, check_hugetlb },
	{ REGION("file_private", "file-private", "rw-", 8 * P4K, P4K),
	  build_file_private, PM_PRESENT | PM_FILE, PM_SWAP, NULL },
	{ REGION("file_private_cow", "file-private", "rw-", 8 * P4K, P4K),
	  build_file_private_cow, PM_PRESENT | PM_MMAP_EXCLUSIVE, PM_FILE | PM_SWAP,
	  NULL },
	{ REGION("file_shared", "file-shared", "rw-", 8 * P4K, P4K),
	  build_file_shared, PM_PRESENT | PM_FILE, PM_SWAP, NULL },
	{ REGION("file_shared_ro", "file-shared", "r--", 4 * P4K, P4K),
	  build_file_shared_ro, PM_PRESENT | PM_FILE, PM_SWAP, NULL },
	{ REGION("readonly", "anon-private", "r--", 4 * P4K, P4K), build_readonly,
	  PM_PRESENT, PM_FILE | PM_SWAP, NULL },
	{ REGION("protnone", "anon-private", "---", 4 * P4K, P4K), build_protnone,
	  PM_PRESENT, PM_FILE | PM_SWAP, NULL },
	{ REGION("guard", "anon-private", "rw-", 4 * P4K, P4K), build_guard,
	  PM_SWAP | PM_GUARD_REGION, PM_PRESENT, NULL },
	{ REGION("uffd_wp_marker", "anon-private", "rw-", 4 * P4K, P4K),
	  build_uffd_wp_marker, PM_SWAP | PM_UFFD_WP, PM_PRESENT, NULL },
	{ REGION("uffd_wp_present", "anon-private", "rw-", 4 * P4K, P4K),
	  build_uffd_wp_present, PM_PRESENT | PM_UFFD_WP, PM_SWAP, NULL },
	{ REGION("uffd_wp_shmem_marker", "anon-shared", "rw-", 4 * P4K, P4K),
	  build_uffd_wp_shmem_marker, PM_SWAP | PM_UFFD_WP, PM_PRESENT, NULL },
	{ REGION("poison_marker", "anon-private", "rw-", 4 * P4K, P4K),
	  build_poison_marker, PM_SWAP, PM_PRESENT | PM_UFFD_WP, NULL },
	{ REGION("hwpoison", "anon-private", "rw-", 2 * P4K, P4K), build_hwpoison,
	  PM_SWAP, PM_PRESENT, check_hwpoison },
	{ REGION("swap", "anon-private", "rw-", 16 * P4K, P4K), build_swap,
	  PM_SWAP, PM_PRESENT, NULL },
};

size_t region_count(void) { return sizeof(entries) / sizeof(entries[0]); }

struct region *region_at(size_t i) { return &entries[i].r; }

/*
 * The leaves the table's 4 KiB-granule sizes stand for on other granules:
 * a contpte block (64 KiB with 4 KiB pages) and a PMD (2 MiB). arm64 with
 * 16 KiB pages, Linux 7.2: CONT_PTES = 128 (pgtable-hwdef.h CONT_PTE_SHIFT,
 * CONFIG_ARM64_CONT_PTE_SHIFT 7), so a 2 MiB block; PMD_SIZE 32 MiB; the
 * hugetlb sizes arch/arm64/mm/hugetlbpage.c hugetlbpage_init() registers
 * are the same (its table: "16K | 2M | 32M | 1G").
 */
static const struct {
	size_t ps, cont_pte;
} granules[] = {
	{ 4 * KIB, 64 * KIB },
	{ 16 * KIB, 2 * MIB },
};

/*
 * Scale a region to the base page: base-page kinds keep their number of
 * pages, leaf kinds their number of leaves (of the granule's contpte or PMD
 * size). False, with the reason, on a granule the workload has no sizes for.
 */
static bool to_granule(struct region *r, const struct ctx *c)
{
	size_t leaf = r->page_size == P4K ? c->ps : 0;

	for (size_t g = 0; !leaf && g < sizeof(granules) / sizeof(granules[0]); g++)
		if (granules[g].ps == c->ps)
			leaf = r->page_size == pmd_size(P4K) ? pmd_size(c->ps)
							     : granules[g].cont_pte;
	if (!leaf) {
		set_status(r, ST_UNSUPPORTED,
			   "the workload has leaf sizes for 4 KiB and 16 KiB pages"
			   " only, not for %zu KiB ones (not made)", c->ps / KIB);
		return false;
	}
	r->length = r->length / r->page_size * leaf;
	r->page_size = leaf;
	return true;
}

void build_regions(struct ctx *c)
{
	for (size_t i = 0; i < region_count(); i++) {
		struct region *r = region_at(i);

		r->pid = c->pid;
		r->slot = ARENA_BASE + i * slot_size(c->ps);
		if (!to_granule(r, c))
			continue;
		entries[i].build(r, c);
		/* a region that is not what it claims is not left mapped */
		if (r->status != ST_OK && r->start) {
			if (r->pid == c->pid)
				munmap((void *)r->start, r->length);
			r->start = 0;
		}
	}
}
