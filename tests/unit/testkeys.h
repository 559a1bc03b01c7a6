/* Key generation for the unit tests that need fresh keys (test_jwt, test_fastkeys). */
#ifndef BW_TEST_TESTKEYS_H
#define BW_TEST_TESTKEYS_H

#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "tls/fastkeys.h"

/* A new key of type "RSA" (param: bits, default 2048), "EC" (param: curve name) or e.g.
 * "ED25519" (param unused), or NULL. From the provider context (tls/fastkeys.h), so that
 * generating works after tls_fast_keys_install() too. */
static inline EVP_PKEY *test_keygen(const char *type, const char *param)
{
	EVP_PKEY_CTX *ctx = tls_provider_pkey_ctx(type);
	EVP_PKEY *k = NULL;
	bool ok = ctx && EVP_PKEY_keygen_init(ctx) > 0;
	if (ok && strcmp(type, "RSA") == 0)
		ok = EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, param ? atoi(param) : 2048) > 0;
	else if (ok && strcmp(type, "EC") == 0)
		ok = EVP_PKEY_CTX_set_group_name(ctx, param) > 0;
	if (!ok || EVP_PKEY_generate(ctx, &k) <= 0)
		k = NULL;
	EVP_PKEY_CTX_free(ctx);
	return k;
}

#endif
