/* Linear-time regular expressions (relin.h), for patterns matched against client-chosen
 * strings: ban patterns (clientid_re, username_re) and acl.conf {re, ...}.
 *
 * Syntax is POSIX ERE as regcomp(REG_EXTENDED) defines it: every pattern is validated by
 * glibc's regcomp first, so only what it accepts is accepted. Matching does not use glibc's
 * regexec, though: its unanchored search restarts at every position (O(n²): "a.*b" against a
 * 64 KB client ID of "a"s takes over 20 s) and its lazy DFA can build a new state per input
 * byte ("a.{16}c" against random input: seconds), all while a worker thread waits. Patterns are
 * checked on every CONNECT against client-chosen strings, so matching here is a Thompson NFA
 * simulation: O(length × program size), program size bounded by RE_PROG_MAX, no locks.
 *
 * Supported beyond what glibc checks (anything else is refused when the ban is created):
 * literals, ".", bracket expressions with ranges and [:class:] names, "^" and "$" anchors
 * (anywhere, as in ERE), groups, alternation (empty branches too), "*", "+", "?", "{m}",
 * "{m,}", "{m,n}", "{,n}", and backslash quoting of a special character. Not supported:
 * back-references and GNU escapes (\w, \b, \<, ...), [=e=] and [.c.] in brackets.
 * Semantics follow glibc in the C locale: bytes; "." matches any byte but NUL. */
#include "core/relin.h"

#include <ctype.h>
#include <stdint.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/alloc.h"

#define RE_PROG_MAX 1000u    /* instructions after expanding repetitions */
#define RE_DUP_LIMIT 255     /* POSIX RE_DUP_MAX minimum */

/* ---- a cost estimate that runs before glibc's regcomp ----
 *
 * glibc compiles "X+" as "XX*" and "X{m,n}" as n copies of X, so stacked repetitions grow
 * its compiled pattern multiplicatively ("(a{200}){2}+++..." doubles per "+"). Estimate the
 * expanded size with a small walk of the ERE structure so that regcomp never sees a pattern
 * that would take it seconds or gigabytes.
 *
 * The walk also notes which subexpressions can match the empty string. A loop ("*", "+",
 * "{m,}") over such an operand is an epsilon cycle in glibc's NFA, and glibc recomputes the
 * epsilon closures of a cycle on every visit: "(|a|)+{22}" compiles for 16 s natively,
 * "((|a|){22})*" for 1 s, "(a?|b?|c?|d?|e?|f?|g?|h?|i?|j?){4}+" for 12 s. Copies of one
 * ("((){,3}[ab]?){9}{9}") make a long run of empty paths whose closures glibc merges again and
 * again. So an operand that can match the empty string may be made optional but not repeated;
 * that costs no expressiveness ("(a*)*" is "a*", "(a?){4}" is "a{0,4}").
 *
 * Anchors are worse: glibc duplicates the epsilon closure behind each "^" or "$" to carry its
 * constraint, once per path, so a repeated group holding one grows exponentially in the copies
 * ("((^|$){10})+" compiles for minutes). Repeating an anchor, or a group containing one, is
 * refused here, and so are GNU escapes (\b, \<, \` are constraints too) before glibc sees them. */

struct re_est {
	const char *p;
	const char *err;
	int depth;
	unsigned anchors; /* "^" and "$" seen so far */
};

/* The characters a backslash may quote (anything else after one is refused by cost_ok, which
 * also refuses repeated anchors: the parser below relies on both). */
static const char re_quotable[] = "^.[]$()|*+?{}\\";

static uint64_t sat_add(uint64_t a, uint64_t b)
{
	return a + b > RE_PROG_MAX ? RE_PROG_MAX + 1 : a + b;
}

static uint64_t sat_mul(uint64_t a, uint64_t b)
{
	if (b && a > (RE_PROG_MAX + 1) / b)
		return RE_PROG_MAX + 1;
	return a * b > RE_PROG_MAX ? RE_PROG_MAX + 1 : a * b;
}

