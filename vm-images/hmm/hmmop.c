// SPDX-License-Identifier: GPL-2.0
/*
 * hmmop: device-private and device-exclusive entries on request, made by the kernel's own HMM test
 * driver (lib/test_hmm.c, /dev/hmm_dmirror0) in this process's address space.
 *
 * Usage: hmmop --serve FIFO [--device DEV] [--selftest HMM_TESTS]
 *
 * Opens DEV (the driver mirrors the address space of the process that opens it), makes FIFO and
 * answers the requests written into it, one per line, on stdout (the console in the VM) as
 *   PTINSPECT-OP {json}
 * in the workload's answer format (vm-images/README-workload.md) plus "pid", "device", "cpages",
 * "faults", "data_ok", "snapshot" (HMM_DMIRROR_SNAPSHOT, one byte per page), "exclusive" (per page:
 * HMM_DMIRROR_CHECK_EXCLUSIVE of that page fails with EPERM, i.e. the device holds it atomically) and
 * "iomem" (the driver's device-memory ranges, /proc/iomem "hmm_dmirror").
 *
 * Requests: SEQ hmm-prepare [PAGES] | SEQ hmm-prepare-thp | SEQ hmm-OP [START] with OP one of
 * migrate-dev, migrate-sys, exclusive, readonly, touch, snapshot (vm-images/README.md, "HMM").
 * hmm-prepare-thp maps one PMD-sized, PMD-aligned region with MADV_HUGEPAGE and writes it, so that
 * it is one THP ("anon_huge_kb": smaps AnonHugePages); migrate-dev then moves it as one compound
 * folio (MIGRATE_VMA_SELECT_COMPOUND, lib/test_hmm.c 6.19+) to a PMD-level device-private entry.
 * SEQ hmm-selftest NAME[,NAME...] runs the kernel's own hmm-tests (HMM_TESTS) with `-t NAME` for
 * each and answers its TAP result lines ("selftest": {"exit", "results", "log": its last lines}): the kernel's verdict.
 *
 * test_hmm_uapi.h is the one of the kernel the module was built from (-I of its cache entry).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "test_hmm_uapi.h"

#define PAGE ((unsigned long)sysconf(_SC_PAGESIZE))  /* the base page: 4 KiB, or 16 KiB on arm64-16k */
#define BASE 0x3010000000UL	/* regions: BASE + i * 4 MiB (the workload's arena is at 0x2000000000) */
#define SLOT (4UL << 20)
#define MAX_REGIONS 64
#define MAX_PAGES 512
#define SEQ_MAX 32
#define MAX_CASES 32
#define MAX_RESULTS 128
#define LOG_LINES 40

#ifndef MADV_HUGEPAGE
#define MADV_HUGEPAGE 14
#endif
#ifndef MADV_NOHUGEPAGE
#define MADV_NOHUGEPAGE 15
#endif

struct region {
	uintptr_t start;
	size_t pages;
	bool thp;	/* made by hmm-prepare-thp */
};

struct answer {
	const char *seq, *op;
	bool ok;
	char reason[256];
	int err;
	struct region *reg;
	long long cpages, faults;
	int data_ok;	/* -1: not checked */
	bool snapshot_ok;
	unsigned char snapshot[MAX_PAGES];
	int exclusive[MAX_PAGES];	/* 1: held by the device, 0: not, -1: the check failed otherwise */
	bool selftest;		/* hmm-selftest: exit status and result lines below */
	int selftest_exit;
	size_t nresults;
	char *results[MAX_RESULTS];	/* the TAP "ok N ..." / "not ok N ..." lines */
	size_t nlog;
	char *log[LOG_LINES];	/* the last LOG_LINES lines of its output (ring): why a case failed */
};

static struct region regions[MAX_REGIONS];
static size_t nregions;
static int dev = -1;
static const char *dev_path = "/dev/hmm_dmirror0";
static const char *selftest_path;

/* ---- output ---------------------------------------------------------------------------------- */

static char *out;
static size_t out_len, out_cap;

static void put(const char *fmt, ...)
{
	va_list ap;
	int n;

	for (;;) {
		va_start(ap, fmt);
		n = vsnprintf(out + out_len, out_cap - out_len, fmt, ap);
		va_end(ap);
		if (n < 0)
			abort();
		if (out_len + (size_t)n < out_cap)
			break;
		out_cap = (out_cap + (size_t)n) * 2;
		out = realloc(out, out_cap);
		if (!out)
			abort();
	}
	out_len += (size_t)n;
}

