"""SUBSCRIBE / UNSUBSCRIBE for MQTT 3.1, 3.1.1 and 5.0: wildcard matching (including the '$'
rule), overlapping subscriptions, SUBACK and UNSUBACK codes, shared subscriptions and the v5
subscription options (no-local, retain-as-published, retain handling, subscription identifiers).
Reference: MQTT 3.1.1 §3.8-3.11, §4.7; MQTT 5.0 §3.8-3.11, §4.7, §4.8; EMQX 5.8."""
import time

import pytest

from bw import mqtt_raw as m

W4 = "node.workers = 4\n"


def settle(t=0.4):
    """Give messages that must NOT arrive a chance to arrive (checked with expect_nothing after)."""
    time.sleep(t)


def connect(raw_client, b, cid, version=5, **kw):
    c = raw_client(b, version=version)
    c.connect(cid, **kw)
    return c


def disconnect_and_wait(c):
    c.send(m.disconnect(version=c.version))
    c.expect_closed()


# ---- wildcard matching ---------------------------------------------------------------------------------

TOPICS = ["a", "a/b", "a/b/c", "a/", "/a", "/", "b", "a/$x", "$x/a", "$SYS/bwtest/x"]
MATCHES = {
    "a/+": ["a/b", "a/", "a/$x"],
    "a/#": ["a", "a/b", "a/b/c", "a/", "a/$x"],           # "a/#" also matches the parent "a"
    "+/b": ["a/b"],
    "+": ["a", "b"],
    "+/+": ["a/b", "a/", "/a", "/", "a/$x"],                # not "$x/a": '+' never matches a first "$" level
    "#": ["a", "a/b", "a/b/c", "a/", "/a", "/", "b", "a/$x"],   # not "$x/a" nor "$SYS/..."
    "+/#": ["a", "a/b", "a/b/c", "a/", "/a", "/", "b", "a/$x"],
    "/#": ["/a", "/"],
    "/+": ["/a", "/"],
    "a/+/c": ["a/b/c"],
    "a/b/c/#": ["a/b/c"],
    "a/b": ["a/b"],
    "+/bwtest/x": [],
    "$x/+": ["$x/a"],
    "$SYS/#": ["$SYS/bwtest/x"],
    "$SYS/+/x": ["$SYS/bwtest/x"],
}


@pytest.mark.parametrize("version", [4, 5])
def test_wildcard_matching(start_broker, raw_client, version):
    b = start_broker(W4)
    subs = {}
    for i, f in enumerate(MATCHES):
        c = connect(raw_client, b, "wm-%d" % i, version=version)
        c.subscribe(f, qos=1, expect_codes=[1])
        subs[f] = c
    pub = connect(raw_client, b, "wm-pub", version=version)
    for t in TOPICS:
        pub.publish(t, t.encode(), qos=1)
    for f, c in subs.items():
        got = []
        for _ in MATCHES[f]:
            p = c.recv_publish()
            while f.startswith("$SYS") and not p.topic.startswith("$SYS/bwtest"):
                p = c.recv_publish()     # the broker's own $SYS messages, if any, are not ours
            got.append(p.topic)
            assert p.payload == p.topic.encode()
        assert got == MATCHES[f], f"filter {f!r}: received {got}, expected {MATCHES[f]}"
    settle()
    for f, c in subs.items():
        if not f.startswith("$SYS"):
            c.expect_nothing(0.01)


def test_overlapping_subscriptions_v5_one_publish_per_subscription(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "ov5")
    c.subscribe("ov/+", qos=1, props={"subscription_identifier": 1})
    c.subscribe("ov/#", qos=2, props={"subscription_identifier": 2})
    c.subscribe("ov/x", qos=0, props={"subscription_identifier": 300})
    c.subscribe("#", qos=1)                                           # no identifier
    pub = connect(raw_client, b, "ov5-pub", version=4)
    pub.publish("ov/x", b"m", qos=2)
    got = c.recv_publishes(4)
    by_id = {tuple(p.props.get("subscription_identifier", [])): p for p in got}
    assert set(by_id) == {(1,), (2,), (300,), ()}, got
    # Each copy at its own subscription's QoS.
    assert by_id[(1,)].qos == 1 and by_id[(2,)].qos == 2 and by_id[(300,)].qos == 0 and by_id[()].qos == 1
    settle()
    c.expect_nothing(0.01)
    # A topic matching only one of them gets one copy.
    pub.publish("ov/y/z", b"n", qos=1)
    ids = sorted(tuple(p.props.get("subscription_identifier", [])) for p in c.recv_publishes(2))
    assert ids == [(), (2,)]
    settle(0.3)
    c.expect_nothing(0.01)


