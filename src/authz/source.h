/* Authorization sources: the entries of `authorization.sources = [...]` (file,
 * built_in_database, redis, postgresql, mysql, http). Each kind is a struct
 * authz_source_ops registered from a constructor in its own file (authz_source_register);
 * the core (authz.c) owns the order, caching, no_match and what a verdict does.
 *
 * Contract for a source:
 *   - parse() reads its config object with cfgread.h (file:line errors, unknown keys
 *     refused); the core reads and skips `type` and `enable`.
 *   - A synchronous source (async = false) implements check(): answer from memory, fast,
 *     never blocking (it runs on loop threads for every uncached request). It may be called
 *     from several loop threads at once: guard shared state (a rwlock, or an atomically
 *     swapped immutable rule set).
 *   - An asynchronous source (async = true) implements start(): the call's client and
 *     action are stable copies; answer exactly once with authz_call_done(call, verdict),
 *     from any thread, possibly before start() returns. Never block the caller.
 *   - A backend that cannot answer reports AUTHZ_ERROR (logged once per call by the core,
 *     counts as NOMATCH).
 */
#ifndef BW_AUTHZ_SOURCE_H
#define BW_AUTHZ_SOURCE_H

#include <stdbool.h>
#include <stddef.h>

#include "authz/authz.h"
#include "config/cfgread.h"
#include "core/buf.h"

struct authz_source;
struct authz_call;

const struct authz_client *authz_call_client(const struct authz_call *c);
const struct authz_action *authz_call_action(const struct authz_call *c);
/* Finish an asynchronous call: exactly once. Thread-safe. */
void authz_call_done(struct authz_call *c, enum authz_verdict v);

struct authz_source_ops {
	const char *type;   /* "file", "built_in_database", "redis", "postgresql", "mysql", "http" */
	bool async;
	void *(*parse)(struct cfg_reader *r, const struct hocon_member *m);
	void (*free_config)(void *cfg);
	struct authz_source *(*create)(const void *cfg, const struct authz_env *env, char *err, size_t errlen);
	void (*destroy)(struct authz_source *s);
	enum authz_verdict (*check)(struct authz_source *s, const struct authz_client *cl, const struct authz_action *a);
	void (*start)(struct authz_source *s, struct authz_call *call);
	/* Optional: re-read files; false keeps the old rules (err says why). *changed set when
	 * the rules changed. */
	bool (*reload)(struct authz_source *s, bool *changed, char *err, size_t errlen);
	/* Optional: `bulwark ctl rules ...`; *changed set when rules changed (caches are then
	 * invalidated by the core). */
	bool (*ctl)(struct authz_source *s, int argc, char **argv, struct buf *out, bool *changed);
};

void authz_source_register(const struct authz_source_ops *ops);
const struct authz_source_ops *authz_source_find(const char *type);

/* Value of a placeholder for backend templates (template.h tmpl_lookup_fn shape), with
 * arg = the struct authz_call: the authentication variables (username, clientid, peerhost,
 * peerport, cert_subject, cert_common_name, listener, zone, client_attrs.NAME) plus
 * action, topic, qos, retain, mountpoint, proto_name. */
const char *authz_call_var(void *arg, const char *name, size_t name_len, size_t *len, char *scratch,
			   size_t scratch_len);
/* The placeholders authorization backends may use. */
extern const char *const authz_tmpl_vars[];

#endif
