"""Keep alive and idle connections: a silent client is closed after keepalive x
mqtt.keepalive_multiplier (1.5); any traffic resets the timer; keepalive 0 disables it; v5 clients
get DISCONNECT 0x8D first; mqtt.server_keepalive overrides a v5 client's keepalive (announced in
CONNACK); mqtt.idle_timeout closes connections (TCP, or TLS after the handshake) that never send
CONNECT.

Timing assertions use generous deadlines; the short waits only prove that something does NOT
happen too early."""
import socket
import time

import pytest

from bw import mqtt_raw as m
from bw.tls import client_context

TLS_CONFIG = """
mqtt.idle_timeout = 1s
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "{{pki.server_key}}"
  }
}
"""


def closed_within(c, timeout, reason=None):
    """Assert the server closes c within timeout (v5: after DISCONNECT reason, when given);
    returns the seconds it took."""
    t0 = time.monotonic()
    c.expect_closed(timeout=timeout, reason=reason)
    return time.monotonic() - t0


def raw_socket_closed(sock, timeout):
    """True when the server closes a plain socket within timeout (EOF or reset), False if it is
    still open then. Data from the server is read and ignored."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        sock.settimeout(left)
        try:
            data = sock.recv(4096)
        except socket.timeout:
            return False
        except OSError:
            return True
        if not data:
            return True


# ---- keepalive expiry ----------------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 4, 5])
def test_silent_client_closed_after_keepalive_times_multiplier(broker, raw_client, version):
    c = raw_client(broker, version=version)
    t0 = time.monotonic()
    c.connect(f"ka-{version}", keepalive=1)
    assert c.is_open(1.2), "closed before keepalive x 1.5 (1.5 s) had passed"
    c.expect_closed(timeout=max(0.1, 4.0 - (time.monotonic() - t0)),
                    reason=m.RC["keep_alive_timeout"] if version == 5 else None)


def test_v3_keepalive_close_sends_no_disconnect_packet(broker, raw_client):
    c = raw_client(broker, version=4)
    c.connect("ka-v3-nodisc", keepalive=1)
    got = c.expect_closed(timeout=4)
    assert got is None, f"MQTT 3.1.1 has no server DISCONNECT: {got!r}"


def test_v5_keepalive_timeout_sends_disconnect_0x8d(broker, raw_client):
    c = raw_client(broker, version=5)
    c.connect("ka-v5", keepalive=1)
    d = c.expect_closed(timeout=4, reason=m.RC["keep_alive_timeout"])
    assert d is not None and d.rc == 0x8D


@pytest.mark.parametrize("traffic", ["pingreq", "publish", "subscribe"])
def test_traffic_resets_keepalive(broker, raw_client, traffic):
    c = raw_client(broker, version=5)
    c.connect("ka-traffic-" + traffic, keepalive=1)
    end = time.monotonic() + 3.0  # twice the 1.5 s limit
    n = 0
    while time.monotonic() < end:
        n += 1
        if traffic == "pingreq":
            c.ping()
        elif traffic == "publish":
            c.publish("ka/x", b"tick", qos=0)
        else:
            c.subscribe(f"ka/{n}", qos=0)
        time.sleep(0.4)  # pacing the client's own traffic, not waiting for the broker
    assert c.is_open(0.05), f"closed although the client sent {traffic} every 0.4 s"
    # then silence: closed again by keepalive
    c.expect_closed(timeout=4, reason=m.RC["keep_alive_timeout"])


@pytest.mark.parametrize("version", [3, 4, 5])
def test_pingreq_gets_pingresp(broker, raw_client, version):
    c = raw_client(broker, version=version)
    c.connect(f"ping-{version}")
    for _ in range(3):
        p = c.ping()
        assert p.type == m.PINGRESP and p.raw == b"\xd0\x00"


def test_keepalive_zero_means_no_timeout(start_broker, raw_client):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    c = raw_client(b, version=5)
    c.connect("ka-zero", keepalive=0)
    ka1 = raw_client(b, version=5)
    ka1.connect("ka-one", keepalive=1)
    ka1.expect_closed(timeout=4, reason=m.RC["keep_alive_timeout"])  # the timer runs for others...
    c.expect_nothing(1.0)  # ...but not for keepalive 0 (nor does idle_timeout apply after CONNECT)
    assert c.ping()


def test_keepalive_multiplier_is_configurable(start_broker, raw_client):
    b = start_broker("mqtt.keepalive_multiplier = 3\n")
    c = raw_client(b, version=5)
    t0 = time.monotonic()
    c.connect("ka-mult", keepalive=1)
    assert c.is_open(2.4), "closed before 1 s x 3 had passed"
    c.expect_closed(timeout=max(0.1, 5.5 - (time.monotonic() - t0)), reason=m.RC["keep_alive_timeout"])


# ---- server keepalive ----------------------------------------------------------------------------

def test_server_keepalive_overrides_v5_client_keepalive(start_broker, raw_client):
    b = start_broker("mqtt.server_keepalive = 1\n")
    v5 = raw_client(b, version=5)
    ack = v5.connect("sk-v5", keepalive=120)
    assert ack.props.get("server_keep_alive") == 1, f"CONNACK must announce Server Keep Alive: {ack!r}"
    v5zero = raw_client(b, version=5)
    ack0 = v5zero.connect("sk-v5-zero", keepalive=0)
    assert ack0.props.get("server_keep_alive") == 1, ack0
    v3 = raw_client(b, version=4)
    v3.connect("sk-v3", keepalive=120)
    t0 = time.monotonic()
    assert v5.is_open(1.2)
    # the server's value is enforced, for a client that asked for 0 (no timeout) too
    v5.expect_closed(timeout=max(0.1, 4.0 - (time.monotonic() - t0)), reason=m.RC["keep_alive_timeout"])
    v5zero.expect_closed(timeout=1.0, reason=m.RC["keep_alive_timeout"])
    # server_keepalive is a v5 feature: the 3.1.1 client keeps its own 120 s
    assert v3.is_open(0.1)
    assert v3.ping()


def test_no_server_keep_alive_property_by_default(broker, raw_client):
    c = raw_client(broker, version=5)
    ack = c.connect("sk-default", keepalive=30)
    assert "server_keep_alive" not in ack.props, ack


# ---- idle timeout before CONNECT -----------------------------------------------------------------

def test_idle_timeout_closes_tcp_connection_without_connect(start_broker):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
    try:
        assert not raw_socket_closed(s, 0.5), "closed before idle_timeout (1 s)"
        assert raw_socket_closed(s, 3.5), "a connection that never sent CONNECT is still open 4 s later"
    finally:
        s.close()


def test_idle_timeout_closes_connection_with_partial_connect(start_broker):
    """Half a CONNECT is still no CONNECT (slowloris)."""
    b = start_broker("mqtt.idle_timeout = 1s\n")
    s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
    try:
        s.sendall(m.connect("partial", version=4)[:6])
        assert raw_socket_closed(s, 4.0), "a connection that never completed CONNECT is still open"
    finally:
        s.close()


def test_idle_timeout_closes_tls_connection_without_connect(start_broker, pki):
    b = start_broker(TLS_CONFIG, ssl=True)
    ctx = client_context(ca=pki.root_ca_cert)
    raw = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")  # the handshake completes here
    try:
        t0 = time.monotonic()
        assert not raw_socket_closed(s, 0.5), "closed before idle_timeout (1 s)"
        assert raw_socket_closed(s, 3.5), "a TLS connection that never sent CONNECT is still open 4 s later"
        assert time.monotonic() - t0 >= 0.5
    finally:
        s.close()


def test_idle_timeout_does_not_hurt_a_prompt_client(start_broker, raw_client):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    c = raw_client(b, version=4)
    c.connect("prompt", keepalive=60)
    c.expect_nothing(1.8)
    assert c.ping()
