/* ACL rules: the acl.conf grammar, errors with lines, matching, placeholders, JSON ACLs,
 * acl_add, and the `file` authorization source (parse, check, reload under load). */
#include "authz/acl.c"

/* The file source registers itself from a constructor; catch it here instead of in the
 * authorization core. */
#define authz_source_register unit_source_register
#include "authz/source_file.c"
#undef authz_source_register

#include <arpa/inet.h>
#include <pthread.h>
#include <stdatomic.h>

#include "unit.h"

static const struct authz_source_ops *registered;

void unit_source_register(const struct authz_source_ops *ops)
{
	registered = ops;
}

#define S(lit) (lit), (sizeof(lit) - 1)

/* ---- helpers ---- */

struct cl {
	struct authz_client c;
	struct client_attrs attrs;
};

static void cl_init(struct cl *x, const char *user, const char *cid, const char *ip)
{
	memset(x, 0, sizeof *x);
	x->c.username = user;
	x->c.username_len = user ? strlen(user) : 0;
	x->c.clientid = cid;
	x->c.peerhost = ip;
	x->c.zone = "default";
	x->c.listener = "tcp:default";
	x->c.attrs = &x->attrs;
	x->c.proto_version = 5;
	if (ip) {
		struct sockaddr_in *v4 = (struct sockaddr_in *)&x->c.peer;
		struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&x->c.peer;
		if (inet_pton(AF_INET, ip, &v4->sin_addr) == 1)
			v4->sin_family = AF_INET;
		else if (inet_pton(AF_INET6, ip, &v6->sin6_addr) == 1)
			v6->sin6_family = AF_INET6;
		else
			abort();
	}
}

static void cl_done(struct cl *x)
{
	client_attrs_clear(&x->attrs);
}

static enum authz_verdict chk(const struct acl *a, const struct authz_client *c, enum authz_action_type type,
			      const char *topic, uint8_t qos, bool retain)
{
	struct authz_action act = { .type = type, .topic = topic, .topic_len = strlen(topic), .qos = qos,
				    .retain = retain };
	return acl_check(a, c, &act);
}

static enum authz_verdict pub(const struct acl *a, const struct authz_client *c, const char *topic)
{
	return chk(a, c, AUTHZ_PUBLISH, topic, 0, false);
}

static enum authz_verdict sub(const struct acl *a, const struct authz_client *c, const char *topic)
{
	return chk(a, c, AUTHZ_SUBSCRIBE, topic, 0, false);
}

static struct acl *conf(const char *text)
{
	char err[512] = "";
	struct acl *a = acl_parse_conf(text, strlen(text), "acl.conf", err, sizeof err);
	if (!a)
		fprintf(stderr, "unexpected parse error: %s\n--- text:\n%s\n", err, text);
	return a;
}

/* Parses must fail with exactly this message. */
static bool conf_err(const char *text, size_t len, const char *want)
{
	char err[512] = "";
	struct acl *a = acl_parse_conf(text, len, "acl.conf", err, sizeof err);
	if (a) {
		fprintf(stderr, "parsed but should fail (%s):\n%s\n", want, text);
		acl_free(a);
		return false;
	}
	if (strncmp(err, want, strlen(want)) != 0) {
		fprintf(stderr, "error \"%s\"\n   want \"%s...\"\n", err, want);
		return false;
	}
	return true;
}

#define CONF_ERR(text, want) CHECK(conf_err((text), strlen(text), (want)))

enum { N = AUTHZ_NOMATCH, A = AUTHZ_ALLOW, D = AUTHZ_DENY };

/* ---- grammar ---- */

TEST(grammar_every_form)
{
	static const char text[] =
		"%% EMQX's default acl.conf, plus every form\n"
		"{allow, {username, {re, \"^dashboard$\"}}, subscribe, [\"$SYS/#\"]}.\n"
		"{allow, {ipaddr, \"127.0.0.1\"}, all, [\"$SYS/#\", \"#\"]}.\n"
		"{deny, all, subscribe, [\"$SYS/#\", {eq, \"#\"}, {eq, \"+/#\"}]}.\n"
		"{allow, {user, \"u\"}, publish, [\"a\"]}.   % trailing comment\n"
		"{allow, {client, \"c\"}, publish, \"single/string\"}.\n"
		"{allow, {clientid, {re, \"^dev-[0-9]+$\"}}, pubsub, all}.\n"
		"{allow, {ipaddrs, [\"10.0.0.0/8\", \"2001:db8::/32\"]}, all, [all, \"x\"]}.\n"
		"{allow, {client_attr, \"role\", \"admin\"}, all, [\"#\"]}.\n"
		"{allow, {client_attr, \"role\", {re, \"^op\"}}, all, [\"ops/#\"]}.\n"
		"{allow, {zone, \"default\"}, all, [\"z\"]}.\n"
		"{allow, {zone, {re, \"^ext\"}}, all, [\"z2\"]}.\n"
		"{allow, {listener, 'tcp:default'}, all, [\"l\"]}.\n"
		"{allow, {listener, {re, \"^ssl:\"}}, all, [\"l2\"]}.\n"
		"{allow, {'and', [{user, \"a\"}, {'or', [{client, \"b\"}, {ipaddr, \"::1\"}]}]}, all, [\"n\"]}.\n"
		"{allow, {and, []}, all, [\"bare_and\"]}.\n"
		"{allow, all, {publish, [{qos, 1}, {retain, true}]}, [\"q\"]}.\n"
		"{allow, all, {subscribe, [{qos, [0, 2]}]}, [\"q2\"]}.\n"
		"{allow, all, {all, [{retain, all}, {qos, [1]}, {qos, 2}]}, [\"q3\"]}.\n"
		"{allow, all, {publish, [retain]}, [\"q4\"]}.\n"
		"{allow, all, publish, [\"${username}/${clientid}/${cert_common_name}/${cert_subject}/${zone}\"]}.\n"
		"{allow, all, publish, [\"attrs/${client_attrs.group}/%u/%c\", \"eq lit/#\"]}.\n"
		"{allow, all, publish, [<<\"binary/topic\">>, \"con\" \"cat\"]}.\n"
		"{\n  allow\n ,\n all\n ,\n all\n ,\n [\"spread\"]\n }\n .\n"
		"{allow, all}.\n"
		"{deny, all}.";
	struct acl *a = conf(text);
	CHECK(a != NULL);
	CHECK_EQ_INT(acl_count(a), 25);
	acl_free(a);
	/* empty and comment-only files have no rules */
	a = conf("");
	CHECK(a && acl_count(a) == 0);
	acl_free(a);
	a = conf("\xef\xbb\xbf{allow, all}.\r\n{deny, all}.\r\n");
	CHECK(a && acl_count(a) == 2);
	acl_free(a);
	a = conf("% nothing\n   \n%% here\n");
	CHECK(a && acl_count(a) == 0);
	acl_free(a);
}

