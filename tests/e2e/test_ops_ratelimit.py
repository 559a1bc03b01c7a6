"""Listener rate limits (EMQX 5.8 limiter keys on listeners.tcp/ssl.<name>): max_conn_rate,
messages_rate, bytes_rate and their bursts. Back-pressure only: a limited client is slowed
down (its socket is not read), never dropped, and other clients are unaffected.

Timing assertions are relative or generous bounds: the limits themselves are what is checked
(burst + rate x elapsed), never absolute broker speed."""
import re
import threading
import time

import pytest

from bw import mqtt_raw as mr
from bw.tls import client_context

pytestmark = pytest.mark.timeout(90)

LIMITED = """
listeners.tcp.slow {{
  bind = "127.0.0.1:{{{{port.slow}}}}"
  {limits}
}}
"""


def limited_broker(start_broker, limits):
    return start_broker(LIMITED.format(limits=limits), wait_ports=["tcp", "slow"])


class Publisher:
    """A raw client that sends n QoS 1 PUBLISHes in one go and records when each PUBACK arrives."""

    def __init__(self, raw_client, port, client_id, topic, n, payload=b"x", tls=None):
        self.c = raw_client(port, timeout=30, tls=tls)
        self.tls = tls is not None
        self.c.send(mr.connect(client_id=client_id))
        self.c.expect(mr.CONNACK, rc=0)
        self.n, self.topic, self.payload = n, topic, payload
        self.acks = []            # (packet_id, monotonic time)
        self.error = None
        self.t0 = None

    def run(self, timeout):
        data = b"".join(mr.publish(self.topic, self.payload, qos=1, packet_id=i + 1) for i in range(self.n))
        self.t0 = time.monotonic()
        sender = threading.Thread(target=self.c.send, args=(data,), daemon=True)
        if self.tls:
            self.c.send(data)  # small enough for the socket buffers; one SSL object, one thread
        else:
            sender.start()    # may block while the broker is not reading: that is the point
        deadline = self.t0 + timeout
        try:
            while len(self.acks) < self.n:
                p = self.c.recv_packet(timeout=max(0.1, deadline - time.monotonic()))
                if p.type == mr.PUBACK:
                    self.acks.append((p.packet_id, time.monotonic()))
        except Exception as e:  # reported by the test with the count so far
            self.error = e
        if sender.is_alive() or sender.ident:
            sender.join(timeout=5)
        return self

    def acked_by(self, seconds):
        return sum(1 for _, t in self.acks if t - self.t0 <= seconds)

    @property
    def elapsed(self):
        return self.acks[-1][1] - self.t0 if self.acks else float("inf")


def _count_until(q_client, seconds, t0):
    """Messages the subscriber got until t0 + seconds."""
    time.sleep(max(0, t0 + seconds - time.monotonic()))
    return q_client.messages.qsize()


# ---- messages_rate -------------------------------------------------------------------------

def test_messages_rate_slows_the_publisher_without_losing_messages(start_broker, raw_client, mqtt_client):
    b = limited_broker(start_broker, 'messages_rate = "20/s"')
    sub = mqtt_client(b.tcp_port)
    sub.subscribe("rl/#", qos=1)
    n = 100
    pub = Publisher(raw_client, b.port("slow"), "limited", "rl/slow", n)
    seen = {}
    watcher = threading.Thread(target=lambda: seen.setdefault("at3", _count_until(sub, 3.0, time.monotonic())))
    watcher.start()
    pub.run(timeout=30)
    watcher.join()
    assert pub.error is None, f"{len(pub.acks)}/{n} acked: {pub.error!r}"
    # burst 20 (one second's worth) + 20/s: within ~3 s, at most 20 + 60 (+ slack for timer ticks)
    assert pub.acked_by(3.0) <= 20 + 3.0 * 20 + 15, pub.acked_by(3.0)
    assert seen["at3"] <= 20 + 3.0 * 20 + 15, seen["at3"]
    assert pub.acked_by(3.0) >= 20, "the limited client must still make progress"
    # (100 - 20) / 20 = 4 s at least for all of them
    assert pub.elapsed >= 3.0, pub.elapsed
    # nothing lost: every message acked (checked above) and delivered
    sub.wait_messages(n, timeout=15)
    assert b.running


