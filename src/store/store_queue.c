/* Store writes: the public write calls turn their arguments into one struct store_op
 * each (one allocation: strings copied inline, messages referenced) and append it to
 * one FIFO under s->mu. The single FIFO keeps the order of every producing thread.
 *
 * The store thread takes the whole queue at once and applies it:
 *   BATCH, NEVER  one transaction (BEGIN IMMEDIATE ... COMMIT) for everything taken —
 *                 group commit: while one batch is being synced, the next accumulates;
 *   ALWAYS        one transaction per operation.
 * A notification (OP_NOTIFY, store_notify) is called once everything queued before it is
 * finished: BATCH, NEVER after the batch's commit, ALWAYS right after the operation before
 * it. After a batch the thread publishes done_seq (the enq_seq it took) and wakes
 * store_sync callers.
 *
 * Write errors (disk full, I/O error, ...) roll the transaction back and drop its
 * operations: the broker keeps serving from memory and what was dropped is simply
 * not persisted (it would be lost in a crash anyway). Notifications tell their caller
 * whether a write it queued was dropped (each op records its producing thread and that
 * thread's op count; fail_upto keeps, per thread, the count of its last dropped write),
 * so an acknowledgement never claims durability for a dropped write. The error is logged
 * at once, then at most once per STORE_ERR_LOG_INTERVAL_MS with the count of dropped
 * operations; recovery (a commit STORE_RECOVERED_AFTER_MS after the last failure) once
 * after a logged error; store_sync still returns. A
 * dropped batch can leave references behind it (a delivery whose message insert was
 * dropped, children of a dropped session row); store_load skips those and the garbage
 * collection at the next open deletes them. */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "broker/msg.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hash.h"
#include "core/log.h"
#include "store/store.h"
#include "store/store_int.h"

static const uint8_t empty_blob[1];

/* Write operations queued by this thread (store_thread_ops), and its producer number. */
static _Thread_local uint64_t tl_ops;
static _Thread_local uint32_t tl_producer;
static _Atomic uint32_t next_producer = 1;

static struct store_op *op_new(uint8_t kind, const char *s1, const char *s2, size_t s2len)
{
	size_t l1 = s1 ? strlen(s1) : 0;
	struct store_op *op = xmalloc(sizeof *op + l1 + 1 + s2len + 1);
	memset(op, 0, sizeof *op);
	op->kind = kind;
	if (l1)
		memcpy(op->str, s1, l1);
	op->str[l1] = 0;
	op->str2_off = (uint32_t)(l1 + 1);
	op->str2_len = (uint32_t)s2len;
	if (s2len)
		memcpy(op->str + l1 + 1, s2, s2len);
	op->str[l1 + 1 + s2len] = 0;
	return op;
}

/* Append under s->mu (held). */
static void append_locked(struct store *s, struct store_op *op)
{
	op->next = NULL;
	*s->tail = op;
	s->tail = &op->next;
	s->enq_seq++;
	if (!tl_producer)
		tl_producer = atomic_fetch_add_explicit(&next_producer, 1, memory_order_relaxed);
	op->producer = tl_producer;
	if (op->kind != OP_NOTIFY)
		op->tseq = ++tl_ops;
	if (s->idle) {
		s->idle = false; /* one wake-up per batch, not one per operation */
		pthread_cond_signal(&s->work_cv);
	}
}

static void enqueue(struct store *s, struct store_op *op)
{
	pthread_mutex_lock(&s->mu);
	append_locked(s, op);
	pthread_mutex_unlock(&s->mu);
}

uint64_t store_thread_ops(void)
{
	return tl_ops;
}

void store_notify(struct store *s, uint64_t since, void (*fn)(void *arg, bool durable), void *arg)
{
	struct store_op *op = op_new(OP_NOTIFY, NULL, NULL, 0);
	op->fn = fn;
	op->arg = arg;
	op->tseq = since;
	enqueue(s, op);
}

void store_session_put(struct store *s, const char *client_id, uint32_t expiry_interval, uint8_t proto_version,
		       int64_t disconnected_at)
{
	struct store_op *op = op_new(OP_SESSION_PUT, client_id, NULL, 0);
	op->u32a = expiry_interval;
	op->u8a = proto_version;
	op->i64 = disconnected_at;
	enqueue(s, op);
}

void store_session_del(struct store *s, const char *client_id)
{
	enqueue(s, op_new(OP_SESSION_DEL, client_id, NULL, 0));
}

