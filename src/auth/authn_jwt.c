/* `mechanism = jwt` (EMQX 5.8, reference/emqx.md §4.5). The token parsing, signatures and
 * claim helpers are in auth/jwt.c; this file holds the config, the JWKS cache and the
 * decisions.
 *
 * Config keys (besides mechanism/enable, read by the chain core):
 *   from                    password (default) | username: the CONNECT field holding the token
 *   use_jwks                false (default) | true
 *   algorithm               hmac-based | public-key (without JWKS; inferred from secret or
 *                           public_key when absent)
 *   secret                  hmac-based: the HMAC secret (required, not empty)
 *   secret_base64_encoded   hmac-based: secret is base64 (default false)
 *   public_key              public-key: PEM text (public key, PKCS#1 RSA key or certificate), or
 *                           the path of a file holding it; loaded at start-up
 *   endpoint                JWKS: the URL of the key set (required)
 *   refresh_interval        JWKS: seconds between refreshes (default 300, at least 10)
 *   headers                 JWKS: request headers (default accept: application/json)
 *   pool_size               JWKS: connections to the endpoint (default 8)
 *   ssl { ... }             JWKS: client TLS, as for the HTTP authenticator
 *   acl_claim_name          "acl": the claim copied into the result's ACL
 *   verify_claims           {claim = "value"} or [{name, value}]: claims that must be present
 *                           and equal; values may use ${username} and ${clientid}; exp, iat and
 *                           nbf are refused as names; `aud` matches a string exactly or an
 *                           array that contains the value
 *   disconnect_after_expire true: the result's expire_at is the token's exp (the broker
 *                           disconnects the client with 0x87 then)
 *   Keys of another variant (secret with use_jwks = true, ...) are errors, as in EMQX.
 *
 * Algorithms: hmac-based accepts HS256/384/512 only; public-key and JWKS accept RS*, PS*, ES*
 * and EdDSA only; `alg: none` is always refused, and a key verifies only the algorithms of its
 * type.
 *
 * Outcomes (EMQX 5.x):
 *   - no token (the field is absent), enhanced authentication          -> IGNORE
 *   - a malformed token, a refused algorithm, a signature that does not
 *     verify, or (JWKS) no key for the token's kid                     -> IGNORE, as EMQX 5 does
 *     for an invalid signature (6.x would apply the backend-failure policy instead; SPEC.md
 *     asks for 5.8). The chain goes on, and if nothing else accepts the client it is not
 *     authorized (0x87 / 5).
 *   - exp reached, nbf in the future, exp/nbf not numbers, a verify_claims claim missing or
 *     different, an acl claim of the wrong shape                        -> DENY 0x86 (v3: 4)
 *   - JWKS without any usable key (never fetched, or dropped)          -> AUTHN_ERROR (backend failure)
 *   - otherwise ALLOW with is_superuser, acl (JSON text of the claim), client_attrs (string
 *     members of the claim), clientid_override, expire_at = exp.
 *
 * JWKS cache: the key set is fetched when the authenticator is created and then every
 * refresh_interval on env->main_loop, with this authenticator's own HTTP client. A failed
 * refresh (no answer, a status other than 200, a body without a usable key) keeps the last
 * keys and logs a warning; after 5 consecutive failed periodic refreshes (EMQX 6.x
 * max_fail_count) the keys are dropped and tokens get AUTHN_ERROR until a refresh succeeds.
 * A token whose kid no cached key has, or any token while no keys are cached, triggers an
 * early refresh, at most one per 5 s (the client waits for it, then is verified against the
 * new keys; when rate-limited it is judged with the keys at hand). Early refresh failures do
 * not count towards the 5, so unknown-kid traffic cannot make the broker drop good keys.
 *
 * Threads: verification runs inline on the calling worker loop (the keys are a refcounted
 * immutable set swapped under a mutex). Fetches complete on the main loop, which also answers
 * the calls that waited for them. create() and destroy() run on the main loop's thread (at
 * start-up and shutdown).
 */
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/authn.h"
#include "auth/authn_http_util.h"
#include "auth/jwt.h"
#include "auth/template.h"
#include "config/values.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/list.h"
#include "core/log.h"
#include "net/http.h"
#include "net/loop.h"

#define JWKS_MAX_FAIL_COUNT 5
#define JWKS_EARLY_MIN_MS 5000
#define JWKS_FETCH_TIMEOUT_MS 10000
#define JWKS_MAX_RESPONSE (1024u * 1024u)
#define JWKS_MAX_WAITERS 10000
#define JWT_MAX_KEY_FILE (1024 * 1024)

