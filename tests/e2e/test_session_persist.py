"""Persistent sessions: clean session / clean start, queued and in-flight messages, session
expiry, and persistence across a graceful broker restart (MQTT 3.1.1 and 5.0).

What a user sees is the contract here: the CONNACK session-present flag, which PUBLISH packets
arrive after a reconnect (their order, QoS, DUP flag and packet ids), and in v5 the PUBACK
reason code 0x10 (no matching subscribers) once a session and its subscriptions are gone."""
import re
import sqlite3
import time

import pytest

from bw import mqtt_raw as m

EXPIRY = 300  # v5 Session Expiry Interval used for "persistent" sessions


# ---- helpers -------------------------------------------------------------------------------------

def session_connect(raw_client, b, cid, version=4, clean=False, expiry=EXPIRY, expect_rc=0, **kw):
    """Connect cid; in v5 a persistent session (clean=False) carries Session Expiry Interval."""
    c = raw_client(b, version=version)
    props = dict(kw.pop("props", None) or {})
    if version == 5 and expiry is not None:
        props["session_expiry_interval"] = expiry
    c.connect(cid, clean=clean, props=props or None, expect_rc=expect_rc, **kw)
    return c


def leave(b, c, cid, graceful=True):
    """Disconnect (DISCONNECT, or just close the socket) and wait until the broker has seen it,
    so that what is published next finds the session offline."""
    mark = b.log_mark()
    if graceful:
        c.disconnect()
    else:
        c.close()
    b.wait_for_log(r"client %s disconnected" % re.escape(cid), since=mark)


def publisher(raw_client, b, cid="pub", version=5):
    p = raw_client(b, version=version)
    p.connect(cid)
    return p


def wait_no_subscribers(pub, topic, timeout=8.0):
    """Publish QoS 1 (v5 publisher) to topic until the PUBACK says 0x10 no matching subscribers;
    returns the seconds it took. Used to observe a session (and its subscription) ending."""
    t0 = time.monotonic()
    while True:
        ack = pub.publish(topic, b"probe", qos=1)
        if ack.rc == m.RC["no_matching_subscribers"]:
            return time.monotonic() - t0
        assert ack.rc == 0, ack
        assert time.monotonic() - t0 < timeout, f"{topic}: still routed to a subscriber after {timeout}s"
        time.sleep(0.1)


def payloads(pkts):
    return [p.payload for p in pkts]


# ---- clean session / clean start -----------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_persistent_session_keeps_subscription_and_queues_qos12_in_order(broker, raw_client, version):
    cid = f"persist-{version}"
    sub = session_connect(raw_client, broker, cid, version)
    assert sub.connack.session_present is False, "no session existed yet"
    sub.subscribe("q/#", qos=2)
    leave(broker, sub, cid)

    pub = publisher(raw_client, broker)
    sent = [("q/1", b"one", 1), ("q/2", b"two", 2), ("q/3", b"three", 1), ("q/4", b"four", 2), ("q/5", b"five", 1)]
    for topic, payload, qos in sent:
        ack = pub.publish(topic, payload, qos=qos)
        assert ack.rc == 0, f"the offline persistent session must still match {topic}: {ack!r}"

    sub = session_connect(raw_client, broker, cid, version)
    assert sub.connack.session_present is True
    got = sub.recv_publishes(len(sent))
    assert [(p.topic, p.payload) for p in got] == [(t, pl) for t, pl, _ in sent], "queued messages out of order"
    assert [p.qos for p in got] == [q for _, _, q in sent]
    assert not any(p.dup for p in got), "first transmission of a queued message must not carry DUP"
    sub.expect_nothing(0.3)
    # The subscription itself survived: a new message arrives without re-subscribing.
    pub.publish("q/live", b"live", qos=1)
    sub.recv_publish(topic="q/live", payload=b"live", qos=1)


def test_v31_persistent_session_queues_without_session_present(broker, raw_client):
    """MQTT 3.1 has no session-present flag (the byte is reserved 0), but the session is kept."""
    cid = "persist-v31"
    sub = session_connect(raw_client, broker, cid, 3)
    sub.subscribe("v31/#", qos=1)
    leave(broker, sub, cid)
    publisher(raw_client, broker).publish("v31/a", b"kept", qos=1)
    sub = session_connect(raw_client, broker, cid, 3)
    assert sub.connack.session_present is False
    sub.recv_publish(topic="v31/a", payload=b"kept", qos=1)