TEST(grammar_strings_and_atoms)
{
	struct cl x;
	cl_init(&x, "u", "c", NULL);
	/* Erlang escapes in strings: \n \t \s \" \\ \x41 \x{42} \101 \^A, and quoted atoms */
	struct acl *a = conf("{allow, all, publish, [\"a\\sb\\\"c\\\\d\\x41\\x{42}\\101e\"]}.\n"
			     "{'allow', 'all', 'publish', [\"t\\x{e9}\"]}.\n");
	CHECK(a != NULL);
	CHECK_EQ_INT(pub(a, &x.c, "a b\"c\\dABAe"), A);
	CHECK_EQ_INT(pub(a, &x.c, "t\xc3\xa9"), A);
	acl_free(a);
	/* strings may span lines (line numbers keep counting); escapes are code points (UTF-8) */
	a = conf("{allow, all, publish, [\"\\xe9\\351\"]}.");
	CHECK_EQ_INT(pub(a, &x.c, "\xc3\xa9\xc3\xa9"), A);
	acl_free(a);
	CHECK(conf_err(S("{allow, all, publish, [\"multi\nline\"]}.\n{deny, all, bogus}."), "acl.conf:3: "));
	cl_done(&x);
}

/* ---- errors name the line ---- */

TEST(errors_with_lines)
{
	CONF_ERR("{allow, all, all, [\"a\"]}\n{deny, all}.", "acl.conf:1: expected '.' after rule");
	CONF_ERR("\n\n{allow, all, all, [\"a\"]}", "acl.conf:3: expected '.' after rule");
	CONF_ERR("{allow, all}.\n{allow, all, all, [\"a\"] x\n}.", "acl.conf:2: expected ',' or '}'");
	CONF_ERR("{allow, all}.\n\n{allow, all, all, [\"a\"}.", "acl.conf:3: expected ',' or ']'");
	CONF_ERR("{allow, all, all, [\"a\".", "acl.conf:1: expected ',' or ']' (a ']' is missing");
	CONF_ERR("%c\n{allow, all, all, [\"a]}.\n", "acl.conf:2: unterminated string");
	CONF_ERR("{permit, all, all, [\"a\"]}.", "acl.conf:1: expected allow or deny");
	CONF_ERR("{allow, all, all}.", "acl.conf:1: expected a rule");
	CONF_ERR("{allow, everyone}.", "acl.conf:1: a 2-tuple rule must be {allow, all}");
	CONF_ERR("\n{allow, {usr, \"a\"}, all, [\"a\"]}.", "acl.conf:2: unknown who 'usr'");
	CONF_ERR("{allow, {user, 1}, all, [\"a\"]}.", "acl.conf:1: user: expected a string or {re, \"regex\"}");
	CONF_ERR("{allow, {user, {re, \"(\"}}, all, [\"a\"]}.", "acl.conf:1: regular expression \"(\": ");
	CONF_ERR("{allow, {user, {re, \"a{1000}\"}}, all, [\"a\"]}.", "acl.conf:1: regular expression \"a{1000}\": "
								     "repetition count above 255");
	CONF_ERR("{allow, {user, {re, \"((a{200}){200})\"}}, all, [\"a\"]}.", "acl.conf:1: regular expression "
										"\"((a{200}){200})\": too complex");
	CONF_ERR("{allow, {user, {re, \"(a)\\\\1\"}}, all, [\"a\"]}.", "acl.conf:1: regular expression \"(a)\\x5c1\": "
									  "back-references are not supported");
	CONF_ERR("{allow, {ipaddr, \"10.0.0.300\"}, all, [\"a\"]}.", "acl.conf:1: ipaddr: invalid address or CIDR");
	CONF_ERR("{allow, {ipaddr, \"10.0.0.0/33\"}, all, [\"a\"]}.", "acl.conf:1: ipaddr: invalid address");
	CONF_ERR("{allow, {ipaddrs, [\"10.0.0.1\",\n \"nope\"]}, all, [\"a\"]}.", "acl.conf:2: ipaddrs: invalid");
	CONF_ERR("{allow, {ipaddrs, \"10.0.0.1\"}, all, [\"a\"]}.", "acl.conf:1: ipaddrs: expected a list");
	CONF_ERR("{allow, {client_attr, \"\", \"x\"}, all, [\"a\"]}.", "acl.conf:1: client_attr: the attribute name");
	CONF_ERR("{allow, {client_attr, \"n\"}, all, [\"a\"]}.", "acl.conf:1: expected {client_attr, \"NAME\", ");
	CONF_ERR("{allow, {'and', {user, \"a\"}}, all, [\"a\"]}.", "acl.conf:1: 'and': expected a list");
	CONF_ERR("{allow, {'and', [{user, \"a\"}, {bad, 1}]}, all, [\"a\"]}.", "acl.conf:1: unknown who 'bad'");
	CONF_ERR("{allow, all, pubish, [\"a\"]}.", "acl.conf:1: unknown action 'pubish'");
	CONF_ERR("{allow, all, pub, [\"a\"]}.", "acl.conf:1: unknown action 'pub'");
	CONF_ERR("{allow, all, {publish, [{qos, 3}]}, [\"a\"]}.", "acl.conf:1: qos: expected 0, 1 or 2");
	CONF_ERR("{allow, all, {publish, [{retain, maybe}]}, [\"a\"]}.", "acl.conf:1: retain: expected true");
	CONF_ERR("{allow, all, {publish, [{rate, 1}]}, [\"a\"]}.", "acl.conf:1: unknown action option 'rate'");
	CONF_ERR("{allow, all, {publish, {qos, 1}}, [\"a\"]}.", "acl.conf:1: action options: expected a list");
	CONF_ERR("{allow, all, all, [\"a/#/b\"]}.", "acl.conf:1: invalid topic filter \"a/#/b\"");
	CONF_ERR("{allow, all, all, [\"a+\"]}.", "acl.conf:1: invalid topic filter");
	CONF_ERR("{allow, all, all, [\"\"]}.", "acl.conf:1: empty topic");
	CONF_ERR("{allow, all, all, [\"${user}\"]}.", "acl.conf:1: topic \"${user}\": unknown placeholder ${user}");
	CONF_ERR("{allow, all, all, [\"a/${username\"]}.", "acl.conf:1: topic \"a/${username\": unterminated");
	CONF_ERR("{allow, all, all, [\"${username}+\"]}.", "acl.conf:1: invalid topic filter");
	CONF_ERR("{allow, all, all, [\"a\\0b\"]}.", "acl.conf:1: topic \"a\\x00b\" contains a NUL byte");
	CONF_ERR("{allow, all, all, [42]}.", "acl.conf:1: expected a topic");
	CONF_ERR("{allow, all, all, [{eq, 42}]}.", "acl.conf:1: expected a topic");
	CONF_ERR("{allow, all, all, [a | b]}.", "acl.conf:1: list tails ('|') are not supported");
	CONF_ERR("{allow, All}.", "acl.conf:1: unexpected 'A': variables are not allowed");
	CONF_ERR("{allow, all} ?", "acl.conf:1: expected '.' after rule");
	CONF_ERR("{allow, #}.", "acl.conf:1: unexpected character '#'");
	CONF_ERR("{allow, all, all, [\"\\x4\"]}.", "acl.conf:1: invalid \\x escape");
	CONF_ERR("{allow, all, all, [\"\\x{110000}\"]}.", "acl.conf:1: invalid \\x{...} escape");
	CONF_ERR("{allow, 'al", "acl.conf:1: unterminated quoted atom");
	CONF_ERR("{allow,\n", "acl.conf:2: unexpected end of file");
	CONF_ERR("{allow, all, all, <<\"a\">}.", "acl.conf:1: expected '>>'");
	/* a NUL byte in the text */
	CHECK(conf_err(S("{allow, all}.\n\0"), "acl.conf:2: unexpected character '\\x00'"));
	/* the file name given is the one reported */
	char err[256];
	CHECK(acl_parse_conf(S("x."), "/etc/bw/acl.conf", err, sizeof err) == NULL);
	CHECK(strncmp(err, "/etc/bw/acl.conf:1: expected a rule", 35) == 0);
	/* a small error buffer is never overrun */
	char tiny[8];
	CHECK(acl_parse_conf(S("{x}."), "acl.conf", tiny, sizeof tiny) == NULL);
	CHECK(strlen(tiny) == 7);
}

