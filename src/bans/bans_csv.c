/* Pure helpers of the bans module (bans.h): type names, validation and canonical forms of
 * `who`, time parsing and formatting, and the bootstrap CSV parser. No file system, no
 * SQLite, no locks: the fuzz target (fuzz/fuzz_bancsv.c) drives all of it. */
#include "bans/bans_int.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "core/alloc.h"
#include "core/hash.h"
#include "core/list.h"
#include "core/log.h"

static const char *const as_names[BANS__COUNT] = {
	[BANS_CLIENTID] = "clientid",
	[BANS_USERNAME] = "username",
	[BANS_PEERHOST] = "peerhost",
	[BANS_CLIENTID_RE] = "clientid_re",
	[BANS_USERNAME_RE] = "username_re",
	[BANS_PEERHOST_NET] = "peerhost_net",
};

const char *bans_as_str(enum bans_as as)
{
	return (unsigned)as < BANS__COUNT ? as_names[as] : "?";
}

bool bans_as_parse(const char *s, enum bans_as *out)
{
	for (int i = 0; i < BANS__COUNT; i++) {
		if (strcmp(s, as_names[i]) == 0) {
			*out = (enum bans_as)i;
			return true;
		}
	}
	return false;
}

/* ---- text helpers ---- */

void bans_escape(struct buf *out, const void *s, size_t n)
{
	const unsigned char *p = s;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			buf_printf(out, "\\x%02x", p[i]);
		else if (p[i] == '\\')
			buf_append(out, "\\\\", 2);
		else
			buf_append(out, &p[i], 1);
	}
}

const char *bans_safe(const char *s, size_t n, char *buf, size_t buflen)
{
	struct buf b = { 0 };
	bans_escape(&b, s, n);
	size_t k = b.len < buflen - 1 ? b.len : buflen - 1;
	if (k)
		memcpy(buf, b.data, k);
	buf[k] = '\0';
	buf_free(&b);
	return buf;
}

void bans_rec_clear(struct ban_rec *r)
{
	free(r->who);
	free(r->by);
	free(r->reason);
	memset(r, 0, sizeof *r);
}

void bans_recs_free(struct ban_rec *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		bans_rec_clear(&v[i]);
	free(v);
}

void bans_rec_copy(struct ban_rec *dst, const struct ban_rec *src)
{
	dst->as = src->as;
	dst->who = xstrdup(src->who);
	dst->by = xstrdup(src->by ? src->by : "");
	dst->reason = xstrdup(src->reason ? src->reason : "");
	dst->at = src->at;
	dst->until = src->until;
}

/* ---- who ---- */

static bool canon_ip(const char *s, char **out)
{
	unsigned char a[16];
	char txt[INET6_ADDRSTRLEN];
	if (inet_pton(AF_INET, s, a) == 1) {
		inet_ntop(AF_INET, a, txt, sizeof txt);
	} else if (inet_pton(AF_INET6, s, a) == 1) {
		if (IN6_IS_ADDR_V4MAPPED((struct in6_addr *)a))
			inet_ntop(AF_INET, a + 12, txt, sizeof txt); /* peers are compared as IPv4 */
		else
			inet_ntop(AF_INET6, a, txt, sizeof txt);
	} else {
		return false;
	}
	*out = xstrdup(txt);
	return true;
}

bool bans_who_canon(enum bans_as as, const char *who, char **canon, char *err, size_t errlen)
{
	size_t len = strlen(who);
	if (len == 0) {
		snprintf(err, errlen, "empty who");
		return false;
	}
	if (len > BANS_WHO_MAX) {
		snprintf(err, errlen, "who longer than %d bytes", BANS_WHO_MAX);
		return false;
	}
	switch (as) {
	case BANS_CLIENTID:
	case BANS_USERNAME:
		*canon = xstrdup(who);
		return true;
	case BANS_PEERHOST:
		if (!canon_ip(who, canon)) {
			snprintf(err, errlen, "peerhost: not an IPv4 or IPv6 address");
			return false;
		}
		return true;
	case BANS_CLIENTID_RE:
	case BANS_USERNAME_RE: {
		struct relin *re;
		if (!relin_compile(who, &re, err, errlen))
			return false;
		relin_free(re);
		*canon = xstrdup(who);
		return true;
	}
	case BANS_PEERHOST_NET: {
		struct cfg_cidr c;
		if (!cfg_parse_cidr(who, &c)) {
			snprintf(err, errlen, "peerhost_net: not a CIDR block (10.0.0.0/8, 2001:db8::/32)");
			return false;
		}
		char txt[INET6_ADDRSTRLEN];
		inet_ntop(c.family, c.addr, txt, sizeof txt);
		*canon = xasprintf("%s/%u", txt, (unsigned)c.prefix);
		return true;
	}
	default:
		snprintf(err, errlen, "unknown ban type");
		return false;
	}
}

