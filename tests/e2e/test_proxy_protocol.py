"""PROXY protocol v1/v2 on listeners with proxy_protocol = true (SPEC §2, §4 "TLS terminated by a
load balancer"): raw headers from the trusted 127.0.0.1, untrusted peers, the v2 SSL TLV as the
client's certificate identity, and a real HAProxy terminating mutual TLS in front of Bulwark."""
import re
import shutil
import socket
import ssl
import struct
import subprocess
import time

import pytest

from bw import mqtt_raw as m
from bw import ports, procs
from bw.clients import PahoClient, Tls
from bw.tls import client_context

SIG = b"\r\n\r\n\x00\r\nQUIT\n"
PP2_CLIENT_SSL, PP2_CLIENT_CERT_CONN, PP2_CLIENT_CERT_SESS = 0x01, 0x02, 0x04

PROXY_TCP = """
    listeners.tcp.default {{
      proxy_protocol = true
      proxy_protocol_timeout = {timeout}
      {extra}
    }}
"""


def proxy_tcp(extra="", timeout="1s", top=""):
    return top + "\n" + PROXY_TCP.format(timeout=timeout, extra=extra)


# ---- header builders ------------------------------------------------------------------------------

def v1(src, sport, dst=None, dport=1883, proto=None):
    if proto is None:
        proto = "TCP6" if ":" in src else "TCP4"
    if dst is None:
        dst = "::1" if ":" in src else "127.0.0.1"
    return f"PROXY {proto} {src} {dst} {sport} {dport}\r\n".encode()


def tlv(t, value):
    return bytes([t]) + struct.pack(">H", len(value)) + value


def ssl_tlv(client=PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, verify=0, cn=None, version=b"TLSv1.3"):
    v = bytes([client]) + struct.pack(">I", verify)
    if version:
        v += tlv(0x21, version)
    if cn is not None:
        v += tlv(0x22, cn.encode() if isinstance(cn, str) else cn)
    return tlv(0x20, v)


def v2(src="203.0.113.7", sport=41234, dst="127.0.0.1", dport=1883, tlvs=b"", local=False):
    if local:
        return SIG + bytes([0x20, 0x00]) + struct.pack(">H", len(tlvs)) + tlvs
    if ":" in src:
        fam = 0x21
        addrs = socket.inet_pton(socket.AF_INET6, src) + socket.inet_pton(socket.AF_INET6, dst)
    else:
        fam = 0x11
        addrs = socket.inet_pton(socket.AF_INET, src) + socket.inet_pton(socket.AF_INET, dst)
    body = addrs + struct.pack(">HH", sport, dport) + tlvs
    return SIG + bytes([0x21, fam]) + struct.pack(">H", len(body)) + body


def connected_line(b, client_id, timeout=10):
    """The address in "client ID connected from ADDR on ..."."""
    mt = b.wait_for_log(rf"client {re.escape(client_id)} connected from (\S+) on ", timeout=timeout)
    return mt.group(1)


def clients(b):
    """ctl clients list as {client_id: {'peer', 'listener', 'proto', 'username'}} (connected clients)."""
    status, out = b.ctl("clients", "list")
    assert status == 0, out
    rows = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) >= 6 and f[1] == "connected":
            rows[f[0]] = {"peer": f[2], "listener": f[3], "proto": f[4], "username": f[5]}
    return rows


def proxied(raw_client, b, header, version=5):
    """A raw client on b's tcp port that has sent header (nothing else yet)."""
    c = raw_client(b, version=version)
    c.send(header)
    return c


# ---- trusted peer: headers accepted --------------------------------------------------------------

@pytest.mark.parametrize("src,sport,want", [
    ("203.0.113.7", 41234, "203.0.113.7:41234"),
    ("2001:db8::7", 5000, "[2001:db8::7]:5000"),
])
def test_v1_header_sets_client_address(start_broker, raw_client, src, sport, want):
    b = start_broker(proxy_tcp())
    c = proxied(raw_client, b, v1(src, sport, dport=b.tcp_port))
    c.connect("pp-v1")
    assert connected_line(b, "pp-v1") == want
    assert clients(b)["pp-v1"]["peer"] == want
    c.ping()
    c.disconnect()


