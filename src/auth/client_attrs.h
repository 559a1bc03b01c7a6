/* Client attributes (EMQX `client_attrs`, reference/emqx.md §3.1): name -> string value
 * pairs attached to a connection. Set by `mqtt.client_attrs_init` expressions before
 * authentication, then added to or overridden by the authentication result (JWT claim or
 * HTTP body `client_attrs`). Read as ${client_attrs.NAME} in authentication and
 * authorization templates and by {client_attr, ...} in acl.conf.
 *
 * A small vector (a client has a handful): linear lookup.
 */
#ifndef BW_CLIENT_ATTRS_H
#define BW_CLIENT_ATTRS_H

#include <stdbool.h>
#include <stddef.h>

struct client_attr {
	char *name;
	char *value;
};

struct client_attrs {
	size_t n;
	struct client_attr *v;
};

/* The value of attribute name[0..len), or NULL. */
const char *client_attrs_get(const struct client_attrs *a, const char *name, size_t len);
/* Set (replace or add) an attribute; copies both strings. */
void client_attrs_set(struct client_attrs *a, const char *name, const char *value);
/* Set every string member of a JSON object text (as authentication results carry them).
 * False when json is not an object (a is then unchanged). */
bool client_attrs_merge_json(struct client_attrs *a, const char *json);
/* Deep copy into dst (emptied first). */
void client_attrs_copy(struct client_attrs *dst, const struct client_attrs *src);
/* Free the contents; a is left empty. */
void client_attrs_clear(struct client_attrs *a);

#endif
