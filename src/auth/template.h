/* ${placeholder} templates for backend requests (authentication and authorization):
 * HTTP URLs, headers and bodies, Redis commands, SQL queries.
 *
 * A template is parsed once (at start-up) into literal parts and variable references.
 * Rendering asks a lookup function for each variable's value; an undefined value renders
 * as "" (EMQX) unless the caller asks to know (tmpl_render returns false). Names not in
 * the caller's allowed list are kept as literal text, unrendered (EMQX).
 *
 * Values are escaped for where they go (TMPL_RAW, TMPL_URL for URL path/query parts,
 * TMPL_JSON inside a JSON string). SQL never splices values into the query text: tmpl_sql
 * turns placeholders into bind parameters ($1, $2, ... or ?) and returns the variable
 * names to bind, in order.
 */
#ifndef BW_TEMPLATE_H
#define BW_TEMPLATE_H

#include <stdbool.h>
#include <stddef.h>

#include "core/buf.h"

struct tmpl;

enum tmpl_escape { TMPL_RAW, TMPL_URL, TMPL_JSON };

/* Lookup: the value of variable name[0..name_len) (e.g. "username", "client_attrs.site"),
 * or NULL when undefined; *len its length. scratch may hold a formatted value. */
typedef const char *(*tmpl_lookup_fn)(void *arg, const char *name, size_t name_len, size_t *len, char *scratch,
				      size_t scratch_len);

/* Parse text; allowed is a NULL-terminated list of variable names ("client_attrs." as a
 * prefix allows every attribute); others stay literal. Never fails: a lone "${" is text. */
struct tmpl *tmpl_parse(const char *text, const char *const *allowed);
void tmpl_free(struct tmpl *t);
/* True when the template references variable name. */
bool tmpl_uses(const struct tmpl *t, const char *name);
/* Append the rendering to out. Returns false when a referenced variable was undefined
 * (rendered as ""), true otherwise. */
bool tmpl_render(const struct tmpl *t, tmpl_lookup_fn fn, void *arg, enum tmpl_escape esc, struct buf *out);
/* Render to a fresh NUL-terminated string (for convenience). */
char *tmpl_render_str(const struct tmpl *t, tmpl_lookup_fn fn, void *arg, enum tmpl_escape esc, size_t *len);

enum tmpl_sql_style { TMPL_SQL_DOLLAR, TMPL_SQL_QUESTION };
/* Rewrite a SQL query: each ${var} (also when written inside quotes, '${var}') becomes a
 * bind parameter; *names gets the variable names in parameter order (NULL-terminated,
 * free with tmpl_sql_free_names), *sql the rewritten query. Returns false with err filled
 * on a placeholder not in allowed. */
bool tmpl_sql(const char *query, const char *const *allowed, enum tmpl_sql_style style, char **sql, char ***names,
	      size_t *n, char *err, size_t errlen);
void tmpl_sql_free_names(char **names);

/* The placeholders authentication backends may use (EMQX AUTHN_DEFAULT_ALLOWED_VARS). */
extern const char *const tmpl_authn_vars[];

#endif
