/* `authorization.sources = [{type = http, ...}]` (EMQX 5.8, reference/emqx.md §5):
 *
 *   { type = http, enable = true
 *     method = post                               # or get (default post)
 *     url = "http://127.0.0.1:8080/mqtt/acl"      # path and query may hold placeholders
 *     headers { "X-Request-Source" = "bulwark" }
 *     body { username = "${username}", topic = "${topic}", action = "${action}" }
 *     request_timeout = 30s }
 *
 * Placeholders: authz_tmpl_vars (${username}, ${clientid}, ${peerhost}, ${topic},
 * ${action} publish|subscribe, ${qos}, ${retain}, ${mountpoint}, ${proto_name},
 * ${cert_common_name}, ${cert_subject}, ${client_attrs.NAME}, ...). The URL's path and
 * query are rendered URL-escaped; header values raw (a value with CR, LF or NUL fails the
 * request); the body as JSON strings (content-type application/json, the default) or as a
 * form (application/x-www-form-urlencoded); with GET the body goes to the query string.
 * Headers default as EMQX's (accept, cache-control, connection, keep-alive, and for POST
 * content-type: application/json); a GET must not carry content-type.
 *
 * Other keys: connect_timeout (15s), pool_size (8, this source's own HTTP client),
 * enable_pipelining (accepted), ssl { enable, verify, cacertfile, certfile, keyfile,
 * server_name_indication }; max_retries, retry_interval, pool_type, max_inactive are EMQX
 * settings not used (warning).
 *
 * The answer (hz_verdict, EMQX emqx_authz_http):
 *   204 -> ALLOW;
 *   200 with a JSON (or form) body -> "result": allow -> ALLOW, deny -> DENY, ignore ->
 *   NOMATCH; a body without a valid result -> NOMATCH (warning);
 *   any other status -> NOMATCH (debug log);
 *   no answer (refused, timeout, too large) -> AUTHZ_ERROR.
 *
 * The settings, request building and the HTTP client are auth/http_req.h's, shared with
 * the HTTP authenticator.
 *
 * Threads: start() runs on the client's loop, builds the request and starts it on this
 * source's HTTP client (net/http.h); the answer comes back on the same loop, where
 * authz_call_done is called. Nothing blocks.
 */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/authn_http_util.h"
#include "auth/http_req.h"
#include "auth/template.h"
#include "authz/source.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"
#include "net/http.h"

#define HZ_MAX_RESPONSE (64u * 1024u)

struct hz_source {
	struct http_req_cfg *cfg;
	struct http_req_client client;
};

struct hz_pending {
	struct authz_call *call;
};

/* ---- the answer ---- */

/* The value of key in an application/x-www-form-urlencoded body, percent-decoded into out
 * (NUL-terminated, truncated). False when absent. */
static bool hz_form_get(const char *body, size_t len, const char *key, char *out, size_t outlen)
{
	const char *p = body, *end = body + len;
	size_t klen = strlen(key);
	while (p < end) {
		const char *amp = memchr(p, '&', (size_t)(end - p));
		const char *stop = amp ? amp : end;
		const char *eq = memchr(p, '=', (size_t)(stop - p));
		if (eq && (size_t)(eq - p) == klen && memcmp(p, key, klen) == 0) {
			size_t o = 0;
			for (const char *v = eq + 1; v < stop && o + 1 < outlen; v++) {
				int hi, lo;
				if (*v == '+') {
					out[o++] = ' ';
				} else if (*v == '%' && stop - v >= 3 && (hi = authn_http_hexval(v[1])) >= 0 &&
					   (lo = authn_http_hexval(v[2])) >= 0) {
					out[o++] = (char)(hi * 16 + lo);
					v += 2;
				} else {
					out[o++] = *v;
				}
			}
			out[o] = '\0';
			return true;
		}
		p = stop + 1;
	}
	return false;
}

/* The verdict an HTTP authorization answer gives (see the header comment). why gets a
 * short reason for the logs; *malformed is set for a 200 answer without a valid result. */
