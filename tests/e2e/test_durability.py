"""Crash safety: `kill -9` during QoS 1 traffic with persistent sessions (durable_storage.fsync).

Contract (docs/DURABILITY.md): with fsync = always or batch, every QoS 1/2 PUBLISH whose PUBACK
(PUBREC) the publisher received is, after a SIGKILL and restart, still owed to every persistent
session it was routed to (at least once: duplicates allowed, losses not), and every retained
message whose PUBACK was received is still retained. fsync = never promises the same for a
process kill alone (the WAL is in the OS page cache), nothing for a power loss.

The publisher pipelines its PUBLISH packets (it does not wait for each PUBACK) so that the broker
always has acknowledgements and store writes in flight when it is killed."""
import select
import signal
import socket
import threading
import time

import pytest

from bw import mqtt_raw as m

EXPIRY = 0xFFFFFFFF

def cfg(fsync, workers):
    return (f"node.workers = {workers}\n"
            f"durable_storage {{ fsync = {fsync} }}\n"
            "mqtt.max_mqueue_len = 1000000\n"
            "mqtt.max_awaiting_rel = infinity\n")


class PipelinedPublisher:
    """A raw v3.1.1 client that sends QoS 1/2 PUBLISH (or SUBSCRIBE) packets without waiting and
    collects the packet ids of the PUBACKs (QoS 2: PUBRECs; it never sends PUBREL) or SUBACKs it
    gets on a reader thread."""

    def __init__(self, port, cid, clean=True):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.sock.sendall(m.connect(cid, version=m.V311, clean=clean))
        self.buf = bytearray()
        self.acked = set()
        self.lock = threading.Lock()
        self.closed = threading.Event()
        p = self._read_one(5)
        assert p is not None and p[0] == m.CONNACK, p
        self.reader = threading.Thread(target=self._run, daemon=True)
        self.reader.start()

    def _read_one(self, timeout):
        deadline = time.monotonic() + timeout
        while True:
            sp = m.split_packet(self.buf)
            if sp:
                del self.buf[:sp[3]]
                return sp
            r, _, _ = select.select([self.sock], [], [], max(0, deadline - time.monotonic()))
            if not r:
                return None
            data = self.sock.recv(65536)
            if not data:
                return None
            self.buf += data

    def _run(self):
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                self.buf += data
                while True:
                    sp = m.split_packet(self.buf)
                    if not sp:
                        break
                    del self.buf[:sp[3]]
                    if sp[0] in (m.PUBACK, m.PUBREC, m.SUBACK, m.UNSUBACK):
                        pid = (sp[2][0] << 8) | sp[2][1]
                        with self.lock:
                            self.acked.add(pid)
        except OSError:
            pass
        self.closed.set()

    def send(self, data):
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def n_acked(self):
        with self.lock:
            return len(self.acked)


def persistent_subscriber(raw_client, b, cid, topic):
    c = raw_client(b, version=4)
    c.connect(cid, clean=False)
    c.subscribe(topic, qos=1)
    mark = b.log_mark()
    c.disconnect()
    b.wait_for_log(r"client %s disconnected" % cid, since=mark)


def drain(raw_client, b, cid, quiet=1.5, timeout=60):
    """Reconnect cid (clean=False) and receive (acknowledging) until nothing came for quiet s."""
    c = raw_client(b, version=4)
    c.connect(cid, clean=False)
    assert c.connack.session_present is True, f"{cid}: session lost across the kill"
    got = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            p = c.recv_publish(timeout=quiet)
        except m.NoPacket:
            break
        got.append(p.payload)
    c.disconnect()
    return got


def drained_ids(raw_client, b, cid):
    """The payloads (packet ids of the publisher) drain() receives for cid, as a set of ints."""
    return {int(p) for p in drain(raw_client, b, cid)}


def publish_and_kill(b, pub, topic, n, kill_after, retain=False, qos=1):
    """Pipeline up to n QoS 1 (or 2) publishes (payload = packet id), SIGKILL the broker once kill_after
    PUBACKs arrived (or when everything is sent). Returns the set of acknowledged packet ids."""
    return pipeline_and_kill(b, pub, lambda i: m.publish(f"{topic}/{i}" if retain else topic, str(i).encode(),
                                                         qos=qos, retain=retain, packet_id=i), n, kill_after)