@pytest.mark.parametrize("version", [4, 5])
def test_clean_start_discards_the_old_session(broker, raw_client, version):
    cid = f"clean-{version}"
    sub = session_connect(raw_client, broker, cid, version)
    sub.subscribe("cs/#", qos=1)
    leave(broker, sub, cid)
    pub = publisher(raw_client, broker)
    pub.publish("cs/queued", b"queued", qos=1)

    sub = session_connect(raw_client, broker, cid, version, clean=True, expiry=None)
    assert sub.connack.session_present is False, "clean start must never resume a session"
    sub.expect_nothing(0.5)  # the queued message went with the old session
    ack = pub.publish("cs/after", b"after", qos=1)
    assert ack.rc == m.RC["no_matching_subscribers"], f"old subscription still routed: {ack!r}"
    sub.expect_nothing(0.3)
    # and a later persistent reconnect finds no session either (the clean one ended at close)
    leave(broker, sub, cid)
    sub = session_connect(raw_client, broker, cid, version)
    assert sub.connack.session_present is False


def test_v5_session_expiry_zero_is_not_persistent(broker, raw_client):
    """v5 clean_start=0 without Session Expiry Interval: the session ends with the connection."""
    cid = "v5-noexpiry"
    sub = session_connect(raw_client, broker, cid, 5, expiry=None)
    sub.subscribe("nx/#", qos=1)
    leave(broker, sub, cid)
    ack = publisher(raw_client, broker).publish("nx/1", b"x", qos=1)
    assert ack.rc == m.RC["no_matching_subscribers"]
    sub = session_connect(raw_client, broker, cid, 5)
    assert sub.connack.session_present is False
    sub.expect_nothing(0.3)


# ---- QoS 0 and the queue bound -------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_qos0_queued_for_offline_persistent_session_by_default(broker, raw_client, version):
    cid = f"q0-{version}"
    sub = session_connect(raw_client, broker, cid, version)
    sub.subscribe("z/#", qos=0)
    leave(broker, sub, cid)
    pub = publisher(raw_client, broker)
    for i in range(3):
        pub.publish(f"z/{i}", b"q0-%d" % i, qos=0)
    pub.publish("z/fence", b"fence", qos=1)  # QoS 1 published, delivered at granted QoS 0
    sub = session_connect(raw_client, broker, cid, version)
    got = sub.recv_publishes(4)
    assert payloads(got) == [b"q0-0", b"q0-1", b"q0-2", b"fence"]
    assert all(p.qos == 0 for p in got)


def test_qos0_not_queued_when_mqueue_store_qos0_false(start_broker, raw_client):
    b = start_broker("mqtt.mqueue_store_qos0 = false\n")
    cid = "q0-off"
    sub = session_connect(raw_client, b, cid, 5)
    sub.subscribe([("n/0", 0), ("n/1", 1)])
    leave(b, sub, cid)
    pub = publisher(raw_client, b)
    pub.publish("n/0", b"dropped", qos=0)
    pub.publish("n/1", b"kept", qos=1)
    sub = session_connect(raw_client, b, cid, 5)
    assert sub.connack.session_present is True
    sub.recv_publish(topic="n/1", payload=b"kept", qos=1)  # the QoS 0 message was not queued
    sub.expect_nothing(0.3)
    # QoS 0 still flows to the client while it is online
    pub.publish("n/0", b"online", qos=0)
    sub.recv_publish(topic="n/0", payload=b"online", qos=0)


@pytest.mark.parametrize("version", [4, 5])
def test_max_mqueue_len_drops_the_oldest(start_broker, raw_client, version):
    b = start_broker("mqtt.max_mqueue_len = 3\n")
    cid = f"mq-{version}"
    sub = session_connect(raw_client, b, cid, version)
    sub.subscribe("mq/#", qos=1)
    leave(b, sub, cid)
    pub = publisher(raw_client, b)
    for i in range(1, 8):
        pub.publish("mq/t", b"m%d" % i, qos=1 if i % 2 else 2)
    sub = session_connect(raw_client, b, cid, version)
    got = sub.recv_publishes(3)
    assert payloads(got) == [b"m5", b"m6", b"m7"], "the queue must keep the newest max_mqueue_len messages"
    sub.expect_nothing(0.5)


