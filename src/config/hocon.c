/* HOCON parser (see hocon.h for the accepted language).
 *
 * One pass, recursive descent straight over the bytes; there is no separate token
 * stream because HOCON's meaning depends on whitespace (value concatenation) and on
 * newlines (separators).
 *
 * Rules this file decides beyond the header:
 *   - Unquoted values: a run of anything except whitespace, ',', '}', ']', '#', '"',
 *     '{', '[', '=' and control characters; so `0.0.0.0:1883`, `etc/certs/a.pem`,
 *     `a/+/b`, `user@host`, `*` are plain unquoted text. '$' is literal unless it
 *     starts `${`. A value ends at newline, ',', '}', ']', '#' or a `//` comment.
 *     Trailing whitespace is not part of the value.
 *   - `//` starts a comment everywhere except *inside* an unquoted run: `url =
 *     http://x/y` is the string "http://x/y", `a = 1 // note` is 1, and `a = x// note`
 *     is "x// note". `#` always starts a comment, but a `#` glued to unquoted text
 *     (`topic = t/#`, `a = 1#note`) is an error rather than a silently cut value:
 *     quote the value or put a space before the comment.
 *   - A value starting with `'` is refused (single quotes are not string delimiters;
 *     accepting them would silently keep the quotes in e.g. a password). An '=' inside
 *     an unquoted value is refused (catches `a =` followed by a forgotten value).
 *   - Whitespace and newlines may follow `=`/`:` before the value; between key and
 *     separator only spaces and tabs are allowed.
 *   - A value made only of unquoted text and `${VAR}` parts is typed like unquoted
 *     text: `port = ${PORT}` with PORT=1883 is the number 1883. Any quoted part makes
 *     the whole value a quoted STRING.
 *   - Numbers use the JSON grammar (`0755` is the string "0755"); a literal that
 *     overflows a double is a STRING.
 *   - `a = { ... }` and `a { ... }` parse directly into an existing object `a`, which is
 *     the recursive merge of HOCON; `+=` on a missing key creates the array.
 *   - `${?VAR}` unset: as a whole value the key is not assigned (an earlier value
 *     stays) and no intermediate objects of a dotted key are created; inside a
 *     concatenation it is empty text; as an array item the item is dropped.
 *   - include: `include "f"`, `include file("f")`, `include required("f")`,
 *     `include required(file("f"))`. url()/classpath() are refused. A missing
 *     optional file (ENOENT/ENOTDIR) is skipped; any other read error is an error.
 *     Depth > 10 or a file already on the include stack fails with
 *     "include cycle or depth > 10: PATH"; at most 1000 files in one parse.
 *   - Limits: tree depth 64 (root = 0; each object, dotted-key segment and array
 *     level counts), 256 MiB per file. Outside comments, NUL bytes and raw control
 *     characters other than tab/CR/LF are refused (a quoted string also refuses CR/LF:
 *     "unterminated string"); so are `\u0000` and unpaired surrogates in escapes.
 *   - Error lines: where the problem is seen, except: an unterminated string points at
 *     its opening quote, and a missing value at its key. A file that cannot be read at
 *     all is reported with line 0.
 *   - Member lookup during parsing goes through a hash index keyed by (object, key),
 *     so objects with many keys and long arrays parse in linear time. Objects and
 *     arrays replaced by a later definition are kept until the parse ends, so that no
 *     object address in the index is reused while parsing; replaced scalars are freed
 *     at once.
 */
#include "config/hocon.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/buf.h"
#include "core/hash.h"
#include "core/list.h"

#define MAX_DEPTH 64
#define MAX_INCLUDE_DEPTH 10
#define MAX_INCLUDES 1000
#define MAX_FILE_SIZE ((size_t)256 << 20)
#define NO_IDX SIZE_MAX

/* The root allocation: the root node plus what the tree owns besides nodes. */
struct doc {
	struct hocon_node root;
	char **files; /* interned file names */
	size_t nfiles;
};

/* One text being parsed (the top-level text or an included file). */
struct src {
	const char *p, *end;
	int line;
	const char *file; /* interned */
	char *dir;        /* directory for relative includes; NULL = current directory */
};

struct slot {
	const struct hocon_node *obj; /* NULL = empty slot */
	size_t idx;
};

struct parser {
	struct src *s;
	struct hocon_error *err;
	bool failed;
	unsigned flags;
	struct doc *doc;
	struct slot *slots; /* (object, key) -> member index */
	size_t mask, used;
	struct hocon_node **dead; /* replaced values, freed when the parse ends */
	size_t ndead, capdead;
	char *incstack[MAX_INCLUDE_DEPTH + 1]; /* realpaths of the files being parsed */
	int ninc;
	size_t nincludes;
};

/* A dotted key split into segments. */
struct keypath {
	char **seg;
	size_t n, cap;
	int line;
};

static bool parse_body(struct parser *P, struct hocon_node *obj, int depth, int closing, int open_line);
static bool parse_value(struct parser *P, int depth, const char *key, int key_line, struct hocon_node **out);
static void free_node(struct hocon_node *n);

/* ---------------------------------------------------------------- errors */

/* A character for messages; use as ch(c).s inside the call that prints it. */
struct chdesc {
	char s[16];
};

static struct chdesc ch(int c)
{
	struct chdesc d;
	if (c < 0)
		snprintf(d.s, sizeof d.s, "end of file");
	else if (c == '\n')
		snprintf(d.s, sizeof d.s, "newline");
	else if (c == ' ')
		snprintf(d.s, sizeof d.s, "space");
	else if (c > 0x20 && c < 0x7f)
		snprintf(d.s, sizeof d.s, "'%c'", c);
	else
		snprintf(d.s, sizeof d.s, "'\\x%02x'", (unsigned)c);
	return d;
}

