/* `mechanism = scram, backend = built_in_database` (reference/emqx.md §4.2): MQTT 5
 * enhanced authentication with SCRAM-SHA-256 / SCRAM-SHA-512 (RFC 5802, RFC 7677),
 * without channel binding.
 *
 *   CONNECT  Authentication Method "SCRAM-SHA-256", Data = client-first ("n,,n=user,r=cnonce")
 *   AUTH 0x18 (CONTINUE)  Data = server-first ("r=cnonce+snonce,s=salt,i=4096")
 *   AUTH 0x18  Data = client-final ("c=biws,r=...,p=proof")
 *   CONNACK 0  Data = server-final ("v=signature"), or 0x86 for a wrong proof.
 *
 * Users (salt, StoredKey, ServerKey, iterations, is_superuser) live in the built-in
 * database (authn_builtin_db.h) under this authenticator's own key; the password itself
 * is never stored. Per-exchange state sits in authn_call_state and is freed when the
 * exchange answers ALLOW/DENY or in auth_end. Only HMACs run per CONNECT (PBKDF2 runs
 * when a user is added), so everything is inline on the calling thread.
 */
#include "auth/authn.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "auth/authn_builtin_db.h"
#include "core/alloc.h"
#include "core/log.h"

#define SCRAM_MAX_MSG 4096     /* longest client message accepted */
#define SCRAM_MAX_NONCE 512
#define SCRAM_SALT_BYTES 16
#define SCRAM_SNONCE_BYTES 24

enum { SCRAM_SHA256, SCRAM_SHA512 };
static const char *const scram_algo_names[] = { "sha256", "sha512", NULL };
static const char *const method_names[] = { "SCRAM-SHA-256", "SCRAM-SHA-512" };

struct scram_cfg {
	int algorithm;
	uint32_t iteration_count;
};

struct scram {
	struct scram_cfg cfg;
	const EVP_MD *md;
	size_t hlen;
	struct udb *db;
	char *id;
};

/* One exchange between client-first and client-final. */
struct scram_state {
	const EVP_MD *md;
	size_t hlen;
	char *gs2_header;          /* "n,," */
	char *client_first_bare;   /* "n=user,r=cnonce" */
	char *server_first;        /* "r=cnonce+snonce,s=...,i=..." */
	char *nonce;               /* cnonce+snonce */
	char *user;                /* decoded user name */
	size_t user_len;
	uint8_t stored_key[EVP_MAX_MD_SIZE];
	uint8_t server_key[EVP_MAX_MD_SIZE];
	bool is_superuser;
};

/* ---- base64 (RFC 4648, with padding, strict) ---- */

