/* Variform expressions (auth/variform.c): scanner and parser, compile-time refusals, every
 * built-in function, EMQX's unbound-variable rules, limits, the PCRE -> ERE translation; then
 * mqtt.client_attrs_init (auth/attrs_init.c) through config_load_string, and SAN extraction
 * (tls/identity.c). */
#include <openssl/evp.h>
#include <openssl/x509v3.h>

#include "auth/attrs_init.h"
#include "auth/variform.c" /* static helpers: vre_compile, vre_exec */
#include "config/config.h"
#include "tls/identity.h"
#include "unit.h"

/* ---- a test environment of variables ---- */

static const char *const list3[] = { "a.example", "b.example", "c.example" };
static const char *g_clientid = "g1-dev-42";
static const char *g_up_n;    /* user_property.n, NULL = unbound */
static const char *g_up_bin;  /* user_property.bin with an embedded NUL */

enum { T_CLIENTID, T_USERNAME, T_CN, T_DN, T_EMPTY, T_LIST, T_NOLIST, T_UP_N, T_UP_BIN, T_UNBOUND };

static int tresolve(const char *name, void *ud, enum variform_var_kind *kind)
{
	(void)ud;
	static const char *const names[] = { "clientid", "username", "cn", "dn", "empty", "list", "nolist",
					     "user_property.n", "user_property.bin", "unbound", NULL };
	for (int i = 0; names[i]; i++) {
		if (strcmp(names[i], name) == 0) {
			*kind = (i == T_LIST || i == T_NOLIST) ? VARIFORM_VAR_LIST : VARIFORM_VAR_STRING;
			return i;
		}
	}
	return -1;
}

static bool tlookup(void *ud, int id, const char *name, struct variform_value *out)
{
	(void)ud, (void)name;
	out->kind = VARIFORM_VAR_STRING;
	switch (id) {
	case T_CLIENTID: out->s = g_clientid; out->len = strlen(g_clientid); return true;
	case T_USERNAME: out->s = "alice"; out->len = 5; return true;
	case T_CN: out->s = "device-123"; out->len = 10; return true;
	case T_DN: out->s = "CN=device-123,O=Acme,C=SE"; out->len = strlen(out->s); return true;
	case T_EMPTY: out->s = ""; out->len = 0; return true;
	case T_LIST:
		out->kind = VARIFORM_VAR_LIST;
		out->items = list3;
		out->n = 3;
		return true;
	case T_NOLIST:
		out->kind = VARIFORM_VAR_LIST;
		out->n = 0;
		return true;
	case T_UP_N:
		if (!g_up_n)
			return false;
		out->s = g_up_n;
		out->len = strlen(g_up_n);
		return true;
	case T_UP_BIN:
		if (!g_up_bin)
			return false;
		out->s = g_up_bin;
		out->len = 3;
		return true;
	default:
		return false;
	}
}

static char last_err[512];
static size_t last_len;

/* Compile and evaluate; NULL when either fails (last_err says why; compile failures are
 * prefixed "compile: "). */
static char *run(const char *text)
{
	char err[400];
	struct variform *e = variform_compile(text, strlen(text), tresolve, NULL, NULL, err, sizeof err);
	if (!e) {
		snprintf(last_err, sizeof last_err, "compile: %s", err);
		return NULL;
	}
	CHECK_STR(variform_text(e), text);
	char *r = variform_eval(e, tlookup, NULL, &last_len, err, sizeof err);
	if (!r)
		snprintf(last_err, sizeof last_err, "%s", err);
	variform_free(e);
	return r;
}

static int eq_failures;

static void eq(const char *expr, const char *want, int line)
{
	char *r = run(expr);
	if (!r || strcmp(r, want) != 0) {
		fprintf(stderr, "line %d: %s => %s%s%s (want \"%s\")\n", line, expr, r ? "\"" : "ERROR ", r ? r : last_err,
			r ? "\"" : "", want);
		unit_failures++;
		unit_current_failed = 1;
		eq_failures++;
	}
	free(r);
}

/* Evaluation fails (the expression compiles). */
static void fails(const char *expr, const char *why, int line)
{
	char *r = run(expr);
	if (r || strncmp(last_err, "compile:", 8) == 0 || (why && !strstr(last_err, why))) {
		fprintf(stderr, "line %d: %s => %s (want an evaluation error containing \"%s\")\n", line, expr,
			r ? r : last_err, why ? why : "");
		unit_failures++;
		unit_current_failed = 1;
	}
	free(r);
}

/* Compilation fails with a message containing why. */
static void refused(const char *expr, const char *why, int line)
{
	char *r = run(expr);
	if (r || strncmp(last_err, "compile:", 8) != 0 || !strstr(last_err, why)) {
		fprintf(stderr, "line %d: %s => %s (want a compile error containing \"%s\")\n", line, expr,
			r ? r : last_err, why);
		unit_failures++;
		unit_current_failed = 1;
	}
	free(r);
}

#define EQ(e, w) eq(e, w, __LINE__)
#define FAILS(e, w) fails(e, w, __LINE__)
#define REFUSED(e, w) refused(e, w, __LINE__)

/* ---- syntax ---- */

TEST(emqx_doc_examples)
{
	EQ("nth(1, tokens(clientid, '-'))", "g1");
	EQ("regex_extract(cn, '^device-([0-9]+)$')", "123");
	EQ("substr(dn, 0, 5)", "CN=de");
	EQ("concat([username, '-', cn])", "alice-device-123");
	EQ("nth(1, tokens(clientid, '.'))", "g1-dev-42");
	EQ("coalesce(regex_extract(clientid,'[0-9]+'),'vin-1000')", "vin-1000"); /* no group: [] */
	EQ("iif(true, \"Value if true\", \"Value if false\")", "Value if true");
	EQ("iif('', 'Value if true', 'Value if false')", "Value if false");
	EQ("iif('hello', 'Value if true', 'Value if false')", "Value if true");
	EQ("iif(regex_match(clientid,'^g1-'),'foo','bar')", "foo");
	EQ("nth(1, tokens(clientid, unescape('\\n')))", "g1-dev-42");
}

