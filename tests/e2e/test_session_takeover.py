"""Client ID conflicts: the newer connection takes over (SPEC §3, EMQX reference §7).

The old connection gets DISCONNECT 0x8E (v5) or is closed (v3); with clean_start = 0 the session,
its subscriptions, in-flight and queued messages move to the new connection; with clean_start = 1
the old session is discarded. Checked across listeners (tcp and ssl), with several worker threads,
and under rapid repeated takeovers (exactly one live connection remains, per `ctl clients list`)."""
import re
import select
import time

import pytest

from bw import mqtt_raw as m
from bw.tls import client_context

EXPIRY = 300

SSL_CONFIG = """
node.workers = {workers}
listeners.ssl.default {{
  ssl_options {{
    certfile = "{{{{pki.server_chain}}}}"
    keyfile  = "{{{{pki.server_key}}}}"
  }}
}}
"""


# ---- helpers -------------------------------------------------------------------------------------

def connect(raw_client, b, cid, version=5, clean=False, expiry=EXPIRY, tls=None, **kw):
    c = raw_client(b, version=version, tls=tls)
    props = dict(kw.pop("props", None) or {})
    if version == 5 and not clean and expiry:
        props["session_expiry_interval"] = expiry
    c.connect(cid, clean=clean, props=props or None, **kw)
    return c


def assert_taken_over(old, version):
    """The old connection gets DISCONNECT 0x8E (v5) or is just closed (v3)."""
    if version == 5:
        old.expect_closed(reason=m.RC["session_taken_over"])
    else:
        got = old.expect_closed()
        assert got is None, f"a v3 client must not receive a DISCONNECT packet: {got!r}"


def client_lines(b, cid):
    """Lines of `bulwark ctl clients list` for this client ID (first field, tab separated)."""
    code, out = b.ctl("clients", "list")
    assert code == 0, out
    return [ln for ln in out.splitlines() if ln.split("\t", 1)[0] == cid]


def ssl_ctx(pki):
    return client_context(ca=pki.root_ca_cert)


# ---- basics --------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 4, 5])
def test_newer_connection_takes_over(broker, raw_client, version):
    cid = f"dup-{version}"
    old = connect(raw_client, broker, cid, version, clean=True)
    new = connect(raw_client, broker, cid, version, clean=True)
    assert new.connack.rc == 0
    assert_taken_over(old, version)
    # the new connection works
    new.subscribe("tk/#", qos=1)
    p = raw_client(broker, version=5)
    p.connect("tk-pub")
    p.publish("tk/1", b"to-new", qos=1)
    new.recv_publish(topic="tk/1", payload=b"to-new")
    assert new.ping()


@pytest.mark.parametrize("version", [4, 5])
def test_takeover_with_clean_start_0_moves_session_and_messages(start_broker, raw_client, version):
    # one message in flight at a time, so that the rest waits in the queue
    b = start_broker("mqtt.max_inflight = 1\n")
    cid = f"move-{version}"
    old = connect(raw_client, b, cid, version)
    old.subscribe("mv/#", qos=2)
    pub = raw_client(b, version=5)
    pub.connect("mv-pub")
    for i in range(1, 5):
        pub.publish(f"mv/{i}", b"m%d" % i, qos=1 if i % 2 else 2)
    first = old.recv_publish(ack=False, payload=b"m1")
    old.expect_nothing(0.2)  # window full: m2..m4 are queued in the session

    new = connect(raw_client, b, cid, version)
    assert new.connack.session_present is True, "clean_start=0 takeover must resume the session"
    assert_taken_over(old, version)
    again = new.recv_publish(payload=b"m1", dup=True, packet_id=first.packet_id)
    assert again.qos == 1
    rest = new.recv_publishes(3)
    assert [(p.payload, p.qos) for p in rest] == [(b"m2", 2), (b"m3", 1), (b"m4", 2)]
    # subscriptions moved too
    pub.publish("mv/5", b"m5", qos=1)
    new.recv_publish(topic="mv/5", payload=b"m5")
    new.expect_nothing(0.2)


