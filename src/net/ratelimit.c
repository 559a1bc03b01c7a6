#include "net/ratelimit.h"

#include <math.h> /* isinf, isnan: macros, no libm */

#define RL_MAX_RATE 1e15   /* micro-units per ms: 10^12 tokens a second */
#define RL_MAX_BURST 1000000000000ULL /* tokens; keeps cap below 2^63 micro-units */

void rl_params_init(struct rl_params *p, double per_second, uint64_t burst)
{
	if (!(per_second > 0) || isinf(per_second) || isnan(per_second))
		per_second = 1e12;
	double r = per_second * (double)RL_UNIT / 1000.0;
	if (r > RL_MAX_RATE)
		r = RL_MAX_RATE;
	p->rate = r < 1 ? 1 : (uint64_t)r;
	if (burst == 0) {
		if (per_second >= (double)RL_MAX_BURST) {
			burst = RL_MAX_BURST;
		} else {
			burst = (uint64_t)per_second; /* one second's worth, rounded up */
			if ((double)burst < per_second)
				burst++;
		}
	}
	if (burst < 1)
		burst = 1;
	if (burst > RL_MAX_BURST)
		burst = RL_MAX_BURST;
	p->cap = (int64_t)burst * RL_UNIT;
}

void rl_bucket_init(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms)
{
	b->tokens = p->cap;
	b->last_ms = now_ms;
}

void rl_bucket_refill(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms)
{
	if (now_ms <= b->last_ms)
		return;
	uint64_t elapsed = now_ms - b->last_ms;
	b->last_ms = now_ms;
	if (b->tokens >= p->cap)
		return;
	uint64_t need = (uint64_t)(p->cap - b->tokens);
	if (elapsed >= need / p->rate + 1)
		b->tokens = p->cap;
	else
		b->tokens += (int64_t)(elapsed * p->rate); /* <= need: no overflow */
	if (b->tokens > p->cap)
		b->tokens = p->cap;
}

bool rl_bucket_take(struct rl_bucket *b, const struct rl_params *p, uint64_t now_ms, uint64_t n)
{
	rl_bucket_refill(b, p, now_ms);
	if (b->tokens <= 0)
		return false;
	/* Debt is bounded by one take; n is a packet or a count, far below 2^43. */
	if (n > (uint64_t)RL_MAX_BURST)
		n = RL_MAX_BURST;
	b->tokens -= (int64_t)n * RL_UNIT;
	return true;
}

void rl_bucket_put(struct rl_bucket *b, const struct rl_params *p, uint64_t n)
{
	if (n > (uint64_t)RL_MAX_BURST)
		n = RL_MAX_BURST;
	b->tokens += (int64_t)n * RL_UNIT;
	if (b->tokens > p->cap)
		b->tokens = p->cap;
}

uint64_t rl_bucket_wait_ms(const struct rl_bucket *b, const struct rl_params *p)
{
	if (b->tokens > 0)
		return 0;
	/* Until the balance is strictly positive again. */
	uint64_t short_by = (uint64_t)(-b->tokens) + 1;
	return (short_by + p->rate - 1) / p->rate;
}