@pytest.mark.parametrize("src,sport,want", [
    ("198.51.100.20", 65535, "198.51.100.20:65535"),
    ("2001:db8::20", 1, "[2001:db8::20]:1"),
])
def test_v2_header_sets_client_address(start_broker, raw_client, src, sport, want):
    b = start_broker(proxy_tcp())
    c = proxied(raw_client, b, v2(src, sport, dst="::1" if ":" in src else "127.0.0.1", dport=b.tcp_port))
    c.connect("pp-v2")
    assert connected_line(b, "pp-v2") == want
    assert clients(b)["pp-v2"]["peer"] == want
    c.disconnect()


def test_v2_local_health_check_uses_proxy_address(start_broker, raw_client):
    b = start_broker(proxy_tcp())
    c = proxied(raw_client, b, v2(local=True, tlvs=tlv(0x04, b"pad")))
    c.connect("pp-local")
    assert connected_line(b, "pp-local") == f"127.0.0.1:{c.sock.getsockname()[1]}"
    c.disconnect()


def test_v1_unknown_uses_proxy_address(start_broker, raw_client):
    b = start_broker(proxy_tcp())
    c = proxied(raw_client, b, b"PROXY UNKNOWN\r\n")
    c.connect("pp-unknown")
    assert connected_line(b, "pp-unknown") == f"127.0.0.1:{c.sock.getsockname()[1]}"


def test_header_and_connect_in_one_write(start_broker, raw_client):
    """The broker reads exactly the header: the CONNECT right behind it is not lost."""
    b = start_broker(proxy_tcp())
    for i, hdr in enumerate([v1("192.0.2.1", 1000, dport=b.tcp_port),
                             v2("192.0.2.2", 2000, dport=b.tcp_port, tlvs=ssl_tlv(cn="x"))]):
        c = raw_client(b, version=5)
        c.send(hdr + m.connect(f"pipelined-{i}", version=m.V5) + m.pingreq())
        c.expect(m.CONNACK, rc=0)
        c.expect(m.PINGRESP)
        c.disconnect()
    assert connected_line(b, "pipelined-0") == "192.0.2.1:1000"
    assert connected_line(b, "pipelined-1") == "192.0.2.2:2000"


@pytest.mark.parametrize("kind", ["v1", "v2", "v2-long"])
def test_header_split_across_writes(start_broker, raw_client, kind):
    b = start_broker(proxy_tcp(timeout="10s"))
    if kind == "v1":
        hdr, chunk = v1("192.0.2.9", 4321, dport=b.tcp_port), 1
    elif kind == "v2":
        hdr, chunk = v2("192.0.2.9", 4321, tlvs=tlv(0x02, b"mqtt.example.com") + ssl_tlv(cn="dev")), 1
    else:
        # longer than what the broker peeks: read in exact pieces
        hdr, chunk = v2("192.0.2.9", 4321, tlvs=tlv(0x04, b"p" * 1500) + ssl_tlv(cn="dev")), 97
    c = raw_client(b, version=5)
    c.send_slowly(hdr, delay=0.005, chunk=chunk)
    c.expect_nothing(0.2)   # header complete, nothing sent back before CONNECT
    c.send_slowly(m.connect("split", version=m.V5), delay=0.005, chunk=3)
    c.expect(m.CONNACK, rc=0)
    assert connected_line(b, "split") == "192.0.2.9:4321"


def test_missing_header_from_trusted_peer_times_out(start_broker, raw_client):
    b = start_broker(proxy_tcp(timeout="1s"))
    c = raw_client(b, version=5)
    port = c.sock.getsockname()[1]
    t0 = time.monotonic()
    c.expect_closed(timeout=5)
    elapsed = time.monotonic() - t0
    assert 0.7 <= elapsed <= 3.5, elapsed
    b.wait_for_log(rf"no complete PROXY header from 127\.0\.0\.1:{port} within proxy_protocol_timeout")


