/* EMQX variform expressions: see variform.h.
 *
 * Layout: values and the per-evaluation arena; UTF-8 helpers; the scanner and parser (text ->
 * AST); PCRE -> POSIX ERE translation; the built-in functions (emqx_variform_bif); the function
 * table with arities and argument types; compile-time checks; evaluation.
 */
#include "auth/variform.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <locale.h>
#include <pthread.h>
#include <regex.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wctype.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "core/alloc.h"
#include "core/buf.h"

/* ---- values ---- */

/* Value types, as bits so a set of possible types (static typing) is a mask. */
enum {
	T_STR = 1,
	T_INT = 2,
	T_FLOAT = 4,
	T_BOOL = 8,
	T_ARR = 16,
};
#define T_NUM (T_INT | T_FLOAT)
#define T_ANY (T_STR | T_INT | T_FLOAT | T_BOOL | T_ARR)

struct val {
	unsigned t; /* exactly one T_ bit */
	union {
		struct {
			const char *p;
			size_t len;
		} s;
		int64_t i;
		double f;
		bool b;
		struct {
			struct val *v;
			size_t n;
		} a;
	} u;
};

static struct val v_str(const char *p, size_t len)
{
	struct val v = { .t = T_STR };
	v.u.s.p = p;
	v.u.s.len = len;
	return v;
}

static struct val v_int(int64_t i)
{
	struct val v = { .t = T_INT };
	v.u.i = i;
	return v;
}

static struct val v_bool(bool b)
{
	struct val v = { .t = T_BOOL };
	v.u.b = b;
	return v;
}

/* EMQX's ?IS_EMPTY: '' and [] (the same term in Erlang). */
static bool v_empty(const struct val *v)
{
	return (v->t == T_STR && v->u.s.len == 0) || (v->t == T_ARR && v->u.a.n == 0);
}

static const char *type_name(unsigned mask)
{
	switch (mask) {
	case T_STR: return "a string";
	case T_INT: return "an integer";
	case T_FLOAT: return "a float";
	case T_BOOL: return "a boolean";
	case T_ARR: return "an array";
	case T_NUM: return "a number";
	case T_STR | T_INT: return "a string or an integer";
	case T_STR | T_BOOL: return "a string or a boolean";
	case T_STR | T_ARR: return "a string or an array";
	default: return "a value";
	}
}

/* ---- AST ---- */

enum nkind { N_STR, N_INT, N_FLOAT, N_BOOL, N_VAR, N_CALL, N_ARRAY };

struct fn;
struct vre;

struct node {
	enum nkind k;
	int col;           /* 1-based column in the source, for messages */
	char *s;           /* STR: the literal; VAR and CALL: the name */
	size_t len;        /* STR: length of s */
	int64_t i;         /* INT */
	double f;          /* FLOAT */
	bool b;            /* BOOL */
	int var_id;        /* VAR: the embedder's id */
	unsigned var_type; /* VAR: T_STR or T_ARR */
	const struct fn *fn;
	struct node **kids; /* CALL arguments, ARRAY elements */
	size_t n;
	struct vre *re; /* CALL of a regex function with a literal pattern: compiled at load */
};

struct variform {
	char *text;
	struct node *root;
};

/* ---- evaluation context: errors and the arena ---- */

struct chunk {
	struct chunk *next;
	size_t cap, off;
	_Alignas(16) unsigned char data[];
};

struct ev {
	variform_lookup_fn lookup;
	void *ud;
	struct chunk *chunks;
	size_t used;
	char *err;
	size_t errlen;
	bool unbound; /* the current error is an unbound variable (caught by coalesce/iif/is_empty) */
	int depth;
};

static bool fail(struct ev *ev, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct ev *ev, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(ev->err, ev->errlen, fmt, ap);
	va_end(ap);
	ev->unbound = false;
	return false;
}

/* n bytes from the evaluation's arena (8-aligned), or NULL (error set) over the budget. */
static void *ev_alloc(struct ev *ev, size_t n)
{
	n = (n + 15) & ~(size_t)15;
	if (n > VARIFORM_MAX_MEM - ev->used) {
		fail(ev, "evaluation needs more than %d MiB", VARIFORM_MAX_MEM >> 20);
		return NULL;
	}
	struct chunk *c = ev->chunks;
	if (!c || c->cap - c->off < n) {
		size_t cap = c ? c->cap * 2 : 2048;
		if (cap > (1u << 20))
			cap = 1u << 20;
		if (cap < n)
			cap = n;
		c = xmalloc(sizeof *c + cap);
		c->next = ev->chunks;
		c->cap = cap;
		c->off = 0;
		ev->chunks = c;
	}
	void *p = c->data + c->off;
	c->off += n;
	ev->used += n;
	return p;
}

static void ev_free(struct ev *ev)
{
	while (ev->chunks) {
		struct chunk *c = ev->chunks;
		ev->chunks = c->next;
		free(c);
	}
}

/* A string under construction: heap memory, capped at VARIFORM_MAX_STR. */
struct sb {
	char *p;
	size_t len, cap;
	bool over;
};

static void sb_add(struct sb *b, const void *d, size_t n)
{
	if (b->over || n == 0)
		return;
	if (n > VARIFORM_MAX_STR - b->len) {
		b->over = true;
		return;
	}
	if (b->len + n > b->cap) {
		size_t cap = b->cap ? b->cap : 64;
		while (cap < b->len + n)
			cap *= 2;
		b->p = xrealloc(b->p, cap);
		b->cap = cap;
	}
	memcpy(b->p + b->len, d, n);
	b->len += n;
}

static void sb_str(struct sb *b, const char *s)
{
	sb_add(b, s, strlen(s));
}

static void sb_byte(struct sb *b, unsigned char c)
{
	sb_add(b, &c, 1);
}