static void put_string(const char *s)
{
	if (!s) {
		put("null");
		return;
	}
	put("\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			put("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			put("\\u%04x", *s);
		else
			put("%c", *s);
	}
	put("\"");
}

static void fail(struct answer *a, int err, const char *fmt, ...)
{
	va_list ap;

	a->ok = false;
	a->err = err;
	va_start(ap, fmt);
	vsnprintf(a->reason, sizeof(a->reason), fmt, ap);
	va_end(ap);
	if (err) {
		size_t n = strlen(a->reason);

		snprintf(a->reason + n, sizeof(a->reason) - n, ": %s", strerror(err));
	}
}

/* ---- the kernel's views ----------------------------------------------------------------------- */

static int pagemap(uintptr_t start, size_t pages, uint64_t *values)
{
	int fd = open("/proc/self/pagemap", O_RDONLY);
	ssize_t want = (ssize_t)(pages * sizeof(*values)), got;

	if (fd < 0)
		return -1;
	got = pread(fd, values, (size_t)want, (off_t)(start / PAGE * sizeof(*values)));
	close(fd);
	return got == want ? 0 : -1;
}

/* smaps AnonHugePages (kB) of the VMA that starts at START: the THP the region is made of. */
static long anon_huge_kb(uintptr_t start)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;
	long kb = 0;

	while (f && fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		char dash;

		if (sscanf(line, "%lx%c%lx ", &lo, &dash, &hi) == 3 && dash == '-') {
			in = lo == start;
			continue;
		}
		if (in && sscanf(line, "AnonHugePages: %ld kB", &kb) == 1)
			break;
	}
	if (f)
		fclose(f);
	return kb;
}

static void put_iomem(void)
{
	FILE *f = fopen("/proc/iomem", "r");
	char line[256];
	bool first = true;

	put("[");
	while (f && fgets(line, sizeof(line), f)) {
		if (!strstr(line, "hmm_dmirror"))
			continue;
		line[strcspn(line, " :")] = 0;
		put("%s", first ? "" : ",");
		put_string(line + strspn(line, " "));
		first = false;
	}
	if (f)
		fclose(f);
	put("]");
}

static int dmirror(unsigned long request, struct region *reg, void *buf, struct answer *a)
{
	struct hmm_dmirror_cmd cmd = { .addr = reg->start, .ptr = (uintptr_t)buf, .npages = reg->pages };

	if (ioctl(dev, request, &cmd)) {
		int err = errno;

		a->cpages = (long long)cmd.cpages;
		a->faults = (long long)cmd.faults;
		return err;
	}
	a->cpages = (long long)cmd.cpages;
	a->faults = (long long)cmd.faults;
	return 0;
}

static void snapshot(struct answer *a)
{
	struct answer scratch = *a;

	a->snapshot_ok = a->reg && !dmirror(HMM_DMIRROR_SNAPSHOT, a->reg, a->snapshot, &scratch);
	for (size_t i = 0; a->reg && i < a->reg->pages; i++) {
		struct region page = { .start = a->reg->start + i * PAGE, .pages = 1 };
		int err = dmirror(HMM_DMIRROR_CHECK_EXCLUSIVE, &page, NULL, &scratch);

		a->exclusive[i] = err == EPERM ? 1 : err ? -1 : 0;
	}
}

/* ---- operations ------------------------------------------------------------------------------- */

static unsigned char pattern(const struct region *reg, size_t page, size_t byte)
{
	return (unsigned char)((reg->start >> 22) * 31 + page * 7 + byte);
}