def test_partial_header_times_out(start_broker, raw_client):
    b = start_broker(proxy_tcp(timeout="1s"))
    c = raw_client(b, version=5)
    c.send(v2("192.0.2.1", 1)[:20])
    c.expect_closed(timeout=5)
    b.wait_for_log(r"no complete PROXY header from 127\.0\.0\.1:\d+ within proxy_protocol_timeout")


def test_plain_mqtt_from_trusted_peer_is_refused(start_broker, raw_client):
    b = start_broker(proxy_tcp(timeout="5s"))
    c = raw_client(b, version=5)
    port = c.sock.getsockname()[1]
    c.send(m.connect("no-header", version=m.V5))
    c.expect_closed(timeout=3)  # at once, not after the timeout
    b.wait_for_log(rf"connection from 127\.0\.0\.1:{port} .*did not start with a PROXY header")


@pytest.mark.parametrize("garbage", [
    b"PROXY GARBAGE\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
    b"PROXY TCP4 01.2.3.4 5.6.7.8 1 1\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 1\n",
    b"PROXY UNKNOWN " + b"f" * 100 + b"\r\n",
    SIG + b"\x11\x11\x00\x0c" + bytes(12),                      # version 1
    SIG + b"\x23\x11\x00\x0c" + bytes(12),                      # command 3
    SIG + b"\x21\x11\x00\x08" + bytes(8),                       # address block overruns
    SIG + b"\x21\x11\x00\x10" + bytes(12) + b"\x20\x00\x09\x07",  # TLV overruns
    SIG + b"\x21\x11\x00\x0d" + bytes(12) + b"\x00",            # one stray byte
], ids=["v1-garbage", "v1-port", "v1-leading-zero", "v1-lf", "v1-too-long", "v2-version", "v2-command",
        "v2-short-block", "v2-tlv-overrun", "v2-stray"])
def test_invalid_header_is_refused_with_a_log_line(start_broker, raw_client, garbage):
    b = start_broker(proxy_tcp(timeout="5s"))
    c = raw_client(b, version=5)
    port = c.sock.getsockname()[1]
    c.send(garbage + m.connect("bad", version=m.V5), ignore_errors=True)
    c.expect_closed(timeout=3)
    b.wait_for_log(rf"invalid PROXY header from 127\.0\.0\.1:{port}: ")
    # the broker carries on
    ok = proxied(raw_client, b, v1("192.0.2.50", 50))
    ok.connect("after-bad")


def test_access_rules_see_the_real_client(start_broker, raw_client):
    b = start_broker(proxy_tcp(extra='access_rules = ["deny 203.0.113.0/24", "allow all"]'))
    c = proxied(raw_client, b, v2("203.0.113.66", 6666))
    c.send(m.connect("denied", version=m.V5), ignore_errors=True)
    c.expect_closed(timeout=3)
    b.wait_for_log(r"connection from 203\.0\.113\.66:6666 \(via proxy 127\.0\.0\.1:\d+\) refused by access_rules")
    ok = proxied(raw_client, b, v2("198.51.100.66", 6666))
    ok.connect("allowed")
    assert connected_line(b, "allowed") == "198.51.100.66:6666"


# ---- untrusted peers -------------------------------------------------------------------------------

