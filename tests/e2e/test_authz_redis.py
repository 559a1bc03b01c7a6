"""`authorization.sources = [{type = redis, ...}]` against a real redis-server (bw/dbservers.py),
EMQX 5.8 §5: HGETALL / HMGET hashes whose fields are topics and values publish | subscribe | all or
a JSON rule {action, qos, retain}; placeholders in the key and fields; no rules -> the next source /
no_match; invalid values skipped; the backend down (at start and mid-run) -> no match, the broker keeps
serving; arguments are never split (no command injection); config errors."""
import uuid

import pytest

from bw import mqtt_raw as m
from bw.dbservers import REDIS_PASSWORD, REDIS_USER, db_proxy, redis_server, wait_until  # noqa: F401
from bw.ports import free_port

NOT_AUTHORIZED = 0x87


def source(cmd="HGETALL mqtt_acl:${username}", extra=""):
    return """
    {
      type = redis
      server = "127.0.0.1:{{redis_port}}"
      username = "%s"
      password = "%s"
      pool_size = 2
      query_timeout = 2s
      cmd = "%s"
      %s
    }""" % (REDIS_USER, REDIS_PASSWORD, cmd, extra)


FILE_ALLOW_ALL = '{ type = file, path = "acl.conf" }'


def config(*sources, no_match="deny", cache=False):
    return ("log.console.level = debug\nauthorization {\n  no_match = %s\n  cache { enable = %s }\n"
            "  sources = [%s\n  ]\n}\n" % (no_match, "true" if cache else "false", ",".join(sources)))


def start(start_broker, redis, cfg, port=None, acl="{allow, all}.\n", **kw):
    return start_broker(cfg, values={"redis_port": port or redis.port}, files={"acl.conf": acl}, **kw)


def uname(tag):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def client(b, cid, username=None, version=5):
    c = m.RawClient(b.tcp_port, version=version)
    c.connect(cid, username=username)
    return c


def pub_rc(c, topic, qos=1, retain=False):
    """Reason code of a PUBACK (QoS 1) / PUBREC (QoS 2): 0x87 when denied, < 0x80 when allowed."""
    ack = c.publish(topic, b"x", qos=qos, retain=retain)
    return ack.rc or 0


def allowed(c, topic, qos=1, retain=False):
    return pub_rc(c, topic, qos, retain) < 0x80


def sub_codes(c, *filters, qos=1):
    return c.subscribe([(f, qos) for f in filters]).reason_codes


def test_hgetall_rules_allow_and_no_match(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source()))
    u = uname("alice")
    redis_server.hset(f"mqtt_acl:{u}", **{"t/pub": "publish", "t/sub/#": "subscribe", "t/both/+": "all"})
    c = client(b, "c1", u)
    assert allowed(c, "t/pub")
    assert allowed(c, "t/both/x")
    assert pub_rc(c, "t/sub/x") == NOT_AUTHORIZED          # subscribe-only topic
    assert pub_rc(c, "t/other") == NOT_AUTHORIZED          # no rule: no_match = deny
    assert sub_codes(c, "t/sub/#", "t/both/y", "t/pub", "nothing/#") == [1, 1, NOT_AUTHORIZED, NOT_AUTHORIZED]
    # a user without a hash gets nothing
    other = client(b, "c2", uname("nobody"))
    assert pub_rc(other, "t/pub") == NOT_AUTHORIZED


def test_subscribe_denied_v3_and_delivery_follows_the_rules(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source()))
    u = uname("v3")
    redis_server.hset(f"mqtt_acl:{u}", **{"news/#": "subscribe", "news/pub": "publish"})
    c = client(b, "v3c", u, version=4)
    assert sub_codes(c, "news/#", "secret/#") == [1, 0x80]
    p = client(b, "v3p", u, version=4)
    p.publish("news/pub", b"hello", qos=1)
    got = c.recv_publish()
    assert got.topic == "news/pub" and got.payload == b"hello"


def test_qos0_denied_publish_is_dropped(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source()))
    u = uname("q0")
    redis_server.hset(f"mqtt_acl:{u}", **{"ok/#": "all"})
    watcher = client(b, "w", u)
    watcher.subscribe([("ok/#", 0)], expect_codes=[0])
    watcher2 = client(b, "w2", uname("admin"))  # no rules: cannot subscribe to denied/#
    assert sub_codes(watcher2, "denied/#") == [NOT_AUTHORIZED]
    p = client(b, "p", u)
    p.publish("denied/x", b"dropped")
    p.publish("ok/x", b"kept")
    got = watcher.recv_publish()
    assert got.topic == "ok/x" and got.payload == b"kept"
    assert p.is_open()


