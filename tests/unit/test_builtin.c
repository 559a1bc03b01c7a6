/* Unit tests for the built-in database authenticators: bootstrap files (CSV and JSON,
 * plain and hash, malformed input with file:line), the user table (SQLite + memory,
 * separate instances, persistence), the `users` control commands, password
 * authentication (inline and through the hashing pool, pool full -> 0x89), and SCRAM
 * (RFC 7677's SCRAM-SHA-256 example, parser edge cases, a full exchange).
 *
 * The chain core's call functions (authn_done, ...) are replaced by a small fake here, so
 * the authenticators run exactly as the core would drive them. */
#include "auth/authn_builtin_db.c"
#include "auth/authn_builtin.c"
#include "auth/authn_scram.c"

#include <ftw.h>
#include <pthread.h>
#include <unistd.h>

#include "unit.h"

/* ---- a fake chain core ---- */

struct authn_call {
	struct authn_request req;
	void *state;
	bool cancelled;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int ndone;
	struct authn_result res;
};

static const struct authn_ops *registered[8];
static int nregistered;

void authn_register(const struct authn_ops *ops)
{
	registered[nregistered++] = ops;
}

const struct authn_ops *authn_find(const char *mechanism, const char *backend)
{
	for (int i = 0; i < nregistered; i++)
		if (strcmp(registered[i]->mechanism, mechanism) == 0 && backend && registered[i]->backend &&
		    strcmp(registered[i]->backend, backend) == 0)
			return registered[i];
	return NULL;
}

void authn_done(struct authn_call *call, struct authn_result *res)
{
	pthread_mutex_lock(&call->mu);
	free(call->res.auth_data);
	call->res = *res;
	memset(res, 0, sizeof *res);
	call->ndone++;
	pthread_cond_broadcast(&call->cv);
	pthread_mutex_unlock(&call->mu);
}

const struct authn_request *authn_call_request(const struct authn_call *call)
{
	return &call->req;
}

void **authn_call_state(struct authn_call *call)
{
	return &call->state;
}

bool authn_call_cancelled(const struct authn_call *call)
{
	return call->cancelled;
}

static struct authn_call *call_new(const char *username, const char *password, const char *client_id)
{
	struct authn_call *c = xcalloc(1, sizeof *c);
	pthread_mutex_init(&c->mu, NULL);
	pthread_cond_init(&c->cv, NULL);
	c->req.username = username;
	c->req.username_len = username ? strlen(username) : 0;
	c->req.password = (const uint8_t *)password;
	c->req.password_len = password ? strlen(password) : 0;
	c->req.client_id = client_id ? client_id : "cid";
	c->req.proto_version = 5;
	return c;
}

/* Wait (up to 10 s) for n answers. */
static bool call_wait(struct authn_call *c, int n)
{
	struct timespec dl;
	clock_gettime(CLOCK_REALTIME, &dl);
	dl.tv_sec += 10;
	pthread_mutex_lock(&c->mu);
	while (c->ndone < n && pthread_cond_timedwait(&c->cv, &c->mu, &dl) == 0)
		;
	bool ok = c->ndone >= n;
	pthread_mutex_unlock(&c->mu);
	return ok;
}

static void call_free(struct authn_call *c)
{
	free(c->res.auth_data);
	pthread_mutex_destroy(&c->mu);
	pthread_cond_destroy(&c->cv);
	free(c);
}

/* Authenticate and return the verdict (rc and superuser through pointers). */
static enum authn_verdict run_auth(const struct authn_ops *ops, struct authn *a, const char *user, const char *pw,
				   const char *cid, uint8_t *rc, bool *super)
{
	struct authn_call *c = call_new(user, pw, cid);
	ops->authenticate(a, c);
	enum authn_verdict v = call_wait(c, 1) ? c->res.verdict : (enum authn_verdict)-1;
	if (c->ndone != 1)
		v = (enum authn_verdict)-1;
	if (rc)
		*rc = c->res.rc;
	if (super)
		*super = c->res.is_superuser;
	call_free(c);
	return v;
}

/* ---- temporary directories ---- */

static char tmpdir[64];

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
	(void)sb, (void)flag, (void)ftw;
	return remove(path);
}

static void tmp_make(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/bw-builtin-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
}

static void tmp_remove(void)
{
	nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *tmp_file(const char *name, const char *content)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "wb");
	fwrite(content, 1, strlen(content), f);
	fclose(f);
	return path;
}

/* ---- bootstrap files ---- */

static bool boot(const char *name, const char *content, int type, struct boot_list *l, char *err, size_t errlen)
{
	char *path = tmp_file(name, content);
	bool ok = builtin_boot_read(path, type, l, err, errlen);
	free(path);
	return ok;
}

static bool user_is(const struct boot_user *u, const char *id, const char *secret, const char *salt, bool super)
{
	return u->user_id_len == strlen(id) && memcmp(u->user_id, id, u->user_id_len) == 0 &&
	       u->secret_len == strlen(secret) && memcmp(u->secret, secret, u->secret_len) == 0 &&
	       (salt ? (u->salt && strcmp(u->salt, salt) == 0) : u->salt == NULL) && u->is_superuser == super;
}

