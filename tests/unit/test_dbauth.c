/* Database-backed authenticators: the pure parts (Redis cmd parsing, the row contract,
 * server strings, config validation) and the connection pool (dbpool.c) against a fake
 * backend: deadlines, queue bound, down/backoff, stale-connection retry, shutdown. */
#include <pthread.h>
#include <stdatomic.h>
#include <time.h>

#include <openssl/evp.h>

#include "auth/dbpool.c"
#include "auth/dbpool_authn.c"
#include "auth/authn_redis.c"

#include "unit.h"

/* ---- Redis cmd ---- */

TEST(redis_cmd_hmget)
{
	struct redis_cmd c;
	char err[256];
	CHECK(redis_cmd_parse("HMGET mqtt_user:${username} password_hash salt is_superuser", &c, err, sizeof err));
	CHECK(c.hmget);
	CHECK_STR(c.key, "mqtt_user:${username}");
	CHECK_EQ_INT(c.nfields, 3);
	CHECK_EQ_INT(c.kinds[0], DBAUTH_F_PASSWORD_HASH);
	CHECK_EQ_INT(c.kinds[1], DBAUTH_F_SALT);
	CHECK_EQ_INT(c.kinds[2], DBAUTH_F_IS_SUPERUSER);
	redis_cmd_free(&c);

	CHECK(redis_cmd_parse("  hmget   u:${clientid}\tpassword clientid_override ", &c, err, sizeof err));
	CHECK(c.hmget);
	CHECK_STR(c.key, "u:${clientid}");
	CHECK_EQ_INT(c.kinds[0], DBAUTH_F_PASSWORD);
	CHECK_EQ_INT(c.kinds[1], DBAUTH_F_CLIENTID_OVERRIDE);
	redis_cmd_free(&c);

	/* a quoted key may hold blanks */
	CHECK(redis_cmd_parse("HMGET \"mqtt user:${username}\" password_hash", &c, err, sizeof err));
	CHECK_STR(c.key, "mqtt user:${username}");
	redis_cmd_free(&c);
}

TEST(redis_cmd_hget)
{
	struct redis_cmd c;
	char err[256];
	CHECK(redis_cmd_parse("HGET mqtt_user:${username} password_hash", &c, err, sizeof err));
	CHECK(!c.hmget);
	CHECK_EQ_INT(c.nfields, 1);
	redis_cmd_free(&c);
	CHECK(!redis_cmd_parse("HGET mqtt_user:${username} password_hash salt", &c, err, sizeof err));
	CHECK(strstr(err, "exactly one field") != NULL);
	CHECK(!redis_cmd_parse("HGET mqtt_user:${username} salt", &c, err, sizeof err));
	CHECK(strstr(err, "password_hash or password") != NULL);
}

TEST(redis_cmd_refused)
{
	struct redis_cmd c;
	char err[256];
	CHECK(!redis_cmd_parse("", &c, err, sizeof err));
	CHECK(strstr(err, "empty") != NULL);
	CHECK(!redis_cmd_parse("GET mqtt_user:${username}", &c, err, sizeof err));
	CHECK(strstr(err, "only HGET and HMGET") != NULL);
	CHECK(!redis_cmd_parse("EVAL x 0", &c, err, sizeof err));
	CHECK(!redis_cmd_parse("HMGET mqtt_user:${username}", &c, err, sizeof err));
	CHECK(strstr(err, "at least one field") != NULL);
	CHECK(!redis_cmd_parse("HMGET k password_hash acl", &c, err, sizeof err));
	CHECK(strstr(err, "acl is not allowed") != NULL);
	CHECK(!redis_cmd_parse("HMGET k Password_Hash", &c, err, sizeof err));
	CHECK(!redis_cmd_parse("HMGET k ${username}", &c, err, sizeof err));
	CHECK(!redis_cmd_parse("HMGET k salt is_superuser", &c, err, sizeof err));
	CHECK(strstr(err, "password_hash or password") != NULL);
	CHECK(!redis_cmd_parse("HMGET k password_hash password_hash", &c, err, sizeof err));
	CHECK(strstr(err, "twice") != NULL);
	CHECK(!redis_cmd_parse("HMGET \"k password_hash", &c, err, sizeof err));
	CHECK(strstr(err, "unterminated") != NULL);
	CHECK(!redis_cmd_parse("HMGET \"\" password_hash", &c, err, sizeof err));
	CHECK(!redis_cmd_parse("HMGET k password_hash salt is_superuser clientid_override password a b c d e f g h i j",
			       &c, err, sizeof err));
}

