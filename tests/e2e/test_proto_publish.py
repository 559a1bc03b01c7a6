"""PUBLISH in both directions for MQTT 3.1, 3.1.1 and 5.0: the QoS 0/1/2 packet flows, QoS
downgrade/upgrade, v5 reason codes and properties, message expiry, topic aliases in both
directions, flow control (Receive Maximum, Maximum Packet Size) and the broker's publish limits
(max_packet_size, max_qos_allowed, retain_available). Reference: MQTT 3.1.1 §3.3-3.7, §4.3;
MQTT 5.0 §3.3-3.7, §4.3, §4.9; EMQX 5.8."""
import time

import pytest

from bw import mqtt_raw as m

W4 = "node.workers = 4\n"


def v5_puback_rc(p):
    return p.rc or 0


def disconnect_and_wait(c):
    """Normal DISCONNECT, then wait until the broker has closed the connection: everything sent
    before it (acks included) has been processed when a new connection with the same ID arrives."""
    c.send(m.disconnect(version=c.version))
    c.expect_closed()


def pair(raw_client, b, version, sub_id="sub", pub_id="pub", sub_props=None):
    sub = raw_client(b, version=version)
    sub.connect(sub_id, props=sub_props)
    pub = raw_client(b, version=version)
    pub.connect(pub_id)
    return sub, pub


# ---- QoS flows ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos0_flow(start_broker, raw_client, version):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, version)
    sub.subscribe("f/0", qos=2, expect_codes=[2])
    pub.send(m.publish("f/0", b"zero", qos=0, version=version))
    p = sub.expect(m.PUBLISH, topic="f/0", payload=b"zero", qos=0, dup=False, retain=False)
    assert p.packet_id is None
    pub.expect_nothing(0.3)           # nothing acknowledges QoS 0
    sub.expect_nothing(0.1)


@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos1_flow_in_both_directions(start_broker, raw_client, version):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, version)
    sub.subscribe("f/1", qos=1, expect_codes=[1])
    # publisher -> broker: PUBACK echoes our packet id.
    pub.send(m.publish("f/1", b"one", qos=1, packet_id=0x1234, version=version))
    ack = pub.expect(m.PUBACK, packet_id=0x1234)
    assert ack.rc == 0
    # broker -> subscriber: QoS 1 with a non-zero packet id, held until our PUBACK.
    p = sub.expect(m.PUBLISH, topic="f/1", payload=b"one", qos=1, dup=False)
    assert p.packet_id and 1 <= p.packet_id <= 65535
    sub.send(m.puback(p.packet_id, version=version))
    sub.expect_nothing(0.3)           # acknowledged: no resend, nothing else


@pytest.mark.parametrize("version", [3, 4, 5])
def test_qos2_flow_in_both_directions(start_broker, raw_client, version):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, version)
    sub.subscribe("f/2", qos=2, expect_codes=[2])
    # publisher -> broker: PUBREC, PUBREL, PUBCOMP all carry our packet id.
    pub.send(m.publish("f/2", b"two", qos=2, packet_id=77, version=version))
    pub.expect(m.PUBREC, packet_id=77, rc=0)
    # The message is routed on PUBLISH (delivery method A of MQTT 5 §4.3.3), before PUBREL.
    p = sub.expect(m.PUBLISH, topic="f/2", payload=b"two", qos=2, dup=False)
    assert p.packet_id
    pub.send(m.pubrel(77, version=version))
    comp = pub.expect(m.PUBCOMP, packet_id=77)
    assert comp.rc == 0
    # broker -> subscriber: PUBREC from us, PUBREL (flags 0x2) from the broker, PUBCOMP from us.
    sub.send(m.pubrec(p.packet_id, version=version))
    rel = sub.expect(m.PUBREL, packet_id=p.packet_id)
    assert rel.flags == 0x02
    sub.send(m.pubcomp(p.packet_id, version=version))
    sub.expect_nothing(0.3)
    pub.expect_nothing(0.05)


