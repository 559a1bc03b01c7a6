/* bulwark: an MQTT broker for device fleets that authenticate with X.509 certificates.
 *
 *   bulwark [-c FILE]          run the broker (embedded default without -c)
 *   bulwark --check -c FILE    validate a configuration and exit 0/1
 *   bulwark --version
 *   bulwark ctl ...            talk to a running broker (see ctl/ctl.h)
 */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bans/bans.h"
#include "broker/broker.h"
#include "config/config.h"
#include "core/log.h"
#include "ctl/ctl.h"
#include "tls/tls.h"

#include "version.h"

static void usage(FILE *out)
{
	fprintf(out,
		"usage: bulwark [-c FILE]            run the broker (without -c: 127.0.0.1:1883 and :8883, data in ./data)\n"
		"       bulwark --check -c FILE      validate a configuration file\n"
		"       bulwark --version\n"
		"       bulwark ctl [-c FILE | --data-dir DIR] COMMAND...\n");
}

/* --check: the config parses, and every certificate, key and CA it names loads and matches. */
static int check_config(const struct config *cfg)
{
	tls_global_init();
	for (size_t i = 0; i < cfg->n_listeners; i++) {
		const struct cfg_listener *l = &cfg->listeners[i];
		if (!l->enable || l->type != CFG_LISTENER_SSL || l->ssl.dev_cert)
			continue;
		char err[512];
		struct tls_deps deps = { .data_dir = cfg->data_dir, .psk = &cfg->psk };
		if (!tls_check_config(l, &deps, err, sizeof err)) {
			fprintf(stderr, "bulwark: %s:%d: listeners.ssl.%s.ssl_options: %s\n",
				l->ssl.file ? l->ssl.file : cfg->source, l->ssl.line, l->name, err);
			return 1;
		}
	}
	if (cfg->banned.bootstrap_file) {
		char err[512];
		if (!bans_check_bootstrap(cfg->banned.bootstrap_file, err, sizeof err)) {
			fprintf(stderr, "bulwark: banned: %s\n", err);
			return 1;
		}
	}
	printf("%s: configuration OK\n", cfg->source);
	return 0;
}

int main(int argc, char **argv)
{
	/* A write past RLIMIT_FSIZE fails with EFBIG (the store reports it) instead of killing us. */
	signal(SIGXFSZ, SIG_IGN);
	if (argc >= 2 && strcmp(argv[1], "ctl") == 0)
		return ctl_client_main(argc - 1, argv + 1);
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check", no_argument, NULL, 'k' },
		{ "version", no_argument, NULL, 'V' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *path = NULL;
	bool check = false;
	int ch;
	while ((ch = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'c':
			path = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'V':
			printf("bulwark %s\n", BULWARK_VERSION);
			return 0;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "bulwark: unexpected argument: %s\n", argv[optind]);
		usage(stderr);
		return 2;
	}
	if (check && !path) {
		fprintf(stderr, "bulwark: --check needs -c FILE\n");
		return 2;
	}
	struct config *cfg;
	if (path) {
		char err[1024];
		cfg = config_load(path, err, sizeof err);
		if (!cfg) {
			fprintf(stderr, "bulwark: %s\n", err);
			return 1;
		}
	} else {
		cfg = config_default();
	}
	log_set_level((enum log_level)cfg->log_level);
	int status = check ? check_config(cfg) : broker_main(cfg, path);
	config_free(cfg);
	return status;
}