# ---- in flight at disconnect ---------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 4])
@pytest.mark.parametrize("version", [4, 5])
def test_unacked_inflight_redelivered_with_dup_and_same_packet_id(start_broker, raw_client, version, workers):
    b = start_broker(f"node.workers = {workers}\n")
    cid = f"infl-{version}-{workers}"
    sub = session_connect(raw_client, b, cid, version)
    sub.subscribe("if/#", qos=2)
    pub = publisher(raw_client, b, cid=f"pub-{version}-{workers}")
    pub.publish("if/1", b"q1", qos=1)
    pub.publish("if/2", b"q2", qos=2)
    first = [sub.recv_publish(ack=False), sub.recv_publish(ack=False)]
    assert [(p.payload, p.qos, p.dup) for p in first] == [(b"q1", 1, False), (b"q2", 2, False)]
    leave(b, sub, cid, graceful=False)

    pub.publish("if/3", b"q3", qos=1)  # queued behind the two in flight
    sub = session_connect(raw_client, b, cid, version)
    assert sub.connack.session_present is True
    again = [sub.recv_publish(ack=False) for _ in range(2)]
    for old, new in zip(first, again):
        assert (new.topic, new.payload, new.qos) == (old.topic, old.payload, old.qos)
        assert new.dup is True, f"a redelivered in-flight message must carry DUP=1: {new!r}"
        assert new.packet_id == old.packet_id, f"redelivery must reuse packet id {old.packet_id}: {new!r}"
    third = sub.recv_publish(ack=False)
    assert (third.payload, third.dup) == (b"q3", False)
    assert third.packet_id not in (first[0].packet_id, first[1].packet_id)
    # finish every flow; nothing else is owed afterwards
    sub.send(m.puback(again[0].packet_id, version=version))
    sub.send(m.pubrec(again[1].packet_id, version=version))
    sub.wait_for(m.PUBREL, packet_id=again[1].packet_id)
    sub.send(m.pubcomp(again[1].packet_id, version=version))
    sub.send(m.puback(third.packet_id, version=version))
    sub.expect_nothing(0.3)
    leave(b, sub, cid)
    sub = session_connect(raw_client, b, cid, version)
    sub.expect_nothing(0.5)


@pytest.mark.parametrize("version", [4, 5])
def test_qos2_pubrel_stage_resumed_after_reconnect(broker, raw_client, version):
    cid = f"rel-{version}"
    sub = session_connect(raw_client, broker, cid, version)
    sub.subscribe("r/#", qos=2)
    publisher(raw_client, broker).publish("r/1", b"exactly-once", qos=2)
    p = sub.recv_publish(ack=False, qos=2)
    sub.send(m.pubrec(p.packet_id, version=version))
    sub.expect(m.PUBREL, packet_id=p.packet_id)
    leave(broker, sub, cid, graceful=False)  # PUBCOMP never sent

    sub = session_connect(raw_client, broker, cid, version)
    assert sub.connack.session_present is True
    # The broker resends the PUBREL, not the PUBLISH (the message was already received once).
    sub.expect(m.PUBREL, packet_id=p.packet_id)
    sub.send(m.pubcomp(p.packet_id, version=version))
    sub.expect_nothing(0.5)


# ---- session expiry ------------------------------------------------------------------------------

def test_v5_session_expires_after_its_interval(broker, raw_client):
    cid = "exp-2s"
    pub = publisher(raw_client, broker)
    sub = session_connect(raw_client, broker, cid, 5, expiry=2)
    sub.subscribe("exp/#", qos=1)
    leave(broker, sub, cid)
    # within the interval the session is there
    sub = session_connect(raw_client, broker, cid, 5, expiry=2)
    assert sub.connack.session_present is True
    leave(broker, sub, cid)
    took = wait_no_subscribers(pub, "exp/probe")
    assert took >= 1.5, f"session ended after {took:.1f}s, before its 2 s expiry interval"
    sub = session_connect(raw_client, broker, cid, 5, expiry=2)
    assert sub.connack.session_present is False, "an expired session must not be resumed"
    sub.expect_nothing(0.3)  # the probes queued before expiry went with it


