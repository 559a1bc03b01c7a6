/* ACL rule lists: the rule form, the matcher, acl.conf (Erlang terms) and the JSON ACL of
 * authentication results. See acl.h.
 *
 * Differences from EMQX, on purpose:
 *   - regular expressions are POSIX extended (core/relin.h: validated by regcomp, matched in
 *     linear time so a long client-chosen username cannot stall a worker), not PCRE: no
 *     \d, \w, lazy quantifiers or look-around; use [0-9], [[:alnum:]_] and so on. Like
 *     re:run they search (unanchored): use ^...$ to match a whole value. Back-references and
 *     very large bounded repetitions are refused (they make matching or compiling costly);
 *   - a value put into a topic by a placeholder must not contain '/', '+', '#' or NUL, else
 *     that topic matches nothing (EMQX 6's topic_template_allow defaults): a user called "#"
 *     or a client ID "a/b" cannot widen a rule like "users/${username}/#";
 *   - an invalid topic filter in a rule ("a/#/b", "a+") is a parse error instead of a rule
 *     that never matches.
 */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "auth/client_attrs.h"
#include "authz/acl.h"
#include "broker/topic.h"
#include "config/values.h"
#include "core/alloc.h"
#include "core/relin.h"

#define ACL_MAX_WHO_DEPTH 16     /* nesting of 'and' / 'or' */
#define ACL_MAX_TERM_DEPTH 40    /* nesting of Erlang terms */
#define ACL_MAX_REGEX_DEPTH 32   /* nesting of groups in a regular expression */
#define ACL_MAX_STR 65535        /* bytes of one string (a topic's maximum length) */
#define ACL_MAX_ATOM 255
#define ACL_MAX_REGEX 1024       /* bytes of one regular expression */
#define ACL_MAX_REGEX_COST 20000 /* rough size of the expanded expression, see regex_cost */
#define ACL_MAX_PLACEHOLDERS 32  /* per topic */
#define ACL_MAX_RULES 1000000
#define ACL_MAX_NODES 4000000    /* Erlang terms in one file */
#define RENDER_STACK 512         /* rendered topics up to this size stay on the stack */

/* ---- rules ---------------------------------------------------------------------------- */

enum who_kind {
	WHO_ALL,
	WHO_USERNAME,
	WHO_CLIENTID,
	WHO_IPADDRS,
	WHO_CLIENT_ATTR,
	WHO_ZONE,
	WHO_LISTENER,
	WHO_AND,
	WHO_OR,
};

/* Equality with s[0..len) or, when re is set, a regular expression search. */
struct strmatch {
	char *s;
	size_t len;
	struct relin *re;
};

struct who {
	enum who_kind kind;
	struct strmatch m;       /* USERNAME, CLIENTID, CLIENT_ATTR, ZONE, LISTENER */
	char *attr;              /* CLIENT_ATTR: the attribute name */
	size_t attr_len;
	struct cfg_cidr *cidrs;  /* IPADDRS */
	size_t ncidrs;
	struct who *kids;        /* AND, OR */
	size_t nkids;
};

enum seg_kind { SEG_LIT, SEG_USERNAME, SEG_CLIENTID, SEG_CN, SEG_DN, SEG_ZONE, SEG_ATTR };

/* One piece of a topic template: literal bytes or a placeholder (for SEG_ATTR, the
 * attribute name), both as text[off..off+len). */
struct seg {
	enum seg_kind kind;
	size_t off, len;
};

enum topic_kind { TOPIC_ALL, TOPIC_FILTER, TOPIC_EQ };

struct atopic {
	enum topic_kind kind;
	char *text;       /* the template as written (without "eq ") */
	size_t len;
	struct seg *segs; /* NULL when the topic has no placeholder: text is used as is */
	size_t nsegs;
};

struct rule {
	bool allow;
	struct who who;
	unsigned actions;  /* AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE */
	uint8_t qos_mask;  /* bit q: QoS q allowed */
	int retain;        /* -1 all, 0 false, 1 true */
	struct atopic *topics;
	size_t ntopics;
};

struct acl {
	struct rule *v;
	size_t n, cap;
};

static void strmatch_free(struct strmatch *m)
{
	free(m->s);
	relin_free(m->re);
	memset(m, 0, sizeof *m);
}

static void who_free(struct who *w)
{
	strmatch_free(&w->m);
	free(w->attr);
	free(w->cidrs);
	for (size_t i = 0; i < w->nkids; i++)
		who_free(&w->kids[i]);
	free(w->kids);
	memset(w, 0, sizeof *w);
}

static void topic_free(struct atopic *t)
{
	free(t->text);
	free(t->segs);
}

static void rule_free(struct rule *r)
{
	who_free(&r->who);
	for (size_t i = 0; i < r->ntopics; i++)
		topic_free(&r->topics[i]);
	free(r->topics);
	memset(r, 0, sizeof *r);
}

struct acl *acl_new(void)
{
	return xcalloc(1, sizeof(struct acl));
}

void acl_free(struct acl *a)
{
	if (!a)
		return;
	for (size_t i = 0; i < a->n; i++)
		rule_free(&a->v[i]);
	free(a->v);
	free(a);
}

size_t acl_count(const struct acl *a)
{
	return a ? a->n : 0;
}

/* Takes ownership of *r (moved into the list). */
static void acl_push(struct acl *a, struct rule *r)
{
	if (a->n == a->cap) {
		a->cap = a->cap ? a->cap * 2 : 8;
		a->v = xrealloc(a->v, a->cap * sizeof *a->v);
	}
	a->v[a->n++] = *r;
	memset(r, 0, sizeof *r);
}

unsigned acl_action_of(const char *s, size_t len)
{
	static const struct {
		const char *name;
		unsigned v;
	} words[] = {
		{ "publish", AUTHZ_PUBLISH },
		{ "subscribe", AUTHZ_SUBSCRIBE },
		{ "all", AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE },
		{ "pubsub", AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE },
		{ "pub", AUTHZ_PUBLISH },
		{ "sub", AUTHZ_SUBSCRIBE },
	};
	if (!s)
		return 0;
	for (size_t i = 0; i < sizeof words / sizeof words[0]; i++)
		if (strlen(words[i].name) == len && memcmp(words[i].name, s, len) == 0)
			return words[i].v;
	return 0;
}

/* ---- matching ------------------------------------------------------------------------- */

static bool str_match(const struct strmatch *m, const char *v, size_t vl)
{
	if (!v)
		return false;
	if (m->re) {
		if (memchr(v, '\0', vl))
			return false;
		return relin_match(m->re, v, vl);
	}
	return vl == m->len && memcmp(v, m->s, vl) == 0;
}

static bool cstr_match(const struct strmatch *m, const char *v)
{
	return v && str_match(m, v, strlen(v));
}