static const char b64chars[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static char *b64_encode(const uint8_t *p, size_t n)
{
	char *out = xmalloc(4 * ((n + 2) / 3) + 1), *o = out;
	size_t i = 0;
	for (; i + 2 < n; i += 3) {
		uint32_t v = (uint32_t)p[i] << 16 | (uint32_t)p[i + 1] << 8 | p[i + 2];
		*o++ = b64chars[v >> 18];
		*o++ = b64chars[(v >> 12) & 63];
		*o++ = b64chars[(v >> 6) & 63];
		*o++ = b64chars[v & 63];
	}
	if (i < n) {
		uint32_t v = (uint32_t)p[i] << 16 | (i + 1 < n ? (uint32_t)p[i + 1] << 8 : 0);
		*o++ = b64chars[v >> 18];
		*o++ = b64chars[(v >> 12) & 63];
		*o++ = i + 1 < n ? b64chars[(v >> 6) & 63] : '=';
		*o++ = '=';
	}
	*o = '\0';
	return out;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Decode s[0..n) into out (room for n / 4 * 3 bytes); -1 when not canonical base64. */
static long b64_decode(const char *s, size_t n, uint8_t *out)
{
	if (n % 4)
		return -1;
	size_t o = 0;
	for (size_t i = 0; i < n; i += 4) {
		int v[4];
		int pad = 0;
		for (int k = 0; k < 4; k++) {
			if (s[i + k] == '=' && i + 4 == n && k >= 2) {
				v[k] = 0;
				pad++;
			} else if (pad) {
				return -1; /* data after padding */
			} else if ((v[k] = b64_val(s[i + k])) < 0) {
				return -1;
			}
		}
		uint32_t w = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 | (uint32_t)v[2] << 6 | (uint32_t)v[3];
		out[o++] = (uint8_t)(w >> 16);
		if (pad < 2)
			out[o++] = (uint8_t)(w >> 8);
		if (pad < 1)
			out[o++] = (uint8_t)w;
	}
	return (long)o;
}

/* ---- SCRAM primitives ---- */

static bool hmac(const EVP_MD *md, const uint8_t *key, size_t klen, const void *data, size_t dlen, uint8_t *out)
{
	unsigned olen = 0;
	return HMAC(md, key, (int)klen, data, dlen, out, &olen) != NULL;
}

/* StoredKey and ServerKey of a password (RFC 5802 §3). */
static bool scram_keys(const EVP_MD *md, const uint8_t *pw, size_t pwlen, const uint8_t *salt, size_t saltlen,
		       unsigned iterations, uint8_t *stored_key, uint8_t *server_key)
{
	size_t hlen = (size_t)EVP_MD_get_size(md);
	uint8_t salted[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE];
	bool ok = PKCS5_PBKDF2_HMAC(pwlen ? (const char *)pw : "", (int)pwlen, salt, (int)saltlen, (int)iterations, md,
				    (int)hlen, salted) == 1 &&
		  hmac(md, salted, hlen, "Client Key", 10, client_key) &&
		  EVP_Digest(client_key, hlen, stored_key, NULL, md, NULL) == 1 &&
		  hmac(md, salted, hlen, "Server Key", 10, server_key);
	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(client_key, sizeof client_key);
	return ok;
}

static void state_free(struct scram_state *st)
{
	if (!st)
		return;
	free(st->gs2_header);
	free(st->client_first_bare);
	free(st->server_first);
	free(st->nonce);
	free(st->user);
	OPENSSL_cleanse(st, sizeof *st);
	free(st);
}

/* A printable character allowed in a nonce: %x21-2B / %x2D-7E. */
static bool nonce_char(uint8_t c)
{
	return c >= 0x21 && c <= 0x7e && c != ',';
}

/* Parse client-first into a new state (gs2 header, bare message, user, client nonce).
 * NULL with why set when malformed or unsupported. */
static struct scram_state *parse_client_first(const uint8_t *data, size_t len, char *why, size_t whylen)
{
	if (!data || len == 0 || len > SCRAM_MAX_MSG || memchr(data, '\0', len)) {
		snprintf(why, whylen, "client-first message missing, too long or with NUL bytes");
		return NULL;
	}
	const char *s = (const char *)data, *end = s + len;
	/* gs2-cbind-flag */
	if (len >= 2 && s[0] == 'p' && s[1] == '=') {
		snprintf(why, whylen, "channel binding is not supported");
		return NULL;
	}
	if (len < 3 || (s[0] != 'n' && s[0] != 'y') || s[1] != ',') {
		snprintf(why, whylen, "malformed GS2 header");
		return NULL;
	}
	const char *p = s + 2;
	const char *authzid = NULL;
	size_t authzid_len = 0;
	if (p < end && *p == 'a') {
		if (p + 1 >= end || p[1] != '=') {
			snprintf(why, whylen, "malformed GS2 header");
			return NULL;
		}
		authzid = p + 2;
		const char *c = memchr(authzid, ',', (size_t)(end - authzid));
		if (!c) {
			snprintf(why, whylen, "malformed GS2 header");
			return NULL;
		}
		authzid_len = (size_t)(c - authzid);
		p = c;
	}
	if (p >= end || *p != ',') {
		snprintf(why, whylen, "malformed GS2 header");
		return NULL;
	}
	p++;
	const char *bare = p;
	if (end - p >= 2 && p[0] == 'm' && p[1] == '=') {
		snprintf(why, whylen, "mandatory extensions are not supported");
		return NULL;
	}
	if (end - p < 2 || p[0] != 'n' || p[1] != '=') {
		snprintf(why, whylen, "client-first message without n=");
		return NULL;
	}
	p += 2;
	const char *uend = memchr(p, ',', (size_t)(end - p));
	if (!uend) {
		snprintf(why, whylen, "client-first message without r=");
		return NULL;
	}
	/* saslname: "=2C" is ',', "=3D" is '='; any other '=' is an error */
	char *user = xmalloc((size_t)(uend - p) + 1);
	size_t ul = 0;
	for (const char *q = p; q < uend; q++) {
		if (*q == '=') {
			if (uend - q >= 3 && q[1] == '2' && q[2] == 'C')
				user[ul++] = ',';
			else if (uend - q >= 3 && q[1] == '3' && q[2] == 'D')
				user[ul++] = '=';
			else {
				free(user);
				snprintf(why, whylen, "malformed user name");
				return NULL;
			}
			q += 2;
		} else {
			user[ul++] = *q;
		}
	}
	user[ul] = '\0';
	if (ul == 0 || (authzid && (authzid_len != (size_t)(uend - p) || memcmp(authzid, p, authzid_len) != 0))) {
		free(user);
		snprintf(why, whylen, ul ? "authorization identity differs from the user name" : "empty user name");
		return NULL;
	}
	p = uend + 1;
	if (end - p < 2 || p[0] != 'r' || p[1] != '=') {
		free(user);
		snprintf(why, whylen, "client-first message without r=");
		return NULL;
	}
	p += 2;
	const char *nstart = p;
	while (p < end && *p != ',')
		p++;
	size_t nlen = (size_t)(p - nstart);
	bool good = nlen > 0 && nlen <= SCRAM_MAX_NONCE;
	for (size_t i = 0; good && i < nlen; i++)
		good = nonce_char((uint8_t)nstart[i]);
	if (!good) {
		free(user);
		snprintf(why, whylen, "malformed client nonce");
		return NULL;
	}
	/* extensions after the nonce are allowed and ignored */
	struct scram_state *st = xcalloc(1, sizeof *st);
	st->gs2_header = xstrndup(s, (size_t)(bare - s));
	st->client_first_bare = xstrndup(bare, (size_t)(end - bare));
	st->nonce = xstrndup(nstart, nlen);
	st->user = user;
	st->user_len = ul;
	return st;
}

/* Make server-first with the given server nonce; the user's credentials go into st. */
static void make_server_first(struct scram_state *st, const struct udb_user *u, const char *snonce)
{
	char *full = xasprintf("%s%s", st->nonce, snonce);
	free(st->nonce);
	st->nonce = full;
	char *salt = b64_encode(u->salt, u->salt_len);
	st->server_first = xasprintf("r=%s,s=%s,i=%u", st->nonce, salt, u->iterations);
	free(salt);
	memcpy(st->stored_key, u->stored_key, u->key_len);
	memcpy(st->server_key, u->server_key, u->key_len);
	st->is_superuser = u->is_superuser;
}

/* Check client-final against st. On success *server_final is "v=..." (malloc'd). */
static bool check_client_final(struct scram_state *st, const uint8_t *data, size_t len, char **server_final, char *why,
			       size_t whylen)
{
	*server_final = NULL;
	if (!data || len == 0 || len > SCRAM_MAX_MSG || memchr(data, '\0', len)) {
		snprintf(why, whylen, "client-final message missing, too long or with NUL bytes");
		return false;
	}
	const char *s = (const char *)data, *end = s + len;
	/* the proof is the last attribute */
	const char *pp = NULL;
	for (const char *q = end - 1; q > s; q--) {
		if (*q == ',' ) {
			pp = q;
			break;
		}
	}
	if (!pp || end - pp < 4 || pp[1] != 'p' || pp[2] != '=') {
		snprintf(why, whylen, "client-final message without a proof");
		return false;
	}
	size_t without_len = (size_t)(pp - s);
	/* c= base64(gs2 header) */
	char *cb = b64_encode((const uint8_t *)st->gs2_header, strlen(st->gs2_header));
	size_t cbl = strlen(cb);
	bool ok = without_len >= 2 + cbl && memcmp(s, "c=", 2) == 0 && memcmp(s + 2, cb, cbl) == 0 &&
		  (without_len == 2 + cbl || s[2 + cbl] == ',');
	free(cb);
	if (!ok) {
		snprintf(why, whylen, "channel binding data does not match the GS2 header");
		return false;
	}
	const char *r = s + 2 + cbl;
	size_t nl = strlen(st->nonce);
	if (r >= pp || (size_t)(pp - r) < 3 + nl || memcmp(r, ",r=", 3) != 0 || memcmp(r + 3, st->nonce, nl) != 0 ||
	    (r + 3 + nl != pp && r[3 + nl] != ',')) {
		snprintf(why, whylen, "nonce mismatch");
		return false;
	}
	uint8_t proof[SCRAM_MAX_MSG];
	long pl = b64_decode(pp + 3, (size_t)(end - pp - 3), proof);
	if (pl != (long)st->hlen) {
		snprintf(why, whylen, "malformed proof");
		return false;
	}
	struct buf am = { 0 };
	buf_append_str(&am, st->client_first_bare);
	buf_append(&am, ",", 1);
	buf_append_str(&am, st->server_first);
	buf_append(&am, ",", 1);
	buf_append(&am, s, without_len);
	uint8_t sig[EVP_MAX_MD_SIZE], client_key[EVP_MAX_MD_SIZE], stored[EVP_MAX_MD_SIZE];
	ok = hmac(st->md, st->stored_key, st->hlen, am.data, am.len, sig);
	for (size_t i = 0; ok && i < st->hlen; i++)
		client_key[i] = proof[i] ^ sig[i];
	ok = ok && EVP_Digest(client_key, st->hlen, stored, NULL, st->md, NULL) == 1 &&
	     CRYPTO_memcmp(stored, st->stored_key, st->hlen) == 0;
	if (!ok) {
		snprintf(why, whylen, "wrong password (invalid proof)");
	} else if (hmac(st->md, st->server_key, st->hlen, am.data, am.len, sig)) {
		char *v = b64_encode(sig, st->hlen);
		*server_final = xasprintf("v=%s", v);
		free(v);
	} else {
		ok = false;
		snprintf(why, whylen, "internal error");
	}
	OPENSSL_cleanse(client_key, sizeof client_key);
	OPENSSL_cleanse(sig, sizeof sig);
	buf_free(&am);
	return ok;
}

/* ---- configuration ---- */

static bool scram_skip_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)r, (void)m, (void)target;
	return true; /* mechanism, backend, enable: read by the chain core */
}

