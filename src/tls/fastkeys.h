/* fastkeys.h — RSA and EC keys on OpenSSL's built-in methods instead of the 3.0 provider path
 * (node.tls_fast_keys). See fastkeys.c for why. */
#ifndef BW_TLS_FASTKEYS_H
#define BW_TLS_FASTKEYS_H

#include <stdbool.h>
#include <stddef.h>

#include <openssl/evp.h>

enum tls_fast_keys {
	TLS_FAST_KEYS_ON,       /* installed (or already installed by an earlier call) */
	TLS_FAST_KEYS_FIPS,     /* not installed: FIPS properties are the process default */
	TLS_FAST_KEYS_UNNEEDED, /* not installed: this OpenSSL caches its decoders (3.2 and later) */
	TLS_FAST_KEYS_FAILED,   /* not installed: OpenSSL refused (message in the buffer) */
};

/* Installs the engine once per process; call on the main thread before any worker starts
 * TLS. Fills msg with a sentence for the log. */
enum tls_fast_keys tls_fast_keys_install(char *msg, size_t msglen);

/* An EVP_PKEY_CTX for the provider implementation of key type "RSA" or "EC" (any other
 * name is passed through), whether or not the engine is installed: for EVP_PKEY_fromdata
 * and key generation with parameters, which the built-in method tables cannot do. */
EVP_PKEY_CTX *tls_provider_pkey_ctx(const char *type);

#endif