static bool who_match(const struct who *w, const struct authz_client *cl)
{
	switch (w->kind) {
	case WHO_ALL:
		return true;
	case WHO_USERNAME:
		return cl->username && str_match(&w->m, cl->username, cl->username_len);
	case WHO_CLIENTID:
		return cstr_match(&w->m, cl->clientid);
	case WHO_IPADDRS:
		for (size_t i = 0; i < w->ncidrs; i++)
			if (cfg_cidr_match(&w->cidrs[i], (const struct sockaddr *)&cl->peer))
				return true;
		return false;
	case WHO_CLIENT_ATTR:
		return cstr_match(&w->m, client_attrs_get(cl->attrs, w->attr, w->attr_len));
	case WHO_ZONE:
		return cstr_match(&w->m, cl->zone);
	case WHO_LISTENER:
		return cstr_match(&w->m, cl->listener);
	case WHO_AND:
		for (size_t i = 0; i < w->nkids; i++)
			if (!who_match(&w->kids[i], cl))
				return false;
		return true;
	case WHO_OR:
		for (size_t i = 0; i < w->nkids; i++)
			if (who_match(&w->kids[i], cl))
				return true;
		return false;
	}
	return false;
}

/* The value of a placeholder, or false when undefined or not usable in a topic. */
static bool seg_value(const struct atopic *t, const struct seg *s, const struct authz_client *cl, const char **v,
		      size_t *vl)
{
	const char *p = NULL;
	size_t n = 0;
	switch (s->kind) {
	case SEG_LIT:
		p = t->text + s->off;
		*v = p;
		*vl = s->len;
		return true;
	case SEG_USERNAME:
		p = cl->username;
		n = p ? cl->username_len : 0;
		break;
	case SEG_CLIENTID:
		p = cl->clientid;
		break;
	case SEG_CN:
		p = cl->cert_common_name;
		break;
	case SEG_DN:
		p = cl->cert_subject;
		break;
	case SEG_ZONE:
		p = cl->zone;
		break;
	case SEG_ATTR:
		p = client_attrs_get(cl->attrs, t->text + s->off, s->len);
		break;
	}
	if (!p)
		return false;
	if (s->kind != SEG_USERNAME)
		n = strlen(p);
	for (size_t i = 0; i < n; i++)
		if (p[i] == '/' || p[i] == '+' || p[i] == '#' || p[i] == '\0')
			return false;
	*v = p;
	*vl = n;
	return true;
}

/* Render a template into stack (cap bytes) or, when longer, into *heap (caller frees).
 * False when a placeholder is undefined or unusable. */
static bool render(const struct atopic *t, const struct authz_client *cl, char *stack, size_t cap, const char **out,
		   size_t *outlen, char **heap)
{
	const char *vals[ACL_MAX_PLACEHOLDERS * 2 + 1];
	size_t lens[ACL_MAX_PLACEHOLDERS * 2 + 1];
	size_t total = 0;
	for (size_t i = 0; i < t->nsegs; i++) {
		if (!seg_value(t, &t->segs[i], cl, &vals[i], &lens[i]))
			return false;
		total += lens[i];
	}
	if (total == 0 || total > ACL_MAX_STR)
		return false;
	char *dst = stack;
	if (total > cap)
		dst = *heap = xmalloc(total);
	size_t o = 0;
	for (size_t i = 0; i < t->nsegs; i++) {
		memcpy(dst + o, vals[i], lens[i]);
		o += lens[i];
	}
	*out = dst;
	*outlen = total;
	return true;
}

static bool topic_hit(const struct atopic *t, const struct authz_client *cl, const char *req, size_t reqlen)
{
	if (t->kind == TOPIC_ALL)
		return true;
	const char *f = t->text;
	size_t flen = t->len;
	char stack[RENDER_STACK];
	char *heap = NULL;
	if (t->segs && !render(t, cl, stack, sizeof stack, &f, &flen, &heap))
		return false;
	bool hit;
	if (t->kind == TOPIC_EQ)
		hit = flen == reqlen && memcmp(f, req, flen) == 0;
	else
		hit = reqlen > 0 && topic_match(f, flen, req, reqlen);
	free(heap);
	return hit;
}

enum authz_verdict acl_check(const struct acl *a, const struct authz_client *cl, const struct authz_action *act)
{
	if (!a || !cl || !act)
		return AUTHZ_NOMATCH;
	unsigned type = (unsigned)act->type;
	unsigned qbit = act->qos <= 2 ? 1u << act->qos : 0;
	const char *topic = act->topic ? act->topic : "";
	size_t tlen = act->topic ? act->topic_len : 0;
	for (size_t i = 0; i < a->n; i++) {
		const struct rule *r = &a->v[i];
		if (!(r->actions & type) || !(r->qos_mask & qbit))
			continue;
		if (type == AUTHZ_PUBLISH && r->retain >= 0 && (r->retain == 1) != act->retain)
			continue;
		if (!who_match(&r->who, cl))
			continue;
		bool hit = false;
		for (size_t k = 0; k < r->ntopics && !hit; k++)
			hit = topic_hit(&r->topics[k], cl, topic, tlen);
		if (hit)
			return r->allow ? AUTHZ_ALLOW : AUTHZ_DENY;
	}
	return AUTHZ_NOMATCH;
}

/* ---- compiling pieces shared by every form ------------------------------------------------ */

static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...)
{
	if (!err || !errlen)
		return;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err, errlen, fmt, ap);
	va_end(ap);
}

/* Printable excerpt of untrusted text for messages: at most 40 bytes, control bytes and
 * non-ASCII as \xNN. */
static const char *show(const char *s, size_t len, char *out, size_t outlen)
{
	size_t o = 0;
	for (size_t i = 0; i < len && o + 8 < outlen; i++) {
		unsigned char c = (unsigned char)s[i];
		if (i == 40) {
			o += (size_t)snprintf(out + o, outlen - o, "...");
			break;
		}
		if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\')
			o += (size_t)snprintf(out + o, outlen - o, "\\x%02x", c);
		else
			out[o++] = (char)c;
	}
	out[o] = '\0';
	return out;
}

static const struct {
	const char *name;
	enum seg_kind kind;
} placeholders[] = {
	{ "username", SEG_USERNAME },
	{ "clientid", SEG_CLIENTID },
	{ "cert_common_name", SEG_CN },
	{ "cert_subject", SEG_DN },
	{ "zone", SEG_ZONE },
};

static void seg_add(struct atopic *t, enum seg_kind kind, size_t off, size_t len)
{
	if (kind == SEG_LIT && len == 0)
		return;
	t->segs = xrealloc(t->segs, (t->nsegs + 1) * sizeof *t->segs);
	t->segs[t->nsegs++] = (struct seg){ kind, off, len };
}

/* Compile a topic template: "eq T" (when eq_prefix) or T, with placeholders. kind is
 * TOPIC_FILTER or TOPIC_EQ (for {eq, T}). False with err (no position). */
