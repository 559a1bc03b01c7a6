"""Listeners: the implicit EMQX defaults and the embedded default, deleting and disabling
listeners, several named listeners at once, max_connections, access_rules, mountpoint and
enable_authn (SPEC §1-2, EMQX reference §1)."""
import fcntl
import os
import socket
import ssl
import stat
import time

import pytest

from bw import mqtt_raw as m
from bw.broker import bulwark_bin
from bw.ports import port_accepts
from bw.tls import client_context, handshake

DEFAULT_PORTS_LOCK = "/tmp/bulwark-e2e-default-ports.lock"


# ---- helpers -------------------------------------------------------------------------------

def listening_addrs(port):
    """Local addresses with a listening TCP socket on port (from /proc/net/tcp{,6})."""
    found = []
    for fn, v6 in (("/proc/net/tcp", False), ("/proc/net/tcp6", True)):
        try:
            lines = open(fn).read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            addr, p = f[1].split(":")
            if f[3] != "0A" or int(p, 16) != port:
                continue
            raw = bytes.fromhex(addr)
            if v6:
                raw = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(socket.inet_ntop(socket.AF_INET6, raw))
            else:
                found.append(socket.inet_ntoa(raw[::-1]))
    return found


def port_in_use(port):
    """True if something listens on port on any address (a bind to 0.0.0.0 fails)."""
    if listening_addrs(port):
        return True
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        s.bind(("0.0.0.0", port))
        return False
    except OSError:
        return True
    finally:
        s.close()


@pytest.fixture
def default_ports():
    """Exclusive use of the well-known ports 1883 and 8883: a file lock shared by every xdist worker
    (and every other run of these tests on this machine). Skips when something else holds them."""
    with open(DEFAULT_PORTS_LOCK, "w") as lock:
        deadline = time.monotonic() + 90
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    pytest.fail("could not get the lock on ports 1883/8883 within 90 s")
                time.sleep(0.05)
        try:
            busy = [p for p in (1883, 8883) if port_in_use(p)]
            if busy:
                pytest.skip(f"port(s) {busy} already in use on this machine: the embedded/implicit default "
                            f"listeners cannot be tested here")
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def wait_port(port, timeout=10):
    deadline = time.monotonic() + timeout
    while not port_accepts(port):
        assert time.monotonic() < deadline, f"port {port} not accepting within {timeout}s"
        time.sleep(0.02)


def mqtt_roundtrip(sub_port, pub_port, topic, sub_tls=None, pub_tls=None, tag="rt"):
    """A subscriber on sub_port receives what a publisher on pub_port sends (v5)."""
    with m.RawClient(sub_port, version=5, tls=sub_tls) as sub, m.RawClient(pub_port, version=5, tls=pub_tls) as pub:
        sub.connect(f"{tag}-sub")
        sub.subscribe(topic, qos=1)
        pub.connect(f"{tag}-pub")
        pub.publish(topic, b"hello " + tag.encode(), qos=1)
        sub.recv_publish(topic=topic, payload=b"hello " + tag.encode())


def assert_refused(port, tls=None):
    kind, what = m.connect_outcome(port, version=5, tls=tls, client_id="refused-probe", timeout=5)
    assert kind in ("closed", "tls_error"), f"expected the connection to be refused, got {kind}: {what}"


# ---- defaults on 1883/8883 (serialised, skipped when the ports are taken) -----------------------