TEST(limits)
{
	/* nesting: deep terms and deep and/or are refused, not a stack overflow */
	char deep[4096];
	size_t o = 0;
	o += (size_t)snprintf(deep + o, sizeof deep - o, "{allow, ");
	for (int i = 0; i < 500; i++)
		deep[o++] = '[';
	deep[o] = '\0';
	CHECK(conf_err(deep, o, "acl.conf:1: terms nested more than"));
	char who[8192];
	o = (size_t)snprintf(who, sizeof who, "{allow, ");
	for (int i = 0; i < 17; i++)
		o += (size_t)snprintf(who + o, sizeof who - o, "{'and', [");
	o += (size_t)snprintf(who + o, sizeof who - o, "all");
	for (int i = 0; i < 17; i++)
		o += (size_t)snprintf(who + o, sizeof who - o, "]}");
	o += (size_t)snprintf(who + o, sizeof who - o, ", all, all}.");
	CHECK(conf_err(who, o, "acl.conf:1: 'and'/'or' nested more than 16 deep"));
	/* long strings */
	size_t big = 70000;
	char *s = xmalloc(big + 64);
	o = (size_t)snprintf(s, 64, "{allow, all, all, [\"");
	memset(s + o, 'a', big);
	o += big;
	memcpy(s + o, "\"]}.", 4);
	o += 4;
	CHECK(conf_err(s, o, "acl.conf:1: string longer than 65535 bytes"));
	free(s);
	/* a long atom */
	char atom[600];
	o = (size_t)snprintf(atom, sizeof atom, "{allow, ");
	memset(atom + o, 'a', 300);
	o += 300;
	CHECK(conf_err(atom, o, "acl.conf:1: atom longer than 255"));
	/* many placeholders */
	char ph[2048];
	o = (size_t)snprintf(ph, sizeof ph, "{allow, all, all, [\"");
	for (int i = 0; i < 33; i++)
		o += (size_t)snprintf(ph + o, sizeof ph - o, "%%u");
	o += (size_t)snprintf(ph + o, sizeof ph - o, "\"]}.");
	CHECK(conf_err(ph, o, "acl.conf:1: topic"));
}

/* ---- matching ---- */

TEST(match_topics_and_dollar)
{
	struct cl x;
	cl_init(&x, "u", "c", "192.0.2.1");
	struct acl *a = conf("{allow, all, publish, [\"#\"]}.\n"
			     "{allow, all, subscribe, [\"+/status\"]}.\n"
			     "{allow, all, subscribe, [\"$SYS/+/x\"]}.\n"
			     "{allow, all, subscribe, [all]}.\n");
	CHECK(a != NULL);
	CHECK_EQ_INT(pub(a, &x.c, "a/b/c"), A);
	CHECK_EQ_INT(pub(a, &x.c, "a"), A);
	CHECK_EQ_INT(pub(a, &x.c, "$SYS/x"), N);  /* '#' does not cover $-topics */
	CHECK_EQ_INT(pub(a, &x.c, "$share"), N);
	/* subscribe requests are names: "+/status" covers "d1/status" and the literal "+/status" */
	CHECK_EQ_INT(sub(a, &x.c, "d1/status"), A);
	CHECK_EQ_INT(sub(a, &x.c, "$SYS/b/x"), A);  /* explicit $SYS/... */
	CHECK_EQ_INT(sub(a, &x.c, "$SYS/#"), A);    /* only 'all' covers this */
	acl_free(a);

	a = conf("{allow, all, subscribe, [\"a/+\"]}.\n{deny, all, subscribe, [\"#\"]}.\n");
	CHECK_EQ_INT(sub(a, &x.c, "a/b"), A);
	CHECK_EQ_INT(sub(a, &x.c, "a/+"), A);     /* the filter's '+' is a word matched by '+' */
	CHECK_EQ_INT(sub(a, &x.c, "a/#"), A);     /* so is '#' */
	CHECK_EQ_INT(sub(a, &x.c, "a/b/c"), D);
	CHECK_EQ_INT(sub(a, &x.c, "#"), D);
	CHECK_EQ_INT(sub(a, &x.c, "a"), D);
	CHECK_EQ_INT(sub(a, &x.c, "$SYS/a"), N);  /* '#' does not match '$' */
	acl_free(a);

	a = conf("{allow, all, subscribe, [\"a/b\"]}.\n{allow, all, subscribe, [\"x/#\"]}.\n");
	CHECK_EQ_INT(sub(a, &x.c, "a/+"), N);     /* a wildcard request is not covered by a literal */
	CHECK_EQ_INT(sub(a, &x.c, "a/#"), N);
	CHECK_EQ_INT(sub(a, &x.c, "x"), A);       /* "x/#" covers its parent */
	CHECK_EQ_INT(sub(a, &x.c, "x/#"), A);
	CHECK_EQ_INT(sub(a, &x.c, "x/+/y"), A);
	CHECK_EQ_INT(sub(a, &x.c, "xy"), N);
	acl_free(a);

	/* {eq, T} and "eq T": the literal text only */
	a = conf("{deny, all, subscribe, [{eq, \"#\"}, \"eq +/#\"]}.\n{allow, all, subscribe, [\"#\"]}.\n");
	CHECK_EQ_INT(sub(a, &x.c, "#"), D);
	CHECK_EQ_INT(sub(a, &x.c, "+/#"), D);
	CHECK_EQ_INT(sub(a, &x.c, "a/#"), A);
	CHECK_EQ_INT(sub(a, &x.c, "a"), A);
	acl_free(a);
	a = conf("{allow, all, all, [{eq, \"a/+\"}]}.");
	CHECK_EQ_INT(pub(a, &x.c, "a/b"), N);
	CHECK_EQ_INT(sub(a, &x.c, "a/+"), A);
	acl_free(a);

	/* catch-alls and order: the first matching rule decides */
	a = conf("{deny, all, all, [\"secret/#\"]}.\n{allow, all}.\n{deny, all}.");
	CHECK_EQ_INT(pub(a, &x.c, "secret/x"), D);
	CHECK_EQ_INT(pub(a, &x.c, "$SYS/x"), A);
	CHECK_EQ_INT(sub(a, &x.c, "#"), A);
	acl_free(a);
	a = conf("{deny, all}.");
	CHECK_EQ_INT(pub(a, &x.c, "$SYS/x"), D);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "t", 2, true), D);
	acl_free(a);
	/* a single string instead of a list; an empty list matches nothing */
	a = conf("{allow, all, all, \"one\"}.\n{deny, all, all, []}.\n{deny, all, all, {eq, \"two\"}}.");
	CHECK_EQ_INT(pub(a, &x.c, "one"), A);
	CHECK_EQ_INT(pub(a, &x.c, "two"), D);
	CHECK_EQ_INT(pub(a, &x.c, "three"), N);
	acl_free(a);
	/* empty levels */
	a = conf("{allow, all, all, [\"/+\", \"a//b\"]}.");
	CHECK_EQ_INT(pub(a, &x.c, "/x"), A);
	CHECK_EQ_INT(pub(a, &x.c, "a//b"), A);
	CHECK_EQ_INT(pub(a, &x.c, "a/b"), N);
	acl_free(a);
	cl_done(&x);
}

