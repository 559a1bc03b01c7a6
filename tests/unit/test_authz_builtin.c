/* Unit tests for the built_in_database authorization source (src/authz/source_builtin.c):
 * its config keys, the `rules ...` control commands (add with --qos/--retain and the
 * literal "eq" form, list, delete one or all, clear, import of EMQX's API JSON), the check
 * order (client ID, username, all; first match wins), placeholders, max_rules, persistence
 * in <data_dir>/authz.db (malformed rows skipped), and checks on several threads while the
 * rules change. */
#include "authz/source_builtin.c"

#include <ftw.h>
#include <stdarg.h>
#include <unistd.h>

#include "unit.h"

static char tmpdir[64];

static int rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st, (void)flag, (void)ftw;
	return remove(path);
}

static void tmp_setup(void)
{
	snprintf(tmpdir, sizeof tmpdir, "/tmp/bw-authzdb-test-XXXXXX");
	if (!mkdtemp(tmpdir))
		abort();
}

static void tmp_cleanup(void)
{
	nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static char *write_tmp(const char *name, const char *text)
{
	char *path = xasprintf("%s/%s", tmpdir, name);
	FILE *f = fopen(path, "w");
	if (!f)
		abort();
	fputs(text, f);
	fclose(f);
	return path;
}

/* Parse a source object (text "s { ... }"); NULL with err. */
static void *parse_cfg(const char *text, char *err, size_t errlen)
{
	struct hocon_error herr;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), "t.conf", &herr);
	if (!root) {
		snprintf(err, errlen, "hocon %d: %s", herr.line, herr.msg);
		return NULL;
	}
	struct cfg_reader r = { .err = err, .errlen = errlen };
	size_t old = cfgr_path_push(&r, "authorization.sources.1");
	void *c = bdb_ops.parse(&r, hocon_get_member(root, "s"));
	cfgr_path_pop(&r, old);
	hocon_free(root);
	return c;
}

static struct authz_source *open_src(const char *cfg_text)
{
	char err[512] = "";
	void *cfg = parse_cfg(cfg_text ? cfg_text : "s { type = built_in_database }", err, sizeof err);
	if (!cfg) {
		fprintf(stderr, "parse: %s\n", err);
		CHECK(0);
		return NULL;
	}
	struct authz_env env = { .data_dir = tmpdir };
	struct authz_source *s = bdb_ops.create(cfg, &env, err, sizeof err);
	if (!s)
		fprintf(stderr, "create: %s\n", err);
	bdb_ops.free_config(cfg);
	return s;
}

/* Run one ctl command (NULL-terminated words after "rules"); the answer in out (NUL-
 * terminated), *changed as the source reported. */
static bool ctl(struct authz_source *s, struct buf *out, bool *changed, ...)
{
	char *argv[32];
	int argc = 0;
	argv[argc++] = (char *)"rules";
	va_list ap;
	va_start(ap, changed);
	const char *a;
	while ((a = va_arg(ap, const char *)) != NULL && argc < 31)
		argv[argc++] = (char *)a;
	va_end(ap);
	argv[argc] = NULL;
	out->len = 0;
	bool ch = true;
	bool ok = bdb_ops.ctl(s, argc, argv, out, &ch);
	buf_append(out, "", 1);
	out->len--;
	if (changed)
		*changed = ch;
	else
		CHECK(!ch || ok);
	return ok;
}

#define CTL_OK(s, ...)                                                                     \
	do {                                                                               \
		bool ch_;                                                                  \
		if (!ctl((s), &o, &ch_, __VA_ARGS__, NULL)) {                              \
			fprintf(stderr, "%s:%d: ctl failed: %s", __FILE__, __LINE__, (char *)o.data); \
			CHECK(0);                                                          \
		}                                                                          \
	} while (0)