def test_v3_session_expiry_from_config(start_broker, raw_client):
    """v3 clean_session=0 sessions expire after mqtt.session_expiry_interval."""
    b = start_broker("mqtt.session_expiry_interval = 1s\n")
    cid = "v3-exp"
    sub = session_connect(raw_client, b, cid, 4)
    sub.subscribe("v3exp/#", qos=1)
    leave(b, sub, cid)
    took = wait_no_subscribers(publisher(raw_client, b), "v3exp/probe")
    assert took >= 0.7
    sub = session_connect(raw_client, b, cid, 4)
    assert sub.connack.session_present is False


def test_v5_disconnect_shortens_session_expiry(broker, raw_client):
    cid = "exp-short"
    pub = publisher(raw_client, broker)
    sub = session_connect(raw_client, broker, cid, 5, expiry=3600)
    sub.subscribe("short/#", qos=1)
    mark = broker.log_mark()
    sub.disconnect(rc=0, props={"session_expiry_interval": 1})
    broker.wait_for_log(r"client %s disconnected" % cid, since=mark)
    took = wait_no_subscribers(pub, "short/probe", timeout=6)
    assert took < 6
    sub = session_connect(raw_client, broker, cid, 5, expiry=3600)
    assert sub.connack.session_present is False


def test_v5_disconnect_with_expiry_zero_ends_session_at_once(broker, raw_client):
    cid = "exp-zero"
    sub = session_connect(raw_client, broker, cid, 5, expiry=3600)
    sub.subscribe("zero/#", qos=1)
    mark = broker.log_mark()
    sub.disconnect(rc=0, props={"session_expiry_interval": 0})
    broker.wait_for_log(r"client %s disconnected" % cid, since=mark)
    ack = publisher(raw_client, broker).publish("zero/1", b"x", qos=1)
    assert ack.rc == m.RC["no_matching_subscribers"]
    sub = session_connect(raw_client, broker, cid, 5, expiry=3600)
    assert sub.connack.session_present is False


def test_v5_disconnect_setting_expiry_after_connect_zero_is_protocol_error(broker, raw_client):
    cid = "exp-proto"
    sub = session_connect(raw_client, broker, cid, 5, expiry=None)  # Session Expiry 0
    sub.subscribe("pe/#", qos=1)
    sub.send(m.disconnect(0, version=5, props={"session_expiry_interval": 60}))
    sub.expect_closed(reason=m.RC["protocol_error"])
    # and the session did not become persistent
    sub = session_connect(raw_client, broker, cid, 5)
    assert sub.connack.session_present is False


# ---- graceful restart ----------------------------------------------------------------------------

@pytest.mark.parametrize("workers", [1, 4])
def test_persistent_sessions_and_queues_survive_graceful_restart(start_broker, raw_client, workers):
    b = start_broker(f"node.workers = {workers}\n")
    subs = [(f"rs-{v}-{i}", v) for i in range(4) for v in (4, 5)]  # several ids: several workers
    for cid, v in subs:
        c = session_connect(raw_client, b, cid, v)
        c.subscribe([(f"rs/{cid}/#", 2), ("rs/all", 1)])
        leave(b, c, cid)
    pub = publisher(raw_client, b)
    for cid, _ in subs:
        pub.publish(f"rs/{cid}/a", b"a-" + cid.encode(), qos=1)
        pub.publish(f"rs/{cid}/b", b"b-" + cid.encode(), qos=2)
    pub.publish("rs/all", b"to-all", qos=1)
    pub.disconnect()

    b.restart()

    pub = publisher(raw_client, b)
    for cid, v in subs:
        c = session_connect(raw_client, b, cid, v)
        assert c.connack.session_present is True, f"{cid}: session lost in a graceful restart"
        got = c.recv_publishes(3)
        assert [(p.topic, p.payload, p.qos) for p in got] == [
            (f"rs/{cid}/a", b"a-" + cid.encode(), 1), (f"rs/{cid}/b", b"b-" + cid.encode(), 2),
            ("rs/all", b"to-all", 1)], cid
        # the restored subscription routes new messages
        pub.publish(f"rs/{cid}/c", b"after", qos=1)
        c.recv_publish(topic=f"rs/{cid}/c", payload=b"after", qos=1)
        c.expect_nothing(0.1)