TEST(csv_plain)
{
	tmp_make();
	char err[512] = "";
	struct boot_list l;
	CHECK(boot("u.csv",
		   "\xef\xbb\xbfuser_id,password,is_superuser\r\n"
		   "alice,secret,true\r\n"
		   "\n"
		   "bob,\"pa,ss\"\"word\",false\n"
		   "carol,x,\n"
		   "\"dave\",\"multi\nline\",1\n"
		   "eve,,0",
		   0, &l, err, sizeof err));
	CHECK_STR(err, "");
	CHECK_EQ_INT(l.n, 5);
	if (l.n == 5) {
		CHECK(user_is(&l.v[0], "alice", "secret", NULL, true));
		CHECK_EQ_INT(l.v[0].line, 2);
		CHECK(user_is(&l.v[1], "bob", "pa,ss\"word", NULL, false));
		CHECK_EQ_INT(l.v[1].line, 4);
		CHECK(user_is(&l.v[2], "carol", "x", NULL, false));
		CHECK(user_is(&l.v[3], "dave", "multi\nline", NULL, true));
		CHECK_EQ_INT(l.v[3].line, 6);
		CHECK(user_is(&l.v[4], "eve", "", NULL, false));
		CHECK_EQ_INT(l.v[4].line, 8);
	}
	builtin_boot_free(&l);
	/* columns in another order, is_superuser optional */
	CHECK(boot("v.csv", "password,user_id\np1,u1\n", 0, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 1);
	if (l.n == 1)
		CHECK(user_is(&l.v[0], "u1", "p1", NULL, false));
	builtin_boot_free(&l);
	/* header only: no users */
	CHECK(boot("w.csv", "user_id,password,is_superuser\n", 0, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 0);
	builtin_boot_free(&l);
	tmp_remove();
}

TEST(csv_hash)
{
	tmp_make();
	char err[512] = "";
	struct boot_list l;
	CHECK(boot("h.csv",
		   "user_id,password_hash,salt,is_superuser\n"
		   "alice,13601bda4ea78e55a07b98866d2be6be0744e3866f13c00c811cab608a28f322,salt,false\n"
		   "bob,$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu,,TRUE\n",
		   1, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 2);
	if (l.n == 2) {
		CHECK(user_is(&l.v[0], "alice", "13601bda4ea78e55a07b98866d2be6be0744e3866f13c00c811cab608a28f322", "salt",
			      false));
		CHECK(user_is(&l.v[1], "bob", "$2b$05$abcdefghijklmnopqrstuuWG29KuyeAicPCJODk1zjyGvyQUU2awu", "", true));
	}
	builtin_boot_free(&l);
	tmp_remove();
}

static void boot_bad(const char *name, const char *content, int type, const char *want)
{
	char err[512] = "";
	struct boot_list l;
	bool ok = boot(name, content, type, &l, err, sizeof err);
	CHECK(!ok);
	char *path = xasprintf("%s/%s", tmpdir, name);
	if (!strstr(err, want) || strncmp(err, path, strlen(path)) != 0) {
		fprintf(stderr, "  file %s\n  error:  %s\n  wanted: %s\n", name, err, want);
		CHECK(0);
	}
	free(path);
	if (ok)
		builtin_boot_free(&l);
}

TEST(csv_malformed)
{
	tmp_make();
	boot_bad("a.csv", "user_id,password,is_superuser\nalice,secret,true\nbob,secret\n", 0,
		 ".csv:3: expected 3 fields (user_id,password,is_superuser), got 2");
	boot_bad("b.csv", "user_id,password,is_superuser\nalice,a,b,c\n", 0, "b.csv:2: expected 3 fields");
	boot_bad("c.csv", "user,password\nalice,a\n", 0, "c.csv:1: header: unknown column \"user\"");
	boot_bad("d.csv", "user_id,password_hash,salt\nalice,a,b\n", 0, "d.csv:1: header: unknown column \"password_hash\"");
	boot_bad("e.csv", "user_id,password,is_superuser\n\nalice,a,maybe\n", 0, "e.csv:3: is_superuser must be true or false");
	boot_bad("f.csv", "user_id,password\nalice,\"open\n", 0, "f.csv:2: unterminated quoted field");
	boot_bad("g.csv", "user_id,password\n,pw\n", 0, "g.csv:2: user_id is empty");
	boot_bad("h.csv", "", 0, "h.csv:1: empty file");
	boot_bad("i.csv", "user_id,is_superuser\na,true\n", 0, "i.csv:1: header: needs columns user_id and password");
	boot_bad("j.csv", "user_id,password,password\n", 0, "j.csv:1: header: column password appears twice");
	boot_bad("k.csv", "user_id,password\nal\"ice,pw\n", 0, "k.csv:2: a quote inside an unquoted field");
	boot_bad("l.csv", "user_id,password\n\"alice\"x,pw\n", 0, "l.csv:2: unexpected character after a quoted field");
	boot_bad("m.csv", "user_id,password_hash\nalice\n", 1, "m.csv:2: expected 2 fields");
	/* wrong extension, missing file */
	char err[512] = "";
	struct boot_list l;
	CHECK(!boot("users.txt", "user_id,password\n", 0, &l, err, sizeof err));
	CHECK(strstr(err, "unknown format") != NULL);
	CHECK(!builtin_boot_read("/nonexistent/users.csv", 0, &l, err, sizeof err));
	CHECK(strstr(err, "/nonexistent/users.csv: No such file or directory") != NULL);
	tmp_remove();
}

TEST(json_plain_and_hash)
{
	tmp_make();
	char err[512] = "";
	struct boot_list l;
	CHECK(boot("u.json",
		   "[\n"
		   "  {\"user_id\": \"alice\", \"password\": \"secret\", \"is_superuser\": true},\n"
		   "  {\"user_id\": \"bob\", \"password\": \"p,w \\\"q\\\"\"},\n"
		   "  {\"user_id\": \"carol\", \"password\": \"${notavar}\", \"is_superuser\": \"false\"}\n"
		   "]\n",
		   0, &l, err, sizeof err));
	CHECK_STR(err, "");
	CHECK_EQ_INT(l.n, 3);
	if (l.n == 3) {
		CHECK(user_is(&l.v[0], "alice", "secret", NULL, true));
		CHECK_EQ_INT(l.v[0].line, 2);
		CHECK(user_is(&l.v[1], "bob", "p,w \"q\"", NULL, false));
		CHECK(user_is(&l.v[2], "carol", "${notavar}", NULL, false));
	}
	builtin_boot_free(&l);
	CHECK(boot("h.json",
		   "[{\"user_id\": \"alice\", \"password_hash\": \"abc\", \"salt\": \"s\", \"is_superuser\": 1},"
		   " {\"user_id\": \"bob\", \"password_hash\": \"def\"}]",
		   1, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 2);
	if (l.n == 2) {
		CHECK(user_is(&l.v[0], "alice", "abc", "s", true));
		CHECK(user_is(&l.v[1], "bob", "def", NULL, false));
	}
	builtin_boot_free(&l);
	CHECK(boot("e.json", "[]", 0, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 0);
	builtin_boot_free(&l);
	tmp_remove();
}

TEST(json_malformed)
{
	tmp_make();
	boot_bad("a.json", "{\"user_id\": \"a\", \"password\": \"b\"}", 0, "a.json:1: expected a JSON array of objects");
	boot_bad("b.json", "[\n {\"user_id\": \"a\", \"password\": \"b\"},\n \"x\"\n]", 0,
		 "b.json:3: item 2: expected an object");
	boot_bad("c.json", "[\n {\"user_id\": \"a\"}\n]", 0, "c.json:2: item 1: password is missing");
	boot_bad("d.json", "[\n {\"user_id\": \"a\",\n  \"passwd\": \"b\"}\n]", 0, "d.json:3: item 1: unknown key \"passwd\"");
	boot_bad("e.json", "[\n {\"user_id\": \"a\", \"password\": \"b\"\n", 0, "e.json:");
	boot_bad("f.json", "[ {\"password\": \"b\"} ]", 0, "f.json:1: item 1: user_id is missing or empty");
	boot_bad("g.json", "[ {\"user_id\": \"a\", \"password\": {\"x\": 1}} ]", 0, "item 1: password must be a string");
	boot_bad("h.json", "[ {\"user_id\": \"a\", \"password\": \"b\", \"is_superuser\": \"yes\"} ]", 0,
		 "item 1: is_superuser must be true or false");
	boot_bad("i.json", "[ {\"user_id\": \"a\", \"password\": \"b\"} ]", 1, "item 1: unknown key \"password\"");
	tmp_remove();
}

/* builtin_boot_parse on text in memory, placed to end at an unreadable page: the fuzz target's
 * entry point (fuzz/fuzz_usersboot.c) and its findings. */
static bool parse_text(const char *text, bool json, int type, struct boot_list *l, char *err, size_t errlen)
{
	void *base;
	size_t maplen, n = strlen(text);
	const uint8_t *p = unit_guard_copy(text, n, &base, &maplen);
	bool ok = builtin_boot_parse(json ? "t.json" : "t.csv", (const char *)p, n, json, type, l, err, errlen);
	unit_guard_free(base, maplen);
	return ok;
}

static void parse_bad(const char *text, bool json, int type, const char *want)
{
	char err[512] = "";
	struct boot_list l;
	CHECK(!parse_text(text, json, type, &l, err, sizeof err));
	CHECK(l.v == NULL && l.n == 0);
	if (strncmp(err, want, strlen(want)) != 0) {
		fprintf(stderr, "  text \"%s\"\n  error:  %s\n  wanted: %s...\n", text, err, want);
		CHECK(0);
	}
}

TEST(boot_parse_text)
{
	char err[512] = "";
	struct boot_list l;
	/* a last line without a line break, unquoted field ending at the end of the buffer */
	CHECK(parse_text("user_id,password\nalice,pw", false, 0, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 1);
	if (l.n == 1)
		CHECK(user_is(&l.v[0], "alice", "pw", NULL, false) && l.v[0].line == 2);
	builtin_boot_free(&l);
	CHECK(parse_text("[{\"user_id\": \"a\", \"password_hash\": \"h\"}]", true, 1, &l, err, sizeof err));
	CHECK_EQ_INT(l.n, 1);
	builtin_boot_free(&l);
	/* fuzz finding: blank lines without a final line break counted one line too many
	 * ("t.csv:2: empty file" for a file of one line) */
	parse_bad(" ", false, 0, "t.csv:1: empty file");
	parse_bad("\n\n \t", false, 0, "t.csv:3: empty file");
	parse_bad("\r\n", false, 0, "t.csv:2: empty file");
	parse_bad("user_id,password\n\n  \n\"a", false, 0, "t.csv:4: unterminated quoted field");
}

/* ---- the user table ---- */

static struct udb_user mkuser(const char *id, const char *hash, const char *salt, bool super)
{
	struct udb_user u = { 0 };
	u.id = (uint8_t *)xstrdup(id);
	u.id_len = strlen(id);
	u.password_hash = xstrdup(hash);
	u.hash_len = strlen(hash);
	u.salt = (uint8_t *)xstrdup(salt);
	u.salt_len = strlen(salt);
	u.is_superuser = super;
	return u;
}

TEST(user_table)
{
	tmp_make();
	char err[512] = "";
	struct udb *db = udb_open(tmpdir, "password_based:built_in_database", err, sizeof err);
	CHECK(db != NULL);
	if (!db) {
		fprintf(stderr, "%s\n", err);
		return;
	}
	struct udb_user u = mkuser("alice", "h1", "s1", false), got;
	CHECK_EQ_INT(udb_put(db, &u, false, err, sizeof err), BW_OK);
	CHECK_EQ_INT(udb_put(db, &u, false, err, sizeof err), BW_ERR_EXISTS);
	udb_user_clear(&u);
	u = mkuser("bob", "h2", "", true);
	CHECK_EQ_INT(udb_put(db, &u, true, err, sizeof err), BW_ERR_NOTFOUND);
	CHECK_EQ_INT(udb_put(db, &u, false, err, sizeof err), BW_OK);
	udb_user_clear(&u);
	CHECK_EQ_INT(udb_count(db), 2);
	CHECK(udb_get(db, "alice", 5, &got));
	CHECK(got.hash_len == 2 && memcmp(got.password_hash, "h1", 2) == 0 && got.salt_len == 2 && !got.is_superuser);
	udb_user_clear(&got);
	CHECK(!udb_get(db, "alic", 4, &got));
	CHECK_EQ_INT(udb_set_superuser(db, "alice", 5, true, err, sizeof err), BW_OK);
	CHECK_EQ_INT(udb_set_superuser(db, "nobody", 6, true, err, sizeof err), BW_ERR_NOTFOUND);
	u = mkuser("alice", "h3", "s3", true);
	CHECK_EQ_INT(udb_put(db, &u, true, err, sizeof err), BW_OK);
	udb_user_clear(&u);
	CHECK_EQ_INT(udb_delete(db, "bob", 3, err, sizeof err), BW_OK);
	CHECK_EQ_INT(udb_delete(db, "bob", 3, err, sizeof err), BW_ERR_NOTFOUND);
	/* another instance has its own users in the same file */
	struct udb *other = udb_open(tmpdir, "tcp:default/password_based:built_in_database", err, sizeof err);
	CHECK(other && udb_count(other) == 0);
	u = mkuser("alice", "zz", "", false);
	CHECK_EQ_INT(udb_put(other, &u, false, err, sizeof err), BW_OK);
	udb_user_clear(&u);
	udb_close(other);
	udb_close(db);
	/* everything survives a reopen */
	db = udb_open(tmpdir, "password_based:built_in_database", err, sizeof err);
	CHECK(db && udb_count(db) == 1);
	CHECK(db && udb_get(db, "alice", 5, &got));
	CHECK(got.hash_len == 2 && memcmp(got.password_hash, "h3", 2) == 0 && got.is_superuser);
	udb_user_clear(&got);
	udb_close(db);
	other = udb_open(tmpdir, "tcp:default/password_based:built_in_database", err, sizeof err);
	CHECK(other && udb_get(other, "alice", 5, &got));
	CHECK(got.hash_len == 2 && memcmp(got.password_hash, "zz", 2) == 0);
	udb_user_clear(&got);
	udb_close(other);
	/* a data dir that cannot be created */
	CHECK(udb_open("/proc/nope/data", "x", err, sizeof err) == NULL);
	CHECK(strstr(err, "cannot create") != NULL);
	tmp_remove();
}

/* ---- the password authenticator ---- */

static const struct authn_ops *ops_of(const char *mech)
{
	const struct authn_ops *o = authn_find(mech, "built_in_database");
	CHECK(o != NULL);
	return o;
}

/* Parse an authenticator config object (text "a { ... }"). */
static void *parse_cfg(const struct authn_ops *ops, const char *text, char *err, size_t errlen)
{
	struct hocon_error herr;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &herr);
	if (!root) {
		snprintf(err, errlen, "hocon %d: %s", herr.line, herr.msg);
		return NULL;
	}
	struct cfg_reader r = { .err = err, .errlen = errlen };
	size_t old = cfgr_path_push(&r, "authentication");
	void *c = ops->parse(&r, hocon_get_member(root, "a"));
	cfgr_path_pop(&r, old);
	hocon_free(root);
	return c;
}

static struct authn *make(const struct authn_ops *ops, const char *text, struct hashpool *pool, void **cfg_out)
{
	char err[512] = "";
	void *cfg = parse_cfg(ops, text, err, sizeof err);
	if (!cfg) {
		fprintf(stderr, "parse: %s\n", err);
		CHECK(0);
		return NULL;
	}
	struct authn_env env = { .hashpool = pool, .data_dir = tmpdir };
	struct authn *a = ops->create(cfg, &env, ops == ops_of("scram") ? "scram:built_in_database"
									 : "password_based:built_in_database",
				      err, sizeof err);
	if (!a)
		fprintf(stderr, "create: %s\n", err);
	*cfg_out = cfg;
	return a;
}

static bool ctl(const struct authn_ops *ops, struct authn *a, const char *line, char *out, size_t outlen)
{
	char *copy = xstrdup(line);
	char *argv[16];
	int argc = 0;
	for (char *t = strtok(copy, " "); t && argc < 16; t = strtok(NULL, " "))
		argv[argc++] = t;
	struct buf b = { 0 };
	bool ok = ops->ctl(a, argc, argv, &b);
	snprintf(out, outlen, "%.*s", (int)b.len, b.data ? (const char *)b.data : "");
	buf_free(&b);
	free(copy);
	return ok;
}

TEST(config_parse)
{
	const struct authn_ops *ops = ops_of("password_based");
	char err[512] = "";
	tmp_make();
	char *csv = tmp_file("x.csv", "user_id,password_hash,salt\n");
	char text[512];
	snprintf(text, sizeof text,
		 "a { mechanism = password_based, backend = built_in_database, enable = true,\n"
		 "    user_id_type = clientid, bootstrap_file = \"%s\", bootstrap_type = hash,\n"
		 "    password_hash_algorithm { name = bcrypt, salt_rounds = 6 } }",
		 csv);
	struct builtin_cfg *c = parse_cfg(ops, text, err, sizeof err);
	CHECK(c != NULL);
	if (c) {
		CHECK(c->user_id_type == USER_ID_CLIENTID && c->bootstrap_type == BOOT_HASH);
		CHECK_STR(c->bootstrap_file, csv);
		CHECK(c->hash.algo == PASSWD_BCRYPT && c->hash.salt_rounds == 6);
		ops->free_config(c);
	}
	/* the bootstrap file is read at parse time too (`--check`), errors carry both positions */
	free(tmp_file("x.csv", "user_id,password_hash,salt\nalice\n"));
	CHECK(parse_cfg(ops, text, err, sizeof err) == NULL);
	CHECK(strncmp(err, "t.conf:2: authentication.bootstrap_file: ", 41) == 0 && strstr(err, "x.csv:2: expected 3 fields"));
	free(csv);
	tmp_remove();
	c = parse_cfg(ops, "a { mechanism = password_based, backend = built_in_database }", err, sizeof err);
	CHECK(c && c->user_id_type == USER_ID_USERNAME && c->bootstrap_type == BOOT_PLAIN && !c->bootstrap_file &&
	      c->hash.algo == PASSWD_SHA256 && c->hash.salt_position == PASSWD_SALT_PREFIX);
	ops->free_config(c);
	CHECK(parse_cfg(ops, "a {\n mechanism = password_based\n user_id_typ = username }", err, sizeof err) == NULL);
	CHECK(strstr(err, "t.conf:3: authentication.user_id_typ: unknown key") != NULL);
	CHECK(parse_cfg(ops, "a { user_id_type = email }", err, sizeof err) == NULL);
	CHECK(strstr(err, "expected one of username, clientid") != NULL);
	CHECK(parse_cfg(ops, "a {\n password_hash_algorithm {\n name = pbkdf2\n mac_fun = md5\n iterations = 2 } }", err,
			sizeof err) == NULL);
	CHECK(strstr(err, "t.conf:4: authentication.password_hash_algorithm.mac_fun: md5 is not supported") != NULL);
	const struct authn_ops *sops = ops_of("scram");
	struct scram_cfg *s = parse_cfg(sops, "a { mechanism = scram, algorithm = sha512, iteration_count = 10 }", err,
					sizeof err);
	CHECK(s && s->algorithm == SCRAM_SHA512 && s->iteration_count == 10);
	sops->free_config(s);
	s = parse_cfg(sops, "a { mechanism = scram }", err, sizeof err);
	CHECK(s && s->algorithm == SCRAM_SHA256 && s->iteration_count == 4096);
	sops->free_config(s);
	CHECK(parse_cfg(sops, "a { algorithm = sha1 }", err, sizeof err) == NULL);
	CHECK(parse_cfg(sops, "a { iteration_count = 0 }", err, sizeof err) == NULL);
}

TEST(password_authentication)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("password_based");
	void *cfg = NULL;
	struct authn *a = make(ops, "a { password_hash_algorithm { name = sha256, salt_position = suffix } }", NULL, &cfg);
	CHECK(a != NULL);
	if (!a)
		return;
	char out[4096];
	CHECK(ctl(ops, a, "users add alice secret --superuser", out, sizeof out));
	CHECK_STR(out, "user alice added to password_based:built_in_database as superuser\n");
	CHECK(ctl(ops, a, "users add bob pw", out, sizeof out));
	CHECK(!ctl(ops, a, "users add bob pw2", out, sizeof out));
	CHECK_STR(out, "error: user bob already exists\n");
	uint8_t rc = 0;
	bool super = false;
	CHECK_EQ_INT(run_auth(ops, a, "alice", "secret", NULL, &rc, &super), AUTHN_ALLOW);
	CHECK(super);
	CHECK_EQ_INT(run_auth(ops, a, "bob", "pw", NULL, &rc, &super), AUTHN_ALLOW);
	CHECK(!super);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "wrong", NULL, &rc, NULL), AUTHN_DENY);
	CHECK_EQ_INT(rc, 0x86);
	CHECK_EQ_INT(run_auth(ops, a, "nobody", "secret", NULL, NULL, NULL), AUTHN_IGNORE);
	CHECK_EQ_INT(run_auth(ops, a, "alice", NULL, NULL, NULL, NULL), AUTHN_IGNORE);
	CHECK_EQ_INT(run_auth(ops, a, NULL, "secret", NULL, NULL, NULL), AUTHN_IGNORE);
	/* enhanced authentication is not for password authenticators */
	struct authn_call *c = call_new("alice", "secret", NULL);
	c->req.auth_method = "SCRAM-SHA-256";
	ops->authenticate(a, c);
	CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_IGNORE);
	call_free(c);
	/* ctl changes apply to the next authentication */
	CHECK(ctl(ops, a, "users passwd alice newer", out, sizeof out));
	CHECK_STR(out, "password of user alice changed (password_based:built_in_database)\n");
	CHECK_EQ_INT(run_auth(ops, a, "alice", "secret", NULL, NULL, NULL), AUTHN_DENY);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "newer", NULL, NULL, &super), AUTHN_ALLOW);
	CHECK(super); /* passwd keeps the flag */
	CHECK(ctl(ops, a, "users superuser alice false", out, sizeof out));
	CHECK_STR(out, "user alice: is_superuser = false (password_based:built_in_database)\n");
	CHECK_EQ_INT(run_auth(ops, a, "alice", "newer", NULL, NULL, &super), AUTHN_ALLOW);
	CHECK(!super);
	CHECK(ctl(ops, a, "users list", out, sizeof out));
	CHECK_STR(out, "user_id\tis_superuser\nalice\tfalse\nbob\tfalse\n");
	CHECK(ctl(ops, a, "users delete bob", out, sizeof out));
	CHECK_STR(out, "user bob deleted from password_based:built_in_database\n");
	CHECK_EQ_INT(run_auth(ops, a, "bob", "pw", NULL, NULL, NULL), AUTHN_IGNORE);
	/* errors */
	CHECK(!ctl(ops, a, "users delete bob", out, sizeof out));
	CHECK_STR(out, "error: no user bob\n");
	CHECK(!ctl(ops, a, "users passwd bob x", out, sizeof out));
	CHECK_STR(out, "error: no user bob\n");
	CHECK(!ctl(ops, a, "users superuser alice maybe", out, sizeof out));
	CHECK(strncmp(out, "error: expected true or false\n", 30) == 0);
	CHECK(!ctl(ops, a, "users add x", out, sizeof out));
	CHECK(strncmp(out, "usage: users add USER_ID PASSWORD [--superuser]\n", 48) == 0);
	CHECK(!ctl(ops, a, "users frobnicate", out, sizeof out));
	CHECK(!ctl(ops, a, "users", out, sizeof out));
	CHECK(!ctl(ops, a, "users list extra", out, sizeof out));
	/* control characters in ids are escaped in output */
	char *argv[] = { "users", "add", "tab\there", "pw" };
	struct buf b = { 0 };
	CHECK(ops->ctl(a, 4, argv, &b));
	buf_free(&b);
	CHECK(ctl(ops, a, "users list", out, sizeof out));
	CHECK_STR(out, "user_id\tis_superuser\nalice\tfalse\ntab\\x09here\tfalse\n");
	ops->destroy(a);
	/* users persist: a new instance sees them */
	a = ops->create(cfg, &(struct authn_env){ .data_dir = tmpdir }, "password_based:built_in_database", out, sizeof out);
	CHECK(a != NULL);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "newer", NULL, NULL, NULL), AUTHN_ALLOW);
	ops->destroy(a);
	ops->free_config(cfg);
	tmp_remove();
}

