/* The asynchronous authorization sources' pure parts: EMQX's raw rule contract (database
 * rows and Redis hash entries -> rules, then acl_check), Redis command parsing and reply
 * handling, PostgreSQL array values, the HTTP answer, and each source's config. The
 * network paths are covered end to end (tests/e2e/test_authz_{redis,pgsql,mysql,http}.py). */
#include "authz/source_db.c"
#include "authz/source_redis.c"
#include "authz/source_pgsql.c"
#include "authz/source_mysql.c"
#include "authz/source_http.c"

#include "config/hocon.h"

#include "unit.h"

/* ---- helpers ---- */

static struct dbauth_value text(const char *s)
{
	return (struct dbauth_value){ .type = DBAUTH_V_TEXT, .s = s, .len = strlen(s) };
}

static struct dbauth_value integer(const char *s)
{
	return (struct dbauth_value){ .type = DBAUTH_V_INT, .s = s, .len = strlen(s) };
}

static struct dbauth_value boolean(const char *s)
{
	return (struct dbauth_value){ .type = DBAUTH_V_BOOL, .s = s, .len = strlen(s) };
}

static const struct dbauth_value null_v = { .type = DBAUTH_V_NULL };
static const struct dbauth_value absent_v = { .type = DBAUTH_V_ABSENT };

static struct azdb_row row5(const char *perm, const char *action, const char *topic, struct dbauth_value qos,
			    struct dbauth_value retain)
{
	struct azdb_row r;
	memset(&r, 0, sizeof r);
	r.v[AZDB_C_PERMISSION] = perm ? text(perm) : absent_v;
	r.v[AZDB_C_ACTION] = action ? text(action) : absent_v;
	r.v[AZDB_C_TOPIC] = topic ? text(topic) : absent_v;
	r.v[AZDB_C_QOS] = qos;
	r.v[AZDB_C_RETAIN] = retain;
	return r;
}

static struct authz_client client(const char *username, const char *clientid)
{
	struct authz_client c;
	memset(&c, 0, sizeof c);
	c.username = username;
	c.username_len = username ? strlen(username) : 0;
	c.clientid = clientid;
	c.peerhost = "127.0.0.1";
	c.listener = "tcp:default";
	c.zone = "default";
	c.proto_version = 5;
	return c;
}

static enum authz_verdict check(const struct acl *a, const struct authz_client *cl, enum authz_action_type t,
				const char *topic, uint8_t qos, bool retain)
{
	struct authz_action act = { .type = t, .topic = topic, .topic_len = strlen(topic), .qos = qos, .retain = retain };
	return a ? acl_check(a, cl, &act) : AUTHZ_NOMATCH;
}

static void job_init(struct azdb_job *j)
{
	memset(j, 0, sizeof *j);
}

static void job_clear(struct azdb_job *j)
{
	acl_free(j->acl);
	memset(j, 0, sizeof *j);
}

/* ---- the raw rule contract ---- */

