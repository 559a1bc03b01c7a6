"""TLS listeners: one-way TLS with a chain, mutual TLS refusals, encrypted server keys,
certificate hot reload (SIGHUP and `ctl reload`, failed reloads keep the old certificate) and
garbage on the TLS port (SPEC §1, §3; EMQX reference §2)."""
import socket
import ssl
import time
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw.broker import BrokerError
from bw.pki import key_pem
from bw.tls import client_context, handshake


# ---- helpers -------------------------------------------------------------------------------

def served_cert(port, ca):
    """DER of the certificate the server presents to a client trusting ca."""
    with handshake(port, client_context(ca=ca)) as s:
        return s.getpeercert(binary_form=True)


def der_of(pem_path):
    return ssl.PEM_cert_to_DER_cert(Path(pem_path).read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


def outcome(port, tls, client_id="probe", version=5):
    return m.connect_outcome(port, version=version, tls=tls, client_id=client_id, timeout=5)


def assert_accepted(port, tls, client_id="ok"):
    kind, what = outcome(port, tls, client_id)
    assert kind == "connack" and what.rc == 0, f"expected to be accepted, got {kind}: {what}"


def assert_refused(port, tls, client_id="refused"):
    kind, what = outcome(port, tls, client_id)
    # TLS 1.3: a rejected client certificate shows up after the client's handshake completed
    assert kind in ("tls_error", "closed"), f"expected a refusal, got {kind}: {what}"


MTLS = """
listeners.ssl.default {
  ssl_options {
    cacertfile = "{{pki.ca_bundle}}"
    certfile   = "{{pki.server_chain}}"
    keyfile    = "{{pki.server_key}}"
    verify = verify_peer
    %s
  }
}
"""


# ---- one-way TLS ------------------------------------------------------------------------------

def test_one_way_tls_sends_the_chain_to_clients_trusting_only_the_root(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "{{pki.server_key}}"
  }
}
listeners.ssl.leafonly {
  bind = "127.0.0.1:{{port.leafonly}}"
  ssl_options {
    certfile = "{{pki.server_cert}}"
    keyfile  = "{{pki.server_key}}"
  }
}
""", ssl=True)
    root_only = client_context(ca=pki.root_ca_cert)
    # the leaf + intermediate chain lets a client that only knows the root verify the server
    for v in (4, 5):
        kind, what = outcome(b.ssl_port, root_only, f"one-way-{v}", version=v)
        assert kind == "connack" and what.rc == 0, (kind, what)
    assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_cert)
    # contrast: a certfile with the leaf alone cannot be verified by that client
    with pytest.raises(ssl.SSLError):
        handshake(b.port("leafonly"), root_only).close()
    # TLS 1.2 clients are served too
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert, max_version="1.2"), "tls12")
    # pub/sub over TLS
    with m.RawClient(b.ssl_port, version=5, tls=root_only) as sub, m.RawClient(b.ssl_port, version=5, tls=root_only) as pub:
        sub.connect("tls-sub")
        sub.subscribe("tls/#", qos=2)
        pub.connect("tls-pub")
        pub.publish("tls/1", b"secret", qos=2)
        sub.recv_publish(topic="tls/1", payload=b"secret", qos=2)


def test_one_way_tls_ecdsa_server_certificate(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_ec_chain}}", keyfile = "{{pki.server_ec_key}}" }
}
""", ssl=True)
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert))
    assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_ec_cert)


# ---- mutual TLS -------------------------------------------------------------------------------

@pytest.mark.parametrize("client", ["client", "client_ec"])
def test_mtls_accepts_good_client_certificates(start_broker, pki, client):
    b = start_broker(MTLS % "fail_if_no_peer_cert = true", ssl=True)
    tls = client_context(ca=pki.root_ca_cert, cert=pki[client + "_cert"], key=pki[client + "_key"])
    assert_accepted(b.ssl_port, tls, client)
    # the chain form (leaf + intermediate) works as well
    tls = client_context(ca=pki.root_ca_cert, cert=pki[client + "_chain"], key=pki[client + "_key"])
    assert_accepted(b.ssl_port, tls, client + "-chain")