def test_embedded_default_listens_on_loopback_with_a_generated_dev_ca(default_ports, start_broker):
    b = start_broker("", base=False, argv=[bulwark_bin()], start=False, wait_ports=["tcp", "ssl"])
    b.ports.update(tcp=1883, ssl=8883)
    b.start()
    # loopback only
    assert listening_addrs(1883) == ["127.0.0.1"], listening_addrs(1883)
    assert listening_addrs(8883) == ["127.0.0.1"], listening_addrs(8883)
    certs = b.dir / "data" / "certs"
    ca = certs / "dev-ca.pem"
    assert ca.is_file(), sorted(os.listdir(certs)) if certs.exists() else "no data/certs"
    keys = [p for p in certs.iterdir() if "key" in p.name]
    assert keys, sorted(os.listdir(certs))
    for k in keys:
        assert stat.S_IMODE(k.stat().st_mode) == 0o600, f"{k} has mode {oct(k.stat().st_mode)}"
    log = b.run_log()
    assert "dev-ca.pem" in log, "the development CA's path must be printed"
    # plain MQTT on 1883
    mqtt_roundtrip(1883, 1883, "emb/tcp", tag="emb-tcp")
    # TLS on 8883, verifying the server with the generated CA, by name and by IP
    for name in ("localhost", "127.0.0.1"):
        ctx = client_context(ca=str(ca))
        with m.RawClient(8883, version=5, tls=ctx, server_hostname=name) as c:
            c.connect(f"emb-tls-{name}")
            c.ping()
    # a client certificate is not required by the embedded default
    mqtt_roundtrip(8883, 1883, "emb/x", sub_tls=client_context(ca=str(ca)), tag="emb-mixed")
    # the CA is generated on first start only
    before = ca.read_bytes()
    b.restart()
    assert ca.read_bytes() == before, "the development CA must survive a restart"
    with m.RawClient(8883, version=4, tls=client_context(ca=str(ca))) as c:
        c.connect("emb-after-restart")


def test_config_without_listeners_opens_the_implicit_defaults(default_ports, start_broker):
    # EMQX: listeners.tcp.default (0.0.0.0:1883) and listeners.ssl.default (0.0.0.0:8883, with the
    # development certificate when no certfile is given) exist unless deleted or disabled.
    b = start_broker("mqtt.max_inflight = 10\n", base=False, start=False, wait_ports=["tcp", "ssl"])
    b.ports.update(tcp=1883, ssl=8883)
    b.start()
    assert listening_addrs(1883) == ["0.0.0.0"], listening_addrs(1883)
    assert listening_addrs(8883) == ["0.0.0.0"], listening_addrs(8883)
    ca = b.dir / "data" / "certs" / "dev-ca.pem"
    assert ca.is_file()
    with m.RawClient(8883, version=5, tls=client_context(ca=str(ca))) as c:
        ack = c.connect("implicit-ssl")
        assert ack.props.get("receive_maximum") == 10
    mqtt_roundtrip(1883, 1883, "impl/tcp", tag="impl")


@pytest.mark.parametrize("ssl_line", [
    "listeners.ssl.default = marked_for_deletion",
    "listeners.ssl.default.enable = false",
    "listeners.ssl.default { enabled = false }",
])
def test_deleted_or_disabled_default_ssl_listener_does_not_open_8883(default_ports, start_broker, ssl_line):
    b = start_broker('listeners.tcp.default.bind = "127.0.0.1:{{port.tcp}}"\n' + ssl_line + "\n", base=False)
    b.wait_for_log(r"bulwark \S+ started")
    assert not port_accepts(8883), "8883 must not be open"
    assert "ssl:default" not in b.run_log()
    mqtt_roundtrip(b.tcp_port, b.tcp_port, "still/works", tag="nossl")


@pytest.mark.parametrize("tcp_line", [
    "listeners.tcp.default = marked_for_deletion",
    "listeners.tcp.default.enable = false",
])
def test_deleted_or_disabled_default_tcp_listener_does_not_open_1883(default_ports, start_broker, tcp_line, pki):
    # seed 004: "close the plaintext port"
    b = start_broker(tcp_line + """
listeners.ssl.default {
  bind = "127.0.0.1:{{port.ssl}}"
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}" }
}
""", base=False)
    b.wait_for_log(r"bulwark \S+ started")
    assert not port_accepts(1883), "1883 must not be open"
    tls = client_context(ca=pki.root_ca_cert)
    mqtt_roundtrip(b.ssl_port, b.ssl_port, "tls/only", sub_tls=tls, pub_tls=tls, tag="notcp")


# ---- disabling and deleting named listeners (free ports, no lock) -------------------------------

def test_disabled_and_deleted_listeners_do_not_listen(start_broker):
    b = start_broker("""
listeners.tcp.off {
  bind = "127.0.0.1:{{port.off}}"
  enable = false
}
listeners.tcp.gone {
  bind = "127.0.0.1:{{port.gone}}"
}
listeners.tcp.gone = marked_for_deletion
listeners.tcp.on {
  bind = "127.0.0.1:{{port.on}}"
}
""", wait_ports=["tcp", "on"])
    b.wait_for_log(r"bulwark \S+ started")
    assert not port_accepts(b.port("off"))
    assert not port_accepts(b.port("gone"))
    mqtt_roundtrip(b.port("on"), b.tcp_port, "named/on", tag="on")