TEST(match_actions_qos_retain)
{
	struct cl x;
	cl_init(&x, "u", "c", NULL);
	struct acl *a = conf("{allow, all, {publish, [{qos, [0, 1]}, {retain, false}]}, [\"p\"]}.\n"
			     "{allow, all, {subscribe, [{qos, 2}]}, [\"s\"]}.\n"
			     "{allow, all, {all, [{retain, true}]}, [\"r\"]}.\n"
			     "{allow, all, {publish, []}, [\"d\"]}.\n"
			     "{allow, all, {publish, [{qos, []}]}, [\"none\"]}.\n"
			     "{allow, all, publish, [\"pubonly\"]}.\n"
			     "{allow, all, subscribe, [\"subonly\"]}.\n");
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "p", 0, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "p", 1, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "p", 2, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "p", 0, true), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "p", 0, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "s", 2, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "s", 1, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "s", 2, false), N);
	/* retain constrains publish only */
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "r", 1, true), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "r", 1, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "r", 1, false), A);
	/* defaults: every QoS, retain all */
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d", 2, true), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "none", 0, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "pubonly", 2, true), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "pubonly", 0, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "subonly", 2, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "subonly", 0, false), N);
	/* an impossible QoS never matches a rule */
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d", 3, false), N);
	acl_free(a);
	/* the bare `retain` option means {retain, true} */
	a = conf("{allow, all, {publish, [retain]}, [\"t\"]}.");
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "t", 0, true), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "t", 0, false), N);
	acl_free(a);
	cl_done(&x);
}

TEST(match_who)
{
	struct cl x, y, z, n;
	cl_init(&x, "alice", "dev-17", "10.1.2.3");
	cl_init(&y, "bob", "sensor", "2001:db8::5");
	cl_init(&z, "carol", "dev-x", "::ffff:10.9.9.9");
	cl_init(&n, NULL, NULL, NULL); /* nothing known */
	n.c.zone = NULL;
	n.c.listener = NULL;
	client_attrs_set(&x.attrs, "role", "admin");
	client_attrs_set(&y.attrs, "role", "operator");
	y.c.zone = "external";
	y.c.listener = "ssl:default";
	struct acl *a = conf("{allow, {username, \"alice\"}, all, [\"u\"]}.\n"
			     "{allow, {user, {re, \"^b.b$\"}}, all, [\"u\"]}.\n"
			     "{allow, {clientid, {re, \"^dev-[0-9]+$\"}}, all, [\"c\"]}.\n"
			     "{allow, {client, \"sensor\"}, all, [\"c\"]}.\n"
			     "{allow, {ipaddr, \"10.0.0.0/8\"}, all, [\"ip\"]}.\n"
			     "{allow, {ipaddrs, [\"192.168.0.0/16\", \"2001:db8::/32\"]}, all, [\"ip\"]}.\n"
			     "{allow, {client_attr, \"role\", \"admin\"}, all, [\"attr\"]}.\n"
			     "{allow, {client_attr, \"role\", {re, \"^op\"}}, all, [\"attr\"]}.\n"
			     "{allow, {zone, \"external\"}, all, [\"zone\"]}.\n"
			     "{allow, {listener, {re, \"^ssl:\"}}, all, [\"lis\"]}.\n"
			     "{allow, {'and', [{user, \"alice\"}, {ipaddr, \"10.1.0.0/16\"}]}, all, [\"and\"]}.\n"
			     "{allow, {'or', [{user, \"nobody\"}, {client, \"sensor\"}]}, all, [\"or\"]}.\n"
			     "{allow, {'and', []}, all, [\"and0\"]}.\n"
			     "{allow, {'or', []}, all, [\"or0\"]}.\n"
			     "{allow, {'and', [{'or', [{user, \"x\"}, {zone, \"default\"}]}, {client, {re, \"x$\"}}]}, "
			     "all, [\"nest\"]}.\n"
			     "{allow, {ipaddr, \"::1\"}, all, [\"v6host\"]}.\n");
	CHECK(a != NULL);
	CHECK_EQ_INT(pub(a, &x.c, "u"), A);
	CHECK_EQ_INT(pub(a, &y.c, "u"), A);
	CHECK_EQ_INT(pub(a, &z.c, "u"), N);
	CHECK_EQ_INT(pub(a, &n.c, "u"), N);
	CHECK_EQ_INT(pub(a, &x.c, "c"), A);
	CHECK_EQ_INT(pub(a, &y.c, "c"), A);
	CHECK_EQ_INT(pub(a, &z.c, "c"), N);
	CHECK_EQ_INT(pub(a, &n.c, "c"), N);
	CHECK_EQ_INT(pub(a, &x.c, "ip"), A);
	CHECK_EQ_INT(pub(a, &y.c, "ip"), A);
	CHECK_EQ_INT(pub(a, &z.c, "ip"), A);  /* v4-mapped v6 peer in 10/8 */
	CHECK_EQ_INT(pub(a, &n.c, "ip"), N);
	CHECK_EQ_INT(pub(a, &x.c, "attr"), A);
	CHECK_EQ_INT(pub(a, &y.c, "attr"), A);
	CHECK_EQ_INT(pub(a, &z.c, "attr"), N);
	CHECK_EQ_INT(pub(a, &n.c, "attr"), N);
	CHECK_EQ_INT(pub(a, &y.c, "zone"), A);
	CHECK_EQ_INT(pub(a, &x.c, "zone"), N);
	CHECK_EQ_INT(pub(a, &y.c, "lis"), A);
	CHECK_EQ_INT(pub(a, &x.c, "lis"), N);
	CHECK_EQ_INT(pub(a, &n.c, "lis"), N);
	CHECK_EQ_INT(pub(a, &x.c, "and"), A);
	CHECK_EQ_INT(pub(a, &z.c, "and"), N);
	CHECK_EQ_INT(pub(a, &y.c, "or"), A);
	CHECK_EQ_INT(pub(a, &x.c, "or"), N);
	CHECK_EQ_INT(pub(a, &n.c, "and0"), A);
	CHECK_EQ_INT(pub(a, &x.c, "or0"), N);
	CHECK_EQ_INT(pub(a, &z.c, "nest"), A);  /* zone default, clientid ends in x */
	CHECK_EQ_INT(pub(a, &y.c, "nest"), N);
	CHECK_EQ_INT(pub(a, &x.c, "nest"), N);
	CHECK_EQ_INT(pub(a, &x.c, "v6host"), N);
	struct cl lo;
	cl_init(&lo, "l", "l", "::1");
	CHECK_EQ_INT(pub(a, &lo.c, "v6host"), A);
	cl_done(&lo);
	acl_free(a);

	/* a username with a NUL byte: equality compares all bytes, a regex never matches */
	a = conf("{allow, {user, \"a\\0b\"}, all, [\"eq\"]}.\n{allow, {user, {re, \"^a\"}}, all, [\"re\"]}.\n");
	struct cl nul;
	cl_init(&nul, "a", "c", NULL);
	static const char raw[] = "a\0b";
	nul.c.username = raw;
	nul.c.username_len = 3;
	CHECK_EQ_INT(pub(a, &nul.c, "eq"), A);
	CHECK_EQ_INT(pub(a, &nul.c, "re"), N);
	nul.c.username_len = 1;  /* just "a" */
	CHECK_EQ_INT(pub(a, &nul.c, "eq"), N);
	CHECK_EQ_INT(pub(a, &nul.c, "re"), A);
	cl_done(&nul);
	acl_free(a);
	/* regexes search (like re:run): unanchored unless ^/$ */
	a = conf("{allow, {user, {re, \"adm\"}}, all, [\"t\"]}.");
	CHECK_EQ_INT(pub(a, &x.c, "t"), N);
	struct cl adm;
	cl_init(&adm, "sysadmin1", "c", NULL);
	CHECK_EQ_INT(pub(a, &adm.c, "t"), A);
	cl_done(&adm);
	acl_free(a);
	cl_done(&x);
	cl_done(&y);
	cl_done(&z);
	cl_done(&n);
}

