"""MQTT CONNECT / CONNACK for 3.1, 3.1.1 and 5.0: client identifiers, protocol levels, the v5
CONNACK properties that advertise the broker's limits, quick_deny_anonymous and
use_username_as_clientid. Reference: MQTT 3.1.1 §3.1-3.2, MQTT 5.0 §3.1-3.2, EMQX 5.8."""
import time

import pytest

from bw import mqtt_raw as m

# Several loop threads: clients of one test land on different workers (sessions are
# partitioned by client ID hash), so every test below also exercises cross-worker paths.
W4 = "node.workers = 4\n"

V3_IDENTIFIER_REJECTED = 2
V3_NOT_AUTHORIZED = 5


def connack_raw(port, packet_bytes, version=4, timeout=5):
    """Send arbitrary CONNECT bytes; return (CONNACK or None, closed-afterwards flag)."""
    c = m.RawClient(port, version=version, timeout=timeout)
    try:
        c.send(packet_bytes)
        try:
            p = c.recv_packet(timeout)
        except m.ConnectionClosed:
            return None, True
        assert p.type == m.CONNACK, f"expected CONNACK, got {p!r}"
        return p, not c.is_open(timeout)
    finally:
        c.close()


# ---- client identifiers -------------------------------------------------------------------------

def test_v31_empty_client_id_is_rejected(broker, raw_client):
    c = raw_client(broker, version=3)
    ack = c.connect("", expect_rc=V3_IDENTIFIER_REJECTED)
    assert not ack.session_present
    c.expect_closed()


def test_v311_empty_client_id_with_clean_session_gets_an_id(start_broker, raw_client):
    b = start_broker(W4)
    c = raw_client(b, version=4)
    ack = c.connect("", clean=True)
    assert ack.rc == 0 and not ack.session_present
    # The connection is fully usable.
    c.subscribe("anon/t", qos=1, expect_codes=[1])
    p = raw_client(b, version=4)
    p.connect("anon-pub")
    p.publish("anon/t", b"x", qos=1)
    c.recv_publish(topic="anon/t", payload=b"x", qos=1)


def test_v311_empty_client_id_without_clean_session_is_rejected(broker, raw_client):
    c = raw_client(broker, version=4)
    c.connect("", clean=False, expect_rc=V3_IDENTIFIER_REJECTED)
    c.expect_closed()


def test_v311_two_empty_client_ids_get_distinct_sessions(start_broker, raw_client):
    b = start_broker(W4)
    a = raw_client(b, version=4)
    a.connect("")
    c = raw_client(b, version=4)
    c.connect("")
    # Neither takes the other over: both stay connected and usable.
    assert a.is_open() and c.is_open()
    a.ping()
    c.ping()


@pytest.mark.parametrize("clean", [True, False])
def test_v5_empty_client_id_is_assigned(start_broker, raw_client, clean):
    b = start_broker(W4)
    c = raw_client(b, version=5)
    ack = c.connect("", clean=clean, props={"session_expiry_interval": 60})
    assert ack.rc == 0 and not ack.session_present
    assigned = ack.props.get("assigned_client_identifier")
    assert assigned, f"no Assigned Client Identifier in {ack!r}"
    c.subscribe("assigned/t", qos=1)
    c.disconnect()
    # The assigned identifier names the session: resuming it finds the session and its subscription.
    r = raw_client(b, version=5)
    ack2 = r.connect(assigned, clean=False, props={"session_expiry_interval": 60})
    assert ack2.session_present
    assert "assigned_client_identifier" not in ack2.props
    p = raw_client(b, version=5)
    p.connect("assigned-pub")
    p.publish("assigned/t", b"hello", qos=1)
    r.recv_publish(topic="assigned/t", payload=b"hello")


def test_v5_assigned_client_ids_are_unique(broker, raw_client):
    ids = set()
    for _ in range(3):
        c = raw_client(broker, version=5)
        ids.add(c.connect("").props["assigned_client_identifier"])
    assert len(ids) == 3


@pytest.mark.parametrize("version,rc", [(3, V3_IDENTIFIER_REJECTED), (4, V3_IDENTIFIER_REJECTED), (5, 0x85)])
def test_client_id_longer_than_max_clientid_len_is_rejected(start_broker, raw_client, version, rc):
    b = start_broker(W4 + "mqtt.max_clientid_len = 23\n")
    c = raw_client(b, version=version)
    c.connect("x" * 24, expect_rc=rc)
    c.expect_closed()
    ok = raw_client(b, version=version)
    ok.connect("y" * 23)        # exactly the limit is fine
    ok.ping()