/* ---- Redis replies ---- */

static redisReply *str_reply(const char *s)
{
	redisReply *r = xcalloc(1, sizeof *r);
	r->type = REDIS_REPLY_STRING;
	r->str = (char *)s;
	r->len = strlen(s);
	return r;
}

static redisReply *nil_reply(void)
{
	redisReply *r = xcalloc(1, sizeof *r);
	r->type = REDIS_REPLY_NIL;
	return r;
}

TEST(redis_reply_rows)
{
	struct redis_cmd c;
	char err[256];
	struct dbauth_row row;
	CHECK(redis_cmd_parse("HMGET k password_hash salt is_superuser", &c, err, sizeof err));
	redisReply *el[3] = { str_reply("h"), nil_reply(), str_reply("1") };
	redisReply arr = { .type = REDIS_REPLY_ARRAY, .elements = 3, .element = el };
	CHECK(row_of_reply(&c, &arr, &row));
	CHECK(row.found);
	CHECK_EQ_INT(row.v[DBAUTH_F_PASSWORD_HASH].type, DBAUTH_V_TEXT);
	CHECK_EQ_INT(row.v[DBAUTH_F_SALT].type, DBAUTH_V_ABSENT);
	CHECK(dbauth_truthy(&row.v[DBAUTH_F_IS_SUPERUSER]));

	/* all nil: no such user */
	redisReply *nils[3] = { nil_reply(), nil_reply(), nil_reply() };
	redisReply arr2 = { .type = REDIS_REPLY_ARRAY, .elements = 3, .element = nils };
	CHECK(row_of_reply(&c, &arr2, &row));
	CHECK(!row.found);
	/* empty array */
	redisReply arr3 = { .type = REDIS_REPLY_ARRAY, .elements = 0, .element = NULL };
	CHECK(row_of_reply(&c, &arr3, &row));
	CHECK(!row.found);
	/* a plain string is not an HMGET answer */
	CHECK(!row_of_reply(&c, el[0], &row));
	redis_cmd_free(&c);

	CHECK(redis_cmd_parse("HGET k password", &c, err, sizeof err));
	CHECK(row_of_reply(&c, el[0], &row));
	CHECK(row.found);
	CHECK_EQ_INT(row.v[DBAUTH_F_PASSWORD].type, DBAUTH_V_TEXT);
	CHECK(row_of_reply(&c, nils[0], &row));
	CHECK(!row.found);
	redis_cmd_free(&c);
	for (int i = 0; i < 3; i++) {
		free(el[i]);
		free(nils[i]);
	}
}

/* ---- the row contract ---- */

static struct dbauth_value val(enum dbauth_vtype t, const char *s)
{
	struct dbauth_value v = { t, s, s ? strlen(s) : 0 };
	return v;
}

TEST(truthiness)
{
	struct dbauth_value v;
	v = val(DBAUTH_V_BOOL, "t");
	CHECK(dbauth_truthy(&v));
	v = val(DBAUTH_V_BOOL, "f");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_INT, "1");
	CHECK(dbauth_truthy(&v));
	v = val(DBAUTH_V_INT, "7");
	CHECK(dbauth_truthy(&v));
	v = val(DBAUTH_V_INT, "0");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_INT, "-3");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_INT, "000");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "true");
	CHECK(dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "1");
	CHECK(dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "2"); /* EMQX: only integers >= 1, not numeric strings */
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "TRUE");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "false");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_TEXT, "");
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_NULL, NULL);
	CHECK(!dbauth_truthy(&v));
	v = val(DBAUTH_V_ABSENT, NULL);
	CHECK(!dbauth_truthy(&v));
}