def test_inflight_message_survives_graceful_restart(broker, raw_client):
    """Sent but not acknowledged before the restart: redelivered with DUP and the same id."""
    cid = "rs-infl"
    sub = session_connect(raw_client, broker, cid, 5)
    sub.subscribe("ri/#", qos=1)
    publisher(raw_client, broker).publish("ri/1", b"unacked", qos=1)
    p = sub.recv_publish(ack=False)
    broker.restart()
    sub = session_connect(raw_client, broker, cid, 5)
    assert sub.connack.session_present is True
    sub.recv_publish(topic="ri/1", payload=b"unacked", dup=True, packet_id=p.packet_id)


def test_retained_messages_survive_graceful_restart(broker, raw_client):
    pub = publisher(raw_client, broker)
    pub.publish("ret/a", b"A", qos=1, retain=True)
    pub.publish("ret/b", b"B", qos=0, retain=True)
    pub.publish("ret/c", b"gone", qos=1, retain=True)
    pub.publish("ret/c", b"", qos=1, retain=True)  # cleared: must stay cleared
    broker.restart()
    sub = raw_client(broker, version=5)
    sub.connect("ret-sub")
    sub.subscribe("ret/#", qos=1)
    got = sorted((p.topic, p.payload, p.retain) for p in sub.recv_publishes(2))
    assert got == [("ret/a", b"A", True), ("ret/b", b"B", True)]
    sub.expect_nothing(0.3)


@pytest.mark.parametrize("version", [4, 5])
def test_inbound_qos2_awaiting_pubrel_survives_graceful_restart(broker, raw_client, version):
    sub = session_connect(raw_client, broker, f"in2-sub-{version}", 5)
    sub.subscribe("in2/#", qos=2)
    cid = f"in2-pub-{version}"
    pub = session_connect(raw_client, broker, cid, version)
    pub.send(m.publish("in2/x", b"once", qos=2, packet_id=7, version=version))
    pub.expect(m.PUBREC, packet_id=7)
    sub.recv_publish(topic="in2/x", payload=b"once", qos=2)

    broker.restart()

    sub = session_connect(raw_client, broker, f"in2-sub-{version}", 5)
    pub = session_connect(raw_client, broker, cid, version)
    assert pub.connack.session_present is True
    # The duplicate PUBLISH (DUP) is acknowledged but not routed again: exactly once.
    pub.send(m.publish("in2/x", b"once", qos=2, packet_id=7, dup=True, version=version))
    pub.expect(m.PUBREC, packet_id=7)
    pub.send(m.pubrel(7, version=version))
    pub.expect(m.PUBCOMP, packet_id=7, rc=0)  # 0x92 would mean the packet id was forgotten
    sub.expect_nothing(0.5)


def test_outbound_pubrel_stage_survives_graceful_restart(broker, raw_client):
    """PUBREC received, PUBCOMP not yet: after a restart the broker resends the PUBREL."""
    cid = "rs-rel"
    sub = session_connect(raw_client, broker, cid, 5)
    sub.subscribe("rr/#", qos=2)
    publisher(raw_client, broker).publish("rr/1", b"two-phase", qos=2)
    p = sub.recv_publish(ack=False, qos=2)
    sub.send(m.pubrec(p.packet_id, version=5))
    sub.expect(m.PUBREL, packet_id=p.packet_id)
    broker.restart()
    sub = session_connect(raw_client, broker, cid, 5)
    assert sub.connack.session_present is True
    sub.expect(m.PUBREL, packet_id=p.packet_id)
    sub.send(m.pubcomp(p.packet_id, version=5))
    sub.expect_nothing(0.5)


def test_session_expiry_keeps_counting_across_restart(broker, raw_client):
    cid = "rs-exp"
    sub = session_connect(raw_client, broker, cid, 5, expiry=2)
    sub.subscribe("rx/#", qos=1)
    leave(broker, sub, cid)
    broker.restart()
    took = wait_no_subscribers(publisher(raw_client, broker), "rx/probe")
    assert took < 8
    sub = session_connect(raw_client, broker, cid, 5, expiry=2)
    assert sub.connack.session_present is False, "a session must still expire after a restart"


