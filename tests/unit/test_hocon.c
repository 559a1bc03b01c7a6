/* Unit tests: HOCON parser (config/hocon.c) and value helpers (config/values.c). */
#include "unit.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <sys/stat.h>
#include <time.h>

#include "config/hocon.h"
#include "config/values.h"
#include "core/buf.h"

#define EXAMPLES_DIR "examples" /* the seed documents' config snippets, vendored; tests run from the repo root */

/* ------------------------------------------------------------------ helpers */

static struct hocon_node *parse(const char *text)
{
	struct hocon_error err;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &err);
	if (!root)
		fprintf(stderr, "  unexpected parse error: %s:%d: %s\n", err.file, err.line, err.msg);
	return root;
}

static const struct hocon_node *at(const struct hocon_node *root, const char *path)
{
	return hocon_get_path(root, path);
}

static const char *str_at(const struct hocon_node *root, const char *path)
{
	const struct hocon_node *n = hocon_get_path(root, path);
	return n ? n->str : NULL;
}

static int type_at(const struct hocon_node *root, const char *path)
{
	const struct hocon_node *n = hocon_get_path(root, path);
	return n ? (int)n->type : -1;
}

/* Parse must fail at `line` with a message containing `needle`. */
static void expect_error_at(const char *text, size_t len, int line, const char *needle, int src_line)
{
	struct hocon_error err;
	struct hocon_node *root = hocon_parse_string(text, len, "bad.conf", &err);
	if (root) {
		fprintf(stderr, "test_hocon.c:%d: parse unexpectedly succeeded\n", src_line);
		unit_failures++;
		unit_current_failed = 1;
		hocon_free(root);
		return;
	}
	if (err.line != line || !strstr(err.msg, needle) || strcmp(err.file, "bad.conf") != 0) {
		fprintf(stderr, "test_hocon.c:%d: got %s:%d: \"%s\", want line %d containing \"%s\"\n", src_line,
			err.file, err.line, err.msg, line, needle);
		unit_failures++;
		unit_current_failed = 1;
	}
}

#define EXPECT_ERROR(text, line, needle) expect_error_at((text), strlen(text), (line), (needle), __LINE__)

static void write_file(const char *dir, const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof path, "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	if (!f) {
		fprintf(stderr, "cannot write %s: %s\n", path, strerror(errno));
		abort();
	}
	fputs(text, f);
	fclose(f);
}

static void rm_rf(const char *path)
{
	char cmd[600];
	snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
	if (system(cmd) != 0)
		fprintf(stderr, "warning: could not remove %s\n", path);
}

/* Walk every node; returns the node count (exercises every pointer). */
static size_t walk(const struct hocon_node *n)
{
	size_t c = 1;
	if (n->type == HOCON_ARRAY)
		for (size_t i = 0; i < n->n; i++)
			c += walk(n->items[i]);
	if (n->type == HOCON_OBJECT)
		for (size_t i = 0; i < n->n; i++)
			c += walk(n->members[i].value);
	return c;
}

/* ------------------------------------------------------------------ syntax */