def pipeline_and_kill(b, pub, packet, n, kill_after):
    """Pipeline packet(1) .. packet(n), SIGKILL the broker once kill_after of them are acknowledged
    (or when everything is sent). Returns the set of acknowledged packet ids."""
    chunk = 50
    pid = 1
    killed = False
    while pid <= n:
        data = b"".join(packet(i) for i in range(pid, min(n, pid + chunk - 1) + 1))
        pid += chunk
        if not pub.send(data):
            break
        if pub.n_acked() >= kill_after:
            b.kill()
            killed = True
            break
    if not killed:
        # Everything sent: wait for some acks, then kill while the rest is still being processed.
        deadline = time.monotonic() + 30
        while pub.n_acked() < kill_after and time.monotonic() < deadline:
            time.sleep(0.001)
        b.kill()
    pub.closed.wait(5)
    with pub.lock:
        return set(pub.acked)


FSYNC = ["always", "batch", "never"]


def kill_after(fsync):
    """PUBACKs to wait for before the kill: fsync = always commits (and syncs) every write on
    its own, so acknowledgements come slowly there."""
    return 10 if fsync == "always" else 3000


def n_publish(fsync):
    """Messages to pipeline. With fsync = always every write waits for its own fsync, and the
    store queue is one FIFO: a first message's ack on one worker can sit behind thousands of
    writes another worker queued meanwhile, so a long pipeline would leave no ack before the
    kill on a busy machine. A short one still kills mid-stream."""
    return 300 if fsync == "always" else 20000


@pytest.mark.parametrize("qos", [1, 2])
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("fsync", FSYNC)
def test_acked_qos12_to_offline_persistent_session_survives_kill9(start_broker, raw_client, fsync, workers, qos):
    b = start_broker(cfg(fsync, workers))
    cids = [f"dur-sub-{i}" for i in range(3)]  # several ids: with 2 workers, both owners
    for cid in cids:
        persistent_subscriber(raw_client, b, cid, "dur/q")
    pub = PipelinedPublisher(b.tcp_port, "dur-pub")
    acked = publish_and_kill(b, pub, "dur/q", n=n_publish(fsync), kill_after=kill_after(fsync), qos=qos)
    assert len(acked) >= kill_after(fsync) // 2, f"only {len(acked)} PUBACKs before the kill: the test did not test much"
    b.restart(sig=signal.SIGKILL)  # already dead: just start again on the same data dir
    for cid in cids:
        got = drained_ids(raw_client, b, cid)
        lost = sorted(acked - got)
        assert not lost, (f"fsync={fsync} workers={workers} qos={qos} {cid}: {len(lost)} of {len(acked)} acknowledged "
                          f"messages lost after kill -9 (first: {lost[:10]}; received {len(got)})")


@pytest.mark.parametrize("fsync", FSYNC)
def test_acked_retained_messages_survive_kill9(start_broker, raw_client, fsync):
    b = start_broker(cfg(fsync, 2))
    pub = PipelinedPublisher(b.tcp_port, "dur-rpub")
    acked = publish_and_kill(b, pub, "dur/r", n=n_publish(fsync), kill_after=kill_after(fsync), retain=True)
    assert len(acked) >= kill_after(fsync) // 2, f"only {len(acked)} PUBACKs before the kill"
    b.restart(sig=signal.SIGKILL)
    c = raw_client(b, version=4)
    c.connect("dur-rsub", clean=True)
    c.subscribe("dur/r/#", qos=1)
    got = set()
    while True:
        try:
            p = c.recv_publish(timeout=1.5)
        except m.NoPacket:
            break
        assert p.retain
        got.add(int(p.payload))
    lost = sorted(acked - got)
    assert not lost, (f"fsync={fsync}: {len(lost)} of {len(acked)} acknowledged retained messages lost "
                      f"after kill -9 (first: {lost[:10]})")


def send_all_acked(cl, packets, timeout=60):
    """Pipeline packets on cl and wait until every one is acknowledged."""
    assert cl.send(b"".join(packets))
    deadline = time.monotonic() + timeout
    while cl.n_acked() < len(packets) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert cl.n_acked() == len(packets), f"{cl.n_acked()} of {len(packets)} acknowledged"


def publish_each(b, prefix, ids):
    """One QoS 1 message to PREFIX/i for each i (payload i), all acknowledged."""
    pub = PipelinedPublisher(b.tcp_port, f"dur-pub-{prefix}")
    send_all_acked(pub, [m.publish(f"{prefix}/{i}", str(i).encode(), qos=1, packet_id=i) for i in sorted(ids)])


