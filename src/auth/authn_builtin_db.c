/* The built-in user database (authn_builtin_db.h): SQLite persistence plus an in-memory
 * hash map under a read-write lock, and the `users ...` control commands. */
#include "auth/authn_builtin_db.h"

#include <errno.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "auth/authn.h"
#include "config/config.h"
#include "core/alloc.h"
#include "core/fs.h"
#include "core/hash.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"

#define UDB_MAX_ID 65535 /* an MQTT string cannot be longer */

/* One table for every built-in authenticator: password-based rows use password_hash and
 * salt; SCRAM rows use salt, stored_key, server_key and iterations. */
static const char schema_sql[] =
	"CREATE TABLE IF NOT EXISTS authn_users("
	" authenticator TEXT NOT NULL,"
	" user_id BLOB NOT NULL,"
	" password_hash BLOB,"
	" salt BLOB,"
	" stored_key BLOB,"
	" server_key BLOB,"
	" iterations INTEGER NOT NULL DEFAULT 0,"
	" is_superuser INTEGER NOT NULL DEFAULT 0,"
	" created_at INTEGER NOT NULL DEFAULT 0,"
	" PRIMARY KEY (authenticator, user_id)"
	") WITHOUT ROWID";

enum {
	ST_INSERT,
	ST_UPDATE,
	ST_DELETE,
	ST_SUPER,
	ST__COUNT,
};

static const char *const stmt_sql[ST__COUNT] = {
	[ST_INSERT] = "INSERT INTO authn_users(authenticator, user_id, password_hash, salt, stored_key, server_key,"
		      " iterations, is_superuser, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
	[ST_UPDATE] = "UPDATE authn_users SET password_hash = ?3, salt = ?4, stored_key = ?5, server_key = ?6,"
		      " iterations = ?7, is_superuser = ?8 WHERE authenticator = ?1 AND user_id = ?2",
	[ST_DELETE] = "DELETE FROM authn_users WHERE authenticator = ?1 AND user_id = ?2",
	[ST_SUPER] = "UPDATE authn_users SET is_superuser = ?3 WHERE authenticator = ?1 AND user_id = ?2",
};

struct uent {
	struct hmap_node node;
	struct udb_user u;
};

struct udb {
	char *id;
	char *path;
	sqlite3 *db;
	sqlite3_stmt *st[ST__COUNT];
	pthread_rwlock_t lock; /* guards users */
	struct hmap users;
};

/* ---- users ---- */

static uint8_t *dup_bytes(const void *p, size_t n)
{
	uint8_t *d = xmalloc(n + 1);
	if (n)
		memcpy(d, p, n);
	d[n] = '\0';
	return d;
}

void udb_user_clear(struct udb_user *u)
{
	free(u->id);
	if (u->password_hash) {
		memset(u->password_hash, 0, u->hash_len);
		free(u->password_hash);
	}
	free(u->salt);
	if (u->stored_key) {
		memset(u->stored_key, 0, u->key_len);
		free(u->stored_key);
	}
	if (u->server_key) {
		memset(u->server_key, 0, u->key_len);
		free(u->server_key);
	}
	memset(u, 0, sizeof *u);
}

void udb_user_copy(struct udb_user *out, const struct udb_user *u)
{
	memset(out, 0, sizeof *out);
	out->id = dup_bytes(u->id, u->id_len);
	out->id_len = u->id_len;
	out->is_superuser = u->is_superuser;
	if (u->password_hash) {
		out->password_hash = (char *)dup_bytes(u->password_hash, u->hash_len);
		out->hash_len = u->hash_len;
	}
	if (u->salt) {
		out->salt = dup_bytes(u->salt, u->salt_len);
		out->salt_len = u->salt_len;
	}
	if (u->stored_key)
		out->stored_key = dup_bytes(u->stored_key, u->key_len);
	if (u->server_key)
		out->server_key = dup_bytes(u->server_key, u->key_len);
	out->key_len = u->key_len;
	out->iterations = u->iterations;
}

static struct uent *find(struct udb *db, const void *id, size_t len, uint64_t h)
{
	hmap_for_hash(&db->users, h, it) {
		struct uent *e = container_of(it, struct uent, node);
		if (e->u.id_len == len && memcmp(e->u.id, id, len) == 0)
			return e;
	}
	return NULL;
}

static void free_all(struct udb *db)
{
	struct hmap_node *n = hmap_steal(&db->users);
	while (n) {
		struct hmap_node *next = n->next;
		struct uent *e = container_of(n, struct uent, node);
		udb_user_clear(&e->u);
		free(e);
		n = next;
	}
}

