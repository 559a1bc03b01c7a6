/* mqtt.client_attrs_init (EMQX, reference/emqx.md §3.1): a list of { expression, set_as_attr }.
 * Each expression is a variform expression (auth/variform.h) compiled when the config loads;
 * per client it is evaluated after the client ID and username are decided and before
 * authentication, and a non-empty result is stored as client attribute set_as_attr.
 *
 * Variables: clientid, username, cn (alias cert_common_name), dn (alias cert_subject),
 * cert_san.dns, cert_san.ip, cert_san.email, cert_san.uri (arrays, as in EMQX 6: use
 * nth(1, cert_san.dns) or join_to_string(',', cert_san.dns); a bare array result is joined
 * with ','), zone ("default"), listener ("ssl:default"), peersni (unbound without SNI),
 * user_property.NAME (an MQTT 5 CONNECT user property; unbound when absent).
 *
 * As in EMQX: an expression that fails (unbound variable, wrong argument type...) or yields ''
 * sets nothing, and so does a value that is not valid UTF-8 or holds control characters
 * (0x00-0x1F, 0x7F, U+0080-U+009F); later entries overwrite earlier ones with the same name.
 * Failures are logged at debug level.
 */
#ifndef BW_ATTRS_INIT_H
#define BW_ATTRS_INIT_H

#include <stddef.h>

#include "auth/client_attrs.h"
#include "config/cfgread.h"
#include "config/hocon.h"
#include "mqtt/mqtt.h"

struct variform;
struct identity_sans;

#define ATTRS_INIT_NAME_MAX 64 /* set_as_attr: 1..64 of [A-Za-z0-9_-] */

struct attrs_init_entry {
	struct variform *expr;
	char *name; /* set_as_attr */
};

struct attrs_init_cfg {
	size_t n;
	struct attrs_init_entry *v;
};

/* What an expression can read about one client. Every pointer may be NULL (meaning: absent);
 * nothing is copied, so the memory must stay valid during attrs_init_eval. */
struct attrs_init_input {
	const char *clientid;             /* NUL-terminated; the final client ID (after assignment) */
	const char *username;             /* username[0..username_len); NULL = none (reads as '') */
	size_t username_len;
	const char *cn;                   /* certificate subject CN(s) (identity_cn); NULL = '' */
	const char *dn;                   /* certificate subject DN (identity_dn); NULL = '' */
	const struct identity_sans *sans; /* identity_sans_get of the TLS leaf; NULL = no SANs */
	const char *zone;                 /* NULL = "default" */
	const char *listener;             /* listener id, "tcp:default", "ssl:default" */
	const char *peersni;              /* TLS SNI the client sent; NULL = none (unbound) */
	struct mqtt_str user_props;       /* v5 CONNECT properties' user_props view; {0} = none */
};

/* Parse the `client_attrs_init` member (an array of { expression, set_as_attr }): compiles every
 * expression. NULL with r's error set ("file:line: mqtt.client_attrs_init[N].expression: ...",
 * N counted from 1) on failure. An empty array gives an entry-less config. */
struct attrs_init_cfg *attrs_init_parse(struct cfg_reader *r, const struct hocon_member *m);
/* Free a parsed config (NULL is fine). */
void attrs_init_free(struct attrs_init_cfg *c);
/* Evaluate every entry for one client, in order, setting attributes in out (which keeps the
 * attributes it already has). c may be NULL (nothing to do). */
void attrs_init_eval(const struct attrs_init_cfg *c, const struct attrs_init_input *in, struct client_attrs *out);

#endif