static const struct cfg_field scram_fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, scram_skip_key },
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, scram_skip_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, scram_skip_key },
	{ "algorithm", CFG_F_ENUM, offsetof(struct scram_cfg, algorithm), 0, 0, scram_algo_names, NULL },
	{ "iteration_count", CFG_F_U32, offsetof(struct scram_cfg, iteration_count), 1, 10000000, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void scram_free_config(void *p)
{
	free(p);
}

static void *scram_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct scram_cfg *c = xcalloc(1, sizeof *c);
	c->algorithm = SCRAM_SHA256;
	c->iteration_count = 4096;
	if (!cfgr_load_fields(r, m, m->value, scram_fields, c)) {
		free(c);
		return NULL;
	}
	return c;
}

/* ---- the authenticator ---- */

static struct scram *S(struct authn *a)
{
	return (struct scram *)(void *)a;
}

static bool make_scram_cred(void *ctx, const uint8_t *password, size_t password_len, struct udb_user *u, char *err,
			    size_t errlen)
{
	struct scram *sc = ctx;
	u->salt = xmalloc(SCRAM_SALT_BYTES + 1);
	u->salt_len = SCRAM_SALT_BYTES;
	u->stored_key = xcalloc(1, sc->hlen + 1);
	u->server_key = xcalloc(1, sc->hlen + 1);
	u->key_len = sc->hlen;
	u->iterations = sc->cfg.iteration_count;
	if (RAND_bytes(u->salt, SCRAM_SALT_BYTES) != 1 ||
	    !scram_keys(sc->md, password, password_len, u->salt, u->salt_len, u->iterations, u->stored_key,
			u->server_key)) {
		snprintf(err, errlen, "cannot derive the SCRAM keys");
		return false;
	}
	return true;
}

