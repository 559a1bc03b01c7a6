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

/* One `access_rules` entry: "allow 10.0.0.0/8", "deny all". */
struct cfg_access_rule {
	bool allow;
	bool all;
	struct cfg_cidr cidr;
};

struct cfg_ssl {
	char *cacertfile;      /* NULL: none */
	char *certfile;        /* leaf then intermediates */
	char *keyfile;
	char *password;        /* key passphrase (after resolving file://) or NULL */
	bool verify_peer;      /* verify = verify_peer */
	bool fail_if_no_peer_cert;
	uint32_t depth;        /* max intermediates, default 10 */
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
};

struct cfg_string {
	struct cfg_string *next;
	char s[];
};

struct config {
	char *source;          /* config file path, or "(embedded default)" */
	char *data_dir;
	uint32_t workers;      /* 0 = one per core */
	int log_level;         /* enum log_level */
	struct cfg_mqtt mqtt;
	struct cfg_listener *listeners;
	size_t n_listeners;
	enum cfg_fsync fsync;
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
