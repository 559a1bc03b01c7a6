"""Will messages (MQTT 3.1.1 and 5.0): when they are published and when not, their QoS, retain
flag and v5 properties, the v5 Will Delay Interval, and wills on session takeover.

Every test watches the will topic with a separate v5 subscriber and asserts what it receives."""
import re
import threading
import time

import pytest

from bw import mqtt_raw as m


# ---- helpers -------------------------------------------------------------------------------------

def watcher(raw_client, b, topic="will/#", qos=2, cid="watcher"):
    w = raw_client(b, version=5)
    w.connect(cid)
    w.subscribe(topic, qos=qos)
    return w


def will_client(raw_client, b, cid, version=4, topic="will/t", payload=b"gone", qos=1, retain=False,
                will_props=None, props=None, clean=True, keepalive=60, expect_rc=0):
    c = raw_client(b, version=version)
    will = {"topic": topic, "payload": payload, "qos": qos, "retain": retain}
    if will_props is not None:
        will["props"] = will_props
    c.connect(cid, will=will, props=props, clean=clean, keepalive=keepalive, expect_rc=expect_rc)
    return c


def wait_disconnected(b, cid, mark):
    b.wait_for_log(r"client %s (disconnected|closed)" % re.escape(cid), since=mark)


# ---- when the will is published ------------------------------------------------------------------

@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_published_when_socket_closes_without_disconnect(broker, raw_client, version):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, f"abrupt-{version}", version, payload=b"abrupt")
    c.close()
    w.recv_publish(topic="will/t", payload=b"abrupt")


@pytest.mark.parametrize("version", [4, 5])
def test_will_published_on_keepalive_expiry(broker, raw_client, version):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, f"ka-{version}", version, payload=b"silent", keepalive=1)
    t0 = time.monotonic()
    w.expect_nothing(1.2)  # 1 s x 1.5 has not passed yet
    w.recv_publish(topic="will/t", payload=b"silent", timeout=4.5)
    assert time.monotonic() - t0 >= 1.2
    c.close()


@pytest.mark.parametrize("version", [4, 5])
def test_will_published_when_server_closes_on_protocol_error(broker, raw_client, version):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, f"perr-{version}", version, payload=b"broken")
    c.send(m.connect(f"perr-{version}", version=version))  # a second CONNECT is a protocol error
    c.expect_closed(reason=m.RC["protocol_error"] if version == 5 else None)
    w.recv_publish(topic="will/t", payload=b"broken")


@pytest.mark.parametrize("version", [3, 4, 5])
def test_will_not_published_on_normal_disconnect(broker, raw_client, version):
    w = watcher(raw_client, broker)
    cid = f"normal-{version}"
    c = will_client(raw_client, broker, cid, version)
    mark = broker.log_mark()
    c.disconnect(rc=0 if version == 5 else None)
    wait_disconnected(broker, cid, mark)
    w.expect_nothing(0.5)


def test_will_published_on_v5_disconnect_with_will_message(broker, raw_client):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "dww", 5, payload=b"asked-for")
    c.disconnect(rc=m.RC["disconnect_with_will"])
    w.recv_publish(topic="will/t", payload=b"asked-for")


def test_will_published_on_v5_disconnect_with_error_reason(broker, raw_client):
    """Any DISCONNECT reason other than 0x00 ... the will is sent unless the reason is 0x00 (MQTT-3.14.4-3)."""
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "dwerr", 5, payload=b"client-error")
    c.disconnect(rc=m.RC["unspecified_error"])
    w.recv_publish(topic="will/t", payload=b"client-error")


# ---- what the will carries -----------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_will_retain_flag_makes_it_retained(broker, raw_client, version):
    w = watcher(raw_client, broker, topic="will/status")
    c = will_client(raw_client, broker, f"ret-{version}", version, topic="will/status", payload=b"offline",
                    retain=True)
    c.close()
    w.recv_publish(topic="will/status", payload=b"offline")
    # A subscriber arriving after the will was published gets it as a retained message.
    late = raw_client(broker, version=version)
    late.connect(f"late-{version}")
    late.subscribe("will/status", qos=1)
    late.recv_publish(topic="will/status", payload=b"offline", retain=True)


def test_will_without_retain_is_not_retained(broker, raw_client):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "noret", 4, payload=b"not-kept")
    c.close()
    w.recv_publish(topic="will/t", payload=b"not-kept")
    late = raw_client(broker, version=5)
    late.connect("late-noret")
    late.subscribe("will/#", qos=1)
    late.expect_nothing(0.3)


