/* Shared parts of the Redis, PostgreSQL and MySQL authenticators (see dbpool_authn.h). */
#include "auth/dbpool_authn.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "auth/template.h"
#include "config/values.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/clock.h"
#include "core/log.h"
#include "mqtt/mqtt.h"

#define SECRET_FILE_MAX (64 * 1024)

/* ---- config ---- */

void dbauth_common_init(struct dbauth_common *c)
{
	memset(c, 0, sizeof *c);
	c->pool_size = 8;
	c->query_timeout_ms = 5000;
	passwd_default(&c->pw);
}

void dbauth_common_free(struct dbauth_common *c)
{
	free(c->host);
	free(c->database);
	free(c->username);
	if (c->password) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	free(c->ssl.cacertfile);
	free(c->ssl.certfile);
	free(c->ssl.keyfile);
	free(c->ssl.sni);
	memset(c, 0, sizeof *c);
}

bool dbauth_parse_server(const char *s, char **host, uint16_t *port)
{
	const char *h = s, *p = NULL;
	size_t hl;
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close)
			return false;
		h = s + 1;
		hl = (size_t)(close - h);
		if (close[1] == ':')
			p = close + 2;
		else if (close[1] != '\0')
			return false;
	} else {
		const char *colon = strchr(s, ':');
		if (colon && !strchr(colon + 1, ':')) {
			hl = (size_t)(colon - s);
			p = colon + 1;
		} else {
			hl = strlen(s); /* a host name, or a bare IPv6 address */
		}
	}
	if (hl == 0)
		return false;
	for (size_t i = 0; i < hl; i++)
		if (h[i] == ' ' || h[i] == '\t' || h[i] == '/' || h[i] == '@')
			return false;
	uint16_t pv = 0;
	if (p) {
		unsigned long v = 0;
		if (!*p || strlen(p) > 5)
			return false;
		for (const char *q = p; *q; q++) {
			if (*q < '0' || *q > '9')
				return false;
			v = v * 10 + (unsigned long)(*q - '0');
		}
		if (v < 1 || v > 65535)
			return false;
		pv = (uint16_t)v;
	}
	*host = xstrndup(h, hl);
	if (p)
		*port = pv;
	return true;
}

bool dbauth_read_skip(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	return true;
}

bool dbauth_read_server(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	const char *s = cfgr_scalar(m->value);
	char *host = NULL;
	uint16_t port = c->port;
	if (!s || m->value->type == HOCON_BOOL || !dbauth_parse_server(s, &host, &port))
		return cfgr_fail(r, m, "expected \"host:port\" (or \"host\", \"[ipv6]:port\"), got %s",
				 s ? s : hocon_type_str(m->value->type));
	free(c->host);
	c->host = host;
	c->port = port;
	c->server_at = m;
	return true;
}

bool dbauth_read_password(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	char *s = NULL;
	if (!cfgr_string(r, m, &s))
		return false;
	if (strncmp(s, "file://", 7) == 0) {
		/* EMQX secrets: "file:///path" holds the password in a file. */
		const char *path = s + 7;
		FILE *f = fopen(path, "rb");
		if (!f) {
			int e = errno;
			bool ok = cfgr_fail(r, m, "cannot read the password file %s: %s", path, strerror(e));
			free(s);
			return ok;
		}
		char *buf = xmalloc(SECRET_FILE_MAX + 1);
		size_t n = fread(buf, 1, SECRET_FILE_MAX + 1, f);
		fclose(f);
		if (n > SECRET_FILE_MAX) {
			bool ok = cfgr_fail(r, m, "the password file %s is larger than %d bytes", path, SECRET_FILE_MAX);
			explicit_bzero(buf, SECRET_FILE_MAX + 1);
			free(buf);
			free(s);
			return ok;
		}
		while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
			n--;
		buf[n] = '\0';
		free(s);
		s = buf;
	}
	if (c->password) {
		explicit_bzero(c->password, strlen(c->password));
		free(c->password);
	}
	c->password = s;
	return true;
}

bool dbauth_read_hash_algo(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	return passwd_parse(r, m, &c->pw);
}

bool dbauth_read_pool_size(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	uint64_t v;
	if (!cfgr_uint(r, m, 1, 256, &v))
		return false;
	c->pool_size = (uint32_t)v;
	return true;
}