static bool topic_compile(const char *s, size_t len, enum topic_kind kind, bool eq_prefix, struct atopic *t,
			  char *err, size_t errlen)
{
	char ex[200];
	memset(t, 0, sizeof *t);
	if (eq_prefix && kind == TOPIC_FILTER && len >= 3 && memcmp(s, "eq ", 3) == 0) {
		kind = TOPIC_EQ;
		s += 3;
		len -= 3;
	}
	if (len == 0) {
		errf(err, errlen, "empty topic");
		return false;
	}
	if (len > ACL_MAX_STR) {
		errf(err, errlen, "topic longer than %d bytes", ACL_MAX_STR);
		return false;
	}
	if (memchr(s, '\0', len)) {
		errf(err, errlen, "topic \"%s\" contains a NUL byte", show(s, len, ex, sizeof ex));
		return false;
	}
	t->kind = kind;
	t->text = xmemdup(s, len + 1);
	t->text[len] = '\0';
	t->len = len;
	/* The skeleton: the template with each placeholder as one plain character, which must
	 * be a valid filter (the values themselves never hold '/', '+' or '#'). */
	char *skel = xmalloc(len + 1);
	size_t sk = 0, lit = 0, nph = 0;
	bool ok = false;
	for (size_t i = 0; i < len;) {
		size_t nlen = 0, start = i, adv = 0;
		enum seg_kind k = SEG_LIT;
		const char *name = NULL;
		if (s[i] == '$' && i + 1 < len && s[i + 1] == '{') {
			const char *close = memchr(s + i + 2, '}', len - i - 2);
			if (!close) {
				errf(err, errlen, "topic \"%s\": unterminated placeholder ${", show(s, len, ex, sizeof ex));
				goto out;
			}
			name = s + i + 2;
			nlen = (size_t)(close - name);
			adv = nlen + 3;
			size_t p;
			for (p = 0; p < sizeof placeholders / sizeof placeholders[0]; p++) {
				if (strlen(placeholders[p].name) == nlen && memcmp(placeholders[p].name, name, nlen) == 0) {
					k = placeholders[p].kind;
					break;
				}
			}
			if (p == sizeof placeholders / sizeof placeholders[0]) {
				static const char attrs[] = "client_attrs.";
				size_t al = sizeof attrs - 1;
				if (nlen > al && memcmp(name, attrs, al) == 0) {
					k = SEG_ATTR;
					name += al;
					nlen -= al;
				} else {
					char ph[80];
					errf(err, errlen,
					     "topic \"%s\": unknown placeholder ${%s} (known: ${username}, ${clientid}, "
					     "${cert_common_name}, ${cert_subject}, ${zone}, ${client_attrs.NAME})",
					     show(s, len, ex, sizeof ex), show(name, nlen, ph, sizeof ph));
					goto out;
				}
			}
		} else if (s[i] == '%' && i + 1 < len && (s[i + 1] == 'u' || s[i + 1] == 'c')) {
			k = s[i + 1] == 'u' ? SEG_USERNAME : SEG_CLIENTID; /* EMQX 4 compatible */
			adv = 2;
		}
		if (k == SEG_LIT) {
			skel[sk++] = s[i++];
			continue;
		}
		if (++nph > ACL_MAX_PLACEHOLDERS) {
			errf(err, errlen, "topic \"%s\": more than %d placeholders", show(s, len, ex, sizeof ex),
			     ACL_MAX_PLACEHOLDERS);
			goto out;
		}
		seg_add(t, SEG_LIT, lit, start - lit);
		seg_add(t, k, k == SEG_ATTR ? (size_t)(name - s) : 0, k == SEG_ATTR ? nlen : 0);
		skel[sk++] = 'x';
		i += adv;
		lit = i;
	}
	if (t->segs)
		seg_add(t, SEG_LIT, lit, len - lit);
	if (kind == TOPIC_FILTER && !topic_filter_valid(skel, sk)) {
		errf(err, errlen, "invalid topic filter \"%s\"", show(s, len, ex, sizeof ex));
		goto out;
	}
	ok = true;
out:
	free(skel);
	if (!ok) {
		topic_free(t);
		memset(t, 0, sizeof *t);
	}
	return ok;
}

/* Rough size of the automaton glibc builds for an ERE: a bounded repetition {m,n}
 * copies what it repeats n times, nested ones multiply. Large values make regcomp slow
 * and hungry ("(a{255}){255}"), so they are refused. Returns false with err. */
static bool regex_cost_ok(const char *re, size_t len, char *err, size_t errlen)
{
	uint64_t sum[ACL_MAX_REGEX_DEPTH + 1], last[ACL_MAX_REGEX_DEPTH + 1];
	int d = 0;
	sum[0] = last[0] = 0;
	for (size_t i = 0; i < len;) {
		char c = re[i];
		uint64_t atom = 1;
		if (c == '\\') {
			if (i + 1 < len && re[i + 1] >= '1' && re[i + 1] <= '9') {
				errf(err, errlen, "back-references are not supported");
				return false;
			}
			i += 2;
		} else if (c == '[') {
			size_t j = i + 1;
			if (j < len && re[j] == '^')
				j++;
			if (j < len && re[j] == ']')
				j++;
			while (j < len && re[j] != ']') {
				if (re[j] == '[' && j + 1 < len && (re[j + 1] == ':' || re[j + 1] == '.' || re[j + 1] == '=')) {
					char kind = re[j + 1];
					j += 2;
					while (j + 1 < len && !(re[j] == kind && re[j + 1] == ']'))
						j++;
					j += 2;
				} else {
					j++;
				}
			}
			i = j + 1;
		} else if (c == '(') {
			if (d == ACL_MAX_REGEX_DEPTH) {
				errf(err, errlen, "groups nested too deeply");
				return false;
			}
			d++;
			sum[d] = last[d] = 0;
			i++;
			continue;
		} else if (c == ')' && d > 0) {
			atom = sum[d] ? sum[d] : 1;
			d--;
			i++;
		} else if (c == '*' || c == '+' || c == '?' || c == '{') {
			uint64_t times = 2;
			size_t j = i + 1;
			if (c == '{') {
				uint64_t m = 0, n = 0;
				bool comma = false, digits = false;
				while (j < len && ((re[j] >= '0' && re[j] <= '9') || re[j] == ',')) {
					if (re[j] == ',') {
						comma = true;
					} else {
						uint64_t *p = comma ? &n : &m;
						*p = *p * 10 + (uint64_t)(re[j] - '0');
						if (*p > 100000)
							*p = 100000;
						digits = true;
					}
					j++;
				}
				if (j < len && re[j] == '}' && digits) {
					times = comma ? (n ? n : m + 1) : m;
					if (times > 255) {
						errf(err, errlen, "repetition count above 255");
						return false;
					}
					if (times == 0)
						times = 1;
					j++;
				} else {
					j = i + 1; /* a literal '{' */
					sum[d] += 1;
					last[d] = 1;
					i = j;
					goto check;
				}
			}
			sum[d] += last[d] * (times - 1);
			last[d] *= times;
			i = j;
			goto check;
		} else {
			i++;
		}
		sum[d] += atom;
		last[d] = atom;
check:
		if (sum[d] > ACL_MAX_REGEX_COST || last[d] > ACL_MAX_REGEX_COST) {
			errf(err, errlen, "too complex (bounded repetitions expand too much)");
			return false;
		}
	}
	return true;
}

