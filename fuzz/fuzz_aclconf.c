/* libFuzzer target: the ACL parsers (authz/acl.c). Every input is parsed as acl.conf text
 * (EMQX's Erlang-term grammar), as a JSON ACL (JWT claim / HTTP `acl`) and as one topic of
 * acl_add; whatever parses is then matched against a few clients and requests (placeholders
 * with defined and undefined values, $-topics, wildcards in the request). Errors must name
 * the file and a line within the input. Seed corpus: fuzz/corpus/aclconf/. */
#include <arpa/inet.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "auth/client_attrs.h"
#include "authz/acl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static void exercise(const struct acl *a)
{
	static const char *const topics[] = {
		"a", "a/b", "$SYS/x", "#", "+/#", "u/alice/x", "c/dev1", "g/g7/1", "x//y", "/", "t/\xc3\xa9",
	};
	struct client_attrs attrs = { 0 };
	client_attrs_set(&attrs, "group", "g7");
	struct authz_client full = {
		.username = "alice", .username_len = 5, .clientid = "dev1", .peerhost = "10.1.2.3",
		.cert_common_name = "cn", .cert_subject = "CN=cn,O=Acme", .listener = "tcp:default",
		.zone = "default", .attrs = &attrs, .proto_version = 5,
	};
	struct sockaddr_in *v4 = (struct sockaddr_in *)&full.peer;
	v4->sin_family = AF_INET;
	inet_pton(AF_INET, "10.1.2.3", &v4->sin_addr);
	static const char nul_user[] = "a\0b";
	struct authz_client empty = { .username = nul_user, .username_len = 3 };
	struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&empty.peer;
	v6->sin6_family = AF_INET6;
	inet_pton(AF_INET6, "2001:db8::1", &v6->sin6_addr);
	const struct authz_client *clients[] = { &full, &empty };
	for (size_t c = 0; c < 2; c++) {
		for (size_t t = 0; t < sizeof topics / sizeof topics[0]; t++) {
			for (int type = AUTHZ_PUBLISH; type <= AUTHZ_SUBSCRIBE; type++) {
				struct authz_action act = { .type = (enum authz_action_type)type, .topic = topics[t],
							    .topic_len = strlen(topics[t]), .qos = (uint8_t)(t % 3),
							    .retain = t & 1 };
				enum authz_verdict v = acl_check(a, clients[c], &act);
				check(v == AUTHZ_NOMATCH || v == AUTHZ_ALLOW || v == AUTHZ_DENY);
			}
		}
	}
	client_attrs_clear(&attrs);
}

static int lines_in(const uint8_t *data, size_t size)
{
	int n = 1;
	for (size_t i = 0; i < size; i++)
		n += data[i] == '\n';
	return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 1 << 16)
		return 0;
	char err[512];
	memset(err, 0, sizeof err);
	struct acl *a = acl_parse_conf((const char *)data, size, "fuzz", err, sizeof err);
	if (a) {
		exercise(a);
		acl_free(a);
	} else {
		check(memchr(err, '\0', sizeof err) != NULL);
		check(strncmp(err, "fuzz:", 5) == 0);
		int line = atoi(err + 5);
		check(line >= 1 && line <= lines_in(data, size));
	}

	char *text = malloc(size + 1);
	memcpy(text, data, size);
	text[size] = '\0';
	err[0] = '\0';
	a = acl_parse_json(text, err, sizeof err);
	if (a) {
		exercise(a);
		acl_free(a);
	} else {
		check(err[0] != '\0' && memchr(err, '\0', sizeof err) != NULL);
	}

	a = acl_new();
	struct acl_rule_spec spec = { .allow = size & 1, .actions = AUTHZ_PUBLISH | AUTHZ_SUBSCRIBE,
				      .qos_mask = (uint8_t)(size & 7), .retain = (int)(size % 3) - 1, .topic = text,
				      .topic_len = size };
	if (acl_add(a, &spec, err, sizeof err))
		check(acl_count(a) == 1);
	exercise(a);
	acl_free(a);
	free(text);
	return 0;
}
