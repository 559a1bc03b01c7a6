#include "net/proxy.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <string.h>

const uint8_t proxy_v2_signature[12] = { 0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A };

static const char v1_prefix[] = "PROXY "; /* 6 bytes */

static enum proxy_result fail(const char **err, const char *why)
{
	if (err)
		*err = why;
	return PROXY_INVALID;
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)((p[0] << 8) | p[1]);
}

static uint32_t be32(const uint8_t *p)
{
	return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}

static size_t min_sz(size_t a, size_t b)
{
	return a < b ? a : b;
}

enum proxy_detect proxy_detect(const uint8_t *p, size_t len)
{
	if (len == 0)
		return PROXY_DETECT_MORE;
	if (p[0] == 'P') {
		if (memcmp(p, v1_prefix, min_sz(len, 5)) != 0)
			return PROXY_DETECT_NONE;
		return len >= 5 ? PROXY_DETECT_V1 : PROXY_DETECT_MORE;
	}
	if (p[0] == proxy_v2_signature[0]) {
		if (memcmp(p, proxy_v2_signature, min_sz(len, sizeof proxy_v2_signature)) != 0)
			return PROXY_DETECT_NONE;
		return len >= sizeof proxy_v2_signature ? PROXY_DETECT_V2 : PROXY_DETECT_MORE;
	}
	return PROXY_DETECT_NONE;
}

/* ---- CRC32c ---- */

uint32_t proxy_crc32c(uint32_t crc, const uint8_t *p, size_t len)
{
	crc = ~crc;
	for (size_t i = 0; i < len; i++) {
		crc ^= p[i];
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
	}
	return ~crc;
}

/* ---- version 1 ---- */

static bool is_digit(uint8_t ch)
{
	return ch >= '0' && ch <= '9';
}

static bool is_hex(uint8_t ch)
{
	return is_digit(ch) || (ch >= 'a' && ch <= 'f') || (ch >= 'A' && ch <= 'F');
}

/* Is p[0..n) (no CR seen) a possible beginning of a valid v1 line? Lets garbage after
 * "PROXY" be refused at once instead of after the timeout. */
static bool v1_prefix_ok(const uint8_t *p, size_t n)
{
	if (memcmp(p, v1_prefix, min_sz(n, 6)) != 0)
		return false;
	if (n <= 6)
		return true;
	const uint8_t *r = p + 6;
	size_t m = n - 6;
	static const char *const kw[] = { "TCP4 ", "TCP6 ", "UNKNOWN" };
	int which = -1;
	for (int k = 0; k < 3; k++) {
		size_t kl = strlen(kw[k]);
		if (memcmp(r, kw[k], min_sz(m, kl)) == 0) {
			if (m <= kl)
				return true;
			which = k;
			break;
		}
	}
	if (which < 0)
		return false;
	if (which == 2)
		return r[7] == ' '; /* "UNKNOWN" then anything up to the CRLF */
	for (size_t i = 5; i < m; i++) {
		uint8_t ch = r[i];
		bool ok = ch == ' ' || is_digit(ch) || ch == '.' || (which == 1 && (is_hex(ch) || ch == ':'));
		if (!ok)
			return false;
	}
	return true;
}

/* A dotted quad: exactly 4 decimal numbers 0..255, no leading zeroes. */
static bool parse_ipv4(const uint8_t *s, size_t n, uint8_t out[4])
{
	size_t i = 0;
	for (int part = 0; part < 4; part++) {
		if (part > 0) {
			if (i >= n || s[i] != '.')
				return false;
			i++;
		}
		size_t start = i;
		unsigned v = 0;
		while (i < n && is_digit(s[i]) && i - start < 3) {
			v = v * 10 + (unsigned)(s[i] - '0');
			i++;
		}
		size_t digits = i - start;
		if (digits == 0 || v > 255 || (digits > 1 && s[start] == '0'))
			return false;
		out[part] = (uint8_t)v;
	}
	return i == n;
}

static bool parse_ipv6(const uint8_t *s, size_t n, uint8_t out[16])
{
	char tmp[INET6_ADDRSTRLEN];
	if (n == 0 || n >= sizeof tmp)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_hex(s[i]) && s[i] != ':' && s[i] != '.')
			return false;
	}
	memcpy(tmp, s, n);
	tmp[n] = '\0';
	return inet_pton(AF_INET6, tmp, out) == 1;
}

