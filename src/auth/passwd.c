/* Password hashing and checking, EMQX's algorithms (reference/emqx.md §4.3). See passwd.h.
 *
 * Simple algorithms hash salt+password (prefix), password+salt (suffix) or the password
 * alone (disable) and store lowercase hex; `plain` stores the salted text itself. bcrypt
 * goes through libxcrypt (crypt_rn: $2b$, $2a$, $2y$); pbkdf2 through OpenSSL's
 * PKCS5_PBKDF2_HMAC with the salt's text as the salt bytes, as EMQX does. */
#include "auth/passwd.h"

#include <crypt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/alloc.h"
#include "core/log.h"

#define BCRYPT_MIN_ROUNDS 5
#define BCRYPT_MAX_ROUNDS 10
#define PBKDF2_MAX_DK 1024            /* bytes; bounds the output buffer */
#define PBKDF2_SLOW_ITERATIONS 1000   /* above this, a check belongs on the hashing pool */

static const char *const algo_names[] = { "plain", "md5", "sha", "sha256", "sha512", "bcrypt", "pbkdf2", NULL };
static const char *const salt_names[] = { "prefix", "suffix", "disable", NULL };
/* mac_fun values, in EMQX's order; the first three are refused (EMQX 5.8.3+). */
static const char *const mac_names[] = { "md4", "md5", "ripemd160", "sha", "sha224", "sha256", "sha384", "sha512", NULL };

void passwd_default(struct passwd_cfg *out)
{
	memset(out, 0, sizeof *out);
	out->algo = PASSWD_SHA256;
	out->salt_position = PASSWD_SALT_PREFIX;
	out->salt_rounds = BCRYPT_MAX_ROUNDS;
	out->mac_fun = PASSWD_SHA256;
	out->mac_bits = 256;
	out->iterations = 0;
	out->dk_length = 0;
}

/* ---- parsing ---- */

static bool is_simple(enum passwd_algo a)
{
	return a <= PASSWD_SHA512;
}

bool passwd_parse(struct cfg_reader *r, const struct hocon_member *m, struct passwd_cfg *out)
{
	const struct hocon_node *obj = m->value;
	struct passwd_cfg c;
	passwd_default(&c);
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(r, m, "expected an object { name = ..., ... }, got %s", hocon_type_str(obj->type));
	const struct hocon_member *name = NULL, *salt_pos = NULL, *rounds = NULL, *mac = NULL, *iters = NULL, *dk = NULL;
	bool ok = true;
	for (size_t i = 0; ok && i < obj->n; i++) {
		const struct hocon_member *k = &obj->members[i];
		size_t old = cfgr_path_push(r, k->key);
		uint64_t v = 0;
		int e = 0;
		if (strcmp(k->key, "name") == 0) {
			name = k;
			if ((ok = cfgr_enum(r, k, algo_names, &e)))
				c.algo = (enum passwd_algo)e;
		} else if (strcmp(k->key, "salt_position") == 0) {
			salt_pos = k;
			if ((ok = cfgr_enum(r, k, salt_names, &e)))
				c.salt_position = (enum passwd_salt_pos)e;
		} else if (strcmp(k->key, "salt_rounds") == 0) {
			rounds = k;
			if ((ok = cfgr_uint(r, k, 0, 31, &v))) {
				unsigned want = (unsigned)v;
				c.salt_rounds = want < BCRYPT_MIN_ROUNDS ? BCRYPT_MIN_ROUNDS
					      : want > BCRYPT_MAX_ROUNDS ? BCRYPT_MAX_ROUNDS : want;
				if (c.salt_rounds != want)
					log_warn("%s:%d: %s = %u is outside %d..%d; using %u", cfgr_file(k), k->line, r->path,
						 want, BCRYPT_MIN_ROUNDS, BCRYPT_MAX_ROUNDS, c.salt_rounds);
			}
		} else if (strcmp(k->key, "mac_fun") == 0) {
			mac = k;
			if ((ok = cfgr_enum(r, k, mac_names, &e))) {
				static const int bits[] = { 0, 0, 0, 160, 224, 256, 384, 512 };
				if (e < 3) {
					ok = cfgr_fail(r, k, "%s is not supported (EMQX 5.8.3 and later refuse it too); use sha, "
						       "sha224, sha256, sha384 or sha512", mac_names[e]);
				} else {
					c.mac_bits = bits[e];
					/* sha224 and sha384 have no enum value of their own: the family
					 * (SHA-2 256 or 512) goes in mac_fun, mac_bits decides */
					c.mac_fun = e == 3 ? PASSWD_SHA : e <= 5 ? PASSWD_SHA256 : PASSWD_SHA512;
				}
			}
		} else if (strcmp(k->key, "iterations") == 0) {
			iters = k;
			if ((ok = cfgr_uint(r, k, 1, 0x7fffffff, &v)))
				c.iterations = (unsigned)v;
		} else if (strcmp(k->key, "dk_length") == 0) {
			dk = k;
			if ((ok = cfgr_uint(r, k, 1, PBKDF2_MAX_DK, &v)))
				c.dk_length = (unsigned)v;
		} else {
			ok = cfgr_unknown(r, k);
		}
		cfgr_path_pop(r, old);
	}
	if (!ok)
		return false;
	if (!name)
		return cfgr_fail(r, m, "name is required (plain, md5, sha, sha256, sha512, bcrypt or pbkdf2)");
	/* Keys of another algorithm are refused: a config that says pbkdf2 things about sha256
	 * is a mistake, not something to ignore. */
	const struct hocon_member *wrong = NULL;
	const char *which = NULL;
	if (salt_pos && !is_simple(c.algo))
		wrong = salt_pos, which = "plain, md5, sha, sha256 and sha512";
	else if (rounds && c.algo != PASSWD_BCRYPT)
		wrong = rounds, which = "bcrypt";
	else if ((mac || iters || dk) && c.algo != PASSWD_PBKDF2)
		wrong = mac ? mac : iters ? iters : dk, which = "pbkdf2";
	if (wrong) {
		size_t old = cfgr_path_push(r, wrong->key);
		cfgr_fail(r, wrong, "applies only to %s, not to name = %s", which, algo_names[c.algo]);
		cfgr_path_pop(r, old);
		return false;
	}
	if (c.algo == PASSWD_PBKDF2) {
		if (!mac)
			return cfgr_fail(r, m, "pbkdf2 needs mac_fun (sha, sha224, sha256, sha384 or sha512)");
		if (!iters)
			return cfgr_fail(r, m, "pbkdf2 needs iterations");
	}
	*out = c;
	return true;
}

