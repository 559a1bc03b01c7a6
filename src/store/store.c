/* Store: opening (data dir, database file, integrity check, schema, garbage collection),
 * store_sync and store_close. The queue and the store thread are in store_queue.c, the
 * start-up reads in store_load.c. */
#include "store/store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/alloc.h"
#include "core/fs.h"
#include "core/log.h"
#include "store/store_int.h"

/* Schema version 1. Strings the client sent (client id, filter) are TEXT; message bytes
 * and retained topics are BLOBs so they round-trip byte for byte. Message ids are
 * rowids; seq, packet_id and the other small numbers are plain integers. */
static const char schema_v1[] =
	"CREATE TABLE sessions("
	" client_id TEXT NOT NULL PRIMARY KEY,"
	" expiry_interval INTEGER NOT NULL,"
	" proto_version INTEGER NOT NULL,"
	" disconnected_at INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE TABLE subs("
	" client_id TEXT NOT NULL,"
	" filter TEXT NOT NULL,"
	" options INTEGER NOT NULL,"
	" sub_id INTEGER NOT NULL,"
	" PRIMARY KEY (client_id, filter)"
	") WITHOUT ROWID;"
	"CREATE TABLE messages("
	" id INTEGER PRIMARY KEY,"
	" topic BLOB NOT NULL,"
	" props BLOB NOT NULL,"
	" payload BLOB NOT NULL,"
	" qos INTEGER NOT NULL,"
	" retain INTEGER NOT NULL,"
	" expiry_at INTEGER NOT NULL"
	");"
	"CREATE TABLE dlvs("
	" client_id TEXT NOT NULL,"
	" seq INTEGER NOT NULL,"
	" msg_id INTEGER NOT NULL," /* 0: QoS 2 delivery past PUBREC, message released */
	" qos INTEGER NOT NULL,"
	" flags INTEGER NOT NULL,"
	" sub_id INTEGER NOT NULL,"
	" packet_id INTEGER NOT NULL,"
	" PRIMARY KEY (client_id, seq)"
	") WITHOUT ROWID;"
	"CREATE INDEX dlvs_msg ON dlvs(msg_id);"
	"CREATE TABLE rels("
	" client_id TEXT NOT NULL,"
	" packet_id INTEGER NOT NULL,"
	" PRIMARY KEY (client_id, packet_id)"
	") WITHOUT ROWID;"
	"CREATE TABLE retained("
	" topic BLOB NOT NULL PRIMARY KEY,"
	" msg_id INTEGER NOT NULL"
	") WITHOUT ROWID;"
	"CREATE INDEX retained_msg ON retained(msg_id);";

static const char *const stmt_sql[ST__COUNT] = {
	[ST_SESSION_PUT] = "INSERT OR REPLACE INTO sessions(client_id, expiry_interval, proto_version, disconnected_at)"
			   " VALUES (?1, ?2, ?3, ?4)",
	[ST_SESSION_DEL] = "DELETE FROM sessions WHERE client_id = ?1",
	[ST_SESSION_DEL_SUBS] = "DELETE FROM subs WHERE client_id = ?1",
	[ST_SESSION_DEL_DLVS] = "DELETE FROM dlvs WHERE client_id = ?1",
	[ST_SESSION_DEL_RELS] = "DELETE FROM rels WHERE client_id = ?1",
	[ST_SUB_PUT] = "INSERT OR REPLACE INTO subs(client_id, filter, options, sub_id) VALUES (?1, ?2, ?3, ?4)",
	[ST_SUB_DEL] = "DELETE FROM subs WHERE client_id = ?1 AND filter = ?2",
	/* Ids are unique per process and never reused while rows exist (see seed_next_id),
	 * so an existing row with this id is this very message. */
	[ST_MSG_PUT] = "INSERT OR IGNORE INTO messages(id, topic, props, payload, qos, retain, expiry_at)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_MSG_DEL] = "DELETE FROM messages WHERE id = ?1",
	[ST_DLV_PUT] = "INSERT OR REPLACE INTO dlvs(client_id, seq, msg_id, qos, flags, sub_id, packet_id)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[ST_DLV_DEL] = "DELETE FROM dlvs WHERE client_id = ?1 AND seq = ?2",
	[ST_REL_PUT] = "INSERT OR IGNORE INTO rels(client_id, packet_id) VALUES (?1, ?2)",
	[ST_REL_DEL] = "DELETE FROM rels WHERE client_id = ?1 AND packet_id = ?2",
	[ST_RETAIN_PUT] = "INSERT OR REPLACE INTO retained(topic, msg_id) VALUES (?1, ?2)",
	[ST_RETAIN_DEL] = "DELETE FROM retained WHERE topic = ?1",
	[ST_BEGIN] = "BEGIN IMMEDIATE",
	[ST_COMMIT] = "COMMIT",
	[ST_ROLLBACK] = "ROLLBACK",
};