TEST(columns_and_actions)
{
	CHECK_EQ_INT(azdb_col_of("permission", 10), AZDB_C_PERMISSION);
	CHECK_EQ_INT(azdb_col_of("ACTION", 6), AZDB_C_ACTION);
	CHECK_EQ_INT(azdb_col_of("topic", 5), AZDB_C_TOPIC);
	CHECK_EQ_INT(azdb_col_of("qos", 3), AZDB_C_QOS);
	CHECK_EQ_INT(azdb_col_of("retain", 6), AZDB_C_RETAIN);
	CHECK_EQ_INT(azdb_col_of("topics", 6), -1);
	CHECK_EQ_INT(azdb_col_of("username", 8), -1);

	CHECK_EQ_INT(azdb_action_of("publish", 7), AUTHZ_PUBLISH);
	CHECK_EQ_INT(azdb_action_of("pub", 3), AUTHZ_PUBLISH);
	CHECK_EQ_INT(azdb_action_of("subscribe", 9), AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(azdb_action_of("sub", 3), AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(azdb_action_of("all", 3), AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(azdb_action_of("pubsub", 6), 0); /* not in EMQX's raw rules */
	CHECK_EQ_INT(azdb_action_of("Publish", 7), 0);
	CHECK_EQ_INT(azdb_action_of("", 0), 0);
}

TEST(qos_values)
{
	uint8_t m = 99;
	struct dbauth_value v;
	CHECK(azdb_qos_of(&absent_v, &m) && m == 0);
	CHECK(azdb_qos_of(&null_v, &m) && m == 0);
	v = integer("0");
	CHECK(azdb_qos_of(&v, &m) && m == 1);
	v = integer("2");
	CHECK(azdb_qos_of(&v, &m) && m == 4);
	v = integer("3");
	CHECK(!azdb_qos_of(&v, &m));
	v = integer("-1");
	CHECK(!azdb_qos_of(&v, &m));
	v = integer("10");
	CHECK(!azdb_qos_of(&v, &m));
	v = text("1");
	CHECK(azdb_qos_of(&v, &m) && m == 2);
	v = text("0,1");
	CHECK(azdb_qos_of(&v, &m) && m == 3);
	v = text(" 0 , 2 ");
	CHECK(azdb_qos_of(&v, &m) && m == 5);
	v = text("0,1,2");
	CHECK(azdb_qos_of(&v, &m) && m == 7);
	v = text("");
	CHECK(!azdb_qos_of(&v, &m));
	v = text("0,,1");
	CHECK(!azdb_qos_of(&v, &m));
	v = text("0,");
	CHECK(!azdb_qos_of(&v, &m));
	v = text("1;2");
	CHECK(!azdb_qos_of(&v, &m));
	v = text("all");
	CHECK(!azdb_qos_of(&v, &m));
	v = boolean("t");
	CHECK(!azdb_qos_of(&v, &m));
}

TEST(retain_values)
{
	int r = 99;
	struct dbauth_value v;
	CHECK(azdb_retain_of(&absent_v, &r) && r == -1);
	CHECK(azdb_retain_of(&null_v, &r) && r == -1);
	v = integer("1");
	CHECK(azdb_retain_of(&v, &r) && r == 1);
	v = integer("0");
	CHECK(azdb_retain_of(&v, &r) && r == 0);
	v = integer("2");
	CHECK(!azdb_retain_of(&v, &r));
	v = boolean("t");
	CHECK(azdb_retain_of(&v, &r) && r == 1);
	v = boolean("f");
	CHECK(azdb_retain_of(&v, &r) && r == 0);
	v = boolean("true");
	CHECK(azdb_retain_of(&v, &r) && r == 1);
	v = text("true");
	CHECK(azdb_retain_of(&v, &r) && r == 1);
	v = text("false");
	CHECK(azdb_retain_of(&v, &r) && r == 0);
	v = text("1");
	CHECK(azdb_retain_of(&v, &r) && r == 1);
	v = text("0");
	CHECK(azdb_retain_of(&v, &r) && r == 0);
	v = text("all");
	CHECK(azdb_retain_of(&v, &r) && r == -1);
	v = text("yes");
	CHECK(!azdb_retain_of(&v, &r));
	v = text("TRUE");
	CHECK(!azdb_retain_of(&v, &r));
}

TEST(row_to_rule)
{
	struct acl_rule_spec s;
	char err[160];
	struct azdb_row r = row5("allow", "publish", "t/1", absent_v, absent_v);
	CHECK(azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(s.allow);
	CHECK_EQ_INT(s.actions, AUTHZ_PUBLISH);
	CHECK_EQ_INT(s.qos_mask, 0);
	CHECK_EQ_INT(s.retain, -1);
	CHECK(s.topic_len == 3 && memcmp(s.topic, "t/1", 3) == 0);

	r = row5("deny", "sub", "eq t/#", text("1,2"), text("true"));
	CHECK(azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(!s.allow);
	CHECK_EQ_INT(s.actions, AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(s.qos_mask, 6);
	CHECK_EQ_INT(s.retain, -1); /* retain only constrains publish */

	r = row5("allow", "all", "a/+", integer("0"), integer("1"));
	CHECK(azdb_row_spec(&r, &s, err, sizeof err));
	CHECK_EQ_INT(s.actions, AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(s.qos_mask, 1);
	CHECK_EQ_INT(s.retain, 1);

	/* subscribe ignores even an invalid retain, as EMQX */
	r = row5("allow", "subscribe", "a", absent_v, text("bogus"));
	CHECK(azdb_row_spec(&r, &s, err, sizeof err));

	r = row5(NULL, "publish", "t", absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "missing permission or action") != NULL);
	r = row5("allow", NULL, "t", absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	r = row5("Allow", "publish", "t", absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "invalid permission Allow") != NULL);
	r = row5("allow", "read", "t", absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "invalid action read") != NULL);
	r = row5("allow", "publish", NULL, absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "missing topic") != NULL);
	r = row5("allow", "publish", "t", text("3"), absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "invalid qos 3") != NULL);
	r = row5("allow", "publish", "t", absent_v, text("maybe"));
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strstr(err, "invalid retain maybe") != NULL);
	/* NULL permission */
	r = row5("allow", "publish", "t", absent_v, absent_v);
	r.v[AZDB_C_PERMISSION] = null_v;
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	/* control characters in an error message are not echoed */
	r = row5("al\nlow", "publish", "t", absent_v, absent_v);
	CHECK(!azdb_row_spec(&r, &s, err, sizeof err));
	CHECK(strchr(err, '\n') == NULL);
}

TEST(redis_value_to_rule)
{
	struct acl_rule_spec s;
	char err[160];
	CHECK(azdb_redis_spec("t/1", 3, "publish", 7, &s, err, sizeof err));
	CHECK(s.allow);
	CHECK_EQ_INT(s.actions, AUTHZ_PUBLISH);
	CHECK_EQ_INT(s.qos_mask, 0);
	CHECK_EQ_INT(s.retain, -1);
	CHECK(s.topic_len == 3 && memcmp(s.topic, "t/1", 3) == 0);
	CHECK(azdb_redis_spec("t", 1, "subscribe", 9, &s, err, sizeof err));
	CHECK_EQ_INT(s.actions, AUTHZ_SUBSCRIBE);
	CHECK(azdb_redis_spec("t", 1, "all", 3, &s, err, sizeof err));
	CHECK_EQ_INT(s.actions, AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE);

	const char *j1 = "{\"action\":\"publish\",\"qos\":[1,2],\"retain\":false}";
	CHECK(azdb_redis_spec("t", 1, j1, strlen(j1), &s, err, sizeof err));
	CHECK(s.allow);
	CHECK_EQ_INT(s.actions, AUTHZ_PUBLISH);
	CHECK_EQ_INT(s.qos_mask, 6);
	CHECK_EQ_INT(s.retain, 0);
	const char *j2 = "{\"action\":\"all\",\"qos\":\"0,1\",\"retain\":\"true\",\"permission\":\"deny\"}";
	CHECK(azdb_redis_spec("t", 1, j2, strlen(j2), &s, err, sizeof err));
	CHECK(s.allow); /* the permission is always allow (EMQX keeps only action, qos, retain) */
	CHECK_EQ_INT(s.qos_mask, 3);
	CHECK_EQ_INT(s.retain, 1);
	const char *j3 = "{\"action\":\"sub\",\"qos\":1}";
	CHECK(azdb_redis_spec("t", 1, j3, strlen(j3), &s, err, sizeof err));
	CHECK_EQ_INT(s.actions, AUTHZ_SUBSCRIBE);
	CHECK_EQ_INT(s.qos_mask, 2);
	const char *j4 = "{\"action\":\"publish\",\"qos\":[\"0\",\"2\"],\"retain\":1,\"x\":[1]}";
	CHECK(azdb_redis_spec("t", 1, j4, strlen(j4), &s, err, sizeof err));
	CHECK_EQ_INT(s.qos_mask, 5);
	CHECK_EQ_INT(s.retain, 1);
	const char *j5 = "{\"action\":\"publish\",\"qos\":null,\"retain\":null}";
	CHECK(azdb_redis_spec("t", 1, j5, strlen(j5), &s, err, sizeof err));
	CHECK_EQ_INT(s.qos_mask, 0);
	CHECK_EQ_INT(s.retain, -1);

	static const char *const bad[] = {
		"pub",                                     /* bare words are publish|subscribe|all only */
		"Publish",
		"",
		"{\"qos\":1}",                             /* no action */
		"{\"action\":1}",
		"{\"action\":\"read\"}",
		"{\"action\":\"publish\",\"qos\":3}",
		"{\"action\":\"publish\",\"qos\":[0,5]}",
		"{\"action\":\"publish\",\"qos\":1.5}",
		"{\"action\":\"publish\",\"qos\":{}}",
		"{\"action\":\"publish\",\"retain\":\"maybe\"}",
		"{\"action\":\"publish\",\"retain\":[true]}",
		"[\"publish\"]",
		"{\"action\":\"publish\"",
		"{\"action\":\"publish\",\"action\":\"subscribe\"}", /* duplicate key */
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		err[0] = '\0';
		bool ok = azdb_redis_spec("t", 1, bad[i], strlen(bad[i]), &s, err, sizeof err);
		if (ok)
			fprintf(stderr, "accepted: %s\n", bad[i]);
		CHECK(!ok);
		CHECK(err[0] != '\0');
	}
	/* subscribe ignores retain */
	const char *j6 = "{\"action\":\"subscribe\",\"retain\":\"maybe\"}";
	CHECK(azdb_redis_spec("t", 1, j6, strlen(j6), &s, err, sizeof err));
}

/* Rows -> a temporary ACL -> acl_check, as azdb_job_done does. */
TEST(rows_first_match_decides)
{
	struct azdb_job j;
	job_init(&j);
	struct authz_client alice = client("alice", "c1");
	struct azdb_row r;
	r = row5("deny", "publish", "t/secret", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	r = row5("allow", "all", "t/#", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	r = row5("deny", "all", "#", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	CHECK_EQ_INT(j.nrows, 3);
	CHECK_EQ_INT(j.nbad, 0);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/secret", 0, false), AUTHZ_DENY);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "t/secret", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/x", 1, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "other", 1, false), AUTHZ_DENY);
	job_clear(&j);

	/* no rows: NOMATCH */
	job_init(&j);
	CHECK(j.acl == NULL);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t", 0, false), AUTHZ_NOMATCH);
	/* rows that do not match: NOMATCH */
	r = row5("allow", "subscribe", "a/b", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "a/b", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "a/c", 0, false), AUTHZ_NOMATCH);
	job_clear(&j);
}

TEST(rows_qos_retain_conditions)
{
	struct azdb_job j;
	job_init(&j);
	struct authz_client c = client("u", "c");
	struct azdb_row r;
	r = row5("allow", "publish", "q/#", text("0,1"), text("false"));
	azdb_job_add_row(&j, &r);
	r = row5("allow", "subscribe", "q/#", integer("1"), absent_v);
	azdb_job_add_row(&j, &r);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_PUBLISH, "q/1", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_PUBLISH, "q/1", 1, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_PUBLISH, "q/1", 2, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_PUBLISH, "q/1", 1, true), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_SUBSCRIBE, "q/1", 1, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_SUBSCRIBE, "q/1", 0, false), AUTHZ_NOMATCH);
	job_clear(&j);
}