TEST(user_id_type_clientid)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("password_based");
	void *cfg = NULL;
	struct authn *a = make(ops, "a { user_id_type = clientid }", NULL, &cfg);
	char out[512];
	CHECK(ctl(ops, a, "users add dev-1 pw", out, sizeof out));
	CHECK_EQ_INT(run_auth(ops, a, "whoever", "pw", "dev-1", NULL, NULL), AUTHN_ALLOW);
	CHECK_EQ_INT(run_auth(ops, a, NULL, "pw", "dev-1", NULL, NULL), AUTHN_ALLOW);
	CHECK_EQ_INT(run_auth(ops, a, "dev-1", "pw", "dev-2", NULL, NULL), AUTHN_IGNORE);
	CHECK_EQ_INT(run_auth(ops, a, "x", "bad", "dev-1", NULL, NULL), AUTHN_DENY);
	ops->destroy(a);
	ops->free_config(cfg);
	tmp_remove();
}

TEST(bootstrap_loads_without_overwriting)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("password_based");
	char *csv = tmp_file("boot.csv", "user_id,password,is_superuser\nalice,fromfile,true\nbob,bobpw,false\nbob,dup,true\n");
	char text[512];
	snprintf(text, sizeof text, "a { bootstrap_file = \"%s\" }", csv);
	/* alice exists before the bootstrap: she keeps her password */
	void *cfg0 = NULL;
	struct authn *a = make(ops, "a { }", NULL, &cfg0);
	char out[512];
	CHECK(ctl(ops, a, "users add alice mine", out, sizeof out));
	ops->destroy(a);
	ops->free_config(cfg0);
	void *cfg = NULL;
	a = make(ops, text, NULL, &cfg);
	CHECK(a != NULL);
	bool super = true;
	CHECK_EQ_INT(run_auth(ops, a, "alice", "mine", NULL, NULL, &super), AUTHN_ALLOW);
	CHECK(!super);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "fromfile", NULL, NULL, NULL), AUTHN_DENY);
	CHECK_EQ_INT(run_auth(ops, a, "bob", "bobpw", NULL, NULL, &super), AUTHN_ALLOW); /* first line wins */
	CHECK(!super);
	/* reload adds new users only */
	free(tmp_file("boot.csv", "user_id,password,is_superuser\nbob,changed,true\ncarol,c,true\n"));
	char err[256];
	CHECK(ops->reload(a, err, sizeof err));
	CHECK_EQ_INT(run_auth(ops, a, "bob", "bobpw", NULL, NULL, NULL), AUTHN_ALLOW);
	CHECK_EQ_INT(run_auth(ops, a, "carol", "c", NULL, NULL, &super), AUTHN_ALLOW);
	CHECK(super);
	/* a broken file on reload: error with file:line, users kept */
	free(tmp_file("boot.csv", "user_id,password,is_superuser\ndave,d\n"));
	CHECK(!ops->reload(a, err, sizeof err));
	CHECK(strstr(err, "boot.csv:2: expected 3 fields") != NULL);
	CHECK_EQ_INT(run_auth(ops, a, "carol", "c", NULL, NULL, NULL), AUTHN_ALLOW);
	ops->destroy(a);
	/* a broken file at create fails the create */
	struct authn_env env = { .data_dir = tmpdir };
	CHECK(ops->create(cfg, &env, "password_based:built_in_database", err, sizeof err) == NULL);
	CHECK(strstr(err, "boot.csv:2: expected 3 fields") != NULL);
	ops->free_config(cfg);
	/* hash bootstrap (JSON): the stored hash is used as is */
	char *json = tmp_file("h.json",
			      "[{\"user_id\": \"h1\", \"password_hash\":"
			      " \"13601bda4ea78e55a07b98866d2be6be0744e3866f13c00c811cab608a28f322\", \"salt\": \"salt\"}]");
	snprintf(text, sizeof text, "a { bootstrap_file = \"%s\", bootstrap_type = hash }", json);
	a = make(ops, text, NULL, &cfg);
	CHECK(a != NULL);
	CHECK_EQ_INT(run_auth(ops, a, "h1", "password", NULL, NULL, NULL), AUTHN_ALLOW);
	ops->destroy(a);
	ops->free_config(cfg);
	free(csv);
	free(json);
	tmp_remove();
}

