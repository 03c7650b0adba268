// SPDX-License-Identifier: GPL-2.0-only
/*
 * What the kernel itself says about the workload's pages: /proc/PID/pagemap
 * (raw values; PFNs are shown only to CAP_SYS_ADMIN, so run as root),
 * /proc/kpageflags, the PAGEMAP_SCAN ioctl, /proc/PID/smaps, sysfs knobs and
 * the kernel's build config.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "uapi.h"
#include "workload.h"

static int open_proc(pid_t pid, const char *file)
{
	char path[64];

	snprintf(path, sizeof(path), "/proc/%d/%s", (int)pid, file);
	return open(path, O_RDONLY | O_CLOEXEC);
}

/* One 64-bit pagemap entry per page, indexed by virtual page number. */
int pagemap_read(pid_t pid, uintptr_t start, size_t npages, size_t ps,
		 uint64_t *out)
{
	size_t want = npages * sizeof(uint64_t);
	int fd = open_proc(pid, "pagemap");
	ssize_t n;

	if (fd < 0)
		return -errno;
	n = pread(fd, out, want, (off_t)(start / ps * sizeof(uint64_t)));
	close(fd);
	if (n < 0)
		return -errno;
	return (size_t)n == want ? 0 : -EIO;
}

/* /proc/kpageflags is an array of 64-bit KPF_* words indexed by PFN. */
int kpageflags_read(uint64_t pfn, uint64_t *out)
{
	static int fd = -1, open_errno;
	ssize_t n;

	if (fd < 0 && !open_errno) {
		fd = open("/proc/kpageflags", O_RDONLY | O_CLOEXEC);
		open_errno = fd < 0 ? errno : 0;
	}
	if (fd < 0)
		return -open_errno;
	n = pread(fd, out, sizeof(*out), (off_t)(pfn * sizeof(*out)));
	if (n == (ssize_t)sizeof(*out))
		return 0;
	return n < 0 ? -errno : -EIO;
}

/*
 * Categories of every page in [start, start + npages * ps). With no category
 * filter the kernel reports every page, merged into runs of equal categories
 * (fs/proc/task_mmu.c pagemap_scan_ioctl()).
 */
int pagemap_scan(pid_t pid, uintptr_t start, size_t npages, size_t ps,
		 uint64_t mask, uint64_t *out)
{
	struct page_region *vec = calloc(npages, sizeof(*vec));
	uintptr_t end = start + npages * ps, cur = start;
	int fd = open_proc(pid, "pagemap"), err = 0;

	memset(out, 0, npages * sizeof(*out));
	if (!vec || fd < 0) {
		err = fd < 0 ? -errno : -ENOMEM;
		goto out;
	}
	while (cur < end) {
		struct pm_scan_arg a = {
			.size = sizeof(a),
			.start = cur,
			.end = end,
			.vec = (uintptr_t)vec,
			.vec_len = npages,
			.return_mask = mask,
		};
		long n = ioctl(fd, PAGEMAP_SCAN, &a);

		if (n < 0) {
			err = -errno;
			break;
		}
		for (long i = 0; i < n; i++)
			for (uint64_t va = vec[i].start; va < vec[i].end; va += ps)
				out[(va - start) / ps] = vec[i].categories;
		if (a.walk_end <= cur)
			break;
		cur = a.walk_end;
	}
out:
	if (fd >= 0)
		close(fd);
	free(vec);
	return err;
}

/* Which PAGEMAP_SCAN categories this kernel accepts (none before 6.7). */
void scan_probe(struct ctx *c)
{
	static const uint64_t masks[] = { PM_SCAN_CATEGORIES_7_2,
					  PM_SCAN_CATEGORIES_6_7 };
	static char probe_page[1] __attribute__((aligned(65536))); /* any granule */
	uint64_t cats;
	int err = 0;

	for (size_t i = 0; i < sizeof(masks) / sizeof(masks[0]); i++) {
		err = pagemap_scan(c->pid, (uintptr_t)probe_page, 1, c->ps,
				   masks[i], &cats);
		if (!err) {
			c->scan_mask = masks[i];
			return;
		}
		if (err != -EINVAL)
			break;
	}
	snprintf(c->scan_error, sizeof(c->scan_error),
		 "PAGEMAP_SCAN ioctl: %s (needs Linux 6.7+)", strerror(-err));
}

static long smaps_kb(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (strncmp(line, key, n) || line[n] != ':')
		return -1;
	return strtol(line + n + 1, NULL, 10);
}