TEST(field_names)
{
	CHECK_EQ_INT(dbauth_field_of("password_hash", 13), DBAUTH_F_PASSWORD_HASH);
	CHECK_EQ_INT(dbauth_field_of("PASSWORD_HASH", 13), DBAUTH_F_PASSWORD_HASH);
	CHECK_EQ_INT(dbauth_field_of("password", 8), DBAUTH_F_PASSWORD);
	CHECK_EQ_INT(dbauth_field_of("salt", 4), DBAUTH_F_SALT);
	CHECK_EQ_INT(dbauth_field_of("is_superuser", 12), DBAUTH_F_IS_SUPERUSER);
	CHECK_EQ_INT(dbauth_field_of("clientid_override", 17), DBAUTH_F_CLIENTID_OVERRIDE);
	CHECK_EQ_INT(dbauth_field_of("passwor", 7), -1);
	CHECK_EQ_INT(dbauth_field_of("username", 8), -1);
	CHECK_STR(dbauth_field_name(DBAUTH_F_SALT), "salt");
}

TEST(row_eval)
{
	struct passwd_cfg plain;
	passwd_default(&plain);
	plain.algo = PASSWD_PLAIN;
	plain.salt_position = PASSWD_SALT_DISABLE;
	struct authn_result res;
	struct dbauth_row row;

	/* no row: ignore */
	memset(&row, 0, sizeof row);
	dbauth_row_eval(&row, &plain, (const uint8_t *)"pw", 2, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_IGNORE);

	/* a row without a hash: not authorized */
	row.found = true;
	row.v[DBAUTH_F_SALT] = val(DBAUTH_V_TEXT, "s");
	dbauth_row_eval(&row, &plain, (const uint8_t *)"pw", 2, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_DENY);
	CHECK_EQ_INT(res.rc, 0x87);
	row.v[DBAUTH_F_PASSWORD_HASH] = val(DBAUTH_V_NULL, NULL);
	dbauth_row_eval(&row, &plain, (const uint8_t *)"pw", 2, &res);
	CHECK_EQ_INT(res.rc, 0x87);

	/* `password` is the fallback column */
	row.v[DBAUTH_F_PASSWORD] = val(DBAUTH_V_TEXT, "pw");
	dbauth_row_eval(&row, &plain, (const uint8_t *)"pw", 2, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_ALLOW);
	CHECK(!res.is_superuser);
	CHECK(res.clientid_override == NULL);

	/* password_hash wins over password */
	row.v[DBAUTH_F_PASSWORD_HASH] = val(DBAUTH_V_TEXT, "other");
	dbauth_row_eval(&row, &plain, (const uint8_t *)"pw", 2, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_DENY);
	CHECK_EQ_INT(res.rc, 0x86);
	dbauth_row_eval(&row, &plain, (const uint8_t *)"other", 5, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_ALLOW);

	/* superuser and client ID override */
	row.v[DBAUTH_F_IS_SUPERUSER] = val(DBAUTH_V_INT, "1");
	row.v[DBAUTH_F_CLIENTID_OVERRIDE] = val(DBAUTH_V_TEXT, "dev-9");
	dbauth_row_eval(&row, &plain, (const uint8_t *)"other", 5, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_ALLOW);
	CHECK(res.is_superuser);
	CHECK_STR(res.clientid_override, "dev-9");
	free(res.clientid_override);
	/* an empty override is none */
	row.v[DBAUTH_F_CLIENTID_OVERRIDE] = val(DBAUTH_V_TEXT, "");
	dbauth_row_eval(&row, &plain, (const uint8_t *)"other", 5, &res);
	CHECK(res.clientid_override == NULL);

	/* salted sha256 (prefix): sha256("salt" + "pw1") */
	struct passwd_cfg sha;
	passwd_default(&sha);
	memset(&row, 0, sizeof row);
	row.found = true;
	row.v[DBAUTH_F_PASSWORD_HASH] =
		val(DBAUTH_V_TEXT, "0f5e0a5c43d4b9d1f53b15af1a5d4e0e1b5a8e3a7c6ad9b1b0a9e4e9e0e7d6c5");
	row.v[DBAUTH_F_SALT] = val(DBAUTH_V_TEXT, "salt");
	dbauth_row_eval(&row, &sha, (const uint8_t *)"pw1", 3, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_DENY); /* not the real digest */
	/* the real one, computed with passwd_hash-independent OpenSSL */
	unsigned char d[32];
	char hex[65];
	EVP_Digest("saltpw1", 7, d, NULL, EVP_sha256(), NULL);
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02x", d[i]);
	row.v[DBAUTH_F_PASSWORD_HASH] = val(DBAUTH_V_TEXT, hex);
	dbauth_row_eval(&row, &sha, (const uint8_t *)"pw1", 3, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_ALLOW);
	/* a missing salt counts as "" */
	row.v[DBAUTH_F_SALT] = val(DBAUTH_V_NULL, NULL);
	dbauth_row_eval(&row, &sha, (const uint8_t *)"pw1", 3, &res);
	CHECK_EQ_INT(res.verdict, AUTHN_DENY);
	CHECK_EQ_INT(res.rc, 0x86);
}