/* ---- instances ---- */

char *udb_instance_key(const struct authn_env *env, const void *authn_cfg, const char *id)
{
	(void)env;
	(void)authn_cfg;
	/* The chain core qualifies listener chains' ids ("ssl:devices/password_based:..."),
	 * so the id alone keeps each chain's user set apart. */
	return xstrdup(id);
}

/* ---- SQLite ---- */

static void db_err(struct udb *db, char *err, size_t errlen, const char *what)
{
	snprintf(err, errlen, "%s: %s: %s", db->path, what, db->db ? sqlite3_errmsg(db->db) : "out of memory");
}

static void bind_opt_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	if (p)
		sqlite3_bind_blob64(st, i, n ? p : "", n, SQLITE_TRANSIENT);
	else
		sqlite3_bind_null(st, i);
}

static int run(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc;
}

static bool load_users(struct udb *db, char *err, size_t errlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db->db,
				    "SELECT user_id, password_hash, salt, stored_key, server_key, iterations, is_superuser"
				    " FROM authn_users WHERE authenticator = ?1",
				    -1, &st, NULL);
	if (rc != SQLITE_OK) {
		db_err(db, err, errlen, "reading users");
		return false;
	}
	sqlite3_bind_text(st, 1, db->id, -1, SQLITE_STATIC);
	while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
		struct uent *e = xcalloc(1, sizeof *e);
		struct udb_user *u = &e->u;
		u->id_len = (size_t)sqlite3_column_bytes(st, 0);
		u->id = dup_bytes(sqlite3_column_blob(st, 0), u->id_len);
		if (sqlite3_column_type(st, 1) != SQLITE_NULL) {
			u->hash_len = (size_t)sqlite3_column_bytes(st, 1);
			u->password_hash = (char *)dup_bytes(sqlite3_column_blob(st, 1), u->hash_len);
		}
		if (sqlite3_column_type(st, 2) != SQLITE_NULL) {
			u->salt_len = (size_t)sqlite3_column_bytes(st, 2);
			u->salt = dup_bytes(sqlite3_column_blob(st, 2), u->salt_len);
		}
		if (sqlite3_column_type(st, 3) != SQLITE_NULL && sqlite3_column_type(st, 4) != SQLITE_NULL &&
		    sqlite3_column_bytes(st, 3) == sqlite3_column_bytes(st, 4)) {
			u->key_len = (size_t)sqlite3_column_bytes(st, 3);
			u->stored_key = dup_bytes(sqlite3_column_blob(st, 3), u->key_len);
			u->server_key = dup_bytes(sqlite3_column_blob(st, 4), u->key_len);
		}
		int64_t it = sqlite3_column_int64(st, 5);
		u->iterations = it > 0 && it < 0x7fffffff ? (unsigned)it : 0;
		u->is_superuser = sqlite3_column_int64(st, 6) != 0;
		uint64_t h = hash_bytes(u->id, u->id_len);
		if (find(db, u->id, u->id_len, h)) { /* cannot happen with the primary key */
			udb_user_clear(u);
			free(e);
			continue;
		}
		hmap_insert(&db->users, &e->node, h);
	}
	sqlite3_finalize(st);
	if (rc != SQLITE_DONE) {
		db_err(db, err, errlen, "reading users");
		return false;
	}
	return true;
}

