/* Authentication chains (EMQX `authentication = [...]`, reference/emqx.md §4.1).
 *
 * One global chain and optional per-listener chains (`listeners.<type>.<name>.authentication`,
 * used instead of the global one, no fall-through). A chain runs its enabled
 * authenticators in order: ALLOW stops with success, DENY stops with a refusal, IGNORE
 * tries the next; when all ignore, the client is not authorized (CONNACK 0x87 / 5). An
 * empty chain lets everyone in (anonymous). A backend failure counts as IGNORE when
 * authentication_settings.ignore_backend_failures (the default), else as DENY 0x87.
 * Backend answers may be cached (authentication_settings.node_cache).
 *
 * Runs asynchronously: auth_start returns at once; the outcome is delivered on the
 * caller's loop. Nothing here blocks a loop thread.
 */
#ifndef BW_AUTH_H
#define BW_AUTH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/authn.h"
#include "config/cfgread.h"
#include "core/buf.h"

struct config;
struct cfg_listener;
struct loop;
struct auth_system;
struct auth_chain;
struct auth_attempt;
struct auth_chain_cfg;

/* ---- configuration (called by the schema) ---- */

/* Parse an `authentication` value: an array of authenticator objects or one object.
 * NULL with r's error set on failure; an empty array gives an empty chain config. */
struct auth_chain_cfg *auth_config_parse(struct cfg_reader *r, const struct hocon_member *m);
void auth_config_free(struct auth_chain_cfg *c);
/* Number of entries (enabled or not). */
size_t auth_config_count(const struct auth_chain_cfg *c);

/* ---- runtime ---- */

struct auth_outcome {
	enum authn_verdict verdict; /* AUTHN_ALLOW, AUTHN_DENY or AUTHN_CONTINUE */
	uint8_t rc;                 /* DENY: v5 reason code (0x86, 0x87, 0x89 server busy, 0x8C) */
	bool anonymous;             /* ALLOW by an empty chain */
	bool is_superuser;
	int64_t expire_at;          /* wall seconds, 0 = never */
	char *acl;                  /* owned by the receiver (free it) */
	int64_t acl_expire_at;      /* wall seconds after which acl no longer applies, 0 = never */
	char *client_attrs;         /* owned by the receiver */
	char *clientid_override;    /* owned by the receiver */
	uint8_t *auth_data;         /* owned by the receiver: enhanced authentication data to send */
	size_t auth_data_len;
	const char *by;             /* id of the authenticator that decided, or "chain" */
	char reason[200];
};

typedef void (*auth_done_fn)(void *arg, struct auth_outcome *o);

/* Build every authenticator of cfg (global and listener chains). NULL + err on failure. */
struct auth_system *auth_system_new(const struct config *cfg, const struct authn_env *env, char *err, size_t errlen);
void auth_system_free(struct auth_system *s);
/* The chain for listener l: its own when configured, else the global one. Never NULL. */
struct auth_chain *auth_chain_for(struct auth_system *s, const struct cfg_listener *l);
/* True when the chain has no enabled authenticator (anonymous clients are allowed). */
bool auth_chain_empty(const struct auth_chain *c);

/* Authenticate req (copied) through chain c; done(arg, outcome) runs later on loop l
 * (never inside auth_start), once per step, unless auth_cancel was called first (on l's
 * thread). The receiver owns the outcome's heap fields. Release the attempt with
 * auth_cancel when done with it (also after a final outcome). */
struct auth_attempt *auth_start(struct auth_chain *c, const struct authn_request *req, struct loop *l, auth_done_fn done,
				void *arg);
/* Enhanced authentication: the client answered an AUTHN_CONTINUE with AUTH data; done
 * runs again with the next outcome. */
void auth_step(struct auth_attempt *a, const uint8_t *data, size_t len);
/* Stop caring about an attempt (client gone). Safe after the final done: it frees. */
void auth_cancel(struct auth_attempt *a);

/* `bulwark ctl users ...` and other authenticator commands: routed to the first
 * authenticator (global chain, or `--listener ID`) that handles them. */
bool auth_ctl(struct auth_system *s, int argc, char **argv, struct buf *out);
/* Re-read authenticators' files (bootstrap) on SIGHUP/ctl reload; report appended. */
bool auth_reload(struct auth_system *s, struct buf *report);

#endif