/* A decimal port 0..65535, no leading zeroes. */
static bool parse_port(const uint8_t *s, size_t n, uint16_t *out)
{
	if (n == 0 || n > 5 || (n > 1 && s[0] == '0'))
		return false;
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return false;
	*out = (uint16_t)v;
	return true;
}

static void set_in4(struct sockaddr_storage *ss, socklen_t *len, const uint8_t a[4], uint16_t port)
{
	struct sockaddr_in *s4 = (struct sockaddr_in *)(void *)ss;
	memset(ss, 0, sizeof *ss);
	s4->sin_family = AF_INET;
	memcpy(&s4->sin_addr, a, 4);
	s4->sin_port = htons(port);
	*len = sizeof *s4;
}

static void set_in6(struct sockaddr_storage *ss, socklen_t *len, const uint8_t a[16], uint16_t port)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)(void *)ss;
	memset(ss, 0, sizeof *ss);
	s6->sin6_family = AF_INET6;
	memcpy(&s6->sin6_addr, a, 16);
	s6->sin6_port = htons(port);
	*len = sizeof *s6;
}

/* The complete line p[0..n), CRLF excluded. */
static enum proxy_result parse_v1_line(const uint8_t *p, size_t n, struct proxy_info *out, const char **err)
{
	if (n < 6 || memcmp(p, v1_prefix, 6) != 0)
		return fail(err, "v1 header does not start with \"PROXY \"");
	const uint8_t *r = p + 6;
	size_t m = n - 6;
	out->version = 1;
	if (m >= 7 && memcmp(r, "UNKNOWN", 7) == 0 && (m == 7 || r[7] == ' ')) {
		out->local = true; /* the rest of the line is ignored (spec) */
		return PROXY_OK;
	}
	int fam;
	if (m >= 5 && memcmp(r, "TCP4 ", 5) == 0)
		fam = AF_INET;
	else if (m >= 5 && memcmp(r, "TCP6 ", 5) == 0)
		fam = AF_INET6;
	else
		return fail(err, "v1 header: protocol is not TCP4, TCP6 or UNKNOWN");
	/* Exactly four fields separated by single spaces: src dst sport dport. */
	const uint8_t *tok[4];
	size_t toklen[4];
	size_t pos = 5;
	for (int k = 0; k < 4; k++) {
		size_t start = pos;
		while (pos < m && r[pos] != ' ')
			pos++;
		if (pos == start)
			return fail(err, "v1 header: empty field or double space");
		tok[k] = r + start;
		toklen[k] = pos - start;
		if (k < 3) {
			if (pos >= m)
				return fail(err, "v1 header: missing fields");
			pos++;
		}
	}
	if (pos != m)
		return fail(err, "v1 header: extra fields");
	uint16_t sport, dport;
	if (!parse_port(tok[2], toklen[2], &sport) || !parse_port(tok[3], toklen[3], &dport))
		return fail(err, "v1 header: bad port");
	if (fam == AF_INET) {
		uint8_t s[4], d[4];
		if (!parse_ipv4(tok[0], toklen[0], s) || !parse_ipv4(tok[1], toklen[1], d))
			return fail(err, "v1 header: bad IPv4 address");
		set_in4(&out->src, &out->src_len, s, sport);
		set_in4(&out->dst, &out->dst_len, d, dport);
	} else {
		uint8_t s[16], d[16];
		if (!parse_ipv6(tok[0], toklen[0], s) || !parse_ipv6(tok[1], toklen[1], d))
			return fail(err, "v1 header: bad IPv6 address");
		set_in6(&out->src, &out->src_len, s, sport);
		set_in6(&out->dst, &out->dst_len, d, dport);
	}
	return PROXY_OK;
}

static enum proxy_result parse_v1(const uint8_t *p, size_t len, struct proxy_info *out, size_t *used,
				  const char **err)
{
	size_t lim = min_sz(len, PROXY_V1_MAX);
	for (size_t i = 0; i < lim; i++) {
		if (p[i] == '\n')
			return fail(err, "v1 header: LF without CR");
		if (p[i] != '\r')
			continue;
		if (i + 1 >= PROXY_V1_MAX)
			return fail(err, "v1 header longer than 107 bytes");
		if (i + 1 >= len) {
			if (!v1_prefix_ok(p, i))
				return fail(err, "v1 header: malformed");
			return PROXY_NEED_MORE;
		}
		if (p[i + 1] != '\n')
			return fail(err, "v1 header: CR without LF");
		enum proxy_result r = parse_v1_line(p, i, out, err);
		if (r == PROXY_OK)
			*used = i + 2;
		return r;
	}
	if (len >= PROXY_V1_MAX)
		return fail(err, "v1 header: no CRLF within 107 bytes");
	if (!v1_prefix_ok(p, len))
		return fail(err, "v1 header: malformed");
	return PROXY_NEED_MORE;
}

