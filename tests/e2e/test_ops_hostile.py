"""Hostile clients (hardening issue): each attack runs while an established publisher/subscriber
pair keeps exchanging QoS 1 messages in the background, and broker memory stays bounded.

- TCP connections that never send: cut by mqtt.idle_timeout;
- TLS handshakes that stall: cut by ssl_options.handshake_timeout;
- garbage instead of TLS on the TLS port: closed at once;
- a CONNECT (or a PUBLISH) claiming a huge remaining length: refused before anything is allocated;
- more connections than max_connections: refused, the admitted ones unaffected;
- a subscriber that never reads: its output stays bounded, it is cut off after
  tcp_options.send_timeout without write progress ("not reading: N bytes pending for S seconds"),
  and its persistent session keeps the QoS 1 messages it never acknowledged.

test_ops_badinput.py covers each bad input alone (exact reason codes, log lines); these tests add
the volume and the "everyone else keeps working, memory bounded" angle."""
import os
import re
import socket
import threading
import time

import pytest

from bw import mqtt_raw as m
from bw.tls import client_context

RSS_BOUND_KB = 64 * 1024  # growth allowed during an attack


# ---- the background pair and the memory watch ---------------------------------------------------

class Background:
    """A v3.1.1 publisher and a v5 subscriber exchanging QoS 1 messages on a thread, in order,
    each one checked, until stop(). Also samples the broker's RSS (peak) while it runs."""

    def __init__(self, b, port=None, tag="bg"):
        self.b = b
        self.tag = tag
        port = port or b.tcp_port
        self.sub = m.RawClient(port, version=5, timeout=10)
        self.sub.connect(tag + "-sub")
        self.sub.subscribe(tag + "/#", qos=1)
        self.pub = m.RawClient(port, version=4, timeout=10)
        self.pub.connect(tag + "-pub")
        self.n = 0
        self.worst = 0.0
        self.error = None
        self.rss_base = b.rss_kb()
        self.rss_peak = self.rss_base
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        self.wait_for(3)

    def _run(self):
        try:
            while not self._stop.is_set():
                self.n += 1
                payload = b"beat-%d" % self.n
                t0 = time.monotonic()
                self.pub.publish(self.tag + "/beat", payload, qos=1, timeout=10)
                self.sub.recv_publish(topic=self.tag + "/beat", payload=payload, timeout=10)
                self.worst = max(self.worst, time.monotonic() - t0)
                self.rss_peak = max(self.rss_peak, self.b.rss_kb())
                time.sleep(0.01)
        except BaseException as e:  # reported by check()
            self.error = e

    def wait_for(self, more, timeout=10):
        """Wait until `more` further exchanges completed."""
        goal = self.n + more
        deadline = time.monotonic() + timeout
        while self.n < goal and self.error is None:
            assert time.monotonic() < deadline, f"background pair stalled at message {self.n}"
            time.sleep(0.01)
        assert self.error is None, f"background pair failed at message {self.n}: {self.error!r}"

    def check(self):
        """Exchanges still flow; none took long; memory stayed bounded."""
        self.wait_for(5)
        self.rss_peak = max(self.rss_peak, self.b.rss_kb())
        assert self.worst < 3.0, f"a background message took {self.worst:.2f}s"
        grown = self.rss_peak - self.rss_base
        assert grown < RSS_BOUND_KB, f"broker RSS grew by {grown} KiB during the attack"

    def stop(self):
        self._stop.set()
        self._thread.join(15)
        self.sub.close()
        self.pub.close()


@pytest.fixture
def background():
    started = []

    def make(b, **kw):
        bg = Background(b, **kw)
        started.append(bg)
        return bg
    yield make
    for bg in started:
        bg.stop()


def wait_closed(s, timeout):
    """Read until EOF/reset; returns the seconds it took (fails after timeout)."""
    t0 = time.monotonic()
    s.settimeout(timeout)
    try:
        while True:
            data = s.recv(65536)
            if not data:
                break
            assert time.monotonic() - t0 < timeout, "connection not closed"
    except (ConnectionResetError, BrokenPipeError):
        pass
    except socket.timeout:
        raise AssertionError(f"connection not closed within {timeout}s")
    return time.monotonic() - t0


def tls_config(extra):
    return """
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}", %s }
}
""" % extra


# ---- the attacks --------------------------------------------------------------------------------