TEST(literals_and_syntax)
{
	EQ("'single'", "single");
	EQ("\"double\"", "double");
	EQ("\"it's\"", "it's");
	EQ("'say \"hi\"'", "say \"hi\"");
	EQ("42", "42");
	EQ("-7", "-7");
	EQ("+7", "7");
	EQ("1.5", "1.5");
	EQ("2.0", "2.0");
	EQ("0.1234567890123", "0.123456789");
	EQ("true", "true");
	EQ("false", "false");
	EQ("clientid", "g1-dev-42");
	EQ("  \t\n lower( 'ABC' )  \r\n", "abc");
	EQ("concat('a',\"b\",'c')", "abc");
	EQ("concat([['a', 'b'], 'c'])", "abc");
	EQ("emqx_variform_bif.lower('AB')", "ab");
	EQ("coalesce()", "");
	REFUSED("", "empty expression");
	REFUSED("   ", "empty expression");
	REFUSED("nth(1,", "column 7");
	REFUSED("lower(", "expected a function call");
	REFUSED("'abc", "unterminated string");
	REFUSED("lower('a'", "expected ',' or ')'");
	REFUSED("clientid username", "unexpected a name after the end");
	REFUSED("lower('a'))", "unexpected ')'");
	REFUSED("['a']", "expected a function call");
	REFUSED("concat([])", "empty array");
	REFUSED("concat(['a' 'b'])", "expected ',' or ']'");
	REFUSED("lower(@)", "unexpected character '@'");
	REFUSED("lower(1.)", "column 8");
	REFUSED("99999999999999999999", "integer out of range");
	REFUSED("1.0e999", "float out of range");
	REFUSED("lower(,)", "column 7");
	REFUSED("1abc", "unexpected a name");
	REFUSED("-x", "unexpected character '-'");
	/* the scanner takes '-' and '.' inside names, as EMQX's */
	REFUSED("client-id", "unknown variable client-id");
	char *nul = "lower('a\0b')";
	char err[200];
	CHECK(variform_compile(nul, 12, tresolve, NULL, NULL, err, sizeof err) == NULL);
	CHECK(strstr(err, "NUL") != NULL);
}

TEST(unknown_names_and_arity)
{
	REFUSED("tokenz(clientid, '-')", "unknown function tokenz");
	REFUSED("lists.nth(1, list)", "module-qualified functions are not supported");
	REFUSED("jwt_value(clientid, 'x')", "unknown function jwt_value");
	REFUSED("foo", "unknown variable foo");
	REFUSED("lower(user_property)", "unknown variable user_property");
	REFUSED("lower()", "lower takes 1 argument, got 0");
	REFUSED("lower('a', 'b')", "lower takes 1 argument, got 2");
	REFUSED("substr('a')", "substr takes 2 to 3 arguments, got 1");
	REFUSED("join_to_string(',', list, 'x')", "join_to_string takes 1 to 2 arguments, got 3");
	REFUSED("concat()", "concat takes at least 1 arguments");
	REFUSED("iif(true, 'a')", "iif takes 3 arguments");
	/* the var_hint */
	char err[300];
	CHECK(variform_compile("nope", 4, tresolve, NULL, "(known: x)", err, sizeof err) == NULL);
	CHECK(strstr(err, "unknown variable nope (known: x)") != NULL);
	CHECK(variform_compile("nope", 4, NULL, NULL, NULL, err, sizeof err) == NULL);
	/* every documented name resolves */
	for (const char *const *f = variform_function_names; *f; f++) {
		char t[100];
		snprintf(t, sizeof t, "%s(1, 2, 3, 4, 5, 6)", *f);
		char *r = run(t);
		CHECK(r == NULL || strcmp(*f, "concat") == 0 || strcmp(*f, "coalesce") == 0);
		CHECK(strstr(last_err, "unknown function") == NULL);
		free(r);
	}
}

TEST(static_types)
{
	REFUSED("lower(list)", "argument 1 of lower must be a string, got an array");
	REFUSED("lower(1)", "argument 1 of lower must be a string, got an integer");
	REFUSED("substr(clientid, '0')", "argument 2 of substr must be an integer, got a string");
	REFUSED("nth(1, clientid)", "argument 2 of nth must be an array, got a string");
	REFUSED("nth(true, list)", "argument 1 of nth must be a string or an integer");
	REFUSED("num_eq('1', 1)", "argument 1 of num_eq must be a number");
	REFUSED("sprintf_s('~s', 'a')", "argument 2 of sprintf_s must be an array");
	REFUSED("lower(strlen('a'))", "must be a string, got an integer");
	REFUSED("lower(regex_match('a', 'a'))", "got a boolean");
	REFUSED("join_to_string(list, list)", "argument 1 of join_to_string must be a string");
	/* literal arguments checked at load */
	REFUSED("split(clientid, '-', 'all')", "split: argument 3 must be one of notrim, leading");
	REFUSED("pad(clientid, 3, 'middle')", "pad: argument 3 must be one of trailing, both, leading");
	REFUSED("replace(clientid, 'a', 'b', 'first')", "replace: argument 4 must be one of all, leading, trailing");
	REFUSED("find(clientid, 'a', 'x')", "find: argument 3 must be one of leading, trailing");
	REFUSED("tokens(clientid, '-', 'crlf')", "tokens: argument 3 must be 'nocrlf'");
	REFUSED("not('yes')", "not: the argument must be true or false");
	REFUSED("hash('md6', clientid)", "hash: unknown algorithm");
	REFUSED("sprintf_s('~x', [clientid])", "unsupported directive ~x");
	REFUSED("sprintf_s('~s~s', [clientid])", "needs 2 arguments, got 1");
	REFUSED("substr(clientid, -1)", "must not be negative");
	REFUSED("pad(clientid, -1)", "must not be negative");
	REFUSED("nth(0, list)", "nth: argument 1 must be 1 or more");
	REFUSED("rand_str(0)", "must be 1 or more");
	REFUSED("regex_match(clientid, '(')", "regex_match: regex:");
}

/* ---- functions ---- */

TEST(case_trim_reverse_len)
{
	EQ("lower('AbC-1')", "abc-1");
	EQ("upper('AbC-1')", "ABC-1");
	EQ("lower('')", "");
	EQ("upper('\xff')", "\xff"); /* invalid UTF-8 passes through */
	pthread_once(&utf8_once, utf8_init);
	if (utf8_loc) {
		EQ("lower('\xC3\x85\xC3\x84\xC3\x96')", "\xC3\xA5\xC3\xA4\xC3\xB6");
		EQ("upper('\xC3\xA5r')", "\xC3\x85R");
	}
	EQ("trim('  a b \t')", "a b");
	EQ("ltrim('  a b  ')", "a b  ");
	EQ("rtrim('  a b  ')", "  a b");
	EQ("trim('   ')", "");
	EQ("trim('xxaxyx', 'xy')", "a");
	EQ("ltrim('xxaxyx', 'xy')", "axyx");
	EQ("rtrim('xxaxyx', 'xy')", "xxa");
	EQ("trim('\xC3\xA5" "a\xC3\xA5', '\xC3\xA5')", "a");
	EQ("trim('\xC3\xA5" "xa\xC3\xA4\xC3\xA5', 'x\xC3\xA4\xC3\xA5')", "a");
	EQ("reverse('abc')", "cba");
	EQ("reverse('a\xC3\xA5" "b')", "b\xC3\xA5" "a");
	EQ("reverse('')", "");
	EQ("strlen('abc')", "3");
	EQ("strlen('a\xC3\xA5')", "2");
	EQ("strlen(empty)", "0");
	EQ("rm_prefix('prefix-x', 'prefix-')", "x");
	EQ("rm_prefix('x', 'prefix-')", "x");
	EQ("rm_prefix('abc', '')", "abc");
}

