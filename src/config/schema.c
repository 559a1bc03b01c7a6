/* The configuration schema: walks a HOCON tree (config/hocon.h) into struct config.
 *
 * Every key falls in one of four classes:
 *   - known: parsed and validated; a bad value is an error naming file:line and key;
 *   - EMQX keys Bulwark deliberately does not use (cluster.*, dashboard.*, node.cookie, ...):
 *     loaded with one warning naming them;
 *   - keys of features not built yet: refused with "not supported yet: KEY (file:line)";
 *   - anything else: an error ("unknown key"), so a typo is never silently ignored.
 * Tables below list every key of each section; adding a feature means moving its key
 * from the "not supported yet" class to a real field.
 */
#include "config/config.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "auth/attrs_init.h"
#include "auth/auth.h"
#include "authz/authz.h"
#include "config/cfgread.h"
#include "config/hocon.h"
#include "config/values.h"
#include "core/alloc.h"
#include "core/buf.h"
#include "core/log.h"

static const char *intern(struct config *cfg, const char *s);

/* ---- mqtt ---- */

#define MQ(f) offsetof(struct cfg_mqtt, f)

static bool custom_server_keepalive(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_mqtt *mq = target;
	if (m->value->type == HOCON_STRING && strcmp(m->value->str, "disabled") == 0) {
		mq->server_keepalive_s = 0;
		return true;
	}
	uint64_t v;
	if (!cfgr_uint(ld, m, 1, 65535, &v))
		return cfgr_fail(ld, m, "expected disabled or seconds in 1..65535");
	mq->server_keepalive_s = (uint32_t)v;
	return true;
}

static const char *const peer_cert_names[] = { "disabled", "cn", "dn", "crt", "pem", "md5", NULL };

static bool custom_peer_cert_clientid(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_mqtt *mq = target;
	int v;
	if (!cfgr_enum(ld, m, peer_cert_names, &v))
		return false;
	if (v == CFG_PEER_CERT_CRT)
		return cfgr_fail(ld, m, "crt (raw DER bytes) cannot be a client ID; use md5 or pem, which identify the same "
				   "certificate as text");
	mq->peer_cert_as_clientid = (enum cfg_peer_cert_as)v;
	return true;
}

static bool custom_client_attrs(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	(void)target;
	struct attrs_init_cfg *c = attrs_init_parse(ld, m);
	if (!c)
		return false;
	attrs_init_free(ld->cfg->attrs_init);
	ld->cfg->attrs_init = NULL;
	if (c->n)
		ld->cfg->attrs_init = c;
	else
		attrs_init_free(c);
	return true;
}