/* ---- server strings ---- */

TEST(server_strings)
{
	char *h = NULL;
	uint16_t p = 0;
	CHECK(dbauth_parse_server("127.0.0.1:6380", &h, &p));
	CHECK_STR(h, "127.0.0.1");
	CHECK_EQ_INT(p, 6380);
	free(h);
	p = 0;
	CHECK(dbauth_parse_server("db.example.com", &h, &p));
	CHECK_STR(h, "db.example.com");
	CHECK_EQ_INT(p, 0);
	free(h);
	CHECK(dbauth_parse_server("[::1]:5432", &h, &p));
	CHECK_STR(h, "::1");
	CHECK_EQ_INT(p, 5432);
	free(h);
	p = 0;
	CHECK(dbauth_parse_server("::1", &h, &p));
	CHECK_STR(h, "::1");
	CHECK_EQ_INT(p, 0);
	free(h);
	CHECK(!dbauth_parse_server("", &h, &p));
	CHECK(!dbauth_parse_server(":6379", &h, &p));
	CHECK(!dbauth_parse_server("host:0", &h, &p));
	CHECK(!dbauth_parse_server("host:65536", &h, &p));
	CHECK(!dbauth_parse_server("host:12a", &h, &p));
	CHECK(!dbauth_parse_server("host:", &h, &p));
	CHECK(!dbauth_parse_server("[::1", &h, &p));
	CHECK(!dbauth_parse_server("[::1]x", &h, &p));
	CHECK(!dbauth_parse_server("user@host:1", &h, &p));
}

/* ---- config ---- */

static struct redis_cfg *parse_redis(const char *text, char *err, size_t errlen)
{
	struct hocon_error he;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &he);
	if (!root) {
		snprintf(err, errlen, "hocon: %s", he.msg);
		return NULL;
	}
	struct cfg_reader r = { .err = err, .errlen = errlen };
	err[0] = '\0';
	const struct hocon_member *m = hocon_get_member(root, "authentication");
	size_t old = cfgr_path_push(&r, "authentication");
	struct redis_cfg *c = redis_parse(&r, m);
	cfgr_path_pop(&r, old);
	hocon_free(root);
	return c;
}

