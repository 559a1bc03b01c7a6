"""The raw MQTT codec and RawClient behave (no broker needed: a scripted fake server stands in)."""
import socket
import threading

import pytest

from bw import mqtt_raw as m
from bw.mqtt_raw import RawClient


@pytest.mark.parametrize("n,encoded", [(0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                                       (16384, b"\x80\x80\x01"), (2097151, b"\xff\xff\x7f"),
                                       (2097152, b"\x80\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")])
def test_varint(n, encoded):
    assert m.varint(n) == encoded
    assert m._Reader(encoded).varint() == n


def test_known_bytes():
    assert m.pingreq() == b"\xc0\x00" and m.pingresp() == b"\xd0\x00"
    assert m.disconnect() == b"\xe0\x00"
    assert m.connect("a", version=4, keepalive=60) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x3c\x00\x01a"
    assert m.connect("a", version=3)[2:10] == b"\x00\x06MQIsdp"
    assert m.connect("a", version=5)[8:13] == b"\x05\x02\x00\x3c\x00"   # level 5, flags, keepalive, no props
    assert m.subscribe(1, "a/b", qos=1) == b"\x82\x08\x00\x01\x00\x03a/b\x01"
    assert m.puback(7, version=5) == b"\x40\x02\x00\x07"
    assert m.puback(7, rc=0x10, version=5) == b"\x40\x03\x00\x07\x10"
    assert m.pubrel(7)[0] == 0x62


ALL_PROPS = [
    ("payload_format_indicator", 1), ("message_expiry_interval", 3600), ("content_type", "text/ü"),
    ("response_topic", "r/t"), ("correlation_data", b"\x00\xff"), ("subscription_identifier", 268435455),
    ("session_expiry_interval", 0xFFFFFFFF), ("assigned_client_identifier", "auto-1"),
    ("server_keep_alive", 30), ("authentication_method", "SCRAM"), ("authentication_data", b"\x01"),
    ("request_problem_information", 0), ("will_delay_interval", 5), ("request_response_information", 1),
    ("response_information", "ri"), ("server_reference", "other:1883"), ("reason_string", "why"),
    ("receive_maximum", 20), ("topic_alias_maximum", 10), ("topic_alias", 3), ("maximum_qos", 1),
    ("retain_available", 0), ("user_property", ("k", "v")), ("user_property", ("k", "v2")),
    ("maximum_packet_size", 1 << 20), ("wildcard_subscription_available", 1),
    ("subscription_identifier_available", 1), ("shared_subscription_available", 0),
]


def test_every_property_round_trips():
    enc = m.encode_props(ALL_PROPS)
    props = m._Reader(enc).props()
    assert props.order == ALL_PROPS
    assert props["user_property"] == [("k", "v"), ("k", "v2")]
    assert props["subscription_identifier"] == [268435455]
    assert props["content_type"] == "text/ü"
    assert len(props) == len(m.PROPS)


def roundtrip(data, version):
    p, n = m.decode(data, version)
    assert n == len(data) and p.raw == data
    return p


@pytest.mark.parametrize("version", [3, 4, 5])
def test_builders_decode_back(version):
    v5 = version == 5
    c = roundtrip(m.connect("cid", version=version, clean=False, keepalive=5, username="u", password=b"p\x00",
                            will={"topic": "w", "payload": b"bye", "qos": 1, "retain": True,
                                  "props": {"will_delay_interval": 3} if v5 else None},
                            props={"session_expiry_interval": 9} if v5 else None), version)
    assert (c.type, c.version, c.client_id, c.clean, c.keepalive, c.username, c.password) == \
        (m.CONNECT, version, "cid", False, 5, "u", b"p\x00")
    assert c.will["topic"] == "w" and c.will["payload"] == b"bye" and c.will["qos"] == 1 and c.will["retain"]
    if v5:
        assert c.props == {"session_expiry_interval": 9} and c.will["props"] == {"will_delay_interval": 3}
    a = roundtrip(m.connack(0x87 if v5 else 5, True, version, {"reason_string": "no"} if v5 else None), version)
    assert a.session_present and a.rc == (0x87 if v5 else 5)
    p = roundtrip(m.publish("t/1", b"\x00data", qos=2, retain=True, dup=True, packet_id=65535, version=version,
                            props={"topic_alias": 2, "subscription_identifier": [1, 7]} if v5 else None), version)
    assert (p.topic, p.payload, p.qos, p.retain, p.dup, p.packet_id) == ("t/1", b"\x00data", 2, True, True, 65535)
    if v5:
        assert p.props["subscription_identifier"] == [1, 7] and p.props["topic_alias"] == 2
    q0 = roundtrip(m.publish("t", "x", version=version), version)
    assert q0.packet_id is None and q0.qos == 0
    for build, t in ((m.puback, m.PUBACK), (m.pubrec, m.PUBREC), (m.pubrel, m.PUBREL), (m.pubcomp, m.PUBCOMP)):
        ack = roundtrip(build(9, rc=0x92 if v5 else None, version=version,
                              props={"reason_string": "r"} if v5 else None), version)
        assert (ack.type, ack.packet_id, ack.rc) == (t, 9, 0x92 if v5 else 0)
    s = roundtrip(m.subscribe(3, [("a/#", {"qos": 2, "nl": True, "rap": True, "rh": 2}), "b"], qos=1,
                              version=version, props={"subscription_identifier": 5} if v5 else None), version)
    assert s.topics == [("a/#", 0b101110), ("b", 1)] and s.flags == 2
    sa = roundtrip(m.suback(3, [2, 0x80], version), version)
    assert sa.reason_codes == [2, 0x80]
    u = roundtrip(m.unsubscribe(4, ["a", "b"], version), version)
    assert u.topics == ["a", "b"]
    ua = roundtrip(m.unsuback(4, [0, 0x11], version), version)
    assert ua.reason_codes == ([0, 0x11] if v5 else [])
    d = roundtrip(m.disconnect(0x8E if v5 else None, version, {"reason_string": "taken"} if v5 else None), version)
    assert d.rc == (0x8E if v5 else 0)
    assert roundtrip(m.pingreq(), version).type == m.PINGREQ
    if v5:
        au = roundtrip(m.auth(0x18, {"authentication_method": "X", "authentication_data": b"d"}), 5)
        assert au.rc == 0x18 and au.props["authentication_method"] == "X"
        assert roundtrip(m.auth(), 5).rc == 0


def test_incomplete_and_malformed():
    full = m.publish("topic", b"payload", qos=1, packet_id=1)
    for i in range(len(full)):
        assert m.decode(full[:i]) == (None, 0)
    with pytest.raises(m.MalformedPacket):
        m.decode(b"\x30\xff\xff\xff\xff\x01")                         # 5-byte remaining length
    with pytest.raises(m.MalformedPacket):
        m.decode(b"\x30\x03\x00\x05a")                                # topic longer than the packet
    with pytest.raises(m.MalformedPacket):
        m.decode(b"\x30\x04\x00\x02\xc3\x28")                         # invalid UTF-8 topic
    with pytest.raises(m.MalformedPacket):
        m.decode(m.packet(m.CONNACK, 0, b"\x00\x00\x05\x7f\x00\x00\x00\x00\x00"), 5)   # unknown property
    with pytest.raises(m.MalformedPacket):
        m.decode(b"\x00\x00")                                          # reserved type 0
    assert len(m.decode_all(m.pingresp() * 3 + m.suback(1, [0]))) == 4


class FakeServer:
    """Accepts one connection, records what the client sends, replies with scripted bytes."""

    def __init__(self, script):
        self.srv = socket.socket()
        self.srv.bind(("127.0.0.1", 0))
        self.srv.listen(1)
        self.port = self.srv.getsockname()[1]
        self.script = script
        self.got = b""
        self.stop = threading.Event()
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        conn, _ = self.srv.accept()
        conn.settimeout(5)
        with conn:
            for step in self.script:
                if step == "read":
                    self.got += conn.recv(65536)
                elif step == "close":
                    return
                else:
                    for b in step:                      # byte by byte: exercises reassembly
                        conn.sendall(bytes([b]))
            self.stop.wait(5)                           # keep the connection open until close()

    def close(self):
        self.stop.set()
        self.srv.close()
        self.t.join(6)


@pytest.fixture
def fake_server():
    made = []

    def make(script):
        s = FakeServer(script)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()


def test_client_flow_against_a_scripted_server(fake_server):
    props = [("subscription_identifier", 1), ("subscription_identifier", 42), ("topic_alias", 4),
             ("user_property", ("a", "b"))]
    srv = fake_server(["read", m.connack(0, False, 5, {"topic_alias_maximum": 5, "assigned_client_identifier": "x"}),
                       "read", m.publish("a/b", b"hi", qos=1, packet_id=3, version=5, props=props),
                       m.auth(0x18, {"authentication_method": "M"}),
                       m.disconnect(0x8E, 5, {"reason_string": "taken over"}), "close"])
    with RawClient(srv.port, version=5, timeout=3) as c:
        ack = c.connect("", props={"session_expiry_interval": 10})
        assert ack.props == {"topic_alias_maximum": 5, "assigned_client_identifier": "x"}
        c.send(m.subscribe(1, "a/#", version=5))
        p = c.recv_publish(topic="a/b", payload=b"hi", qos=1, props={"topic_alias": 4})
        assert p.props["subscription_identifier"] == [1, 42] and p.props["user_property"] == [("a", "b")]
        c.expect(m.AUTH, rc=0x18, props={"authentication_method": "M"})
        d = c.expect_closed(reason=0x8E)
        assert d.props["reason_string"] == "taken over"
    sent = m.decode_all(srv.got, 5)
    assert [x.type for x in sent][:2] == [m.CONNECT, m.SUBSCRIBE]


def test_expect_closed_failures(fake_server):
    srv = fake_server(["read", m.connack(), "close"])
    with RawClient(srv.port, timeout=2) as c:
        c.connect("a")
        with pytest.raises(AssertionError, match="without DISCONNECT"):
            c.expect_closed(reason=0x81)
    srv = fake_server(["read", m.connack(), m.pingresp()])
    with RawClient(srv.port, timeout=2) as c:
        c.connect("a")
        with pytest.raises(AssertionError, match="expected the connection to close"):
            c.expect_closed(timeout=1)
    srv = fake_server(["read", m.connack()])
    with RawClient(srv.port, timeout=2) as c:
        c.connect("a")
        with pytest.raises(AssertionError, match="still open"):
            c.expect_closed(timeout=0.3)
        assert c.is_open()
        with pytest.raises(m.NoPacket):
            c.recv_packet(0.2)


def test_helpers_set_aside_unrelated_packets(fake_server):
    srv = fake_server(["read", m.connack(), "read", m.publish("self", b"1", qos=1, packet_id=1), m.puback(1),
                       "read", m.pubrec(2), "read", m.publish("self", b"2", qos=0), m.pubcomp(2)])
    with RawClient(srv.port, timeout=3) as c:
        c.connect("a")
        assert c.publish("self", b"1", qos=1).type == m.PUBACK
        assert c.publish("self", b"2", qos=2).type == m.PUBCOMP
        assert [p.payload for p in c.recv_publishes(2, ack=False)] == [b"1", b"2"]
