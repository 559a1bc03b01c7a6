"""A full disk while the broker runs (docs/DURABILITY.md, "When a store write fails").

No root needed: the test lowers the broker's RLIMIT_FSIZE (prlimit on the running process), so
every write that would extend a file past the limit fails with EFBIG, as writes to a full disk
fail with ENOSPC; SQLite reports a write error either way. The broker must ignore SIGXFSZ itself
(its default action would kill it): the harness starts it with the default disposition. The
limit sits above the broker's log file, so its log lines still get through, and below the offset
the store's WAL file reaches as QoS 1 messages to an offline persistent session come in.
Raising the limit again is the disk getting space back. A limit below the log file's size
checks that no thread dies of SIGXFSZ when a log line cannot be written.

While writes fail:
  * the failure is logged once, not once per message;
  * QoS 0 and QoS 1 between non-persistent clients keep flowing, acknowledged normally;
  * a QoS 1/2 PUBLISH whose store writes fail is not acknowledged as stored: MQTT 5 gets
    PUBACK/PUBREC 0x80 (the connection stays), MQTT 3.1.1 is disconnected without an ack;
  * a QoS 2 flow refused that way ends: the packet id can carry a new message at once;
  * the broker does not crash.
Once writes succeed again: logged, acks are normal, and a restart delivers every message that
was acknowledged with success."""
import itertools
import re
import resource
import signal
import time

import pytest

from bw import mqtt_raw as m
from bw.broker import BrokerError

CONFIG = ("node.workers = 2\n"
          "mqtt.max_mqueue_len = 100000\n")
PERSISTENT = [f"full-sub-{i}" for i in range(4)]   # several ids: with 2 workers, both owners
BIG = 64 * 1024


def set_fsize(pid, soft):
    _, hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (soft, hard))


def store_errors(text):
    return [ln for ln in text.splitlines() if " error: store: " in ln]


@pytest.mark.timeout(120)
def test_full_disk_refuses_durable_acks_keeps_serving_and_recovers(start_broker, raw_client):
    b = start_broker(CONFIG)
    for cid in PERSISTENT:
        c = raw_client(b, version=5)
        c.connect(cid, clean=False, props={"session_expiry_interval": 3600})
        c.subscribe("full/p/#", qos=1)
        c.disconnect()
    np_sub = raw_client(b, version=5)
    np_sub.connect("full-np-sub")
    np_sub.subscribe("full/np/#", qos=1)
    pub = raw_client(b, version=5)
    pub.connect("full-pub")
    ok = []   # payloads acknowledged with success: must survive a restart
    pub.publish("full/p/x", b"before", qos=1, expect_rc=0)
    ok.append(b"before")

    # The disk fills up: writes past the limit fail. The log file stays below it.
    limit = b.log_path.stat().st_size + 512 * 1024
    wal = b.data_dir / "bulwark.db-wal"
    assert not wal.exists() or wal.stat().st_size < 4 << 20
    mark = b.log_mark()
    set_fsize(b.pid, limit)
    refused = None
    for i in range(100):
        payload = b"%d:" % i + b"x" * BIG
        ack = pub.publish("full/p/x", payload, qos=1)
        if ack.rc == 0x80:
            refused = i
            break
        assert ack.rc == 0, ack
        ok.append(payload)
    assert refused is not None, f"no store write failed after 100 x {BIG} bytes (limit {limit})"
    b.wait_for_log(r" error: store: \S*bulwark\.db: .*failed: .*operations not persisted", since=mark)

    # More refused messages (MQTT 5): 0x80, the connection stays.
    for i in range(20):
        pub.publish("full/p/x", b"refused %d" % i + b"y" * BIG, qos=1, expect_rc=0x80)
    pub.publish("full/p/r", b"retained" + b"z" * BIG, qos=1, retain=True, expect_rc=0x80)
    pub.ping()

    # QoS 2 (MQTT 5): PUBREC 0x80 ends the flow; the same packet id then carries a new message.
    rec = pub.publish("full/p/x", b"qos2" + b"w" * BIG, qos=2, packet_id=777)
    assert rec.type == m.PUBREC and rec.rc == 0x80, rec
    pub.publish("full/np/after-qos2", b"new message, same id", qos=2, packet_id=777, expect_rc=0)
    got = np_sub.recv_publish(topic="full/np/after-qos2")
    assert got.payload == b"new message, same id"

    # Non-persistent traffic keeps flowing, acknowledged normally.
    for i in range(20):
        pub.publish("full/np/q0", b"q0 %d" % i, qos=0)
        pub.publish("full/np/q1", b"q1 %d" % i, qos=1, expect_rc=0)
    got = [p.payload for p in np_sub.recv_publishes(40)]
    assert sorted(got) == sorted([b"q0 %d" % i for i in range(20)] + [b"q1 %d" % i for i in range(20)])

    # MQTT 3.1.1 cannot say "refused" in a PUBACK/PUBREC: the publisher is disconnected.
    for qos in (1, 2):
        v3 = raw_client(b, version=4)
        v3.connect(f"full-v3-pub-{qos}")
        v3.send(m.publish("full/p/x", b"v3" + b"v" * BIG, qos=qos, packet_id=5))
        v3.expect_closed(timeout=10)
        assert all(p.type not in (m.PUBACK, m.PUBREC) for p in v3.received), v3.received

    # One error line for all of that.
    assert b.running
    errors = store_errors(b.log_text(mark))
    assert len(errors) == 1, "\n".join(errors)

    # The log file is on the full disk too: log lines from any thread (a worker logs this
    # connection) are lost, but the broker must not die of SIGXFSZ.
    set_fsize(b.pid, b.log_path.stat().st_size)
    extra = raw_client(b, version=5)
    extra.connect("full-while-log-full")
    extra.ping()
    extra.disconnect()
    pub.publish("full/np/q1", b"still here", qos=1, expect_rc=0)
    np_sub.recv_publish(topic="full/np/q1", payload=b"still here")
    assert b.running

    # Space again: writes succeed and acknowledgements are normal at once; the recovery is
    # logged (once) when writes keep succeeding (2 s after the last failure).
    mark2 = b.log_mark()
    set_fsize(b.pid, resource.RLIM_INFINITY)
    deadline = time.monotonic() + 15
    for i in itertools.count():
        payload = b"after %d" % i
        pub.publish("full/p/x", payload, qos=1, expect_rc=0)
        ok.append(payload)
        try:
            b.wait_for_log(r" info: store: \S*bulwark\.db: writes succeed again", since=mark2, timeout=0.3)
            break
        except BrokerError:
            assert time.monotonic() < deadline, "recovery never logged"
    assert store_errors(b.log_text(mark2)) == []
    assert len(re.findall("writes succeed again", b.log_text(mark))) == 1
    pub.disconnect()
    np_sub.disconnect()

    # Every message acknowledged with success is still owed to the persistent sessions after a
    # restart (the refused ones were never promised).
    b.restart(sig=signal.SIGTERM)
    for cid in PERSISTENT:
        c = raw_client(b, version=5)
        c.connect(cid, clean=False, props={"session_expiry_interval": 3600})
        assert c.connack.session_present
        got = set()
        deadline = time.monotonic() + 15
        while not set(ok) <= got:
            try:
                p = c.recv_publish(timeout=max(0.1, deadline - time.monotonic()))
            except m.NoPacket:
                break
            got.add(bytes(p.payload))
        missing = [x[:10] for x in ok if x not in got]
        assert not missing, f"{cid}: acknowledged messages lost: {missing}"
        c.disconnect()