static enum authz_verdict hz_verdict(int status, const char *content_type, const uint8_t *body, size_t len, char *why,
				     size_t whylen, bool *malformed)
{
	*malformed = false;
	if (status == 0) {
		snprintf(why, whylen, "no answer");
		return AUTHZ_ERROR;
	}
	if (status == 204) {
		snprintf(why, whylen, "204: allow");
		return AUTHZ_ALLOW;
	}
	if (status != 200) {
		snprintf(why, whylen, "status %d: no match", status);
		return AUTHZ_NOMATCH;
	}
	const char *ct = content_type && content_type[0] ? content_type : "application/json";
	char result[16] = "";
	bool found = false;
	if (strncasecmp(ct, "application/x-www-form-urlencoded", 33) == 0) {
		found = hz_form_get(body ? (const char *)body : "", len, "result", result, sizeof result);
	} else if (strncasecmp(ct, "application/json", 16) == 0) {
		json_t *doc = json_loadb(body ? (const char *)body : "", len, 0, NULL);
		const json_t *r = json_is_object(doc) ? json_object_get(doc, "result") : NULL;
		if (r && json_is_string(r)) {
			snprintf(result, sizeof result, "%s", json_string_value(r));
			found = strlen(json_string_value(r)) < sizeof result;
		}
		json_decref(doc);
	} else {
		char shown[64];
		authn_http_printable(shown, sizeof shown, ct);
		snprintf(why, whylen, "200 with content-type %s (expected application/json or "
				      "application/x-www-form-urlencoded): no match", shown);
		*malformed = true;
		return AUTHZ_NOMATCH;
	}
	if (found && strcmp(result, "allow") == 0) {
		snprintf(why, whylen, "200: allow");
		return AUTHZ_ALLOW;
	}
	if (found && strcmp(result, "deny") == 0) {
		snprintf(why, whylen, "200: deny");
		return AUTHZ_DENY;
	}
	if (found && strcmp(result, "ignore") == 0) {
		snprintf(why, whylen, "200: ignore");
		return AUTHZ_NOMATCH;
	}
	snprintf(why, whylen, "200 without a result of allow, deny or ignore: no match");
	*malformed = true;
	return AUTHZ_NOMATCH;
}

/* ---- configuration ---- */

static const struct http_req_kind hz_kind = {
	.vars = authz_tmpl_vars,
	.request_timeout_ms = 30000,
	.url_required = "url is required for type = http",
	.not_utf8 = "a value is not UTF-8 and cannot be sent in a JSON body",
};

static const struct cfg_field hz_fields[] = {
	{ "type", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_skip },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_skip },
	HTTP_REQ_FIELDS,
	{ "max_inactive", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void hz_free_config(void *p)
{
	http_req_cfg_unref(p);
}

static void *hz_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return http_req_parse(r, m, hz_fields, &hz_kind);
}

/* ---- requests ---- */

static const char *hz_lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch,
			     size_t scratch_len)
{
	return authz_call_var(arg, name, name_len, len, scratch, scratch_len);
}

static void hz_on_response(void *arg, const struct http_response *resp)
{
	struct hz_pending *pc = arg;
	char why[200];
	bool malformed;
	enum authz_verdict v = hz_verdict(resp->status, resp->content_type, resp->body, resp->body_len, why, sizeof why,
					  &malformed);
	if (v == AUTHZ_ERROR)
		log_debug("authorization http: request failed: %.160s", resp->error ? resp->error : "?");
	else if (malformed)
		log_warn("authorization http: %s", why);
	else
		log_debug("authorization http: %s in %llu ms", why, (unsigned long long)resp->elapsed_ms);
	authz_call_done(pc->call, v);
	free(pc);
}

/* A call whose loop stopped: answered at shutdown. */
static void hz_abandon(void *arg)
{
	struct hz_pending *pc = arg;
	authz_call_done(pc->call, AUTHZ_ERROR);
	free(pc);
}

static void hz_start(struct authz_source *as, struct authz_call *call)
{
	struct hz_source *s = (struct hz_source *)as;
	const struct http_req_cfg *c = s->cfg;
	struct buf url = { 0 }, body = { 0 };
	char **hdrs = NULL;
	const char *why = NULL;
	if (!http_req_build(c, hz_lookup, call, &url, &body, &hdrs, &why)) {
		log_warn("authorization http: cannot build the request: %s", why);
		authz_call_done(call, AUTHZ_ERROR);
		goto out;
	}
	struct hz_pending *pc = xcalloc(1, sizeof *pc);
	pc->call = call;
	http_req_client_start(&s->client, c, &url, &body, hdrs, HZ_MAX_RESPONSE, hz_on_response, pc);
out:
	http_req_free_headers(hdrs);
	buf_free(&url);
	buf_free(&body);
}

/* ---- life cycle ---- */

static struct authz_source *hz_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	struct http_req_cfg *c = (struct http_req_cfg *)cfgp;
	struct hz_source *s = xcalloc(1, sizeof *s);
	if (!http_req_client_init(&s->client, c, env ? env->main_loop : NULL)) {
		free(s);
		snprintf(err, errlen, "the HTTP client could not start");
		return NULL;
	}
	http_req_cfg_ref(c);
	s->cfg = c;
	return (struct authz_source *)s;
}

static void hz_destroy(struct authz_source *as)
{
	struct hz_source *s = (struct hz_source *)as;
	if (!s)
		return;
	http_req_client_fini(&s->client, hz_abandon);
	http_req_cfg_unref(s->cfg);
	free(s);
}

static const struct authz_source_ops hz_ops = {
	.type = "http",
	.async = true,
	.parse = hz_parse,
	.free_config = hz_free_config,
	.create = hz_create,
	.destroy = hz_destroy,
	.start = hz_start,
};

__attribute__((constructor)) static void hz_register(void)
{
	authz_source_register(&hz_ops);
}