void store_sub_put(struct store *s, const char *client_id, const char *filter, uint8_t options, uint32_t sub_id)
{
	struct store_op *op = op_new(OP_SUB_PUT, client_id, filter, strlen(filter));
	op->u8a = options;
	op->u32b = sub_id;
	enqueue(s, op);
}

void store_sub_del(struct store *s, const char *client_id, const char *filter)
{
	enqueue(s, op_new(OP_SUB_DEL, client_id, filter, strlen(filter)));
}

/* Give m an id if it has none. Called with s->mu held, so the insert the winner
 * appends precedes, in the queue, every operation of a thread that saw the id (that
 * thread reads the id, then takes s->mu to queue its delivery). The compare-and-swap
 * keeps the id unique even against a caller not holding s->mu (another store).
 * Returns true when this call assigned the id (the caller queues the insert). */
static bool assign_id_locked(struct store *s, struct msg *m)
{
	uint64_t expected = 0;
	uint64_t id = atomic_load_explicit(&s->next_id, memory_order_relaxed);
	if (!atomic_compare_exchange_strong_explicit(&m->store_id, &expected, id, memory_order_acq_rel,
						     memory_order_acquire))
		return false;
	atomic_store_explicit(&s->next_id, id + 1, memory_order_relaxed);
	return true;
}

uint64_t store_msg_ref(struct store *s, struct msg *m)
{
	uint64_t id = atomic_load_explicit(&m->store_id, memory_order_acquire);
	if (id)
		return id;
	struct store_op *op = op_new(OP_MSG_PUT, NULL, NULL, 0);
	pthread_mutex_lock(&s->mu);
	if (assign_id_locked(s, m)) {
		op->m = msg_ref(m);
		op->msg_id = atomic_load_explicit(&m->store_id, memory_order_relaxed);
		append_locked(s, op);
		op = NULL;
	}
	pthread_mutex_unlock(&s->mu);
	free(op); /* lost the race: another thread queued the insert */
	return atomic_load_explicit(&m->store_id, memory_order_acquire);
}

void store_dlv_put(struct store *s, const char *client_id, uint32_t seq, uint64_t msg_id, uint8_t qos, uint8_t flags,
		   uint32_t sub_id, uint16_t packet_id, bool fresh)
{
	struct store_op *op = op_new(OP_DLV_PUT, client_id, NULL, 0);
	op->fresh = fresh;
	op->u32a = seq;
	op->msg_id = msg_id;
	op->u8a = qos;
	op->u8b = flags;
	op->u32b = sub_id;
	op->packet_id = packet_id;
	enqueue(s, op);
}

void store_msg_del(struct store *s, uint64_t msg_id)
{
	struct store_op *op = op_new(OP_MSG_DEL, NULL, NULL, 0);
	op->msg_id = msg_id;
	enqueue(s, op);
}

void store_dlv_del(struct store *s, const char *client_id, uint32_t seq)
{
	struct store_op *op = op_new(OP_DLV_DEL, client_id, NULL, 0);
	op->u32a = seq;
	enqueue(s, op);
}

void store_rel_put(struct store *s, const char *client_id, uint16_t packet_id)
{
	struct store_op *op = op_new(OP_REL_PUT, client_id, NULL, 0);
	op->packet_id = packet_id;
	enqueue(s, op);
}

void store_rel_del(struct store *s, const char *client_id, uint16_t packet_id)
{
	struct store_op *op = op_new(OP_REL_DEL, client_id, NULL, 0);
	op->packet_id = packet_id;
	enqueue(s, op);
}

void store_retain_put(struct store *s, struct msg *m)
{
	struct store_op *op = op_new(OP_RETAIN_PUT, NULL, NULL, 0);
	op->m = msg_ref(m);
	pthread_mutex_lock(&s->mu);
	op->insert_msg = assign_id_locked(s, m);
	op->msg_id = atomic_load_explicit(&m->store_id, memory_order_relaxed);
	append_locked(s, op);
	pthread_mutex_unlock(&s->mu);
}

void store_retain_del(struct store *s, const char *topic, size_t topic_len)
{
	enqueue(s, op_new(OP_RETAIN_DEL, NULL, topic, topic_len));
}

/* ---- store thread ---- */

