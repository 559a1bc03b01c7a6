/* libFuzzer target: the bootstrap_file parser of the built-in database authenticator
 * (builtin_boot_parse, src/auth/authn_builtin.c), CSV and JSON, plain and hash.
 *
 * Input: the first byte chooses the shape (bit 0: JSON, bit 1: hash), the rest is the file.
 *   - On failure: nothing is returned, and the message is "fuzz.csv:LINE: ..." (or .json) with
 *     LINE between 1 and the number of lines of the input.
 *   - On success: every user has a user_id of 1 to 65535 bytes and a secret, a salt only for
 *     hash, and a line within the input, in non-decreasing order; then the users are written
 *     back as a CSV with every field quoted, which must parse to the same users (any bytes
 *     survive a quoted field; an absent salt comes back empty).
 * Any violation aborts. Seed corpus: fuzz/corpus/usersboot/. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/authn_builtin.h"
#include "core/buf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Abort, naming the invariant that does not hold. */
static void check_that(bool ok, const char *what)
{
	if (ok)
		return;
	fprintf(stderr, "fuzz_usersboot: check failed: %s\n", what);
	abort();
}
#define CHECK(cond) check_that((cond), #cond)

static void csv_quoted(struct buf *b, const char *s, size_t n)
{
	buf_append(b, "\"", 1);
	for (size_t i = 0; i < n; i++) {
		if (s[i] == '"')
			buf_append(b, "\"", 1);
		buf_append(b, &s[i], 1);
	}
	buf_append(b, "\"", 1);
}

static bool same_bytes(const char *a, size_t an, const char *b, size_t bn)
{
	return an == bn && (an == 0 || memcmp(a, b, an) == 0);
}

/* Write l back as a quoted CSV and check it parses to the same users. */
static void round_trip(const struct boot_list *l, int type)
{
	struct buf b = { 0 };
	const char *header = type ? "user_id,password_hash,salt,is_superuser\n" : "user_id,password,is_superuser\n";
	buf_append(&b, header, strlen(header));
	for (size_t i = 0; i < l->n; i++) {
		const struct boot_user *u = &l->v[i];
		csv_quoted(&b, u->user_id, u->user_id_len);
		buf_append(&b, ",", 1);
		csv_quoted(&b, u->secret, u->secret_len);
		if (type) {
			buf_append(&b, ",", 1);
			csv_quoted(&b, u->salt ? u->salt : "", u->salt ? u->salt_len : 0);
		}
		buf_append(&b, u->is_superuser ? ",true\n" : ",false\n", u->is_superuser ? 6 : 7);
	}
	struct boot_list back;
	char err[512];
	if (!builtin_boot_parse("again.csv", (const char *)b.data, b.len, false, type, &back, err, sizeof err)) {
		fprintf(stderr, "round trip refused: %s\n", err);
		abort();
	}
	CHECK(back.n == l->n);
	for (size_t i = 0; i < l->n; i++) {
		const struct boot_user *u = &l->v[i], *v = &back.v[i];
		CHECK(same_bytes(u->user_id, u->user_id_len, v->user_id, v->user_id_len));
		CHECK(same_bytes(u->secret, u->secret_len, v->secret, v->secret_len));
		if (type)
			CHECK(same_bytes(u->salt ? u->salt : "", u->salt ? u->salt_len : 0, v->salt, v->salt_len));
		CHECK(u->is_superuser == v->is_superuser);
	}
	builtin_boot_free(&back);
	buf_free(&b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	bool json = data[0] & 1;
	int type = (data[0] >> 1) & 1;
	size_t len = size - 1;
	/* exact size, not NUL-terminated: ASan catches any read past the end */
	char *text = malloc(len ? len : 1);
	memcpy(text, data + 1, len);
	int lines = 1;
	for (size_t i = 0; i < len; i++)
		lines += text[i] == '\n';
	const char *name = json ? "fuzz.json" : "fuzz.csv";

	struct boot_list l;
	char err[512];
	err[0] = 0;
	if (!builtin_boot_parse(name, text, len, json, type, &l, err, sizeof err)) {
		CHECK(l.v == NULL && l.n == 0);
		size_t nl = strlen(name);
		CHECK(strncmp(err, name, nl) == 0 && err[nl] == ':');
		char *end;
		long line = strtol(err + nl + 1, &end, 10);
		if (line < 1 || line > lines || *end != ':') {
			fprintf(stderr, "bad line in \"%s\" (input has %d lines)\n", err, lines);
			abort();
		}
		free(text);
		return 0;
	}
	CHECK(l.n <= l.cap && (l.n == 0 || l.v != NULL));
	int last = 1;
	for (size_t i = 0; i < l.n; i++) {
		const struct boot_user *u = &l.v[i];
		CHECK(u->user_id && u->user_id_len >= 1 && u->user_id_len <= 65535 && u->user_id[u->user_id_len] == 0);
		CHECK(u->secret && u->secret[u->secret_len] == 0);
		CHECK(type || u->salt == NULL);
		CHECK(!u->salt || u->salt[u->salt_len] == 0);
		if (u->line < last || u->line > lines) {
			fprintf(stderr, "user %zu at line %d (previous %d, input has %d lines)\n", i + 1, u->line, last,
				lines);
			abort();
		}
		last = u->line;
	}
	round_trip(&l, type);
	builtin_boot_free(&l);
	free(text);
	return 0;
}