TEST(match_placeholders)
{
	struct cl x;
	cl_init(&x, "alice", "dev1", NULL);
	x.c.cert_common_name = "cn1";
	x.c.cert_subject = "CN=cn1,O=Acme";
	client_attrs_set(&x.attrs, "group", "g7");
	struct acl *a = conf("{allow, all, all, [\"u/${username}/#\", \"c/${clientid}\", \"cn/${cert_common_name}/+\"]}.\n"
			     "{allow, all, all, [\"dn/${cert_subject}\", \"z/${zone}\", \"g/${client_attrs.group}/#\"]}.\n"
			     "{allow, all, all, [\"v4/%u/%c\", \"mix/${username}-${clientid}/x\", \"%x/%\"]}.\n"
			     "{allow, all, subscribe, [{eq, \"e/${username}/#\"}, \"eq q/${clientid}/+\"]}.\n"
			     "{allow, all, all, [\"na/${client_attrs.missing}\", \"${username}\"]}.\n");
	CHECK(a != NULL);
	CHECK_EQ_INT(pub(a, &x.c, "u/alice"), A);
	CHECK_EQ_INT(pub(a, &x.c, "u/alice/x/y"), A);
	CHECK_EQ_INT(pub(a, &x.c, "u/bob/x"), N);
	CHECK_EQ_INT(pub(a, &x.c, "c/dev1"), A);
	CHECK_EQ_INT(pub(a, &x.c, "c/dev2"), N);
	CHECK_EQ_INT(pub(a, &x.c, "cn/cn1/a"), A);
	CHECK_EQ_INT(pub(a, &x.c, "dn/CN=cn1,O=Acme"), A);
	CHECK_EQ_INT(pub(a, &x.c, "z/default"), A);
	CHECK_EQ_INT(pub(a, &x.c, "g/g7/1"), A);
	CHECK_EQ_INT(pub(a, &x.c, "v4/alice/dev1"), A);
	CHECK_EQ_INT(pub(a, &x.c, "mix/alice-dev1/x"), A);
	CHECK_EQ_INT(pub(a, &x.c, "%x/%"), A);
	CHECK_EQ_INT(pub(a, &x.c, "alice"), A);
	CHECK_EQ_INT(sub(a, &x.c, "e/alice/#"), A);
	CHECK_EQ_INT(sub(a, &x.c, "e/alice/x"), N);
	CHECK_EQ_INT(sub(a, &x.c, "q/dev1/+"), A);
	CHECK_EQ_INT(sub(a, &x.c, "q/dev1/a"), N);
	/* the literal template text never matches */
	CHECK_EQ_INT(pub(a, &x.c, "u/${username}/x"), N);
	CHECK_EQ_INT(pub(a, &x.c, "na/"), N);
	CHECK_EQ_INT(pub(a, &x.c, "na/${client_attrs.missing}"), N);

	/* undefined values make the topic non-matching (never rendered as "") */
	struct cl n;
	cl_init(&n, NULL, NULL, NULL);
	n.c.zone = NULL;
	CHECK_EQ_INT(pub(a, &n.c, "u/"), N);
	CHECK_EQ_INT(pub(a, &n.c, "u//x"), N);
	CHECK_EQ_INT(pub(a, &n.c, "c/"), N);
	CHECK_EQ_INT(pub(a, &n.c, "cn//a"), N);
	CHECK_EQ_INT(pub(a, &n.c, "dn/"), N);
	CHECK_EQ_INT(pub(a, &n.c, "z/"), N);
	CHECK_EQ_INT(pub(a, &n.c, "g//1"), N);
	CHECK_EQ_INT(pub(a, &n.c, "v4//"), N);
	CHECK_EQ_INT(sub(a, &n.c, "e//#"), N);
	/* values with '/', '+', '#' or NUL cannot widen a rule */
	struct cl w;
	cl_init(&w, "#", "a/b", NULL);
	CHECK_EQ_INT(pub(a, &w.c, "u/#"), N);
	CHECK_EQ_INT(pub(a, &w.c, "u/x"), N);
	CHECK_EQ_INT(pub(a, &w.c, "c/a/b"), N);
	w.c.username = "+";
	w.c.username_len = 1;
	CHECK_EQ_INT(pub(a, &w.c, "u/+"), N);
	CHECK_EQ_INT(pub(a, &w.c, "u/x/y"), N);
	static const char raw[] = "al\0ice";
	w.c.username = raw;
	w.c.username_len = 6;
	CHECK_EQ_INT(pub(a, &w.c, "u/al"), N);
	/* an empty username is a value; the resulting empty topic matches nothing */
	w.c.username = "";
	w.c.username_len = 0;
	CHECK_EQ_INT(pub(a, &w.c, "u//x"), A);
	CHECK_EQ_INT(pub(a, &w.c, ""), N);
	acl_free(a);

	/* long rendered topics go to the heap */
	char *lng = xmalloc(3000);
	memset(lng, 'x', 2999);
	lng[2999] = '\0';
	client_attrs_set(&x.attrs, "group", lng);
	a = conf("{allow, all, all, [\"g/${client_attrs.group}/${client_attrs.group}\"]}.");
	char *topic = xasprintf("g/%s/%s", lng, lng);
	CHECK_EQ_INT(pub(a, &x.c, topic), A);
	topic[5] = 'y';
	CHECK_EQ_INT(pub(a, &x.c, topic), N);
	free(topic);
	free(lng);
	acl_free(a);
	cl_done(&x);
	cl_done(&n);
	cl_done(&w);
}