static void scram_destroy(struct authn *a)
{
	struct scram *sc = S(a);
	if (!sc)
		return;
	udb_close(sc->db);
	free(sc->id);
	free(sc);
}

static struct authn *scram_create(const void *cfgp, const struct authn_env *env, const char *id, char *err,
				  size_t errlen)
{
	const struct scram_cfg *cfg = cfgp;
	struct scram *sc = xcalloc(1, sizeof *sc);
	sc->cfg = *cfg;
	sc->md = cfg->algorithm == SCRAM_SHA512 ? EVP_sha512() : EVP_sha256();
	sc->hlen = (size_t)EVP_MD_get_size(sc->md);
	sc->id = udb_instance_key(env, cfgp, id);
	sc->db = udb_open(env->data_dir, sc->id, err, errlen);
	if (!sc->db) {
		scram_destroy((struct authn *)(void *)sc);
		return NULL;
	}
	log_info("authenticator %s: %s, %zu users in %s/auth.db", sc->id, method_names[cfg->algorithm], udb_count(sc->db),
		 env->data_dir);
	return (struct authn *)(void *)sc;
}

static void answer(struct authn_call *call, enum authn_verdict v, uint8_t rc, bool super, char *data,
		   const char *reason)
{
	struct authn_result res;
	memset(&res, 0, sizeof res);
	res.verdict = v;
	res.rc = rc;
	res.is_superuser = super;
	if (data) {
		res.auth_data = (uint8_t *)data;
		res.auth_data_len = strlen(data);
	}
	snprintf(res.reason, sizeof res.reason, "%s", reason);
	authn_done(call, &res);
}

