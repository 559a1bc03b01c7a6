/* The broker's configuration, as loaded from HOCON (SPEC §2) or the embedded default.
 *
 * A struct config is immutable once loaded: reloads build a new one. Durations are
 * stored in milliseconds (suffix _ms) or seconds (suffix _s), sizes in bytes.
 */
#ifndef BW_CONFIG_H
#define BW_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "config/values.h"

enum cfg_listener_type { CFG_LISTENER_TCP, CFG_LISTENER_SSL };

enum cfg_enable_authn { CFG_AUTHN_TRUE, CFG_AUTHN_FALSE, CFG_AUTHN_QUICK_DENY_ANONYMOUS };

enum cfg_fsync { CFG_FSYNC_ALWAYS, CFG_FSYNC_BATCH, CFG_FSYNC_NEVER };

/* mqtt.peer_cert_as_username / peer_cert_as_clientid */
enum cfg_peer_cert_as { CFG_PEER_CERT_DISABLED, CFG_PEER_CERT_CN, CFG_PEER_CERT_DN, CFG_PEER_CERT_CRT, CFG_PEER_CERT_PEM,
			CFG_PEER_CERT_MD5 };

/* One `access_rules` entry: "allow 10.0.0.0/8", "deny all". */
struct cfg_access_rule {
	bool allow;
	bool all;
	struct cfg_cidr cidr;
};

/* TLS protocol versions (ssl_options.versions). */
enum {
	CFG_TLS_V1 = 1u << 0,
	CFG_TLS_V1_1 = 1u << 1,
	CFG_TLS_V1_2 = 1u << 2,
	CFG_TLS_V1_3 = 1u << 3,
};

enum cfg_session_tickets { CFG_TICKETS_DISABLED, CFG_TICKETS_STATELESS, CFG_TICKETS_STATELESS_WITH_CERT, CFG_TICKETS_STATEFUL };

/* ssl_options.partial_chain, EMQX's meaning: which certificates of cacertfile may be trust
 * anchors besides self-signed roots. */
enum cfg_partial_chain {
	CFG_PARTIAL_CHAIN_OFF,      /* false / unset: a full chain to a root is required */
	CFG_PARTIAL_CHAIN_LAST,     /* true / cacert_from_cacertfile: the last certificate of cacertfile */
	CFG_PARTIAL_CHAIN_LAST_TWO, /* two_cacerts_from_cacertfile: either of the last two */
};

/* verify_peer_ext_key_usage: every listed usage must be in the leaf's extendedKeyUsage. */
enum {
	CFG_EKU_CLIENT_AUTH = 1u << 0,
	CFG_EKU_SERVER_AUTH = 1u << 1,
	CFG_EKU_CODE_SIGNING = 1u << 2,
	CFG_EKU_EMAIL_PROTECTION = 1u << 3,
	CFG_EKU_TIME_STAMPING = 1u << 4,
	CFG_EKU_OCSP_SIGNING = 1u << 5,
};

struct cfg_ocsp {
	bool enable_ocsp_stapling;
	char *responder_url;
	char *issuer_pem;
	uint64_t refresh_interval_ms;      /* default 5m, minimum 1m */
	uint64_t refresh_http_timeout_ms;  /* default 15s */
};

struct cfg_ocsp_client {
	bool enable;                       /* check client certificates against their AIA responder */
	bool fail_closed;                  /* fail_mode = closed */
	uint64_t timeout_ms;               /* how long CONNACK waits for an answer, default 5s */
};

struct cfg_managed_cert {
	char *bundle_name;
	char *sni;                         /* NULL: default only */
	char *ns;                          /* namespace, default "global" */
};

struct cfg_ssl {
	char *cacertfile;      /* NULL: none */
	char *certfile;        /* leaf then intermediates */
	char *keyfile;
	char *password;        /* key passphrase (after resolving file://) or NULL */
	bool verify_peer;      /* verify = verify_peer */
	bool fail_if_no_peer_cert;
	uint32_t depth;        /* max intermediates, default 10 */
	uint32_t versions;     /* CFG_TLS_* bits, default TLS 1.2 + 1.3 */
	char *ciphers;         /* TLS <= 1.2 cipher list (OpenSSL syntax, ':'-joined), NULL = default */
	char *ciphersuites;    /* TLS 1.3 suites (':'-joined), NULL = default */
	bool honor_cipher_order;          /* default true */
	bool reuse_sessions;              /* default true: stateful session resumption */
	enum cfg_session_tickets session_tickets; /* default disabled */
	uint64_t handshake_timeout_ms;    /* default 15s */
	enum cfg_partial_chain partial_chain;
	uint32_t ext_key_usage;           /* CFG_EKU_* bits required, 0 = not checked */
	char **ext_key_usage_oids;        /* "OID:1.2.3" entries, dotted form */
	size_t n_ext_key_usage_oids;
	bool enable_crl_check;            /* fetch CRLs from the client certificate's distribution points */
	char **crlfiles;                  /* crlfile: PEM or DER files, one or more */
	size_t n_crlfiles;
	bool crl_check_chain;             /* false: leaf only */
	char *dhfile;
	struct cfg_ocsp ocsp;
	struct cfg_ocsp_client ocsp_client;
	struct cfg_managed_cert *managed_certs;
	size_t n_managed_certs;
	bool dev_cert;         /* no certfile given: use the generated development certificate */
	const char *file;      /* position of the ssl_options block, for messages */
	int line;
};