/* Garbage collection at open, in one transaction. Children of sessions that no longer
 * exist and references to messages that do not exist (both only possible after a
 * dropped batch, see store_queue.c) go first, then messages nothing refers to. */
static const char *const gc_sql[] = {
	"DELETE FROM subs WHERE client_id NOT IN (SELECT client_id FROM sessions)",
	"DELETE FROM dlvs WHERE client_id NOT IN (SELECT client_id FROM sessions)",
	"DELETE FROM rels WHERE client_id NOT IN (SELECT client_id FROM sessions)",
	"DELETE FROM dlvs WHERE msg_id <> 0 AND msg_id NOT IN (SELECT id FROM messages)",
	"DELETE FROM retained WHERE msg_id NOT IN (SELECT id FROM messages)",
	"DELETE FROM messages WHERE NOT EXISTS (SELECT 1 FROM dlvs WHERE dlvs.msg_id = messages.id)"
	" AND NOT EXISTS (SELECT 1 FROM retained WHERE retained.msg_id = messages.id)",
};

void store_errf(char *err, size_t errlen, const char *path, sqlite3 *db, const char *what)
{
	const char *msg = db ? sqlite3_errmsg(db) : "out of memory";
	int rc = db ? sqlite3_errcode(db) & 0xff : SQLITE_NOMEM;
	const char *hint = rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB ? " (" STORE_DAMAGED_HINT ")" : "";
	if (what)
		snprintf(err, errlen, "%s: %s: %s%s", path, what, msg, hint);
	else
		snprintf(err, errlen, "%s: %s%s", path, msg, hint);
}

int store_db_open(const char *path, int flags, sqlite3 **out)
{
	int rc = sqlite3_open_v2(path, out, flags, NULL);
	if (rc != SQLITE_OK)
		return rc;
	sqlite3 *db = *out;
	sqlite3_extended_result_codes(db, 1);
	sqlite3_busy_timeout(db, 5000);
	/* Hardening against a damaged or hostile file: no writable_schema tricks, no
	 * functions with side effects from the schema, extra b-tree cell checks, and no
	 * memory mapping (a file truncated under a mapping would raise SIGBUS). */
	sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
	sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
	rc = sqlite3_exec(db, "PRAGMA cell_size_check = ON; PRAGMA mmap_size = 0", NULL, NULL, NULL);
	return rc;
}

/* Run a statement that returns at most one row; its first column is stored in *out
 * (text copied into txt when given, integer otherwise). */
static int query1(sqlite3 *db, const char *sql, int64_t *out, char *txt, size_t txtlen)
{
	sqlite3_stmt *st = NULL;
	int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
	if (rc != SQLITE_OK)
		return rc;
	rc = sqlite3_step(st);
	if (rc == SQLITE_ROW) {
		if (out)
			*out = sqlite3_column_int64(st, 0);
		if (txt) {
			const unsigned char *t = sqlite3_column_text(st, 0);
			snprintf(txt, txtlen, "%s", t ? (const char *)t : "");
		}
		rc = SQLITE_OK;
	} else if (rc == SQLITE_DONE) {
		if (out)
			*out = 0;
		if (txt && txtlen)
			txt[0] = 0;
		rc = SQLITE_OK;
	}
	sqlite3_finalize(st);
	return rc;
}


/* Create the database file with mode 0600 before SQLite opens it (SQLite would use
 * 0644 minus umask; its -wal and -shm files copy the database file's mode). */
static bool precreate_db(const char *dir, const char *path, char *err, size_t errlen)
{
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		(void)fchmod(fd, 0600);
		close(fd);
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
		return true;
	}
	if (errno != EEXIST) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return false;
	}
	struct stat sb;
	if (stat(path, &sb) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		return false;
	}
	if (!S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		return false;
	}
	/* SQLite would only say "unable to open database file": name the cause. */
	fd = open(path, O_RDWR | O_CLOEXEC);
	if (fd < 0) {
		int e = errno;
		if (e == EACCES || e == EPERM || e == EROFS)
			snprintf(err, errlen, "%s: %s (the broker, running as uid %u, must be able to read and write it)",
				 path, strerror(e), (unsigned)geteuid());
		else
			snprintf(err, errlen, "%s: %s", path, strerror(e));
		return false;
	}
	close(fd);
	return true;
}