def test_default_tcp_listener_enable_false_with_a_bind(start_broker):
    b = start_broker("""
listeners.tcp.default {
  bind = "127.0.0.1:{{port.x}}"
  enable = false
}
listeners.tcp.other.bind = "127.0.0.1:{{port.other}}"
listeners.ssl.default = marked_for_deletion
""", base=False, wait_ports=["other"])
    b.wait_for_log(r"bulwark \S+ started")
    assert not port_accepts(b.port("x"))
    mqtt_roundtrip(b.port("other"), b.port("other"), "x/y", tag="other")


# ---- bind forms and bind failures -------------------------------------------------------------

def test_bind_forms(start_broker):
    b = start_broker("""
listeners.tcp.bare { bind = {{port.bare}} }
listeners.tcp.v6   { bind = "[::1]:{{port.v6}}" }
listeners.tcp.dual { bind = "[::]:{{port.dual}}" }
""", wait_ports=["tcp", "bare", "dual"])
    assert listening_addrs(b.port("bare")) == ["0.0.0.0"], listening_addrs(b.port("bare"))
    with socket.create_connection(("::1", b.port("v6")), timeout=5):
        pass
    assert not port_accepts(b.port("v6")), "[::1] must not listen on IPv4"
    mqtt_roundtrip(b.port("dual"), b.port("bare"), "bind/forms", tag="dual")   # IPv4 on [::]


def test_port_taken_by_another_process_fails_the_start(start_broker):
    squatter = socket.socket()
    squatter.bind(("127.0.0.1", 0))
    squatter.listen(1)
    port = squatter.getsockname()[1]
    try:
        b = start_broker('listeners.tcp.taken { bind = "127.0.0.1:%d" }\n' % port, start=False, expect_exit=None)
        status, log = b.run_to_exit(timeout=10)
        assert status != 0, log
        err = [ln for ln in log.splitlines() if " error: " in ln]
        assert len(err) == 1 and "tcp:taken" in err[0] and str(port) in err[0], log
    finally:
        squatter.close()


def test_two_listeners_on_one_port_fail_the_start(start_broker):
    b = start_broker("""
listeners.tcp.a { bind = "127.0.0.1:{{port.same}}" }
listeners.tcp.b { bind = "127.0.0.1:{{port.same}}" }
""", start=False, expect_exit=None)
    status, log = b.run_to_exit(timeout=10)
    assert status != 0, log
    err = [ln for ln in log.splitlines() if " error: " in ln]
    assert len(err) == 1 and str(b.port("same")) in err[0], log


# ---- several listeners ------------------------------------------------------------------------

def test_several_named_tcp_and_ssl_listeners(start_broker, pki):
    b = start_broker("""
listeners.tcp.second { bind = "127.0.0.1:{{port.second}}" }
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "{{pki.server_key}}"
  }
}
listeners.ssl.mtls {
  bind = "127.0.0.1:{{port.mtls}}"
  ssl_options {
    cacertfile = "{{pki.ca_bundle}}"
    certfile   = "{{pki.server_ec_chain}}"
    keyfile    = "{{pki.server_ec_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
  }
}
""", ssl=True)
    for lid in ("tcp:default", "tcp:second", "ssl:default", "ssl:mtls"):
        b.wait_for_log(r"listener %s on 127\.0\.0\.1:\d+" % lid)
    one_way = client_context(ca=pki.root_ca_cert)
    mutual = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    ports = {"tcp": (b.tcp_port, None), "second": (b.port("second"), None),
             "ssl": (b.ssl_port, one_way), "mtls": (b.port("mtls"), mutual)}
    subs = {}
    for name, (port, tls) in ports.items():
        c = m.RawClient(port, version=5, tls=tls)
        c.connect(f"multi-{name}")
        c.subscribe("multi/#", qos=1)
        subs[name] = c
    try:
        for name, (port, tls) in ports.items():
            with m.RawClient(port, version=4, tls=tls) as pub:
                pub.connect(f"multi-pub-{name}")
                pub.publish(f"multi/{name}", name.encode(), qos=1)
            for s in subs.values():
                s.recv_publish(topic=f"multi/{name}", payload=name.encode())
        # the mtls listener still insists on a certificate while the others do not
        assert_refused(b.port("mtls"), tls=one_way)
        # each listener has its own certificate
        with handshake(b.port("mtls"), mutual) as s1, handshake(b.ssl_port, one_way) as s2:
            assert s1.getpeercert(binary_form=True) != s2.getpeercert(binary_form=True)
    finally:
        for s in subs.values():
            s.close()