enum { ALG_HMAC, ALG_PUBLIC_KEY, ALG_UNSET };

struct claim_rule {
	char *name;
	struct tmpl *value;
};

struct jwt_cfg {
	atomic_int refs;
	bool from_username;
	int algorithm;
	bool use_jwks;
	char *secret;
	bool secret_b64;
	char *public_key;
	struct jwt_key key;        /* hmac-based / public-key: the one key */
	char *endpoint;
	uint32_t refresh_s;
	struct authn_http_header *headers;
	size_t nheaders;
	uint32_t pool_size;
	struct authn_http_ssl ssl;
	char *acl_claim_name;
	struct claim_rule *claims;
	size_t nclaims;
	bool disconnect_after_expire;
	/* Parse-time: which members were given (for the variant checks). */
	const struct hocon_member *m_secret, *m_b64, *m_public_key, *m_endpoint, *m_refresh, *m_headers, *m_pool,
		*m_ssl, *m_algorithm;
};

struct keyset {
	atomic_int refs;
	struct jwt_key *v;
	size_t n;
};

struct waiter {
	struct list link;
	struct authn_call *call;
	struct jwt tok;
};

struct authn {
	struct jwt_cfg *cfg;
	char *id;
	/* JWKS. */
	struct http_client *hc;
	struct loop *main_loop;
	pthread_mutex_t lock;      /* protects everything below but the timer */
	struct keyset *keys;       /* NULL while none are usable */
	bool fetching;
	bool fetch_periodic;       /* the fetch in flight is (or stands in for) a periodic refresh */
	unsigned fails;            /* consecutive failed periodic refreshes */
	uint64_t last_early_ms;
	struct list waiters;
	size_t nwaiters;
	bool destroying;
	struct timer refresh;      /* main loop only */
};

static const char *const claim_vars[] = { "username", "clientid", NULL };

/* ---- configuration ---- */

static void cfg_unref(struct jwt_cfg *c)
{
	if (!c || atomic_fetch_sub(&c->refs, 1) != 1)
		return;
	if (c->secret)
		memset(c->secret, 0, strlen(c->secret));
	free(c->secret);
	free(c->public_key);
	jwt_key_clear(&c->key);
	free(c->endpoint);
	authn_http_headers_free(c->headers, c->nheaders);
	authn_http_ssl_free(&c->ssl);
	free(c->acl_claim_name);
	for (size_t i = 0; i < c->nclaims; i++) {
		free(c->claims[i].name);
		tmpl_free(c->claims[i].value);
	}
	free(c->claims);
	free(c);
}

static void free_config(void *p)
{
	cfg_unref(p);
}

static bool skip_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return true; /* read by the chain core */
}

static bool custom_from(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "password", "username", NULL };
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	((struct jwt_cfg *)target)->from_username = v == 1;
	return true;
}

static bool custom_algorithm(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "hmac-based", "public-key", NULL };
	struct jwt_cfg *c = target;
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	c->algorithm = v;
	c->m_algorithm = m;
	return true;
}

#define REMEMBER(fn, field, then)                                                                 \
	static bool fn(struct cfg_reader *r, const struct hocon_member *m, void *target)          \
	{                                                                                         \
		struct jwt_cfg *c = target;                                                       \
		c->field = m;                                                                     \
		return then;                                                                      \
	}
REMEMBER(custom_secret, m_secret, cfgr_string(r, m, &c->secret))
REMEMBER(custom_b64, m_b64, cfgr_bool(r, m, &c->secret_b64))
REMEMBER(custom_public_key, m_public_key, cfgr_string(r, m, &c->public_key))
REMEMBER(custom_endpoint, m_endpoint, cfgr_string(r, m, &c->endpoint))
REMEMBER(custom_headers, m_headers, authn_http_headers_parse(r, m, &c->headers, &c->nheaders))
#undef REMEMBER

static bool custom_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct jwt_cfg *c = target;
	c->m_ssl = m;
	authn_http_ssl_free(&c->ssl);
	return authn_http_ssl_parse(r, m, &c->ssl);
}

static bool custom_pool(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct jwt_cfg *c = target;
	uint64_t v;
	c->m_pool = m;
	if (!cfgr_uint(r, m, 1, 1024, &v))
		return false;
	c->pool_size = (uint32_t)v;
	return true;
}