@pytest.mark.parametrize("client", [None, "client_wrongca", "client_fakeroot", "client_expired", "client_notyet"],
                         ids=["no-certificate", "wrong-ca", "fake-root", "expired", "not-yet-valid"])
def test_mtls_refuses_bad_client_certificates(start_broker, pki, client):
    b = start_broker(MTLS % "fail_if_no_peer_cert = true", ssl=True)
    if client is None:
        tls = client_context(ca=pki.root_ca_cert)
    else:
        tls = client_context(ca=pki.root_ca_cert, cert=pki[client + "_cert"], key=pki[client + "_key"])
    assert_refused(b.ssl_port, tls, str(client))
    # the broker carries on
    good = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    assert_accepted(b.ssl_port, good, "after-refusal")


def test_verify_peer_without_fail_if_no_peer_cert_accepts_clients_without_certificate(start_broker, pki):
    b = start_broker(MTLS % "fail_if_no_peer_cert = false", ssl=True)
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert), "anon-tls")
    good = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    assert_accepted(b.ssl_port, good, "with-cert")
    # a certificate that is presented is still verified
    bad = client_context(ca=pki.root_ca_cert, cert=pki.client_wrongca_cert, key=pki.client_wrongca_key)
    assert_refused(b.ssl_port, bad, "wrong-ca")


# ---- encrypted server key ---------------------------------------------------------------------

def _encrypted_server_key(pki, password):
    return key_pem(pki.load_key("server_key"), password)


def test_encrypted_server_key_with_password(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "tls/server-enc.key"
    password = "s3cret pass"
  }
}
""", ssl=True, files={"tls/server-enc.key": _encrypted_server_key(pki, "s3cret pass")})
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert))


def test_encrypted_server_key_with_password_from_file(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "tls/server-enc.key"
    password = "file://{{dir}}/secrets/key-password"
  }
}
""", ssl=True, files={"tls/server-enc.key": _encrypted_server_key(pki, "from-a-file"),
                      "secrets/key-password": "from-a-file\n"})
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert))