def test_messages_rate_does_not_slow_other_listeners(start_broker, raw_client, mqtt_client):
    b = limited_broker(start_broker, 'messages_rate = "20/s"')
    n = 100
    slow = Publisher(raw_client, b.port("slow"), "slow", "rl/slow", n)
    fast = Publisher(raw_client, b.tcp_port, "fast", "rl/fast", n)
    t = threading.Thread(target=slow.run, args=(30,))
    t.start()
    fast.run(timeout=30)
    t.join()
    assert fast.error is None and slow.error is None, (fast.error, slow.error)
    assert fast.elapsed < slow.elapsed / 2, (fast.elapsed, slow.elapsed)
    assert slow.elapsed >= 3.0, slow.elapsed


def test_messages_burst_sets_the_bucket_size(start_broker, raw_client):
    b = limited_broker(start_broker, 'messages_rate = "2/s"\n  messages_burst = 30')
    pub = Publisher(raw_client, b.port("slow"), "burst", "rl/burst", 34)
    pub.run(timeout=30)
    assert pub.error is None, pub.error
    assert pub.acked_by(1.0) >= 30, pub.acked_by(1.0)        # the burst passes at once
    assert pub.elapsed >= 1.2, pub.elapsed                    # the other 4 at 2/s


def test_other_packets_on_a_paused_connection_wait_too(start_broker, raw_client):
    """A PINGREQ behind rate-limited PUBLISHes is answered only after them (packets keep order)."""
    b = limited_broker(start_broker, 'messages_rate = "10/s"\n  messages_burst = 1')
    c = raw_client(b.port("slow"), timeout=20)
    c.send(mr.connect(client_id="order"))
    c.expect(mr.CONNACK, rc=0)
    c.send(b"".join(mr.publish("rl/o", b"x", qos=1, packet_id=i + 1) for i in range(10)) + mr.pingreq())
    types = [c.recv_packet(timeout=10).type for _ in range(11)]
    assert types == [mr.PUBACK] * 10 + [mr.PINGRESP], types


def test_messages_rate_on_an_ssl_listener(start_broker, raw_client):
    b = start_broker('listeners.ssl.default.messages_rate = "10/s"\n', ssl=True)
    n = 40
    pub = Publisher(raw_client, b.ssl_port, "tls", "rl/tls", n, tls=client_context(verify=False))
    pub.run(timeout=30)
    assert pub.error is None, f"{len(pub.acks)}/{n} acked: {pub.error!r}"
    assert pub.acked_by(1.5) <= 10 + 15 + 8, pub.acked_by(1.5)
    assert pub.elapsed >= 2.0, pub.elapsed      # (40 - 10) / 10 = 3 s


# ---- bytes_rate ----------------------------------------------------------------------------

def test_bytes_rate_slows_the_publisher(start_broker, raw_client, mqtt_client):
    b = limited_broker(start_broker, 'bytes_rate = "4KB/s"')
    sub = mqtt_client(b.tcp_port)
    sub.subscribe("rl/#", qos=1)
    payload = b"p" * 400                      # ~410 bytes a packet: ~10 messages a second
    n = 50
    pub = Publisher(raw_client, b.port("slow"), "bytes", "rl/bytes", n, payload)
    fast = Publisher(raw_client, b.tcp_port, "bytesfast", "rl/fast", n, payload)
    pub.run(timeout=30)
    fast.run(timeout=30)
    assert pub.error is None and fast.error is None, (pub.error, fast.error)
    size = len(mr.publish("rl/bytes", payload, qos=1, packet_id=1))
    # burst 4 KB + 4 KB/s: within 2 s at most (4096 * 3) / size, plus one packet of debt and slack
    bound = 4096 * 3 // size + 4
    assert pub.acked_by(2.0) <= bound, (pub.acked_by(2.0), bound)
    # 50 * 410 = 20 KB: at least (20 - 4) / 4 = 4 s
    assert pub.elapsed >= 2.5, pub.elapsed
    assert fast.elapsed < pub.elapsed / 2, (fast.elapsed, pub.elapsed)
    sub.wait_messages(2 * n, timeout=15)