def test_ssl_listener_without_certfile_uses_the_generated_dev_certificate(start_broker):
    b = start_broker('listeners.ssl.dev { bind = "127.0.0.1:{{port.dev}}" }\n')
    ca = b.data_dir / "certs" / "dev-ca.pem"
    assert ca.is_file()
    for name in ("localhost", "127.0.0.1"):
        with m.RawClient(b.port("dev"), version=5, tls=client_context(ca=str(ca)), server_hostname=name) as c:
            c.connect("dev-" + name)
    # a client that does not trust the development CA refuses the server
    with pytest.raises(ssl.SSLError):
        handshake(b.port("dev"), client_context()).close()


# ---- max_connections ------------------------------------------------------------------------

def test_max_connections_refuses_the_next_connection(start_broker):
    # On a named listener the harness's readiness probe never touches (it only probes port.tcp).
    b = start_broker("""
listeners.tcp.lim {
  bind = "127.0.0.1:{{port.lim}}"
  max_connections = 2
}
""", wait_ports=["tcp"])
    b.wait_for_log(r"bulwark \S+ started")
    port = b.port("lim")
    c1 = m.RawClient(port, version=5)
    c2 = m.RawClient(port, version=5)
    try:
        c1.connect("lim-1")
        c2.connect("lim-2")
        mark = b.log_mark()
        assert_refused(port)
        b.wait_for_log(r"max_connections", since=mark)
        # the others are unaffected
        c1.ping()
        c2.ping()
        mqtt_roundtrip(b.tcp_port, b.tcp_port, "unlimited/x", tag="unlim")
        # a slot frees up when a client leaves
        c1.disconnect()
        deadline = time.monotonic() + 5
        while True:
            kind, what = m.connect_outcome(port, version=5, client_id="lim-3", timeout=2)
            if kind == "connack":
                assert what.rc == 0
                break
            assert time.monotonic() < deadline, f"no free slot after a client left: {kind} {what}"
            time.sleep(0.05)
        c2.ping()
    finally:
        c1.close()
        c2.close()


def test_max_connections_infinity_is_accepted(start_broker):
    b = start_broker('listeners.tcp.inf { bind = "127.0.0.1:{{port.inf}}", max_connections = infinity }\n')
    clients = [m.RawClient(b.port("inf"), version=4) for _ in range(5)]
    try:
        for i, c in enumerate(clients):
            c.connect(f"inf-{i}")
    finally:
        for c in clients:
            c.close()


# ---- access_rules ---------------------------------------------------------------------------

def test_access_rules(start_broker):
    b = start_broker("""
listeners.tcp.deny_host  { bind = "127.0.0.1:{{port.deny_host}}",  access_rules = ["deny 127.0.0.1"] }
listeners.tcp.allow_cidr { bind = "127.0.0.1:{{port.allow_cidr}}", access_rules = ["allow 127.0.0.1/32", "deny all"] }
listeners.tcp.other_net  { bind = "127.0.0.1:{{port.other_net}}",  access_rules = ["allow 10.0.0.0/8", "deny all"] }
listeners.tcp.no_match   { bind = "127.0.0.1:{{port.no_match}}",   access_rules = ["deny 10.0.0.0/8"] }
listeners.tcp.order      { bind = "127.0.0.1:{{port.order}}",      access_rules = ["deny 127.0.0.0/8", "allow all"] }
""")
    mark = b.log_mark()
    assert_refused(b.port("deny_host"))
    b.wait_for_log(r"tcp:deny_host.*access_rules|access_rules.*tcp:deny_host", since=mark)
    assert_refused(b.port("other_net"))
    assert_refused(b.port("order"))        # first match wins
    mqtt_roundtrip(b.port("allow_cidr"), b.port("allow_cidr"), "acl/a", tag="allow")
    mqtt_roundtrip(b.port("no_match"), b.port("no_match"), "acl/b", tag="nomatch")


