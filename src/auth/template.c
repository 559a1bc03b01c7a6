#include "auth/template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

const char *const tmpl_authn_vars[] = {
	"username", "clientid", "password", "peerhost", "peerport", "cert_subject", "cert_common_name",
	"listener", "zone", "client_attrs.", NULL,
};

struct part {
	bool var;
	char *text; /* literal text, or the variable name */
	size_t len;
};

struct tmpl {
	struct part *parts;
	size_t n;
};

static bool allowed_name(const char *name, size_t len, const char *const *allowed)
{
	for (; allowed && *allowed; allowed++) {
		size_t al = strlen(*allowed);
		if (al && (*allowed)[al - 1] == '.') { /* a prefix: "client_attrs." */
			if (len > al && memcmp(name, *allowed, al) == 0)
				return true;
		} else if (al == len && memcmp(name, *allowed, len) == 0) {
			return true;
		}
	}
	return false;
}

static void add_part(struct tmpl *t, bool var, const char *s, size_t len)
{
	if (!len)
		return;
	/* Adjacent literals merge (a disallowed placeholder is literal text). */
	if (!var && t->n && !t->parts[t->n - 1].var) {
		struct part *p = &t->parts[t->n - 1];
		p->text = xrealloc(p->text, p->len + len + 1);
		memcpy(p->text + p->len, s, len);
		p->len += len;
		p->text[p->len] = '\0';
		return;
	}
	t->parts = xrealloc(t->parts, (t->n + 1) * sizeof *t->parts);
	t->parts[t->n++] = (struct part){ .var = var, .text = xstrndup(s, len), .len = len };
}

struct tmpl *tmpl_parse(const char *text, const char *const *allowed)
{
	struct tmpl *t = xcalloc(1, sizeof *t);
	const char *p = text;
	while (*p) {
		const char *open = strstr(p, "${");
		if (!open) {
			add_part(t, false, p, strlen(p));
			break;
		}
		const char *close = strchr(open + 2, '}');
		if (!close) {
			add_part(t, false, p, strlen(p));
			break;
		}
		add_part(t, false, p, (size_t)(open - p));
		const char *name = open + 2;
		size_t nlen = (size_t)(close - name);
		if (allowed_name(name, nlen, allowed))
			add_part(t, true, name, nlen);
		else
			add_part(t, false, open, (size_t)(close + 1 - open)); /* unrendered, as EMQX */
		p = close + 1;
	}
	return t;
}

void tmpl_free(struct tmpl *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		free(t->parts[i].text);
	free(t->parts);
	free(t);
}

bool tmpl_uses(const struct tmpl *t, const char *name)
{
	for (size_t i = 0; t && i < t->n; i++)
		if (t->parts[i].var && strcmp(t->parts[i].text, name) == 0)
			return true;
	return false;
}

static void append_escaped(struct buf *out, const char *v, size_t len, enum tmpl_escape esc)
{
	static const char hex[] = "0123456789ABCDEF";
	if (esc == TMPL_RAW) {
		buf_append(out, v, len);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)v[i];
		if (esc == TMPL_URL) {
			bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
					  c == '-' || c == '.' || c == '_' || c == '~';
			if (unreserved) {
				buf_append(out, &c, 1);
			} else {
				char e[3] = { '%', hex[c >> 4], hex[c & 15] };
				buf_append(out, e, 3);
			}
		} else { /* TMPL_JSON: inside a JSON string */
			if (c == '"' || c == '\\') {
				char e[2] = { '\\', (char)c };
				buf_append(out, e, 2);
			} else if (c < 0x20) {
				char e[7];
				snprintf(e, sizeof e, "\\u%04x", c);
				buf_append(out, e, 6);
			} else {
				buf_append(out, &c, 1);
			}
		}
	}
}

bool tmpl_render(const struct tmpl *t, tmpl_lookup_fn fn, void *arg, enum tmpl_escape esc, struct buf *out)
{
	bool all = true;
	for (size_t i = 0; i < t->n; i++) {
		const struct part *p = &t->parts[i];
		if (!p->var) {
			buf_append(out, p->text, p->len);
			continue;
		}
		char scratch[64];
		size_t vlen = 0;
		const char *v = fn(arg, p->text, p->len, &vlen, scratch, sizeof scratch);
		if (!v) {
			all = false;
			continue;
		}
		append_escaped(out, v, vlen, esc);
	}
	return all;
}

char *tmpl_render_str(const struct tmpl *t, tmpl_lookup_fn fn, void *arg, enum tmpl_escape esc, size_t *len)
{
	struct buf b = { 0 };
	tmpl_render(t, fn, arg, esc, &b);
	if (len)
		*len = b.len;
	buf_append(&b, "", 1);
	return (char *)b.data;
}

bool tmpl_sql(const char *query, const char *const *allowed, enum tmpl_sql_style style, char **sql, char ***names,
	      size_t *n, char *err, size_t errlen)
{
	struct buf out = { 0 };
	char **v = NULL;
	size_t cnt = 0;
	const char *p = query;
	while (*p) {
		const char *open = strstr(p, "${");
		const char *close = open ? strchr(open + 2, '}') : NULL;
		if (!open || !close) {
			buf_append_str(&out, p);
			break;
		}
		const char *name = open + 2;
		size_t nlen = (size_t)(close - name);
		if (!allowed_name(name, nlen, allowed)) {
			snprintf(err, errlen, "placeholder ${%.*s} is not allowed here", (int)nlen, name);
			goto fail;
		}
		/* '${var}' written in quotes is the same parameter: drop the quotes. */
		const char *lit_end = open;
		const char *after = close + 1;
		if (open > p && (open[-1] == '\'' || open[-1] == '"') && *after == open[-1]) {
			lit_end = open - 1;
			after++;
		}
		buf_append(&out, p, (size_t)(lit_end - p));
		v = xrealloc(v, (cnt + 2) * sizeof *v);
		v[cnt++] = xstrndup(name, nlen);
		v[cnt] = NULL;
		if (style == TMPL_SQL_DOLLAR)
			buf_printf(&out, "$%zu", cnt);
		else
			buf_append(&out, "?", 1);
		p = after;
	}
	buf_append(&out, "", 1);
	*sql = (char *)out.data;
	if (!v)
		v = xcalloc(1, sizeof *v);
	*names = v;
	*n = cnt;
	return true;
fail:
	buf_free(&out);
	tmpl_sql_free_names(v);
	return false;
}

void tmpl_sql_free_names(char **names)
{
	for (size_t i = 0; names && names[i]; i++)
		free(names[i]);
	free(names);
}