static void sb_fmt(struct sb *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void sb_fmt(struct sb *b, const char *fmt, ...)
{
	char tmp[512];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
	va_end(ap);
	if (n > 0)
		sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

/* Move a finished string into the arena as *out; false (error set) when it grew too long. */
static bool sb_done(struct ev *ev, struct sb *b, struct val *out)
{
	if (b->over) {
		free(b->p);
		return fail(ev, "a string would exceed %d KiB", VARIFORM_MAX_STR >> 10);
	}
	char *p = ev_alloc(ev, b->len + 1);
	if (p) {
		if (b->len)
			memcpy(p, b->p, b->len);
		p[b->len] = '\0';
		*out = v_str(p, b->len);
	}
	free(b->p);
	return p != NULL;
}

/* An arena copy of p[0..n). */
static bool ev_str(struct ev *ev, const char *p, size_t n, struct val *out)
{
	char *d = ev_alloc(ev, n + 1);
	if (!d)
		return false;
	if (n)
		memcpy(d, p, n);
	d[n] = '\0';
	*out = v_str(d, n);
	return true;
}

static bool ev_array(struct ev *ev, size_t n, struct val *out)
{
	if (n > VARIFORM_MAX_ITEMS)
		return fail(ev, "an array would exceed %d elements", VARIFORM_MAX_ITEMS);
	struct val *v = ev_alloc(ev, (n ? n : 1) * sizeof *v);
	if (!v)
		return false;
	out->t = T_ARR;
	out->u.a.v = v;
	out->u.a.n = n;
	return true;
}

/* A growing array of values (heap, capped), moved into the arena when done. */
struct vb {
	struct val *v;
	size_t n, cap;
	bool over;
};

static void vb_add(struct vb *b, struct val v)
{
	if (b->over)
		return;
	if (b->n == VARIFORM_MAX_ITEMS) {
		b->over = true;
		return;
	}
	if (b->n == b->cap) {
		b->cap = b->cap ? b->cap * 2 : 8;
		b->v = xrealloc(b->v, b->cap * sizeof *b->v);
	}
	b->v[b->n++] = v;
}

static bool vb_done(struct ev *ev, struct vb *b, struct val *out)
{
	bool ok = !b->over && ev_array(ev, b->n, out);
	if (b->over)
		fail(ev, "an array would exceed %d elements", VARIFORM_MAX_ITEMS);
	if (ok && b->n)
		memcpy(out->u.a.v, b->v, b->n * sizeof *b->v);
	free(b->v);
	return ok;
}

/* ---- UTF-8 ---- */

#define U8_INVALID UINT32_MAX

/* Length (1..4) of the character at s[i] and its code point; an invalid byte is one
 * character with *cp = U8_INVALID. */
static size_t u8_next(const unsigned char *s, size_t len, size_t i, uint32_t *cp)
{
	unsigned char c = s[i];
	*cp = U8_INVALID;
	if (c < 0x80) {
		*cp = c;
		return 1;
	}
	size_t n;
	uint32_t v, min;
	if (c >= 0xC2 && c <= 0xDF) {
		n = 2;
		v = c & 0x1F;
		min = 0x80;
	} else if (c >= 0xE0 && c <= 0xEF) {
		n = 3;
		v = c & 0x0F;
		min = 0x800;
	} else if (c >= 0xF0 && c <= 0xF4) {
		n = 4;
		v = c & 0x07;
		min = 0x10000;
	} else {
		return 1;
	}
	if (len - i < n)
		return 1;
	for (size_t k = 1; k < n; k++) {
		if ((s[i + k] & 0xC0) != 0x80)
			return 1;
		v = (v << 6) | (s[i + k] & 0x3F);
	}
	if (v < min || v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF))
		return 1;
	*cp = v;
	return n;
}

static void u8_put(struct sb *b, uint32_t cp)
{
	unsigned char t[4];
	size_t n;
	if (cp < 0x80) {
		t[0] = (unsigned char)cp;
		n = 1;
	} else if (cp < 0x800) {
		t[0] = (unsigned char)(0xC0 | (cp >> 6));
		t[1] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 2;
	} else if (cp < 0x10000) {
		t[0] = (unsigned char)(0xE0 | (cp >> 12));
		t[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		t[2] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 3;
	} else {
		t[0] = (unsigned char)(0xF0 | (cp >> 18));
		t[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
		t[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
		t[3] = (unsigned char)(0x80 | (cp & 0x3F));
		n = 4;
	}
	sb_add(b, t, n);
}

/* Number of characters (code points; an invalid byte counts as one). */
static size_t u8_count(const char *s, size_t len)
{
	size_t n = 0;
	uint32_t cp;
	for (size_t i = 0; i < len; i += u8_next((const unsigned char *)s, len, i, &cp))
		n++;
	return n;
}

/* Byte offset of character number k (len when k is past the end). */
static size_t u8_offset(const char *s, size_t len, uint64_t k)
{
	size_t i = 0;
	uint32_t cp;
	while (k > 0 && i < len) {
		i += u8_next((const unsigned char *)s, len, i, &cp);
		k--;
	}
	return i;
}

/* ---- scanner ---- */

enum tk { TK_END, TK_IDENT, TK_STR, TK_INT, TK_FLOAT, TK_BOOL, TK_LP, TK_RP, TK_LB, TK_RB, TK_COMMA };

struct tok {
	enum tk k;
	size_t start, end; /* the token's text; for TK_STR the inside of the quotes */
	int64_t i;
	double f;
	bool b;
};

struct parser {
	const char *s;
	size_t len, pos;
	struct tok t; /* the current (peeked) token */
	char *err;
	size_t errlen;
	bool failed;
	variform_resolve_fn resolve;
	void *ud;
	const char *var_hint;
};

static bool perr(struct parser *p, size_t at, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool perr(struct parser *p, size_t at, const char *fmt, ...)
{
	if (p->failed)
		return false;
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	snprintf(p->err, p->errlen, "column %zu: %s", at + 1, msg);
	p->failed = true;
	return false;
}

static bool is_ident_start(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static bool is_ident_char(unsigned char c)
{
	return is_ident_start(c) || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
}

static const char *tk_name(enum tk k)
{
	switch (k) {
	case TK_END: return "the end of the expression";
	case TK_IDENT: return "a name";
	case TK_STR: return "a string";
	case TK_INT: return "an integer";
	case TK_FLOAT: return "a float";
	case TK_BOOL: return "a boolean";
	case TK_LP: return "'('";
	case TK_RP: return "')'";
	case TK_LB: return "'['";
	case TK_RB: return "']'";
	case TK_COMMA: return "','";
	}
	return "?";
}

/* Scan the next token into p->t (EMQX's emqx_variform_scan: longest match wins). */
static bool scan(struct parser *p)
{
	const char *s = p->s;
	while (p->pos < p->len && (s[p->pos] == ' ' || s[p->pos] == '\t' || s[p->pos] == '\n' || s[p->pos] == '\r'))
		p->pos++;
	struct tok *t = &p->t;
	memset(t, 0, sizeof *t);
	t->start = p->pos;
	if (p->pos >= p->len) {
		t->k = TK_END;
		t->end = p->pos;
		return true;
	}
	unsigned char c = (unsigned char)s[p->pos];
	switch (c) {
	case '(': t->k = TK_LP; break;
	case ')': t->k = TK_RP; break;
	case '[': t->k = TK_LB; break;
	case ']': t->k = TK_RB; break;
	case ',': t->k = TK_COMMA; break;
	default: break;
	}
	if (t->k != TK_END) {
		t->end = ++p->pos;
		return true;
	}
	if (c == '\'' || c == '"') {
		const char *q = memchr(s + p->pos + 1, c, p->len - p->pos - 1);
		if (!q)
			return perr(p, p->pos, "unterminated string (strings have no escapes; use unescape())");
		t->k = TK_STR;
		t->start = p->pos + 1;
		t->end = (size_t)(q - s);
		p->pos = t->end + 1;
		return true;
	}
	if (is_ident_start(c)) {
		size_t e = p->pos;
		while (e < p->len && is_ident_char((unsigned char)s[e]))
			e++;
		t->k = TK_IDENT;
		t->end = e;
		size_t n = e - p->pos;
		if ((n == 4 && memcmp(s + p->pos, "true", 4) == 0) || (n == 5 && memcmp(s + p->pos, "false", 5) == 0)) {
			t->k = TK_BOOL;
			t->b = n == 4;
		}
		p->pos = e;
		return true;
	}
	/* INTEGER [+-]?[0-9]+ ; FLOAT [+-]?[0-9]+\.[0-9]+(e[+-]?[0-9]+)? */
	size_t e = p->pos;
	if (s[e] == '+' || s[e] == '-')
		e++;
	size_t d0 = e;
	while (e < p->len && s[e] >= '0' && s[e] <= '9')
		e++;
	if (e == d0) {
		if (c >= 0x20 && c < 0x7F)
			return perr(p, p->pos, "unexpected character '%c'", c);
		return perr(p, p->pos, "unexpected byte 0x%02X", c);
	}
	bool is_float = false;
	if (e + 1 < p->len && s[e] == '.' && s[e + 1] >= '0' && s[e + 1] <= '9') {
		is_float = true;
		e++;
		while (e < p->len && s[e] >= '0' && s[e] <= '9')
			e++;
		size_t x = e;
		if (x < p->len && s[x] == 'e') {
			x++;
			if (x < p->len && (s[x] == '+' || s[x] == '-'))
				x++;
			size_t x0 = x;
			while (x < p->len && s[x] >= '0' && s[x] <= '9')
				x++;
			if (x > x0)
				e = x;
		}
	}
	char num[128];
	if (e - p->pos >= sizeof num)
		return perr(p, p->pos, "number too long");
	memcpy(num, s + p->pos, e - p->pos);
	num[e - p->pos] = '\0';
	errno = 0;
	char *end;
	if (is_float) {
		t->k = TK_FLOAT;
		t->f = strtod(num, &end);
		if (errno || *end || t->f != t->f || t->f > 1.7976931348623157e308 || t->f < -1.7976931348623157e308)
			return perr(p, p->pos, "float out of range: %s", num);
	} else {
		t->k = TK_INT;
		long long v = strtoll(num, &end, 10);
		if (errno || *end)
			return perr(p, p->pos, "integer out of range: %s", num);
		t->i = v;
	}
	t->end = e;
	p->pos = e;
	return true;
}

/* ---- parser ---- */

static void node_free(struct node *n);

static struct node *node_new(enum nkind k, size_t col)
{
	struct node *n = xcalloc(1, sizeof *n);
	n->k = k;
	n->col = (int)col + 1;
	return n;
}

static void node_add(struct node *parent, struct node *kid)
{
	parent->kids = xrealloc(parent->kids, (parent->n + 1) * sizeof *parent->kids);
	parent->kids[parent->n++] = kid;
}

static struct node *parse_expr(struct parser *p, int depth);

/* arg := expr | '[' arg {',' arg} ']' */
static struct node *parse_arg(struct parser *p, int depth)
{
	if (p->t.k != TK_LB)
		return parse_expr(p, depth);
	if (depth >= VARIFORM_MAX_DEPTH) {
		perr(p, p->t.start, "nested deeper than %d levels", VARIFORM_MAX_DEPTH);
		return NULL;
	}
	struct node *a = node_new(N_ARRAY, p->t.start);
	if (!scan(p))
		goto fail;
	if (p->t.k == TK_RB) {
		perr(p, p->t.start, "empty array: an array needs at least one element");
		goto fail;
	}
	for (;;) {
		struct node *k = parse_arg(p, depth + 1);
		if (!k)
			goto fail;
		node_add(a, k);
		if (p->t.k == TK_RB)
			break;
		if (p->t.k != TK_COMMA) {
			perr(p, p->t.start, "expected ',' or ']', got %s", tk_name(p->t.k));
			goto fail;
		}
		if (!scan(p))
			goto fail;
	}
	if (!scan(p))
		goto fail;
	return a;
fail:
	node_free(a);
	return NULL;
}

/* expr := IDENT '(' [args] ')' | IDENT | literal */
static struct node *parse_expr(struct parser *p, int depth)
{
	struct tok t = p->t;
	struct node *n = NULL;
	switch (t.k) {
	case TK_STR:
		n = node_new(N_STR, t.start - 1);
		n->len = t.end - t.start;
		n->s = xstrndup(p->s + t.start, n->len);
		break;
	case TK_INT:
		n = node_new(N_INT, t.start);
		n->i = t.i;
		break;
	case TK_FLOAT:
		n = node_new(N_FLOAT, t.start);
		n->f = t.f;
		break;
	case TK_BOOL:
		n = node_new(N_BOOL, t.start);
		n->b = t.b;
		break;
	case TK_IDENT:
		n = node_new(N_VAR, t.start);
		n->s = xstrndup(p->s + t.start, t.end - t.start);
		break;
	default:
		perr(p, t.start, "expected a function call, a variable or a literal, got %s", tk_name(t.k));
		return NULL;
	}
	if (!scan(p))
		goto fail;
	if (n->k != N_VAR || p->t.k != TK_LP)
		return n;
	/* A call. */
	if (depth >= VARIFORM_MAX_DEPTH) {
		perr(p, t.start, "nested deeper than %d levels", VARIFORM_MAX_DEPTH);
		goto fail;
	}
	n->k = N_CALL;
	if (!scan(p))
		goto fail;
	if (p->t.k == TK_RP)
		return scan(p) ? n : (node_free(n), NULL);
	for (;;) {
		struct node *k = parse_arg(p, depth + 1);
		if (!k)
			goto fail;
		node_add(n, k);
		if (p->t.k == TK_RP)
			break;
		if (p->t.k != TK_COMMA) {
			perr(p, p->t.start, "expected ',' or ')' in the call of %s, got %s", n->s, tk_name(p->t.k));
			goto fail;
		}
		if (!scan(p))
			goto fail;
	}
	if (!scan(p))
		goto fail;
	return n;
fail:
	node_free(n);
	return NULL;
}

/* ---- regular expressions: PCRE syntax -> POSIX ERE ---- */

#define VRE_MAX_GROUPS 64
/* Bound on the pattern's size with repetitions expanded (x{100} counts 100, x* 4, x+ 5, nested
 * repetitions multiply): regcomp builds an automaton that large, and both its time and the
 * matching time grow with it (the worst patterns under the bound take ~0.1 s on 4 KiB). */
#define VRE_MAX_SIZE 2000

struct vre {
	regex_t re;
	size_t nsub;            /* ERE groups */
	size_t ncap;            /* PCRE capture groups */
	int cap[VRE_MAX_GROUPS]; /* ERE group number of PCRE group k+1 */
};

struct esc {
	enum { ESC_LIT, ESC_CLASS, ESC_ASSERT } kind;
	unsigned char c; /* LIT: the byte; CLASS/ASSERT: the letter */
};

static bool rerr(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool rerr(char *err, size_t errlen, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
	return false;
}

static int hexval(unsigned char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* The escape after a backslash at p[*i] (advanced past it). */
static bool parse_escape(const char *p, size_t len, size_t *i, struct esc *e, char *err, size_t errlen)
{
	if (*i >= len)
		return rerr(err, errlen, "regex ends with a lone backslash");
	unsigned char c = (unsigned char)p[(*i)++];
	e->c = c;
	e->kind = ESC_LIT;
	switch (c) {
	case 'd': case 'D': case 's': case 'S': case 'w': case 'W':
		e->kind = ESC_CLASS;
		return true;
	case 'b': case 'B': case 'A': case 'z': case 'Z':
		e->kind = ESC_ASSERT;
		return true;
	case 'n': e->c = '\n'; return true;
	case 't': e->c = '\t'; return true;
	case 'r': e->c = '\r'; return true;
	case 'f': e->c = '\f'; return true;
	case 'v': e->c = '\v'; return true;
	case 'e': e->c = 0x1B; return true;
	case 'a': e->c = 0x07; return true;
	case 'x': {
		unsigned v = 0;
		size_t nd = 0;
		if (*i < len && p[*i] == '{') {
			size_t j = *i + 1;
			while (j < len && hexval((unsigned char)p[j]) >= 0 && nd < 8) {
				v = v * 16 + (unsigned)hexval((unsigned char)p[j]);
				j++;
				nd++;
			}
			if (j >= len || p[j] != '}' || nd == 0)
				return rerr(err, errlen, "regex: malformed \\x{...}");
			*i = j + 1;
		} else {
			while (*i < len && nd < 2 && hexval((unsigned char)p[*i]) >= 0) {
				v = v * 16 + (unsigned)hexval((unsigned char)p[*i]);
				(*i)++;
				nd++;
			}
		}
		if (v > 0xFF)
			return rerr(err, errlen, "regex: \\x value above \\xFF (regexes match bytes)");
		if (v == 0)
			return rerr(err, errlen, "regex: NUL bytes are not supported");
		e->c = (unsigned char)v;
		return true;
	}
	default:
		break;
	}
	if (c >= '0' && c <= '9')
		return rerr(err, errlen, "regex: back-references and octal escapes (\\%c) are not supported", c);
	if (isalnum(c))
		return rerr(err, errlen, "regex: \\%c is not supported (Bulwark uses POSIX extended regexes)", c);
	return true; /* escaped punctuation, space or a non-ASCII byte: itself */
}

/* Append byte c as a literal outside brackets. */
static void ere_lit(struct buf *o, unsigned char c)
{
	if (c == '{' || c == '}') {
		buf_append(o, "[", 1);
		buf_append(o, &c, 1);
		buf_append(o, "]", 1);
	} else if (strchr(".[()*+?|^$\\", c)) {
		buf_append(o, "\\", 1);
		buf_append(o, &c, 1);
	} else {
		buf_append(o, &c, 1);
	}
}

static const char *const posix_classes[] = { "alpha", "digit", "alnum", "upper", "lower", "space", "punct",
					     "print", "graph", "cntrl", "xdigit", "blank", NULL };

/* One bracket expression; *i is just past '['. */
static bool tr_bracket(const char *p, size_t len, size_t *i, struct buf *o, char *err, size_t errlen)
{
	bool neg = false, has_rb = false, has_caret = false, has_dash = false;
	struct buf items = { 0 };
	bool ok = false;
	if (*i < len && p[*i] == '^') {
		neg = true;
		(*i)++;
	}
	for (bool first = true;; first = false) {
		if (*i >= len) {
			rerr(err, errlen, "regex: missing ]");
			goto out;
		}
		unsigned char c = (unsigned char)p[*i];
		if (c == ']' && !first) {
			(*i)++;
			break;
		}
		if (c == '[' && *i + 1 < len && (p[*i + 1] == '.' || p[*i + 1] == '=')) {
			rerr(err, errlen, "regex: collating elements [. .] and [= =] are not supported");
			goto out;
		}
		if (c == '[' && *i + 1 < len && p[*i + 1] == ':') {
			const char *end = NULL;
			for (size_t j = *i + 2; j + 1 < len; j++) {
				if (p[j] == ':' && p[j + 1] == ']') {
					end = p + j;
					break;
				}
			}
			bool known = false;
			if (end) {
				size_t nl = (size_t)(end - (p + *i + 2));
				for (const char *const *k = posix_classes; *k; k++)
					if (strlen(*k) == nl && memcmp(*k, p + *i + 2, nl) == 0)
						known = true;
			}
			if (!known) {
				rerr(err, errlen, "regex: unknown or unterminated character class [:...:]");
				goto out;
			}
			buf_append(&items, p + *i, (size_t)(end + 2 - (p + *i)));
			*i = (size_t)(end + 2 - p);
			continue;
		}
		unsigned char lo;
		if (c == '\\') {
			(*i)++;
			struct esc e;
			if (!parse_escape(p, len, i, &e, err, errlen))
				goto out;
			if (e.kind == ESC_CLASS) {
				const char *cls = e.c == 'd' ? "0-9" : e.c == 's' ? "[:space:]" : e.c == 'w' ? "[:alnum:]_" : NULL;
				if (!cls) {
					rerr(err, errlen, "regex: \\%c inside [...] is not supported", e.c);
					goto out;
				}
				buf_append_str(&items, cls);
				continue;
			}
			if (e.kind == ESC_ASSERT) {
				if (e.c != 'b') {
					rerr(err, errlen, "regex: \\%c inside [...] is not supported", e.c);
					goto out;
				}
				e.c = '\b'; /* PCRE: [\b] is a backspace */
			}
			lo = e.c;
		} else {
			lo = c;
			(*i)++;
		}
		if (*i + 1 < len && p[*i] == '-' && p[*i + 1] != ']') {
			(*i)++;
			unsigned char hi = (unsigned char)p[*i];
			if (hi == '\\') {
				(*i)++;
				struct esc e;
				if (!parse_escape(p, len, i, &e, err, errlen))
					goto out;
				if (e.kind != ESC_LIT) {
					rerr(err, errlen, "regex: a range cannot end with \\%c", e.c);
					goto out;
				}
				hi = e.c;
			} else if (hi == '[') {
				rerr(err, errlen, "regex: a range cannot end with '['");
				goto out;
			} else {
				(*i)++;
			}
			if (hi < lo) {
				rerr(err, errlen, "regex: range out of order in [...]");
				goto out;
			}
			if (strchr("]^-[", lo) || strchr("]^-[", hi)) {
				rerr(err, errlen, "regex: ranges that start or end with ] ^ - [ are not supported");
				goto out;
			}
			buf_append(&items, &lo, 1);
			buf_append(&items, "-", 1);
			buf_append(&items, &hi, 1);
			continue;
		}
		if (lo == ']')
			has_rb = true;
		else if (lo == '^')
			has_caret = true;
		else if (lo == '-')
			has_dash = true;
		else if (lo == '[')
			buf_append(&items, "[", 1); /* not followed by : . = when emitted: they went to other branches */
		else
			buf_append(&items, &lo, 1);
	}
	/* ERE placement: ']' first, '^' not first, '-' last. */
	if (!neg && !has_rb && items.len == 0 && has_caret && !has_dash) {
		buf_append(o, "\\^", 2);
		ok = true;
		goto out;
	}
	buf_append(o, "[", 1);
	if (neg)
		buf_append(o, "^", 1);
	if (has_rb)
		buf_append(o, "]", 1);
	if (items.len)
		buf_append(o, items.data, items.len);
	if (has_caret) {
		if (!neg && !has_rb && items.len == 0) {
			buf_append(o, "-^", 2);
			has_dash = false;
		} else {
			buf_append(o, "^", 1);
		}
	}
	if (has_dash)
		buf_append(o, "-", 1);
	buf_append(o, "]", 1);
	ok = true;
out:
	buf_free(&items);
	return ok;
}

/* True when p[i..] is a PCRE counted quantifier {n}, {n,} or {n,m}; *end just past '}',
 * *times the largest count it allows (n+4 for {n,}), saturated at VRE_MAX_SIZE + 1. */
static bool is_counted(const char *p, size_t len, size_t i, size_t *end, size_t *times)
{
	size_t j = i + 1, d = 0, n = 0, m = 0;
	while (j < len && p[j] >= '0' && p[j] <= '9') {
		n = n > VRE_MAX_SIZE ? n : n * 10 + (size_t)(p[j] - '0');
		j++, d++;
	}
	if (d == 0)
		return false;
	m = n;
	if (j < len && p[j] == ',') {
		j++;
		size_t dm = 0;
		m = 0;
		while (j < len && p[j] >= '0' && p[j] <= '9') {
			m = m > VRE_MAX_SIZE ? m : m * 10 + (size_t)(p[j] - '0');
			j++, dm++;
		}
		if (dm == 0)
			m = n + 4; /* unbounded: weighed as * */
	}
	if (j >= len || p[j] != '}')
		return false;
	*end = j + 1;
	*times = n > m ? n : m;
	if (*times > VRE_MAX_SIZE)
		*times = VRE_MAX_SIZE + 1;
	return true;
}

static void vre_free(struct vre *r)
{
	if (!r)
		return;
	regfree(&r->re);
	free(r);
}

/* Translate and compile a PCRE-style pattern; NULL with a message on error. */
static struct vre *vre_compile(const char *p, size_t len, char *err, size_t errlen)
{
	struct buf o = { 0 };
	struct vre *r = xcalloc(1, sizeof *r);
	size_t i = 0;
	int flags = REG_EXTENDED;
	/* expanded size: per open group, the size so far and the size of its last atom */
	size_t cur[VRE_MAX_GROUPS + 1] = { 0 }, last[VRE_MAX_GROUPS + 1] = { 0 };
	size_t sp = 0;
	if (len >= 4 && memcmp(p, "(?i)", 4) == 0) {
		flags |= REG_ICASE;
		i = 4;
	}
	while (i < len) {
		unsigned char c = (unsigned char)p[i];
		size_t end, times = 1;
		if (cur[sp] > VRE_MAX_SIZE) {
			rerr(err, errlen, "regex: too large once repetitions are expanded (limit %d)", VRE_MAX_SIZE);
			goto fail;
		}
		/* an atom starts here unless c is an operator; quantifiers scale the last atom */
		if (!strchr("()|*+?{}", c) || (c == '{' && !is_counted(p, len, i, &end, &times)) || c == '}') {
			last[sp] = 1;
			cur[sp]++;
		}
		switch (c) {
		case '\0':
			rerr(err, errlen, "regex: NUL bytes are not supported");
			goto fail;
		case '\\': {
			i++;
			struct esc e;
			if (!parse_escape(p, len, &i, &e, err, errlen))
				goto fail;
			if (e.kind == ESC_CLASS) {
				static const char *const cls[][2] = { { "d", "[0-9]" },	      { "D", "[^0-9]" },
								      { "s", "[[:space:]]" }, { "S", "[^[:space:]]" },
								      { "w", "[[:alnum:]_]" }, { "W", "[^[:alnum:]_]" } };
				for (size_t k = 0; k < 6; k++)
					if (cls[k][0][0] == (char)e.c)
						buf_append_str(&o, cls[k][1]);
			} else if (e.kind == ESC_ASSERT) {
				if (e.c == 'b')
					buf_append_str(&o, "\\b");
				else if (e.c == 'B')
					buf_append_str(&o, "\\B");
				else if (e.c == 'A')
					buf_append_str(&o, "^");
				else
					buf_append_str(&o, "$");
			} else {
				ere_lit(&o, e.c);
			}
			continue;
		}
		case '[':
			i++;
			if (!tr_bracket(p, len, &i, &o, err, errlen))
				goto fail;
			continue;
		case '(':
			if (r->nsub == VRE_MAX_GROUPS) {
				rerr(err, errlen, "regex: more than %d groups", VRE_MAX_GROUPS);
				goto fail;
			}
			r->nsub++;
			sp++;
			cur[sp] = last[sp] = 0;
			if (i + 1 < len && p[i + 1] == '?') {
				if (i + 2 < len && p[i + 2] == ':') {
					i += 3;
				} else {
					rerr(err, errlen, "regex: (?%c...) groups are not supported (only (?:...) and a leading (?i))",
					     i + 2 < len ? p[i + 2] : ' ');
					goto fail;
				}
			} else {
				r->cap[r->ncap++] = (int)r->nsub;
				i++;
			}
			buf_append(&o, "(", 1);
			continue;
		case ')':
			if (sp > 0) {
				size_t inner = cur[sp] ? cur[sp] : 1;
				sp--;
				last[sp] = inner;
				cur[sp] += inner;
			}
			buf_append(&o, &c, 1);
			i++;
			continue;
		case '*':
		case '+':
		case '?':
			buf_append(&o, &c, 1);
			i++;
			/* weights measured on glibc: starred groups under repetition make regcomp superlinear */
			times = c == '+' ? 5 : c == '*' ? 4 : 1;
			break;
		case '{':
			if (!is_counted(p, len, i, &end, &times)) {
				ere_lit(&o, c);
				i++;
				continue;
			}
			buf_append(&o, p + i, end - i);
			i = end;
			break;
		case '}':
			ere_lit(&o, c);
			i++;
			continue;
		default:
			buf_append(&o, &c, 1);
			i++;
			continue;
		}
		/* after a quantifier */
		if (times > 1) {
			if (last[sp] > VRE_MAX_SIZE || times > VRE_MAX_SIZE || last[sp] * times > VRE_MAX_SIZE * 2) {
				rerr(err, errlen, "regex: too large once repetitions are expanded (limit %d)", VRE_MAX_SIZE);
				goto fail;
			}
			cur[sp] += last[sp] * (times - 1);
			last[sp] *= times;
		}
		if (i < len && (p[i] == '?' || p[i] == '+')) {
			rerr(err, errlen, "regex: lazy and possessive quantifiers (*? +? ?? {n}? *+ ...) are not supported");
			goto fail;
		}
	}
	for (; sp > 0; sp--) /* unclosed groups (regcomp refuses them, but only after building) */
		cur[sp - 1] += cur[sp];
	if (cur[0] > VRE_MAX_SIZE) {
		rerr(err, errlen, "regex: too large once repetitions are expanded (limit %d)", VRE_MAX_SIZE);
		goto fail;
	}
	buf_append(&o, "", 1);
	int rc = regcomp(&r->re, (const char *)o.data, flags);
	if (rc != 0) {
		char m[160];
		regerror(rc, &r->re, m, sizeof m);
		rerr(err, errlen, "regex: %s", m);
		goto fail;
	}
	if (r->re.re_nsub != r->nsub) {
		regfree(&r->re);
		rerr(err, errlen, "regex: unsupported construct");
		goto fail;
	}
	buf_free(&o);
	return r;
fail:
	buf_free(&o);
	free(r);
	return NULL;
}

/* Search s[start..len); 0 on a match with m[0..nsub] filled (absolute offsets). */
static int vre_exec(const struct vre *r, const char *s, size_t len, size_t start, regmatch_t *m)
{
	m[0].rm_so = (regoff_t)start;
	m[0].rm_eo = (regoff_t)len;
	return regexec(&r->re, s ? s : "", r->nsub + 1, m, REG_STARTEND | (start ? REG_NOTBOL : 0));
}

/* ---- conversions ---- */

/* float_to_binary(F, [{decimals, 10}, compact]) */
static void fmt_float(struct sb *b, double f)
{
	char t[400];
	snprintf(t, sizeof t, "%.10f", f);
	char *dot = strchr(t, '.');
	if (dot) {
		char *e = t + strlen(t) - 1;
		while (e > dot + 1 && *e == '0')
			*e-- = '\0';
	}
	sb_str(b, t);
}

/* emqx_utils_conv:bin/1: a value as text (arrays: their elements' texts concatenated). */
static void any_to_str(struct sb *b, const struct val *v)
{
	switch (v->t) {
	case T_STR:
		sb_add(b, v->u.s.p, v->u.s.len);
		break;
	case T_INT:
		sb_fmt(b, "%" PRId64, v->u.i);
		break;
	case T_FLOAT:
		fmt_float(b, v->u.f);
		break;
	case T_BOOL:
		sb_str(b, v->u.b ? "true" : "false");
		break;
	case T_ARR:
		for (size_t k = 0; k < v->u.a.n && !b->over; k++)
			any_to_str(b, &v->u.a.v[k]);
		break;
	}
}

/* The final value as a string: arrays as their elements joined with ',' (Bulwark). */
static void final_str(struct sb *b, const struct val *v)
{
	if (v->t != T_ARR) {
		any_to_str(b, v);
		return;
	}
	for (size_t k = 0; k < v->u.a.n && !b->over; k++) {
		if (k)
			sb_byte(b, ',');
		final_str(b, &v->u.a.v[k]);
	}
}

static bool to_text(struct ev *ev, const struct val *v, struct val *out)
{
	if (v->t == T_STR) {
		*out = *v;
		return true;
	}
	struct sb b = { 0 };
	any_to_str(&b, v);
	return sb_done(ev, &b, out);
}

static bool str_is(const struct val *v, const char *s)
{
	return v->t == T_STR && v->u.s.len == strlen(s) && memcmp(v->u.s.p, s, v->u.s.len) == 0;
}

/* Position of the first (or last) occurrence of n in h; SIZE_MAX when absent. */
static size_t find_sub(const char *h, size_t hl, const char *n, size_t nl, bool last)
{
	if (nl > hl)
		return SIZE_MAX;
	if (!last) {
		const char *f = memmem(h, hl, n, nl);
		return f ? (size_t)(f - h) : SIZE_MAX;
	}
	if ((hl - nl + 1) * nl <= 65536) {
		for (size_t i = hl - nl + 1; i-- > 0;)
			if (memcmp(h + i, n, nl) == 0)
				return i;
		return SIZE_MAX;
	}
	/* long texts: search the reversed strings (memmem is linear; a backward scan is not) */
	char *rh = xmalloc(hl), *rn = xmalloc(nl);
	for (size_t i = 0; i < hl; i++)
		rh[i] = h[hl - 1 - i];
	for (size_t i = 0; i < nl; i++)
		rn[i] = n[nl - 1 - i];
	const char *f = memmem(rh, hl, rn, nl);
	size_t at = f ? hl - (size_t)(f - rh) - nl : SIZE_MAX;
	free(rh);
	free(rn);
	return at;
}

/* ---- built-in functions ---- */

/* Arguments are evaluated and type-checked against the table before a function runs. */
#define FN(name) static bool name(struct ev *ev, const struct node *call, struct val *a, size_t n, struct val *out)
#define S(k) (a[k].u.s.p)
#define L(k) (a[k].u.s.len)

static pthread_once_t utf8_once = PTHREAD_ONCE_INIT;
static locale_t utf8_loc;

static void utf8_init(void)
{
	utf8_loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
	if (!utf8_loc)
		utf8_loc = newlocale(LC_CTYPE_MASK, "C.utf8", (locale_t)0);
}

/* lower/upper: Unicode simple case mapping when the C.UTF-8 locale exists, else ASCII. */
static bool case_map(struct ev *ev, const struct val *s, bool up, struct val *out)
{
	pthread_once(&utf8_once, utf8_init);
	struct sb b = { 0 };
	const unsigned char *p = (const unsigned char *)s->u.s.p;
	size_t len = s->u.s.len;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = u8_next(p, len, i, &cp);
		if (cp == U8_INVALID) {
			sb_add(&b, p + i, k);
		} else if (cp < 0x80 || !utf8_loc) {
			uint32_t m = cp;
			if (up && cp >= 'a' && cp <= 'z')
				m = cp - 32;
			else if (!up && cp >= 'A' && cp <= 'Z')
				m = cp + 32;
			if (m == cp)
				sb_add(&b, p + i, k);
			else
				sb_byte(&b, (unsigned char)m);
		} else {
			wint_t m = up ? towupper_l((wint_t)cp, utf8_loc) : towlower_l((wint_t)cp, utf8_loc);
			if ((uint32_t)m == cp || m > 0x10FFFF || (m >= 0xD800 && m <= 0xDFFF))
				sb_add(&b, p + i, k);
			else
				u8_put(&b, (uint32_t)m);
		}
		i += k;
	}
	return sb_done(ev, &b, out);
}

FN(f_lower)
{
	return case_map(ev, &a[0], false, out);
}

FN(f_upper)
{
	return case_map(ev, &a[0], true, out);
}

/* Erlang string:trim's default: pattern white space. */
static bool is_ws(uint32_t cp)
{
	return (cp >= 9 && cp <= 13) || cp == ' ' || cp == 0x85 || cp == 0x200E || cp == 0x200F || cp == 0x2028 ||
	       cp == 0x2029;
}

/* A set of characters to trim: ASCII in a table, others sorted for bsearch. */
struct cset {
	bool ascii[128];
	uint32_t *cps;
	size_t n;
};

static int cmp_u32(const void *x, const void *y)
{
	uint32_t a = *(const uint32_t *)x, b = *(const uint32_t *)y;
	return a < b ? -1 : a > b;
}

static void cset_init(struct cset *cs, const struct val *set)
{
	memset(cs, 0, sizeof *cs);
	const unsigned char *p = (const unsigned char *)set->u.s.p;
	for (size_t i = 0; i < set->u.s.len;) {
		uint32_t c;
		size_t k = u8_next(p, set->u.s.len, i, &c);
		if (c < 128) {
			cs->ascii[c] = true;
		} else if (c != U8_INVALID) {
			cs->cps = xrealloc(cs->cps, (cs->n + 1) * sizeof *cs->cps);
			cs->cps[cs->n++] = c;
		}
		i += k;
	}
	if (cs->n)
		qsort(cs->cps, cs->n, sizeof *cs->cps, cmp_u32);
}

static bool in_set(uint32_t cp, const struct cset *cs)
{
	if (!cs)
		return is_ws(cp);
	if (cp < 128)
		return cs->ascii[cp];
	return cs->n && bsearch(&cp, cs->cps, cs->n, sizeof *cs->cps, cmp_u32) != NULL;
}

static bool trim(struct ev *ev, struct val *a, size_t n, bool left, bool right, struct val *out)
{
	struct cset cs_store, *set = NULL;
	if (n > 1) {
		cset_init(&cs_store, &a[1]);
		set = &cs_store;
	}
	const unsigned char *p = (const unsigned char *)S(0);
	size_t len = L(0), start = 0, end = 0;
	bool seen = false;
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = u8_next(p, len, i, &cp);
		bool t = cp != U8_INVALID && in_set(cp, set);
		if (!t) {
			if (!seen)
				start = i;
			seen = true;
			end = i + k;
		}
		i += k;
	}
	if (set)
		free(set->cps);
	if (!seen) {
		*out = v_str("", 0);
		return true;
	}
	if (!left)
		start = 0;
	if (!right)
		end = len;
	*out = v_str(S(0) + start, end - start);
	return true;
}

FN(f_ltrim)
{
	return trim(ev, a, n, true, false, out);
}

FN(f_rtrim)
{
	return trim(ev, a, n, false, true, out);
}

FN(f_trim)
{
	return trim(ev, a, n, true, true, out);
}

FN(f_reverse)
{
	size_t len = L(0);
	char *d = ev_alloc(ev, len + 1);
	if (!d)
		return false;
	const unsigned char *p = (const unsigned char *)S(0);
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = u8_next(p, len, i, &cp);
		memcpy(d + len - i - k, p + i, k);
		i += k;
	}
	d[len] = '\0';
	*out = v_str(d, len);
	return true;
}

FN(f_rm_prefix)
{
	if (L(1) <= L(0) && memcmp(S(0), S(1), L(1)) == 0)
		*out = v_str(S(0) + L(1), L(0) - L(1));
	else
		*out = a[0];
	return true;
}

FN(f_strlen)
{
	*out = v_int((int64_t)u8_count(S(0), L(0)));
	return true;
}

FN(f_substr)
{
	if (a[1].u.i < 0)
		return fail(ev, "substr: negative start");
	if (n > 2 && a[2].u.i < 0)
		return fail(ev, "substr: negative length");
	size_t from = u8_offset(S(0), L(0), (uint64_t)a[1].u.i);
	size_t to = n > 2 ? from + u8_offset(S(0) + from, L(0) - from, (uint64_t)a[2].u.i) : L(0);
	*out = v_str(S(0) + from, to - from);
	return true;
}

static const char *const split_modes[] = { "notrim", "leading", "leading_notrim", "trailing", "trailing_notrim",
					   NULL };

FN(f_split)
{
	bool keep = false, once = false, last = false;
	if (n > 2) {
		if (str_is(&a[2], "notrim"))
			keep = true;
		else if (str_is(&a[2], "leading") || str_is(&a[2], "leading_notrim"))
			once = true, keep = str_is(&a[2], "leading_notrim");
		else if (str_is(&a[2], "trailing") || str_is(&a[2], "trailing_notrim"))
			once = last = true, keep = str_is(&a[2], "trailing_notrim");
		else
			return fail(ev, "split: the third argument must be one of notrim, leading, leading_notrim, "
					"trailing, trailing_notrim");
	}
	struct vb parts = { 0 };
	const char *s = S(0);
	size_t len = L(0), pl = L(1);
	if (pl == 0) {
		if (keep || len)
			vb_add(&parts, a[0]);
		return vb_done(ev, &parts, out);
	}
	size_t pos = 0;
	for (;;) {
		size_t at = find_sub(s + pos, len - pos, S(1), pl, last);
		if (at == SIZE_MAX)
			break;
		if (keep || at)
			vb_add(&parts, v_str(s + pos, at));
		pos += at + pl;
		if (once)
			break;
	}
	if (keep || pos < len)
		vb_add(&parts, v_str(s + pos, len - pos));
	return vb_done(ev, &parts, out);
}

FN(f_tokens)
{
	bool sep[256] = { false };
	for (size_t i = 0; i < L(1); i++)
		sep[(unsigned char)S(1)[i]] = true;
	if (n > 2) {
		if (!str_is(&a[2], "nocrlf"))
			return fail(ev, "tokens: the third argument must be 'nocrlf'");
		sep['\r'] = sep['\n'] = true;
	}
	struct vb parts = { 0 };
	const char *s = S(0);
	for (size_t i = 0; i < L(0);) {
		while (i < L(0) && sep[(unsigned char)s[i]])
			i++;
		size_t st = i;
		while (i < L(0) && !sep[(unsigned char)s[i]])
			i++;
		if (i > st)
			vb_add(&parts, v_str(s + st, i - st));
	}
	return vb_done(ev, &parts, out);
}

/* concat(A, B, ...) and concat([A, B, ...]): any_to_str flattens arrays */
FN(f_concat)
{
	struct sb b = { 0 };
	for (size_t k = 0; k < n; k++)
		any_to_str(&b, &a[k]);
	return sb_done(ev, &b, out);
}

/* ~p / ~w of a value, Erlang style. */
static void erl_term(struct sb *b, const struct val *v)
{
	if (v->t == T_ARR) {
		sb_byte(b, '[');
		for (size_t k = 0; k < v->u.a.n && !b->over; k++) {
			if (k)
				sb_byte(b, ',');
			erl_term(b, &v->u.a.v[k]);
		}
		sb_byte(b, ']');
		return;
	}
	if (v->t != T_STR) {
		any_to_str(b, v);
		return;
	}
	const unsigned char *p = (const unsigned char *)v->u.s.p;
	bool printable = true;
	for (size_t i = 0; i < v->u.s.len; i++)
		if (!((p[i] >= 32 && p[i] < 127) || p[i] == '\n' || p[i] == '\t' || p[i] == '\r'))
			printable = false;
	sb_str(b, "<<");
	if (printable) {
		sb_byte(b, '"');
		for (size_t i = 0; i < v->u.s.len; i++) {
			if (p[i] == '"' || p[i] == '\\')
				sb_byte(b, '\\');
			if (p[i] == '\n')
				sb_str(b, "\\n");
			else if (p[i] == '\t')
				sb_str(b, "\\t");
			else if (p[i] == '\r')
				sb_str(b, "\\r");
			else
				sb_byte(b, p[i]);
		}
		sb_byte(b, '"');
	} else {
		for (size_t i = 0; i < v->u.s.len && !b->over; i++)
			sb_fmt(b, "%s%u", i ? "," : "", p[i]);
	}
	sb_str(b, ">>");
}

/* Check an io_lib:format format for the directives Bulwark supports; the number of arguments
 * it consumes, or -1 with a message. */
static long fmt_check(const char *f, size_t len, char *err, size_t errlen)
{
	long need = 0;
	for (size_t i = 0; i < len; i++) {
		if (f[i] != '~')
			continue;
		if (++i >= len) {
			rerr(err, errlen, "sprintf_s: the format ends with a lone ~");
			return -1;
		}
		char c = f[i];
		if (c == 't' && i + 1 < len && (f[i + 1] == 's' || f[i + 1] == 'p' || f[i + 1] == 'w'))
			c = f[++i];
		switch (c) {
		case 's': case 'p': case 'w': case 'b': case 'B':
			need++;
			break;
		case 'n': case '~':
			break;
		default:
			rerr(err, errlen, "sprintf_s: unsupported directive ~%c (supported: ~s ~p ~w ~b ~B ~n ~~)", c);
			return -1;
		}
	}
	return need;
}

FN(f_sprintf)
{
	char msg[160];
	long need = fmt_check(S(0), L(0), msg, sizeof msg);
	if (need < 0)
		return fail(ev, "%s", msg);
	if ((size_t)need != a[1].u.a.n)
		return fail(ev, "sprintf_s: the format needs %ld arguments, got %zu", need, a[1].u.a.n);
	struct sb b = { 0 };
	const char *f = S(0);
	size_t k = 0;
	for (size_t i = 0; i < L(0); i++) {
		if (f[i] != '~') {
			sb_byte(&b, (unsigned char)f[i]);
			continue;
		}
		char c = f[++i];
		if (c == 't' && i + 1 < L(0) && (f[i + 1] == 's' || f[i + 1] == 'p' || f[i + 1] == 'w'))
			c = f[++i];
		if (c == 'n') {
			sb_byte(&b, '\n');
			continue;
		}
		if (c == '~') {
			sb_byte(&b, '~');
			continue;
		}
		const struct val *v = &a[1].u.a.v[k++];
		if (c == 's') {
			bool ok = v->t == T_STR || v->t == T_BOOL;
			for (size_t j = 0; v->t == T_ARR && j < v->u.a.n; j++)
				ok = v->u.a.v[j].t == T_STR;
			if (v->t == T_ARR)
				ok = ok || v->u.a.n == 0;
			if (!ok) {
				free(b.p);
				return fail(ev, "sprintf_s: ~s needs a string, got %s", type_name(v->t));
			}
			any_to_str(&b, v);
		} else if (c == 'b' || c == 'B') {
			if (v->t != T_INT) {
				free(b.p);
				return fail(ev, "sprintf_s: ~%c needs an integer, got %s", c, type_name(v->t));
			}
			any_to_str(&b, v);
		} else {
			erl_term(&b, v);
		}
	}
	return sb_done(ev, &b, out);
}

static const char *const pad_modes[] = { "trailing", "both", "leading", NULL };

FN(f_pad)
{
	int64_t want = a[1].u.i;
	if (want < 0)
		return fail(ev, "pad: negative length");
	if (want > VARIFORM_MAX_STR)
		return fail(ev, "pad: length above %d", VARIFORM_MAX_STR);
	int dir = 0; /* trailing */
	if (n > 2) {
		if (str_is(&a[2], "both"))
			dir = 1;
		else if (str_is(&a[2], "leading"))
			dir = 2;
		else if (!str_is(&a[2], "trailing"))
			return fail(ev, "pad: the third argument must be trailing, both or leading");
	}
	const char *unit = n > 3 ? S(3) : " ";
	size_t ul = n > 3 ? L(3) : 1;
	size_t have = u8_count(S(0), L(0));
	if ((int64_t)have >= want || ul == 0) {
		*out = a[0];
		return true;
	}
	size_t pad = (size_t)want - have;
	size_t left = dir == 0 ? 0 : dir == 2 ? pad : pad / 2;
	size_t right = pad - left;
	struct sb b = { 0 };
	for (size_t k = 0; k < left && !b.over; k++)
		sb_add(&b, unit, ul);
	sb_add(&b, S(0), L(0));
	for (size_t k = 0; k < right && !b.over; k++)
		sb_add(&b, unit, ul);
	return sb_done(ev, &b, out);
}

static const char *const replace_modes[] = { "all", "leading", "trailing", NULL };

FN(f_replace)
{
	int mode = 0; /* all */
	if (n > 3) {
		if (str_is(&a[3], "leading"))
			mode = 1;
		else if (str_is(&a[3], "trailing"))
			mode = 2;
		else if (!str_is(&a[3], "all"))
			return fail(ev, "replace: the fourth argument must be all, leading or trailing");
	}
	if (L(1) == 0) {
		*out = a[0];
		return true;
	}
	struct sb b = { 0 };
	size_t pos = 0;
	while (pos <= L(0)) {
		size_t at = find_sub(S(0) + pos, L(0) - pos, S(1), L(1), mode == 2);
		if (at == SIZE_MAX)
			break;
		sb_add(&b, S(0) + pos, at);
		sb_add(&b, S(2), L(2));
		pos += at + L(1);
		if (mode != 0 || b.over)
			break;
	}
	sb_add(&b, S(0) + pos, L(0) - pos);
	return sb_done(ev, &b, out);
}

/* The call's compiled regex (argument 2, a literal compiled at load) or one compiled now
 * (*tmp, freed by the caller); *subj is a NUL-terminated arena copy of the text to search
 * (regexec reads no further than REG_STARTEND's end, but sanitizers' interceptors strlen it). */
static const struct vre *regex_of(struct ev *ev, const struct node *call, const struct val *a, struct vre **tmp,
				  const char **subj)
{
	const struct val *pat = &a[1];
	*tmp = NULL;
	if (a[0].u.s.len > VARIFORM_MAX_REGEX_SUBJECT) {
		fail(ev, "%s: the text to search is longer than %d bytes", call->s, VARIFORM_MAX_REGEX_SUBJECT);
		return NULL;
	}
	struct val copy;
	if (!ev_str(ev, a[0].u.s.p, a[0].u.s.len, &copy))
		return NULL;
	*subj = copy.u.s.p;
	if (call->re)
		return call->re;
	char msg[200];
	*tmp = vre_compile(pat->u.s.p, pat->u.s.len, msg, sizeof msg);
	if (!*tmp)
		fail(ev, "%s: %s", call->fn ? call->s : "regex", msg);
	return *tmp;
}

FN(f_regex_match)
{
	struct vre *tmp;
	const char *subj = NULL;
	const struct vre *r = regex_of(ev, call, a, &tmp, &subj);
	if (!r)
		return false;
	regmatch_t m[VRE_MAX_GROUPS + 1];
	*out = v_bool(vre_exec(r, subj, L(0), 0, m) == 0);
	vre_free(tmp);
	return true;
}

FN(f_regex_extract)
{
	struct vre *tmp;
	const char *subj = NULL;
	const struct vre *r = regex_of(ev, call, a, &tmp, &subj);
	if (!r)
		return false;
	regmatch_t m[VRE_MAX_GROUPS + 1];
	bool ok;
	if (vre_exec(r, subj, L(0), 0, m) != 0) {
		ok = ev_array(ev, 0, out);
	} else {
		ok = ev_array(ev, r->ncap, out);
		for (size_t k = 0; ok && k < r->ncap; k++) {
			const regmatch_t *g = &m[r->cap[k]];
			out->u.a.v[k] = g->rm_so < 0 ? v_str("", 0) : v_str(subj + g->rm_so, (size_t)(g->rm_eo - g->rm_so));
		}
	}
	vre_free(tmp);
	return ok;
}

/* Erlang re:replace's replacement: & = the match, \N \gN \g{N} = group N, \& \\ literal. */
static void expand_rep(struct sb *b, const struct vre *r, const char *s, const regmatch_t *m, const char *rep,
		       size_t rl)
{
	for (size_t i = 0; i < rl && !b->over; i++) {
		long g = -1;
		if (rep[i] == '&') {
			g = 0;
		} else if (rep[i] == '\\' && i + 1 < rl) {
			char c = rep[i + 1];
			if (c == '\\' || c == '&') {
				sb_byte(b, (unsigned char)c);
				i++;
				continue;
			}
			size_t j = i + 1;
			bool brace = false;
			if (c == 'g') {
				j++;
				if (j < rl && rep[j] == '{') {
					brace = true;
					j++;
				}
			}
			size_t d0 = j;
			long v = 0;
			while (j < rl && rep[j] >= '0' && rep[j] <= '9' && j - d0 < 4)
				v = v * 10 + (rep[j++] - '0');
			if (j > d0 && (!brace || (j < rl && rep[j] == '}'))) {
				g = v;
				i = brace ? j : j - 1;
			}
		}
		if (g < 0) {
			sb_byte(b, (unsigned char)rep[i]);
			continue;
		}
		const regmatch_t *x = NULL;
		if (g == 0)
			x = &m[0];
		else if ((size_t)g <= r->ncap)
			x = &m[r->cap[g - 1]];
		if (x && x->rm_so >= 0)
			sb_add(b, s + x->rm_so, (size_t)(x->rm_eo - x->rm_so));
	}
}

FN(f_regex_replace)
{
	struct vre *tmp;
	const char *subj = NULL;
	const struct vre *r = regex_of(ev, call, a, &tmp, &subj);
	if (!r)
		return false;
	regmatch_t m[VRE_MAX_GROUPS + 1];
	struct sb b = { 0 };
	const char *s = subj;
	size_t len = L(0), pos = 0;
	while (pos <= len && !b.over) {
		if (vre_exec(r, s, len, pos, m) != 0)
			break;
		size_t so = (size_t)m[0].rm_so, eo = (size_t)m[0].rm_eo;
		sb_add(&b, s + pos, so - pos);
		expand_rep(&b, r, s, m, S(2), L(2));
		if (eo > so) {
			pos = eo;
		} else if (so < len) {
			sb_add(&b, s + so, 1);
			pos = so + 1;
		} else {
			pos = len + 1;
		}
	}
	if (pos < len)
		sb_add(&b, s + pos, len - pos);
	vre_free(tmp);
	return sb_done(ev, &b, out);
}

FN(f_ascii)
{
	if (L(0) == 0)
		return fail(ev, "ascii: empty string");
	*out = v_int((unsigned char)S(0)[0]);
	return true;
}

static const char *const find_modes[] = { "leading", "trailing", NULL };

FN(f_find)
{
	bool last = false;
	if (n > 2) {
		if (str_is(&a[2], "trailing"))
			last = true;
		else if (!str_is(&a[2], "leading"))
			return fail(ev, "find: the third argument must be leading or trailing");
	}
	size_t at = L(1) == 0 ? 0 : find_sub(S(0), L(0), S(1), L(1), last);
	*out = at == SIZE_MAX ? v_str("", 0) : v_str(S(0) + at, L(0) - at);
	return true;
}

FN(f_join_to_string)
{
	const struct val *list = &a[n - 1];
	const char *sep = n > 1 ? S(0) : ", ";
	size_t sl = n > 1 ? L(0) : 2;
	struct sb b = { 0 };
	for (size_t k = 0; k < list->u.a.n && !b.over; k++) {
		if (k)
			sb_add(&b, sep, sl);
		any_to_str(&b, &list->u.a.v[k]);
	}
	return sb_done(ev, &b, out);
}

FN(f_unescape)
{
	const unsigned char *p = (const unsigned char *)S(0);
	size_t len = L(0);
	struct sb b = { 0 };
	for (size_t i = 0; i < len;) {
		uint32_t cp;
		size_t k = u8_next(p, len, i, &cp);
		if (cp == U8_INVALID) {
			free(b.p);
			return fail(ev, "unescape: invalid UTF-8");
		}
		if (cp != '\\') {
			sb_add(&b, p + i, k);
			i += k;
			continue;
		}
		if (i + 1 >= len) {
			free(b.p);
			return fail(ev, "unescape: lone backslash at the end");
		}
		unsigned char c = p[i + 1];
		static const char from[] = "\\ntrbfv'\"?a", to[] = "\\\n\t\r\b\f\v'\"?\a";
		const char *x = c ? strchr(from, c) : NULL;
		if (x) {
			sb_byte(&b, (unsigned char)to[x - from]);
			i += 2;
			continue;
		}
		if (c == 'x' && i + 2 < len && hexval(p[i + 2]) >= 0) {
			uint64_t v = 0;
			size_t j = i + 2;
			while (j < len && hexval(p[j]) >= 0) {
				v = v * 16 + (uint64_t)hexval(p[j++]);
				if (v > 0x10FFFF)
					break;
			}
			if (v > 0x10FFFF || (v >= 0xD800 && v <= 0xDFFF)) {
				free(b.p);
				return fail(ev, "unescape: \\x value is not a Unicode code point");
			}
			u8_put(&b, (uint32_t)v);
			i = j;
			continue;
		}
		free(b.p);
		if (c >= 0x20 && c < 0x7F)
			return fail(ev, "unescape: unrecognized escape sequence \\%c", c);
		return fail(ev, "unescape: unrecognized escape sequence");
	}
	return sb_done(ev, &b, out);
}

FN(f_any_to_str)
{
	return to_text(ev, &a[0], out);
}

FN(f_is_empty_val)
{
	*out = v_bool(v_empty(&a[0]));
	return true;
}

FN(f_not)
{
	if (a[0].t == T_BOOL)
		*out = v_bool(!a[0].u.b);
	else if (str_is(&a[0], "true"))
		*out = v_str("false", 5);
	else if (str_is(&a[0], "false"))
		*out = v_str("true", 4);
	else
		return fail(ev, "not: the argument must be true or false");
	return true;
}

/* Erlang binary_to_integer/1: optional sign, digits, nothing else. */
static bool parse_int(const char *s, size_t len, int64_t *out)
{
	char t[32];
	if (len == 0 || len >= sizeof t)
		return false;
	memcpy(t, s, len);
	t[len] = '\0';
	size_t i = (t[0] == '+' || t[0] == '-') ? 1 : 0;
	if (i == len)
		return false;
	for (size_t k = i; k < len; k++)
		if (t[k] < '0' || t[k] > '9')
			return false;
	errno = 0;
	long long v = strtoll(t, NULL, 10);
	if (errno)
		return false;
	*out = v;
	return true;
}

FN(f_nth)
{
	int64_t k;
	if (a[0].t == T_INT)
		k = a[0].u.i;
	else if (!parse_int(S(0), L(0), &k))
		return fail(ev, "nth: the index is not an integer");
	if (k < 1)
		return fail(ev, "nth: the index must be 1 or more");
	const struct val *list = &a[1];
	*out = (uint64_t)k > list->u.a.n ? v_str("", 0) : list->u.a.v[k - 1];
	return true;
}

static bool rand_u64(struct ev *ev, uint64_t *v)
{
	if (RAND_bytes((unsigned char *)v, sizeof *v) != 1)
		return fail(ev, "the random generator failed");
	return true;
}

/* Uniform in [0, n). */
static bool rand_below(struct ev *ev, uint64_t n, uint64_t *out)
{
	uint64_t lim = UINT64_MAX - UINT64_MAX % n, v;
	do {
		if (!rand_u64(ev, &v))
			return false;
	} while (v >= lim);
	*out = v % n;
	return true;
}

FN(f_rand_str)
{
	static const char cs[] = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
	int64_t want = a[0].u.i;
	if (want < 1)
		return fail(ev, "rand_str: the length must be 1 or more");
	if (want > VARIFORM_MAX_STR)
		return fail(ev, "rand_str: length above %d", VARIFORM_MAX_STR);
	char *d = ev_alloc(ev, (size_t)want + 1);
	if (!d)
		return false;
	for (int64_t k = 0; k < want; k++) {
		uint64_t r;
		if (!rand_below(ev, 62, &r))
			return false;
		d[k] = cs[r];
	}
	d[want] = '\0';
	*out = v_str(d, (size_t)want);
	return true;
}

FN(f_rand_int)
{
	if (a[0].u.i < 1)
		return fail(ev, "rand_int: the argument must be 1 or more");
	uint64_t r;
	if (!rand_below(ev, (uint64_t)a[0].u.i, &r))
		return false;
	*out = v_int((int64_t)r + 1);
	return true;
}

static void hex(struct sb *b, const unsigned char *p, size_t n, bool upper)
{
	const char *d = upper ? "0123456789ABCDEF" : "0123456789abcdef";
	for (size_t i = 0; i < n && !b->over; i++) {
		char t[2] = { d[p[i] >> 4], d[p[i] & 15] };
		sb_add(b, t, 2);
	}
}

FN(f_bin2hexstr)
{
	struct sb b = { 0 };
	hex(&b, (const unsigned char *)S(0), L(0), true);
	return sb_done(ev, &b, out);
}

FN(f_hexstr2bin)
{
	if (L(0) % 2)
		return fail(ev, "hexstr2bin: odd number of hex digits");
	char *d = ev_alloc(ev, L(0) / 2 + 1);
	if (!d)
		return false;
	for (size_t i = 0; i < L(0); i += 2) {
		int h = hexval((unsigned char)S(0)[i]), l = hexval((unsigned char)S(0)[i + 1]);
		if (h < 0 || l < 0)
			return fail(ev, "hexstr2bin: not a hex digit");
		d[i / 2] = (char)(h * 16 + l);
	}
	d[L(0) / 2] = '\0';
	*out = v_str(d, L(0) / 2);
	return true;
}

FN(f_int2hexstr)
{
	int64_t v = a[0].u.i;
	uint64_t mag = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
	struct sb b = { 0 };
	sb_fmt(&b, "%s%" PRIX64, v < 0 ? "-" : "", mag);
	return sb_done(ev, &b, out);
}

FN(f_base64_encode)
{
	if (L(0) > (VARIFORM_MAX_STR / 4) * 3)
		return fail(ev, "base64_encode: a string would exceed %d KiB", VARIFORM_MAX_STR >> 10);
	size_t cap = 4 * ((L(0) + 2) / 3) + 1;
	char *d = ev_alloc(ev, cap);
	if (!d)
		return false;
	int k = EVP_EncodeBlock((unsigned char *)d, (const unsigned char *)S(0), (int)L(0));
	*out = v_str(d, (size_t)k);
	return true;
}

static int b64val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

FN(f_base64_decode)
{
	char *d = ev_alloc(ev, L(0) / 4 * 3 + 4);
	if (!d)
		return false;
	uint32_t acc = 0;
	size_t bits = 0, o = 0, pad = 0, digits = 0;
	for (size_t i = 0; i < L(0); i++) {
		unsigned char c = (unsigned char)S(0)[i];
		if (c == ' ' || c == '\t' || c == '\r' || c == '\n')
			continue;
		if (c == '=') {
			pad++;
			continue;
		}
		int v = b64val(c);
		if (v < 0 || pad)
			return fail(ev, "base64_decode: not base64");
		digits++;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			d[o++] = (char)((acc >> bits) & 0xFF);
		}
	}
	if (digits % 4 == 1 || pad > 2 || (pad && (digits + pad) % 4))
		return fail(ev, "base64_decode: not base64");
	d[o] = '\0';
	*out = v_str(d, o);
	return true;
}

/* Erlang crypto:hash algorithm names -> OpenSSL digests (xof: output bytes of SHAKE). */
static const struct {
	const char *name, *ossl;
	size_t xof;
} hash_algos[] = {
	{ "md4", "MD4", 0 },		  { "md5", "MD5", 0 },		    { "sha", "SHA1", 0 },
	{ "sha1", "SHA1", 0 },		  { "sha224", "SHA224", 0 },	    { "sha256", "SHA256", 0 },
	{ "sha384", "SHA384", 0 },	  { "sha512", "SHA512", 0 },	    { "sha3_224", "SHA3-224", 0 },
	{ "sha3_256", "SHA3-256", 0 },	  { "sha3_384", "SHA3-384", 0 },    { "sha3_512", "SHA3-512", 0 },
	{ "shake128", "SHAKE128", 16 },	  { "shake256", "SHAKE256", 32 },   { "blake2b", "BLAKE2B-512", 0 },
	{ "blake2s", "BLAKE2S-256", 0 },
};

/* The digest named name[0..len), or -1 with a message. */
static int hash_algo(const char *name, size_t len, char *err, size_t errlen)
{
	for (size_t k = 0; k < sizeof hash_algos / sizeof hash_algos[0]; k++) {
		if (strlen(hash_algos[k].name) != len || memcmp(hash_algos[k].name, name, len) != 0)
			continue;
		EVP_MD *md = EVP_MD_fetch(NULL, hash_algos[k].ossl, NULL);
		if (!md) {
			rerr(err, errlen, "hash: algorithm %s is not available in this OpenSSL", hash_algos[k].name);
			return -1;
		}
		EVP_MD_free(md);
		return (int)k;
	}
	rerr(err, errlen,
	     "hash: unknown algorithm (known: md4 md5 sha sha1 sha224 sha256 sha384 sha512 sha3_224 sha3_256 "
	     "sha3_384 sha3_512 shake128 shake256 blake2b blake2s)");
	return -1;
}

static bool digest(struct ev *ev, int algo, const char *s, size_t len, unsigned char *md, size_t *mdlen)
{
	EVP_MD *m = EVP_MD_fetch(NULL, hash_algos[algo].ossl, NULL);
	EVP_MD_CTX *c = EVP_MD_CTX_new();
	bool ok = m && c && EVP_DigestInit_ex(c, m, NULL) == 1 && EVP_DigestUpdate(c, s, len) == 1;
	if (ok && hash_algos[algo].xof) {
		ok = EVP_DigestFinalXOF(c, md, hash_algos[algo].xof) == 1;
		*mdlen = hash_algos[algo].xof;
	} else if (ok) {
		unsigned int l = 0;
		ok = EVP_DigestFinal_ex(c, md, &l) == 1;
		*mdlen = l;
	}
	EVP_MD_CTX_free(c);
	EVP_MD_free(m);
	return ok || fail(ev, "hash: %s failed", hash_algos[algo].name);
}

static bool hash_hex(struct ev *ev, int algo, const struct val *s, struct val *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	size_t ml;
	if (!digest(ev, algo, s->u.s.p, s->u.s.len, md, &ml))
		return false;
	struct sb b = { 0 };
	hex(&b, md, ml, false);
	return sb_done(ev, &b, out);
}

FN(f_hash)
{
	char msg[300];
	int algo = hash_algo(S(0), L(0), msg, sizeof msg);
	if (algo < 0)
		return fail(ev, "%s", msg);
	return hash_hex(ev, algo, &a[1], out);
}

FN(f_md5)
{
	return hash_hex(ev, 1, &a[0], out);
}

FN(f_sha)
{
	return hash_hex(ev, 2, &a[0], out);
}

FN(f_sha256)
{
	return hash_hex(ev, 5, &a[0], out);
}

typedef __int128 i128;

/* Min + (X rem (Max - Min + 1)) for X a big-endian unsigned byte string. */
static bool bytes_to_range(struct ev *ev, const unsigned char *p, size_t len, int64_t min, int64_t max,
			   struct val *out)
{
	if (min > max)
		return fail(ev, "the range minimum is above its maximum");
	unsigned __int128 range = (unsigned __int128)((i128)max - (i128)min + 1), r = 0;
	for (size_t i = 0; i < len; i++)
		r = (r * 256 + p[i]) % range;
	*out = v_int((int64_t)((i128)min + (i128)r));
	return true;
}

FN(f_hash_to_range)
{
	if (L(0) == 0)
		return fail(ev, "hash_to_range: empty input");
	unsigned char md[EVP_MAX_MD_SIZE];
	size_t ml;
	if (!digest(ev, 5, S(0), L(0), md, &ml))
		return false;
	return bytes_to_range(ev, md, ml, a[1].u.i, a[2].u.i, out);
}

FN(f_map_to_range)
{
	int64_t min = a[1].u.i, max = a[2].u.i;
	if (a[0].t == T_STR) {
		if (L(0) == 0)
			return fail(ev, "map_to_range: empty input");
		return bytes_to_range(ev, (const unsigned char *)S(0), L(0), min, max, out);
	}
	if (min > max)
		return fail(ev, "map_to_range: the minimum is above the maximum");
	i128 range = (i128)max - (i128)min + 1;
	i128 v = (i128)min + (i128)a[0].u.i % range; /* rem: the sign of the dividend, as Erlang */
	if (v < INT64_MIN || v > INT64_MAX)
		return fail(ev, "map_to_range: result out of range");
	*out = v_int((int64_t)v);
	return true;
}

/* str_comp: -1, 0, 1 comparing the texts of two values bytewise. */
static bool str_cmp(struct ev *ev, struct val *a, int *r)
{
	struct val x, y;
	if (!to_text(ev, &a[0], &x) || !to_text(ev, &a[1], &y))
		return false;
	size_t m = x.u.s.len < y.u.s.len ? x.u.s.len : y.u.s.len;
	int c = m ? memcmp(x.u.s.p, y.u.s.p, m) : 0;
	*r = c ? (c < 0 ? -1 : 1) : (x.u.s.len < y.u.s.len ? -1 : x.u.s.len > y.u.s.len);
	return true;
}

static int num_cmp(const struct val *a)
{
	if (a[0].t == T_INT && a[1].t == T_INT)
		return a[0].u.i < a[1].u.i ? -1 : a[0].u.i > a[1].u.i;
	double x = a[0].t == T_INT ? (double)a[0].u.i : a[0].u.f;
	double y = a[1].t == T_INT ? (double)a[1].u.i : a[1].u.f;
	return x < y ? -1 : x > y;
}

static struct val cmp_name(int r)
{
	return r < 0 ? v_str("lt", 2) : r > 0 ? v_str("gt", 2) : v_str("eq", 2);
}

/* Which comparison a call makes: the name's suffix (comp, eq, neq, lt, lte, gt, gte). */
static bool cmp_result(const char *name, int r, struct val *out)
{
	const char *op = strchr(name, '_') + 1;
	if (strcmp(op, "comp") == 0)
		*out = cmp_name(r);
	else if (strcmp(op, "eq") == 0)
		*out = v_bool(r == 0);
	else if (strcmp(op, "neq") == 0)
		*out = v_bool(r != 0);
	else if (strcmp(op, "lt") == 0)
		*out = v_bool(r < 0);
	else if (strcmp(op, "lte") == 0)
		*out = v_bool(r <= 0);
	else if (strcmp(op, "gt") == 0)
		*out = v_bool(r > 0);
	else
		*out = v_bool(r >= 0);
	return true;
}

FN(f_str_cmp)
{
	int r;
	return str_cmp(ev, a, &r) && cmp_result(call->s, r, out);
}

FN(f_num_cmp)
{
	return cmp_result(call->s, num_cmp(a), out);
}

FN(f_getenv)
{
	if (L(0) > 200 || memchr(S(0), '\0', L(0)))
		return fail(ev, "getenv: bad variable name");
	char name[220];
	snprintf(name, sizeof name, "EMQXVAR_%.*s", (int)L(0), S(0));
	const char *v = getenv(name);
	if (!v) {
		*out = v_str("", 0);
		return true;
	}
	size_t vl = strlen(v);
	if (vl > VARIFORM_MAX_STR)
		return fail(ev, "getenv: value too long");
	return ev_str(ev, v, vl, out);
}

/* ---- the function table ---- */

enum { LAZY_NONE, LAZY_IIF, LAZY_COALESCE, LAZY_IS_EMPTY };

struct fn {
	const char *name;
	unsigned char min, max; /* arity; max 255 = any */
	unsigned ret;           /* possible result types */
	unsigned args[4];       /* accepted types per position; the last applies to the rest */
	bool (*impl)(struct ev *ev, const struct node *call, struct val *a, size_t n, struct val *out);
	int lazy;
	const char *const *modes; /* literal choices for argument mode_pos (1-based), or NULL */
	unsigned char mode_pos;
	unsigned char regex_pos;  /* 1-based position of a regex argument, 0 = none */
};

#define A1(x) { x, x, x, x }
#define STR3 { T_STR, T_STR, T_STR, T_STR }

static const struct fn fns[] = {
	{ "lower", 1, 1, T_STR, STR3, f_lower, 0, NULL, 0, 0 },
	{ "upper", 1, 1, T_STR, STR3, f_upper, 0, NULL, 0, 0 },
	{ "ltrim", 1, 2, T_STR, STR3, f_ltrim, 0, NULL, 0, 0 },
	{ "rtrim", 1, 2, T_STR, STR3, f_rtrim, 0, NULL, 0, 0 },
	{ "trim", 1, 2, T_STR, STR3, f_trim, 0, NULL, 0, 0 },
	{ "reverse", 1, 1, T_STR, STR3, f_reverse, 0, NULL, 0, 0 },
	{ "rm_prefix", 2, 2, T_STR, STR3, f_rm_prefix, 0, NULL, 0, 0 },
	{ "strlen", 1, 1, T_INT, STR3, f_strlen, 0, NULL, 0, 0 },
	{ "substr", 2, 3, T_STR, { T_STR, T_INT, T_INT, T_INT }, f_substr, 0, NULL, 0, 0 },
	{ "split", 2, 3, T_ARR, STR3, f_split, 0, split_modes, 3, 0 },
	{ "tokens", 2, 3, T_ARR, STR3, f_tokens, 0, NULL, 0, 0 },
	{ "concat", 1, 255, T_STR, A1(T_ANY), f_concat, 0, NULL, 0, 0 },
	{ "sprintf_s", 2, 2, T_STR, { T_STR, T_ARR, T_ARR, T_ARR }, f_sprintf, 0, NULL, 0, 0 },
	{ "sprintf", 2, 2, T_STR, { T_STR, T_ARR, T_ARR, T_ARR }, f_sprintf, 0, NULL, 0, 0 },
	{ "pad", 2, 4, T_STR, { T_STR, T_INT, T_STR, T_STR }, f_pad, 0, pad_modes, 3, 0 },
	{ "replace", 3, 4, T_STR, STR3, f_replace, 0, replace_modes, 4, 0 },
	{ "regex_match", 2, 2, T_BOOL, STR3, f_regex_match, 0, NULL, 0, 2 },
	{ "regex_replace", 3, 3, T_STR, STR3, f_regex_replace, 0, NULL, 0, 2 },
	{ "regex_extract", 2, 2, T_ARR, STR3, f_regex_extract, 0, NULL, 0, 2 },
	{ "ascii", 1, 1, T_INT, STR3, f_ascii, 0, NULL, 0, 0 },
	{ "find", 2, 3, T_STR, STR3, f_find, 0, find_modes, 3, 0 },
	{ "join_to_string", 1, 1, T_STR, A1(T_ARR), f_join_to_string, 0, NULL, 0, 0 },
	{ "join_to_string", 2, 2, T_STR, { T_STR, T_ARR, T_ARR, T_ARR }, f_join_to_string, 0, NULL, 0, 0 },
	{ "unescape", 1, 1, T_STR, STR3, f_unescape, 0, NULL, 0, 0 },
	{ "any_to_str", 1, 1, T_STR, A1(T_ANY), f_any_to_str, 0, NULL, 0, 0 },
	{ "any_to_string", 1, 1, T_STR, A1(T_ANY), f_any_to_str, 0, NULL, 0, 0 },
	{ "is_empty_val", 1, 1, T_BOOL, A1(T_ANY), f_is_empty_val, 0, NULL, 0, 0 },
	{ "not", 1, 1, T_BOOL | T_STR, A1(T_BOOL | T_STR), f_not, 0, NULL, 0, 0 },
	{ "nth", 2, 2, T_ANY, { T_INT | T_STR, T_ARR, T_ARR, T_ARR }, f_nth, 0, NULL, 0, 0 },
	{ "rand_str", 1, 1, T_STR, A1(T_INT), f_rand_str, 0, NULL, 0, 0 },
	{ "rand_int", 1, 1, T_INT, A1(T_INT), f_rand_int, 0, NULL, 0, 0 },
	{ "bin2hexstr", 1, 1, T_STR, STR3, f_bin2hexstr, 0, NULL, 0, 0 },
	{ "hexstr2bin", 1, 1, T_STR, STR3, f_hexstr2bin, 0, NULL, 0, 0 },
	{ "int2hexstr", 1, 1, T_STR, A1(T_INT), f_int2hexstr, 0, NULL, 0, 0 },
	{ "base64_encode", 1, 1, T_STR, STR3, f_base64_encode, 0, NULL, 0, 0 },
	{ "base64_decode", 1, 1, T_STR, STR3, f_base64_decode, 0, NULL, 0, 0 },
	{ "hash", 2, 2, T_STR, STR3, f_hash, 0, NULL, 0, 0 },
	{ "md5", 1, 1, T_STR, STR3, f_md5, 0, NULL, 0, 0 },
	{ "sha", 1, 1, T_STR, STR3, f_sha, 0, NULL, 0, 0 },
	{ "sha256", 1, 1, T_STR, STR3, f_sha256, 0, NULL, 0, 0 },
	{ "hash_to_range", 3, 3, T_INT, { T_STR, T_INT, T_INT, T_INT }, f_hash_to_range, 0, NULL, 0, 0 },
	{ "map_to_range", 3, 3, T_INT, { T_STR | T_INT, T_INT, T_INT, T_INT }, f_map_to_range, 0, NULL, 0, 0 },
	{ "str_comp", 2, 2, T_STR, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_eq", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_neq", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_lt", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_lte", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_gt", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "str_gte", 2, 2, T_BOOL, A1(T_ANY), f_str_cmp, 0, NULL, 0, 0 },
	{ "num_comp", 2, 2, T_STR, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_eq", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_neq", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_lt", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_lte", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_gt", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "num_gte", 2, 2, T_BOOL, A1(T_NUM), f_num_cmp, 0, NULL, 0, 0 },
	{ "getenv", 1, 1, T_STR, STR3, f_getenv, 0, NULL, 0, 0 },
	{ "iif", 3, 3, T_ANY, A1(T_ANY), NULL, LAZY_IIF, NULL, 0, 0 },
	{ "coalesce", 0, 255, T_ANY, A1(T_ANY), NULL, LAZY_COALESCE, NULL, 0, 0 },
	{ "is_empty", 1, 1, T_BOOL, A1(T_ANY), NULL, LAZY_IS_EMPTY, NULL, 0, 0 },
};

#define NFNS (sizeof fns / sizeof fns[0])

const char *const variform_function_names[] = {
	"lower", "upper", "ltrim", "rtrim", "trim", "reverse", "rm_prefix", "strlen", "substr", "split", "tokens",
	"concat", "sprintf_s", "sprintf", "pad", "replace", "regex_match", "regex_replace", "regex_extract", "ascii",
	"find", "join_to_string", "unescape", "any_to_str", "any_to_string", "is_empty_val", "not", "nth",
	"rand_str", "rand_int", "bin2hexstr", "hexstr2bin", "int2hexstr", "base64_encode", "base64_decode", "hash",
	"md5", "sha", "sha256", "hash_to_range", "map_to_range", "str_comp", "str_eq", "str_neq", "str_lt",
	"str_lte", "str_gt", "str_gte", "num_comp", "num_eq", "num_neq", "num_lt", "num_lte", "num_gt", "num_gte",
	"getenv", "iif", "coalesce", "is_empty", NULL,
};

/* ---- compile: names, arities, static types, literal arguments ---- */

static unsigned static_type(const struct node *n)
{
	switch (n->k) {
	case N_STR: return T_STR;
	case N_INT: return T_INT;
	case N_FLOAT: return T_FLOAT;
	case N_BOOL: return T_BOOL;
	case N_VAR: return n->var_type;
	case N_ARRAY: return T_ARR;
	case N_CALL: return n->fn ? n->fn->ret : T_ANY;
	}
	return T_ANY;
}

static unsigned arg_mask(const struct fn *f, size_t k)
{
	return f->args[k < 4 ? k : 3];
}

static bool mode_ok(const char *const *modes, const struct node *n)
{
	for (const char *const *m = modes; *m; m++)
		if (strlen(*m) == n->len && memcmp(*m, n->s, n->len) == 0)
			return true;
	return false;
}

static bool check_call(struct parser *p, struct node *n)
{
	const char *name = n->s;
	const char *prefix = "emqx_variform_bif.";
	if (strncmp(name, prefix, strlen(prefix)) == 0)
		name += strlen(prefix);
	if (strchr(name, '.'))
		return perr(p, (size_t)n->col - 1, "function %s: module-qualified functions are not supported", n->s);
	int lo = 256, hi = -1;
	for (size_t k = 0; k < NFNS; k++) {
		if (strcmp(fns[k].name, name) != 0)
			continue;
		lo = fns[k].min < lo ? fns[k].min : lo;
		hi = fns[k].max > hi ? fns[k].max : hi;
		if (n->n >= fns[k].min && n->n <= fns[k].max) {
			n->fn = &fns[k];
			break;
		}
	}
	if (hi < 0)
		return perr(p, (size_t)n->col - 1, "unknown function %s", n->s);
	if (!n->fn) {
		if (hi == 255)
			return perr(p, (size_t)n->col - 1, "%s takes at least %d arguments, got %zu", name, lo, n->n);
		if (lo == hi)
			return perr(p, (size_t)n->col - 1, "%s takes %d argument%s, got %zu", name, lo, lo == 1 ? "" : "s",
				    n->n);
		return perr(p, (size_t)n->col - 1, "%s takes %d to %d arguments, got %zu", name, lo, hi, n->n);
	}
	/* keep the bare name for messages and the comparison functions */
	if (name != n->s)
		memmove(n->s, name, strlen(name) + 1);
	const struct fn *f = n->fn;
	for (size_t k = 0; k < n->n; k++) {
		const struct node *a = n->kids[k];
		unsigned want = arg_mask(f, k), have = static_type(a);
		if (!(want & have))
			return perr(p, (size_t)a->col - 1, "argument %zu of %s must be %s, got %s", k + 1, n->s,
				    type_name(want), type_name(have));
		/* literal integers that can only be wrong */
		if (a->k == N_INT && a->i < 0 &&
		    (!strcmp(n->s, "substr") || (!strcmp(n->s, "pad") && k == 1)))
			return perr(p, (size_t)a->col - 1, "%s: argument %zu must not be negative", n->s, k + 1);
		if (a->k == N_INT && a->i < 1 &&
		    ((!strcmp(n->s, "nth") && k == 0) || !strcmp(n->s, "rand_str") || !strcmp(n->s, "rand_int")))
			return perr(p, (size_t)a->col - 1, "%s: argument %zu must be 1 or more", n->s, k + 1);
	}
	char msg[300];
	if (f->modes && n->n >= f->mode_pos && n->kids[f->mode_pos - 1]->k == N_STR &&
	    !mode_ok(f->modes, n->kids[f->mode_pos - 1])) {
		struct buf l = { 0 };
		for (const char *const *m = f->modes; *m; m++)
			buf_printf(&l, "%s%s", m == f->modes ? "" : ", ", *m);
		buf_append(&l, "", 1);
		perr(p, (size_t)n->kids[f->mode_pos - 1]->col - 1, "%s: argument %u must be one of %s", n->s,
		     f->mode_pos, (const char *)l.data);
		buf_free(&l);
		return false;
	}
	if (!strcmp(n->s, "tokens") && n->n == 3 && n->kids[2]->k == N_STR &&
	    !(n->kids[2]->len == 6 && !memcmp(n->kids[2]->s, "nocrlf", 6)))
		return perr(p, (size_t)n->kids[2]->col - 1, "tokens: argument 3 must be 'nocrlf'");
	if (!strcmp(n->s, "not") && n->kids[0]->k == N_STR && !mode_ok((const char *const[]){ "true", "false", NULL },
								     n->kids[0]))
		return perr(p, (size_t)n->kids[0]->col - 1, "not: the argument must be true or false");
	if (f->regex_pos && n->kids[f->regex_pos - 1]->k == N_STR) {
		const struct node *r = n->kids[f->regex_pos - 1];
		n->re = vre_compile(r->s, r->len, msg, sizeof msg);
		if (!n->re)
			return perr(p, (size_t)r->col - 1, "%s: %s", n->s, msg);
	}
	if (!strcmp(n->s, "hash") && n->kids[0]->k == N_STR &&
	    hash_algo(n->kids[0]->s, n->kids[0]->len, msg, sizeof msg) < 0)
		return perr(p, (size_t)n->kids[0]->col - 1, "%s", msg);
	if (f->impl == f_sprintf && n->kids[0]->k == N_STR) {
		long need = fmt_check(n->kids[0]->s, n->kids[0]->len, msg, sizeof msg);
		if (need < 0)
			return perr(p, (size_t)n->kids[0]->col - 1, "%s", msg);
		if (n->kids[1]->k == N_ARRAY && (size_t)need != n->kids[1]->n)
			return perr(p, (size_t)n->kids[1]->col - 1, "sprintf_s: the format needs %ld arguments, got %zu",
				    need, n->kids[1]->n);
	}
	return true;
}

/* Resolve names and check calls, innermost first. */
static bool resolve(struct parser *p, struct node *n)
{
	for (size_t k = 0; k < n->n; k++)
		if (!resolve(p, n->kids[k]))
			return false;
	if (n->k == N_VAR) {
		enum variform_var_kind kind = VARIFORM_VAR_STRING;
		n->var_id = p->resolve ? p->resolve(n->s, p->ud, &kind) : -1;
		if (n->var_id < 0)
			return perr(p, (size_t)n->col - 1, "unknown variable %s%s%s", n->s, p->var_hint ? " " : "",
				    p->var_hint ? p->var_hint : "");
		n->var_type = kind == VARIFORM_VAR_LIST ? T_ARR : T_STR;
		return true;
	}
	if (n->k == N_CALL)
		return check_call(p, n);
	return true;
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t k = 0; k < n->n; k++)
		node_free(n->kids[k]);
	free(n->kids);
	free(n->s);
	vre_free(n->re);
	free(n);
}

struct variform *variform_compile(const char *text, size_t len, variform_resolve_fn resolve_fn, void *ud,
				  const char *var_hint, char *err, size_t errlen)
{
	struct parser p = { .s = text, .len = len, .err = err, .errlen = errlen, .resolve = resolve_fn, .ud = ud,
			    .var_hint = var_hint };
	if (len > VARIFORM_MAX_TEXT) {
		snprintf(err, errlen, "expression longer than %d bytes", VARIFORM_MAX_TEXT);
		return NULL;
	}
	if (memchr(text, '\0', len)) {
		snprintf(err, errlen, "expression contains a NUL byte");
		return NULL;
	}
	if (!scan(&p))
		return NULL;
	if (p.t.k == TK_END) {
		snprintf(err, errlen, "empty expression");
		return NULL;
	}
	struct node *root = parse_expr(&p, 0);
	if (!root)
		return NULL;
	if (p.t.k != TK_END) {
		perr(&p, p.t.start, "unexpected %s after the end of the expression", tk_name(p.t.k));
		node_free(root);
		return NULL;
	}
	if (!resolve(&p, root)) {
		node_free(root);
		return NULL;
	}
	struct variform *e = xcalloc(1, sizeof *e);
	e->text = xstrndup(text, len);
	e->root = root;
	return e;
}

void variform_free(struct variform *e)
{
	if (!e)
		return;
	node_free(e->root);
	free(e->text);
	free(e);
}

const char *variform_text(const struct variform *e)
{
	return e->text;
}

/* ---- evaluation ---- */

static bool eval(struct ev *ev, const struct node *n, struct val *out);

/* eval, with an unbound variable anywhere inside giving '' (EMQX's try_eval). */
static bool try_eval(struct ev *ev, const struct node *n, struct val *out)
{
	if (eval(ev, n, out))
		return true;
	if (!ev->unbound)
		return false;
	ev->unbound = false;
	ev->err[0] = '\0';
	*out = v_str("", 0);
	return true;
}

static bool eval_coalesce(struct ev *ev, const struct node *n, struct val *out)
{
	struct node *const *list = n->kids;
	size_t cnt = n->n;
	if (cnt == 1 && n->kids[0]->k == N_ARRAY) {
		list = n->kids[0]->kids;
		cnt = n->kids[0]->n;
	} else if (cnt == 1) {
		/* one expression: the first non-empty element of the array it yields (or itself) */
		struct val v;
		if (!try_eval(ev, n->kids[0], &v))
			return false;
		if (v.t == T_ARR) {
			for (size_t k = 0; k < v.u.a.n; k++) {
				if (!v_empty(&v.u.a.v[k])) {
					*out = v.u.a.v[k];
					return true;
				}
			}
			*out = v_str("", 0);
			return true;
		}
		*out = v;
		return true;
	}
	for (size_t k = 0; k < cnt; k++) {
		struct val v;
		if (!try_eval(ev, list[k], &v))
			return false;
		if (!v_empty(&v)) {
			*out = v;
			return true;
		}
	}
	*out = v_str("", 0);
	return true;
}

static bool eval_call(struct ev *ev, const struct node *n, struct val *out)
{
	const struct fn *f = n->fn;
	switch (f->lazy) {
	case LAZY_IIF: {
		struct val c;
		if (!try_eval(ev, n->kids[0], &c))
			return false;
		bool met = c.t == T_BOOL ? c.u.b : !v_empty(&c);
		return eval(ev, n->kids[met ? 1 : 2], out);
	}
	case LAZY_COALESCE:
		return eval_coalesce(ev, n, out);
	case LAZY_IS_EMPTY: {
		struct val v;
		if (!try_eval(ev, n->kids[0], &v))
			return false;
		*out = v_bool(v_empty(&v));
		return true;
	}
	default:
		break;
	}
	struct val *a = ev_alloc(ev, (n->n ? n->n : 1) * sizeof *a);
	if (!a)
		return false;
	for (size_t k = 0; k < n->n; k++) {
		if (!eval(ev, n->kids[k], &a[k]))
			return false;
		unsigned want = arg_mask(f, k);
		if (!(a[k].t & want))
			return fail(ev, "argument %zu of %s must be %s, got %s", k + 1, n->s, type_name(want),
				    type_name(a[k].t));
	}
	return f->impl(ev, n, a, n->n, out);
}

static bool eval(struct ev *ev, const struct node *n, struct val *out)
{
	switch (n->k) {
	case N_STR:
		*out = v_str(n->s, n->len);
		return true;
	case N_INT:
		*out = v_int(n->i);
		return true;
	case N_FLOAT:
		out->t = T_FLOAT;
		out->u.f = n->f;
		return true;
	case N_BOOL:
		*out = v_bool(n->b);
		return true;
	case N_VAR: {
		struct variform_value v = { 0 };
		if (!ev->lookup || !ev->lookup(ev->ud, n->var_id, n->s, &v)) {
			fail(ev, "variable %s is unbound", n->s);
			ev->unbound = true;
			return false;
		}
		if (v.kind == VARIFORM_VAR_STRING) {
			if (v.len > VARIFORM_MAX_STR)
				return fail(ev, "variable %s is longer than %d KiB", n->s, VARIFORM_MAX_STR >> 10);
			*out = v_str(v.s ? v.s : "", v.s ? v.len : 0);
			return true;
		}
		if (!ev_array(ev, v.n, out))
			return false;
		for (size_t k = 0; k < v.n; k++) {
			size_t l = v.lens ? v.lens[k] : strlen(v.items[k]);
			if (l > VARIFORM_MAX_STR)
				return fail(ev, "variable %s is longer than %d KiB", n->s, VARIFORM_MAX_STR >> 10);
			out->u.a.v[k] = v_str(v.items[k], l);
		}
		return true;
	}
	case N_ARRAY: {
		if (!ev_array(ev, n->n, out))
			return false;
		for (size_t k = 0; k < n->n; k++)
			if (!eval(ev, n->kids[k], &out->u.a.v[k]))
				return false;
		return true;
	}
	case N_CALL:
		return eval_call(ev, n, out);
	}
	return fail(ev, "internal error");
}

char *variform_eval(const struct variform *e, variform_lookup_fn lookup, void *ud, size_t *len, char *err,
		    size_t errlen)
{
	char dummy[1];
	if (!err || !errlen) {
		err = dummy;
		errlen = sizeof dummy;
	}
	err[0] = '\0';
	struct ev ev = { .lookup = lookup, .ud = ud, .err = err, .errlen = errlen };
	struct val v;
	char *res = NULL;
	if (eval(&ev, e->root, &v)) {
		struct sb b = { 0 };
		final_str(&b, &v);
		if (b.over) {
			free(b.p);
			snprintf(err, errlen, "the result would exceed %d KiB", VARIFORM_MAX_STR >> 10);
		} else {
			res = xmalloc(b.len + 1);
			if (b.len)
				memcpy(res, b.p, b.len);
			res[b.len] = '\0';
			*len = b.len;
			free(b.p);
		}
	}
	ev_free(&ev);
	return res;
}