static enum authz_verdict check(struct authz_source *s, const char *clientid, const char *username,
				enum authz_action_type t, const char *topic, int qos, bool retain)
{
	struct authz_client cl = { 0 };
	cl.clientid = clientid;
	cl.username = username;
	cl.username_len = username ? strlen(username) : 0;
	cl.proto_version = 5;
	cl.zone = "default";
	cl.listener = "tcp:default";
	struct authz_action a = { .type = t, .topic = topic, .topic_len = strlen(topic), .qos = (uint8_t)qos,
				  .retain = retain };
	return bdb_ops.check(s, &cl, &a);
}

#define PUB AUTHZ_PUBLISH
#define SUB AUTHZ_SUBSCRIBE
#define ALLOW AUTHZ_ALLOW
#define DENY AUTHZ_DENY
#define NOMATCH AUTHZ_NOMATCH

/* ---- configuration ---- */

TEST(config_keys)
{
	char err[512] = "";
	struct bdb_cfg *c = parse_cfg("s { type = built_in_database, enable = true }", err, sizeof err);
	CHECK(c != NULL);
	if (c)
		CHECK_EQ_INT(c->max_rules, 100);
	bdb_free_config(c);
	c = parse_cfg("s { type = built_in_database, enable = false, max_rules = 5 }", err, sizeof err);
	CHECK(c != NULL);
	if (c)
		CHECK_EQ_INT(c->max_rules, 5);
	bdb_free_config(c);
	err[0] = '\0';
	CHECK(parse_cfg("s { type = built_in_database, max_rules = 0 }", err, sizeof err) == NULL);
	CHECK(strstr(err, "t.conf:1") && strstr(err, "max_rules"));
	err[0] = '\0';
	CHECK(parse_cfg("s { type = built_in_database, max_rule = 5 }", err, sizeof err) == NULL);
	CHECK(strstr(err, "max_rule") && strstr(err, "unknown"));
	err[0] = '\0';
	CHECK(parse_cfg("s { type = built_in_database, max_rules = lots }", err, sizeof err) == NULL);
	CHECK(strstr(err, "max_rules") != NULL);
}

TEST(registered)
{
	CHECK(authz_source_find("built_in_database") == &bdb_ops);
	CHECK(!bdb_ops.async && bdb_ops.check && bdb_ops.ctl && !bdb_ops.start);
}

/* ---- commands and checks ---- */

