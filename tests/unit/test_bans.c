/* Unit tests for banned clients (src/bans/): type names, canonical `who`, times, the
 * bootstrap CSV parser (with the line numbers of its errors), matching of every ban type,
 * expiry and the sweeper, the SQLite store across reopen, bootstrap import rules, the
 * `bans ...` commands and flapping detection. Each store test works in its own mkdtemp
 * directory. */
#include <arpa/inet.h>
#include <ftw.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <regex.h>

#include "bans/bans.c"
#include "bans/bans_csv.c"
#include "bans/flapping.c"
#include "core/log.h"
#include "unit.h"

/* ---- helpers ---- */

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb;
	(void)flag;
	(void)ftw;
	return remove(path);
}

struct tmp {
	char root[64];
	char data[96];
	char csv[128];
	struct config cfg;
};

static void tmp_make(struct tmp *t)
{
	memset(t, 0, sizeof *t);
	snprintf(t->root, sizeof t->root, "/tmp/bw-bans-test-XXXXXX");
	if (!mkdtemp(t->root))
		abort();
	snprintf(t->data, sizeof t->data, "%s/data", t->root);
	snprintf(t->csv, sizeof t->csv, "%s/bans.csv", t->root);
	t->cfg.data_dir = t->data;
	t->cfg.flapping.window_time_ms = 60000;
	t->cfg.flapping.max_count = 15;
	t->cfg.flapping.ban_time_ms = 300000;
}