@pytest.mark.parametrize("will_qos", [0, 1, 2])
@pytest.mark.parametrize("version", [4, 5])
def test_will_qos(broker, raw_client, version, will_qos):
    w = watcher(raw_client, broker, qos=2)
    w1 = watcher(raw_client, broker, qos=1, cid="watcher-q1")
    c = will_client(raw_client, broker, f"q{will_qos}-{version}", version, qos=will_qos, payload=b"q")
    c.close()
    w.recv_publish(topic="will/t", qos=will_qos)
    w1.recv_publish(topic="will/t", qos=min(will_qos, 1))


def test_v5_will_properties_passed_through(broker, raw_client):
    w = watcher(raw_client, broker)
    props = {"user_property": [("k1", "v1"), ("k2", "v2")], "content_type": "application/json",
             "message_expiry_interval": 120, "payload_format_indicator": 1, "response_topic": "reply/here",
             "correlation_data": b"\x00\x01corr"}
    c = will_client(raw_client, broker, "wprops", 5, payload=b'{"state":"gone"}', will_props=props)
    c.close()
    p = w.recv_publish(topic="will/t", payload=b'{"state":"gone"}')
    assert p.props.get("user_property") == [("k1", "v1"), ("k2", "v2")], p
    assert p.props.get("content_type") == "application/json", p
    assert p.props.get("payload_format_indicator") == 1, p
    assert p.props.get("response_topic") == "reply/here", p
    assert p.props.get("correlation_data") == b"\x00\x01corr", p
    assert 115 <= p.props.get("message_expiry_interval", 0) <= 120, p
    assert "will_delay_interval" not in p.props, "Will Delay Interval is not a PUBLISH property"


def test_v5_will_message_expiry_counts_down_for_retained_will(broker, raw_client):
    c = will_client(raw_client, broker, "wexp", 5, topic="will/exp", payload=b"short-lived", retain=True,
                    will_props={"message_expiry_interval": 1})
    w = watcher(raw_client, broker, topic="will/exp")
    c.close()
    w.recv_publish(topic="will/exp", payload=b"short-lived")
    # The retained will expires with its Message Expiry Interval.
    deadline = time.monotonic() + 6
    while True:
        late = raw_client(broker, version=5)
        late.connect(f"late-wexp-{int(time.monotonic() * 1000)}")
        late.subscribe("will/exp", qos=1)
        try:
            late.recv_publish(timeout=0.3)
        except m.NoPacket:
            break
        late.disconnect()
        assert time.monotonic() < deadline, "retained will with Message Expiry 1 s still delivered after 6 s"


# ---- v5 Will Delay Interval ----------------------------------------------------------------------

def test_v5_will_delay_publishes_after_the_delay(broker, raw_client):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "delay", 5, payload=b"late", will_props={"will_delay_interval": 2},
                    props={"session_expiry_interval": 60}, clean=False)
    t0 = time.monotonic()
    c.close()
    w.expect_nothing(1.5)
    w.recv_publish(topic="will/t", payload=b"late", timeout=4)
    took = time.monotonic() - t0
    assert 1.8 <= took <= 5, f"will published {took:.1f}s after the close, delay was 2 s"


def test_v5_will_message_expiry_counts_from_publication_not_connect(broker, raw_client):
    # MQTT-3.1.3.2-4: the will's Message Expiry Interval is its lifetime once published, so a
    # will delayed past its expiry interval is still sent, carrying the full interval.
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "delay-exp", 5, payload=b"delayed-expiring",
                    will_props={"will_delay_interval": 2, "message_expiry_interval": 1},
                    props={"session_expiry_interval": 60}, clean=False)
    c.close()
    p = w.recv_publish(topic="will/t", payload=b"delayed-expiring", timeout=6)
    assert p.props.get("message_expiry_interval") == 1, p


def test_v5_will_delay_cancelled_by_reconnect(broker, raw_client):
    w = watcher(raw_client, broker)
    cid = "delay-back"
    c = will_client(raw_client, broker, cid, 5, payload=b"never", will_props={"will_delay_interval": 2},
                    props={"session_expiry_interval": 60}, clean=False)
    mark = broker.log_mark()
    c.close()
    wait_disconnected(broker, cid, mark)
    back = raw_client(broker, version=5)
    back.connect(cid, clean=False, props={"session_expiry_interval": 60})
    assert back.connack.session_present is True
    w.expect_nothing(3.0)
    back.disconnect()