bool dbauth_read_query_timeout(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	const char *s = cfgr_scalar(m->value);
	uint64_t v = 0;
	if (!s || m->value->type == HOCON_BOOL || !cfg_parse_duration_ms(s, &v) || v == 0 || v > 3600 * 1000)
		return cfgr_fail(r, m, "expected a duration between 1ms and 1h such as 5s, got %s",
				 s ? s : hocon_type_str(m->value->type));
	c->query_timeout_ms = v;
	return true;
}

/* ssl { ... } */

static bool ssl_verify(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	static const char *const names[] = { "verify_none", "verify_peer", NULL };
	struct dbauth_ssl *s = target;
	int v = 0;
	if (!cfgr_enum(r, m, names, &v))
		return false;
	s->verify_peer = v == 1;
	return true;
}

static bool ssl_sni(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_ssl *s = target;
	s->sni_at = m;
	if (m->value->type == HOCON_BOOL && !m->value->boolean) {
		s->sni_disable = true;
		return true;
	}
	char *v = NULL;
	if (!cfgr_string(r, m, &v))
		return false;
	free(s->sni);
	s->sni = NULL;
	s->sni_disable = false;
	if (strcmp(v, "disable") == 0) {
		s->sni_disable = true;
		free(v);
	} else if (!v[0]) {
		free(v);
		return cfgr_fail(r, m, "expected a host name or disable");
	} else {
		s->sni = v;
	}
	return true;
}

static bool ssl_enable(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_ssl *s = target;
	s->enable_at = m;
	return cfgr_bool(r, m, &s->enable);
}

