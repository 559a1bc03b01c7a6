/* Unit tests for the HTTP authenticator: config parsing, request building (placeholders,
 * escaping, GET/POST encodings, headers) and answer parsing. */
#include "auth/authn_http.c"

#include <jansson.h>

#include "config/hocon.h"
#include "unit.h"

/* ---- helpers ---- */

static struct hocon_node *root;

/* Parse `authentication = { ... }` text with the authenticator's parser. */
static struct http_req_cfg *cfg_from(const char *body, char *err, size_t errlen)
{
	char *text = xasprintf("authentication {\n%s\n}\n", body);
	struct hocon_error he;
	hocon_free(root);
	root = hocon_parse_string(text, strlen(text), "t.conf", &he);
	free(text);
	if (!root) {
		snprintf(err, errlen, "hocon: %s", he.msg);
		return NULL;
	}
	const struct hocon_member *m = hocon_get_member(root, "authentication");
	struct cfg_reader r = { .err = err, .errlen = errlen };
	snprintf(r.path, sizeof r.path, "authentication");
	err[0] = '\0';
	return parse(&r, m);
}

static struct authn_request req(const char *user, const char *pass)
{
	struct authn_request r = {
		.username = user,
		.username_len = user ? strlen(user) : 0,
		.password = (const uint8_t *)pass,
		.password_len = pass ? strlen(pass) : 0,
		.client_id = "dev/1",
		.peerhost = "127.0.0.1",
		.peerport = 50000,
		.cert_common_name = "device-001",
		.listener = "tcp:default",
		.proto_version = 5,
	};
	return r;
}

struct built {
	struct buf url, body;
	char **hdrs;
	const char *why;
	bool ok;
};

static struct built build(const struct http_req_cfg *c, const struct authn_request *r)
{
	struct built b = { 0 };
	b.ok = build_request(c, r, &b.url, &b.body, &b.hdrs, &b.why);
	return b;
}

static void built_free(struct built *b)
{
	buf_free(&b->url);
	buf_free(&b->body);
	http_req_free_headers(b->hdrs);
}

static const char *header(const struct built *b, const char *name)
{
	size_t n = strlen(name);
	for (char **h = b->hdrs; h && *h; h++)
		if (strncmp(*h, name, n) == 0 && (*h)[n] == ':')
			return *h + n + 2;
	return NULL;
}

/* ---- config ---- */

