/* ${placeholder} templates: rendering with escapes, unknown names kept literal, SQL bind
 * parameters. */
#include "auth/template.h"
#include "unit.h"

struct vars {
	const char *names[8];
	const char *values[8];
};

static const char *lookup(void *arg, const char *name, size_t nlen, size_t *len, char *scratch, size_t slen)
{
	(void)scratch;
	(void)slen;
	struct vars *v = arg;
	for (int i = 0; v->names[i]; i++) {
		if (strlen(v->names[i]) == nlen && memcmp(v->names[i], name, nlen) == 0) {
			if (!v->values[i])
				return NULL;
			*len = strlen(v->values[i]);
			return v->values[i];
		}
	}
	return NULL;
}

static char *render(const char *text, struct vars *v, enum tmpl_escape esc, bool *all)
{
	struct tmpl *t = tmpl_parse(text, tmpl_authn_vars);
	struct buf b = { 0 };
	*all = tmpl_render(t, lookup, v, esc, &b);
	buf_append(&b, "", 1);
	tmpl_free(t);
	return (char *)b.data;
}

TEST(raw_rendering)
{
	struct vars v = { { "username", "clientid", NULL }, { "alice", "c-1", NULL } };
	bool all;
	char *s = render("user=${username}&cid=${clientid}", &v, TMPL_RAW, &all);
	CHECK_STR(s, "user=alice&cid=c-1");
	CHECK(all);
	free(s);
}

TEST(undefined_renders_empty_and_is_reported)
{
	struct vars v = { { "username", NULL }, { NULL } };
	bool all;
	char *s = render("[${username}]", &v, TMPL_RAW, &all);
	CHECK_STR(s, "[]");
	CHECK(!all);
	free(s);
}

TEST(unknown_placeholders_stay_literal)
{
	struct vars v = { { "username", NULL }, { "bob", NULL } };
	bool all;
	char *s = render("${username}/${secret}/${", &v, TMPL_RAW, &all);
	CHECK_STR(s, "bob/${secret}/${");
	free(s);
	struct tmpl *t = tmpl_parse("${client_attrs.site} ${client_attrs}", tmpl_authn_vars);
	CHECK(tmpl_uses(t, "client_attrs.site"));
	CHECK(!tmpl_uses(t, "client_attrs"));
	tmpl_free(t);
}

TEST(url_escaping)
{
	struct vars v = { { "username", NULL }, { "a b/c?d=e&f%\xC3\xA9", NULL } };
	bool all;
	char *s = render("/auth?u=${username}", &v, TMPL_URL, &all);
	CHECK_STR(s, "/auth?u=a%20b%2Fc%3Fd%3De%26f%25%C3%A9");
	free(s);
}

TEST(json_escaping)
{
	struct vars v = { { "username", NULL }, { "q\"b\\s\n\x01", NULL } };
	bool all;
	char *s = render("{\"u\":\"${username}\"}", &v, TMPL_JSON, &all);
	CHECK_STR(s, "{\"u\":\"q\\\"b\\\\s\\u000a\\u0001\"}");
	free(s);
}

TEST(sql_binds_parameters)
{
	char *sql = NULL, **names = NULL, err[128];
	size_t n = 0;
	CHECK(tmpl_sql("SELECT h FROM t WHERE u = ${username} AND c = '${clientid}' LIMIT 1", tmpl_authn_vars,
		       TMPL_SQL_DOLLAR, &sql, &names, &n, err, sizeof err));
	CHECK_STR(sql, "SELECT h FROM t WHERE u = $1 AND c = $2 LIMIT 1");
	CHECK_EQ_INT(n, 2);
	CHECK_STR(names[0], "username");
	CHECK_STR(names[1], "clientid");
	CHECK(names[2] == NULL);
	free(sql);
	tmpl_sql_free_names(names);
	CHECK(tmpl_sql("SELECT 1 WHERE a = ${username} OR b = ${username}", tmpl_authn_vars, TMPL_SQL_QUESTION, &sql,
		       &names, &n, err, sizeof err));
	CHECK_STR(sql, "SELECT 1 WHERE a = ? OR b = ?");
	CHECK_EQ_INT(n, 2);
	free(sql);
	tmpl_sql_free_names(names);
	CHECK(!tmpl_sql("SELECT ${evil}", tmpl_authn_vars, TMPL_SQL_DOLLAR, &sql, &names, &n, err, sizeof err));
	CHECK(strstr(err, "evil") != NULL);
	CHECK(tmpl_sql("SELECT 1", tmpl_authn_vars, TMPL_SQL_DOLLAR, &sql, &names, &n, err, sizeof err));
	CHECK_EQ_INT(n, 0);
	CHECK(names && names[0] == NULL);
	free(sql);
	tmpl_sql_free_names(names);
}

int main(void)
{
	RUN(raw_rendering);
	RUN(undefined_renders_empty_and_is_reported);
	RUN(unknown_placeholders_stay_literal);
	RUN(url_escaping);
	RUN(json_escaping);
	RUN(sql_binds_parameters);
	return unit_summary();
}