/* The smaps record of the VMA that contains addr. */
void smaps_read(pid_t pid, uintptr_t addr, struct vma_info *v)
{
	char path[64], line[512];
	bool inside = false;
	FILE *f;

	memset(v, 0, sizeof(*v));
	v->thp_eligible = -1;
	snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
	f = fopen(path, "re");
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		unsigned long s, e;
		long kb;

		if (sscanf(line, "%lx-%lx ", &s, &e) == 2) { /* a VMA header */
			if (inside)
				break;
			inside = addr >= s && addr < e;
			if (inside) {
				v->found = true;
				v->start = s;
				v->end = e;
			}
			continue;
		}
		if (!inside)
			continue;
		if ((kb = smaps_kb(line, "Rss")) >= 0)
			v->rss_kb = kb;
		else if ((kb = smaps_kb(line, "AnonHugePages")) >= 0)
			v->anon_huge_kb = kb;
		else if ((kb = smaps_kb(line, "Swap")) >= 0)
			v->swap_kb = kb;
		else if ((kb = smaps_kb(line, "FilePmdMapped")) >= 0)
			v->file_pmd_kb = kb;
		else if ((kb = smaps_kb(line, "ShmemPmdMapped")) >= 0)
			v->shmem_pmd_kb = kb;
		else if ((kb = smaps_kb(line, "THPeligible")) >= 0)
			v->thp_eligible = (int)kb;
		else if (!strncmp(line, "VmFlags:", 8)) {
			char *p = line + 8;

			p += strspn(p, " ");
			p[strcspn(p, "\n")] = '\0';
			snprintf(v->flags, sizeof(v->flags), "%s", p);
		}
	}
	fclose(f);
}

/* The first line of a file, without its newline. */
bool read_line(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "re");
	bool ok;

	if (!f)
		return false;
	ok = fgets(buf, (int)len, f) != NULL;
	fclose(f);
	if (ok)
		buf[strcspn(buf, "\n")] = '\0';
	return ok;
}

/* The selected word of a sysfs choice file ("always [madvise] never"). */
bool sysfs_choice(const char *path, char *buf, size_t len)
{
	char line[256], *l, *r;

	if (!read_line(path, line, sizeof(line)))
		return false;
	l = strchr(line, '[');
	r = l ? strchr(l, ']') : NULL;
	if (!l || !r) {
		snprintf(buf, len, "%s", line);
		return true;
	}
	*r = '\0';
	snprintf(buf, len, "%s", l + 1);
	return true;
}

static char *config_text;

/* Load the kernel's build config (copied into the initramfs by the host). */
void kconfig_load(const char *path)
{
	FILE *f = fopen(path, "re");
	long n;

	if (!f)
		return;
	if (fseek(f, 0, SEEK_END) == 0 && (n = ftell(f)) > 0 &&
	    (config_text = calloc(1, (size_t)n + 2))) {
		/* a leading newline lets kconfig() match "\nCONFIG_X=" */
		config_text[0] = '\n';
		rewind(f);
		if (fread(config_text + 1, 1, (size_t)n, f) != (size_t)n) {
			free(config_text);
			config_text = NULL;
		}
	}
	fclose(f);
}

/*
 * The value of a CONFIG_ option: "y", "m", a number or string, or "n" when
 * it is not set. NULL when no config is available.
 */
const char *kconfig(const char *option)
{
	static char value[64];
	char needle[96];
	const char *p, *e;

	if (!config_text)
		return NULL;
	snprintf(needle, sizeof(needle), "\n%s=", option);
	p = strstr(config_text, needle);
	if (!p)
		return "n";
	p += strlen(needle);
	e = p + strcspn(p, "\n");
	snprintf(value, sizeof(value), "%.*s", (int)(e - p), p);
	return value;
}

/* Read what /proc says about every page of a mapped region. */
void inspect_region(struct region *r, const struct ctx *c)
{
	size_t n = r->length / c->ps;
	int err;

	if (!r->start)
		return;
	r->pagemap = calloc(n, sizeof(*r->pagemap));
	r->kpageflags = calloc(n, sizeof(*r->kpageflags));
	r->kpf_valid = calloc(n, sizeof(*r->kpf_valid));
	if (!r->pagemap || !r->kpageflags || !r->kpf_valid)
		abort();
	err = pagemap_read(r->pid, r->start, n, c->ps, r->pagemap);
	if (err) {
		set_status(r, ST_FAILED, "reading /proc/%d/pagemap: %s",
			   (int)r->pid, strerror(-err));
		free(r->pagemap);
		r->pagemap = NULL;
		return;
	}
	for (size_t i = 0; i < n && c->kpageflags_ok; i++) {
		uint64_t pfn = r->pagemap[i] & PM_PFRAME_MASK;

		if ((r->pagemap[i] & PM_PRESENT) && pfn)
			r->kpf_valid[i] =
				kpageflags_read(pfn, &r->kpageflags[i]) == 0;
	}
	if (c->scan_mask) {
		r->scan = calloc(n, sizeof(*r->scan));
		if (!r->scan)
			abort();
		err = pagemap_scan(r->pid, r->start, n, c->ps, c->scan_mask,
				   r->scan);
		if (err) {
			add_detail(r, "scan_error", "PAGEMAP_SCAN: %s",
				   strerror(-err));
			free(r->scan);
			r->scan = NULL;
		}
	}
	smaps_read(r->pid, r->start, &r->vma);
}
