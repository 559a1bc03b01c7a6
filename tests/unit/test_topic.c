/* Topic names, filters, shared subscriptions and the topic tree. */
#include "broker/topic.c"

#include "unit.h"

#define S(lit) (lit), (sizeof(lit) - 1)

static char *repeat(char c, size_t n)
{
	char *s = xmalloc(n + 1);
	memset(s, c, n);
	s[n] = '\0';
	return s;
}

/* ---- validation ---- */

TEST(name_valid)
{
	static const char *const ok[] = {
		"a", "/", "a/b", "sport/tennis/player1", "$SYS/broker/load", "a//b", "/a", "a/", " ",
		"//", "$", "a$b", "ünïcode/🌡", "sport/tennis/player1/ranking",
	};
	static const char *const bad[] = { "", "+", "#", "a+", "a/+", "a/#", "a/b#", "sport/tennis/#", "+/a" };
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
		CHECK(topic_name_valid(ok[i], strlen(ok[i])));
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
		CHECK(!topic_name_valid(bad[i], strlen(bad[i])));
	char *max = repeat('x', TOPIC_MAX_LEN + 1);
	CHECK(topic_name_valid(max, TOPIC_MAX_LEN));
	CHECK(!topic_name_valid(max, TOPIC_MAX_LEN + 1));
	free(max);
}

TEST(filter_valid)
{
	static const char *const ok[] = {
		"#", "+", "/", "a", "sport/tennis/player1/#", "sport/#", "sport/tennis/+", "+/tennis/#",
		"sport/+/player1", "+/+", "/+", "+/", "a//b", "a/+/b/#", "$SYS/#", "$SYS/+/x", "a/b/c",
		"//", "+/+/+", "a/$/b",
	};
	static const char *const bad[] = {
		"", "sport/tennis#", "sport/tennis/#/ranking", "sport+", "a/b+/c", "a/+b", "#/a", "a/#b",
		"a/b#", "++", "##", "+#", "a/#/", "#/", "a/#/#",
	};
	for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
		if (!topic_filter_valid(ok[i], strlen(ok[i])))
			fprintf(stderr, "should be valid: \"%s\"\n", ok[i]);
		CHECK(topic_filter_valid(ok[i], strlen(ok[i])));
	}
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		if (topic_filter_valid(bad[i], strlen(bad[i])))
			fprintf(stderr, "should be invalid: \"%s\"\n", bad[i]);
		CHECK(!topic_filter_valid(bad[i], strlen(bad[i])));
	}
	char *max = repeat('/', TOPIC_MAX_LEN + 1);
	CHECK(topic_filter_valid(max, TOPIC_MAX_LEN));
	CHECK(!topic_filter_valid(max, TOPIC_MAX_LEN + 1));
	free(max);
	/* Only the first len bytes count. */
	CHECK(topic_filter_valid("a/#/b", 3));
	CHECK(topic_name_valid("a/#", 2));
}

TEST(has_wildcard)
{
	CHECK(topic_filter_has_wildcard(S("+")));
	CHECK(topic_filter_has_wildcard(S("a/#")));
	CHECK(topic_filter_has_wildcard(S("a/+/b")));
	CHECK(!topic_filter_has_wildcard(S("a/b")));
	CHECK(!topic_filter_has_wildcard(S("$SYS/x")));
	CHECK(!topic_filter_has_wildcard(S("a/#") - 1));
}

/* ---- matching ---- */

