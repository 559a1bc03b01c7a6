/* `authorization.sources = [{ type = built_in_database, enable = true, max_rules = 100 }]`
 * (reference/emqx.md §5; EMQX's emqx_authz_mnesia).
 *
 * Rules are kept per subject: a username, a client ID, or `all`. Each rule is (allow|deny,
 * publish|subscribe|all, topic, qos set, retain condition); the topic may use placeholders
 * or be "eq FILTER" (acl.h). A request is checked against the client's client ID rules,
 * then its username rules, then the `all` rules — EMQX's order — and the first rule that
 * matches decides; none: NOMATCH (the next source, then no_match).
 *
 * Storage: <data_dir>/authz.db (SQLite, WAL, synchronous=FULL), one table `authz_rules`
 * with one row per rule, ordered by `pos` within its subject. It is read at create and
 * written only by the control commands (`bulwark ctl rules ...`), which run on the main
 * thread: SQLite first (one transaction per command), then memory.
 *
 * Memory: every subject holds its rule list (touched only by the main thread) and the
 * compiled struct acl that check() uses. Checks run on the worker threads under a
 * read-write lock (writer-preferring, so a ctl change is never starved by traffic) that
 * guards the subject map and every subject's acl pointer; a change builds the new acl
 * first, swaps it in under the write lock and frees the old one afterwards.
 */
#include "authz/source.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "authz/acl.h"
#include "config/hocon.h"
#include "core/alloc.h"
#include "core/fs.h"
#include "core/hash.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"

#define BDB_MAX_NAME 65535        /* an MQTT string cannot be longer */
#define BDB_MAX_TOPIC 65535
#define BDB_MAX_RULES_LIMIT 100000 /* upper bound of max_rules */
#define BDB_IMPORT_MAX_BYTES (64u << 20)

/* EMQX's table labels: 0 for all, 1 for a username, 2 for a client ID. */
enum who_kind { WHO_ALL = 0, WHO_USERNAME = 1, WHO_CLIENTID = 2 };

static const char *const who_names[] = { "all", "username", "clientid" };

/* ---- configuration ---- */

struct bdb_cfg {
	uint32_t max_rules;
};

static bool skip_core_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)r, (void)m, (void)target;
	return true; /* type, enable: read by the authorization core */
}