TEST(redis_config)
{
	char err[512];
	struct redis_cfg *c = parse_redis("authentication {\n"
					  "  mechanism = password_based\n  backend = redis\n  enable = true\n"
					  "  server = \"10.0.0.5\"\n  database = 3\n  password = \"pw\"\n"
					  "  pool_size = 2\n  query_timeout = 1500ms\n"
					  "  cmd = \"HMGET u:${username} password_hash salt\"\n"
					  "  password_hash_algorithm { name = bcrypt }\n"
					  "  ssl { enable = false }\n"
					  "}\n",
					  err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK_STR(c->c.host, "10.0.0.5");
		CHECK_EQ_INT(c->c.port, 6379);
		CHECK_EQ_INT(c->database, 3);
		CHECK_EQ_INT(c->c.pool_size, 2);
		CHECK_EQ_INT(c->c.query_timeout_ms, 1500);
		CHECK_EQ_INT(c->c.pw.algo, PASSWD_BCRYPT);
		CHECK_STR(c->c.target, "10.0.0.5:6379");
		redis_free_config(c);
	}

	/* cmd is required */
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1:6379\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:1:") == err);
	CHECK(strstr(err, "cmd is required") != NULL);

	/* a bad cmd names its line */
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1:6379\"\n  cmd = \"HMGET k salt\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:5: authentication.cmd:") == err);

	/* cluster / sentinel: not supported yet */
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  redis_type = cluster\n  servers = \"a:1,b:2\"\n  cmd = \"HGET k password\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "not supported yet: authentication.redis_type (t.conf:4)") == err);

	/* TLS: refused with the reason */
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1:6379\"\n  cmd = \"HGET k password\"\n"
			"  ssl {\n    enable = true\n  }\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "not supported yet: authentication.ssl.enable (t.conf:7)") == err);
	CHECK(strstr(err, "hiredis") != NULL);

	/* unknown keys, bad values */
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1:6379\"\n  cmd = \"HGET k password\"\n  comand = x\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:6: authentication.comand: unknown key") == err);
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1:99999\"\n  cmd = \"HGET k password\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:4: authentication.server:") == err);
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1\"\n  cmd = \"HGET k password\"\n  pool_size = 0\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:6: authentication.pool_size:") == err);
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1\"\n  cmd = \"HGET k password\"\n  query_timeout = infinity\n}\n", err,
			sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:6: authentication.query_timeout:") == err);
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  cmd = \"HGET k password\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "server is required") != NULL);
	c = parse_redis("authentication {\n  mechanism = password_based\n  backend = redis\n"
			"  server = \"127.0.0.1\"\n  cmd = \"HGET k password\"\n"
			"  password = \"file:///nonexistent/secret\"\n}\n", err, sizeof err);
	CHECK(c == NULL);
	CHECK(strstr(err, "t.conf:6: authentication.password: cannot read the password file") == err);
}

TEST(password_file)
{
	char path[] = "/tmp/test_dbauth_pwXXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	CHECK(write(fd, "s3cret\n", 7) == 7);
	close(fd);
	char text[512], err[512];
	snprintf(text, sizeof text,
		 "authentication {\n  mechanism = password_based\n  backend = redis\n  server = \"127.0.0.1\"\n"
		 "  cmd = \"HGET k password\"\n  password = \"file://%s\"\n}\n",
		 path);
	struct redis_cfg *c = parse_redis(text, err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK_STR(c->c.password, "s3cret");
		redis_free_config(c);
	}
	unlink(path);
}

/* ---- the pool, against a fake backend ---- */

struct fake {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	atomic_int connects, closes, runs;
	atomic_bool refuse;           /* connect fails */
	atomic_int stale_once;        /* run on a reused connection fails once with ERR_CONN */
	int done_count, released;
	enum dbpool_rc last_rc;
	char last_err[256];
};

struct fake_conn {
	int serial;
	atomic_bool interrupted;
	int jobs;
};