@pytest.mark.parametrize("name,level", [("MQTT", 6), ("MQTT", 3), ("MQIsdp", 4), ("MQTT", 0)])
def test_unsupported_protocol_level_is_refused(broker, name, level):
    body = m.mstr(name) + m.u8(level) + m.u8(0x02) + m.u16(60) + m.mstr("lvl")
    ack, closed = connack_raw(broker.tcp_port, m.packet(m.CONNECT, 0, body))
    # MQTT 3.1.1 §3.1.2.2: CONNACK return code 0x01 (unacceptable protocol level), then close.
    # An MQTT 5 server may answer 0x84 instead; a level it does not know gets the 3.x form.
    assert ack is not None, "connection closed without CONNACK"
    assert ack.rc in (0x01, 0x84), f"{ack!r}"
    assert closed


def test_v5_connect_with_authentication_method_is_refused(broker, raw_client):
    c = raw_client(broker, version=5)
    ack = c.connect("enh", props={"authentication_method": "SCRAM-SHA-256", "authentication_data": b"n,,n=u"},
                    expect_rc=0x8C)
    assert not ack.session_present
    c.expect_closed()


# ---- quick_deny_anonymous -------------------------------------------------------------------------

QUICK_DENY = W4 + "listeners.tcp.default.enable_authn = quick_deny_anonymous\n"


@pytest.mark.parametrize("version,rc", [(3, V3_NOT_AUTHORIZED), (4, V3_NOT_AUTHORIZED), (5, 0x87)])
@pytest.mark.parametrize("username", [None, ""])
def test_quick_deny_anonymous_refuses_missing_or_empty_username(start_broker, raw_client, version, rc, username):
    b = start_broker(QUICK_DENY)
    c = raw_client(b, version=version)
    c.connect("anon-%d" % version, username=username, expect_rc=rc)
    c.expect_closed()


@pytest.mark.parametrize("version", [3, 4, 5])
def test_quick_deny_anonymous_accepts_a_username(start_broker, raw_client, version):
    b = start_broker(QUICK_DENY)
    c = raw_client(b, version=version)
    c.connect("named-%d" % version, username="alice", password=b"whatever")
    c.subscribe("qd/t", qos=1, expect_codes=[1])
    c.publish("qd/t", b"ok", qos=1)
    c.recv_publish(topic="qd/t", payload=b"ok")


# ---- v5 CONNACK properties --------------------------------------------------------------------------

def test_v5_connack_properties_defaults(broker, raw_client):
    c = raw_client(broker, version=5)
    ack = c.connect("props-default")
    p = ack.props
    assert p.get("receive_maximum") == 32                     # mqtt.max_inflight default
    assert p.get("maximum_packet_size") == 1024 * 1024        # mqtt.max_packet_size default 1MB
    assert p.get("topic_alias_maximum") == 65535              # mqtt.max_topic_alias default
    # Absent means available (1); EMQX sends 1 explicitly. Either is correct.
    assert p.get("retain_available", 1) == 1
    assert p.get("wildcard_subscription_available", 1) == 1
    assert p.get("shared_subscription_available", 1) == 1
    assert p.get("subscription_identifier_available", 1) == 1
    assert "maximum_qos" not in p                             # QoS 2 supported: the property is absent
    assert "server_keep_alive" not in p                       # server_keepalive = disabled
    assert "assigned_client_identifier" not in p


def test_v5_connack_properties_follow_the_config(start_broker, raw_client):
    b = start_broker(W4 + """
        mqtt {
          max_inflight = 7
          max_packet_size = 64KB
          max_topic_alias = 9
          retain_available = false
          wildcard_subscription = false
          shared_subscription = false
          server_keepalive = 30
          max_qos_allowed = 1
        }
    """)
    c = raw_client(b, version=5)
    ack = c.connect("props-cfg", keepalive=120)
    p = ack.props
    assert p.get("receive_maximum") == 7
    assert p.get("maximum_packet_size") == 64 * 1024
    assert p.get("topic_alias_maximum") == 9
    assert p.get("retain_available") == 0
    assert p.get("wildcard_subscription_available") == 0
    assert p.get("shared_subscription_available") == 0
    assert p.get("server_keep_alive") == 30
    assert p.get("maximum_qos") == 1


def test_v5_topic_alias_maximum_zero_is_not_advertised(start_broker, raw_client):
    b = start_broker("mqtt.max_topic_alias = 0\n")
    c = raw_client(b, version=5)
    ack = c.connect("no-alias")
    assert ack.props.get("topic_alias_maximum", 0) == 0