def test_untrusted_peer_header_refused_plain_client_ok(start_broker, raw_client, mqtt_client):
    b = start_broker(proxy_tcp(extra='proxy_protocol_trusted = ["10.0.0.0/8"]'))
    for hdr in (v1("203.0.113.7", 1), v2("203.0.113.7", 1)):
        c = raw_client(b, version=5)
        port = c.sock.getsockname()[1]
        c.send(hdr + m.connect("spoof", version=m.V5), ignore_errors=True)
        c.expect_closed(timeout=3)
        b.wait_for_log(rf"PROXY header from untrusted address 127\.0\.0\.1:{port} refused")
    # direct clients without a header are served as usual
    raw = raw_client(b, version=5)
    raw.connect("direct-raw")
    assert connected_line(b, "direct-raw") == f"127.0.0.1:{raw.sock.getsockname()[1]}"
    p = mqtt_client(b, client_id="direct-paho", version=5)
    p.subscribe("t/#", qos=1)
    raw.publish("t/x", b"hello", qos=1)
    p.wait_messages(1)
    assert "spoof" not in clients(b)


# ---- the v2 SSL TLV as the certificate identity -----------------------------------------------------

def test_verified_cn_becomes_the_username(start_broker, raw_client):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn"))
    hdr = v2("192.0.2.77", 7777, tlvs=tlv(0x02, b"broker.example.com") + ssl_tlv(cn="device-001"))
    c = proxied(raw_client, b, hdr)
    c.connect("cn-user", username="claimed-by-client")
    row = clients(b)["cn-user"]
    assert row["username"] == "device-001"
    assert row["peer"] == "192.0.2.77:7777"
    c.disconnect()


def test_verified_cn_from_session_resumption(start_broker, raw_client):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn"))
    c = proxied(raw_client, b, v2(tlvs=ssl_tlv(client=PP2_CLIENT_SSL | PP2_CLIENT_CERT_SESS, cn="device-002")))
    c.connect("cn-sess", username="x")
    assert clients(b)["cn-sess"]["username"] == "device-002"


@pytest.mark.parametrize("client,verify", [
    (PP2_CLIENT_SSL | PP2_CLIENT_CERT_CONN, 20),   # presented, verification failed
    (PP2_CLIENT_SSL, 0),                           # no certificate (verify is 0 then)
    (PP2_CLIENT_CERT_CONN, 0),                     # certificate flag without TLS
], ids=["unverified", "no-cert", "no-ssl-flag"])
def test_unverified_certificate_gives_no_identity(start_broker, raw_client, client, verify):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn"))
    c = proxied(raw_client, b, v2(tlvs=ssl_tlv(client=client, verify=verify, cn="device-001")))
    c.connect("unverified", username="own-name")
    assert clients(b)["unverified"]["username"] == "own-name"


def test_unverified_certificate_refused_on_certificate_only_listener(start_broker, raw_client):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn", extra="enable_authn = false"))
    c = proxied(raw_client, b, v2(tlvs=ssl_tlv(verify=10, cn="device-001")))
    c.connect("unverified-only", username="device-001", expect_rc=0x87)
    # a LOCAL header (health check) carries no identity either, whatever TLVs follow it
    c2 = proxied(raw_client, b, v2(local=True, tlvs=ssl_tlv(cn="device-001")))
    c2.connect("local-only", username="device-001", expect_rc=0x87)
    # v1 never carries one
    c3 = proxied(raw_client, b, v1("192.0.2.1", 1))
    c3.connect("v1-only", username="device-001", expect_rc=0x87)
    # the verified one is accepted
    ok = proxied(raw_client, b, v2(tlvs=ssl_tlv(cn="device-001")))
    ok.connect("verified-only")
    assert clients(b)["verified-only"]["username"] == "device-001"


# ---- TLS listener behind a TCP load balancer (TLS passthrough + PROXY header) ----------------------

class _HeaderFirst(ssl.SSLContext):
    """An SSLContext that writes a PROXY header on the raw socket before the TLS handshake."""
    header = b""

    def wrap_socket(self, sock, *a, **kw):
        sock.sendall(self.header)
        return super().wrap_socket(sock, *a, **kw)