TEST(rows_placeholders_and_eq)
{
	struct azdb_job j;
	job_init(&j);
	struct authz_client alice = client("alice", "dev-1");
	struct authz_client anon = client(NULL, "dev-2");
	struct azdb_row r;
	r = row5("allow", "all", "users/${username}/#", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	r = row5("allow", "publish", "dev/${clientid}", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	r = row5("deny", "subscribe", "eq #", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	r = row5("allow", "subscribe", "#", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "users/alice/x", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "users/bob/x", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &anon, AUTHZ_PUBLISH, "users//x", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "dev/dev-1", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "dev/dev-2", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "#", 0, false), AUTHZ_DENY);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "a/#", 0, false), AUTHZ_ALLOW);
	job_clear(&j);
}

TEST(rows_invalid_are_skipped)
{
	struct azdb_job j;
	job_init(&j);
	struct authz_client c = client("u", "c");
	struct azdb_row r;
	r = row5("allow", "publish", "t", text("7"), absent_v);    /* bad qos */
	azdb_job_add_row(&j, &r);
	r = row5("allow", "publish", "t/+/#/x", absent_v, absent_v); /* bad filter */
	azdb_job_add_row(&j, &r);
	r = row5("deny", "publish", "t", absent_v, absent_v);
	azdb_job_add_row(&j, &r);
	CHECK_EQ_INT(j.nrows, 3);
	CHECK_EQ_INT(j.nbad, 2);
	CHECK(strstr(j.bad, "invalid qos 7") != NULL);
	CHECK_EQ_INT(check(j.acl, &c, AUTHZ_PUBLISH, "t", 0, false), AUTHZ_DENY);
	job_clear(&j);
}

