/* Authorization (EMQX `authorization { ... }`, reference/emqx.md §5): who may publish and
 * subscribe where.
 *
 * Evaluation for one request (a client, an action, a topic):
 *   1. superusers (is_superuser from authentication) are allowed everything;
 *   2. the ACL granted by authentication (JWT `acl` claim, HTTP `acl` field) is checked first;
 *   3. then `sources` in order (file, built_in_database, redis, postgresql, mysql, http);
 *      the first ALLOW or DENY wins, NOMATCH (and a backend error) goes on to the next;
 *   4. when every source passes, `no_match` decides.
 * Answers are cached per client (`cache { enable, max_size, ttl }`); every cache entry
 * carries the rule generation it was computed under, so a rule change (SIGHUP reload of
 * acl.conf, `ctl rules ...`) invalidates all caches at once.
 *
 * Synchronous sources (file, built-in database, the authentication ACL) answer inline.
 * Asynchronous ones (HTTP, databases) run off the loop thread: authz_check then returns
 * AUTHZ_PENDING and calls back on the caller's loop with the final verdict.
 *
 * Topics are checked as the client wrote them: without the listener's mountpoint, and
 * for a shared subscription "$share/g/t" the filter "t".
 */
#ifndef BW_AUTHZ_H
#define BW_AUTHZ_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <sys/socket.h>

#include "config/cfgread.h"
#include "core/buf.h"

struct client_attrs;
struct config;
struct http_client;
struct loop;

/* What rules see of a client. Strings are NUL-terminated (username may hold other bytes
 * when mapped from a certificate's DER: use username_len); NULL when undefined. */
struct authz_client {
	const char *username;
	size_t username_len;
	const char *clientid;
	const char *peerhost;            /* "1.2.3.4" / "::1" */
	uint16_t peerport;
	struct sockaddr_storage peer;    /* for ipaddr / ipaddrs rules */
	const char *cert_common_name;
	const char *cert_subject;        /* DN, identity.h format */
	const char *listener;            /* "ssl:default" */
	const char *zone;                /* "default" */
	const char *mountpoint;
	const struct client_attrs *attrs;
	uint8_t proto_version;           /* 3, 4, 5 */
	bool is_superuser;
	int64_t authn_acl_expire_at;     /* wall seconds after which the authentication ACL no longer applies, 0 = never */
};

enum authz_action_type { AUTHZ_PUBLISH = 1, AUTHZ_SUBSCRIBE = 2 };

/* One request: for SUBSCRIBE, topic is the filter and qos the requested QoS. */
struct authz_action {
	enum authz_action_type type;
	const char *topic;
	size_t topic_len;
	uint8_t qos;
	bool retain;
};

enum authz_verdict {
	AUTHZ_NOMATCH, /* no rule applies: next source ("ignore" in EMQX's HTTP answers) */
	AUTHZ_ALLOW,
	AUTHZ_DENY,
	AUTHZ_ERROR,   /* a backend could not answer: logged, counts as NOMATCH */
	AUTHZ_PENDING, /* authz_check only: the answer comes through the callback */
};

const char *authz_verdict_str(enum authz_verdict v);
const char *authz_action_str(enum authz_action_type t);

/* ---- configuration (called by the schema) ---- */

struct authz_cfg;
/* Parse the `authorization` object. NULL with r's error set on failure. */
struct authz_cfg *authz_config_parse(struct cfg_reader *r, const struct hocon_member *m);
void authz_config_free(struct authz_cfg *c);
/* The default when the config has no `authorization` key: no sources, no_match = allow. */
struct authz_cfg *authz_config_default(void);
/* deny_action = disconnect */
bool authz_config_disconnect_on_deny(const struct authz_cfg *c);

/* ---- runtime ---- */

struct authz;        /* the built sources, shared by every worker */
struct authz_subject; /* a client as authorization knows it (refcounted), with its cache */

struct authz_env {
	const struct config *cfg;
	struct http_client *http;
	struct loop *main_loop;
	const char *data_dir;
};

struct authz *authz_new(const struct authz_cfg *cfg, const struct authz_env *env, char *err, size_t errlen);
/* Shutdown, step 1: destroy the sources; answers they still give (and any arriving
 * later) complete their checks with DENY. Drain the loops, then authz_free. */
void authz_stop(struct authz *z);
void authz_free(struct authz *z);
/* Nothing to check: no sources, no_match = allow. Lets callers skip building subjects. */
bool authz_trivial(const struct authz *z);
bool authz_disconnect_on_deny(const struct authz *z);

/* A subject: copies of cl's fields (attrs included) plus the authentication ACL (JSON
 * text from JWT/HTTP, NULL when none; a malformed ACL is logged and grants nothing).
 * Created once the client is authenticated; kept by the connection, and by a session
 * while its will is pending (the will is checked when published). Not thread-safe:
 * used on one loop at a time (the one owning the client). */
struct authz_subject *authz_subject_new(struct authz *z, const struct authz_client *cl, const char *authn_acl);
struct authz_subject *authz_subject_ref(struct authz_subject *s);
void authz_subject_unref(struct authz_subject *s);
const struct authz_client *authz_subject_client(const struct authz_subject *s);

typedef void (*authz_done_fn)(void *arg, enum authz_verdict v);

/* The caller's handle on a pending check (embed it; zero-initialise). */
struct authz_wait {
	struct authz_call *call;
};

/* Check one action. Returns AUTHZ_ALLOW or AUTHZ_DENY when decided at once (cache, the
 * authentication ACL, synchronous sources, no_match); or AUTHZ_PENDING, and then done(arg,
 * ALLOW|DENY) runs later on loop l (never inside authz_check) unless authz_wait_cancel(w)
 * was called first. One pending check per wait handle. */
enum authz_verdict authz_check(struct authz_subject *s, const struct authz_action *a, struct loop *l,
			       struct authz_wait *w, authz_done_fn done, void *arg);
/* Forget a pending check's callback (client gone). Harmless when none is pending. */
void authz_wait_cancel(struct authz_wait *w);

/* Rules changed (reload, ctl): every cached answer is stale. Thread-safe. */
void authz_invalidate(struct authz *z);
/* `bulwark ctl rules ...` (built-in database source). */
bool authz_ctl(struct authz *z, int argc, char **argv, struct buf *out);
/* Re-read files (acl.conf) on SIGHUP / ctl reload. A broken file keeps the previous rules
 * and reports why. Report lines appended. */
bool authz_reload(struct authz *z, struct buf *report);

#endif
