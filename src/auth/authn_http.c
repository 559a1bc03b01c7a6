/* `mechanism = password_based, backend = http` (EMQX 5.8, reference/emqx.md §4.2, §4.6).
 *
 * Config keys (besides mechanism/backend/enable, read by the chain core):
 *   method            get | post (default post)
 *   url               required; http:// or https://. The path and query may hold
 *                     placeholders (tmpl_authn_vars), rendered URL-escaped; the scheme, host and
 *                     port may not.
 *   headers           map name = "value" (values may hold placeholders). Names are lower-cased.
 *                     EMQX's defaults fill the names not given: accept: application/json,
 *                     cache-control: no-cache, connection: keep-alive,
 *                     keep-alive: "timeout=30, max=1000", and for POST content-type:
 *                     application/json. A GET must not carry content-type (config error); a
 *                     POST's content-type must be application/json or
 *                     application/x-www-form-urlencoded.
 *   body              map (keys and string values are templates; numbers/booleans/null are
 *                     literals; objects nest for a JSON body). POST: a JSON object whose
 *                     rendered values are JSON strings, or a form body with the form
 *                     content-type; GET: appended to the URL as a query string.
 *   request_timeout   5s: the whole request, connection included
 *   connect_timeout   15s (bounded by request_timeout)
 *   pool_size         8: concurrent connections to the server (this authenticator has its own
 *                     HTTP client, so its pool is its own)
 *   enable_pipelining accepted and ignored (libcurl multiplexes on its own)
 *   max_retries, retry_interval, pool_type: EMQX settings not used (warning)
 *   ssl { enable, verify, cacertfile, certfile, keyfile, server_name_indication }
 *
 * The settings, request building and the HTTP client are auth/http_req.h's, shared with the
 * authorization source.
 *
 * Behaviour: a client without a password, or in enhanced authentication, is ignored (the
 * password-based rule). The answer is read by authn_http_parse_response (auth/authn_http_util.h):
 * 204 allow; 200 JSON/form `result` allow|deny|ignore (+ is_superuser, acl, expire_at,
 * client_attrs, clientid_override); anything else, a timeout, a refused connection, or a
 * credential that cannot be put in a JSON body (not UTF-8) -> AUTHN_ERROR, which the chain turns
 * into ignore or deny (authentication_settings.ignore_backend_failures).
 *
 * Threads: authenticate() runs on the client's worker loop, builds the request and starts it
 * on this authenticator's HTTP client; the answer comes back on the same loop, where
 * authn_done is called. Nothing blocks. Credentials are never logged (libcurl's debug line
 * shows the URL without its query string; do not put ${password} in the path).
 */
#include <stdio.h>
#include <stdlib.h>

#include "auth/authn.h"
#include "auth/authn_http_util.h"
#include "auth/http_req.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/log.h"
#include "net/http.h"

#define HTTP_AUTHN_MAX_RESPONSE (1024u * 1024u)

struct authn {
	struct http_req_cfg *cfg;
	char *id;
	struct http_req_client client;
};

/* ---- configuration ---- */

static const struct http_req_kind http_kind = {
	.vars = tmpl_authn_vars,
	.request_timeout_ms = 5000,
	.url_required = "url is required for backend = http",
	.not_utf8 = "a credential is not UTF-8 and cannot be sent in a JSON body",
};

static const struct cfg_field http_fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_skip },
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_skip },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, http_req_read_skip },
	HTTP_REQ_FIELDS,
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void free_config(void *p)
{
	http_req_cfg_unref(p);
}

static void *parse(struct cfg_reader *r, const struct hocon_member *m)
{
	return http_req_parse(r, m, http_fields, &http_kind);
}

/* ---- requests ---- */

static const char *lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch, size_t scratch_len)
{
	return authn_request_var(arg, name, name_len, len, scratch, scratch_len);
}

/* The request for rq (http_req_build). */
static bool build_request(const struct http_req_cfg *c, const struct authn_request *rq, struct buf *url,
			  struct buf *body, char ***hdrs, const char **why)
{
	return http_req_build(c, lookup, (void *)rq, url, body, hdrs, why);
}

static void answer(struct authn_call *call, enum authn_verdict v, const char *why)
{
	struct authn_result res = { .verdict = v };
	snprintf(res.reason, sizeof res.reason, "%s", why);
	authn_done(call, &res);
}

struct pending_call {
	struct authn *a;
	struct authn_call *call;
};

static void on_response(void *arg, const struct http_response *resp)
{
	struct pending_call *pc = arg;
	struct authn *a = pc->a;
	struct authn_result res;
	authn_http_parse_response(resp->status, resp->content_type, resp->body, resp->body_len, clock_wall_s(), &res);
	if (resp->status == 0)
		snprintf(res.reason, sizeof res.reason, "HTTP request failed: %.160s", resp->error ? resp->error : "?");
	if (res.verdict == AUTHN_ERROR)
		log_warn("authentication %s: backend failure: %s", a->id, res.reason);
	else
		log_debug("authentication %s: HTTP %d in %llu ms: %s", a->id, resp->status,
			  (unsigned long long)resp->elapsed_ms, res.reason);
	authn_done(pc->call, &res);
	free(pc);
}

/* A call whose loop stopped: answered at shutdown. */
static void abandon(void *arg)
{
	struct pending_call *pc = arg;
	answer(pc->call, AUTHN_ERROR, "shutting down");
	free(pc);
}

static void authenticate(struct authn *a, struct authn_call *call)
{
	const struct authn_request *rq = authn_call_request(call);
	const struct http_req_cfg *c = a->cfg;
	if (!rq->password) {
		answer(call, AUTHN_IGNORE, "no password");
		return;
	}
	if (rq->auth_method) {
		answer(call, AUTHN_IGNORE, "enhanced authentication");
		return;
	}
	struct buf url = { 0 }, body = { 0 };
	char **hdrs = NULL;
	const char *why = NULL;
	if (!build_request(c, rq, &url, &body, &hdrs, &why)) {
		log_warn("authentication %s: backend failure: %s", a->id, why);
		answer(call, AUTHN_ERROR, why);
		goto out;
	}
	struct pending_call *pc = xcalloc(1, sizeof *pc);
	pc->a = a;
	pc->call = call;
	http_req_client_start(&a->client, c, &url, &body, hdrs, HTTP_AUTHN_MAX_RESPONSE, on_response, pc);
out:
	http_req_free_headers(hdrs);
	buf_free(&url);
	buf_free(&body);
}

/* ---- life cycle ---- */

static struct authn *create(const void *cfgp, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	struct http_req_cfg *c = (struct http_req_cfg *)cfgp;
	struct authn *a = xcalloc(1, sizeof *a);
	if (!http_req_client_init(&a->client, c, env ? env->main_loop : NULL)) {
		free(a);
		snprintf(err, errlen, "%s: the HTTP client could not start", id);
		return NULL;
	}
	http_req_cfg_ref(c);
	a->cfg = c;
	a->id = xstrdup(id);
	return a;
}

static void destroy(struct authn *a)
{
	if (!a)
		return;
	http_req_client_fini(&a->client, abandon);
	http_req_cfg_unref(a->cfg);
	free(a->id);
	free(a);
}

static const struct authn_ops http_ops = {
	.mechanism = "password_based",
	.backend = "http",
	.cacheable = true,
	.parse = parse,
	.free_config = free_config,
	.create = create,
	.destroy = destroy,
	.authenticate = authenticate,
};

__attribute__((constructor)) static void register_http(void)
{
	authn_register(&http_ops);
}
