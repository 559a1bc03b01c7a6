/* Start-up reads. store_load first waits for the queue (store_sync), then reads through
 * a connection of its own inside one read transaction, so it sees one consistent
 * snapshot while the store thread stays free to write; the loader's callbacks may
 * therefore call any store_* function, store_sync included.
 *
 * Messages are rebuilt once per stored id (an id -> msg map for the duration of the
 * load) and shared between the deliveries and retained entries that refer to them; a
 * rebuilt message carries its store_id, so storing it again queues no second insert.
 *
 * Expiry: deliveries are passed on with their message's expiry_at whatever its value
 * (a delivery already in flight must be completed even past expiry; the broker drops
 * expired queued ones as it does at run time). Retained messages that have expired are
 * not passed on; their retained entry is deleted (queued) and the message is collected
 * at the next open. Deliveries whose message row is missing (possible only after a
 * dropped write batch) are skipped with a warning. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "broker/msg.h"
#include "core/alloc.h"
#include "core/clock.h"
#include "core/hmap.h"
#include "core/list.h"
#include "core/log.h"
#include "store/store.h"
#include "store/store_int.h"

enum load_stmt { LS_SESSIONS, LS_SUBS, LS_DLVS, LS_RELS, LS_RETAINED, LS_MSG, LS__COUNT };

static const char *const load_sql[LS__COUNT] = {
	[LS_SESSIONS] = "SELECT client_id, expiry_interval, proto_version, disconnected_at FROM sessions"
			" ORDER BY client_id",
	[LS_SUBS] = "SELECT client_id, filter, options, sub_id FROM subs"
		    " WHERE client_id IN (SELECT client_id FROM sessions) ORDER BY client_id, filter",
	[LS_DLVS] = "SELECT client_id, seq, msg_id, qos, flags, sub_id, packet_id FROM dlvs"
		    " WHERE client_id IN (SELECT client_id FROM sessions) ORDER BY client_id, seq",
	[LS_RELS] = "SELECT client_id, packet_id FROM rels"
		    " WHERE client_id IN (SELECT client_id FROM sessions) ORDER BY client_id, packet_id",
	[LS_RETAINED] = "SELECT msg_id FROM retained ORDER BY topic",
	[LS_MSG] = "SELECT topic, props, payload, qos, retain, expiry_at FROM messages WHERE id = ?1",
};

struct loaded_msg {
	struct hmap_node node;
	uint64_t id;
	struct msg *m; /* the map's reference */
};

struct load {
	struct store *s;
	sqlite3 *db;
	sqlite3_stmt *st[LS__COUNT];
	struct hmap msgs;
	char *err;
	size_t errlen;
};

static uint64_t id_hash(uint64_t id)
{
	id ^= id >> 33;
	id *= 0xff51afd7ed558ccdull;
	id ^= id >> 33;
	return id;
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	const unsigned char *t = sqlite3_column_text(st, i);
	return t ? (const char *)t : "";
}

static bool invalid(struct load *l, const char *table, int64_t id)
{
	snprintf(l->err, l->errlen,
		 "%s: invalid row in %s (%" PRId64 "): database content is damaged (" STORE_DAMAGED_HINT ")",
		 l->s->path, table, id);
	return false;
}

/* Find or rebuild message id. *out is NULL (and true returned) when no such row exists;
 * false means a read error (err filled). The map keeps the reference. */
static bool get_msg(struct load *l, uint64_t id, struct msg **out)
{
	uint64_t h = id_hash(id);
	hmap_for_hash(&l->msgs, h, it) {
		struct loaded_msg *lm = container_of(it, struct loaded_msg, node);
		if (lm->id == id) {
			*out = lm->m;
			return true;
		}
	}
	*out = NULL;
	sqlite3_stmt *st = l->st[LS_MSG];
	sqlite3_bind_int64(st, 1, (sqlite3_int64)id);
	int rc = sqlite3_step(st);
	bool ok = true;
	if (rc == SQLITE_ROW) {
		const void *topic = sqlite3_column_blob(st, 0);
		size_t topic_len = (size_t)sqlite3_column_bytes(st, 0);
		const void *props = sqlite3_column_blob(st, 1);
		size_t props_len = (size_t)sqlite3_column_bytes(st, 1);
		const void *payload = sqlite3_column_blob(st, 2);
		size_t payload_len = (size_t)sqlite3_column_bytes(st, 2);
		int64_t qos = sqlite3_column_int64(st, 3);
		int64_t retain = sqlite3_column_int64(st, 4);
		int64_t expiry_at = sqlite3_column_int64(st, 5);
		if (sqlite3_errcode(l->db) == SQLITE_NOMEM) {
			store_errf(l->err, l->errlen, l->s->path, l->db, NULL);
			ok = false;
		} else if (topic_len == 0 || topic_len > UINT16_MAX || qos < 0 || qos > 2 || retain < 0 || retain > 1 ||
			   expiry_at < 0) {
			ok = invalid(l, "messages", (int64_t)id);
		} else {
			struct msg *m = msg_new(topic, topic_len, props, props_len, payload, payload_len,
						(uint8_t)qos, retain != 0);
			m->expiry_at = expiry_at;
			atomic_store(&m->store_id, id);
			struct loaded_msg *lm = xmalloc(sizeof *lm);
			lm->id = id;
			lm->m = m;
			hmap_insert(&l->msgs, &lm->node, h);
			*out = m;
		}
	} else if (rc != SQLITE_DONE) {
		store_errf(l->err, l->errlen, l->s->path, l->db, NULL);
		ok = false;
	}
	sqlite3_reset(st);
	return ok;
}

