/* Internals of the store shared by store.c (open/close, schema, garbage collection),
 * store_queue.c (write API, queue, store thread) and store_load.c (start-up reads).
 * Not for use outside src/store/ (unit tests excepted).
 *
 * Locking: s->mu protects the queue (head, tail, enq_seq, done_seq, stop, idle,
 * sync_waiters). The write connection s->db and the prepared statements belong to the
 * store thread while it runs (store_open and store_close use them before it starts
 * and after it is joined). store_load reads through a connection of its own. */
#ifndef BW_STORE_INT_H
#define BW_STORE_INT_H

#include <pthread.h>
#include <sqlite3.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct msg;

/* Schema version kept in PRAGMA user_version. */
#define STORE_SCHEMA_VERSION 1

/* Prepared write statements, prepared once at open. */
enum store_stmt {
	ST_SESSION_PUT,
	ST_SESSION_DEL,
	ST_SESSION_DEL_SUBS,
	ST_SESSION_DEL_DLVS,
	ST_SESSION_DEL_RELS,
	ST_SUB_PUT,
	ST_SUB_DEL,
	ST_MSG_PUT,
	ST_MSG_DEL,
	ST_DLV_PUT,
	ST_DLV_DEL,
	ST_REL_PUT,
	ST_REL_DEL,
	ST_RETAIN_PUT,
	ST_RETAIN_DEL,
	ST_BEGIN,
	ST_COMMIT,
	ST_ROLLBACK,
	ST__COUNT
};

enum store_op_kind {
	OP_SESSION_PUT,
	OP_SESSION_DEL,
	OP_SUB_PUT,
	OP_SUB_DEL,
	OP_MSG_PUT,     /* insert m as row m->store_id */
	OP_DLV_PUT,
	OP_DLV_DEL,
	OP_REL_PUT,
	OP_REL_DEL,
	OP_RETAIN_PUT,  /* retained row for m's topic; inserts m first when insert_msg */
	OP_RETAIN_DEL,
	OP_NOTIFY,      /* no write: call fn(arg) once the batch holding it is finished */
	OP_MSG_DEL,     /* delete message row msg_id */
};

/* One queued write: a single allocation holding copies of the string arguments
 * (client id, then filter or topic) in str[]; messages are referenced, not copied. */
struct store_op {
	struct store_op *next;
	uint8_t kind;         /* enum store_op_kind */
	uint8_t u8a, u8b;     /* proto_version | options | qos, flags */
	bool insert_msg;      /* OP_RETAIN_PUT: the message row is new */
	bool fresh;           /* OP_DLV_PUT: no row with this key existed */
	bool skip;            /* superseded within its batch: not applied */
	uint16_t packet_id;
	uint32_t u32a, u32b;  /* expiry_interval | seq ; sub_id */
	int64_t i64;          /* disconnected_at */
	uint64_t msg_id;
	struct msg *m;        /* OP_MSG_PUT, OP_RETAIN_PUT: a reference, released after writing */
	void (*fn)(void *arg, bool durable); /* OP_NOTIFY */
	void *arg;
	uint32_t producer;    /* the queuing thread (numbered from 1) */
	uint64_t tseq;        /* its store_thread_ops() after queuing this write; OP_NOTIFY: `since` */
	uint32_t str2_off;    /* offset of the second string in str */
	uint32_t str2_len;    /* its length (topics are not NUL-terminated by the caller) */
	char str[];
};

struct store {
	sqlite3 *db;                 /* write connection (store thread) */
	sqlite3_stmt *st[ST__COUNT];
	char *path;                  /* data_dir/bulwark.db */
	enum cfg_fsync fsync;
	_Atomic uint64_t next_id;    /* next message id */

	pthread_t thread;
	bool thread_started;
	pthread_mutex_t mu;
	pthread_cond_t work_cv;      /* store thread waits for work */
	pthread_cond_t done_cv;      /* store_sync waits for done_seq */
	struct store_op *head, **tail;
	uint64_t enq_seq;            /* operations queued so far */
	uint64_t done_seq;           /* operations finished (committed or dropped) */
	unsigned sync_waiters;
	bool idle, stop;

	/* Store thread only. */
	bool failing;                /* a transaction failed, and no recovery yet */
	bool err_reported;           /* an error line was logged since the last recovery line */
	uint64_t failed_ms;          /* when the last transaction failed (clock_mono_ms) */
	uint64_t err_logged_ms;      /* when the last error line was logged */
	uint64_t dropped;            /* operations dropped by write errors, in total */
	uint64_t dropped_unlogged;   /* of those, dropped since the last error line */
	uint64_t *fail_upto;         /* per producer: tseq of its last dropped write (0: none) */
	size_t n_fail_upto;
	uint64_t applied, skipped;   /* write operations applied / skipped by compaction */
	struct dlv_slot *dlv_slots;  /* batch compaction's table (store_queue.c) */
	size_t n_dlv_slots;
};

/* Write errors are logged at most once per this interval (then with a count). */
#define STORE_ERR_LOG_INTERVAL_MS 60000
/* Writes have recovered once a transaction commits this long after the last failure (a
 * nearly full disk takes small transactions and refuses big ones: not a recovery). */
#define STORE_RECOVERED_AFTER_MS 2000

/* What to do about a damaged database file, appended to the messages that report one. */
#define STORE_DAMAGED_HINT "move it aside to start with an empty store, or restore a backup"

/* Store thread entry point (store_queue.c). */
void *store_thread_main(void *arg);
/* Format "<path>: <what>: <sqlite message>" into err, followed by what to do when the
 * error says the file is damaged or not a database (STORE_DAMAGED_HINT). */
void store_errf(char *err, size_t errlen, const char *path, sqlite3 *db, const char *what);
/* Open a connection to path with the store's settings (extended codes, defensive mode,
 * busy timeout). Returns the SQLite result; *out is set (possibly to a handle that
 * must still be closed) as sqlite3_open_v2 does. */
int store_db_open(const char *path, int flags, sqlite3 **out);

#endif
