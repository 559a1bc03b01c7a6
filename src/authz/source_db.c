/* Shared parts of the Redis, PostgreSQL and MySQL authorization sources (see source_db.h). */
#include "authz/source_db.h"

#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/authn_http_util.h"
#include "auth/template.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"

/* ---- the raw rule contract ---- */

static const char *const col_names[AZDB_C_COUNT] = {
	[AZDB_C_PERMISSION] = "permission",
	[AZDB_C_ACTION] = "action",
	[AZDB_C_TOPIC] = "topic",
	[AZDB_C_QOS] = "qos",
	[AZDB_C_RETAIN] = "retain",
};

int azdb_col_of(const char *name, size_t len)
{
	for (int i = 0; i < AZDB_C_COUNT; i++)
		if (strlen(col_names[i]) == len && strncasecmp(col_names[i], name, len) == 0)
			return i;
	return -1;
}

static bool word_is(const char *s, size_t len, const char *w)
{
	return len == strlen(w) && memcmp(s, w, len) == 0;
}

unsigned azdb_action_of(const char *s, size_t len)
{
	if (word_is(s, len, "publish") || word_is(s, len, "pub"))
		return AUTHZ_PUBLISH;
	if (word_is(s, len, "subscribe") || word_is(s, len, "sub"))
		return AUTHZ_SUBSCRIBE;
	if (word_is(s, len, "all"))
		return AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE;
	return 0;
}

static bool has_value(const struct dbauth_value *v)
{
	return v->type != DBAUTH_V_ABSENT && v->type != DBAUTH_V_NULL;
}

/* "0", "1" or "2" (blanks around allowed) -> 0..2, else -1. */
static int qos_atom(const char *s, size_t len)
{
	while (len && (*s == ' ' || *s == '\t')) {
		s++;
		len--;
	}
	while (len && (s[len - 1] == ' ' || s[len - 1] == '\t'))
		len--;
	if (len != 1 || s[0] < '0' || s[0] > '2')
		return -1;
	return s[0] - '0';
}

bool azdb_qos_of(const struct dbauth_value *v, uint8_t *mask)
{
	*mask = 0;
	switch (v->type) {
	case DBAUTH_V_ABSENT:
	case DBAUTH_V_NULL:
		return true;
	case DBAUTH_V_INT: {
		int q = v->len == 1 ? qos_atom(v->s, v->len) : -1;
		if (q < 0)
			return false;
		*mask = (uint8_t)(1u << q);
		return true;
	}
	case DBAUTH_V_TEXT: {
		/* "0,1,2": every item must be a QoS. */
		const char *p = v->s, *end = v->s + v->len;
		uint8_t m = 0;
		for (;;) {
			const char *comma = memchr(p, ',', (size_t)(end - p));
			const char *stop = comma ? comma : end;
			int q = qos_atom(p, (size_t)(stop - p));
			if (q < 0)
				return false;
			m |= (uint8_t)(1u << q);
			if (!comma)
				break;
			p = comma + 1;
		}
		*mask = m;
		return true;
	}
	case DBAUTH_V_BOOL:
		return false;
	}
	return false;
}

bool azdb_retain_of(const struct dbauth_value *v, int *retain)
{
	*retain = -1;
	switch (v->type) {
	case DBAUTH_V_ABSENT:
	case DBAUTH_V_NULL:
		return true;
	case DBAUTH_V_INT:
		if (word_is(v->s, v->len, "0") || word_is(v->s, v->len, "1")) {
			*retain = v->s[0] == '1';
			return true;
		}
		return false;
	case DBAUTH_V_BOOL:
		if (word_is(v->s, v->len, "t") || word_is(v->s, v->len, "true") || word_is(v->s, v->len, "1")) {
			*retain = 1;
			return true;
		}
		if (word_is(v->s, v->len, "f") || word_is(v->s, v->len, "false") || word_is(v->s, v->len, "0")) {
			*retain = 0;
			return true;
		}
		return false;
	case DBAUTH_V_TEXT:
		if (word_is(v->s, v->len, "1") || word_is(v->s, v->len, "true")) {
			*retain = 1;
			return true;
		}
		if (word_is(v->s, v->len, "0") || word_is(v->s, v->len, "false")) {
			*retain = 0;
			return true;
		}
		return word_is(v->s, v->len, "all");
	}
	return false;
}