TEST(substr_split_tokens)
{
	EQ("substr('hello', 1)", "ello");
	EQ("substr('hello', 1, 3)", "ell");
	EQ("substr('hello', 0, 0)", "");
	EQ("substr('hello', 3, 100)", "lo");
	EQ("substr('hello', 9)", "");
	EQ("substr('\xC3\xA5\xC3\xA4\xC3\xB6', 1, 1)", "\xC3\xA4");
	FAILS("substr('abc', map_to_range(-1, 0, 5))", "substr: negative start");
	FAILS("substr('abc', 0, map_to_range(-1, 0, 5))", "substr: negative length");
	EQ("split('a--b-c', '-')", "a,b,c");
	EQ("nth(2, split('a--b-c', '-', 'notrim'))", "");
	EQ("join_to_string('|', split('a--b-c', '-', 'notrim'))", "a||b|c");
	EQ("join_to_string('|', split('a-b-c', '-', 'leading'))", "a|b-c");
	EQ("join_to_string('|', split('-b-c', '-', 'leading'))", "b-c");
	EQ("join_to_string('|', split('-b-c', '-', 'leading_notrim'))", "|b-c");
	EQ("join_to_string('|', split('a-b-c', '-', 'trailing'))", "a-b|c");
	EQ("join_to_string('|', split('a-b-', '-', 'trailing_notrim'))", "a-b|");
	EQ("join_to_string('|', split('abc', '-'))", "abc");
	EQ("join_to_string('|', split('a::b', '::'))", "a|b");
	EQ("split('', '-')", "");
	EQ("join_to_string('|', tokens('a-b_c--d', '-_'))", "a|b|c|d");
	EQ("tokens('---', '-')", "");
	EQ("join_to_string('|', tokens('l1\r\nl2', ' ', 'nocrlf'))", "l1|l2");
	EQ("nth(3, tokens('a b c', ' '))", "c");
	EQ("nth(4, tokens('a b c', ' '))", "");
	EQ("nth('2', tokens('a b c', ' '))", "b");
	FAILS("nth('x', tokens('a b c', ' '))", "nth: the index is not an integer");
	g_up_n = "0";
	FAILS("nth(user_property.n, list)", "nth: the index must be 1 or more");
	g_up_n = "2";
	EQ("nth(user_property.n, list)", "b.example");
	g_up_n = NULL;
}

TEST(concat_sprintf_pad_replace_find)
{
	EQ("concat(username, '-', strlen(username), '-', true, '-', 1.5)", "alice-5-true-1.5");
	EQ("concat(list)", "a.exampleb.examplec.example");
	EQ("concat('only')", "only");
	EQ("sprintf_s('~s/~s', [username, cn])", "alice/device-123");
	EQ("sprintf('~s', [clientid])", "g1-dev-42");
	EQ("sprintf_s('~p ~w ~b ~~~n', [username, strlen(username), 7])", "<<\"alice\">> 5 7 ~\n");
	EQ("sprintf_s('~p', [list])", "[<<\"a.example\">>,<<\"b.example\">>,<<\"c.example\">>]");
	EQ("sprintf_s('~s', [list])", "a.exampleb.examplec.example");
	EQ("sprintf_s('~ts!', [true])", "true!");
	FAILS("sprintf_s('~s', [1])", "~s needs a string");
	FAILS("sprintf_s('~b', ['x'])", "~b needs an integer");
	FAILS("sprintf_s(concat('~', 'q'), [1])", "unsupported directive");
	FAILS("sprintf_s(concat('~s'), [1, 2])", "needs 1 arguments, got 2");
	EQ("pad('ab', 5)", "ab   ");
	EQ("pad('ab', 5, 'leading')", "   ab");
	EQ("pad('ab', 5, 'both')", " ab  ");
	EQ("pad('ab', 5, 'trailing', '0')", "ab000");
	EQ("pad('ab', 5, 'leading', '0')", "000ab");
	EQ("pad('abcdef', 3)", "abcdef");
	EQ("pad('\xC3\xA5', 2, 'leading', '.')", ".\xC3\xA5");
	EQ("pad('ab', 4, 'leading', '')", "ab");
	FAILS("pad('ab', 300000)", "length above");
	EQ("replace('a-b-c', '-', '+')", "a+b+c");
	EQ("replace('a-b-c', '-', '+', 'all')", "a+b+c");
	EQ("replace('a-b-c', '-', '+', 'leading')", "a+b-c");
	EQ("replace('a-b-c', '-', '+', 'trailing')", "a-b+c");
	EQ("replace('a-b-c', '-', '')", "abc");
	EQ("replace('aaa', 'aa', 'b')", "ba");
	EQ("replace('abc', '', 'x')", "abc");
	EQ("replace('abc', 'x', 'y')", "abc");
	EQ("find('a.b.c', '.')", ".b.c");
	EQ("find('a.b.c', '.', 'trailing')", ".c");
	EQ("find('a.b.c', 'x')", "");
	EQ("find('abc', '')", "abc");
	EQ("strlen(find(concat(pad('', 3000, 'trailing', 'ab'), 'x', pad('', 3000, 'trailing', 'ab')), "
	   "pad('', 300, 'trailing', 'ab'), 'trailing'))", "600");
	EQ("strlen(find(pad('', 3000, 'trailing', 'ab'), 'ba', 'trailing'))", "3");
	EQ("find(pad('', 3000, 'trailing', 'ab'), 'abc', 'trailing')", "");
	EQ("nth(2, split(concat(pad('', 2000, 'trailing', 'ab'), pad('', 300, 'trailing', 'xy'), 'z'), "
	   "pad('', 300, 'trailing', 'xy'), 'trailing'))", "z");
	EQ("strlen(nth(1, split(concat(pad('', 2000, 'trailing', 'ab'), pad('', 300, 'trailing', 'xy'), 'z'), "
	   "pad('', 300, 'trailing', 'xy'), 'trailing')))", "4000");
	EQ("ascii('A')", "65");
	FAILS("ascii('')", "ascii: empty string");
	EQ("join_to_string(list)", "a.example, b.example, c.example");
	EQ("join_to_string('', [1, 'x', true])", "1xtrue");
	EQ("join_to_string(',', nolist)", "");
}

