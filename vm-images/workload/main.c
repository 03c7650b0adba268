// SPDX-License-Identifier: GPL-2.0-only
/*
 * ptinspect guest workload: puts every kind of page-table entry the kernel
 * can make into this one process (plus one fork child), then prints a JSON
 * manifest describing them between the lines PTINSPECT-MANIFEST-BEGIN and
 * PTINSPECT-MANIFEST-END and sleeps forever with everything still mapped.
 * The format is documented in vm-images/README-workload.md.
 *
 * Usage: workload [--guest] [--ops] [--once] | workload --bulk MIB
 *   --guest  inside the test VM: do MADV_HWPOISON (never on a host), read
 *            the kernel config and init log the initramfs provides
 *   --ops    after the manifest, do memory-management operations requested
 *            one per line on stdin until it ends (ops.c)
 *   --once   exit (and end the fork child) after printing the manifest
 *            (and, with --ops, once stdin ends)
 *   --bulk   instead of the manifest: map MIB MiB of private anonymous 4 KiB
 *            pages, write every page, print one line
 *            "PTINSPECT-BULK pid=N start=0x... length=0x..." and sleep forever
 *            (a large address space for benchmarks)
 */
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/utsname.h>
#include <unistd.h>

#include "uapi.h"
#include "workload.h"

#define MANIFEST_VERSION 1
#define GUEST_CONFIG "/ptinspect/kernel.config"
#define GUEST_INIT_LOG "/ptinspect/init.log"
#define THP_SYSFS "/sys/kernel/mm/transparent_hugepage"
#define HUGETLB_SYSFS "/sys/kernel/mm/hugepages"

static const char *const status_names[] = {
	[ST_OK] = "ok",
	[ST_MISMATCH] = "mismatch",
	[ST_UNSUPPORTED] = "unsupported",
	[ST_FAILED] = "failed",
	[ST_SKIPPED] = "skipped",
};

/* Config options reported in the manifest: they shape what can exist. */
static const char *const config_options[] = {
	"CONFIG_PGTABLE_LEVELS",
	"CONFIG_TRANSPARENT_HUGEPAGE",
	"CONFIG_HUGETLBFS",
	"CONFIG_USERFAULTFD",
	"CONFIG_HAVE_ARCH_USERFAULTFD_WP",
	"CONFIG_PTE_MARKER_UFFD_WP",
	"CONFIG_MEMORY_FAILURE",
	"CONFIG_MIGRATION",
	"CONFIG_DEVICE_PRIVATE",
	"CONFIG_SWAP",
	"CONFIG_ZRAM",
	"CONFIG_MEM_SOFT_DIRTY",
	"CONFIG_PROC_PAGE_MONITOR",
	"CONFIG_ARM64_CONTPTE",
	"CONFIG_RISCV_ISA_SVNAPOT",
	"CONFIG_RISCV_ISA_SVPBMT",
};

const char *status_name(enum status st)
{
	return status_names[st];
}

void set_status(struct region *r, enum status st, const char *fmt, ...)
{
	va_list ap;

	r->status = st;
	va_start(ap, fmt);
	vsnprintf(r->reason, sizeof(r->reason), fmt, ap);
	va_end(ap);
}

void add_detail(struct region *r, const char *key, const char *fmt, ...)
{
	va_list ap;

	if (r->ndetails >= MAX_DETAILS)
		abort();
	snprintf(r->detail_key[r->ndetails], sizeof(r->detail_key[0]), "%s", key);
	va_start(ap, fmt);
	vsnprintf(r->detail_val[r->ndetails], sizeof(r->detail_val[0]), fmt, ap);
	va_end(ap);
	r->ndetails++;
}

static void json_choice(struct json *j, const char *key, const char *path)
{
	char buf[64];

	json_key(j, key);
	json_string(j, sysfs_choice(path, buf, sizeof(buf)) ? buf : NULL);
}