static void prepare(struct answer *a, const char *arg, bool thp)
{
	size_t pages = 16;
	char *end = NULL;
	struct region *reg;
	void *p;

	if (thp) {
		FILE *f = fopen("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "r");
		unsigned long pmd = 0;

		if (!f || fscanf(f, "%lu", &pmd) != 1 || !pmd || pmd % PAGE || pmd / PAGE > MAX_PAGES ||
		    pmd > SLOT) {
			fail(a, f ? 0 : errno, "hpage_pmd_size %lu: no PMD THP of at most %d pages", pmd, MAX_PAGES);
			if (f)
				fclose(f);
			return;
		}
		fclose(f);
		pages = pmd / PAGE;
	} else if (arg) {
		pages = strtoul(arg, &end, 10);
		if (*end || !pages || pages > MAX_PAGES) {
			fail(a, 0, "hmm-prepare PAGES: 1 to %d pages, not '%s'", MAX_PAGES, arg);
			return;
		}
	}
	if (nregions == MAX_REGIONS) {
		fail(a, 0, "all %d region slots are used", MAX_REGIONS);
		return;
	}
	reg = &regions[nregions];
	reg->start = BASE + nregions * SLOT;
	reg->pages = pages;
	p = mmap((void *)reg->start, pages * PAGE, PROT_READ | PROT_WRITE,
		 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	if (p == MAP_FAILED || (uintptr_t)p != reg->start) {
		fail(a, errno, "mmap of %zu pages at %#lx", pages, (unsigned long)reg->start);
		return;
	}
	reg->thp = thp;	/* the slot (SLOT-aligned) is PMD-aligned */
	if (madvise(p, pages * PAGE, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE)) {
		fail(a, errno, thp ? "madvise(MADV_HUGEPAGE)" : "madvise(MADV_NOHUGEPAGE)");
		return;
	}
	for (size_t i = 0; i < pages; i++)
		for (size_t b = 0; b < PAGE; b += 512)
			((unsigned char *)p)[i * PAGE + b] = pattern(reg, i, b);
	nregions++;
	a->reg = reg;
}

/* The data the driver copied back equals what this process wrote. */
static int data_matches(const struct region *reg, const unsigned char *buf)
{
	for (size_t i = 0; i < reg->pages; i++)
		for (size_t b = 0; b < PAGE; b += 512)
			if (buf[i * PAGE + b] != pattern(reg, i, b))
				return 0;
	return 1;
}

static void run(struct answer *a, const char *op)
{
	struct region *reg = a->reg;
	unsigned char *buf = NULL;
	unsigned long request = 0;
	volatile unsigned char sink = 0;
	int err;

	if (!strcmp(op, "snapshot"))
		return;
	if (!strcmp(op, "readonly")) {
		if (mprotect((void *)reg->start, reg->pages * PAGE, PROT_READ))
			fail(a, errno, "mprotect(PROT_READ)");
		return;
	}
	if (!strcmp(op, "touch")) {	/* CPU reads: device pages fault back to RAM */
		for (size_t i = 0; i < reg->pages; i++)
			sink += *(volatile unsigned char *)(reg->start + i * PAGE);
		(void)sink;
		return;
	}
	if (!strcmp(op, "migrate-dev"))
		request = HMM_DMIRROR_MIGRATE_TO_DEV;
	else if (!strcmp(op, "migrate-sys"))
		request = HMM_DMIRROR_MIGRATE_TO_SYS;
	else if (!strcmp(op, "exclusive"))
		request = HMM_DMIRROR_EXCLUSIVE;
	buf = calloc(reg->pages, PAGE);
	if (!buf)
		abort();
	err = dmirror(request, reg, buf, a);
	if (err)
		fail(a, err, "ioctl %s on %s", op, dev_path);
	else if (request != HMM_DMIRROR_MIGRATE_TO_SYS)	/* MIGRATE_TO_SYS copies nothing back */
		a->data_ok = data_matches(reg, buf);
	free(buf);
}

/* The kernel's hmm-tests with `-t NAME` per comma-separated NAME; its TAP result lines kept. */
static void selftest(struct answer *a, char *names)
{
	char *argv[2 * MAX_CASES + 2], line[512];
	int fds[2], status, argc = 0;
	FILE *out;
	pid_t pid;

	a->selftest = true;
	a->selftest_exit = -1;
	if (!selftest_path) {
		fail(a, 0, "no hmm-tests in this initramfs (its source was not fetched: `ptinspect vm hmm build`)");
		return;
	}
	if (!names || !*names) {
		fail(a, 0, "hmm-selftest NAME[,NAME...]: which hmm-tests cases (tools/testing/selftests/mm/hmm-tests.c)");
		return;
	}
	argv[argc++] = (char *)selftest_path;
	for (char *name = strtok(names, ","); name; name = strtok(NULL, ",")) {
		if (argc > 2 * MAX_CASES) {
			fail(a, 0, "at most %d cases per request", MAX_CASES);
			return;
		}
		argv[argc++] = "-t";
		argv[argc++] = name;
	}
	argv[argc] = NULL;
	if (pipe(fds)) {
		fail(a, errno, "pipe");
		return;
	}
	pid = fork();
	if (pid < 0) {
		fail(a, errno, "fork");
		return;
	}
	if (!pid) {
		dup2(fds[1], STDOUT_FILENO);
		dup2(fds[1], STDERR_FILENO);
		close(fds[0]);
		close(fds[1]);
		close(dev);
		execv(selftest_path, argv);
		_exit(127);
	}
	close(fds[1]);
	out = fdopen(fds[0], "r");
	while (out && fgets(line, sizeof(line), out)) {
		line[strcspn(line, "\r\n")] = 0;
		free(a->log[a->nlog % LOG_LINES]);
		a->log[a->nlog++ % LOG_LINES] = strdup(line);
		if ((!strncmp(line, "ok ", 3) || !strncmp(line, "not ok ", 7)) && a->nresults < MAX_RESULTS)
			a->results[a->nresults++] = strdup(line);
	}
	if (out)
		fclose(out);
	if (waitpid(pid, &status, 0) != pid) {
		fail(a, errno, "waitpid");
		return;
	}
	a->selftest_exit = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static const char *const OPS[] = { "migrate-dev", "migrate-sys", "exclusive", "readonly", "touch",
				   "snapshot" };

static bool known(const char *op)
{
	for (size_t i = 0; i < sizeof(OPS) / sizeof(OPS[0]); i++)
		if (!strcmp(op, OPS[i]))
			return true;
	return false;
}

static bool seq_ok(const char *seq)
{
	size_t n = strlen(seq);

	return n && n <= SEQ_MAX && strspn(seq, "abcdefghijklmnopqrstuvwxyz"
				      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-") == n;
}

static void render(const struct answer *a)
{
	size_t n = a->reg ? a->reg->pages : 0;
	uint64_t pm[MAX_PAGES];

	if (n && pagemap(a->reg->start, n, pm))
		n = 0;
	out_len = 0;
	put("PTINSPECT-OP {\"seq\":");
	put_string(a->seq);
	put(",\"op\":");
	put_string(a->op);
	put(",\"for\":null,\"status\":\"%s\",\"reason\":", a->ok ? "ok" : "failed");
	put_string(a->ok ? NULL : a->reason);
	put(a->err ? ",\"errno\":%d" : ",\"errno\":null", a->err);
	put(",\"shape\":%s", !a->reg ? "null" : a->reg->thp ? "\"thp\"" : "\"4k\"");
	if (a->reg)
		put(",\"start\":\"%#lx\",\"length\":%zu,\"op_start\":\"%#lx\",\"op_length\":%zu",
		    (unsigned long)a->reg->start, a->reg->pages * PAGE, (unsigned long)a->reg->start,
		    a->reg->pages * PAGE);
	else
		put(",\"start\":null,\"length\":0,\"op_start\":null,\"op_length\":0");
	put(",\"page_size\":%lu", PAGE);
	put(",\"calls\":0,\"anon_huge_kb\":%ld,\"swap_kb\":0,\"pagemap\":[",
	    a->reg ? anon_huge_kb(a->reg->start) : 0);
	for (size_t i = 0; i < n; i++)
		put("%s\"%#llx\"", i ? "," : "", (unsigned long long)pm[i]);
	put("],\"maps\":null,\"pid\":%d,\"device\":", (int)getpid());
	put_string(dev_path);
	put(",\"cpages\":%lld,\"faults\":%lld,\"data_ok\":%s,\"snapshot\":", a->cpages, a->faults,
	    a->data_ok < 0 ? "null" : a->data_ok ? "true" : "false");
	if (a->reg && a->snapshot_ok) {
		put("[");
		for (size_t i = 0; i < a->reg->pages; i++)
			put("%s%u", i ? "," : "", a->snapshot[i]);
		put("]");
	} else {
		put("null");
	}
	put(",\"exclusive\":");
	if (a->reg) {
		put("[");
		for (size_t i = 0; i < a->reg->pages; i++)
			put("%s%s", i ? "," : "", a->exclusive[i] < 0 ? "null" : a->exclusive[i] ? "true" : "false");
		put("]");
	} else {
		put("null");
	}
	put(",\"selftest\":");
	if (a->selftest) {
		put("{\"exit\":%d,\"results\":[", a->selftest_exit);
		for (size_t i = 0; i < a->nresults; i++) {
			put("%s", i ? "," : "");
			put_string(a->results[i]);
		}
		size_t first = a->nlog > LOG_LINES ? a->nlog - LOG_LINES : 0;

		put("],\"log\":[");
		for (size_t i = first; i < a->nlog; i++) {
			put("%s", i > first ? "," : "");
			put_string(a->log[i % LOG_LINES]);
		}
		put("]}");
	} else {
		put("null");
	}
	put(",\"iomem\":");
	put_iomem();
	put("}\n");
	for (size_t done = 0; done < out_len;) {
		ssize_t w = write(STDOUT_FILENO, out + done, out_len - done);

		if (w <= 0)
			break;
		done += (size_t)w;
	}
}

static void answer(char *line)
{
	char *seq = strtok(line, " \t\r\n"), *word = strtok(NULL, " \t\r\n");
	char *arg = strtok(NULL, " \t\r\n"), *end = NULL;
	struct answer a = { .seq = seq, .op = word, .ok = true, .data_ok = -1 };
	const char *op = word && !strncmp(word, "hmm-", 4) ? word + 4 : NULL;

	if (!seq || !seq_ok(seq) || !op) {
		a.seq = seq && seq_ok(seq) ? seq : NULL;
		fail(&a, 0, "bad request: want 'SEQ hmm-prepare [PAGES]', 'SEQ hmm-prepare-thp', "
		     "'SEQ hmm-selftest NAME[,NAME...]' or 'SEQ hmm-OP [START]'");
	} else if (!strcmp(op, "selftest")) {
		selftest(&a, arg);
	} else if (!strcmp(op, "prepare") || !strcmp(op, "prepare-thp")) {
		prepare(&a, arg, !strcmp(op, "prepare-thp"));
	} else if (!known(op)) {
		fail(&a, 0, "unknown operation '%s'; known: hmm-prepare, hmm-prepare-thp, hmm-selftest, hmm-migrate-dev, hmm-migrate-sys,"
		     " hmm-exclusive, hmm-readonly, hmm-touch, hmm-snapshot", word);
	} else {
		uintptr_t start = arg ? strtoull(arg, &end, 16) : 0;

		a.reg = nregions ? &regions[nregions - 1] : NULL;
		if (arg) {
			a.reg = NULL;
			for (size_t i = 0; i < nregions && !*end; i++)
				if (regions[i].start == start)
					a.reg = &regions[i];
		}
		if (!a.reg)
			fail(&a, 0, arg ? "no prepared region starts at '%s'" : "no region prepared yet: "
			     "'SEQ hmm-prepare' first%s", arg ? arg : "");
		else
			run(&a, op);
	}
	snapshot(&a);
	render(&a);
	for (size_t i = 0; i < a.nresults; i++)
		free(a.results[i]);
	for (size_t i = 0; i < LOG_LINES; i++)
		free(a.log[i]);
}

int main(int argc, char **argv)
{
	const char *fifo = NULL;
	char line[256];
	FILE *in;
	int fd;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--serve") && i + 1 < argc) {
			fifo = argv[++i];
		} else if (!strcmp(argv[i], "--device") && i + 1 < argc) {
			dev_path = argv[++i];
		} else if (!strcmp(argv[i], "--selftest") && i + 1 < argc) {
			selftest_path = argv[++i];
		} else {
			fprintf(stderr, "usage: %s --serve FIFO [--device DEV] [--selftest HMM_TESTS]\n", argv[0]);
			return 2;
		}
	}
	if (!fifo) {
		fprintf(stderr, "usage: %s --serve FIFO [--device DEV] [--selftest HMM_TESTS]\n", argv[0]);
		return 2;
	}
	dev = open(dev_path, O_RDWR | O_CLOEXEC);
	if (dev < 0) {
		fprintf(stderr, "hmmop: open %s: %s\n", dev_path, strerror(errno));
		return 1;
	}
	unlink(fifo);
	if (mkfifo(fifo, 0600)) {
		fprintf(stderr, "hmmop: mkfifo %s: %s\n", fifo, strerror(errno));
		return 1;
	}
	/* O_RDWR: a writer closing the FIFO is no end of input. */
	fd = open(fifo, O_RDWR | O_CLOEXEC);
	in = fd < 0 ? NULL : fdopen(fd, "r");
	if (!in) {
		fprintf(stderr, "hmmop: open %s: %s\n", fifo, strerror(errno));
		return 1;
	}
	while (fgets(line, sizeof(line), in))
		answer(line);
	return 0;
}