TEST(redis_hash_rules)
{
	struct azdb_job j;
	job_init(&j);
	struct authz_client alice = client("alice", "c1");
	azdb_job_add_redis(&j, "t/pub", 5, "publish", 7);
	azdb_job_add_redis(&j, "t/sub", 5, "subscribe", 9);
	azdb_job_add_redis(&j, "t/bad", 5, "nonsense", 8);
	const char *js = "{\"action\":\"publish\",\"qos\":[0],\"retain\":false}";
	azdb_job_add_redis(&j, "t/q0/${username}", 16, js, strlen(js));
	CHECK_EQ_INT(j.nrows, 4);
	CHECK_EQ_INT(j.nbad, 1);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/pub", 2, true), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "t/pub", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "t/sub", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/bad", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/q0/alice", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/q0/alice", 1, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "t/q0/alice", 0, true), AUTHZ_NOMATCH);
	job_clear(&j);
}

/* ---- Redis command and replies ---- */

TEST(redis_cmd)
{
	struct rz_cfg c;
	char err[256];
	memset(&c, 0, sizeof c);
	CHECK(rz_cmd_parse("HGETALL mqtt_acl:${username}", &c, err, sizeof err));
	CHECK(!c.hmget);
	CHECK_EQ_INT(c.nwords, 2);
	CHECK_STR(c.words[1], "mqtt_acl:${username}");
	CHECK(rz_cmd_parse("  hmget  acl:${clientid} \"a b/${topic}\" t/2 ", &c, err, sizeof err));
	CHECK(c.hmget);
	CHECK_EQ_INT(c.nwords, 4);
	CHECK_STR(c.words[2], "a b/${topic}");
	CHECK(rz_cmd_parse("hgetall 'k ${username}'", &c, err, sizeof err));
	CHECK(!c.hmget);
	CHECK_STR(c.words[1], "k ${username}");

	CHECK(!rz_cmd_parse("", &c, err, sizeof err));
	CHECK(strstr(err, "empty command") != NULL);
	CHECK(!rz_cmd_parse("HGET k f", &c, err, sizeof err));
	CHECK(strstr(err, "only HGETALL and HMGET") != NULL);
	CHECK(!rz_cmd_parse("HGETALL", &c, err, sizeof err));
	CHECK(strstr(err, "needs a key") != NULL);
	CHECK(!rz_cmd_parse("HGETALL k extra", &c, err, sizeof err));
	CHECK(!rz_cmd_parse("HMGET k", &c, err, sizeof err));
	CHECK(strstr(err, "at least one field") != NULL);
	CHECK(!rz_cmd_parse("HGETALL \"k", &c, err, sizeof err));
	CHECK(strstr(err, "unterminated") != NULL);
	/* the last good command is kept */
	CHECK(!c.hmget);
	CHECK_STR(c.words[1], "k ${username}");
	conn_redis_free_words(c.words, c.nwords);
}

