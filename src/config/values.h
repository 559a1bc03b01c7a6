/* Parsers for the typed values EMQX configurations use: durations, byte sizes, rates,
 * CIDR blocks and listener bind addresses. All are pure functions over a NUL-terminated
 * string: they accept the whole string or nothing (no surrounding whitespace), never
 * allocate, and leave *out untouched when they return false.
 *
 *   duration  "15s" "5m" "2h" "1d" "100ms" "1h30m" "1.5s"; units ms s m h d w f (week,
 *             fortnight, as EMQX), case-insensitive, components may repeat in any order
 *             and are summed; fractions are rounded to the nearest millisecond (EMQX
 *             rounds too). "infinity", signs and spaces are refused.
 *   bytesize  "512B" "64KB" "1MB" "1GB" "1mb" "1024"; KB = 1024 (EMQX); integers only.
 *   rate      "infinity", "1000/s", "100/10s", "10MB/s", "1000/m", "5/100ms", or a bare
 *             amount meaning per second ("1000", "10MB"); a zero amount is refused (EMQX).
 *   cidr      "10.0.0.0/8", "192.168.1.1" (/32), "::1" (/128), "2001:db8::/32"; host bits
 *             after the prefix are cleared ("10.1.2.3/8" is 10.0.0.0/8).
 *   bind      "1883" and ":1883" (0.0.0.0:1883), "0.0.0.0:1883", "127.0.0.1:8883",
 *             "[::1]:1883", "[::]:1883"; IP literals only (no host names); port 1..65535
 *             (port 0 is refused: a listener must have a known port).
 */
#ifndef BW_VALUES_H
#define BW_VALUES_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/socket.h>

struct cfg_cidr {
	int family;       /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network address, host bits zero; AF_INET uses addr[0..4) */
	uint8_t prefix;   /* 0..32 for AF_INET, 0..128 for AF_INET6 */
};

/* Duration in milliseconds; a bare integer is milliseconds (EMQX `duration`). */
bool cfg_parse_duration_ms(const char *s, uint64_t *out_ms);
/* Duration in seconds; a bare integer is seconds, values with units round up (EMQX `duration_s`). */
bool cfg_parse_duration_s(const char *s, uint64_t *out_s);
/* Byte size; a bare integer is bytes, KB/MB/GB are powers of 1024. */
bool cfg_parse_bytesize(const char *s, uint64_t *out);
/* Rate as units per second (INFINITY for "infinity"); *is_bytes says the amount had a byte unit. */
bool cfg_parse_rate(const char *s, double *per_second, bool *is_bytes);
/* IPv4 or IPv6 address with optional /prefix (default: the full address length). */
bool cfg_parse_cidr(const char *s, struct cfg_cidr *out);
/* Does the peer address fall in c? IPv4 blocks also match IPv4-mapped IPv6 peers (::ffff:a.b.c.d),
 * and blocks inside ::ffff:0:0/96 also match plain IPv4 peers. */
bool cfg_cidr_match(const struct cfg_cidr *c, const struct sockaddr *sa);
/* Listener address: fills *out (sockaddr_in or sockaddr_in6) and *len. */
bool cfg_parse_bind(const char *s, struct sockaddr_storage *out, socklen_t *len);

#endif