/* A job that holds the pool's only thread until released. */
static pthread_mutex_t hold_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t hold_cv = PTHREAD_COND_INITIALIZER;
static bool hold_open, hold_running;

static void hold_work(void *arg)
{
	(void)arg;
	pthread_mutex_lock(&hold_mu);
	hold_running = true;
	pthread_cond_broadcast(&hold_cv);
	while (!hold_open)
		pthread_cond_wait(&hold_cv, &hold_mu);
	pthread_mutex_unlock(&hold_mu);
}

TEST(slow_hashes_use_the_pool)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("password_based");
	struct hashpool *pool = hashpool_new(1, 1);
	void *cfg = NULL;
	struct authn *a = make(ops, "a { password_hash_algorithm { name = bcrypt, salt_rounds = 5 } }", pool, &cfg);
	char out[512];
	CHECK(ctl(ops, a, "users add alice secret --superuser", out, sizeof out));
	bool super = false;
	CHECK_EQ_INT(run_auth(ops, a, "alice", "secret", NULL, NULL, &super), AUTHN_ALLOW);
	CHECK(super);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "Secret", NULL, NULL, NULL), AUTHN_DENY);
	/* occupy the thread and the one queue slot: the next check is refused with 0x89 */
	hold_open = hold_running = false;
	CHECK(hashpool_submit(pool, hold_work, NULL, NULL, NULL));
	pthread_mutex_lock(&hold_mu);
	while (!hold_running)
		pthread_cond_wait(&hold_cv, &hold_mu);
	pthread_mutex_unlock(&hold_mu);
	struct authn_call *queued = call_new("alice", "secret", NULL);
	ops->authenticate(a, queued); /* takes the queue slot */
	struct authn_call *cancelled = call_new("alice", "secret", NULL);
	uint8_t rc = 0;
	CHECK_EQ_INT(run_auth(ops, a, "alice", "secret", NULL, &rc, NULL), AUTHN_DENY);
	CHECK_EQ_INT(rc, 0x89);
	CHECK_EQ_INT(queued->ndone, 0);
	pthread_mutex_lock(&hold_mu);
	hold_open = true;
	pthread_cond_broadcast(&hold_cv);
	pthread_mutex_unlock(&hold_mu);
	CHECK(call_wait(queued, 1) && queued->res.verdict == AUTHN_ALLOW);
	/* a client gone before its turn is answered without hashing */
	cancelled->cancelled = true;
	ops->authenticate(a, cancelled);
	CHECK(call_wait(cancelled, 1) && cancelled->res.verdict == AUTHN_IGNORE);
	call_free(queued);
	call_free(cancelled);
	/* unknown users never reach the pool */
	CHECK_EQ_INT(run_auth(ops, a, "nobody", "x", NULL, NULL, NULL), AUTHN_IGNORE);
	ops->destroy(a);
	ops->free_config(cfg);
	hashpool_free(pool);
	tmp_remove();
}

