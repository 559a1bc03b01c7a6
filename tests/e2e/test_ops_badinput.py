"""Bad input from the network (SPEC §3): each malformed or abusive connection is closed, alone,
with a log line, while an established subscriber/publisher pair keeps exchanging messages, new
connections keep working and stored data stays.

Reason codes (MQTT 5.0): a Malformed Packet is 0x81 (bad Remaining Length, invalid UTF-8,
invalid fixed-header flags, reserved packet type), a Protocol Error 0x82 (second CONNECT,
SUBSCRIBE without topic filters, AUTH without an authentication method), a wildcard in a PUBLISH
topic 0x90 Topic Name invalid [MQTT-3.3.2-2], a packet above Maximum Packet Size 0x95."""
import re
import socket
import time

import pytest

from bw import mqtt_raw as m

CONFIG = "mqtt { max_packet_size = 64KB, idle_timeout = 10s }\n"


# ---- the healthy pair --------------------------------------------------------------------------

class Pair:
    """A v5 subscriber and a v3.1.1 publisher that must keep working throughout."""

    def __init__(self, b):
        self.b = b
        self.n = 0
        self.sub = m.RawClient(b.tcp_port, version=5)
        self.sub.connect("healthy-sub")
        self.sub.subscribe("health/#", qos=1)
        self.pub = m.RawClient(b.tcp_port, version=4)
        self.pub.connect("healthy-pub")
        self.exchange()

    def exchange(self):
        self.n += 1
        payload = b"beat-%d" % self.n
        self.pub.publish("health/beat", payload, qos=1)
        self.sub.recv_publish(topic="health/beat", payload=payload)

    def close(self):
        self.sub.close()
        self.pub.close()


@pytest.fixture
def bad_env(start_broker):
    b = start_broker(CONFIG)
    pair = Pair(b)
    yield b, pair
    pair.close()


def assert_new_connections_work(b):
    with m.RawClient(b.tcp_port, version=5) as c:
        c.connect("newcomer-%d" % time.monotonic_ns())
        c.ping()


# ---- the cases ----------------------------------------------------------------------------------

def _pub(topic, version, qos=0, packet_id=None):
    return m.publish(topic, b"x", qos=qos, packet_id=packet_id, version=version)


# id -> (version, connect first?, bytes to send, expectation)
# expectation: ("disconnect", rc)  v5 DISCONNECT with rc, then the close
#              ("connack", rc)     CONNACK with rc, then the close
#              ("close", None)     closed without any MQTT packet
CASES = {
    "first-packet-not-connect-v311": (4, False, m.pingreq(), ("close", None)),
    "first-packet-publish": (5, False, _pub("a/b", 5), ("close", None)),
    "garbage-bytes": (4, False, b"\xde\xad\xbe\xef" * 8, ("close", None)),
    "garbage-after-connect-v5": (5, True, b"\xde\xad\xbe\xef" * 8, ("disconnect", 0x81)),
    "remaining-length-5-bytes-before-connect": (4, False, b"\x10\xff\xff\xff\xff\x01" + b"\x00" * 16,
                                                ("close", None)),
    "remaining-length-5-bytes-v5": (5, True, b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16, ("disconnect", 0x81)),
    "remaining-length-5-bytes-v311": (4, True, b"\x30\xff\xff\xff\xff\x01" + b"\x00" * 16, ("close", None)),
    "remaining-length-not-minimal-v5": (5, True, b"\xc0\x80\x00", ("disconnect", 0x81)),
    "connect-reserved-flag-v5": (5, False, m.connect("rsv5", version=5, flags=0x03), ("connack", 0x81)),
    "connect-reserved-flag-v311": (4, False, m.connect("rsv4", version=4, flags=0x03), ("close", None)),
    "connect-fixed-header-flags-v311": (4, False, b"\x11" + m.connect("fh4", version=4)[1:], ("close", None)),
    "oversize-claim-v5": (5, True, b"\x30" + m.varint(2 * 1024 * 1024) + b"\x00\x03a/b", ("disconnect", 0x95)),
    "oversize-claim-v311": (4, True, b"\x30" + m.varint(2 * 1024 * 1024) + b"\x00\x03a/b", ("close", None)),
    "oversize-connect-before-connack": (5, False, b"\x10" + m.varint(100 * 1024 * 1024), ("close", None)),
    "publish-wildcard-plus-v5": (5, True, _pub("a/+/b", 5), ("disconnect", 0x90)),
    "publish-wildcard-hash-v5": (5, True, _pub("a/#", 5, qos=1, packet_id=1), ("disconnect", 0x90)),
    "publish-wildcard-v311": (4, True, _pub("a/#", 4), ("close", None)),
    "publish-invalid-utf8-v5": (5, True, _pub(b"bad\xff/topic", 5), ("disconnect", 0x81)),
    "publish-utf16-surrogate-v5": (5, True, _pub(b"bad\xed\xa0\x80", 5), ("disconnect", 0x81)),
    "publish-nul-in-topic-v5": (5, True, _pub(b"a\x00b", 5), ("disconnect", 0x81)),
    "publish-invalid-utf8-v311": (4, True, _pub(b"bad\xc0\xaf", 4), ("close", None)),
    "publish-qos3-v5": (5, True, m.packet(m.PUBLISH, 0x06, m.mstr("a/b") + m.u16(1) + b"\x00x"),
                        ("disconnect", 0x81)),
    "second-connect-v5": (5, True, m.connect("again", version=5), ("disconnect", 0x82)),
    "second-connect-v311": (4, True, m.connect("again", version=4), ("close", None)),
    "subscribe-no-topics-v5": (5, True, m.subscribe(1, [], version=5), ("disconnect", 0x82)),
    "subscribe-no-topics-v311": (4, True, m.subscribe(1, [], version=4), ("close", None)),
    "subscribe-wrong-flags-v5": (5, True, m.subscribe(1, "a/b", version=5, flags=0x00), ("disconnect", 0x81)),
    "pubrel-wrong-flags-v5": (5, True, m.packet(m.PUBREL, 0x00, m.u16(1)), ("disconnect", 0x81)),
    "pubrel-wrong-flags-v311": (4, True, m.packet(m.PUBREL, 0x00, m.u16(1)), ("close", None)),
    "packet-type-0-v5": (5, True, b"\x00\x00", ("disconnect", 0x81)),
    "packet-type-0-before-connect": (4, False, b"\x00\x00", ("close", None)),
    "packet-type-15-v311": (4, True, b"\xf0\x00", ("close", None)),
    "auth-without-method-v5": (5, True, m.auth(0x18), ("disconnect", 0x82)),
    "connack-from-client-v5": (5, True, m.connack(0, version=5), ("disconnect", (0x81, 0x82))),
    "suback-from-client-v311": (4, True, m.suback(1, [0]), ("close", None)),
}


