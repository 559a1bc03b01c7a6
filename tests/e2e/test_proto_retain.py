"""Retained messages for MQTT 3.1, 3.1.1 and 5.0: set, replace, clear, delivery on subscribe with
RETAIN=1, RETAIN=0 on live deliveries, wildcards, expiry and persistence across a graceful
restart. Reference: MQTT 3.1.1 §3.3.1.3; MQTT 5.0 §3.3.1.3, §3.3.2.3.3; EMQX 5.8."""
import time

import pytest

W4 = "node.workers = 4\n"


def connect(raw_client, b, cid, version=5, **kw):
    c = raw_client(b, version=version)
    c.connect(cid, **kw)
    return c


def recv_all(c, n):
    """n PUBLISHes (acknowledged), as {topic: packet}; each topic at most once."""
    out = {}
    for p in c.recv_publishes(n):
        assert p.topic not in out, f"{p.topic} delivered twice"
        out[p.topic] = p
    return out


@pytest.mark.parametrize("version", [3, 4, 5])
def test_retained_delivered_on_subscribe_with_retain_flag(start_broker, raw_client, version):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rs-pub", version=version)
    pub.publish("rs/t", b"kept", qos=1, retain=True)
    s = connect(raw_client, b, "rs-sub", version=version)
    s.subscribe("rs/t", qos=1)
    p = s.recv_publish(topic="rs/t", payload=b"kept", retain=True, qos=1)
    assert not p.dup
    s.expect_nothing(0.3)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_live_delivery_has_retain_0(start_broker, raw_client, version):
    b = start_broker(W4)
    s = connect(raw_client, b, "rl-sub", version=version)
    s.subscribe("rl/t", qos=1)
    pub = connect(raw_client, b, "rl-pub", version=version)
    pub.publish("rl/t", b"live", qos=1, retain=True)
    s.recv_publish(topic="rl/t", payload=b"live", retain=False)
    # But it was retained: a new subscription gets it with RETAIN=1.
    s2 = connect(raw_client, b, "rl-sub2", version=version)
    s2.subscribe("rl/t", qos=1)
    s2.recv_publish(topic="rl/t", payload=b"live", retain=True)


def test_live_delivery_retain_as_published(start_broker, raw_client):
    b = start_broker(W4)
    s = connect(raw_client, b, "rap-sub")
    s.subscribe([("rap/t", {"qos": 1, "rap": True})])
    pub = connect(raw_client, b, "rap-pub", version=4)
    pub.publish("rap/t", b"r", qos=1, retain=True)
    s.recv_publish(payload=b"r", retain=True)
    pub.publish("rap/t", b"n", qos=1)
    s.recv_publish(payload=b"n", retain=False)