/* "hugepages-64kB" entries of a sysfs directory, each as one object key. */
static void json_size_dirs(struct json *j, const char *dir, bool hugetlb)
{
	static const char *const counts[] = { "nr_hugepages", "free_hugepages" };
	struct dirent *d;
	DIR *dp = opendir(dir);

	json_begin_object(j);
	while (dp && (d = readdir(dp))) {
		char path[512], line[64];

		if (strncmp(d->d_name, "hugepages-", 10))
			continue;
		json_key(j, d->d_name + 10);
		if (!hugetlb) {
			snprintf(path, sizeof(path), "%s/%s/enabled", dir, d->d_name);
			json_string(j, sysfs_choice(path, line, sizeof(line)) ? line
									      : NULL);
			continue;
		}
		json_begin_object(j);
		for (size_t i = 0; i < 2; i++) {
			snprintf(path, sizeof(path), "%s/%s/%s", dir, d->d_name,
				 counts[i]);
			json_key(j, counts[i]);
			if (read_line(path, line, sizeof(line)))
				json_int(j, strtoll(line, NULL, 10));
			else
				json_null(j);
		}
		json_end_object(j);
	}
	if (dp)
		closedir(dp);
	json_end_object(j);
}

/* Each line of a text file as a JSON string; null if it cannot be read. */
void json_lines(struct json *j, const char *path)
{
	char line[512];
	FILE *f = fopen(path, "re");

	if (!f) {
		json_null(j);
		return;
	}
	json_begin_array(j);
	while (fgets(line, sizeof(line), f)) {
		line[strcspn(line, "\n")] = '\0';
		json_string(j, line);
	}
	json_end_array(j);
	fclose(f);
}

static void json_error(struct json *j, const char *key, const char *error)
{
	json_key(j, key);
	json_string(j, error[0] ? error : NULL);
}

static void render_settings(struct json *j, const struct ctx *c, bool guest)
{
	json_key(j, "settings");
	json_begin_object(j);
	json_choice(j, "thp_enabled", THP_SYSFS "/enabled");
	json_choice(j, "thp_defrag", THP_SYSFS "/defrag");
	json_choice(j, "thp_shmem_enabled", THP_SYSFS "/shmem_enabled");
	json_key(j, "mthp");
	json_size_dirs(j, THP_SYSFS, false);
	json_key(j, "hugetlb");
	json_size_dirs(j, HUGETLB_SYSFS, true);
	json_key(j, "swaps");
	json_lines(j, "/proc/swaps");
	json_newline(j);

	json_key(j, "uffd");
	json_begin_object(j);
	json_key(j, "features_offered");
	if (c->uffd_offered)
		json_hex(j, c->uffd_offered);
	else
		json_null(j);
	json_key(j, "features_enabled");
	if (c->uffd >= 0)
		json_hex(j, c->uffd_features);
	else
		json_null(j);
	json_error(j, "error", c->uffd_error);
	json_end_object(j);

	json_key(j, "pagemap_scan");
	json_begin_object(j);
	json_key(j, "categories");
	if (c->scan_mask)
		json_hex(j, c->scan_mask);
	else
		json_null(j);
	json_error(j, "error", c->scan_error);
	json_end_object(j);

	json_key(j, "kpageflags");
	json_begin_object(j);
	json_key(j, "readable");
	json_bool(j, c->kpageflags_ok);
	json_error(j, "error", c->kpageflags_error);
	json_end_object(j);

	json_key(j, "config");
	if (kconfig("CONFIG_SWAP")) {
		json_begin_object(j);
		for (size_t i = 0;
		     i < sizeof(config_options) / sizeof(config_options[0]); i++) {
			json_key(j, config_options[i]);
			json_string(j, kconfig(config_options[i]));
		}
		json_end_object(j);
	} else {
		json_null(j);
	}
	json_end_object(j);
	json_newline(j);

	json_key(j, "init_log");
	if (guest)
		json_lines(j, GUEST_INIT_LOG);
	else
		json_null(j);
}