static bool regex_compile(const char *s, size_t len, struct relin **out, char *err, size_t errlen)
{
	char ex[200];
	if (len > ACL_MAX_REGEX) {
		errf(err, errlen, "regular expression longer than %d bytes", ACL_MAX_REGEX);
		return false;
	}
	if (memchr(s, '\0', len)) {
		errf(err, errlen, "regular expression \"%s\" contains a NUL byte", show(s, len, ex, sizeof ex));
		return false;
	}
	char why[160];
	if (!regex_cost_ok(s, len, why, sizeof why)) {
		errf(err, errlen, "regular expression \"%s\": %s", show(s, len, ex, sizeof ex), why);
		return false;
	}
	struct relin *re;
	if (!relin_compile(s, &re, why, sizeof why)) {
		errf(err, errlen, "regular expression \"%s\": %s", show(s, len, ex, sizeof ex), why);
		return false;
	}
	*out = re;
	return true;
}

static void strmatch_eq(struct strmatch *m, const char *s, size_t len)
{
	m->s = xmemdup(s, len + 1);
	m->s[len] = '\0';
	m->len = len;
}

static bool cidr_compile(const char *s, size_t len, struct cfg_cidr *c, char *err, size_t errlen)
{
	char ex[200];
	if (len > 64 || memchr(s, '\0', len)) {
		errf(err, errlen, "invalid address or CIDR \"%s\"", show(s, len, ex, sizeof ex));
		return false;
	}
	char tmp[72];
	memcpy(tmp, s, len);
	tmp[len] = '\0';
	if (!cfg_parse_cidr(tmp, c)) {
		errf(err, errlen, "invalid address or CIDR \"%s\"", show(s, len, ex, sizeof ex));
		return false;
	}
	return true;
}

/* ---- acl_add ---------------------------------------------------------------------------- */

bool acl_add(struct acl *a, const struct acl_rule_spec *spec, char *err, size_t errlen)
{
	if (a->n >= ACL_MAX_RULES) {
		errf(err, errlen, "too many rules");
		return false;
	}
	unsigned actions = spec->actions & (AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);
	if (!actions) {
		errf(err, errlen, "no action (publish, subscribe or all)");
		return false;
	}
	if (spec->retain < -1 || spec->retain > 1) {
		errf(err, errlen, "invalid retain condition");
		return false;
	}
	if (!spec->topic) {
		errf(err, errlen, "no topic");
		return false;
	}
	struct rule r = { 0 };
	r.topics = xcalloc(1, sizeof *r.topics);
	if (!topic_compile(spec->topic, spec->topic_len, TOPIC_FILTER, true, &r.topics[0], err, errlen)) {
		rule_free(&r);
		return false;
	}
	r.ntopics = 1;
	r.allow = spec->allow;
	r.who.kind = WHO_ALL;
	r.actions = actions;
	r.qos_mask = spec->qos_mask & 7 ? spec->qos_mask & 7 : 7;
	r.retain = spec->retain;
	acl_push(a, &r);
	return true;
}

/* ---- acl.conf: Erlang terms ----------------------------------------------------------- */

enum term_type { TERM_ATOM, TERM_STR, TERM_INT, TERM_TUPLE, TERM_LIST };

struct term {
	enum term_type type;
	int line;
	char *s;       /* ATOM, STR: the bytes, NUL-terminated (a STR may hold NULs: len) */
	size_t len;
	long i;        /* INT */
	struct term **v; /* TUPLE, LIST */
	size_t n;
};

struct lex {
	const char *p, *end;
	int line;
	const char *fname;
	char *err;
	size_t errlen;
	size_t nodes;
};