def test_many_silent_tcp_connections_are_cut_by_idle_timeout(start_broker, background):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    bg = background(b)
    socks = [socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5) for _ in range(200)]
    try:
        bg.wait_for(10)
        t0 = time.monotonic()
        for s in socks:
            wait_closed(s, 10)
        assert time.monotonic() - t0 < 8, "silent connections outlived idle_timeout (1s) by far"
        b.wait_for_log(r"idle_timeout")
        bg.check()
    finally:
        for s in socks:
            s.close()


def test_stalled_tls_handshakes_are_cut_by_handshake_timeout(start_broker, background):
    b = start_broker("mqtt.idle_timeout = 60s\n" + tls_config("handshake_timeout = 1s"), ssl=True)
    bg = background(b)
    socks = []
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
            if i % 2:
                # the start of a ClientHello record, then silence
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + os.urandom(20))
            socks.append(s)
        t0 = time.monotonic()
        for s in socks:
            wait_closed(s, 10)
        assert time.monotonic() - t0 < 8, "stalled handshakes outlived handshake_timeout (1s) by far"
        bg.check()
        # TLS still works for a real client
        tls = client_context(verify=False, check_hostname=False)
        with m.RawClient(b.ssl_port, version=5, tls=tls) as c:
            c.connect("tls-after-stall")
            c.ping()
    finally:
        for s in socks:
            s.close()


def test_garbage_on_the_tls_port_is_closed_at_once(start_broker, background):
    b = start_broker("mqtt.idle_timeout = 60s\n" + tls_config("handshake_timeout = 60s"), ssl=True)
    bg = background(b)
    socks = []
    try:
        for i in range(100):
            s = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
            # (not random bytes: those may start like a TLS record and wait for its rest, which
            # is the stalled-handshake case above)
            junk = (m.connect("plain-%d" % i), b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                    b"\x00" * 5 + os.urandom(2043))[i % 3]
            try:
                s.sendall(junk)
            except (ConnectionResetError, BrokenPipeError):
                pass
            socks.append(s)
        for s in socks:
            # closed by the broker (an alert at most), long before handshake_timeout
            assert wait_closed(s, 5) < 5
        bg.check()
    finally:
        for s in socks:
            s.close()


def test_huge_remaining_lengths_are_refused_without_allocating(start_broker, background):
    b = start_broker("mqtt { idle_timeout = 10s, max_packet_size = 1MB }\n")
    bg = background(b)
    socks = []
    try:
        for i in range(50):
            s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
            if i % 2:
                # CONNECT claiming 268435455 bytes (the largest Remaining Length), then a stream of it
                s.sendall(b"\x10\xff\xff\xff\x7f" + m.connect("huge-%d" % i)[2:])
            else:
                # a connected client whose PUBLISH claims 268435455 bytes
                c = m.RawClient(b.tcp_port, version=4)
                c.connect("huge-pub-%d" % i)
                s.close()
                s = c.sock
                s.sendall(b"\x30\xff\xff\xff\x7f" + m.mstr("a/b"))
            socks.append(s)
        chunk = b"\x00" * 65536
        for s in socks:
            try:
                for _ in range(16):
                    s.sendall(chunk)
            except (ConnectionResetError, BrokenPipeError, socket.timeout):
                pass
        for s in socks:
            assert wait_closed(s, 5) < 5
        bg.check()
    finally:
        for s in socks:
            s.close()


def test_connections_above_max_connections_are_refused(start_broker, background):
    b = start_broker("""
listeners.tcp.lim {
  bind = "127.0.0.1:{{port.lim}}"
  max_connections = 5
}
""", wait_ports=["tcp"])
    b.wait_for_log(r"bulwark \S+ started")
    bg = background(b)
    port = b.port("lim")
    admitted = []
    try:
        for i in range(5):
            c = m.RawClient(port, version=5)
            c.connect("lim-%d" % i)
            admitted.append(c)
        mark = b.log_mark()
        for i in range(50):
            kind, what = m.connect_outcome(port, version=5, client_id="over-%d" % i, timeout=5)
            assert kind == "closed", f"connection {i} above max_connections: {kind} {what}"
        b.wait_for_log(r"max_connections", since=mark)
        for c in admitted:
            c.ping()
        bg.check()
        status, out = b.ctl("listeners")
        assert status == 0, out
        line = next(ln for ln in out.splitlines() if ln.startswith("tcp:lim "))
        assert "connections=5 " in line and "refused=50 " in line, out
    finally:
        for c in admitted:
            c.close()


