/* `mechanism = x509` (Bulwark extension, for seed 004's migration period): allows a
 * client that presented a verified certificate (TLS, or a trusted PROXY v2 header
 * reporting one), optionally only when its CN equals the username; ignores everyone
 * else, so password authenticators after it still serve devices without certificates on
 * the same port.
 *
 *   authentication = [
 *     { mechanism = x509, require_cn_match_username = false }
 *     { mechanism = password_based, backend = built_in_database }
 *   ]
 */
#include <stdlib.h>
#include <string.h>

#include "auth/authn.h"
#include "core/alloc.h"

struct x509_cfg {
	bool require_cn_match_username;
};

struct authn {
	struct x509_cfg cfg;
};

static bool skip_core_key(struct cfg_reader *r, const struct hocon_member *m, void *target)
{
	(void)r;
	(void)m;
	(void)target;
	return true; /* mechanism / enable: read by the chain core */
}

static const struct cfg_field fields[] = {
	{ "mechanism", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "enable", CFG_F_CUSTOM, 0, 0, 0, NULL, skip_core_key },
	{ "require_cn_match_username", CFG_F_BOOL, offsetof(struct x509_cfg, require_cn_match_username), 0, 0, NULL,
	  NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static void *x509_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	struct x509_cfg *c = xcalloc(1, sizeof *c);
	if (!cfgr_load_fields(r, m, m->value, fields, c)) {
		free(c);
		return NULL;
	}
	return c;
}

static struct authn *x509_create(const void *cfg, const struct authn_env *env, const char *id, char *err, size_t errlen)
{
	(void)env;
	(void)id;
	(void)err;
	(void)errlen;
	struct authn *a = xcalloc(1, sizeof *a);
	a->cfg = *(const struct x509_cfg *)cfg;
	return a;
}

static void x509_authenticate(struct authn *a, struct authn_call *call)
{
	const struct authn_request *r = authn_call_request(call);
	struct authn_result res;
	memset(&res, 0, sizeof res);
	res.verdict = AUTHN_IGNORE;
	if (r->auth_method) {
		strcpy(res.reason, "the client asked for enhanced authentication");
	} else if (!r->cert_verified) {
		strcpy(res.reason, "no verified client certificate");
	} else if (a->cfg.require_cn_match_username &&
		   (!r->cert_common_name || !r->username || r->username_len != strlen(r->cert_common_name) ||
		    memcmp(r->username, r->cert_common_name, r->username_len) != 0)) {
		strcpy(res.reason, "certificate CN does not match the username");
	} else {
		res.verdict = AUTHN_ALLOW;
		strcpy(res.reason, "verified client certificate");
	}
	authn_done(call, &res);
}

static void x509_destroy(struct authn *a)
{
	free(a);
}

static const struct authn_ops x509_ops = {
	.mechanism = "x509",
	.backend = NULL,
	.cacheable = false,
	.parse = x509_parse,
	.free_config = free,
	.create = x509_create,
	.destroy = x509_destroy,
	.authenticate = x509_authenticate,
};

__attribute__((constructor)) static void x509_register(void)
{
	authn_register(&x509_ops);
}
