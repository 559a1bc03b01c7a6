/* Unit tests for the PROXY protocol parser (src/net/proxy.c). Every input is placed so
 * that it ends at an unreadable page (unit_guard_copy): a read past the end faults. */
#include "unit.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>

#include "net/proxy.c"

/* ---- helpers ---- */

static enum proxy_result parse_g(const void *p, size_t n, struct proxy_info *info, size_t *used,
				 const char **err)
{
	void *base;
	size_t ml;
	const uint8_t *q = unit_guard_copy(p, n, &base, &ml);
	const char *e = NULL;
	enum proxy_result r = proxy_parse(q, n, info, used, &e);
	unit_guard_free(base, ml);
	if (err)
		*err = e;
	if (r == PROXY_INVALID && !e) {
		fprintf(stderr, "INVALID without a reason\n");
		unit_failures++;
		unit_current_failed = 1;
	}
	return r;
}

static enum proxy_result parse_s(const char *s, struct proxy_info *info, size_t *used)
{
	return parse_g(s, strlen(s), info, used, NULL);
}

static enum proxy_detect detect_g(const void *p, size_t n)
{
	void *base;
	size_t ml;
	const uint8_t *q = unit_guard_copy(p, n, &base, &ml);
	enum proxy_detect d = proxy_detect(q, n);
	unit_guard_free(base, ml);
	return d;
}

static const char *addr_str(const struct sockaddr_storage *ss, char *buf, size_t cap)
{
	char host[INET6_ADDRSTRLEN] = "?";
	unsigned port = 0;
	if (ss->ss_family == AF_INET) {
		const struct sockaddr_in *s4 = (const void *)ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		port = ntohs(s4->sin_port);
	} else if (ss->ss_family == AF_INET6) {
		const struct sockaddr_in6 *s6 = (const void *)ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		port = ntohs(s6->sin6_port);
	} else {
		snprintf(buf, cap, "none");
		return buf;
	}
	snprintf(buf, cap, "%s/%u", host, port);
	return buf;
}

/* Every strict prefix of a valid header is NEED_MORE; for v2, the total length is
 * reported once the 16-byte fixed part is there. */
static void check_prefixes(const uint8_t *h, size_t n, int version)
{
	for (size_t k = 0; k < n; k++) {
		struct proxy_info info;
		size_t used = 99;
		enum proxy_result r = parse_g(h, k, &info, &used, NULL);
		if (r != PROXY_NEED_MORE) {
			fprintf(stderr, "prefix %zu of %zu: result %d\n", k, n, r);
			CHECK(r == PROXY_NEED_MORE);
			return;
		}
		if (version == 2 && k >= 16)
			CHECK_EQ_INT(used, n);
		else
			CHECK_EQ_INT(used, 0);
		CHECK_EQ_INT(info.version, 0); /* nothing visible from an unfinished parse */
	}
}

/* v2 header builder. */
struct hb {
	uint8_t b[PROXY_V2_MAX + 64];
	size_t n;
};

static void hb_start(struct hb *h, uint8_t vercmd, uint8_t fam)
{
	memcpy(h->b, proxy_v2_signature, 12);
	h->b[12] = vercmd;
	h->b[13] = fam;
	h->b[14] = h->b[15] = 0;
	h->n = 16;
}

static void hb_put(struct hb *h, const void *p, size_t n)
{
	memcpy(h->b + h->n, p, n);
	h->n += n;
}

static void hb_u8(struct hb *h, uint8_t v)
{
	hb_put(h, &v, 1);
}

static void hb_u16(struct hb *h, uint16_t v)
{
	uint8_t b[2] = { (uint8_t)(v >> 8), (uint8_t)v };
	hb_put(h, b, 2);
}

static void hb_tlv(struct hb *h, uint8_t type, const void *v, size_t n)
{
	hb_u8(h, type);
	hb_u16(h, (uint16_t)n);
	hb_put(h, v, n);
}

static void hb_end(struct hb *h)
{
	size_t len = h->n - 16;
	h->b[14] = (uint8_t)(len >> 8);
	h->b[15] = (uint8_t)len;
}

/* 192.0.2.1:56324 -> 198.51.100.2:1883 */
static void hb_tcp4(struct hb *h)
{
	hb_start(h, 0x21, 0x11);
	static const uint8_t a[12] = { 192, 0, 2, 1, 198, 51, 100, 2, 0xDC, 0x04, 0x07, 0x5B };
	hb_put(h, a, sizeof a);
}