/* ---- acl_add ---- */

TEST(add_parts)
{
	struct cl x;
	cl_init(&x, "alice", "dev1", NULL);
	struct acl *a = acl_new();
	char err[256];
	struct acl_rule_spec s = { .allow = false, .actions = AUTHZ_SUBSCRIBE, .qos_mask = 0, .retain = -1 };
	s.topic = "eq #";
	s.topic_len = 4;
	CHECK(acl_add(a, &s, err, sizeof err));
	s = (struct acl_rule_spec){ .allow = true, .actions = AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE, .qos_mask = 0x3,
				    .retain = 0, .topic = "d/${clientid}/#", .topic_len = 15 };
	CHECK(acl_add(a, &s, err, sizeof err));
	s = (struct acl_rule_spec){ .allow = true, .actions = AUTHZ_SUBSCRIBE, .retain = 1, .topic = S("#") };
	CHECK(acl_add(a, &s, err, sizeof err));
	CHECK_EQ_INT(acl_count(a), 3);
	CHECK_EQ_INT(sub(a, &x.c, "#"), D);
	CHECK_EQ_INT(sub(a, &x.c, "x"), A);  /* retain does not constrain subscribe */
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d/dev1/t", 1, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d/dev1/t", 2, false), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d/dev1/t", 1, true), N);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "d/dev2/t", 0, false), N);
	/* invalid parts */
	s = (struct acl_rule_spec){ .allow = true, .actions = AUTHZ_PUBLISH, .retain = -1, .topic = S("a/#/b") };
	CHECK(!acl_add(a, &s, err, sizeof err));
	CHECK_STR(err, "invalid topic filter \"a/#/b\"");
	s.topic = "x";
	s.topic_len = 1;
	s.actions = 0;
	CHECK(!acl_add(a, &s, err, sizeof err));
	s.actions = AUTHZ_PUBLISH;
	s.retain = 2;
	CHECK(!acl_add(a, &s, err, sizeof err));
	s.retain = -1;
	s.topic = "eq ";
	s.topic_len = 3;
	CHECK(!acl_add(a, &s, err, sizeof err));
	CHECK_STR(err, "empty topic");
	/* topic_len counts, not the NUL */
	s.topic = "abc";
	s.topic_len = 2;
	CHECK(acl_add(a, &s, err, sizeof err));
	CHECK_EQ_INT(pub(a, &x.c, "ab"), A);
	CHECK_EQ_INT(pub(a, &x.c, "abc"), N);
	CHECK_EQ_INT(acl_count(a), 4);
	acl_free(a);
	/* action words */
	CHECK_EQ_INT(acl_action_of(S("publish")), AUTHZ_PUBLISH);
	CHECK_EQ_INT(acl_action_of(S("subscribe")), AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(acl_action_of(S("all")), AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(acl_action_of(S("pubsub")), AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(acl_action_of(S("pub")), AUTHZ_PUBLISH);
	CHECK_EQ_INT(acl_action_of(S("sub")), AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(acl_action_of(S("publis")), 0);
	CHECK_EQ_INT(acl_action_of(S("publishx")), 0);
	CHECK_EQ_INT(acl_action_of(NULL, 0), 0);
	CHECK_EQ_INT(acl_count(NULL), 0);
	CHECK_EQ_INT(acl_check(NULL, &x.c, &(struct authz_action){ .type = AUTHZ_PUBLISH, .topic = "a", .topic_len = 1 }),
		     N);
	cl_done(&x);
}

/* ---- JSON ---- */

static struct acl *js(const char *text)
{
	char err[512] = "";
	struct acl *a = acl_parse_json(text, err, sizeof err);
	if (!a)
		fprintf(stderr, "unexpected JSON error: %s\n", err);
	return a;
}

static bool js_err(const char *text, const char *want)
{
	char err[512] = "";
	struct acl *a = acl_parse_json(text, err, sizeof err);
	if (a) {
		acl_free(a);
		fprintf(stderr, "JSON parsed but should fail: %s\n", text);
		return false;
	}
	if (strncmp(err, want, strlen(want)) != 0) {
		fprintf(stderr, "error \"%s\"\n   want \"%s...\"\n", err, want);
		return false;
	}
	return true;
}

TEST(json_shapes)
{
	struct cl x;
	cl_init(&x, "alice", "dev1", "10.0.0.1");
	struct acl *a = js("[{\"permission\": \"allow\", \"action\": \"publish\", \"topic\": \"u/${username}\"},"
			   " {\"permission\": \"deny\", \"action\": \"subscribe\", \"topics\": [\"eq #\", \"$SYS/#\"]},"
			   " {\"permission\": \"allow\", \"action\": \"sub\", \"topic\": \"q\", \"qos\": [1, 2]},"
			   " {\"permission\": \"allow\", \"action\": \"pub\", \"topic\": \"r\", \"qos\": 0, \"retain\": true},"
			   " {\"permission\": \"allow\", \"action\": \"all\", \"topics\": [\"c/${clientid}/#\"], "
			   "\"retain\": \"all\"},"
			   " {\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"who\", "
			   "\"username_re\": \"^al\", \"clientid_re\": \"1$\", \"ipaddr\": \"10.0.0.0/8\"},"
			   " {\"permission\": \"deny\", \"action\": \"all\", \"topic\": \"#\"}]");
	CHECK(a != NULL);
	CHECK_EQ_INT(acl_count(a), 7);
	CHECK_EQ_INT(pub(a, &x.c, "u/alice"), A);
	CHECK_EQ_INT(pub(a, &x.c, "u/bob"), D);
	CHECK_EQ_INT(sub(a, &x.c, "#"), D);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "q", 1, false), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_SUBSCRIBE, "q", 0, false), D);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "r", 0, true), A);
	CHECK_EQ_INT(chk(a, &x.c, AUTHZ_PUBLISH, "r", 0, false), D);
	CHECK_EQ_INT(sub(a, &x.c, "c/dev1/x"), A);
	CHECK_EQ_INT(pub(a, &x.c, "who"), A);
	struct cl y;
	cl_init(&y, "alice", "dev2", "10.0.0.1");
	CHECK_EQ_INT(pub(a, &y.c, "who"), D);
	cl_done(&y);
	CHECK_EQ_INT(pub(a, &x.c, "$SYS/x"), N);
	acl_free(a);

	/* v1: pub / sub / all lists, all allow */
	a = js("{\"pub\": [\"p/${clientid}\"], \"sub\": [\"s/#\"], \"all\": [\"a\"]}");
	CHECK(a != NULL);
	CHECK_EQ_INT(pub(a, &x.c, "p/dev1"), A);
	CHECK_EQ_INT(sub(a, &x.c, "p/dev1"), N);
	CHECK_EQ_INT(sub(a, &x.c, "s/x"), A);
	CHECK_EQ_INT(pub(a, &x.c, "s/x"), N);
	CHECK_EQ_INT(pub(a, &x.c, "a"), A);
	CHECK_EQ_INT(sub(a, &x.c, "a"), A);
	CHECK_EQ_INT(pub(a, &x.c, "other"), N);
	acl_free(a);
	a = js("{}");
	CHECK(a && acl_count(a) == 0);
	acl_free(a);
	a = js("[]");
	CHECK(a && acl_count(a) == 0);
	acl_free(a);

	CHECK(js_err("nope", "acl: invalid JSON"));
	CHECK(js_err("42", "acl: expected a list of rules or an object"));
	CHECK(js_err("{\"pub\": [1]}", "acl.pub: a topic must be a string"));
	CHECK(js_err("{\"publish\": [\"a\"]}", "acl: unknown key \"publish\""));
	CHECK(js_err("[1]", "acl[0]: expected an object"));
	CHECK(js_err("[{\"action\": \"all\", \"topic\": \"a\"}]", "acl[0]: permission must be"));
	CHECK(js_err("[{\"permission\": \"allow\", \"topic\": \"a\"}]", "acl[0]: action must be"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"x\", \"topic\": \"a\"}]", "acl[0]: action must be"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\"}]", "acl[0]: topic or topics is required"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\"},"
		     " {\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a/#/b\"}]",
		     "acl[1]: invalid topic filter"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\", \"qos\": 3}]",
		     "acl[0]: qos must be"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\", \"retain\": 1}]",
		     "acl[0]: retain must be"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"${password}\"}]",
		     "acl[0]: topic \"${password}\": unknown placeholder"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\", \"username_re\": \"(\"}]",
		     "acl[0]: username_re: regular expression"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\", \"ipaddr\": \"x\"}]",
		     "acl[0]: ipaddr: invalid address"));
	CHECK(js_err("[{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\\u0000b\"}]",
		     "acl: invalid JSON"));
	char err[64];
	CHECK(acl_parse_json(NULL, err, sizeof err) == NULL);
	cl_done(&x);
}

