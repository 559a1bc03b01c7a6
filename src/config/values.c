#include "config/values.h"

#include <arpa/inet.h>
#include <math.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

typedef unsigned __int128 u128;

#define FRAC_SCALE ((u128)1000000000u) /* fractions of a duration are kept to 1e-9 */

static bool is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/* Decimal digits s[0..n) (n >= 1) into *out, refusing overflow. */
static bool parse_u64(const char *s, size_t n, uint64_t *out)
{
	uint64_t v = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit(s[i]))
			return false;
		if (__builtin_mul_overflow(v, 10u, &v) || __builtin_add_overflow(v, (uint64_t)(s[i] - '0'), &v))
			return false;
	}
	*out = v;
	return true;
}

static size_t span_digits(const char *s)
{
	size_t n = 0;
	while (is_digit(s[n]))
		n++;
	return n;
}

static size_t span_alpha(const char *s)
{
	size_t n = 0;
	while (is_alpha(s[n]))
		n++;
	return n;
}

/* Case-insensitive: is s[0..n) exactly the word w? */
static bool word_is(const char *s, size_t n, const char *w)
{
	return strlen(w) == n && strncasecmp(s, w, n) == 0;
}

static bool duration_unit(const char *s, size_t n, uint64_t *ms)
{
	static const struct {
		const char *name;
		uint64_t ms;
	} units[] = {
		{"ms", 1},           {"s", 1000},           {"m", 60000},           {"h", 3600000},
		{"d", 86400000},     {"w", 604800000},      {"f", 1209600000},
	};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (word_is(s, n, units[i].name)) {
			*ms = units[i].ms;
			return true;
		}
	}
	return false;
}

/* One or more <number><unit> components, summed, in milliseconds (rounded). */
static bool duration_with_units(const char *s, uint64_t *out_ms)
{
	const u128 limit = (u128)UINT64_MAX * FRAC_SCALE;
	u128 total = 0; /* milliseconds * FRAC_SCALE */
	if (!*s)
		return false;
	while (*s) {
		size_t ni = span_digits(s);
		uint64_t whole = 0;
		if (ni && !parse_u64(s, ni, &whole))
			return false;
		s += ni;
		u128 frac = 0; /* fraction * FRAC_SCALE */
		if (*s == '.') {
			s++;
			size_t nf = span_digits(s);
			if (nf == 0)
				return false;
			u128 scale = FRAC_SCALE;
			for (size_t i = 0; i < nf; i++) {
				scale /= 10; /* digits beyond 1e-9 are ignored */
				frac += (u128)(s[i] - '0') * scale;
			}
			s += nf;
		} else if (ni == 0) {
			return false;
		}
		size_t nu = span_alpha(s);
		uint64_t unit;
		if (!duration_unit(s, nu, &unit))
			return false;
		s += nu;
		total += (u128)whole * unit * FRAC_SCALE + frac * unit; /* < 2^126: cannot wrap */
		if (total > limit)
			return false;
	}
	u128 ms = (total + FRAC_SCALE / 2) / FRAC_SCALE;
	if (ms > UINT64_MAX)
		return false;
	*out_ms = (uint64_t)ms;
	return true;
}

bool cfg_parse_duration_ms(const char *s, uint64_t *out_ms)
{
	if (!s)
		return false;
	size_t n = strlen(s);
	if (n && span_digits(s) == n)
		return parse_u64(s, n, out_ms);
	return duration_with_units(s, out_ms);
}

bool cfg_parse_duration_s(const char *s, uint64_t *out_s)
{
	if (!s)
		return false;
	size_t n = strlen(s);
	if (n && span_digits(s) == n)
		return parse_u64(s, n, out_s);
	uint64_t ms;
	if (!duration_with_units(s, &ms))
		return false;
	*out_s = ms / 1000 + (ms % 1000 != 0);
	return true;
}

/* Byte unit multiplier: "" (bare), b, kb, mb, gb. */
static bool byte_unit(const char *s, size_t n, uint64_t *mult)
{
	static const struct {
		const char *name;
		uint64_t mult;
	} units[] = {{"", 1}, {"b", 1}, {"kb", 1ull << 10}, {"mb", 1ull << 20}, {"gb", 1ull << 30}};
	for (size_t i = 0; i < sizeof units / sizeof units[0]; i++) {
		if (word_is(s, n, units[i].name)) {
			*mult = units[i].mult;
			return true;
		}
	}
	return false;
}

/* <digits><byte unit> over s[0..n); *has_unit says a unit was written. */
static bool bytesize_n(const char *s, size_t n, uint64_t *out, bool *has_unit)
{
	size_t nd = span_digits(s);
	if (nd == 0 || nd > n)
		return false;
	uint64_t v, mult;
	if (!parse_u64(s, nd, &v) || !byte_unit(s + nd, n - nd, &mult))
		return false;
	if (span_alpha(s + nd) < n - nd) /* something other than letters after the digits */
		return false;
	if (__builtin_mul_overflow(v, mult, &v))
		return false;
	*out = v;
	*has_unit = n > nd;
	return true;
}

bool cfg_parse_bytesize(const char *s, uint64_t *out)
{
	bool has_unit;
	return s && bytesize_n(s, strlen(s), out, &has_unit);
}