/* An SSL TLV value: client flags, verify, then sub-TLVs given as (type, string) pairs. */
static size_t ssl_value(uint8_t *out, uint8_t client, uint32_t verify, const char *version, const char *cn)
{
	size_t n = 0;
	out[n++] = client;
	out[n++] = (uint8_t)(verify >> 24);
	out[n++] = (uint8_t)(verify >> 16);
	out[n++] = (uint8_t)(verify >> 8);
	out[n++] = (uint8_t)verify;
	if (version) {
		size_t l = strlen(version);
		out[n++] = PP2_SUBTYPE_SSL_VERSION;
		out[n++] = (uint8_t)(l >> 8);
		out[n++] = (uint8_t)l;
		memcpy(out + n, version, l);
		n += l;
	}
	if (cn) {
		size_t l = strlen(cn);
		out[n++] = PP2_SUBTYPE_SSL_CN;
		out[n++] = (uint8_t)(l >> 8);
		out[n++] = (uint8_t)l;
		memcpy(out + n, cn, l);
		n += l;
	}
	return n;
}

static struct hb H; /* large: keep off the stack */

/* ---- detection ---- */

TEST(detect)
{
	CHECK(detect_g("", 0) == PROXY_DETECT_MORE);
	CHECK(detect_g("P", 1) == PROXY_DETECT_MORE);
	CHECK(detect_g("PROX", 4) == PROXY_DETECT_MORE);
	CHECK(detect_g("PROXY", 5) == PROXY_DETECT_V1);
	CHECK(detect_g("PROXY TCP4", 10) == PROXY_DETECT_V1);
	CHECK(detect_g("PRONTO", 6) == PROXY_DETECT_NONE);
	CHECK(detect_g("proxy", 5) == PROXY_DETECT_NONE);
	CHECK(detect_g("\x10\x0c\x00\x04MQTT", 8) == PROXY_DETECT_NONE); /* MQTT CONNECT */
	CHECK(detect_g("\x16\x03\x01\x02\x00", 5) == PROXY_DETECT_NONE); /* TLS ClientHello */
	for (size_t k = 1; k < 12; k++)
		CHECK(detect_g(proxy_v2_signature, k) == PROXY_DETECT_MORE);
	CHECK(detect_g(proxy_v2_signature, 12) == PROXY_DETECT_V2);
	uint8_t bad[12];
	memcpy(bad, proxy_v2_signature, 12);
	bad[11] = 'X';
	CHECK(detect_g(bad, 12) == PROXY_DETECT_NONE);
	CHECK(detect_g(bad, 11) == PROXY_DETECT_MORE);
	CHECK(detect_g("\r\n\r\nX", 5) == PROXY_DETECT_NONE);
}

/* ---- version 1 ---- */

TEST(v1_tcp4)
{
	const char *s = "PROXY TCP4 192.0.2.1 198.51.100.2 56324 1883\r\n\x10\x0c";
	struct proxy_info info;
	size_t used = 0;
	char a[80];
	CHECK(parse_s(s, &info, &used) == PROXY_OK);
	CHECK_EQ_INT(used, strlen(s) - 2); /* the MQTT bytes after it are not part of it */
	CHECK_EQ_INT(info.version, 1);
	CHECK(!info.local);
	CHECK_STR(addr_str(&info.src, a, sizeof a), "192.0.2.1/56324");
	CHECK_STR(addr_str(&info.dst, a, sizeof a), "198.51.100.2/1883");
	CHECK_EQ_INT(info.src_len, sizeof(struct sockaddr_in));
	CHECK(!info.has_ssl && !info.cert_verified && !info.has_cn);
	CHECK(proxy_verified_cn(&info) == NULL);
	check_prefixes((const uint8_t *)s, strlen(s) - 2, 1);
}

TEST(v1_tcp6)
{
	const char *s = "PROXY TCP6 2001:db8::1 ::ffff:10.0.0.1 0 65535\r\n";
	struct proxy_info info;
	size_t used = 0;
	char a[80];
	CHECK(parse_s(s, &info, &used) == PROXY_OK);
	CHECK_EQ_INT(used, strlen(s));
	CHECK_STR(addr_str(&info.src, a, sizeof a), "2001:db8::1/0");
	CHECK_STR(addr_str(&info.dst, a, sizeof a), "::ffff:10.0.0.1/65535");
	CHECK_EQ_INT(info.src_len, sizeof(struct sockaddr_in6));
	check_prefixes((const uint8_t *)s, strlen(s), 1);
	const char *full = "PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF "
			   "65535 65535\r\n";
	CHECK_EQ_INT(strlen(full), 104);
	CHECK(parse_s(full, &info, &used) == PROXY_OK);
	CHECK_EQ_INT(used, 104);
}