/* The first message id: above every id stored or referenced, so an id left dangling
 * by a dropped batch is never given to another message. */
static int seed_next_id(struct store *s)
{
	int64_t max = 0;
	int rc = query1(s->db,
			"SELECT max(coalesce((SELECT max(id) FROM messages), 0),"
			" coalesce((SELECT max(msg_id) FROM dlvs), 0),"
			" coalesce((SELECT max(msg_id) FROM retained), 0))",
			&max, NULL, 0);
	if (rc == SQLITE_OK)
		atomic_store(&s->next_id, (uint64_t)(max < 0 ? 0 : max) + 1);
	return rc;
}

static int collect_garbage(struct store *s)
{
	int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		return rc;
	int64_t n[sizeof gc_sql / sizeof gc_sql[0]];
	for (size_t i = 0; i < sizeof gc_sql / sizeof gc_sql[0]; i++) {
		rc = sqlite3_exec(s->db, gc_sql[i], NULL, NULL, NULL);
		if (rc != SQLITE_OK) {
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
			return rc;
		}
		n[i] = sqlite3_changes64(s->db);
	}
	rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	if (n[0] + n[1] + n[2] + n[3] + n[4])
		log_warn("store: removed %" PRId64 " subscriptions, %" PRId64 " deliveries and %" PRId64
			 " rel ids of missing sessions, %" PRId64 " deliveries and %" PRId64
			 " retained entries of missing messages",
			 n[0], n[1], n[2], n[3], n[4]);
	if (n[5])
		log_info("store: removed %" PRId64 " unreferenced messages", n[5]);
	return SQLITE_OK;
}

/* Create the schema on a new database or check the version of an existing one. */
static bool check_schema(struct store *s, char *err, size_t errlen)
{
	int64_t ver = 0;
	int rc = query1(s->db, "PRAGMA user_version", &ver, NULL, 0);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		return false;
	}
	if (ver == STORE_SCHEMA_VERSION)
		return true;
	if (ver != 0) {
		snprintf(err, errlen, "%s: schema version %" PRId64 " is not supported (this broker uses %d)",
			 s->path, ver, STORE_SCHEMA_VERSION);
		return false;
	}
	/* Version 0 is a new database; one that already has tables belongs to someone else
	 * and is left untouched. */
	int64_t ntables = 0;
	rc = query1(s->db, "SELECT count(*) FROM sqlite_schema", &ntables, NULL, 0);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		return false;
	}
	if (ntables) {
		snprintf(err, errlen, "%s: not a Bulwark database (no schema version, but tables exist)", s->path);
		return false;
	}
	char sql[sizeof schema_v1 + 128];
	snprintf(sql, sizeof sql, "BEGIN IMMEDIATE; %s PRAGMA user_version = %d; COMMIT;", schema_v1,
		 STORE_SCHEMA_VERSION);
	rc = sqlite3_exec(s->db, sql, NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, "creating schema");
		if (!sqlite3_get_autocommit(s->db))
			sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
		return false;
	}
	return true;
}

static void store_free(struct store *s)
{
	for (int i = 0; i < ST__COUNT; i++)
		sqlite3_finalize(s->st[i]);
	if (s->db && sqlite3_close(s->db) != SQLITE_OK)
		log_error("store: %s: close: %s", s->path, sqlite3_errmsg(s->db));
	pthread_cond_destroy(&s->work_cv);
	pthread_cond_destroy(&s->done_cv);
	pthread_mutex_destroy(&s->mu);
	free(s->fail_upto);
	free(s->dlv_slots);
	free(s->path);
	free(s);
}

struct store *store_open(const char *data_dir, enum cfg_fsync fsync, char *err, size_t errlen)
{
	if (!sqlite3_threadsafe()) {
		snprintf(err, errlen, "SQLite library is built without thread support");
		return NULL;
	}
	if (!data_dir || !*data_dir) {
		snprintf(err, errlen, "data_dir is empty");
		return NULL;
	}
	if (!fs_make_dirs(data_dir, err, errlen))
		return NULL;