/* "{m}", "{m,}", "{m,n}", "{,n}" at p: true with *min, *max (-1 = unbounded) and *used. */
static bool parse_interval(const char *p, int *min, int *max, size_t *used)
{
	const char *q = p + 1;
	long m = -1, n;
	if (*q >= '0' && *q <= '9') {
		m = 0;
		while (*q >= '0' && *q <= '9') {
			m = m < 100000 ? m * 10 + (*q - '0') : m;
			q++;
		}
	}
	n = m;
	if (*q == ',') {
		q++;
		n = -1;
		if (*q >= '0' && *q <= '9') {
			n = 0;
			while (*q >= '0' && *q <= '9') {
				n = n < 100000 ? n * 10 + (*q - '0') : n;
				q++;
			}
		}
	} else if (m < 0) {
		return false; /* "{}" or "{x" */
	}
	if (*q != '}')
		return false;
	if (m < 0)
		m = 0; /* "{,n}" (GNU) */
	*min = (int)m;
	*max = (int)n;
	*used = (size_t)(q + 1 - p);
	return true;
}

static uint64_t est_alt(struct re_est *e, bool *nullable);

/* Skip a bracket expression starting at p ('['); returns the character after it. */
static const char *skip_bracket(const char *p)
{
	const char *q = p + 1;
	if (*q == '^')
		q++;
	if (*q == ']')
		q++;
	while (*q && *q != ']') {
		if (*q == '[' && (q[1] == ':' || q[1] == '.' || q[1] == '=')) {
			char close = q[1];
			q += 2;
			while (*q && !(q[0] == close && q[1] == ']'))
				q++;
			if (*q)
				q += 2;
			continue;
		}
		q++;
	}
	return *q ? q + 1 : q;
}

static uint64_t est_seq(struct re_est *e, bool *nullable)
{
	uint64_t total = 0;
	*nullable = true;
	/* a ")" without a "(" is an ordinary character (as for glibc and parse_seq) */
	while (*e->p && *e->p != '|' && !(*e->p == ')' && e->depth > 0) && !e->err) {
		uint64_t atom = 1;
		bool anull = false;
		unsigned anchors_before = e->anchors;
		char ch = *e->p;
		if (ch == '^' || ch == '$') {
			/* an anchor matches the empty string, under a constraint */
			e->anchors++;
			anull = true;
			e->p++;
		} else if (ch == '(') {
			e->p++;
			e->depth++;
			atom = sat_add(est_alt(e, &anull), 1);
			e->depth--;
			if (*e->p == ')')
				e->p++;
		} else if (ch == '[') {
			e->p = skip_bracket(e->p);
		} else if (ch == '\\') {
			if (e->p[1] >= '1' && e->p[1] <= '9') {
				e->err = "back-references are not supported in ban patterns";
				return total;
			}
			if (!e->p[1] || !strchr(re_quotable, e->p[1])) {
				/* \b, \<, \` ... are constraints: never let glibc compile them */
				e->err = "backslash escapes other than quoting a special character are not supported in "
					 "ban patterns";
				return total;
			}
			e->p += e->p[1] ? 2 : 1;
		} else {
			/* An interval with nothing before it is an error or, in some contexts, repeats
			 * what glibc makes of it: count it as a repetition either way. */
			int mn, mx;
			size_t used;
			if (ch == '{' && parse_interval(e->p, &mn, &mx, &used)) {
				if (mn > RE_DUP_LIMIT || mx > RE_DUP_LIMIT) {
					e->err = "repetition count above 255 in the regular expression";
					return total;
				}
				atom = (uint64_t)(mx > mn ? mx : mn) + 1;
				e->p += used;
			} else {
				e->p++;
			}
		}
		for (int ops = 0;; ops++) {
			int mn, mx;
			size_t used;
			ch = *e->p;
			bool is_op = ch == '*' || ch == '?' || ch == '+' ||
				     (ch == '{' && parse_interval(e->p, &mn, &mx, &used));
			if (is_op && e->anchors > anchors_before) {
				/* glibc copies the nodes around an anchor for its constraint, per epsilon
				 * path: "((^|$){10})+" compiles for minutes. No ban repeats an anchor. */
				e->err = "repeating an anchor (^ or $), or a group containing one, is not supported in "
					 "ban patterns";
				return total;
			}
			if (is_op && ops == 2) {
				/* "a+++": each operator doubles glibc's epsilon closures ("h++++++.++??+++"
				 * compiles for seconds under a sanitizer) and no ban needs it */
				e->err = "more than two repetition operators in a row";
				return total;
			}
			bool copies = ch == '*' || ch == '+' || (ch == '{' && is_op && (mx < 0 || mx > 1 || mn > 1));
			if (copies && anull) {
				e->err = "repeating a subexpression that can match the empty string is not supported in "
					 "ban patterns (write a{0,4}, not (a?){4}; a*, not (a*)*)";
				return total;
			}
			if (ch == '*' || ch == '?') {
				atom = sat_add(atom, 1);
				anull = true;
				e->p++;
			} else if (ch == '+') {
				atom = sat_add(sat_mul(atom, 2), 1);
				e->p++;
			} else if (ch == '{' && parse_interval(e->p, &mn, &mx, &used)) {
				int k = mx > mn ? mx : mn;
				if (mn > RE_DUP_LIMIT || mx > RE_DUP_LIMIT) {
					e->err = "repetition count above 255 in the regular expression";
					return total;
				}
				atom = sat_add(sat_mul(atom, k > 0 ? (uint64_t)k : 1), 1);
				anull = anull || mn == 0;
				e->p += used;
			} else {
				break;
			}
		}
		total = sat_add(total, atom);
		*nullable = *nullable && anull;
	}
	return total;
}