/* Seconds (EMQX: an integer, at least 10); a duration such as "5m" is accepted too. */
static bool custom_refresh(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct jwt_cfg *c = target;
	const char *s = cfgr_scalar(m->value);
	uint64_t v = 0;
	c->m_refresh = m;
	if (!s || m->value->type == HOCON_BOOL || !cfg_parse_duration_s(s, &v))
		return cfgr_fail(r, m, "expected a number of seconds (at least 10), got %s",
				 s ? s : hocon_type_str(m->value->type));
	if (v < 10 || v > 30 * 24 * 3600)
		return cfgr_fail(r, m, "expected a number of seconds in 10..2592000, got %s", s);
	c->refresh_s = (uint32_t)v;
	return true;
}

static bool add_claim(struct cfg_reader *r, const struct hocon_member *where, struct jwt_cfg *c, const char *name,
		      const struct hocon_node *val)
{
	const char *v = cfgr_scalar(val);
	if (!*name)
		return cfgr_fail(r, where, "a claim name cannot be empty");
	if (strcmp(name, "exp") == 0 || strcmp(name, "iat") == 0 || strcmp(name, "nbf") == 0)
		return cfgr_fail(r, where, "%s cannot be verified here: exp and nbf are always checked when present (EMQX)",
				 name);
	if (!v)
		return cfgr_fail(r, where, "the value of claim %s must be a string, got %s", name, hocon_type_str(val->type));
	for (size_t i = 0; i < c->nclaims; i++)
		if (strcmp(c->claims[i].name, name) == 0)
			return cfgr_fail(r, where, "claim %s is listed twice", name);
	/* Only ${username} and ${clientid} render; other placeholders stay literal text (EMQX). */
	for (const char *p = strstr(v, "${"); p; p = strstr(p + 2, "${")) {
		if (strncmp(p, "${username}", 11) != 0 && strncmp(p, "${clientid}", 11) != 0)
			log_warn("%s:%d: %s: claim %s: only ${username} and ${clientid} are rendered here; %.40s stays "
				 "literal",
				 cfgr_file(where), where->line, r->path, name, p);
	}
	c->claims = xrealloc(c->claims, (c->nclaims + 1) * sizeof *c->claims);
	c->claims[c->nclaims].name = xstrdup(name);
	c->claims[c->nclaims].value = tmpl_parse(v, claim_vars);
	c->nclaims++;
	return true;
}

static bool custom_claims(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct jwt_cfg *c = target;
	const struct hocon_node *n = m->value;
	if (n->type == HOCON_OBJECT) {
		for (size_t i = 0; i < n->n; i++) {
			const struct hocon_member *cm = &n->members[i];
			size_t old = cfgr_path_push(r, cm->key);
			bool ok = add_claim(r, cm, c, cm->key, cm->value);
			cfgr_path_pop(r, old);
			if (!ok)
				return false;
		}
		return true;
	}
	if (n->type != HOCON_ARRAY)
		return cfgr_fail(r, m, "expected {claim = \"value\", ...} or [{name = ..., value = ...}, ...]");
	for (size_t i = 0; i < n->n; i++) {
		const struct hocon_node *it = n->items[i];
		struct hocon_member im = { .key = m->key, .file = it->file, .line = it->line, .value = (struct hocon_node *)it };
		if (it->type != HOCON_OBJECT)
			return cfgr_fail(r, &im, "item %zu: expected {name = ..., value = ...}", i + 1);
		const struct hocon_member *nm = hocon_get_member(it, "name");
		const struct hocon_member *vm = hocon_get_member(it, "value");
		if (!nm || !vm || it->n != 2 || !cfgr_scalar(nm->value))
			return cfgr_fail(r, &im, "item %zu: expected exactly {name = \"claim\", value = \"...\"}", i + 1);
		if (!add_claim(r, &im, c, cfgr_scalar(nm->value), vm->value))
			return false;
	}
	return true;
}