def run_case(b, name, case):
    """Open a connection, misbehave, check how it is closed; returns the log identifier of the
    connection (client ID, or 127.0.0.1:PORT before CONNECT)."""
    version, connect_first, data, (kind, rc) = case
    c = m.RawClient(b.tcp_port, version=version, timeout=5)
    try:
        ident = "127.0.0.1:%d" % c.sock.getsockname()[1]
        if connect_first:
            cid = "bad-" + name
            c.connect(cid)
            ident = cid
        c.send(data, ignore_errors=True)
        if kind == "disconnect":
            d = c.expect_closed(timeout=5)
            assert d is not None, f"{name}: closed without a DISCONNECT (expected reason {rc})"
            want = rc if isinstance(rc, tuple) else (rc,)
            assert d.rc in want, f"{name}: DISCONNECT reason 0x{d.rc:02x}, expected {[hex(x) for x in want]}"
        elif kind == "connack":
            p = c.expect(m.CONNACK, timeout=5)
            assert p.rc == rc, f"{name}: CONNACK 0x{p.rc:02x}, expected 0x{rc:02x}"
            c.expect_closed(timeout=5, allow_disconnect=False)
        else:
            # within 3 s, well before idle_timeout (10 s): the broker did not wait for more bytes
            c.expect_closed(timeout=3, allow_disconnect=False)
    finally:
        c.close()
    return ident


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_closes_only_that_connection(bad_env, name):
    b, pair = bad_env
    mark = b.log_mark()
    ident = run_case(b, name, CASES[name])
    pair.exchange()
    assert_new_connections_work(b)
    pair.exchange()
    b.wait_for_log(re.escape(ident) + r"\b.*", since=mark, timeout=5)


def test_all_bad_inputs_in_a_row_leave_the_broker_healthy(start_broker):
    b = start_broker(CONFIG)
    keeper = m.RawClient(b.tcp_port, version=5)
    keeper.connect("keeper")
    keeper.publish("kept/retained", b"precious", qos=1, retain=True)
    keeper.close()
    pair = Pair(b)
    try:
        mark = b.log_mark()
        idents = []
        for name, case in CASES.items():
            idents.append(run_case(b, name, case))
            pair.exchange()
        assert_new_connections_work(b)
        log = b.log_text(mark)
        missing = [i for i in idents if not re.search(re.escape(i) + r"\b", log)]
        assert not missing, f"no log line for these bad connections: {missing}"
        # nothing stored was lost
        with m.RawClient(b.tcp_port, version=5) as late:
            late.connect("late")
            late.subscribe("kept/#", qos=1)
            late.recv_publish(topic="kept/retained", payload=b"precious", retain=True)
    finally:
        pair.close()


