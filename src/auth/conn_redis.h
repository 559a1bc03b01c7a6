/* The Redis client (hiredis, blocking API) shared by the authenticator
 * (auth/authn_redis.c) and the authorization source (authz/source_redis.c), prefix
 * conn_redis_:
 *
 *   - the config pieces both read: `redis_type` (single; cluster and sentinel are refused
 *     as not supported yet), `ssl` (Debian 12's libhiredis 0.14 has no TLS: enable = true
 *     is refused), and splitting `cmd` into words;
 *   - connecting with the struct dbauth_common settings (AUTH [username] password, then
 *     SELECT database), with the deadline as connect and socket timeout;
 *   - running one command, each argument one bulk string, by a deadline;
 *   - the dbpool_backend callbacks close / healthy / interrupt.
 *
 * Connections and commands run on the pool threads (auth/dbpool.h). What a reply means
 * stays with the caller.
 */
#ifndef BW_CONN_REDIS_H
#define BW_CONN_REDIS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "auth/dbpool.h"
#include "auth/dbpool_authn.h"
#include "config/cfgread.h"

/* Split a command line into words: blanks separate; "double" (with \ escapes) and
 * 'single' quotes group. *out gets max + 1 slots, NULL-terminated (free with
 * conn_redis_free_words). False with err on an unterminated quote or more than max words
 * (nothing to free then). */
bool conn_redis_split_words(const char *s, size_t max, char ***out, size_t *n, char *err, size_t errlen);
/* Free n words and the array. NULL is ignored. */
void conn_redis_free_words(char **w, size_t n);
/* CFG_F_CUSTOM readers: `redis_type`; `ssl` (target starts with struct dbauth_common;
 * list it before the common "ssl" line). */
bool conn_redis_read_type(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool conn_redis_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target);
/* After reading: a username needs a password, then dbauth_common_check (port 6379, no
 * database name). m is the backend object. False with the error set. */
bool conn_redis_check(struct cfg_reader *r, const struct hocon_member *m, struct dbauth_common *c);

/* Connect to c's server by deadline_ms, AUTH when c has a password, SELECT database when
 * not 0. A connection for the other conn_redis_ calls, or NULL with err. */
void *conn_redis_connect(const struct dbauth_common *c, uint32_t database, uint64_t deadline_ms, char *err,
			 size_t errlen);
/* dbpool_backend.close / .healthy / .interrupt for conn_redis_connect's connections. */
void conn_redis_close(void *ctx, void *conn);
bool conn_redis_healthy(void *ctx, void *conn);
void conn_redis_interrupt(void *ctx, void *conn);

/* Send argv[0..argc) (lens[i] bytes each) on conn and read the reply by deadline_ms.
 * DBPOOL_OK with *rep (not an error reply; the caller freeReplyObject()s it), or
 * DBPOOL_TIMEOUT / DBPOOL_ERR_CONN (no reply) / DBPOOL_ERR_QUERY (an error reply) with
 * err filled and *rep NULL. */
enum dbpool_rc conn_redis_command(void *conn, size_t argc, char *const *argv, const size_t *lens, uint64_t deadline_ms,
				  redisReply **rep, char *err, size_t errlen);

#endif