bool cfg_parse_rate(const char *s, double *per_second, bool *is_bytes)
{
	if (!s)
		return false;
	if (strcasecmp(s, "infinity") == 0) {
		*per_second = INFINITY;
		*is_bytes = false;
		return true;
	}
	const char *slash = strchr(s, '/');
	size_t na = slash ? (size_t)(slash - s) : strlen(s);
	uint64_t amount, period_ms = 1000;
	bool bytes;
	if (!bytesize_n(s, na, &amount, &bytes) || amount == 0)
		return false;
	if (slash) {
		const char *per = slash + 1;
		char tmp[64];
		if (!*per || strlen(per) + 2 > sizeof tmp)
			return false;
		/* "/s" means "/1s"; a period needs a unit ("/10" is refused) */
		snprintf(tmp, sizeof tmp, "%s%s", is_alpha(per[0]) ? "1" : "", per);
		if (!duration_with_units(tmp, &period_ms) || period_ms == 0)
			return false;
	}
	*per_second = (double)amount * 1000.0 / (double)period_ms;
	*is_bytes = bytes;
	return true;
}

bool cfg_parse_cidr(const char *s, struct cfg_cidr *out)
{
	char addr[64];
	if (!s)
		return false;
	const char *slash = strchr(s, '/');
	size_t na = slash ? (size_t)(slash - s) : strlen(s);
	if (na == 0 || na >= sizeof addr)
		return false;
	memcpy(addr, s, na);
	addr[na] = '\0';
	struct cfg_cidr c;
	memset(&c, 0, sizeof c);
	unsigned maxbits;
	if (strchr(addr, ':')) {
		c.family = AF_INET6;
		maxbits = 128;
	} else {
		c.family = AF_INET;
		maxbits = 32;
	}
	if (inet_pton(c.family, addr, c.addr) != 1)
		return false;
	uint64_t prefix = maxbits;
	if (slash) {
		size_t np = strlen(slash + 1);
		if (np == 0 || np > 3 || !parse_u64(slash + 1, np, &prefix) || prefix > maxbits)
			return false;
	}
	c.prefix = (uint8_t)prefix;
	for (unsigned bit = (unsigned)prefix; bit < maxbits; bit++)
		c.addr[bit / 8] &= (uint8_t)~(0x80u >> (bit % 8));
	*out = c;
	return true;
}

/* Do the first `bits` bits of a and b agree? */
static bool prefix_eq(const uint8_t *a, const uint8_t *b, unsigned bits)
{
	size_t whole = bits / 8;
	if (memcmp(a, b, whole) != 0)
		return false;
	if (bits % 8 == 0)
		return true;
	uint8_t mask = (uint8_t)(0xffu << (8 - bits % 8));
	return (a[whole] & mask) == (b[whole] & mask);
}

static const uint8_t v4mapped_prefix[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};

bool cfg_cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa)
{
	if (!c || !sa)
		return false;
	const uint8_t *v4 = NULL, *v6 = NULL;
	if (sa->sa_family == AF_INET) {
		v4 = (const uint8_t *)&((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	} else if (sa->sa_family == AF_INET6) {
		v6 = ((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr.s6_addr;
		if (memcmp(v6, v4mapped_prefix, 12) == 0)
			v4 = v6 + 12;
	} else {
		return false;
	}
	if (c->family == AF_INET)
		return v4 && prefix_eq(c->addr, v4, c->prefix);
	if (c->family != AF_INET6)
		return false;
	if (v6)
		return prefix_eq(c->addr, v6, c->prefix);
	/* plain IPv4 peer against an IPv6 block: only blocks inside ::ffff:0:0/96 */
	return c->prefix >= 96 && memcmp(c->addr, v4mapped_prefix, 12) == 0 &&
	       prefix_eq(c->addr + 12, v4, c->prefix - 96u);
}

static bool parse_port(const char *s, uint16_t *port)
{
	uint64_t v;
	size_t n = strlen(s);
	if (n == 0 || n > 5 || !parse_u64(s, n, &v) || v == 0 || v > 65535)
		return false;
	*port = (uint16_t)v;
	return true;
}

bool cfg_parse_bind(const char *s, struct sockaddr_storage *out, socklen_t *len)
{
	char host[64];
	const char *port_s;
	uint16_t port;
	if (!s || !*s)
		return false;
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || close[1] != ':' || (size_t)(close - s - 1) >= sizeof host)
			return false;
		memcpy(host, s + 1, (size_t)(close - s - 1));
		host[close - s - 1] = '\0';
		port_s = close + 2;
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		if (inet_pton(AF_INET6, host, &a6->sin6_addr) != 1 || !parse_port(port_s, &port))
			return false;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons(port);
		*len = sizeof *a6;
	} else {
		const char *colon = strrchr(s, ':');
		size_t nh = colon ? (size_t)(colon - s) : 0;
		port_s = colon ? colon + 1 : s;
		if (nh >= sizeof host || memchr(s, ':', nh))
			return false;
		memcpy(host, s, nh);
		host[nh] = '\0';
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		if (nh == 0)
			a4->sin_addr.s_addr = htonl(INADDR_ANY);
		else if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
			return false;
		if (!parse_port(port_s, &port))
			return false;
		a4->sin_family = AF_INET;
		a4->sin_port = htons(port);
		*len = sizeof *a4;
	}
	*out = ss;
	return true;
}