# ---- slow and stalled clients -------------------------------------------------------------------

def test_half_a_packet_then_stall_blocks_nobody(bad_env):
    b, pair = bad_env
    stalled_connect = m.RawClient(b.tcp_port, version=4)
    stalled_publish = m.RawClient(b.tcp_port, version=5)
    try:
        cpkt = m.connect("stall-c", version=4)
        stalled_connect.send(cpkt[: len(cpkt) // 2])
        stalled_publish.connect("stall-p")
        big = m.publish("health/stalled", b"z" * 20000, qos=1, packet_id=9, version=5)
        stalled_publish.send(big[:5000])
        for _ in range(3):
            pair.exchange()
        assert_new_connections_work(b)
        stalled_publish.expect_nothing(0.3)
        assert stalled_connect.is_open(0.1)
        # completing the packets later works: partial input was kept, not lost
        stalled_publish.send(big[5000:])
        stalled_publish.expect(m.PUBACK, packet_id=9)
        pair.sub.recv_publish(topic="health/stalled", payload=b"z" * 20000)
        stalled_connect.send(cpkt[len(cpkt) // 2:])
        stalled_connect.expect(m.CONNACK, rc=0)
        pair.exchange()
    finally:
        stalled_connect.close()
        stalled_publish.close()


def test_byte_by_byte_client_works_and_blocks_nobody(bad_env):
    b, pair = bad_env
    slow = m.RawClient(b.tcp_port, version=5)
    try:
        pkt = m.connect("slowpoke", version=5)
        for i in range(len(pkt)):
            slow.send(pkt[i:i + 1])
            if i % 5 == 0:
                pair.exchange()
        slow.expect(m.CONNACK, rc=0)
        slow.ping()
    finally:
        slow.close()


def test_connect_split_across_segments_is_handled_once(bad_env):
    """A CONNECT that arrives in two TCP segments (a slow link) is one CONNECT: the client gets
    its CONNACK and stays connected. Many client IDs, so some belong to another worker than the
    one that accepted the connection (the connection then moves between threads)."""
    b, pair = bad_env
    for i in range(40):
        c = m.RawClient(b.tcp_port, version=5)
        try:
            pkt = m.connect("split-%d" % i, version=5)
            c.send(pkt[:6])
            c.expect_nothing(0.005)
            c.send(pkt[6:])
            c.expect(m.CONNACK, rc=0)
            c.ping()
            c.expect_nothing(0.02)
            c.disconnect()
        finally:
            c.close()
    pair.exchange()


def test_packets_pipelined_behind_connect_are_all_answered(bad_env):
    """MQTT lets a client send packets right behind its CONNECT without waiting for the CONNACK
    (v5 §3.1.4, 3.1.1 §3.1.4): CONNECT + SUBSCRIBE + PINGREQ in one segment get CONNACK, SUBACK
    and PINGRESP. Many client IDs, so the connection often moves to another worker in between."""
    b, pair = bad_env
    for i in range(100):
        with m.RawClient(b.tcp_port, version=5, timeout=3) as c:
            c.send(m.connect("pipe-%d" % i, version=5) + m.subscribe(1, "pipe/x", version=5) + m.pingreq())
            c.expect(m.CONNACK, rc=0)
            c.expect(m.SUBACK, packet_id=1)
            c.expect(m.PINGRESP)
    pair.exchange()


def test_silent_connection_is_closed_after_idle_timeout_with_a_log_line(start_broker):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    pair = Pair(b)
    s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
    try:
        port = s.getsockname()[1]
        pair.exchange()
        s.settimeout(5)
        assert s.recv(1) == b""
        b.wait_for_log(r"127\.0\.0\.1:%d\b.*idle_timeout" % port)
        pair.exchange()
    finally:
        s.close()
        pair.close()


def test_http_request_on_the_mqtt_port_is_closed(start_broker):
    b = start_broker("mqtt.idle_timeout = 2s\n")
    pair = Pair(b)
    s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
    try:
        port = s.getsockname()[1]
        s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        s.settimeout(5)
        try:
            assert s.recv(1) == b""
        except ConnectionResetError:
            pass
        b.wait_for_log(r"127\.0\.0\.1:%d\b" % port)
        pair.exchange()
    finally:
        s.close()
        pair.close()


def test_many_bad_connections_at_once(bad_env):
    b, pair = bad_env
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
            s.sendall(b"\x00\x00garbage" if i % 2 else b"\x30\xff\xff\xff\xff\x01")
            socks.append(s)
        pair.exchange()
        for s in socks:
            s.settimeout(5)
            try:
                assert s.recv(1) == b""
            except ConnectionResetError:
                pass
        pair.exchange()
        assert_new_connections_work(b)
    finally:
        for s in socks:
            s.close()