static void scram_authenticate(struct authn *a, struct authn_call *call)
{
	struct scram *sc = S(a);
	const struct authn_request *rq = authn_call_request(call);
	char why[160];
	if (!rq->auth_method || strcmp(rq->auth_method, method_names[sc->cfg.algorithm]) != 0 || !rq->auth_data) {
		answer(call, AUTHN_IGNORE, 0, false, NULL,
		       rq->auth_method ? "another authentication method" : "no enhanced authentication");
		return;
	}
	struct scram_state *st = parse_client_first(rq->auth_data, rq->auth_data_len, why, sizeof why);
	if (!st) {
		answer(call, AUTHN_DENY, 0x86, false, NULL, why);
		return;
	}
	struct udb_user u;
	if (!udb_get(sc->db, st->user, st->user_len, &u)) {
		state_free(st);
		answer(call, AUTHN_IGNORE, 0, false, NULL, "user not found");
		return;
	}
	if (u.key_len != sc->hlen || !u.stored_key || !u.salt || u.iterations == 0) {
		udb_user_clear(&u);
		state_free(st);
		answer(call, AUTHN_DENY, 0x86, false, NULL, "stored credentials do not fit this algorithm");
		return;
	}
	st->md = sc->md;
	st->hlen = sc->hlen;
	uint8_t rnd[SCRAM_SNONCE_BYTES];
	if (RAND_bytes(rnd, sizeof rnd) != 1) {
		udb_user_clear(&u);
		state_free(st);
		answer(call, AUTHN_ERROR, 0, false, NULL, "no random bytes");
		return;
	}
	char *snonce = b64_encode(rnd, sizeof rnd);
	make_server_first(st, &u, snonce);
	free(snonce);
	udb_user_clear(&u);
	void **slot = authn_call_state(call);
	state_free(*slot);
	*slot = st;
	answer(call, AUTHN_CONTINUE, 0, false, xstrdup(st->server_first), "SCRAM server-first sent");
}

static void scram_auth_step(struct authn *a, struct authn_call *call)
{
	(void)a;
	const struct authn_request *rq = authn_call_request(call);
	void **slot = authn_call_state(call);
	struct scram_state *st = *slot;
	char why[160];
	char *final = NULL;
	if (!st) {
		answer(call, AUTHN_DENY, 0x86, false, NULL, "SCRAM step without an exchange in progress");
		return;
	}
	bool ok = check_client_final(st, rq->auth_data, rq->auth_data_len, &final, why, sizeof why);
	bool super = st->is_superuser;
	*slot = NULL;
	state_free(st);
	if (ok)
		answer(call, AUTHN_ALLOW, 0, super, final, "SCRAM proof verified");
	else
		answer(call, AUTHN_DENY, 0x86, false, NULL, why);
}

static void scram_auth_end(struct authn *a, struct authn_call *call)
{
	(void)a;
	void **slot = authn_call_state(call);
	state_free(*slot);
	*slot = NULL;
}

static bool scram_ctl(struct authn *a, int argc, char **argv, struct buf *out)
{
	struct scram *sc = S(a);
	return udb_ctl(sc->db, argc, argv, out, make_scram_cred, sc);
}

static const struct authn_ops scram_ops = {
	.mechanism = "scram",
	.backend = "built_in_database",
	.cacheable = false,
	.parse = scram_parse,
	.free_config = scram_free_config,
	.create = scram_create,
	.destroy = scram_destroy,
	.authenticate = scram_authenticate,
	.auth_step = scram_auth_step,
	.auth_end = scram_auth_end,
	.ctl = scram_ctl,
};

__attribute__((constructor)) static void scram_register(void)
{
	authn_register(&scram_ops);
}