static bool lfail(struct lex *lx, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool lfail(struct lex *lx, int line, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	errf(lx->err, lx->errlen, "%s:%d: %s", lx->fname, line, msg);
	return false;
}

static void term_free(struct term *t)
{
	if (!t)
		return;
	for (size_t i = 0; i < t->n; i++)
		term_free(t->v[i]);
	free(t->v);
	free(t->s);
	free(t);
}

static void skip_ws(struct lex *lx)
{
	while (lx->p < lx->end) {
		char c = *lx->p;
		if (c == '\n') {
			lx->line++;
			lx->p++;
		} else if (c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v') {
			lx->p++;
		} else if (c == '%') {
			while (lx->p < lx->end && *lx->p != '\n')
				lx->p++;
		} else {
			break;
		}
	}
}

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

struct sbuf {
	char *p;
	size_t n, cap;
};

static void sb_put(struct sbuf *b, char c)
{
	if (b->n + 2 > b->cap) {
		b->cap = b->cap ? b->cap * 2 : 32;
		b->p = xrealloc(b->p, b->cap);
	}
	b->p[b->n++] = c;
}

static void sb_put_utf8(struct sbuf *b, uint32_t cp)
{
	if (cp < 0x80) {
		sb_put(b, (char)cp);
	} else if (cp < 0x800) {
		sb_put(b, (char)(0xc0 | (cp >> 6)));
		sb_put(b, (char)(0x80 | (cp & 0x3f)));
	} else if (cp < 0x10000) {
		sb_put(b, (char)(0xe0 | (cp >> 12)));
		sb_put(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_put(b, (char)(0x80 | (cp & 0x3f)));
	} else {
		sb_put(b, (char)(0xf0 | (cp >> 18)));
		sb_put(b, (char)(0x80 | ((cp >> 12) & 0x3f)));
		sb_put(b, (char)(0x80 | ((cp >> 6) & 0x3f)));
		sb_put(b, (char)(0x80 | (cp & 0x3f)));
	}
}

/* One Erlang escape sequence after the backslash (lx->p at the character after '\'). */
static bool read_escape(struct lex *lx, struct sbuf *b)
{
	if (lx->p >= lx->end)
		return lfail(lx, lx->line, "unterminated escape sequence");
	char c = *lx->p++;
	switch (c) {
	case 'b': sb_put(b, '\b'); return true;
	case 'd': sb_put(b, 0x7f); return true;
	case 'e': sb_put(b, 0x1b); return true;
	case 'f': sb_put(b, '\f'); return true;
	case 'n': sb_put(b, '\n'); return true;
	case 'r': sb_put(b, '\r'); return true;
	case 's': sb_put(b, ' '); return true;
	case 't': sb_put(b, '\t'); return true;
	case 'v': sb_put(b, '\v'); return true;
	case '^':
		if (lx->p >= lx->end)
			return lfail(lx, lx->line, "unterminated escape sequence");
		sb_put(b, (char)(*lx->p++ & 0x1f));
		return true;
	case 'x': {
		uint32_t v = 0;
		if (lx->p < lx->end && *lx->p == '{') {
			lx->p++;
			int digits = 0;
			while (lx->p < lx->end && hexval(*lx->p) >= 0) {
				v = v * 16 + (uint32_t)hexval(*lx->p++);
				if (++digits > 6)
					return lfail(lx, lx->line, "invalid \\x{...} escape");
			}
			if (!digits || lx->p >= lx->end || *lx->p != '}' || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff))
				return lfail(lx, lx->line, "invalid \\x{...} escape");
			lx->p++;
			sb_put_utf8(b, v);
			return true;
		}
		for (int k = 0; k < 2; k++) {
			if (lx->p >= lx->end || hexval(*lx->p) < 0)
				return lfail(lx, lx->line, "invalid \\x escape (two hex digits or \\x{...})");
			v = v * 16 + (uint32_t)hexval(*lx->p++);
		}
		sb_put_utf8(b, v);
		return true;
	}
	default:
		if (c >= '0' && c <= '7') {
			unsigned v = (unsigned)(c - '0');
			for (int k = 0; k < 2 && lx->p < lx->end && *lx->p >= '0' && *lx->p <= '7'; k++)
				v = v * 8 + (unsigned)(*lx->p++ - '0');
			sb_put_utf8(b, v);
			return true;
		}
		if (c == '\n')
			lx->line++;
		sb_put(b, c); /* \\ \" \' and any other character stand for themselves */
		return true;
	}
}

/* A quoted string or atom body; lx->p just after the opening quote. */
static bool read_quoted(struct lex *lx, char quote, struct sbuf *b, size_t max)
{
	int start = lx->line;
	for (;;) {
		if (lx->p >= lx->end)
			return lfail(lx, start, "unterminated %s", quote == '"' ? "string" : "quoted atom");
		char c = *lx->p++;
		if (c == quote)
			return true;
		if (c == '\\') {
			if (!read_escape(lx, b))
				return false;
		} else {
			if (c == '\n')
				lx->line++;
			sb_put(b, c);
		}
		if (b->n > max)
			return lfail(lx, start, "%s longer than %zu bytes", quote == '"' ? "string" : "atom", max);
	}
}

static struct term *term_new(struct lex *lx, enum term_type type, int line)
{
	if (++lx->nodes > ACL_MAX_NODES) {
		lfail(lx, line, "too many terms");
		return NULL;
	}
	struct term *t = xcalloc(1, sizeof *t);
	t->type = type;
	t->line = line;
	return t;
}

static bool is_atom_start(char c)
{
	return c >= 'a' && c <= 'z';
}

static bool is_atom_char(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '@';
}

static struct term *parse_term(struct lex *lx, int depth);

/* Elements of a tuple or list up to the closing character. */
static struct term *parse_seq(struct lex *lx, int depth, enum term_type type, char close)
{
	struct term *t = term_new(lx, type, lx->line);
	if (!t)
		return NULL;
	lx->p++;
	skip_ws(lx);
	if (lx->p < lx->end && *lx->p == close) {
		lx->p++;
		return t;
	}
	size_t cap = 0;
	for (;;) {
		struct term *e = parse_term(lx, depth + 1);
		if (!e)
			goto fail;
		if (t->n == cap) {
			cap = cap ? cap * 2 : 4;
			t->v = xrealloc(t->v, cap * sizeof *t->v);
		}
		t->v[t->n++] = e;
		skip_ws(lx);
		if (lx->p >= lx->end) {
			lfail(lx, lx->line, "unexpected end of file: expected ',' or '%c'", close);
			goto fail;
		}
		if (*lx->p == ',') {
			lx->p++;
			continue;
		}
		if (*lx->p == close) {
			lx->p++;
			return t;
		}
		if (*lx->p == '|' && type == TERM_LIST)
			lfail(lx, lx->line, "list tails ('|') are not supported");
		else if (*lx->p == '.')
			lfail(lx, lx->line, "expected ',' or '%c' (a '%c' is missing before the '.')", close, close);
		else
			lfail(lx, lx->line, "expected ',' or '%c'", close);
		goto fail;
	}
fail:
	term_free(t);
	return NULL;
}

static struct term *parse_string(struct lex *lx, bool binary)
{
	struct term *t = term_new(lx, TERM_STR, lx->line);
	if (!t)
		return NULL;
	struct sbuf b = { 0 };
	for (;;) {
		lx->p++; /* the opening quote */
		if (!read_quoted(lx, '"', &b, ACL_MAX_STR))
			goto fail;
		if (binary)
			break;
		/* "abc" "def" is one string */
		const char *save = lx->p;
		int sline = lx->line;
		skip_ws(lx);
		if (lx->p < lx->end && *lx->p == '"')
			continue;
		lx->p = save;
		lx->line = sline;
		break;
	}
	sb_put(&b, '\0');
	t->s = b.p;
	t->len = b.n - 1;
	return t;
fail:
	free(b.p);
	term_free(t);
	return NULL;
}

static struct term *parse_term(struct lex *lx, int depth)
{
	skip_ws(lx);
	if (lx->p >= lx->end) {
		lfail(lx, lx->line, "unexpected end of file");
		return NULL;
	}
	if (depth > ACL_MAX_TERM_DEPTH) {
		lfail(lx, lx->line, "terms nested more than %d deep", ACL_MAX_TERM_DEPTH);
		return NULL;
	}
	char c = *lx->p;
	if (c == '{')
		return parse_seq(lx, depth, TERM_TUPLE, '}');
	if (c == '[')
		return parse_seq(lx, depth, TERM_LIST, ']');
	if (c == '"')
		return parse_string(lx, false);
	if (c == '<' && lx->end - lx->p >= 3 && lx->p[1] == '<' && lx->p[2] == '"') {
		/* <<"binary">> */
		int line = lx->line;
		lx->p += 2;
		struct term *t = parse_string(lx, true);
		if (!t)
			return NULL;
		if (lx->end - lx->p < 2 || lx->p[0] != '>' || lx->p[1] != '>') {
			term_free(t);
			lfail(lx, line, "expected '>>' after a binary string");
			return NULL;
		}
		lx->p += 2;
		return t;
	}
	if (c == '\'') {
		struct term *t = term_new(lx, TERM_ATOM, lx->line);
		if (!t)
			return NULL;
		struct sbuf b = { 0 };
		lx->p++;
		if (!read_quoted(lx, '\'', &b, ACL_MAX_ATOM)) {
			free(b.p);
			term_free(t);
			return NULL;
		}
		sb_put(&b, '\0');
		t->s = b.p;
		t->len = b.n - 1;
		return t;
	}
	if (is_atom_start(c)) {
		const char *s = lx->p;
		while (lx->p < lx->end && is_atom_char(*lx->p))
			lx->p++;
		size_t n = (size_t)(lx->p - s);
		if (n > ACL_MAX_ATOM) {
			lfail(lx, lx->line, "atom longer than %d bytes", ACL_MAX_ATOM);
			return NULL;
		}
		struct term *t = term_new(lx, TERM_ATOM, lx->line);
		if (!t)
			return NULL;
		t->s = xstrndup(s, n);
		t->len = n;
		return t;
	}
	if (c >= '0' && c <= '9') {
		long v = 0;
		while (lx->p < lx->end && *lx->p >= '0' && *lx->p <= '9') {
			if (v < 1000000000L)
				v = v * 10 + (*lx->p - '0');
			lx->p++;
		}
		struct term *t = term_new(lx, TERM_INT, lx->line);
		if (!t)
			return NULL;
		t->i = v;
		return t;
	}
	char ex[16];
	if (c >= 'A' && c <= 'Z')
		lfail(lx, lx->line, "unexpected '%c': variables are not allowed (quote atoms or strings)", c);
	else
		lfail(lx, lx->line, "unexpected character '%s'", show(&c, 1, ex, sizeof ex));
	return NULL;
}

/* ---- acl.conf: terms to rules ---------------------------------------------------------- */

static bool is_atom(const struct term *t, const char *name)
{
	return t->type == TERM_ATOM && strcmp(t->s, name) == 0;
}

static bool is_text(const struct term *t)
{
	return t->type == TERM_STR || t->type == TERM_ATOM;
}

static const char *term_kind(const struct term *t)
{
	switch (t->type) {
	case TERM_ATOM: return "an atom";
	case TERM_STR: return "a string";
	case TERM_INT: return "an integer";
	case TERM_TUPLE: return "a tuple";
	case TERM_LIST: return "a list";
	}
	return "a term";
}

/* "x" | x | {re, "regex"} */
static bool strmatch_compile(struct lex *lx, const struct term *t, const char *what, struct strmatch *m)
{
	if (is_text(t)) {
		strmatch_eq(m, t->s, t->len);
		return true;
	}
	if (t->type == TERM_TUPLE && t->n == 2 && is_atom(t->v[0], "re") && is_text(t->v[1])) {
		char e[300];
		if (!regex_compile(t->v[1]->s, t->v[1]->len, &m->re, e, sizeof e))
			return lfail(lx, t->v[1]->line, "%s", e);
		return true;
	}
	return lfail(lx, t->line, "%s: expected a string or {re, \"regex\"}, got %s", what, term_kind(t));
}

static bool who_compile(struct lex *lx, const struct term *t, struct who *w, int depth)
{
	memset(w, 0, sizeof *w);
	if (depth > ACL_MAX_WHO_DEPTH)
		return lfail(lx, t->line, "'and'/'or' nested more than %d deep", ACL_MAX_WHO_DEPTH);
	if (is_atom(t, "all")) {
		w->kind = WHO_ALL;
		return true;
	}
	if (t->type != TERM_TUPLE || t->n < 2 || t->v[0]->type != TERM_ATOM)
		return lfail(lx, t->line,
			     "expected who: all, {username, ...}, {clientid, ...}, {ipaddr, ...}, {ipaddrs, [...]}, "
			     "{client_attr, ...}, {zone, ...}, {listener, ...}, {'and', [...]} or {'or', [...]}");
	const char *k = t->v[0]->s;
	const struct term *v = t->v[1];
	char e[300];
	if (strcmp(k, "client_attr") == 0) {
		if (t->n != 3)
			return lfail(lx, t->line, "expected {client_attr, \"NAME\", \"value\" | {re, \"regex\"}}");
		if (!is_text(v) || v->len == 0 || memchr(v->s, '\0', v->len))
			return lfail(lx, v->line, "client_attr: the attribute name must be a non-empty string");
		w->kind = WHO_CLIENT_ATTR;
		w->attr = xstrdup(v->s);
		w->attr_len = v->len;
		return strmatch_compile(lx, t->v[2], "client_attr", &w->m);
	}
	if (t->n != 2)
		return lfail(lx, t->line, "{%s, ...}: expected a 2-tuple", k);
	if (strcmp(k, "user") == 0 || strcmp(k, "username") == 0) {
		w->kind = WHO_USERNAME;
		return strmatch_compile(lx, v, k, &w->m);
	}
	if (strcmp(k, "client") == 0 || strcmp(k, "clientid") == 0) {
		w->kind = WHO_CLIENTID;
		return strmatch_compile(lx, v, k, &w->m);
	}
	if (strcmp(k, "zone") == 0) {
		w->kind = WHO_ZONE;
		return strmatch_compile(lx, v, k, &w->m);
	}
	if (strcmp(k, "listener") == 0) {
		w->kind = WHO_LISTENER;
		return strmatch_compile(lx, v, k, &w->m);
	}
	if (strcmp(k, "ipaddr") == 0) {
		if (v->type != TERM_STR)
			return lfail(lx, v->line, "ipaddr: expected a string \"CIDR\"");
		w->kind = WHO_IPADDRS;
		w->cidrs = xcalloc(1, sizeof *w->cidrs);
		if (!cidr_compile(v->s, v->len, &w->cidrs[0], e, sizeof e))
			return lfail(lx, v->line, "ipaddr: %s", e);
		w->ncidrs = 1;
		return true;
	}
	if (strcmp(k, "ipaddrs") == 0) {
		if (v->type != TERM_LIST)
			return lfail(lx, v->line, "ipaddrs: expected a list [\"CIDR\", ...]");
		w->kind = WHO_IPADDRS;
		w->cidrs = xcalloc(v->n ? v->n : 1, sizeof *w->cidrs);
		for (size_t i = 0; i < v->n; i++) {
			if (v->v[i]->type != TERM_STR)
				return lfail(lx, v->v[i]->line, "ipaddrs: expected a string \"CIDR\", got %s",
					     term_kind(v->v[i]));
			if (!cidr_compile(v->v[i]->s, v->v[i]->len, &w->cidrs[i], e, sizeof e))
				return lfail(lx, v->v[i]->line, "ipaddrs: %s", e);
			w->ncidrs++;
		}
		return true;
	}
	if (strcmp(k, "and") == 0 || strcmp(k, "or") == 0) {
		if (v->type != TERM_LIST)
			return lfail(lx, v->line, "'%s': expected a list of who conditions", k);
		w->kind = k[0] == 'a' ? WHO_AND : WHO_OR;
		w->kids = xcalloc(v->n ? v->n : 1, sizeof *w->kids);
		for (size_t i = 0; i < v->n; i++) {
			if (!who_compile(lx, v->v[i], &w->kids[i], depth + 1)) {
				who_free(&w->kids[i]);
				return false;
			}
			w->nkids++;
		}
		return true;
	}
	char ex[80];
	return lfail(lx, t->v[0]->line, "unknown who '%s'", show(k, t->v[0]->len, ex, sizeof ex));
}

static bool qos_add(struct lex *lx, const struct term *t, uint8_t *mask)
{
	if (t->type != TERM_INT || t->i > 2)
		return lfail(lx, t->line, "qos: expected 0, 1 or 2");
	*mask |= (uint8_t)(1u << t->i);
	return true;
}

static bool action_compile(struct lex *lx, const struct term *t, struct rule *r)
{
	const struct term *name = t;
	r->qos_mask = 7;
	r->retain = -1;
	if (t->type == TERM_TUPLE && t->n == 2)
		name = t->v[0];
	if (name->type != TERM_ATOM || !(r->actions = acl_action_of(name->s, name->len)) ||
	    strcmp(name->s, "pub") == 0 || strcmp(name->s, "sub") == 0) {
		char ex[80];
		if (name->type == TERM_ATOM)
			return lfail(lx, name->line, "unknown action '%s' (publish, subscribe or all)",
				     show(name->s, name->len, ex, sizeof ex));
		return lfail(lx, name->line,
			     "expected an action: publish, subscribe, all or {Action, [{qos, ...}, {retain, ...}]}");
	}
	if (name == t)
		return true;
	const struct term *opts = t->v[1];
	if (opts->type != TERM_LIST)
		return lfail(lx, opts->line, "action options: expected a list [{qos, ...}, {retain, ...}]");
	uint8_t qos = 0;
	bool have_qos = false;
	for (size_t i = 0; i < opts->n; i++) {
		const struct term *o = opts->v[i];
		if (is_atom(o, "retain")) {
			r->retain = 1;
			continue;
		}
		if (o->type != TERM_TUPLE || o->n != 2 || o->v[0]->type != TERM_ATOM)
			return lfail(lx, o->line, "action option: expected {qos, ...} or {retain, ...}");
		const struct term *v = o->v[1];
		if (is_atom(o->v[0], "qos")) {
			have_qos = true;
			if (v->type == TERM_LIST) {
				for (size_t k = 0; k < v->n; k++)
					if (!qos_add(lx, v->v[k], &qos))
						return false;
			} else if (!qos_add(lx, v, &qos)) {
				return false;
			}
		} else if (is_atom(o->v[0], "retain")) {
			if (is_atom(v, "true") || (v->type == TERM_INT && v->i == 1))
				r->retain = 1;
			else if (is_atom(v, "false") || (v->type == TERM_INT && v->i == 0))
				r->retain = 0;
			else if (is_atom(v, "all"))
				r->retain = -1;
			else
				return lfail(lx, v->line, "retain: expected true, false or all");
		} else {
			char ex[80];
			return lfail(lx, o->v[0]->line, "unknown action option '%s' (qos or retain)",
				     show(o->v[0]->s, o->v[0]->len, ex, sizeof ex));
		}
	}
	if (have_qos)
		r->qos_mask = qos; /* an empty list allows no QoS */
	return true;
}

static bool topic_term(struct lex *lx, const struct term *t, struct atopic *out)
{
	char e[400];
	memset(out, 0, sizeof *out);
	if (is_atom(t, "all")) {
		out->kind = TOPIC_ALL;
		return true;
	}
	if (t->type == TERM_STR) {
		if (!topic_compile(t->s, t->len, TOPIC_FILTER, true, out, e, sizeof e))
			return lfail(lx, t->line, "%s", e);
		return true;
	}
	if (t->type == TERM_TUPLE && t->n == 2 && is_atom(t->v[0], "eq") && t->v[1]->type == TERM_STR) {
		if (!topic_compile(t->v[1]->s, t->v[1]->len, TOPIC_EQ, false, out, e, sizeof e))
			return lfail(lx, t->v[1]->line, "%s", e);
		return true;
	}
	return lfail(lx, t->line, "expected a topic: \"filter\", {eq, \"topic\"} or all; got %s", term_kind(t));
}

static bool topics_compile(struct lex *lx, const struct term *t, struct rule *r)
{
	if (t->type != TERM_LIST) {
		r->topics = xcalloc(1, sizeof *r->topics);
		if (!topic_term(lx, t, &r->topics[0]))
			return false;
		r->ntopics = 1;
		return true;
	}
	r->topics = xcalloc(t->n ? t->n : 1, sizeof *r->topics);
	for (size_t i = 0; i < t->n; i++) {
		if (!topic_term(lx, t->v[i], &r->topics[i]))
			return false;
		r->ntopics++;
	}
	return true;
}

static bool rule_compile(struct lex *lx, const struct term *t, struct rule *r)
{
	memset(r, 0, sizeof *r);
	if (t->type != TERM_TUPLE || (t->n != 2 && t->n != 4))
		return lfail(lx, t->line, "expected a rule {allow|deny, Who, Action, Topics} or {allow|deny, all}");
	const struct term *perm = t->v[0];
	if (is_atom(perm, "allow"))
		r->allow = true;
	else if (!is_atom(perm, "deny"))
		return lfail(lx, perm->line, "expected allow or deny");
	if (t->n == 2) {
		if (!is_atom(t->v[1], "all"))
			return lfail(lx, t->v[1]->line, "a 2-tuple rule must be {%s, all}", r->allow ? "allow" : "deny");
		r->who.kind = WHO_ALL;
		r->actions = AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE;
		r->qos_mask = 7;
		r->retain = -1;
		r->topics = xcalloc(1, sizeof *r->topics);
		r->topics[0].kind = TOPIC_ALL;
		r->ntopics = 1;
		return true;
	}
	return who_compile(lx, t->v[1], &r->who, 0) && action_compile(lx, t->v[2], r) &&
	       topics_compile(lx, t->v[3], r);
}

struct acl *acl_parse_conf(const char *text, size_t len, const char *fname, char *err, size_t errlen)
{
	struct lex lx = { .p = text, .end = text + len, .line = 1, .fname = fname ? fname : "acl.conf",
			  .err = err, .errlen = errlen };
	if (len >= 3 && memcmp(text, "\xef\xbb\xbf", 3) == 0)
		lx.p += 3; /* a UTF-8 byte order mark, as Windows editors write */
	struct acl *a = acl_new();
	for (;;) {
		skip_ws(&lx);
		if (lx.p >= lx.end)
			break;
		if (a->n >= ACL_MAX_RULES) {
			lfail(&lx, lx.line, "more than %d rules", ACL_MAX_RULES);
			goto fail;
		}
		struct term *t = parse_term(&lx, 0);
		if (!t)
			goto fail;
		int end_line = lx.line; /* where the rule's last token ended: the '.' belongs there */
		skip_ws(&lx);
		if (lx.p >= lx.end || *lx.p != '.') {
			lfail(&lx, end_line, "expected '.' after rule");
			term_free(t);
			goto fail;
		}
		lx.p++;
		struct rule r;
		bool ok = rule_compile(&lx, t, &r);
		term_free(t);
		if (!ok) {
			rule_free(&r);
			goto fail;
		}
		acl_push(a, &r);
	}
	return a;
fail:
	acl_free(a);
	return NULL;
}

/* ---- JSON ACLs (JWT claim, HTTP response) ------------------------------------------------- */

static bool json_topic(const json_t *j, struct atopic *t, const char *where, char *err, size_t errlen)
{
	char e[400];
	if (!json_is_string(j)) {
		errf(err, errlen, "%s: a topic must be a string", where);
		return false;
	}
	if (!topic_compile(json_string_value(j), json_string_length(j), TOPIC_FILTER, true, t, e, sizeof e)) {
		errf(err, errlen, "%s: %s", where, e);
		return false;
	}
	return true;
}

static bool json_topics(const json_t *j, struct rule *r, const char *where, char *err, size_t errlen)
{
	if (json_is_string(j)) {
		r->topics = xcalloc(1, sizeof *r->topics);
		if (!json_topic(j, &r->topics[0], where, err, errlen))
			return false;
		r->ntopics = 1;
		return true;
	}
	if (!json_is_array(j)) {
		errf(err, errlen, "%s: topics must be an array of strings", where);
		return false;
	}
	size_t n = json_array_size(j);
	r->topics = xcalloc(n ? n : 1, sizeof *r->topics);
	for (size_t i = 0; i < n; i++) {
		if (!json_topic(json_array_get(j, i), &r->topics[i], where, err, errlen))
			return false;
		r->ntopics++;
	}
	return true;
}

static bool json_qos_one(const json_t *q, uint8_t *mask)
{
	json_int_t v;
	if (json_is_integer(q))
		v = json_integer_value(q);
	else if (json_is_string(q) && json_string_length(q) == 1)
		v = json_string_value(q)[0] - '0';
	else
		return false;
	if (v < 0 || v > 2)
		return false;
	*mask |= (uint8_t)(1u << v);
	return true;
}

/* Extra who conditions of a v2 rule (EMQX raw rules from databases): username_re,
 * clientid_re, ipaddr. */
static bool json_who(const json_t *o, struct who *w, const char *where, char *err, size_t errlen)
{
	static const char *const keys[] = { "username_re", "clientid_re", "ipaddr" };
	char e[300];
	w->kind = WHO_ALL;
	for (size_t i = 0; i < 3; i++) {
		const json_t *v = json_object_get(o, keys[i]);
		if (!v || json_is_null(v))
			continue;
		if (!json_is_string(v)) {
			errf(err, errlen, "%s: %s must be a string", where, keys[i]);
			return false;
		}
		if (w->kind == WHO_ALL) {
			w->kind = WHO_AND;
			w->kids = xcalloc(3, sizeof *w->kids);
		}
		struct who *k = &w->kids[w->nkids++];
		const char *s = json_string_value(v);
		size_t len = json_string_length(v);
		bool ok;
		if (i == 2) {
			k->kind = WHO_IPADDRS;
			k->cidrs = xcalloc(1, sizeof *k->cidrs);
			ok = cidr_compile(s, len, k->cidrs, e, sizeof e);
			k->ncidrs = ok ? 1 : 0;
		} else {
			k->kind = i == 0 ? WHO_USERNAME : WHO_CLIENTID;
			ok = regex_compile(s, len, &k->m.re, e, sizeof e);
		}
		if (!ok) {
			errf(err, errlen, "%s: %s: %s", where, keys[i], e);
			return false;
		}
	}
	return true;
}

static bool json_rule_v2(const json_t *o, size_t index, struct rule *r, char *err, size_t errlen)
{
	char where[32];
	snprintf(where, sizeof where, "acl[%zu]", index);
	memset(r, 0, sizeof *r);
	r->qos_mask = 7;
	r->retain = -1;
	r->who.kind = WHO_ALL;
	if (!json_is_object(o)) {
		errf(err, errlen, "%s: expected an object", where);
		return false;
	}
	const char *perm = json_string_value(json_object_get(o, "permission"));
	if (perm && strcmp(perm, "allow") == 0) {
		r->allow = true;
	} else if (!perm || strcmp(perm, "deny") != 0) {
		errf(err, errlen, "%s: permission must be \"allow\" or \"deny\"", where);
		return false;
	}
	const json_t *act = json_object_get(o, "action");
	if (!json_is_string(act) || !(r->actions = acl_action_of(json_string_value(act), json_string_length(act)))) {
		errf(err, errlen, "%s: action must be \"publish\", \"subscribe\" or \"all\"", where);
		return false;
	}
	const json_t *q = json_object_get(o, "qos");
	if (q && !json_is_null(q)) {
		uint8_t mask = 0;
		bool ok = true;
		if (json_is_array(q)) {
			for (size_t i = 0; i < json_array_size(q) && ok; i++)
				ok = json_qos_one(json_array_get(q, i), &mask);
		} else {
			ok = json_qos_one(q, &mask);
		}
		if (!ok) {
			errf(err, errlen, "%s: qos must be 0, 1, 2 or a list of them", where);
			return false;
		}
		r->qos_mask = mask;
	}
	const json_t *ret = json_object_get(o, "retain");
	if (ret && !json_is_null(ret)) {
		const char *rs = json_string_value(ret);
		if (json_is_true(ret) || (rs && strcmp(rs, "true") == 0))
			r->retain = 1;
		else if (json_is_false(ret) || (rs && strcmp(rs, "false") == 0))
			r->retain = 0;
		else if (rs && strcmp(rs, "all") == 0)
			r->retain = -1;
		else {
			errf(err, errlen, "%s: retain must be true, false or \"all\"", where);
			return false;
		}
	}
	const json_t *topics = json_object_get(o, "topics");
	if (!topics)
		topics = json_object_get(o, "topic");
	if (!topics) {
		errf(err, errlen, "%s: topic or topics is required", where);
		return false;
	}
	return json_topics(topics, r, where, err, errlen) && json_who(o, &r->who, where, err, errlen);
}

static bool json_v1(struct acl *a, const json_t *doc, char *err, size_t errlen)
{
	static const struct {
		const char *key;
		unsigned actions;
	} keys[] = {
		{ "pub", AUTHZ_PUBLISH },
		{ "sub", AUTHZ_SUBSCRIBE },
		{ "all", AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE },
	};
	const char *k;
	const json_t *v;
	json_object_foreach ((json_t *)doc, k, v) {
		size_t i;
		for (i = 0; i < 3; i++)
			if (strcmp(k, keys[i].key) == 0)
				break;
		if (i == 3) {
			char ex[80];
			errf(err, errlen, "acl: unknown key \"%s\" (expected pub, sub and all, or a list of rules)",
			     show(k, strlen(k), ex, sizeof ex));
			return false;
		}
		struct rule r = { .allow = true, .actions = keys[i].actions, .qos_mask = 7, .retain = -1 };
		r.who.kind = WHO_ALL;
		char where[16];
		snprintf(where, sizeof where, "acl.%s", k);
		if (!json_topics(v, &r, where, err, errlen)) {
			rule_free(&r);
			return false;
		}
		acl_push(a, &r);
	}
	return true;
}

struct acl *acl_parse_json(const char *json, char *err, size_t errlen)
{
	if (!json) {
		errf(err, errlen, "acl: no text");
		return NULL;
	}
	json_error_t je;
	json_t *doc = json_loads(json, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);
	if (!doc) {
		errf(err, errlen, "acl: invalid JSON: %s", je.text);
		return NULL;
	}
	struct acl *a = acl_new();
	bool ok = false;
	if (json_is_array(doc)) {
		size_t n = json_array_size(doc);
		if (n > ACL_MAX_RULES) {
			errf(err, errlen, "acl: too many rules");
			goto out;
		}
		for (size_t i = 0; i < n; i++) {
			struct rule r;
			if (!json_rule_v2(json_array_get(doc, i), i, &r, err, errlen)) {
				rule_free(&r);
				goto out;
			}
			acl_push(a, &r);
		}
		ok = true;
	} else if (json_is_object(doc)) {
		ok = json_v1(a, doc, err, errlen);
	} else {
		errf(err, errlen, "acl: expected a list of rules or an object {\"pub\": [...], \"sub\": [...]}");
	}
out:
	json_decref(doc);
	if (!ok) {
		acl_free(a);
		return NULL;
	}
	return a;
}