TEST(add_list_check)
{
	tmp_setup();
	struct authz_source *s = open_src(NULL);
	struct buf o = { 0 };
	bool ch;
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n");
	CHECK(!ch);
	CHECK(check(s, "c1", "alice", PUB, "t/1", 0, false) == NOMATCH);

	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "allow", "publish", "t/#", NULL));
	CHECK(ch);
	CHECK(strstr((char *)o.data, "rule 1 added for username alice: allow publish t/# (qos 0,1,2, retain all)"));
	CHECK(check(s, "c1", "alice", PUB, "t/1", 0, false) == ALLOW);
	CHECK(check(s, "c1", "alice", PUB, "t", 2, true) == ALLOW);
	CHECK(check(s, "c1", "alice", SUB, "t/1", 0, false) == NOMATCH);
	CHECK(check(s, "c1", "alice", PUB, "u/1", 0, false) == NOMATCH);
	CHECK(check(s, "c1", "bob", PUB, "t/1", 0, false) == NOMATCH);
	CHECK(check(s, "alice", NULL, PUB, "t/1", 0, false) == NOMATCH); /* a client ID is not a username */

	CTL_OK(s, "add", "clientid", "dev-1", "deny", "all", "t/secret");
	CTL_OK(s, "add", "all", "allow", "subscribe", "pub/#", "--qos", "0,1");
	CTL_OK(s, "add", "username", "alice", "deny", "subscribe", "eq", "#");
	CTL_OK(s, "add", "all", "deny", "publish", "pub/x", "--retain", "true");
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n"
				  "clientid\tdev-1\t1\tdeny\tall\tt/secret\t0,1,2\tall\n"
				  "username\talice\t1\tallow\tpublish\tt/#\t0,1,2\tall\n"
				  "username\talice\t2\tdeny\tsubscribe\teq #\t0,1,2\tall\n"
				  "all\t-\t1\tallow\tsubscribe\tpub/#\t0,1\tall\n"
				  "all\t-\t2\tdeny\tpublish\tpub/x\t0,1,2\ttrue\n");
	CHECK(ctl(s, &o, &ch, "list", "username", "alice", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n"
				  "username\talice\t1\tallow\tpublish\tt/#\t0,1,2\tall\n"
				  "username\talice\t2\tdeny\tsubscribe\teq #\t0,1,2\tall\n");
	CHECK(ctl(s, &o, &ch, "list", "all", NULL));
	CHECK(strstr((char *)o.data, "all\t-\t1\tallow\tsubscribe\tpub/#") != NULL);
	CHECK(ctl(s, &o, &ch, "list", "clientid", "nobody", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n");
	CHECK(!ch);

	/* order: client ID, then username, then all */
	CHECK(check(s, "dev-1", "alice", PUB, "t/secret", 0, false) == DENY);
	CHECK(check(s, "dev-2", "alice", PUB, "t/secret", 0, false) == ALLOW);
	CHECK(check(s, "dev-1", "bob", SUB, "t/secret", 0, false) == DENY);
	/* eq: only the literal filter */
	CHECK(check(s, "c", "alice", SUB, "#", 0, false) == DENY);
	CHECK(check(s, "c", "alice", SUB, "pub/#", 0, false) == ALLOW);
	/* qos set */
	CHECK(check(s, "c", "bob", SUB, "pub/a", 1, false) == ALLOW);
	CHECK(check(s, "c", "bob", SUB, "pub/a", 2, false) == NOMATCH);
	/* retain condition */
	CHECK(check(s, "c", "bob", PUB, "pub/x", 1, true) == DENY);
	CHECK(check(s, "c", "bob", PUB, "pub/x", 1, false) == NOMATCH);
	bdb_ops.destroy(s);
	buf_free(&o);
	tmp_cleanup();
}

TEST(placeholders)
{
	tmp_setup();
	struct authz_source *s = open_src(NULL);
	struct buf o = { 0 };
	CTL_OK(s, "add", "all", "allow", "all", "users/${username}/#");
	CTL_OK(s, "add", "all", "allow", "publish", "devices/${clientid}/up");
	CHECK(check(s, "d1", "alice", PUB, "users/alice/x", 0, false) == ALLOW);
	CHECK(check(s, "d1", "alice", SUB, "users/alice/#", 0, false) == ALLOW);
	CHECK(check(s, "d1", "alice", PUB, "users/bob/x", 0, false) == NOMATCH);
	CHECK(check(s, "d1", NULL, PUB, "users//x", 0, false) == NOMATCH); /* undefined: matches nothing */
	CHECK(check(s, "d1", "alice", PUB, "devices/d1/up", 0, false) == ALLOW);
	CHECK(check(s, "d2", "alice", PUB, "devices/d1/up", 0, false) == NOMATCH);
	bdb_ops.destroy(s);
	buf_free(&o);
	tmp_cleanup();
}

TEST(bad_commands)
{
	tmp_setup();
	struct authz_source *s = open_src(NULL);
	struct buf o = { 0 };
	bool ch;
	static const char *const bad[][10] = {
		{ "add", NULL },
		{ "add", "user", "alice", "allow", "publish", "t", NULL },
		{ "add", "username", NULL },
		{ "add", "username", "", "allow", "publish", "t", NULL },
		{ "add", "username", "alice", "permit", "publish", "t", NULL },
		{ "add", "username", "alice", "allow", "pub", "t", NULL },
		{ "add", "username", "alice", "allow", "pubsub", "t", NULL },
		{ "add", "username", "alice", "allow", "publish", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "u", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "--qos", "3", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "--qos", "0,", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "--qos", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "--retain", "yes", NULL },
		{ "add", "username", "alice", "allow", "publish", "t", "--force", NULL },
		{ "add", "username", "alice", "allow", "publish", "", NULL },
		{ "add", "username", "alice", "allow", "publish", "a/#/b", NULL },
		{ "add", "all", "alice", "allow", "publish", "t", NULL },
		{ "list", "username", NULL },
		{ "list", "all", "x", NULL },
		{ "delete", NULL },
		{ "delete", "all", NULL }, /* nothing to delete */
		{ "delete", "username", "alice", "0", NULL },
		{ "delete", "username", "alice", "1", NULL },
		{ "delete", "username", "alice", "x", NULL },
		{ "clear", "now", NULL },
		{ "frobnicate", NULL },
		{ "import", NULL },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *argv[12];
		int argc = 0;
		argv[argc++] = (char *)"rules";
		for (int k = 0; bad[i][k]; k++)
			argv[argc++] = (char *)bad[i][k];
		o.len = 0;
		ch = true;
		bool ok = bdb_ops.ctl(s, argc, argv, &o, &ch);
		buf_append(&o, "", 1);
		if (ok || ch || (!strstr((char *)o.data, "error") && !strstr((char *)o.data, "usage"))) {
			fprintf(stderr, "bad command %zu accepted or silent: %s\n", i, (char *)o.data);
			CHECK(0);
		}
	}
	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "allow", "publish", "t", "--qos", "3", NULL) == false);
	CHECK(strstr((char *)o.data, "--qos must be") != NULL);
	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "allow", "publish", "a/#/b", NULL) == false);
	CHECK(strstr((char *)o.data, "invalid topic \"a/#/b\"") != NULL);
	CHECK(ctl(s, &o, &ch, "delete", "username", "alice", NULL) == false);
	CHECK(strstr((char *)o.data, "error: no rules for username alice") != NULL);
	/* nothing was stored by the failures */
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n");
	/* options anywhere after the subject, --opt=value, "--" ends options */
	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "--qos=1", "allow", "publish", "--retain=false", "t", NULL));
	CHECK(strstr((char *)o.data, "(qos 1, retain false)") != NULL);
	CHECK(ctl(s, &o, &ch, "add", "all", "deny", "publish", "--", "--odd", NULL));
	CHECK(strstr((char *)o.data, "deny publish --odd") != NULL);
	/* names are printed escaped */
	CHECK(ctl(s, &o, &ch, "add", "username", "a\tb\\", "allow", "publish", "t", NULL));
	CHECK(strstr((char *)o.data, "username a\\x09b\\\\:") != NULL);
	bdb_ops.destroy(s);
	buf_free(&o);
	tmp_cleanup();
}