@pytest.mark.parametrize("version", [3, 4])
def test_overlapping_subscriptions_v3(start_broker, raw_client, version):
    b = start_broker(W4)
    c = connect(raw_client, b, "ov3", version=version)
    c.subscribe([("ov/+", 1), ("ov/#", 0)], expect_codes=[1, 0])
    pub = connect(raw_client, b, "ov3-pub", version=version)
    pub.publish("ov/x", b"m", qos=1)
    got = c.recv_publishes(2)
    assert sorted(p.qos for p in got) == [0, 1]
    settle(0.3)
    c.expect_nothing(0.01)


# ---- SUBACK codes ----------------------------------------------------------------------------------------

BAD_FILTERS = ["a/#/b", "a#", "a/b+", "+a/b", "a/##"]


@pytest.mark.parametrize("version", [3, 4])
def test_suback_codes_v3(start_broker, raw_client, version):
    b = start_broker(W4)
    c = connect(raw_client, b, "sa3", version=version)
    ack = c.subscribe([("s/a", 0), ("s/b", 1), ("s/c", 2)] + [(f, 1) for f in BAD_FILTERS])
    assert ack.reason_codes == [0, 1, 2] + [0x80] * len(BAD_FILTERS)
    # The good ones work although the packet also held bad ones.
    pub = connect(raw_client, b, "sa3-pub", version=version)
    pub.publish("s/b", b"x", qos=1)
    c.recv_publish(topic="s/b", qos=1)


def test_suback_codes_v5(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "sa5")
    ack = c.subscribe([("s/a", 0), ("s/b", 1), ("s/c", 2)] + [(f, 1) for f in BAD_FILTERS]
                      + [("$share/g", 1), ("$share//a", 1), ("$share/g+/a", 1)])
    assert ack.reason_codes == [0, 1, 2] + [0x8F] * (len(BAD_FILTERS) + 3)
    assert c.is_open()


@pytest.mark.parametrize("version,refused", [(4, 0x80), (5, 0xA2)])
def test_suback_wildcards_disabled(start_broker, raw_client, version, refused):
    b = start_broker(W4 + "mqtt.wildcard_subscription = false\n")
    c = connect(raw_client, b, "nowc", version=version)
    ack = c.subscribe([("w/+", 1), ("w/x", 1), ("#", 0), ("w/#", 2), ("$share/g/w/y", 1)])
    assert ack.reason_codes == [refused, 1, refused, refused, 1]
    pub = connect(raw_client, b, "nowc-pub", version=version)
    pub.publish("w/x", b"ok", qos=1)
    c.recv_publish(topic="w/x")
    pub.publish("w/z", b"no", qos=1)
    c.expect_nothing(0.3)


@pytest.mark.parametrize("version,refused", [(4, 0x80), (5, 0x9E)])
def test_suback_shared_disabled(start_broker, raw_client, version, refused):
    b = start_broker(W4 + "mqtt.shared_subscription = false\n")
    c = connect(raw_client, b, "noshare", version=version)
    ack = c.subscribe([("$share/g/sh/x", 1), ("sh/x", 1)])
    assert ack.reason_codes == [refused, 1]
    pub = connect(raw_client, b, "noshare-pub", version=version)
    pub.publish("sh/x", b"once", qos=1)
    c.recv_publish(topic="sh/x", payload=b"once")
    c.expect_nothing(0.3)             # one copy: the shared one was refused


def test_suback_granted_qos_capped_by_max_qos_allowed(start_broker, raw_client):
    b = start_broker("mqtt.max_qos_allowed = 0\n")
    c = connect(raw_client, b, "cap", version=4)
    ack = c.subscribe([("c/a", 0), ("c/b", 1), ("c/c", 2)])
    assert ack.reason_codes == [0, 0, 0]