def test_v5_will_published_when_session_ends_before_will_delay(broker, raw_client):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "sess-ends", 5, payload=b"session-over",
                    will_props={"will_delay_interval": 30}, props={"session_expiry_interval": 1}, clean=False)
    t0 = time.monotonic()
    c.close()
    w.recv_publish(topic="will/t", payload=b"session-over", timeout=5)
    took = time.monotonic() - t0
    assert 0.7 <= took < 5, f"will published {took:.1f}s after close; session expiry was 1 s, will delay 30 s"


def test_v5_will_with_delay_and_no_session_expiry_published_at_close(broker, raw_client):
    """Session Expiry 0: the session ends at the close, so the delayed will goes out at once."""
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "no-sess", 5, payload=b"now", will_props={"will_delay_interval": 30})
    c.close()
    w.recv_publish(topic="will/t", payload=b"now", timeout=2)


def test_v5_disconnect_with_will_and_delay_waits_for_the_delay(broker, raw_client):
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "dww-delay", 5, payload=b"later", will_props={"will_delay_interval": 1},
                    props={"session_expiry_interval": 60}, clean=False)
    c.disconnect(rc=m.RC["disconnect_with_will"])
    w.expect_nothing(0.6)
    w.recv_publish(topic="will/t", payload=b"later", timeout=4)


# ---- takeover ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_will_published_on_takeover_when_will_delay_is_zero(broker, raw_client, version):
    w = watcher(raw_client, broker)
    old = will_client(raw_client, broker, f"tk-{version}", version, payload=b"taken", clean=False,
                      props={"session_expiry_interval": 60} if version == 5 else None)
    new = raw_client(broker, version=version)
    new.connect(f"tk-{version}", clean=False, props={"session_expiry_interval": 60} if version == 5 else None)
    assert new.connack.session_present is True
    old.expect_closed(reason=m.RC["session_taken_over"] if version == 5 else None)
    w.recv_publish(topic="will/t", payload=b"taken")
    w.expect_nothing(0.3)  # exactly once


def test_will_not_published_on_takeover_resuming_within_will_delay(broker, raw_client):
    w = watcher(raw_client, broker)
    old = will_client(raw_client, broker, "tk-delay", 5, payload=b"resumed", clean=False,
                      props={"session_expiry_interval": 60}, will_props={"will_delay_interval": 2})
    new = raw_client(broker, version=5)
    new.connect("tk-delay", clean=False, props={"session_expiry_interval": 60})
    assert new.connack.session_present is True
    old.expect_closed(reason=m.RC["session_taken_over"])
    w.expect_nothing(3.0)
    assert new.is_open(0.1)
    new.disconnect()


def test_will_published_on_takeover_with_clean_start(broker, raw_client):
    """EMQX: clean_start = true discards the old session, and its will is published."""
    w = watcher(raw_client, broker)
    old = will_client(raw_client, broker, "tk-clean", 5, payload=b"discarded", clean=False,
                      props={"session_expiry_interval": 60}, will_props={"will_delay_interval": 30})
    new = raw_client(broker, version=5)
    new.connect("tk-clean", clean=True)
    assert new.connack.session_present is False
    old.expect_closed(reason=m.RC["session_taken_over"])
    w.recv_publish(topic="will/t", payload=b"discarded", timeout=3)


def test_new_connection_will_applies_after_takeover(broker, raw_client):
    """After a takeover the session carries the new connection's will, not the old one's."""
    w = watcher(raw_client, broker)
    old = will_client(raw_client, broker, "tk-swap", 5, payload=b"old-will", clean=False,
                      props={"session_expiry_interval": 60}, will_props={"will_delay_interval": 5})
    new = will_client(raw_client, broker, "tk-swap", 5, payload=b"new-will", clean=False,
                      props={"session_expiry_interval": 60})
    old.expect_closed(reason=m.RC["session_taken_over"])
    new.close()
    w.recv_publish(topic="will/t", payload=b"new-will")
    w.expect_nothing(0.5)


# ---- invalid will --------------------------------------------------------------------------------