static int step(sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static void bind_blob(sqlite3_stmt *st, int i, const void *p, size_t n)
{
	sqlite3_bind_blob64(st, i, n ? p : empty_blob, n, SQLITE_STATIC);
}

static int del_by_client(struct store *s, enum store_stmt which, const char *client_id)
{
	sqlite3_stmt *st = s->st[which];
	sqlite3_bind_text(st, 1, client_id, -1, SQLITE_STATIC);
	return step(st);
}

static int put_msg(struct store *s, uint64_t id, const struct msg *m)
{
	sqlite3_stmt *st = s->st[ST_MSG_PUT];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	bind_blob(st, 2, msg_topic(m), m->topic_len);
	bind_blob(st, 3, msg_props(m), m->props_len);
	bind_blob(st, 4, msg_payload(m), m->payload_len);
	sqlite3_bind_int(st, 5, m->qos);
	sqlite3_bind_int(st, 6, m->retain);
	sqlite3_bind_int64(st, 7, m->expiry_at);
	return step(st);
}

static int apply(struct store *s, const struct store_op *op)
{
	const char *str2 = op->str + op->str2_off;
	sqlite3_stmt *st;
	int rc;
	switch ((enum store_op_kind)op->kind) {
	case OP_SESSION_PUT:
		st = s->st[ST_SESSION_PUT];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, op->u32a);
		sqlite3_bind_int(st, 3, op->u8a);
		sqlite3_bind_int64(st, 4, op->i64);
		return step(st);
	case OP_SESSION_DEL:
		if ((rc = del_by_client(s, ST_SESSION_DEL_SUBS, op->str)) != SQLITE_OK ||
		    (rc = del_by_client(s, ST_SESSION_DEL_DLVS, op->str)) != SQLITE_OK ||
		    (rc = del_by_client(s, ST_SESSION_DEL_RELS, op->str)) != SQLITE_OK)
			return rc;
		return del_by_client(s, ST_SESSION_DEL, op->str);
	case OP_SUB_PUT:
		st = s->st[ST_SUB_PUT];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, str2, (int)op->str2_len, SQLITE_STATIC);
		sqlite3_bind_int(st, 3, op->u8a);
		sqlite3_bind_int64(st, 4, op->u32b);
		return step(st);
	case OP_SUB_DEL:
		st = s->st[ST_SUB_DEL];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_text(st, 2, str2, (int)op->str2_len, SQLITE_STATIC);
		return step(st);
	case OP_MSG_PUT:
		return put_msg(s, op->msg_id, op->m);
	case OP_MSG_DEL:
		st = s->st[ST_MSG_DEL];
		sqlite3_bind_int64(st, 1, (sqlite3_int64)op->msg_id);
		return step(st);
	case OP_DLV_PUT:
		st = s->st[ST_DLV_PUT];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, op->u32a);
		sqlite3_bind_int64(st, 3, (sqlite3_int64)op->msg_id);
		sqlite3_bind_int(st, 4, op->u8a);
		sqlite3_bind_int(st, 5, op->u8b);
		sqlite3_bind_int64(st, 6, op->u32b);
		sqlite3_bind_int(st, 7, op->packet_id);
		return step(st);
	case OP_DLV_DEL:
		st = s->st[ST_DLV_DEL];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_int64(st, 2, op->u32a);
		return step(st);
	case OP_REL_PUT:
	case OP_REL_DEL:
		st = s->st[op->kind == OP_REL_PUT ? ST_REL_PUT : ST_REL_DEL];
		sqlite3_bind_text(st, 1, op->str, -1, SQLITE_STATIC);
		sqlite3_bind_int(st, 2, op->packet_id);
		return step(st);
	case OP_RETAIN_PUT:
		if (op->insert_msg && (rc = put_msg(s, op->msg_id, op->m)) != SQLITE_OK)
			return rc;
		st = s->st[ST_RETAIN_PUT];
		bind_blob(st, 1, msg_topic(op->m), op->m->topic_len);
		sqlite3_bind_int64(st, 2, (sqlite3_int64)op->msg_id);
		return step(st);
	case OP_RETAIN_DEL:
		st = s->st[ST_RETAIN_DEL];
		bind_blob(st, 1, str2, op->str2_len);
		return step(st);
	case OP_NOTIFY:
		return SQLITE_OK;
	}
	return SQLITE_MISUSE;
}