def test_v3_connack_has_no_properties(start_broker, raw_client):
    b = start_broker("mqtt.server_keepalive = 30\n")
    for version in (3, 4):
        c = raw_client(b, version=version)
        ack = c.connect("v3-%d" % version)
        assert ack.raw == b"\x20\x02\x00\x00", f"{ack!r}"


def test_server_keepalive_overrides_the_client_keepalive(start_broker, raw_client):
    # server_keepalive = 1 with keepalive_multiplier 1.5: a silent client is dropped after ~1.5 s
    # even though it asked for 60 s.
    b = start_broker(W4 + "mqtt { server_keepalive = 1, keepalive_multiplier = 1.5 }\n")
    c = raw_client(b, version=5)
    ack = c.connect("ska", keepalive=60)
    assert ack.props.get("server_keep_alive") == 1
    t0 = time.monotonic()
    c.expect_closed(timeout=6, reason=0x8D)
    assert time.monotonic() - t0 >= 1.0


# ---- use_username_as_clientid -------------------------------------------------------------------------

UNAME_AS_CID = W4 + "mqtt.use_username_as_clientid = true\n"


def test_use_username_as_clientid_shares_the_session_of_the_username(start_broker, raw_client):
    b = start_broker(UNAME_AS_CID)
    a = raw_client(b, version=5)
    a.connect("device-a", username="dev42")
    # Another client ID with the same username is the same MQTT client: it takes over.
    t = raw_client(b, version=5)
    t.connect("device-b", username="dev42")
    a.expect_closed(reason=0x8E)
    # Different usernames are different clients.
    o = raw_client(b, version=5)
    o.connect("device-b", username="dev43")
    assert t.is_open()


def test_use_username_as_clientid_resumes_by_username(start_broker, raw_client):
    b = start_broker(UNAME_AS_CID)
    a = raw_client(b, version=4)
    a.connect("first-id", username="dev7", clean=False)
    a.subscribe("uac/t", qos=1)
    a.disconnect()
    pub = raw_client(b, version=4)
    pub.connect("pub", username="publisher")
    pub.publish("uac/t", b"queued", qos=1)
    r = raw_client(b, version=4)
    ack = r.connect("second-id", username="dev7", clean=False)
    assert ack.session_present
    r.recv_publish(topic="uac/t", payload=b"queued", qos=1)


def test_use_username_as_clientid_without_username_keeps_the_client_id(start_broker, raw_client):
    b = start_broker(UNAME_AS_CID)
    a = raw_client(b, version=5)
    a.connect("plain-id")
    t = raw_client(b, version=5)
    t.connect("plain-id")               # same client ID, no username: takeover by client ID
    a.expect_closed(reason=0x8E)


def test_use_username_as_clientid_with_empty_client_id_assigns_the_username(start_broker, raw_client):
    # MQTT 5 §3.1.3.1 [MQTT-3.1.3-7]: a zero-length Client Identifier is replaced by one the server
    # chooses, and the CONNACK MUST carry it as the Assigned Client Identifier. Here the server
    # chooses the username (EMQX: enrich_assigned_clientid).
    b = start_broker(UNAME_AS_CID)
    c = raw_client(b, version=5)
    ack = c.connect("", username="dev99")
    assert ack.props.get("assigned_client_identifier") == "dev99", f"{ack!r}"


@pytest.mark.parametrize("props", [{"receive_maximum": 0}, {"maximum_packet_size": 0},
                                   [("session_expiry_interval", 1), ("session_expiry_interval", 2)]])
def test_v5_connect_with_invalid_properties_is_a_protocol_error(broker, raw_client, props):
    c = raw_client(broker, version=5)
    c.connect("badprops", props=props, expect_rc=0x82)
    c.expect_closed()


def test_disconnect_then_immediate_reconnect_publishes_no_will(start_broker, raw_client):
    # MQTT-3.14.4-3: on DISCONNECT the server discards the will without publishing it. A client
    # that sends DISCONNECT and reconnects with the same client ID at once must not see its will
    # published: the DISCONNECT was on the wire before the new CONNECT.
    b = start_broker(W4)
    watcher = raw_client(b, version=4)
    watcher.connect("will-watcher")
    watcher.subscribe("wr/#", qos=0)
    for i in range(60):
        cid = "wr-%d" % i
        c = m.RawClient(b.tcp_port, version=4)
        c.connect(cid, will={"topic": "wr/will", "payload": b"%d" % i})
        c.send(m.disconnect())
        c.close()
        r = m.RawClient(b.tcp_port, version=4)
        r.connect(cid)
        r.send(m.disconnect())
        r.close()
    watcher.ping()
    watcher.expect_nothing(0.5)