@pytest.mark.parametrize("version", [4, 5])
def test_takeover_with_clean_start_1_discards_old_session(broker, raw_client, version):
    cid = f"discard-{version}"
    old = connect(raw_client, broker, cid, version)
    old.subscribe("dc/#", qos=1)
    pub = raw_client(broker, version=5)
    pub.connect("dc-pub")
    pub.publish("dc/1", b"unacked", qos=1)
    old.recv_publish(ack=False)

    new = connect(raw_client, broker, cid, version, clean=True)
    assert new.connack.session_present is False
    assert_taken_over(old, version)
    new.expect_nothing(0.5)  # neither the in-flight message nor anything else
    ack = pub.publish("dc/2", b"after", qos=1)
    assert ack.rc == m.RC["no_matching_subscribers"], f"the old session's subscription survived: {ack!r}"
    new.expect_nothing(0.2)


def test_takeover_from_v3_to_v5_and_back(broker, raw_client):
    """The session belongs to the client ID, whatever protocol version each connection speaks."""
    cid = "mixed"
    a = connect(raw_client, broker, cid, 4)
    a.subscribe("mx/#", qos=1)
    b5 = connect(raw_client, broker, cid, 5)
    assert b5.connack.session_present is True
    assert_taken_over(a, 4)
    c4 = connect(raw_client, broker, cid, 4)
    assert c4.connack.session_present is True
    assert_taken_over(b5, 5)
    pub = raw_client(broker, version=5)
    pub.connect("mx-pub")
    pub.publish("mx/1", b"x", qos=1)
    c4.recv_publish(topic="mx/1", payload=b"x")


# ---- across listeners and workers ----------------------------------------------------------------

@pytest.mark.parametrize("order", ["tcp-then-ssl", "ssl-then-tcp"])
def test_takeover_across_tcp_and_ssl_listeners(start_broker, raw_client, pki, order):
    b = start_broker(SSL_CONFIG.format(workers=4), ssl=True)
    ctx = ssl_ctx(pki)
    first_tls, second_tls = (None, ctx) if order == "tcp-then-ssl" else (ctx, None)
    pub = raw_client(b, version=5)
    pub.connect("x-pub")
    for i in range(6):  # several client IDs land on several workers
        cid = f"xl-{order}-{i}"
        old = connect(raw_client, b, cid, 5, tls=first_tls)
        old.subscribe(f"xl/{i}", qos=1)
        pub.publish(f"xl/{i}", b"queued-%d" % i, qos=1)
        first = old.recv_publish(ack=False)
        new = connect(raw_client, b, cid, 5, tls=second_tls)
        assert new.connack.session_present is True
        assert_taken_over(old, 5)
        new.recv_publish(topic=f"xl/{i}", payload=b"queued-%d" % i, dup=True, packet_id=first.packet_id)
        lines = client_lines(b, cid)
        assert len(lines) == 1 and "\tconnected\t" in lines[0], lines
        want = "ssl:default" if second_tls else "tcp:default"
        assert want in lines[0].split("\t"), f"session should be on the new listener {want}: {lines[0]!r}"


@pytest.mark.parametrize("version", [4, 5])
def test_takeover_with_four_workers(start_broker, raw_client, version):
    b = start_broker("node.workers = 4\n")
    pub = raw_client(b, version=5)
    pub.connect("w4-pub")
    olds = {}
    for i in range(12):
        cid = f"w4-{version}-{i}"
        olds[cid] = connect(raw_client, b, cid, version)
        olds[cid].subscribe(f"w4/{i}", qos=1)
    news = {}
    for cid in olds:
        news[cid] = connect(raw_client, b, cid, version)
        assert news[cid].connack.session_present is True, cid
    for cid, old in olds.items():
        assert_taken_over(old, version)
    for i, cid in enumerate(news):
        pub.publish(f"w4/{i}", cid.encode(), qos=1)
    for i, (cid, new) in enumerate(news.items()):
        new.recv_publish(topic=f"w4/{i}", payload=cid.encode())
    code, out = b.ctl("clients", "list")
    connected = [ln.split("\t")[0] for ln in out.splitlines() if "\tconnected\t" in ln]
    assert sorted(c for c in connected if c.startswith(f"w4-{version}-")) == sorted(news), out


# ---- rapid repeated takeovers --------------------------------------------------------------------

def _open_sockets(clients, timeout):
    """Wait until at most one of the clients is still open or timeout passes; returns the open ones.
    A client counts as closed once the server closed its socket (EOF or reset)."""
    deadline = time.monotonic() + timeout
    open_ = list(clients)
    while len(open_) > 1 and time.monotonic() < deadline:
        r, _, _ = select.select([c.sock for c in open_], [], [], max(0.0, deadline - time.monotonic()))
        for c in [c for c in open_ if c.sock in r]:
            try:
                while True:
                    c.recv_packet(0.01)
            except m.ConnectionClosed:
                open_.remove(c)
            except m.NoPacket:
                pass
    return open_