static const struct cfg_field bdb_fields[] = {
	{ "type", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "max_rules", CFG_F_U32, offsetof(struct bdb_cfg, max_rules), 1, BDB_MAX_RULES_LIMIT, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void bdb_free_config(void *p)
{
	free(p);
}

static void *bdb_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct bdb_cfg *c = xcalloc(1, sizeof *c);
	c->max_rules = 100;
	if (!cfgr_load_fields(r, m, m->value, bdb_fields, c)) {
		free(c);
		return NULL;
	}
	return c;
}

/* ---- rules and subjects ---- */

struct brule {
	bool allow;
	unsigned actions;  /* AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE */
	uint8_t qos_mask;  /* bit q per allowed QoS; 0 = all */
	int retain;        /* -1 all, 0 false, 1 true */
	char *topic;       /* NUL-terminated */
	size_t topic_len;
};

struct subject {
	struct hmap_node node;
	int kind;
	char *name;        /* NUL-terminated; "" for all */
	size_t name_len;
	struct brule *rules; /* main thread only */
	size_t n;
	struct acl *acl;   /* compiled rules, NULL when none; swapped under the write lock */
};

struct bdb {
	uint32_t max_rules;
	char *path;
	sqlite3 *db;
	sqlite3_stmt *st_insert, *st_delete;
	pthread_rwlock_t lock; /* guards subjects (the map) and every subject's acl pointer */
	struct hmap subjects;  /* username and client ID subjects */
	struct subject all;    /* the `all` rules: always present, n may be 0 */
};

static struct bdb *B(struct authz_source *s)
{
	return (struct bdb *)(void *)s;
}

static void brule_clear(struct brule *r)
{
	free(r->topic);
	memset(r, 0, sizeof *r);
}

static void brules_free(struct brule *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		brule_clear(&v[i]);
	free(v);
}

static void brule_copy(struct brule *dst, const struct brule *src)
{
	*dst = *src;
	dst->topic = xstrndup(src->topic, src->topic_len);
}

static uint64_t subject_hash(int kind, const void *name, size_t len)
{
	return hash_bytes(name, len) ^ ((uint64_t)kind * 0x9e3779b97f4a7c15ull);
}

/* Lookup; the caller holds the lock, or is the main thread (the only writer). */
static struct subject *find(const struct bdb *b, int kind, const void *name, size_t len)
{
	if (kind == WHO_ALL)
		return (struct subject *)&b->all;
	if (!b->subjects.count)
		return NULL;
	uint64_t h = subject_hash(kind, name, len);
	hmap_for_hash(&b->subjects, h, it) {
		struct subject *s = container_of(it, struct subject, node);
		if (s->kind == kind && s->name_len == len && memcmp(s->name, name, len) == 0)
			return s;
	}
	return NULL;
}

static void subject_free(struct subject *s)
{
	brules_free(s->rules, s->n);
	acl_free(s->acl);
	free(s->name);
	free(s);
}

static const char *retain_str(int retain)
{
	return retain < 0 ? "all" : retain ? "true" : "false";
}

static const char *action_str(unsigned actions)
{
	if (actions == (AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE))
		return "all";
	return actions == AUTHZ_PUBLISH ? "publish" : "subscribe";
}

/* "0,1,2" for a QoS mask (0 = all). */
static void qos_str(uint8_t mask, char out[8])
{
	size_t k = 0;
	if (!mask)
		mask = 7;
	for (int q = 0; q < 3; q++) {
		if (mask & (1u << q)) {
			if (k)
				out[k++] = ',';
			out[k++] = (char)('0' + q);
		}
	}
	out[k] = '\0';
}

/* Append s[0..n) with control characters (and DEL) as \xNN and backslash as \\. */
static void escape(struct buf *out, const void *s, size_t n)
{
	const uint8_t *p = s;
	for (size_t i = 0; i < n; i++) {
		if (p[i] < 0x20 || p[i] == 0x7f)
			buf_printf(out, "\\x%02x", p[i]);
		else if (p[i] == '\\')
			buf_append_str(out, "\\\\");
		else
			buf_append(out, &p[i], 1);
	}
}

/* "username alice", "clientid dev-1" or "all" (escaped), NUL-terminated in out. */
static void who_text(struct buf *out, int kind, const char *name, size_t len)
{
	buf_append_str(out, who_names[kind]);
	if (kind != WHO_ALL) {
		buf_append(out, " ", 1);
		escape(out, name, len);
	}
	buf_append(out, "", 1);
}

static struct acl_rule_spec spec_of(const struct brule *r)
{
	struct acl_rule_spec sp = {
		.allow = r->allow,
		.actions = r->actions,
		.qos_mask = r->qos_mask,
		.retain = r->retain,
		.topic = r->topic,
		.topic_len = r->topic_len,
	};
	return sp;
}

/* Check one rule's topic (placeholders, "eq ...", syntax) by compiling it alone. */
static bool brule_valid(const struct brule *r, char *err, size_t errlen)
{
	if (r->topic_len == 0) {
		snprintf(err, errlen, "the topic must not be empty");
		return false;
	}
	if (r->topic_len > BDB_MAX_TOPIC) {
		snprintf(err, errlen, "the topic is longer than %d bytes", BDB_MAX_TOPIC);
		return false;
	}
	struct acl *a = acl_new();
	struct acl_rule_spec sp = spec_of(r);
	bool ok = acl_add(a, &sp, err, errlen);
	acl_free(a);
	return ok;
}

/* The acl for a rule list (NULL when empty); a rule that does not compile (a stored rule
 * a newer version would refuse) is logged and left out. */
static struct acl *compile(const struct bdb *b, int kind, const char *name, size_t name_len, const struct brule *v,
			   size_t n)
{
	if (!n)
		return NULL;
	struct acl *a = acl_new();
	for (size_t i = 0; i < n; i++) {
		struct acl_rule_spec sp = spec_of(&v[i]);
		char err[256];
		if (!acl_add(a, &sp, err, sizeof err)) {
			struct buf w = { 0 };
			who_text(&w, kind, name, name_len);
			log_warn("%s: rule %zu of %s skipped: %s", b->path, i + 1, (const char *)w.data, err);
			buf_free(&w);
		}
	}
	return a;
}

/* Replace a subject's rules in memory (takes ownership of v): compile, swap the acl in
 * under the write lock, add or remove the subject. Main thread. */
static void apply(struct bdb *b, int kind, const char *name, size_t name_len, struct brule *v, size_t n)
{
	struct acl *acl = compile(b, kind, name, name_len, v, n);
	struct subject *s = find(b, kind, name, name_len);
	struct subject *gone = NULL, *added = NULL;
	struct acl *old_acl = NULL;
	struct brule *old_rules = NULL;
	size_t old_n = 0;
	if (!s && n) {
		added = xcalloc(1, sizeof *added);
		added->kind = kind;
		added->name = xstrndup(name, name_len);
		added->name_len = name_len;
		added->rules = v;
		added->n = n;
		added->acl = acl;
	} else if (s) {
		old_rules = s->rules;
		old_n = s->n;
		old_acl = s->acl;
		s->rules = v;
		s->n = n;
		if (!n && kind != WHO_ALL)
			gone = s;
	} else {
		free(v); /* nothing to remove */
	}
	pthread_rwlock_wrlock(&b->lock);
	if (added)
		hmap_insert(&b->subjects, &added->node, subject_hash(kind, name, name_len));
	else if (s)
		s->acl = acl;
	if (gone)
		hmap_remove(&b->subjects, &gone->node);
	pthread_rwlock_unlock(&b->lock);
	brules_free(old_rules, old_n);
	acl_free(old_acl);
	if (gone)
		subject_free(gone);
}

/* ---- SQLite ---- */

static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS authz_rules("
	" who INTEGER NOT NULL,"      /* 0 all, 1 username, 2 clientid */
	" name BLOB NOT NULL,"        /* the username or client ID; '' for all */
	" pos INTEGER NOT NULL,"      /* 1.. within the subject: the check order */
	" permission TEXT NOT NULL,"  /* allow | deny */
	" action TEXT NOT NULL,"      /* publish | subscribe | all */
	" topic BLOB NOT NULL,"
	" qos TEXT NOT NULL,"         /* \"0,1,2\" */
	" retain TEXT NOT NULL,"      /* true | false | all */
	" PRIMARY KEY (who, name, pos)"
	") WITHOUT ROWID";

static void db_err(struct bdb *b, char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", b->path, what, b->db ? sqlite3_errmsg(b->db) : "out of memory");
}

static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

static bool db_exec(struct bdb *b, const char *sql, char *err, size_t errlen)
{
	if (sqlite3_exec(b->db, sql, NULL, NULL, NULL) != SQLITE_OK) {
		if (err)
			db_err(b, err, errlen, sql);
		return false;
	}
	return true;
}

static bool db_begin(struct bdb *b, char *err, size_t errlen)
{
	return db_exec(b, "BEGIN IMMEDIATE", err, errlen);
}

static bool db_commit(struct bdb *b, char *err, size_t errlen)
{
	if (!db_exec(b, "COMMIT", err, errlen)) {
		db_exec(b, "ROLLBACK", NULL, 0);
		return false;
	}
	return true;
}

/* Write a subject's whole rule list (inside a transaction). */
static bool persist(struct bdb *b, int kind, const char *name, size_t name_len, const struct brule *v, size_t n,
		    char *err, size_t errlen)
{
	sqlite3_stmt *st = b->st_delete;
	sqlite3_bind_int(st, 1, kind);
	sqlite3_bind_blob64(st, 2, name_len ? name : "", name_len, SQLITE_STATIC);
	if (run(st) != SQLITE_DONE) {
		db_err(b, err, errlen, "deleting rules");
		return false;
	}
	st = b->st_insert;
	for (size_t i = 0; i < n; i++) {
		char q[8];
		qos_str(v[i].qos_mask, q);
		sqlite3_bind_int(st, 1, kind);
		sqlite3_bind_blob64(st, 2, name_len ? name : "", name_len, SQLITE_STATIC);
		sqlite3_bind_int64(st, 3, (int64_t)i + 1);
		sqlite3_bind_text(st, 4, v[i].allow ? "allow" : "deny", -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 5, action_str(v[i].actions), -1, SQLITE_STATIC);
		sqlite3_bind_blob64(st, 6, v[i].topic, v[i].topic_len, SQLITE_STATIC);
		sqlite3_bind_text(st, 7, q, -1, SQLITE_TRANSIENT);
		sqlite3_bind_text(st, 8, retain_str(v[i].retain), -1, SQLITE_STATIC);
		if (run(st) != SQLITE_DONE) {
			db_err(b, err, errlen, "storing a rule");
			return false;
		}
	}
	return true;
}

/* Persist then apply one subject's new rule list (takes ownership of v). */
static bool set_rules(struct bdb *b, int kind, const char *name, size_t name_len, struct brule *v, size_t n,
		      char *err, size_t errlen)
{
	if (!db_begin(b, err, errlen)) {
		brules_free(v, n);
		return false;
	}
	if (!persist(b, kind, name, name_len, v, n, err, errlen)) {
		db_exec(b, "ROLLBACK", NULL, 0);
		brules_free(v, n);
		return false;
	}
	if (!db_commit(b, err, errlen)) {
		brules_free(v, n);
		return false;
	}
	apply(b, kind, name, name_len, v, n);
	return true;
}

/* ---- parsing words (ctl, import, stored rows) ---- */

static bool parse_permission(const char *s, bool *allow)
{
	if (strcmp(s, "allow") == 0) {
		*allow = true;
		return true;
	}
	if (strcmp(s, "deny") == 0) {
		*allow = false;
		return true;
	}
	return false;
}

/* EMQX's API words only (acl_action_of also takes acl.conf's v4 "pub"/"sub"). */
static bool parse_action(const char *s, unsigned *actions)
{
	if (strcmp(s, "publish") != 0 && strcmp(s, "subscribe") != 0 && strcmp(s, "all") != 0)
		return false;
	*actions = acl_action_of(s, strlen(s));
	return *actions != 0;
}

/* "0,1" / "2" / "0, 1, 2" / "all" -> mask (0 = all). */
static bool parse_qos_list(const char *s, uint8_t *mask)
{
	if (strcmp(s, "all") == 0) {
		*mask = 0;
		return true;
	}
	uint8_t m = 0;
	bool want_digit = true;
	for (const char *p = s; *p; p++) {
		if (*p == ' ' || *p == '\t')
			continue;
		if (want_digit && *p >= '0' && *p <= '2') {
			m |= (uint8_t)(1u << (*p - '0'));
			want_digit = false;
		} else if (!want_digit && *p == ',') {
			want_digit = true;
		} else {
			return false;
		}
	}
	if (want_digit) /* empty, or a trailing comma */
		return false;
	*mask = m == 7 ? 0 : m;
	return true;
}

static bool parse_retain(const char *s, int *retain)
{
	if (strcmp(s, "all") == 0)
		*retain = -1;
	else if (strcmp(s, "true") == 0)
		*retain = 1;
	else if (strcmp(s, "false") == 0)
		*retain = 0;
	else
		return false;
	return true;
}

/* ---- loading ---- */

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? (const char *)t : "";
}

static bool load(struct bdb *b, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	if (sqlite3_prepare_v2(b->db,
			       "SELECT who, name, permission, action, topic, qos, retain FROM authz_rules"
			       " ORDER BY who, name, pos",
			       -1, &st, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, "reading rules");
		return false;
	}
	int kind = -1, rc;
	char *name = NULL;
	size_t name_len = 0, n = 0, cap = 0;
	struct brule *v = NULL;
	for (;;) {
		rc = sqlite3_step(st);
		int k = -1;
		const void *nm = NULL;
		size_t nl = 0;
		if (rc == SQLITE_ROW) {
			k = sqlite3_column_int(st, 0);
			nm = sqlite3_column_blob(st, 1);
			nl = (size_t)sqlite3_column_bytes(st, 1);
		}
		/* end of a subject: hand its rules over */
		if (kind >= 0 && (rc != SQLITE_ROW || k != kind || nl != name_len || (nl && memcmp(nm, name, nl)))) {
			if (n > b->max_rules) {
				struct buf w = { 0 };
				who_text(&w, kind, name, name_len);
				log_warn("%s: %s has %zu rules, more than max_rules = %u: all are used, none can be added",
					 b->path, (const char *)w.data, n, b->max_rules);
				buf_free(&w);
			}
			apply(b, kind, name, name_len, v, n);
			free(name);
			name = NULL;
			v = NULL;
			n = cap = 0;
			kind = -1;
		}
		if (rc != SQLITE_ROW)
			break;
		struct brule r = { 0 };
		const char *perm = col_text(st, 2), *act = col_text(st, 3);
		const char *qos = col_text(st, 5), *ret = col_text(st, 6);
		const void *topic = sqlite3_column_blob(st, 4);
		size_t tl = (size_t)sqlite3_column_bytes(st, 4);
		bool ok = k >= WHO_ALL && k <= WHO_CLIENTID && (k == WHO_ALL) == (nl == 0) && nl <= BDB_MAX_NAME &&
			  (!nl || !memchr(nm, '\0', nl)) && parse_permission(perm, &r.allow) &&
			  parse_action(act, &r.actions) && parse_qos_list(qos, &r.qos_mask) &&
			  parse_retain(ret, &r.retain) && tl > 0 && tl <= BDB_MAX_TOPIC && !memchr(topic, '\0', tl);
		if (!ok) {
			log_warn("%s: a malformed rule row (who %d) skipped", b->path, k);
			continue;
		}
		if (kind < 0) {
			kind = k;
			name_len = nl;
			name = xstrndup(nl ? nm : "", nl);
		}
		r.topic = xstrndup(topic, tl);
		r.topic_len = tl;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			v = xrealloc(v, cap * sizeof *v);
		}
		v[n++] = r;
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		db_err(b, err, errlen, "reading rules");
		return false;
	}
	return true;
}