def test_encrypted_server_key_with_wrong_password_refused_at_start(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options {
    certfile = "{{pki.server_chain}}"
    keyfile  = "tls/server-enc.key"
    password = "not-it"
  }
}
""", ssl=True, start=False, expect_exit=None,
        files={"tls/server-enc.key": _encrypted_server_key(pki, "right")})
    status, log = b.run_to_exit()
    assert status != 0, log
    assert "keyfile" in log and "bulwark.conf:" in log, log


# ---- hot reload -------------------------------------------------------------------------------

RELOADABLE = """
listeners.ssl.default {
  ssl_options {
    certfile = "tls/server.pem"
    keyfile  = "tls/server.key"
  }
}
"""


def _reloadable(start_broker, pki):
    return start_broker(RELOADABLE, ssl=True, files={"tls/server.pem": Path(pki.server_chain).read_bytes(),
                                                     "tls/server.key": Path(pki.server_key).read_bytes()})


def _live_pair(b, pki):
    """A subscriber and a publisher connected over TLS before the reload."""
    tls = client_context(ca=pki.root_ca_cert)
    sub = m.RawClient(b.ssl_port, version=5, tls=tls)
    sub.connect("live-sub")
    sub.subscribe("live/#", qos=1)
    pub = m.RawClient(b.ssl_port, version=5, tls=tls)
    pub.connect("live-pub")
    pub.publish("live/before", b"1", qos=1)
    sub.recv_publish(topic="live/before", payload=b"1")
    return sub, pub


def _install_new_pair(b, pki):
    b.write_file("tls/server.pem", Path(pki.server_ec_chain).read_bytes())
    b.write_file("tls/server.key", Path(pki.server_ec_key).read_bytes())


@pytest.mark.parametrize("how", ["sighup", "ctl"])
def test_certificate_hot_reload_keeps_live_connections(start_broker, pki, how):
    b = _reloadable(start_broker, pki)
    assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_cert)
    sub, pub = _live_pair(b, pki)
    try:
        _install_new_pair(b, pki)
        if how == "sighup":
            b.reload(wait_log=r"ssl:default: certificates reloaded")
        else:
            status, out = b.ctl("reload")
            assert status == 0 and "reloaded" in out, out
        # new handshakes see the new certificate at once
        assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_ec_cert)
        # the established connections stay up and keep working
        pub.publish("live/after", b"2", qos=1)
        sub.recv_publish(topic="live/after", payload=b"2")
        sub.ping()
        # and a client on the new certificate talks to one on the old
        with m.RawClient(b.ssl_port, version=4, tls=client_context(ca=pki.root_ca_cert)) as late:
            late.connect("late-pub")
            late.publish("live/late", b"3", qos=1)
        sub.recv_publish(topic="live/late", payload=b"3")
    finally:
        sub.close()
        pub.close()


@pytest.mark.parametrize("breakage", ["half-written-key", "mismatched-key", "missing-cert"])
@pytest.mark.parametrize("how", ["sighup", "ctl"])
def test_failed_reload_keeps_the_previous_certificate(start_broker, pki, breakage, how):
    b = _reloadable(start_broker, pki)
    sub, pub = _live_pair(b, pki)
    try:
        new_key = Path(pki.server_ec_key).read_bytes()
        if breakage == "half-written-key":
            b.write_file("tls/server.pem", Path(pki.server_ec_chain).read_bytes())
            b.write_file("tls/server.key", new_key[: len(new_key) // 2])
        elif breakage == "mismatched-key":
            b.write_file("tls/server.pem", Path(pki.server_ec_chain).read_bytes())   # key stays the RSA one
        else:
            b.path("tls/server.pem").unlink()
        mark = b.log_mark()
        if how == "sighup":
            b.reload()
        else:
            status, out = b.ctl("reload")
            assert status != 0, f"a failed reload must make ctl exit non-zero: {out}"
            assert "keeping the previous" in out or "failed" in out, out
        m_ = b.wait_for_log(r"ssl:default.*reload failed.*", since=mark)
        assert "tls/server" in m_.group(0), f"the log must say why: {m_.group(0)}"
        # the previous certificate keeps serving new handshakes
        assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_cert)
        assert b.running
        pub.publish("live/after", b"2", qos=1)
        sub.recv_publish(topic="live/after", payload=b"2")
        # once the files are right, the next reload takes them
        _install_new_pair(b, pki)
        b.reload(wait_log=r"ssl:default: certificates reloaded")
        assert served_cert(b.ssl_port, pki.root_ca_cert) == der_of(pki.server_ec_cert)
    finally:
        sub.close()
        pub.close()


def test_certificate_file_change_is_picked_up_without_a_signal(start_broker, pki):
    # SPEC §4: "Certificate hot reload is immediate (SIGHUP, file change, or ctl)". The files are
    # replaced the way certificate managers do it: written beside, then renamed over.
    b = _reloadable(start_broker, pki)
    sub, pub = _live_pair(b, pki)
    try:
        for rel, src in (("tls/server.key", pki.server_ec_key), ("tls/server.pem", pki.server_ec_chain)):
            b.write_file(rel + ".new", Path(src).read_bytes())
            b.path(rel + ".new").rename(b.path(rel))
        deadline = time.monotonic() + 5
        while served_cert(b.ssl_port, pki.root_ca_cert) != der_of(pki.server_ec_cert):
            assert time.monotonic() < deadline, "new certificate files not picked up within 5 s without a signal"
            time.sleep(0.1)
        pub.publish("live/after", b"2", qos=1)
        sub.recv_publish(topic="live/after", payload=b"2")
    finally:
        sub.close()
        pub.close()


def test_reload_picks_up_a_new_ca_bundle(start_broker, pki):
    # SPEC §4: hot reload includes the CA bundle.
    b = start_broker("""
