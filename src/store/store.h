/* Persistent state in SQLite (WAL mode) under node.data_dir: retained messages and
 * persistent sessions (subscriptions, queued and in-flight deliveries, inbound QoS 2
 * packet ids awaiting PUBREL).
 *
 * Writes never block a loop thread: every store_* write call copies its arguments
 * into an operation queued for the store's own thread, which applies queued
 * operations in batches, one transaction per batch (group commit), in the order they
 * were queued (per calling thread). Reads happen once, at start-up, before the
 * workers run (store_load).
 *
 * Durability (durable_storage.fsync): ALWAYS = synchronous=FULL, one transaction per
 * operation; BATCH = synchronous=FULL, one transaction per batch; NEVER =
 * synchronous=OFF. store_sync() waits until everything queued so far is committed;
 * store_notify() calls back (on the store thread) once it is, without waiting. What each
 * setting guarantees: docs/DURABILITY.md.
 *
 * Messages are stored once (table of messages keyed by msg->store_id) and referenced
 * by deliveries; store_msg_ref() assigns the id on first use. The broker deletes a
 * message's row (store_msg_del) once its last in-memory reference is gone; anything a
 * crash or a dropped batch leaves behind is deleted at open (garbage collection).
 *
 * Within a batch the store thread writes only what the batch's end state needs: of the
 * operations on one delivery only the last is applied, none when the delivery was created
 * and deleted in the batch (a message acknowledged before its write came up), and a
 * message insert is skipped when nothing but the queued insert still refers to it.
 */
#ifndef BW_STORE_H
#define BW_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"

struct msg;
struct store;

/* Open (creating if needed) data_dir/bulwark.db; schema is created or migrated; a file
 * that is not a valid database is reported in err and NULL returned (never a crash).
 * Starts the store thread. */
struct store *store_open(const char *data_dir, enum cfg_fsync fsync, char *err, size_t errlen);
/* Flush everything queued, stop the thread, close the database. */
void store_close(struct store *s);
/* Block until every operation queued before this call is committed. Not for loop threads
 * except during shutdown. */
void store_sync(struct store *s);

/* ---- writes (asynchronous, callable from any thread) ---- */

/* Call fn(arg, durable) on the store thread once every operation queued before this call
 * (by any thread) is finished: committed, and synced unless fsync is NEVER, or dropped by a
 * write error. durable is false when a write error dropped one of the writes the calling
 * thread queued after its store_thread_ops() was `since` (disk full, I/O error: see
 * docs/DURABILITY.md). fn must be quick and thread-safe (typically a loop_post). Used to
 * hold back an acknowledgement until the writes its message caused are durable (group
 * commit: one commit releases every acknowledgement of its batch). */
void store_notify(struct store *s, uint64_t since, void (*fn)(void *arg, bool durable), void *arg);
/* How many write operations the calling thread has queued so far (on any store): compare
 * before and after some work to learn whether it caused writes. */
uint64_t store_thread_ops(void);

/* A session record. disconnected_at is wall-clock seconds (0 while connected). */
void store_session_put(struct store *s, const char *client_id, uint32_t expiry_interval, uint8_t proto_version,
		       int64_t disconnected_at);
/* Delete a session and everything that belongs to it (subscriptions, deliveries, rel ids). */
void store_session_del(struct store *s, const char *client_id);
/* A subscription (filter as the client sent it, including any $share/ prefix, after mountpoint). */
void store_sub_put(struct store *s, const char *client_id, const char *filter, uint8_t options, uint32_t sub_id);
void store_sub_del(struct store *s, const char *client_id, const char *filter);
/* Ensure the message is stored; assigns and returns msg->store_id (atomically, so
 * concurrent callers on different threads store it once). */
uint64_t store_msg_ref(struct store *s, struct msg *m);
/* Delete the stored message msg_id: nothing refers to it any more (see msg_set_release_hook). */
void store_msg_del(struct store *s, uint64_t msg_id);
/* A delivery owed to a session: queued or in flight. seq orders deliveries within the
 * session and identifies the record. flags are the broker's delivery flags (opaque here).
 * fresh: no record with this (client_id, seq) exists (a new delivery's first write), so a
 * delete later in the same batch cancels both. */
void store_dlv_put(struct store *s, const char *client_id, uint32_t seq, uint64_t msg_id, uint8_t qos, uint8_t flags,
		   uint32_t sub_id, uint16_t packet_id, bool fresh);
void store_dlv_del(struct store *s, const char *client_id, uint32_t seq);
/* Inbound QoS 2 packet id received (PUBREC sent) and released (PUBREL received). */
void store_rel_put(struct store *s, const char *client_id, uint16_t packet_id);
void store_rel_del(struct store *s, const char *client_id, uint16_t packet_id);
/* Retained message for a topic (replacing any previous one), or its removal. */
void store_retain_put(struct store *s, struct msg *m);
void store_retain_del(struct store *s, const char *topic, size_t topic_len);

/* ---- load at start-up (single-threaded, before workers run) ---- */

struct store_loader {
	void *arg;
	void (*retained)(void *arg, struct msg *m); /* takes the reference */
	void (*session)(void *arg, const char *client_id, uint32_t expiry_interval, uint8_t proto_version,
			int64_t disconnected_at);
	void (*sub)(void *arg, const char *client_id, const char *filter, uint8_t options, uint32_t sub_id);
	/* Deliveries arrive per session in seq order; m is a new reference (shared between
	 * deliveries of the same stored message), or NULL for a QoS 2 delivery whose message
	 * was already released (PUBREL stage). */
	void (*dlv)(void *arg, const char *client_id, uint32_t seq, struct msg *m, uint8_t qos, uint8_t flags,
		    uint32_t sub_id, uint16_t packet_id);
	void (*rel)(void *arg, const char *client_id, uint16_t packet_id);
};

/* Read everything back: sessions first, then their subscriptions, deliveries and rel ids,
 * then retained messages. Returns false (err filled) on a read error. */
bool store_load(struct store *s, const struct store_loader *ld, char *err, size_t errlen);

#endif