#define JF(f) offsetof(struct jwt_cfg, f)
static const struct cfg_field jwt_fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_key },
	{ "from", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_from },
	{ "use_jwks", CFG_F_BOOL, JF(use_jwks), 0, 0, NULL, NULL },
	{ "algorithm", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_algorithm },
	{ "secret", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_secret },
	{ "secret_base64_encoded", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_b64 },
	{ "public_key", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_public_key },
	{ "endpoint", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_endpoint },
	{ "refresh_interval", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_refresh },
	{ "headers", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_headers },
	{ "pool_size", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_pool },
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ssl },
	{ "acl_claim_name", CFG_F_STRING, JF(acl_claim_name), 0, 0, NULL, NULL },
	{ "verify_claims", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_claims },
	{ "disconnect_after_expire", CFG_F_BOOL, JF(disconnect_after_expire), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* A key given where the variant does not use it. */
static bool refuse(struct cfg_reader *r, const struct hocon_member *m, const char *why)
{
	size_t old = cfgr_path_push(r, m->key);
	cfgr_fail(r, m, "not used %s", why);
	cfgr_path_pop(r, old);
	return false;
}

static bool load_public_key(struct cfg_reader *r, struct jwt_cfg *c)
{
	const struct hocon_member *m = c->m_public_key;
	size_t old = cfgr_path_push(r, "public_key");
	char err[256];
	bool ok = false;
	char *text = NULL;
	size_t len = 0;
	if (strstr(c->public_key, "-----BEGIN")) {
		text = xstrdup(c->public_key);
		len = strlen(text);
	} else {
		FILE *f = fopen(c->public_key, "rb");
		if (!f) {
			cfgr_fail(r, m, "neither PEM text nor a readable file: %s", c->public_key);
			goto out;
		}
		text = xmalloc(JWT_MAX_KEY_FILE + 1);
		len = fread(text, 1, JWT_MAX_KEY_FILE + 1, f);
		fclose(f);
		if (len > JWT_MAX_KEY_FILE) {
			cfgr_fail(r, m, "%s is larger than 1 MB", c->public_key);
			goto out;
		}
		text[len] = '\0';
	}
	if (!jwt_key_from_pem(text, len, &c->key, err, sizeof err)) {
		cfgr_fail(r, m, "%s", err);
		goto out;
	}
	ok = true;
out:
	free(text);
	cfgr_path_pop(r, old);
	return ok;
}

static bool check_variant(struct cfg_reader *r, const struct hocon_member *m, struct jwt_cfg *c)
{
	if (c->use_jwks) {
		const char *why = "with use_jwks = true";
		if (c->m_secret)
			return refuse(r, c->m_secret, why);
		if (c->m_b64)
			return refuse(r, c->m_b64, why);
		if (c->m_public_key)
			return refuse(r, c->m_public_key, why);
		if (c->m_algorithm && c->algorithm == ALG_HMAC)
			return refuse(r, c->m_algorithm, "with use_jwks = true (the key set holds public keys)");
		if (!c->endpoint)
			return cfgr_fail(r, m, "endpoint is required with use_jwks = true");
		size_t n = strlen(c->endpoint);
		if (!(strncasecmp(c->endpoint, "http://", 7) == 0 || strncasecmp(c->endpoint, "https://", 8) == 0) ||
		    n < 9 || strpbrk(c->endpoint, " \t\r\n")) {
			size_t old = cfgr_path_push(r, "endpoint");
			cfgr_fail(r, c->m_endpoint, "expected an http:// or https:// URL");
			cfgr_path_pop(r, old);
			return false;
		}
		if (!c->nheaders || authn_http_header_find(c->headers, c->nheaders, "accept") < 0) {
			c->headers = xrealloc(c->headers, (c->nheaders + 1) * sizeof *c->headers);
			c->headers[c->nheaders].name = xstrdup("accept");
			c->headers[c->nheaders].value = xstrdup("application/json");
			c->nheaders++;
		}
		return true;
	}
	const char *why = "with use_jwks = false";
	const struct hocon_member *jwks_only[] = { c->m_endpoint, c->m_refresh, c->m_headers, c->m_pool, c->m_ssl };
	for (size_t i = 0; i < sizeof jwks_only / sizeof jwks_only[0]; i++)
		if (jwks_only[i])
			return refuse(r, jwks_only[i], why);
	if (c->algorithm == ALG_UNSET) {
		if (c->secret && !c->public_key)
			c->algorithm = ALG_HMAC;
		else if (c->public_key && !c->secret)
			c->algorithm = ALG_PUBLIC_KEY;
		else
			return cfgr_fail(r, m, "algorithm (hmac-based or public-key) is required without use_jwks");
	}
	if (c->algorithm == ALG_HMAC) {
		why = "with algorithm = hmac-based";
		if (c->m_public_key)
			return refuse(r, c->m_public_key, why);
		if (!c->secret)
			return cfgr_fail(r, m, "secret is required with algorithm = hmac-based");
		size_t old = cfgr_path_push(r, "secret");
		bool ok = true;
		struct buf sec = { 0 };
		if (!c->secret[0])
			ok = cfgr_fail(r, c->m_secret, "cannot be empty");
		else if (c->secret_b64 && (!jwt_b64_decode(c->secret, strlen(c->secret), &sec) || !sec.len))
			ok = cfgr_fail(r, c->m_secret, "is not valid base64 (secret_base64_encoded = true)");
		cfgr_path_pop(r, old);
		if (ok) {
			if (c->secret_b64)
				jwt_key_hmac(&c->key, sec.data, sec.len);
			else
				jwt_key_hmac(&c->key, (const uint8_t *)c->secret, strlen(c->secret));
		}
		if (sec.data)
			memset(sec.data, 0, sec.len);
		buf_free(&sec);
		return ok;
	}
	why = "with algorithm = public-key";
	if (c->m_secret)
		return refuse(r, c->m_secret, why);
	if (c->m_b64)
		return refuse(r, c->m_b64, why);
	if (!c->public_key)
		return cfgr_fail(r, m, "public_key is required with algorithm = public-key");
	return load_public_key(r, c);
}

static void *parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct jwt_cfg *c = xcalloc(1, sizeof *c);
	atomic_init(&c->refs, 1);
	c->algorithm = ALG_UNSET;
	c->refresh_s = 300;
	c->pool_size = 8;
	c->disconnect_after_expire = true;
	bool ok = cfgr_load_fields(r, m, m->value, jwt_fields, c) && check_variant(r, m, c);
	if (ok && !c->acl_claim_name)
		c->acl_claim_name = xstrdup("acl");
	if (ok && !c->acl_claim_name[0])
		ok = cfgr_fail(r, m, "acl_claim_name cannot be empty");
	c->m_secret = c->m_b64 = c->m_public_key = c->m_endpoint = c->m_refresh = c->m_headers = c->m_pool = c->m_ssl =
		c->m_algorithm = NULL;
	if (!ok) {
		cfg_unref(c);
		return NULL;
	}
	return c;
}

