/* Token buckets for the listener limits (EMQX `max_conn_rate`, `messages_rate`,
 * `bytes_rate`): back-pressure, never disconnects.
 *
 * Integer arithmetic in micro-units (RL_UNIT per token), so a bucket is two integers and a
 * refill is a subtraction and a multiplication on the loop's cached time (no syscall).
 * A take succeeds whenever the balance is positive and may leave it negative (debt): a
 * packet of any size passes once the bucket has something in it, and the debt is repaid
 * before the next take succeeds, so over time the rate is exact and the overshoot is at
 * most one take. The bucket starts full; its capacity is the burst.
 *
 * Parameters (struct rl_params) are immutable after rl_params_init and may be shared by
 * any number of buckets on any threads. A bucket is not locked: the owner serialises
 * access (a connection's loop, or a mutex for a listener's shared bucket).
 */
#ifndef BW_RATELIMIT_H
#define BW_RATELIMIT_H

#include <stdbool.h>
#include <stdint.h>

#define RL_UNIT 1000000LL /* micro-units per token */

struct rl_params {
	uint64_t rate; /* refill, micro-units per millisecond (>= 1) */
	int64_t cap;   /* capacity (burst), micro-units (>= RL_UNIT) */
};

struct rl_bucket {
	int64_t tokens;   /* micro-units; negative = debt */
	uint64_t last_ms; /* time of the last refill */
};

/* Parameters for per_second tokens a second (> 0, finite) with a capacity of burst tokens
 * (0 = one second's worth, at least one token). Values are clamped to sane bounds. */
void rl_params_init(struct rl_params *p, double per_second, uint64_t burst);
/* A full bucket as of now_ms. */
void rl_bucket_init(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms);
/* Add what has accrued since the last refill (time going backwards adds nothing). */
void rl_bucket_refill(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms);
/* Take n tokens if the balance is positive (may leave debt); false (nothing taken) when not. */
bool rl_bucket_take(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms, uint64_t n);
/* Give back n tokens taken but not used (capped at the capacity). */
void rl_bucket_put(struct rl_bucket *b, const struct rl_params *p, uint64_t n);
/* Milliseconds from the last refill until a take can succeed again (0 when it can now). */
uint64_t rl_bucket_wait_ms(const struct rl_bucket *b, const struct rl_params *p);

#endif