static redisReply rstr(const char *s)
{
	return (redisReply){ .type = REDIS_REPLY_STRING, .str = (char *)s, .len = strlen(s) };
}

TEST(redis_replies)
{
	struct authz_client alice = client("alice", "c1");
	struct azdb_job j;
	/* HGETALL: field, value pairs */
	redisReply e[4] = { rstr("a/#"), rstr("publish"), rstr("b/+"), rstr("{\"action\":\"subscribe\"}") };
	redisReply *ev[4] = { &e[0], &e[1], &e[2], &e[3] };
	redisReply arr = { .type = REDIS_REPLY_ARRAY, .elements = 4, .element = ev };
	job_init(&j);
	CHECK(rz_rules_of_reply(false, &arr, &j));
	CHECK_EQ_INT(j.nrows, 2);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "a/1", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "b/1", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "a/1", 0, false), AUTHZ_NOMATCH);
	job_clear(&j);
	/* an empty hash */
	redisReply empty = { .type = REDIS_REPLY_ARRAY };
	job_init(&j);
	CHECK(rz_rules_of_reply(false, &empty, &j));
	CHECK_EQ_INT(j.nrows, 0);
	CHECK(j.acl == NULL);
	/* odd element count, or a non-string: not an HGETALL answer */
	arr.elements = 3;
	CHECK(!rz_rules_of_reply(false, &arr, &j));
	arr.elements = 4;
	redisReply in = { .type = REDIS_REPLY_INTEGER, .integer = 1 };
	ev[1] = &in;
	CHECK(!rz_rules_of_reply(false, &arr, &j));
	redisReply st = { .type = REDIS_REPLY_STATUS, .str = "OK", .len = 2 };
	CHECK(!rz_rules_of_reply(false, &st, &j));
	job_clear(&j);

	/* HMGET: values of the command's fields (param[2..]), nil = absent */
	char *params[] = { "HMGET", "acl:alice", "x/1", "x/2", "x/3" };
	size_t plen[] = { 5, 9, 3, 3, 3 };
	redisReply nil = { .type = REDIS_REPLY_NIL };
	redisReply v1 = rstr("subscribe"), v3 = rstr("all");
	redisReply *hv[3] = { &v1, &nil, &v3 };
	redisReply harr = { .type = REDIS_REPLY_ARRAY, .elements = 3, .element = hv };
	job_init(&j);
	j.nparams = 5;
	j.param = params;
	j.param_len = plen;
	CHECK(rz_rules_of_reply(true, &harr, &j));
	CHECK_EQ_INT(j.nrows, 2);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_SUBSCRIBE, "x/1", 0, false), AUTHZ_ALLOW);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "x/1", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "x/2", 0, false), AUTHZ_NOMATCH);
	CHECK_EQ_INT(check(j.acl, &alice, AUTHZ_PUBLISH, "x/3", 0, false), AUTHZ_ALLOW);
	/* a nil reply (no such key) is no rule */
	struct acl *keep = j.acl;
	CHECK(rz_rules_of_reply(true, &nil, &j));
	CHECK(j.acl == keep);
	j.param = NULL;
	j.param_len = NULL;
	job_clear(&j);
}

/* ---- PostgreSQL arrays ---- */

TEST(pg_arrays)
{
	char out[16];
	size_t n = 0;
	const char *s = pgz_array_list("{0,1}", 5, out, sizeof out, &n);
	CHECK(s && n == 3 && strcmp(s, "0,1") == 0);
	s = pgz_array_list("{\"0\",\"2\"}", 9, out, sizeof out, &n);
	CHECK(s && strcmp(s, "0,2") == 0);
	s = pgz_array_list("{}", 2, out, sizeof out, &n);
	CHECK(s && n == 0);
	CHECK(pgz_array_list("0,1", 3, out, sizeof out, &n) == NULL);
	CHECK(pgz_array_list("{0,1,2,0,1,2,0,1,2}", 19, out, 8, &n) == NULL); /* does not fit */
}

/* ---- HTTP answers ---- */

static enum authz_verdict http_answer(int status, const char *ct, const char *body, bool *malformed)
{
	char why[200];
	bool m;
	enum authz_verdict v = hz_verdict(status, ct, (const uint8_t *)body, body ? strlen(body) : 0, why, sizeof why, &m);
	if (malformed)
		*malformed = m;
	return v;
}