@pytest.mark.parametrize("fsync", FSYNC)
def test_acked_subscriptions_survive_kill9(start_broker, raw_client, fsync):
    """A SUBACK waits for the persistent session's subscription to be stored: every subscription
    the client saw acknowledged still delivers after kill -9 and a restart."""
    b = start_broker(cfg(fsync, 2))
    sub = PipelinedPublisher(b.tcp_port, "dur-subs", clean=False)
    acked = pipeline_and_kill(b, sub, lambda i: m.subscribe(i, f"dur/s/{i}", qos=1), n=n_publish(fsync),
                              kill_after=kill_after(fsync))
    assert len(acked) >= kill_after(fsync) // 2, f"only {len(acked)} SUBACKs before the kill"
    b.restart(sig=signal.SIGKILL)
    publish_each(b, "dur/s", acked)
    lost = sorted(acked - drained_ids(raw_client, b, "dur-subs"))
    assert not lost, (f"fsync={fsync}: {len(lost)} of {len(acked)} acknowledged subscriptions lost after kill -9 "
                      f"(first: dur/s/{lost[:10]})")


@pytest.mark.parametrize("fsync", FSYNC)
def test_acked_unsubscribes_survive_kill9(start_broker, raw_client, fsync):
    """Likewise an UNSUBACK: no subscription the client saw removed comes back after kill -9."""
    b = start_broker(cfg(fsync, 2))
    n = n_publish(fsync)
    sub = PipelinedPublisher(b.tcp_port, "dur-unsubs", clean=False)
    send_all_acked(sub, [m.subscribe(i, f"dur/u/{i}", qos=1) for i in range(1, n + 1)])
    with sub.lock:
        sub.acked.clear()
    acked = pipeline_and_kill(b, sub, lambda i: m.unsubscribe(i, [f"dur/u/{i}"]), n=n, kill_after=kill_after(fsync))
    assert len(acked) >= kill_after(fsync) // 2, f"only {len(acked)} UNSUBACKs before the kill"
    b.restart(sig=signal.SIGKILL)
    publish_each(b, "dur/u", acked)
    back = sorted(acked & drained_ids(raw_client, b, "dur-unsubs"))
    assert not back, (f"fsync={fsync}: {len(back)} of {len(acked)} acknowledged unsubscribes undone by kill -9 "
                      f"(first: dur/u/{back[:10]})")


# ---- back-pressure while acknowledgements wait for the store ----------------------------------

def test_pipelining_publisher_is_held_back_not_buffered_while_the_store_syncs(start_broker, raw_client):
    """A v3 publisher that pipelines QoS 1 messages faster than fsync = always can make them
    durable is not read further once 1024 acknowledgements wait (TCP back-pressure): the broker
    does not take in an unbounded backlog, keeps the connection, and goes on acknowledging."""
    b = start_broker("node.workers = 1\ndurable_storage { fsync = always }\nmqtt.max_mqueue_len = 100000\n")
    persistent_subscriber(raw_client, b, "bp-sub", "bp/t")
    pub = PipelinedPublisher(b.tcp_port, "bp-pub")
    size = len(m.publish("bp/t", b"x" * 16384, qos=1, packet_id=1))
    sent_bytes = 0
    pending = b""
    seq = 0
    worst = 0
    deadline = time.monotonic() + 4
    while time.monotonic() < deadline:
        if not pending:
            pending = b"".join(m.publish("bp/t", b"x" * 16384, qos=1, packet_id=(seq + i) % 65535 + 1)
                               for i in range(16))
            seq += 16
        try:
            n = pub.sock.send(pending, socket.MSG_DONTWAIT)  # the reader thread shares the socket
            pending = pending[n:]
            sent_bytes += n
        except BlockingIOError:
            select.select([], [pub.sock], [], 0.05)
        worst = max(worst, sent_bytes // size - pub.n_acked())
    # Messages the client got rid of but has no ack for: at most the 1024 the broker holds plus
    # what the loopback socket buffers take (a few MB, < 1000 messages of 16 KB). Without the
    # back-pressure the broker reads all it is sent while acks trickle out at the disk's pace.
    assert worst < 2024, f"{worst} messages taken from the publisher without an acknowledgement"
    deadline = time.monotonic() + 30  # fsync = always on a busy disk: acks come slowly
    while pub.n_acked() == 0 and not pub.closed.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pub.n_acked() > 0 and not pub.closed.is_set(), "the publisher was dropped instead of slowed down"
    assert "closing" not in b.log_text().split("bp-pub connected", 1)[1]