static const struct cfg_field mqtt_fields[] = {
	{ "max_packet_size", CFG_F_BYTES32, MQ(max_packet_size), 16, 268435455, NULL, NULL },
	{ "max_clientid_len", CFG_F_U32, MQ(max_clientid_len), 23, 65535, NULL, NULL },
	{ "idle_timeout", CFG_F_DURATION_MS, MQ(idle_timeout_ms), 0, 0, NULL, NULL },
	{ "use_username_as_clientid", CFG_F_BOOL, MQ(use_username_as_clientid), 0, 0, NULL, NULL },
	{ "session_expiry_interval", CFG_F_DURATION_S32, MQ(session_expiry_interval_s), 0, 0, NULL, NULL },
	{ "max_inflight", CFG_F_U32, MQ(max_inflight), 1, 65535, NULL, NULL },
	{ "max_mqueue_len", CFG_F_U32_INF, MQ(max_mqueue_len), 0, 0, NULL, NULL },
	{ "mqueue_store_qos0", CFG_F_BOOL, MQ(mqueue_store_qos0), 0, 0, NULL, NULL },
	{ "retain_available", CFG_F_BOOL, MQ(retain_available), 0, 0, NULL, NULL },
	{ "wildcard_subscription", CFG_F_BOOL, MQ(wildcard_subscription), 0, 0, NULL, NULL },
	{ "shared_subscription", CFG_F_BOOL, MQ(shared_subscription), 0, 0, NULL, NULL },
	{ "keepalive_multiplier", CFG_F_DOUBLE, MQ(keepalive_multiplier), 1, 100, NULL, NULL },
	{ "server_keepalive", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_server_keepalive },
	{ "max_topic_alias", CFG_F_U16, MQ(max_topic_alias), 0, 65535, NULL, NULL },
	{ "max_qos_allowed", CFG_F_U8, MQ(max_qos_allowed), 0, 2, NULL, NULL },
	{ "max_topic_levels", CFG_F_U32, MQ(max_topic_levels), 1, 65535, NULL, NULL },
	{ "retry_interval", CFG_F_DURATION_MS, MQ(retry_interval_ms), 0, 0, NULL, NULL },
	{ "max_awaiting_rel", CFG_F_U32_INF, MQ(max_awaiting_rel), 0, 0, NULL, NULL },
	{ "await_rel_timeout", CFG_F_DURATION_MS, MQ(await_rel_timeout_ms), 0, 0, NULL, NULL },
	{ "upgrade_qos", CFG_F_BOOL, MQ(upgrade_qos), 0, 0, NULL, NULL },
	{ "ignore_loop_deliver", CFG_F_BOOL, MQ(ignore_loop_deliver), 0, 0, NULL, NULL },
	{ "max_subscriptions", CFG_F_U32_INF, MQ(max_subscriptions), 0, 0, NULL, NULL },
	{ "message_expiry_interval", CFG_F_DURATION_S32_INF, MQ(message_expiry_interval_s), 0, 0, NULL, NULL },
	{ "strict_mode", CFG_F_BOOL, MQ(strict_mode), 0, 0, NULL, NULL },
	/* Certificate identity and client attributes: their own issues. */
	{ "peer_cert_as_username", CFG_F_ENUM, MQ(peer_cert_as_username), 0, 0, peer_cert_names, NULL },
	{ "peer_cert_as_clientid", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_peer_cert_clientid },
	{ "client_attrs_init", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_client_attrs },
	{ "takeover_requires_same_identity", CFG_F_BOOL, MQ(takeover_requires_same_identity), 0, 0, NULL, NULL },
	{ "clientid_override", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	/* EMQX tuning Bulwark has no use for. */
	{ "keepalive_check_interval", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "mqueue_priorities", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "mqueue_default_priority", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "shared_subscription_strategy", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "shared_subscription_initial_sticky_pick", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "exclusive_subscription", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "response_information", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "max_clientid_len_warning", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* ---- listeners ---- */

#define LI(f) offsetof(struct cfg_listener, f)
#define SSL(f) offsetof(struct cfg_ssl, f)

static bool custom_bind(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	const char *s = cfgr_scalar(m->value);
	if (!s || m->value->type == HOCON_BOOL || !cfg_parse_bind(s, &l->bind, &l->bind_len))
		return cfgr_fail(ld, m, "expected a port or ip:port such as \"0.0.0.0:1883\", got %s",
			    s ? s : hocon_type_str(m->value->type));
	free(l->bind_str);
	l->bind_str = xstrdup(s);
	return true;
}

static bool custom_max_connections(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	if (cfgr_is_infinity(m->value)) {
		l->max_connections = 0;
		return true;
	}
	return cfgr_uint(ld, m, 1, INT64_MAX, &l->max_connections);
}

static bool custom_enable_authn(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	const char *s = cfgr_scalar(m->value);
	if (s && strcmp(s, "quick_deny_anonymous") == 0) {
		l->enable_authn = CFG_AUTHN_QUICK_DENY_ANONYMOUS;
		return true;
	}
	bool b;
	if (m->value->type == HOCON_BOOL || (s && (!strcmp(s, "true") || !strcmp(s, "false")))) {
		if (!cfgr_bool(ld, m, &b))
			return false;
		l->enable_authn = b ? CFG_AUTHN_TRUE : CFG_AUTHN_FALSE;
		return true;
	}
	return cfgr_fail(ld, m, "expected true, false or quick_deny_anonymous, got %s", s ? s : hocon_type_str(m->value->type));
}

/* "allow 10.0.0.0/8", "deny 1.2.3.4", "allow all" */
static bool parse_access_rule(const char *s, struct cfg_access_rule *r)
{
	while (*s == ' ')
		s++;
	if (strncmp(s, "allow ", 6) == 0)
		r->allow = true;
	else if (strncmp(s, "deny ", 5) == 0)
		r->allow = false;
	else
		return false;
	s += r->allow ? 6 : 5;
	while (*s == ' ')
		s++;
	if (strcmp(s, "all") == 0) {
		r->all = true;
		return true;
	}
	return cfg_parse_cidr(s, &r->cidr);
}

static bool custom_access_rules(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	const struct hocon_node *n = m->value;
	if (n->type != HOCON_ARRAY)
		return cfgr_fail(ld, m, "expected an array of rules such as [\"allow 10.0.0.0/8\", \"deny all\"]");
	free(l->access_rules);
	l->access_rules = xcalloc(n->n ? n->n : 1, sizeof *l->access_rules);
	l->n_access_rules = n->n;
	for (size_t i = 0; i < n->n; i++) {
		const char *s = cfgr_scalar(n->items[i]);
		if (!s || !parse_access_rule(s, &l->access_rules[i]))
			return cfgr_fail(ld, m, "rule %zu: expected \"allow|deny <ip>|<cidr>|all\", got %s", i + 1,
				    s ? s : hocon_type_str(n->items[i]->type));
	}
	return true;
}

static bool custom_verify(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	static const char *const names[] = { "verify_none", "verify_peer", NULL };
	int v;
	if (!cfgr_enum(ld, m, names, &v))
		return false;
	ssl->verify_peer = v == 1;
	return true;
}

static bool custom_password(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	char *s = NULL;
	if (!cfgr_string(ld, m, &s))
		return false;
	if (strncmp(s, "file://", 7) == 0) {
		FILE *f = fopen(s + 7, "r");
		if (!f) {
			bool r = cfgr_fail(ld, m, "cannot read password file %s", s + 7);
			free(s);
			return r;
		}
		char buf[4096];
		size_t n = fread(buf, 1, sizeof buf - 1, f);
		fclose(f);
		buf[n] = '\0';
		while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ' || buf[n - 1] == '\t'))
			buf[--n] = '\0';
		free(s);
		s = xstrdup(buf);
	}
	free(ssl->password);
	ssl->password = s;
	return true;
}

static bool custom_versions(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	static const struct { const char *name; uint32_t bit; } known[] = {
		{ "tlsv1.3", CFG_TLS_V1_3 }, { "tlsv1.2", CFG_TLS_V1_2 }, { "tlsv1.1", CFG_TLS_V1_1 }, { "tlsv1", CFG_TLS_V1 },
	};
	size_t n;
	char **v = cfgr_list(ld, m, &n);
	if (!v)
		return false;
	uint32_t bits = 0;
	bool ok = true;
	for (size_t i = 0; i < n && ok; i++) {
		size_t k;
		for (k = 0; k < 4 && strcmp(v[i], known[k].name) != 0; k++)
			;
		if (k == 4)
			ok = cfgr_fail(ld, m, "unknown TLS version %s (tlsv1.3, tlsv1.2, tlsv1.1, tlsv1)", v[i]);
		else
			bits |= known[k].bit;
	}
	cfgr_free_list(v);
	if (ok && !bits)
		ok = cfgr_fail(ld, m, "no TLS version listed");
	ssl->versions = bits;
	return ok;
}

static bool is_tls13_suite(const char *c)
{
	return strncmp(c, "TLS_AES_", 8) == 0 || strncmp(c, "TLS_CHACHA20_", 13) == 0;
}

/* ciphers: TLS 1.3 suites go to ciphersuites, everything else to ciphers (both ':'-joined;
 * tls.c validates the names against OpenSSL, also accepting IANA names). */
static bool custom_ciphers(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	size_t n;
	char **v = cfgr_list(ld, m, &n);
	if (!v)
		return false;
	struct buf c12 = { 0 }, c13 = { 0 };
	for (size_t i = 0; i < n; i++) {
		struct buf *b = is_tls13_suite(v[i]) ? &c13 : &c12;
		if (b->len)
			buf_append(b, ":", 1);
		buf_append_str(b, v[i]);
	}
	cfgr_free_list(v);
	free(ssl->ciphers);
	free(ssl->ciphersuites);
	buf_append(&c12, "", 1);
	buf_append(&c13, "", 1);
	ssl->ciphers = (char *)c12.data;
	ssl->ciphersuites = (char *)c13.data;
	if (c12.len == 1) {
		free(c12.data);
		ssl->ciphers = NULL;
	}
	if (c13.len == 1) {
		free(c13.data);
		ssl->ciphersuites = NULL;
	}
	return true;
}

static bool custom_session_tickets(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	static const char *const names[] = { "disabled", "stateless", "stateless_with_cert", "stateful", NULL };
	int v;
	if (m->value->type == HOCON_BOOL) { /* tolerate true/false */
		ssl->session_tickets = m->value->boolean ? CFG_TICKETS_STATELESS : CFG_TICKETS_DISABLED;
		return true;
	}
	if (!cfgr_enum(ld, m, names, &v))
		return false;
	ssl->session_tickets = (enum cfg_session_tickets)v;
	return true;
}

static bool custom_partial_chain(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	const char *s = cfgr_scalar(m->value);
	if (s && (!strcmp(s, "true") || !strcmp(s, "cacert_from_cacertfile")))
		ssl->partial_chain = CFG_PARTIAL_CHAIN_LAST;
	else if (s && !strcmp(s, "two_cacerts_from_cacertfile"))
		ssl->partial_chain = CFG_PARTIAL_CHAIN_LAST_TWO;
	else if (s && !strcmp(s, "false"))
		ssl->partial_chain = CFG_PARTIAL_CHAIN_OFF;
	else
		return cfgr_fail(ld, m, "expected true, false, cacert_from_cacertfile or two_cacerts_from_cacertfile, got %s",
			    s ? s : hocon_type_str(m->value->type));
	return true;
}

static bool custom_eku(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	static const struct { const char *name; uint32_t bit; } known[] = {
		{ "clientAuth", CFG_EKU_CLIENT_AUTH }, { "serverAuth", CFG_EKU_SERVER_AUTH },
		{ "codeSigning", CFG_EKU_CODE_SIGNING }, { "emailProtection", CFG_EKU_EMAIL_PROTECTION },
		{ "timeStamping", CFG_EKU_TIME_STAMPING }, { "ocspSigning", CFG_EKU_OCSP_SIGNING },
	};
	size_t n;
	char **v = cfgr_list(ld, m, &n);
	if (!v)
		return false;
	bool ok = true;
	for (size_t i = 0; i < n && ok; i++) {
		if (strncmp(v[i], "OID:", 4) == 0) {
			const char *oid = v[i] + 4;
			bool good = *oid && strspn(oid, "0123456789.") == strlen(oid) && oid[0] != '.' && !strstr(oid, "..");
			if (!good) {
				ok = cfgr_fail(ld, m, "bad OID %s (expected OID:1.2.3...)", v[i]);
				break;
			}
			ssl->ext_key_usage_oids = xrealloc(ssl->ext_key_usage_oids,
							   (ssl->n_ext_key_usage_oids + 1) * sizeof(char *));
			ssl->ext_key_usage_oids[ssl->n_ext_key_usage_oids++] = xstrdup(oid);
			continue;
		}
		size_t k;
		for (k = 0; k < sizeof known / sizeof known[0] && strcmp(v[i], known[k].name) != 0; k++)
			;
		if (k == sizeof known / sizeof known[0])
			ok = cfgr_fail(ld, m, "unknown extended key usage %s (clientAuth, serverAuth, codeSigning, "
				  "emailProtection, timeStamping, ocspSigning or OID:1.2.3)", v[i]);
		else
			ssl->ext_key_usage |= known[k].bit;
	}
	cfgr_free_list(v);
	return ok;
}

static bool custom_crlfile(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	size_t n;
	char **v;
	if (m->value->type == HOCON_ARRAY) {
		v = cfgr_list(ld, m, &n);
	} else {
		const char *s = cfgr_scalar(m->value);
		if (!s || m->value->type == HOCON_BOOL)
			return cfgr_fail(ld, m, "expected a file path or an array of paths");
		v = xcalloc(2, sizeof *v);
		v[0] = xstrdup(s);
		n = 1;
	}
	if (!v)
		return false;
	cfgr_free_list(ssl->crlfiles);
	ssl->crlfiles = v;
	ssl->n_crlfiles = n;
	return true;
}

#define OC(f) offsetof(struct cfg_ocsp, f)
static const struct cfg_field ocsp_fields[] = {
	{ "enable_ocsp_stapling", CFG_F_BOOL, OC(enable_ocsp_stapling), 0, 0, NULL, NULL },
	{ "responder_url", CFG_F_STRING, OC(responder_url), 0, 0, NULL, NULL },
	{ "issuer_pem", CFG_F_STRING, OC(issuer_pem), 0, 0, NULL, NULL },
	{ "refresh_interval", CFG_F_DURATION_MS, OC(refresh_interval_ms), 0, 0, NULL, NULL },
	{ "refresh_http_timeout", CFG_F_DURATION_MS, OC(refresh_http_timeout_ms), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_ocsp(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	if (!cfgr_load_fields(ld, m, m->value, ocsp_fields, &ssl->ocsp))
		return false;
	if (ssl->ocsp.refresh_interval_ms < 60000) {
		log_warn("%s:%d: %s.refresh_interval below the 1m minimum; using 1m", cfgr_file(m), m->line, ld->path);
		ssl->ocsp.refresh_interval_ms = 60000;
	}
	return true;
}

static bool custom_fail_mode(struct cfg_reader *ld, const struct hocon_member *m, bool *closed)
{
	static const char *const names[] = { "open", "closed", NULL };
	int v;
	if (!cfgr_enum(ld, m, names, &v))
		return false;
	*closed = v == 1;
	return true;
}

static bool custom_ocsp_client_fail_mode(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	return custom_fail_mode(ld, m, &((struct cfg_ocsp_client *)target)->fail_closed);
}

#define OCC(f) offsetof(struct cfg_ocsp_client, f)
static const struct cfg_field ocsp_client_fields[] = {
	{ "enable", CFG_F_BOOL, OCC(enable), 0, 0, NULL, NULL },
	{ "fail_mode", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ocsp_client_fail_mode },
	{ "timeout", CFG_F_DURATION_MS, OCC(timeout_ms), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_ocsp_client(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	return cfgr_load_fields(ld, m, m->value, ocsp_client_fields, &ssl->ocsp_client);
}

#define MC(f) offsetof(struct cfg_managed_cert, f)
static const struct cfg_field managed_cert_fields[] = {
	{ "bundle_name", CFG_F_STRING, MC(bundle_name), 0, 0, NULL, NULL },
	{ "sni", CFG_F_STRING, MC(sni), 0, 0, NULL, NULL },
	{ "namespace", CFG_F_STRING, MC(ns), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* A bundle or namespace name becomes a directory: letters, digits, '-', '_', '.', no "..". */
static bool safe_name(const char *s)
{
	return s && *s && *s != '.' &&
	       strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.") == strlen(s);
}

static bool custom_managed_certs(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_ssl *ssl = target;
	const struct hocon_node *n = m->value;
	size_t cnt = n->type == HOCON_ARRAY ? n->n : 1;
	if (n->type != HOCON_ARRAY && n->type != HOCON_OBJECT)
		return cfgr_fail(ld, m, "expected an array of { bundle_name, sni, namespace } objects");
	ssl->managed_certs = xcalloc(cnt ? cnt : 1, sizeof *ssl->managed_certs);
	ssl->n_managed_certs = cnt;
	for (size_t i = 0; i < cnt; i++) {
		const struct hocon_node *item = n->type == HOCON_ARRAY ? n->items[i] : n;
		struct hocon_member im = { .key = m->key, .file = item->file, .line = item->line,
					   .value = (struct hocon_node *)item };
		struct cfg_managed_cert *mc = &ssl->managed_certs[i];
		if (!cfgr_load_fields(ld, &im, item, managed_cert_fields, mc))
			return false;
		if (!mc->bundle_name)
			return cfgr_fail(ld, &im, "entry %zu: bundle_name is required", i + 1);
		if (!mc->ns)
			mc->ns = xstrdup("global");
		if (!safe_name(mc->bundle_name) || !safe_name(mc->ns))
			return cfgr_fail(ld, &im,
				    "entry %zu: bundle_name and namespace may only use letters, digits, '-', '_' and '.', "
				    "and may not start with '.'",
				    i + 1);
	}
	return true;
}

static bool custom_renegotiation(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	(void)target;
	bool b;
	if (!cfgr_bool(ld, m, &b))
		return false;
	if (b && !strcmp(m->key, "client_renegotiation"))
		log_warn("%s:%d: %s = true: Bulwark never allows renegotiation (a denial-of-service vector); ignored",
			 cfgr_file(m), m->line, ld->path);
	return true;
}

static const struct cfg_field ssl_fields[] = {
	{ "cacertfile", CFG_F_STRING, SSL(cacertfile), 0, 0, NULL, NULL },
	{ "certfile", CFG_F_STRING, SSL(certfile), 0, 0, NULL, NULL },
	{ "keyfile", CFG_F_STRING, SSL(keyfile), 0, 0, NULL, NULL },
	{ "password", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_password },
	{ "verify", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_verify },
	{ "fail_if_no_peer_cert", CFG_F_BOOL, SSL(fail_if_no_peer_cert), 0, 0, NULL, NULL },
	{ "depth", CFG_F_U32, SSL(depth), 0, 100, NULL, NULL },
	{ "versions", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_versions },
	{ "ciphers", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ciphers },
	{ "honor_cipher_order", CFG_F_BOOL, SSL(honor_cipher_order), 0, 0, NULL, NULL },
	{ "reuse_sessions", CFG_F_BOOL, SSL(reuse_sessions), 0, 0, NULL, NULL },
	{ "session_tickets", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_session_tickets },
	{ "handshake_timeout", CFG_F_DURATION_MS, SSL(handshake_timeout_ms), 0, 0, NULL, NULL },
	{ "partial_chain", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_partial_chain },
	{ "verify_peer_ext_key_usage", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_eku },
	{ "enable_crl_check", CFG_F_BOOL, SSL(enable_crl_check), 0, 0, NULL, NULL },
	{ "crlfile", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_crlfile },
	{ "crl_check_chain", CFG_F_BOOL, SSL(crl_check_chain), 0, 0, NULL, NULL },
	{ "ocsp", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ocsp },
	{ "ocsp_client", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ocsp_client },
	{ "managed_certs", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_managed_certs },
	{ "dhfile", CFG_F_STRING, SSL(dhfile), 0, 0, NULL, NULL },
	{ "secure_renegotiate", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_renegotiation },
	{ "client_renegotiation", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_renegotiation },
	/* Erlang/OTP runtime tuning. */
	{ "hibernate_after", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "log_level", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "gc_after_handshake", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "user_lookup_fun", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "middlebox_comp_mode", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_ssl_options(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	if (l->type != CFG_LISTENER_SSL)
		return cfgr_fail(ld, m, "ssl_options only apply to ssl listeners");
	l->ssl.file = intern(ld->cfg, m->file);
	l->ssl.line = m->line;
	return cfgr_load_fields(ld, m, m->value, ssl_fields, &l->ssl);
}

static bool custom_proxy_trusted(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	size_t n;
	char **v = cfgr_list(ld, m, &n);
	if (!v)
		return false;
	free(l->proxy_trusted);
	l->proxy_trusted = xcalloc(n ? n : 1, sizeof *l->proxy_trusted);
	l->n_proxy_trusted = n;
	bool ok = true;
	for (size_t i = 0; i < n && ok; i++)
		if (!cfg_parse_cidr(v[i], &l->proxy_trusted[i]))
			ok = cfgr_fail(ld, m, "item %zu: expected an address or CIDR, got %s", i + 1, v[i]);
	cfgr_free_list(v);
	return ok;
}

static bool custom_listener_authn(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	auth_config_free(l->authn);
	l->authn = auth_config_parse(ld, m);
	return l->authn != NULL;
}

/* The listener rate keys: "1000/s", "100/10s", "10MB/m" (bytes_rate only), a bare amount
 * (per second) or infinity. Custom readers get no field, so the key picks the target. */
static bool custom_rate(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	bool bytes_key = strcmp(m->key, "bytes_rate") == 0;
	double *out = bytes_key ? &l->bytes_rate
		      : strcmp(m->key, "messages_rate") == 0 ? &l->messages_rate : &l->max_conn_rate;
	const char *s = cfgr_scalar(m->value);
	double per_s;
	bool is_bytes;
	if (!s || m->value->type == HOCON_BOOL || !cfg_parse_rate(s, &per_s, &is_bytes))
		return cfgr_fail(ld, m, "expected a rate such as \"%s\" or infinity, got %s",
				 bytes_key ? "10MB/s" : "1000/s", s ? s : hocon_type_str(m->value->type));
	if (is_bytes && !bytes_key)
		return cfgr_fail(ld, m, "expected a count rate such as \"1000/s\" (no byte unit), got %s", s);
	*out = isinf(per_s) ? 0 : per_s;
	return true;
}

/* The listener burst keys: a count (bytes_burst: a byte size such as "1MB"), or infinity/0 for
 * the default (one second's worth of the rate). */
static bool custom_burst(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_listener *l = target;
	bool bytes_key = strcmp(m->key, "bytes_burst") == 0;
	uint64_t *out = bytes_key ? &l->bytes_burst
			: strcmp(m->key, "messages_burst") == 0 ? &l->messages_burst : &l->max_conn_burst;
	if (cfgr_is_infinity(m->value)) {
		*out = 0;
		return true;
	}
	const char *s = cfgr_scalar(m->value);
	uint64_t v;
	if (bytes_key) {
		if (!s || m->value->type == HOCON_BOOL || !cfg_parse_bytesize(s, &v) || v > (1ULL << 40))
			return cfgr_fail(ld, m, "expected a byte size such as \"1MB\", got %s",
					 s ? s : hocon_type_str(m->value->type));
		*out = v;
		return true;
	}
	return cfgr_uint(ld, m, 0, 1000000000000LL, out);
}

static const struct cfg_field tcp_option_fields[] = {
	{ "send_timeout", CFG_F_DURATION_MS, LI(send_timeout_ms), 0, 0, NULL, NULL },
	{ "send_timeout_close", CFG_F_BOOL, LI(send_timeout_close), 0, 0, NULL, NULL },
	/* Socket tuning Bulwark leaves to the kernel (output watermarks are fixed: 1MB / 256KB). */
	{ "active_n", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "backlog", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "buffer", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "high_watermark", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "nodelay", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "reuseaddr", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "recbuf", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "sndbuf", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "keepalive", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_tcp_options(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	return cfgr_load_fields(ld, m, m->value, tcp_option_fields, target);
}

static const struct cfg_field listener_fields[] = {
	{ "bind", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_bind },
	{ "enable", CFG_F_BOOL, LI(enable), 0, 0, NULL, NULL },
	{ "enabled", CFG_F_BOOL, LI(enable), 0, 0, NULL, NULL },
	{ "max_connections", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_max_connections },
	{ "enable_authn", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_enable_authn },
	{ "access_rules", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_access_rules },
	{ "mountpoint", CFG_F_STRING, LI(mountpoint), 0, 0, NULL, NULL },
	{ "ssl_options", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_ssl_options },
	{ "proxy_protocol", CFG_F_BOOL, LI(proxy_protocol), 0, 0, NULL, NULL },
	{ "proxy_protocol_timeout", CFG_F_DURATION_MS, LI(proxy_protocol_timeout_ms), 0, 0, NULL, NULL },
	{ "proxy_protocol_trusted", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_proxy_trusted },
	{ "authentication", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_listener_authn },
	{ "max_conn_rate", CFG_F_CUSTOM, LI(max_conn_rate), 0, 0, NULL, custom_rate },
	{ "max_conn_burst", CFG_F_CUSTOM, LI(max_conn_burst), 0, 0, NULL, custom_burst },
	{ "messages_rate", CFG_F_CUSTOM, LI(messages_rate), 0, 0, NULL, custom_rate },
	{ "messages_burst", CFG_F_CUSTOM, LI(messages_burst), 0, 0, NULL, custom_burst },
	{ "bytes_rate", CFG_F_CUSTOM, LI(bytes_rate), 0, 0, NULL, custom_rate },
	{ "bytes_burst", CFG_F_CUSTOM, LI(bytes_burst), 0, 0, NULL, custom_burst },
	{ "websocket", CFG_F_UNSUPPORTED, 0, 0, 0, NULL, NULL },
	{ "acceptors", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "zone", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "tcp_options", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_tcp_options },
	{ "limiter", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "allow_log_packet_data_from", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* Keep a file name alive as long as the config (the HOCON tree is freed after loading). */
static const char *intern(struct config *cfg, const char *s)
{
	if (!s)
		return NULL;
	for (struct cfg_string *x = cfg->strings; x; x = x->next)
		if (strcmp(x->s, s) == 0)
			return x->s;
	size_t n = strlen(s) + 1;
	struct cfg_string *x = xmalloc(sizeof *x + n);
	memcpy(x->s, s, n);
	x->next = cfg->strings;
	cfg->strings = x;
	return x->s;
}

static struct cfg_listener *find_listener(struct config *cfg, enum cfg_listener_type t, const char *name)
{
	for (size_t i = 0; i < cfg->n_listeners; i++)
		if (cfg->listeners[i].type == t && strcmp(cfg->listeners[i].name, name) == 0)
			return &cfg->listeners[i];
	return NULL;
}

static struct cfg_listener *add_listener(struct config *cfg, enum cfg_listener_type t, const char *name,
					 const char *bind, bool loopback)
{
	cfg->listeners = xrealloc(cfg->listeners, (cfg->n_listeners + 1) * sizeof *cfg->listeners);
	struct cfg_listener *l = &cfg->listeners[cfg->n_listeners++];
	memset(l, 0, sizeof *l);
	l->type = t;
	l->name = xstrdup(name);
	l->id = xasprintf("%s:%s", t == CFG_LISTENER_SSL ? "ssl" : "tcp", name);
	l->enable = true;
	l->enable_authn = CFG_AUTHN_TRUE;
	l->mountpoint = xstrdup("");
	l->proxy_protocol_timeout_ms = 3000;
	l->send_timeout_ms = 15000;
	l->send_timeout_close = true;
	l->proxy_trusted = xcalloc(1, sizeof *l->proxy_trusted);
	cfg_parse_cidr("127.0.0.1/32", &l->proxy_trusted[0]);
	l->n_proxy_trusted = 1;
	l->ssl.depth = 10;
	l->ssl.versions = CFG_TLS_V1_2 | CFG_TLS_V1_3;
	l->ssl.honor_cipher_order = true;
	l->ssl.reuse_sessions = true;
	l->ssl.handshake_timeout_ms = 15000;
	l->ssl.ocsp.refresh_interval_ms = 5 * 60 * 1000;
	l->ssl.ocsp.refresh_http_timeout_ms = 15000;
	l->ssl.ocsp_client.timeout_ms = 5000;
	char b[64];
	snprintf(b, sizeof b, "%s:%s", loopback ? "127.0.0.1" : "0.0.0.0", bind);
	l->bind_str = xstrdup(b);
	cfg_parse_bind(l->bind_str, &l->bind, &l->bind_len);
	return l;
}

/* Names given `= marked_for_deletion` per listener type, so the implicit defaults stay away. */
struct deleted {
	bool tcp_default, ssl_default;
};

static bool load_listener_type(struct cfg_reader *ld, const struct hocon_member *tm, enum cfg_listener_type t, struct deleted *del)
{
	const struct hocon_node *obj = tm->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(ld, tm, "expected an object of named listeners");
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *m = &obj->members[i];
		size_t old = cfgr_path_push(ld, m->key);
		bool ok = true;
		if (m->value->type == HOCON_STRING && strcmp(m->value->str, "marked_for_deletion") == 0) {
			if (strcmp(m->key, "default") == 0) {
				if (t == CFG_LISTENER_TCP)
					del->tcp_default = true;
				else
					del->ssl_default = true;
			}
			struct cfg_listener *l = find_listener(ld->cfg, t, m->key);
			if (l)
				l->enable = false;
		} else if (m->value->type != HOCON_OBJECT) {
			ok = cfgr_fail(ld, m, "expected a listener object or marked_for_deletion");
		} else {
			struct cfg_listener *l = find_listener(ld->cfg, t, m->key);
			if (!l)
				l = add_listener(ld->cfg, t, m->key, t == CFG_LISTENER_SSL ? "8883" : "1883", false);
			l->file = intern(ld->cfg, m->file);
			l->line = m->line;
			ok = cfgr_load_fields(ld, m, m->value, listener_fields, l);
		}
		cfgr_path_pop(ld, old);
		if (!ok)
			return false;
	}
	return true;
}

static bool load_listeners(struct cfg_reader *ld, const struct hocon_member *lm, struct deleted *del)
{
	const struct hocon_node *obj = lm->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(ld, lm, "expected an object");
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *m = &obj->members[i];
		size_t old = cfgr_path_push(ld, m->key);
		bool ok;
		if (strcmp(m->key, "tcp") == 0) {
			ok = load_listener_type(ld, m, CFG_LISTENER_TCP, del);
		} else if (strcmp(m->key, "ssl") == 0) {
			ok = load_listener_type(ld, m, CFG_LISTENER_SSL, del);
		} else if (strcmp(m->key, "ws") == 0 || strcmp(m->key, "wss") == 0 || strcmp(m->key, "quic") == 0) {
			/* Deleting a listener type we do not have yet is fine; configuring one is not. */
			ok = true;
			if (m->value->type != HOCON_OBJECT) {
				ok = cfgr_unsupported(ld, m);
			} else {
				for (size_t k = 0; k < m->value->n && ok; k++) {
					const struct hocon_member *x = &m->value->members[k];
					bool off = (x->value->type == HOCON_STRING && !strcmp(x->value->str, "marked_for_deletion"));
					if (!off && x->value->type == HOCON_OBJECT) {
						const struct hocon_member *en = hocon_get_member(x->value, "enable");
						off = en && en->value->type == HOCON_BOOL && !en->value->boolean;
					}
					if (!off) {
						size_t o2 = cfgr_path_push(ld, x->key);
						ok = cfgr_unsupported(ld, x);
						cfgr_path_pop(ld, o2);
					}
				}
			}
		} else {
			ok = cfgr_unknown(ld, m);
		}
		cfgr_path_pop(ld, old);
		if (!ok)
			return false;
	}
	return true;
}

/* ---- node, log, durable_storage ---- */

#define CF(f) offsetof(struct config, f)

static bool custom_log_console(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct config *cfg = target;
	const struct hocon_node *obj = m->value;
	if (obj->type != HOCON_OBJECT)
		return cfgr_fail(ld, m, "expected an object");
	for (size_t i = 0; i < obj->n; i++) {
		const struct hocon_member *x = &obj->members[i];
		size_t old = cfgr_path_push(ld, x->key);
		bool ok = true;
		if (strcmp(x->key, "level") == 0) {
			enum log_level lvl;
			const char *s = cfgr_scalar(x->value);
			if (!s || !log_level_parse(s, &lvl))
				ok = cfgr_fail(ld, x, "expected debug, info, warning or error");
			else
				cfg->log_level = (int)lvl;
		} else if (!strcmp(x->key, "enable") || !strcmp(x->key, "formatter") || !strcmp(x->key, "time_offset") ||
			   !strcmp(x->key, "single_line") || !strcmp(x->key, "chars_limit") ||
			   !strcmp(x->key, "max_depth") || !strcmp(x->key, "timestamp_format") ||
			   !strcmp(x->key, "payload_encode")) {
			cfgr_warn_ignored(ld, x);
		} else {
			ok = cfgr_unknown(ld, x);
		}
		cfgr_path_pop(ld, old);
		if (!ok)
			return false;
	}
	return true;
}

static const struct cfg_field log_fields[] = {
	{ "console", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_log_console },
	{ "console_handler", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_log_console },
	{ "file", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "file_handlers", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "audit", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "throttling", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static const struct cfg_field node_fields[] = {
	{ "data_dir", CFG_F_STRING, CF(data_dir), 0, 0, NULL, NULL },
	{ "workers", CFG_F_U32, CF(workers), 0, 256, NULL, NULL },
	{ "tls_fast_keys", CFG_F_BOOL, CF(tls_fast_keys), 0, 0, NULL, NULL },
	{ "name", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "cookie", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "process_limit", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "max_ports", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "dist_buffer_size", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "max_ets_tables", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "global_gc_interval", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "crash_dump_file", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "crash_dump_seconds", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "crash_dump_bytes", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "dist_net_ticktime", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "backtrace_depth", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "applications", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "etc_dir", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "role", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "broker_pool_size", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "generic_pool_size", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "channel_cleanup_batch_size", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "tls_server_session_tickets_amount", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "tls_server_session_ticket_lifetime", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ "tls_stateless_tickets_seed", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_fsync(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct config *cfg = target;
	static const char *const names[] = { "always", "batch", "never", NULL };
	int v;
	if (!cfgr_enum(ld, m, names, &v))
		return false;
	cfg->fsync = (enum cfg_fsync)v;
	return true;
}

static bool custom_crl_fail_mode(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	return custom_fail_mode(ld, m, &((struct cfg_crl_cache *)target)->fail_closed);
}

#define CC(f) offsetof(struct cfg_crl_cache, f)
static const struct cfg_field crl_cache_fields[] = {
	{ "refresh_interval", CFG_F_DURATION_MS, CC(refresh_interval_ms), 0, 0, NULL, NULL },
	{ "http_timeout", CFG_F_DURATION_MS, CC(http_timeout_ms), 0, 0, NULL, NULL },
	{ "capacity", CFG_F_U32, CC(capacity), 1, 1000000, NULL, NULL },
	{ "fail_mode", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_crl_fail_mode },
	{ "failure_threshold", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

#define BN(f) offsetof(struct cfg_banned, f)
static const struct cfg_field banned_fields[] = {
	{ "bootstrap_file", CFG_F_STRING, BN(bootstrap_file), 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* flapping_detect.window_time / ban_time: a duration above zero, or infinity. */
static bool custom_flapping_ms(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	struct cfg_flapping *f = target;
	uint64_t *out = strcmp(m->key, "window_time") == 0 ? &f->window_time_ms : &f->ban_time_ms;
	uint64_t v;
	if (cfgr_is_infinity(m->value)) {
		*out = UINT64_MAX;
		return true;
	}
	if (!cfgr_scalar(m->value) || m->value->type == HOCON_BOOL || !cfg_parse_duration_ms(m->value->str, &v))
		return cfgr_fail(ld, m, "expected a duration such as 15s, 5m or 2h, got %s",
				 cfgr_scalar(m->value) ? cfgr_scalar(m->value) : hocon_type_str(m->value->type));
	if (v == 0)
		return cfgr_fail(ld, m, "must be above zero");
	*out = v;
	return true;
}

#define FD(f) offsetof(struct cfg_flapping, f)
static const struct cfg_field flapping_fields[] = {
	{ "enable", CFG_F_BOOL, FD(enable), 0, 0, NULL, NULL },
	{ "window_time", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_flapping_ms },
	{ "max_count", CFG_F_U32, FD(max_count), 1, 1000000000, NULL, NULL },
	{ "ban_time", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_flapping_ms },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

#define PS(f) offsetof(struct cfg_psk, f)
static const struct cfg_field psk_fields[] = {
	{ "enable", CFG_F_BOOL, PS(enable), 0, 0, NULL, NULL },
	{ "init_file", CFG_F_STRING, PS(init_file), 0, 0, NULL, NULL },
	{ "separator", CFG_F_STRING, PS(separator), 0, 0, NULL, NULL },
	{ "chunk_size", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

#define AS(f) offsetof(struct cfg_authn_settings, f)
static const struct cfg_field node_cache_fields[] = {
	{ "enable", CFG_F_BOOL, AS(node_cache), 0, 0, NULL, NULL },
	{ "cache_ttl", CFG_F_DURATION_MS, AS(cache_ttl_ms), 0, 0, NULL, NULL },
	{ "max_count", CFG_F_U32, AS(cache_max_count), 1, 100000000, NULL, NULL },
	{ "max_memory", CFG_F_IGNORED, 0, 0, 0, NULL, NULL },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static bool custom_node_cache(struct cfg_reader *ld, const struct hocon_member *m, void *target)
{
	return cfgr_load_fields(ld, m, m->value, node_cache_fields, target);
}

static const struct cfg_field authn_settings_fields[] = {
	{ "ignore_backend_failures", CFG_F_BOOL, AS(ignore_backend_failures), 0, 0, NULL, NULL },
	{ "node_cache", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_node_cache },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

static const struct cfg_field durable_fields[] = {
	{ "fsync", CFG_F_CUSTOM, 0, 0, 0, NULL, custom_fsync },
	{ NULL, 0, 0, 0, 0, NULL, NULL },
};

/* Root sections: loaded, ignored (EMQX features Bulwark does not have), or not built yet. */
static const char *const ignored_roots[] = {
	"cluster", "dashboard", "rpc", "api_key", "prometheus", "telemetry", "rule_engine", "bridges",
	"connectors", "actions", "sources", "plugins", "gateway", "exhook", "license", "alarm", "sysmon",
	"sys_topics", "retainer", "delayed", "auto_subscribe", "topic_metrics", "slow_subs", "force_shutdown",
	"force_gc", "overload_protection", "conn_congestion", "stats", "broker", "zones", "durable_sessions",
	"session_persistence", "limiter", "os_mon", "vm_mon", "opentelemetry", "schema_registry", "message_transformation",
	"schema_validation", "file_transfer", "mqtt_stream", NULL,
};

static const char *const unsupported_roots[] = {
	NULL,
};

static bool in_list(const char *const *list, const char *key)
{
	for (; *list; list++)
		if (strcmp(*list, key) == 0)
			return true;
	return false;
}

static bool load_root(struct cfg_reader *ld, const struct hocon_node *root)
{
	struct config *cfg = ld->cfg;
	struct deleted del = { 0 };
	for (size_t i = 0; i < root->n; i++) {
		const struct hocon_member *m = &root->members[i];
		size_t old = cfgr_path_push(ld, m->key);
		bool ok;
		if (strcmp(m->key, "mqtt") == 0)
			ok = cfgr_load_fields(ld, m, m->value, mqtt_fields, &cfg->mqtt);
		else if (strcmp(m->key, "listeners") == 0)
			ok = load_listeners(ld, m, &del);
		else if (strcmp(m->key, "node") == 0)
			ok = cfgr_load_fields(ld, m, m->value, node_fields, cfg);
		else if (strcmp(m->key, "log") == 0)
			ok = cfgr_load_fields(ld, m, m->value, log_fields, cfg);
		else if (strcmp(m->key, "durable_storage") == 0)
			ok = cfgr_load_fields(ld, m, m->value, durable_fields, cfg);
		else if (strcmp(m->key, "authentication") == 0) {
			auth_config_free(cfg->authn);
			cfg->authn = auth_config_parse(ld, m);
			ok = cfg->authn != NULL;
		} else if (strcmp(m->key, "authentication_settings") == 0)
			ok = cfgr_load_fields(ld, m, m->value, authn_settings_fields, &cfg->authn_settings);
		else if (strcmp(m->key, "crl_cache") == 0)
			ok = cfgr_load_fields(ld, m, m->value, crl_cache_fields, &cfg->crl_cache);
		else if (strcmp(m->key, "banned") == 0)
			ok = cfgr_load_fields(ld, m, m->value, banned_fields, &cfg->banned);
		else if (strcmp(m->key, "flapping_detect") == 0)
			ok = cfgr_load_fields(ld, m, m->value, flapping_fields, &cfg->flapping);
		else if (strcmp(m->key, "authorization") == 0) {
			authz_config_free(cfg->authz);
			cfg->authz = authz_config_parse(ld, m);
			ok = cfg->authz != NULL;
		}
		else if (strcmp(m->key, "psk_authentication") == 0)
			ok = cfgr_load_fields(ld, m, m->value, psk_fields, &cfg->psk);
		else if (in_list(ignored_roots, m->key)) {
			cfgr_warn_ignored(ld, m);
			ok = true;
		} else if (in_list(unsupported_roots, m->key))
			ok = cfgr_unsupported(ld, m);
		else
			ok = cfgr_unknown(ld, m);
		cfgr_path_pop(ld, old);
		if (!ok)
			return false;
	}
	/* EMQX's implicit default listeners, unless deleted. They were created up front so a
	 * config block for "default" only overrides what it sets. */
	struct cfg_listener *t = find_listener(cfg, CFG_LISTENER_TCP, "default");
	struct cfg_listener *s = find_listener(cfg, CFG_LISTENER_SSL, "default");
	if (t && del.tcp_default)
		t->enable = false;
	if (s && del.ssl_default)
		s->enable = false;
	return true;
}

/* A one-line "file:line: listeners.ssl.NAME.ssl_options: msg" error. */
static bool ssl_fail(struct cfg_reader *ld, const struct cfg_listener *l, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool ssl_fail(struct cfg_reader *ld, const struct cfg_listener *l, const char *fmt, ...)
{
	char msg[400];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	const struct cfg_ssl *ssl = &l->ssl;
	snprintf(ld->err, ld->errlen, "%s:%d: listeners.ssl.%s.ssl_options: %s",
		 ssl->file ? ssl->file : (l->file ? l->file : ld->cfg->source), ssl->file ? ssl->line : l->line, l->name, msg);
	return false;
}

static void ssl_warn(struct cfg_reader *ld, const struct cfg_listener *l, const char *msg)
{
	const struct cfg_ssl *ssl = &l->ssl;
	log_warn("%s:%d: listeners.ssl.%s.ssl_options: %s", ssl->file ? ssl->file : (l->file ? l->file : ld->cfg->source),
		 ssl->file ? ssl->line : l->line, l->name, msg);
}

/* Settings that contradict each other refuse to start; settings without effect warn. */
static bool validate_ssl(struct cfg_reader *ld, struct cfg_listener *l)
{
	struct cfg_ssl *ssl = &l->ssl;
	if (ssl->n_managed_certs) {
		if (ssl->certfile || ssl->keyfile)
			ssl_warn(ld, l, "certfile and keyfile are ignored when managed_certs is set");
		if (ssl->ocsp.enable_ocsp_stapling)
			return ssl_fail(ld, l, "managed_certs cannot be combined with OCSP stapling (ocsp.enable_ocsp_stapling)");
	} else if (!ssl->certfile && !ssl->keyfile) {
		ssl->dev_cert = true;
	} else if (!ssl->certfile || !ssl->keyfile) {
		return ssl_fail(ld, l, "%s is set but %s is missing", ssl->certfile ? "certfile" : "keyfile",
				ssl->certfile ? "keyfile" : "certfile");
	}
	if (ssl->verify_peer && !ssl->cacertfile && !ssl->dev_cert)
		return ssl_fail(ld, l, "verify = verify_peer needs a cacertfile to verify client certificates against");
	if (!ssl->verify_peer) {
		if (ssl->enable_crl_check)
			return ssl_fail(ld, l, "enable_crl_check needs verify = verify_peer (no client certificate is checked)");
		if (ssl->n_crlfiles)
			return ssl_fail(ld, l, "crlfile needs verify = verify_peer (no client certificate is checked)");
		if (ssl->ocsp_client.enable)
			return ssl_fail(ld, l, "ocsp_client needs verify = verify_peer (no client certificate is checked)");
		if (ssl->fail_if_no_peer_cert)
			ssl_warn(ld, l, "fail_if_no_peer_cert = true has no effect with verify = verify_none (clients are not "
					"asked for a certificate)");
		if (ssl->partial_chain != CFG_PARTIAL_CHAIN_OFF)
			ssl_warn(ld, l, "partial_chain has no effect with verify = verify_none");
		if (ssl->ext_key_usage || ssl->n_ext_key_usage_oids)
			ssl_warn(ld, l, "verify_peer_ext_key_usage has no effect with verify = verify_none");
	}
	if (ssl->crl_check_chain && !ssl->enable_crl_check && !ssl->n_crlfiles)
		ssl_warn(ld, l, "crl_check_chain has no effect without enable_crl_check or crlfile");
	if (ssl->ocsp.enable_ocsp_stapling && (!ssl->ocsp.responder_url || !ssl->ocsp.issuer_pem))
		return ssl_fail(ld, l, "ocsp.enable_ocsp_stapling needs ocsp.responder_url and ocsp.issuer_pem");
	if (ssl->versions & (CFG_TLS_V1 | CFG_TLS_V1_1))
		ssl_warn(ld, l, "versions lists tlsv1/tlsv1.1: OpenSSL's security level is lowered to 0 for this "
				"listener so these old protocols can work");
	if (ssl->session_tickets != CFG_TICKETS_DISABLED && !(ssl->versions & CFG_TLS_V1_3))
		ssl_warn(ld, l, "session_tickets has no effect without tlsv1.3 in versions");
	if (ssl->session_tickets == CFG_TICKETS_STATEFUL && !ssl->reuse_sessions)
		return ssl_fail(ld, l, "session_tickets = stateful needs reuse_sessions = true (the server's session cache)");
	if (ssl->handshake_timeout_ms == 0)
		return ssl_fail(ld, l, "handshake_timeout must be positive");
	return true;
}

/* Checks that need the whole config. */
static bool validate(struct cfg_reader *ld)
{
	struct config *cfg = ld->cfg;
	bool psk_listener = false;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		struct cfg_listener *l = &cfg->listeners[i];
		if (!l->enable || l->type != CFG_LISTENER_SSL)
			continue;
		if (!validate_ssl(ld, l))
			return false;
		if (l->ssl.versions & (CFG_TLS_V1_2 | CFG_TLS_V1_1 | CFG_TLS_V1))
			psk_listener = true;
	}
	if (cfg->psk.enable) {
		if (!cfg->psk.init_file) {
			snprintf(ld->err, ld->errlen, "%s: psk_authentication.enable needs psk_authentication.init_file",
				 cfg->source);
			return false;
		}
		if (!cfg->psk.separator || !*cfg->psk.separator) {
			snprintf(ld->err, ld->errlen, "%s: psk_authentication.separator must not be empty", cfg->source);
			return false;
		}
		if (!psk_listener)
			log_warn("%s: psk_authentication has no effect: PSK cipher suites need an ssl listener with tlsv1.2",
				 cfg->source);
	}
	if (cfg->crl_cache.refresh_interval_ms < 60000) {
		log_warn("%s: crl_cache.refresh_interval below the 1m minimum; using 1m", cfg->source);
		cfg->crl_cache.refresh_interval_ms = 60000;
	}
	return true;
}

/* ---- public ---- */

static void set_defaults(struct config *cfg)
{
	cfg->data_dir = xstrdup("data");
	cfg->workers = 0;
	cfg->tls_fast_keys = true;
	cfg->log_level = LOG_INFO;
	cfg->fsync = CFG_FSYNC_BATCH;
	struct cfg_mqtt *m = &cfg->mqtt;
	m->max_packet_size = 1024 * 1024;
	m->max_clientid_len = 65535;
	m->idle_timeout_ms = 15000;
	m->use_username_as_clientid = false;
	m->session_expiry_interval_s = 2 * 3600;
	m->max_inflight = 32;
	m->max_mqueue_len = 1000;
	m->mqueue_store_qos0 = true;
	m->retain_available = true;
	m->wildcard_subscription = true;
	m->shared_subscription = true;
	m->keepalive_multiplier = 1.5;
	m->server_keepalive_s = 0;
	m->max_topic_alias = 65535;
	m->max_qos_allowed = 2;
	m->max_topic_levels = 128;
	m->retry_interval_ms = 30000;
	m->max_awaiting_rel = 100;
	m->await_rel_timeout_ms = 300000;
	m->max_subscriptions = 0;
	m->message_expiry_interval_s = 0;
	cfg->crl_cache.refresh_interval_ms = 15 * 60 * 1000;
	cfg->crl_cache.http_timeout_ms = 15000;
	cfg->crl_cache.capacity = 100;
	cfg->psk.separator = xstrdup(":");
	cfg->authn_settings.ignore_backend_failures = true;
	cfg->authn_settings.cache_ttl_ms = 60000;
	cfg->authn_settings.cache_max_count = 1000000;
	cfg->authz = authz_config_default();
	cfg->flapping.window_time_ms = 60000;
	cfg->flapping.max_count = 15;
	cfg->flapping.ban_time_ms = 300000;
}

static struct config *new_config(const char *source, bool loopback)
{
	struct config *cfg = xcalloc(1, sizeof *cfg);
	cfg->source = xstrdup(source);
	set_defaults(cfg);
	add_listener(cfg, CFG_LISTENER_TCP, "default", "1883", loopback);
	add_listener(cfg, CFG_LISTENER_SSL, "default", "8883", loopback);
	return cfg;
}

static struct config *load_tree(struct hocon_node *root, const char *source, char *err, size_t errlen)
{
	struct config *cfg = new_config(source, false);
	struct cfg_reader ld = { .err = err, .errlen = errlen, .cfg = cfg };
	bool ok = load_root(&ld, root) && validate(&ld);
	hocon_free(root);
	if (!ok) {
		config_free(cfg);
		return NULL;
	}
	return cfg;
}

struct config *config_load(const char *path, char *err, size_t errlen)
{
	struct hocon_error he;
	struct hocon_node *root = hocon_parse_file(path, &he);
	if (!root) {
		snprintf(err, errlen, "%s:%d: %s", he.file, he.line, he.msg);
		return NULL;
	}
	return load_tree(root, path, err, errlen);
}

struct config *config_load_string(const char *text, const char *name, char *err, size_t errlen)
{
	struct hocon_error he;
	struct hocon_node *root = hocon_parse_string(text, strlen(text), name, &he);
	if (!root) {
		snprintf(err, errlen, "%s:%d: %s", he.file, he.line, he.msg);
		return NULL;
	}
	return load_tree(root, name, err, errlen);
}

struct config *config_default(void)
{
	struct config *cfg = new_config("(embedded default)", true);
	for (size_t i = 0; i < cfg->n_listeners; i++)
		if (cfg->listeners[i].type == CFG_LISTENER_SSL)
			cfg->listeners[i].ssl.dev_cert = true;
	return cfg;
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		struct cfg_listener *l = &cfg->listeners[i];
		free(l->name);
		free(l->id);
		free(l->bind_str);
		free(l->access_rules);
		free(l->mountpoint);
		free(l->ssl.cacertfile);
		free(l->ssl.certfile);
		free(l->ssl.keyfile);
		free(l->ssl.password);
		free(l->ssl.ciphers);
		free(l->ssl.ciphersuites);
		cfgr_free_list(l->ssl.crlfiles);
		for (size_t k = 0; k < l->ssl.n_ext_key_usage_oids; k++)
			free(l->ssl.ext_key_usage_oids[k]);
		free(l->ssl.ext_key_usage_oids);
		free(l->ssl.dhfile);
		free(l->ssl.ocsp.responder_url);
		free(l->ssl.ocsp.issuer_pem);
		for (size_t k = 0; k < l->ssl.n_managed_certs; k++) {
			free(l->ssl.managed_certs[k].bundle_name);
			free(l->ssl.managed_certs[k].sni);
			free(l->ssl.managed_certs[k].ns);
		}
		free(l->ssl.managed_certs);
		free(l->proxy_trusted);
		auth_config_free(l->authn);
	}
	auth_config_free(cfg->authn);
	authz_config_free(cfg->authz);
	attrs_init_free(cfg->attrs_init);
	free(cfg->banned.bootstrap_file);
	free(cfg->psk.init_file);
	free(cfg->psk.separator);
	free(cfg->listeners);
	while (cfg->strings) {
		struct cfg_string *x = cfg->strings;
		cfg->strings = x->next;
		free(x);
	}
	free(cfg->data_dir);
	free(cfg->source);
	free(cfg);
}