TEST(unescape_and_conversions)
{
	EQ("unescape('a\\tb')", "a\tb");
	EQ("unescape(\"\\\\ \\' \\? \\a \\b \\f \\v \\r \\n\")", "\\ ' ? \a \b \f \v \r \n");
	EQ("unescape('\\\"')", "\"");
	EQ("unescape('\\x41\\x42')", "AB");
	EQ("unescape('\\xe5')", "\xC3\xA5");
	EQ("unescape('\\x41BC')", "\xE4\x86\xBC"); /* greedy hex, as EMQX: U+41BC */
	FAILS("unescape('\\q')", "unrecognized escape sequence \\q");
	FAILS("unescape('a\\')", "lone backslash");
	FAILS("unescape('\\xD800')", "not a Unicode code point");
	FAILS("unescape('\xff')", "invalid UTF-8");
	EQ("any_to_str(42)", "42");
	EQ("any_to_string(false)", "false");
	EQ("any_to_str(list)", "a.exampleb.examplec.example");
	EQ("is_empty_val('')", "true");
	EQ("is_empty_val(nolist)", "true");
	EQ("is_empty_val(list)", "false");
	EQ("is_empty_val(0)", "false");
	EQ("not(true)", "false");
	EQ("not(str_eq('a', 'b'))", "true");
	EQ("not('true')", "false");
	EQ("not('false')", "true");
	FAILS("not(concat('x'))", "not: the argument must be true or false");
}