static void *release_hold_later(void *arg)
{
	(void)arg;
	struct timespec ts = { 0, 100 * 1000000L };
	nanosleep(&ts, NULL);
	pthread_mutex_lock(&hold_mu);
	hold_open = true;
	pthread_cond_broadcast(&hold_cv);
	pthread_mutex_unlock(&hold_mu);
	return NULL;
}

TEST(pool_shutdown_answers_queued_checks)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("password_based");
	struct hashpool *pool = hashpool_new(1, 4);
	void *cfg = NULL;
	struct authn *a = make(ops, "a { password_hash_algorithm { name = bcrypt, salt_rounds = 5 } }", pool, &cfg);
	char out[512];
	CHECK(ctl(ops, a, "users add alice secret", out, sizeof out));
	hold_open = hold_running = false;
	CHECK(hashpool_submit(pool, hold_work, NULL, NULL, NULL));
	pthread_mutex_lock(&hold_mu);
	while (!hold_running)
		pthread_cond_wait(&hold_cv, &hold_mu);
	pthread_mutex_unlock(&hold_mu);
	struct authn_call *c = call_new("alice", "secret", NULL);
	ops->authenticate(a, c);
	/* the authenticator may go first (as the broker does): the queued job holds its own copies */
	ops->destroy(a);
	pthread_t t;
	pthread_create(&t, NULL, release_hold_later, NULL);
	hashpool_free(pool);
	pthread_join(t, NULL);
	CHECK(call_wait(c, 1));
	CHECK_EQ_INT(c->ndone, 1);
	CHECK_EQ_INT(c->res.verdict, AUTHN_DENY);
	CHECK_EQ_INT(c->res.rc, 0x88);
	call_free(c);
	ops->free_config(cfg);
	tmp_remove();
}

