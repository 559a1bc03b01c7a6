#include "config/cfgread.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "config/values.h"
#include "core/alloc.h"
#include "core/log.h"

/* ---- errors and warnings ---- */

const char *cfgr_file(const struct hocon_member *m)
{
	return m && m->file ? m->file : "(config)";
}

bool cfgr_fail(struct cfg_reader *ld, const struct hocon_member *m, const char *fmt, ...)
{
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(ld->err, ld->errlen, "%s:%d: %s: %s", cfgr_file(m), m ? m->line : 0, ld->path, msg);
	return false;
}

/* Push/pop a key onto the current path for messages. */
size_t cfgr_path_push(struct cfg_reader *ld, const char *key)
{
	size_t old = strlen(ld->path);
	snprintf(ld->path + old, sizeof ld->path - old, "%s%s", old ? "." : "", key);
	return old;
}

void cfgr_path_pop(struct cfg_reader *ld, size_t old)
{
	ld->path[old] = '\0';
}

void cfgr_warn_ignored(struct cfg_reader *ld, const struct hocon_member *m)
{
	log_warn("%s:%d: %s is an EMQX setting Bulwark does not use; ignored", cfgr_file(m), m->line, ld->path);
}

bool cfgr_unsupported(struct cfg_reader *ld, const struct hocon_member *m)
{
	snprintf(ld->err, ld->errlen, "not supported yet: %s (%s:%d)", ld->path, cfgr_file(m), m->line);
	return false;
}

bool cfgr_unknown(struct cfg_reader *ld, const struct hocon_member *m)
{
	return cfgr_fail(ld, m, "unknown key");
}

/* ---- scalar getters ---- */

const char *cfgr_scalar(const struct hocon_node *n)
{
	return (n->type == HOCON_STRING || n->type == HOCON_NUMBER || n->type == HOCON_BOOL) ? n->str : NULL;
}

bool cfgr_bool(struct cfg_reader *ld, const struct hocon_member *m, bool *out)
{
	const struct hocon_node *n = m->value;
	if (n->type == HOCON_BOOL) {
		*out = n->boolean;
		return true;
	}
	if (n->type == HOCON_STRING && (strcmp(n->str, "true") == 0 || strcmp(n->str, "false") == 0)) {
		*out = n->str[0] == 't';
		return true;
	}
	return cfgr_fail(ld, m, "expected true or false, got %s", cfgr_scalar(n) ? cfgr_scalar(n) : hocon_type_str(n->type));
}

bool cfgr_is_infinity(const struct hocon_node *n)
{
	return n->type == HOCON_STRING && strcasecmp(n->str, "infinity") == 0;
}

bool cfgr_uint(struct cfg_reader *ld, const struct hocon_member *m, int64_t min, int64_t max, uint64_t *out)
{
	const struct hocon_node *n = m->value;
	const char *s = cfgr_scalar(n);
	char *end = NULL;
	if (s && n->type != HOCON_BOOL) {
		errno = 0;
		long long v = strtoll(s, &end, 10);
		if (end != s && *end == '\0' && errno == 0 && v >= min && v <= max) {
			*out = (uint64_t)v;
			return true;
		}
	}
	return cfgr_fail(ld, m, "expected an integer in %lld..%lld, got %s", (long long)min, (long long)max,
		    s ? s : hocon_type_str(n->type));
}

bool cfgr_string(struct cfg_reader *ld, const struct hocon_member *m, char **out)
{
	const char *s = cfgr_scalar(m->value);
	if (!s || m->value->type == HOCON_BOOL)
		return cfgr_fail(ld, m, "expected a string, got %s", hocon_type_str(m->value->type));
	free(*out);
	*out = xstrdup(s);
	return true;
}

/* A list given as an array of strings or one comma-separated string ("a, b"). Items are
 * trimmed; empty items skipped. Returns a NULL-terminated array (free with free_strv). */