	struct store *s = xcalloc(1, sizeof *s);
	s->path = xasprintf("%s/bulwark.db", data_dir);
	s->fsync = fsync;
	s->tail = &s->head;
	pthread_mutex_init(&s->mu, NULL);
	pthread_cond_init(&s->work_cv, NULL);
	pthread_cond_init(&s->done_cv, NULL);

	if (!precreate_db(data_dir, s->path, err, errlen))
		goto fail;
	int rc = store_db_open(s->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, &s->db);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		goto fail;
	}
	if (sqlite3_db_readonly(s->db, "main") == 1) {
		snprintf(err, errlen, "%s: database file is read-only (the broker must be able to write it)", s->path);
		goto fail;
	}
	/* The first statement that reads the file: a file that is not a database fails here
	 * with "file is not a database". */
	char txt[256];
	rc = query1(s->db, "PRAGMA journal_mode = WAL", NULL, txt, sizeof txt);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		goto fail;
	}
	if (strcmp(txt, "wal") != 0) {
		snprintf(err, errlen, "%s: cannot use WAL mode (journal_mode is %s)", s->path, txt);
		goto fail;
	}
	rc = query1(s->db, "PRAGMA quick_check(1)", NULL, txt, sizeof txt);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		goto fail;
	}
	if (strcmp(txt, "ok") != 0) {
		for (char *c = txt; *c; c++)
			if (*c == '\n' || *c == '\r')
				*c = ' ';
		static const char noise[] = "*** in database main *** ";
		const char *why = strncmp(txt, noise, sizeof noise - 1) == 0 ? txt + sizeof noise - 1 : txt;
		snprintf(err, errlen, "%s: database disk image is malformed: %s (" STORE_DAMAGED_HINT ")", s->path, why);
		goto fail;
	}
	/* synchronous: FULL syncs the WAL at every commit (ALWAYS, BATCH), OFF never syncs
	 * (NEVER). A WAL file that grew past 64 MiB during a burst is truncated back after
	 * the next checkpoint. */
	rc = sqlite3_exec(s->db,
			  fsync == CFG_FSYNC_NEVER ? "PRAGMA synchronous = OFF; PRAGMA journal_size_limit = 67108864"
						   : "PRAGMA synchronous = FULL; PRAGMA journal_size_limit = 67108864",
			  NULL, NULL, NULL);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		goto fail;
	}
	if (!check_schema(s, err, errlen))
		goto fail;
	for (int i = 0; i < ST__COUNT; i++) {
		rc = sqlite3_prepare_v3(s->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT, &s->st[i], NULL);
		if (rc != SQLITE_OK) {
			store_errf(err, errlen, s->path, s->db, "unexpected schema");
			goto fail;
		}
	}
	rc = collect_garbage(s);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, "garbage collection");
		goto fail;
	}
	rc = seed_next_id(s);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, s->db, NULL);
		goto fail;
	}

	/* The store thread takes no signals; they belong to the main thread. */
	sigset_t all, old;
	sigfillset(&all);
	pthread_sigmask(SIG_BLOCK, &all, &old);
	int e = pthread_create(&s->thread, NULL, store_thread_main, s);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (e != 0) {
		snprintf(err, errlen, "store: cannot start thread: %s", strerror(e));
		goto fail;
	}
	pthread_setname_np(s->thread, "bw-store");
	s->thread_started = true;
	return s;
fail:
	store_free(s);
	return NULL;
}

void store_sync(struct store *s)
{
	pthread_mutex_lock(&s->mu);
	uint64_t target = s->enq_seq;
	s->sync_waiters++;
	while (s->done_seq < target)
		pthread_cond_wait(&s->done_cv, &s->mu);
	s->sync_waiters--;
	pthread_mutex_unlock(&s->mu);
}

void store_close(struct store *s)
{
	if (!s)
		return;
	if (s->thread_started) {
		/* The thread drains the queue before it exits. */
		pthread_mutex_lock(&s->mu);
		s->stop = true;
		pthread_cond_signal(&s->work_cv);
		pthread_mutex_unlock(&s->mu);
		pthread_join(s->thread, NULL);
		s->thread_started = false;
	}
	int rc = sqlite3_exec(s->db, "PRAGMA wal_checkpoint(TRUNCATE)", NULL, NULL, NULL);
	if (rc != SQLITE_OK)
		log_error("store: %s: checkpoint: %s", s->path, sqlite3_errmsg(s->db));
	store_free(s);
}
