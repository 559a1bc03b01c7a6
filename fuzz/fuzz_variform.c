/* libFuzzer target: variform expressions (auth/variform.c) -- the scanner, parser, compile-time
 * checks, the PCRE -> ERE translation and every built-in function.
 *
 * Input: the expression text, optionally followed by a NUL byte and a payload. The payload is
 * the value of the variables clientid, username and user_property.p, and, split at ',', the
 * items of the array variable list. An unknown name is a compile error; user_property.other is
 * always unbound. Checks: compile errors and evaluation errors carry a message; a result is
 * NUL-terminated at *len; the same expression evaluates the same way twice unless it uses
 * rand_str/rand_int/getenv. Seed corpus: fuzz/corpus/variform/ (one expression per file). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/variform.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

struct env {
	const char *payload;
	size_t plen;
	const char *items[64];
	size_t lens[64];
	size_t n;
};

static int resolve(const char *name, void *ud, enum variform_var_kind *kind)
{
	(void)ud;
	static const char *const names[] = { "clientid", "username", "user_property.p", "user_property.other", "list",
					     "cn", NULL };
	for (int i = 0; names[i]; i++) {
		if (strcmp(names[i], name) == 0) {
			*kind = strcmp(name, "list") == 0 ? VARIFORM_VAR_LIST : VARIFORM_VAR_STRING;
			return i;
		}
	}
	return -1;
}

static bool lookup(void *ud, int id, const char *name, struct variform_value *out)
{
	const struct env *e = ud;
	(void)name;
	switch (id) {
	case 0: case 1: case 2:
		out->kind = VARIFORM_VAR_STRING;
		out->s = e->payload;
		out->len = e->plen;
		return true;
	case 4:
		out->kind = VARIFORM_VAR_LIST;
		out->items = e->items;
		out->lens = e->lens;
		out->n = e->n;
		return true;
	case 5:
		out->kind = VARIFORM_VAR_STRING;
		out->s = "device-123";
		out->len = 10;
		return true;
	default:
		return false;
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	const uint8_t *nul = memchr(data, 0, size);
	size_t tlen = nul ? (size_t)(nul - data) : size;
	struct env env = { .payload = "", .plen = 0 };
	if (nul) {
		env.payload = (const char *)nul + 1;
		env.plen = size - tlen - 1;
		size_t st = 0;
		for (size_t i = 0; i <= env.plen && env.n < 64; i++) {
			if (i == env.plen || env.payload[i] == ',') {
				env.items[env.n] = env.payload + st;
				env.lens[env.n++] = i - st;
				st = i + 1;
			}
		}
	}
	char err[512];
	err[0] = '\0';
	struct variform *e = variform_compile(text, tlen, resolve, NULL, "(fuzz)", err, sizeof err);
	if (!e) {
		check(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
		return 0;
	}
	check(strlen(variform_text(e)) == tlen && memcmp(variform_text(e), text, tlen) == 0);
	size_t len = 0, len2 = 0;
	char *r = variform_eval(e, lookup, &env, &len, err, sizeof err);
	if (!r) {
		check(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
	} else {
		check(r[len] == '\0' && len <= VARIFORM_MAX_STR);
		bool random = memmem(text, tlen, "rand_", 5) || memmem(text, tlen, "getenv", 6);
		char *r2 = variform_eval(e, lookup, &env, &len2, err, sizeof err);
		if (!random)
			check(r2 && len2 == len && memcmp(r, r2, len) == 0);
		free(r2);
	}
	free(r);
	variform_free(e);
	return 0;
}
