/* libFuzzer target for the JWT parser and the JWKS parser (src/auth/jwt.c): what a client puts
 * in its password and what a JWKS endpoint answers are both attacker-controlled.
 *
 * Input: the first byte chooses the mode.
 *   - token mode: the rest is a compact token. jwt_parse must either fail with a message or
 *     give a header and claims that are JSON objects and a signing input that is a prefix of
 *     the token; then the verification paths run on it with an HMAC key (never OK: the key is
 *     random per run, so a forged signature must not verify), the time checks, the ACL and
 *     client_attrs helpers;
 *   - JWKS mode: the rest is a JWKS document; every key returned is usable by jwt_key_fits
 *     without crashing, and the counts add up.
 * Any violation aborts.
 */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/jwt.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static void token_mode(const char *tok, size_t len)
{
	struct jwt t;
	char err[256] = "";
	memset(&t, 0, sizeof t);
	bool ok = jwt_parse(tok, len, &t, err, sizeof err);
	if (!ok) {
		CHECK(err[0] != '\0');
		jwt_free(&t);
		return;
	}
	CHECK(json_is_object(t.header) && json_is_object(t.claims));
	CHECK(t.signing_len <= len && memcmp(t.signing_input, tok, t.signing_len) == 0);
	/* a key the input cannot know: nothing verifies */
	static const uint8_t secret[] = "fuzz-secret-not-in-any-corpus-0123456789";
	struct jwt_key k;
	memset(&k, 0, sizeof k);
	jwt_key_hmac(&k, secret, sizeof secret - 1);
	CHECK(jwt_verify(&t, &k, 1, ~0u, true) != JWT_V_OK);
	CHECK(jwt_verify(&t, &k, 1, ~0u, false) != JWT_V_OK);
	jwt_key_clear(&k);
	int64_t exp = 0;
	(void)jwt_check_time(t.claims, 1700000000, &exp);
	const json_t *acl = json_object_get(t.claims, "acl");
	if (acl)
		(void)jwt_acl_valid(acl);
	size_t dropped = 0;
	free(jwt_client_attrs(json_object_get(t.claims, "client_attrs"), &dropped));
	(void)jwt_json_truthy(json_object_get(t.claims, "is_superuser"));
	(void)jwt_claim_matches(t.claims, "sub", "x", 1);
	jwt_free(&t);
}

static void jwks_mode(const char *doc, size_t len)
{
	struct jwt_key *keys = NULL;
	size_t n = 0, skipped = 0;
	char err[256] = "";
	if (jwt_jwks_parse(doc, len, &keys, &n, &skipped, err, sizeof err)) {
		for (size_t i = 0; i < n; i++)
			(void)jwt_key_fits(&keys[i], JWT_RS256);
		jwt_keys_free(keys, n);
	} else {
		CHECK(err[0] != '\0');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	/* exact-size, NUL-terminated copy: ASan catches reads past the end */
	char *p = malloc(size);
	memcpy(p, data + 1, size - 1);
	p[size - 1] = '\0';
	if (data[0] & 1)
		jwks_mode(p, size - 1);
	else
		token_mode(p, size - 1);
	free(p);
	return 0;
}