/* Step st; true with *row set while rows come, false on error (err filled). */
static bool next_row(struct load *l, sqlite3_stmt *st, bool *row)
{
	int rc = sqlite3_step(st);
	*row = rc == SQLITE_ROW;
	if (rc == SQLITE_ROW || rc == SQLITE_DONE)
		return true;
	store_errf(l->err, l->errlen, l->s->path, l->db, NULL);
	return false;
}

static bool load_sessions(struct load *l, const struct store_loader *ld)
{
	sqlite3_stmt *st = l->st[LS_SESSIONS];
	bool row;
	while (next_row(l, st, &row)) {
		if (!row)
			return true;
		if (ld->session)
			ld->session(ld->arg, col_text(st, 0), (uint32_t)sqlite3_column_int64(st, 1),
				    (uint8_t)sqlite3_column_int(st, 2), sqlite3_column_int64(st, 3));
	}
	return false;
}

static bool load_subs(struct load *l, const struct store_loader *ld)
{
	sqlite3_stmt *st = l->st[LS_SUBS];
	bool row;
	while (next_row(l, st, &row)) {
		if (!row)
			return true;
		if (ld->sub)
			ld->sub(ld->arg, col_text(st, 0), col_text(st, 1), (uint8_t)sqlite3_column_int(st, 2),
				(uint32_t)sqlite3_column_int64(st, 3));
	}
	return false;
}

static bool load_dlvs(struct load *l, const struct store_loader *ld)
{
	sqlite3_stmt *st = l->st[LS_DLVS];
	uint64_t missing = 0;
	bool row;
	while (next_row(l, st, &row)) {
		if (!row) {
			if (missing)
				log_warn("store: skipped %" PRIu64 " deliveries whose message was not stored", missing);
			return true;
		}
		int64_t msg_id = sqlite3_column_int64(st, 2);
		int64_t qos = sqlite3_column_int64(st, 3);
		if (qos < 0 || qos > 2 || msg_id < 0)
			return invalid(l, "dlvs", sqlite3_column_int64(st, 1));
		struct msg *m = NULL;
		if (msg_id) {
			if (!get_msg(l, (uint64_t)msg_id, &m))
				return false;
			if (!m) {
				missing++;
				continue;
			}
		}
		if (ld->dlv)
			ld->dlv(ld->arg, col_text(st, 0), (uint32_t)sqlite3_column_int64(st, 1), m ? msg_ref(m) : NULL,
				(uint8_t)qos, (uint8_t)sqlite3_column_int(st, 4), (uint32_t)sqlite3_column_int64(st, 5),
				(uint16_t)sqlite3_column_int(st, 6));
	}
	return false;
}

static bool load_rels(struct load *l, const struct store_loader *ld)
{
	sqlite3_stmt *st = l->st[LS_RELS];
	bool row;
	while (next_row(l, st, &row)) {
		if (!row)
			return true;
		if (ld->rel)
			ld->rel(ld->arg, col_text(st, 0), (uint16_t)sqlite3_column_int(st, 1));
	}
	return false;
}

static bool load_retained(struct load *l, const struct store_loader *ld)
{
	sqlite3_stmt *st = l->st[LS_RETAINED];
	int64_t now = clock_wall_s();
	bool row;
	while (next_row(l, st, &row)) {
		if (!row)
			return true;
		int64_t msg_id = sqlite3_column_int64(st, 0);
		struct msg *m = NULL;
		if (msg_id > 0 && !get_msg(l, (uint64_t)msg_id, &m))
			return false;
		if (!m)
			continue; /* dangling entry; removed by the next open's garbage collection */
		if (msg_expired(m, now)) {
			store_retain_del(l->s, msg_topic(m), m->topic_len);
			continue;
		}
		if (ld->retained)
			ld->retained(ld->arg, msg_ref(m));
	}
	return false;
}

bool store_load(struct store *s, const struct store_loader *ld, char *err, size_t errlen)
{
	struct load l = { .s = s, .err = err, .errlen = errlen };
	hmap_init(&l.msgs);
	bool ok = false;

	store_sync(s);
	int rc = store_db_open(s->path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, &l.db);
	if (rc != SQLITE_OK) {
		store_errf(err, errlen, s->path, l.db, NULL);
		goto out;
	}
	for (int i = 0; i < LS__COUNT; i++) {
		if (sqlite3_prepare_v2(l.db, load_sql[i], -1, &l.st[i], NULL) != SQLITE_OK) {
			store_errf(err, errlen, s->path, l.db, NULL);
			goto out;
		}
	}
	if (sqlite3_exec(l.db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) {
		store_errf(err, errlen, s->path, l.db, NULL);
		goto out;
	}
	ok = load_sessions(&l, ld) && load_subs(&l, ld) && load_dlvs(&l, ld) && load_rels(&l, ld) &&
	     load_retained(&l, ld);
	sqlite3_exec(l.db, "ROLLBACK", NULL, NULL, NULL);
out:
	for (size_t b = 0; l.msgs.buckets && b <= l.msgs.mask; b++) {
		struct hmap_node *it = l.msgs.buckets[b];
		while (it) {
			struct hmap_node *next = it->next;
			struct loaded_msg *lm = container_of(it, struct loaded_msg, node);
			msg_unref(lm->m);
			free(lm);
			it = next;
		}
	}
	hmap_destroy(&l.msgs);
	for (int i = 0; i < LS__COUNT; i++)
		sqlite3_finalize(l.st[i]);
	if (l.db)
		sqlite3_close(l.db);
	return ok;
}
