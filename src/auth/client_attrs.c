/* Client attributes: see client_attrs.h. */
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth/client_attrs.h"
#include "core/alloc.h"

const char *client_attrs_get(const struct client_attrs *a, const char *name, size_t len)
{
	if (!a)
		return NULL;
	for (size_t i = 0; i < a->n; i++)
		if (strlen(a->v[i].name) == len && memcmp(a->v[i].name, name, len) == 0)
			return a->v[i].value;
	return NULL;
}

void client_attrs_set(struct client_attrs *a, const char *name, const char *value)
{
	for (size_t i = 0; i < a->n; i++) {
		if (strcmp(a->v[i].name, name) == 0) {
			free(a->v[i].value);
			a->v[i].value = xstrdup(value);
			return;
		}
	}
	a->v = xrealloc(a->v, (a->n + 1) * sizeof *a->v);
	a->v[a->n].name = xstrdup(name);
	a->v[a->n].value = xstrdup(value);
	a->n++;
}

bool client_attrs_merge_json(struct client_attrs *a, const char *json)
{
	json_t *doc = json_loads(json, JSON_DECODE_ANY, NULL);
	if (!json_is_object(doc)) {
		json_decref(doc);
		return false;
	}
	const char *k;
	json_t *v;
	json_object_foreach(doc, k, v) {
		if (json_is_string(v))
			client_attrs_set(a, k, json_string_value(v));
	}
	json_decref(doc);
	return true;
}

void client_attrs_copy(struct client_attrs *dst, const struct client_attrs *src)
{
	client_attrs_clear(dst);
	if (!src || !src->n)
		return;
	dst->v = xcalloc(src->n, sizeof *dst->v);
	for (size_t i = 0; i < src->n; i++) {
		dst->v[i].name = xstrdup(src->v[i].name);
		dst->v[i].value = xstrdup(src->v[i].value);
	}
	dst->n = src->n;
}

void client_attrs_clear(struct client_attrs *a)
{
	for (size_t i = 0; i < a->n; i++) {
		free(a->v[i].name);
		free(a->v[i].value);
	}
	free(a->v);
	a->v = NULL;
	a->n = 0;
}