# ---- shared subscriptions ------------------------------------------------------------------------------

def test_shared_subscription_round_robin(start_broker, raw_client):
    b = start_broker(W4)
    members = [connect(raw_client, b, "rr-%d" % i) for i in range(3)]
    for c in members:
        c.subscribe("$share/g/rr/t", qos=1, expect_codes=[1])
    pub = connect(raw_client, b, "rr-pub")
    n = 30
    for k in range(n):
        pub.publish("rr/t", b"%d" % k, qos=1)
    owner = {}
    for i, c in enumerate(members):
        for p in c.recv_publishes(n // len(members)):
            assert p.topic == "rr/t"
            k = int(p.payload)
            assert k not in owner, f"message {k} delivered twice"
            owner[k] = i
    assert sorted(owner) == list(range(n))
    # Round robin: every member gets every third message.
    for k in range(n - 3):
        assert owner[k] == owner[k + 3], owner
    settle(0.3)
    for c in members:
        c.expect_nothing(0.01)


def test_shared_subscription_each_message_to_one_member_per_group(start_broker, raw_client):
    b = start_broker(W4)
    g1 = [connect(raw_client, b, "g1-%d" % i) for i in range(2)]
    g2 = [connect(raw_client, b, "g2-%d" % i, version=4) for i in range(2)]
    for c in g1:
        c.subscribe("$share/one/sg/#", qos=1)
    for c in g2:
        c.subscribe("$share/two/sg/+", qos=1)
    plain = connect(raw_client, b, "sg-plain")
    plain.subscribe("sg/+", qos=1)
    pub = connect(raw_client, b, "sg-pub", version=4)
    n = 10
    for k in range(n):
        pub.publish("sg/x", b"%d" % k, qos=1)
    assert sorted(int(p.payload) for p in plain.recv_publishes(n)) == list(range(n))
    for group in (g1, g2):
        per = [c.recv_publishes(n // 2) for c in group]   # round robin over two members
        got = sorted(int(p.payload) for msgs in per for p in msgs)
        assert got == list(range(n)), got
    settle(0.3)
    for c in g1 + g2 + [plain]:
        c.expect_nothing(0.01)


def test_shared_subscription_gets_no_retained_messages(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "shr-pub")
    pub.publish("shr/t", b"kept", qos=1, retain=True)
    s = connect(raw_client, b, "shr-sub")
    s.subscribe("$share/g/shr/#", qos=1, expect_codes=[1])
    s.expect_nothing(0.5)
    # Live messages do arrive, with RETAIN 0.
    pub.publish("shr/t", b"live", qos=1, retain=True)
    s.recv_publish(topic="shr/t", payload=b"live", retain=False)
    # An ordinary subscription on the same client gets the retained message.
    s.subscribe("shr/#", qos=1)
    s.recv_publish(topic="shr/t", payload=b"live", retain=True)


def test_shared_subscription_with_no_local_is_a_protocol_error(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "shnl")
    c.send(m.subscribe(1, [("$share/g/nl/t", {"qos": 1, "nl": True})], version=5))
    c.expect_closed(reason=0x82)        # MQTT-3.8.3-4


def test_shared_subscription_member_leaving(start_broker, raw_client):
    b = start_broker(W4)
    a = connect(raw_client, b, "shl-a")
    c = connect(raw_client, b, "shl-b")
    for x in (a, c):
        x.subscribe("$share/g/shl/t", qos=1)
    disconnect_and_wait(a)              # clean session: its membership ends with it
    pub = connect(raw_client, b, "shl-pub")
    for k in range(4):
        pub.publish("shl/t", b"%d" % k, qos=1)
    assert [p.payload for p in c.recv_publishes(4)] == [b"0", b"1", b"2", b"3"]


def test_shared_subscription_publisher_in_its_own_group_receives(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "shself")
    c.subscribe("$share/g/self/t", qos=1)
    c.publish("self/t", b"mine", qos=1)
    c.recv_publish(topic="self/t", payload=b"mine")


def test_unsubscribe_shared_subscription(start_broker, raw_client):
    b = start_broker(W4)
    a = connect(raw_client, b, "shu-a")
    c = connect(raw_client, b, "shu-b")
    for x in (a, c):
        x.subscribe("$share/g/shu/t", qos=1)
    ack = a.unsubscribe("$share/g/shu/t")
    assert ack.reason_codes == [0]
    pub = connect(raw_client, b, "shu-pub")
    for k in range(3):
        pub.publish("shu/t", b"%d" % k, qos=1)
    assert len(c.recv_publishes(3)) == 3
    a.expect_nothing(0.3)


# ---- v5 subscription options ---------------------------------------------------------------------------

def test_no_local(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "nl")
    c.subscribe([("nl/t", {"qos": 1, "nl": True})])
    other = connect(raw_client, b, "nl-other")
    other.subscribe("nl/t", qos=1)
    c.publish("nl/t", b"from-me", qos=1)
    other.recv_publish(payload=b"from-me")
    c.expect_nothing(0.4)
    # Messages from others still arrive.
    other.publish("nl/t", b"from-other", qos=1)
    c.recv_publish(payload=b"from-other")
    # no-local is per subscription: an overlapping one without it delivers our own message once.
    c.subscribe([("nl/+", {"qos": 1})])
    c.publish("nl/t", b"again", qos=1)
    c.recv_publish(topic="nl/t", payload=b"again")
    c.expect_nothing(0.3)


def test_without_no_local_own_messages_are_delivered(start_broker, raw_client):
    b = start_broker(W4)
    for version in (4, 5):
        c = connect(raw_client, b, "self-%d" % version, version=version)
        c.subscribe("self/%d" % version, qos=1)
        c.publish("self/%d" % version, b"echo", qos=1)
        c.recv_publish(topic="self/%d" % version, payload=b"echo")


def test_retain_as_published(start_broker, raw_client):
    b = start_broker(W4)
    rap = connect(raw_client, b, "rap-1")
    rap.subscribe([("rap/t", {"qos": 1, "rap": True})])
    norap = connect(raw_client, b, "rap-0")
    norap.subscribe([("rap/t", {"qos": 1})])
    pub = connect(raw_client, b, "rap-pub")
    pub.publish("rap/t", b"r", qos=1, retain=True)
    rap.recv_publish(payload=b"r", retain=True)
    norap.recv_publish(payload=b"r", retain=False)
    pub.publish("rap/t", b"n", qos=1, retain=False)
    rap.recv_publish(payload=b"n", retain=False)
    norap.recv_publish(payload=b"n", retain=False)


@pytest.mark.parametrize("rh,first,again", [(0, True, True), (1, True, False), (2, False, False)])
def test_retain_handling(start_broker, raw_client, rh, first, again):
    b = start_broker(W4)
    pub = connect(raw_client, b, "rh-pub")
    pub.publish("rh/t", b"kept", qos=1, retain=True)
    c = connect(raw_client, b, "rh-sub")
    for expected in (first, again):       # subscribe, then subscribe again to the same filter
        c.subscribe([("rh/#", {"qos": 1, "rh": rh})], expect_codes=[1])
        if expected:
            c.recv_publish(topic="rh/t", payload=b"kept", retain=True)
        c.expect_nothing(0.3)
    # Retain handling only concerns the retained messages: live ones arrive whatever it is.
    pub.publish("rh/t", b"live", qos=1)
    c.recv_publish(topic="rh/t", payload=b"live", retain=False)


def test_subscription_identifiers(start_broker, raw_client):
    b = start_broker(W4)
    pub = connect(raw_client, b, "si-pub")
    pub.publish("si/r", b"kept", qos=1, retain=True)
    c = connect(raw_client, b, "si")
    c.subscribe("si/#", qos=1, props={"subscription_identifier": 268435455})
    p = c.recv_publish(topic="si/r", retain=True)          # retained delivery carries it too
    assert p.props["subscription_identifier"] == [268435455]
    pub.publish("si/x", b"1", qos=1)
    assert c.recv_publish(topic="si/x").props["subscription_identifier"] == [268435455]
    # Subscribing again replaces the identifier...
    c.subscribe([("si/#", {"qos": 1, "rh": 2})], props={"subscription_identifier": 7})
    pub.publish("si/x", b"2", qos=1)
    assert c.recv_publish(topic="si/x", payload=b"2").props["subscription_identifier"] == [7]
    # ...and without one, there is none.
    c.subscribe([("si/#", {"qos": 1, "rh": 2})])
    pub.publish("si/x", b"3", qos=1)
    assert "subscription_identifier" not in c.recv_publish(topic="si/x", payload=b"3").props


def test_subscription_identifier_zero_is_a_protocol_error(broker, raw_client):
    c = connect(raw_client, broker, "si0")
    c.send(m.subscribe(1, "si0/t", qos=0, version=5, props={"subscription_identifier": 0}))
    c.expect_closed(reason=0x82)


def test_subscription_identifier_is_per_subscriber(start_broker, raw_client):
    b = start_broker(W4)
    a = connect(raw_client, b, "sip-a")
    a.subscribe("sip/t", qos=0, props={"subscription_identifier": 11})
    c = connect(raw_client, b, "sip-b")
    c.subscribe("sip/t", qos=0, props={"subscription_identifier": 22})
    pub = connect(raw_client, b, "sip-pub")
    pub.publish("sip/t", b"x", qos=0)
    assert a.expect(m.PUBLISH).props["subscription_identifier"] == [11]
    assert c.expect(m.PUBLISH).props["subscription_identifier"] == [22]


# ---- UNSUBSCRIBE ------------------------------------------------------------------------------------------

def test_unsubscribe_v5_reason_codes(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "us5")
    c.subscribe([("us/a", 1), ("us/+", 1)])
    ack = c.unsubscribe(["us/a", "us/none", "us/+", "us/a"])
    assert ack.reason_codes == [0x00, 0x11, 0x00, 0x11]
    pub = connect(raw_client, b, "us5-pub")
    pub.publish("us/a", b"x", qos=1)
    c.expect_nothing(0.4)


@pytest.mark.parametrize("version", [3, 4])
def test_unsubscribe_v3(start_broker, raw_client, version):
    b = start_broker(W4)
    c = connect(raw_client, b, "us3", version=version)
    c.subscribe([("us/a", 1), ("us/b", 1)])
    c.send(m.unsubscribe(0x4321, ["us/a", "us/none"], version=version))
    ack = c.expect(m.UNSUBACK, packet_id=0x4321)
    assert ack.raw == b"\xb0\x02\x43\x21"
    pub = connect(raw_client, b, "us3-pub", version=version)
    pub.publish("us/a", b"gone", qos=1)
    pub.publish("us/b", b"kept", qos=1)
    c.recv_publish(topic="us/b", payload=b"kept")
    c.expect_nothing(0.3)


def test_subscribe_again_replaces_the_qos(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "req", version=4)
    c.subscribe("rq/t", qos=2, expect_codes=[2])
    c.subscribe("rq/t", qos=0, expect_codes=[0])
    pub = connect(raw_client, b, "req-pub", version=4)
    pub.publish("rq/t", b"x", qos=2)
    c.expect(m.PUBLISH, topic="rq/t", qos=0)
    c.expect_nothing(0.4)              # one subscription, so one copy
    c.subscribe("rq/t", qos=1, expect_codes=[1])
    pub.publish("rq/t", b"y", qos=2)
    c.recv_publish(topic="rq/t", payload=b"y", qos=1)
    c.expect_nothing(0.3)


def test_subscriptions_survive_on_a_persistent_session(start_broker, raw_client):
    b = start_broker(W4)
    c = connect(raw_client, b, "persist-sub", props={"session_expiry_interval": 60})
    c.subscribe("ps/t", qos=1, props={"subscription_identifier": 9})
    disconnect_and_wait(c)
    pub = connect(raw_client, b, "persist-pub")
    pub.publish("ps/t", b"while-away", qos=1)
    r = connect(raw_client, b, "persist-sub", clean=False, props={"session_expiry_interval": 60})
    assert r.connack.session_present
    p = r.recv_publish(topic="ps/t", payload=b"while-away", qos=1)
    assert p.props["subscription_identifier"] == [9]