TEST(http_answers)
{
	bool bad;
	CHECK_EQ_INT(http_answer(204, NULL, NULL, &bad), AUTHZ_ALLOW);
	CHECK(!bad);
	CHECK_EQ_INT(http_answer(200, "application/json", "{\"result\":\"allow\"}", &bad), AUTHZ_ALLOW);
	CHECK_EQ_INT(http_answer(200, "application/json; charset=utf-8", "{\"result\":\"deny\"}", &bad), AUTHZ_DENY);
	CHECK_EQ_INT(http_answer(200, "Application/JSON", "{\"result\":\"ignore\"}", &bad), AUTHZ_NOMATCH);
	CHECK(!bad);
	/* no content-type: JSON (EMQX's default) */
	CHECK_EQ_INT(http_answer(200, NULL, "{\"result\":\"allow\"}", &bad), AUTHZ_ALLOW);
	/* no or another result: no match, flagged */
	CHECK_EQ_INT(http_answer(200, "application/json", "{}", &bad), AUTHZ_NOMATCH);
	CHECK(bad);
	CHECK_EQ_INT(http_answer(200, "application/json", "{\"result\":\"maybe\"}", &bad), AUTHZ_NOMATCH);
	CHECK(bad);
	CHECK_EQ_INT(http_answer(200, "application/json", "{\"result\":\"allowed-and-more-text\"}", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(200, "application/json", "{\"result\":true}", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(200, "application/json", "[\"allow\"]", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(200, "application/json", "<html>", &bad), AUTHZ_NOMATCH);
	CHECK(bad);
	CHECK_EQ_INT(http_answer(200, "application/json", "", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(200, "text/plain", "allow", &bad), AUTHZ_NOMATCH);
	CHECK(bad);
	/* form bodies */
	CHECK_EQ_INT(http_answer(200, "application/x-www-form-urlencoded", "result=allow", &bad), AUTHZ_ALLOW);
	CHECK_EQ_INT(http_answer(200, "application/x-www-form-urlencoded", "a=1&result=deny&b=2", &bad), AUTHZ_DENY);
	CHECK_EQ_INT(http_answer(200, "application/x-www-form-urlencoded", "result=%61llow", &bad), AUTHZ_ALLOW);
	CHECK_EQ_INT(http_answer(200, "application/x-www-form-urlencoded", "result=ignore", &bad), AUTHZ_NOMATCH);
	CHECK(!bad);
	CHECK_EQ_INT(http_answer(200, "application/x-www-form-urlencoded", "xresult=allow", &bad), AUTHZ_NOMATCH);
	CHECK(bad);
	/* other statuses: no match, not flagged (EMQX logs them at debug) */
	CHECK_EQ_INT(http_answer(500, "application/json", "{\"result\":\"allow\"}", &bad), AUTHZ_NOMATCH);
	CHECK(!bad);
	CHECK_EQ_INT(http_answer(403, "application/json", "{\"result\":\"deny\"}", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(201, "application/json", "{\"result\":\"allow\"}", &bad), AUTHZ_NOMATCH);
	CHECK_EQ_INT(http_answer(302, NULL, NULL, &bad), AUTHZ_NOMATCH);
	/* no answer at all */
	CHECK_EQ_INT(http_answer(0, NULL, NULL, &bad), AUTHZ_ERROR);
}

TEST(http_form_get)
{
	char out[32];
	CHECK(hz_form_get("a=b+c%2Fd&result=x", 18, "a", out, sizeof out));
	CHECK_STR(out, "b c/d");
	CHECK(hz_form_get("a=b&result=", 11, "result", out, sizeof out));
	CHECK_STR(out, "");
	CHECK(!hz_form_get("a=b&res=1", 9, "result", out, sizeof out));
	CHECK(!hz_form_get("", 0, "result", out, sizeof out));
	CHECK(hz_form_get("result=%zz", 10, "result", out, sizeof out));
	CHECK_STR(out, "%zz");
}

/* ---- configuration ---- */

/* Parse the first source of `authorization.sources` with ops. */
static void *parse_source_cfg(const struct authz_source_ops *ops, const char *text, char *err, size_t errlen)
{
	struct hocon_error he;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &he);
	if (!root) {
		snprintf(err, errlen, "hocon: %s", he.msg);
		return NULL;
	}
	struct cfg_reader r = { .err = err, .errlen = errlen };
	err[0] = '\0';
	const struct hocon_member *m = hocon_get_member(root, "source");
	size_t old = cfgr_path_push(&r, "authorization.sources.1");
	void *c = ops->parse(&r, m);
	cfgr_path_pop(&r, old);
	hocon_free(root);
	return c;
}

TEST(redis_config)
{
	char err[512];
	struct rz_cfg *c = parse_source_cfg(&rz_ops,
					    "source {\n  type = redis\n  enable = true\n  redis_type = single\n"
					    "  server = \"10.0.0.5\"\n  database = 2\n  password = \"pw\"\n"
					    "  pool_size = 3\n  query_timeout = 2s\n  auto_reconnect = true\n"
					    "  cmd = \"HGETALL mqtt_acl:${username}\"\n  ssl { enable = false }\n}\n",
					    err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK_STR(c->c.host, "10.0.0.5");
		CHECK_EQ_INT(c->c.port, 6379);
		CHECK_EQ_INT(c->database, 2);
		CHECK_EQ_INT(c->c.pool_size, 3);
		CHECK_EQ_INT(c->c.query_timeout_ms, 2000);
		CHECK(!c->hmget);
		rz_free_config(c);
	}
	struct {
		const char *body, *want;
	} bad[] = {
		{ "server = \"127.0.0.1\"", "cmd is required" },
		{ "cmd = \"HGETALL k\"", "server is required" },
		{ "server = \"h\", cmd = \"GET k\"", "only HGETALL and HMGET" },
		{ "server = \"h\", cmd = \"HGETALL k\", redis_type = cluster", "not supported yet" },
		{ "server = \"h\", cmd = \"HGETALL k\", ssl { enable = true }", "hiredis" },
		{ "server = \"h\", cmd = \"HGETALL k\", password_hash_algorithm { name = plain }", "unknown key" },
		{ "server = \"h\", cmd = \"HGETALL k\", compatibility_mode = v4", "not supported yet" },
		{ "server = \"h\", cmd = \"HGETALL k\", username = u", "username needs a password" },
		{ "server = \"h:99999\", cmd = \"HGETALL k\"", "expected \"host:port\"" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char text[400];
		snprintf(text, sizeof text, "source {\n  type = redis\n  %s\n}\n", bad[i].body);
		c = parse_source_cfg(&rz_ops, text, err, sizeof err);
		CHECK(c == NULL);
		if (!strstr(err, bad[i].want))
			fprintf(stderr, "redis config %zu: %s\n", i, err);
		CHECK(strstr(err, bad[i].want) != NULL);
		if (strncmp(err, "t.conf:", 7) != 0 && strncmp(err, "not supported yet", 17) != 0)
			fprintf(stderr, "redis config %zu: %s\n", i, err);
		CHECK(strncmp(err, "t.conf:", 7) == 0 || strstr(err, "(t.conf:") != NULL);
		rz_free_config(c);
	}
}

TEST(sql_config)
{
	char err[512];
	struct conn_sql_cfg *p = parse_source_cfg(&pgz_ops,
					     "source {\n  type = postgresql\n  server = \"db:6432\"\n  database = mqtt\n"
					     "  username = u\n  password = p\n  disable_prepared_statements = true\n"
					     "  query = \"SELECT permission, action, topic FROM acl WHERE u = ${username} "
					     "AND c = '${clientid}' AND t = ${topic}\"\n}\n",
					     err, sizeof err);
	CHECK(p != NULL);
	if (p) {
		CHECK_STR(p->sql, "SELECT permission, action, topic FROM acl WHERE u = $1 AND c = $2 AND t = $3");
		CHECK_EQ_INT(p->nnames, 3);
		CHECK_STR(p->names[0], "username");
		CHECK_STR(p->names[2], "topic");
		CHECK_EQ_INT(p->c.port, 6432);
		pgz_free_config(p);
	}
	p = parse_source_cfg(&pgz_ops, "source {\n  type = postgresql\n  server = \"db\"\n  database = mqtt\n}\n", err,
			     sizeof err);
	CHECK(p == NULL);
	CHECK(strstr(err, "query is required") != NULL);
	p = parse_source_cfg(&pgz_ops,
			     "source {\n  type = postgresql\n  server = \"db\"\n  query = \"SELECT 1\"\n}\n", err, sizeof err);
	CHECK(p == NULL);
	CHECK(strstr(err, "database is required") != NULL);
	p = parse_source_cfg(&pgz_ops,
			     "source {\n  type = postgresql\n  server = \"db\"\n  database = d\n"
			     "  query = \"SELECT 1 WHERE x = ${password}\"\n}\n",
			     err, sizeof err);
	CHECK(p == NULL);
	CHECK(strstr(err, "t.conf:5:") == err);

	struct conn_sql_cfg *m = parse_source_cfg(&myz_ops,
					     "source {\n  type = mysql\n  server = \"db\"\n  database = mqtt\n"
					     "  query = \"SELECT permission, action, topic, qos, retain FROM mqtt_acl "
					     "WHERE username = ${username} OR clientid = ${clientid}\"\n}\n",
					     err, sizeof err);
	CHECK(m != NULL);
	if (m) {
		CHECK_STR(m->sql, "SELECT permission, action, topic, qos, retain FROM mqtt_acl WHERE username = ? OR "
				  "clientid = ?");
		CHECK_EQ_INT(m->c.port, 3306);
		myz_free_config(m);
	}
	m = parse_source_cfg(&myz_ops,
			     "source {\n  type = mysql\n  server = \"db\"\n  database = d\n  query = \"SELECT 1\"\n"
			     "  ssl { enable = true, server_name_indication = \"x.example\" }\n}\n",
			     err, sizeof err);
	CHECK(m == NULL);
	CHECK(strstr(err, "not supported yet") != NULL);
	m = parse_source_cfg(&myz_ops, "source {\n  type = mysql\n  server = \"db\"\n  database = d\n  query = \"\"\n}\n",
			     err, sizeof err);
	CHECK(m == NULL);
	CHECK(strstr(err, "the query is empty") != NULL);
}

TEST(http_config)
{
	char err[512];
	struct http_req_cfg *c = parse_source_cfg(&hz_ops,
					    "source {\n  type = http\n  enable = true\n"
					    "  url = \"http://127.0.0.1:8080/acl/${username}?t=${topic}\"\n"
					    "  headers { X-Tag = \"${clientid}\" }\n"
					    "  body { a = \"${action}\", n = 1, nested { q = \"${qos}\" } }\n"
					    "  max_retries = 3\n}\n",
					    err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK(c->post);
		CHECK(!c->form);
		CHECK_EQ_INT(c->request_timeout_ms, 30000);
		CHECK_STR(c->url_base, "http://127.0.0.1:8080");
		CHECK(tmpl_uses(c->url_rest, "username"));
		CHECK(tmpl_uses(c->url_rest, "topic"));
		CHECK(authn_http_header_find(c->headers, c->nheaders, "x-tag") >= 0);
		CHECK(authn_http_header_find(c->headers, c->nheaders, "content-type") >= 0);
		CHECK(authn_http_header_find(c->headers, c->nheaders, "accept") >= 0);
		CHECK_EQ_INT(c->nbody, 3);
		CHECK_EQ_INT(c->body[2].kind, HTTP_REQ_BODY_OBJECT);
		hz_free_config(c);
	}
	c = parse_source_cfg(&hz_ops,
			     "source {\n  type = http\n  method = get\n  url = \"https://h/acl\"\n"
			     "  body { u = \"${username}\" }\n  request_timeout = 2s\n}\n",
			     err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK(!c->post);
		CHECK_EQ_INT(c->request_timeout_ms, 2000);
		CHECK(authn_http_header_find(c->headers, c->nheaders, "content-type") < 0);
		hz_free_config(c);
	}
	c = parse_source_cfg(&hz_ops,
			     "source {\n  type = http\n  url = \"http://h/acl\"\n"
			     "  headers { content-type = \"application/x-www-form-urlencoded\" }\n"
			     "  body { u = \"${username}\" }\n}\n",
			     err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK(c->form);
		hz_free_config(c);
	}
	struct {
		const char *body, *want;
	} bad[] = {
		{ "method = post", "url is required" },
		{ "url = \"ftp://h/x\"", "http:// or https://" },
		{ "url = \"http://${username}/x\"", "path and query only" },
		{ "method = put, url = \"http://h/\"", "expected one of" },
		{ "method = get, url = \"http://h/\", headers { content-type = \"application/json\" }", "GET request" },
		{ "url = \"http://h/\", headers { content-type = \"text/plain\" }", "content-type must be" },
		{ "url = \"http://h/\", request_timeout = 0s", "finite duration" },
		{ "url = \"http://h/\", body = [1]", "expected an object" },
		{ "url = \"http://h/\", cmd = x", "unknown key" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char text[400];
		snprintf(text, sizeof text, "source {\n  type = http\n  %s\n}\n", bad[i].body);
		c = parse_source_cfg(&hz_ops, text, err, sizeof err);
		CHECK(c == NULL);
		if (!strstr(err, bad[i].want))
			fprintf(stderr, "http config %zu: %s\n", i, err);
		CHECK(strstr(err, bad[i].want) != NULL);
		hz_free_config(c);
	}
}

TEST(registered)
{
	CHECK(authz_source_find("redis") == &rz_ops);
	CHECK(authz_source_find("postgresql") == &pgz_ops);
	CHECK(authz_source_find("mysql") == &myz_ops);
	CHECK(authz_source_find("http") == &hz_ops);
	CHECK(rz_ops.async && pgz_ops.async && myz_ops.async && hz_ops.async);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	RUN(columns_and_actions);
	RUN(qos_values);
	RUN(retain_values);
	RUN(row_to_rule);
	RUN(redis_value_to_rule);
	RUN(rows_first_match_decides);
	RUN(rows_qos_retain_conditions);
	RUN(rows_placeholders_and_eq);
	RUN(rows_invalid_are_skipped);
	RUN(redis_hash_rules);
	RUN(redis_cmd);
	RUN(redis_replies);
	RUN(pg_arrays);
	RUN(http_answers);
	RUN(http_form_get);
	RUN(redis_config);
	RUN(sql_config);
	RUN(http_config);
	RUN(registered);
	return unit_summary();
}
