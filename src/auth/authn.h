/* Authenticators: the entries of an authentication chain (EMQX `authentication = [...]`),
 * one per (mechanism, backend): password_based + built_in_database | http | redis |
 * postgresql | mysql, jwt, scram + built_in_database, x509 (Bulwark extension).
 *
 * Each authenticator is a struct authn_ops registered at start-up (authn_register, from a
 * constructor in its own file). The chain core (auth.h) runs the configured entries in
 * order and owns everything around them: the order, ignore/deny/allow semantics, backend
 * failure policy, the node cache, CONNACK codes.
 *
 * Contract for an authenticator:
 *   - parse() reads its own config object with cfgread.h (file:line errors, unknown keys
 *     refused); create() builds the runtime instance (pools, caches) at start-up.
 *   - authenticate() answers asynchronously: it must never block the calling loop thread
 *     (no network, no slow hashing — use the HTTP client, its own backend threads, or the
 *     hashing pool), and must call authn_done(call, &result) exactly once, from any thread,
 *     possibly before authenticate() returns.
 *   - A password-based authenticator answers IGNORE when the client sent no password, and
 *     during enhanced authentication (request->auth_method set).
 *   - A backend that cannot answer (unreachable, timeout, unparsable answer) reports
 *     AUTHN_ERROR with a reason; the chain turns that into ignore or deny by configuration.
 *   - Credentials never appear in logs.
 */
#ifndef BW_AUTHN_H
#define BW_AUTHN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/cfgread.h"
#include "core/buf.h"

struct config;
struct http_client;
struct loop;
struct hashpool;
struct authn;
struct authn_call;
struct client_attrs;

/* What the client presented. Strings are NUL-terminated; username and password may
 * also hold NUL bytes, so use the lengths. Valid until authn_done is called. */
struct authn_request {
	const char *username;          /* NULL when CONNECT had none (after certificate mapping) */
	size_t username_len;
	const uint8_t *password;       /* NULL when CONNECT had none */
	size_t password_len;
	const char *client_id;
	const char *peerhost;          /* "1.2.3.4" / "::1" */
	uint16_t peerport;
	const char *cert_subject;      /* client certificate DN (identity.h format), NULL when none */
	const char *cert_common_name;  /* client certificate CN, NULL when none */
	bool cert_verified;            /* a verified client certificate (TLS, or a trusted PROXY v2 header) */
	const char *listener;          /* "ssl:default" */
	const struct client_attrs *attrs; /* mqtt.client_attrs_init results (${client_attrs.NAME}), or NULL */
	uint8_t proto_version;         /* 3, 4, 5 */
	const char *auth_method;       /* v5 enhanced authentication method, NULL when none */
	const uint8_t *auth_data;      /* v5 Authentication Data of the current CONNECT/AUTH step */
	size_t auth_data_len;
};

/* Value of a placeholder name ("username", "clientid", "password", "peerhost",
 * "peerport", "cert_subject", "cert_common_name", "listener", "client_attrs.NAME") for a request, or NULL
 * when undefined. *len receives the length. For template rendering (template.h). */
const char *authn_request_var(const struct authn_request *r, const char *name, size_t name_len, size_t *len,
			      char *scratch, size_t scratch_len);

enum authn_verdict {
	AUTHN_IGNORE,    /* not mine: try the next authenticator */
	AUTHN_ALLOW,
	AUTHN_DENY,      /* stop the chain: refused (rc says why) */
	AUTHN_ERROR,     /* backend failure: the chain applies authentication_settings.ignore_backend_failures */
	AUTHN_CONTINUE,  /* enhanced authentication: send AUTH 0x18 with auth_data and wait */
};

struct authn_result {
	enum authn_verdict verdict;
	uint8_t rc;                /* DENY: v5 reason code; 0 means 0x86 bad username or password */
	bool is_superuser;
	int64_t expire_at;         /* ALLOW: wall-clock seconds when the authentication expires, 0 = never */
	char *acl;                 /* ALLOW: JSON text of ACL rules granted (JWT claim, HTTP `acl`), or NULL */
	int64_t acl_expire_at;     /* ALLOW: wall seconds after which acl no longer applies, 0 = never */
	char *client_attrs;        /* ALLOW: JSON object of client attributes, or NULL */
	char *clientid_override;   /* ALLOW: new client ID, or NULL */
	uint8_t *auth_data;        /* CONTINUE / ALLOW in enhanced auth: Authentication Data to send */
	size_t auth_data_len;
	char reason[200];          /* short text for the log line (never credentials) */
};

/* Finish a call. Thread-safe; exactly once per authenticate()/auth_step(). The result's
 * heap fields (acl, client_attrs, clientid_override, auth_data: malloc'd) are taken over. */
void authn_done(struct authn_call *call, struct authn_result *res);
/* The request of a call. */
const struct authn_request *authn_call_request(const struct authn_call *call);
/* Per-call scratch slot for multi-step (enhanced) authentication; NULL initially. The
 * authenticator frees what it stores when the call ends (auth_end) or when it answers
 * ALLOW/DENY. Store one malloc'd block: when the authenticator is already destroyed
 * (shutdown), the core frees it with free(). */
void **authn_call_state(struct authn_call *call);
/* True once the client went away; an authenticator may stop early (it must still call
 * authn_done). */
bool authn_call_cancelled(const struct authn_call *call);

/* What the broker gives authenticators. */
struct authn_env {
	const struct config *cfg;
	struct http_client *http;  /* async HTTP (net/http.h) */
	struct loop *main_loop;    /* timers, refreshes */
	struct hashpool *hashpool; /* slow password hashing (hashpool.h) */
	const char *data_dir;      /* built-in database files */
};

struct authn_ops {
	const char *mechanism;     /* "password_based", "jwt", "scram", "x509" */
	const char *backend;       /* "built_in_database", "http", "redis", "postgresql", "mysql", or NULL */
	/* The backend answers over the network: its results may be cached by the node cache. */
	bool cacheable;
	/* Read the config object m->value (keys mechanism/backend/enable are read by the core
	 * and must be skipped). Returns the config, or NULL with r's error set. */
	void *(*parse)(struct cfg_reader *r, const struct hocon_member *m);
	void (*free_config)(void *cfg);
	/* Build the runtime instance; id is e.g. "password_based:redis". NULL + err on failure. */
	struct authn *(*create)(const void *cfg, const struct authn_env *env, const char *id, char *err, size_t errlen);
	void (*destroy)(struct authn *a);
	void (*authenticate)(struct authn *a, struct authn_call *call);
	/* Enhanced authentication only: the client's next AUTH arrived (request->auth_data
	 * updated); answer like authenticate. */
	void (*auth_step)(struct authn *a, struct authn_call *call);
	/* Enhanced authentication only: the call ended; free what authn_call_state holds. */
	void (*auth_end)(struct authn *a, struct authn_call *call);
	/* Optional control commands (`bulwark ctl users ...`): append the answer to out. */
	bool (*ctl)(struct authn *a, int argc, char **argv, struct buf *out);
	/* Optional: re-read files (bootstrap) on reload. */
	bool (*reload)(struct authn *a, char *err, size_t errlen);
};

/* Register an authenticator kind (call from a constructor in its file). */
void authn_register(const struct authn_ops *ops);
/* The registered kind for (mechanism, backend); backend may be NULL. */
const struct authn_ops *authn_find(const char *mechanism, const char *backend);

#endif
