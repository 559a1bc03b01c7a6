/* The authorization core (authz.c) with scripted synchronous sources: evaluation order,
 * no_match, superusers, the authentication ACL, the cache (hits, rule generations, TTL-free
 * eviction by max_size, excludes) and config errors. */
#include "unit.h"

#include <stdatomic.h>

#include "authz/authz.h"
#include "authz/source.h"
#include "config/config.h"
#include "core/alloc.h"

/* A scripted source: answers by the first letter of the topic (a = allow, d = deny, else
 * nomatch; "e..." = backend error) and counts its calls. */
struct fake {
	int calls;
};
static struct fake *fakes[2];

static void *fake_parse(struct cfg_reader *r, const struct hocon_member *m)
{
	(void)r;
	(void)m;
	return xcalloc(1, 1);
}

static struct authz_source *fake_create(const void *cfg, const struct authz_env *env, char *err, size_t errlen)
{
	(void)cfg;
	(void)env;
	(void)err;
	(void)errlen;
	struct fake *f = xcalloc(1, sizeof *f);
	fakes[fakes[0] ? 1 : 0] = f;
	return (struct authz_source *)(void *)f;
}

static void fake_destroy(struct authz_source *s)
{
	free(s);
}

static enum authz_verdict fake_check(struct authz_source *s, const struct authz_client *cl, const struct authz_action *a)
{
	(void)cl;
	struct fake *f = (struct fake *)(void *)s;
	f->calls++;
	switch (a->topic[0]) {
	case 'a': return AUTHZ_ALLOW;
	case 'd': return AUTHZ_DENY;
	case 'e': return AUTHZ_ERROR;
	default: return AUTHZ_NOMATCH;
	}
}

static const struct authz_source_ops fake_ops = {
	.type = "fake", .parse = fake_parse, .free_config = free, .create = fake_create,
	.destroy = fake_destroy, .check = fake_check,
};

/* A second type whose answers are inverted, to see the order. */
static enum authz_verdict inv_check(struct authz_source *s, const struct authz_client *cl, const struct authz_action *a)
{
	enum authz_verdict v = fake_check(s, cl, a);
	return v == AUTHZ_ALLOW ? AUTHZ_DENY : v == AUTHZ_DENY ? AUTHZ_ALLOW : v;
}

static const struct authz_source_ops inv_ops = {
	.type = "inverted", .parse = fake_parse, .free_config = free, .create = fake_create,
	.destroy = fake_destroy, .check = inv_check,
};

__attribute__((constructor)) static void reg(void)
{
	authz_source_register(&fake_ops);
	authz_source_register(&inv_ops);
}

static struct config *cfg_of(const char *text)
{
	char err[512] = "";
	struct config *c = config_load_string(text, "t.conf", err, sizeof err);
	if (!c)
		fprintf(stderr, "config: %s\n", err);
	return c;
}

static enum authz_verdict ask(struct authz_subject *s, enum authz_action_type t, const char *topic)
{
	struct authz_action a = { .type = t, .topic = topic, .topic_len = strlen(topic), .qos = 1 };
	struct authz_wait w = { 0 };
	return authz_check(s, &a, NULL, &w, NULL, NULL);
}

static struct authz_client client(bool superuser)
{
	struct authz_client cl;
	memset(&cl, 0, sizeof cl);
	cl.clientid = "c1";
	cl.username = "u1";
	cl.username_len = 2;
	cl.peerhost = "127.0.0.1";
	cl.is_superuser = superuser;
	return cl;
}

struct fixture {
	struct config *cfg;
	struct authz *z;
	struct authz_subject *s;
};

static bool setup(struct fixture *fx, const char *conf, bool superuser, const char *acl)
{
	fakes[0] = fakes[1] = NULL;
	fx->cfg = cfg_of(conf);
	if (!fx->cfg)
		return false;
	char err[256];
	struct authz_env env = { .cfg = fx->cfg };
	fx->z = authz_new(fx->cfg->authz, &env, err, sizeof err);
	if (!fx->z)
		return false;
	struct authz_client cl = client(superuser);
	fx->s = authz_subject_new(fx->z, &cl, acl);
	return true;
}

static void teardown(struct fixture *fx)
{
	authz_subject_unref(fx->s);
	authz_free(fx->z);
	config_free(fx->cfg);
}

TEST(order_and_no_match)
{
	struct fixture fx;
	CHECK(setup(&fx, "authorization { no_match = deny, sources = [ { type = fake }, { type = inverted } ] }", false, NULL));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/x"), AUTHZ_ALLOW);  /* first source decides */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "d/x"), AUTHZ_DENY);
	CHECK_EQ_INT(fakes[1]->calls, 0);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "n/x"), AUTHZ_DENY);   /* both nomatch: no_match */
	CHECK_EQ_INT(fakes[1]->calls, 1);
	/* a backend error counts as no match by default */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_SUBSCRIBE, "e/x"), AUTHZ_DENY);
	teardown(&fx);

	CHECK(setup(&fx, "authorization { sources = [ { type = fake } ] }", false, NULL)); /* default allow */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "n/x"), AUTHZ_ALLOW);
	CHECK(!authz_trivial(fx.z));
	teardown(&fx);

	CHECK(setup(&fx, "authorization { no_match = allow, ignore_backend_failures = false, sources = [ { type = fake } ] }",
		    false, NULL));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "e/x"), AUTHZ_DENY);
	teardown(&fx);

	CHECK(setup(&fx, "node.workers = 1", false, NULL));
	CHECK(authz_trivial(fx.z));
	teardown(&fx);
}

