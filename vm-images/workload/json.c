// SPDX-License-Identifier: GPL-2.0-only
/*
 * A minimal JSON writer into a growing buffer. The manifest is built whole
 * in memory and written to the console in one go, so that nothing the
 * workload prints can interleave with it.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "workload.h"

#define MAX_DEPTH 16

struct json {
	char *buf;
	size_t len, cap;
	int depth;
	int count[MAX_DEPTH]; /* values emitted so far in each open container */
	int after_key;        /* the next value completes a "key": pair */
	int newline;          /* break the line before the next value */
};

struct json *json_new(void)
{
	struct json *j = calloc(1, sizeof(*j));

	if (!j)
		abort();
	return j;
}

static void put(struct json *j, const char *s, size_t n)
{
	if (j->len + n + 1 > j->cap) {
		size_t cap = j->cap ? j->cap : 65536;

		while (j->len + n + 1 > cap)
			cap *= 2;
		j->buf = realloc(j->buf, cap);
		if (!j->buf)
			abort();
		j->cap = cap;
	}
	memcpy(j->buf + j->len, s, n);
	j->len += n;
	j->buf[j->len] = '\0';
}

static void putf(struct json *j, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void putf(struct json *j, const char *fmt, ...)
{
	char tmp[64];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
	va_end(ap);
	put(j, tmp, (size_t)n);
}

/* Emit the separator a new value needs in its container. */
static void value_prefix(struct json *j)
{
	if (j->after_key) {
		j->after_key = 0;
		return;
	}
	if (j->depth > 0 && j->count[j->depth - 1]++ > 0)
		put(j, ",", 1);
	if (j->newline) {
		put(j, "\n", 1);
		j->newline = 0;
	}
}

static void open_container(struct json *j, char c)
{
	value_prefix(j);
	put(j, &c, 1);
	if (j->depth >= MAX_DEPTH)
		abort();
	j->count[j->depth++] = 0;
}

void json_begin_object(struct json *j) { open_container(j, '{'); }
void json_begin_array(struct json *j) { open_container(j, '['); }

void json_end_object(struct json *j)
{
	j->depth--;
	put(j, "}", 1);
}

void json_end_array(struct json *j)
{
	j->depth--;
	put(j, "]", 1);
}

static void put_quoted(struct json *j, const char *s)
{
	put(j, "\"", 1);
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;

		if (ch == '"' || ch == '\\') {
			char esc[2] = { '\\', (char)ch };

			put(j, esc, 2);
		} else if (ch < 0x20) {
			putf(j, "\\u%04x", ch);
		} else {
			put(j, s, 1);
		}
	}
	put(j, "\"", 1);
}

void json_key(struct json *j, const char *key)
{
	value_prefix(j);
	put_quoted(j, key);
	put(j, ":", 1);
	j->after_key = 1;
}

void json_string(struct json *j, const char *s)
{
	if (!s) {
		json_null(j);
		return;
	}
	value_prefix(j);
	put_quoted(j, s);
}

void json_int(struct json *j, long long v)
{
	value_prefix(j);
	putf(j, "%lld", v);
}

/* 64-bit values are written as "0x..." strings: JSON numbers lose bits. */
void json_hex(struct json *j, uint64_t v)
{
	value_prefix(j);
	putf(j, "\"0x%llx\"", (unsigned long long)v);
}

void json_bool(struct json *j, bool v)
{
	value_prefix(j);
	put(j, v ? "true" : "false", v ? 4 : 5);
}

void json_null(struct json *j)
{
	value_prefix(j);
	put(j, "null", 4);
}

/* A line break before the next value (or now, at the top level). */
void json_newline(struct json *j)
{
	if (j->depth == 0)
		put(j, "\n", 1);
	else
		j->newline = 1;
}

const char *json_text(const struct json *j, size_t *len)
{
	*len = j->len;
	return j->buf;
}

void json_free(struct json *j)
{
	free(j->buf);
	free(j);
}