/* ---- decisions ---- */

static const char *lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch, size_t scratch_len)
{
	return authn_request_var(arg, name, name_len, len, scratch, scratch_len);
}

static void deny(struct authn_result *res, const char *fmt, const char *arg)
{
	free(res->acl);
	free(res->client_attrs);
	free(res->clientid_override);
	memset(res, 0, sizeof *res);
	res->verdict = AUTHN_DENY;
	res->rc = 0x86;
	snprintf(res->reason, sizeof res->reason, fmt, arg);
}

/* A token whose signature verified: time, required claims, result fields. */
static void judge_claims(const struct jwt_cfg *c, const struct authn_request *rq, const struct jwt *t,
			 struct authn_result *res)
{
	memset(res, 0, sizeof *res);
	int64_t exp = 0;
	switch (jwt_check_time(t->claims, clock_wall_s(), &exp)) {
	case JWT_T_OK:
		break;
	case JWT_T_EXPIRED:
		deny(res, "JWT expired%s", "");
		return;
	case JWT_T_NOT_YET:
		deny(res, "JWT not valid yet (nbf)%s", "");
		return;
	case JWT_T_BAD:
		deny(res, "JWT exp or nbf is not a number%s", "");
		return;
	}
	struct buf want = { 0 };
	for (size_t i = 0; i < c->nclaims; i++) {
		want.len = 0;
		tmpl_render(c->claims[i].value, lookup, (void *)rq, TMPL_RAW, &want);
		bool ok = jwt_claim_matches(t->claims, c->claims[i].name, want.data ? (const char *)want.data : "", want.len);
		if (!ok) {
			buf_free(&want);
			deny(res, "JWT claim %.60s missing or not the expected value", c->claims[i].name);
			return;
		}
	}
	buf_free(&want);
	const json_t *acl = json_object_get(t->claims, c->acl_claim_name);
	if (acl) {
		if (!jwt_acl_valid(acl)) {
			deny(res, "JWT claim %.60s is not a valid ACL", c->acl_claim_name);
			return;
		}
		char *s = json_dumps(acl, JSON_COMPACT);
		res->acl = s ? xstrdup(s) : NULL;
		free(s);
	}
	res->verdict = AUTHN_ALLOW;
	res->is_superuser = jwt_json_truthy(json_object_get(t->claims, "is_superuser"));
	size_t dropped = 0;
	res->client_attrs = jwt_client_attrs(json_object_get(t->claims, "client_attrs"), &dropped);
	if (dropped)
		log_debug("JWT: %zu client_attrs members that are not strings dropped", dropped);
	const json_t *cid = json_object_get(t->claims, "clientid_override");
	if (json_is_string(cid) && json_string_length(cid) && !memchr(json_string_value(cid), 0, json_string_length(cid)))
		res->clientid_override = xstrdup(json_string_value(cid));
	res->expire_at = c->disconnect_after_expire ? exp : 0;
	res->acl_expire_at = res->acl ? exp : 0; /* the token's ACL ends with the token (EMQX) */
	snprintf(res->reason, sizeof res->reason, "JWT %s verified%s", jwt_alg_name(t->alg),
		 res->is_superuser ? " (superuser)" : "");
}