TEST(delete_and_clear)
{
	tmp_setup();
	struct authz_source *s = open_src(NULL);
	struct buf o = { 0 };
	bool ch;
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "a");
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "b");
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "c");
	CTL_OK(s, "add", "clientid", "d1", "allow", "publish", "x");
	CTL_OK(s, "add", "all", "allow", "publish", "y");
	CTL_OK(s, "add", "all", "allow", "publish", "z");
	CHECK(ctl(s, &o, &ch, "delete", "username", "alice", "4", NULL) == false);
	CHECK(strstr((char *)o.data, "username alice has no rule 4 (it has 3)") != NULL);
	CHECK(!ch);
	CHECK(ctl(s, &o, &ch, "delete", "username", "alice", "2", NULL));
	CHECK(ch);
	CHECK(strstr((char *)o.data, "rule 2 of username alice deleted: allow publish b") != NULL);
	CHECK(check(s, "c", "alice", PUB, "b", 0, false) == NOMATCH);
	CHECK(check(s, "c", "alice", PUB, "c", 0, false) == ALLOW);
	CHECK(ctl(s, &o, &ch, "list", "username", "alice", NULL));
	CHECK(strstr((char *)o.data, "username\talice\t2\tallow\tpublish\tc\t") != NULL);
	CHECK(ctl(s, &o, &ch, "delete", "username", "alice", NULL));
	CHECK(strstr((char *)o.data, "2 rules of username alice deleted") != NULL);
	CHECK(check(s, "c", "alice", PUB, "a", 0, false) == NOMATCH);
	CHECK(ctl(s, &o, &ch, "delete", "all", "1", NULL));
	CHECK(check(s, "c", "alice", PUB, "y", 0, false) == NOMATCH);
	CHECK(check(s, "c", "alice", PUB, "z", 0, false) == ALLOW);
	CHECK(ctl(s, &o, &ch, "delete", "all", NULL));
	CHECK(strstr((char *)o.data, "1 rule of all deleted") != NULL);
	CHECK(check(s, "c", "alice", PUB, "z", 0, false) == NOMATCH);
	CTL_OK(s, "add", "all", "allow", "publish", "z");
	CHECK(ctl(s, &o, &ch, "clear", NULL));
	CHECK(ch);
	CHECK(strstr((char *)o.data, "2 rules deleted") != NULL);
	CHECK(check(s, "d1", "alice", PUB, "x", 0, false) == NOMATCH);
	CHECK(check(s, "d1", "alice", PUB, "z", 0, false) == NOMATCH);
	CHECK(ctl(s, &o, &ch, "clear", NULL));
	CHECK(!ch);
	CHECK(strstr((char *)o.data, "0 rules deleted") != NULL);
	/* nothing comes back after a restart */
	bdb_ops.destroy(s);
	s = open_src(NULL);
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n");
	bdb_ops.destroy(s);
	buf_free(&o);
	tmp_cleanup();
}