static void render_vma(struct json *j, const struct vma_info *v)
{
	json_key(j, "vma");
	if (!v->found) {
		json_null(j);
		return;
	}
	json_begin_object(j);
	json_key(j, "start");
	json_hex(j, v->start);
	json_key(j, "end");
	json_hex(j, v->end);
	json_key(j, "flags");
	json_string(j, v->flags);
	json_key(j, "rss_kb");
	json_int(j, v->rss_kb);
	json_key(j, "anon_huge_kb");
	json_int(j, v->anon_huge_kb);
	json_key(j, "swap_kb");
	json_int(j, v->swap_kb);
	json_key(j, "file_pmd_kb");
	json_int(j, v->file_pmd_kb);
	json_key(j, "shmem_pmd_kb");
	json_int(j, v->shmem_pmd_kb);
	json_key(j, "thp_eligible");
	if (v->thp_eligible >= 0)
		json_int(j, v->thp_eligible);
	else
		json_null(j);
	json_end_object(j);
}

static void render_region(struct json *j, const struct region *r,
			  const struct ctx *c)
{
	size_t n = r->pagemap ? r->length / c->ps : 0;

	json_begin_object(j);
	json_key(j, "name");
	json_string(j, r->name);
	json_key(j, "kind");
	json_string(j, r->kind);
	json_key(j, "pid");
	json_int(j, r->pid);
	json_key(j, "status");
	json_string(j, status_name(r->status));
	json_key(j, "reason");
	json_string(j, r->reason[0] ? r->reason : NULL);
	json_key(j, "start");
	if (r->start)
		json_hex(j, r->start);
	else
		json_null(j);
	json_key(j, "length");
	json_int(j, (long long)r->length);
	json_key(j, "page_size");
	json_int(j, (long long)r->page_size);
	json_key(j, "backing");
	json_string(j, r->backing);
	json_key(j, "prot");
	json_string(j, r->prot);
	render_vma(j, &r->vma);
	json_key(j, "details");
	json_begin_object(j);
	for (int i = 0; i < r->ndetails; i++) {
		json_key(j, r->detail_key[i]);
		json_string(j, r->detail_val[i]);
	}
	json_end_object(j);
	json_newline(j);

	json_key(j, "pagemap");
	json_begin_array(j);
	for (size_t i = 0; i < n; i++)
		json_hex(j, r->pagemap[i]);
	json_end_array(j);
	json_newline(j);

	json_key(j, "kpageflags");
	json_begin_array(j);
	for (size_t i = 0; i < n; i++) {
		if (r->kpf_valid[i])
			json_hex(j, r->kpageflags[i]);
		else
			json_null(j);
	}
	json_end_array(j);
	json_newline(j);

	json_key(j, "scan");
	if (r->scan) {
		json_begin_array(j);
		for (size_t i = 0; i < n; i++)
			json_int(j, (long long)r->scan[i]);
		json_end_array(j);
	} else {
		json_null(j);
	}
	json_end_object(j);
}

static const char *arch_name(const char *machine)
{
	return !strcmp(machine, "aarch64") ? "arm64" : machine;
}

static struct json *render_manifest(const struct ctx *c, bool guest)
{
	struct json *j = json_new();
	struct utsname u;

	uname(&u);
	json_begin_object(j);
	json_key(j, "format");
	json_string(j, "ptinspect-workload-manifest");
	json_key(j, "version");
	json_int(j, MANIFEST_VERSION);
	json_key(j, "pid");
	json_int(j, c->pid);
	json_key(j, "child_pid");
	if (c->child > 0)
		json_int(j, c->child);
	else
		json_null(j);
	json_key(j, "euid");
	json_int(j, (long long)geteuid());
	json_key(j, "kernel_release");
	json_string(j, u.release);
	json_key(j, "kernel_version");
	json_string(j, u.version);
	json_key(j, "machine");
	json_string(j, u.machine);
	json_key(j, "arch");
	json_string(j, arch_name(u.machine));
	json_key(j, "page_size");
	json_int(j, (long long)c->ps);
	json_key(j, "arena");
	json_hex(j, ARENA_BASE);
	json_newline(j);
	render_settings(j, c, guest);
	json_newline(j);
	json_key(j, "regions");
	json_begin_array(j);
	for (size_t i = 0; i < region_count(); i++) {
		json_newline(j);
		render_region(j, region_at(i), c);
	}
	json_end_array(j);
	json_end_object(j);
	json_newline(j);
	return j;
}