/* ---- version 2 ---- */

/* Copy an informational string, truncated to fit. */
static void copy_info(char *dst, size_t cap, const uint8_t *s, size_t n)
{
	if (n >= cap)
		n = cap - 1;
	memcpy(dst, s, n);
	dst[n] = '\0';
}

static enum proxy_result parse_ssl(const uint8_t *v, size_t vlen, struct proxy_info *out, const char **err)
{
	if (out->has_ssl)
		return fail(err, "v2 header: duplicate SSL TLV");
	if (vlen < 5)
		return fail(err, "v2 header: SSL TLV shorter than 5 bytes");
	out->has_ssl = true;
	uint8_t client = v[0];
	out->verify = be32(v + 1);
	out->ssl = (client & PP2_CLIENT_SSL) != 0;
	out->cert_presented = (client & (PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS)) != 0;
	out->cert_verified = out->ssl && out->cert_presented && out->verify == 0;
	size_t off = 5;
	while (off < vlen) {
		if (vlen - off < 3)
			return fail(err, "v2 header: truncated SSL sub-TLV");
		uint8_t type = v[off];
		size_t slen = be16(v + off + 1);
		if (slen > vlen - off - 3)
			return fail(err, "v2 header: SSL sub-TLV longer than the SSL TLV");
		const uint8_t *s = v + off + 3;
		switch (type) {
		case PP2_SUBTYPE_SSL_CN:
			if (out->has_cn)
				return fail(err, "v2 header: duplicate SSL CN");
			if (slen > PROXY_CN_MAX)
				return fail(err, "v2 header: SSL CN longer than 256 bytes");
			if (memchr(s, 0, slen))
				return fail(err, "v2 header: SSL CN contains a NUL byte");
			memcpy(out->cn, s, slen);
			out->cn[slen] = '\0';
			out->cn_len = slen;
			out->has_cn = true;
			break;
		case PP2_SUBTYPE_SSL_VERSION:
			copy_info(out->ssl_version, sizeof out->ssl_version, s, slen);
			break;
		case PP2_SUBTYPE_SSL_CIPHER:
			copy_info(out->cipher, sizeof out->cipher, s, slen);
			break;
		default: /* SIG_ALG, KEY_ALG and later additions: not needed */
			break;
		}
		off += 3 + slen;
	}
	return PROXY_OK;
}

/* TLVs in p[start..total); p[0..total) is the whole header (for the CRC). */
static enum proxy_result parse_tlvs(const uint8_t *p, size_t start, size_t total, struct proxy_info *out,
				    const char **err)
{
	bool have_crc = false;
	size_t crc_off = 0;
	size_t off = start;
	while (off < total) {
		if (total - off < 3)
			return fail(err, "v2 header: truncated TLV");
		uint8_t type = p[off];
		size_t vlen = be16(p + off + 1);
		if (vlen > total - off - 3)
			return fail(err, "v2 header: TLV longer than the header");
		const uint8_t *v = p + off + 3;
		switch (type) {
		case PP2_TYPE_AUTHORITY:
			if (out->has_authority)
				return fail(err, "v2 header: duplicate authority TLV");
			if (vlen > PROXY_AUTHORITY_MAX)
				return fail(err, "v2 header: authority longer than 255 bytes");
			if (memchr(v, 0, vlen))
				return fail(err, "v2 header: authority contains a NUL byte");
			memcpy(out->authority, v, vlen);
			out->authority[vlen] = '\0';
			out->authority_len = vlen;
			out->has_authority = true;
			break;
		case PP2_TYPE_CRC32C:
			if (have_crc)
				return fail(err, "v2 header: duplicate CRC32C TLV");
			if (vlen != 4)
				return fail(err, "v2 header: CRC32C TLV is not 4 bytes");
			have_crc = true;
			crc_off = off + 3;
			break;
		case PP2_TYPE_SSL: {
			enum proxy_result r = parse_ssl(v, vlen, out, err);
			if (r != PROXY_OK)
				return r;
			break;
		}
		default: /* ALPN, NOOP, UNIQUE_ID, NETNS, custom and experimental types */
			break;
		}
		off += 3 + vlen;
	}
	if (have_crc) {
		static const uint8_t zero[4] = { 0 };
		uint32_t crc = proxy_crc32c(0, p, crc_off);
		crc = proxy_crc32c(crc, zero, 4);
		crc = proxy_crc32c(crc, p + crc_off + 4, total - crc_off - 4);
		if (crc != be32(p + crc_off))
			return fail(err, "v2 header: CRC32C mismatch");
	}
	return PROXY_OK;
}