static void tmp_remove(struct tmp *t)
{
	nftw(t->root, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
}

static struct bans *open_ok(struct tmp *t)
{
	char err[700] = "";
	struct bans *b = bans_open(&t->cfg, NULL, 2, err, sizeof err);
	if (!b)
		fprintf(stderr, "bans_open: %s\n", err);
	return b;
}

static struct sockaddr_storage addr(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
	if (inet_pton(AF_INET, ip, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(40000);
	} else if (inet_pton(AF_INET6, ip, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(40000);
	} else {
		abort();
	}
	return ss;
}

static enum bw_err add(struct bans *b, enum bans_as as, const char *who, int64_t until, const char *reason)
{
	char *canon = NULL, err[300];
	if (!bans_who_canon(as, who, &canon, err, sizeof err)) {
		fprintf(stderr, "canon %s: %s\n", who, err);
		return BW_ERR_INVALID;
	}
	struct ban_rec r = { .as = as, .who = canon, .by = (char *)"test", .reason = (char *)reason,
			     .at = clock_wall_s(), .until = until };
	enum bw_err e = bans_add(b, &r, err, sizeof err);
	free(canon);
	return e;
}

/* Is a client (any field may be NULL) banned? */
static bool banned(struct bans *b, const char *cid, const char *user, const char *ip)
{
	struct sockaddr_storage ss;
	if (ip)
		ss = addr(ip);
	char why[300];
	return bans_check(b, cid, user, user ? strlen(user) : 0, ip ? (struct sockaddr *)&ss : NULL, why, sizeof why);
}

/* Run a control command; returns its status, output in out (caller frees). */
static bool ctl(struct bans *b, struct buf *out, const char *a0, ...)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = (char *)"bans";
	va_list ap;
	va_start(ap, a0);
	for (const char *a = a0; a && argc < 31; a = va_arg(ap, const char *))
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	out->len = 0;
	bool ok = bans_ctl(b, argc, argv, out);
	buf_append(out, "", 1);
	return ok;
}

static bool contains(const struct buf *out, const char *s)
{
	return out->data && strstr((const char *)out->data, s) != NULL;
}

/* Make the stored ban for (as, who) expired (as if time had passed), in memory and table. */
static void expire(struct bans *b, enum bans_as as, const char *who)
{
	int64_t then = clock_wall_s() - 1;
	pthread_rwlock_wrlock(&b->lock);
	struct bent *e = find_locked(b, as, who, strlen(who));
	if (e)
		e->r.until = then;
	pthread_rwlock_unlock(&b->lock);
	char *sql = sqlite3_mprintf("UPDATE bans SET until = %lld WHERE kind = %Q AND who = %Q", (long long)then,
				    bans_as_str(as), who);
	CHECK(sqlite3_exec(b->db, sql, NULL, NULL, NULL) == SQLITE_OK);
	CHECK_EQ_INT(sqlite3_changes(b->db), 1);
	sqlite3_free(sql);
}

/* ---- names, who, times ---- */

TEST(as_names_round_trip)
{
	for (int i = 0; i < BANS__COUNT; i++) {
		enum bans_as as = BANS__COUNT;
		CHECK(bans_as_parse(bans_as_str((enum bans_as)i), &as));
		CHECK_EQ_INT(as, i);
	}
	enum bans_as as;
	CHECK(!bans_as_parse("ClientID", &as));
	CHECK(!bans_as_parse("peerhost_re", &as));
	CHECK(!bans_as_parse("", &as));
}

static void canon_is(enum bans_as as, const char *who, const char *want)
{
	char *c = NULL, err[300] = "";
	bool ok = bans_who_canon(as, who, &c, err, sizeof err);
	CHECK(ok);
	if (ok)
		CHECK_STR(c, want);
	else
		fprintf(stderr, "  %s: %s\n", who, err);
	free(c);
}

static void canon_bad(enum bans_as as, const char *who, const char *msg)
{
	char *c = NULL, err[300] = "";
	CHECK(!bans_who_canon(as, who, &c, err, sizeof err));
	CHECK(c == NULL);
	if (!strstr(err, msg))
		fprintf(stderr, "  %s: error \"%s\" lacks \"%s\"\n", who, err, msg);
	CHECK(strstr(err, msg) != NULL);
}

TEST(who_canonical_forms)
{
	canon_is(BANS_CLIENTID, "dev 1", "dev 1");
	canon_is(BANS_USERNAME, "Alice", "Alice");
	canon_is(BANS_PEERHOST, "10.0.0.1", "10.0.0.1");
	canon_is(BANS_PEERHOST, "2001:DB8:0:0::1", "2001:db8::1");
	canon_is(BANS_PEERHOST, "::ffff:192.0.2.7", "192.0.2.7");
	canon_is(BANS_PEERHOST_NET, "10.1.2.3/8", "10.0.0.0/8");
	canon_is(BANS_PEERHOST_NET, "192.168.1.9", "192.168.1.9/32");
	canon_is(BANS_PEERHOST_NET, "2001:db8:ffff::/32", "2001:db8::/32");
	canon_is(BANS_CLIENTID_RE, "^dev-[0-9]{1,4}$", "^dev-[0-9]{1,4}$");
	canon_is(BANS_USERNAME_RE, "[[:alpha:]]+{2}", "[[:alpha:]]+{2}");
}

TEST(who_invalid_values_are_refused_with_a_reason)
{
	canon_bad(BANS_CLIENTID, "", "empty");
	canon_bad(BANS_PEERHOST, "10.0.0.256", "not an IPv4 or IPv6 address");
	canon_bad(BANS_PEERHOST, "localhost", "not an IPv4 or IPv6 address");
	canon_bad(BANS_PEERHOST_NET, "10.0.0.0/33", "not a CIDR block");
	canon_bad(BANS_PEERHOST_NET, "2001:db8::/129", "not a CIDR block");
	canon_bad(BANS_PEERHOST_NET, "10.0.0.0/", "not a CIDR block");
	canon_bad(BANS_CLIENTID_RE, "(unclosed", "invalid regular expression");
	canon_bad(BANS_USERNAME_RE, "a{2,1}", "invalid regular expression");
	canon_bad(BANS_CLIENTID_RE, "a{256}", "above 255");
	canon_bad(BANS_CLIENTID_RE, "(a{200}){200}", "too costly");
	canon_bad(BANS_CLIENTID_RE, "((a{200}){2}+)+", "too costly"); /* "+" doubles in glibc */
	canon_bad(BANS_CLIENTID_RE, "h++++++", "in a row");
	canon_bad(BANS_CLIENTID_RE, "x){8800,}", "above 255"); /* ")" alone is a literal to glibc */
	canon_is(BANS_CLIENTID_RE, "a+?b+?c{1}{2}", "a+?b+?c{1}{2}");
	canon_bad(BANS_USERNAME_RE, "((((((((((((((((x+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)+)", "too costly");
	canon_bad(BANS_CLIENTID_RE, "(a)\\1", "back-references");
	/* a repeated operand that can match the empty string: glibc's epsilon closures explode */
	canon_bad(BANS_CLIENTID_RE, "(a|||||||||||b){,4}+", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "(a?|b?|c?|d?|e?|f?|g?|h?|i?|j?){4}+", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "(|a|)+{22}", "can match the empty string"); /* 16 s natively */
	canon_bad(BANS_CLIENTID_RE, "((|a|){22})*", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "((){,3}[ab]?){9}{9}", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "(x?){2}", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "a**", "can match the empty string");
	canon_bad(BANS_CLIENTID_RE, "(a*b?){1,}", "can match the empty string");
	/* made optional, or copied once, it is fine */
	canon_is(BANS_CLIENTID_RE, "(a*|b?)?c", "(a*|b?)?c");
	canon_is(BANS_CLIENTID_RE, ".*?x", ".*?x");
	canon_is(BANS_CLIENTID_RE, "(x?y){20}+", "(x?y){20}+");
	canon_is(BANS_CLIENTID_RE, "(a?){1}(b*){0,1}", "(a?){1}(b*){0,1}");
	/* an anchor in a repeated group: glibc copies closures per constraint path (minutes) */
	canon_bad(BANS_CLIENTID_RE, "((^|$){10})+", "repeating an anchor");
	canon_bad(BANS_CLIENTID_RE, "(a|^){2}", "repeating an anchor");
	canon_bad(BANS_CLIENTID_RE, "(a|^)?b", "repeating an anchor");
	canon_bad(BANS_CLIENTID_RE, "x$*", "repeating an anchor");
	canon_bad(BANS_CLIENTID_RE, "((\\b|\\B){10})+", "backslash escapes"); /* refused before regcomp */
	canon_bad(BANS_CLIENTID_RE, "(a|||||||||||b){\\,4}+", "backslash escapes"); /* glibc reads {\,4} as {,4} */
	canon_is(BANS_CLIENTID_RE, "(^|/)dev(/|$)", "(^|/)dev(/|$)");
	canon_is(BANS_CLIENTID_RE, "^(a|b)+$|^c$", "^(a|b)+$|^c$");
	canon_is(BANS_CLIENTID_RE, "[$^]{2}\\^+", "[$^]{2}\\^+");
	canon_is(BANS_CLIENTID_RE, "a+b+c+d+e+f+g+h+i+j+k+l+m+n+o+p+", "a+b+c+d+e+f+g+h+i+j+k+l+m+n+o+p+");
	canon_is(BANS_CLIENTID_RE, "^(dev|test)-[0-9]{4}-[a-f0-9]{8}$", "^(dev|test)-[0-9]{4}-[a-f0-9]{8}$");
	canon_is(BANS_CLIENTID_RE, "\\(x\\)", "\\(x\\)");
	char big[BANS_RE_MAX + 2];
	memset(big, 'a', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	canon_bad(BANS_CLIENTID_RE, big, "longer than");
	/* braces inside a bracket expression are literal, not repetitions */
	canon_is(BANS_CLIENTID_RE, "[{999}]", "[{999}]");
}

TEST(times_epoch_and_rfc3339)
{
	int64_t t = -1;
	CHECK(bans_parse_time("1767225600", &t));
	CHECK_EQ_INT(t, 1767225600);
	CHECK(bans_parse_time("2026-01-01T00:00:00Z", &t));
	CHECK_EQ_INT(t, 1767225600);
	CHECK(bans_parse_time("2026-01-01t01:30:00+01:30", &t));
	CHECK_EQ_INT(t, 1767225600);
	CHECK(bans_parse_time("2025-12-31 22:00:00.123456-02:00", &t));
	CHECK_EQ_INT(t, 1767225600);
	CHECK(bans_parse_time("2024-02-29T12:00:00Z", &t));
	CHECK(bans_parse_time("1970-01-01T00:00:00Z", &t));
	CHECK_EQ_INT(t, 0);
	CHECK(!bans_parse_time("2025-02-29T12:00:00Z", &t));
	CHECK(!bans_parse_time("2026-04-31T00:00:00Z", &t));
	CHECK(!bans_parse_time("2026-01-01T24:00:00Z", &t));
	CHECK(!bans_parse_time("2026-01-01T00:00:00", &t));  /* no offset */
	CHECK(!bans_parse_time("2026-01-01", &t));
	CHECK(!bans_parse_time("2026-01-01T00:00:00Zjunk", &t));
	CHECK(!bans_parse_time("-5", &t));
	CHECK(!bans_parse_time("", &t));
	CHECK(!bans_parse_time("99999999999999", &t));
	char buf[40];
	bans_format_time(1767225600, true, buf, sizeof buf);
	CHECK_STR(buf, "2026-01-01T00:00:00Z");
	bans_format_time(BANS_FOREVER, true, buf, sizeof buf);
	CHECK_STR(buf, "infinity");
}

/* ---- patterns ---- */

static bool glibc_match(const char *pattern, const char *s, size_t len)
{
	regex_t re;
	if (regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) != 0)
		abort();
	regmatch_t m[1] = { { 0, (regoff_t)len } };
	bool ok = regexec(&re, s, 1, m, REG_STARTEND) == 0;
	regfree(&re);
	return ok;
}

TEST(patterns_match_like_glibc)
{
	static const char *const patterns[] = {
		"^dev-[0-9]{4}$", "evil", "a.*b", "^$", "$", "^", "x|", "(|a)b", "a)", "()", "a*?", "a{2}{2}",
		"a{,2}b", "a{2,}", "a{1,3}c", "[]a]", "[^]a]+", "[a-]", "[[:digit:][:upper:]]+$", "[^[:alpha:]]",
		"\\.\\*", "a$b", "^(ab|cd)+$", "(a|b)*abb", ".", "^.{3}$", "[%--]", "((a))\\)", "x?y?z?$",
		"^(a|ab)(c|bcd)(d*)$", "[a-c-e]", "A", "[[:space:]]", "}", "a|b|c|", "((x{2}){2}){2}",
	};
	static const char *const subjects[] = {
		"", "dev-1234", "dev-12345", "xevilx", "ab", "a-b", "aaab", "b", "a)", ")", "aaaa", "aab", "c",
		"]", "x]y", "-", "ABC9", "9", "!", ".*", "a.*", "acdb", "abcd", "abb", "babb", "abc", "abcdd",
		"e", "d", "a", " ", "\t", "x", "xxxxxxxx", "xxxxxxx", "}",
	};
	for (size_t i = 0; i < sizeof patterns / sizeof patterns[0]; i++) {
		struct relin *re;
		char err[300];
		regex_t probe;
		if (regcomp(&probe, patterns[i], REG_EXTENDED | REG_NOSUB) != 0)
			continue; /* not ERE at all: nothing to compare */
		regfree(&probe);
		if (!relin_compile(patterns[i], &re, err, sizeof err)) {
			fprintf(stderr, "  pattern %s refused: %s\n", patterns[i], err);
			CHECK(strcmp(patterns[i], "[a-c-e]") == 0); /* refusing is allowed; report others */
			continue;
		}
		for (size_t k = 0; k < sizeof subjects / sizeof subjects[0]; k++) {
			size_t len = strlen(subjects[k]);
			bool a = relin_match(re, subjects[k], len), b = glibc_match(patterns[i], subjects[k], len);
			if (a != b)
				fprintf(stderr, "  pattern %s subject \"%s\": %d, glibc %d\n", patterns[i], subjects[k], a, b);
			CHECK(a == b);
		}
		relin_free(re);
	}
}

TEST(patterns_refuse_what_they_do_not_support)
{
	static const char *const bad[] = { "\\w+", "a\\b", "\\<x", "[[=a=]]", "[[.a.]]", "(a)\\1", "^*", "x$+" };
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct relin *re = NULL;
		char err[300] = "";
		CHECK(!relin_compile(bad[i], &re, err, sizeof err));
		CHECK(re == NULL && strncmp(err, "", 1) != 0);
	}
}

static double ms_since(uint64_t t0)
{
	return (double)(clock_mono_ns() - t0) / 1e6;
}

TEST(patterns_match_in_linear_time)
{
	/* glibc's regexec takes 20 s for the first and seconds for the second */
	size_t n = 65535;
	char *s = xmalloc(n + 1);
	memset(s, 'a', n);
	s[n] = '\0';
	struct relin *re;
	char err[300];
	CHECK(relin_compile("a.*b", &re, err, sizeof err));
	uint64_t t0 = clock_mono_ns();
	CHECK(!relin_match(re, s, n));
	double ms = ms_since(t0);
	CHECK(ms < 500);
	relin_free(re);
	srand(7);
	for (size_t i = 0; i < n; i++)
		s[i] = (rand() & 1) ? 'a' : 'b';
	CHECK(relin_compile("a.{16}c|(a|b)*a(a|b){16}c", &re, err, sizeof err));
	t0 = clock_mono_ns();
	CHECK(!relin_match(re, s, n));
	double ms2 = ms_since(t0);
	CHECK(ms2 < 500);
	relin_free(re);
	/* the largest program allowed, against the longest client ID */
	CHECK(relin_compile("(a|b){110}c(a|b){110}c", &re, err, sizeof err) ||
	      (fprintf(stderr, "  %s\n", err), false));
	t0 = clock_mono_ns();
	if (re)
		CHECK(!relin_match(re, s, n));
	double ms3 = ms_since(t0);
	CHECK(ms3 < 2000);
	relin_free(re);
	if (ms > 100 || ms2 > 100 || ms3 > 500)
		fprintf(stderr, "  slow matching: %.1f ms, %.1f ms, %.1f ms\n", ms, ms2, ms3);
	free(s);
}

/* ---- CSV ---- */

static struct ban_rec *csv_ok(const char *text, int64_t now, size_t *n)
{
	struct ban_rec *v = NULL;
	char err[600] = "";
	if (!bans_csv_parse(text, strlen(text), "bans.csv", now, &v, n, err, sizeof err)) {
		fprintf(stderr, "  csv: %s\n", err);
		return NULL;
	}
	return v;
}

/* The parse fails with "bans.csv:LINE: ...msg...". */
static void csv_bad(const char *text, int line, const char *msg)
{
	struct ban_rec *v = NULL;
	size_t n = 0;
	char err[600] = "", want[32];
	CHECK(!bans_csv_parse(text, strlen(text), "bans.csv", 1767225600, &v, &n, err, sizeof err));
	CHECK(v == NULL);
	snprintf(want, sizeof want, "bans.csv:%d: ", line);
	bool ok = strncmp(err, want, strlen(want)) == 0 && strstr(err, msg) != NULL;
	if (!ok)
		fprintf(stderr, "  error \"%s\", expected \"%s...%s\"\n", err, want, msg);
	CHECK(ok);
}

TEST(csv_full_file)
{
	const char *text = "\xef\xbb\xbf"
			   "as,who,by,reason,at,until\r\n"
			   "clientid,dev-1,ops,\"stolen, reported\",1767225600,2030-01-01T00:00:00Z\r\n"
			   "\r\n"
			   "username , alice , , , ,\n"
			   "peerhost_net,10.9.8.7/16,,\"multi\nline \"\"quoted\"\"\",,infinity\n"
			   "clientid_re,^bad-,,,,\n"
			   "username_re,\"^x,y$\",,,,1893456000\n"
			   "peerhost,::ffff:10.0.0.1,,,,";
	size_t n = 0;
	struct ban_rec *v = csv_ok(text, 1767225600, &n);
	CHECK(v != NULL);
	CHECK_EQ_INT(n, 6);
	if (!v || n != 6)
		return;
	CHECK_EQ_INT(v[0].as, BANS_CLIENTID);
	CHECK_STR(v[0].who, "dev-1");
	CHECK_STR(v[0].by, "ops");
	CHECK_STR(v[0].reason, "stolen, reported");
	CHECK_EQ_INT(v[0].at, 1767225600);
	CHECK_EQ_INT(v[0].until, 1893456000);
	CHECK_EQ_INT(v[1].as, BANS_USERNAME);
	CHECK_STR(v[1].who, "alice");
	CHECK_STR(v[1].by, "mgmt_api"); /* EMQX's default */
	CHECK_STR(v[1].reason, "");
	CHECK_EQ_INT(v[1].at, 1767225600); /* now */
	CHECK_EQ_INT(v[1].until, BANS_FOREVER);
	CHECK_STR(v[2].who, "10.9.0.0/16");
	CHECK_STR(v[2].reason, "multi\nline \"quoted\"");
	CHECK_EQ_INT(v[2].until, BANS_FOREVER);
	CHECK_STR(v[3].who, "^bad-");
	CHECK_STR(v[4].who, "^x,y$");
	CHECK_EQ_INT(v[4].until, 1893456000);
	CHECK_EQ_INT(v[5].as, BANS_PEERHOST);
	CHECK_STR(v[5].who, "10.0.0.1");
	bans_recs_free(v, n);
}

TEST(csv_columns_in_any_order_and_only_required_ones)
{
	size_t n = 0;
	struct ban_rec *v = csv_ok("\n\nWHO,As\nbob,username\n", 100, &n);
	CHECK(v != NULL);
	CHECK_EQ_INT(n, 1);
	if (v && n == 1) {
		CHECK_EQ_INT(v[0].as, BANS_USERNAME);
		CHECK_STR(v[0].who, "bob");
	}
	bans_recs_free(v, n);
	/* a header alone is an empty list */
	v = csv_ok("as,who\n", 100, &n);
	CHECK_EQ_INT(n, 0);
	bans_recs_free(v, n);
}

TEST(csv_expired_lines_are_skipped)
{
	size_t n = 0;
	struct ban_rec *v = csv_ok("as,who,until\nclientid,old,1000\nclientid,new,3000\nclientid,zero,0\n", 2000, &n);
	CHECK_EQ_INT(n, 1);
	if (v && n == 1)
		CHECK_STR(v[0].who, "new");
	bans_recs_free(v, n);
}

TEST(csv_bad_lines_name_file_and_line)
{
	csv_bad("", 1, "no header");
	csv_bad("\n\n", 3, "no header");
	csv_bad("who,by\nx,y\n", 1, "\"as\" and \"who\"");
	csv_bad("as,who,color\n", 1, "unknown column \"color\"");
	csv_bad("as,who,as\n", 1, "appears twice");
	csv_bad("as,who\nclientid,a\nuser,b\n", 3, "as: unknown type \"user\"");
	csv_bad("as,who\nclientid,a\nclientid\n", 3, "1 fields, the header has 2");
	csv_bad("as,who\nclientid,a,b\n", 2, "3 fields");
	csv_bad("as,who\n\nclientid,\n", 3, "who: empty");
	csv_bad("as,who\npeerhost,10.0.0.300\n", 2, "not an IPv4 or IPv6 address");
	csv_bad("as,who\npeerhost_net,10.0.0.0/40\n", 2, "not a CIDR block");
	csv_bad("as,who\n\n\nclientid_re,a(b\n", 4, "invalid regular expression");
	csv_bad("as,who,until\nclientid,a,tomorrow\n", 2, "until:");
	csv_bad("as,who,at\nclientid,a,2026-13-01T00:00:00Z\n", 2, "at:");
	csv_bad("as,who\nclientid,\"open\n\nstill open\n", 2, "unterminated quoted field");
	csv_bad("as,who\nclientid,\"a\"b\n", 2, "after a quoted field");
	csv_bad("as,who\nclientid,a\"b\n", 2, "quote inside an unquoted field");
	csv_bad("as,who\nclientid,a\rb\n", 2, "carriage return");
	csv_bad("as,who\nclientid,a\nclientid,b\nclientid,a\n", 4, "duplicate ban clientid a (first on line 2)");
	csv_bad("as,who\nclientid,\"multi\nline\"\nusername,x,y\n", 4, "3 fields");
	const char nul[] = "as,who\nclientid,a\0b\n";
	struct ban_rec *v = NULL;
	size_t n = 0;
	char err[300];
	CHECK(!bans_csv_parse(nul, sizeof nul - 1, "bans.csv", 0, &v, &n, err, sizeof err));
	CHECK(strncmp(err, "bans.csv:2: NUL byte", 20) == 0);
}

/* ---- matching ---- */

TEST(every_type_matches_and_only_what_it_should)
{
	struct tmp t;
	tmp_make(&t);
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	CHECK(!banned(b, "c1", "u1", "10.0.0.1"));
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "bad-client", BANS_FOREVER, "stolen"), BW_OK);
	CHECK_EQ_INT(add(b, BANS_USERNAME, "mallory", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST, "192.0.2.10", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST, "2001:db8::10", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_CLIENTID_RE, "^test-[0-9]+$", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_USERNAME_RE, "evil", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST_NET, "198.51.100.0/24", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST_NET, "2001:db8:bad::/48", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(bans_count(b), 8);

	char why[300] = "";
	struct sockaddr_storage ss = addr("10.0.0.1");
	CHECK(bans_check(b, "bad-client", NULL, 0, (struct sockaddr *)&ss, why, sizeof why));
	CHECK_STR(why, "banned: stolen");
	CHECK(bans_check(b, NULL, "mallory", 7, NULL, why, sizeof why));
	CHECK_STR(why, "banned: username ban");
	CHECK(!banned(b, "bad-client2", NULL, NULL)); /* exact */
	CHECK(!banned(b, "Bad-client", NULL, NULL));
	CHECK(!banned(b, NULL, "mallory2", NULL));
	/* username with a length: binary bytes, a prefix is not a match */
	CHECK(!bans_check(b, NULL, "mallory", 6, NULL, NULL, 0));
	CHECK(bans_check(b, NULL, "mallory-and-more", 7, NULL, NULL, 0));
	CHECK(banned(b, NULL, NULL, "192.0.2.10"));
	CHECK(banned(b, NULL, NULL, "::ffff:192.0.2.10")); /* IPv4-mapped peer */
	CHECK(!banned(b, NULL, NULL, "192.0.2.11"));
	CHECK(banned(b, NULL, NULL, "2001:db8:0::10"));
	CHECK(!banned(b, NULL, NULL, "2001:db8::11"));
	CHECK(banned(b, "test-42", NULL, NULL));
	CHECK(!banned(b, "test-42x", NULL, NULL));
	CHECK(!banned(b, "xtest-42", NULL, NULL));
	CHECK(banned(b, NULL, "the-evil-one", NULL)); /* unanchored */
	CHECK(!banned(b, NULL, "EVIL", NULL));
	CHECK(!banned(b, "evil", NULL, NULL)); /* username_re does not look at the client ID */
	const char bin[] = "ok\0evil";
	CHECK(bans_check(b, NULL, bin, sizeof bin - 1, NULL, NULL, 0)); /* bytes after a NUL count */
	CHECK(banned(b, NULL, NULL, "198.51.100.200"));
	CHECK(banned(b, NULL, NULL, "::ffff:198.51.100.1"));
	CHECK(!banned(b, NULL, NULL, "198.51.101.1"));
	CHECK(banned(b, NULL, NULL, "2001:db8:bad:1::5"));
	CHECK(!banned(b, NULL, NULL, "2001:db8:bae::5"));
	CHECK(!bans_check(NULL, "bad-client", NULL, 0, NULL, NULL, 0));
	bans_close(b);
out:
	tmp_remove(&t);
}

TEST(exists_expiry_overwrite_delete_sweep)
{
	struct tmp t;
	tmp_make(&t);
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	int64_t now = clock_wall_s();
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "a", now + 3600, "first"), BW_OK);
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "a", now + 7200, "second"), BW_ERR_EXISTS);
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "b", now - 1, ""), BW_ERR_INVALID);      /* until in the past */
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "b", now, ""), BW_ERR_INVALID);          /* until = now */
	CHECK(banned(b, "a", NULL, NULL));
	/* expired: ignored by checks at once, and may be overwritten */
	expire(b, BANS_CLIENTID, "a");
	CHECK(!banned(b, "a", NULL, NULL));
	CHECK_EQ_INT(add(b, BANS_CLIENTID, "a", BANS_FOREVER, "again"), BW_OK);
	CHECK(banned(b, "a", NULL, NULL));
	CHECK_EQ_INT(bans_count(b), 1);
	/* rule types too */
	CHECK_EQ_INT(add(b, BANS_PEERHOST_NET, "10.0.0.0/8", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST_NET, "10.1.0.0/8", BANS_FOREVER, ""), BW_ERR_EXISTS); /* same block */
	expire(b, BANS_PEERHOST_NET, "10.0.0.0/8");
	CHECK(!banned(b, NULL, NULL, "10.1.1.1"));
	CHECK_EQ_INT(add(b, BANS_USERNAME, "u", now + 3600, ""), BW_OK);
	expire(b, BANS_USERNAME, "u");
	/* the sweeper removes expired bans from memory and the table */
	CHECK_EQ_INT(bans_sweep(b, clock_wall_s()), 2);
	CHECK_EQ_INT(bans_count(b), 1);
	char err[300];
	CHECK_EQ_INT(bans_delete(b, BANS_CLIENTID, "nope", err, sizeof err), BW_ERR_NOTFOUND);
	CHECK_EQ_INT(bans_delete(b, BANS_CLIENTID, "a", err, sizeof err), BW_OK);
	CHECK(!banned(b, "a", NULL, NULL));
	CHECK_EQ_INT(bans_count(b), 0);
	bans_close(b);
	/* nothing came back from the table */
	b = open_ok(&t);
	CHECK(b && bans_count(b) == 0);
	bans_close(b);