def test_v5_subscriber_refusing_qos2_with_pubrec_error_ends_the_flow(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("rec-err", props={"receive_maximum": 1})
    sub.subscribe("recerr/t", qos=2)
    pub = raw_client(b, version=4)
    pub.connect("rec-err-pub")
    pub.publish("recerr/t", b"refused", qos=2)
    pub.publish("recerr/t", b"next", qos=2)
    p = sub.expect(m.PUBLISH, payload=b"refused")
    sub.send(m.pubrec(p.packet_id, rc=0x80, version=5))
    # No PUBREL for a refused message (MQTT 5 §4.3.3), and the window slot is free again.
    q = sub.expect(m.PUBLISH, payload=b"next")
    assert q.packet_id
    sub.send(m.pubrec(q.packet_id, version=5))
    sub.expect(m.PUBREL, packet_id=q.packet_id)
    sub.send(m.pubcomp(q.packet_id, version=5))
    sub.expect_nothing(0.3)


def test_outbound_packet_ids_are_distinct_while_in_flight(start_broker, raw_client):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 4)
    sub.subscribe([("ids/1", 1), ("ids/2", 2)])
    for i in range(5):
        pub.publish("ids/1", b"a%d" % i, qos=1)
        pub.publish("ids/2", b"b%d" % i, qos=2)
    got = [sub.expect(m.PUBLISH) for _ in range(10)]    # none acknowledged yet
    ids = [p.packet_id for p in got]
    assert len(set(ids)) == 10 and all(ids), ids
    # In-order per topic.
    assert [p.payload for p in got if p.topic == "ids/1"] == [b"a%d" % i for i in range(5)]
    assert [p.payload for p in got if p.topic == "ids/2"] == [b"b%d" % i for i in range(5)]


def test_inbound_qos2_packet_id_reusable_after_pubcomp(start_broker, raw_client):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 5)
    sub.subscribe("reuse/t", qos=0)
    for n in range(2):
        pub.send(m.publish("reuse/t", b"m%d" % n, qos=2, packet_id=9, version=5))
        pub.expect(m.PUBREC, packet_id=9)
        pub.send(m.pubrel(9, version=5))
        pub.expect(m.PUBCOMP, packet_id=9)
        sub.expect(m.PUBLISH, payload=b"m%d" % n)


def test_qos2_duplicate_publish_is_delivered_once(start_broker, raw_client):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 4)
    sub.subscribe("dup/t", qos=2)
    pub.send(m.publish("dup/t", b"once", qos=2, packet_id=5))
    pub.expect(m.PUBREC, packet_id=5)
    # The PUBREC got lost (as far as the publisher knows): it resends with DUP.
    pub.send(m.publish("dup/t", b"once", qos=2, packet_id=5, dup=True))
    pub.expect(m.PUBREC, packet_id=5)
    sub.recv_publish(topic="dup/t", payload=b"once", qos=2)
    sub.expect_nothing(0.5)
    pub.send(m.pubrel(5))
    pub.expect(m.PUBCOMP, packet_id=5)
    # After PUBCOMP the id is free again: the same id now is a new message.
    pub.send(m.publish("dup/t", b"again", qos=2, packet_id=5))
    pub.expect(m.PUBREC, packet_id=5)
    sub.recv_publish(topic="dup/t", payload=b"again", qos=2)


def test_pubrel_for_unknown_packet_id_gets_pubcomp_0x92(broker, raw_client):
    c = raw_client(broker, version=5)
    c.connect("stray-rel")
    c.send(m.pubrel(4242, version=5))
    comp = c.expect(m.PUBCOMP, packet_id=4242)
    assert comp.rc == 0x92


# ---- QoS downgrade / upgrade ---------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
@pytest.mark.parametrize("pub_qos,sub_qos", [(2, 0), (2, 1), (1, 0), (1, 2), (0, 2), (2, 2)])
def test_delivery_qos_is_min_of_published_and_granted(start_broker, raw_client, version, pub_qos, sub_qos):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, version)
    sub.subscribe("dg/t", qos=sub_qos, expect_codes=[sub_qos])
    pub.publish("dg/t", b"x", qos=pub_qos)
    p = sub.recv_publish(topic="dg/t")
    assert p.qos == min(pub_qos, sub_qos)
    assert (p.packet_id is None) == (p.qos == 0)


@pytest.mark.parametrize("pub_qos,sub_qos", [(0, 2), (0, 1), (1, 2), (2, 1), (2, 0), (1, 1)])
def test_upgrade_qos_delivers_at_the_higher_qos(start_broker, raw_client, pub_qos, sub_qos):
    # EMQX 5.8 emqx_session:enrich_subopts: upgrade_qos = true delivers at max(subscription QoS,
    # published QoS) (false: min).
    b = start_broker(W4 + "mqtt.upgrade_qos = true\n")
    sub, pub = pair(raw_client, b, 5)
    sub.subscribe("up/t", qos=sub_qos)
    pub.publish("up/t", b"x", qos=pub_qos)
    p = sub.recv_publish(topic="up/t")
    assert p.qos == max(pub_qos, sub_qos)