static const struct cfg_field ssl_fields[] = {
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, ssl_enable },
	{ "verify", CFG_F_CUSTOM, 0, 0, 0, NULL, ssl_verify },
	{ "cacertfile", CFG_F_STRING, offsetof(struct dbauth_ssl, cacertfile), 0, 0, NULL, NULL },
	{ "certfile", CFG_F_STRING, offsetof(struct dbauth_ssl, certfile), 0, 0, NULL, NULL },
	{ "keyfile", CFG_F_STRING, offsetof(struct dbauth_ssl, keyfile), 0, 0, NULL, NULL },
	{ "server_name_indication", CFG_F_CUSTOM, 0, 0, 0, NULL, ssl_sni },
	/* EMQX client TLS options with no effect here. */
	{ "depth", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "reuse_sessions", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "secure_renegotiate", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "log_level", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "hibernate_after", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "middlebox_comp_mode", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "user_lookup_fun", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	/* Options that would change security: refused until implemented. */
	{ "versions", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ "ciphers", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ "password", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ "partial_chain", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ "verify_peer_ext_key_usage", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool ssl_file_ok(struct cfg_reader *r, const struct hocon_member *ssl, const char *key, const char *path)
{
	if (!path)
		return true;
	if (access(path, R_OK) == 0)
		return true;
	int e = errno;
	const struct hocon_member *at = hocon_get_member(ssl->value, key);
	size_t old = cfgr_path_push(r, key);
	bool ok = cfgr_fail(r, at ? at : ssl, "cannot read %s: %s", path, strerror(e));
	cfgr_path_pop(r, old);
	return ok;
}

bool dbauth_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	struct dbauth_common *c = target;
	struct dbauth_ssl *s = &c->ssl;
	if (!cfgr_load_fields(r, m, m->value, ssl_fields, s))
		return false;
	if (!s->enable)
		return true;
	if (!s->certfile != !s->keyfile)
		return cfgr_fail(r, m, "certfile and keyfile go together (a client certificate needs its key)");
	if (s->verify_peer && !s->cacertfile)
		return cfgr_fail(r, m, "verify = verify_peer needs cacertfile (the CA that signed the server's certificate)");
	if (!s->verify_peer && s->cacertfile)
		log_warn("%s:%d: %s: cacertfile has no effect with verify = verify_none (the server is not verified)",
			 cfgr_file(m), m->line, r->path);
	return ssl_file_ok(r, m, "cacertfile", s->cacertfile) && ssl_file_ok(r, m, "certfile", s->certfile) &&
	       ssl_file_ok(r, m, "keyfile", s->keyfile);
}

bool dbauth_common_check(struct cfg_reader *r, const struct hocon_member *m, struct dbauth_common *c,
			 uint16_t default_port, bool need_database)
{
	if (!c->host)
		return cfgr_fail(r, m, "server is required (\"host:port\")");
	if (!c->port)
		c->port = default_port;
	if (need_database && (!c->database || !c->database[0]))
		return cfgr_fail(r, m, "database is required");
	bool v6 = strchr(c->host, ':') != NULL;
	snprintf(c->target, sizeof c->target, "%s%s%s:%u", v6 ? "[" : "", c->host, v6 ? "]" : "", c->port);
	return true;
}

/* ---- the row contract ---- */

static const char *const field_names[DBAUTH_F_COUNT] = {
	[DBAUTH_F_PASSWORD_HASH] = "password_hash",
	[DBAUTH_F_PASSWORD] = "password",
	[DBAUTH_F_SALT] = "salt",
	[DBAUTH_F_IS_SUPERUSER] = "is_superuser",
	[DBAUTH_F_CLIENTID_OVERRIDE] = "clientid_override",
};

int dbauth_field_of(const char *name, size_t len)
{
	for (int i = 0; i < DBAUTH_F_COUNT; i++)
		if (strlen(field_names[i]) == len && strncasecmp(field_names[i], name, len) == 0)
			return i;
	return -1;
}

const char *dbauth_field_name(int f)
{
	return f >= 0 && f < DBAUTH_F_COUNT ? field_names[f] : "?";
}

static bool has_value(const struct dbauth_value *v)
{
	return v->type != DBAUTH_V_ABSENT && v->type != DBAUTH_V_NULL;
}

static bool text_is(const struct dbauth_value *v, const char *s)
{
	return v->len == strlen(s) && memcmp(v->s, s, v->len) == 0;
}

bool dbauth_truthy(const struct dbauth_value *v)
{
	switch (v->type) {
	case DBAUTH_V_ABSENT:
	case DBAUTH_V_NULL:
		return false;
	case DBAUTH_V_BOOL:
		return text_is(v, "t") || text_is(v, "true") || text_is(v, "1");
	case DBAUTH_V_INT: {
		/* Decimal digits, maybe signed: >= 1 is true. */
		size_t i = 0;
		if (i < v->len && (v->s[i] == '-' || v->s[i] == '+')) {
			if (v->s[i] == '-')
				return false;
			i++;
		}
		if (i == v->len)
			return false;
		bool nonzero = false;
		for (; i < v->len; i++) {
			if (v->s[i] < '0' || v->s[i] > '9')
				return false;
			nonzero |= v->s[i] != '0';
		}
		return nonzero;
	}
	case DBAUTH_V_TEXT:
		return text_is(v, "true") || text_is(v, "1");
	}
	return false;
}

void dbauth_row_eval(const struct dbauth_row *row, const struct passwd_cfg *pw, const uint8_t *password,
		     size_t password_len, struct authn_result *res)
{
	memset(res, 0, sizeof *res);
	if (!row->found) {
		res->verdict = AUTHN_IGNORE;
		snprintf(res->reason, sizeof res->reason, "no such user");
		return;
	}
	const struct dbauth_value *hash = &row->v[DBAUTH_F_PASSWORD_HASH];
	if (!has_value(hash))
		hash = &row->v[DBAUTH_F_PASSWORD];
	if (!has_value(hash)) {
		res->verdict = AUTHN_DENY;
		res->rc = MQTT_RC_NOT_AUTHORIZED;
		snprintf(res->reason, sizeof res->reason, "the user's record has no password_hash (or password)");
		return;
	}
	const struct dbauth_value *salt = &row->v[DBAUTH_F_SALT];
	bool ok = password && passwd_check(pw, hash->s, hash->len, has_value(salt) ? salt->s : "",
					   has_value(salt) ? salt->len : 0, password, password_len);
	if (!ok) {
		res->verdict = AUTHN_DENY;
		res->rc = MQTT_RC_BAD_USERNAME_OR_PASSWORD;
		snprintf(res->reason, sizeof res->reason, "wrong password");
		return;
	}
	res->verdict = AUTHN_ALLOW;
	res->is_superuser = dbauth_truthy(&row->v[DBAUTH_F_IS_SUPERUSER]);
	if (res->is_superuser)
		snprintf(res->reason, sizeof res->reason, "superuser");
	const struct dbauth_value *co = &row->v[DBAUTH_F_CLIENTID_OVERRIDE];
	if (has_value(co) && co->len)
		res->clientid_override = xstrndup(co->s, co->len);
}

/* ---- the request flow ---- */

uint64_t dbauth_ms_left(uint64_t deadline_ms)
{
	uint64_t now = clock_mono_ms();
	return deadline_ms > now ? deadline_ms - now : 1;
}

static const char *lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch, size_t scratch_len)
{
	return authn_request_var(arg, name, name_len, len, scratch, scratch_len);
}