def test_sessions_survive_restart_with_a_different_worker_count(start_broker, raw_client):
    b = start_broker("node.workers = 1\n")
    cids = [f"wc-{i}" for i in range(8)]
    for cid in cids:
        c = session_connect(raw_client, b, cid, 5)
        c.subscribe(f"wc/{cid}", qos=1)
        leave(b, c, cid)
    pub = publisher(raw_client, b)
    for cid in cids:
        pub.publish(f"wc/{cid}", cid.encode(), qos=1)
    pub.disconnect()
    b.restart(config="node.workers = 4\n")
    pub = publisher(raw_client, b)
    for cid in cids:
        c = session_connect(raw_client, b, cid, 5)
        assert c.connack.session_present is True, cid
        c.recv_publish(topic=f"wc/{cid}", payload=cid.encode())
        pub.publish(f"wc/{cid}", b"again", qos=1)
        c.recv_publish(topic=f"wc/{cid}", payload=b"again")


def test_v5_resume_with_expiry_zero_delivers_queue_then_ends(broker, raw_client):
    """clean_start=0 resumes the session even when the new CONNECT sets Session Expiry 0; the
    session then ends with this connection."""
    cid = "resume-zero"
    sub = session_connect(raw_client, broker, cid, 5)
    sub.subscribe("rz/#", qos=1)
    leave(broker, sub, cid)
    pub = publisher(raw_client, broker)
    pub.publish("rz/1", b"queued", qos=1)
    sub = session_connect(raw_client, broker, cid, 5, expiry=None)
    assert sub.connack.session_present is True
    sub.recv_publish(topic="rz/1", payload=b"queued")
    leave(broker, sub, cid)
    assert pub.publish("rz/2", b"x", qos=1).rc == m.RC["no_matching_subscribers"]
    sub = session_connect(raw_client, broker, cid, 5)
    assert sub.connack.session_present is False


@pytest.mark.parametrize("workers", [1, 4])
def test_long_queue_delivered_in_order_through_the_inflight_window(start_broker, raw_client, workers):
    """More queued messages than mqtt.max_inflight (32): all arrive, in order, as acks free the window."""
    b = start_broker(f"node.workers = {workers}\n")
    cid = f"long-{workers}"
    sub = session_connect(raw_client, b, cid, 5)
    sub.subscribe("long/#", qos=2)
    leave(b, sub, cid)
    pubs = [publisher(raw_client, b, cid=f"long-pub-{i}") for i in range(3)]  # likely other workers
    n = 90
    for i in range(n):
        pubs[0].publish("long/t", b"%03d" % i, qos=1 + i % 2)
    sub = session_connect(raw_client, b, cid, 5)
    got = sub.recv_publishes(n, timeout=20)
    assert payloads(got) == [b"%03d" % i for i in range(n)]
    assert [p.qos for p in got] == [1 + i % 2 for i in range(n)]
    # live traffic from several publishers after the backlog
    for i, p in enumerate(pubs):
        p.publish("long/live", b"live-%d" % i, qos=1)
    assert sorted(payloads(sub.recv_publishes(3))) == [b"live-0", b"live-1", b"live-2"]


def test_subscription_options_survive_graceful_restart(broker, raw_client):
    """Subscription identifier, No Local and Retain As Published are part of the stored session."""
    cid = "rs-opts"
    c = session_connect(raw_client, broker, cid, 5)
    c.subscribe([("so/rap", {"qos": 1, "rap": True}), ("so/nl", {"qos": 1, "nl": True})],
                props={"subscription_identifier": 7})
    leave(broker, c, cid)
    broker.restart()
    c = session_connect(raw_client, broker, cid, 5)
    assert c.connack.session_present is True
    c.publish("so/nl", b"own", qos=1)  # No Local: not sent back to the publisher
    pub = publisher(raw_client, broker)
    pub.publish("so/rap", b"kept-flag", qos=1, retain=True)
    p = c.recv_publish(topic="so/rap", payload=b"kept-flag")
    assert p.retain is True, "Retain As Published was lost in the restart"
    assert p.props.get("subscription_identifier") == [7], p
    pub.publish("so/nl", b"other", qos=1)
    p = c.recv_publish()
    assert (p.topic, p.payload) == ("so/nl", b"other"), "No Local was lost in the restart"
    assert p.props.get("subscription_identifier") == [7], p