# ---- v5 reason codes on acks ---------------------------------------------------------------------------

def test_v5_puback_no_matching_subscribers(start_broker, raw_client):
    b = start_broker(W4)
    c = raw_client(b, version=5)
    c.connect("nobody-listens")
    ack = c.publish("nobody/here", b"x", qos=1)
    assert ack.rc == 0x10
    rec = c.publish("nobody/here", b"x", qos=2, complete=False)
    rec = c.wait_for(m.PUBREC, packet_id=rec)
    assert rec.rc == 0x10
    # 0x10 is a success code: the QoS 2 flow goes on.
    c.send(m.pubrel(rec.packet_id, version=5))
    c.expect(m.PUBCOMP, packet_id=rec.packet_id, rc=0)
    # With a subscriber: success.
    s = raw_client(b, version=5)
    s.connect("listener")
    s.subscribe("nobody/here", qos=1)
    assert v5_puback_rc(c.publish("nobody/here", b"y", qos=1)) == 0


def test_v3_puback_has_no_reason_code(broker, raw_client):
    c = raw_client(broker, version=4)
    c.connect("v3-nobody")
    c.send(m.publish("nobody/v3", b"x", qos=1, packet_id=3))
    ack = c.expect(m.PUBACK, packet_id=3)
    assert ack.raw == b"\x40\x02\x00\x03"


# ---- v5 property pass-through ----------------------------------------------------------------------------

def test_v5_properties_pass_through(start_broker, raw_client):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 5)
    sub.subscribe("props/t", qos=1, props={"subscription_identifier": 5})
    sent = [("payload_format_indicator", 1), ("content_type", "application/json; charset=ü"),
            ("response_topic", "reply/to/me"), ("correlation_data", b"\x00\x01corr\xff"),
            ("user_property", ("k", "v1")), ("user_property", ("a", "b")), ("user_property", ("k", "v2")),
            ("user_property", ("", "")), ("user_property", ("k", "v1"))]
    pub.publish("props/t", b'{"a":1}', qos=1, props=sent)
    p = sub.recv_publish(topic="props/t", payload=b'{"a":1}')
    assert p.props["payload_format_indicator"] == 1
    assert p.props["content_type"] == "application/json; charset=ü"
    assert p.props["response_topic"] == "reply/to/me"
    assert p.props["correlation_data"] == b"\x00\x01corr\xff"
    # User properties: all of them, duplicates kept, in the order sent (MQTT-3.3.2-18).
    assert p.props["user_property"] == [("k", "v1"), ("a", "b"), ("k", "v2"), ("", ""), ("k", "v1")]
    # The subscriber's own identifier; no topic alias (none allowed by this subscriber).
    assert p.props["subscription_identifier"] == [5]
    assert "topic_alias" not in p.props
    assert "message_expiry_interval" not in p.props


def test_v5_properties_are_dropped_for_v3_subscribers(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=4)
    sub.connect("v3-sub")
    sub.subscribe("props3/t", qos=1)
    pub = raw_client(b, version=5)
    pub.connect("v5-pub")
    pub.publish("props3/t", b"plain", qos=1,
                props={"user_property": [("k", "v")], "content_type": "text/plain", "message_expiry_interval": 60})
    p = sub.recv_publish(topic="props3/t", payload=b"plain", qos=1)
    # A valid 3.1.1 PUBLISH: topic, packet id, payload and nothing else.
    assert p.raw == m.publish("props3/t", b"plain", qos=1, packet_id=p.packet_id, version=4)


def test_v5_message_without_properties_arrives_without_properties(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("bare-sub")
    sub.subscribe("bare/t", qos=0)
    pub = raw_client(b, version=4)
    pub.connect("v3-pub")
    pub.publish("bare/t", b"x", qos=0)
    p = sub.expect(m.PUBLISH, topic="bare/t")
    assert p.props.order == []


# ---- message expiry ----------------------------------------------------------------------------------

def test_message_expiry_interval_forwarded_as_remaining_time(start_broker, raw_client):
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 5)
    sub.subscribe("exp/live", qos=1)
    pub.publish("exp/live", b"x", qos=1, props={"message_expiry_interval": 100})
    p = sub.recv_publish(topic="exp/live")
    assert 98 <= p.props["message_expiry_interval"] <= 100


