/* libFuzzer target for the PROXY protocol parser (src/net/proxy.c).
 *
 * Input: the first bytes of a connection. They are classified and parsed from an
 * exact-size heap copy (ASan catches a read past the end), then the results are checked:
 *   - detect and parse agree (NONE is INVALID, MORE is NEED_MORE);
 *   - OK: 15 <= used <= size, a v1 header is at most 107 bytes; parsing exactly the
 *     header again gives the same result, and every strict prefix of it is NEED_MORE
 *     (all of them for short headers, a sample for long ones);
 *   - NEED_MORE: the announced total is 0 or more than what was given;
 *   - the strings are NUL-terminated at their lengths, the flags are consistent with the
 *     identity rule, and proxy_verified_cn says the same as the flags;
 *   - a v2 header re-encoded from the result (addresses, authority, SSL TLV with the CN)
 *     parses back to the same values.
 * Any violation aborts.
 */
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "net/proxy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)              \
	do {                     \
		if (!(cond))     \
			abort(); \
	} while (0)

static enum proxy_result parse_copy(const uint8_t *data, size_t n, struct proxy_info *info, size_t *used)
{
	uint8_t *p = malloc(n ? n : 1);
	if (n)
		memcpy(p, data, n);
	const char *err = NULL;
	enum proxy_result r = proxy_parse(p, n, info, used, &err);
	free(p);
	CHECK((r == PROXY_INVALID) == (err != NULL));
	return r;
}

static void check_info(const struct proxy_info *in)
{
	CHECK(in->version == 1 || in->version == 2);
	CHECK(in->authority_len <= PROXY_AUTHORITY_MAX && strlen(in->authority) == in->authority_len);
	CHECK(in->cn_len <= PROXY_CN_MAX && strlen(in->cn) == in->cn_len);
	CHECK(memchr(in->ssl_version, 0, sizeof in->ssl_version) && memchr(in->cipher, 0, sizeof in->cipher));
	CHECK(in->has_authority || in->authority_len == 0);
	CHECK(in->has_cn || in->cn_len == 0);
	CHECK(in->cert_verified == (in->ssl && in->cert_presented && in->verify == 0));
	if (in->command_local)
		CHECK(in->local && !in->has_ssl && !in->has_cn && !in->has_authority);
	if (in->version == 1)
		CHECK(!in->has_ssl && !in->has_cn && !in->has_authority);
	if (in->local) {
		CHECK(in->src.ss_family == 0 && in->dst.ss_family == 0);
	} else {
		CHECK(in->src.ss_family == AF_INET || in->src.ss_family == AF_INET6);
		CHECK(in->src.ss_family == in->dst.ss_family);
	}
	const char *cn = proxy_verified_cn(in);
	CHECK((cn != NULL) == (in->cert_verified && in->has_cn && in->cn_len > 0 && !in->command_local));
	if (cn)
		CHECK(cn == in->cn);
}

/* Re-encode what a header said as a v2 header. */
static size_t encode_v2(const struct proxy_info *in, uint8_t *out)
{
	size_t n = 0;
	memcpy(out, proxy_v2_signature, 12);
	n = 12;
	out[n++] = 0x21;
	if (in->local) {
		out[n++] = 0x00;
	} else if (in->src.ss_family == AF_INET) {
		out[n++] = 0x11;
	} else {
		out[n++] = 0x21;
	}
	n += 2; /* length, below */
	if (!in->local && in->src.ss_family == AF_INET) {
		const struct sockaddr_in *s = (const void *)&in->src, *d = (const void *)&in->dst;
		memcpy(out + n, &s->sin_addr, 4);
		memcpy(out + n + 4, &d->sin_addr, 4);
		memcpy(out + n + 8, &s->sin_port, 2);
		memcpy(out + n + 10, &d->sin_port, 2);
		n += 12;
	} else if (!in->local) {
		const struct sockaddr_in6 *s = (const void *)&in->src, *d = (const void *)&in->dst;
		memcpy(out + n, &s->sin6_addr, 16);
		memcpy(out + n + 16, &d->sin6_addr, 16);
		memcpy(out + n + 32, &s->sin6_port, 2);
		memcpy(out + n + 34, &d->sin6_port, 2);
		n += 36;
	}
	if (in->has_authority) {
		out[n++] = PP2_TYPE_AUTHORITY;
		out[n++] = (uint8_t)(in->authority_len >> 8);
		out[n++] = (uint8_t)in->authority_len;
		memcpy(out + n, in->authority, in->authority_len);
		n += in->authority_len;
	}
	if (in->has_ssl) {
		size_t start = n;
		out[n++] = PP2_TYPE_SSL;
		n += 2;
		out[n++] = (uint8_t)((in->ssl ? PP2_CLIENT_SSL : 0) | (in->cert_presented ? PP2_CLIENT_CERT_CONN : 0));
		out[n++] = (uint8_t)(in->verify >> 24);
		out[n++] = (uint8_t)(in->verify >> 16);
		out[n++] = (uint8_t)(in->verify >> 8);
		out[n++] = (uint8_t)in->verify;
		if (in->has_cn) {
			out[n++] = PP2_SUBTYPE_SSL_CN;
			out[n++] = (uint8_t)(in->cn_len >> 8);
			out[n++] = (uint8_t)in->cn_len;
			memcpy(out + n, in->cn, in->cn_len);
			n += in->cn_len;
		}
		size_t vlen = n - start - 3;
		out[start + 1] = (uint8_t)(vlen >> 8);
		out[start + 2] = (uint8_t)vlen;
	}
	size_t len = n - 16;
	out[14] = (uint8_t)(len >> 8);
	out[15] = (uint8_t)len;
	return n;
}