def test_queued_message_expiry_applies_while_offline(broker, raw_client):
    cid = "q-expiry"
    sub = session_connect(raw_client, broker, cid, 5)
    sub.subscribe("qe/#", qos=1)
    leave(broker, sub, cid)
    pub = publisher(raw_client, broker)
    pub.publish("qe/short", b"short", qos=1, props={"message_expiry_interval": 1})
    pub.publish("qe/long", b"long", qos=1, props={"message_expiry_interval": 600})
    pub.publish("qe/none", b"none", qos=1)
    time.sleep(2.2)  # let the 1 s message expire while the session is offline
    sub = session_connect(raw_client, broker, cid, 5)
    got = sub.recv_publishes(2)
    assert [p.payload for p in got] == [b"long", b"none"], "an expired queued message was delivered"
    assert 590 <= got[0].props.get("message_expiry_interval", 0) <= 598, \
        f"the remaining expiry must count the time spent in the queue: {got[0]!r}"
    assert "message_expiry_interval" not in got[1].props
    sub.expect_nothing(0.3)


# ---- the store does not grow with traffic --------------------------------------------------------

def stored_rows(b, table):
    db = sqlite3.connect(f"file:{b.path('data/bulwark.db')}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        db.close()


def stored_messages(b):
    return stored_rows(b, "messages")


@pytest.mark.parametrize("fsync", ["batch", "always"])
def test_stored_messages_are_deleted_once_delivered_or_replaced(start_broker, raw_client, fsync):
    """Messages stored for persistent sessions leave the database once every session acked
    them, and a replaced retained message leaves with its replacement: a long-running broker's
    data file does not grow with the traffic it has carried. What is still owed survives a
    restart."""
    b = start_broker(f"durable_storage {{ fsync = {fsync} }}\n")
    sub = session_connect(raw_client, b, "store-sub", 5)
    sub.subscribe("st/#", qos=1)
    pub = publisher(raw_client, b)
    n = 400 if fsync == "batch" else 60
    for i in range(n):
        pub.publish("st/live", b"%d" % i, qos=1)
    assert payloads(sub.recv_publishes(n)) == [b"%d" % i for i in range(n)]  # acked by the client
    leave(b, sub, "store-sub")
    for i in range(20):
        pub.publish("st/queued", b"q%d" % i, qos=1)
    for i in range(30):
        pub.publish("rt/retained", b"r%d" % i, qos=1, retain=True)
    # 20 queued for the offline session + the last retained message
    deadline = time.monotonic() + 15
    while stored_messages(b) != 21:
        assert time.monotonic() < deadline, f"{stored_messages(b)} messages stored, expected 21"
        time.sleep(0.1)
    b.restart()
    sub = session_connect(raw_client, b, "store-sub", 5)
    assert sub.connack.session_present is True
    assert payloads(sub.recv_publishes(20)) == [b"q%d" % i for i in range(20)]
    other = raw_client(b, version=5)
    other.connect("store-other")
    other.subscribe("rt/#", qos=1)
    assert payloads(other.recv_publishes(1)) == [b"r29"]
    deadline = time.monotonic() + 15
    while stored_messages(b) != 1:  # the retained one
        assert time.monotonic() < deadline, f"{stored_messages(b)} messages stored after the drain, expected 1"
        time.sleep(0.1)


def test_expired_retained_message_leaves_the_store(broker, raw_client):
    pub = publisher(raw_client, broker)
    pub.publish("exp/r", b"short", qos=1, retain=True, props={"message_expiry_interval": 1})
    assert stored_rows(broker, "retained") == 1
    time.sleep(2.2)
    sub = raw_client(broker, version=5)
    sub.connect("exp-sub")
    sub.subscribe("exp/#", qos=1)  # meets the expired message: dropped, not sent
    sub.expect_nothing(0.3)
    deadline = time.monotonic() + 10
    while stored_rows(broker, "retained") or stored_messages(broker):
        assert time.monotonic() < deadline, "expired retained message still in the store"
        time.sleep(0.1)
