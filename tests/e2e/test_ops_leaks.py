"""Leak check (hardening issue): many connect / subscribe / publish / disconnect cycles, then a
graceful stop, and nothing may be left allocated.

One cycle (`cycle`) exercises the paths that own memory: MQTT 3.1.1 and 5 over TCP and TLS;
persistent sessions that queue messages while offline, resume, and are dropped with QoS 1/2
messages still in flight; clean sessions; QoS 0, 1 and 2 both ways; retained messages set,
replaced and cleared; a will published by an abrupt close; a session takeover; topic aliases;
a shared subscription; and abrupt ends: a half-sent CONNECT, a TLS handshake cut off, garbage
on the TLS port, a TLS connection closed before CONNECT, a publisher that vanishes mid-flow.

How leaks are caught, by binary ($BULWARK_BIN):
  * ASan build (build-san, `make check`'s second pass): LeakSanitizer runs when the broker exits
    (ASAN_OPTIONS detect_leaks=1, set by the harness) and prints "ERROR: LeakSanitizer" into the
    broker's log; the harness's stop() already fails on that and on the non-zero exit status it
    causes, and the test checks the log itself as well.
  * normal build: the same loop under valgrind (--leak-check=full, definite leaks and memory
    errors are errors, --error-exitcode=99), shorter because valgrind is slow; and, without
    valgrind, the broker's RSS must stop growing across repeated batches of cycles."""
import os
import re
import shutil
import socket

import pytest

from bw import mqtt_raw as m
from bw.broker import bulwark_bin
from bw.tls import client_context

CONFIG = """
node.workers = 2
durable_storage.fsync = never
mqtt.max_mqueue_len = 1000
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}", handshake_timeout = 2s }
}
"""
SAN_RE = re.compile(r"ERROR: (?:LeakSanitizer|AddressSanitizer)|runtime error: |SUMMARY: \w+Sanitizer")


def is_asan_build(path):
    """True for a binary built with -fsanitize=address (it calls into the ASan runtime)."""
    with open(path, "rb") as f:
        return b"__asan_init" in f.read()


def drain(c, quiet=0.05, ack=True):
    """Receive (and acknowledge) PUBLISH packets until none came for `quiet` seconds."""
    got = []
    while True:
        try:
            p = c.recv_packet(timeout=quiet)
        except m.NoPacket:
            return got
        if p.type != m.PUBLISH:
            continue
        got.append(p)
        if ack and p.qos == 1:
            c.send(m.puback(p.packet_id, version=c.version))
        elif ack and p.qos == 2:
            c.send(m.pubrec(p.packet_id, version=c.version))
            c.wait_for(m.PUBREL, packet_id=p.packet_id)
            c.send(m.pubcomp(p.packet_id, version=c.version))


def abrupt_ends(b, i):
    """Connections that end badly before or during CONNECT."""
    s = socket.create_connection(("127.0.0.1", b.tcp_port))
    s.sendall(m.connect(f"lk-half-{i}", version=m.V5)[:9])  # half a CONNECT
    s.close()
    s = socket.create_connection(("127.0.0.1", b.ssl_port))
    s.sendall(bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03]))  # half a ClientHello
    s.close()
    s = socket.create_connection(("127.0.0.1", b.ssl_port))
    s.sendall(b"GET / HTTP/1.0\r\n\r\n" * 4)  # garbage instead of TLS
    s.close()