/* Answer a call given the signature check's outcome. */
static void finish(struct authn *a, struct authn_call *call, const struct jwt *t, enum jwt_vres v)
{
	struct authn_result res = { 0 };
	char safe[64];
	switch (v) {
	case JWT_V_OK:
		judge_claims(a->cfg, authn_call_request(call), t, &res);
		break;
	case JWT_V_ALG_REFUSED:
		res.verdict = AUTHN_IGNORE;
		snprintf(res.reason, sizeof res.reason, "JWT algorithm %s not accepted",
			 authn_http_printable(safe, 21, json_string_value(json_object_get(t->header, "alg"))));
		break;
	case JWT_V_NO_KEY:
		res.verdict = AUTHN_IGNORE;
		snprintf(res.reason, sizeof res.reason, "no key for the JWT (%s%s)", t->kid ? "kid " : "no kid",
			 authn_http_printable(safe, sizeof safe, t->kid ? t->kid : ""));
		break;
	case JWT_V_BAD_SIG:
		res.verdict = AUTHN_IGNORE;
		snprintf(res.reason, sizeof res.reason, "JWT signature invalid");
		break;
	}
	log_debug("authentication %s: %s", a->id, res.reason);
	authn_done(call, &res);
}

static void answer(struct authn_call *call, enum authn_verdict v, const char *why)
{
	struct authn_result res = { .verdict = v };
	snprintf(res.reason, sizeof res.reason, "%s", why);
	authn_done(call, &res);
}

/* ---- JWKS ---- */

static struct keyset *keyset_ref(struct keyset *ks)
{
	if (ks)
		atomic_fetch_add(&ks->refs, 1);
	return ks;
}

static void keyset_unref(struct keyset *ks)
{
	if (ks && atomic_fetch_sub(&ks->refs, 1) == 1) {
		jwt_keys_free(ks->v, ks->n);
		free(ks);
	}
}

static bool keyset_has_kid(const struct keyset *ks, const char *kid)
{
	for (size_t i = 0; i < ks->n; i++)
		if (ks->v[i].kid && strcmp(ks->v[i].kid, kid) == 0)
			return true;
	return false;
}

static void on_jwks(void *arg, const struct http_response *resp);

/* Start a fetch (a->lock held, none in flight). */
static void fetch_locked(struct authn *a, bool periodic)
{
	const struct jwt_cfg *c = a->cfg;
	char **hdrs = xcalloc(c->nheaders + 1, sizeof *hdrs);
	for (size_t i = 0; i < c->nheaders; i++)
		hdrs[i] = xasprintf("%s: %s", c->headers[i].name, c->headers[i].value);
	struct http_request req = {
		.method = "GET",
		.url = c->endpoint,
		.headers = (const char *const *)hdrs,
		.timeout_ms = JWKS_FETCH_TIMEOUT_MS,
		.max_response = JWKS_MAX_RESPONSE,
	};
	authn_http_ssl_apply(&c->ssl, &req);
	a->fetching = true;
	a->fetch_periodic = periodic;
	http_start(a->hc, &req, a->main_loop, on_jwks, a);
	for (size_t i = 0; i < c->nheaders; i++)
		free(hdrs[i]);
	free(hdrs);
}

static void on_refresh_timer(struct timer *t)
{
	struct authn *a = container_of(t, struct authn, refresh);
	pthread_mutex_lock(&a->lock);
	if (a->fetching)
		a->fetch_periodic = true; /* an early fetch in flight stands in for this one */
	else if (!a->destroying)
		fetch_locked(a, true);
	pthread_mutex_unlock(&a->lock);
}