TEST(max_rules)
{
	tmp_setup();
	struct authz_source *s = open_src("s { type = built_in_database, max_rules = 2 }");
	struct buf o = { 0 };
	bool ch;
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "a");
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "b");
	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "allow", "publish", "c", NULL) == false);
	CHECK(!ch);
	CHECK(strstr((char *)o.data, "error: username alice already has 2 rules (max_rules = 2)") != NULL);
	CTL_OK(s, "add", "clientid", "alice", "allow", "publish", "c"); /* another subject */
	CTL_OK(s, "add", "username", "bob", "allow", "publish", "c");
	CTL_OK(s, "add", "all", "allow", "publish", "a");
	CTL_OK(s, "add", "all", "allow", "publish", "b");
	CHECK(ctl(s, &o, &ch, "add", "all", "allow", "publish", "c", NULL) == false);
	CHECK(strstr((char *)o.data, "all already has 2 rules (max_rules = 2)") != NULL);
	CHECK(check(s, "x", "alice", PUB, "c", 0, false) == NOMATCH);
	/* after deleting one there is room again */
	CTL_OK(s, "delete", "username", "alice", "1");
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "c");
	bdb_ops.destroy(s);
	/* a lower limit at start: the stored rules stay in force, none can be added */
	s = open_src("s { type = built_in_database, max_rules = 1 }");
	CHECK(check(s, "x", "alice", PUB, "b", 0, false) == ALLOW);
	CHECK(check(s, "x", "alice", PUB, "c", 0, false) == ALLOW);
	CHECK(ctl(s, &o, &ch, "add", "username", "alice", "allow", "publish", "d", NULL) == false);
	bdb_ops.destroy(s);
	buf_free(&o);
	tmp_cleanup();
}

