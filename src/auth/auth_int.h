/* Internals shared by the chain core's files (auth.c, auth_config.c). */
#ifndef BW_AUTH_INT_H
#define BW_AUTH_INT_H

#include "auth/auth.h"

/* One configured entry of a chain. */
struct auth_entry_cfg {
	const struct authn_ops *ops;
	void *cfg;   /* the authenticator's own parsed config */
	bool enable;
	char *id;    /* "password_based:built_in_database", "jwt", ... */
};

struct auth_chain_cfg {
	struct auth_entry_cfg *v;
	size_t n;
};

#endif