TEST(v1_unknown)
{
	struct proxy_info info;
	size_t used = 0;
	CHECK(parse_s("PROXY UNKNOWN\r\n", &info, &used) == PROXY_OK);
	CHECK_EQ_INT(used, 15);
	CHECK(info.local && info.version == 1 && !info.command_local);
	CHECK_EQ_INT(info.src.ss_family, 0);
	/* Anything after UNKNOWN is ignored; the worst case is exactly 107 bytes. */
	const char *worst = "PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff "
			    "65535 65535\r\n";
	CHECK_EQ_INT(strlen(worst), 107);
	CHECK(parse_s(worst, &info, &used) == PROXY_OK);
	CHECK_EQ_INT(used, 107);
	CHECK(info.local);
	check_prefixes((const uint8_t *)worst, 107, 1);
	CHECK(parse_s("PROXY UNKNOWN whatever \x01 junk\r\n", &info, &used) == PROXY_OK);
	CHECK(parse_s("PROXY UNKNOWNX\r\n", &info, &used) == PROXY_INVALID);
}

TEST(v1_too_long)
{
	char s[200];
	struct proxy_info info;
	size_t used = 0;
	/* 108 bytes with the CRLF: refused. */
	snprintf(s, sizeof s, "PROXY UNKNOWN %0*d\r\n", 92, 0);
	CHECK_EQ_INT(strlen(s), 108);
	CHECK(parse_s(s, &info, &used) == PROXY_INVALID);
	/* 107 bytes and no CR yet: refused without waiting for more. */
	memset(s, 'a', sizeof s);
	memcpy(s, "PROXY UNKNOWN ", 14);
	CHECK(parse_g(s, 107, &info, &used, NULL) == PROXY_INVALID);
	CHECK(parse_g(s, 106, &info, &used, NULL) == PROXY_NEED_MORE);
	CHECK(parse_g(s, 150, &info, &used, NULL) == PROXY_INVALID);
	/* CR as the 107th byte: its LF would be the 108th. */
	s[106] = '\r';
	CHECK(parse_g(s, 107, &info, &used, NULL) == PROXY_INVALID);
	s[105] = '\r';
	s[106] = '\n';
	CHECK(parse_g(s, 107, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, 107);
}

TEST(v1_malformed)
{
	static const char *const bad[] = {
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",           /* LF without CR */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rX",          /* CR without LF */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
		"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY\r\n",
		"PROXY \r\n",
		"PROXY TCP4\r\n",
		"PROXY TCP4 \r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",           /* missing field */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",       /* extra field */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",        /* trailing space */
		"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",        /* double space */
		"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",        /* leading zero */
		"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3. 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",        /* port with leading zero */
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 100000\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
		"PROXY TCP4 1.2.3.4 5.6.7.8 1 2a\r\n",
		"PROXY TCP4 ::1 ::1 1 2\r\n",                 /* family mismatch */
		"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n",
		"PROXY TCP6 2001:db8::1::2 ::1 1 2\r\n",
		"PROXY TCP6 2001:db8:::1 ::1 1 2\r\n",
		"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
		"PROXY TCP6 12345::1 ::1 1 2\r\n",
		"PROXY TCP4 a.b.c.d 5.6.7.8 1 2\r\n",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct proxy_info info;
		size_t used = 7;
		enum proxy_result r = parse_g(bad[i], strlen(bad[i]), &info, &used, NULL);
		if (r != PROXY_INVALID)
			fprintf(stderr, "accepted or waiting (%d): %s\n", r, bad[i]);
		CHECK(r == PROXY_INVALID);
		CHECK_EQ_INT(used, 0);
		CHECK_EQ_INT(info.version, 0);
	}
	/* Garbage after "PROXY" is refused before any CRLF arrives. */
	static const char *const early[] = {
		"PROXY X", "PROXY TCP4 1.2.3.4 x", "PROXY TCP4 ::", "PROXY TCP6 g", "PROXY UNKNOWNX", "PROXYZ",
		"PROXY TCP4 1.2.3.4\t",
	};
	for (size_t i = 0; i < sizeof early / sizeof early[0]; i++) {
		struct proxy_info info;
		size_t used;
		CHECK(parse_s(early[i], &info, &used) == PROXY_INVALID);
	}
	/* A NUL byte in the middle (the embedded one above stopped strlen). */
	static const char nul[] = "PROXY TCP4 1.2.3.4 5.6.7.8 1 2\0\r\n";
	struct proxy_info info;
	size_t used;
	CHECK(parse_g(nul, sizeof nul - 1, &info, &used, NULL) == PROXY_INVALID);
	/* Not PROXY at all. */
	CHECK(parse_s("GET / HTTP/1.1\r\n", &info, &used) == PROXY_INVALID);
	CHECK(parse_g("\x10\x0c\x00\x04MQTT", 8, &info, &used, NULL) == PROXY_INVALID);
}

TEST(v1_helpers)
{
	uint8_t a[4];
	uint16_t port;
	CHECK(parse_ipv4((const uint8_t *)"0.0.0.0", 7, a));
	CHECK(parse_ipv4((const uint8_t *)"255.255.255.255", 15, a) && a[0] == 255 && a[3] == 255);
	CHECK(!parse_ipv4((const uint8_t *)"1.2.3.4 ", 8, a));
	CHECK(!parse_ipv4((const uint8_t *)"1234.2.3.4", 10, a));
	CHECK(!parse_ipv4((const uint8_t *)"", 0, a));
	CHECK(parse_port((const uint8_t *)"0", 1, &port) && port == 0);
	CHECK(parse_port((const uint8_t *)"65535", 5, &port) && port == 65535);
	CHECK(!parse_port((const uint8_t *)"00", 2, &port));
	CHECK(!parse_port((const uint8_t *)"099999", 6, &port));
	CHECK(v1_prefix_ok((const uint8_t *)"PROXY TC", 8));
	CHECK(v1_prefix_ok((const uint8_t *)"PROXY UNKNOWN \x01", 15));
	CHECK(!v1_prefix_ok((const uint8_t *)"PROXY TCP6 ::1 z", 16));
}

/* ---- version 2 ---- */

TEST(v2_tcp4)
{
	struct proxy_info info;
	size_t used = 0;
	char a[80];
	hb_tcp4(&H);
	hb_end(&H);
	CHECK_EQ_INT(H.n, 28);
	H.b[H.n] = 0x10; /* the MQTT byte that follows is not part of the header */
	CHECK(parse_g(H.b, H.n + 1, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, 28);
	CHECK_EQ_INT(info.version, 2);
	CHECK(!info.local && !info.command_local && !info.has_ssl);
	CHECK_STR(addr_str(&info.src, a, sizeof a), "192.0.2.1/56324");
	CHECK_STR(addr_str(&info.dst, a, sizeof a), "198.51.100.2/1883");
	check_prefixes(H.b, H.n, 2);
}

TEST(v2_tcp6)
{
	struct proxy_info info;
	size_t used = 0;
	char a[80];
	hb_start(&H, 0x21, 0x21);
	uint8_t s6[16] = { 0x20, 0x01, 0x0d, 0xb8, [15] = 1 }, d6[16] = { [15] = 1 };
	hb_put(&H, s6, 16);
	hb_put(&H, d6, 16);
	hb_u16(&H, 40000);
	hb_u16(&H, 8883);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, 52);
	CHECK_STR(addr_str(&info.src, a, sizeof a), "2001:db8::1/40000");
	CHECK_STR(addr_str(&info.dst, a, sizeof a), "::1/8883");
	check_prefixes(H.b, H.n, 2);
}

TEST(v2_local)
{
	struct proxy_info info;
	size_t used = 0;
	/* LOCAL with no block. */
	hb_start(&H, 0x20, 0x00);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, 16);
	CHECK(info.local && info.command_local);
	/* LOCAL: the family and the whole block are ignored, even garbage and an SSL TLV. */
	hb_start(&H, 0x20, 0xFF);
	uint8_t v[64];
	size_t vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, "TLSv1.3", "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_put(&H, "\xff\xff", 2); /* would be a truncated TLV */
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, H.n);
	CHECK(info.command_local && !info.has_ssl && !info.has_cn);
	CHECK(proxy_verified_cn(&info) == NULL);
	check_prefixes(H.b, H.n, 2);
}