def _header_ctx(pki, header, cert=None, key=None):
    ctx = _HeaderFirst(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(cafile=str(pki.root_ca_cert))
    if cert:
        ctx.load_cert_chain(str(cert), str(key))
    ctx.header = header
    return ctx


SSL_PROXY = """
    mqtt.peer_cert_as_username = cn
    listeners.ssl.default {
      proxy_protocol = true
      proxy_protocol_timeout = 2s
      ssl_options {
        cacertfile = "{{pki.ca_bundle}}"
        certfile   = "{{pki.server_chain}}"
        keyfile    = "{{pki.server_key}}"
        verify = verify_peer
        fail_if_no_peer_cert = true
      }
    }
"""


def test_ssl_listener_reads_header_then_tls(start_broker, raw_client, pki):
    """TLS passthrough: the header is read without eating the ClientHello; the identity is the
    certificate Bulwark verified itself, never a CN a header claims on a TLS listener."""
    b = start_broker(SSL_PROXY, ssl=True, tcp=False)
    hdr = v2("192.0.2.123", 12345, tlvs=ssl_tlv(cn="someone-else"))
    c = raw_client(b, version=5, tls=_header_ctx(pki, hdr, pki.client_cert, pki.client_key))
    c.connect("tls-pp", username="x")
    assert connected_line(b, "tls-pp") == "192.0.2.123:12345"
    assert clients(b)["tls-pp"]["username"] == "device-001"
    c.disconnect()
    c1 = raw_client(b, version=5, tls=_header_ctx(pki, v1("192.0.2.124", 1), pki.client_cert, pki.client_key))
    c1.connect("tls-pp1")
    assert connected_line(b, "tls-pp1") == "192.0.2.124:1"


def test_ssl_listener_untrusted_direct_tls_client(start_broker, raw_client, pki):
    """From an untrusted peer, a TLS client without a header is a direct connection: peeking for a
    header does not disturb its handshake; a header from it is refused."""
    b = start_broker(SSL_PROXY.replace("proxy_protocol = true",
                                       'proxy_protocol = true\n      proxy_protocol_trusted = ["10.0.0.0/8"]'),
                     ssl=True, tcp=False)
    c = raw_client(b, version=5, tls=client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key))
    c.connect("tls-direct", username="x")
    assert connected_line(b, "tls-direct") == f"127.0.0.1:{c.sock.getsockname()[1]}"
    assert clients(b)["tls-direct"]["username"] == "device-001"
    kind, _ = m.connect_outcome(b.ssl_port, version=5, client_id="tls-spoof",
                                tls=_header_ctx(pki, v1("192.0.2.1", 1), pki.client_cert, pki.client_key))
    assert kind in ("tls_error", "closed"), kind
    b.wait_for_log(r"PROXY header from untrusted address 127\.0\.0\.1:\d+ refused")


# ---- HAProxy in front, terminating mutual TLS ----------------------------------------------------------

HAPROXY_CFG = """
global
    maxconn 200
defaults
    mode tcp
    timeout connect 5s
    timeout client 60s
    timeout server 60s
frontend mqtts
    bind 127.0.0.1:{fport} ssl crt {pem} ca-file {ca} verify required
    default_backend bulwark
frontend mqtts_optional
    bind 127.0.0.1:{oport} ssl crt {pem} ca-file {ca} verify optional ca-ignore-err all crt-ignore-err all
    default_backend bulwark
backend bulwark
    server b 127.0.0.1:{bport} send-proxy-v2-ssl-cn
"""