/* ---- time ---- */

/* Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d)
{
	y -= m <= 2;
	int64_t era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (int64_t)doe - 719468;
}

static bool digits(const char *s, int n, unsigned *out)
{
	unsigned v = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*out = v;
	return true;
}

/* Largest accepted time: 9999-12-31T23:59:59Z. */
#define BANS_TIME_MAX 253402300799LL

bool bans_parse_time(const char *s, int64_t *out)
{
	size_t len = strlen(s);
	if (len == 0)
		return false;
	if (strspn(s, "0123456789") == len) {
		if (len > 12)
			return false;
		int64_t v = strtoll(s, NULL, 10);
		if (v > BANS_TIME_MAX)
			return false;
		*out = v;
		return true;
	}
	/* YYYY-MM-DDTHH:MM:SS[.frac](Z|+HH:MM|-HH:MM) */
	unsigned y, mo, d, h, mi, sec;
	if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
	    !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') || !digits(s + 11, 2, &h) ||
	    s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' || !digits(s + 17, 2, &sec))
		return false;
	static const unsigned mdays[12] = { 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || sec > 60)
		return false;
	bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	if (mo == 2 && d == 29 && !leap)
		return false;
	if (sec == 60)
		sec = 59; /* a leap second: the same second as far as bans care */
	const char *p = s + 19;
	if (*p == '.') {
		p++;
		if (*p < '0' || *p > '9')
			return false;
		while (*p >= '0' && *p <= '9')
			p++;
	}
	int64_t off = 0;
	if (*p == 'Z' || *p == 'z') {
		p++;
	} else if (*p == '+' || *p == '-') {
		unsigned oh, om;
		if (!digits(p + 1, 2, &oh) || p[3] != ':' || !digits(p + 4, 2, &om) || oh > 23 || om > 59)
			return false;
		off = (int64_t)(oh * 3600 + om * 60) * (*p == '-' ? -1 : 1);
		p += 6;
	} else {
		return false;
	}
	if (*p)
		return false;
	int64_t t = days_from_civil(y, mo, d) * 86400 + h * 3600 + mi * 60 + sec - off;
	if (t < 0 || t > BANS_TIME_MAX)
		return false;
	*out = t;
	return true;
}