TEST(v2_fallback_families)
{
	/* PROXY with UNSPEC, UDP and UNIX: no client address (use the connection's), TLVs still read. */
	static const struct {
		uint8_t fam;
		size_t block;
	} cases[] = { { 0x00, 0 }, { 0x12, 12 }, { 0x22, 36 }, { 0x31, 216 }, { 0x32, 216 } };
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		struct proxy_info info;
		size_t used = 0;
		hb_start(&H, 0x21, cases[i].fam);
		uint8_t zero[216] = { 0 };
		hb_put(&H, zero, cases[i].block);
		uint8_t v[64];
		size_t vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, "device-001");
		hb_tlv(&H, PP2_TYPE_SSL, v, vn);
		hb_end(&H);
		CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
		CHECK(info.local && !info.command_local);
		CHECK_STR(proxy_verified_cn(&info), "device-001");
		/* The address block must fit in the header. */
		if (cases[i].block) {
			hb_start(&H, 0x21, cases[i].fam);
			hb_put(&H, zero, cases[i].block - 1);
			hb_end(&H);
			CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
		}
	}
}

TEST(v2_malformed_fixed)
{
	struct proxy_info info;
	size_t used = 0;
	const char *err;
	/* Bad signature. */
	hb_tcp4(&H);
	hb_end(&H);
	H.b[6] = 0x0B;
	CHECK(parse_g(H.b, H.n, &info, &used, &err) == PROXY_INVALID);
	/* Versions other than 2, refused as soon as byte 13 is there. */
	static const uint8_t vers[] = { 0x01, 0x11, 0x31, 0xF1, 0x00 };
	for (size_t i = 0; i < sizeof vers; i++) {
		hb_tcp4(&H);
		hb_end(&H);
		H.b[12] = vers[i];
		CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
		CHECK(parse_g(H.b, 13, &info, &used, NULL) == PROXY_INVALID);
	}
	/* Unknown commands. */
	for (uint8_t cmd = 2; cmd < 16; cmd++) {
		hb_tcp4(&H);
		hb_end(&H);
		H.b[12] = (uint8_t)(0x20 | cmd);
		CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
		CHECK(parse_g(H.b, 13, &info, &used, NULL) == PROXY_INVALID);
	}
	/* Families / protocols outside the specified set. */
	static const uint8_t fams[] = { 0x01, 0x02, 0x10, 0x13, 0x20, 0x23, 0x30, 0x33, 0x41, 0xF1, 0x1F };
	for (size_t i = 0; i < sizeof fams; i++) {
		hb_start(&H, 0x21, fams[i]);
		uint8_t zero[216] = { 0 };
		hb_put(&H, zero, sizeof zero);
		hb_end(&H);
		CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
		CHECK(parse_g(H.b, 14, &info, &used, NULL) == PROXY_INVALID);
	}
	/* Length shorter than the address block. */
	hb_start(&H, 0x21, 0x11);
	hb_put(&H, "\x01\x02\x03\x04\x05\x06\x07\x08", 8);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	hb_start(&H, 0x21, 0x21);
	uint8_t z[35] = { 0 };
	hb_put(&H, z, 35);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* A length larger than what arrived is NEED_MORE with the total known. */
	hb_tcp4(&H);
	hb_end(&H);
	H.b[15] = 200;
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_NEED_MORE);
	CHECK_EQ_INT(used, 216);
	H.b[14] = 0xFF;
	H.b[15] = 0xFF;
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_NEED_MORE);
	CHECK_EQ_INT(used, PROXY_V2_MAX);
}