static enum proxy_result parse_v2(const uint8_t *p, size_t len, struct proxy_info *out, size_t *used,
				  const char **err)
{
	if (memcmp(p, proxy_v2_signature, min_sz(len, sizeof proxy_v2_signature)) != 0)
		return fail(err, "bad v2 signature");
	unsigned cmd = 0;
	if (len > 12) {
		if ((p[12] >> 4) != 2)
			return fail(err, "v2 header: unsupported version");
		cmd = p[12] & 0x0f;
		if (cmd != PP2_CMD_LOCAL && cmd != PP2_CMD_PROXY)
			return fail(err, "v2 header: unknown command");
	}
	/* The family matters only for PROXY; LOCAL discards the whole block. */
	size_t block = 0;
	bool addrs = false;
	if (len > 13 && cmd == PP2_CMD_PROXY) {
		switch (p[13]) {
		case 0x00: block = 0; break;                   /* UNSPEC */
		case 0x11: block = 12; addrs = true; break;    /* TCP over IPv4 */
		case 0x12: block = 12; break;                  /* UDP over IPv4 */
		case 0x21: block = 36; addrs = true; break;    /* TCP over IPv6 */
		case 0x22: block = 36; break;                  /* UDP over IPv6 */
		case 0x31: case 0x32: block = 216; break;      /* UNIX stream / datagram */
		default:
			return fail(err, "v2 header: unsupported address family or protocol");
		}
	}
	if (len < PROXY_V2_HDR)
		return PROXY_NEED_MORE;
	size_t total = PROXY_V2_HDR + be16(p + 14);
	if (len < total) {
		*used = total;
		return PROXY_NEED_MORE;
	}
	out->version = 2;
	if (cmd == PP2_CMD_LOCAL) {
		out->local = true;
		out->command_local = true;
		*used = total;
		return PROXY_OK;
	}
	if (block > total - PROXY_V2_HDR)
		return fail(err, "v2 header: address block longer than the header");
	const uint8_t *a = p + PROXY_V2_HDR;
	if (!addrs) {
		out->local = true;
	} else if (block == 12) {
		set_in4(&out->src, &out->src_len, a, be16(a + 8));
		set_in4(&out->dst, &out->dst_len, a + 4, be16(a + 10));
	} else {
		set_in6(&out->src, &out->src_len, a, be16(a + 32));
		set_in6(&out->dst, &out->dst_len, a + 16, be16(a + 34));
	}
	enum proxy_result r = parse_tlvs(p, PROXY_V2_HDR + block, total, out, err);
	if (r == PROXY_OK)
		*used = total;
	return r;
}

enum proxy_result proxy_parse(const uint8_t *p, size_t len, struct proxy_info *out, size_t *used,
			      const char **err)
{
	memset(out, 0, sizeof *out);
	*used = 0;
	if (err)
		*err = NULL;
	enum proxy_result r;
	switch (proxy_detect(p, len)) {
	case PROXY_DETECT_MORE:
		return PROXY_NEED_MORE;
	case PROXY_DETECT_V1:
		r = parse_v1(p, len, out, used, err);
		break;
	case PROXY_DETECT_V2:
		r = parse_v2(p, len, out, used, err);
		break;
	default:
		return fail(err, "not a PROXY protocol header");
	}
	if (r != PROXY_OK) {
		/* Partial results of a failed or unfinished parse are never visible. */
		size_t keep = *used;
		memset(out, 0, sizeof *out);
		*used = r == PROXY_NEED_MORE ? keep : 0;
	}
	return r;
}

const char *proxy_verified_cn(const struct proxy_info *info)
{
	if (!info || info->command_local || !info->cert_verified || !info->has_cn || info->cn_len == 0)
		return NULL;
	return info->cn;
}