@pytest.fixture
def haproxy(tmp_path, pki):
    """haproxy(broker_port) -> (verify-required port, verify-optional port); stopped at teardown."""
    exe = shutil.which("haproxy", path="/usr/sbin:/usr/bin:/sbin:/bin")
    if not exe:
        pytest.fail("haproxy is not installed (scripts/setup.sh installs it)")
    started = []

    def start(bport):
        pem = tmp_path / "haproxy-server.pem"
        pem.write_text(open(pki.server_chain).read() + open(pki.server_key).read())
        pem.chmod(0o600)
        fport, oport = ports.free_port(), ports.free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(HAPROXY_CFG.format(fport=fport, oport=oport, pem=pem, ca=pki.ca_bundle, bport=bport))
        log = open(tmp_path / "haproxy.log", "wb")
        p = procs.spawn([exe, "-f", cfg, "-db"], stdout=log, stderr=subprocess.STDOUT)
        started.append((p, log))
        deadline = time.monotonic() + 10
        while not (ports.port_accepts(fport) and ports.port_accepts(oport)):
            if p.poll() is not None:
                pytest.fail(f"haproxy exited ({p.returncode}):\n" + (tmp_path / "haproxy.log").read_text())
            if time.monotonic() > deadline:
                pytest.fail("haproxy did not start:\n" + (tmp_path / "haproxy.log").read_text())
            time.sleep(0.05)
        return fport, oport

    yield start
    for p, log in started:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        procs.kill(p)
        log.close()


@pytest.mark.timeout(180)
def test_haproxy_terminates_mtls_and_passes_the_cn(start_broker, raw_client, pki, haproxy):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn\nlog.console.level = debug", timeout="3s"))
    fport, _ = haproxy(b.tcp_port)
    # the real client address (not HAProxy's backend connection) reaches Bulwark's log
    c = raw_client(fport, version=5, tls=client_context(ca=pki.root_ca_cert, cert=pki.client_cert,
                                                          key=pki.client_key))
    client_port = c.sock.getsockname()[1]
    c.connect("raw-via-haproxy", username="not-me")
    assert connected_line(b, "raw-via-haproxy") == f"127.0.0.1:{client_port}"
    # what HAProxy's header said, as the connection layer understood it
    b.wait_for_log(rf"PROXY v2 header from 127\.0\.0\.1:\d+: client 127\.0\.0\.1:{client_port}, "
                   r"verified certificate cn device-001$")
    # paho through HAProxy: the CN of the certificate HAProxy verified is the username
    tls = Tls(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    p = PahoClient(fport, client_id="via-haproxy", version=5, tls=tls, username="not-me")
    try:
        p.connect()
        p.subscribe("dev/#", qos=1)
        c.publish("dev/1", b"through haproxy", qos=1)
        msgs = p.wait_messages(1)
        assert msgs[0].payload == b"through haproxy"
        rows = clients(b)
        assert rows["via-haproxy"]["username"] == "device-001"
        assert rows["raw-via-haproxy"]["username"] == "device-001"
    finally:
        p.close()


@pytest.mark.timeout(180)
def test_haproxy_refuses_wrong_ca_and_unverified_gives_no_identity(start_broker, raw_client, pki, haproxy):
    b = start_broker(proxy_tcp(top="mqtt.peer_cert_as_username = cn\nlog.console.level = debug", timeout="3s"))
    fport, oport = haproxy(b.tcp_port)
    wrong = client_context(ca=pki.root_ca_cert, cert=pki.client_wrongca_cert, key=pki.client_wrongca_key)
    kind, detail = m.connect_outcome(fport, version=5, tls=wrong, client_id="wrong-ca")
    assert kind in ("tls_error", "closed"), (kind, detail)
    assert not re.search(r"client wrong-ca connected", b.log_text())
    # HAProxy with "verify optional" lets it through but reports verify != 0: no identity
    c = raw_client(oport, version=5, tls=wrong)
    c.connect("wrong-ca-optional", username="own-name")
    b.wait_for_log(rf"PROXY v2 header from 127\.0\.0\.1:\d+: client 127\.0\.0\.1:{c.sock.getsockname()[1]}, "
                   r"UNVERIFIED certificate cn device-001$")
    assert clients(b)["wrong-ca-optional"]["username"] == "own-name"
    # and a verified client on the same frontend still gets its CN
    ok = raw_client(oport, version=5, tls=client_context(ca=pki.root_ca_cert, cert=pki.client_cert,
                                                          key=pki.client_key))
    ok.connect("right-ca-optional", username="own-name")
    assert clients(b)["right-ca-optional"]["username"] == "device-001"