TEST(v2_tlv_bounds)
{
	struct proxy_info info;
	size_t used = 0;
	/* One or two stray bytes after the addresses: a truncated TLV. */
	for (int extra = 1; extra <= 2; extra++) {
		hb_tcp4(&H);
		hb_put(&H, "\x04\x00", (size_t)extra);
		hb_end(&H);
		CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	}
	/* A TLV whose length runs past the header by one byte. */
	hb_tcp4(&H);
	hb_u8(&H, PP2_TYPE_NOOP);
	hb_u16(&H, 5);
	hb_put(&H, "abcd", 4);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* ...and exactly fitting. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_NOOP, "abcde", 5);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	/* Unknown and ignored types, empty values. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_NOOP, "", 0);
	hb_tlv(&H, PP2_TYPE_ALPN, "mqtt", 4);
	hb_tlv(&H, PP2_TYPE_UNIQUE_ID, "id-1", 4);
	hb_tlv(&H, PP2_TYPE_NETNS, "ns", 2);
	hb_tlv(&H, 0xE0, "custom", 6);
	hb_tlv(&H, 0xF8, "future", 6);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, H.n);
	CHECK(!info.has_ssl && !info.has_authority);
	/* SSL TLV shorter than client + verify. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_SSL, "\x01\x00\x00\x00", 4);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* A sub-TLV running past the SSL TLV (but not past the header). */
	hb_tcp4(&H);
	uint8_t v[64];
	size_t vn = ssl_value(v, PP2_CLIENT_SSL, 0, NULL, "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn - 1);
	hb_tlv(&H, PP2_TYPE_NOOP, "padding", 7);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* Truncated sub-TLV header inside the SSL TLV. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_SSL, "\x01\x00\x00\x00\x00\x22\x00", 7);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* The largest header there is: 65535 bytes after the fixed part. */
	hb_tcp4(&H);
	size_t pad = PROXY_V2_MAX - H.n - 3;
	hb_u8(&H, PP2_TYPE_NOOP);
	hb_u16(&H, (uint16_t)pad);
	memset(H.b + H.n, 'x', pad);
	H.n += pad;
	hb_end(&H);
	CHECK_EQ_INT(H.n, PROXY_V2_MAX);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, PROXY_V2_MAX);
	CHECK(parse_g(H.b, H.n - 1, &info, &used, NULL) == PROXY_NEED_MORE);
}