TEST(persistence)
{
	tmp_setup();
	struct authz_source *s = open_src(NULL);
	struct buf o = { 0 }, before = { 0 };
	bool ch;
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "t/#", "--qos", "1,2", "--retain", "false");
	CTL_OK(s, "add", "username", "alice", "deny", "all", "eq t/#");
	CTL_OK(s, "add", "clientid", "dev-1", "allow", "subscribe", "devices/${clientid}/cmd");
	CTL_OK(s, "add", "all", "deny", "all", "#");
	CHECK(ctl(s, &o, &ch, "list", NULL));
	buf_append(&before, o.data, o.len + 1);
	bdb_ops.destroy(s);

	s = open_src(NULL);
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, (char *)before.data);
	CHECK(check(s, "c", "alice", PUB, "t/1", 1, false) == ALLOW);
	CHECK(check(s, "c", "alice", PUB, "t/1", 0, false) == DENY); /* qos 0 not in 1,2: falls to all */
	CHECK(check(s, "c", "alice", SUB, "t/#", 1, false) == DENY);
	CHECK(check(s, "dev-1", "bob", SUB, "devices/dev-1/cmd", 1, false) == ALLOW);
	CHECK(check(s, "dev-2", "bob", SUB, "devices/dev-1/cmd", 1, false) == DENY);
	bdb_ops.destroy(s);

	/* malformed rows (written by hand) are skipped; the rest loads */
	char *path = xasprintf("%s/authz.db", tmpdir);
	sqlite3 *db;
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db,
			   "INSERT INTO authz_rules VALUES (1, 'alice', 9, 'maybe', 'publish', 'x', '0', 'all');"
			   "INSERT INTO authz_rules VALUES (1, 'carol', 1, 'allow', 'publish', 'x', '7', 'all');"
			   "INSERT INTO authz_rules VALUES (7, 'zed', 1, 'allow', 'publish', 'x', '0', 'all');"
			   "INSERT INTO authz_rules VALUES (0, 'notempty', 1, 'allow', 'publish', 'x', '0', 'all');"
			   "INSERT INTO authz_rules VALUES (2, 'dev-1', 2, 'allow', 'publish', 'x/#/y', '0', 'all');"
			   "INSERT INTO authz_rules VALUES (1, 'dave', 1, 'allow', 'publish', 'ok', '0,2', 'true');",
			   NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	free(path);
	s = open_src(NULL);
	CHECK(ctl(s, &o, &ch, "list", "username", "alice", NULL));
	CHECK(strstr((char *)o.data, "maybe") == NULL);
	CHECK(strstr((char *)o.data, "alice\t2\t") != NULL);
	CHECK(ctl(s, &o, &ch, "list", "username", "carol", NULL));
	CHECK(strstr((char *)o.data, "carol") == NULL);
	CHECK(check(s, "c", "dave", PUB, "ok", 2, true) == ALLOW);
	CHECK(check(s, "c", "dave", PUB, "ok", 1, true) == DENY);
	CHECK(check(s, "c", "alice", PUB, "t/1", 1, false) == ALLOW);
	/* the stored rule whose topic does not compile is listed but never matches */
	CHECK(ctl(s, &o, &ch, "list", "clientid", "dev-1", NULL));
	CHECK(strstr((char *)o.data, "x/#/y") != NULL);
	CHECK(check(s, "dev-1", "bob", SUB, "devices/dev-1/cmd", 1, false) == ALLOW);
	bdb_ops.destroy(s);
	buf_free(&o);
	buf_free(&before);
	tmp_cleanup();
}