/* ---- regex cost estimate ---- */

TEST(regex_limits)
{
	char err[128];
	CHECK(regex_cost_ok(S("^[a-f0-9]{8}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{4}-[a-f0-9]{12}$"), err, sizeof err));
	CHECK(regex_cost_ok(S("^dev-[[:digit:]]{1,6}(/[a-z]+)*$"), err, sizeof err));
	CHECK(regex_cost_ok(S("[]{}]{3}"), err, sizeof err));
	CHECK(regex_cost_ok(S("a{,5}b{"), err, sizeof err));
	CHECK(!regex_cost_ok(S("(((a{30}){30}){30})"), err, sizeof err));
	CHECK(!regex_cost_ok(S("x{256}"), err, sizeof err));
	CHECK(!regex_cost_ok(S("(a)\\1"), err, sizeof err));
	char deep[200];
	memset(deep, '(', 40);
	CHECK(!regex_cost_ok(deep, 40, err, sizeof err));
	char *long_re = xmalloc(2000);
	memset(long_re, 'a', 1999);
	long_re[1999] = '\0';
	struct relin *re = NULL;
	CHECK(!regex_compile(long_re, 1999, &re, err, sizeof err));
	free(long_re);
	/* matching is linear: a pattern that is quadratic for a backtracking/restarting search
	 * answers at once on a 64 KB client-chosen value */
	CHECK(regex_compile(S("a.*b"), &re, err, sizeof err));
	char *big = xmalloc(65536);
	memset(big, 'a', 65535);
	big[65535] = '\0';
	CHECK(!relin_match(re, big, 65535));
	big[65534] = 'b';
	CHECK(relin_match(re, big, 65535));
	relin_free(re);
	free(big);
}

/* ---- the file source ---- */

struct src_env {
	char dir[64];
	char path[128];
};

static void write_text(const char *path, const char *text)
{
	char tmp[256];
	snprintf(tmp, sizeof tmp, "%s.tmp", path);
	FILE *f = fopen(tmp, "w");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
	if (rename(tmp, path) != 0)
		abort();
}

/* Parse `sources = [ { ... } ]` text through the registered ops: the config, or NULL with err. */
static void *src_parse(const char *obj, char *err, size_t errlen)
{
	struct hocon_error he;
	char *text = xasprintf("s = %s\n", obj);
	struct hocon_node *root = hocon_parse_string_ex(text, strlen(text), "bulwark.conf", &he, HOCON_NO_INCLUDE);
	free(text);
	if (!root) {
		snprintf(err, errlen, "hocon: %s", he.msg);
		return NULL;
	}
	struct cfg_reader r = { .err = err, .errlen = errlen };
	snprintf(r.path, sizeof r.path, "authorization.sources");
	void *cfg = registered->parse(&r, &root->members[0]);
	hocon_free(root);
	return cfg;
}

struct hammer {
	struct authz_source *s;
	atomic_bool stop;
	atomic_long checks, bad;
};

static void *hammer_run(void *arg)
{
	struct hammer *h = arg;
	struct cl x;
	cl_init(&x, "alice", "dev1", NULL);
	while (!atomic_load(&h->stop)) {
		struct authz_action act = { .type = AUTHZ_PUBLISH, .topic = "t/a", .topic_len = 3 };
		enum authz_verdict v = registered->check(h->s, &x.c, &act);
		if (v != AUTHZ_ALLOW && v != AUTHZ_DENY)
			atomic_fetch_add(&h->bad, 1);
		atomic_fetch_add(&h->checks, 1);
	}
	cl_done(&x);
	return NULL;
}