static const char *op_name(uint8_t kind)
{
	static const char *const names[] = {
		[OP_SESSION_PUT] = "session put", [OP_SESSION_DEL] = "session delete",
		[OP_SUB_PUT] = "subscription put", [OP_SUB_DEL] = "subscription delete",
		[OP_MSG_PUT] = "message insert", [OP_DLV_PUT] = "delivery put",
		[OP_DLV_DEL] = "delivery delete", [OP_REL_PUT] = "rel put",
		[OP_REL_DEL] = "rel delete", [OP_RETAIN_PUT] = "retained put",
		[OP_RETAIN_DEL] = "retained delete", [OP_NOTIFY] = "notify",
		[OP_MSG_DEL] = "message delete",
	};
	return kind < sizeof names / sizeof names[0] ? names[kind] : "?";
}

/* A transaction failed: count its n operations, log (rate-limited), roll back. */
static void txn_failed(struct store *s, const char *what, size_t n)
{
	s->dropped += n;
	s->dropped_unlogged += n;
	s->failing = true;
	uint64_t now = clock_mono_ms();
	s->failed_ms = now;
	if (!s->err_logged_ms || now - s->err_logged_ms >= STORE_ERR_LOG_INTERVAL_MS) {
		if (!s->err_reported)
			log_error("store: %s: %s failed: %s; %" PRIu64 " operations not persisted. The broker keeps"
				  " running from memory; QoS 1/2 publishes whose writes fail are not acknowledged as"
				  " stored (docs/DURABILITY.md). Reported at most every %u s",
				  s->path, what, sqlite3_errmsg(s->db), s->dropped_unlogged,
				  STORE_ERR_LOG_INTERVAL_MS / 1000);
		else
			log_error("store: %s: writes still fail (%s failed: %s); %" PRIu64 " operations not persisted"
				  " since the last report", s->path, what, sqlite3_errmsg(s->db), s->dropped_unlogged);
		s->err_reported = true;
		s->err_logged_ms = now;
		s->dropped_unlogged = 0;
	}
	if (!sqlite3_get_autocommit(s->db))
		step(s->st[ST_ROLLBACK]);
}

/* Apply ops [first, end) (n of them) in one transaction. On failure roll back and
 * drop them (see the top of the file). Returns whether they were committed. */
static bool run_txn(struct store *s, struct store_op *first, struct store_op *end, size_t n)
{
	const char *what = "begin";
	int rc = step(s->st[ST_BEGIN]);
	for (struct store_op *op = first; rc == SQLITE_OK && op != end; op = op->next) {
		if (op->skip)
			continue;
		s->applied++;
		rc = apply(s, op);
		if (rc != SQLITE_OK)
			what = op_name(op->kind);
	}
	if (rc == SQLITE_OK) {
		what = "commit";
		rc = step(s->st[ST_COMMIT]);
	}
	if (rc != SQLITE_OK) {
		txn_failed(s, what, n);
		return false;
	}
	if (s->failing && clock_mono_ms() - s->failed_ms >= STORE_RECOVERED_AFTER_MS) {
		if (s->err_reported)
			log_info("store: %s: writes succeed again (%" PRIu64 " operations were not persisted)",
				 s->path, s->dropped);
		s->err_reported = false;
		s->failing = false;
	}
	return true;
}

/* A write of op's producer was dropped. */
static void mark_dropped(struct store *s, const struct store_op *op)
{
	if (op->producer >= s->n_fail_upto) {
		size_t n = s->n_fail_upto ? s->n_fail_upto : 16;
		while (n <= op->producer)
			n *= 2;
		s->fail_upto = xrealloc(s->fail_upto, n * sizeof *s->fail_upto);
		memset(s->fail_upto + s->n_fail_upto, 0, (n - s->n_fail_upto) * sizeof *s->fail_upto);
		s->n_fail_upto = n;
	}
	s->fail_upto[op->producer] = op->tseq;
}

/* Call a notification: durable unless a write its producer queued after `since` was dropped. */
static void notify(struct store *s, const struct store_op *op)
{
	bool durable = op->producer >= s->n_fail_upto || s->fail_upto[op->producer] <= op->tseq;
	op->fn(op->arg, durable);
}

/* ---- batch compaction ----
 *
 * Only the end state of a batch matters (BATCH, NEVER: it is one transaction; ALWAYS: a
 * notification between two writes on one delivery row vouches for a state the later
 * write, already queued, supersedes). So of the operations on one delivery row only the
 * last is applied — each of them sets or deletes the whole row, and a session delete only
 * deletes — and none when the first was the row's creation and the last its deletion: a
 * QoS 1/2 message acknowledged before its writes came up costs no SQL. A message insert
 * is skipped when the queued insert holds the only reference left (every delivery and the
 * retained entry released it, and each queued the write that stops referring to it first);
 * its id is cleared, so releasing it queues no delete either. */

