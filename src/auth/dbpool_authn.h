/* What the database-backed password authenticators (authn_redis.c, authn_pgsql.c,
 * authn_mysql.c) share, prefix dbauth_:
 *
 *   - the connector keys common to the three (server, database, username, password,
 *     pool_size, query_timeout, ssl { ... }, password_hash_algorithm) and their readers
 *     for cfgread field tables;
 *   - the request flow: IGNORE without a password (or during enhanced authentication),
 *     rendering the request's parameters on the loop thread, a job on the backend's pool
 *     (dbpool.h), the answer through authn_done from the pool thread;
 *   - the EMQX row contract (reference/emqx.md §4.3): a looked-up row (or Redis hash)
 *     becomes ALLOW / DENY 0x86 / DENY 0x87 / IGNORE; hash checking runs on the pool
 *     thread.
 */
#ifndef BW_DBPOOL_AUTHN_H
#define BW_DBPOOL_AUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/authn.h"
#include "auth/dbpool.h"
#include "auth/passwd.h"
#include "config/cfgread.h"

struct tmpl;

/* ssl { enable, verify, cacertfile, certfile, keyfile, server_name_indication } */
struct dbauth_ssl {
	bool enable;
	bool verify_peer;   /* verify = verify_peer (default verify_none) */
	char *cacertfile, *certfile, *keyfile;
	char *sni;          /* server_name_indication; NULL = the server's host name */
	bool sni_disable;   /* server_name_indication = disable */
	const struct hocon_member *enable_at, *sni_at; /* positions: valid while parsing only */
};

/* Keys common to the three backends. Must be the FIRST member of a backend's config
 * struct: the field readers below find it at the start of their target. */
struct dbauth_common {
	char *host;               /* server = "host[:port]" */
	uint16_t port;            /* 0 until read: the backend's default applies */
	char *database;
	char *username;
	char *password;           /* the secret itself (a "file://PATH" value is read at parse) */
	uint32_t pool_size;       /* default 8 */
	uint64_t query_timeout_ms; /* default 5s */
	struct dbauth_ssl ssl;
	struct passwd_cfg pw;     /* password_hash_algorithm */
	const struct hocon_member *server_at; /* valid while parsing only */
	char target[300];         /* "host:port" for log lines */
};

/* Set the defaults before reading. */
void dbauth_common_init(struct dbauth_common *c);
/* Free the strings. */
void dbauth_common_free(struct dbauth_common *c);
/* After reading: required keys and defaults. m is the authenticator object (for
 * file:line of "X is required"). */
bool dbauth_common_check(struct cfg_reader *r, const struct hocon_member *m, struct dbauth_common *c,
			 uint16_t default_port, bool need_database);

/* Field readers (CFG_F_CUSTOM) whose target starts with struct dbauth_common. */
bool dbauth_read_skip(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_server(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_password(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_ssl(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_hash_algo(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_pool_size(struct cfg_reader *r, const struct hocon_member *m, void *target);
bool dbauth_read_query_timeout(struct cfg_reader *r, const struct hocon_member *m, void *target);

/* The field-table lines every backend has (mechanism/backend/enable are the core's). */
#define DBAUTH_COMMON_FIELDS                                                                \
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_skip },                     \
	{ "backend", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_skip },                       \
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_skip },                        \
	{ "server", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_server },                      \
	{ "username", CFG_F_STRING, offsetof(struct dbauth_common, username), 0, 0, NULL, NULL }, \
	{ "password", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_password },                  \
	{ "pool_size", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_pool_size },                \
	{ "query_timeout", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_query_timeout },        \
	{ "ssl", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_ssl },                            \
	{ "password_hash_algorithm", CFG_F_CUSTOM, 0, 0, 0, NULL, dbauth_read_hash_algo },  \
	{ "auto_reconnect", CFG_F_IGNORED, 0, 0, 0, NULL, NULL }

/* Split "host", "host:port", "[v6]:port" or a bare IPv6 address. *port is left alone when
 * absent. False on an empty host or a bad port. *host is a fresh string. */
bool dbauth_parse_server(const char *s, char **host, uint16_t *port);

/* ---- the row contract ---- */

enum dbauth_vtype { DBAUTH_V_ABSENT, DBAUTH_V_NULL, DBAUTH_V_TEXT, DBAUTH_V_INT, DBAUTH_V_BOOL };

/* One value of a row: its type as the backend reported it and its text form
 * (DBAUTH_V_INT: decimal digits; DBAUTH_V_BOOL: "true"/"t"/"1" or anything else false). */
struct dbauth_value {
	enum dbauth_vtype type;
	const char *s;
	size_t len;
};

enum dbauth_field { DBAUTH_F_PASSWORD_HASH, DBAUTH_F_PASSWORD, DBAUTH_F_SALT, DBAUTH_F_IS_SUPERUSER,
		    DBAUTH_F_CLIENTID_OVERRIDE, DBAUTH_F_COUNT };

struct dbauth_row {
	bool found;                               /* a row (a non-empty Redis answer) exists */
	struct dbauth_value v[DBAUTH_F_COUNT];    /* DBAUTH_V_ABSENT when the row lacks the column */
};

/* The field named name[0..len) (case-insensitive: "password_hash", "salt", ...), or -1. */
int dbauth_field_of(const char *name, size_t len);
/* The canonical name of field f ("password_hash", ...). */
const char *dbauth_field_name(int f);
/* EMQX truthiness of is_superuser: true, "true", 1, "1" and integers >= 1. */
bool dbauth_truthy(const struct dbauth_value *v);
/* Decide: no row -> IGNORE; no hash (absent or NULL password_hash and password) -> DENY
 * 0x87; wrong password -> DENY 0x86; else ALLOW with is_superuser and clientid_override
 * (a fresh string when the row has a non-empty one). Runs passwd_check. */
void dbauth_row_eval(const struct dbauth_row *row, const struct passwd_cfg *pw, const uint8_t *password,
		     size_t password_len, struct authn_result *res);

/* ---- the request flow ---- */

/* An authenticator instance's shared part: embed first in the backend's instance. */
struct dbauth {
	char *id;
	const struct dbauth_common *cfg;
	struct dbpool *pool;
	struct tmpl **params;     /* rendered per request, in order */
	size_t nparams;
	bool undefined_is_null;   /* SQL: an undefined placeholder binds NULL; Redis: renders "" */
};

/* One request on its way through the pool. The backend's run() reads param[] and the
 * password, and fills res (with dbauth_row_eval). */
struct dbauth_job {
	struct authn_call *call;
	const struct dbauth *a;
	size_t nparams;
	char **param;             /* NUL-terminated copies; NULL = undefined (SQL NULL) */
	size_t *param_len;
	uint8_t *password;        /* copy, wiped on release */
	size_t password_len;
	struct authn_result res;
};

/* authenticate(): IGNORE / submit / DENY 0x89 when the backend's queue is full. */
void dbauth_authenticate(struct dbauth *a, struct authn_call *call);
/* dbpool_backend.done and .release for dbauth jobs. */
void dbauth_job_done(void *ctx, void *job, enum dbpool_rc rc, const char *err);
void dbauth_job_release(void *ctx, void *job);
/* Start the pool for a (a->cfg set): threads = pool_size, timeout = query_timeout. */
void dbauth_start_pool(struct dbauth *a, const struct dbpool_backend *be, void *ctx);
/* Stop the pool (pending requests are answered), free params and id. */
void dbauth_fini(struct dbauth *a);

/* Milliseconds left until deadline (at least 1). */
uint64_t dbauth_ms_left(uint64_t deadline_ms);

#endif