static uint64_t est_alt(struct re_est *e, bool *nullable)
{
	uint64_t total = est_seq(e, nullable);
	while (*e->p == '|' && !e->err) {
		bool branch;
		e->p++;
		total = sat_add(total, est_seq(e, &branch));
		*nullable = *nullable || branch;
	}
	return total;
}

static bool cost_ok(const char *p, char *err, size_t errlen)
{
	struct re_est e = { .p = p };
	bool nullable;
	uint64_t total = est_alt(&e, &nullable);
	if (e.err) {
		snprintf(err, errlen, "%s", e.err);
		return false;
	}
	if (total > RE_PROG_MAX) {
		snprintf(err, errlen, "regular expression too costly (repetitions expand it beyond %u nodes)",
			 RE_PROG_MAX);
		return false;
	}
	return true;
}

/* ---- parse tree ---- */

enum node_type { N_EMPTY, N_CHAR, N_ANY, N_SET, N_BOL, N_EOL, N_CAT, N_ALT, N_REP };

struct node {
	enum node_type type;
	uint8_t ch;            /* N_CHAR */
	int set;               /* N_SET: index into the program's sets */
	int min, max;          /* N_REP: max -1 = unbounded */
	struct node **kids;    /* N_CAT, N_ALT: n kids; N_REP: one */
	size_t n;
};

struct byteset {
	uint64_t bits[4];
};

struct parser {
	const char *p;
	const char *err;
	struct byteset *sets;
	size_t nsets;
	int depth;
};

static struct node *node_new(enum node_type t)
{
	struct node *n = xcalloc(1, sizeof *n);
	n->type = t;
	return n;
}

static void node_add(struct node *parent, struct node *kid)
{
	parent->kids = xrealloc(parent->kids, (parent->n + 1) * sizeof *parent->kids);
	parent->kids[parent->n++] = kid;
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	for (size_t i = 0; i < n->n; i++)
		node_free(n->kids[i]);
	free(n->kids);
	free(n);
}