struct dlv_slot {
	struct store_op *first, *last;
};

static bool is_dlv_op(const struct store_op *op)
{
	return op->kind == OP_DLV_PUT || op->kind == OP_DLV_DEL;
}

static void skip_op(struct store *s, struct store_op *op)
{
	op->skip = true;
	s->skipped++;
}

static uint64_t dlv_key_hash(const struct store_op *op)
{
	return hash_bytes(op->str, strlen(op->str)) ^ ((uint64_t)op->u32a * 0x9e3779b97f4a7c15ull);
}

static void compact_batch(struct store *s, struct store_op *batch)
{
	size_t n = 0;
	for (struct store_op *op = batch; op; op = op->next) {
		if (op->kind == OP_MSG_PUT && atomic_load_explicit(&op->m->refs, memory_order_acquire) == 1) {
			skip_op(s, op);
			atomic_store_explicit(&op->m->store_id, 0, memory_order_relaxed);
		}
		n += is_dlv_op(op);
	}
	if (n < 2)
		return;
	size_t cap = 16;
	while (cap < 2 * n)
		cap *= 2;
	if (cap > s->n_dlv_slots) {
		free(s->dlv_slots);
		s->dlv_slots = xmalloc(cap * sizeof *s->dlv_slots);
		s->n_dlv_slots = cap;
	}
	struct dlv_slot *t = s->dlv_slots;
	memset(t, 0, cap * sizeof *t);
	for (struct store_op *op = batch; op; op = op->next) {
		if (!is_dlv_op(op))
			continue;
		size_t i = dlv_key_hash(op) & (cap - 1);
		while (t[i].first && (t[i].first->u32a != op->u32a || strcmp(t[i].first->str, op->str) != 0))
			i = (i + 1) & (cap - 1);
		if (t[i].first)
			skip_op(s, t[i].last); /* superseded by op */
		else
			t[i].first = op;
		t[i].last = op;
	}
	for (size_t i = 0; i < cap; i++)
		if (t[i].first && t[i].first->kind == OP_DLV_PUT && t[i].first->fresh && t[i].last->kind == OP_DLV_DEL)
			skip_op(s, t[i].last); /* created and deleted within the batch */
}

static void run_batch(struct store *s, struct store_op *batch)
{
	compact_batch(s, batch);
	if (s->fsync == CFG_FSYNC_ALWAYS) {
		/* Each notification as soon as everything before it is committed. */
		for (struct store_op *op = batch; op; op = op->next) {
			if (op->kind == OP_NOTIFY)
				notify(s, op);
			else if (!op->skip && !run_txn(s, op, op->next, 1))
				mark_dropped(s, op);
		}
		return;
	}
	size_t n = 0;
	for (struct store_op *op = batch; op; op = op->next)
		n += op->kind != OP_NOTIFY && !op->skip;
	bool ok = n == 0 || run_txn(s, batch, NULL, n);
	/* In queue order: a notification sees the drops of the writes queued before it only. */
	for (struct store_op *op = batch; op; op = op->next) {
		if (op->kind == OP_NOTIFY)
			notify(s, op);
		else if (!ok)
			mark_dropped(s, op);
	}
}

static void free_ops(struct store_op *op)
{
	while (op) {
		struct store_op *next = op->next;
		if (op->m)
			msg_unref(op->m);
		free(op);
		op = next;
	}
}

void *store_thread_main(void *arg)
{
	struct store *s = arg;
	pthread_mutex_lock(&s->mu);
	for (;;) {
		while (!s->head && !s->stop) {
			s->idle = true;
			pthread_cond_wait(&s->work_cv, &s->mu);
		}
		s->idle = false;
		if (!s->head)
			break; /* stopping, and the queue is drained */
		struct store_op *batch = s->head;
		uint64_t upto = s->enq_seq;
		s->head = NULL;
		s->tail = &s->head;
		pthread_mutex_unlock(&s->mu);

		run_batch(s, batch);
		free_ops(batch);

		pthread_mutex_lock(&s->mu);
		s->done_seq = upto;
		if (s->sync_waiters)
			pthread_cond_broadcast(&s->done_cv);
	}
	pthread_mutex_unlock(&s->mu);
	return NULL;
}