static void check_roundtrip(const struct proxy_info *in)
{
	if (in->command_local)
		return;
	static uint8_t buf[1024];
	size_t n = encode_v2(in, buf);
	struct proxy_info out;
	size_t used = 0;
	CHECK(parse_copy(buf, n, &out, &used) == PROXY_OK);
	CHECK(used == n);
	CHECK(out.local == in->local);
	if (!in->local) {
		CHECK(out.src_len == in->src_len && memcmp(&out.src, &in->src, in->src_len) == 0);
		CHECK(out.dst_len == in->dst_len && memcmp(&out.dst, &in->dst, in->dst_len) == 0);
	}
	CHECK(out.has_authority == in->has_authority && strcmp(out.authority, in->authority) == 0);
	CHECK(out.has_ssl == in->has_ssl && out.ssl == in->ssl && out.cert_presented == in->cert_presented);
	CHECK(out.verify == in->verify && out.cert_verified == in->cert_verified);
	CHECK(out.has_cn == in->has_cn && out.cn_len == in->cn_len && memcmp(out.cn, in->cn, in->cn_len) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	/* Longer inputs add nothing: a header is at most PROXY_V2_MAX bytes. */
	if (size > PROXY_V2_MAX + 16)
		size = PROXY_V2_MAX + 16;
	struct proxy_info info;
	size_t used = 12345;
	uint8_t *p = malloc(size ? size : 1);
	if (size)
		memcpy(p, data, size);
	enum proxy_detect d = proxy_detect(p, size);
	free(p);
	enum proxy_result r = parse_copy(data, size, &info, &used);
	if (d == PROXY_DETECT_NONE)
		CHECK(r == PROXY_INVALID);
	if (d == PROXY_DETECT_MORE)
		CHECK(r == PROXY_NEED_MORE && used == 0);
	if (r == PROXY_NEED_MORE) {
		CHECK(used == 0 || used > size);
		CHECK(used <= PROXY_V2_MAX);
		return 0;
	}
	if (r == PROXY_INVALID) {
		CHECK(used == 0);
		return 0;
	}
	CHECK(used >= 15 && used <= size && used <= PROXY_V2_MAX);
	if (info.version == 1)
		CHECK(used <= PROXY_V1_MAX);
	check_info(&info);
	/* The header alone parses the same. */
	struct proxy_info again;
	size_t used2 = 0;
	CHECK(parse_copy(data, used, &again, &used2) == PROXY_OK && used2 == used);
	CHECK(memcmp(&again, &info, sizeof info) == 0);
	/* Every strict prefix is NEED_MORE (all for short headers, a sample otherwise). */
	size_t step = used <= 512 ? 1 : used / 97;
	for (size_t k = 0; k < used; k += step) {
		size_t u = 0;
		CHECK(parse_copy(data, k, &again, &u) == PROXY_NEED_MORE);
	}
	size_t u = 0;
	CHECK(parse_copy(data, used - 1, &again, &u) == PROXY_NEED_MORE);
	check_roundtrip(&info);
	return 0;
}