TEST(config_errors)
{
	char err[512];
	struct {
		const char *text, *want;
	} bad[] = {
		{ "mechanism = password_based\nbackend = http", "url is required" },
		{ "url = \"http://${username}.example.com/auth\"", "not in the scheme, host or port" },
		{ "url = \"ftp://example.com/\"", "http:// or https://" },
		{ "url = \"http:///path\"", "no host" },
		{ "url = \"http://h/\"\nmethod = put", "expected one of get, post" },
		{ "url = \"http://h/\"\nmethod = get\nheaders { \"Content-Type\" = \"application/json\" }",
		  "cannot carry content-type" },
		{ "url = \"http://h/\"\nheaders { \"content-type\" = \"text/plain\" }", "content-type must be" },
		{ "url = \"http://h/\"\nmethod = get\nbody { a { b = c } }", "t.conf:4: authentication.body.a: expected a string, got object" },
		{ "url = \"http://h/\"\nbody = [1]", "expected an object" },
		{ "url = \"http://h/\"\nrequest_timeout = 0s", "request_timeout: must be a finite duration" },
		{ "url = \"http://h/\"\npool_size = 0", "pool_size" },
		{ "url = \"http://h/\"\nssl { enable = true, cacertfile = \"/nonexistent/ca.pem\" }", "cannot read /nonexistent/ca.pem" },
		{ "url = \"http://h/\"\nssl { verify = maybe }", "verify_none, verify_peer" },
		{ "url = \"http://h/\"\nssl { password = x }", "not supported yet: authentication.ssl.password" },
		{ "url = \"http://h/\"\nheaders { \"x-a\" = {} }", "expected a string" },
		{ "url = \"http://h/\"\nurl_typo = 1", "t.conf:3: authentication.url_typo: unknown key" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct http_req_cfg *c = cfg_from(bad[i].text, err, sizeof err);
		if (c || !strstr(err, bad[i].want))
			fprintf(stderr, "case %zu: got \"%s\", want \"%s\"\n", i, err, bad[i].want);
		CHECK(c == NULL);
		CHECK(strstr(err, bad[i].want) != NULL);
		http_req_cfg_unref(c);
	}
	struct http_req_cfg *c = cfg_from("mechanism = password_based\nbackend = http\nenable = true\n"
				      "url = \"https://auth.example.com:8443/mqtt/${clientid}?u=${username}\"\n"
				      "method = get\nrequest_timeout = 2s\nconnect_timeout = 1s\npool_size = 3\n"
				      "enable_pipelining = 100\nssl { enable = true, verify = verify_peer, "
				      "server_name_indication = disable, versions = [tlsv1.3] }",
				      err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	CHECK(!c->post);
	CHECK_STR(c->url_base, "https://auth.example.com:8443");
	CHECK_EQ_INT(c->request_timeout_ms, 2000);
	CHECK_EQ_INT(c->connect_timeout_ms, 1000);
	CHECK_EQ_INT(c->pool_size, 3);
	CHECK(c->ssl.enable && c->ssl.verify_peer && c->ssl.sni == NULL);
	CHECK(authn_http_header_find(c->headers, c->nheaders, "content-type") < 0);
	http_req_cfg_unref(c);
}

/* ---- requests ---- */

TEST(post_json_body)
{
	char err[512];
	struct http_req_cfg *c = cfg_from("url = \"http://127.0.0.1:8080/auth/${clientid}\"\n"
				      "headers { X-Who = \"${username}@${peerhost}\", Accept = \"*/*\" }\n"
				      "body { username = \"${username}\", password = \"${password}\", cn = \"${cert_common_name}\",\n"
				      "  port = \"${peerport}\", lit = \"a\\\"b\", n = 5, t = true, z = null,\n"
				      "  nested { cid = \"${clientid}\" }, \"${username}\" = key, unknown = \"${nope}\", "
				      "subj = \"${cert_subject}\" }",
				      err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	struct authn_request r = req("al\"ice\\ é", "p@ss word\n");
	struct built b = build(c, &r);
	CHECK(b.ok);
	CHECK_STR((char *)b.url.data, "http://127.0.0.1:8080/auth/dev%2F1");
	json_error_t je;
	json_t *j = json_loadb((const char *)b.body.data, b.body.len, JSON_REJECT_DUPLICATES, &je);
	CHECK(j != NULL);
	if (!j)
		fprintf(stderr, "body: %s (%s)\n", (char *)b.body.data, je.text);
	CHECK_STR(json_string_value(json_object_get(j, "username")), "al\"ice\\ é");
	CHECK_STR(json_string_value(json_object_get(j, "password")), "p@ss word\n");
	CHECK_STR(json_string_value(json_object_get(j, "cn")), "device-001");
	CHECK_STR(json_string_value(json_object_get(j, "port")), "50000");
	CHECK_STR(json_string_value(json_object_get(j, "lit")), "a\"b");
	CHECK_EQ_INT(json_integer_value(json_object_get(j, "n")), 5);
	CHECK(json_is_true(json_object_get(j, "t")));
	CHECK(json_is_null(json_object_get(j, "z")));
	CHECK_STR(json_string_value(json_object_get(json_object_get(j, "nested"), "cid")), "dev/1");
	CHECK_STR(json_string_value(json_object_get(j, "al\"ice\\ é")), "key");
	CHECK_STR(json_string_value(json_object_get(j, "unknown")), "${nope}"); /* not allowed: literal */
	CHECK_STR(json_string_value(json_object_get(j, "subj")), "");           /* undefined: empty */
	json_decref(j);
	CHECK_STR(header(&b, "x-who"), "al\"ice\\ é@127.0.0.1");
	CHECK_STR(header(&b, "accept"), "*/*");
	CHECK_STR(header(&b, "content-type"), "application/json");
	CHECK_STR(header(&b, "cache-control"), "no-cache");
	CHECK_STR(header(&b, "connection"), "keep-alive");
	CHECK_STR(header(&b, "keep-alive"), "timeout=30, max=1000");
	built_free(&b);

	/* A password that is not UTF-8 cannot go into a JSON body: a backend failure. */
	r.password = (const uint8_t *)"\xff\xfe";
	r.password_len = 2;
	b = build(c, &r);
	CHECK(!b.ok && b.why && strstr(b.why, "UTF-8"));
	built_free(&b);
	/* A username with CR LF cannot go into a header. */
	r = req("evil\r\nX-Injected: 1", "pw");
	b = build(c, &r);
	CHECK(!b.ok && b.why && strstr(b.why, "header"));
	built_free(&b);
	http_req_cfg_unref(c);
}

TEST(get_query_string)
{
	char err[512];
	struct http_req_cfg *c = cfg_from("method = get\nurl = \"http://h:1/a/${username}?fixed=1&c=${clientid}#frag\"\n"
				      "body { username = \"${username}\", password = \"${password}\", v = 2 }",
				      err, sizeof err);
	CHECK(c != NULL);
	if (!c)
		return;
	struct authn_request r = req("x' OR '1'='1; DROP TABLE users; --", "a&b=c d+e");
	struct built b = build(c, &r);
	CHECK(b.ok);
	CHECK_STR((char *)b.url.data,
		  "http://h:1/a/x%27%20OR%20%271%27%3D%271%3B%20DROP%20TABLE%20users%3B%20--?fixed=1&c=dev%2F1"
		  "&username=x%27%20OR%20%271%27%3D%271%3B%20DROP%20TABLE%20users%3B%20--&password=a%26b%3Dc%20d%2Be"
		  "&v=2#frag");
	CHECK_EQ_INT(b.body.len, 0);
	CHECK(header(&b, "content-type") == NULL);
	CHECK_STR(header(&b, "accept"), "application/json");
	built_free(&b);
	http_req_cfg_unref(c);

	c = cfg_from("method = get\nurl = \"http://h/auth\"\nbody { u = \"${username}\" }", err, sizeof err);
	CHECK(c != NULL);
	r = req("a b", "pw");
	b = build(c, &r);
	CHECK_STR((char *)b.url.data, "http://h/auth?u=a%20b");
	built_free(&b);
	http_req_cfg_unref(c);
}

TEST(post_form_body)
{
	char err[512];
	struct http_req_cfg *c = cfg_from("url = \"http://h/auth\"\n"
				      "headers { content-type = \"application/x-www-form-urlencoded\" }\n"
				      "body { username = \"${username}\", password = \"${password}\" }",
				      err, sizeof err);
	CHECK(c != NULL);
	if (!c) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	struct authn_request r = req("u&1", "\xff=");
	struct built b = build(c, &r);
	CHECK(b.ok);
	CHECK_STR((char *)b.body.data, "username=u%261&password=%FF%3D");
	CHECK_STR(header(&b, "content-type"), "application/x-www-form-urlencoded");
	built_free(&b);
	http_req_cfg_unref(c);
}

/* ---- answers ---- */

static struct authn_result resp(int status, const char *ct, const char *body)
{
	struct authn_result r;
	authn_http_parse_response(status, ct, (const uint8_t *)body, body ? strlen(body) : 0, 1700000000, &r);
	return r;
}

TEST(answers)
{
	struct authn_result r = resp(204, NULL, NULL);
	CHECK_EQ_INT(r.verdict, AUTHN_ALLOW);
	CHECK(!r.is_superuser);
	const char *J = "application/json";
	r = resp(200, J, "{\"result\":\"allow\",\"is_superuser\":true}");
	CHECK_EQ_INT(r.verdict, AUTHN_ALLOW);
	CHECK(r.is_superuser);
	r = resp(200, "application/json; charset=utf-8", "{\"result\":\"allow\",\"is_superuser\":\"1\"}");
	CHECK(r.verdict == AUTHN_ALLOW && r.is_superuser);
	r = resp(200, J, "{\"result\":\"allow\",\"is_superuser\":0}");
	CHECK(r.verdict == AUTHN_ALLOW && !r.is_superuser);
	r = resp(200, J, "{\"result\":\"deny\"}");
	CHECK_EQ_INT(r.verdict, AUTHN_DENY);
	CHECK_EQ_INT(r.rc, 0x86);
	r = resp(200, J, "{\"result\":\"ignore\"}");
	CHECK_EQ_INT(r.verdict, AUTHN_IGNORE);
	r = resp(200, J, "{}");
	CHECK_EQ_INT(r.verdict, AUTHN_IGNORE); /* result defaults to ignore */
	struct {
		int status;
		const char *ct, *body;
	} errors[] = {
		{ 0, NULL, NULL },
		{ 500, J, "{\"result\":\"allow\"}" },
		{ 201, J, "{\"result\":\"allow\"}" },
		{ 401, J, "{\"result\":\"deny\"}" },
		{ 302, NULL, "" },
		{ 200, J, "not json" },
		{ 200, J, "[\"allow\"]" },
		{ 200, J, "{\"result\":\"permit\"}" },
		{ 200, J, "{\"result\":true}" },
		{ 200, J, "{\"result\":\"allow\",\"result\":\"deny\"}" },
		{ 200, "text/plain", "{\"result\":\"allow\"}" },
		{ 200, NULL, "{\"result\":\"allow\"}" },
	};
	for (size_t i = 0; i < sizeof errors / sizeof errors[0]; i++) {
		r = resp(errors[i].status, errors[i].ct, errors[i].body);
		if (r.verdict != AUTHN_ERROR)
			fprintf(stderr, "error case %zu: verdict %d\n", i, r.verdict);
		CHECK_EQ_INT(r.verdict, AUTHN_ERROR);
		authn_http_result_clear(&r);
	}
	/* Fields of an allow. */
	r = resp(200, J,
		 "{\"result\":\"allow\",\"expire_at\":1700000100,\"acl\":[{\"permission\":\"allow\",\"action\":\"pub\","
		 "\"topic\":\"t/1\"}],\"client_attrs\":{\"site\":\"sto\",\"n\":5},\"clientid_override\":\"new-id\"}");
	CHECK_EQ_INT(r.verdict, AUTHN_ALLOW);
	CHECK_EQ_INT(r.expire_at, 1700000100);
	CHECK_STR(r.acl, "[{\"permission\":\"allow\",\"action\":\"pub\",\"topic\":\"t/1\"}]");
	CHECK_STR(r.client_attrs, "{\"site\":\"sto\"}");
	CHECK_STR(r.clientid_override, "new-id");
	authn_http_result_clear(&r);
	r = resp(200, J, "{\"result\":\"allow\",\"acl\":{\"pub\":[\"a\"],\"sub\":[\"b/#\"]}}");
	CHECK(r.verdict == AUTHN_ALLOW && r.acl && strstr(r.acl, "\"pub\""));
	authn_http_result_clear(&r);
	r = resp(200, J, "{\"result\":\"allow\",\"expire_at\":\"1700000100\"}");
	CHECK(r.verdict == AUTHN_ALLOW && r.expire_at == 1700000100);
	/* Bad acl or expire_at: bad username or password (EMQX). */
	const char *denies[] = {
		"{\"result\":\"allow\",\"acl\":\"pub a\"}",
		"{\"result\":\"allow\",\"acl\":{\"publish\":[\"a\"]}}",
		"{\"result\":\"allow\",\"acl\":[1]}",
		"{\"result\":\"allow\",\"expire_at\":1700000000}",
		"{\"result\":\"allow\",\"expire_at\":1600000000}",
		"{\"result\":\"allow\",\"expire_at\":\"tomorrow\"}",
		"{\"result\":\"allow\",\"acl\":[],\"expire_at\":5}",
	};
	for (size_t i = 0; i < sizeof denies / sizeof denies[0]; i++) {
		r = resp(200, J, denies[i]);
		CHECK_EQ_INT(r.verdict, AUTHN_DENY);
		CHECK_EQ_INT(r.rc, 0x86);
		CHECK(r.acl == NULL);
		authn_http_result_clear(&r);
	}
	/* A deny ignores the allow-only fields. */
	r = resp(200, J, "{\"result\":\"deny\",\"acl\":\"bad\",\"is_superuser\":true}");
	CHECK(r.verdict == AUTHN_DENY && !r.is_superuser && !r.acl);
	/* Form answers. */
	const char *F = "application/x-www-form-urlencoded";
	r = resp(200, F, "result=allow&is_superuser=true");
	CHECK(r.verdict == AUTHN_ALLOW && r.is_superuser);
	r = resp(200, F, "result=deny");
	CHECK_EQ_INT(r.verdict, AUTHN_DENY);
	r = resp(200, F, "other=1");
	CHECK_EQ_INT(r.verdict, AUTHN_IGNORE);
	r = resp(200, F, "result=allow&acl=%5B%5D&clientid_override=a+b");
	CHECK(r.verdict == AUTHN_ALLOW && r.acl && strcmp(r.acl, "[]") == 0);
	CHECK_STR(r.clientid_override, "a b");
	authn_http_result_clear(&r);
	r = resp(200, F, "result=%ZZ");
	CHECK_EQ_INT(r.verdict, AUTHN_ERROR);
	r = resp(200, F, "result=allo%");
	CHECK_EQ_INT(r.verdict, AUTHN_ERROR);
}

TEST(escaping)
{
	struct buf b = { 0 };
	CHECK(authn_http_json_escape(&b, "a\"\\\x01\x7f é€😀", strlen("a\"\\\x01\x7f é€😀")));
	buf_append(&b, "", 1);
	CHECK_STR((char *)b.data, "a\\\"\\\\\\u0001\\u007f é€😀");
	b.len = 0;
	CHECK(!authn_http_json_escape(&b, "\xc0\x80", 2));  /* overlong */
	CHECK(!authn_http_json_escape(&b, "\xed\xa0\x80", 3)); /* surrogate */
	CHECK(!authn_http_json_escape(&b, "\xe2\x82", 2));  /* truncated */
	b.len = 0;
	authn_http_url_escape(&b, "a-b_c.d~e f/g?h=i&j+k\xff", 22);
	buf_append(&b, "", 1);
	CHECK_STR((char *)b.data, "a-b_c.d~e%20f%2Fg%3Fh%3Di%26j%2Bk%FF");
	buf_free(&b);
}

int main(void)
{
	RUN(config_errors);
	RUN(post_json_body);
	RUN(get_query_string);
	RUN(post_form_body);
	RUN(answers);
	RUN(escaping);
	hocon_free(root);
	return unit_summary();
}
