/* libFuzzer target: the HOCON parser (config/hocon.c) and the value helpers (config/values.c).
 * Parses arbitrary bytes with includes disabled (HOCON_NO_INCLUDE: fuzz input must not reach
 * the file system), walks the whole tree checking its invariants, runs every scalar through
 * the value parsers, and frees. Seed corpus: fuzz/corpus/hocon/. */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "config/hocon.h"
#include "config/values.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

static void values(const char *s)
{
	uint64_t u;
	double d;
	bool b;
	struct cfg_cidr c;
	struct sockaddr_storage ss;
	socklen_t len;
	(void)cfg_parse_duration_ms(s, &u);
	(void)cfg_parse_duration_s(s, &u);
	(void)cfg_parse_bytesize(s, &u);
	(void)cfg_parse_rate(s, &d, &b);
	if (cfg_parse_cidr(s, &c)) {
		check(c.prefix <= (c.family == AF_INET ? 32 : 128));
		if (cfg_parse_bind("127.0.0.1:1883", &ss, &len))
			(void)cfg_cidr_match(&c, (const struct sockaddr *)&ss);
	}
	if (cfg_parse_bind(s, &ss, &len))
		check(len > 0 && len <= sizeof ss);
}

static size_t walk(const struct hocon_node *n, int depth)
{
	check(n != NULL && depth <= 64 && n->file != NULL && n->line >= 1);
	size_t count = 1;
	switch (n->type) {
	case HOCON_OBJECT:
		check(n->str == NULL);
		for (size_t i = 0; i < n->n; i++) {
			const struct hocon_member *m = &n->members[i];
			check(m->key != NULL && m->file != NULL && m->line >= 1);
			check(hocon_get_member(n, m->key) == m); /* keys are unique */
			count += walk(m->value, depth + 1);
		}
		break;
	case HOCON_ARRAY:
		check(n->str == NULL);
		for (size_t i = 0; i < n->n; i++)
			count += walk(n->items[i], depth + 1);
		break;
	default:
		check(n->str != NULL && n->n == 0);
		(void)strlen(n->str);
		if (n->type == HOCON_BOOL)
			check(strcmp(n->str, n->boolean ? "true" : "false") == 0);
		values(n->str);
		break;
	}
	(void)hocon_type_str(n->type);
	return count;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct hocon_error err;
	struct hocon_node *root = hocon_parse_string_ex((const char *)data, size, "fuzz", &err, HOCON_NO_INCLUDE);
	if (!root) {
		check(err.msg[0] != '\0' && memchr(err.msg, '\0', sizeof err.msg) != NULL);
		check(err.line >= 1);
		return 0;
	}
	check(root->type == HOCON_OBJECT);
	walk(root, 0);
	(void)hocon_get_path(root, "listeners.ssl.default.ssl_options.verify");
	(void)hocon_get_path(root, "a.b");
	hocon_free(root);
	return 0;
}