listeners.ssl.default {
  ssl_options {
    cacertfile = "tls/ca.pem"
    certfile   = "{{pki.server_chain}}"
    keyfile    = "{{pki.server_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
  }
}
""", ssl=True, files={"tls/ca.pem": Path(pki.ca_bundle).read_bytes()})
    wrong = client_context(ca=pki.root_ca_cert, cert=pki.client_wrongca_cert, key=pki.client_wrongca_key)
    good = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    assert_refused(b.ssl_port, wrong, "w1")
    b.write_file("tls/ca.pem", Path(pki.ca_bundle).read_bytes() + Path(pki.wrong_ca_cert).read_bytes())
    b.reload(wait_log=r"ssl:default: certificates reloaded")
    assert_accepted(b.ssl_port, wrong, "w2")
    assert_accepted(b.ssl_port, good, "g2")


# ---- garbage instead of TLS -------------------------------------------------------------------

def test_plain_mqtt_on_the_tls_port_is_closed_with_a_log_line(start_broker, pki):
    b = start_broker("""
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}" }
}
""", ssl=True)
    tls = client_context(ca=pki.root_ca_cert)
    live = m.RawClient(b.ssl_port, version=5, tls=tls)
    try:
        live.connect("live-tls")
        live.subscribe("g/#", qos=1)
        mark = b.log_mark()
        s = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
        port = s.getsockname()[1]
        try:
            s.sendall(m.connect("plain-on-tls", version=4))
            s.settimeout(5)
            try:
                data = s.recv(4096)
            except ConnectionResetError:
                data = b""
            # at most a TLS alert comes back, never an MQTT CONNACK, and the connection is closed
            assert not data.startswith(b"\x20"), f"got an MQTT answer on the TLS port: {data!r}"
            if data:
                assert data[0] == 0x15, f"expected a TLS alert record, got {data!r}"
                try:
                    assert s.recv(4096) == b""
                except ConnectionResetError:
                    pass
        finally:
            s.close()
        try:
            b.wait_for_log(r"127\.0\.0\.1:%d\b" % port, since=mark, timeout=5)
        except BrokerError:
            raise AssertionError(f"no log line about the connection from 127.0.0.1:{port} that sent plain MQTT "
                                 f"to the TLS port (SPEC §3: closed with a log line)\n{b.log_text(mark)}")
        # the broker keeps serving TLS clients, old and new
        with m.RawClient(b.ssl_port, version=5, tls=tls) as pub:
            pub.connect("after-garbage")
            pub.publish("g/1", b"still here", qos=1)
        live.recv_publish(topic="g/1", payload=b"still here")
    finally:
        live.close()


def test_random_bytes_and_silence_on_the_tls_port(start_broker, pki):
    # a TLS port's first deadline is the handshake's (ssl_options.handshake_timeout)
    b = start_broker("""
mqtt.idle_timeout = 1s
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}", handshake_timeout = 1s }
}
""", ssl=True)
    tls = client_context(ca=pki.root_ca_cert)
    junk = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    silent = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    try:
        junk.sendall(bytes(range(256)) * 4)
        # a client that opens TCP and never says anything must not block others
        assert_accepted(b.ssl_port, tls, "meanwhile")
        for s in (junk, silent):
            s.settimeout(8)
            try:
                rest = s.recv(4096)
                while rest:
                    rest = s.recv(4096)
            except ConnectionResetError:
                pass
    finally:
        junk.close()
        silent.close()
    assert_accepted(b.ssl_port, tls, "afterwards")


# ---- depth ------------------------------------------------------------------------------------

@pytest.mark.parametrize("depth,inter_ok", [(0, False), (1, True), (10, True)])
def test_depth_counts_intermediates_between_peer_and_root(start_broker, pki, depth, inter_ok):
    # EMQX (OTP ssl) and OpenSSL agree: depth = the number of intermediate CAs allowed between the
    # peer certificate and the trusted root; 0 = the peer must be signed by the root itself.
    b = start_broker(MTLS % f"fail_if_no_peer_cert = true\n    depth = {depth}", ssl=True)
    direct = client_context(ca=pki.root_ca_cert, cert=pki.client_root_cert, key=pki.client_root_key)
    assert_accepted(b.ssl_port, direct, "signed-by-root")
    via_inter = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    if inter_ok:
        assert_accepted(b.ssl_port, via_inter, "via-intermediate")
    else:
        assert_refused(b.ssl_port, via_inter, "via-intermediate")