/* ---- SCRAM ---- */

static uint8_t *b64d(const char *s, size_t *n)
{
	uint8_t *out = xmalloc(strlen(s));
	long l = b64_decode(s, strlen(s), out);
	*n = l < 0 ? 0 : (size_t)l;
	return out;
}

TEST(base64)
{
	const char *vec[][2] = { { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
				 { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" } };
	for (size_t i = 0; i < sizeof vec / sizeof vec[0]; i++) {
		char *e = b64_encode((const uint8_t *)vec[i][0], strlen(vec[i][0]));
		CHECK_STR(e, vec[i][1]);
		free(e);
		size_t n;
		uint8_t *d = b64d(vec[i][1], &n);
		CHECK(n == strlen(vec[i][0]) && memcmp(d, vec[i][0], n) == 0);
		free(d);
	}
	uint8_t buf[16];
	CHECK(b64_decode("Zm9", 3, buf) < 0);
	CHECK(b64_decode("Zm=v", 4, buf) < 0);
	CHECK(b64_decode("Z===", 4, buf) < 0);
	CHECK(b64_decode("Zg==Zg==", 8, buf) < 0);
	CHECK(b64_decode("Zm9*", 4, buf) < 0);
}

/* RFC 7677 §3: user "user", password "pencil". */
#define RFC_CLIENT_FIRST "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define RFC_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define RFC_SERVER_FIRST "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define RFC_CLIENT_FINAL \
	"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define RFC_SERVER_FINAL "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

static void rfc_user(struct udb_user *u)
{
	memset(u, 0, sizeof *u);
	u->id = (uint8_t *)xstrdup("user");
	u->id_len = 4;
	u->salt = b64d("W22ZaJ0SNY7soEsUEjb6gQ==", &u->salt_len);
	u->key_len = 32;
	u->stored_key = xmalloc(32);
	u->server_key = xmalloc(32);
	u->iterations = 4096;
	CHECK(scram_keys(EVP_sha256(), (const uint8_t *)"pencil", 6, u->salt, u->salt_len, 4096, u->stored_key,
			 u->server_key));
}

TEST(scram_rfc7677_vector)
{
	struct udb_user u;
	rfc_user(&u);
	char why[160] = "";
	struct scram_state *st = parse_client_first((const uint8_t *)RFC_CLIENT_FIRST, strlen(RFC_CLIENT_FIRST), why,
						    sizeof why);
	CHECK(st != NULL);
	if (!st)
		return;
	CHECK_STR(st->gs2_header, "n,,");
	CHECK_STR(st->client_first_bare, "n=user,r=rOprNGfwEbeRWgbNEkqO");
	CHECK_STR(st->user, "user");
	st->md = EVP_sha256();
	st->hlen = 32;
	make_server_first(st, &u, RFC_SNONCE);
	CHECK_STR(st->server_first, RFC_SERVER_FIRST);
	char *final = NULL;
	CHECK(check_client_final(st, (const uint8_t *)RFC_CLIENT_FINAL, strlen(RFC_CLIENT_FINAL), &final, why, sizeof why));
	CHECK_STR(final, RFC_SERVER_FINAL);
	free(final);
	/* a flipped proof bit, another nonce, another channel binding: refused */
	char bad[256];
	snprintf(bad, sizeof bad, "%s", RFC_CLIENT_FINAL);
	bad[strlen(bad) - 3] = bad[strlen(bad) - 3] == 'Q' ? 'R' : 'Q';
	CHECK(!check_client_final(st, (const uint8_t *)bad, strlen(bad), &final, why, sizeof why));
	CHECK_STR(why, "wrong password (invalid proof)");
	const char *nonce_bad = "c=biws,r=rOprNGfwEbeRWgbNEkqO,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	CHECK(!check_client_final(st, (const uint8_t *)nonce_bad, strlen(nonce_bad), &final, why, sizeof why));
	CHECK_STR(why, "nonce mismatch");
	const char *cb_bad = "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=";
	CHECK(!check_client_final(st, (const uint8_t *)cb_bad, strlen(cb_bad), &final, why, sizeof why));
	const char *no_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
	CHECK(!check_client_final(st, (const uint8_t *)no_proof, strlen(no_proof), &final, why, sizeof why));
	const char *short_proof = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzb";
	CHECK(!check_client_final(st, (const uint8_t *)short_proof, strlen(short_proof), &final, why, sizeof why));
	CHECK(!check_client_final(st, NULL, 0, &final, why, sizeof why));
	CHECK(final == NULL);
	state_free(st);
	udb_user_clear(&u);
}

static void first_bad(const char *msg, const char *want)
{
	char why[160] = "";
	struct scram_state *st = parse_client_first((const uint8_t *)msg, strlen(msg), why, sizeof why);
	CHECK(st == NULL);
	if (st || !strstr(why, want)) {
		fprintf(stderr, "  client-first %s: got \"%s\", wanted \"%s\"\n", msg, why, want);
		CHECK(0);
	}
	state_free(st);
}

TEST(scram_client_first_parsing)
{
	char why[160];
	struct scram_state *st = parse_client_first((const uint8_t *)"y,,n=a=2Cb=3Dc,r=xyz,ext=1", 26, why, sizeof why);
	CHECK(st && strcmp(st->user, "a,b=c") == 0 && strcmp(st->nonce, "xyz") == 0 && strcmp(st->gs2_header, "y,,") == 0);
	state_free(st);
	st = parse_client_first((const uint8_t *)"n,a=bob,n=bob,r=n1", 18, why, sizeof why);
	CHECK(st && strcmp(st->user, "bob") == 0 && strcmp(st->gs2_header, "n,a=bob,") == 0);
	state_free(st);
	first_bad("p=tls-unique,,n=user,r=abc", "channel binding is not supported");
	first_bad("x,,n=user,r=abc", "malformed GS2 header");
	first_bad("n,,m=ext,n=user,r=abc", "mandatory extensions");
	first_bad("n,,n=us=er,r=abc", "malformed user name");
	first_bad("n,,n=,r=abc", "empty user name");
	first_bad("n,,n=user", "without r=");
	first_bad("n,,n=user,x=abc", "without r=");
	first_bad("n,,n=user,r=", "malformed client nonce");
	first_bad("n,a=other,n=user,r=abc", "authorization identity differs");
	first_bad("n,,r=abc", "without n=");
	first_bad("", "missing");
}

/* The client side of SCRAM, for the full exchange below. */
static char *client_final_for(const EVP_MD *md, const char *password, const char *client_first_bare,
			      const char *server_first, bool wrong)
{
	size_t hlen = (size_t)EVP_MD_get_size(md);
	const char *s = strstr(server_first, ",s="), *i = strstr(server_first, ",i=");
	char salt_b64[128];
	snprintf(salt_b64, sizeof salt_b64, "%.*s", (int)(i - s - 3), s + 3);
	size_t salt_len;
	uint8_t *salt = b64d(salt_b64, &salt_len);
	unsigned iterations = (unsigned)atoi(i + 3);
	uint8_t salted[64], ck[64], sk[64], sig[64], proof[64];
	PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len, (int)iterations, md, (int)hlen, salted);
	hmac(md, salted, hlen, "Client Key", 10, ck);
	EVP_Digest(ck, hlen, sk, NULL, md, NULL);
	char nonce[256];
	snprintf(nonce, sizeof nonce, "%.*s", (int)(s - server_first - 2), server_first + 2);
	char *without = xasprintf("c=biws,r=%s", nonce);
	char *am = xasprintf("%s,%s,%s", client_first_bare, server_first, without);
	hmac(md, sk, hlen, am, strlen(am), sig);
	for (size_t k = 0; k < hlen; k++)
		proof[k] = ck[k] ^ sig[k] ^ (wrong && k == 0 ? 1 : 0);
	char *p = b64_encode(proof, hlen);
	char *final = xasprintf("%s,p=%s", without, p);
	free(p);
	free(am);
	free(without);
	free(salt);
	return final;
}

static void scram_exchange(const char *algo_cfg, const char *method, const EVP_MD *md)
{
	tmp_make();
	const struct authn_ops *ops = ops_of("scram");
	void *cfg = NULL;
	struct authn *a = make(ops, algo_cfg, NULL, &cfg);
	CHECK(a != NULL);
	if (!a)
		return;
	char out[512];
	CHECK(ctl(ops, a, "users add alice pencil --superuser", out, sizeof out));
	CHECK_STR(out, "user alice added to scram:built_in_database as superuser\n");
	for (int attempt = 0; attempt < 2; attempt++) {
		bool wrong = attempt == 1;
		struct authn_call *c = call_new(NULL, NULL, "cid");
		c->req.auth_method = method;
		const char *first = "n,,n=alice,r=clientnonce123";
		c->req.auth_data = (const uint8_t *)first;
		c->req.auth_data_len = strlen(first);
		ops->authenticate(a, c);
		CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_CONTINUE);
		CHECK(c->state != NULL);
		char *server_first = xstrndup((const char *)c->res.auth_data, c->res.auth_data_len);
		CHECK(strncmp(server_first, "r=clientnonce123", 16) == 0 && strstr(server_first, ",i=4096") != NULL);
		char *final = client_final_for(md, "pencil", first + 3, server_first, wrong);
		c->req.auth_data = (const uint8_t *)final;
		c->req.auth_data_len = strlen(final);
		ops->auth_step(a, c);
		CHECK(call_wait(c, 2));
		CHECK(c->state == NULL); /* freed when answering */
		if (!wrong) {
			CHECK_EQ_INT(c->res.verdict, AUTHN_ALLOW);
			CHECK(c->res.is_superuser);
			CHECK(c->res.auth_data_len > 2 && memcmp(c->res.auth_data, "v=", 2) == 0);
		} else {
			CHECK_EQ_INT(c->res.verdict, AUTHN_DENY);
			CHECK_EQ_INT(c->res.rc, 0x86);
		}
		ops->auth_end(a, c);
		free(final);
		free(server_first);
		call_free(c);
	}
	/* the exchange can also be abandoned after the first step */
	struct authn_call *c = call_new(NULL, NULL, "cid");
	c->req.auth_method = method;
	c->req.auth_data = (const uint8_t *)"n,,n=alice,r=abc";
	c->req.auth_data_len = 16;
	ops->authenticate(a, c);
	CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_CONTINUE && c->state);
	ops->auth_end(a, c);
	CHECK(c->state == NULL);
	call_free(c);
	/* unknown user, other method, no method: ignore */
	c = call_new(NULL, NULL, "cid");
	c->req.auth_method = method;
	c->req.auth_data = (const uint8_t *)"n,,n=bob,r=abc";
	c->req.auth_data_len = 14;
	ops->authenticate(a, c);
	CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_IGNORE && !c->state);
	call_free(c);
	c = call_new(NULL, NULL, "cid");
	c->req.auth_method = "SCRAM-SHA-1";
	c->req.auth_data = (const uint8_t *)"n,,n=alice,r=abc";
	c->req.auth_data_len = 16;
	ops->authenticate(a, c);
	CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_IGNORE);
	call_free(c);
	CHECK_EQ_INT(run_auth(ops, a, "alice", "pencil", NULL, NULL, NULL), AUTHN_IGNORE);
	/* a malformed client-first: deny */
	c = call_new(NULL, NULL, "cid");
	c->req.auth_method = method;
	c->req.auth_data = (const uint8_t *)"garbage";
	c->req.auth_data_len = 7;
	ops->authenticate(a, c);
	CHECK(call_wait(c, 1) && c->res.verdict == AUTHN_DENY);
	call_free(c);
	CHECK(ctl(ops, a, "users list", out, sizeof out));
	CHECK_STR(out, "user_id\tis_superuser\nalice\ttrue\n");
	ops->destroy(a);
	ops->free_config(cfg);
	tmp_remove();
}

TEST(scram_sha256_exchange)
{
	scram_exchange("a { mechanism = scram }", "SCRAM-SHA-256", EVP_sha256());
}

TEST(scram_sha512_exchange)
{
	scram_exchange("a { mechanism = scram, algorithm = sha512 }", "SCRAM-SHA-512", EVP_sha512());
}

int main(void)
{
	hash_seed_random();
	RUN(csv_plain);
	RUN(csv_hash);
	RUN(csv_malformed);
	RUN(json_plain_and_hash);
	RUN(json_malformed);
	RUN(boot_parse_text);
	RUN(user_table);
	RUN(config_parse);
	RUN(password_authentication);
	RUN(user_id_type_clientid);
	RUN(bootstrap_loads_without_overwriting);
	RUN(slow_hashes_use_the_pool);
	RUN(pool_shutdown_answers_queued_checks);
	RUN(base64);
	RUN(scram_rfc7677_vector);
	RUN(scram_client_first_parsing);
	RUN(scram_sha256_exchange);
	RUN(scram_sha512_exchange);
	return unit_summary();
}