static void set_add(struct byteset *s, unsigned c)
{
	s->bits[c >> 6] |= 1ull << (c & 63);
}

static bool set_has(const struct byteset *s, unsigned c)
{
	return (s->bits[c >> 6] >> (c & 63)) & 1;
}

static bool add_class(struct byteset *s, const char *name, size_t len)
{
	static const struct {
		const char *name;
		int (*fn)(int);
	} classes[] = {
		{ "alpha", isalpha }, { "digit", isdigit }, { "alnum", isalnum }, { "upper", isupper },
		{ "lower", islower }, { "space", isspace }, { "blank", isblank }, { "punct", ispunct },
		{ "print", isprint }, { "graph", isgraph }, { "cntrl", iscntrl }, { "xdigit", isxdigit },
	};
	for (size_t i = 0; i < sizeof classes / sizeof classes[0]; i++) {
		if (strlen(classes[i].name) == len && memcmp(classes[i].name, name, len) == 0) {
			for (unsigned c = 0; c < 256; c++)
				if (classes[i].fn((int)c))
					set_add(s, c);
			return true;
		}
	}
	return false;
}

/* A bracket expression at ps->p ('['). */
static struct node *parse_bracket(struct parser *ps)
{
	const char *q = ps->p + 1;
	struct byteset s = { { 0 } };
	bool neg = false;
	if (*q == '^') {
		neg = true;
		q++;
	}
	bool first = true;
	while (*q && (*q != ']' || first)) {
		first = false;
		if (*q == '[' && q[1] == ':') {
			const char *name = q + 2, *end = strstr(name, ":]");
			if (!end || !add_class(&s, name, (size_t)(end - name))) {
				ps->err = "unknown character class";
				return NULL;
			}
			q = end + 2;
			if (*q == '-' && q[1] != ']') {
				ps->err = "a character class cannot start a range";
				return NULL;
			}
			continue;
		}
		if (*q == '[' && (q[1] == '.' || q[1] == '=')) {
			ps->err = "[. .] and [= =] are not supported in ban patterns";
			return NULL;
		}
		unsigned lo = (unsigned char)*q++, hi = lo;
		if (*q == '-' && q[1] && q[1] != ']') {
			if (q[1] == '[') {
				ps->err = "a range ending in [. .], [= =] or a class is not supported in ban patterns";
				return NULL;
			}
			hi = (unsigned char)q[1];
			q += 2;
			if (hi < lo) {
				ps->err = "invalid range end";
				return NULL;
			}
		}
		for (unsigned c = lo; c <= hi; c++)
			set_add(&s, c);
	}
	if (*q != ']') {
		ps->err = "unmatched [";
		return NULL;
	}
	ps->p = q + 1;
	if (neg)
		for (int i = 0; i < 4; i++)
			s.bits[i] = ~s.bits[i];
	ps->sets = xrealloc(ps->sets, (ps->nsets + 1) * sizeof *ps->sets);
	ps->sets[ps->nsets] = s;
	struct node *n = node_new(N_SET);
	n->set = (int)ps->nsets++;
	return n;
}

static struct node *parse_alt(struct parser *ps);

static struct node *parse_atom(struct parser *ps)
{
	char ch = *ps->p;
	switch (ch) {
	case '(': {
		if (++ps->depth > 200) {
			ps->err = "groups nested too deeply";
			return NULL;
		}
		ps->p++;
		struct node *n = parse_alt(ps);
		ps->depth--;
		if (!n)
			return NULL;
		if (*ps->p != ')') {
			node_free(n);
			ps->err = "unmatched (";
			return NULL;
		}
		ps->p++;
		return n;
	}
	case '[':
		return parse_bracket(ps);
	case '.':
		ps->p++;
		return node_new(N_ANY);
	case '^':
		ps->p++;
		return node_new(N_BOL);
	case '$':
		ps->p++;
		return node_new(N_EOL);
	case '*':
	case '+':
	case '?':
	case '{':
		ps->err = "a repetition operator with nothing to repeat";
		return NULL;
	case '\\': {
		char next = ps->p[1]; /* one of re_quotable: cost_ok refused the other escapes */
		ps->p += 2;
		struct node *n = node_new(N_CHAR);
		n->ch = (uint8_t)next;
		return n;
	}
	default: {
		ps->p++;
		struct node *n = node_new(N_CHAR);
		n->ch = (uint8_t)ch;
		return n;
	}
	}
}