TEST(import_json)
{
	tmp_setup();
	struct authz_source *s = open_src("s { type = built_in_database, max_rules = 3 }");
	struct buf o = { 0 };
	bool ch;
	CTL_OK(s, "add", "username", "alice", "allow", "publish", "old/alice");
	CTL_OK(s, "add", "username", "keep", "allow", "publish", "old/keep");
	char *good = write_tmp("good.json",
			       "[\n"
			       " {\"username\": \"alice\", \"rules\": [\n"
			       "   {\"permission\": \"allow\", \"action\": \"publish\", \"topic\": \"t/#\"},\n"
			       "   {\"permission\": \"deny\", \"action\": \"subscribe\", \"topic\": \"eq #\", \"qos\": [0, 1]}]},\n"
			       " {\"clientid\": \"dev-1\", \"rules\": [\n"
			       "   {\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"d/${clientid}\", \"retain\": false}]},\n"
			       " {\"rules\": [{\"permission\": \"deny\", \"action\": \"all\", \"topic\": \"#\", \"qos\": 2,"
			       " \"retain\": \"all\"}]}\n"
			       "]\n");
	CHECK(ctl(s, &o, &ch, "import", good, NULL));
	CHECK(ch);
	CHECK(strstr((char *)o.data, "4 rules imported for 3 subjects") != NULL);
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n"
				  "clientid\tdev-1\t1\tallow\tall\td/${clientid}\t0,1,2\tfalse\n"
				  "username\talice\t1\tallow\tpublish\tt/#\t0,1,2\tall\n"
				  "username\talice\t2\tdeny\tsubscribe\teq #\t0,1\tall\n"
				  "username\tkeep\t1\tallow\tpublish\told/keep\t0,1,2\tall\n"
				  "all\t-\t1\tdeny\tall\t#\t2\tall\n");
	CHECK(check(s, "c", "alice", PUB, "old/alice", 0, false) == NOMATCH);
	CHECK(check(s, "c", "alice", PUB, "t/x", 0, false) == ALLOW);
	CHECK(check(s, "dev-1", "x", PUB, "d/dev-1", 0, false) == ALLOW);
	CHECK(check(s, "dev-1", "x", PUB, "d/dev-1", 2, true) == DENY);

	/* an object for all alone; an empty rule list deletes the subject */
	char *all = write_tmp("all.json", "{\"rules\": [{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"p\"}]}");
	CHECK(ctl(s, &o, &ch, "import", all, NULL));
	char *empty = write_tmp("empty.json", "[{\"username\": \"keep\", \"rules\": []}]");
	CHECK(ctl(s, &o, &ch, "import", empty, NULL));
	CHECK(strstr((char *)o.data, "0 rules imported for 1 subject") != NULL);
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK(strstr((char *)o.data, "keep") == NULL);
	CHECK(strstr((char *)o.data, "all\t-\t1\tallow\tall\tp\t0,1,2\tall\n") != NULL);

	/* failures change nothing */
	struct buf before = { 0 };
	buf_append(&before, o.data, o.len + 1);
	static const struct {
		const char *text, *msg;
	} bad[] = {
		{ "[{\"username\": \"alice\", \"rules\": []},\n {\"username\": \"bob\", \"rules\": [{\"permission\": "
		  "\"maybe\", \"action\": \"publish\", \"topic\": \"t\"}]}]",
		  "item 2: rule 1: permission must be" },
		{ "[{\"username\": \"bob\", \"rules\": [{\"permission\": \"allow\", \"action\": \"publish\"}]}]",
		  "permission, action and topic are required" },
		{ "[{\"username\": \"bob\", \"rules\": [{\"permission\": \"allow\", \"action\": \"publish\", \"topic\": "
		  "\"a/#/b\"}]}]",
		  "item 1: rule 1: topic:" },
		{ "[{\"username\": \"bob\", \"rules\": [{\"permission\": \"allow\", \"action\": \"publish\", \"topic\": "
		  "\"t\", \"qos\": [3]}]}]",
		  "qos must be" },
		{ "[{\"username\": \"bob\", \"rules\": [{\"permission\": \"allow\", \"action\": \"publish\", \"topic\": "
		  "\"t\", \"colour\": 1}]}]",
		  "unknown key \"colour\"" },
		{ "[{\"username\": \"bob\", \"clientid\": \"c\", \"rules\": []}]", "not both" },
		{ "[{\"username\": \"\", \"rules\": []}]", "username must be a non-empty string" },
		{ "[{\"username\": \"bob\"}]", "rules must be an array" },
		{ "[{\"username\": \"bob\", \"rules\": []}, {\"username\": \"bob\", \"rules\": []}]",
		  "username bob appears twice" },
		{ "[{\"username\": \"bob\", \"rules\": [" "{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"a\"},"
		  "{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"b\"},"
		  "{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"c\"},"
		  "{\"permission\": \"allow\", \"action\": \"all\", \"topic\": \"d\"}]}]",
		  "has 4 rules, more than max_rules = 3" },
		{ "[{\"username\": \"bob\", \"rules\": [}", "bad.json:1:" },
		{ "\"rules\"", "bad.json:1:" },
		{ "[{\"username\": \"bob\", \"username\": \"x\", \"rules\": []}]", "duplicate" },
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		char *p = write_tmp("bad.json", bad[i].text);
		ch = true;
		if (ctl(s, &o, &ch, "import", p, NULL) || ch || !strstr((char *)o.data, bad[i].msg)) {
			fprintf(stderr, "bad import %zu: %s", i, (char *)o.data);
			CHECK(0);
		}
		free(p);
	}
	char *missing = xasprintf("%s/missing.json", tmpdir);
	CHECK(ctl(s, &o, &ch, "import", missing, NULL) == false);
	CHECK(strstr((char *)o.data, "No such file") != NULL);
	CHECK(ctl(s, &o, &ch, "import", tmpdir, NULL) == false);
	CHECK(strstr((char *)o.data, "not a regular file") != NULL);
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, (char *)before.data);

	/* imported rules persist */
	bdb_ops.destroy(s);
	s = open_src("s { type = built_in_database, max_rules = 3 }");
	CHECK(ctl(s, &o, &ch, "list", NULL));
	CHECK_STR((char *)o.data, (char *)before.data);
	bdb_ops.destroy(s);
	free(good);
	free(all);
	free(empty);
	free(missing);
	buf_free(&before);
	buf_free(&o);
	tmp_cleanup();
}