static const struct {
	const char *filter, *name;
	bool match;
} match_table[] = {
	/* MQTT 5.0 §4.7.1.2 multi-level wildcard */
	{ "sport/tennis/player1/#", "sport/tennis/player1", true },
	{ "sport/tennis/player1/#", "sport/tennis/player1/ranking", true },
	{ "sport/tennis/player1/#", "sport/tennis/player1/score/wimbledon", true },
	{ "sport/tennis/player1/#", "sport/tennis/player2", false },
	{ "sport/tennis/player1/#", "sport/tennis", false },
	{ "sport/#", "sport", true },
	{ "#", "sport/tennis/player1", true },
	/* §4.7.1.3 single-level wildcard */
	{ "sport/tennis/+", "sport/tennis/player1", true },
	{ "sport/tennis/+", "sport/tennis/player2", true },
	{ "sport/tennis/+", "sport/tennis/player1/ranking", false },
	{ "sport/+", "sport", false },
	{ "sport/+", "sport/", true },
	{ "+/+", "/finance", true },
	{ "/+", "/finance", true },
	{ "+", "/finance", false },
	{ "+/tennis/#", "sport/tennis/player1", true },
	{ "+/tennis/#", "sport/tennis", true },
	{ "+/tennis/#", "sport/football", false },
	{ "sport/+/player1", "sport/tennis/player1", true },
	{ "sport/+/player1", "sport//player1", true },
	{ "sport/+/player1", "sport/player1", false },
	/* §4.7.2 topics beginning with $ */
	{ "#", "$SYS/monitor/Clients", false },
	{ "#", "$SYS", false },
	{ "+/monitor/Clients", "$SYS/monitor/Clients", false },
	{ "+", "$SYS", false },
	{ "+/#", "$SYS/x", false },
	{ "$SYS/#", "$SYS/monitor/Clients", true },
	{ "$SYS/#", "$SYS/x", true },
	{ "$SYS/#", "$SYS", true },
	{ "$SYS/monitor/+", "$SYS/monitor/Clients", true },
	{ "$SYS/+/Clients", "$SYS/monitor/Clients", true },
	{ "#", "a$", true },
	{ "+/x", "a$/x", true },
	{ "a/+", "a/$x", true },
	{ "a/#", "a/$x/y", true },
	/* '#' includes the parent level; empty levels are levels */
	{ "a/#", "a", true },
	{ "a/#", "a/", true },
	{ "a/#", "a/b/c", true },
	{ "a/#", "ab", false },
	{ "a/#", "b/a", false },
	{ "#", "/", true },
	{ "#", "a", true },
	{ "/#", "/", true },
	{ "/#", "/a", true },
	{ "/#", "a", false },
	{ "a/+/#", "a", false },
	{ "a/+/#", "a/b", true },
	{ "a/+/#", "a/", true },
	{ "a/+/b", "a//b", true },
	{ "a//b", "a//b", true },
	{ "a/b", "a//b", false },
	{ "a//b", "a/b", false },
	{ "+/+", "/", true },
	{ "+", "/", false },
	{ "/", "/", true },
	{ "+/", "a/", true },
	{ "+/", "a", false },
	{ "a/", "a", false },
	{ "a", "a/", false },
	{ "a/+", "a", false },
	{ "a/+", "a/", true },
	{ "+/+/+", "a/b", false },
	{ "+", "a", true },
	{ "a", "a", true },
	{ "a", "A", false },
	{ "ACCOUNTS", "Accounts", false },
	{ "a/b", "a/bc", false },
	{ "a/bc", "a/b", false },
	{ "a/b/c", "a/b", false },
	{ "a/b", "a/b/c", false },
};

TEST(match_table)
{
	for (size_t i = 0; i < sizeof match_table / sizeof match_table[0]; i++) {
		const char *f = match_table[i].filter, *n = match_table[i].name;
		bool got = topic_match(f, strlen(f), n, strlen(n));
		if (got != match_table[i].match)
			fprintf(stderr, "topic_match(\"%s\", \"%s\") = %d\n", f, n, got);
		CHECK(got == match_table[i].match);
	}
}

/* ---- shared subscriptions ---- */