struct cfg_listener {
	enum cfg_listener_type type;
	char *name;            /* "default" */
	char *id;              /* "tcp:default" */
	bool enable;
	char *bind_str;
	struct sockaddr_storage bind;
	socklen_t bind_len;
	uint64_t max_connections;   /* 0 = infinity */
	enum cfg_enable_authn enable_authn;
	struct cfg_access_rule *access_rules;
	size_t n_access_rules;
	char *mountpoint;      /* "" or a prefix, may hold ${clientid} / ${username} */
	bool proxy_protocol;   /* PROXY v1/v2 header expected before MQTT/TLS */
	uint64_t proxy_protocol_timeout_ms;
	/* tcp_options: a connection whose output makes no write progress for send_timeout is
	 * closed when send_timeout_close (default 15s, true; EMQX's gen_tcp options). */
	uint64_t send_timeout_ms;
	bool send_timeout_close;
	struct cfg_cidr *proxy_trusted;   /* proxy_protocol_trusted, default 127.0.0.1/32 */
	size_t n_proxy_trusted;
	struct auth_chain_cfg *authn; /* listener `authentication` chain (replaces the global one), NULL = none */
	/* Rate limits (EMQX limiter), units a second, 0 = infinity: accepted connections for the
	 * listener (all workers), PUBLISH packets and bytes per connection. The bursts are the
	 * bucket capacities (max_conn_burst, messages_burst, bytes_burst); 0 = one second's worth. */
	double max_conn_rate, messages_rate, bytes_rate;
	uint64_t max_conn_burst, messages_burst, bytes_burst;
	struct cfg_ssl ssl;    /* CFG_LISTENER_SSL only */
	const char *file;
	int line;
};

struct cfg_mqtt {
	uint32_t max_packet_size;
	uint32_t max_clientid_len;
	uint64_t idle_timeout_ms;
	bool use_username_as_clientid;
	uint32_t session_expiry_interval_s;
	uint32_t max_inflight;        /* also advertised as Receive Maximum */
	uint32_t max_mqueue_len;      /* 0 = unlimited */
	bool mqueue_store_qos0;
	bool retain_available;
	bool wildcard_subscription;
	bool shared_subscription;
	double keepalive_multiplier;
	uint32_t server_keepalive_s;  /* 0 = disabled */
	uint16_t max_topic_alias;
	uint8_t max_qos_allowed;
	uint32_t max_topic_levels;
	uint64_t retry_interval_ms;
	uint32_t max_awaiting_rel;
	uint64_t await_rel_timeout_ms;
	bool upgrade_qos;
	bool ignore_loop_deliver;
	uint32_t max_subscriptions;   /* 0 = infinity */
	uint32_t message_expiry_interval_s; /* 0 = infinity */
	bool strict_mode;
	enum cfg_peer_cert_as peer_cert_as_username;
	enum cfg_peer_cert_as peer_cert_as_clientid;
	bool takeover_requires_same_identity; /* ★ */
};

struct cfg_crl_cache {
	uint64_t refresh_interval_ms;  /* default 15m, minimum 1m */
	uint64_t http_timeout_ms;      /* default 15s */
	uint32_t capacity;             /* cached distribution-point URLs, default 100 */
	bool fail_closed;              /* ★ fail_mode = closed: unreachable or expired CRLs refuse */
};

/* authentication_settings (SPEC §2). */
struct cfg_authn_settings {
	bool ignore_backend_failures;  /* default true: a backend failure counts as "ignore" */
	bool node_cache;               /* cache backend answers */
	uint64_t cache_ttl_ms;         /* default 1m */
	uint32_t cache_max_count;      /* default 1000000 */
};

struct auth_chain_cfg;

struct cfg_psk {
	bool enable;
	char *init_file;               /* lines identity<separator>secret */
	char *separator;               /* default ":" */
};

/* banned { bootstrap_file } (bans/bans.h). */
struct cfg_banned {
	char *bootstrap_file;          /* CSV imported when the ban tables are empty, NULL = none */
};

/* flapping_detect (reference/emqx.md §6). */
struct cfg_flapping {
	bool enable;                   /* default false */
	uint64_t window_time_ms;       /* default 1m */
	uint32_t max_count;            /* default 15 */
	uint64_t ban_time_ms;          /* default 5m */
};

struct authz_cfg;                      /* authz/authz.h */
struct attrs_init_cfg;                 /* mqtt.client_attrs_init, auth/attrs_init.h */

struct cfg_string {
	struct cfg_string *next;
	char s[];
};

struct config {
	char *source;          /* config file path, or "(embedded default)" */
	char *data_dir;
	uint32_t workers;      /* 0 = one per core */
	bool tls_fast_keys;    /* RSA/EC keys on OpenSSL's built-in methods (tls/fastkeys.c) */
	int log_level;         /* enum log_level */
	struct cfg_mqtt mqtt;
	struct cfg_listener *listeners;
	size_t n_listeners;
	enum cfg_fsync fsync;
	struct cfg_crl_cache crl_cache;
	struct cfg_psk psk;
	struct auth_chain_cfg *authn;  /* global `authentication` chain, NULL = empty */
	struct cfg_authn_settings authn_settings;
	struct authz_cfg *authz;       /* `authorization`, never NULL after loading */
	struct cfg_banned banned;
	struct cfg_flapping flapping;
	struct attrs_init_cfg *attrs_init; /* mqtt.client_attrs_init, NULL = none */
	/* File names referenced by positions above, owned by the config. */
	struct cfg_string *strings;
};

/* Load and validate a config file. On error returns NULL and writes one line
 * ("file:line: key: message") to err. Warnings are logged. */
struct config *config_load(const char *path, char *err, size_t errlen);
/* Load from text (tests, --check of strings). */
struct config *config_load_string(const char *text, const char *name, char *err, size_t errlen);
/* The embedded default: tcp 127.0.0.1:1883, ssl 127.0.0.1:8883 with the development certificate. */
struct config *config_default(void);
void config_free(struct config *c);

#endif