def test_json_rules_qos_and_retain(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source()))
    u = uname("json")
    redis_server.hset(f"mqtt_acl:{u}", **{
        "q/#": '{"action": "publish", "qos": [0, 1], "retain": false}',
        "r/#": '{"action": "all", "qos": "1,2", "retain": true}',
        "s/#": '{"action": "subscribe", "qos": 0}',
    })
    c = client(b, "j1", u)
    assert allowed(c, "q/a", qos=1)
    assert pub_rc(c, "q/a", qos=2) == NOT_AUTHORIZED        # qos 2 not listed
    assert pub_rc(c, "q/a", qos=1, retain=True) == NOT_AUTHORIZED
    assert allowed(c, "r/a", qos=2, retain=True)
    assert pub_rc(c, "r/a", qos=1, retain=False) == NOT_AUTHORIZED
    assert sub_codes(c, "s/a", qos=0) == [0]
    assert sub_codes(c, "s/a", qos=1) == [NOT_AUTHORIZED]
    assert sub_codes(c, "r/a", qos=2) == [2]


def test_placeholders_in_key_and_topics(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source(cmd="HGETALL acl:${clientid}")))
    cid = uname("dev")
    redis_server.hset(f"acl:{cid}", **{"dev/${clientid}/#": "publish", "users/${username}/#": "all",
                                       "eq cmd/#": "subscribe"})
    c = client(b, cid, "carol")
    assert allowed(c, f"dev/{cid}/telemetry")
    assert pub_rc(c, "dev/someone-else/telemetry") == NOT_AUTHORIZED
    assert allowed(c, "users/carol/x")
    assert pub_rc(c, "users/dave/x") == NOT_AUTHORIZED
    assert sub_codes(c, "cmd/#", "cmd/a") == [1, NOT_AUTHORIZED]   # eq: the literal filter only
    # the same key for another client ID is not used
    c2 = client(b, uname("dev"), "carol")
    assert pub_rc(c2, "users/carol/x") == NOT_AUTHORIZED


def test_hmget_with_topic_placeholder(start_broker, redis_server):
    """HMGET fields are the command's own (rendered) arguments: here exactly the requested topic."""
    b = start(start_broker, redis_server, config(source(cmd="HMGET mqtt_acl:${username} ${topic} fixed/t")))
    u = uname("hm")
    redis_server.hset(f"mqtt_acl:{u}", **{"a/b": "publish", "fixed/t": "all", "x/+": "publish"})
    c = client(b, "h1", u)
    assert allowed(c, "a/b")
    assert allowed(c, "fixed/t")
    assert pub_rc(c, "x/1") == NOT_AUTHORIZED   # the field "x/1" does not exist
    assert sub_codes(c, "a/b") == [NOT_AUTHORIZED]


def test_database_selection(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source(extra="database = 5")))
    u = uname("db5")
    redis_server.hset(f"mqtt_acl:{u}", **{"zero/t": "publish"})   # database 0: not seen
    from bw.dbservers import Resp
    r = Resp(redis_server.port)
    try:
        r.cmd("SELECT", 5)
        r.cmd("HSET", f"mqtt_acl:{u}", "five/t", "publish")
    finally:
        r.close()
    c = client(b, "d5", u)
    assert allowed(c, "five/t")
    assert pub_rc(c, "zero/t") == NOT_AUTHORIZED


def test_no_rules_go_to_the_next_source_then_no_match(start_broker, redis_server):
    acl = '{allow, all, publish, ["file/#"]}.\n'
    b = start(start_broker, redis_server, config(source(), FILE_ALLOW_ALL, no_match="deny"), acl=acl, name="chain")
    u = uname("next")
    redis_server.hset(f"mqtt_acl:{u}", **{"redis/t": "publish"})
    c = client(b, "n1", u)
    assert allowed(c, "redis/t")         # redis decides
    assert allowed(c, "file/t")          # redis has no match: the file decides
    assert pub_rc(c, "neither/t") == NOT_AUTHORIZED   # nobody: no_match = deny
    b2 = start(start_broker, redis_server, config(source(), no_match="allow"), name="allow")
    c2 = client(b2, "n2", uname("nobody"))
    assert allowed(c2, "anything/t")     # no rules at all: no_match = allow


def test_invalid_values_are_skipped_and_logged(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source()))
    u = uname("bad")
    redis_server.hset(f"mqtt_acl:{u}", **{"bad/1": "pub", "bad/2": '{"action":"publish","qos":7}',
                                          "bad/3": "{not json", "good/t": "publish"})
    c = client(b, "b1", u)
    assert allowed(c, "good/t")
    assert pub_rc(c, "bad/1") == NOT_AUTHORIZED
    b.wait_for_log(r"authorization redis: 3 of 4 rules skipped as invalid")


def test_no_injection_through_the_username(start_broker, redis_server):
    """The key is one argument whatever the username holds: blanks and quotes do not add arguments."""
    b = start(start_broker, redis_server, config(source()))
    u = "evil user\" 'x' " + uuid.uuid4().hex[:6]
    redis_server.hset(f"mqtt_acl:{u}", **{"inj/t": "publish"})
    redis_server.hset("mqtt_acl:evil", **{"#": "all"})
    c = client(b, "i1", u)
    assert allowed(c, "inj/t")
    assert pub_rc(c, "other/t") == NOT_AUTHORIZED
    assert redis_server.cmd("PING") == "PONG"


