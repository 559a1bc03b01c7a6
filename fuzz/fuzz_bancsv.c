/* libFuzzer target: the banned.bootstrap_file CSV parser (bans/bans_csv.c), the helpers it uses
 * (type names, canonical `who`, times) and the ban pattern matcher (core/relin.c).
 *
 * 1. The whole input as a CSV: either records (every field set, `who` already canonical, not
 *    expired) or one "FILE:LINE: message" error, never both.
 * 2. Differential check of the pattern matcher against glibc: the first line of the input is
 *    a pattern, the following lines are subjects; whenever both compile it, relin_match and
 *    regexec(REG_EXTENDED) must agree on every subject (glibc defines the semantics; relin
 *    exists for its linear running time). Patterns over 200 bytes or with more than 16 anchors
 *    are compiled but not compared: glibc's regcomp is the slow part there.
 * Seed corpus: fuzz/corpus/bancsv/. */
#include <regex.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bans/bans_int.h"
#include "core/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static bool glibc_match(const regex_t *re, const char *s, size_t len)
{
	regmatch_t m[1] = { { 0, (regoff_t)len } };
	return regexec(re, s, 1, m, REG_STARTEND) == 0;
}

static void differential(const char *pattern, const char *subjects, size_t slen)
{
	char err[300];
	struct relin *mine;
	if (!relin_compile(pattern, &mine, err, sizeof err))
		return;
	/* glibc as the oracle only where its own compile is cheap: its time grows with the fourth
	 * power of the anchors ("(^|$)" 40 times: 0.6 s natively, seconds under ASan). relin
	 * itself hands glibc the pattern with its anchors made literals. */
	size_t anchors = 0, plen = strlen(pattern);
	for (const char *c = pattern; *c; c++)
		anchors += *c == '^' || *c == '$';
	if (plen > 200 || anchors > 16) {
		relin_free(mine);
		return;
	}
	regex_t re;
	check(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) == 0); /* validated by it */
	const char *p = subjects, *end = subjects + slen;
	for (int k = 0; k < 16; k++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		size_t len = nl ? (size_t)(nl - p) : (size_t)(end - p);
		if (len > 256)
			len = 256; /* glibc's regexec is quadratic: keep the oracle fast */
		char subj[257]; /* NUL-terminated: ASan's regexec interceptor ignores REG_STARTEND */
		memcpy(subj, p, len);
		subj[len] = '\0';
		bool a = relin_match(mine, subj, len), b = glibc_match(&re, subj, len);
		if (a != b) {
			fprintf(stderr, "pattern \"%s\" subject \"%.*s\": relin %d, glibc %d\n", pattern, (int)len, p, a,
				b);
			abort();
		}
		if (!nl)
			break;
		p = nl + 1;
	}
	regfree(&re);
	relin_free(mine);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int init;
	if (!init) {
		log_set_level(LOG_ERROR); /* expired lines warn */
		init = 1;
	}
	if (size > 16384)
		return 0;

	/* 2: pattern on the first line (NUL-free, at most 200 bytes), subjects after it */
	const uint8_t *nl = memchr(data, '\n', size);
	size_t plen = nl ? (size_t)(nl - data) : size;
	if (plen <= 200 && !memchr(data, '\0', plen)) {
		char pattern[201];
		memcpy(pattern, data, plen);
		pattern[plen] = '\0';
		if (nl)
			differential(pattern, (const char *)nl + 1, size - plen - 1);
		else
			differential(pattern, "", 0);
	}

	/* 1: the input as a bootstrap CSV */
	const int64_t now = 1767225600;
	struct ban_rec *v = NULL;
	size_t n = 0;
	char err[600];
	if (!bans_csv_parse((const char *)data, size, "fuzz.csv", now, &v, &n, err, sizeof err)) {
		check(v == NULL);
		check(strncmp(err, "fuzz.csv:", 9) == 0 && atoi(err + 9) >= 1);
		return 0;
	}
	check(n == 0 || v != NULL);
	for (size_t i = 0; i < n; i++) {
		const struct ban_rec *r = &v[i];
		check((unsigned)r->as < BANS__COUNT && r->who && r->by && r->reason);
		check(!bans_expired(r, now));
		/* canonical forms are fixed points */
		char *again = NULL, e2[300];
		check(bans_who_canon(r->as, r->who, &again, e2, sizeof e2));
		check(strcmp(again, r->who) == 0);
		free(again);
		enum bans_as as;
		check(bans_as_parse(bans_as_str(r->as), &as) && as == r->as);
		/* times print and parse back */
		char t[40];
		int64_t back;
		bans_format_time(r->at, false, t, sizeof t);
		check(bans_parse_time(t, &back) && back == r->at);
		if (r->as == BANS_CLIENTID_RE || r->as == BANS_USERNAME_RE) {
			char subj[600];
			int k = snprintf(subj, sizeof subj, "%s\n%s\n%s\n", r->by, r->reason, r->who);
			differential(r->who, subj, k > 0 && (size_t)k < sizeof subj ? (size_t)k : sizeof subj - 1);
		}
	}
	bans_recs_free(v, n);
	return 0;
}