TEST(encodings_and_hashes)
{
	EQ("bin2hexstr('ab\xff')", "6162FF");
	EQ("hexstr2bin('616263')", "abc");
	EQ("hexstr2bin('6A6b')", "jk");
	FAILS("hexstr2bin('616')", "odd number");
	FAILS("hexstr2bin('zz')", "not a hex digit");
	EQ("int2hexstr(255)", "FF");
	EQ("int2hexstr(-16)", "-10");
	EQ("int2hexstr(0)", "0");
	EQ("base64_encode('hello')", "aGVsbG8=");
	EQ("base64_encode('')", "");
	EQ("base64_decode('aGVsbG8=')", "hello");
	EQ("base64_decode('aGVsbG8')", "hello");
	EQ("base64_decode('aGVs\nbG8=')", "hello");
	FAILS("base64_decode('a@')", "not base64");
	FAILS("base64_decode('a')", "not base64");
	FAILS("base64_decode('aGVsbG8==')", "not base64");
	char *r = run("base64_decode('AGE=')");
	CHECK(r && last_len == 2 && r[0] == '\0' && r[1] == 'a');
	free(r);
	EQ("hash('md5', 'abc')", "900150983cd24fb0d6963f7d28e17f72");
	EQ("md5('abc')", "900150983cd24fb0d6963f7d28e17f72");
	EQ("hash('sha', 'abc')", "a9993e364706816aba3e25717850c26c9cd0d89d");
	EQ("hash('sha1', 'abc')", "a9993e364706816aba3e25717850c26c9cd0d89d");
	EQ("sha('abc')", "a9993e364706816aba3e25717850c26c9cd0d89d");
	EQ("hash('sha256', 'abc')", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	EQ("sha256('abc')", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
	EQ("hash('sha3_256', '')", "a7ffc6f8bf1ed76651c14756a061d662f580ff4de43b49fa82d80a4b80f8434a");
	EQ("hash('shake128', '')", "7f9c2ba4e88f827d616045507605853e");
	EQ("strlen(hash('sha512', 'abc'))", "128");
	EQ("strlen(hash('blake2b', 'abc'))", "128");
	EQ("strlen(hash('blake2s', 'abc'))", "64");
	FAILS("hash(concat('md6'), 'abc')", "unknown algorithm");
	/* sha256('abc') = 0xba78...15ad; mod 10 computed independently below */
	EQ("hash_to_range('abc', 1, 1)", "1");
	char *h = run("hash_to_range('abc', 0, 1000000)");
	CHECK(h && atoi(h) >= 0 && atoi(h) <= 1000000);
	char *h2 = run("hash_to_range('abc', 0, 1000000)");
	CHECK(h && h2 && strcmp(h, h2) == 0);
	free(h);
	free(h2);
	FAILS("hash_to_range('', 1, 2)", "empty input");
	FAILS("hash_to_range('a', 2, 1)", "above");
	EQ("map_to_range('A', 0, 9)", "5");  /* 65 mod 10 */
	EQ("map_to_range('AB', 0, 99)", "6"); /* 0x4142 = 16706 */
	EQ("map_to_range(17, 10, 14)", "12");
	EQ("map_to_range(-7, 0, 4)", "-2"); /* rem keeps the dividend's sign, as Erlang */
	FAILS("map_to_range('', 0, 4)", "empty input");
}

TEST(compare_and_random)
{
	EQ("str_eq(clientid, 'g1-dev-42')", "true");
	EQ("str_neq(clientid, 'x')", "true");
	EQ("str_comp('a', 'b')", "lt");
	EQ("str_comp('b', 'a')", "gt");
	EQ("str_comp('a', 'a')", "eq");
	EQ("str_comp('a', 'ab')", "lt");
	EQ("str_lt('a', 'b')", "true");
	EQ("str_lte('a', 'a')", "true");
	EQ("str_gt('a', 'b')", "false");
	EQ("str_gte('b', 'a')", "true");
	EQ("str_eq(5, '5')", "true");
	EQ("num_eq(1, 1.0)", "true");
	EQ("num_lt(-1, 2)", "true");
	EQ("num_gte(2.5, 2)", "true");
	EQ("num_comp(3, 2)", "gt");
	EQ("num_neq(strlen('ab'), 2)", "false");
	EQ("num_lte(1, 1)", "true");
	EQ("num_gt(1, 1)", "false");
	FAILS("num_eq(nth(1, ['1']), 1)", "argument 1 of num_eq must be a number, got a string");
	char *r = run("rand_str(12)");
	CHECK(r && strlen(r) == 12);
	for (size_t i = 0; r && r[i]; i++)
		CHECK(isalnum((unsigned char)r[i]));
	free(r);
	for (int k = 0; k < 50; k++) {
		r = run("rand_int(3)");
		CHECK(r && atoi(r) >= 1 && atoi(r) <= 3);
		free(r);
	}
	FAILS("rand_str(300000)", "length above");
	setenv("EMQXVAR_BW_TEST", "from-env", 1);
	EQ("getenv('BW_TEST')", "from-env");
	EQ("getenv('BW_TEST_UNSET')", "");
}

TEST(unbound_rules)
{
	/* EMQX: an unbound variable fails the expression, but coalesce/iif/is_empty see '' */
	g_up_n = NULL;
	FAILS("user_property.n", "variable user_property.n is unbound");
	FAILS("concat(user_property.n, 'x')", "unbound");
	FAILS("lower(unbound)", "unbound");
	EQ("coalesce(user_property.n, 'dflt')", "dflt");
	EQ("coalesce(lower(user_property.n), empty, 'dflt')", "dflt");
	EQ("coalesce([user_property.n, '', 'x', 'y'])", "x");
	EQ("coalesce(user_property.n)", "");
	EQ("coalesce(list)", "a.example");
	EQ("coalesce(nolist, 'd')", "d");
	EQ("coalesce(tokens('--a', '-'))", "a");
	EQ("coalesce('v')", "v");
	EQ("iif(user_property.n, 'set', 'unset')", "unset");
	EQ("is_empty(user_property.n)", "true");
	EQ("is_empty(username)", "false");
	EQ("is_empty(nolist)", "true");
	FAILS("iif(true, user_property.n, 'x')", "unbound"); /* only the condition is protected */
	EQ("iif(false, user_property.n, 'x')", "x");          /* the other branch is not evaluated */
	FAILS("is_empty_val(user_property.n)", "unbound");
	g_up_n = "7";
	EQ("coalesce(user_property.n, 'dflt')", "7");
	EQ("iif(user_property.n, 'set', 'unset')", "set");
	EQ("iif(str_eq(user_property.n, '8'), 'eight', 'other')", "other");
	EQ("iif(nolist, 'a', 'b')", "b");
	EQ("iif(0, 'a', 'b')", "a");
	EQ("iif('false', 'a', 'b')", "a"); /* a non-empty string is true, as in EMQX */
	g_up_n = NULL;
	/* other errors are not swallowed */
	FAILS("coalesce(base64_decode('@'), 'x')", "not base64");
}

TEST(final_value_and_bytes)
{
	EQ("list", "a.example,b.example,c.example"); /* Bulwark: arrays joined with ',' */
	EQ("nolist", "");
	EQ("regex_extract('k=v', '^(.*)=(.*)$')", "k,v");
	EQ("tokens('a b', ' ')", "a,b");
	g_up_bin = "a\0b";
	char *r = run("user_property.bin");
	CHECK(r && last_len == 3 && memcmp(r, "a\0b", 4) == 0);
	free(r);
	r = run("concat(user_property.bin, 'c')");
	CHECK(r && last_len == 4 && memcmp(r, "a\0bc", 5) == 0);
	free(r);
	EQ("strlen(user_property.bin)", "3");
	g_up_bin = NULL;
}

TEST(regexes)
{
	EQ("regex_match('abc', 'b')", "true");
	EQ("regex_match('abc', '^b')", "false");
	EQ("regex_match('abc', '')", "true");
	EQ("regex_match('a1', '\\d')", "true");
	EQ("regex_match('ab', '\\d')", "false");
	EQ("regex_match('a b', '\\s')", "true");
	EQ("regex_match('a_b', '^\\w+$')", "true");
	EQ("regex_match('a-b', '^\\w+$')", "false");
	EQ("regex_match('a-b', '\\W')", "true");
	EQ("regex_match('12', '\\D')", "false");
	EQ("regex_match('a.b', 'a\\.b')", "true");
	EQ("regex_match('axb', 'a\\.b')", "false");
	EQ("regex_match('1.5', '^[\\d.]+$')", "true");
	EQ("regex_match('a]', '^a[]]$')", "true");
	EQ("regex_match('a]', '^a[\\]x]$')", "true");
	EQ("regex_match('a^', '^a[\\^]$')", "true");
	EQ("regex_match('a-', '^a[a-]$')", "true");
	EQ("regex_match('a-', '^a[-^]$')", "true");
	EQ("regex_match('ab', '^a[^]]$')", "true");
	EQ("regex_match('a\\', '^a[\\\\]$')", "true");
	EQ("regex_match('ab1', '^[[:alpha:]]+[[:digit:]]$')", "true");
	EQ("regex_match('a_', '^[\\w]+$')", "true");
	EQ("regex_match('a\t', '^a[\\s]$')", "true");
	EQ("regex_match('aa', '^a{2}$')", "true");
	EQ("regex_match('a{x', '^a{x$')", "true");
	EQ("regex_match('a{}', '^a{}$')", "true");
	EQ("regex_match('ABC', '(?i)^abc$')", "true");
	EQ("regex_match('ABC', '^abc$')", "false");
	EQ("regex_match('foo bar', '\\bbar\\b')", "true");
	EQ("regex_match('foobar', '\\bbar\\b')", "false");
	EQ("regex_match('foo', '\\Afoo\\z')", "true");
	EQ("regex_match('a+b', 'a\\+b')", "true");
	EQ("regex_match('a/b', 'a\\/b')", "true");
	EQ("regex_match('A', '\\x41')", "true");
	EQ("regex_match('A', '\\x{41}')", "true");
	EQ("regex_match('a(b', 'a\\(b')", "true");
	EQ("regex_match('a|b', '^a\\|b$')", "true");
	EQ("regex_match('a$', 'a\\$')", "true");
	EQ("regex_match('\xC3\xA5', '^..$')", "true"); /* bytes, as EMQX's re without unicode */
	EQ("regex_extract('device-123', '^device-([0-9]+)$')", "123");
	EQ("nth(2, regex_extract('2021-05-20', '(\\d{4})-(\\d{2})-(\\d{2})'))", "05");
	EQ("regex_extract('ab', '(?:a)(b)')", "b");
	EQ("nth(2, regex_extract('xb', '(a)?(b)'))", "b");
	EQ("nth(1, regex_extract('xb', '(a)?(b)'))", "");
	EQ("regex_extract('none', '([0-9]+)')", "");
	EQ("regex_extract('abc', 'b')", "");
	EQ("regex_replace('a1b22', '[0-9]+', '#')", "a#b#");
	EQ("regex_replace('xab', 'x*', '-')", "--a-b-");
	EQ("regex_replace('ab', '(a)(b)', '\\2\\1&')", "baab");
	EQ("regex_replace('ab', '(a)(b)', '\\g2\\g{1}')", "ba");
	EQ("regex_replace('ab', 'a', '\\&\\\\')", "&\\b");
	EQ("regex_replace('ab', 'a', '\\9')", "b");
	EQ("regex_replace('aaa', '^a', 'b')", "baa");
	EQ("regex_replace('', 'x*', 'y')", "y");
	EQ("regex_replace(clientid, concat('[', '0-9', ']'), '')", "g-dev-"); /* compiled at evaluation */
	FAILS("regex_match('a', concat('(', ''))", "regex");
	EQ("regex_match(pad('', 4096, 'trailing', 'a'), 'a$')", "true");
	FAILS("regex_match(pad('', 4097, 'trailing', 'a'), 'a$')", "regex_match: the text to search is longer than 4096");
	FAILS("regex_replace(pad('', 4097, 'trailing', 'a'), 'a', 'b')", "longer than 4096");
	FAILS("regex_extract(pad('', 4097, 'trailing', 'a'), '(a)')", "longer than 4096");
	REFUSED("regex_match('a', 'a*?')", "lazy and possessive");
	REFUSED("regex_match('a', 'a++')", "lazy and possessive");
	REFUSED("regex_match('a', 'a{2}?')", "lazy and possessive");
	REFUSED("regex_match('a', '(?=a)')", "(?=...) groups are not supported");
	REFUSED("regex_match('a', '(?<n>a)')", "groups are not supported");
	REFUSED("regex_match('a', '(a)\\1')", "back-references");
	REFUSED("regex_match('a', '\\p{L}')", "\\p is not supported");
	REFUSED("regex_match('a', '[\\D]')", "\\D inside [...] is not supported");
	REFUSED("regex_match('a', '[[:word:]]')", "unknown or unterminated character class");
	REFUSED("regex_match('a', '[a')", "missing ]");
	REFUSED("regex_match('a', 'a\\')", "lone backslash");
	REFUSED("regex_match('a', '\\x{100}')", "above \\xFF");
	REFUSED("regex_match('a', '\\x00')", "NUL");
	REFUSED("regex_match('a', '[z-a]')", "range out of order");
	REFUSED("regex_match('a', '[!-\\]]')", "ranges that start or end");
	REFUSED("regex_match('a', '[[.a.]]')", "collating");
	/* automaton size: counted repetitions expanded, nested ones multiplied */
	EQ("regex_match(clientid, '^[a-z0-9]{1,64}-[a-z]{3}-[0-9]{1,1000}$')", "true");
	EQ("regex_match('aaaa', '^(a{2}){2}$')", "true");
	EQ("regex_match('ab', '^(?:(?:[ab]{10}){10}){10}|ab$')", "true");
	REFUSED("regex_match('a', 'a{2001}')", "too large once repetitions are expanded");
	REFUSED("regex_match('a', '(a{100}){100}')", "too large");
	REFUSED("regex_match('a', '((a{10}){10}){30}')", "too large");
	REFUSED("regex_match('a', '(a{1000}b{1000}){2}')", "too large");
	REFUSED("regex_match('a', 'a{99999999999999999999999}')", "too large");
	REFUSED("regex_match('a', '((((a{40}')", "regex: Unmatched (");
	FAILS("regex_match('a', concat('(x{50})', '{50}'))", "too large");
	REFUSED("regex_extract('a', '(((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((((a)))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))))')",
		"more than 64 groups");
}

TEST(limits)
{
	char big[VARIFORM_MAX_TEXT + 10];
	memset(big, ' ', sizeof big - 1);
	big[sizeof big - 1] = '\0';
	big[0] = 'x';
	REFUSED(big, "longer than");
	/* nesting */
	char deep[400] = "";
	for (int i = 0; i < 33; i++)
		strcat(deep, "lower(");
	strcat(deep, "'a'");
	for (int i = 0; i < 33; i++)
		strcat(deep, ")");
	REFUSED(deep, "nested deeper than");
	char ok[400] = "";
	for (int i = 0; i < 31; i++)
		strcat(ok, "lower(");
	strcat(ok, "'A'");
	for (int i = 0; i < 31; i++)
		strcat(ok, ")");
	EQ(ok, "a");
	char arr[400] = "concat(";
	for (int i = 0; i < 33; i++)
		strcat(arr, "[");
	strcat(arr, "'a'");
	for (int i = 0; i < 33; i++)
		strcat(arr, "]");
	strcat(arr, ")");
	REFUSED(arr, "nested deeper than");
	/* strings and memory */
	FAILS("pad('a', 262145)", "length above");
	EQ("strlen(pad('a', 262144))", "262144");
	FAILS("concat(pad('a', 262144), 'b')", "exceed 256 KiB");
	FAILS("replace(pad('a', 200000, 'trailing', 'a'), 'a', 'aa')", "exceed 256 KiB");
	FAILS("base64_encode(pad('a', 262144))", "exceed");
	/* many arrays of big strings: the per-evaluation memory budget */
	char mem[2000] = "nth(1, [";
	for (int i = 0; i < 70; i++)
		strcat(mem, i ? ", pad('a', 262144)" : "pad('a', 262144)");
	strcat(mem, "])");
	FAILS(mem, "MiB");
	/* array size */
	FAILS("tokens(pad('', 100000, 'trailing', 'a-'), '-')", "65536 elements");
}

/* Concurrent evaluation of one compiled expression (it is shared by worker threads). */
static struct variform *shared_expr;

static void *worker(void *arg)
{
	(void)arg;
	for (int i = 0; i < 300; i++) {
		char err[200];
		size_t len;
		char *r = variform_eval(shared_expr, tlookup, NULL, &len, err, sizeof err);
		if (!r || strcmp(r, "123|CN=device-123") != 0)
			__atomic_add_fetch(&eq_failures, 1000, __ATOMIC_RELAXED);
		free(r);
	}
	return NULL;
}

TEST(threads_share_a_compiled_expression)
{
	const char *t = "concat(regex_extract(cn, '-([0-9]+)$'), '|', regex_replace(dn, ',.*$', ''), "
			"nth(1, split(lower('A'), 'a')))";
	char err[200];
	shared_expr = variform_compile(t, strlen(t), tresolve, NULL, NULL, err, sizeof err);
	CHECK(shared_expr != NULL);
	if (!shared_expr)
		return;
	int before = eq_failures;
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, worker, NULL);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK_EQ_INT(eq_failures, before);
	variform_free(shared_expr);
}

/* ---- mqtt.client_attrs_init ---- */

static struct config *cfg_of(const char *text, char *err, size_t errlen)
{
	return config_load_string(text, "t.conf", err, errlen);
}

TEST(config_parse)
{
	char err[600];
	struct config *c = cfg_of("mqtt.client_attrs_init = [\n"
				  "  { expression = \"nth(1, tokens(clientid, '-'))\", set_as_attr = group },\n"
				  "  { expression = \"\"\"regex_extract(cn, '^device-(\\d+)$')\"\"\", set_as_attr = \"dev-num_1\" }\n"
				  "]\n",
				  err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK(c->attrs_init && c->attrs_init->n == 2);
	CHECK_STR(c->attrs_init->v[1].name, "dev-num_1");
	config_free(c);
	c = cfg_of("mqtt { client_attrs_init = [] }", err, sizeof err);
	CHECK(c && c->attrs_init == NULL);
	config_free(c);
	c = cfg_of("mqtt { }", err, sizeof err);
	CHECK(c && c->attrs_init == NULL);
	config_free(c);

	struct {
		const char *text, *want;
	} bad[] = {
		{ "mqtt.client_attrs_init = [\n { expression = \"nth(1, tokens(clientid, '-')\", set_as_attr = g }\n]",
		  "t.conf:2: mqtt.client_attrs_init[1].expression: column" },
		{ "mqtt.client_attrs_init = [\n { expression = \"clientid\", set_as_attr = a },\n"
		  " { expression = \"nope(clientid)\", set_as_attr = b }\n]",
		  "t.conf:3: mqtt.client_attrs_init[2].expression: column 1: unknown function nope" },
		{ "mqtt.client_attrs_init = [ { expression = \"cn2\", set_as_attr = a } ]",
		  "mqtt.client_attrs_init[1].expression: column 1: unknown variable cn2 (known: clientid" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = \"a b\" } ]",
		  "t.conf:1: mqtt.client_attrs_init[1].set_as_attr: expected 1 to 64 letters" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = \"\" } ]",
		  "mqtt.client_attrs_init[1].set_as_attr: expected" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = "
		  "\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\" } ]",
		  "set_as_attr: expected 1 to 64" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = \"a.b\" } ]",
		  "set_as_attr: expected" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\" } ]",
		  "mqtt.client_attrs_init[1]: set_as_attr is required" },
		{ "mqtt.client_attrs_init = [ { set_as_attr = a } ]", "mqtt.client_attrs_init[1]: expression is required" },
		{ "mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = a, extra = 1 } ]",
		  "mqtt.client_attrs_init[1].extra: unknown key" },
		{ "mqtt.client_attrs_init = [ \"clientid\" ]", "mqtt.client_attrs_init[1]: expected an object" },
		{ "mqtt.client_attrs_init = { expression = \"clientid\", set_as_attr = a }",
		  "mqtt.client_attrs_init: expected an array" },
		{ "mqtt.client_attrs_init = [ { expression = [1], set_as_attr = a } ]",
		  "mqtt.client_attrs_init[1].expression: expected a string" },
		{ "mqtt.client_attrs_init = [ { expression = \"\", set_as_attr = a } ]", "empty expression" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		c = cfg_of(bad[i].text, err, sizeof err);
		CHECK(c == NULL);
		if (!strstr(err, bad[i].want)) {
			fprintf(stderr, "bad[%zu]: got \"%s\", want \"%s\"\n", i, err, bad[i].want);
			CHECK(0);
		}
		config_free(c);
	}
}

static struct attrs_init_cfg *attrs_of(struct config **keep, const char *entries)
{
	char text[4096], err[600];
	snprintf(text, sizeof text, "mqtt.client_attrs_init = [\n%s\n]\n", entries);
	*keep = cfg_of(text, err, sizeof err);
	if (!*keep)
		fprintf(stderr, "config: %s\n", err);
	return *keep ? (*keep)->attrs_init : NULL;
}

TEST(eval_sets_attributes)
{
	struct config *cfg;
	struct attrs_init_cfg *c = attrs_of(&cfg, "{ expression = \"nth(1, tokens(clientid, '-'))\", set_as_attr = group }\n"
						 "{ expression = \"regex_extract(cn, '^device-([0-9]+)$')\", set_as_attr = devnum }\n"
						 "{ expression = \"substr(dn, 0, 5)\", set_as_attr = dn5 }\n"
						 "{ expression = \"concat([username, '-', cn])\", set_as_attr = uc }\n"
						 "{ expression = \"user_property.tenant\", set_as_attr = tenant }\n"
						 "{ expression = \"user_property.missing\", set_as_attr = missing }\n"
						 "{ expression = \"coalesce(user_property.missing, 'dflt')\", set_as_attr = dflt }\n"
						 "{ expression = \"username\", set_as_attr = empty }\n"
						 "{ expression = \"user_property.ctl\", set_as_attr = ctl }\n"
						 "{ expression = \"hexstr2bin('ff')\", set_as_attr = bad8 }\n"
						 "{ expression = \"hexstr2bin('c285')\", set_as_attr = c1 }\n"
						 "{ expression = \"concat(zone, '/', listener, '/', peersni)\", set_as_attr = where }\n"
						 "{ expression = \"nth(1, cert_san.dns)\", set_as_attr = san1 }\n"
						 "{ expression = \"cert_san.dns\", set_as_attr = sanall }\n"
						 "{ expression = \"join_to_string(';', cert_san.ip)\", set_as_attr = ips }\n"
						 "{ expression = \"concat(cert_common_name, '|', cert_subject)\", set_as_attr = alias }\n"
						 "{ expression = \"'first'\", set_as_attr = dup }\n"
						 "{ expression = \"'second'\", set_as_attr = dup }\n"
						 "{ expression = \"user_property.dup\", set_as_attr = lastwins }\n");
	CHECK(c != NULL);
	if (!c)
		return;
	struct buf up = { 0 };
	mqtt_user_prop_append(&up, "tenant", 6, "acme", 4);
	mqtt_user_prop_append(&up, "ctl", 3, "a\nb", 3);
	mqtt_user_prop_append(&up, "dup", 3, "one", 3);
	mqtt_user_prop_append(&up, "dup", 3, "two", 3);
	char *dns[] = { "a.example", "b.example", NULL };
	char *ips[] = { "192.0.2.1", "2001:db8::1", NULL };
	struct identity_sans sans = { .dns = dns, .n_dns = 2, .ip = ips, .n_ip = 2 };
	struct attrs_init_input in = {
		.clientid = "g1-dev-42",
		.username = "alice-and-more",
		.username_len = 5,
		.cn = "device-123",
		.dn = "CN=device-123,O=Acme",
		.sans = &sans,
		.listener = "ssl:default",
		.peersni = "broker.example",
		.user_props = { up.data, (uint32_t)up.len },
	};
	struct client_attrs out = { 0 };
	client_attrs_set(&out, "preset", "kept");
	attrs_init_eval(c, &in, &out);
	CHECK_STR(client_attrs_get(&out, "preset", 6), "kept");
	CHECK_STR(client_attrs_get(&out, "group", 5), "g1");
	CHECK_STR(client_attrs_get(&out, "devnum", 6), "123");
	CHECK_STR(client_attrs_get(&out, "dn5", 3), "CN=de");
	CHECK_STR(client_attrs_get(&out, "uc", 2), "alice-device-123");
	CHECK_STR(client_attrs_get(&out, "tenant", 6), "acme");
	CHECK(client_attrs_get(&out, "missing", 7) == NULL);
	CHECK_STR(client_attrs_get(&out, "dflt", 4), "dflt");
	CHECK_STR(client_attrs_get(&out, "empty", 5), "alice");
	CHECK(client_attrs_get(&out, "ctl", 3) == NULL);  /* control characters: dropped */
	CHECK(client_attrs_get(&out, "bad8", 4) == NULL); /* not UTF-8: dropped */
	CHECK(client_attrs_get(&out, "c1", 2) == NULL);   /* U+0085: a C1 control */
	CHECK_STR(client_attrs_get(&out, "where", 5), "default/ssl:default/broker.example");
	CHECK_STR(client_attrs_get(&out, "san1", 4), "a.example");
	CHECK_STR(client_attrs_get(&out, "sanall", 6), "a.example,b.example");
	CHECK_STR(client_attrs_get(&out, "ips", 3), "192.0.2.1;2001:db8::1");
	CHECK_STR(client_attrs_get(&out, "alias", 5), "device-123|CN=device-123,O=Acme");
	CHECK_STR(client_attrs_get(&out, "dup", 3), "second");
	CHECK_STR(client_attrs_get(&out, "lastwins", 8), "two");
	client_attrs_clear(&out);

	/* a plain TCP MQTT 3.1.1 client: no certificate, no SNI, no properties, no username */
	struct attrs_init_input bare = { .clientid = "c1", .listener = "tcp:default" };
	attrs_init_eval(c, &bare, &out);
	CHECK(client_attrs_get(&out, "group", 5) != NULL);
	CHECK_STR(client_attrs_get(&out, "group", 5), "c1");
	CHECK(client_attrs_get(&out, "devnum", 6) == NULL); /* [] -> '' */
	CHECK(client_attrs_get(&out, "dn5", 3) == NULL);    /* '' */
	CHECK_STR(client_attrs_get(&out, "uc", 2), "-");
	CHECK(client_attrs_get(&out, "tenant", 6) == NULL);
	CHECK_STR(client_attrs_get(&out, "dflt", 4), "dflt");
	CHECK(client_attrs_get(&out, "empty", 5) == NULL);
	CHECK(client_attrs_get(&out, "where", 5) == NULL); /* peersni unbound */
	CHECK(client_attrs_get(&out, "san1", 4) == NULL);
	CHECK(client_attrs_get(&out, "sanall", 6) == NULL);
	client_attrs_clear(&out);
	attrs_init_eval(NULL, &bare, &out);
	CHECK(out.n == 0);
	buf_free(&up);
	config_free(cfg);
}

/* ---- SAN extraction ---- */

static X509 *cert_with_sans(const char *san)
{
	EVP_PKEY *k = EVP_EC_gen("P-256");
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), 9);
	X509_gmtime_adj(X509_getm_notBefore(x), 0);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_NAME *n = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8, (const unsigned char *)"dev", -1, -1, 0);
	X509_set_issuer_name(x, n);
	X509_set_pubkey(x, k);
	if (san) {
		X509_EXTENSION *e = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, san);
		CHECK(e != NULL);
		X509_add_ext(x, e, -1);
		X509_EXTENSION_free(e);
	}
	X509_sign(x, k, EVP_sha256());
	EVP_PKEY_free(k);
	return x;
}