char **cfgr_list(struct cfg_reader *ld, const struct hocon_member *m, size_t *n_out)
{
	const struct hocon_node *n = m->value;
	char **v = NULL;
	size_t cnt = 0;
	if (n->type == HOCON_ARRAY) {
		v = xcalloc(n->n + 1, sizeof *v);
		for (size_t i = 0; i < n->n; i++) {
			const char *x = cfgr_scalar(n->items[i]);
			if (!x || n->items[i]->type == HOCON_BOOL) {
				for (size_t k = 0; k < cnt; k++)
					free(v[k]);
				free(v);
				cfgr_fail(ld, m, "item %zu: expected a string, got %s", i + 1, hocon_type_str(n->items[i]->type));
				return NULL;
			}
			if (*x)
				v[cnt++] = xstrdup(x);
		}
	} else if (cfgr_scalar(n) && n->type != HOCON_BOOL) {
		char *copy = xstrdup(n->str);
		size_t items = 1;
		for (char *p = copy; *p; p++)
			items += *p == ',';
		v = xcalloc(items + 1, sizeof *v);
		for (char *tok = strtok(copy, ","); tok; tok = strtok(NULL, ",")) {
			while (*tok == ' ' || *tok == '\t')
				tok++;
			size_t l = strlen(tok);
			while (l && (tok[l - 1] == ' ' || tok[l - 1] == '\t'))
				tok[--l] = '\0';
			if (l)
				v[cnt++] = xstrdup(tok);
		}
		free(copy);
	} else {
		cfgr_fail(ld, m, "expected an array of strings or a comma-separated string, got %s", hocon_type_str(n->type));
		return NULL;
	}
	*n_out = cnt;
	return v;
}