static void on_jwks(void *arg, const struct http_response *resp)
{
	struct authn *a = arg;
	struct keyset *fresh = NULL, *old = NULL, *cur;
	char why[300] = "";
	size_t skipped = 0;
	if (resp->status == 200) {
		struct jwt_key *v = NULL;
		size_t n = 0;
		char perr[200];
		if (!jwt_jwks_parse((const char *)resp->body, resp->body_len, &v, &n, &skipped, perr, sizeof perr)) {
			snprintf(why, sizeof why, "%s", perr);
		} else if (!n) {
			snprintf(why, sizeof why, "no usable key in the key set%s%s", skipped ? ": " : "", perr);
			jwt_keys_free(v, n);
		} else {
			fresh = xcalloc(1, sizeof *fresh);
			atomic_init(&fresh->refs, 1);
			fresh->v = v;
			fresh->n = n;
			if (skipped)
				log_warn("authentication %s: JWKS %zu key(s) skipped (%s)", a->id, skipped, perr);
		}
	} else if (resp->status) {
		snprintf(why, sizeof why, "HTTP status %d", resp->status);
	} else {
		snprintf(why, sizeof why, "%.250s", resp->error ? resp->error : "request failed");
	}

	struct list ws;
	list_init(&ws);
	pthread_mutex_lock(&a->lock);
	bool periodic = a->fetch_periodic;
	a->fetching = false;
	a->fetch_periodic = false;
	bool dropped = false;
	if (fresh) {
		old = a->keys;
		a->keys = fresh;
		a->fails = 0;
	} else if (periodic) {
		a->fails++;
		if (a->fails >= JWKS_MAX_FAIL_COUNT && a->keys) {
			old = a->keys;
			a->keys = NULL;
			dropped = true;
		}
	}
	unsigned fails = a->fails;
	bool have = a->keys != NULL;
	list_splice_back(&ws, &a->waiters);
	a->nwaiters = 0;
	cur = keyset_ref(a->keys);
	bool destroying = a->destroying;
	pthread_mutex_unlock(&a->lock);
	keyset_unref(old);

	if (destroying)
		; /* "shutting down": nothing to report */
	else if (fresh)
		log_info("authentication %s: JWKS loaded, %zu key(s)", a->id, fresh->n);
	else if (dropped)
		log_warn("authentication %s: JWKS refresh failed (%s); %u failures in a row, cached keys dropped", a->id,
			 why, fails);
	else
		log_warn("authentication %s: JWKS refresh failed (%s); %s", a->id, why,
			 have ? "keeping the last keys" : "no keys available");

	list_for_each_safe(it, &ws) {
		struct waiter *w = container_of(it, struct waiter, link);
		list_del_init(it);
		if (!cur)
			answer(w->call, AUTHN_ERROR, "JWKS keys unavailable");
		else
			finish(a, w->call, &w->tok, jwt_verify(&w->tok, cur->v, cur->n, JWT_ALGS_ASYM, true));
		jwt_free(&w->tok);
		free(w);
	}
	keyset_unref(cur);
	if (periodic && !destroying)
		timer_arm(a->main_loop, &a->refresh, (uint64_t)a->cfg->refresh_s * 1000u);
}

/* JWKS: verify now with the cached keys, or wait for a (possibly early) refresh. */
static void authenticate_jwks(struct authn *a, struct authn_call *call, struct jwt *t)
{
	pthread_mutex_lock(&a->lock);
	struct keyset *ks = keyset_ref(a->keys);
	bool need = !ks || (t->kid && !keyset_has_kid(ks, t->kid));
	if (need && a->nwaiters < JWKS_MAX_WAITERS && !a->destroying) {
		uint64_t now = clock_mono_ms();
		bool start = !a->fetching && (!a->last_early_ms || now - a->last_early_ms >= JWKS_EARLY_MIN_MS);
		if (a->fetching || start) {
			if (start) {
				a->last_early_ms = now;
				fetch_locked(a, false);
			}
			struct waiter *w = xcalloc(1, sizeof *w);
			w->call = call;
			w->tok = *t; /* moved */
			memset(t, 0, sizeof *t);
			list_push_back(&a->waiters, &w->link);
			a->nwaiters++;
			pthread_mutex_unlock(&a->lock);
			keyset_unref(ks);
			return;
		}
	}
	pthread_mutex_unlock(&a->lock);
	if (!ks)
		answer(call, AUTHN_ERROR, "JWKS keys unavailable");
	else
		finish(a, call, t, jwt_verify(t, ks->v, ks->n, JWT_ALGS_ASYM, true));
	keyset_unref(ks);
}