# ---- a subscriber that never reads --------------------------------------------------------------

def lazy_subscriber(port, cid, filters):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(5)
    s.connect(("127.0.0.1", port))
    s.sendall(m.connect(cid, clean=False, keepalive=0))
    s.sendall(m.subscribe(1, filters))
    want = 4 + 4 + len(filters)  # CONNACK + SUBACK
    got = b""
    while len(got) < want:
        more = s.recv(want - len(got))
        assert more, "closed before SUBACK"
        got += more
    assert got[0] == 0x20 and got[3] == 0 and got[4] == 0x90, got
    assert list(got[8:]) == [q for _, q in filters], got
    return s, s.getsockname()[1]


SLOW_CONFIG = """
mqtt { max_mqueue_len = 100000, max_inflight = 32 }
listeners.tcp.default.tcp_options.send_timeout = 2s
"""


def test_subscriber_that_never_reads_is_cut_off_and_keeps_its_session(start_broker, background):
    b = start_broker(SLOW_CONFIG)
    bg = background(b)
    # The hostile ones: a tiny receive window, subscribe, read the SUBACK, then never read again.
    # "lazy" (persistent session) takes QoS 0 and QoS 1: its QoS 1 window fills, the rest waits in
    # its session queue, and what was sent sits in the kernel, unread (cut by TCP_USER_TIMEOUT).
    # "lazy0" takes a QoS 0 flood: its output piles up in the broker (cut by the stall timer).
    lazy, lazy_port = lazy_subscriber(b.tcp_port, "lazy", [("busy/q0", 0), ("busy/q1", 1)])
    lazy0, lazy0_port = lazy_subscriber(b.tcp_port, "lazy0", [("busy/q0", 0)])

    # A healthy subscriber reads everything on a thread.
    N = 300
    size = 16 * 1024
    healthy = m.RawClient(b.tcp_port, version=5, timeout=20)
    healthy.connect("healthy-busy")
    healthy.subscribe("busy/#", qos=1)
    seen = {"busy/q0": [], "busy/q1": []}
    failure = []

    def read_all():
        try:
            for _ in range(2 * N):
                p = healthy.recv_publish(timeout=30)
                seen[p.topic].append(int(p.payload[:8]))
        except BaseException as e:
            failure.append(e)
    reader = threading.Thread(target=read_all, daemon=True)
    reader.start()

    mark = b.log_mark()
    pub = m.RawClient(b.tcp_port, version=4, timeout=20)
    try:
        pub.connect("busy-pub")
        body = b"y" * (size - 8)
        for i in range(N):  # 2 x 300 x 16 KB = 9.6 MB through the broker
            pub.publish("busy/q0", b"%08d" % i + body, qos=1)
            pub.publish("busy/q1", b"%08d" % i + body, qos=1)
        bg.wait_for(3)
        # cut: send_timeout (2 s) after its writes stopped progressing; generous deadline
        for port in (lazy_port, lazy0_port):
            b.wait_for_log(r"127\.0\.0\.1:%d\b.*not reading: \d+ bytes pending for [\d.]+ seconds" % port,
                           since=mark, timeout=30)
        wait_closed(lazy, 10)
        wait_closed(lazy0, 10)
        reader.join(60)
        assert not failure, f"healthy subscriber failed: {failure[0]!r}"
        assert seen["busy/q0"] == list(range(N)) and seen["busy/q1"] == list(range(N)), \
            f"healthy subscriber lost messages: {len(seen['busy/q0'])} + {len(seen['busy/q1'])} of {N} + {N}"
        bg.check()
    finally:
        pub.close()
        healthy.close()
        lazy.close()
        lazy0.close()

    # Its session kept every QoS 1 message it never acknowledged (in flight ones resent).
    with m.RawClient(b.tcp_port, version=4, timeout=20) as back:
        ack = back.connect("lazy", clean=False, keepalive=0)
        assert ack.session_present
        got_q1 = set()
        while len(got_q1) < N:
            p = back.recv_publish(timeout=20)
            if p.topic == "busy/q1":
                got_q1.add(int(p.payload[:8]))
        assert got_q1 == set(range(N))