def test_expired_messages_are_not_delivered_to_an_offline_session(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("exp-sub", clean=True, props={"session_expiry_interval": 300})
    sub.subscribe("exp/q", qos=1)
    disconnect_and_wait(sub)
    pub = raw_client(b, version=5)
    pub.connect("exp-pub")
    pub.publish("exp/q", b"short", qos=1, props={"message_expiry_interval": 1})
    pub.publish("exp/q", b"long", qos=1, props={"message_expiry_interval": 60})
    pub.publish("exp/q", b"forever", qos=1)
    pub.publish("exp/q", b"short0", qos=0, props={"message_expiry_interval": 1})
    time.sleep(2.2)                   # let "short" expire (the interval is whole seconds)
    r = raw_client(b, version=5)
    ack = r.connect("exp-sub", clean=False, props={"session_expiry_interval": 300})
    assert ack.session_present
    got = r.recv_publishes(2)
    assert [p.payload for p in got] == [b"long", b"forever"]
    # The remaining interval is forwarded: 60 minus the time spent queued.
    assert 55 <= got[0].props["message_expiry_interval"] <= 58
    assert "message_expiry_interval" not in got[1].props
    r.expect_nothing(0.5)


def test_expired_message_in_the_queue_is_dropped_not_sent(start_broker, raw_client):
    # Online but its window is full: a queued message that expires while waiting is dropped.
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("exp-win", props={"receive_maximum": 1})
    sub.subscribe("exp/win", qos=1)
    pub = raw_client(b, version=5)
    pub.connect("exp-win-pub")
    pub.publish("exp/win", b"first", qos=1)
    pub.publish("exp/win", b"soon-gone", qos=1, props={"message_expiry_interval": 1})
    pub.publish("exp/win", b"last", qos=1)
    first = sub.recv_publish(ack=False, payload=b"first")
    time.sleep(2.2)
    sub.send(m.puback(first.packet_id, version=5))
    sub.recv_publish(payload=b"last")
    sub.expect_nothing(0.3)


# ---- topic aliases: client -> server -------------------------------------------------------------------

def test_inbound_topic_alias_set_then_used(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_topic_alias = 4\n")
    sub = raw_client(b, version=4)
    sub.connect("alias-sub")
    sub.subscribe("alias/#", qos=1)
    pub = raw_client(b, version=5)
    ack = pub.connect("alias-pub")
    assert ack.props["topic_alias_maximum"] == 4
    pub.publish("alias/one", b"1", qos=1, props={"topic_alias": 1})
    pub.publish("", b"2", qos=1, props={"topic_alias": 1})
    pub.publish("alias/two", b"3", qos=0, props={"topic_alias": 4})
    pub.publish("", b"4", qos=0, props={"topic_alias": 4})
    # Re-map alias 1 to another topic.
    pub.publish("alias/three", b"5", qos=1, props={"topic_alias": 1})
    pub.publish("", b"6", qos=1, props={"topic_alias": 1})
    got = [(p.topic, p.payload) for p in sub.recv_publishes(6)]
    assert got == [("alias/one", b"1"), ("alias/one", b"2"), ("alias/two", b"3"), ("alias/two", b"4"),
                   ("alias/three", b"5"), ("alias/three", b"6")]


def test_inbound_unknown_topic_alias_is_a_protocol_error(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_topic_alias = 4\n")
    pub = raw_client(b, version=5)
    pub.connect("alias-unknown")
    pub.publish("alias/x", b"1", qos=1, props={"topic_alias": 1})
    pub.send(m.publish("", b"2", qos=1, packet_id=2, version=5, props={"topic_alias": 2}))
    pub.expect_closed(reason=0x82)


def test_inbound_topic_alias_above_maximum(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_topic_alias = 4\n")
    pub = raw_client(b, version=5)
    pub.connect("alias-big")
    pub.send(m.publish("alias/x", b"1", qos=0, version=5, props={"topic_alias": 5}))
    pub.expect_closed(reason=0x94)


def test_inbound_topic_alias_not_allowed_when_maximum_is_zero(start_broker, raw_client):
    b = start_broker("mqtt.max_topic_alias = 0\n")
    pub = raw_client(b, version=5)
    pub.connect("alias-none")
    pub.send(m.publish("alias/x", b"1", qos=0, version=5, props={"topic_alias": 1}))
    pub.expect_closed(reason=0x94)


def test_inbound_topic_aliases_do_not_survive_the_connection(start_broker, raw_client):
    b = start_broker(W4)
    pub = raw_client(b, version=5)
    pub.connect("alias-reconn", props={"session_expiry_interval": 60})
    pub.publish("alias/x", b"1", qos=1, props={"topic_alias": 1})
    disconnect_and_wait(pub)
    again = raw_client(b, version=5)
    again.connect("alias-reconn", clean=False, props={"session_expiry_interval": 60})
    again.send(m.publish("", b"2", qos=1, packet_id=2, version=5, props={"topic_alias": 1}))
    again.expect_closed(reason=0x82)    # MQTT-3.3.2-7: aliases are per network connection


# ---- topic aliases: server -> client --------------------------------------------------------------------

def test_outbound_topic_aliases(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("oalias-sub", props={"topic_alias_maximum": 2})
    sub.subscribe("oa/#", qos=1)
    pub = raw_client(b, version=4)
    pub.connect("oalias-pub")
    for t in ("oa/x", "oa/x", "oa/y", "oa/z", "oa/y", "oa/x", "oa/z"):
        pub.publish(t, t.encode(), qos=1)
    got = sub.recv_publishes(7)
    # The first PUBLISH of a topic sets the alias (topic + alias), the next ones send only the alias.
    # Once both aliases are taken, a new topic goes out in full without an alias.
    alias = {}
    for p, t in zip(got, ("oa/x", "oa/x", "oa/y", "oa/z", "oa/y", "oa/x", "oa/z")):
        assert p.payload == t.encode()
        a = p.props.get("topic_alias")
        if t == "oa/z":
            assert a is None and p.topic == "oa/z", p
            continue
        assert a in (1, 2), p
        if t not in alias:
            assert p.topic == t, p
            alias[t] = a
        else:
            assert a == alias[t] and p.topic == "", p
    assert sorted(alias.values()) == [1, 2]


def test_no_outbound_topic_alias_without_client_maximum(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("oalias-none")
    sub.subscribe("ob/#", qos=0)
    pub = raw_client(b, version=5)
    pub.connect("oalias-none-pub")
    for _ in range(3):
        pub.publish("ob/x", b"x", qos=0, props={"topic_alias": 1})
    for _ in range(3):
        p = sub.expect(m.PUBLISH, topic="ob/x")
        assert "topic_alias" not in p.props


def test_outbound_aliases_reset_on_reconnect(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("oalias-rc", props={"topic_alias_maximum": 5, "session_expiry_interval": 60})
    sub.subscribe("oc/#", qos=1)
    pub = raw_client(b, version=4)
    pub.connect("oalias-rc-pub")
    pub.publish("oc/x", b"1", qos=1)
    sub.recv_publish(topic="oc/x")
    disconnect_and_wait(sub)
    r = raw_client(b, version=5)
    r.connect("oalias-rc", clean=False, props={"topic_alias_maximum": 5, "session_expiry_interval": 60})
    pub.publish("oc/x", b"2", qos=1)
    p = r.recv_publish(payload=b"2")
    assert p.topic == "oc/x" and p.props.get("topic_alias") in (None, 1, 2, 3, 4, 5)


# ---- flow control ---------------------------------------------------------------------------------------

def test_client_receive_maximum_is_respected(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("rm-sub", props={"receive_maximum": 2})
    sub.subscribe("rm/t", qos=1)
    pub = raw_client(b, version=5)
    pub.connect("rm-pub")
    for i in range(6):
        pub.publish("rm/t", b"%d" % i, qos=1)
    first = [sub.recv_publish(ack=False) for _ in range(2)]
    assert [p.payload for p in first] == [b"0", b"1"]
    sub.expect_nothing(0.5)           # window full
    sub.send(m.puback(first[0].packet_id, version=5))
    third = sub.recv_publish(ack=False, payload=b"2")
    sub.expect_nothing(0.3)
    sub.send(m.puback(first[1].packet_id, version=5))
    sub.send(m.puback(third.packet_id, version=5))
    rest = sub.recv_publishes(3)
    assert [p.payload for p in rest] == [b"3", b"4", b"5"]


def test_receive_maximum_counts_qos2_until_pubcomp(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("rm2-sub", props={"receive_maximum": 1})
    sub.subscribe("rm2/t", qos=2)
    pub = raw_client(b, version=5)
    pub.connect("rm2-pub")
    pub.publish("rm2/t", b"a", qos=2)
    pub.publish("rm2/t", b"b", qos=2)
    p = sub.expect(m.PUBLISH, payload=b"a", qos=2)
    sub.send(m.pubrec(p.packet_id, version=5))
    sub.expect(m.PUBREL, packet_id=p.packet_id)
    sub.expect_nothing(0.4)           # still in flight until PUBCOMP
    sub.send(m.pubcomp(p.packet_id, version=5))
    sub.recv_publish(payload=b"b", qos=2)


def test_max_inflight_limits_v3_clients(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_inflight = 2\n")
    sub = raw_client(b, version=4)
    sub.connect("mi-sub")
    sub.subscribe("mi/t", qos=1)
    pub = raw_client(b, version=4)
    pub.connect("mi-pub")
    for i in range(4):
        pub.publish("mi/t", b"%d" % i, qos=1)
    first = [sub.recv_publish(ack=False) for _ in range(2)]
    sub.expect_nothing(0.5)
    for p in first:
        sub.send(m.puback(p.packet_id))
    assert [p.payload for p in sub.recv_publishes(2)] == [b"2", b"3"]


@pytest.mark.parametrize("qos", [0, 1])
def test_client_maximum_packet_size_is_respected(start_broker, raw_client, qos):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("mps-sub", props={"maximum_packet_size": 128})
    sub.subscribe("mps/t", qos=qos)
    pub = raw_client(b, version=5)
    pub.connect("mps-pub")
    pub.publish("mps/t", b"small-1", qos=1)
    pub.publish("mps/t", b"B" * 200, qos=1)          # larger than the subscriber accepts: not sent
    pub.publish("mps/t", b"s" * 100, qos=1)          # fits (2 + 2 + 5 + ... < 128)
    got = sub.recv_publishes(2)
    assert [p.payload for p in got] == [b"small-1", b"s" * 100]
    assert all(len(p.raw) <= 128 for p in got)
    sub.expect_nothing(0.3)


def test_client_maximum_packet_size_counts_properties(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("mpsp-sub", props={"maximum_packet_size": 64})
    sub.subscribe("mpsp/t", qos=0)
    pub = raw_client(b, version=5)
    pub.connect("mpsp-pub")
    pub.publish("mpsp/t", b"x", qos=1, props={"user_property": [("key", "v" * 60)]})   # too big with props
    pub.publish("mpsp/t", b"y", qos=1)
    p = sub.expect(m.PUBLISH, payload=b"y")
    assert len(p.raw) <= 64
    sub.expect_nothing(0.3)


# ---- the broker's limits ---------------------------------------------------------------------------------

def test_v5_publish_larger_than_max_packet_size(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_packet_size = 1KB\n")
    sub = raw_client(b, version=5)
    sub.connect("big-sub")
    sub.subscribe("big/#", qos=0)
    c = raw_client(b, version=5)
    c.connect("big-pub")
    c.publish("big/ok", b"x" * 900, qos=1)
    sub.expect(m.PUBLISH, topic="big/ok")
    c.send(m.publish("big/no", b"x" * 2000, qos=1, packet_id=2, version=5))
    c.expect_closed(reason=0x95)
    sub.expect_nothing(0.3)
    sub.ping()                        # the others carry on


@pytest.mark.parametrize("version", [3, 4])
def test_v3_publish_larger_than_max_packet_size_closes(start_broker, raw_client, version):
    b = start_broker(W4 + "mqtt.max_packet_size = 1KB\n")
    c = raw_client(b, version=version)
    c.connect("big3-%d" % version)
    c.send(m.publish("big/no", b"x" * 2000, qos=0, version=version))
    d = c.expect_closed()
    assert d is None                  # v3 has no DISCONNECT from the server


def test_max_qos_allowed(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.max_qos_allowed = 1\n")
    sub = raw_client(b, version=5)
    ack = sub.connect("mq-sub")
    assert ack.props.get("maximum_qos") == 1
    sub.subscribe("mq/t", qos=2, expect_codes=[1])    # granted at most 1
    pub = raw_client(b, version=5)
    pub.connect("mq-pub")
    pub.publish("mq/t", b"x", qos=1)
    sub.recv_publish(topic="mq/t", qos=1)
    pub.send(m.publish("mq/t", b"y", qos=2, packet_id=3, version=5))
    pub.expect_closed(reason=0x9B)
    sub.expect_nothing(0.3)


def test_max_qos_allowed_v3_publish_closes(start_broker, raw_client):
    b = start_broker("mqtt.max_qos_allowed = 1\n")
    pub = raw_client(b, version=4)
    pub.connect("mq3-pub")
    pub.send(m.publish("mq/t", b"y", qos=2, packet_id=3))
    pub.expect_closed()


def test_retained_publish_when_retain_unavailable(start_broker, raw_client):
    b = start_broker(W4 + "mqtt.retain_available = false\n")
    sub = raw_client(b, version=5)
    sub.connect("ra-sub")
    sub.subscribe("ra/#", qos=1)
    pub = raw_client(b, version=5)
    pub.connect("ra-pub")
    pub.publish("ra/t", b"normal", qos=1)
    sub.recv_publish(topic="ra/t", retain=False)
    pub.send(m.publish("ra/t", b"kept?", qos=1, retain=True, packet_id=5, version=5))
    pub.expect_closed(reason=0x9A)
    sub.expect_nothing(0.3)
    late = raw_client(b, version=5)
    late.connect("ra-late")
    late.subscribe("ra/#", qos=1)
    late.expect_nothing(0.3)          # nothing was retained


# ---- invalid PUBLISH from a client -----------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["a/+", "a/#", "#", "+"])
def test_publish_to_a_wildcard_topic_is_refused(start_broker, raw_client, topic):
    b = start_broker(W4)
    sub = raw_client(b, version=4)
    sub.connect("wc-sub")
    sub.subscribe("#", qos=0)
    c = raw_client(b, version=5)
    c.connect("wc-pub")
    c.send(m.publish(topic, b"x", qos=1, packet_id=1, version=5))
    c.expect_closed(reason=0x90)        # Topic Name invalid
    sub.expect_nothing(0.3)


def test_v3_publish_to_a_wildcard_topic_closes(broker, raw_client):
    c = raw_client(broker, version=4)
    c.connect("wc3-pub")
    c.send(m.publish("a/+", b"x", qos=0))
    assert c.expect_closed() is None


def test_v5_publish_with_subscription_identifier_is_a_protocol_error(broker, raw_client):
    c = raw_client(broker, version=5)
    c.connect("subid-pub")
    c.send(m.publish("a/b", b"x", qos=0, version=5, props={"subscription_identifier": 3}))
    c.expect_closed(reason=0x82)        # MQTT-3.3.4-6


def test_v5_user_properties_interleaved_with_other_properties(start_broker, raw_client):
    # MQTT 5 §2.2.2.2 puts no order on properties, and a User Property may appear any number of
    # times anywhere in the block. The message must be accepted and the user properties forwarded
    # in their order (MQTT-3.3.2-18).
    b = start_broker(W4)
    sub, pub = pair(raw_client, b, 5)
    sub.subscribe("inter/t", qos=1)
    ack = pub.publish("inter/t", b"x", qos=1, props=[("user_property", ("a", "1")), ("content_type", "text/plain"),
                                                    ("user_property", ("b", "2"))])
    assert ack.rc == 0
    p = sub.recv_publish(topic="inter/t", payload=b"x")
    assert p.props["user_property"] == [("a", "1"), ("b", "2")]
    assert p.props["content_type"] == "text/plain"


# ---- exact size limits --------------------------------------------------------------------------------

def publish_of_size(total, topic, version, qos=0, packet_id=None):
    """A PUBLISH whose encoded size is exactly `total` bytes."""
    n = total
    while n >= 0:
        pkt = m.publish(topic, b"p" * n, qos=qos, packet_id=packet_id, version=version)
        if len(pkt) == total:
            return pkt
        n -= 1
    raise ValueError(f"no PUBLISH of exactly {total} bytes")


@pytest.mark.parametrize("version", [4, 5])
def test_max_packet_size_boundary(start_broker, raw_client, version):
    b = start_broker(W4 + "mqtt.max_packet_size = 1KB\n")
    sub = raw_client(b, version=4)
    sub.connect("edge-sub")
    sub.subscribe("edge/#", qos=0)
    c = raw_client(b, version=version)
    c.connect("edge-pub")
    c.send(publish_of_size(1024, "edge/a", version))          # exactly the limit: accepted
    sub.expect(m.PUBLISH, topic="edge/a")
    c.ping()
    c.send(publish_of_size(1025, "edge/b", version))          # one byte more: refused
    c.expect_closed(reason=0x95 if version == 5 else None)
    sub.expect_nothing(0.3)


def test_client_maximum_packet_size_boundary(start_broker, raw_client):
    b = start_broker(W4)
    sub = raw_client(b, version=5)
    sub.connect("cedge-sub", props={"maximum_packet_size": 100})
    sub.subscribe("cedge/t", qos=0)
    pub = raw_client(b, version=4)
    pub.connect("cedge-pub")
    # What the broker sends this subscriber: a v5 QoS 0 PUBLISH without properties.
    fits = publish_of_size(100, "cedge/t", 5)
    payload_fits = m.decode(fits, 5)[0].payload
    pub.publish("cedge/t", payload_fits + b"+", qos=1)        # 101 bytes for the subscriber: not sent
    pub.publish("cedge/t", payload_fits, qos=1)               # exactly 100: sent
    p = sub.expect(m.PUBLISH, topic="cedge/t")
    assert p.payload == payload_fits and len(p.raw) == 100
    sub.expect_nothing(0.3)


# ---- inbound QoS 2 flow control -------------------------------------------------------------------------

def test_v5_more_qos2_in_flight_than_receive_maximum(start_broker, raw_client):
    # MQTT 5 §4.9: more unacknowledged QoS 2 PUBLISHes than the Receive Maximum the server sent
    # (mqtt.max_inflight) -> DISCONNECT 0x93. The ones within the window were delivered.
    b = start_broker(W4 + "mqtt.max_inflight = 2\n")
    sub = raw_client(b, version=4)
    sub.connect("rx-sub")
    sub.subscribe("rx/t", qos=2)
    pub = raw_client(b, version=5)
    ack = pub.connect("rx-pub")
    assert ack.props["receive_maximum"] == 2
    for pid in (1, 2):
        pub.send(m.publish("rx/t", b"%d" % pid, qos=2, packet_id=pid, version=5))
        pub.expect(m.PUBREC, packet_id=pid)
    pub.send(m.publish("rx/t", b"3", qos=2, packet_id=3, version=5))
    pub.expect_closed(reason=0x93)
    assert [p.payload for p in sub.recv_publishes(2)] == [b"1", b"2"]
    sub.expect_nothing(0.3)


def test_v3_qos2_beyond_max_awaiting_rel_is_never_acknowledged_and_dropped(start_broker, raw_client):
    # A v3 PUBREC has no reason code: it always means "received". When the broker cannot take
    # another QoS 2 message (max_awaiting_rel PUBRELs outstanding) it must not PUBREC it and drop
    # it; EMQX 5.8 disconnects the client (RC_RECEIVE_MAXIMUM_EXCEEDED -> close for v3).
    b = start_broker(W4 + "mqtt.max_awaiting_rel = 2\n")
    sub = raw_client(b, version=4)
    sub.connect("ar-sub")
    sub.subscribe("ar/t", qos=2)
    pub = raw_client(b, version=4)
    pub.connect("ar-pub")
    for pid in (1, 2):
        pub.send(m.publish("ar/t", b"%d" % pid, qos=2, packet_id=pid))
        pub.expect(m.PUBREC, packet_id=pid)
    pub.send(m.publish("ar/t", b"3", qos=2, packet_id=3))
    try:
        p = pub.recv_packet(3)
    except m.ConnectionClosed:
        p = None
    if p is not None:
        # Acknowledged: then it must have been delivered.
        assert p.type == m.PUBREC and p.packet_id == 3, p
        got = [x.payload for x in sub.recv_publishes(3)]
        assert got == [b"1", b"2", b"3"], got
    else:
        assert [x.payload for x in sub.recv_publishes(2)] == [b"1", b"2"]


# ---- pipelining -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_packets_sent_right_after_connect_are_processed(start_broker, raw_client, version):
    # MQTT 3.1.1 §3.1.4 / MQTT 5 §3.1.4: a client may send further packets right after CONNECT,
    # without waiting for CONNACK. With 4 workers most client IDs live on another worker than the
    # one that accepted the connection, so the connection moves while those bytes are buffered.
    b = start_broker(W4)
    sub = raw_client(b, version=4)
    sub.connect("pipe-sub")
    sub.subscribe("pipe/+", qos=1)
    n = 60
    for i in range(n):
        c = raw_client(b, version=version)
        c.send(m.connect("pipe-%d-%d" % (version, i), version=version)
               + m.subscribe(1, "pipe/none/%d" % i, qos=1, version=version)
               + m.publish("pipe/%d" % i, b"%d" % i, qos=1, packet_id=2, version=version))
        c.expect(m.CONNACK, rc=0, timeout=3)
        c.wait_for(m.SUBACK, packet_id=1, timeout=3)
        c.wait_for(m.PUBACK, packet_id=2, timeout=3)
        c.close()
    got = sorted(int(p.payload) for p in sub.recv_publishes(n))
    assert got == list(range(n))