@pytest.mark.parametrize("topic", ["will/+", "will/#", "#"])
def test_will_topic_with_wildcard_refused_v5(broker, raw_client, topic):
    c = raw_client(broker, version=5)
    c.connect("badwill", will={"topic": topic, "payload": b"x"}, expect_rc=m.RC["topic_name_invalid"])
    c.expect_closed()


def test_will_topic_with_wildcard_refused_v311(broker, raw_client):
    c = raw_client(broker, version=4)
    try:
        c.send(m.connect("badwill3", version=4, will={"topic": "will/#", "payload": b"x"}))
        p = c.recv_packet(3)
    except m.ConnectionClosed:
        return  # closing without CONNACK is allowed in 3.1.1
    assert p.type == m.CONNACK and p.rc != 0, f"a wildcard will topic must be refused: {p!r}"
    c.expect_closed()


@pytest.mark.parametrize("version", [4, 5])
def test_will_published_when_kicked(broker, raw_client, version):
    """EMQX reference §7: a kick sends DISCONNECT 0x98 (v5) and the will is published."""
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, f"kicked-{version}", version, payload=b"kicked")
    code, out = broker.ctl("clients", "kick", f"kicked-{version}")
    assert code == 0, out
    c.expect_closed(reason=m.RC["administrative_action"] if version == 5 else None)
    w.recv_publish(topic="will/t", payload=b"kicked")


def test_graceful_shutdown_sends_v5_server_shutting_down(broker, raw_client):
    """A graceful stop sends v5 clients DISCONNECT 0x8B (server shutting down) before closing."""
    c = will_client(raw_client, broker, "shutdown", 5, payload=b"x")
    broker.stop()
    c.expect_closed(reason=m.RC["server_shutting_down"])


@pytest.mark.parametrize("cause", ["protocol_error", "keepalive"])
def test_will_published_promptly_when_the_server_closes(broker, raw_client, cause):
    """Once the server has sent DISCONNECT and closed the connection, the will follows at once;
    it does not wait for the (possibly dead) peer to close its end."""
    w = watcher(raw_client, broker)
    c = will_client(raw_client, broker, "prompt-" + cause, 5, payload=b"prompt", keepalive=1)
    if cause == "protocol_error":
        c.send(m.connect("again", version=5))
        c.expect_closed(reason=m.RC["protocol_error"])
    else:
        c.expect_closed(timeout=4, reason=m.RC["keep_alive_timeout"])
    # the client keeps its socket open, as a device that lost power would
    t0 = time.monotonic()
    w.recv_publish(topic="will/t", payload=b"prompt", timeout=5)
    took = time.monotonic() - t0
    assert took < 1.0, f"will published {took:.1f}s after the server closed the connection"


@pytest.mark.timeout(90)
def test_will_published_for_every_abrupt_close_under_concurrency(start_broker, raw_client):
    """Bursts of clients with wills connect and drop their sockets at once, spread over 4 workers:
    every close is noticed and every will is published promptly, without waiting for unrelated
    traffic to wake the broker up."""
    b = start_broker("node.workers = 4\n")
    w = watcher(raw_client, b, topic="mass/#", qos=1)
    rounds, threads, per = 25, 4, 8
    for r in range(rounds):
        errors = []

        def run(t):
            try:
                for i in range(per):
                    c = m.RawClient(b.tcp_port, version=5)
                    c.connect(f"mass-{r}-{t}-{i}", will={"topic": f"mass/{r}/{t}/{i}", "payload": b"x", "qos": 1})
                    c.close()
            except Exception as e:  # reported below
                errors.append(repr(e))

        ths = [threading.Thread(target=run, args=(t,)) for t in range(threads)]
        for t in ths:
            t.start()
        for t in ths:
            t.join()
        assert not errors, errors
        want = {f"mass/{r}/{t}/{i}" for t in range(threads) for i in range(per)}
        got = set()
        deadline = time.monotonic() + 4
        while got != want and time.monotonic() < deadline:
            try:
                got.add(w.recv_publish(timeout=max(0.0, deadline - time.monotonic())).topic)
            except m.NoPacket:
                break
        missing = sorted(want - got)
        if missing:
            _, out = b.ctl("clients", "list")
            stuck = [ln.split("\t")[0] for ln in out.splitlines()
                     if ln.startswith("mass-") and "\tconnected\t" in ln]
            pytest.fail(f"round {r}: {len(missing)} wills not published within 4 s, e.g. {missing[:5]}; "
                        f"sessions still shown connected: {stuck[:10]}")