TEST(file_source)
{
	CHECK(registered != NULL && strcmp(registered->type, "file") == 0);
	if (!registered)
		return;
	CHECK(!registered->async && registered->check && registered->reload && registered->parse);
	struct src_env e;
	snprintf(e.dir, sizeof e.dir, "/tmp/bw-test-acl-XXXXXX");
	if (!mkdtemp(e.dir))
		abort();
	snprintf(e.path, sizeof e.path, "%s/acl.conf", e.dir);
	write_text(e.path, "{allow, {user, \"alice\"}, publish, [\"t/#\"]}.\n{deny, all}.\n");
	char err[512] = "";
	char *obj = xasprintf("[{ type = file, enable = true, path = \"%s\" }]", e.path);
	/* an array item as the core passes it */
	struct hocon_error he;
	char *text = xasprintf("s = %s\n", obj);
	struct hocon_node *root = hocon_parse_string_ex(text, strlen(text), "bulwark.conf", &he, HOCON_NO_INCLUDE);
	CHECK(root != NULL);
	const struct hocon_node *item = root->members[0].value->items[0];
	struct hocon_member im = { .key = "sources", .file = item->file, .line = item->line, .value = (void *)item };
	struct cfg_reader r = { .err = err, .errlen = sizeof err };
	void *cfg = registered->parse(&r, &im);
	CHECK(cfg != NULL);
	hocon_free(root);
	free(text);
	free(obj);
	struct authz_source *s = registered->create(cfg, NULL, err, sizeof err);
	CHECK(s != NULL);
	registered->free_config(cfg);
	struct cl x, y;
	cl_init(&x, "alice", "dev1", NULL);
	cl_init(&y, "bob", "dev2", NULL);
	struct authz_action act = { .type = AUTHZ_PUBLISH, .topic = "t/a", .topic_len = 3 };
	CHECK_EQ_INT(registered->check(s, &x.c, &act), A);
	CHECK_EQ_INT(registered->check(s, &y.c, &act), D);

	/* reload: unchanged file */
	bool changed = true;
	CHECK(registered->reload(s, &changed, err, sizeof err));
	CHECK(!changed);
	/* changed file, checked concurrently from 4 threads while reloading */
	struct hammer h = { .s = s };
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, hammer_run, &h);
	for (int i = 0; i < 50; i++) {
		write_text(e.path, i % 2 ? "{allow, {user, \"alice\"}, publish, [\"t/#\"]}.\n{deny, all}.\n"
					 : "{deny, {user, \"alice\"}, publish, [\"t/#\"]}.\n{allow, all}.\n");
		CHECK(registered->reload(s, &changed, err, sizeof err));
		CHECK(changed);
	}
	atomic_store(&h.stop, true);
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK(atomic_load(&h.checks) > 0);
	CHECK_EQ_INT(atomic_load(&h.bad), 0);
	/* the last write (i = 49) allows alice */
	CHECK_EQ_INT(registered->check(s, &x.c, &act), A);
	write_text(e.path, "{deny, {user, \"alice\"}, publish, [\"t/#\"]}.\n{allow, all}.\n");
	CHECK(registered->reload(s, &changed, err, sizeof err) && changed);
	CHECK_EQ_INT(registered->check(s, &x.c, &act), D);
	CHECK_EQ_INT(registered->check(s, &y.c, &act), A);
	/* a broken file keeps the previous rules and says where */
	write_text(e.path, "{allow, all}.\n{deny, all\n");
	changed = true;
	CHECK(!registered->reload(s, &changed, err, sizeof err));
	CHECK(!changed);
	char want[256];
	snprintf(want, sizeof want, "%s:3: unexpected end of file", e.path);
	CHECK(strncmp(err, want, strlen(want)) == 0);
	CHECK_EQ_INT(registered->check(s, &x.c, &act), D);
	/* a missing file too */
	unlink(e.path);
	CHECK(!registered->reload(s, &changed, err, sizeof err));
	CHECK(strstr(err, "cannot open") != NULL);
	CHECK_EQ_INT(registered->check(s, &x.c, &act), D);
	registered->destroy(s);

	/* parse-time errors */
	CHECK(src_parse("{ type = file }", err, sizeof err) == NULL);
	CHECK(strstr(err, "exactly one of path") != NULL);
	CHECK(src_parse("{ type = file, path = \"a\", rules = \"{allow, all}.\" }", err, sizeof err) == NULL);
	CHECK(strstr(err, "exactly one of path") != NULL);
	CHECK(src_parse("{ type = file, path = \"/nonexistent/acl.conf\" }", err, sizeof err) == NULL);
	CHECK(strstr(err, "cannot open /nonexistent/acl.conf") != NULL);
	CHECK(src_parse("{ type = file, path = \"x\", colour = blue }", err, sizeof err) == NULL);
	CHECK(strstr(err, "colour") != NULL && strstr(err, "unknown key") != NULL);
	write_text(e.path, "{allow, all}.\n\n{allow, {user, \"a\"}, publish, [\"x\"]}\n");
	obj = xasprintf("{ type = file, path = \"%s\" }", e.path);
	CHECK(src_parse(obj, err, sizeof err) == NULL);
	snprintf(want, sizeof want, "%s:3: expected '.' after rule", e.path);
	CHECK(strstr(err, want) != NULL);
	free(obj);

	/* inline rules */
	cfg = src_parse("{ type = file, rules = \"\"\"{allow, {user, \"alice\"}, all, [\"x\"]}.\n{deny, all}.\"\"\" }", err,
			sizeof err);
	CHECK(cfg != NULL);
	s = registered->create(cfg, NULL, err, sizeof err);
	CHECK(s != NULL);
	registered->free_config(cfg);
	struct authz_action ax = { .type = AUTHZ_SUBSCRIBE, .topic = "x", .topic_len = 1 };
	CHECK_EQ_INT(registered->check(s, &x.c, &ax), A);
	CHECK_EQ_INT(registered->check(s, &y.c, &ax), D);
	CHECK(registered->reload(s, &changed, err, sizeof err) && !changed);
	registered->destroy(s);
	CHECK(src_parse("{ type = file, rules = \"{allow, all}.\\n{bad}.\" }", err, sizeof err) == NULL);
	CHECK(strstr(err, "rules:2: expected a rule") != NULL);

	unlink(e.path);
	rmdir(e.dir);
	cl_done(&x);
	cl_done(&y);
}

int main(void)
{
	RUN(grammar_every_form);
	RUN(grammar_strings_and_atoms);
	RUN(errors_with_lines);
	RUN(limits);
	RUN(match_topics_and_dollar);
	RUN(match_actions_qos_retain);
	RUN(match_who);
	RUN(match_placeholders);
	RUN(add_parts);
	RUN(json_shapes);
	RUN(regex_limits);
	RUN(file_source);
	return unit_summary();
}