TEST(no_data_dir)
{
	char err[256] = "";
	struct bdb_cfg c = { .max_rules = 100 };
	struct authz_env env = { .data_dir = NULL };
	CHECK(bdb_ops.create(&c, &env, err, sizeof err) == NULL);
	CHECK(strstr(err, "data_dir") != NULL);
	env.data_dir = "/proc/no/such/dir";
	CHECK(bdb_ops.create(&c, &env, err, sizeof err) == NULL);
	CHECK(strstr(err, "/proc/no") != NULL);
}

/* ---- checks on several threads while the rules change ---- */

struct race {
	struct authz_source *s;
	_Atomic int stop;
	long checks, bad;
};

static void *checker(void *arg)
{
	struct race *r = arg;
	long n = 0, bad = 0;
	while (!r->stop) {
		enum authz_verdict v = check(r->s, "dev-1", "alice", PUB, "a/b", 0, false);
		if (v != ALLOW && v != NOMATCH && v != DENY)
			bad++;
		v = check(r->s, "dev-2", "bob", SUB, "always/x", 1, false);
		if (v == DENY) /* ALLOW, or NOMATCH while `clear` runs */
			bad++;
		n++;
	}
	__atomic_add_fetch(&r->checks, n, __ATOMIC_RELAXED);
	__atomic_add_fetch(&r->bad, bad, __ATOMIC_RELAXED);
	return NULL;
}

TEST(concurrent_checks)
{
	tmp_setup();
	struct race r = { .s = open_src(NULL) };
	struct buf o = { 0 };
	CTL_OK(r.s, "add", "all", "allow", "subscribe", "always/#");
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		pthread_create(&th[i], NULL, checker, &r);
	for (int i = 0; i < 60; i++) {
		CTL_OK(r.s, "add", "username", "alice", "allow", "publish", "a/#");
		CTL_OK(r.s, "add", "clientid", "dev-1", "deny", "publish", "a/b");
		CTL_OK(r.s, "delete", "username", "alice");
		CTL_OK(r.s, "delete", "clientid", "dev-1", "1");
		if (i % 20 == 19) {
			CTL_OK(r.s, "clear");
			CTL_OK(r.s, "add", "all", "allow", "subscribe", "always/#");
		}
	}
	r.stop = 1;
	for (int i = 0; i < 4; i++)
		pthread_join(th[i], NULL);
	CHECK(r.checks > 0);
	CHECK_EQ_INT(r.bad, 0);
	bdb_ops.destroy(r.s);
	buf_free(&o);
	tmp_cleanup();
}

int main(void)
{
	log_set_level(LOG_ERROR);
	RUN(config_keys);
	RUN(registered);
	RUN(add_list_check);
	RUN(placeholders);
	RUN(bad_commands);
	RUN(delete_and_clear);
	RUN(max_rules);
	RUN(persistence);
	RUN(import_json);
	RUN(no_data_dir);
	RUN(concurrent_checks);
	return unit_summary();
}