def test_retained_replaced_and_cleared(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rc-pub")
    pub.publish("rc/t", b"v1", qos=1, retain=True)
    pub.publish("rc/t", b"v2", qos=1, retain=True)         # replaces v1
    s1 = connect(raw_client, b, "rc-s1")
    s1.subscribe("rc/#", qos=1)
    s1.recv_publish(topic="rc/t", payload=b"v2", retain=True)
    s1.expect_nothing(0.3)
    # Clearing: an empty retained payload goes to current subscribers like any message...
    pub.publish("rc/t", b"", qos=1, retain=True)
    s1.recv_publish(topic="rc/t", payload=b"", retain=False)
    # ...and leaves nothing retained.
    s2 = connect(raw_client, b, "rc-s2")
    s2.subscribe("rc/#", qos=1)
    s2.expect_nothing(0.4)
    # Clearing a topic that has nothing retained is harmless.
    pub.publish("rc/none", b"", qos=1, retain=True)
    pub.ping()


def test_non_retained_publish_does_not_touch_the_retained_message(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rn-pub")
    pub.publish("rn/t", b"kept", qos=1, retain=True)
    pub.publish("rn/t", b"not-kept", qos=1)
    pub.publish("rn/t", b"", qos=1)                        # empty but not retained: no clearing
    s = connect(raw_client, b, "rn-sub")
    s.subscribe("rn/t", qos=1)
    s.recv_publish(topic="rn/t", payload=b"kept", retain=True)
    s.expect_nothing(0.3)


@pytest.mark.parametrize("stored_qos,sub_qos", [(0, 2), (1, 2), (2, 1), (2, 0), (1, 1)])
def test_retained_delivery_qos(start_broker, raw_client, stored_qos, sub_qos):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rq-pub")
    pub.publish("rq/t", b"q", qos=stored_qos, retain=True)
    if stored_qos == 0:
        pub.ping()                                        # the QoS 0 PUBLISH has been processed
    s = connect(raw_client, b, "rq-sub")
    s.subscribe("rq/t", qos=sub_qos)
    p = s.recv_publish(topic="rq/t", retain=True)
    assert p.qos == min(stored_qos, sub_qos)


def test_retained_with_wildcards(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rw-pub")
    topics = ["w", "w/a", "w/b/c", "x/y", "$w/z", "w/"]
    for t in topics:
        pub.publish(t, t.encode(), qos=1, retain=True)
    cases = {
        "w/#": {"w", "w/a", "w/b/c", "w/"},
        "w/+": {"w/a", "w/"},
        "+/y": {"x/y"},
        "+/+/c": {"w/b/c"},
        "#": {"w", "w/a", "w/b/c", "x/y", "w/"},            # no "$w/z"
        "$w/#": {"$w/z"},
        "nothing/#": set(),
    }
    subs = {}
    for i, (f, want) in enumerate(cases.items()):
        s = connect(raw_client, b, "rw-%d" % i, version=4 if i % 2 else 5)
        s.subscribe(f, qos=1)
        got = recv_all(s, len(want))
        assert set(got) == want, f"{f}: {sorted(got)}"
        assert all(p.retain and p.payload == t.encode() for t, p in got.items())
        subs[f] = s
    time.sleep(0.3)
    for s in subs.values():
        s.expect_nothing(0.01)


def test_many_retained_messages_on_one_subscribe(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rm-pub", version=4)
    n = 200
    for i in range(n):
        pub.publish("many/%d" % i, b"%d" % i, qos=1, retain=True)
    s = connect(raw_client, b, "rm-sub", version=4)
    s.subscribe("many/+", qos=1)
    got = recv_all(s, n)
    assert set(got) == {"many/%d" % i for i in range(n)}


@pytest.mark.parametrize("version", [4, 5])
def test_resubscribe_resends_retained(start_broker, raw_client, version):
    # MQTT 3.1.1 §3.8.4: an identical filter replaces the subscription and the retained messages
    # are re-sent; in v5 that is Retain Handling 0 (the default).
    b = start_broker(W4)
    pub = connect(raw_client, b, "rr-pub", version=version)
    pub.publish("rr/t", b"kept", qos=1, retain=True)
    s = connect(raw_client, b, "rr-sub", version=version)
    for _ in range(2):
        s.subscribe("rr/#", qos=1)
        s.recv_publish(topic="rr/t", payload=b"kept", retain=True)
    s.expect_nothing(0.3)


def test_retained_keeps_v5_properties(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rp-pub")
    props = [("payload_format_indicator", 1), ("content_type", "text/plain"), ("response_topic", "rp/reply"),
             ("correlation_data", b"\x01\x02"), ("user_property", ("a", "1")), ("user_property", ("b", "2"))]
    pub.publish("rp/t", b"with-props", qos=1, retain=True, props=props)
    s = connect(raw_client, b, "rp-sub")
    s.subscribe("rp/t", qos=1)
    p = s.recv_publish(topic="rp/t", retain=True)
    assert p.props["content_type"] == "text/plain"
    assert p.props["response_topic"] == "rp/reply"
    assert p.props["correlation_data"] == b"\x01\x02"
    assert p.props["payload_format_indicator"] == 1
    assert p.props["user_property"] == [("a", "1"), ("b", "2")]


def test_retained_message_expiry(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rx-pub")
    pub.publish("rx/short", b"short", qos=1, retain=True, props={"message_expiry_interval": 1})
    pub.publish("rx/long", b"long", qos=1, retain=True, props={"message_expiry_interval": 60})
    pub.publish("rx/none", b"none", qos=1, retain=True)
    time.sleep(2.2)                                       # "short" expires (whole seconds)
    s = connect(raw_client, b, "rx-sub")
    s.subscribe("rx/#", qos=1)
    got = recv_all(s, 2)
    assert set(got) == {"rx/long", "rx/none"}
    # The remaining lifetime is forwarded, not the original interval.
    assert 55 <= got["rx/long"].props["message_expiry_interval"] <= 58
    assert "message_expiry_interval" not in got["rx/none"].props
    s.expect_nothing(0.3)


@pytest.mark.timeout(60)
def test_retained_messages_survive_a_graceful_restart(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rk-pub")
    pub.publish("rk/a", b"A", qos=1, retain=True, props={"user_property": [("k", "v")], "content_type": "x/y"})
    pub.publish("rk/b", b"B0", qos=0, retain=True)
    pub.publish("rk/b", b"B", qos=2, retain=True)          # replaced before the restart
    pub.publish("rk/c", b"C", qos=1, retain=True)
    pub.publish("rk/c", b"", qos=1, retain=True)           # cleared before the restart
    pub.publish("rk/x", b"X", qos=1, retain=True, props={"message_expiry_interval": 3600})
    pub.close()
    b.restart()
    s = connect(raw_client, b, "rk-sub")
    s.subscribe("rk/#", qos=2)
    got = recv_all(s, 3)
    assert set(got) == {"rk/a", "rk/b", "rk/x"}
    assert got["rk/a"].payload == b"A" and got["rk/a"].qos == 1 and got["rk/a"].retain
    assert got["rk/a"].props["user_property"] == [("k", "v")]
    assert got["rk/a"].props["content_type"] == "x/y"
    assert got["rk/b"].payload == b"B" and got["rk/b"].qos == 2
    assert 3590 <= got["rk/x"].props["message_expiry_interval"] <= 3600
    s.expect_nothing(0.3)
    # A v3 subscriber after the restart too.
    s3 = connect(raw_client, b, "rk-sub3", version=4)
    s3.subscribe("rk/a", qos=1)
    s3.recv_publish(topic="rk/a", payload=b"A", retain=True)


def test_retained_message_set_on_one_worker_seen_from_all(start_broker, raw_client):
    # Publishers and subscribers spread over the workers by client ID: the retained store is shared.
    b = start_broker(W4)
    for i in range(8):
        connect(raw_client, b, "rx-pub-%d" % i, version=4).publish("rxw/%d" % i, b"%d" % i, qos=1, retain=True)
    for i in range(8):
        s = connect(raw_client, b, "rx-sub-%d" % i, version=4)
        s.subscribe("rxw/#", qos=1)
        assert set(recv_all(s, 8)) == {"rxw/%d" % k for k in range(8)}


def test_retained_published_through_a_topic_alias(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "ra-pub")
    pub.publish("ra/t", b"first", qos=1, retain=True, props={"topic_alias": 3})
    pub.publish("", b"second", qos=1, retain=True, props={"topic_alias": 3})    # same topic, by alias
    s = connect(raw_client, b, "ra-sub")
    s.subscribe("ra/#", qos=1)
    p = s.recv_publish(retain=True)
    assert p.topic == "ra/t" and p.payload == b"second"
    assert "topic_alias" not in p.props
    s.expect_nothing(0.3)


def test_retained_delivery_with_upgrade_qos(start_broker, raw_client):
    # EMQX 5.8: retained messages go through the same session path as live ones, so
    # upgrade_qos = true delivers them at max(subscription QoS, stored QoS) too.
    b = start_broker(W4 + "mqtt.upgrade_qos = true\n")
    pub = connect(raw_client, b, "rup-pub")
    pub.publish("rup/t", b"q0", qos=0, retain=True)
    pub.ping()
    s = connect(raw_client, b, "rup-sub")
    s.subscribe("rup/t", qos=2)
    p = s.recv_publish(topic="rup/t", retain=True)
    assert p.qos == 2