static struct node *parse_seq(struct parser *ps)
{
	struct node *cat = node_new(N_CAT);
	/* a ")" without a "(" is an ordinary character in glibc's ERE (RE_UNMATCHED_RIGHT_PAREN_ORD) */
	while (*ps->p && *ps->p != '|' && !(*ps->p == ')' && ps->depth > 0)) {
		struct node *a = parse_atom(ps);
		if (!a) {
			node_free(cat);
			return NULL;
		}
		for (;;) {
			char ch = *ps->p;
			int mn, mx;
			size_t used = 1;
			if (ch == '*') {
				mn = 0, mx = -1;
			} else if (ch == '+') {
				mn = 1, mx = -1;
			} else if (ch == '?') {
				mn = 0, mx = 1;
			} else if (ch == '{') {
				bool valid = parse_interval(ps->p, &mn, &mx, &used);
				if (!valid || mn > RE_DUP_LIMIT || mx > RE_DUP_LIMIT || (mx >= 0 && mx < mn)) {
					ps->err = "invalid interval";
					node_free(a);
					node_free(cat);
					return NULL;
				}
			} else {
				break;
			}
			ps->p += used;
			struct node *r = node_new(N_REP);
			r->min = mn;
			r->max = mx;
			node_add(r, a);
			a = r;
		}
		node_add(cat, a);
	}
	return cat;
}

static struct node *parse_alt(struct parser *ps)
{
	struct node *first = parse_seq(ps);
	if (!first || *ps->p != '|')
		return first;
	struct node *alt = node_new(N_ALT);
	node_add(alt, first);
	while (*ps->p == '|') {
		ps->p++;
		struct node *s = parse_seq(ps);
		if (!s) {
			node_free(alt);
			return NULL;
		}
		node_add(alt, s);
	}
	return alt;
}

/* ---- program ---- */

enum op { OP_CHAR, OP_ANY, OP_SET, OP_BOL, OP_EOL, OP_JMP, OP_SPLIT, OP_MATCH };

struct inst {
	uint8_t op;
	uint8_t ch;
	uint32_t x, y; /* OP_JMP: x; OP_SPLIT: x, y; OP_SET: x = set index */
};

struct relin {
	struct inst *prog;
	uint32_t n;
	struct byteset *sets;
};

struct emitter {
	struct inst *prog;
	uint32_t n, cap;
	bool over;
};

static uint32_t emit(struct emitter *em, uint8_t op)
{
	if (em->n >= RE_PROG_MAX) {
		em->over = true;
		return em->n > 0 ? em->n - 1 : 0;
	}
	if (em->n == em->cap) {
		em->cap = em->cap ? em->cap * 2 : 32;
		em->prog = xrealloc(em->prog, em->cap * sizeof *em->prog);
	}
	em->prog[em->n] = (struct inst){ .op = op };
	return em->n++;
}