TEST(share_parse)
{
	struct topic_share sh;
	memset(&sh, 0, sizeof sh);
	const char *f = "$share/g/a/b";
	CHECK_EQ_INT(topic_parse_share(f, strlen(f), &sh), 1);
	CHECK(sh.group == f + 7 && sh.group_len == 1);
	CHECK(sh.filter == f + 9 && sh.filter_len == 3);
	CHECK_EQ_INT(topic_parse_share(S("$share/group-1/sport/+/#"), &sh), 1);
	CHECK_EQ_INT((int)sh.group_len, 7);
	CHECK_MEM(sh.filter, "sport/+/#", 9);
	CHECK_EQ_INT((int)sh.filter_len, 9);
	CHECK_EQ_INT(topic_parse_share(S("$share/g/#"), &sh), 1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g//"), &sh), 1); /* filter "/" */
	CHECK_EQ_INT((int)sh.filter_len, 1);

	memset(&sh, 0x55, sizeof sh);
	struct topic_share untouched;
	memcpy(&untouched, &sh, sizeof sh);
	CHECK_EQ_INT(topic_parse_share(S("$share//a"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g+/a"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/+/a"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g#/a"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g/"), &sh), -1); /* empty filter */
	CHECK_EQ_INT(topic_parse_share(S("$share/g/a/#/b"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$share/g/a+"), &sh), -1);
	CHECK_EQ_INT(topic_parse_share(S("$sharex/a"), &sh), 0);
	CHECK_EQ_INT(topic_parse_share(S("$share"), &sh), 0);
	CHECK_EQ_INT(topic_parse_share(S("$SHARE/g/a"), &sh), 0);
	CHECK_EQ_INT(topic_parse_share(S("a/$share/g/a"), &sh), 0);
	CHECK_EQ_INT(topic_parse_share(S("sport/#"), &sh), 0);
	CHECK_EQ_INT(topic_parse_share(S("#"), &sh), 0);
	CHECK_MEM(&sh, &untouched, sizeof sh);
}

/* ---- tree basics ---- */

static void *V(uintptr_t i)
{
	return (void *)i;
}

static void put(struct topic_tree *t, const char *key, uintptr_t v)
{
	void **slot = topic_tree_slot(t, key, strlen(key), true);
	CHECK(slot != NULL);
	if (slot)
		*slot = V(v);
}

static void del(struct topic_tree *t, const char *key)
{
	void **slot = topic_tree_slot(t, key, strlen(key), false);
	CHECK(slot != NULL);
	if (slot)
		*slot = NULL;
	topic_tree_prune(t, key, strlen(key));
}

static void *get(struct topic_tree *t, const char *key)
{
	return topic_tree_get(t, key, strlen(key));
}

TEST(tree_basic)
{
	struct topic_tree *t = topic_tree_new();
	CHECK_EQ_INT(topic_tree_count(t), 0);
	CHECK(get(t, "a") == NULL);
	CHECK(topic_tree_slot(t, S("a"), false) == NULL);

	put(t, "a/b/c", 1);
	CHECK(get(t, "a/b/c") == V(1));
	CHECK(get(t, "a/b") == NULL);
	CHECK(get(t, "a") == NULL);
	CHECK(topic_tree_slot(t, S("a/b"), false) == NULL); /* interior node, not a key */
	CHECK_EQ_INT(topic_tree_count(t), 1);

	/* Interior nodes becoming keys. */
	put(t, "a", 2);
	put(t, "a/b", 3);
	CHECK(get(t, "a") == V(2));
	CHECK(get(t, "a/b") == V(3));
	CHECK(get(t, "a/b/c") == V(1));
	CHECK_EQ_INT(topic_tree_count(t), 3);

	/* Empty levels are real levels. */
	put(t, "", 4);
	put(t, "/", 5);
	put(t, "a//b", 6);
	put(t, "/a", 7);
	put(t, "a/", 8);
	CHECK(get(t, "") == V(4));
	CHECK(get(t, "/") == V(5));
	CHECK(get(t, "//") == NULL);
	CHECK(get(t, "a//b") == V(6));
	CHECK(get(t, "/a") == V(7));
	CHECK(get(t, "a/") == V(8));
	CHECK(get(t, "a/b/") == NULL);
	CHECK_EQ_INT(topic_tree_count(t), 8);

	/* Slots are stable and reusable. */
	void **s1 = topic_tree_slot(t, S("x/y"), true);
	CHECK(*s1 == NULL);
	CHECK_EQ_INT(topic_tree_count(t), 8); /* NULL values are not counted */
	void **s2 = topic_tree_slot(t, S("x/y"), true);
	CHECK(s1 == s2);
	CHECK(topic_tree_slot(t, S("x/y"), false) == s1);
	for (int i = 0; i < 20; i++) {
		char k[16];
		snprintf(k, sizeof k, "x/y/%d", i); /* x/y gets a hashed child set */
		put(t, k, 100 + (uintptr_t)i);
	}
	CHECK(topic_tree_slot(t, S("x/y"), false) == s1);
	topic_tree_prune(t, S("x/y")); /* holds NULL but has children: stays */
	CHECK(topic_tree_slot(t, S("x/y"), false) == s1);
	*s1 = V(9);
	CHECK(get(t, "x/y") == V(9));
	for (int i = 0; i < 20; i++) {
		char k[16];
		snprintf(k, sizeof k, "x/y/%d", i);
		del(t, k);
	}
	CHECK(get(t, "x/y") == V(9));
	CHECK(topic_tree_slot(t, S("x/y"), false) == s1);
	topic_tree_prune(t, S("x/y")); /* still holds a value: harmless */
	CHECK(get(t, "x/y") == V(9));
	del(t, "x/y");
	CHECK(lookup(t, S("x")) == NULL); /* ancestors freed */

	/* Prune is harmless for missing keys and interior nodes. */
	topic_tree_prune(t, S("no/such/key"));
	topic_tree_prune(t, S("a/b/c/d"));
	topic_tree_prune(t, S("a//"));
	CHECK_EQ_INT(topic_tree_count(t), 8);

	/* Pruning a leaf frees ancestors left empty, and stops at one still needed. */
	put(t, "p/q/r/s", 10);
	put(t, "p/q/x", 11);
	del(t, "p/q/r/s");
	CHECK(lookup(t, S("p/q/r")) == NULL);
	CHECK(lookup(t, S("p/q")) != NULL);
	CHECK(get(t, "p/q/x") == V(11));
	del(t, "p/q/x");
	CHECK(lookup(t, S("p")) == NULL);

	/* A key holding NULL is removed with its empty ancestors; "a" keeps its value. */
	del(t, "a/b/c");
	CHECK(get(t, "a/b") == V(3));
	del(t, "a/b");
	CHECK(get(t, "a") == V(2));
	CHECK(get(t, "a//b") == V(6));
	const char *rest[] = { "a", "", "/", "a//b", "/a", "a/" };
	for (size_t i = 0; i < sizeof rest / sizeof rest[0]; i++)
		del(t, rest[i]);
	CHECK_EQ_INT(topic_tree_count(t), 0);
	CHECK(!has_kids(t->root));

	/* Keys beyond the MQTT limit are never stored. */
	char *big = repeat('k', TOPIC_MAX_LEN + 1);
	CHECK(topic_tree_slot(t, big, TOPIC_MAX_LEN + 1, true) == NULL);
	CHECK(topic_tree_get(t, big, TOPIC_MAX_LEN + 1) == NULL);
	topic_tree_prune(t, big, TOPIC_MAX_LEN + 1);
	void **bs = topic_tree_slot(t, big, TOPIC_MAX_LEN, true);
	CHECK(bs != NULL);
	*bs = V(12);
	CHECK(topic_tree_get(t, big, TOPIC_MAX_LEN) == V(12));
	*bs = NULL;
	topic_tree_prune(t, big, TOPIC_MAX_LEN);
	CHECK(!has_kids(t->root));
	free(big);

	topic_tree_free(t, NULL);
}

TEST(node_size)
{
	CHECK_EQ_INT(sizeof(struct node), 48);
}

/* ---- visiting ---- */

struct collect {
	size_t n;
	char keys[64][64];
	void *values[64];
	size_t stop_after; /* 0: never stop */
};

static bool collect_fn(void *arg, const char *key, size_t key_len, void *value)
{
	struct collect *c = arg;
	if (c->n < 64 && key_len < 64) {
		memcpy(c->keys[c->n], key, key_len);
		c->keys[c->n][key_len] = '\0';
		c->values[c->n] = value;
	}
	c->n++;
	return !(c->stop_after && c->n >= c->stop_after);
}

static bool collected(const struct collect *c, const char *key)
{
	for (size_t i = 0; i < c->n && i < 64; i++)
		if (strcmp(c->keys[i], key) == 0)
			return true;
	return false;
}

TEST(match_name_basic)
{
	struct topic_tree *t = topic_tree_new();
	const char *filters[] = {
		"#", "a/#", "a/+", "a/b", "+/b", "+/+", "a", "$SYS/#", "$SYS/+", "+", "a/b/#", "/#",
	};
	for (size_t i = 0; i < sizeof filters / sizeof filters[0]; i++)
		put(t, filters[i], i + 1);

	struct collect c = { 0 };
	CHECK(topic_tree_match_name(t, S("a/b"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 7);
	CHECK(collected(&c, "#") && collected(&c, "a/#") && collected(&c, "a/+") && collected(&c, "a/b"));
	CHECK(collected(&c, "+/b") && collected(&c, "+/+") && collected(&c, "a/b/#"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, S("a"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 4); /* "#", "a/#", "a", "+" */
	CHECK(collected(&c, "a") && collected(&c, "a/#") && collected(&c, "+") && collected(&c, "#"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, S("$SYS/x"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	CHECK(collected(&c, "$SYS/#") && collected(&c, "$SYS/+"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, S("$SYS"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 1);
	CHECK(collected(&c, "$SYS/#"));

	/* Early stop. */
	memset(&c, 0, sizeof c);
	c.stop_after = 3;
	CHECK(!topic_tree_match_name(t, S("a/b"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 3);
	memset(&c, 0, sizeof c);
	c.stop_after = 1;
	CHECK(!topic_tree_match_name(t, S("a"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 1);
	memset(&c, 0, sizeof c);
	c.stop_after = 7; /* stopping at the very last match still reports the stop */
	CHECK(!topic_tree_match_name(t, S("a/b"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 7);

	/* NULL values are not visited. */
	*topic_tree_slot(t, S("#"), false) = NULL;
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, S("zzz"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 1);
	CHECK(collected(&c, "+"));
	topic_tree_free(t, NULL);
}

TEST(match_filter_basic)
{
	struct topic_tree *t = topic_tree_new();
	const char *names[] = { "a", "a/b", "a/c", "a/b/c", "$SYS/x", "$SYS", "/", "/a", "b", "a/" };
	for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
		put(t, names[i], i + 1);
	struct collect c = { 0 };
	CHECK(topic_tree_match_filter(t, S("#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 8);
	CHECK(!collected(&c, "$SYS") && !collected(&c, "$SYS/x"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("a/#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 5);
	CHECK(collected(&c, "a") && collected(&c, "a/") && collected(&c, "a/b/c"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("+"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	CHECK(collected(&c, "a") && collected(&c, "b"));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("+/+"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 5); /* a/b a/c / /a a/ */

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("$SYS/#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("a/b"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 1);
	CHECK_STR(c.keys[0], "a/b");
	CHECK(c.values[0] == V(2));

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("x/#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 0);

	memset(&c, 0, sizeof c);
	c.stop_after = 2;
	CHECK(!topic_tree_match_filter(t, S("#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	memset(&c, 0, sizeof c);
	c.stop_after = 1;
	CHECK(!topic_tree_match_filter(t, S("+/+"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 1);

	/* '$' names first in iteration order, last, and alone. */
	struct topic_tree *d = topic_tree_new();
	put(d, "a/x", 1);
	put(d, "$a/x", 2);
	put(d, "$a", 3);
	CHECK(first_child(d->root) == lookup(d, S("$a")));
	const char *dq[] = { "+", "+/x", "+/+", "#", "+/#" };
	for (size_t i = 0; i < sizeof dq / sizeof dq[0]; i++) {
		memset(&c, 0, sizeof c);
		CHECK(topic_tree_match_filter(d, dq[i], strlen(dq[i]), collect_fn, &c));
		CHECK(!collected(&c, "$a") && !collected(&c, "$a/x"));
	}
	put(d, "b/x", 4);
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(d, S("+/x"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	del(d, "a/x");
	del(d, "b/x");
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(d, S("+/#"), collect_fn, &c));
	CHECK(topic_tree_match_filter(d, S("+"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 0);
	topic_tree_free(d, NULL);

	memset(&c, 0, sizeof c);
	CHECK(topic_tree_walk(t, collect_fn, &c));
	CHECK_EQ_INT(c.n, 10);
	memset(&c, 0, sizeof c);
	c.stop_after = 4;
	CHECK(!topic_tree_walk(t, collect_fn, &c));
	CHECK_EQ_INT(c.n, 4);
	topic_tree_free(t, NULL);
}

/* ---- randomised comparison with topic_match ---- */

static uint64_t rng_state;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return (uint32_t)(rng_state % n);
}

/* Random name or filter from a small alphabet of levels, with enough distinct levels
 * that some nodes switch to a hash table. */
static void random_key(char *out, size_t cap, bool filter)
{
	static const char *const levels[] = {
		"a", "b", "c", "", "$x", "$SYS", "l0", "l1", "l2", "l3", "l4", "l5", "l6", "l7", "l8", "l9", "l10",
	};
	size_t nlev = sizeof levels / sizeof levels[0];
	size_t depth = 1 + rnd(4), len = 0;
	for (size_t d = 0; d < depth; d++) {
		const char *lvl;
		uint32_t r = rnd(100);
		if (filter && r < 20)
			lvl = "+";
		else if (filter && r < 28 && d == depth - 1)
			lvl = "#";
		else if (r < 60)
			lvl = levels[rnd(4)]; /* common levels, so names and filters meet */
		else
			lvl = levels[rnd((uint32_t)nlev)];
		len += (size_t)snprintf(out + len, cap - len, "%s%s", d ? "/" : "", lvl);
	}
}

#define NKEYS 700
#define NQUERIES 3000

struct rcheck {
	char (*keys)[64];
	int *seen;
	int bad;
};

static bool rcheck_fn(void *arg, const char *key, size_t key_len, void *value)
{
	struct rcheck *rc = arg;
	size_t i = (uintptr_t)value - 1;
	if (i >= NKEYS || strlen(rc->keys[i]) != key_len || memcmp(rc->keys[i], key, key_len) != 0)
		rc->bad++;
	else
		rc->seen[i]++;
	return true;
}

/* Insert NKEYS random keys (filters or names), query with NQUERIES of the other kind and
 * compare with topic_match over the live keys; then remove half and do it again. */
static void random_compare(bool tree_of_filters)
{
	static char keys[NKEYS][64];
	static int seen[NKEYS];
	static bool live[NKEYS];
	struct topic_tree *t = topic_tree_new();
	size_t nlive = 0;
	for (size_t i = 0; i < NKEYS; i++) {
		random_key(keys[i], sizeof keys[i], tree_of_filters);
		void **slot = topic_tree_slot(t, keys[i], strlen(keys[i]), true);
		live[i] = *slot == NULL; /* duplicates keep the first */
		if (live[i]) {
			*slot = V(i + 1);
			nlive++;
		}
	}
	CHECK_EQ_INT(topic_tree_count(t), nlive);
	size_t total_matches = 0, hashed = 0;
	for (int round = 0; round < 2; round++) {
		struct rcheck rc = { keys, seen, 0 };
		for (int q = 0; q < NQUERIES; q++) {
			char query[64];
			random_key(query, sizeof query, !tree_of_filters);
			memset(seen, 0, sizeof seen);
			size_t ql = strlen(query);
			if (tree_of_filters)
				CHECK(topic_tree_match_name(t, query, ql, rcheck_fn, &rc));
			else
				CHECK(topic_tree_match_filter(t, query, ql, rcheck_fn, &rc));
			for (size_t i = 0; i < NKEYS; i++) {
				bool want = live[i] && (tree_of_filters ? topic_match(keys[i], strlen(keys[i]), query, ql)
									: topic_match(query, ql, keys[i], strlen(keys[i])));
				if (seen[i] != (int)want) {
					fprintf(stderr, "%s \"%s\" key \"%s\": visited %d times, want %d\n",
						tree_of_filters ? "name" : "filter", query, keys[i], seen[i], want);
					CHECK(seen[i] == (int)want);
				}
				total_matches += want;
			}
		}
		CHECK_EQ_INT(rc.bad, 0);
		if (round == 0) {
			for (struct node *n = walk_next(t->root, t->root, false); n; n = walk_next(t->root, n, false))
				hashed += (n->flags & NODE_HASHED) != 0;
			/* Remove about half of the keys. */
			for (size_t i = 0; i < NKEYS; i++) {
				if (live[i] && rnd(2)) {
					del(t, keys[i]);
					live[i] = false;
					nlive--;
				}
			}
			CHECK_EQ_INT(topic_tree_count(t), nlive);
		}
	}
	CHECK(total_matches > 1000); /* the alphabet makes queries meet keys */
	CHECK(hashed > 0);           /* and some nodes were hashed */
	for (size_t i = 0; i < NKEYS; i++)
		if (live[i])
			del(t, keys[i]);
	CHECK_EQ_INT(topic_tree_count(t), 0);
	CHECK(!has_kids(t->root));
	topic_tree_free(t, NULL);
}

TEST(random_match_name)
{
	rng_state = 0x9e3779b97f4a7c15ull;
	random_compare(true);
}

TEST(random_match_filter)
{
	rng_state = 0x243f6a8885a308d3ull;
	random_compare(false);
}

/* ---- wide and deep trees ---- */

TEST(wide_node)
{
	enum { N = 10000 };
	struct topic_tree *t = topic_tree_new();
	char k[32];
	for (uintptr_t i = 0; i < N; i++) {
		snprintf(k, sizeof k, "w/%lu/s", (unsigned long)i);
		put(t, k, i + 1);
	}
	put(t, "w/+/s", N + 1);
	struct node *w = lookup(t, S("w"));
	CHECK(w && (w->flags & NODE_HASHED) && w->kids.map->count == N + 1);
	CHECK_EQ_INT(topic_tree_count(t), N + 1);
	for (uintptr_t i = 0; i < N; i++) {
		snprintf(k, sizeof k, "w/%lu/s", (unsigned long)i);
		CHECK(get(t, k) == V(i + 1));
	}
	struct collect c = { 0 };
	CHECK(topic_tree_match_name(t, S("w/5000/s"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	CHECK(collected(&c, "w/5000/s") && collected(&c, "w/+/s"));
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("w/+/s"), collect_fn, &c));
	CHECK_EQ_INT(c.n, N + 1); /* the stored "w/+/s" is a key like any other here */
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("w/#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, N + 1);

	/* "w" becomes a key: its node is reallocated under 10,001 children. */
	put(t, "w", N + 2);
	w = lookup(t, S("w"));
	CHECK(get(t, "w") == V(N + 2));
	CHECK(first_child(w)->parent == w);
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("w/+/s"), collect_fn, &c));
	CHECK_EQ_INT(c.n, N + 1);

	/* Shrinks as children go: rebuilt smaller, then back to a list. */
	for (uintptr_t i = 0; i < N; i++) {
		snprintf(k, sizeof k, "w/%lu/s", (unsigned long)i);
		del(t, k);
		if (i == N - 100)
			CHECK((w->flags & NODE_HASHED) && w->kids.map->mask + 1 <= 16 * 128);
	}
	CHECK(!(w->flags & NODE_HASHED) && w->nsmall == 1);
	CHECK_EQ_INT(topic_tree_count(t), 2);
	del(t, "w/+/s");
	del(t, "w");
	CHECK(!has_kids(t->root));
	topic_tree_free(t, NULL);
}

TEST(deep_key)
{
	/* 65535 bytes of '/' is 65536 empty levels: matching and freeing must not recurse. */
	struct topic_tree *t = topic_tree_new();
	char *deep = repeat('/', TOPIC_MAX_LEN);
	put(t, deep, 1);
	deep[TOPIC_MAX_LEN - 1] = '#';
	put(t, deep, 2); /* "//...//#" */
	deep[TOPIC_MAX_LEN - 1] = '/';
	put(t, "#", 3);
	struct collect c = { 0 };
	CHECK(topic_tree_match_name(t, deep, TOPIC_MAX_LEN, collect_fn, &c));
	CHECK_EQ_INT(c.n, 3);
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, deep, TOPIC_MAX_LEN - 1, collect_fn, &c));
	CHECK_EQ_INT(c.n, 2); /* "//...//#" and "#" */
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, deep, TOPIC_MAX_LEN - 2, collect_fn, &c));
	CHECK_EQ_INT(c.n, 2); /* "//...//#" (its parent level) and "#" */
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_name(t, deep, TOPIC_MAX_LEN - 3, collect_fn, &c));
	CHECK_EQ_INT(c.n, 1); /* "#" only */
	memset(&c, 0, sizeof c);
	CHECK(topic_tree_match_filter(t, S("/#"), collect_fn, &c));
	CHECK_EQ_INT(c.n, 2);
	CHECK(topic_tree_match_filter(t, deep, TOPIC_MAX_LEN, collect_fn, &c));
	CHECK_EQ_INT(c.n, 3);
	CHECK_EQ_INT(topic_tree_count(t), 3);
	topic_tree_free(t, NULL); /* the remaining chain of 65536 nodes */
	free(deep);
}

/* ---- free ---- */

static int freed;

static void free_counted(void *v)
{
	freed++;
	free(v);
}

TEST(free_values)
{
	struct topic_tree *t = topic_tree_new();
	char k[32];
	int stored = 0;
	for (int i = 0; i < 300; i++) {
		snprintf(k, sizeof k, "%d/%d/x", i % 30, i);
		*topic_tree_slot(t, k, strlen(k), true) = xstrdup(k);
		stored++;
		if (i % 7 == 0) {
			snprintf(k, sizeof k, "%d", i % 30);
			void **s = topic_tree_slot(t, k, strlen(k), true);
			if (!*s) {
				*s = xstrdup(k);
				stored++;
			}
		}
	}
	topic_tree_slot(t, S("null/value"), true); /* NULL is not passed to free_value */
	CHECK_EQ_INT(topic_tree_count(t), stored);
	freed = 0;
	topic_tree_free(t, free_counted);
	CHECK_EQ_INT(freed, stored);
	topic_tree_free(NULL, free_counted);
	/* An empty tree, and free without free_value. */
	topic_tree_free(topic_tree_new(), free_counted);
	CHECK_EQ_INT(freed, stored);
}

int main(void)
{
	hash_seed_random();
	RUN(name_valid);
	RUN(filter_valid);
	RUN(has_wildcard);
	RUN(match_table);
	RUN(share_parse);
	RUN(tree_basic);
	RUN(node_size);
	RUN(match_name_basic);
	RUN(match_filter_basic);
	RUN(random_match_name);
	RUN(random_match_filter);
	RUN(wide_node);
	RUN(deep_key);
	RUN(free_values);
	return unit_summary();
}