void bans_format_time(int64_t t, bool forever_ok, char *out, size_t outlen)
{
	if (forever_ok && t == BANS_FOREVER) {
		snprintf(out, outlen, "infinity");
		return;
	}
	time_t tt = (time_t)t;
	struct tm tm;
	if (!gmtime_r(&tt, &tm) || !strftime(out, outlen, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, outlen, "%lld", (long long)t);
}

/* ---- CSV ---- */

enum { COL_AS, COL_WHO, COL_BY, COL_REASON, COL_AT, COL_UNTIL, COL__COUNT };
static const char *const col_names[COL__COUNT] = { "as", "who", "by", "reason", "at", "until" };

struct csv {
	const char *p, *end;
	const char *file;
	int line;          /* line of the next character */
	char *err;
	size_t errlen;
};

static bool csv_fail(struct csv *c, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool csv_fail(struct csv *c, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(c->err, c->errlen, "%s:%d: %s", c->file, line, msg);
	return false;
}

struct row {
	char **f;
	size_t n, cap;
	int line;
};

static void row_clear(struct row *r)
{
	for (size_t i = 0; i < r->n; i++)
		free(r->f[i]);
	r->n = 0;
}

static void row_push(struct row *r, struct buf *field)
{
	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 8;
		r->f = xrealloc(r->f, r->cap * sizeof *r->f);
	}
	buf_append(field, "", 1);
	r->f[r->n++] = (char *)field->data;
	*field = (struct buf){ 0 };
}

static bool is_blank(char ch)
{
	return ch == ' ' || ch == '\t';
}

/* Read one record into r. Returns false at the end of input (r->n == 0) or on an error
 * (c->err set, r->n != 0 or err[0]). */
static bool csv_record(struct csv *c, struct row *r)
{
	row_clear(r);
	struct buf field = { 0 };
	r->line = c->line;
	if (c->p >= c->end)
		return false;
	for (;;) {
		/* one field */
		while (c->p < c->end && is_blank(*c->p))
			c->p++;
		if (c->p < c->end && *c->p == '"') {
			int qline = c->line;
			c->p++;
			for (;;) {
				if (c->p >= c->end) {
					buf_free(&field);
					return csv_fail(c, qline, "unterminated quoted field");
				}
				char ch = *c->p++;
				if (ch == '"') {
					if (c->p < c->end && *c->p == '"') {
						buf_append(&field, "\"", 1);
						c->p++;
						continue;
					}
					break;
				}
				if (ch == '\0') {
					buf_free(&field);
					return csv_fail(c, c->line, "NUL byte");
				}
				if (ch == '\n')
					c->line++;
				buf_append(&field, &ch, 1);
			}
			while (c->p < c->end && is_blank(*c->p))
				c->p++;
			if (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
				buf_free(&field);
				return csv_fail(c, c->line, "unexpected text after a quoted field");
			}
		} else {
			const char *s = c->p;
			while (c->p < c->end && *c->p != ',' && *c->p != '\n' && *c->p != '\r') {
				if (*c->p == '\0') {
					buf_free(&field);
					return csv_fail(c, c->line, "NUL byte");
				}
				if (*c->p == '"') {
					buf_free(&field);
					return csv_fail(c, c->line, "a quote inside an unquoted field (quote the whole field)");
				}
				c->p++;
			}
			const char *e = c->p;
			while (e > s && is_blank(e[-1]))
				e--;
			buf_append(&field, s, (size_t)(e - s));
		}
		row_push(r, &field);
		if (c->p < c->end && *c->p == ',') {
			c->p++;
			continue;
		}
		/* end of record */
		if (c->p < c->end && *c->p == '\r')
			c->p++;
		if (c->p < c->end) {
			if (*c->p != '\n')
				return csv_fail(c, c->line, "carriage return inside a line");
			c->p++;
		}
		c->line++;
		return true;
	}
}

static bool row_blank(const struct row *r)
{
	return r->n == 1 && r->f[0][0] == '\0';
}

/* A seen (as, who) for duplicate detection. */
struct seen {
	struct hmap_node node;
	enum bans_as as;
	const char *who;
	int line;
};

static uint64_t seen_hash(enum bans_as as, const char *who)
{
	return hash_bytes(who, strlen(who)) ^ ((uint64_t)as * 0x9e3779b97f4a7c15ULL);
}

bool bans_csv_parse(const char *text, size_t len, const char *file, int64_t now, struct ban_rec **out, size_t *n,
		    char *err, size_t errlen)
{
	struct csv c = { .p = text, .end = text + len, .file = file ? file : "(bootstrap)", .line = 1, .err = err,
			 .errlen = errlen };
	struct row r = { 0 };
	struct ban_rec *v = NULL;
	size_t nv = 0, cap = 0;
	struct hmap seen;
	hmap_init(&seen);
	int col[COL__COUNT];
	bool ok = false;
	err[0] = '\0';
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		c.p += 3; /* UTF-8 byte order mark */

	/* header: the first non-blank record */
	for (;;) {
		if (!csv_record(&c, &r)) {
			if (!err[0])
				csv_fail(&c, c.line, "no header line (as,who[,by,reason,at,until])");
			goto out;
		}
		if (!row_blank(&r))
			break;
	}
	for (int k = 0; k < COL__COUNT; k++)
		col[k] = -1;
	for (size_t i = 0; i < r.n; i++) {
		int k = 0;
		while (k < COL__COUNT && strcasecmp(r.f[i], col_names[k]) != 0)
			k++;
		if (k == COL__COUNT) {
			char safe[64];
			csv_fail(&c, r.line, "unknown column \"%s\" (known: as, who, by, reason, at, until)",
				 bans_safe(r.f[i], strlen(r.f[i]), safe, sizeof safe));
			goto out;
		}
		if (col[k] >= 0) {
			csv_fail(&c, r.line, "column \"%s\" appears twice", col_names[k]);
			goto out;
		}
		col[k] = (int)i;
	}
	if (col[COL_AS] < 0 || col[COL_WHO] < 0) {
		csv_fail(&c, r.line, "the header must name the columns \"as\" and \"who\"");
		goto out;
	}
	size_t ncols = r.n;

	for (;;) {
		if (!csv_record(&c, &r)) {
			if (err[0])
				goto out;
			break;
		}
		if (row_blank(&r))
			continue;
		if (r.n != ncols) {
			csv_fail(&c, r.line, "%zu fields, the header has %zu", r.n, ncols);
			goto out;
		}
		struct ban_rec b = { 0 };
		const char *as = r.f[col[COL_AS]];
		if (!bans_as_parse(as, &b.as)) {
			char safe[64];
			csv_fail(&c, r.line,
				 "as: unknown type \"%s\" (clientid, username, peerhost, clientid_re, username_re, "
				 "peerhost_net)",
				 bans_safe(as, strlen(as), safe, sizeof safe));
			goto out;
		}
		char why[300];
		if (!bans_who_canon(b.as, r.f[col[COL_WHO]], &b.who, why, sizeof why)) {
			csv_fail(&c, r.line, "who: %s", why);
			goto out;
		}
		const char *by = col[COL_BY] >= 0 ? r.f[col[COL_BY]] : "";
		const char *reason = col[COL_REASON] >= 0 ? r.f[col[COL_REASON]] : "";
		const char *at = col[COL_AT] >= 0 ? r.f[col[COL_AT]] : "";
		const char *until = col[COL_UNTIL] >= 0 ? r.f[col[COL_UNTIL]] : "";
		if (strlen(by) > BANS_BY_MAX || strlen(reason) > BANS_REASON_MAX) {
			free(b.who);
			csv_fail(&c, r.line, "%s longer than %d bytes", strlen(by) > BANS_BY_MAX ? "by" : "reason",
				 strlen(by) > BANS_BY_MAX ? BANS_BY_MAX : BANS_REASON_MAX);
			goto out;
		}
		b.at = now;
		b.until = BANS_FOREVER;
		if (*at && !bans_parse_time(at, &b.at)) {
			free(b.who);
			csv_fail(&c, r.line, "at: expected epoch seconds or an RFC 3339 time (2026-12-01T00:00:00Z)");
			goto out;
		}
		if (*until && strcmp(until, "infinity") != 0 && !bans_parse_time(until, &b.until)) {
			free(b.who);
			csv_fail(&c, r.line,
				 "until: expected epoch seconds, an RFC 3339 time (2026-12-01T00:00:00Z) or infinity");
			goto out;
		}
		if (*until && strcmp(until, "infinity") != 0 && b.until == BANS_FOREVER)
			b.until = 1; /* the epoch itself: long expired, not "forever" */
		uint64_t h = seen_hash(b.as, b.who);
		struct seen *dup = NULL;
		hmap_for_hash(&seen, h, it) {
			struct seen *s = container_of(it, struct seen, node);
			if (s->as == b.as && strcmp(s->who, b.who) == 0)
				dup = s;
		}
		if (dup) {
			char safe[128];
			csv_fail(&c, r.line, "duplicate ban %s %s (first on line %d)", bans_as_str(b.as),
				 bans_safe(b.who, strlen(b.who), safe, sizeof safe), dup->line);
			free(b.who);
			goto out;
		}
		if (bans_expired(&b, now)) {
			char safe[128], t[40];
			bans_format_time(b.until, true, t, sizeof t);
			log_warn("%s:%d: ban %s %s expired at %s: skipped", c.file, r.line, bans_as_str(b.as),
				 bans_safe(b.who, strlen(b.who), safe, sizeof safe), t);
			free(b.who);
			continue;
		}
		b.by = xstrdup(*by ? by : BANS_DEFAULT_BY_FILE);
		b.reason = xstrdup(reason);
		if (nv == cap) {
			cap = cap ? cap * 2 : 16;
			v = xrealloc(v, cap * sizeof *v);
		}
		v[nv++] = b;
		struct seen *s = xcalloc(1, sizeof *s);
		s->as = b.as;
		s->who = v[nv - 1].who;
		s->line = r.line;
		hmap_insert(&seen, &s->node, h);
		/* v may move on realloc: who pointers are heap strings owned by the records, stable */
	}
	ok = true;
out:
	for (struct hmap_node *it = hmap_steal(&seen), *next; it; it = next) {
		next = it->next;
		free(container_of(it, struct seen, node));
	}
	row_clear(&r);
	free(r.f);
	if (!ok) {
		bans_recs_free(v, nv);
		return false;
	}
	*out = v;
	*n = nv;
	return true;
}