out:
	tmp_remove(&t);
}

static int changes;
static void count_change(void *arg)
{
	(void)arg;
	changes++;
}

TEST(bans_survive_reopen_and_change_callback_runs)
{
	struct tmp t;
	tmp_make(&t);
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	changes = 0;
	bans_on_change(b, count_change, NULL);
	int64_t until = clock_wall_s() + 3600;
	CHECK_EQ_INT(add(b, BANS_USERNAME, "alice", until, "why not"), BW_OK);
	CHECK_EQ_INT(add(b, BANS_CLIENTID_RE, "^x", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(add(b, BANS_PEERHOST_NET, "2001:db8::/32", BANS_FOREVER, ""), BW_OK);
	CHECK_EQ_INT(changes, 3);
	bans_close(b);
	b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	CHECK_EQ_INT(bans_count(b), 3);
	CHECK(banned(b, NULL, "alice", NULL));
	CHECK(banned(b, "xyz", NULL, NULL));
	CHECK(banned(b, NULL, NULL, "2001:db8::1"));
	pthread_rwlock_rdlock(&b->lock);
	struct bent *e = find_locked(b, BANS_USERNAME, "alice", 5);
	CHECK(e && e->r.until == until && strcmp(e->r.reason, "why not") == 0 && strcmp(e->r.by, "test") == 0);
	pthread_rwlock_unlock(&b->lock);
	char err[300];
	CHECK(bans_clear(b, err, sizeof err));
	CHECK_EQ_INT(bans_count(b), 0);
	bans_close(b);
	b = open_ok(&t);
	CHECK(b && bans_count(b) == 0);
	bans_close(b);
out:
	tmp_remove(&t);
}

/* ---- bootstrap ---- */

TEST(bootstrap_imported_only_into_empty_tables)
{
	struct tmp t;
	tmp_make(&t);
	write_text(t.csv, "as,who,reason\nclientid,boot-1,from file\nusername_re,^boot,\n");
	t.cfg.banned.bootstrap_file = t.csv;
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	CHECK_EQ_INT(bans_count(b), 2);
	CHECK(banned(b, "boot-1", NULL, NULL));
	CHECK(banned(b, NULL, "booter", NULL));
	bans_close(b);
	/* tables not empty: the (changed) file is not read again */
	write_text(t.csv, "as,who\nclientid,boot-2\n");
	b = open_ok(&t);
	CHECK(b && bans_count(b) == 2);
	CHECK(b && !banned(b, "boot-2", NULL, NULL));
	struct buf rep = { 0 };
	CHECK(bans_reload(b, &rep));
	CHECK(b && !banned(b, "boot-2", NULL, NULL));
	/* emptied: a reload imports it */
	char err[300];
	CHECK(bans_clear(b, err, sizeof err));
	changes = 0;
	bans_on_change(b, count_change, NULL);
	CHECK(bans_reload(b, &rep));
	CHECK(banned(b, "boot-2", NULL, NULL));
	CHECK_EQ_INT(changes, 1);
	buf_append(&rep, "", 1);
	CHECK(strstr((const char *)rep.data, "imported 1 ban") != NULL);
	/* a bad file on reload changes nothing and says why */
	CHECK(bans_clear(b, err, sizeof err));
	write_text(t.csv, "as,who\nclientid,ok\nbogus,x\n");
	rep.len = 0;
	CHECK(!bans_reload(b, &rep));
	buf_append(&rep, "", 1);
	CHECK(strstr((const char *)rep.data, "bans.csv:3: as: unknown type") != NULL);
	CHECK_EQ_INT(bans_count(b), 0);
	buf_free(&rep);
	bans_close(b);
out:
	tmp_remove(&t);
}

TEST(bad_bootstrap_refuses_open_with_file_and_line)
{
	struct tmp t;
	tmp_make(&t);
	write_text(t.csv, "as,who\nclientid,a\npeerhost_net,300.0.0.0/8\n");
	t.cfg.banned.bootstrap_file = t.csv;
	char err[700] = "";
	struct bans *b = bans_open(&t.cfg, NULL, 1, err, sizeof err);
	CHECK(b == NULL);
	char want[200];
	snprintf(want, sizeof want, "%s:3: who: peerhost_net", t.csv);
	CHECK(strstr(err, want) != NULL);
	/* a missing file too */
	t.cfg.banned.bootstrap_file = (char *)"/nonexistent/bans.csv";
	b = bans_open(&t.cfg, NULL, 1, err, sizeof err);
	CHECK(b == NULL);
	CHECK(strstr(err, "/nonexistent/bans.csv: cannot read") != NULL);
	bans_close(b);
	tmp_remove(&t);
}

/* ---- control commands ---- */

TEST(ctl_add_list_delete_clear)
{
	struct tmp t;
	tmp_make(&t);
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	struct buf o = { 0 };
	CHECK(ctl(b, &o, "add", "username", "alice", "--reason", "spam\tbot", "--until", "2099-12-01T00:00:00Z", NULL));
	CHECK(contains(&o, "banned username alice until 2099-12-01T00:00:00Z"));
	CHECK(!ctl(b, &o, "add", "username", "alice", NULL));
	CHECK(contains(&o, "already exists"));
	CHECK(ctl(b, &o, "add", "peerhost", "::ffff:10.0.0.7", "--for", "10m", "--by", "ops", NULL));
	CHECK(contains(&o, "banned peerhost 10.0.0.7 until "));
	CHECK(!ctl(b, &o, "add", "username", "bob", "--until", "2001-01-01T00:00:00Z", NULL));
	CHECK(contains(&o, "must be in the future"));
	CHECK(!ctl(b, &o, "add", "username", "bob", "--until", "soon", NULL));
	CHECK(contains(&o, "--until"));
	CHECK(!ctl(b, &o, "add", "username", "bob", "--for", "forever", NULL));
	CHECK(contains(&o, "--for"));
	CHECK(!ctl(b, &o, "add", "username", "bob", "--for", "1m", "--until", "2099-01-01T00:00:00Z", NULL));
	CHECK(!ctl(b, &o, "add", "ip", "1.2.3.4", NULL));
	CHECK(contains(&o, "unknown ban type"));
	CHECK(!ctl(b, &o, "add", "peerhost_net", "1.2.3.4/99", NULL));
	CHECK(contains(&o, "not a CIDR block"));
	CHECK(!ctl(b, &o, "add", "clientid_re", "[a-", NULL));
	CHECK(contains(&o, "invalid regular expression"));
	CHECK(!ctl(b, &o, "add", "clientid", NULL));
	CHECK(contains(&o, "usage"));
	CHECK(!ctl(b, &o, "add", "clientid", "x", "--reason", NULL));
	CHECK(contains(&o, "needs a value"));
	CHECK(ctl(b, &o, "list", NULL));
	CHECK(contains(&o, "as\twho\tby\tat\tuntil\treason\n"));
	CHECK(contains(&o, "username\talice\tctl\t"));
	CHECK(contains(&o, "\t2099-12-01T00:00:00Z\tspam\\x09bot\n"));
	CHECK(contains(&o, "peerhost\t10.0.0.7\tops\t"));
	CHECK(!ctl(b, &o, "delete", "username", "nobody", NULL));
	CHECK(contains(&o, "no ban for username nobody"));
	CHECK(ctl(b, &o, "delete", "peerhost", "::ffff:10.0.0.7", NULL)); /* canonicalised like add */
	CHECK(ctl(b, &o, "delete", "username", "alice", NULL));
	CHECK(ctl(b, &o, "list", NULL));
	CHECK(!contains(&o, "alice"));
	CHECK(ctl(b, &o, "add", "clientid", "c1", NULL));
	CHECK(ctl(b, &o, "add", "clientid", "c2", NULL));
	CHECK(ctl(b, &o, "clear", NULL));
	CHECK(contains(&o, "deleted 2 bans"));
	CHECK_EQ_INT(bans_count(b), 0);
	CHECK(!ctl(b, &o, "frobnicate", NULL));
	buf_free(&o);
	bans_close(b);
out:
	tmp_remove(&t);
}

/* ---- flapping ---- */

TEST(flapping_counts_per_window)
{
	struct tmp t;
	tmp_make(&t);
	t.cfg.flapping.enable = true;
	t.cfg.flapping.max_count = 3;
	t.cfg.flapping.window_time_ms = 1000;
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	uint32_t n;
	uint64_t now = 1000000;
	CHECK(!flapping_count(b, 0, "f", now, &n));
	CHECK(!flapping_count(b, 0, "f", now + 100, &n));
	CHECK(!flapping_count(b, 0, "f", now + 200, &n));
	CHECK_EQ_INT(n, 3);
	CHECK(!flapping_count(b, 0, "other", now + 200, &n));
	CHECK(flapping_count(b, 0, "f", now + 300, &n)); /* the 4th within 1 s */
	CHECK_EQ_INT(n, 4);
	/* counting starts over; a new window after window_time */
	CHECK(!flapping_count(b, 0, "f", now + 400, &n));
	CHECK_EQ_INT(n, 1);
	CHECK(!flapping_count(b, 0, "g", now, &n));
	CHECK(!flapping_count(b, 0, "g", now + 500, &n));
	CHECK(!flapping_count(b, 0, "g", now + 900, &n));
	CHECK(!flapping_count(b, 0, "g", now + 1600, &n)); /* window over: 1 again */
	CHECK_EQ_INT(n, 1);
	/* workers count separately; out of range workers are ignored */
	CHECK(!flapping_count(b, 1, "g", now + 1600, &n));
	CHECK_EQ_INT(n, 1);
	CHECK(!flapping_count(b, 7, "g", now, &n));
	/* gc drops idle entries */
	CHECK(!flapping_count(b, 0, "h", now + 100000, &n));
	CHECK_EQ_INT(b->flaps[0].map.count, 1);
	bans_close(b);
out:
	tmp_remove(&t);
}

TEST(flapping_bans_the_client_id_and_persists_on_the_main_thread)
{
	struct tmp t;
	tmp_make(&t);
	t.cfg.flapping.enable = true;
	t.cfg.flapping.max_count = 2;
	t.cfg.flapping.window_time_ms = 60000;
	t.cfg.flapping.ban_time_ms = 120000;
	struct bans *b = open_ok(&t);
	CHECK(b != NULL);
	if (!b)
		goto out;
	struct sockaddr_storage ss = addr("127.0.0.1");
	char why[300];
	CHECK(!bans_connected(b, 1, "flappy", NULL, 0, (struct sockaddr *)&ss, why, sizeof why));
	CHECK(!bans_connected(b, 1, "flappy", NULL, 0, (struct sockaddr *)&ss, why, sizeof why));
	CHECK(bans_connected(b, 1, "flappy", NULL, 0, (struct sockaddr *)&ss, why, sizeof why));
	CHECK_STR(why, "banned: flapping detected: 3 connects within 60s");
	CHECK(banned(b, "flappy", NULL, NULL)); /* in memory at once */
	CHECK(bans_connected(b, 1, "flappy", NULL, 0, NULL, why, sizeof why));
	pthread_rwlock_rdlock(&b->lock);
	struct bent *e = find_locked(b, BANS_CLIENTID, "flappy", 6);
	CHECK(e && strcmp(e->r.by, "flapping_detect") == 0);
	CHECK(e && e->r.until >= clock_wall_s() + 119 && e->r.until <= clock_wall_s() + 121);
	pthread_rwlock_unlock(&b->lock);
	CHECK_EQ_INT(b->npend, 1);
	changes = 0;
	bans_on_change(b, count_change, NULL);
	flush_pending(b); /* what the main loop runs */
	CHECK_EQ_INT(changes, 1);
	CHECK_EQ_INT(b->npend, 0);
	/* a pending write for a ban deleted meanwhile is dropped */
	CHECK(!bans_connected(b, 0, "other", NULL, 0, NULL, why, sizeof why));
	CHECK(!bans_connected(b, 0, "other", NULL, 0, NULL, why, sizeof why));
	CHECK(bans_connected(b, 0, "other", NULL, 0, NULL, why, sizeof why));
	char err[300];
	CHECK_EQ_INT(bans_delete(b, BANS_CLIENTID, "other", err, sizeof err), BW_OK);
	flush_pending(b);
	bans_close(b);
	b = open_ok(&t);
	CHECK(b && bans_count(b) == 1);
	CHECK(b && banned(b, "flappy", NULL, NULL));
	CHECK(b && !banned(b, "other", NULL, NULL));
	bans_close(b);
	/* disabled: never counts */
	t.cfg.flapping.enable = false;
	b = open_ok(&t);
	for (int i = 0; b && i < 10; i++)
		CHECK(!bans_connected(b, 0, "many", NULL, 0, NULL, why, sizeof why));
	bans_close(b);
out:
	tmp_remove(&t);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	hash_seed_random();
	RUN(as_names_round_trip);
	RUN(who_canonical_forms);
	RUN(who_invalid_values_are_refused_with_a_reason);
	RUN(times_epoch_and_rfc3339);
	RUN(patterns_match_like_glibc);
	RUN(patterns_refuse_what_they_do_not_support);
	RUN(patterns_match_in_linear_time);
	RUN(csv_full_file);
	RUN(csv_columns_in_any_order_and_only_required_ones);
	RUN(csv_expired_lines_are_skipped);
	RUN(csv_bad_lines_name_file_and_line);
	RUN(every_type_matches_and_only_what_it_should);
	RUN(exists_expiry_overwrite_delete_sweep);
	RUN(bans_survive_reopen_and_change_callback_runs);
	RUN(bootstrap_imported_only_into_empty_tables);
	RUN(bad_bootstrap_refuses_open_with_file_and_line);
	RUN(ctl_add_list_delete_clear);
	RUN(flapping_counts_per_window);
	RUN(flapping_bans_the_client_id_and_persists_on_the_main_thread);
	return unit_summary();
}
