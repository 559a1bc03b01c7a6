/* Password hashing and checking, EMQX's algorithms (reference/emqx.md §4.3):
 *   plain, md5, sha, sha256, sha512 (with salt_position prefix | suffix | disable;
 *   lowercase hex digest), bcrypt (the stored string carries its salt and cost),
 *   pbkdf2 (mac_fun sha | sha224 | sha256 | sha384 | sha512, iterations, dk_length;
 *   lowercase hex).
 * Comparison is constant-time; hex digests compare case-insensitively, plain
 * case-sensitively; an absent password never matches.
 *
 * bcrypt and pbkdf2 with many iterations are slow by design: callers on a loop thread
 * must not run them inline (passwd_is_slow) but through the hashing pool (hashpool.h).
 */
#ifndef BW_PASSWD_H
#define BW_PASSWD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/cfgread.h"

enum passwd_algo {
	PASSWD_PLAIN,
	PASSWD_MD5,
	PASSWD_SHA,
	PASSWD_SHA256,
	PASSWD_SHA512,
	PASSWD_BCRYPT,
	PASSWD_PBKDF2,
};

enum passwd_salt_pos { PASSWD_SALT_PREFIX, PASSWD_SALT_SUFFIX, PASSWD_SALT_DISABLE };

/* password_hash_algorithm { name, salt_position, salt_rounds, mac_fun, iterations, dk_length } */
struct passwd_cfg {
	enum passwd_algo algo;
	enum passwd_salt_pos salt_position;  /* simple algorithms; default prefix */
	unsigned salt_rounds;                /* bcrypt cost for new hashes, 5..10 (clamped), default 10 */
	enum passwd_algo mac_fun;            /* pbkdf2: PASSWD_SHA .. PASSWD_SHA512 (sha224/sha384 too) */
	int mac_bits;                        /* pbkdf2: digest size in bits (160, 224, 256, 384, 512) */
	unsigned iterations;                 /* pbkdf2 */
	unsigned dk_length;                  /* pbkdf2: bytes, 0 = the digest size */
};

/* Parse a `password_hash_algorithm` object (m->value) into *out; defaults: sha256, prefix. */
bool passwd_parse(struct cfg_reader *r, const struct hocon_member *m, struct passwd_cfg *out);
/* Defaults (sha256, salt prefix). */
void passwd_default(struct passwd_cfg *out);

/* True when checking a password with cfg is expensive enough for the hashing pool
 * (bcrypt, or pbkdf2 with more than a few thousand iterations). */
bool passwd_is_slow(const struct passwd_cfg *cfg);

/* Does password match the stored hash (and salt, for simple algorithms and pbkdf2)? */
bool passwd_check(const struct passwd_cfg *cfg, const char *hash, size_t hash_len, const char *salt, size_t salt_len,
		  const uint8_t *password, size_t password_len);

/* Hash a password for storage: *hash and *salt are fresh strings (salt: 16 random bytes
 * as 32 hex chars; "" for plain and bcrypt, whose string holds it). */
bool passwd_hash(const struct passwd_cfg *cfg, const uint8_t *password, size_t password_len, char **hash, char **salt);

/* Constant-time equality of two byte strings (length leaks, contents do not). */
bool passwd_ct_equal(const void *a, size_t alen, const void *b, size_t blen);

#endif