struct fake_job {
	int sleep_ms;
	int done_calls;
	enum dbpool_rc rc;
	uint64_t done_at;
	bool ran;
};

static void *f_connect(void *ctx, uint64_t deadline, char *err, size_t errlen)
{
	struct fake *f = ctx;
	atomic_fetch_add(&f->connects, 1);
	if (atomic_load(&f->refuse)) {
		snprintf(err, errlen, "Connection refused");
		return NULL;
	}
	struct fake_conn *c = xcalloc(1, sizeof *c);
	c->serial = atomic_load(&f->connects);
	return c;
}

static enum dbpool_rc f_run(void *ctx, void *conn, void *job, uint64_t deadline, char *err, size_t errlen)
{
	struct fake *f = ctx;
	struct fake_conn *c = conn;
	struct fake_job *j = job;
	atomic_fetch_add(&f->runs, 1);
	if (c->jobs++ > 0 && atomic_load(&f->stale_once) > 0) {
		atomic_fetch_sub(&f->stale_once, 1);
		snprintf(err, errlen, "Connection reset by peer");
		return DBPOOL_ERR_CONN;
	}
	for (int t = 0; t < j->sleep_ms; t += 5) {
		if (atomic_load(&c->interrupted)) {
			snprintf(err, errlen, "interrupted");
			return DBPOOL_ERR_CONN;
		}
		struct timespec ts = { 0, 5 * 1000000L };
		nanosleep(&ts, NULL);
	}
	j->ran = true;
	return DBPOOL_OK;
}

static void f_close(void *ctx, void *conn)
{
	struct fake *f = ctx;
	atomic_fetch_add(&f->closes, 1);
	free(conn);
}

static bool f_healthy(void *ctx, void *conn)
{
	return true;
}

static void f_interrupt(void *ctx, void *conn)
{
	struct fake_conn *c = conn;
	atomic_store(&c->interrupted, true);
}

static void f_done(void *ctx, void *job, enum dbpool_rc rc, const char *err)
{
	struct fake *f = ctx;
	struct fake_job *j = job;
	pthread_mutex_lock(&f->mu);
	j->done_calls++;
	j->rc = rc;
	j->done_at = clock_mono_ms();
	f->done_count++;
	f->last_rc = rc;
	snprintf(f->last_err, sizeof f->last_err, "%s", err);
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void f_release(void *ctx, void *job)
{
	struct fake *f = ctx;
	pthread_mutex_lock(&f->mu);
	f->released++;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static const struct dbpool_backend fake_backend = {
	.name = "fake",
	.connect = f_connect,
	.run = f_run,
	.close = f_close,
	.healthy = f_healthy,
	.interrupt = f_interrupt,
	.done = f_done,
	.release = f_release,
};

static void fake_init(struct fake *f)
{
	memset(f, 0, sizeof *f);
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
}

/* Wait until done_count >= n and released >= r (at most 5 s). */
static bool fake_wait(struct fake *f, int n, int r)
{
	uint64_t until = clock_mono_ms() + 5000;
	pthread_mutex_lock(&f->mu);
	while ((f->done_count < n || f->released < r) && clock_mono_ms() < until) {
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		ts.tv_nsec += 20 * 1000000L;
		if (ts.tv_nsec >= 1000000000L) {
			ts.tv_sec++;
			ts.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&f->cv, &f->mu, &ts);
	}
	bool ok = f->done_count >= n && f->released >= r;
	pthread_mutex_unlock(&f->mu);
	return ok;
}

static struct dbpool *fake_pool(struct fake *f, unsigned threads, size_t qmax, uint64_t timeout)
{
	struct dbpool_cfg pc = { .id = "test", .target = "fake:1", .threads = threads, .queue_max = qmax,
				 .timeout_ms = timeout };
	return dbpool_new(&fake_backend, f, &pc);
}

TEST(pool_basic)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 3, 100, 5000);
	struct fake_job jobs[20];
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < 20; i++)
		CHECK(dbpool_submit(p, &jobs[i]));
	CHECK(fake_wait(&f, 20, 20));
	for (int i = 0; i < 20; i++) {
		CHECK_EQ_INT(jobs[i].done_calls, 1);
		CHECK_EQ_INT(jobs[i].rc, DBPOOL_OK);
	}
	CHECK(atomic_load(&f.connects) >= 1 && atomic_load(&f.connects) <= 3); /* lazily, at most one per thread */
	CHECK_EQ_INT(dbpool_backlog(p), 0);
	dbpool_free(p);
	CHECK_EQ_INT(atomic_load(&f.closes), atomic_load(&f.connects));
}