void write_all(const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(STDOUT_FILENO, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

static void kpageflags_probe(struct ctx *c)
{
	uint64_t flags;
	int err = kpageflags_read(0, &flags);

	c->kpageflags_ok = err == 0;
	if (err)
		snprintf(c->kpageflags_error, sizeof(c->kpageflags_error),
			 "/proc/kpageflags: %s (CONFIG_PROC_PAGE_MONITOR, root)",
			 strerror(-err));
}

/* --bulk: MIB MiB of written 4 KiB pages (MADV_NOHUGEPAGE: no THP, no mTHP). */
static int bulk(const char *mib_text)
{
	char *end, line[128];
	unsigned long mib = strtoul(mib_text, &end, 10);
	size_t ps = (size_t)sysconf(_SC_PAGESIZE), length;
	unsigned char *p;
	int n;

	if (!mib || *end || mib > (SIZE_MAX >> 20)) {
		fprintf(stderr, "workload: --bulk needs a positive number of MiB, not '%s'\n", mib_text);
		return 2;
	}
	length = mib << 20;
	p = mmap(NULL, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		fprintf(stderr, "workload: --bulk mmap of %lu MiB: %s\n", mib, strerror(errno));
		return 1;
	}
	if (madvise(p, length, PT_MADV_NOHUGEPAGE))
		fprintf(stderr, "workload: --bulk MADV_NOHUGEPAGE: %s\n", strerror(errno));
	for (size_t off = 0; off < length; off += ps)
		p[off] = (unsigned char)(off / ps | 1);
	n = snprintf(line, sizeof(line), "PTINSPECT-BULK pid=%d start=%#lx length=%#zx\n",
		     (int)getpid(), (unsigned long)(uintptr_t)p, length);
	write_all(line, (size_t)n);
	for (;;)
		pause();
}

int main(int argc, char **argv)
{
	struct ctx c = { .uffd = UFFD_NOT_OPENED };
	bool guest = false, once = false, ops = false;
	const char *text;
	size_t len;

	if (argc == 3 && !strcmp(argv[1], "--bulk"))
		return bulk(argv[2]);
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--guest")) {
			guest = true;
		} else if (!strcmp(argv[i], "--once")) {
			once = true;
		} else if (!strcmp(argv[i], "--ops")) {
			ops = true;
		} else {
			fprintf(stderr, "usage: %s [--guest] [--ops] [--once] | --bulk MIB\n", argv[0]);
			return 2;
		}
	}
	/*
	 * The heap never shrinks: an answer freed at the top of a large-page heap
	 * would trim [heap] between a "maps" answer and the next look at the VMAs.
	 */
	mallopt(M_TRIM_THRESHOLD, -1);
	c.ps = (size_t)sysconf(_SC_PAGESIZE);
	c.pid = getpid();
	c.guest = guest;
	if (guest)
		kconfig_load(GUEST_CONFIG);
	scan_probe(&c);
	kpageflags_probe(&c);

	build_regions(&c);
	for (size_t i = 0; i < region_count(); i++) {
		inspect_region(region_at(i), &c);
		check_region(region_at(i), &c);
	}

	text = json_text(render_manifest(&c, guest), &len);
	write_all("PTINSPECT-MANIFEST-BEGIN\n", 25);
	write_all(text, len);
	write_all("PTINSPECT-MANIFEST-END\n", 23);

	if (ops)
		serve_ops();
	if (once) {
		if (c.child > 0)
			kill(c.child, SIGKILL);
		return 0;
	}
	for (;;)
		pause();
}