# ---- mountpoint -----------------------------------------------------------------------------

def test_mountpoint_prefixes_topics_and_subscriptions(start_broker, raw_client):
    b = start_broker("""
listeners.tcp.tenant {
  bind = "127.0.0.1:{{port.tenant}}"
  mountpoint = "tenant/${clientid}/"
}
""")
    tp = b.port("tenant")
    watcher = raw_client(b, version=5)           # unmounted listener
    watcher.connect("watcher")
    watcher.subscribe("tenant/#", qos=1)
    dev = raw_client(tp, version=5)
    dev.connect("dev1")
    dev.subscribe([("cmd/#", 1), ("data/#", 1)])
    # a publish from the mounted listener is prefixed for everyone else ...
    dev.publish("data/temp", b"21.5", qos=1)
    watcher.recv_publish(topic="tenant/dev1/data/temp", payload=b"21.5")
    # ... and the mounted client sees it without the prefix
    dev.recv_publish(topic="data/temp", payload=b"21.5")
    # a publish to the prefixed topic reaches the mounted client, prefix stripped
    cmd = raw_client(b, version=4)
    cmd.connect("commander")
    cmd.publish("tenant/dev1/cmd/reboot", b"now", qos=1)
    dev.recv_publish(topic="cmd/reboot", payload=b"now")
    watcher.recv_publish(topic="tenant/dev1/cmd/reboot", payload=b"now")
    # another tenant's topic does not reach dev1; an unprefixed one neither
    cmd.publish("tenant/dev2/cmd/reboot", b"other", qos=1)
    cmd.publish("cmd/reboot", b"bare", qos=1)
    watcher.recv_publish(topic="tenant/dev2/cmd/reboot", payload=b"other")
    dev.expect_nothing(0.3)
    # the will of a mounted client is mounted too
    dev2 = raw_client(tp, version=5)
    dev2.connect("dev2", will={"topic": "status", "payload": b"gone", "qos": 1})
    dev2.close()                                   # no DISCONNECT: the will is published
    watcher.recv_publish(topic="tenant/dev2/status", payload=b"gone")


def test_mountpoint_with_username_placeholder(start_broker, raw_client):
    b = start_broker("""
listeners.tcp.u {
  bind = "127.0.0.1:{{port.u}}"
  mountpoint = "users/${username}/"
}
""")
    watcher = raw_client(b, version=4)
    watcher.connect("w")
    watcher.subscribe("users/#", qos=0)
    c = raw_client(b.port("u"), version=4)
    c.connect("uc", username="alice", password=b"pw")
    c.publish("hello", b"hi", qos=1)
    watcher.recv_publish(topic="users/alice/hello", payload=b"hi")


# ---- enable_authn ---------------------------------------------------------------------------

def test_enable_authn_false_is_accepted(start_broker, raw_client, check_config):
    cfg = 'listeners.tcp.certs { bind = "127.0.0.1:{{port.certs}}", enable_authn = false }\n'
    status, out = check_config('listeners.tcp.default.bind = "127.0.0.1:1883"\n' + cfg)
    assert status == 0, out
    b = start_broker(cfg)
    c = raw_client(b.port("certs"), version=5)
    assert c.connect("noauth-1").rc == 0
    c2 = raw_client(b.port("certs"), version=4)
    assert c2.connect("noauth-2", username="u", password=b"whatever").rc == 0
    mqtt_roundtrip(b.port("certs"), b.tcp_port, "authn/off", tag="authn")


def test_enable_authn_quick_deny_anonymous(start_broker, raw_client):
    b = start_broker('listeners.tcp.q { bind = "127.0.0.1:{{port.q}}", enable_authn = quick_deny_anonymous }\n')
    v5 = raw_client(b.port("q"), version=5)
    v5.connect("anon5", expect_rc=0x87)
    v5.expect_closed()
    v3 = raw_client(b.port("q"), version=4)
    v3.connect("anon3", expect_rc=5)
    v3.expect_closed()
    ok = raw_client(b.port("q"), version=5)
    assert ok.connect("named", username="bob", password=b"pw").rc == 0