/* ---- the source ---- */

static void free_subjects(struct bdb *b)
{
	struct hmap_node *n = hmap_steal(&b->subjects);
	while (n) {
		struct hmap_node *next = n->next;
		subject_free(container_of(n, struct subject, node));
		n = next;
	}
}

static void bdb_destroy(struct authz_source *s)
{
	struct bdb *b = B(s);
	if (!b)
		return;
	sqlite3_finalize(b->st_insert);
	sqlite3_finalize(b->st_delete);
	if (b->db)
		sqlite3_close(b->db);
	free_subjects(b);
	brules_free(b->all.rules, b->all.n);
	acl_free(b->all.acl);
	free(b->all.name);
	pthread_rwlock_destroy(&b->lock);
	free(b->path);
	free(b);
}

static size_t total_rules(const struct bdb *b, size_t *usernames, size_t *clientids)
{
	size_t total = b->all.n;
	*usernames = *clientids = 0;
	hmap_for_each(&b->subjects, it) {
		const struct subject *s = container_of(it, struct subject, node);
		total += s->n;
		if (s->kind == WHO_USERNAME)
			(*usernames)++;
		else
			(*clientids)++;
	}
	return total;
}

static struct authz_source *bdb_create(const void *cfgp, const struct authz_env *env, char *err, size_t errlen)
{
	const struct bdb_cfg *cfg = cfgp;
	const char *dir = env ? env->data_dir : NULL;
	if (!dir || !*dir) {
		snprintf(err, errlen, "built_in_database: no data_dir");
		return NULL;
	}
	if (!fs_make_dirs(dir, err, errlen))
		return NULL;
	struct bdb *b = xcalloc(1, sizeof *b);
	b->max_rules = cfg ? cfg->max_rules : 100;
	b->path = xasprintf("%s/authz.db", dir);
	b->all.kind = WHO_ALL;
	b->all.name = xstrdup("");
	hmap_init(&b->subjects);
	pthread_rwlockattr_t attr;
	pthread_rwlockattr_init(&attr);
	pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&b->lock, &attr);
	pthread_rwlockattr_destroy(&attr);
	int rc = sqlite3_open_v2(b->path, &b->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		db_err(b, err, errlen, "cannot open");
		goto fail;
	}
	chmod(b->path, 0600);
	sqlite3_extended_result_codes(b->db, 1);
	sqlite3_busy_timeout(b->db, 5000);
	sqlite3_db_config(b->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	sqlite3_db_config(b->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
	/* rule changes are rare and must survive a crash: every commit is synced */
	if (!db_exec(b, "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cell_size_check = ON;"
			" PRAGMA mmap_size = 0",
		     err, errlen))
		goto fail;
	if (!db_exec(b, schema_sql, err, errlen))
		goto fail;
	if (sqlite3_prepare_v3(b->db,
			       "INSERT INTO authz_rules(who, name, pos, permission, action, topic, qos, retain)"
			       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
			       -1, SQLITE_PREPARE_PERSISTENT, &b->st_insert, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v3(b->db, "DELETE FROM authz_rules WHERE who = ?1 AND name = ?2", -1,
			       SQLITE_PREPARE_PERSISTENT, &b->st_delete, NULL) != SQLITE_OK) {
		db_err(b, err, errlen, "unexpected schema");
		goto fail;
	}
	if (!load(b, err, errlen))
		goto fail;
	size_t nu, nc, total = total_rules(b, &nu, &nc);
	log_info("authorization built_in_database: %zu rules (%zu usernames, %zu client IDs, %zu for all) in %s",
		 total, nu, nc, b->all.n, b->path);
	return (struct authz_source *)(void *)b;
fail:
	bdb_destroy((struct authz_source *)(void *)b);
	return NULL;
}

static enum authz_verdict bdb_check(struct authz_source *s, const struct authz_client *cl,
				    const struct authz_action *a)
{
	struct bdb *b = B(s);
	enum authz_verdict v = AUTHZ_NOMATCH;
	pthread_rwlock_rdlock(&b->lock);
	if (b->subjects.count) {
		const struct subject *sub;
		if (cl->clientid && (sub = find(b, WHO_CLIENTID, cl->clientid, strlen(cl->clientid))) && sub->acl)
			v = acl_check(sub->acl, cl, a);
		if (v == AUTHZ_NOMATCH && cl->username &&
		    (sub = find(b, WHO_USERNAME, cl->username, cl->username_len)) && sub->acl)
			v = acl_check(sub->acl, cl, a);
	}
	if (v == AUTHZ_NOMATCH && b->all.acl)
		v = acl_check(b->all.acl, cl, a);
	pthread_rwlock_unlock(&b->lock);
	return v == AUTHZ_ALLOW || v == AUTHZ_DENY ? v : AUTHZ_NOMATCH;
}

/* ---- control commands ---- */

static const char usage[] =
	"usage: rules add username|clientid NAME allow|deny publish|subscribe|all TOPIC [--qos 0,1,2]"
	" [--retain true|false|all]\n"
	"       rules add all allow|deny publish|subscribe|all TOPIC [--qos 0,1,2] [--retain true|false|all]\n"
	"       rules list [username|clientid NAME | all]\n"
	"       rules delete username|clientid NAME [INDEX]\n"
	"       rules delete all [INDEX]\n"
	"       rules clear\n"
	"       rules import FILE.json\n"
	"TOPIC may use ${username}, ${clientid}, ... placeholders, or be \"eq FILTER\" to match the filter text\n"
	"literally. A client's rules are checked in this order: its client ID's, its username's, then all;\n"
	"the first that matches decides.\n";

static bool usage_fail(struct buf *out, const char *why)
{
	if (why)
		buf_printf(out, "error: %s\n", why);
	buf_append_str(out, usage);
	return false;
}

/* Read "username NAME" | "clientid NAME" | "all" at argv[*i]. */
static bool parse_who(int argc, char **argv, int *i, int *kind, const char **name, struct buf *out)
{
	if (*i >= argc)
		return usage_fail(out, "expected username NAME, clientid NAME or all");
	const char *w = argv[*i];
	if (strcmp(w, "all") == 0) {
		*kind = WHO_ALL;
		*name = "";
		(*i)++;
		return true;
	}
	if (strcmp(w, "username") == 0)
		*kind = WHO_USERNAME;
	else if (strcmp(w, "clientid") == 0)
		*kind = WHO_CLIENTID;
	else
		return usage_fail(out, "expected username NAME, clientid NAME or all");
	if (*i + 1 >= argc)
		return usage_fail(out, *kind == WHO_USERNAME ? "username needs a NAME" : "clientid needs a NAME");
	*name = argv[*i + 1];
	size_t n = strlen(*name);
	if (n == 0) {
		buf_printf(out, "error: the %s must not be empty\n", who_names[*kind]);
		return false;
	}
	if (n > BDB_MAX_NAME) {
		buf_printf(out, "error: the %s is longer than %d bytes\n", who_names[*kind], BDB_MAX_NAME);
		return false;
	}
	*i += 2;
	return true;
}

static void describe_rule(struct buf *out, const struct brule *r)
{
	char q[8];
	qos_str(r->qos_mask, q);
	buf_printf(out, "%s %s ", r->allow ? "allow" : "deny", action_str(r->actions));
	escape(out, r->topic, r->topic_len);
	buf_printf(out, " (qos %s, retain %s)", q, retain_str(r->retain));
}

static bool ctl_add(struct bdb *b, int argc, char **argv, struct buf *out, bool *changed)
{
	int i = 2, kind;
	const char *name;
	if (!parse_who(argc, argv, &i, &kind, &name, out))
		return false;
	const char *pos[4];
	int npos = 0;
	const char *qos = NULL, *retain = NULL;
	bool opts_done = false;
	for (; i < argc; i++) {
		const char *a = argv[i];
		if (!opts_done && strcmp(a, "--") == 0) {
			opts_done = true;
		} else if (!opts_done && (strcmp(a, "--qos") == 0 || strcmp(a, "--retain") == 0)) {
			if (i + 1 >= argc)
				return usage_fail(out, a[2] == 'q' ? "--qos needs a value" : "--retain needs a value");
			*(a[2] == 'q' ? &qos : &retain) = argv[++i];
		} else if (!opts_done && strncmp(a, "--qos=", 6) == 0) {
			qos = a + 6;
		} else if (!opts_done && strncmp(a, "--retain=", 9) == 0) {
			retain = a + 9;
		} else if (!opts_done && a[0] == '-' && a[1] == '-') {
			buf_printf(out, "error: unknown option %s\n", a);
			return usage_fail(out, NULL);
		} else if (npos < 4) {
			pos[npos++] = a;
		} else {
			return usage_fail(out, "too many arguments");
		}
	}
	struct brule r = { .retain = -1 };
	char *topic_buf = NULL;
	if (npos == 4 && strcmp(pos[2], "eq") == 0) {
		/* `... eq '#'` as two words: the literal filter form */
		topic_buf = xasprintf("eq %s", pos[3]);
	} else if (npos != 3) {
		return usage_fail(out, "expected allow|deny, an action and a TOPIC");
	}
	bool ok = false;
	char err[512];
	if (!parse_permission(pos[0], &r.allow)) {
		buf_printf(out, "error: permission must be allow or deny, not \"%s\"\n", pos[0]);
		goto out;
	}
	if (!parse_action(pos[1], &r.actions)) {
		buf_printf(out, "error: action must be publish, subscribe or all, not \"%s\"\n", pos[1]);
		goto out;
	}
	if (qos && !parse_qos_list(qos, &r.qos_mask)) {
		buf_printf(out, "error: --qos must be a list of 0, 1 and 2 such as 0,1 (got \"%s\")\n", qos);
		goto out;
	}
	if (retain && !parse_retain(retain, &r.retain)) {
		buf_printf(out, "error: --retain must be true, false or all (got \"%s\")\n", retain);
		goto out;
	}
	const char *topic = topic_buf ? topic_buf : pos[2];
	r.topic = (char *)topic;
	r.topic_len = strlen(topic);
	if (!brule_valid(&r, err, sizeof err)) {
		buf_printf(out, "error: invalid topic \"");
		escape(out, r.topic, r.topic_len);
		buf_printf(out, "\": %s\n", err);
		goto out;
	}
	size_t name_len = strlen(name);
	const struct subject *s = find(b, kind, name, name_len);
	size_t n = s ? s->n : 0;
	struct buf w = { 0 };
	who_text(&w, kind, name, name_len);
	if (n >= b->max_rules) {
		buf_printf(out, "error: %s already has %zu rules (max_rules = %u); delete some first\n",
			   (const char *)w.data, n, b->max_rules);
		buf_free(&w);
		goto out;
	}
	struct brule *v = xmalloc((n + 1) * sizeof *v);
	for (size_t k = 0; k < n; k++)
		brule_copy(&v[k], &s->rules[k]);
	brule_copy(&v[n], &r);
	if (!set_rules(b, kind, name, name_len, v, n + 1, err, sizeof err)) {
		buf_printf(out, "error: %s\n", err);
		buf_free(&w);
		goto out;
	}
	*changed = true;
	buf_printf(out, "rule %zu added for %s: ", n + 1, (const char *)w.data);
	describe_rule(out, &r);
	buf_append_str(out, "\n");
	buf_free(&w);
	ok = true;
out:
	free(topic_buf);
	return ok;
}

static const char list_header[] = "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain\n";

static void list_subject(struct buf *out, const struct subject *s)
{
	for (size_t i = 0; i < s->n; i++) {
		const struct brule *r = &s->rules[i];
		char q[8];
		qos_str(r->qos_mask, q);
		buf_printf(out, "%s\t", who_names[s->kind]);
		if (s->kind == WHO_ALL)
			buf_append_str(out, "-");
		else
			escape(out, s->name, s->name_len);
		buf_printf(out, "\t%zu\t%s\t%s\t", i + 1, r->allow ? "allow" : "deny", action_str(r->actions));
		escape(out, r->topic, r->topic_len);
		buf_printf(out, "\t%s\t%s\n", q, retain_str(r->retain));
	}
}

/* Check order: client IDs, then usernames, each sorted bytewise. */
static int cmp_subject(const void *x, const void *y)
{
	const struct subject *a = *(const struct subject *const *)x, *b = *(const struct subject *const *)y;
	if (a->kind != b->kind)
		return b->kind - a->kind;
	size_t n = a->name_len < b->name_len ? a->name_len : b->name_len;
	int c = memcmp(a->name, b->name, n);
	return c ? c : (a->name_len > b->name_len) - (a->name_len < b->name_len);
}

static bool ctl_list(struct bdb *b, int argc, char **argv, struct buf *out)
{
	if (argc == 2) {
		size_t n = b->subjects.count, k = 0;
		const struct subject **v = xmalloc((n ? n : 1) * sizeof *v);
		hmap_for_each(&b->subjects, it) {
			v[k++] = container_of(it, struct subject, node);
		}
		qsort(v, k, sizeof *v, cmp_subject);
		buf_append_str(out, list_header);
		for (size_t i = 0; i < k; i++)
			list_subject(out, v[i]);
		list_subject(out, &b->all);
		free(v);
		return true;
	}
	int i = 2, kind;
	const char *name;
	if (!parse_who(argc, argv, &i, &kind, &name, out))
		return false;
	if (i != argc)
		return usage_fail(out, "too many arguments");
	buf_append_str(out, list_header);
	const struct subject *s = find(b, kind, name, strlen(name));
	if (s)
		list_subject(out, s);
	return true;
}

/* A rule index: 1..n, digits only. */
static bool parse_index(const char *s, size_t *out)
{
	size_t v = 0;
	if (!*s || strlen(s) > 9)
		return false;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return false;
		v = v * 10 + (size_t)(*p - '0');
	}
	*out = v;
	return v > 0;
}

static bool ctl_delete(struct bdb *b, int argc, char **argv, struct buf *out, bool *changed)
{
	int i = 2, kind;
	const char *name;
	if (!parse_who(argc, argv, &i, &kind, &name, out))
		return false;
	size_t idx = 0;
	if (i < argc) {
		if (!parse_index(argv[i], &idx)) {
			buf_printf(out, "error: INDEX must be a rule number (1, 2, ... as `rules list` shows), not \"%s\"\n",
				   argv[i]);
			return false;
		}
		i++;
	}
	if (i != argc)
		return usage_fail(out, "too many arguments");
	size_t name_len = strlen(name);
	const struct subject *s = find(b, kind, name, name_len);
	struct buf w = { 0 };
	who_text(&w, kind, name, name_len);
	bool ok = false;
	char err[512];
	if (!s || !s->n) {
		buf_printf(out, "error: no rules for %s\n", (const char *)w.data);
		goto out;
	}
	if (idx > s->n) {
		buf_printf(out, "error: %s has no rule %zu (it has %zu)\n", (const char *)w.data, idx, s->n);
		goto out;
	}
	size_t n = 0, before = s->n;
	struct brule *v = NULL;
	if (idx) {
		v = xmalloc(s->n * sizeof *v);
		for (size_t k = 0; k < s->n; k++)
			if (k + 1 != idx)
				brule_copy(&v[n++], &s->rules[k]);
	}
	struct buf desc = { 0 };
	if (idx)
		describe_rule(&desc, &s->rules[idx - 1]);
	buf_append(&desc, "", 1);
	if (!set_rules(b, kind, name, name_len, v, n, err, sizeof err)) {
		buf_printf(out, "error: %s\n", err);
		buf_free(&desc);
		goto out;
	}
	*changed = true;
	if (idx)
		buf_printf(out, "rule %zu of %s deleted: %s\n", idx, (const char *)w.data, (const char *)desc.data);
	else
		buf_printf(out, "%zu rule%s of %s deleted\n", before, before == 1 ? "" : "s", (const char *)w.data);
	buf_free(&desc);
	ok = true;
out:
	buf_free(&w);
	return ok;
}

static bool ctl_clear(struct bdb *b, struct buf *out, bool *changed)
{
	char err[512];
	size_t nu, nc, total = total_rules(b, &nu, &nc);
	if (!db_begin(b, err, sizeof err) || !db_exec(b, "DELETE FROM authz_rules", err, sizeof err) ||
	    !db_commit(b, err, sizeof err)) {
		db_exec(b, "ROLLBACK", NULL, 0);
		buf_printf(out, "error: %s\n", err);
		return false;
	}
	pthread_rwlock_wrlock(&b->lock);
	struct hmap_node *gone = hmap_steal(&b->subjects);
	struct acl *all_acl = b->all.acl;
	b->all.acl = NULL;
	pthread_rwlock_unlock(&b->lock);
	while (gone) {
		struct hmap_node *next = gone->next;
		subject_free(container_of(gone, struct subject, node));
		gone = next;
	}
	acl_free(all_acl);
	brules_free(b->all.rules, b->all.n);
	b->all.rules = NULL;
	b->all.n = 0;
	*changed = total > 0;
	buf_printf(out, "%zu rule%s deleted (%zu usernames, %zu client IDs, all)\n", total, total == 1 ? "" : "s", nu,
		   nc);
	return true;
}

/* ---- import (EMQX's API JSON) ---- */

struct imp_subject {
	int kind;
	char *name;
	size_t name_len;
	struct brule *rules;
	size_t n;
};

struct imp {
	struct imp_subject *v;
	size_t n;
};

static void imp_free(struct imp *im)
{
	for (size_t i = 0; i < im->n; i++) {
		free(im->v[i].name);
		brules_free(im->v[i].rules, im->v[i].n);
	}
	free(im->v);
}

static bool json_rule(const json_t *o, struct brule *r, char *why, size_t whylen)
{
	memset(r, 0, sizeof *r);
	r->retain = -1;
	if (!json_is_object(o)) {
		snprintf(why, whylen, "a rule must be an object {permission, action, topic, qos, retain}");
		return false;
	}
	const char *key;
	json_t *val;
	bool have_perm = false, have_act = false;
	json_object_foreach((json_t *)o, key, val) {
		if (strcmp(key, "permission") == 0) {
			if (!json_is_string(val) || !parse_permission(json_string_value(val), &r->allow)) {
				snprintf(why, whylen, "permission must be \"allow\" or \"deny\"");
				goto bad;
			}
			have_perm = true;
		} else if (strcmp(key, "action") == 0) {
			if (!json_is_string(val) || !parse_action(json_string_value(val), &r->actions)) {
				snprintf(why, whylen, "action must be \"publish\", \"subscribe\" or \"all\"");
				goto bad;
			}
			have_act = true;
		} else if (strcmp(key, "topic") == 0) {
			size_t tl = json_is_string(val) ? json_string_length(val) : 0;
			if (!json_is_string(val) || memchr(json_string_value(val), '\0', tl)) {
				snprintf(why, whylen, "topic must be a string");
				goto bad;
			}
			free(r->topic);
			r->topic = xstrndup(json_string_value(val), tl);
			r->topic_len = tl;
		} else if (strcmp(key, "qos") == 0) {
			uint8_t m = 0;
			size_t k;
			json_t *q;
			bool okq = json_is_array(val) ? json_array_size(val) > 0 : json_is_integer(val);
			if (json_is_integer(val)) {
				json_int_t x = json_integer_value(val);
				okq = x >= 0 && x <= 2;
				if (okq)
					m = (uint8_t)(1u << x);
			} else if (okq) {
				json_array_foreach(val, k, q) {
					json_int_t x = json_is_integer(q) ? json_integer_value(q) : -1;
					if (x < 0 || x > 2) {
						okq = false;
						break;
					}
					m |= (uint8_t)(1u << x);
				}
			}
			if (!okq) {
				snprintf(why, whylen, "qos must be a non-empty list of 0, 1 and 2");
				goto bad;
			}
			r->qos_mask = m == 7 ? 0 : m;
		} else if (strcmp(key, "retain") == 0) {
			if (json_is_boolean(val))
				r->retain = json_is_true(val) ? 1 : 0;
			else if (!json_is_string(val) || !parse_retain(json_string_value(val), &r->retain)) {
				snprintf(why, whylen, "retain must be true, false or \"all\"");
				goto bad;
			}
		} else {
			snprintf(why, whylen, "unknown key \"%.40s\" (expected permission, action, topic, qos, retain)",
				 key);
			goto bad;
		}
	}
	if (!have_perm || !have_act || !r->topic) {
		snprintf(why, whylen, "permission, action and topic are required");
		goto bad;
	}
	char err[256];
	if (!brule_valid(r, err, sizeof err)) {
		snprintf(why, whylen, "topic: %s", err);
		goto bad;
	}
	return true;
bad:
	brule_clear(r);
	return false;
}

/* One subject: {"username": "u", "rules": [...]}, {"clientid": "c", "rules": [...]} or
 * {"rules": [...]} (all). */
static bool json_subject(const json_t *o, struct imp_subject *s, char *why, size_t whylen)
{
	memset(s, 0, sizeof *s);
	if (!json_is_object(o)) {
		snprintf(why, whylen, "expected an object {\"username\"|\"clientid\": NAME, \"rules\": [...]}");
		return false;
	}
	const char *key;
	json_t *val, *rules = NULL;
	const json_t *who = NULL;
	s->kind = WHO_ALL;
	json_object_foreach((json_t *)o, key, val) {
		if (strcmp(key, "username") == 0 || strcmp(key, "clientid") == 0) {
			if (who) {
				snprintf(why, whylen, "give either username or clientid, not both");
				return false;
			}
			who = val;
			s->kind = key[0] == 'u' ? WHO_USERNAME : WHO_CLIENTID;
		} else if (strcmp(key, "rules") == 0) {
			rules = val;
		} else {
			snprintf(why, whylen, "unknown key \"%.40s\" (expected username or clientid, and rules)", key);
			return false;
		}
	}
	if (who) {
		size_t nl = json_is_string(who) ? json_string_length(who) : 0;
		if (!json_is_string(who) || nl == 0 || nl > BDB_MAX_NAME ||
		    memchr(json_string_value(who), '\0', nl)) {
			snprintf(why, whylen, "%s must be a non-empty string of at most %d bytes", who_names[s->kind],
				 BDB_MAX_NAME);
			return false;
		}
		s->name = xstrndup(json_string_value(who), nl);
		s->name_len = nl;
	} else {
		s->name = xstrdup("");
	}
	if (!json_is_array(rules)) {
		snprintf(why, whylen, "rules must be an array");
		goto bad;
	}
	size_t n = json_array_size(rules);
	s->rules = xcalloc(n ? n : 1, sizeof *s->rules);
	for (size_t i = 0; i < n; i++) {
		char rw[300];
		if (!json_rule(json_array_get(rules, i), &s->rules[i], rw, sizeof rw)) {
			snprintf(why, whylen, "rule %zu: %s", i + 1, rw);
			goto bad;
		}
		s->n++;
	}
	return true;
bad:
	free(s->name);
	brules_free(s->rules, s->n);
	memset(s, 0, sizeof *s);
	return false;
}

static bool import_parse(const struct bdb *b, const char *path, struct imp *im, struct buf *out)
{
	memset(im, 0, sizeof *im);
	struct stat st;
	if (stat(path, &st) != 0) {
		buf_printf(out, "error: %s: %s\n", path, strerror(errno));
		return false;
	}
	if (!S_ISREG(st.st_mode) || (uint64_t)st.st_size > BDB_IMPORT_MAX_BYTES) {
		buf_printf(out, "error: %s: not a regular file of at most %u MB\n", path, BDB_IMPORT_MAX_BYTES >> 20);
		return false;
	}
	json_error_t jerr;
	json_t *root = json_load_file(path, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		buf_printf(out, "error: %s:%d:%d: %s\n", path, jerr.line, jerr.column, jerr.text);
		return false;
	}
	bool ok = true;
	size_t n = json_is_array(root) ? json_array_size(root) : 1;
	if (!json_is_array(root) && !json_is_object(root)) {
		buf_printf(out, "error: %s: expected an array of {\"username\"|\"clientid\": NAME, \"rules\": [...]}"
				" or an object {\"rules\": [...]} (the rules for all)\n", path);
		ok = false;
		n = 0;
	}
	im->v = xcalloc(n ? n : 1, sizeof *im->v);
	for (size_t i = 0; ok && i < n; i++) {
		const json_t *o = json_is_array(root) ? json_array_get(root, i) : root;
		char why[400];
		struct imp_subject *s = &im->v[im->n];
		if (!json_subject(o, s, why, sizeof why)) {
			buf_printf(out, "error: %s: item %zu: %s\n", path, i + 1, why);
			ok = false;
			break;
		}
		im->n++;
		struct buf w = { 0 };
		who_text(&w, s->kind, s->name, s->name_len);
		for (size_t k = 0; k + 1 < im->n; k++) {
			if (im->v[k].kind == s->kind && im->v[k].name_len == s->name_len &&
			    memcmp(im->v[k].name, s->name, s->name_len) == 0) {
				buf_printf(out, "error: %s: item %zu: %s appears twice (items %zu and %zu)\n", path, i + 1,
					   (const char *)w.data, k + 1, i + 1);
				ok = false;
				break;
			}
		}
		if (ok && s->n > b->max_rules) {
			buf_printf(out, "error: %s: item %zu: %s has %zu rules, more than max_rules = %u\n", path, i + 1,
				   (const char *)w.data, s->n, b->max_rules);
			ok = false;
		}
		buf_free(&w);
	}
	json_decref(root);
	if (!ok)
		imp_free(im);
	return ok;
}

static bool ctl_import(struct bdb *b, int argc, char **argv, struct buf *out, bool *changed)
{
	if (argc != 3)
		return usage_fail(out, "rules import needs one FILE.json");
	const char *path = argv[2];
	struct imp im;
	if (!import_parse(b, path, &im, out))
		return false;
	char err[512];
	bool ok = db_begin(b, err, sizeof err);
	for (size_t i = 0; ok && i < im.n; i++)
		ok = persist(b, im.v[i].kind, im.v[i].name, im.v[i].name_len, im.v[i].rules, im.v[i].n, err,
			     sizeof err);
	if (ok) {
		ok = db_commit(b, err, sizeof err);
	} else {
		db_exec(b, "ROLLBACK", NULL, 0);
	}
	if (!ok) {
		buf_printf(out, "error: %s\n", err);
		imp_free(&im);
		return false;
	}
	size_t rules = 0;
	for (size_t i = 0; i < im.n; i++) {
		rules += im.v[i].n;
		apply(b, im.v[i].kind, im.v[i].name, im.v[i].name_len, im.v[i].rules, im.v[i].n);
		im.v[i].rules = NULL; /* apply took them */
		im.v[i].n = 0;
	}
	buf_printf(out, "%zu rule%s imported for %zu subject%s from %s (their previous rules replaced)\n", rules,
		   rules == 1 ? "" : "s", im.n, im.n == 1 ? "" : "s", path);
	*changed = im.n > 0;
	imp_free(&im);
	return true;
}

static bool bdb_ctl(struct authz_source *s, int argc, char **argv, struct buf *out, bool *changed)
{
	struct bdb *b = B(s);
	*changed = false;
	if (argc < 2 || strcmp(argv[0], "rules") != 0)
		return usage_fail(out, NULL);
	const char *op = argv[1];
	size_t start = out->len;
	bool ok;
	if (strcmp(op, "add") == 0)
		ok = ctl_add(b, argc, argv, out, changed);
	else if (strcmp(op, "list") == 0)
		ok = ctl_list(b, argc, argv, out);
	else if (strcmp(op, "delete") == 0)
		ok = ctl_delete(b, argc, argv, out, changed);
	else if (strcmp(op, "clear") == 0 && argc == 2)
		ok = ctl_clear(b, out, changed);
	else if (strcmp(op, "import") == 0)
		ok = ctl_import(b, argc, argv, out, changed);
	else
		return usage_fail(out, NULL);
	if (ok && *changed) {
		/* the answer, already escaped, is the audit line */
		size_t n = out->len - start;
		while (n && out->data[start + n - 1] == '\n')
			n--;
		log_info("authorization built_in_database: %.*s", (int)n, (const char *)out->data + start);
	}
	return ok;
}

static const struct authz_source_ops bdb_ops = {
	.type = "built_in_database",
	.async = false,
	.parse = bdb_parse,
	.free_config = bdb_free_config,
	.create = bdb_create,
	.destroy = bdb_destroy,
	.check = bdb_check,
	.ctl = bdb_ctl,
};

__attribute__((constructor)) static void bdb_register(void)
{
	authz_source_register(&bdb_ops);
}