static bool fail_at(struct parser *P, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool fail_at(struct parser *P, int line, const char *fmt, ...)
{
	if (P->failed)
		return false;
	P->failed = true;
	if (!P->err)
		return false;
	snprintf(P->err->file, sizeof P->err->file, "%s", P->s ? P->s->file : "");
	P->err->line = line;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(P->err->msg, sizeof P->err->msg, fmt, ap);
	va_end(ap);
	return false;
}

#define fail(P, ...) fail_at((P), (P)->s->line, __VA_ARGS__)

/* ---------------------------------------------------------------- nodes */

static struct hocon_node *new_node(struct parser *P, enum hocon_type t, int line)
{
	struct hocon_node *n = xcalloc(1, sizeof *n);
	n->type = t;
	n->file = P->s->file;
	n->line = line;
	return n;
}

/* Arrays grow by doubling; the capacity is implied by n (0, 4, 8, 16, ...). */
static bool needs_grow(size_t n)
{
	return n == 0 || (n >= 4 && (n & (n - 1)) == 0);
}

static size_t grown_cap(size_t n)
{
	return n == 0 ? 4 : n * 2;
}

static void array_push(struct hocon_node *arr, struct hocon_node *item)
{
	if (needs_grow(arr->n))
		arr->items = xrealloc(arr->items, grown_cap(arr->n) * sizeof *arr->items);
	arr->items[arr->n++] = item;
}

static void free_contents(struct hocon_node *n)
{
	free(n->str);
	for (size_t i = 0; i < n->n; i++) {
		if (n->type == HOCON_ARRAY) {
			free_node(n->items[i]);
		} else {
			free(n->members[i].key);
			free_node(n->members[i].value);
		}
	}
	free(n->items);
	free(n->members);
}

static void free_node(struct hocon_node *n)
{
	if (!n)
		return;
	free_contents(n);
	free(n);
}

/* Dispose of a replaced value. Objects (and arrays, which may hold objects) stay allocated
 * until the parse ends so that no address in the member index is reused meanwhile. */
static void bury(struct parser *P, struct hocon_node *n)
{
	if (n->type != HOCON_OBJECT && n->type != HOCON_ARRAY) {
		free_node(n);
		return;
	}
	if (P->ndead == P->capdead) {
		P->capdead = P->capdead ? P->capdead * 2 : 16;
		P->dead = xrealloc(P->dead, P->capdead * sizeof *P->dead);
	}
	P->dead[P->ndead++] = n;
}

static const char *intern(struct doc *d, const char *name)
{
	for (size_t i = 0; i < d->nfiles; i++)
		if (strcmp(d->files[i], name) == 0)
			return d->files[i];
	d->files = xrealloc(d->files, (d->nfiles + 1) * sizeof *d->files);
	d->files[d->nfiles] = xstrdup(name);
	return d->files[d->nfiles++];
}

/* ---------------------------------------------------------------- member index */

static uint64_t slot_hash(const struct hocon_node *obj, const char *key)
{
	/* SipHash of the key, then a full avalanche with the object address (whose low bits are
	 * always zero) so that both spread over the low bits the table mask keeps */
	uint64_t h = hash_bytes(key, strlen(key)) ^ (uint64_t)(uintptr_t)obj;
	h ^= h >> 33;
	h *= 0xff51afd7ed558ccdull;
	h ^= h >> 33;
	h *= 0xc4ceb9fe1a85ec53ull;
	h ^= h >> 33;
	return h;
}

static size_t index_lookup(struct parser *P, const struct hocon_node *obj, const char *key)
{
	if (!P->slots)
		return NO_IDX;
	for (size_t i = slot_hash(obj, key) & P->mask;; i = (i + 1) & P->mask) {
		const struct slot *s = &P->slots[i];
		if (!s->obj)
			return NO_IDX;
		if (s->obj == obj && strcmp(obj->members[s->idx].key, key) == 0)
			return s->idx;
	}
}

static void index_put(struct parser *P, const struct hocon_node *obj, size_t idx);

static void index_grow(struct parser *P)
{
	struct slot *old = P->slots;
	size_t oldn = old ? P->mask + 1 : 0;
	size_t n = oldn ? oldn * 2 : 64;
	P->slots = xcalloc(n, sizeof *P->slots);
	P->mask = n - 1;
	P->used = 0;
	for (size_t i = 0; i < oldn; i++)
		if (old[i].obj)
			index_put(P, old[i].obj, old[i].idx);
	free(old);
}

static void index_put(struct parser *P, const struct hocon_node *obj, size_t idx)
{
	if (!P->slots || (P->used + 1) * 2 > P->mask + 1)
		index_grow(P);
	size_t i = slot_hash(obj, obj->members[idx].key) & P->mask;
	while (P->slots[i].obj)
		i = (i + 1) & P->mask;
	P->slots[i].obj = obj;
	P->slots[i].idx = idx;
	P->used++;
}

/* Append a member (takes ownership of key and value). */
static void obj_add(struct parser *P, struct hocon_node *obj, char *key, int line, struct hocon_node *value)
{
	if (needs_grow(obj->n))
		obj->members = xrealloc(obj->members, grown_cap(obj->n) * sizeof *obj->members);
	struct hocon_member *m = &obj->members[obj->n];
	m->key = key;
	m->file = P->s->file;
	m->line = line;
	m->value = value;
	obj->n++;
	index_put(P, obj, obj->n - 1);
}

/* Set obj.key = value: replaces whatever was there (the member keeps its place). */
static void obj_set(struct parser *P, struct hocon_node *obj, const char *key, int line, struct hocon_node *value)
{
	size_t idx = index_lookup(P, obj, key);
	if (idx == NO_IDX) {
		obj_add(P, obj, xstrdup(key), line, value);
		return;
	}
	struct hocon_member *m = &obj->members[idx];
	bury(P, m->value);
	m->value = value;
	m->file = P->s->file;
	m->line = line;
}

/* The object at obj.seg (replacing a non-object there, creating a missing one). */
static struct hocon_node *obj_child_object(struct parser *P, struct hocon_node *obj, const char *seg, int line,
					   int value_line)
{
	size_t idx = index_lookup(P, obj, seg);
	if (idx != NO_IDX && obj->members[idx].value->type == HOCON_OBJECT)
		return obj->members[idx].value;
	struct hocon_node *child = new_node(P, HOCON_OBJECT, value_line);
	obj_set(P, obj, seg, line, child);
	return child;
}

/* The object that holds the last segment of kp, creating intermediate objects. */
static struct hocon_node *walk_parent(struct parser *P, struct hocon_node *obj, const struct keypath *kp)
{
	for (size_t i = 0; i + 1 < kp->n; i++)
		obj = obj_child_object(P, obj, kp->seg[i], kp->line, kp->line);
	return obj;
}

/* ---------------------------------------------------------------- lexing helpers */

static int peek(const struct parser *P)
{
	return P->s->p < P->s->end ? (unsigned char)*P->s->p : -1;
}

static int peek_at(const struct parser *P, size_t k)
{
	return (size_t)(P->s->end - P->s->p) > k ? (unsigned char)P->s->p[k] : -1;
}

static bool at_comment(const struct parser *P)
{
	int c = peek(P);
	return c == '#' || (c == '/' && peek_at(P, 1) == '/');
}

static bool at_str(const struct parser *P, const char *s)
{
	size_t n = strlen(s);
	return (size_t)(P->s->end - P->s->p) >= n && memcmp(P->s->p, s, n) == 0;
}

static bool is_space(int c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

static bool is_key_char(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}

static bool is_ctl(int c)
{
	return (c >= 0 && c < 0x20 && c != '\t' && c != '\r' && c != '\n') || c == 0x7f;
}

static void skip_comment(struct parser *P)
{
	const char *nl = memchr(P->s->p, '\n', (size_t)(P->s->end - P->s->p));
	P->s->p = nl ? nl : P->s->end;
}

/* Skip spaces and comments; also newlines when `newlines`. */
static void skip_ws(struct parser *P, bool newlines)
{
	for (;;) {
		int c = peek(P);
		if (is_space(c)) {
			P->s->p++;
		} else if (c == '\n' && newlines) {
			P->s->p++;
			P->s->line++;
		} else if (at_comment(P)) {
			skip_comment(P);
		} else {
			return;
		}
	}
}

static void skip_spaces(struct parser *P)
{
	while (is_space(peek(P)))
		P->s->p++;
}

static void buf_finish(struct buf *b)
{
	buf_append(b, "", 1); /* NUL; len counts it */
	b->len--;
}

/* ---------------------------------------------------------------- strings */

static void put_utf8(struct buf *b, uint32_t cp)
{
	uint8_t o[4];
	size_t n;
	if (cp < 0x80) {
		o[0] = (uint8_t)cp;
		n = 1;
	} else if (cp < 0x800) {
		o[0] = (uint8_t)(0xc0 | (cp >> 6));
		o[1] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 2;
	} else if (cp < 0x10000) {
		o[0] = (uint8_t)(0xe0 | (cp >> 12));
		o[1] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 3;
	} else {
		o[0] = (uint8_t)(0xf0 | (cp >> 18));
		o[1] = (uint8_t)(0x80 | ((cp >> 12) & 0x3f));
		o[2] = (uint8_t)(0x80 | ((cp >> 6) & 0x3f));
		o[3] = (uint8_t)(0x80 | (cp & 0x3f));
		n = 4;
	}
	buf_append(b, o, n);
}

static bool read_hex4(struct parser *P, uint32_t *out)
{
	uint32_t v = 0;
	for (size_t i = 0; i < 4; i++) {
		int c = peek_at(P, i);
		int d;
		if (c >= '0' && c <= '9')
			d = c - '0';
		else if (c >= 'a' && c <= 'f')
			d = c - 'a' + 10;
		else if (c >= 'A' && c <= 'F')
			d = c - 'A' + 10;
		else
			return fail(P, "invalid \\u escape: expected four hex digits");
		v = v * 16 + (uint32_t)d;
	}
	P->s->p += 4;
	*out = v;
	return true;
}

/* After a backslash: decode one escape into b. */
static bool parse_escape(struct parser *P, struct buf *b, int open_line)
{
	int c = peek(P);
	if (c < 0)
		return fail_at(P, open_line, "unterminated string");
	P->s->p++;
	switch (c) {
	case '"': buf_append(b, "\"", 1); return true;
	case '\\': buf_append(b, "\\", 1); return true;
	case '/': buf_append(b, "/", 1); return true;
	case 'b': buf_append(b, "\b", 1); return true;
	case 'f': buf_append(b, "\f", 1); return true;
	case 'n': buf_append(b, "\n", 1); return true;
	case 'r': buf_append(b, "\r", 1); return true;
	case 't': buf_append(b, "\t", 1); return true;
	case 'u': break;
	default: {
		return fail(P, "invalid escape in string: backslash followed by %s", ch(c).s);
	}
	}
	uint32_t cp;
	if (!read_hex4(P, &cp))
		return false;
	if (cp >= 0xd800 && cp <= 0xdbff) {
		uint32_t lo;
		if (!(peek(P) == '\\' && peek_at(P, 1) == 'u'))
			return fail(P, "invalid \\u escape: unpaired surrogate");
		P->s->p += 2;
		if (!read_hex4(P, &lo))
			return false;
		if (lo < 0xdc00 || lo > 0xdfff)
			return fail(P, "invalid \\u escape: unpaired surrogate");
		cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
	} else if (cp >= 0xdc00 && cp <= 0xdfff) {
		return fail(P, "invalid \\u escape: unpaired surrogate");
	} else if (cp == 0) {
		return fail(P, "\\u0000 is not allowed in strings");
	}
	put_utf8(b, cp);
	return true;
}

/* "..." at p: decode into b. */
static bool parse_quoted(struct parser *P, struct buf *b)
{
	int open_line = P->s->line;
	P->s->p++;
	for (;;) {
		const char *start = P->s->p;
		while (P->s->p < P->s->end) {
			unsigned char c = (unsigned char)*P->s->p;
			if (c == '"' || c == '\\' || c < 0x20)
				break;
			P->s->p++;
		}
		buf_append(b, start, (size_t)(P->s->p - start));
		int c = peek(P);
		if (c < 0 || c == '\n' || c == '\r')
			return fail_at(P, open_line, "unterminated string");
		P->s->p++;
		if (c == '"')
			return true;
		if (c == '\\') {
			if (!parse_escape(P, b, open_line))
				return false;
		} else if (c != '\t') {
			return fail(P, "control character %s in string", ch(c).s);
		} else {
			buf_append(b, "\t", 1);
		}
	}
}

/* """...""" at p: raw copy into b. Extra quotes before the closing three belong to the text. */
static bool parse_triple(struct parser *P, struct buf *b)
{
	int open_line = P->s->line;
	P->s->p += 3;
	const char *start = P->s->p;
	for (;;) {
		int c = peek(P);
		if (c < 0)
			return fail_at(P, open_line, "unterminated triple-quoted string");
		if (c == '"' && peek_at(P, 1) == '"' && peek_at(P, 2) == '"') {
			while (peek_at(P, 3) == '"')
				P->s->p++;
			break;
		}
		if (c == '\n')
			P->s->line++;
		else if (c == 0)
			return fail(P, "NUL byte in triple-quoted string");
		P->s->p++;
	}
	buf_append(b, start, (size_t)(P->s->p - start));
	P->s->p += 3;
	return true;
}

/* ${VAR} or ${?VAR} at p. *val is the variable's value or NULL when an optional one is unset. */
static bool parse_subst(struct parser *P, const char **val)
{
	*val = NULL;
	P->s->p += 2;
	bool optional = false;
	if (peek(P) == '?') {
		optional = true;
		P->s->p++;
	}
	const char *start = P->s->p;
	while (P->s->p < P->s->end && (is_key_char((unsigned char)*P->s->p) || *P->s->p == '.'))
		P->s->p++;
	size_t n = (size_t)(P->s->p - start);
	int c = peek(P);
	if (c != '}') {
		if (c < 0 || c == '\n')
			return fail(P, "unterminated substitution: expected '}' after '${%.*s'", (int)(n > 64 ? 64 : n),
				    start);
		return fail(P, "invalid character %s in substitution '${%.*s'", ch(c).s, (int)(n > 64 ? 64 : n),
			    start);
	}
	P->s->p++;
	if (n == 0)
		return fail(P, "empty substitution '${}'");
	char *name = xstrndup(start, n);
	*val = getenv(name);
	bool ok = true;
	if (!*val && !optional)
		ok = fail(P, "environment variable %s is not set", name);
	free(name);
	return ok;
}

/* JSON number grammar over the whole of s. */
static bool is_number(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (*s >= '1' && *s <= '9')
		while (*s >= '0' && *s <= '9')
			s++;
	else
		return false;
	if (*s == '.') {
		s++;
		if (!(*s >= '0' && *s <= '9'))
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!(*s >= '0' && *s <= '9'))
			return false;
		while (*s >= '0' && *s <= '9')
			s++;
	}
	return *s == '\0';
}

/* Give text (NUL-terminated, owned) the type unquoted text has. */
static void classify(struct hocon_node *n, char *text)
{
	static const char *const yes[] = {"true", "yes", "on"}, *const no[] = {"false", "no", "off"};
	for (size_t i = 0; i < 3; i++) {
		if (strcmp(text, yes[i]) == 0 || strcmp(text, no[i]) == 0) {
			n->type = HOCON_BOOL;
			n->boolean = strcmp(text, yes[i]) == 0;
			free(text);
			n->str = xstrdup(n->boolean ? "true" : "false");
			return;
		}
	}
	n->str = text;
	if (strcmp(text, "null") == 0) {
		n->type = HOCON_NULL;
	} else if (is_number(text)) {
		double d = strtod(text, NULL);
		if (isfinite(d)) {
			n->type = HOCON_NUMBER;
			n->number = d;
		} else {
			n->type = HOCON_STRING;
		}
	} else {
		n->type = HOCON_STRING;
	}
}

/* A value that is not an object or array: quoted, triple-quoted and unquoted parts and
 * substitutions on one line. *out is NULL when every part was an unset ${?VAR}. */
static bool parse_concat(struct parser *P, const char *key, int key_line, struct hocon_node **out)
{
	struct buf text = {0};
	int line = P->s->line;
	bool any = false, quoted = false, ok = false;
	size_t parts = 0;
	*out = NULL;
	for (;;) {
		const char *ws = P->s->p;
		skip_spaces(P);
		size_t wslen = (size_t)(P->s->p - ws);
		int c = peek(P);
		if (c < 0 || c == '\n' || c == ',' || c == '}' || c == ']' || at_comment(P))
			break;
		if (c == '{' || c == '[') {
			if (parts)
				fail(P, "unexpected %s after a value (quote the value, or separate it with a newline "
					"or ',')", ch(c).s);
			else
				fail(P, "unexpected %s", ch(c).s);
			goto out;
		}
		if (c == '=') {
			fail(P, "unexpected '=' in value%s%s%s (quote the value)", key ? " of '" : "", key ? key : "",
			     key ? "'" : "");
			goto out;
		}
		if (c == '\'' && !parts) {
			fail(P, "single quotes do not delimit strings; use double quotes");
			goto out;
		}
		if (is_ctl(c)) {
			fail(P, "unexpected character %s", ch(c).s);
			goto out;
		}
		parts++;
		if (c == '"') {
			if (any)
				buf_append(&text, ws, wslen);
			bool triple = peek_at(P, 1) == '"' && peek_at(P, 2) == '"';
			if (!(triple ? parse_triple(P, &text) : parse_quoted(P, &text)))
				goto out;
			any = quoted = true;
		} else if (c == '$' && peek_at(P, 1) == '{') {
			const char *val = NULL;
			if (!parse_subst(P, &val))
				goto out;
			if (val) {
				if (any)
					buf_append(&text, ws, wslen);
				buf_append_str(&text, val);
				any = true;
			}
		} else {
			if (any)
				buf_append(&text, ws, wslen);
			const char *start = P->s->p;
			while (P->s->p < P->s->end) {
				unsigned char u = (unsigned char)*P->s->p;
				if (is_space(u) || u == '\n' || u == ',' || u == '}' || u == ']' || u == '#' || u == '"' ||
				    u == '{' || u == '[' || u == '=' || is_ctl(u) ||
				    (u == '$' && peek_at(P, 1) == '{'))
					break;
				P->s->p++;
			}
			buf_append(&text, start, (size_t)(P->s->p - start));
			any = true;
			if (peek(P) == '#') {
				fail(P, "'#' right after unquoted text starts a comment: quote the value if '#' is part "
					"of it (\"t/#\"), or put a space before the comment");
				goto out;
			}
		}
	}
	if (!parts) {
		struct chdesc d = ch(peek(P));
		if (at_comment(P))
			snprintf(d.s, sizeof d.s, "a comment");
		if (key && key_line != P->s->line)
			fail_at(P, key_line, "expected a value for '%s', found %s (line %d)", key, d.s, P->s->line);
		else if (key)
			fail(P, "expected a value for '%s', found %s", key, d.s);
		else
			fail(P, "expected a value, found %s", d.s);
		goto out;
	}
	ok = true;
	if (!any)
		goto out;
	buf_finish(&text);
	struct hocon_node *n = new_node(P, HOCON_STRING, line);
	if (quoted) {
		n->str = (char *)text.data;
		n->quoted = true;
	} else {
		classify(n, (char *)text.data);
	}
	text.data = NULL;
	*out = n;
out:
	buf_free(&text);
	return ok;
}

/* ---------------------------------------------------------------- arrays, values */

static bool depth_ok(struct parser *P, int depth)
{
	if (depth > MAX_DEPTH)
		return fail(P, "nesting deeper than %d levels", MAX_DEPTH);
	return true;
}

static bool parse_array(struct parser *P, int depth, struct hocon_node **out)
{
	int open_line = P->s->line;
	struct hocon_node *arr = new_node(P, HOCON_ARRAY, open_line);
	P->s->p++;
	for (;;) {
		skip_ws(P, true);
		int c = peek(P);
		if (c < 0)
			goto unclosed;
		if (c == ']') {
			P->s->p++;
			*out = arr;
			return true;
		}
		if (c == '}')
			goto unclosed;
		if (c == ',') {
			fail(P, "unexpected ',' in array (empty item)");
			goto bad;
		}
		if (!depth_ok(P, depth + 1))
			goto bad;
		struct hocon_node *item;
		if (!parse_value(P, depth + 1, NULL, 0, &item))
			goto bad;
		if (item)
			array_push(arr, item);
		skip_ws(P, false);
		c = peek(P);
		if (c == ',') {
			P->s->p++;
		} else if (!(c == '\n' || c == ']' || c == '}' || c < 0)) {
			fail(P, "expected ',', newline or ']' after array item, found %s", ch(c).s);
			goto bad;
		}
		continue;
	unclosed:
		fail(P, "expected ']' to close array opened at line %d, found %s", open_line, ch(peek(P)).s);
		goto bad;
	}
bad:
	free_node(arr);
	return false;
}

/* Any value at p. *out is NULL (and true returned) for an unset ${?VAR}. key/key_line (NULL/0 in
 * arrays) only make error messages point at the key. */
static bool parse_value(struct parser *P, int depth, const char *key, int key_line, struct hocon_node **out)
{
	*out = NULL;
	int c = peek(P);
	if (c == '{') {
		int open_line = P->s->line;
		struct hocon_node *obj = new_node(P, HOCON_OBJECT, open_line);
		P->s->p++;
		if (!parse_body(P, obj, depth, '}', open_line)) {
			free_node(obj);
			return false;
		}
		*out = obj;
		return true;
	}
	if (c == '[')
		return parse_array(P, depth, out);
	return parse_concat(P, key, key_line, out);
}

/* ---------------------------------------------------------------- keys, members */

static void keypath_free(struct keypath *kp)
{
	for (size_t i = 0; i < kp->n; i++)
		free(kp->seg[i]);
	free(kp->seg);
}

/* The dotted path for messages, cut with "..." to fit outlen (>= 8). */
static void keypath_str(const struct keypath *kp, char *out, size_t outlen)
{
	size_t o = 0, room = outlen - 4;
	for (size_t i = 0; i < kp->n; i++) {
		const char *p = kp->seg[i];
		if (i) {
			if (o >= room)
				goto cut;
			out[o++] = '.';
		}
		for (; *p; p++) {
			if (o >= room)
				goto cut;
			out[o++] = *p;
		}
	}
	out[o] = '\0';
	return;
cut:
	memcpy(out + o, "...", 4);
}

static bool parse_key(struct parser *P, struct keypath *kp)
{
	kp->line = P->s->line;
	for (;;) {
		int c = peek(P);
		struct buf seg = {0};
		if (c == '"') {
			if (peek_at(P, 1) == '"' && peek_at(P, 2) == '"')
				return fail(P, "triple-quoted keys are not supported");
			if (!parse_quoted(P, &seg)) {
				buf_free(&seg);
				return false;
			}
		} else if (is_key_char(c)) {
			const char *start = P->s->p;
			while (is_key_char(peek(P)))
				P->s->p++;
			buf_append(&seg, start, (size_t)(P->s->p - start));
		} else {
			if (kp->n)
				return fail(P, "expected a key after '.', found %s", ch(c).s);
			return fail(P, "unexpected character %s", ch(c).s);
		}
		buf_finish(&seg);
		if (kp->n == kp->cap) {
			kp->cap = kp->cap ? kp->cap * 2 : 4;
			kp->seg = xrealloc(kp->seg, kp->cap * sizeof *kp->seg);
		}
		kp->seg[kp->n++] = (char *)seg.data;
		if (kp->n > MAX_DEPTH)
			return fail(P, "nesting deeper than %d levels", MAX_DEPTH);
		if (peek(P) != '.')
			return true;
		P->s->p++;
	}
}

/* Read a whole file; sets errno and returns false on failure. */
static bool read_whole_file(const char *path, char **data, size_t *len)
{
	FILE *f = fopen(path, "rb");
	if (!f)
		return false;
	struct buf b = {0};
	bool ok = true;
	errno = 0;
	for (;;) {
		uint8_t *dst = buf_reserve(&b, 65536);
		size_t n = fread(dst, 1, 65536, f);
		b.len += n;
		if (b.len > MAX_FILE_SIZE) {
			errno = EFBIG;
			ok = false;
			break;
		}
		if (n < 65536) {
			if (ferror(f)) {
				if (!errno)
					errno = EIO;
				ok = false;
			}
			break;
		}
	}
	int saved = errno;
	fclose(f);
	errno = saved;
	if (!ok) {
		buf_free(&b);
		return false;
	}
	buf_finish(&b);
	*data = (char *)b.data;
	*len = b.len;
	return true;
}

static char *dir_of(const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return NULL;
	if (slash == path)
		return xstrdup("/");
	return xstrndup(path, (size_t)(slash - path));
}

static bool parse_root(struct parser *P, struct hocon_node *obj, int depth);

/* Parse `path` into obj as an included (or the top-level) file. */
static bool parse_file_into(struct parser *P, struct hocon_node *obj, int depth, const char *path,
			    const char *text, size_t len)
{
	struct src s = {
		.p = text,
		.end = text + len,
		.line = 1,
		.file = intern(P->doc, path),
		.dir = dir_of(path),
	};
	struct src *saved = P->s;
	P->s = &s;
	bool ok = parse_root(P, obj, depth);
	P->s = saved;
	free(s.dir);
	return ok;
}

static bool do_include(struct parser *P, struct hocon_node *obj, int depth, const char *name, bool required,
		       int line)
{
	if (P->flags & HOCON_NO_INCLUDE)
		return fail_at(P, line, "include is disabled here: %s", name);
	if (!*name)
		return fail_at(P, line, "include with an empty file name");
	char *path = (name[0] == '/' || !P->s->dir) ? xstrdup(name) : xasprintf("%s/%s", P->s->dir, name);
	char *text = NULL, *real = NULL;
	size_t len;
	bool ok = false;
	if (P->ninc > MAX_INCLUDE_DEPTH) {
		fail_at(P, line, "include cycle or depth > %d: %s", MAX_INCLUDE_DEPTH, path);
		goto out;
	}
	if (++P->nincludes > MAX_INCLUDES) {
		fail_at(P, line, "too many included files (more than %d)", MAX_INCLUDES);
		goto out;
	}
	if (!read_whole_file(path, &text, &len)) {
		if ((errno == ENOENT || errno == ENOTDIR) && !required)
			ok = true;
		else if (errno == ENOENT)
			fail_at(P, line, "included file not found: %s", path);
		else
			fail_at(P, line, "cannot read included file %s: %s", path, strerror(errno));
		goto out;
	}
	real = realpath(path, NULL);
	for (int i = 0; real && i < P->ninc; i++) {
		if (P->incstack[i] && strcmp(P->incstack[i], real) == 0) {
			fail_at(P, line, "include cycle or depth > %d: %s", MAX_INCLUDE_DEPTH, path);
			goto out;
		}
	}
	P->incstack[P->ninc++] = real;
	ok = parse_file_into(P, obj, depth, path, text, len);
	P->ninc--;
out:
	free(real);
	free(text);
	free(path);
	return ok;
}

/* `include ...` at p (the keyword already recognised). */
static bool parse_include(struct parser *P, struct hocon_node *obj, int depth)
{
	int line = P->s->line;
	P->s->p += strlen("include");
	skip_spaces(P);
	int closers = 0;
	bool required = false;
	if (at_str(P, "required(")) {
		required = true;
		P->s->p += strlen("required(");
		closers++;
		skip_spaces(P);
	}
	if (at_str(P, "file(")) {
		P->s->p += strlen("file(");
		closers++;
		skip_spaces(P);
	} else if (at_str(P, "url(") || at_str(P, "classpath(")) {
		return fail(P, "include url(...) and classpath(...) are not supported; use a file name");
	}
	if (peek(P) != '"' || (peek_at(P, 1) == '"' && peek_at(P, 2) == '"'))
		return fail(P, "expected a quoted file name after include");
	struct buf name = {0};
	if (!parse_quoted(P, &name)) {
		buf_free(&name);
		return false;
	}
	buf_finish(&name);
	for (; closers; closers--) {
		skip_spaces(P);
		if (peek(P) != ')') {
			buf_free(&name);
			return fail(P, "expected ')' in include");
		}
		P->s->p++;
	}
	bool ok = do_include(P, obj, depth, (char *)name.data, required, line);
	buf_free(&name);
	return ok;
}

/* `include` keyword (not a key named include) at p? */
static bool at_include(const struct parser *P)
{
	if (!at_str(P, "include"))
		return false;
	size_t i = strlen("include");
	if (peek_at(P, i) != ' ' && peek_at(P, i) != '\t' && peek_at(P, i) != '"')
		return false;
	while (peek_at(P, i) == ' ' || peek_at(P, i) == '\t')
		i++;
	int c = peek_at(P, i);
	if (c == '"')
		return true;
	while (c >= 'a' && c <= 'z')
		c = peek_at(P, ++i);
	return c == '(';
}

static bool parse_member(struct parser *P, struct hocon_node *obj, int depth)
{
	if (at_include(P))
		return parse_include(P, obj, depth);
	struct keypath kp = {0};
	char name[256];
	bool ok = false;
	if (!parse_key(P, &kp))
		goto out;
	keypath_str(&kp, name, sizeof name);
	skip_spaces(P);
	int c = peek(P);
	bool append = false;
	if (c == '=' || c == ':') {
		P->s->p++;
	} else if (c == '+' && peek_at(P, 1) == '=') {
		P->s->p += 2;
		append = true;
	} else if (c != '{') {
		fail(P, "expected '=', ':' or '{' after key '%s', found %s", name, ch(c).s);
		goto out;
	}
	skip_ws(P, true);
	int vdepth = depth + (int)kp.n + (append ? 1 : 0);
	if (!depth_ok(P, vdepth))
		goto out;
	if (!append && peek(P) == '{') {
		/* Parse straight into the existing object: HOCON's recursive merge. */
		int open_line = P->s->line;
		struct hocon_node *parent = walk_parent(P, obj, &kp);
		struct hocon_node *target = obj_child_object(P, parent, kp.seg[kp.n - 1], kp.line, open_line);
		P->s->p++;
		ok = parse_body(P, target, vdepth, '}', open_line);
		goto out;
	}
	struct hocon_node *v;
	if (!parse_value(P, vdepth, name, kp.line, &v))
		goto out;
	ok = true;
	if (!v)
		goto out;
	struct hocon_node *parent = walk_parent(P, obj, &kp);
	const char *last = kp.seg[kp.n - 1];
	if (!append) {
		obj_set(P, parent, last, kp.line, v);
		goto out;
	}
	size_t idx = index_lookup(P, parent, last);
	if (idx == NO_IDX) {
		struct hocon_node *arr = new_node(P, HOCON_ARRAY, kp.line);
		array_push(arr, v);
		obj_add(P, parent, xstrdup(last), kp.line, arr);
	} else if (parent->members[idx].value->type == HOCON_ARRAY) {
		array_push(parent->members[idx].value, v);
	} else {
		free_node(v);
		ok = fail_at(P, kp.line, "'+=' needs an array, but '%s' is %s %s (line %d)", name,
			     parent->members[idx].value->type == HOCON_OBJECT ? "an" : "a",
			     hocon_type_str(parent->members[idx].value->type), parent->members[idx].value->line);
	}
out:
	keypath_free(&kp);
	return ok;
}

/* Members of an object up to `closing` ('}' or -1 for end of text). */
static bool parse_body(struct parser *P, struct hocon_node *obj, int depth, int closing, int open_line)
{
	for (;;) {
		skip_ws(P, true);
		int c = peek(P);
		if (c == closing) {
			if (c >= 0)
				P->s->p++;
			return true;
		}
		if (c < 0 || c == ']' || c == '}') {
			if (closing == '}')
				return fail(P, "expected '}' to close object opened at line %d, found %s", open_line,
					    ch(c).s);
			return fail(P, "unexpected %s", ch(c).s);
		}
		if (c == ',')
			return fail(P, "unexpected ','");
		if (!parse_member(P, obj, depth))
			return false;
		skip_ws(P, false);
		c = peek(P);
		if (c == ',') {
			P->s->p++;
		} else if (!(c == '\n' || c == '}' || c == ']' || c < 0)) {
			return fail(P, "expected ',' or newline after a member, found %s", ch(c).s);
		}
	}
}

/* A whole text: an object with optional braces. */
static bool parse_root(struct parser *P, struct hocon_node *obj, int depth)
{
	if (at_str(P, "\xef\xbb\xbf"))
		P->s->p += 3;
	skip_ws(P, true);
	if (peek(P) == '[')
		return fail(P, "the root of a configuration must be an object, not an array");
	if (peek(P) != '{')
		return parse_body(P, obj, depth, -1, 0);
	int open_line = P->s->line;
	P->s->p++;
	if (!parse_body(P, obj, depth, '}', open_line))
		return false;
	skip_ws(P, true);
	if (peek(P) >= 0) {
		return fail(P, "unexpected %s after the closing '}' of the root object", ch(peek(P)).s);
	}
	return true;
}

/* ---------------------------------------------------------------- entry points */

static void parser_done(struct parser *P)
{
	for (size_t i = 0; i < P->ndead; i++)
		free_node(P->dead[i]);
	free(P->dead);
	free(P->slots);
}

/* Parse text named `name`; `real` is its realpath for cycle detection (owned, may be NULL). */
static struct hocon_node *parse_top(const char *text, size_t len, const char *name, char *real,
				    struct hocon_error *err, unsigned flags)
{
	struct doc *d = xcalloc(1, sizeof *d);
	struct parser P = {.err = err, .flags = flags, .doc = d};
	if (err)
		memset(err, 0, sizeof *err);
	struct src boot = {.file = intern(d, name), .line = 1};
	P.s = &boot;
	d->root.type = HOCON_OBJECT;
	d->root.file = boot.file;
	d->root.line = 1;
	P.incstack[P.ninc++] = real;
	bool ok;
	if (real)
		ok = parse_file_into(&P, &d->root, 0, name, text, len);
	else {
		struct src s = {.p = text, .end = text + len, .line = 1, .file = boot.file};
		P.s = &s;
		ok = parse_root(&P, &d->root, 0);
		P.s = &boot;
	}
	free(real);
	parser_done(&P);
	if (!ok) {
		hocon_free(&d->root);
		return NULL;
	}
	return &d->root;
}

struct hocon_node *hocon_parse_file(const char *path, struct hocon_error *err)
{
	char *text;
	size_t len;
	if (!read_whole_file(path, &text, &len)) {
		if (err) {
			memset(err, 0, sizeof *err);
			snprintf(err->file, sizeof err->file, "%s", path);
			snprintf(err->msg, sizeof err->msg, "cannot read config file: %s", strerror(errno));
		}
		return NULL;
	}
	char *real = realpath(path, NULL);
	if (!real)
		real = xstrdup(path);
	struct hocon_node *root = parse_top(text, len, path, real, err, 0);
	free(text);
	return root;
}

struct hocon_node *hocon_parse_string_ex(const char *text, size_t len, const char *name, struct hocon_error *err,
					 unsigned flags)
{
	return parse_top(text ? text : "", text ? len : 0, name ? name : "<string>", NULL, err, flags);
}

struct hocon_node *hocon_parse_string(const char *text, size_t len, const char *name, struct hocon_error *err)
{
	return hocon_parse_string_ex(text, len, name, err, 0);
}

void hocon_free(struct hocon_node *root)
{
	if (!root)
		return;
	struct doc *d = container_of(root, struct doc, root);
	free_contents(&d->root);
	for (size_t i = 0; i < d->nfiles; i++)
		free(d->files[i]);
	free(d->files);
	free(d);
}

const struct hocon_member *hocon_get_member(const struct hocon_node *obj, const char *key)
{
	if (!obj || obj->type != HOCON_OBJECT || !key)
		return NULL;
	for (size_t i = 0; i < obj->n; i++)
		if (strcmp(obj->members[i].key, key) == 0)
			return &obj->members[i];
	return NULL;
}

const struct hocon_node *hocon_get_path(const struct hocon_node *root, const char *path)
{
	if (!root || !path)
		return NULL;
	const struct hocon_node *n = root;
	const char *p = path;
	while (*p) {
		const char *dot = strchr(p, '.');
		size_t len = dot ? (size_t)(dot - p) : strlen(p);
		if (len == 0 || n->type != HOCON_OBJECT)
			return NULL;
		const struct hocon_node *next = NULL;
		for (size_t i = 0; i < n->n; i++) {
			const char *k = n->members[i].key;
			if (strncmp(k, p, len) == 0 && k[len] == '\0') {
				next = n->members[i].value;
				break;
			}
		}
		if (!next)
			return NULL;
		n = next;
		if (!dot)
			break;
		p = dot + 1;
		if (!*p)
			return NULL;
	}
	return n;
}

const char *hocon_type_str(enum hocon_type t)
{
	switch (t) {
	case HOCON_NULL: return "null";
	case HOCON_BOOL: return "boolean";
	case HOCON_NUMBER: return "number";
	case HOCON_STRING: return "string";
	case HOCON_ARRAY: return "array";
	case HOCON_OBJECT: return "object";
	}
	return "unknown";
}