@pytest.mark.parametrize("workers,version,clean", [(1, 5, False), (4, 5, False), (4, 4, False), (4, 5, True)])
def test_rapid_takeovers_leave_exactly_one_live_connection(start_broker, raw_client, workers, version, clean):
    b = start_broker(f"node.workers = {workers}\n")
    cid = "rapid"
    first = connect(raw_client, b, cid, version)
    first.subscribe("rapid/#", qos=1)
    # 30 connections with the same client ID, CONNECTs sent back to back without waiting
    clients = []
    for _ in range(30):
        c = raw_client(b, version=version)
        props = {"session_expiry_interval": EXPIRY} if version == 5 and not clean else None
        c.send(m.connect(cid, version=version, clean=clean, props=props))
        clients.append(c)
    for c in clients:
        p = c.recv_packet()
        assert p.type == m.CONNACK and p.rc == 0, p
    survivors = _open_sockets([first] + clients, timeout=8)
    assert len(survivors) == 1, f"{len(survivors)} connections for one client ID are still open"
    live = survivors[0]
    assert live is not first
    assert live.is_open(0.3)
    lines = client_lines(b, cid)
    assert len(lines) == 1, lines
    assert lines[0].split("\t")[1] == "connected", lines
    code, out = b.ctl("status")
    assert re.search(r"\b1 clients\b", out), out
    # exactly one session and one subscription (or none after clean starts): one copy per message
    pub = raw_client(b, version=5)
    pub.connect("rapid-pub")
    if clean:
        live.subscribe("rapid/#", qos=1)
    pub.publish("rapid/1", b"once", qos=1)
    p = live.wait_for(m.PUBLISH, topic="rapid/1", payload=b"once")
    live.send(m.puback(p.packet_id, version=version))
    live.expect_nothing(0.3)


def test_takeover_while_old_connection_is_publishing(broker, raw_client):
    """The old connection keeps sending while it is taken over: nothing breaks, the broker and
    the new connection carry on."""
    cid = "busy"
    sub = raw_client(broker, version=5)
    sub.connect("busy-sub")
    sub.subscribe("busy/new", qos=1)
    old = connect(raw_client, broker, cid, 5)
    burst = b"".join(m.publish("busy/old", b"x" * 100, qos=1, packet_id=i, version=5) for i in range(1, 200))
    old.send(burst)
    new = connect(raw_client, broker, cid, 5)
    assert new.connack.session_present is True
    old.send(burst, ignore_errors=True)
    # the old connection ends with 0x8E after whatever acks it was owed
    deadline = time.monotonic() + 5
    saw = None
    while True:
        try:
            p = old.recv_packet(max(0.0, deadline - time.monotonic()))
        except m.ConnectionClosed:
            break
        if p.type == m.DISCONNECT:
            saw = p
        else:
            assert p.type == m.PUBACK and saw is None, f"unexpected after takeover: {p!r}"
    assert saw is not None and saw.rc == m.RC["session_taken_over"], saw
    new.publish("busy/new", b"new", qos=1)
    sub.wait_for(m.PUBLISH, topic="busy/new", payload=b"new", timeout=10)
    assert new.ping()


def test_takeover_moves_inbound_qos2_awaiting_pubrel(broker, raw_client):
    """The new connection can release a QoS 2 message the old one published but never released;
    the message is delivered once."""
    sub = raw_client(broker, version=5)
    sub.connect("rel-sub")
    sub.subscribe("rel/#", qos=2)
    cid = "rel-pub"
    old = connect(raw_client, broker, cid, 5)
    old.send(m.publish("rel/x", b"once", qos=2, packet_id=9, version=5))
    old.expect(m.PUBREC, packet_id=9)
    sub.recv_publish(topic="rel/x", payload=b"once", qos=2)
    new = connect(raw_client, broker, cid, 5)
    assert new.connack.session_present is True
    assert_taken_over(old, 5)
    new.send(m.publish("rel/x", b"once", qos=2, packet_id=9, dup=True, version=5))
    new.expect(m.PUBREC, packet_id=9)
    new.send(m.pubrel(9, version=5))
    new.expect(m.PUBCOMP, packet_id=9, rc=0)
    sub.expect_nothing(0.5)