# ---- max_conn_rate -------------------------------------------------------------------------

def test_max_conn_rate_delays_accepting_but_refuses_nobody(start_broker):
    b = limited_broker(start_broker, 'max_conn_rate = "5/s"')
    n = 30
    clients = []
    t0 = time.monotonic()
    try:
        for i in range(n):   # the TCP handshake completes in the kernel backlog
            c = mr.RawClient(b.port("slow"), timeout=30)
            c.send(mr.connect(client_id=f"conn{i}"))
            clients.append(c)
        done = []
        for c in clients:
            c.expect(mr.CONNACK, rc=0, timeout=30)
            done.append(time.monotonic() - t0)
    finally:
        for c in clients:
            c.close()
    assert len(done) == n
    # burst 5, then 5/s: the last one no sooner than (30 - 5) / 5 = 5 s (generous margin)
    assert max(done) >= 3.5, max(done)
    assert max(done) < 30
    # while the limited listener is throttled, the default one accepts at once
    with mr.RawClient(b.tcp_port, timeout=5) as c:
        c.send(mr.connect(client_id="other"))
        c.expect(mr.CONNACK, rc=0)
    # operators see the throttling per listener
    status, out = b.ctl("listeners")
    assert status == 0, out
    delayed = {ln.split()[0]: int(re.search(r"rate_delayed=(\d+)", ln).group(1)) for ln in out.splitlines()}
    assert delayed["tcp:slow"] >= 1 and delayed["tcp:default"] == 0, out
    assert re.search(r"^tcp:slow 127\.0\.0\.1:\d+ connections=\d+ refused=0 rate_delayed=\d+$", out, re.M), out


def test_max_conn_burst(start_broker):
    b = limited_broker(start_broker, 'max_conn_rate = "1/s"\n  max_conn_burst = 10')
    clients = []
    t0 = time.monotonic()
    try:
        for i in range(10):
            c = mr.RawClient(b.port("slow"), timeout=10)
            c.send(mr.connect(client_id=f"b{i}"))
            clients.append(c)
        for c in clients:
            c.expect(mr.CONNACK, rc=0)
    finally:
        for c in clients:
            c.close()
    assert time.monotonic() - t0 < 5, "the burst is accepted at once"


# ---- configuration -------------------------------------------------------------------------

def error_lines(out):
    return [ln for ln in out.splitlines() if ln.strip() and not re.match(r"^\S+ (info|warning|debug|error): ", ln)
            and not ln.startswith("==== harness:")]


def test_all_limit_keys_load(check_config):
    cfg = """
listeners.tcp.a {
  bind = "127.0.0.1:19883"
  max_conn_rate = "1000/s"
  max_conn_burst = 100
  messages_rate = "100/10s"
  messages_burst = 50
  bytes_rate = "10MB/m"
  bytes_burst = "1MB"
}
listeners.tcp.b {
  bind = "127.0.0.1:19884"
  max_conn_rate = infinity
  messages_rate = 1000
  bytes_rate = "infinity"
}
"""
    status, out = check_config(cfg)
    assert status == 0, out


@pytest.mark.parametrize("line,key,what", [
    ('messages_rate = "fast"', "messages_rate", "rate"),
    ('max_conn_rate = "0/s"', "max_conn_rate", "rate"),
    ('bytes_rate = "10/"', "bytes_rate", "rate"),
    ('messages_rate = "10MB/s"', "messages_rate", "byte unit"),
    ('bytes_burst = "lots"', "bytes_burst", "byte size"),
    ('messages_burst = "many"', "messages_burst", ""),
], ids=["word", "zero", "no_period", "bytes_for_messages", "bad_bytes_burst", "bad_burst"])
def test_bad_limit_values_name_file_line_and_key(check_config, line, key, what):
    cfg = "# header\nlisteners.tcp.x {\n  bind = \"127.0.0.1:19885\"\n  %s\n}\n" % line
    status, out = check_config(cfg)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    assert re.search(r"bulwark\.conf:4: listeners\.tcp\.x\.%s: " % key, errs[0]), errs[0]
    assert what in errs[0], errs[0]