TEST(v2_ssl_identity)
{
	struct proxy_info info;
	size_t used = 0;
	uint8_t v[600];
	size_t vn;
	/* HAProxy send-proxy-v2-ssl-cn with a verified client certificate. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, "broker.example.com", 18);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN | PP2_CLIENT_CERT_SESS, 0, "TLSv1.3", "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(used, H.n);
	CHECK(info.has_ssl && info.ssl && info.cert_presented && info.cert_verified);
	CHECK_EQ_INT(info.verify, 0);
	CHECK(info.has_cn);
	CHECK_STR(info.cn, "device-001");
	CHECK_EQ_INT(info.cn_len, 10);
	CHECK_STR(info.ssl_version, "TLSv1.3");
	CHECK(info.has_authority);
	CHECK_STR(info.authority, "broker.example.com");
	CHECK_STR(proxy_verified_cn(&info), "device-001");
	check_prefixes(H.b, H.n, 2);

	/* Verify result non-zero: the CN is reported but gives no identity. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 20 /* unable to get local issuer */, "TLSv1.2",
		       "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK(info.cert_presented && !info.cert_verified);
	CHECK_EQ_INT(info.verify, 20);
	CHECK_STR(info.cn, "device-001");
	CHECK(proxy_verified_cn(&info) == NULL);

	/* Certificate from an earlier session (resumption) counts. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, 0, NULL, "device-002");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_STR(proxy_verified_cn(&info), "device-002");

	/* verify == 0 but no certificate flag (verify is 0 when no certificate was sent). */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL, 0, "TLSv1.3", "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK(info.ssl && !info.cert_presented && !info.cert_verified);
	CHECK(proxy_verified_cn(&info) == NULL);

	/* Certificate flags without the SSL flag: no identity. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_CERT_CONN, 0, NULL, "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK(!info.cert_verified && proxy_verified_cn(&info) == NULL);

	/* Verified but no CN sub-TLV, or an empty one: no identity. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, "TLSv1.3", NULL);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK(info.cert_verified && !info.has_cn && proxy_verified_cn(&info) == NULL);
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, "TLSv1.3", "");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK(info.has_cn && proxy_verified_cn(&info) == NULL);

	/* Other sub-TLVs are skipped; a long cipher name is truncated, not refused. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, NULL);
	v[vn++] = PP2_SUBTYPE_SSL_SIG_ALG;
	v[vn++] = 0;
	v[vn++] = 10;
	memcpy(v + vn, "RSA-SHA256", 10);
	vn += 10;
	v[vn++] = PP2_SUBTYPE_SSL_CIPHER;
	v[vn++] = 0;
	v[vn++] = 100;
	memset(v + vn, 'C', 100);
	vn += 100;
	v[vn++] = PP2_SUBTYPE_SSL_CN;
	v[vn++] = 0;
	v[vn++] = 3;
	memcpy(v + vn, "abc", 3);
	vn += 3;
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(strlen(info.cipher), sizeof info.cipher - 1);
	CHECK_STR(proxy_verified_cn(&info), "abc");
}

TEST(v2_ssl_malformed)
{
	struct proxy_info info;
	size_t used = 0;
	uint8_t v[600];
	size_t vn;
	char cn[300];
	/* CN of 256 bytes is accepted, 257 refused. */
	memset(cn, 'a', sizeof cn);
	cn[256] = '\0';
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, cn);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(info.cn_len, 256);
	cn[256] = 'a';
	cn[257] = '\0';
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, cn);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* A NUL inside the CN ("device-001\0evil") is refused, not truncated. */
	hb_tcp4(&H);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, NULL);
	v[vn++] = PP2_SUBTYPE_SSL_CN;
	v[vn++] = 0;
	v[vn++] = 15;
	memcpy(v + vn, "device-001\0evil", 15);
	vn += 15;
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* Two CNs, two SSL TLVs, two authorities. */
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, "device-001");
	memcpy(v + vn, "\x22\x00\x0a" "device-002", 13);
	vn += 13;
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, "device-001");
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, "a", 1);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, "b", 1);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* Authority: 255 bytes fine, 256 refused, NUL refused. */
	char host[300];
	memset(host, 'h', sizeof host);
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, host, 255);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_EQ_INT(info.authority_len, 255);
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, host, 256);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_AUTHORITY, "a\0b", 3);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
}