void cfgr_free_list(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

bool cfgr_enum(struct cfg_reader *ld, const struct hocon_member *m, const char *const *names, int *out)
{
	const char *s = cfgr_scalar(m->value);
	if (s) {
		for (int i = 0; names[i]; i++) {
			if (strcmp(s, names[i]) == 0) {
				*out = i;
				return true;
			}
		}
	}
	char allowed[256] = "";
	for (int i = 0; names[i]; i++)
		snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s%s", i ? ", " : "", names[i]);
	return cfgr_fail(ld, m, "expected one of %s, got %s", allowed, s ? s : hocon_type_str(m->value->type));
}

/* Store v into an unsigned field of 1, 2, 4 or 8 bytes (k = 0..3). */
static void store_uint(void *p, int k, uint64_t v)
{
	switch (k) {
	case 0: *(uint8_t *)p = (uint8_t)v; break;
	case 1: *(uint16_t *)p = (uint16_t)v; break;
	case 2: *(uint32_t *)p = (uint32_t)v; break;
	default: *(uint64_t *)p = v; break;
	}
}

static bool load_field(struct cfg_reader *ld, const struct cfg_field *f, const struct hocon_member *m, void *target)
{
	char *base = target;
	void *p = base + f->off;
	const struct hocon_node *n = m->value;
	uint64_t v = 0;
	switch (f->type) {
	case CFG_F_BOOL:
		return cfgr_bool(ld, m, p);
	case CFG_F_U8:
	case CFG_F_U16:
	case CFG_F_U32:
	case CFG_F_U64: {
		static const uint64_t widest[] = { UINT8_MAX, UINT16_MAX, UINT32_MAX, INT64_MAX };
		int k = f->type - CFG_F_U8;
		if (!cfgr_uint(ld, m, f->min, f->max ? f->max : (int64_t)widest[k], &v))
			return false;
		store_uint(p, k, v);
		return true;
	}
	case CFG_F_U32_INF:
		if (cfgr_is_infinity(n)) {
			*(uint32_t *)p = 0;
			return true;
		}
		if (!cfgr_uint(ld, m, f->min, f->max ? f->max : UINT32_MAX, &v))
			return false;
		*(uint32_t *)p = (uint32_t)v;
		return true;
	case CFG_F_U64_INF:
		if (cfgr_is_infinity(n)) {
			*(uint64_t *)p = 0;
			return true;
		}
		if (!cfgr_uint(ld, m, f->min, f->max ? f->max : INT64_MAX, &v))
			return false;
		*(uint64_t *)p = v;
		return true;
	case CFG_F_DURATION_MS:
		if (cfgr_is_infinity(n)) {
			*(uint64_t *)p = UINT64_MAX;
			return true;
		}
		if (!cfgr_scalar(n) || n->type == HOCON_BOOL || !cfg_parse_duration_ms(n->str, &v))
			return cfgr_fail(ld, m, "expected a duration such as 15s, 5m or 2h, got %s",
				    cfgr_scalar(n) ? cfgr_scalar(n) : hocon_type_str(n->type));
		*(uint64_t *)p = v;
		return true;
	case CFG_F_DURATION_S32:
	case CFG_F_DURATION_S32_INF:
		if (f->type == CFG_F_DURATION_S32_INF && cfgr_is_infinity(n)) {
			*(uint32_t *)p = 0;
			return true;
		}
		if (!cfgr_scalar(n) || n->type == HOCON_BOOL || !cfg_parse_duration_s(n->str, &v) || v > UINT32_MAX)
			return cfgr_fail(ld, m, "expected a duration such as 30s, 2h or 7d, got %s",
				    cfgr_scalar(n) ? cfgr_scalar(n) : hocon_type_str(n->type));
		*(uint32_t *)p = (uint32_t)v;
		return true;
	case CFG_F_BYTES32:
		if (!cfgr_scalar(n) || n->type == HOCON_BOOL || !cfg_parse_bytesize(n->str, &v) || v < (uint64_t)f->min ||
		    v > (uint64_t)f->max)
			return cfgr_fail(ld, m, "expected a size such as 1MB in %lld..%lld bytes, got %s", (long long)f->min,
				    (long long)f->max, cfgr_scalar(n) ? cfgr_scalar(n) : hocon_type_str(n->type));
		*(uint32_t *)p = (uint32_t)v;
		return true;
	case CFG_F_DOUBLE: {
		char *end = NULL;
		double d = cfgr_scalar(n) && n->type != HOCON_BOOL ? strtod(n->str, &end) : NAN;
		if (!end || *end || !isfinite(d) || d < (double)f->min || d > (double)f->max)
			return cfgr_fail(ld, m, "expected a number in %lld..%lld, got %s", (long long)f->min, (long long)f->max,
				    cfgr_scalar(n) ? cfgr_scalar(n) : hocon_type_str(n->type));
		*(double *)p = d;
		return true;
	}
	case CFG_F_STRING:
		return cfgr_string(ld, m, p);
	case CFG_F_ENUM:
		return cfgr_enum(ld, m, f->names, p);
	case CFG_F_CUSTOM:
		return f->custom(ld, m, target);
	case CFG_F_IGNORED:
		cfgr_warn_ignored(ld, m);
		return true;
	case CFG_F_UNSUPPORTED:
		return cfgr_unsupported(ld, m);
	}
	return false;
}

/* Load every member of obj through a field table. */
bool cfgr_load_fields(struct cfg_reader *ld, const struct hocon_member *parent, const struct hocon_node *obj,
			const struct cfg_field *fields, void *target)
{
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(ld, parent, "expected an object { ... }, got %s", hocon_type_str(obj->type));
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *m = &obj->members[i];
		size_t old = cfgr_path_push(ld, m->key);
		const struct cfg_field *f = fields;
		while (f->key && strcmp(f->key, m->key) != 0)
			f++;
		bool ok = f->key ? load_field(ld, f, m, target) : cfgr_unknown(ld, m);
		cfgr_path_pop(ld, old);
		if (!ok)
			return false;
	}
	return true;
}