static void answer(struct authn_call *call, enum authn_verdict v, uint8_t rc, const char *reason)
{
	struct authn_result res;
	memset(&res, 0, sizeof res);
	res.verdict = v;
	res.rc = rc;
	snprintf(res.reason, sizeof res.reason, "%s", reason);
	authn_done(call, &res);
}

void dbauth_authenticate(struct dbauth *a, struct authn_call *call)
{
	const struct authn_request *rq = authn_call_request(call);
	if (rq->auth_method) {
		answer(call, AUTHN_IGNORE, 0, "enhanced authentication is not password based");
		return;
	}
	if (!rq->password) {
		answer(call, AUTHN_IGNORE, 0, "no password in CONNECT");
		return;
	}
	struct dbauth_job *j = xcalloc(1, sizeof *j);
	j->call = call;
	j->a = a;
	j->nparams = a->nparams;
	j->param = xcalloc(a->nparams + 1, sizeof *j->param);
	j->param_len = xcalloc(a->nparams + 1, sizeof *j->param_len);
	for (size_t i = 0; i < a->nparams; i++) {
		struct buf b = { 0 };
		bool defined = tmpl_render(a->params[i], lookup, (void *)rq, TMPL_RAW, &b);
		if (defined || !a->undefined_is_null) {
			j->param[i] = xmalloc(b.len + 1);
			if (b.len)
				memcpy(j->param[i], b.data, b.len);
			j->param[i][b.len] = '\0';
			j->param_len[i] = b.len;
		}
		if (b.data)
			explicit_bzero(b.data, b.len); /* may hold ${password} */
		buf_free(&b);
	}
	j->password = xmalloc(rq->password_len + 1);
	if (rq->password_len)
		memcpy(j->password, rq->password, rq->password_len);
	j->password_len = rq->password_len;
	if (!dbpool_submit(a->pool, j)) {
		dbauth_job_release(NULL, j);
		answer(call, AUTHN_DENY, MQTT_RC_SERVER_BUSY, "server busy: the backend's request queue is full");
	}
}

void dbauth_job_done(void *ctx, void *job, enum dbpool_rc rc, const char *err)
{
	struct dbauth_job *j = job;
	struct authn_result res;
	if (rc == DBPOOL_OK) {
		res = j->res;
		/* The chain takes the heap fields over: the job must not free them. */
		j->res.clientid_override = NULL;
		j->res.acl = NULL;
		j->res.client_attrs = NULL;
		j->res.auth_data = NULL;
	} else {
		memset(&res, 0, sizeof res);
		res.verdict = AUTHN_ERROR;
		snprintf(res.reason, sizeof res.reason, "%s", err && err[0] ? err : dbpool_rc_str(rc));
	}
	authn_done(j->call, &res);
}

void dbauth_job_release(void *ctx, void *job)
{
	struct dbauth_job *j = job;
	for (size_t i = 0; i < j->nparams; i++) {
		if (j->param[i]) {
			explicit_bzero(j->param[i], j->param_len[i]);
			free(j->param[i]);
		}
	}
	free(j->param);
	free(j->param_len);
	if (j->password) {
		explicit_bzero(j->password, j->password_len);
		free(j->password);
	}
	free(j->res.clientid_override);
	free(j->res.acl);
	free(j->res.client_attrs);
	free(j->res.auth_data);
	free(j);
}

void dbauth_start_pool(struct dbauth *a, const struct dbpool_backend *be, void *ctx)
{
	struct dbpool_cfg pc = {
		.id = a->id,
		.target = a->cfg->target,
		.threads = a->cfg->pool_size,
		.queue_max = 1024 + 64 * (size_t)a->cfg->pool_size,
		.timeout_ms = a->cfg->query_timeout_ms,
	};
	a->pool = dbpool_new(be, ctx, &pc);
}

void dbauth_fini(struct dbauth *a)
{
	dbpool_free(a->pool);
	a->pool = NULL;
	for (size_t i = 0; i < a->nparams; i++)
		tmpl_free(a->params[i]);
	free(a->params);
	a->params = NULL;
	a->nparams = 0;
	free(a->id);
	a->id = NULL;
}