TEST(v2_crc32c)
{
	/* RFC 3720 / iSCSI check value. */
	CHECK_EQ_INT(proxy_crc32c(0, (const uint8_t *)"123456789", 9), 0xE3069283u);
	CHECK_EQ_INT(proxy_crc32c(proxy_crc32c(0, (const uint8_t *)"1234", 4), (const uint8_t *)"56789", 5),
		     0xE3069283u);
	struct proxy_info info;
	size_t used = 0;
	uint8_t v[64];
	hb_tcp4(&H);
	size_t vn = ssl_value(v, PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 0, NULL, "device-001");
	hb_tlv(&H, PP2_TYPE_SSL, v, vn);
	hb_tlv(&H, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	hb_end(&H);
	uint32_t crc = proxy_crc32c(0, H.b, H.n);
	size_t at = H.n - 4;
	H.b[at] = (uint8_t)(crc >> 24);
	H.b[at + 1] = (uint8_t)(crc >> 16);
	H.b[at + 2] = (uint8_t)(crc >> 8);
	H.b[at + 3] = (uint8_t)crc;
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_OK);
	CHECK_STR(proxy_verified_cn(&info), "device-001");
	/* Any flipped bit elsewhere is caught. */
	H.b[20] ^= 1;
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	H.b[20] ^= 1;
	H.b[at + 3] ^= 0x80;
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	/* Wrong size, duplicates. */
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_CRC32C, "\0\0\0", 3);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
	hb_tcp4(&H);
	hb_tlv(&H, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	hb_tlv(&H, PP2_TYPE_CRC32C, "\0\0\0\0", 4);
	hb_end(&H);
	CHECK(parse_g(H.b, H.n, &info, &used, NULL) == PROXY_INVALID);
}

TEST(not_a_header)
{
	struct proxy_info info;
	size_t used = 5;
	const char *err = NULL;
	CHECK(parse_g("", 0, &info, &used, &err) == PROXY_NEED_MORE);
	CHECK_EQ_INT(used, 0);
	CHECK(parse_g("\x16\x03\x01", 3, &info, &used, &err) == PROXY_INVALID);
	CHECK(err != NULL);
	CHECK(proxy_verified_cn(NULL) == NULL);
}

int main(void)
{
	RUN(detect);
	RUN(v1_tcp4);
	RUN(v1_tcp6);
	RUN(v1_unknown);
	RUN(v1_too_long);
	RUN(v1_malformed);
	RUN(v1_helpers);
	RUN(v2_tcp4);
	RUN(v2_tcp6);
	RUN(v2_local);
	RUN(v2_fallback_families);
	RUN(v2_malformed_fixed);
	RUN(v2_tlv_bounds);
	RUN(v2_ssl_identity);
	RUN(v2_ssl_malformed);
	RUN(v2_crc32c);
	RUN(not_a_header);
	return unit_summary();
}