def cycle(b, i, tls):
    """One round of everything that allocates. Leaves the broker's state bounded: every
    persistent session is drained at the start of the next round."""
    v5 = m.V5
    T = dict(tls=tls, server_hostname="localhost")

    def client(version, secure):
        c = m.RawClient(b.ssl_port if secure else b.tcp_port, version=version, **(T if secure else {}),
                        timeout=10)
        c.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # no Nagle delays on acks
        return c

    # a persistent subscriber (over TLS every other round) picks up what was queued for it,
    # leaves a QoS 2 delivery half done, and goes offline again
    ps = client(v5 if i % 2 else m.V311, secure=i % 2 == 1)
    ps.connect("lk-persist", clean=False,
               **({"props": {"session_expiry_interval": 300}} if ps.version == v5 else {}))
    drain(ps)
    ps.subscribe([("lk/#", 2)])
    # a clean subscriber, with a shared subscription too
    cs = client(m.V311, secure=False)
    cs.connect(f"lk-clean-{i}")
    cs.subscribe([("lk/t/#", 1), ("$share/g/lk/s/#", 2)])
    # a publisher with a will, over TLS every other round
    pub = client(v5, secure=i % 2 == 0)
    pub.connect(f"lk-pub-{i}", will={"topic": "lk/will", "payload": b"gone %d" % i, "qos": 1,
                                     "props": {"will_delay_interval": 0}})
    pub.publish("lk/t/0", b"q0 %d" % i, qos=0)
    pub.publish("lk/t/1", b"q1 %d" % i * 20, qos=1)
    pub.publish("lk/t/2", b"q2 %d" % i, qos=2)
    pub.publish("lk/s/x", b"shared %d" % i, qos=1)
    pub.publish("lk/t/a", b"alias %d" % i, qos=1, props={"topic_alias": 1})
    pub.publish("", b"alias again %d" % i, qos=1, props={"topic_alias": 1})
    pub.publish(f"lk/r/{i % 7}", b"retained %d" % i * 30, qos=1, retain=True)
    if i % 3 == 0:
        pub.publish(f"lk/r/{(i + 3) % 7}", b"", qos=1, retain=True)  # clear one
    pub.send(m.publish("lk/t/2", b"unfinished %d" % i, qos=2, packet_id=99, version=v5))
    pub.wait_for(m.PUBREC, packet_id=99)
    pub.close()  # abrupt: the will goes out, the QoS 2 flow stays unfinished
    # q0, q1, q2, shared, alias, alias again, unfinished
    got = [p.topic for p in cs.recv_publishes(7)]
    assert sorted(got) == sorted(["lk/t/0", "lk/t/1", "lk/t/2", "lk/s/x", "lk/t/a", "lk/t/a", "lk/t/2"]), got
    # the persistent subscriber takes QoS 1/2 deliveries without acknowledging them, then the
    # same client id takes the session over from another connection
    for _ in range(3):
        try:
            ps.recv_packet(timeout=0.2)
        except m.NoPacket:
            break
    ps2 = client(ps.version, secure=False)
    ps2.connect("lk-persist", clean=False,
                **({"props": {"session_expiry_interval": 300}} if ps.version == v5 else {}))
    ps.close()
    ps2.close()  # abrupt, in-flight deliveries kept in the session
    # a late subscriber gets the retained messages, then leaves properly
    late = client(v5, secure=i % 2 == 1)
    late.connect(f"lk-late-{i}", props={"session_expiry_interval": 1 if i % 2 else 0})
    late.subscribe([("lk/r/#", 1)])
    drain(late)
    late.disconnect()
    cs.disconnect()
    abrupt_ends(b, i)


def run_cycles(b, pki, n, rss=None):
    tls = client_context(ca=pki.ca_bundle)
    for i in range(n):
        cycle(b, i, tls)
        if rss is not None and i % 10 == 9:
            rss.append(b.rss_kb())


def stop_and_check(b):
    """Graceful stop; the exit status and the log must show no leak and no memory error."""
    code = b.stop(expect=None)  # checked here, with the log
    log = b.run_log()
    assert not SAN_RE.search(log), f"sanitizer report:\n{log[-6000:]}"
    return code, log


def test_connect_publish_disconnect_cycles_leak_nothing(start_broker, pki):
    """The loop against $BULWARK_BIN: LeakSanitizer at exit for the ASan build, RSS that stops
    growing for the normal one."""
    asan = is_asan_build(bulwark_bin())
    b = start_broker(CONFIG, ssl=True)
    if asan:
        assert "detect_leaks=1" in os.environ.get("ASAN_OPTIONS", "detect_leaks=1")
    rss = []
    run_cycles(b, pki, 40 if asan else 80, rss)
    code, log = stop_and_check(b)
    assert code == 0, f"exit status {code}\n{log[-3000:]}"
    if not asan:
        # after the first batches (pools, caches, malloc arenas) memory must level off
        grown = rss[-1] - rss[2]
        assert grown < 2048, f"RSS kept growing over {len(rss)} batches of 10 cycles (KiB): {rss}"


@pytest.mark.timeout(120)
def test_connect_publish_disconnect_cycles_under_valgrind(start_broker, pki):
    """The normal build under valgrind: definite leaks and memory errors fail (exit 99)."""
    valgrind = shutil.which("valgrind")
    if not valgrind:
        pytest.skip("valgrind is not installed (scripts/setup.sh installs it)")
    if is_asan_build(bulwark_bin()):
        pytest.skip("the ASan build has LeakSanitizer (the other test); valgrind cannot run it")
    # the broker links jemalloc: valgrind must replace its malloc too to see the heap
    argv = [valgrind, "-q", "--leak-check=full", "--errors-for-leak-kinds=definite",
            "--show-leak-kinds=definite", "--error-exitcode=99", "--num-callers=30",
            "--soname-synonyms=somalloc=*jemalloc*", bulwark_bin(), "-c", "{config}"]
    b = start_broker(CONFIG, ssl=True, argv=argv, start_timeout=60, stop_timeout=60)
    run_cycles(b, pki, 20)
    code, log = stop_and_check(b)
    assert code == 0, f"valgrind reported errors (exit status {code}):\n{log[-8000:]}"
    assert "definitely lost" not in log and "Invalid read" not in log and "Invalid write" not in log, log[-8000:]