static void gen(struct emitter *em, const struct node *n)
{
	if (em->over)
		return;
	switch (n->type) {
	case N_EMPTY:
		break;
	case N_CHAR: {
		uint32_t i = emit(em, OP_CHAR); /* emit may move em->prog */
		em->prog[i].ch = n->ch;
		break;
	}
	case N_ANY:
		emit(em, OP_ANY);
		break;
	case N_SET: {
		uint32_t i = emit(em, OP_SET);
		em->prog[i].x = (uint32_t)n->set;
		break;
	}
	case N_BOL:
		emit(em, OP_BOL);
		break;
	case N_EOL:
		emit(em, OP_EOL);
		break;
	case N_CAT:
		for (size_t i = 0; i < n->n && !em->over; i++)
			gen(em, n->kids[i]);
		break;
	case N_ALT: {
		/* split L1, next; L1: kid0; jmp end; next: split L2, next2; ... last kid; end: */
		uint32_t *jumps = xmalloc(n->n * sizeof *jumps);
		size_t nj = 0;
		for (size_t i = 0; i < n->n && !em->over; i++) {
			if (i + 1 < n->n) {
				uint32_t sp = emit(em, OP_SPLIT);
				em->prog[sp].x = em->n;
				gen(em, n->kids[i]);
				jumps[nj++] = emit(em, OP_JMP);
				em->prog[sp].y = em->n;
			} else {
				gen(em, n->kids[i]);
			}
		}
		for (size_t i = 0; i < nj && !em->over; i++)
			em->prog[jumps[i]].x = em->n;
		free(jumps);
		break;
	}
	case N_REP: {
		const struct node *k = n->kids[0];
		for (int i = 0; i < n->min && !em->over; i++)
			gen(em, k);
		if (n->max < 0) {
			/* L: split body, end; body; jmp L; end: */
			uint32_t sp = emit(em, OP_SPLIT);
			em->prog[sp].x = em->n;
			gen(em, k);
			uint32_t j = emit(em, OP_JMP);
			em->prog[j].x = sp;
			em->prog[sp].y = em->n;
		} else {
			/* (max - min) optional copies: split body, end; body; ... (each skips to the end) */
			int opt = n->max - n->min;
			uint32_t *splits = xmalloc((size_t)(opt > 0 ? opt : 1) * sizeof *splits);
			for (int i = 0; i < opt && !em->over; i++) {
				splits[i] = emit(em, OP_SPLIT);
				em->prog[splits[i]].x = em->n;
				gen(em, k);
			}
			for (int i = 0; i < opt && !em->over; i++)
				em->prog[splits[i]].y = em->n;
			free(splits);
		}
		break;
	}
	}
}

void relin_free(struct relin *re)
{
	if (!re)
		return;
	free(re->prog);
	free(re->sets);
	free(re);
}

/* pattern with every anchor outside a bracket expression made a literal "a", for glibc to check
 * the syntax: an anchor is an atom like any other there, and cost_ok has refused the places where
 * it is not ("^*"). glibc then never copies closures for a constraint: "^(a|b?)?" 146 times over
 * takes it 1.7 s to compile, without the "^" 0.03 s. */
static void neutralize_anchors(const char *p, char *out)
{
	const char *start = p;
	strcpy(out, p);
	while (*p) {
		if (*p == '[') {
			p = skip_bracket(p);
		} else if (*p == '\\') {
			p += p[1] ? 2 : 1;
		} else {
			if (*p == '^' || *p == '$')
				out[p - start] = 'a';
			p++;
		}
	}
}

bool relin_compile(const char *pattern, struct relin **out, char *err, size_t errlen)
{
	*out = NULL;
	if (strlen(pattern) > RELIN_PATTERN_MAX) {
		snprintf(err, errlen, "regular expression longer than %d bytes", RELIN_PATTERN_MAX);
		return false;
	}
	if (!cost_ok(pattern, err, errlen))
		return false;
	/* POSIX ERE syntax, as glibc defines it */
	char syntax[RELIN_PATTERN_MAX + 1];
	neutralize_anchors(pattern, syntax);
	regex_t check;
	int rc = regcomp(&check, syntax, REG_EXTENDED | REG_NOSUB);
	if (rc != 0) {
		char msg[200];
		regerror(rc, &check, msg, sizeof msg);
		snprintf(err, errlen, "invalid regular expression: %s", msg);
		return false;
	}
	regfree(&check);
	struct parser ps = { .p = pattern };
	struct node *root = parse_alt(&ps);
	if (!root) {
		snprintf(err, errlen, "invalid regular expression: %s", ps.err ? ps.err : "syntax error");
		free(ps.sets);
		return false;
	}
	struct emitter em = { 0 };
	gen(&em, root);
	emit(&em, OP_MATCH);
	node_free(root);
	if (em.over) {
		snprintf(err, errlen, "regular expression too costly (repetitions expand it beyond %u nodes)",
			 RE_PROG_MAX);
		free(em.prog);
		free(ps.sets);
		return false;
	}
	struct relin *re = xcalloc(1, sizeof *re);
	re->prog = em.prog;
	re->n = em.n;
	re->sets = ps.sets;
	*out = re;
	return true;
}