TEST(sans_from_certificate)
{
	X509 *x = cert_with_sans("DNS:a.example, IP:192.0.2.1, email:dev@example.com, URI:spiffe://acme/dev/1, "
			   "DNS:b.example, IP:2001:db8::1, RID:1.2.3.4");
	struct identity_sans s;
	identity_sans_get(x, &s);
	CHECK_EQ_INT(s.n_dns, 2);
	CHECK_EQ_INT(s.n_ip, 2);
	CHECK_EQ_INT(s.n_email, 1);
	CHECK_EQ_INT(s.n_uri, 1);
	if (s.n_dns == 2 && s.n_ip == 2 && s.n_email == 1 && s.n_uri == 1) {
		CHECK_STR(s.dns[0], "a.example");
		CHECK_STR(s.dns[1], "b.example");
		CHECK(s.dns[2] == NULL);
		CHECK_STR(s.ip[0], "192.0.2.1");
		CHECK_STR(s.ip[1], "2001:db8::1");
		CHECK_STR(s.email[0], "dev@example.com");
		CHECK_STR(s.uri[0], "spiffe://acme/dev/1");
	}
	identity_sans_free(&s);
	CHECK(s.dns == NULL && s.n_dns == 0);
	identity_sans_free(&s); /* twice is fine */
	X509_free(x);

	x = cert_with_sans(NULL);
	identity_sans_get(x, &s);
	CHECK(s.n_dns == 0 && s.n_ip == 0 && s.n_email == 0 && s.n_uri == 0 && s.dns == NULL);
	identity_sans_free(&s);
	X509_free(x);
	identity_sans_get(NULL, &s);
	CHECK(s.n_dns == 0);

	/* many entries: capped */
	struct buf b = { 0 };
	for (int i = 0; i < IDENTITY_SANS_MAX + 10; i++)
		buf_printf(&b, "%sDNS:d%d.example", i ? "," : "", i);
	buf_append(&b, "", 1);
	x = cert_with_sans((const char *)b.data);
	identity_sans_get(x, &s);
	CHECK_EQ_INT(s.n_dns, IDENTITY_SANS_MAX);
	CHECK_STR(s.dns[IDENTITY_SANS_MAX - 1], "d255.example");
	identity_sans_free(&s);
	X509_free(x);
	buf_free(&b);
}

int main(void)
{
	RUN(emqx_doc_examples);
	RUN(literals_and_syntax);
	RUN(unknown_names_and_arity);
	RUN(static_types);
	RUN(case_trim_reverse_len);
	RUN(substr_split_tokens);
	RUN(concat_sprintf_pad_replace_find);
	RUN(unescape_and_conversions);
	RUN(encodings_and_hashes);
	RUN(compare_and_random);
	RUN(unbound_rules);
	RUN(final_value_and_bytes);
	RUN(regexes);
	RUN(limits);
	RUN(threads_share_a_compiled_expression);
	RUN(config_parse);
	RUN(eval_sets_attributes);
	RUN(sans_from_certificate);
	return unit_summary();
}