bool passwd_is_slow(const struct passwd_cfg *cfg)
{
	return cfg->algo == PASSWD_BCRYPT || (cfg->algo == PASSWD_PBKDF2 && cfg->iterations > PBKDF2_SLOW_ITERATIONS);
}

/* ---- helpers ---- */

bool passwd_ct_equal(const void *a, size_t alen, const void *b, size_t blen)
{
	if (alen != blen)
		return false;
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;
	for (size_t i = 0; i < alen; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

static void hex_lower(const uint8_t *p, size_t n, char *out)
{
	static const char digits[] = "0123456789abcdef";
	for (size_t i = 0; i < n; i++) {
		out[2 * i] = digits[p[i] >> 4];
		out[2 * i + 1] = digits[p[i] & 15];
	}
	out[2 * n] = '\0';
}

/* Constant-time comparison of our lowercase hex with a stored hex string of any case. */
static bool hex_equal(const char *ours, size_t ours_len, const char *stored, size_t stored_len)
{
	if (ours_len != stored_len)
		return false;
	uint8_t d = 0;
	for (size_t i = 0; i < ours_len; i++) {
		uint8_t c = (uint8_t)stored[i];
		/* lower-case A-F without a data-dependent branch */
		uint8_t upper = (uint8_t)(((unsigned)(c - 'A') <= 'F' - 'A') ? 0x20 : 0);
		d |= (uint8_t)((c | upper) ^ (uint8_t)ours[i]);
	}
	return d == 0;
}

static const EVP_MD *simple_md(enum passwd_algo a)
{
	switch (a) {
	case PASSWD_MD5: return EVP_md5();
	case PASSWD_SHA: return EVP_sha1();
	case PASSWD_SHA256: return EVP_sha256();
	case PASSWD_SHA512: return EVP_sha512();
	default: return NULL;
	}
}

static const EVP_MD *pbkdf2_md(const struct passwd_cfg *cfg)
{
	switch (cfg->mac_bits) {
	case 160: return EVP_sha1();
	case 224: return EVP_sha224();
	case 256: return EVP_sha256();
	case 384: return EVP_sha384();
	case 512: return EVP_sha512();
	default: break;
	}
	switch (cfg->mac_fun) {
	case PASSWD_SHA: return EVP_sha1();
	case PASSWD_SHA512: return EVP_sha512();
	default: return EVP_sha256();
	}
}

/* Hex digest of the salted password into out (>= 2 * EVP_MAX_MD_SIZE + 1). */
static bool simple_hex(const struct passwd_cfg *cfg, const char *salt, size_t salt_len, const uint8_t *pw, size_t pw_len,
		       char *out, size_t *out_len)
{
	const EVP_MD *md = simple_md(cfg->algo);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	uint8_t dig[EVP_MAX_MD_SIZE];
	unsigned dlen = 0;
	bool ok = ctx && md && EVP_DigestInit_ex(ctx, md, NULL) == 1;
	if (ok && cfg->salt_position == PASSWD_SALT_PREFIX && salt_len)
		ok = EVP_DigestUpdate(ctx, salt, salt_len) == 1;
	if (ok && pw_len)
		ok = EVP_DigestUpdate(ctx, pw, pw_len) == 1;
	if (ok && cfg->salt_position == PASSWD_SALT_SUFFIX && salt_len)
		ok = EVP_DigestUpdate(ctx, salt, salt_len) == 1;
	if (ok)
		ok = EVP_DigestFinal_ex(ctx, dig, &dlen) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok)
		return false;
	hex_lower(dig, dlen, out);
	*out_len = 2 * (size_t)dlen;
	return true;
}

/* The salted text `plain` stores: fresh allocation of *len bytes (+ NUL). */
static char *plain_text(const struct passwd_cfg *cfg, const char *salt, size_t salt_len, const uint8_t *pw, size_t pw_len,
			size_t *len)
{
	size_t sl = cfg->salt_position == PASSWD_SALT_DISABLE ? 0 : salt_len;
	char *t = xmalloc(pw_len + sl + 1);
	if (cfg->salt_position == PASSWD_SALT_PREFIX) {
		memcpy(t, salt, sl);
		memcpy(t + sl, pw, pw_len);
	} else {
		memcpy(t, pw, pw_len);
		memcpy(t + pw_len, salt, sl);
	}
	t[pw_len + sl] = '\0';
	*len = pw_len + sl;
	return t;
}

/* pbkdf2 as lowercase hex into a fresh string. */
static char *pbkdf2_hex(const struct passwd_cfg *cfg, const char *salt, size_t salt_len, const uint8_t *pw, size_t pw_len)
{
	const EVP_MD *md = pbkdf2_md(cfg);
	size_t dk = cfg->dk_length ? cfg->dk_length : (size_t)EVP_MD_get_size(md);
	if (dk == 0 || dk > PBKDF2_MAX_DK || cfg->iterations == 0 || cfg->iterations > 0x7fffffff || pw_len > 0x7fffffff ||
	    salt_len > 0x7fffffff)
		return NULL;
	uint8_t *key = xmalloc(dk);
	char *hex = NULL;
	/* OpenSSL wants a non-NULL pointer even for an empty password */
	if (PKCS5_PBKDF2_HMAC(pw_len ? (const char *)pw : "", (int)pw_len, (const unsigned char *)(salt ? salt : ""),
			      (int)salt_len, (int)cfg->iterations, md, (int)dk, key) == 1) {
		hex = xmalloc(2 * dk + 1);
		hex_lower(key, dk, hex);
	}
	OPENSSL_cleanse(key, dk);
	free(key);
	return hex;
}

/* bcrypt of password with setting (a full hash or a gensalt string); NULL on failure.
 * crypt works on C strings: a password with a NUL byte is refused rather than truncated. */
static bool bcrypt_run(const char *setting, const uint8_t *pw, size_t pw_len, struct crypt_data *cd)
{
	if (memchr(pw, '\0', pw_len))
		return false;
	char *p = xmalloc(pw_len + 1);
	memcpy(p, pw, pw_len);
	p[pw_len] = '\0';
	memset(cd, 0, sizeof *cd);
	char *res = crypt_rn(p, setting, cd, (int)sizeof *cd);
	OPENSSL_cleanse(p, pw_len);
	free(p);
	return res && res[0] == '$';
}

static bool is_bcrypt_string(const char *h, size_t len)
{
	/* $2a$NN$ + 53 characters */
	return len == 60 && h[0] == '$' && h[1] == '2' && (h[2] == 'a' || h[2] == 'b' || h[2] == 'y') && h[3] == '$' &&
	       h[6] == '$' && memchr(h, '\0', len) == NULL;
}

/* ---- check and hash ---- */

bool passwd_check(const struct passwd_cfg *cfg, const char *hash, size_t hash_len, const char *salt, size_t salt_len,
		  const uint8_t *password, size_t password_len)
{
	if (!password || !hash)
		return false;
	if (!salt) {
		salt = "";
		salt_len = 0;
	}
	switch (cfg->algo) {
	case PASSWD_PLAIN: {
		size_t len = 0;
		char *t = plain_text(cfg, salt, salt_len, password, password_len, &len);
		bool eq = passwd_ct_equal(t, len, hash, hash_len);
		OPENSSL_cleanse(t, len);
		free(t);
		return eq;
	}
	case PASSWD_MD5:
	case PASSWD_SHA:
	case PASSWD_SHA256:
	case PASSWD_SHA512: {
		char hex[2 * EVP_MAX_MD_SIZE + 1];
		size_t len = 0;
		return simple_hex(cfg, salt, salt_len, password, password_len, hex, &len) &&
		       hex_equal(hex, len, hash, hash_len);
	}
	case PASSWD_BCRYPT: {
		if (!is_bcrypt_string(hash, hash_len))
			return false;
		char setting[61];
		memcpy(setting, hash, 60);
		setting[60] = '\0';
		struct crypt_data *cd = xmalloc(sizeof *cd);
		bool eq = bcrypt_run(setting, password, password_len, cd) &&
			  passwd_ct_equal(cd->output, strnlen(cd->output, sizeof cd->output), setting, 60);
		OPENSSL_cleanse(cd, sizeof *cd);
		free(cd);
		return eq;
	}
	case PASSWD_PBKDF2: {
		char *hex = pbkdf2_hex(cfg, salt, salt_len, password, password_len);
		bool eq = hex && hex_equal(hex, strlen(hex), hash, hash_len);
		free(hex);
		return eq;
	}
	}
	return false;
}

static char *random_salt(void)
{
	uint8_t r[16];
	if (RAND_bytes(r, sizeof r) != 1)
		return NULL;
	char *s = xmalloc(33);
	hex_lower(r, sizeof r, s);
	return s;
}

bool passwd_hash(const struct passwd_cfg *cfg, const uint8_t *password, size_t password_len, char **hash, char **salt)
{
	*hash = *salt = NULL;
	if (!password)
		return false;
	switch (cfg->algo) {
	case PASSWD_PLAIN: {
		size_t len = 0;
		*salt = xstrdup("");
		*hash = plain_text(cfg, "", 0, password, password_len, &len);
		return true;
	}
	case PASSWD_MD5:
	case PASSWD_SHA:
	case PASSWD_SHA256:
	case PASSWD_SHA512: {
		char hex[2 * EVP_MAX_MD_SIZE + 1];
		size_t len = 0;
		if (!(*salt = random_salt()))
			return false;
		if (!simple_hex(cfg, *salt, strlen(*salt), password, password_len, hex, &len))
			goto fail;
		*hash = xstrdup(hex);
		return true;
	}
	case PASSWD_BCRYPT: {
		unsigned rounds = cfg->salt_rounds < BCRYPT_MIN_ROUNDS ? BCRYPT_MIN_ROUNDS
				: cfg->salt_rounds > BCRYPT_MAX_ROUNDS ? BCRYPT_MAX_ROUNDS : cfg->salt_rounds;
		char setting[CRYPT_GENSALT_OUTPUT_SIZE];
		if (!crypt_gensalt_rn("$2b$", rounds, NULL, 0, setting, (int)sizeof setting))
			return false;
		struct crypt_data *cd = xmalloc(sizeof *cd);
		bool ok = bcrypt_run(setting, password, password_len, cd);
		if (ok)
			*hash = xstrdup(cd->output);
		OPENSSL_cleanse(cd, sizeof *cd);
		free(cd);
		if (!ok)
			return false;
		*salt = xstrdup("");
		return true;
	}
	case PASSWD_PBKDF2:
		if (!(*salt = random_salt()))
			return false;
		if (!(*hash = pbkdf2_hex(cfg, *salt, strlen(*salt), password, password_len)))
			goto fail;
		return true;
	}
fail:
	free(*salt);
	free(*hash);
	*hash = *salt = NULL;
	return false;
}