/* ---- matching: Thompson NFA simulation ---- */

struct vm {
	const struct relin *re;
	uint32_t *mark;  /* generation in which a pc was added */
	uint32_t *stack;
	uint32_t gen;
	size_t len;
	bool matched;
};

/* Add pc and everything reachable from it without consuming input (at position pos) to list. */
static void add_thread(struct vm *vm, uint32_t *list, uint32_t *nlist, uint32_t pc, size_t pos)
{
	const struct inst *prog = vm->re->prog;
	size_t sp = 0;
	vm->stack[sp++] = pc;
	while (sp) {
		pc = vm->stack[--sp];
		if (vm->mark[pc] == vm->gen)
			continue;
		vm->mark[pc] = vm->gen;
		const struct inst *in = &prog[pc];
		switch (in->op) {
		case OP_JMP:
			vm->stack[sp++] = in->x;
			break;
		case OP_SPLIT:
			vm->stack[sp++] = in->y;
			vm->stack[sp++] = in->x;
			break;
		case OP_BOL:
			if (pos == 0)
				vm->stack[sp++] = pc + 1;
			break;
		case OP_EOL:
			if (pos == vm->len)
				vm->stack[sp++] = pc + 1;
			break;
		case OP_MATCH:
			vm->matched = true;
			break;
		default:
			list[(*nlist)++] = pc;
			break;
		}
	}
}

bool relin_match(const struct relin *re, const void *str, size_t len)
{
	const uint8_t *s = str;
	uint32_t n = re->n;
	uint32_t local[5 * 64];
	uint32_t *mem = n <= 64 ? local : xmalloc(5 * (size_t)n * sizeof *mem);
	/* each pc is pushed at most once per predecessor edge: at most 2n pushes per closure */
	struct vm vm = { .re = re, .mark = mem, .stack = mem + n, .gen = 1, .len = len };
	uint32_t *clist = mem + 3 * n, *nlist = mem + 4 * n;
	uint32_t nc = 0, nn = 0;
	memset(vm.mark, 0, n * sizeof *vm.mark);
	for (size_t i = 0;; i++) {
		add_thread(&vm, clist, &nc, 0, i); /* a match may start anywhere */
		if (vm.matched || i == len)
			break;
		if (!nc) {
			/* Nothing consumes here, and a start in the middle reaches no more than one at
			 * position 0 or here did: only "$" at the very end can still match. */
			vm.gen++;
			add_thread(&vm, clist, &nc, 0, len);
			break;
		}
		vm.gen++;
		nn = 0;
		for (uint32_t k = 0; k < nc; k++) {
			const struct inst *in = &re->prog[clist[k]];
			bool ok = in->op == OP_CHAR ? s[i] == in->ch
				: in->op == OP_ANY ? s[i] != '\0'
				: set_has(&re->sets[in->x], s[i]);
			if (ok)
				add_thread(&vm, nlist, &nn, clist[k] + 1, i + 1);
		}
		if (vm.matched)
			break;
		uint32_t *t = clist;
		clist = nlist;
		nlist = t;
		nc = nn;
		if (!nc && re->prog[0].op == OP_BOL)
			break; /* anchored at the start and nothing left alive */
	}
	if (mem != local)
		free(mem);
	return vm.matched;
}
