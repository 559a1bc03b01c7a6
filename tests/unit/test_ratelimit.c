/* Token bucket (net/ratelimit.c) and the rate / burst strings of the listener limits. */
#include <math.h>

#include "config/values.h"
#include "net/ratelimit.h"
#include "unit.h"

/* How many single takes succeed at time now, without time passing. */
static int drain(struct rl_bucket *b, const struct rl_params *p, uint64_t now)
{
	int n = 0;
	while (n < 1000000 && rl_bucket_take(b, p, now, 1))
		n++;
	return n;
}

TEST(params_default_burst_is_one_second)
{
	struct rl_params p;
	rl_params_init(&p, 20, 0);
	CHECK_EQ_INT(p.cap, 20 * RL_UNIT);
	CHECK_EQ_INT(p.rate, 20000); /* 20 tokens/s = 20000 micro-units/ms */
	rl_params_init(&p, 0.1, 0);  /* "1/10s": at least one token */
	CHECK_EQ_INT(p.cap, RL_UNIT);
	CHECK_EQ_INT(p.rate, 100);
	rl_params_init(&p, 2.5, 0); /* rounded up */
	CHECK_EQ_INT(p.cap, 3 * RL_UNIT);
	rl_params_init(&p, 20, 5);
	CHECK_EQ_INT(p.cap, 5 * RL_UNIT);
	rl_params_init(&p, 1e-9, 0); /* absurdly slow: still refills */
	CHECK(p.rate >= 1);
	rl_params_init(&p, 1e30, 0); /* absurdly fast: clamped, no overflow */
	CHECK(p.cap > 0 && p.rate > 0);
}

TEST(bucket_burst_then_rate)
{
	struct rl_params p;
	rl_params_init(&p, 20, 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &p, 1000);
	CHECK_EQ_INT(drain(&b, &p, 1000), 20);
	CHECK(!rl_bucket_take(&b, &p, 1000, 1));
	CHECK_EQ_INT(rl_bucket_wait_ms(&b, &p), 1); /* just above zero after 1 ms */
	/* 50 ms later: one token (20/s) */
	CHECK_EQ_INT(drain(&b, &p, 1050), 1);
	/* one second later: 20 more, never beyond the burst */
	CHECK_EQ_INT(drain(&b, &p, 2050), 20);
	CHECK_EQ_INT(drain(&b, &p, 100000), 20);
	/* over 3 s from empty: rate x elapsed */
	int total = 0;
	for (uint64_t t = 100000; t <= 103000; t += 10)
		total += drain(&b, &p, t);
	CHECK(total >= 60 - 1 && total <= 60 + 1);
	/* over 3 s from full (after a rest): burst + rate x elapsed */
	total = 0;
	for (uint64_t t = 200000; t <= 203000; t += 10)
		total += drain(&b, &p, t);
	CHECK(total >= 20 + 60 - 1 && total <= 20 + 60 + 1);
}

TEST(bucket_debt_is_repaid)
{
	struct rl_params p;
	rl_params_init(&p, 1000, 0); /* 1000 bytes/s, burst 1000 */
	struct rl_bucket b;
	rl_bucket_init(&b, &p, 0);
	CHECK(rl_bucket_take(&b, &p, 0, 5000)); /* a big packet passes on a positive balance */
	CHECK(!rl_bucket_take(&b, &p, 0, 1));
	/* 4000 bytes of debt at 1000/s: 4 s (and a hair) */
	CHECK_EQ_INT(rl_bucket_wait_ms(&b, &p), 4001);
	CHECK(!rl_bucket_take(&b, &p, 4000, 1));
	CHECK(rl_bucket_take(&b, &p, 4001, 1));
}

TEST(bucket_put_and_clock)
{
	struct rl_params p;
	rl_params_init(&p, 5, 0);
	struct rl_bucket b;
	rl_bucket_init(&b, &p, 0);
	CHECK_EQ_INT(drain(&b, &p, 0), 5);
	rl_bucket_put(&b, &p, 1);
	CHECK(rl_bucket_take(&b, &p, 0, 1));
	rl_bucket_put(&b, &p, 100);
	CHECK_EQ_INT(b.tokens, p.cap); /* capped */
	/* time going backwards (another thread's cached clock) adds nothing */
	rl_bucket_init(&b, &p, 1000);
	CHECK_EQ_INT(drain(&b, &p, 1000), 5);
	CHECK(!rl_bucket_take(&b, &p, 500, 1));
	CHECK_EQ_INT(b.last_ms, 1000);
	/* a huge gap fills the bucket without overflow */
	CHECK_EQ_INT(drain(&b, &p, UINT64_MAX / 2), 5);
	/* a bucket initialised at time 0 is full at any later time */
	rl_bucket_init(&b, &p, 0);
	CHECK_EQ_INT(drain(&b, &p, 123456789), 5);
}

TEST(bucket_large_byte_rates)
{
	struct rl_params p;
	rl_params_init(&p, 10.0 * 1024 * 1024 * 1024, 0); /* 10GB/s */
	struct rl_bucket b;
	rl_bucket_init(&b, &p, 0);
	CHECK(rl_bucket_take(&b, &p, 0, 256u << 20));
	CHECK(rl_bucket_take(&b, &p, 1, 256u << 20));
	CHECK(b.tokens <= p.cap);
}

TEST(rate_strings)
{
	double r;
	bool bytes;
	CHECK(cfg_parse_rate("1000/s", &r, &bytes) && r == 1000 && !bytes);
	CHECK(cfg_parse_rate("100/10s", &r, &bytes) && r == 10 && !bytes);
	CHECK(cfg_parse_rate("20/s", &r, &bytes) && r == 20);
	CHECK(cfg_parse_rate("5/100ms", &r, &bytes) && r == 50);
	CHECK(cfg_parse_rate("60/m", &r, &bytes) && r == 1);
	CHECK(cfg_parse_rate("10MB/m", &r, &bytes) && bytes && fabs(r - 10.0 * 1024 * 1024 / 60) < 1e-6);
	CHECK(cfg_parse_rate("1KB/s", &r, &bytes) && bytes && r == 1024);
	CHECK(cfg_parse_rate("1000", &r, &bytes) && r == 1000);
	CHECK(cfg_parse_rate("infinity", &r, &bytes) && isinf(r));
	CHECK(!cfg_parse_rate("fast", &r, &bytes));
	CHECK(!cfg_parse_rate("0/s", &r, &bytes));
	CHECK(!cfg_parse_rate("10/", &r, &bytes));
	CHECK(!cfg_parse_rate("10/10", &r, &bytes));
	CHECK(!cfg_parse_rate("-5/s", &r, &bytes));
	CHECK(!cfg_parse_rate("", &r, &bytes));
	CHECK(!cfg_parse_rate(NULL, &r, &bytes));
}

TEST(burst_sizes)
{
	uint64_t v;
	CHECK(cfg_parse_bytesize("1MB", &v) && v == 1048576);
	CHECK(cfg_parse_bytesize("4096", &v) && v == 4096);
	CHECK(!cfg_parse_bytesize("lots", &v));
}

int main(void)
{
	RUN(params_default_burst_is_one_second);
	RUN(bucket_burst_then_rate);
	RUN(bucket_debt_is_repaid);
	RUN(bucket_put_and_clock);
	RUN(bucket_large_byte_rates);
	RUN(rate_strings);
	RUN(burst_sizes);
	return unit_summary();
}