/* A value for an error message: printable, short. */
static const char *shown(const struct dbauth_value *v, char *out, size_t outlen)
{
	if (v->type == DBAUTH_V_ABSENT)
		return "(missing)";
	if (v->type == DBAUTH_V_NULL)
		return "NULL";
	char tmp[48];
	size_t n = v->len < sizeof tmp - 1 ? v->len : sizeof tmp - 1;
	memcpy(tmp, v->s, n);
	tmp[n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (tmp[i] == '\0')
			tmp[i] = '?';
	authn_http_printable(out, outlen, tmp);
	return out;
}

/* qos and retain of an action into spec (retain only constrains publish). */
static bool action_opts(const struct dbauth_value *qos, const struct dbauth_value *retain, struct acl_rule_spec *spec,
			char *err, size_t errlen)
{
	char tmp[64];
	if (!azdb_qos_of(qos, &spec->qos_mask)) {
		snprintf(err, errlen, "invalid qos %s (0, 1, 2 or a list such as \"0,1\")", shown(qos, tmp, sizeof tmp));
		return false;
	}
	spec->retain = -1;
	if ((spec->actions & AUTHZ_PUBLISH) && !azdb_retain_of(retain, &spec->retain)) {
		snprintf(err, errlen, "invalid retain %s (true, false, 1, 0 or all)", shown(retain, tmp, sizeof tmp));
		return false;
	}
	return true;
}

bool azdb_row_spec(const struct azdb_row *row, struct acl_rule_spec *spec, char *err, size_t errlen)
{
	char tmp[64];
	const struct dbauth_value *perm = &row->v[AZDB_C_PERMISSION], *act = &row->v[AZDB_C_ACTION];
	const struct dbauth_value *topic = &row->v[AZDB_C_TOPIC];
	memset(spec, 0, sizeof *spec);
	if (!has_value(perm) || !has_value(act)) {
		snprintf(err, errlen, "missing permission or action");
		return false;
	}
	if (perm->type == DBAUTH_V_TEXT && word_is(perm->s, perm->len, "allow"))
		spec->allow = true;
	else if (!(perm->type == DBAUTH_V_TEXT && word_is(perm->s, perm->len, "deny"))) {
		snprintf(err, errlen, "invalid permission %s (allow or deny)", shown(perm, tmp, sizeof tmp));
		return false;
	}
	spec->actions = act->type == DBAUTH_V_TEXT ? azdb_action_of(act->s, act->len) : 0;
	if (!spec->actions) {
		snprintf(err, errlen, "invalid action %s (publish, subscribe or all)", shown(act, tmp, sizeof tmp));
		return false;
	}
	if (topic->type != DBAUTH_V_TEXT) {
		snprintf(err, errlen, "missing topic");
		return false;
	}
	spec->topic = topic->s;
	spec->topic_len = topic->len;
	return action_opts(&row->v[AZDB_C_QOS], &row->v[AZDB_C_RETAIN], spec, err, errlen);
}

/* A JSON value as a row value (text forms kept in scratch). False for arrays/objects. */
static bool json_value(const json_t *j, struct dbauth_value *v, char *scratch, size_t scratch_len)
{
	memset(v, 0, sizeof *v);
	if (!j) {
		v->type = DBAUTH_V_ABSENT;
	} else if (json_is_null(j)) {
		v->type = DBAUTH_V_NULL;
	} else if (json_is_string(j)) {
		v->type = DBAUTH_V_TEXT;
		v->s = json_string_value(j);
		v->len = json_string_length(j);
	} else if (json_is_integer(j)) {
		v->type = DBAUTH_V_INT;
		snprintf(scratch, scratch_len, "%lld", (long long)json_integer_value(j));
		v->s = scratch;
		v->len = strlen(scratch);
	} else if (json_is_boolean(j)) {
		v->type = DBAUTH_V_BOOL;
		v->s = json_is_true(j) ? "true" : "false";
		v->len = strlen(v->s);
	} else {
		return false;
	}
	return true;
}

bool azdb_redis_spec(const char *topic, size_t topic_len, const char *value, size_t value_len,
		     struct acl_rule_spec *spec, char *err, size_t errlen)
{
	memset(spec, 0, sizeof *spec);
	spec->allow = true;
	spec->topic = topic;
	spec->topic_len = topic_len;
	spec->retain = -1;
	if (word_is(value, value_len, "publish") || word_is(value, value_len, "subscribe") ||
	    word_is(value, value_len, "all")) {
		spec->actions = azdb_action_of(value, value_len);
		return true;
	}
	json_error_t je;
	json_t *doc = json_loadb(value, value_len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY, &je);
	bool ok = false;
	char s1[32], s2[32];
	if (!doc || !json_is_object(doc)) {
		snprintf(err, errlen, "the value is neither publish, subscribe, all nor a JSON object");
		goto out;
	}
	const json_t *a = json_object_get(doc, "action");
	if (!a || !json_is_string(a)) {
		snprintf(err, errlen, "the JSON rule has no action");
		goto out;
	}
	spec->actions = azdb_action_of(json_string_value(a), json_string_length(a));
	if (!spec->actions) {
		snprintf(err, errlen, "invalid action in the JSON rule (publish, subscribe or all)");
		goto out;
	}
	const json_t *q = json_object_get(doc, "qos");
	struct dbauth_value qv, rv;
	uint8_t qmask = 0;
	if (q && json_is_array(q)) {
		/* [0, 1] or ["0", "1"] */
		size_t i;
		const json_t *e;
		json_array_foreach(q, i, e) {
			int qq = -1;
			if (json_is_integer(e) && json_integer_value(e) >= 0 && json_integer_value(e) <= 2)
				qq = (int)json_integer_value(e);
			else if (json_is_string(e))
				qq = qos_atom(json_string_value(e), json_string_length(e));
			if (qq < 0) {
				snprintf(err, errlen, "invalid qos in the JSON rule (0, 1, 2 or a list of them)");
				goto out;
			}
			qmask |= (uint8_t)(1u << qq);
		}
	} else if (!json_value(q, &qv, s1, sizeof s1) || !azdb_qos_of(&qv, &qmask)) {
		snprintf(err, errlen, "invalid qos in the JSON rule (0, 1, 2 or a list of them)");
		goto out;
	}
	if ((spec->actions & AUTHZ_PUBLISH) &&
	    (!json_value(json_object_get(doc, "retain"), &rv, s2, sizeof s2) || !azdb_retain_of(&rv, &spec->retain))) {
		snprintf(err, errlen, "invalid retain in the JSON rule (true, false or all)");
		goto out;
	}
	spec->qos_mask = qmask;
	ok = true;
out:
	json_decref(doc);
	return ok;
}

/* ---- the request flow ---- */

static void job_bad(struct azdb_job *j, const char *why)
{
	if (!j->nbad++)
		snprintf(j->bad, sizeof j->bad, "%s", why);
}

static void job_add(struct azdb_job *j, const struct acl_rule_spec *spec)
{
	char err[160];
	if (!j->acl)
		j->acl = acl_new();
	if (!acl_add(j->acl, spec, err, sizeof err))
		job_bad(j, err);
}

void azdb_job_add_row(struct azdb_job *j, const struct azdb_row *row)
{
	struct acl_rule_spec spec;
	char err[160];
	j->nrows++;
	if (!azdb_row_spec(row, &spec, err, sizeof err)) {
		job_bad(j, err);
		return;
	}
	job_add(j, &spec);
}

void azdb_job_add_redis(struct azdb_job *j, const char *field, size_t field_len, const char *value, size_t value_len)
{
	struct acl_rule_spec spec;
	char err[160];
	j->nrows++;
	if (!azdb_redis_spec(field, field_len, value, value_len, &spec, err, sizeof err)) {
		job_bad(j, err);
		return;
	}
	job_add(j, &spec);
}

static const char *lookup(void *arg, const char *name, size_t name_len, size_t *len, char *scratch, size_t scratch_len)
{
	return authz_call_var(arg, name, name_len, len, scratch, scratch_len);
}

void azdb_start(struct azdb *s, struct authz_call *call)
{
	struct azdb_job *j = xcalloc(1, sizeof *j);
	j->call = call;
	j->s = s;
	j->nparams = s->nparams;
	j->param = xcalloc(s->nparams + 1, sizeof *j->param);
	j->param_len = xcalloc(s->nparams + 1, sizeof *j->param_len);
	for (size_t i = 0; i < s->nparams; i++) {
		struct buf b = { 0 };
		bool defined = tmpl_render(s->params[i], lookup, call, TMPL_RAW, &b);
		if (defined || !s->undefined_is_null) {
			j->param[i] = xmalloc(b.len + 1);
			if (b.len)
				memcpy(j->param[i], b.data, b.len);
			j->param[i][b.len] = '\0';
			j->param_len[i] = b.len;
		}
		buf_free(&b);
	}
	if (!dbpool_submit(s->pool, j)) {
		azdb_job_release(NULL, j);
		log_debug("%s: the backend's request queue is full", s->id);
		authz_call_done(call, AUTHZ_ERROR);
	}
}

void azdb_job_done(void *ctx, void *job, enum dbpool_rc rc, const char *err)
{
	struct azdb_job *j = job;
	const struct azdb *s = j->s;
	if (rc != DBPOOL_OK) {
		const char *why = err && err[0] ? err : dbpool_rc_str(rc);
		/* The core logs every AUTHZ_ERROR; a query the server refuses is a configuration
		 * problem worth a warning of its own. */
		if (rc == DBPOOL_ERR_QUERY)
			log_warn("%s: the backend refused the query: %s", s->id, why);
		else
			log_debug("%s: %s: %s", s->id, dbpool_rc_str(rc), why);
		authz_call_done(j->call, AUTHZ_ERROR);
		return;
	}
	if (j->nbad)
		log_warn("%s: %zu of %zu rule%s skipped as invalid (first: %s)", s->id, j->nbad, j->nrows,
			 j->nrows == 1 ? "" : "s", j->bad);
	enum authz_verdict v = AUTHZ_NOMATCH;
	if (j->acl && acl_count(j->acl))
		v = acl_check(j->acl, authz_call_client(j->call), authz_call_action(j->call));
	log_debug("%s: %zu rule%s, %s", s->id, j->nrows, j->nrows == 1 ? "" : "s", authz_verdict_str(v));
	authz_call_done(j->call, v);
}

void azdb_job_release(void *ctx, void *job)
{
	struct azdb_job *j = job;
	for (size_t i = 0; i < j->nparams; i++)
		free(j->param[i]);
	free(j->param);
	free(j->param_len);
	acl_free(j->acl);
	free(j);
}

void azdb_start_pool(struct azdb *s, const struct dbpool_backend *be, void *ctx)
{
	struct dbpool_cfg pc = {
		.id = s->id,
		.target = s->cfg->target,
		.threads = s->cfg->pool_size,
		.queue_max = 1024 + 64 * (size_t)s->cfg->pool_size,
		.timeout_ms = s->cfg->query_timeout_ms,
	};
	s->pool = dbpool_new(be, ctx, &pc);
}

void azdb_fini(struct azdb *s)
{
	dbpool_free(s->pool);
	s->pool = NULL;
	for (size_t i = 0; i < s->nparams; i++)
		tmpl_free(s->params[i]);
	free(s->params);
	s->params = NULL;
	s->nparams = 0;
	free(s->id);
	s->id = NULL;
}