struct udb *udb_open(const char *data_dir, const char *authn_id, char *err, size_t errlen)
{
	if (!data_dir || !*data_dir) {
		snprintf(err, errlen, "no data_dir for the built-in database");
		return NULL;
	}
	if (!fs_make_dirs(data_dir, err, errlen))
		return NULL;
	struct udb *db = xcalloc(1, sizeof *db);
	db->id = xstrdup(authn_id);
	db->path = xasprintf("%s/auth.db", data_dir);
	pthread_rwlock_init(&db->lock, NULL);
	hmap_init(&db->users);
	int rc = sqlite3_open_v2(db->path, &db->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
				 NULL);
	if (rc != SQLITE_OK) {
		db_err(db, err, errlen, "cannot open");
		goto fail;
	}
	chmod(db->path, 0600);
	sqlite3_extended_result_codes(db->db, 1);
	sqlite3_busy_timeout(db->db, 5000);
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	sqlite3_db_config(db->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
	/* WAL (readers never block the writer), every commit synced: user changes are rare
	 * and must survive a crash. */
	rc = sqlite3_exec(db->db,
			  "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL; PRAGMA cell_size_check = ON;"
			  " PRAGMA mmap_size = 0",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		db_err(db, err, errlen, "cannot use");
		goto fail;
	}
	if (sqlite3_exec(db->db, schema_sql, NULL, NULL, NULL) != SQLITE_OK) {
		db_err(db, err, errlen, "cannot create the users table");
		goto fail;
	}
	for (int i = 0; i < ST__COUNT; i++) {
		if (sqlite3_prepare_v3(db->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &db->st[i], NULL) != SQLITE_OK) {
			db_err(db, err, errlen, "unexpected schema");
			goto fail;
		}
	}
	if (!load_users(db, err, errlen))
		goto fail;
	return db;
fail:
	udb_close(db);
	return NULL;
}

void udb_close(struct udb *db)
{
	if (!db)
		return;
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(db->st[i]);
	if (db->db)
		sqlite3_close(db->db);
	free_all(db);
	pthread_rwlock_destroy(&db->lock);
	free(db->id);
	free(db->path);
	free(db);
}

const char *udb_id(const struct udb *db)
{
	return db->id;
}

size_t udb_count(struct udb *db)
{
	pthread_rwlock_rdlock(&db->lock);
	size_t n = db->users.count;
	pthread_rwlock_unlock(&db->lock);
	return n;
}

bool udb_get(struct udb *db, const void *id, size_t id_len, struct udb_user *out)
{
	uint64_t h = hash_bytes(id, id_len);
	pthread_rwlock_rdlock(&db->lock);
	struct uent *e = find(db, id, id_len, h);
	if (e)
		udb_user_copy(out, &e->u);
	pthread_rwlock_unlock(&db->lock);
	return e != NULL;
}

static void bind_user(struct udb *db, sqlite3_stmt *st, const struct udb_user *u)
{
	sqlite3_bind_text(st, 1, db->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 2, u->id_len ? (const void *)u->id : "", u->id_len, SQLITE_STATIC);
	bind_opt_blob(st, 3, u->password_hash, u->hash_len);
	bind_opt_blob(st, 4, u->salt, u->salt_len);
	bind_opt_blob(st, 5, u->stored_key, u->key_len);
	bind_opt_blob(st, 6, u->server_key, u->key_len);
	sqlite3_bind_int64(st, 7, u->iterations);
	sqlite3_bind_int(st, 8, u->is_superuser ? 1 : 0);
}

enum bw_err udb_put(struct udb *db, const struct udb_user *u, bool replace, char *err, size_t errlen)
{
	uint64_t h = hash_bytes(u->id, u->id_len);
	/* Only the main thread changes the map: reading it here without the lock is safe. */
	struct uent *old = find(db, u->id, u->id_len, h);
	if (!replace && old)
		return BW_ERR_EXISTS;
	if (replace && !old)
		return BW_ERR_NOTFOUND;
	sqlite3_stmt *st = db->st[replace ? ST_UPDATE : ST_INSERT];
	bind_user(db, st, u);
	if (!replace)
		sqlite3_bind_int64(st, 9, (int64_t)time(NULL));
	if (run(st) != SQLITE_DONE) {
		db_err(db, err, errlen, replace ? "updating a user" : "adding a user");
		return BW_ERR_STORE;
	}
	struct uent *e = xcalloc(1, sizeof *e);
	udb_user_copy(&e->u, u);
	pthread_rwlock_wrlock(&db->lock);
	if (old)
		hmap_remove(&db->users, &old->node);
	hmap_insert(&db->users, &e->node, h);
	pthread_rwlock_unlock(&db->lock);
	if (old) {
		udb_user_clear(&old->u);
		free(old);
	}
	return BW_OK;
}

enum bw_err udb_delete(struct udb *db, const void *id, size_t id_len, char *err, size_t errlen)
{
	uint64_t h = hash_bytes(id, id_len);
	struct uent *old = find(db, id, id_len, h);
	if (!old)
		return BW_ERR_NOTFOUND;
	sqlite3_stmt *st = db->st[ST_DELETE];
	sqlite3_bind_text(st, 1, db->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 2, id_len ? id : "", id_len, SQLITE_STATIC);
	if (run(st) != SQLITE_DONE) {
		db_err(db, err, errlen, "deleting a user");
		return BW_ERR_STORE;
	}
	pthread_rwlock_wrlock(&db->lock);
	hmap_remove(&db->users, &old->node);
	pthread_rwlock_unlock(&db->lock);
	udb_user_clear(&old->u);
	free(old);
	return BW_OK;
}

enum bw_err udb_set_superuser(struct udb *db, const void *id, size_t id_len, bool on, char *err, size_t errlen)
{
	uint64_t h = hash_bytes(id, id_len);
	struct uent *e = find(db, id, id_len, h);
	if (!e)
		return BW_ERR_NOTFOUND;
	sqlite3_stmt *st = db->st[ST_SUPER];
	sqlite3_bind_text(st, 1, db->id, -1, SQLITE_STATIC);
	sqlite3_bind_blob64(st, 2, id_len ? id : "", id_len, SQLITE_STATIC);
	sqlite3_bind_int(st, 3, on ? 1 : 0);
	if (run(st) != SQLITE_DONE) {
		db_err(db, err, errlen, "updating a user");
		return BW_ERR_STORE;
	}
	pthread_rwlock_wrlock(&db->lock);
	e->u.is_superuser = on;
	pthread_rwlock_unlock(&db->lock);
	return BW_OK;
}

bool udb_begin(struct udb *db, char *err, size_t errlen)
{
	if (sqlite3_exec(db->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(db, err, errlen, "begin");
		return false;
	}
	return true;
}

bool udb_commit(struct udb *db, char *err, size_t errlen)
{
	if (sqlite3_exec(db->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
		db_err(db, err, errlen, "commit");
		sqlite3_exec(db->db, "ROLLBACK", NULL, NULL, NULL);
		return false;
	}
	return true;
}

static int cmp_user(const void *a, const void *b)
{
	const struct udb_user *x = *(const struct udb_user *const *)a, *y = *(const struct udb_user *const *)b;
	size_t n = x->id_len < y->id_len ? x->id_len : y->id_len;
	int c = memcmp(x->id, y->id, n);
	return c ? c : (x->id_len > y->id_len) - (x->id_len < y->id_len);
}

void udb_for_each_sorted(struct udb *db, void (*fn)(void *arg, const struct udb_user *u), void *arg)
{
	pthread_rwlock_rdlock(&db->lock);
	size_t n = db->users.count, k = 0;
	const struct udb_user **v = xmalloc((n ? n : 1) * sizeof *v);
	hmap_for_each(&db->users, it) {
		v[k++] = &container_of(it, struct uent, node)->u;
	}
	qsort(v, k, sizeof *v, cmp_user);
	for (size_t i = 0; i < k; i++)
		fn(arg, v[i]);
	pthread_rwlock_unlock(&db->lock);
	free(v);
}

/* ---- control commands ---- */

void udb_escape(struct buf *out, const void *s, size_t n)
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

static const char usage[] =
	"usage: users add USER_ID PASSWORD [--superuser]\n"
	"       users delete USER_ID\n"
	"       users list\n"
	"       users passwd USER_ID PASSWORD\n"
	"       users superuser USER_ID true|false\n";

static bool fail(struct buf *out, const char *fmt, const char *id)
{
	if (id) {
		struct buf e = { 0 };
		udb_escape(&e, id, strlen(id));
		buf_append(&e, "", 1);
		buf_printf(out, fmt, (const char *)e.data);
		buf_free(&e);
	} else {
		buf_append_str(out, fmt);
	}
	return false;
}

static void list_one(void *arg, const struct udb_user *u)
{
	struct buf *out = arg;
	udb_escape(out, u->id, u->id_len);
	buf_printf(out, "\t%s\n", u->is_superuser ? "true" : "false");
}

static bool check_id(const char *id, struct buf *out)
{
	size_t n = strlen(id);
	if (n == 0)
		return fail(out, "error: USER_ID must not be empty\n", NULL);
	if (n > UDB_MAX_ID)
		return fail(out, "error: USER_ID is longer than 65535 bytes\n", NULL);
	return true;
}

static bool check_password(const char *pw, struct buf *out)
{
	if (!*pw)
		return fail(out, "error: PASSWORD must not be empty\n", NULL);
	if (strlen(pw) > UDB_MAX_ID)
		return fail(out, "error: PASSWORD is longer than 65535 bytes\n", NULL);
	return true;
}

static bool store_failed(struct buf *out, const char *err)
{
	buf_printf(out, "error: %s\n", err);
	return false;
}

static bool parse_bool(const char *s, bool *v)
{
	if (strcmp(s, "true") == 0 || strcmp(s, "1") == 0) {
		*v = true;
		return true;
	}
	if (strcmp(s, "false") == 0 || strcmp(s, "0") == 0) {
		*v = false;
		return true;
	}
	return false;
}

static bool ctl_add(struct udb *db, int argc, char **argv, struct buf *out, udb_make_cred_fn make, void *ctx,
		    bool replace)
{
	const char *id = NULL, *pw = NULL;
	bool super = false;
	for (int i = 2; i < argc; i++) {
		if (!replace && strcmp(argv[i], "--superuser") == 0) {
			super = true;
		} else if (!id) {
			id = argv[i];
		} else if (!pw) {
			pw = argv[i];
		} else {
			buf_append_str(out, usage);
			return false;
		}
	}
	if (!id || !pw) {
		buf_append_str(out, usage);
		return false;
	}
	if (!check_id(id, out) || !check_password(pw, out))
		return false;
	struct udb_user u = { 0 };
	struct udb_user old = { 0 };
	size_t idlen = strlen(id);
	if (replace) {
		if (!udb_get(db, id, idlen, &old))
			return fail(out, "error: no user %s\n", id);
		super = old.is_superuser;
		udb_user_clear(&old);
	} else if (udb_get(db, id, idlen, &old)) {
		udb_user_clear(&old);
		return fail(out, "error: user %s already exists\n", id);
	}
	u.id = dup_bytes(id, idlen);
	u.id_len = idlen;
	u.is_superuser = super;
	char err[512] = "";
	if (!make(ctx, (const uint8_t *)pw, strlen(pw), &u, err, sizeof err)) {
		udb_user_clear(&u);
		return store_failed(out, err);
	}
	enum bw_err e = udb_put(db, &u, replace, err, sizeof err);
	udb_user_clear(&u);
	if (e == BW_ERR_EXISTS)
		return fail(out, "error: user %s already exists\n", id);
	if (e == BW_ERR_NOTFOUND)
		return fail(out, "error: no user %s\n", id);
	if (e != BW_OK)
		return store_failed(out, err);
	struct buf esc = { 0 };
	udb_escape(&esc, id, idlen);
	buf_append(&esc, "", 1);
	if (replace)
		buf_printf(out, "password of user %s changed (%s)\n", (const char *)esc.data, db->id);
	else
		buf_printf(out, "user %s added to %s%s\n", (const char *)esc.data, db->id, super ? " as superuser" : "");
	buf_free(&esc);
	return true;
}

bool udb_ctl(struct udb *db, int argc, char **argv, struct buf *out, udb_make_cred_fn make, void *ctx)
{
	if (argc < 2 || strcmp(argv[0], "users") != 0) {
		buf_append_str(out, usage);
		return false;
	}
	const char *op = argv[1];
	char err[512] = "";
	if (strcmp(op, "add") == 0)
		return ctl_add(db, argc, argv, out, make, ctx, false);
	if (strcmp(op, "passwd") == 0)
		return ctl_add(db, argc, argv, out, make, ctx, true);
	if (strcmp(op, "list") == 0 && argc == 2) {
		buf_append_str(out, "user_id\tis_superuser\n");
		udb_for_each_sorted(db, list_one, out);
		return true;
	}
	if (strcmp(op, "delete") == 0 && argc == 3) {
		if (!check_id(argv[2], out))
			return false;
		enum bw_err e = udb_delete(db, argv[2], strlen(argv[2]), err, sizeof err);
		if (e == BW_ERR_NOTFOUND)
			return fail(out, "error: no user %s\n", argv[2]);
		if (e != BW_OK)
			return store_failed(out, err);
		struct buf esc = { 0 };
		udb_escape(&esc, argv[2], strlen(argv[2]));
		buf_append(&esc, "", 1);
		buf_printf(out, "user %s deleted from %s\n", (const char *)esc.data, db->id);
		buf_free(&esc);
		return true;
	}
	if (strcmp(op, "superuser") == 0 && argc == 4) {
		bool on;
		if (!check_id(argv[2], out))
			return false;
		if (!parse_bool(argv[3], &on)) {
			buf_append_str(out, "error: expected true or false\n");
			buf_append_str(out, usage);
			return false;
		}
		enum bw_err e = udb_set_superuser(db, argv[2], strlen(argv[2]), on, err, sizeof err);
		if (e == BW_ERR_NOTFOUND)
			return fail(out, "error: no user %s\n", argv[2]);
		if (e != BW_OK)
			return store_failed(out, err);
		struct buf esc = { 0 };
		udb_escape(&esc, argv[2], strlen(argv[2]));
		buf_append(&esc, "", 1);
		buf_printf(out, "user %s: is_superuser = %s (%s)\n", (const char *)esc.data, on ? "true" : "false", db->id);
		buf_free(&esc);
		return true;
	}
	buf_append_str(out, usage);
	return false;
}