TEST(pool_timeout_running)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 1, 100, 100);
	struct fake_job j = { .sleep_ms = 600 };
	uint64_t t0 = clock_mono_ms();
	CHECK(dbpool_submit(p, &j));
	CHECK(fake_wait(&f, 1, 0));
	CHECK_EQ_INT(j.rc, DBPOOL_TIMEOUT);
	CHECK(j.done_at - t0 < 500); /* answered at the deadline, not when the backend returned */
	CHECK(strstr(f.last_err, "timed out after 100 ms") != NULL);
	CHECK(fake_wait(&f, 1, 1)); /* released once run() finished */
	CHECK_EQ_INT(j.done_calls, 1);
	CHECK(j.ran);
	dbpool_free(p);
}

TEST(pool_timeout_waiting)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 1, 100, 150);
	struct fake_job a = { .sleep_ms = 400 }, b = { 0 };
	CHECK(dbpool_submit(p, &a));
	CHECK(dbpool_submit(p, &b));
	CHECK(fake_wait(&f, 2, 2));
	CHECK_EQ_INT(a.rc, DBPOOL_TIMEOUT);
	CHECK_EQ_INT(b.rc, DBPOOL_TIMEOUT);
	CHECK(!b.ran);
	CHECK_EQ_INT(a.done_calls, 1);
	CHECK_EQ_INT(b.done_calls, 1);
	dbpool_free(p);
}

TEST(pool_queue_full)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 1, 1, 5000);
	struct fake_job a = { .sleep_ms = 300 }, b = { 0 }, c = { 0 };
	CHECK(dbpool_submit(p, &a));
	/* wait until a runs, so b is the only one waiting */
	uint64_t until = clock_mono_ms() + 2000;
	while (atomic_load(&f.runs) == 0 && clock_mono_ms() < until) {
		struct timespec ts = { 0, 2000000L };
		nanosleep(&ts, NULL);
	}
	CHECK(dbpool_submit(p, &b));
	CHECK(!dbpool_submit(p, &c)); /* full: refused at once, nothing called */
	CHECK(fake_wait(&f, 2, 2));
	CHECK_EQ_INT(c.done_calls, 0);
	CHECK_EQ_INT(a.rc, DBPOOL_OK);
	CHECK_EQ_INT(b.rc, DBPOOL_OK);
	dbpool_free(p);
}

TEST(pool_down_and_backoff)
{
	struct fake f;
	fake_init(&f);
	atomic_store(&f.refuse, true);
	struct dbpool *p = fake_pool(&f, 1, 100, 5000);
	struct fake_job a = { 0 }, b = { 0 }, c = { 0 };
	CHECK(dbpool_submit(p, &a));
	CHECK(fake_wait(&f, 1, 1));
	CHECK_EQ_INT(a.rc, DBPOOL_DOWN);
	CHECK(strstr(f.last_err, "fake fake:1: Connection refused") != NULL);
	CHECK(dbpool_is_down(p));
	/* within the backoff: fails at once without trying to connect */
	CHECK(dbpool_submit(p, &b));
	CHECK(fake_wait(&f, 2, 2));
	CHECK_EQ_INT(b.rc, DBPOOL_DOWN);
	CHECK_EQ_INT(atomic_load(&f.connects), 1);
	/* back up: after the backoff the next job connects */
	atomic_store(&f.refuse, false);
	struct timespec ts = { 0, 300 * 1000000L };
	nanosleep(&ts, NULL);
	CHECK(dbpool_submit(p, &c));
	CHECK(fake_wait(&f, 3, 3));
	CHECK_EQ_INT(c.rc, DBPOOL_OK);
	CHECK(!dbpool_is_down(p));
	dbpool_free(p);
}