TEST(basic_objects_and_separators)
{
	struct hocon_node *r = parse("a = 1\n"
				     "b : two\n"
				     "c { d = 3, e = 4, }\n"
				     "f = { g = 5 }\n"
				     "h = [1, 2, 3,]\n"
				     "i = [\n  x\n  y\n]\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_EQ_INT(r->type, HOCON_OBJECT);
	CHECK_STR(str_at(r, "a"), "1");
	CHECK_EQ_INT(type_at(r, "a"), HOCON_NUMBER);
	CHECK_STR(str_at(r, "b"), "two");
	CHECK_STR(str_at(r, "c.d"), "3");
	CHECK_STR(str_at(r, "c.e"), "4");
	CHECK_STR(str_at(r, "f.g"), "5");
	const struct hocon_node *h = at(r, "h");
	CHECK(h && h->type == HOCON_ARRAY && h->n == 3);
	if (h && h->n == 3)
		CHECK_STR(h->items[2]->str, "3");
	const struct hocon_node *i = at(r, "i");
	CHECK(i && i->n == 2);
	if (i && i->n == 2) {
		CHECK_STR(i->items[0]->str, "x");
		CHECK_STR(i->items[1]->str, "y");
	}
	hocon_free(r);
}

TEST(root_braces_optional)
{
	struct hocon_node *r = parse("  # leading comment\n{ a = 1, b { c = 2 } }\n// trailing\n");
	CHECK(r);
	CHECK_STR(str_at(r, "a"), "1");
	CHECK_STR(str_at(r, "b.c"), "2");
	hocon_free(r);
	r = parse("");
	CHECK(r && r->type == HOCON_OBJECT && r->n == 0);
	hocon_free(r);
	r = parse("\xef\xbb\xbf" "a = 1"); /* BOM, no newline at end */
	CHECK_STR(str_at(r, "a"), "1");
	hocon_free(r);
	r = parse("{}");
	CHECK(r && r->n == 0);
	hocon_free(r);
}

TEST(crlf_and_whitespace)
{
	struct hocon_node *r = parse("a = 1\r\nb {\r\n\tc = \"x\"\r\n  d = two words\r\n}\r\ne = [1,\r\n2]\r\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "a"), "1");
	CHECK_EQ_INT(type_at(r, "a"), HOCON_NUMBER);
	CHECK_STR(str_at(r, "b.c"), "x");
	CHECK_STR(str_at(r, "b.d"), "two words");
	CHECK_EQ_INT(at(r, "b.d")->line, 4);
	CHECK_EQ_INT(at(r, "e")->n, 2);
	CHECK_EQ_INT(at(r, "e")->items[1]->line, 7);
	hocon_free(r);
}

TEST(dotted_and_quoted_keys)
{
	struct hocon_node *r = parse("listeners.ssl.default.bind = \"0.0.0.0:8883\"\n"
				     "\"a.b\" = 1\n"
				     "x.\"y.z\".w = 2\n"
				     "\"weird key {}\" = 3\n"
				     "k-1_2.3 = 4\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "listeners.ssl.default.bind"), "0.0.0.0:8883");
	CHECK(hocon_get_member(r, "a.b") != NULL);
	CHECK(hocon_get_member(r, "a") == NULL);
	const struct hocon_node *x = at(r, "x");
	const struct hocon_member *yz = hocon_get_member(x, "y.z");
	CHECK(yz && hocon_get_member(yz->value, "w"));
	CHECK(hocon_get_member(r, "weird key {}") != NULL);
	CHECK_STR(str_at(r, "k-1_2.3"), "4");
	hocon_free(r);
}

TEST(strings_quoted_escapes)
{
	struct hocon_node *r = parse("a = \"q\\\" b\\\\ s\\/ \\b\\f\\n\\r\\t end\"\n"
				     "u = \"\\u00e9\\u20ac\\ud83d\\ude00\"\n"
				     "t = \"tab\there\"\n"
				     "tpl = \"${username}\"\n"
				     "e = \"\"\n"
				     "utf = \"h\xc3\xa9j\"\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "a"), "q\" b\\ s/ \b\f\n\r\t end");
	CHECK_STR(str_at(r, "u"), "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
	CHECK_STR(str_at(r, "t"), "tab\there");
	CHECK_STR(str_at(r, "tpl"), "${username}");
	CHECK_STR(str_at(r, "e"), "");
	CHECK_STR(str_at(r, "utf"), "h\xc3\xa9j");
	CHECK(at(r, "tpl")->quoted);
	CHECK_EQ_INT(type_at(r, "e"), HOCON_STRING);
	hocon_free(r);
}

TEST(strings_unquoted)
{
	struct hocon_node *r = parse("bind = 0.0.0.0:1883\n"
				     "certfile = etc/certs/cert.pem   \n"
				     "who = user@host\n"
				     "all = *\n"
				     "topic = a/+/b\n"
				     "dur = 15s\n"
				     "size = 1MB\n"
				     "money = pa$$word\n"
				     "apos = don't\n"
				     "url = http://example.com/x\n"
				     "abs = /etc/x//y\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "bind"), "0.0.0.0:1883");
	CHECK_STR(str_at(r, "certfile"), "etc/certs/cert.pem");
	CHECK_STR(str_at(r, "who"), "user@host");
	CHECK_STR(str_at(r, "all"), "*");
	CHECK_STR(str_at(r, "topic"), "a/+/b");
	CHECK_STR(str_at(r, "dur"), "15s");
	CHECK_STR(str_at(r, "size"), "1MB");
	CHECK_STR(str_at(r, "money"), "pa$$word");
	CHECK_STR(str_at(r, "apos"), "don't");
	CHECK_STR(str_at(r, "url"), "http://example.com/x");
	CHECK_STR(str_at(r, "abs"), "/etc/x//y");
	CHECK(!at(r, "bind")->quoted);
	CHECK_EQ_INT(type_at(r, "dur"), HOCON_STRING);
	hocon_free(r);
	/* "[::1]:1883" unquoted starts an array: users must quote it */
	EXPECT_ERROR("bind = [::1]:1883\n", 1, "expected ',' or newline after a member, found ':'");
}

TEST(comments_and_double_slash)
{
	struct hocon_node *r = parse("# hash comment\n"
				     "// slash comment\n"
				     "a = 1 // trailing\n"
				     "b = two # trailing\n"
				     "c = http://x/y // note\n"
				     "d = x// not a comment\n"
				     "e = \"q\"// comment after quoted\n"
				     "f = \"has # and // inside\"\n"
				     "g = [1, // c\n 2 # c\n]\n"
				     "h { // c\n i = 1 }\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "a"), "1");
	CHECK_EQ_INT(type_at(r, "a"), HOCON_NUMBER);
	CHECK_STR(str_at(r, "b"), "two");
	CHECK_STR(str_at(r, "c"), "http://x/y");
	CHECK_STR(str_at(r, "d"), "x// not a comment");
	CHECK_STR(str_at(r, "e"), "q");
	CHECK_STR(str_at(r, "f"), "has # and // inside");
	CHECK_EQ_INT(at(r, "g")->n, 2);
	CHECK_STR(str_at(r, "h.i"), "1");
	hocon_free(r);
}

TEST(concatenation)
{
	struct hocon_node *r = parse("a = foo bar\n"
				     "b = \"x\" y\n"
				     "c = foo\"bar\"\n"
				     "d = one   two\t three  \n"
				     "e = 10 s\n"
				     "f = \"a\"   \"b\"\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "a"), "foo bar");
	CHECK(!at(r, "a")->quoted);
	CHECK_STR(str_at(r, "b"), "x y");
	CHECK(at(r, "b")->quoted);
	CHECK_STR(str_at(r, "c"), "foobar");
	CHECK_STR(str_at(r, "d"), "one   two\t three");
	CHECK_STR(str_at(r, "e"), "10 s");
	CHECK_EQ_INT(type_at(r, "e"), HOCON_STRING);
	CHECK_STR(str_at(r, "f"), "a   b");
	hocon_free(r);
}

TEST(numbers_booleans_null)
{
	struct hocon_node *r = parse("i = 42\nneg = -7\nf = 1.5\nexp = 2e3\nz = 0\n"
				     "lead = 0755\nhuge = 1e999\ndot = .5\n"
				     "t = true\nf2 = false\non = on\noff = off\nyes = yes\nno = no\n"
				     "qt = \"true\"\nqn = \"42\"\nn = null\nT = TRUE\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_EQ_INT(type_at(r, "i"), HOCON_NUMBER);
	CHECK(at(r, "i")->number == 42);
	CHECK(at(r, "neg")->number == -7);
	CHECK(at(r, "f")->number == 1.5);
	CHECK_STR(str_at(r, "f"), "1.5");
	CHECK(at(r, "exp")->number == 2000);
	CHECK_STR(str_at(r, "exp"), "2e3");
	CHECK_EQ_INT(type_at(r, "z"), HOCON_NUMBER);
	CHECK_EQ_INT(type_at(r, "lead"), HOCON_STRING);
	CHECK_EQ_INT(type_at(r, "huge"), HOCON_STRING);
	CHECK_EQ_INT(type_at(r, "dot"), HOCON_STRING);
	CHECK_EQ_INT(type_at(r, "t"), HOCON_BOOL);
	CHECK(at(r, "t")->boolean);
	CHECK_STR(str_at(r, "t"), "true");
	CHECK(!at(r, "f2")->boolean);
	CHECK(at(r, "on")->boolean && at(r, "yes")->boolean);
	CHECK(!at(r, "off")->boolean && !at(r, "no")->boolean);
	CHECK_STR(str_at(r, "off"), "false");
	CHECK_EQ_INT(type_at(r, "qt"), HOCON_STRING);
	CHECK_EQ_INT(type_at(r, "qn"), HOCON_STRING);
	CHECK_EQ_INT(type_at(r, "n"), HOCON_NULL);
	CHECK_STR(str_at(r, "n"), "null");
	CHECK_EQ_INT(type_at(r, "T"), HOCON_STRING);
	hocon_free(r);
}

TEST(triple_quoted)
{
	const char *text = "a = 1\n"
			   "pem = \"\"\"-----BEGIN CERTIFICATE-----\n"
			   "MIIB\\n${NOT_SUBSTITUTED} \"quoted\"\n"
			   "-----END CERTIFICATE-----\"\"\"\n"
			   "b = 2\n"
			   "c { d = \"\"\"x\"\"\"\n"
			   "  e = 3 }\n"
			   "q = \"\"\"\"\"\"\"\n"
			   "r = \"\"\"\"\"\"\n";
	struct hocon_node *r = parse(text);
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "pem"), "-----BEGIN CERTIFICATE-----\nMIIB\\n${NOT_SUBSTITUTED} \"quoted\"\n"
				    "-----END CERTIFICATE-----");
	CHECK(at(r, "pem")->quoted);
	CHECK_EQ_INT(at(r, "pem")->line, 2);
	CHECK_EQ_INT(hocon_get_member(r, "b")->line, 5);
	CHECK_EQ_INT(at(r, "b")->line, 5);
	CHECK_EQ_INT(at(r, "c.e")->line, 7);
	CHECK_STR(str_at(r, "q"), "\"");
	CHECK_STR(str_at(r, "r"), "");
	hocon_free(r);
}

TEST(positions)
{
	const char *text = "listeners.ssl.default {\n"       /* 1 */
			   "  bind = \"0.0.0.0:8883\"\n"      /* 2 */
			   "  ssl_options {\n"                /* 3 */
			   "    verify = verify_peer\n"       /* 4 */
			   "    versions = [\n"               /* 5 */
			   "      tlsv1.3,\n"                 /* 6 */
			   "      tlsv1.2\n"                  /* 7 */
			   "    ]\n"                          /* 8 */
			   "  }\n"                            /* 9 */
			   "}\r\n"                            /* 10 */
			   "x = 1\n";                         /* 11 */
	struct hocon_node *r = parse(text);
	CHECK(r);
	if (!r)
		return;
	const struct hocon_node *ssl = at(r, "listeners.ssl");
	CHECK_EQ_INT(hocon_get_member(ssl, "default")->line, 1);
	const struct hocon_node *def = at(r, "listeners.ssl.default");
	CHECK_EQ_INT(hocon_get_member(def, "bind")->line, 2);
	CHECK_EQ_INT(hocon_get_member(def, "ssl_options")->line, 3);
	const struct hocon_node *so = at(r, "listeners.ssl.default.ssl_options");
	CHECK_EQ_INT(so->line, 3);
	CHECK_EQ_INT(hocon_get_member(so, "verify")->line, 4);
	CHECK_EQ_INT(at(r, "listeners.ssl.default.ssl_options.verify")->line, 4);
	const struct hocon_node *v = at(r, "listeners.ssl.default.ssl_options.versions");
	CHECK_EQ_INT(v->line, 5);
	CHECK_EQ_INT(v->items[0]->line, 6);
	CHECK_EQ_INT(v->items[1]->line, 7);
	CHECK_STR(v->items[0]->str, "tlsv1.3");
	CHECK_EQ_INT(hocon_get_member(r, "x")->line, 11);
	CHECK_STR(hocon_get_member(r, "x")->file, "t.conf");
	CHECK_STR(at(r, "x")->file, "t.conf");
	hocon_free(r);
}

TEST(merge_semantics)
{
	struct hocon_node *r = parse("a { x = 1, y { p = 1 } }\n" /* 1 */
				     "b = 1\n"                    /* 2 */
				     "a { y { q = 2 }, z = 3 }\n" /* 3 */
				     "b = 3\n"                    /* 4 */
				     "c { o = 1 }\n"              /* 5 */
				     "c = 5\n"                    /* 6 */
				     "d = 5\n"                    /* 7 */
				     "d { o = 1 }\n"              /* 8 */
				     "e.f = 1\n"                  /* 9 */
				     "e { g = 2 }\n"              /* 10 */
				     "e = { h = 3 }\n"            /* 11 */
				     "g = [1, 2]\n"               /* 12 */
				     "g = [3]\n"                  /* 13 */
				     "h = 1\n"                    /* 14 */
				     "h.i = 2\n");                /* 15 */
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "a.x"), "1");
	CHECK_STR(str_at(r, "a.y.p"), "1");
	CHECK_STR(str_at(r, "a.y.q"), "2");
	CHECK_STR(str_at(r, "a.z"), "3");
	const struct hocon_node *a = at(r, "a");
	CHECK_EQ_INT(a->n, 3);
	CHECK_STR(a->members[0].key, "x");
	CHECK_STR(a->members[1].key, "y");
	CHECK_STR(a->members[2].key, "z");
	/* order of first definition, later value and its position */
	CHECK_EQ_INT(r->n, 7);
	CHECK_STR(r->members[0].key, "a");
	CHECK_STR(r->members[1].key, "b");
	CHECK_STR(r->members[2].key, "c");
	CHECK_STR(str_at(r, "b"), "3");
	CHECK_EQ_INT(hocon_get_member(r, "b")->line, 4);
	CHECK_EQ_INT(at(r, "b")->line, 4);
	CHECK_EQ_INT(type_at(r, "c"), HOCON_NUMBER);
	CHECK_EQ_INT(hocon_get_member(r, "c")->line, 6);
	CHECK_EQ_INT(type_at(r, "d"), HOCON_OBJECT);
	CHECK_EQ_INT(hocon_get_member(r, "d")->line, 8);
	CHECK_STR(str_at(r, "e.f"), "1");
	CHECK_STR(str_at(r, "e.g"), "2");
	CHECK_STR(str_at(r, "e.h"), "3");
	CHECK_EQ_INT(at(r, "g")->n, 1);
	CHECK_STR(str_at(r, "h.i"), "2");
	hocon_free(r);
}

TEST(append)
{
	struct hocon_node *r = parse("a += 1\na += x\nb = [1]\nb += { k = v }\nc.d += 5\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_EQ_INT(at(r, "a")->n, 2);
	CHECK_STR(at(r, "a")->items[1]->str, "x");
	const struct hocon_node *b = at(r, "b");
	CHECK_EQ_INT(b->n, 2);
	CHECK_EQ_INT(b->items[1]->type, HOCON_OBJECT);
	CHECK_EQ_INT(at(r, "c.d")->n, 1);
	hocon_free(r);
	EXPECT_ERROR("a = 1\na += 2\n", 2, "'+=' needs an array");
}

TEST(get_path_and_member)
{
	struct hocon_node *r = parse("a { b { c = 1 } }\n\"x.y\" = 2\n");
	CHECK(r);
	CHECK(at(r, "") == r);
	CHECK(at(r, "a.b.c") != NULL);
	CHECK(at(r, "a.b.c.d") == NULL);
	CHECK(at(r, "a..b") == NULL);
	CHECK(at(r, "a.") == NULL);
	CHECK(at(r, ".a") == NULL);
	CHECK(at(r, "a.bb") == NULL);
	CHECK(at(r, "x.y") == NULL); /* quoted dotted key is one segment */
	CHECK(hocon_get_member(r, "x.y") != NULL);
	CHECK(hocon_get_member(at(r, "a.b.c"), "c") == NULL);
	CHECK(hocon_get_member(NULL, "c") == NULL);
	CHECK(hocon_get_path(NULL, "a") == NULL);
	CHECK_STR(hocon_type_str(HOCON_OBJECT), "object");
	CHECK_STR(hocon_type_str(HOCON_STRING), "string");
	CHECK_STR(hocon_type_str(HOCON_ARRAY), "array");
	CHECK_STR(hocon_type_str(HOCON_NUMBER), "number");
	CHECK_STR(hocon_type_str(HOCON_BOOL), "boolean");
	CHECK_STR(hocon_type_str(HOCON_NULL), "null");
	hocon_free(r);
	hocon_free(NULL);
}

TEST(arrays_nested)
{
	struct hocon_node *r = parse("a = [[1, 2], [], [[x]], {k = 1}, \"s\", true, null]\n"
				     "b = [\n\n  1\n\n  2\n\n]\n"
				     "c = []\n");
	CHECK(r);
	if (!r)
		return;
	const struct hocon_node *a = at(r, "a");
	CHECK_EQ_INT(a->n, 7);
	CHECK_EQ_INT(a->items[0]->n, 2);
	CHECK_EQ_INT(a->items[1]->n, 0);
	CHECK_EQ_INT(a->items[2]->items[0]->items[0]->type, HOCON_STRING);
	CHECK_STR(hocon_get_path(a->items[3], "k")->str, "1");
	CHECK_EQ_INT(a->items[5]->type, HOCON_BOOL);
	CHECK_EQ_INT(a->items[6]->type, HOCON_NULL);
	CHECK_EQ_INT(at(r, "b")->n, 2);
	CHECK_EQ_INT(at(r, "c")->n, 0);
	CHECK_EQ_INT(type_at(r, "c"), HOCON_ARRAY);
	hocon_free(r);
}

/* ------------------------------------------------------------------ env substitution */

TEST(env_substitution)
{
	setenv("BW_T_HOME", "/home/x", 1);
	setenv("BW_T_PORT", "1883", 1);
	setenv("BW_T_ON", "true", 1);
	unsetenv("BW_T_UNSET");
	struct hocon_node *r = parse("path = ${BW_T_HOME}/x\n"
				     "whole = ${BW_T_HOME}\n"
				     "port = ${BW_T_PORT}\n"
				     "on = ${BW_T_ON}\n"
				     "quoted = \"${BW_T_HOME}\"\n"
				     "mixed = \"dir:\" ${BW_T_HOME}\n"
				     "keep = 1\n"
				     "keep = ${?BW_T_UNSET}\n"
				     "gone = ${?BW_T_UNSET}\n"
				     "deep.er.key = ${?BW_T_UNSET}\n"
				     "opt = a${?BW_T_UNSET}b\n"
				     "opt2 = x ${?BW_T_UNSET} y\n"
				     "arr = [1, ${?BW_T_UNSET}, 3, ${BW_T_PORT}]\n"
				     "set = ${?BW_T_PORT}\n"
				     "dotted = ${BW_T_HOME}.d\n");
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "path"), "/home/x/x");
	CHECK_STR(str_at(r, "whole"), "/home/x");
	CHECK(!at(r, "whole")->quoted);
	CHECK_EQ_INT(type_at(r, "port"), HOCON_NUMBER);
	CHECK(at(r, "port")->number == 1883);
	CHECK_EQ_INT(type_at(r, "on"), HOCON_BOOL);
	CHECK_STR(str_at(r, "quoted"), "${BW_T_HOME}");
	CHECK_STR(str_at(r, "mixed"), "dir: /home/x");
	CHECK_STR(str_at(r, "keep"), "1");
	CHECK(hocon_get_member(r, "gone") == NULL);
	CHECK(hocon_get_member(r, "deep") == NULL);
	CHECK_STR(str_at(r, "opt"), "ab");
	CHECK_STR(str_at(r, "opt2"), "x y");
	const struct hocon_node *arr = at(r, "arr");
	CHECK_EQ_INT(arr->n, 3);
	CHECK_STR(arr->items[1]->str, "3");
	CHECK_STR(arr->items[2]->str, "1883");
	CHECK_STR(str_at(r, "set"), "1883");
	CHECK_STR(str_at(r, "dotted"), "/home/x.d");
	hocon_free(r);

	EXPECT_ERROR("a = 1\nb = ${BW_T_UNSET}\n", 2, "environment variable BW_T_UNSET is not set");
	EXPECT_ERROR("b = x${BW_T_UNSET}\n", 1, "environment variable BW_T_UNSET is not set");
	EXPECT_ERROR("b = ${}\n", 1, "empty substitution");
	EXPECT_ERROR("b = ${BW_T_HOME\n", 1, "unterminated substitution");
	EXPECT_ERROR("b = ${BW T}\n", 1, "invalid character");
}

/* ------------------------------------------------------------------ errors */

TEST(error_messages)
{
	EXPECT_ERROR("a {\n  b = 1\n", 3, "expected '}' to close object opened at line 1");
	EXPECT_ERROR("x = 1\na {\n  b {\n    c = 1\n  }\n", 6, "expected '}' to close object opened at line 2");
	EXPECT_ERROR("a {\n  b = [1, 2\n}\n", 3, "expected ']' to close array opened at line 2");
	EXPECT_ERROR("a {\n  b = 1\n]\n", 3, "expected '}' to close object opened at line 1, found ']'");
	EXPECT_ERROR("a = 1\nb = \"abc\nc = 2\n", 2, "unterminated string");
	EXPECT_ERROR("a = 1\nb = \"abc", 2, "unterminated string");
	EXPECT_ERROR("a = 1\nb = \"\"\"abc\n\ndef\n", 2, "unterminated triple-quoted string");
	EXPECT_ERROR("a = 1\n\n@foo = 1\n", 3, "unexpected character '@'");
	EXPECT_ERROR("a = 1\nb = 2\n}\n", 3, "unexpected '}'");
	EXPECT_ERROR("a = 1,,b = 2\n", 1, "unexpected ','");
	EXPECT_ERROR("a b = 1\n", 1, "expected '=', ':' or '{' after key 'a', found 'b'");
	EXPECT_ERROR("a\n= 1\n", 1, "expected '=', ':' or '{' after key 'a', found newline");
	EXPECT_ERROR("a = 'secret'\n", 1, "single quotes");
	EXPECT_ERROR("a =\nb = 2\n", 2, "unexpected '=' in value of 'a'");
	EXPECT_ERROR("url = http://x/?a=b\n", 1, "unexpected '='");
	EXPECT_ERROR("a = \"\\q\"\n", 1, "invalid escape");
	EXPECT_ERROR("a = \"\\u12\"\n", 1, "four hex digits");
	EXPECT_ERROR("a = \"\\ud800\"\n", 1, "unpaired surrogate");
	EXPECT_ERROR("a = \"\\udc00\"\n", 1, "unpaired surrogate");
	EXPECT_ERROR("a = \"\\u0000\"\n", 1, "\\u0000");
	EXPECT_ERROR("a = \"x\x01y\"\n", 1, "control character");
	EXPECT_ERROR("{ a = 1 } b = 2\n", 1, "after the closing '}' of the root object");
	EXPECT_ERROR("[1, 2]\n", 1, "root of a configuration must be an object");
	EXPECT_ERROR("a = [1] x\n", 1, "expected ',' or newline after a member, found 'x'");
	EXPECT_ERROR("a = [1 ,, 2]\n", 1, "unexpected ',' in array");
	EXPECT_ERROR("a = [1 2 }\n", 1, "expected ']' to close array opened at line 1, found '}'");
	EXPECT_ERROR("a = foo {\n", 1, "unexpected '{' after a value");
	EXPECT_ERROR("a = foo [1]\n", 1, "unexpected '['");
	EXPECT_ERROR("a..b = 1\n", 1, "expected a key after '.'");
	EXPECT_ERROR("a. = 1\n", 1, "expected a key after '.'");
	EXPECT_ERROR("a = \n", 1, "expected a value for 'a', found end of file (line 2)");
	EXPECT_ERROR("a = 1\nb =\n\n}\n", 2, "expected a value for 'b', found '}' (line 4)");
	EXPECT_ERROR("a = }\n", 1, "expected a value for 'a', found '}'");
	EXPECT_ERROR("a = [1, # c\n", 2, "expected ']' to close array opened at line 1, found end of file");
	EXPECT_ERROR("a.b.c =", 1, "expected a value for 'a.b.c', found end of file");
	EXPECT_ERROR("a = x\x01y\n", 1, "unexpected character '\\x01'");
	EXPECT_ERROR("a = 1\ntopic = t/#\n", 2, "'#' right after unquoted text");
	EXPECT_ERROR("a = 1#c\n", 1, "'#' right after unquoted text");
	EXPECT_ERROR("a = \"x\r\nb = 1\r\n", 1, "unterminated string");
	EXPECT_ERROR("\"\"\"k\"\"\" = 1\n", 1, "triple-quoted keys");
	EXPECT_ERROR("a = 1\nb = [\n  1,\n  =\n]\n", 4, "unexpected '='");
	EXPECT_ERROR("a { b = \"\"\"x\ny\"\"\" c = 1 }\n", 2, "unexpected '=' in value of 'b'");
	EXPECT_ERROR("include url(\"http://x\")\n", 1, "not supported");
	EXPECT_ERROR("include foo(\"x\")\n", 1, "expected a quoted file name after include");
	EXPECT_ERROR("include required(\"x\"\n", 1, "expected ')'");
	/* long key paths are shortened in messages */
	char longkey[700];
	memset(longkey, 'k', 300);
	strcpy(longkey + 300, ".x.y =\n");
	EXPECT_ERROR(longkey, 1, "kkkkkkkk...");
	for (int i = 0; i < 200; i++)
		memcpy(longkey + 3 * i, "ab.", 3);
	strcpy(longkey + 599, "c =\n");
	EXPECT_ERROR(longkey, 1, "nesting deeper than 64");
	strcpy(longkey + 3 * 60, "c =\n");
	EXPECT_ERROR(longkey, 1, "expected a value for 'ab.ab.ab.");
	/* NUL bytes: in a value, in a key position, inside quotes */
	expect_error_at("a = x\0y\n", 8, 1, "'\\x00'", __LINE__);
	expect_error_at("a = 1\n\0", 7, 2, "unexpected character '\\x00'", __LINE__);
	expect_error_at("a = \"x\0\"", 8, 1, "control character", __LINE__);
	expect_error_at("a = \"\"\"x\0\"\"\"", 12, 1, "NUL byte", __LINE__);
}

TEST(error_file_name_and_null_err)
{
	/* err may be NULL; name may be NULL */
	CHECK(hocon_parse_string("a = {", 5, "x", NULL) == NULL);
	struct hocon_error err;
	CHECK(hocon_parse_string("a = {", 5, NULL, &err) == NULL);
	CHECK_STR(err.file, "<string>");
	struct hocon_node *r = hocon_parse_string(NULL, 0, NULL, &err);
	CHECK(r && r->n == 0);
	CHECK_STR(r->file, "<string>");
	hocon_free(r);
	/* len is honoured: text after len is not read */
	r = hocon_parse_string("a = 1 garbage{{{", 5, "t", &err);
	CHECK(r);
	CHECK_STR(str_at(r, "a"), "1");
	hocon_free(r);
	CHECK(hocon_parse_file("/nonexistent/bulwark.conf", &err) == NULL);
	CHECK_STR(err.file, "/nonexistent/bulwark.conf");
	CHECK(strstr(err.msg, "cannot read config file") != NULL);
	CHECK(hocon_parse_file("/", &err) == NULL);
}

/* ------------------------------------------------------------------ limits, robustness */

TEST(depth_limit)
{
	struct buf b = {0};
	/* 64 nested objects: the innermost is at depth 64 */
	for (int i = 0; i < 64; i++)
		buf_append_str(&b, "k {");
	for (int i = 0; i < 64; i++)
		buf_append_str(&b, "}");
	struct hocon_error err;
	struct hocon_node *r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(r);
	hocon_free(r);
	b.len = 0;
	for (int i = 0; i < 65; i++)
		buf_append_str(&b, "k {");
	for (int i = 0; i < 65; i++)
		buf_append_str(&b, "}");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(!r && strstr(err.msg, "nesting deeper than 64"));
	/* arrays: a at depth 1, 64 brackets reach depth 64 */
	b.len = 0;
	buf_append_str(&b, "a = ");
	for (int i = 0; i < 64; i++)
		buf_append_str(&b, "[");
	for (int i = 0; i < 64; i++)
		buf_append_str(&b, "]");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(r);
	hocon_free(r);
	b.len = 0;
	buf_append_str(&b, "a = ");
	for (int i = 0; i < 65; i++)
		buf_append_str(&b, "[");
	for (int i = 0; i < 65; i++)
		buf_append_str(&b, "]");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(!r && strstr(err.msg, "nesting deeper than 64"));
	/* very deep input fails cleanly, no stack overflow */
	b.len = 0;
	buf_append_str(&b, "a = ");
	for (int i = 0; i < 1000000; i++)
		buf_append_str(&b, "[{x=");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(!r && strstr(err.msg, "nesting deeper"));
	/* a dotted key with too many segments */
	b.len = 0;
	for (int i = 0; i < 100000; i++)
		buf_append_str(&b, "a.");
	buf_append_str(&b, "a = 1");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(!r && strstr(err.msg, "nesting deeper"));
	/* dotted keys inside nested objects count too */
	b.len = 0;
	for (int i = 0; i < 60; i++)
		buf_append_str(&b, "k {");
	buf_append_str(&b, "a.b.c.d.e = 1");
	for (int i = 0; i < 60; i++)
		buf_append_str(&b, "}");
	r = hocon_parse_string((char *)b.data, b.len, "d", &err);
	CHECK(!r && strstr(err.msg, "nesting deeper"));
	buf_free(&b);
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

TEST(large_inputs_linear)
{
	struct buf b = {0};
	const int n = 300000;
	double t0 = now_s();
	buf_append_str(&b, "arr = [");
	for (int i = 0; i < n; i++)
		buf_printf(&b, "%d,", i);
	buf_append_str(&b, "]\nobj {\n");
	for (int i = 0; i < n; i++)
		buf_printf(&b, "k%d = %d\n", i, i);
	for (int i = 0; i < n; i += 3)
		buf_printf(&b, "k%d = %d\n", i, -i); /* duplicates go through the index */
	buf_append_str(&b, "}\nbig = \"");
	for (int i = 0; i < 1000000; i++)
		buf_append_str(&b, "abcd");
	buf_append_str(&b, "\"\n");
	struct hocon_error err;
	struct hocon_node *r = hocon_parse_string((char *)b.data, b.len, "big", &err);
	CHECK(r);
	if (r) {
		CHECK_EQ_INT(at(r, "arr")->n, n);
		CHECK_EQ_INT(at(r, "obj")->n, n);
		CHECK_STR(str_at(r, "obj.k3"), "-3");
		CHECK_STR(str_at(r, "obj.k4"), "4");
		CHECK_EQ_INT(strlen(str_at(r, "big")), 4000000);
		CHECK_EQ_INT(walk(r), 2 * (size_t)n + 4);
	}
	hocon_free(r);
	buf_free(&b);
	double dt = now_s() - t0;
	/* generous: quadratic behaviour would take minutes */
	CHECK(dt < 20.0);
}

/* ------------------------------------------------------------------ include */

TEST(include_files)
{
	char tmpl[] = "/tmp/bw-hocon-XXXXXX";
	char *dir = mkdtemp(tmpl);
	CHECK(dir != NULL);
	if (!dir)
		return;
	char sub[600], path[600];
	snprintf(sub, sizeof sub, "%s/sub", dir);
	mkdir(sub, 0700);
	write_file(dir, "main.conf",
		   "x = 0\n"                              /* 1 */
		   "a = before\n"                         /* 2 */
		   "include \"sub/a.conf\"\n"             /* 3 */
		   "x = 1\n"                              /* 4 */
		   "nested { include file(\"sub/b.conf\") }\n" /* 5 */
		   "include \"missing.conf\"\n"           /* 6 */
		   "include required(file(\"sub/braced.conf\"))\n");
	write_file(sub, "a.conf", "a = from_a\nx = from_a\ninclude \"b.conf\"\n");
	write_file(sub, "b.conf", "\n\nb = 2\n");
	write_file(sub, "braced.conf", "{ br = yes }\n");
	snprintf(path, sizeof path, "%s/main.conf", dir);
	struct hocon_error err;
	struct hocon_node *r = hocon_parse_file(path, &err);
	if (!r)
		fprintf(stderr, "  %s:%d: %s\n", err.file, err.line, err.msg);
	CHECK(r);
	if (r) {
		CHECK_STR(str_at(r, "a"), "from_a");
		CHECK_STR(str_at(r, "x"), "1");       /* later in the including file wins */
		CHECK_STR(str_at(r, "b"), "2");       /* relative to sub/, the including file's dir */
		CHECK_STR(str_at(r, "nested.b"), "2"); /* merged into the object where it appears */
		CHECK_EQ_INT(type_at(r, "br"), HOCON_BOOL);
		const struct hocon_member *b = hocon_get_member(r, "b");
		char want[700];
		snprintf(want, sizeof want, "%s/sub/b.conf", dir);
		CHECK_STR(b->file, want);
		CHECK_EQ_INT(b->line, 3);
		const struct hocon_member *a = hocon_get_member(r, "a");
		snprintf(want, sizeof want, "%s/sub/a.conf", dir);
		CHECK_STR(a->file, want);
		CHECK_EQ_INT(a->line, 1);
		CHECK_STR(hocon_get_member(r, "x")->file, path);
		CHECK_EQ_INT(hocon_get_member(r, "x")->line, 4);
		CHECK_STR(r->file, path);
	}
	hocon_free(r);

	/* required and missing */
	write_file(dir, "req.conf", "a = 1\ninclude required(\"nope.conf\")\n");
	snprintf(path, sizeof path, "%s/req.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK_EQ_INT(err.line, 2);
	CHECK(strstr(err.msg, "included file not found") && strstr(err.msg, "nope.conf"));
	CHECK_STR(err.file, path);

	/* an error inside an included file names that file and line */
	write_file(dir, "broken.conf", "ok = 1\nbad = \"open\n");
	write_file(dir, "incbroken.conf", "include \"broken.conf\"\n");
	snprintf(path, sizeof path, "%s/incbroken.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK_EQ_INT(err.line, 2);
	CHECK(strstr(err.file, "broken.conf") && !strstr(err.file, "incbroken"));
	CHECK(strstr(err.msg, "unterminated string"));

	/* cycle */
	write_file(dir, "c1.conf", "a = 1\ninclude \"c2.conf\"\n");
	write_file(dir, "c2.conf", "\n\ninclude \"./c1.conf\"\n");
	snprintf(path, sizeof path, "%s/c1.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK(strstr(err.msg, "include cycle or depth > 10") && strstr(err.msg, "c1.conf"));
	CHECK(strstr(err.file, "c2.conf"));
	CHECK_EQ_INT(err.line, 3);
	write_file(dir, "self.conf", "include \"self.conf\"\n");
	snprintf(path, sizeof path, "%s/self.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK(strstr(err.msg, "include cycle"));

	/* depth: 10 nested includes are fine, 11 are not */
	for (int i = 0; i <= 11; i++) {
		char name[32], text[64];
		snprintf(name, sizeof name, "d%d.conf", i);
		if (i < 11)
			snprintf(text, sizeof text, "v%d = %d\ninclude \"d%d.conf\"\n", i, i, i + 1);
		else
			snprintf(text, sizeof text, "v%d = %d\n", i, i);
		write_file(dir, name, text);
	}
	snprintf(path, sizeof path, "%s/d1.conf", dir);
	r = hocon_parse_file(path, &err);
	CHECK(r);
	CHECK_STR(str_at(r, "v11"), "11");
	hocon_free(r);
	snprintf(path, sizeof path, "%s/d0.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK(strstr(err.msg, "include cycle or depth > 10"));

	/* a diamond (same file twice, not nested) is fine */
	write_file(dir, "leaf.conf", "l += 1\n");
	write_file(dir, "diamond.conf", "include \"leaf.conf\"\ninclude \"leaf.conf\"\n");
	snprintf(path, sizeof path, "%s/diamond.conf", dir);
	r = hocon_parse_file(path, &err);
	CHECK(r && at(r, "l") && at(r, "l")->n == 2);
	hocon_free(r);

	/* at most 1000 included files in one parse (a file tree could otherwise fan out exponentially) */
	struct buf many = {0};
	for (int i = 0; i < 1001; i++)
		buf_append_str(&many, "include \"leaf.conf\"\n");
	buf_append(&many, "", 1);
	write_file(dir, "many.conf", (char *)many.data);
	buf_free(&many);
	snprintf(path, sizeof path, "%s/many.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK(strstr(err.msg, "too many included files") && err.line == 1001);

	/* a directory where a file is expected is an error even for a plain include */
	write_file(dir, "incdir.conf", "include \"sub\"\n");
	snprintf(path, sizeof path, "%s/incdir.conf", dir);
	CHECK(hocon_parse_file(path, &err) == NULL);
	CHECK(strstr(err.msg, "cannot read included file"));

	/* parse_string: relative includes resolve against the current directory */
	char cwd[4096];
	CHECK(getcwd(cwd, sizeof cwd) != NULL);
	CHECK(chdir(sub) == 0);
	const char *t = "include \"b.conf\"\n";
	r = hocon_parse_string(t, strlen(t), "s", &err);
	CHECK(r && str_at(r, "b"));
	hocon_free(r);
	/* HOCON_NO_INCLUDE refuses includes */
	r = hocon_parse_string_ex(t, strlen(t), "s", &err, HOCON_NO_INCLUDE);
	CHECK(!r && strstr(err.msg, "include is disabled"));
	r = hocon_parse_string_ex("include = 1\n", 12, "s", &err, HOCON_NO_INCLUDE);
	CHECK(r && str_at(r, "include")); /* a key named include is just a key */
	hocon_free(r);
	CHECK(chdir(cwd) == 0);
	rm_rf(dir);
}

/* ------------------------------------------------------------------ shared examples */

TEST(shared_examples)
{
	DIR *d = opendir(EXAMPLES_DIR);
	CHECK(d != NULL);
	if (!d)
		return;
	int count = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name);
		if (n < 5 || strcmp(de->d_name + n - 5, ".conf") != 0)
			continue;
		char path[600];
		snprintf(path, sizeof path, "%s/%s", EXAMPLES_DIR, de->d_name);
		struct hocon_error err;
		struct hocon_node *r = hocon_parse_file(path, &err);
		if (!r)
			fprintf(stderr, "  %s:%d: %s\n", err.file, err.line, err.msg);
		CHECK(r != NULL);
		if (r)
			CHECK(walk(r) > 1);
		hocon_free(r);
		count++;
	}
	closedir(d);
	CHECK(count >= 5);

	struct hocon_error err;
	struct hocon_node *r = hocon_parse_file(EXAMPLES_DIR "/seed-002-two-way.conf", &err);
	CHECK(r);
	CHECK_STR(str_at(r, "listeners.ssl.default.ssl_options.verify"), "verify_peer");
	CHECK_STR(str_at(r, "listeners.ssl.default.bind"), "0.0.0.0:8883");
	CHECK_STR(str_at(r, "listeners.ssl.default.ssl_options.cacertfile"), "etc/certs/rootCAs.pem");
	CHECK_EQ_INT(type_at(r, "listeners.ssl.default.ssl_options.fail_if_no_peer_cert"), HOCON_BOOL);
	CHECK(at(r, "listeners.ssl.default.ssl_options.fail_if_no_peer_cert")->boolean);
	CHECK_EQ_INT(at(r, "listeners.ssl.default.ssl_options.verify")->line, 9);
	CHECK_STR(at(r, "listeners.ssl.default.ssl_options.verify")->file, EXAMPLES_DIR "/seed-002-two-way.conf");
	hocon_free(r);

	r = hocon_parse_file(EXAMPLES_DIR "/seed-002-managed-certs-global.conf", &err);
	CHECK(r);
	const struct hocon_node *mc = at(r, "listeners.ssl.default.ssl_options.managed_certs");
	CHECK(mc && mc->type == HOCON_ARRAY && mc->n == 2);
	if (mc && mc->n == 2) {
		CHECK_EQ_INT(mc->items[0]->type, HOCON_OBJECT);
		CHECK_EQ_INT(mc->items[1]->type, HOCON_OBJECT);
		CHECK_STR(hocon_get_path(mc->items[0], "bundle_name")->str, "example-cert-1");
		CHECK_STR(hocon_get_path(mc->items[1], "sni")->str, "api.example.com");
		CHECK_EQ_INT(mc->items[1]->line, 11);
	}
	CHECK_STR(str_at(r, "listeners.ssl.default.ssl_options.verify"), "verify_none");
	hocon_free(r);

	r = hocon_parse_file(EXAMPLES_DIR "/seed-002-managed-certs-tenant.conf", &err);
	CHECK(r);
	mc = at(r, "listeners.ssl.default.ssl_options.managed_certs");
	CHECK(mc && mc->n == 1 && strcmp(hocon_get_path(mc->items[0], "namespace")->str, "tenant-a") == 0);
	hocon_free(r);

	r = hocon_parse_file(EXAMPLES_DIR "/seed-000-peer-cert-mapping.conf", &err);
	CHECK(r);
	CHECK_STR(str_at(r, "mqtt.peer_cert_as_username"), "cn");
	CHECK_STR(str_at(r, "mqtt.peer_cert_as_clientid"), "disabled");
	hocon_free(r);

	r = hocon_parse_file(EXAMPLES_DIR "/seed-002-one-way.conf", &err);
	CHECK(r);
	CHECK_STR(str_at(r, "listeners.ssl.default.ssl_options.keyfile"), "etc/certs/server-key.pem");
	hocon_free(r);
}

TEST(emqx_style_config)
{
	const char *text = "node {\n"
			   "  name = \"emqx@127.0.0.1\"\n"
			   "  cookie = \"emqxsecretcookie\"\n"
			   "  data_dir = \"data\"\n"
			   "}\n"
			   "log.console { level = warning }\n"
			   "mqtt { max_packet_size = 1MB, idle_timeout = 15s, keepalive_multiplier = 1.5 }\n"
			   "listeners.tcp.default { bind = \"0.0.0.0:1883\", max_connections = 1024000 }\n"
			   "listeners.tcp.default.access_rules = [\"deny 10.0.0.0/8\", \"allow all\"]\n"
			   "listeners.ssl.default {\n"
			   "  bind = 8883\n"
			   "  ssl_options {\n"
			   "    certfile = ${EMQX_ETC_DIR_T}/certs/cert.pem\n"
			   "    versions = [tlsv1.3, tlsv1.2]\n"
			   "    ciphers = \"TLS_AES_256_GCM_SHA384,TLS_AES_128_GCM_SHA256\"\n"
			   "  }\n"
			   "}\n"
			   "listeners.ws.default = marked_for_deletion\n"
			   "authentication = [\n"
			   "  { mechanism = password_based, backend = built_in_database,\n"
			   "    password_hash_algorithm { name = sha256, salt_position = prefix } }\n"
			   "  { mechanism = jwt, from = password, secret = \"abc\" }\n"
			   "]\n"
			   "authorization {\n"
			   "  no_match = allow\n"
			   "  sources = [{type = file, enable = true, path = \"etc/acl.conf\"}]\n"
			   "}\n";
	setenv("EMQX_ETC_DIR_T", "/etc/emqx", 1);
	struct hocon_node *r = parse(text);
	CHECK(r);
	if (!r)
		return;
	CHECK_STR(str_at(r, "node.name"), "emqx@127.0.0.1");
	CHECK_STR(str_at(r, "log.console.level"), "warning");
	CHECK_STR(str_at(r, "mqtt.max_packet_size"), "1MB");
	CHECK(at(r, "mqtt.keepalive_multiplier")->number == 1.5);
	CHECK_STR(str_at(r, "listeners.tcp.default.bind"), "0.0.0.0:1883");
	CHECK_EQ_INT(at(r, "listeners.tcp.default.access_rules")->n, 2);
	CHECK_EQ_INT(at(r, "listeners.tcp.default")->n, 3);
	CHECK_STR(str_at(r, "listeners.ssl.default.ssl_options.certfile"), "/etc/emqx/certs/cert.pem");
	CHECK_STR(str_at(r, "listeners.ws.default"), "marked_for_deletion");
	const struct hocon_node *authn = at(r, "authentication");
	CHECK(authn && authn->n == 2);
	if (authn && authn->n == 2) {
		CHECK_STR(hocon_get_path(authn->items[0], "password_hash_algorithm.name")->str, "sha256");
		CHECK_STR(hocon_get_path(authn->items[1], "mechanism")->str, "jwt");
		CHECK_EQ_INT(authn->items[1]->line, 22);
	}
	CHECK_EQ_INT(type_at(r, "authorization.sources"), HOCON_ARRAY);
	hocon_free(r);
}

/* ------------------------------------------------------------------ value helpers */

TEST(durations)
{
	static const struct {
		const char *s;
		bool ok;
		uint64_t ms;
	} cases[] = {
		{"15s", true, 15000},      {"5m", true, 300000},        {"2h", true, 7200000},
		{"1d", true, 86400000},    {"100ms", true, 100},        {"1h30m", true, 5400000},
		{"1h5m0s", true, 3900000}, {"1.5s", true, 1500},        {"0.5ms", true, 1},
		{".5s", true, 500},        {"1000", true, 1000},        {"0", true, 0},
		{"0s", true, 0},           {"15S", true, 15000},        {"1MS", true, 1},
		{"2H", true, 7200000},     {"1w", true, 604800000},     {"1f", true, 1209600000},
		{"30m1h", true, 5400000},  {"1.25m", true, 75000},      {"1.0004s", true, 1000},
		{"18446744073709551615", true, UINT64_MAX},
		{"18446744073709551615ms", true, UINT64_MAX},
		{"", false, 0},            {"s", false, 0},             {"-1s", false, 0},
		{"+1s", false, 0},         {"1", true, 1},              {"1x", false, 0},
		{"1 s", false, 0},         {" 1s", false, 0},           {"1s ", false, 0},
		{"infinity", false, 0},    {"1.s", false, 0},           {"1..5s", false, 0},
		{"1.5", false, 0},         {"1e3s", false, 0},          {"1sec", false, 0},
		{"18446744073709551616", false, 0},                     {"18446744073709552s", false, 0},
		{"9999999999999999999d", false, 0},                     {"1h30", false, 0},
		{"10000000000000000000ms10000000000000000000ms", false, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t v = 12345;
		bool ok = cfg_parse_duration_ms(cases[i].s, &v);
		if (ok != cases[i].ok || (ok && v != cases[i].ms)) {
			fprintf(stderr, "  duration_ms(\"%s\"): ok=%d v=%" PRIu64 ", want ok=%d v=%" PRIu64 "\n",
				cases[i].s, ok, v, cases[i].ok, cases[i].ms);
			CHECK(0);
		}
		if (!ok)
			CHECK(v == 12345); /* untouched on failure */
	}
	static const struct {
		const char *s;
		bool ok;
		uint64_t sec;
	} scases[] = {
		{"15s", true, 15}, {"30", true, 30}, {"1500ms", true, 2}, {"1ms", true, 1}, {"0", true, 0},
		{"2h", true, 7200}, {"1m30s", true, 90}, {"1.5s", true, 2}, {"x", false, 0}, {"-5", false, 0},
		{"", false, 0},
	};
	for (size_t i = 0; i < sizeof scases / sizeof scases[0]; i++) {
		uint64_t v = 0;
		bool ok = cfg_parse_duration_s(scases[i].s, &v);
		if (ok != scases[i].ok || (ok && v != scases[i].sec)) {
			fprintf(stderr, "  duration_s(\"%s\"): ok=%d v=%" PRIu64 "\n", scases[i].s, ok, v);
			CHECK(0);
		}
	}
	uint64_t v;
	CHECK(!cfg_parse_duration_ms(NULL, &v));
	CHECK(!cfg_parse_duration_s(NULL, &v));
}

TEST(bytesizes)
{
	static const struct {
		const char *s;
		bool ok;
		uint64_t v;
	} cases[] = {
		{"1MB", true, 1048576},      {"64KB", true, 65536},      {"1GB", true, 1073741824},
		{"512B", true, 512},         {"1024", true, 1024},       {"1mb", true, 1048576},
		{"1kb", true, 1024},         {"1Kb", true, 1024},        {"0", true, 0},
		{"0KB", true, 0},            {"16gb", true, 17179869184ull},
		{"", false, 0},              {"MB", false, 0},           {"1.5MB", false, 0},
		{"-1", false, 0},            {"1 MB", false, 0},         {"1TB", false, 0},
		{"1K", false, 0},            {"1MBs", false, 0},         {"1MB ", false, 0},
		{"17179869184GB", false, 0}, {"99999999999999999999", false, 0},
		{"18446744073709551615", true, UINT64_MAX},              {"1/s", false, 0},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		uint64_t v = 777;
		bool ok = cfg_parse_bytesize(cases[i].s, &v);
		if (ok != cases[i].ok || (ok && v != cases[i].v)) {
			fprintf(stderr, "  bytesize(\"%s\"): ok=%d v=%" PRIu64 "\n", cases[i].s, ok, v);
			CHECK(0);
		}
		if (!ok)
			CHECK(v == 777);
	}
}

TEST(rates)
{
	static const struct {
		const char *s;
		bool ok;
		double per_s;
		bool bytes;
	} cases[] = {
		{"1000/s", true, 1000, false},    {"100/10s", true, 10, false},  {"10MB/s", true, 10485760, true},
		{"1000/m", true, 1000.0 / 60, false}, {"5/100ms", true, 50, false}, {"1000", true, 1000, false},
		{"10MB", true, 10485760, true},   {"1KB/2s", true, 512, true},   {"60/1h", true, 60.0 / 3600, false},
		{"7/S", true, 7, false},          {"100B/s", true, 100, true},   {"3/1m30s", true, 3.0 / 90, false},
		{"0/s", false, 0, false},         {"/s", false, 0, false},       {"10/", false, 0, false},
		{"10/10", false, 0, false},       {"10/0s", false, 0, false},    {"abc/s", false, 0, false},
		{"-1/s", false, 0, false},        {"10/s/s", false, 0, false},   {"", false, 0, false},
		{"10 /s", false, 0, false},       {"10/x", false, 0, false},     {"1.5/s", false, 0, false},
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		double r = -1;
		bool b = false;
		bool ok = cfg_parse_rate(cases[i].s, &r, &b);
		if (ok != cases[i].ok || (ok && (fabs(r - cases[i].per_s) > 1e-9 || b != cases[i].bytes))) {
			fprintf(stderr, "  rate(\"%s\"): ok=%d r=%g bytes=%d\n", cases[i].s, ok, r, b);
			CHECK(0);
		}
	}
	double r;
	bool b = true;
	CHECK(cfg_parse_rate("infinity", &r, &b) && isinf(r) && r > 0 && !b);
}

static struct sockaddr_storage sa4(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in *a = (struct sockaddr_in *)&ss;
	a->sin_family = AF_INET;
	if (inet_pton(AF_INET, ip, &a->sin_addr) != 1)
		abort();
	return ss;
}

static struct sockaddr_storage sa6(const char *ip)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	struct sockaddr_in6 *a = (struct sockaddr_in6 *)&ss;
	a->sin6_family = AF_INET6;
	if (inet_pton(AF_INET6, ip, &a->sin6_addr) != 1)
		abort();
	return ss;
}

static bool match(const char *cidr, const struct sockaddr_storage *ss)
{
	struct cfg_cidr c;
	if (!cfg_parse_cidr(cidr, &c)) {
		fprintf(stderr, "  cannot parse cidr %s\n", cidr);
		return false;
	}
	return cfg_cidr_match(&c, (const struct sockaddr *)ss);
}

TEST(cidrs)
{
	struct cfg_cidr c;
	CHECK(cfg_parse_cidr("10.0.0.0/8", &c) && c.family == AF_INET && c.prefix == 8 && c.addr[0] == 10);
	CHECK(cfg_parse_cidr("192.168.1.1", &c) && c.prefix == 32 && c.addr[3] == 1);
	CHECK(cfg_parse_cidr("::1", &c) && c.family == AF_INET6 && c.prefix == 128 && c.addr[15] == 1);
	CHECK(cfg_parse_cidr("2001:db8::/32", &c) && c.prefix == 32 && c.addr[0] == 0x20 && c.addr[3] == 0xb8);
	CHECK(cfg_parse_cidr("10.1.2.3/8", &c) && c.addr[1] == 0 && c.addr[3] == 0); /* host bits cleared */
	CHECK(cfg_parse_cidr("0.0.0.0/0", &c) && c.prefix == 0);
	CHECK(cfg_parse_cidr("10.255.255.255/12", &c) && c.addr[1] == 0xf0 && c.addr[2] == 0);
	static const char *const bad[] = {
		"", "/8", "10.0.0.0/", "10.0.0.0/33", "::/129", "10.0.0/8", "10.0.0.0/8/8", "10.0.0.0/-1",
		"10.0.0.0/+8", "host/8", "1.2.3.4.5", "::1::2", "10.0.0.0/0008", "10.0.0.0 /8", "[::1]",
		"fe80::1%eth0", "256.0.0.1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (cfg_parse_cidr(bad[i], &c)) {
			fprintf(stderr, "  cidr \"%s\" accepted\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK(!cfg_parse_cidr(NULL, &c));

	struct sockaddr_storage p4 = sa4("10.1.2.3"), o4 = sa4("11.0.0.1"), m4 = sa6("::ffff:10.1.2.3");
	struct sockaddr_storage mo4 = sa6("::ffff:11.0.0.1"), p6 = sa6("2001:db8:1::5"), o6 = sa6("2001:db9::1");
	struct sockaddr_storage lo6 = sa6("::1"), lo4 = sa4("127.0.0.1");
	CHECK(match("10.0.0.0/8", &p4));
	CHECK(!match("10.0.0.0/8", &o4));
	CHECK(match("10.0.0.0/8", &m4)); /* IPv4-mapped peer */
	CHECK(!match("10.0.0.0/8", &mo4));
	CHECK(match("10.1.2.3", &m4));
	CHECK(!match("10.1.2.4", &m4));
	CHECK(!match("10.0.0.0/8", &p6));
	CHECK(match("0.0.0.0/0", &o4));
	CHECK(!match("0.0.0.0/0", &p6));
	CHECK(match("2001:db8::/32", &p6));
	CHECK(!match("2001:db8::/32", &o6));
	CHECK(!match("2001:db8::/32", &p4));
	CHECK(match("::1", &lo6));
	CHECK(!match("::1", &lo4));
	CHECK(!match("::/0", &p4)); /* an IPv6 block matches IPv4 peers only inside ::ffff:0:0/96 */
	CHECK(match("::/0", &p6));
	CHECK(match("::ffff:10.0.0.0/104", &p4));
	CHECK(match("::ffff:10.0.0.0/104", &m4));
	CHECK(!match("::ffff:10.0.0.0/104", &o4));
	CHECK(match("::ffff:0:0/96", &o4));
	CHECK(match("10.1.2.2/31", &p4));
	CHECK(!match("10.1.2.4/31", &p4));
	CHECK(match("10.1.2.3/32", &p4));
	struct sockaddr_storage unix_sa;
	memset(&unix_sa, 0, sizeof unix_sa);
	unix_sa.ss_family = AF_UNIX;
	CHECK(!match("0.0.0.0/0", &unix_sa));
	CHECK(cfg_parse_cidr("0.0.0.0/0", &c) && !cfg_cidr_match(&c, NULL));
}

TEST(binds)
{
	struct sockaddr_storage ss;
	socklen_t len;
	char ip[64];
	CHECK(cfg_parse_bind("1883", &ss, &len));
	struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
	CHECK(ss.ss_family == AF_INET && len == sizeof(struct sockaddr_in) && ntohs(a4->sin_port) == 1883 &&
	      a4->sin_addr.s_addr == htonl(INADDR_ANY));
	CHECK(cfg_parse_bind(":1883", &ss, &len) && a4->sin_addr.s_addr == htonl(INADDR_ANY));
	CHECK(cfg_parse_bind("0.0.0.0:1883", &ss, &len) && ntohs(a4->sin_port) == 1883);
	CHECK(cfg_parse_bind("127.0.0.1:8883", &ss, &len) && ntohs(a4->sin_port) == 8883);
	inet_ntop(AF_INET, &a4->sin_addr, ip, sizeof ip);
	CHECK_STR(ip, "127.0.0.1");
	CHECK(cfg_parse_bind("1.2.3.4:65535", &ss, &len) && ntohs(a4->sin_port) == 65535);
	CHECK(cfg_parse_bind("[::1]:1883", &ss, &len));
	struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
	CHECK(ss.ss_family == AF_INET6 && len == sizeof(struct sockaddr_in6) && ntohs(a6->sin6_port) == 1883);
	inet_ntop(AF_INET6, &a6->sin6_addr, ip, sizeof ip);
	CHECK_STR(ip, "::1");
	CHECK(cfg_parse_bind("[::]:8883", &ss, &len) && ntohs(a6->sin6_port) == 8883);
	static const char *const bad[] = {
		"", "0", "65536", "1883x", "x:1883", "localhost:1883", "0.0.0.0:", "0.0.0.0:0", "::1:1883",
		"[::1]", "[::1]1883", "[::1]:", "[1.2.3.4]:1883", "1.2.3:1883", "0.0.0.0:-1", "0.0.0.0:+1",
		" 1883", "1883 ", "0.0.0.0:188 3", "0.0.0.0:018830", "[::1]:1883:1", "256.0.0.1:1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (cfg_parse_bind(bad[i], &ss, &len)) {
			fprintf(stderr, "  bind \"%s\" accepted\n", bad[i]);
			CHECK(0);
		}
	}
	CHECK(!cfg_parse_bind(NULL, &ss, &len));
}

int main(void)
{
	RUN(basic_objects_and_separators);
	RUN(root_braces_optional);
	RUN(crlf_and_whitespace);
	RUN(dotted_and_quoted_keys);
	RUN(strings_quoted_escapes);
	RUN(strings_unquoted);
	RUN(comments_and_double_slash);
	RUN(concatenation);
	RUN(numbers_booleans_null);
	RUN(triple_quoted);
	RUN(positions);
	RUN(merge_semantics);
	RUN(append);
	RUN(get_path_and_member);
	RUN(arrays_nested);
	RUN(env_substitution);
	RUN(error_messages);
	RUN(error_file_name_and_null_err);
	RUN(depth_limit);
	RUN(large_inputs_linear);
	RUN(include_files);
	RUN(shared_examples);
	RUN(emqx_style_config);
	RUN(durations);
	RUN(bytesizes);
	RUN(rates);
	RUN(cidrs);
	RUN(binds);
	return unit_summary();
}
