/* The built-in user database shared by `password_based + built_in_database`
 * (authn_builtin.c) and `scram + built_in_database` (authn_scram.c).
 *
 * Storage: <data_dir>/auth.db (SQLite, WAL, synchronous=FULL), one table `authn_users`
 * keyed by (authenticator instance id, user_id), so every authenticator instance —
 * global chain, per-listener chains, password and SCRAM — has its own user set.
 *
 * Memory: each open table (struct udb) holds its users in a hash map (SipHash of the
 * user id) under a read-write lock. Lookups (udb_get) run on worker threads under the
 * read lock and copy what they need; changes (udb_put, udb_delete, udb_set_superuser,
 * the ctl helper) run on the main thread: SQLite first, then the map under the write
 * lock, so the next lookup sees them. The SQLite connection is only used by the thread
 * that opened the table (the main thread).
 */
#ifndef BW_AUTHN_BUILTIN_DB_H
#define BW_AUTHN_BUILTIN_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/buf.h"
#include "core/err.h"

struct udb;

/* One user. Byte strings carry their length and a NUL after the last byte. */
struct udb_user {
	uint8_t *id;
	size_t id_len;
	bool is_superuser;
	/* password_based: the stored hash text (passwd.h) and its salt text */
	char *password_hash;
	size_t hash_len;
	uint8_t *salt;           /* password_based: salt text; scram: the raw salt */
	size_t salt_len;
	/* scram */
	uint8_t *stored_key;
	uint8_t *server_key;
	size_t key_len;
	unsigned iterations;
};

struct authn_env;

/* The key of an authenticator instance's user set: its id ("password_based:built_in_database")
 * for the global chain, "<listener id>/<id>" ("ssl:devices/password_based:built_in_database")
 * for a listener's own chain (found by the parsed config object authn_cfg). Fresh string. */
char *udb_instance_key(const struct authn_env *env, const void *authn_cfg, const char *id);

/* Open (create) <data_dir>/auth.db and load the users of authenticator `authn_id`.
 * NULL with err set on failure. Call on the main thread. */
struct udb *udb_open(const char *data_dir, const char *authn_id, char *err, size_t errlen);
/* Close the table and free the users. */
void udb_close(struct udb *db);
/* The authenticator id the table belongs to. */
const char *udb_id(const struct udb *db);
/* Number of users. Thread-safe. */
size_t udb_count(struct udb *db);

/* Copy user `id` into *out (free with udb_user_clear). Thread-safe (read lock). */
bool udb_get(struct udb *db, const void *id, size_t id_len, struct udb_user *out);
/* Free the fields of a user (not the struct) and zero it. */
void udb_user_clear(struct udb_user *u);
/* A deep copy of u into *out. */
void udb_user_copy(struct udb_user *out, const struct udb_user *u);

/* Store u (copied). replace = false: BW_ERR_EXISTS when the user exists; replace = true:
 * BW_ERR_NOTFOUND when it does not. BW_ERR_STORE (err set) when SQLite fails. */
enum bw_err udb_put(struct udb *db, const struct udb_user *u, bool replace, char *err, size_t errlen);
/* Delete a user: BW_OK, BW_ERR_NOTFOUND or BW_ERR_STORE. */
enum bw_err udb_delete(struct udb *db, const void *id, size_t id_len, char *err, size_t errlen);
/* Change the superuser flag: BW_OK, BW_ERR_NOTFOUND or BW_ERR_STORE. */
enum bw_err udb_set_superuser(struct udb *db, const void *id, size_t id_len, bool on, char *err, size_t errlen);
/* Batch several puts into one SQLite transaction (bootstrap). */
bool udb_begin(struct udb *db, char *err, size_t errlen);
bool udb_commit(struct udb *db, char *err, size_t errlen);

/* Every user id, sorted bytewise, with its superuser flag: fn(arg, user) per user, under
 * the read lock (fn must not call back into the table). */
void udb_for_each_sorted(struct udb *db, void (*fn)(void *arg, const struct udb_user *u), void *arg);

/* Build the credential fields of u (password_hash/salt, or scram keys) from a password.
 * false with err set on failure. Runs on the main thread (may be slow: bcrypt). */
typedef bool (*udb_make_cred_fn)(void *ctx, const uint8_t *password, size_t password_len, struct udb_user *u,
				 char *err, size_t errlen);

/* The `users ...` control commands (argv[0] = "users"), shared by both authenticators:
 *   users add USER_ID PASSWORD [--superuser]
 *   users delete USER_ID
 *   users list
 *   users passwd USER_ID PASSWORD
 *   users superuser USER_ID true|false
 * The answer (or the error) is appended to out; false on error. */
bool udb_ctl(struct udb *db, int argc, char **argv, struct buf *out, udb_make_cred_fn make, void *ctx);

/* Append s[0..n) to out with control characters (and DEL) as \xNN and backslash as \\,
 * for ctl output and log lines; other bytes (UTF-8) pass. */
void udb_escape(struct buf *out, const void *s, size_t n);

#endif