static void authenticate(struct authn *a, struct authn_call *call)
{
	const struct authn_request *rq = authn_call_request(call);
	const struct jwt_cfg *c = a->cfg;
	const char *tok = c->from_username ? rq->username : (const char *)rq->password;
	size_t len = c->from_username ? rq->username_len : rq->password_len;
	if (!tok) {
		answer(call, AUTHN_IGNORE, c->from_username ? "no username (JWT)" : "no password (JWT)");
		return;
	}
	if (rq->auth_method) {
		answer(call, AUTHN_IGNORE, "enhanced authentication");
		return;
	}
	struct jwt t;
	char err[160];
	if (!jwt_parse(tok, len, &t, err, sizeof err)) {
		jwt_free(&t);
		log_debug("authentication %s: not a valid JWT: %s", a->id, err);
		struct authn_result res = { .verdict = AUTHN_IGNORE };
		snprintf(res.reason, sizeof res.reason, "not a valid JWT: %s", err);
		authn_done(call, &res);
		return;
	}
	unsigned allowed = c->use_jwks || c->algorithm == ALG_PUBLIC_KEY ? JWT_ALGS_ASYM : JWT_ALGS_HMAC;
	if (t.alg == JWT_ALG_UNKNOWN || t.alg == JWT_ALG_NONE || !(allowed & JWT_ALG_BIT(t.alg)))
		finish(a, call, &t, JWT_V_ALG_REFUSED);
	else if (c->use_jwks)
		authenticate_jwks(a, call, &t);
	else
		finish(a, call, &t, jwt_verify(&t, &c->key, 1, allowed, false));
	jwt_free(&t);
}

/* ---- life cycle ---- */

static struct authn *create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	struct jwt_cfg *c = (struct jwt_cfg *)cfgp;
	struct authn *a = xcalloc(1, sizeof *a);
	a->id = xstrdup(id);
	pthread_mutex_init(&a->lock, NULL);
	list_init(&a->waiters);
	timer_init(&a->refresh, on_refresh_timer);
	atomic_fetch_add(&c->refs, 1);
	a->cfg = c;
	if (c->use_jwks) {
		a->main_loop = env ? env->main_loop : NULL;
		if (!a->main_loop) {
			snprintf(err, errlen, "%s: JWKS needs the main loop", id);
			goto fail;
		}
		a->hc = http_client_new(c->pool_size);
		if (!a->hc) {
			snprintf(err, errlen, "%s: the HTTP client could not start", id);
			goto fail;
		}
		pthread_mutex_lock(&a->lock);
		fetch_locked(a, true); /* completes on the main loop, which then arms the refresh timer */
		pthread_mutex_unlock(&a->lock);
	}
	return a;
fail:
	cfg_unref(a->cfg);
	pthread_mutex_destroy(&a->lock);
	free(a->id);
	free(a);
	return NULL;
}

static void destroy(struct authn *a)
{
	if (!a)
		return;
	pthread_mutex_lock(&a->lock);
	a->destroying = true;
	pthread_mutex_unlock(&a->lock);
	timer_cancel(&a->refresh);
	/* A fetch in flight completes now ("shutting down") and answers its waiters, or is
	 * dropped when the main loop stopped; waiters still queued are answered here. */
	http_client_free(a->hc);
	timer_cancel(&a->refresh);
	struct list ws;
	list_init(&ws);
	pthread_mutex_lock(&a->lock);
	list_splice_back(&ws, &a->waiters);
	pthread_mutex_unlock(&a->lock);
	list_for_each_safe(it, &ws) {
		struct waiter *w = container_of(it, struct waiter, link);
		list_del_init(it);
		answer(w->call, AUTHN_ERROR, "shutting down");
		jwt_free(&w->tok);
		free(w);
	}
	keyset_unref(a->keys);
	pthread_mutex_destroy(&a->lock);
	cfg_unref(a->cfg);
	free(a->id);
	free(a);
}

static const struct authn_ops jwt_ops = {
	.mechanism = "jwt",
	.backend = NULL,
	.cacheable = false,
	.parse = parse,
	.free_config = free_config,
	.create = create,
	.destroy = destroy,
	.authenticate = authenticate,
};

__attribute__((constructor)) static void register_jwt(void)
{
	authn_register(&jwt_ops);
}