TEST(disabled_source_is_skipped)
{
	struct fixture fx;
	CHECK(setup(&fx, "authorization { no_match = deny, sources = [ { type = inverted, enable = false }, { type = fake } ] }",
		    false, NULL));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/x"), AUTHZ_ALLOW);
	teardown(&fx);
}

TEST(superuser_bypasses)
{
	struct fixture fx;
	CHECK(setup(&fx, "authorization { no_match = deny, sources = [ { type = fake } ] }", true, NULL));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "d/x"), AUTHZ_ALLOW);
	CHECK_EQ_INT(fakes[0]->calls, 0);
	teardown(&fx);
}

TEST(authentication_acl_first)
{
	struct fixture fx;
	CHECK(setup(&fx, "authorization { no_match = deny, sources = [ { type = fake } ] }", false,
		    "[{\"permission\":\"deny\",\"action\":\"publish\",\"topic\":\"a/#\"},"
		    "{\"permission\":\"allow\",\"action\":\"all\",\"topic\":\"d/${username}\"}]"));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/x"), AUTHZ_DENY);   /* the token beats the source */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_SUBSCRIBE, "a/x"), AUTHZ_ALLOW); /* publish-only rule: source */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "d/u1"), AUTHZ_ALLOW);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "d/u2"), AUTHZ_DENY);
	teardown(&fx);
	/* an unusable ACL grants nothing (and does not crash) */
	CHECK(setup(&fx, "authorization { no_match = deny, sources = [ { type = fake } ] }", false, "\"nope\""));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/x"), AUTHZ_ALLOW);
	teardown(&fx);
}

TEST(cache_hits_invalidation_eviction_excludes)
{
	struct fixture fx;
	CHECK(setup(&fx, "authorization { sources = [ { type = fake } ], cache { max_size = 2, excludes = [\"a/nocache/#\"] } }",
		    false, NULL));
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/1"), AUTHZ_ALLOW);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/1"), AUTHZ_ALLOW);
	CHECK_EQ_INT(fakes[0]->calls, 1);                              /* cached */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_SUBSCRIBE, "a/1"), AUTHZ_ALLOW);   /* another action: asked */
	CHECK_EQ_INT(fakes[0]->calls, 2);
	authz_invalidate(fx.z);                                         /* rules changed */
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/1"), AUTHZ_ALLOW);
	CHECK_EQ_INT(fakes[0]->calls, 3);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/2"), AUTHZ_ALLOW);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/3"), AUTHZ_ALLOW);     /* evicts the oldest (a/1) */
	CHECK_EQ_INT(fakes[0]->calls, 5);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/1"), AUTHZ_ALLOW);
	CHECK_EQ_INT(fakes[0]->calls, 6);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/nocache/x"), AUTHZ_ALLOW);
	CHECK_EQ_INT(ask(fx.s, AUTHZ_PUBLISH, "a/nocache/x"), AUTHZ_ALLOW);
	CHECK_EQ_INT(fakes[0]->calls, 8);
	teardown(&fx);

	CHECK(setup(&fx, "authorization { sources = [ { type = fake } ], cache { enable = false } }", false, NULL));
	ask(fx.s, AUTHZ_PUBLISH, "a/1");
	ask(fx.s, AUTHZ_PUBLISH, "a/1");
	CHECK_EQ_INT(fakes[0]->calls, 2);
	teardown(&fx);
}

TEST(config_errors)
{
	char err[512];
	struct config *c = config_load_string("authorization {\n sources = [ { type = nosuch } ]\n}\n", "t.conf", err, sizeof err);
	CHECK(!c);
	CHECK(strstr(err, "t.conf:2") && strstr(err, "nosuch"));
	c = config_load_string("authorization { sources = [ { type = fake }, { type = fake } ] }", "t.conf", err, sizeof err);
	CHECK(!c);
	CHECK(strstr(err, "only one source of type fake") != NULL);
	c = config_load_string("authorization { deny_action = kick }", "t.conf", err, sizeof err);
	CHECK(!c);
	CHECK(strstr(err, "authorization.deny_action") != NULL);
	c = config_load_string("authorization { include_mountpoint = true }", "t.conf", err, sizeof err);
	CHECK(!c);
	CHECK(strstr(err, "not supported yet") != NULL);
	c = config_load_string("authorization { cache { excludes = [\"a/#/b\"] } }", "t.conf", err, sizeof err);
	CHECK(!c);
	c = config_load_string("authorization { sources = [ { type = fake, precondition = \"x\" } ] }", "t.conf", err,
			       sizeof err);
	CHECK(!c);
}

int main(void)
{
	RUN(order_and_no_match);
	RUN(disabled_source_is_skipped);
	RUN(superuser_bypasses);
	RUN(authentication_acl_first);
	RUN(cache_hits_invalidation_eviction_excludes);
	RUN(config_errors);
	return unit_summary();
}