TEST(pool_stale_connection_retried)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 1, 100, 5000);
	struct fake_job a = { 0 }, b = { 0 };
	CHECK(dbpool_submit(p, &a));
	CHECK(fake_wait(&f, 1, 1));
	atomic_store(&f.stale_once, 1);
	CHECK(dbpool_submit(p, &b));
	CHECK(fake_wait(&f, 2, 2));
	CHECK_EQ_INT(b.rc, DBPOOL_OK); /* retried once on a fresh connection */
	CHECK_EQ_INT(atomic_load(&f.connects), 2);
	CHECK_EQ_INT(atomic_load(&f.closes), 1);
	dbpool_free(p);
}

TEST(pool_shutdown)
{
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 2, 100, 10000);
	struct fake_job jobs[6];
	memset(jobs, 0, sizeof jobs);
	for (int i = 0; i < 6; i++) {
		jobs[i].sleep_ms = 5000;
		CHECK(dbpool_submit(p, &jobs[i]));
	}
	uint64_t until = clock_mono_ms() + 2000;
	while (atomic_load(&f.runs) < 2 && clock_mono_ms() < until) {
		struct timespec ts = { 0, 2000000L };
		nanosleep(&ts, NULL);
	}
	uint64_t t0 = clock_mono_ms();
	dbpool_free(p); /* interrupts the two running jobs, drops the four queued */
	CHECK(clock_mono_ms() - t0 < 2000);
	CHECK_EQ_INT(f.done_count, 6);
	CHECK_EQ_INT(f.released, 6);
	int shut = 0;
	for (int i = 0; i < 6; i++) {
		CHECK_EQ_INT(jobs[i].done_calls, 1);
		shut += jobs[i].rc == DBPOOL_SHUTDOWN;
	}
	CHECK_EQ_INT(shut, 4);
	CHECK_EQ_INT(atomic_load(&f.closes), atomic_load(&f.connects));
}

TEST(pool_many_deadlines)
{
	/* Many short jobs with tight deadlines on few threads: each answered exactly once. */
	struct fake f;
	fake_init(&f);
	struct dbpool *p = fake_pool(&f, 2, 1000, 30);
	enum { N = 200 };
	struct fake_job *jobs = xcalloc(N, sizeof *jobs);
	for (int i = 0; i < N; i++) {
		jobs[i].sleep_ms = (i % 4) * 5;
		CHECK(dbpool_submit(p, &jobs[i]));
	}
	CHECK(fake_wait(&f, N, N));
	for (int i = 0; i < N; i++)
		CHECK_EQ_INT(jobs[i].done_calls, 1);
	dbpool_free(p);
	free(jobs);
}

int main(void)
{
	log_set_level(LOG_ERROR);
	RUN(redis_cmd_hmget);
	RUN(redis_cmd_hget);
	RUN(redis_cmd_refused);
	RUN(redis_reply_rows);
	RUN(truthiness);
	RUN(field_names);
	RUN(row_eval);
	RUN(server_strings);
	RUN(redis_config);
	RUN(password_file);
	RUN(pool_basic);
	RUN(pool_timeout_running);
	RUN(pool_timeout_waiting);
	RUN(pool_queue_full);
	RUN(pool_down_and_backoff);
	RUN(pool_stale_connection_retried);
	RUN(pool_shutdown);
	RUN(pool_many_deadlines);
	return unit_summary();
}