@pytest.mark.parametrize("no_match", ["allow", "deny"])
def test_backend_down_at_start(start_broker, redis_server, no_match):
    dead = free_port()
    b = start(start_broker, redis_server, config(source(), no_match=no_match), port=dead)
    c = client(b, "down1", uname("u"))
    expect_ok = no_match == "allow"
    assert allowed(c, "t/x") == expect_ok
    assert (sub_codes(c, "t/#") == [1]) == expect_ok
    c.ping()
    b.wait_for_log(r"authorization source redis failed to answer")
    b.wait_for_log(r"127\.0\.0\.1:%d is unreachable" % dead)


def test_backend_down_next_source_decides(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source(), FILE_ALLOW_ALL, no_match="deny"), port=free_port(),
              acl='{allow, all, publish, ["file/#"]}.\n')
    c = client(b, "dn", uname("u"))
    assert allowed(c, "file/x")
    assert pub_rc(c, "other/x") == NOT_AUTHORIZED


def test_backend_goes_down_mid_run_and_comes_back(start_broker, redis_server, db_proxy):
    proxy = db_proxy(redis_server.port)
    b = start(start_broker, redis_server, config(source(), no_match="deny"), port=proxy.port)
    u = uname("mid")
    redis_server.hset(f"mqtt_acl:{u}", **{"mid/t": "publish"})
    c = client(b, "mid1", u)
    assert allowed(c, "mid/t")
    proxy.stop()
    assert pub_rc(c, "mid/t") == NOT_AUTHORIZED      # cannot ask: no match, no_match = deny
    c.ping()                                          # the broker keeps serving the client
    other = client(b, "mid2", u)
    assert pub_rc(other, "mid/t") == NOT_AUTHORIZED
    proxy.start()
    wait_until(lambda: allowed(c, "mid/t"), 15, "redis back", interval=0.2)


@pytest.mark.timeout(60)
def test_slow_backend_times_out_without_blocking_others(start_broker, redis_server):
    """A Redis stuck in DEBUG SLEEP: requests time out (no match) at query_timeout; other clients
    of the same broker are still served meanwhile (their authorization is decided by the file)."""
    import threading
    b = start(start_broker, redis_server,
              config(source(extra="pool_size = 1\nquery_timeout = 1s"), FILE_ALLOW_ALL, no_match="deny"),
              acl='{allow, all, publish, ["free/#"]}.\n')
    u = uname("slow")
    redis_server.hset(f"mqtt_acl:{u}", **{"slow/t": "publish"})
    c = client(b, "s1", u)
    assert allowed(c, "slow/t")
    t = threading.Thread(target=lambda: redis_server.cmd("DEBUG", "SLEEP", "2"))
    t.start()
    try:
        import time
        time.sleep(0.2)
        t0 = time.monotonic()
        assert pub_rc(c, "slow/t") == NOT_AUTHORIZED
        assert time.monotonic() - t0 < 1.9
    finally:
        t.join()
    wait_until(lambda: allowed(c, "slow/t"), 15, "redis answering again", interval=0.2)


def test_cache_keeps_answers_until_ttl(start_broker, redis_server):
    b = start(start_broker, redis_server, config(source(), cache=True))
    u = uname("cache")
    redis_server.hset(f"mqtt_acl:{u}", **{"c/t": "publish"})
    c = client(b, "cc", u)
    assert allowed(c, "c/t")
    redis_server.hset(f"mqtt_acl:{u}")      # rules removed ...
    assert allowed(c, "c/t")                # ... the cached answer still applies
    assert pub_rc(c, "c/u") == NOT_AUTHORIZED


@pytest.mark.parametrize("body,err", [
    ('cmd = "HGET mqtt_acl:${username} t"', r"only HGETALL and HMGET are supported"),
    ('cmd = "HGETALL"', r"HGETALL needs a key"),
    ('cmd = "HMGET k"', r"at least one field"),
    ('cmd = "HGETALL k", redis_type = cluster', r"not supported yet"),
    ('cmd = "HGETALL k", ssl { enable = true }', r"hiredis"),
    ('cmd = "HGETALL k", password_hash_algorithm { name = plain }', r"unknown key"),
    ('server = "127.0.0.1:6379"', r"cmd is required"),
])
def test_config_errors(check_config, body, err):
    import re
    cfg = 'authorization {\n  sources = [\n    {\n      type = redis\n      server = "127.0.0.1"\n      %s\n    }\n  ]\n}\n' % body
    rc, out = check_config(cfg)
    assert rc != 0, out
    assert re.search(err, out), out
    assert re.search(r"bulwark\.conf:\d+|\.conf:\d+", out), out
