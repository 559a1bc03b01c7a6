"""TLS-PSK (psk_authentication, EMQX reference §2.4): identities and secrets from init_file (the
secret's bytes are the key, as in EMQX), PSK cipher suites over TLS 1.2 followed by MQTT, wrong
secrets and unknown identities refused with a log line, malformed files refused at start with
file:line, and the file re-read on reload.

The client is `openssl s_client -psk_identity ID -psk HEX` (its -psk takes the key in hex, so the
secret's bytes are hex-encoded), with raw MQTT bytes on its stdin (-quiet: only application data on
stdout). Python's ssl module has no PSK before 3.13."""
import os
import select
import subprocess
import time

import pytest

from bw import mqtt_raw as m
from bw.tls import client_context

PSK_FILE = "dev1:secret-one\ndev2:pass:with:colons\r\n\n"

LISTENER = """
psk_authentication {
  enable = true
  init_file = "psk.txt"
  %s
}
listeners.ssl.default {
  ssl_options {
    cacertfile = "{{pki.ca_bundle}}"
    certfile   = "{{pki.server_chain}}"
    keyfile    = "{{pki.server_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
    %s
  }
}
"""


def psk_broker(start_broker, extra_psk="", extra_ssl="", psk_file=PSK_FILE, **kw):
    return start_broker(LISTENER % (extra_psk, extra_ssl), ssl=True, files={"psk.txt": psk_file}, **kw)


def psk_connect(port, identity, secret, client_id="psk-dev", version="-tls1_2", cipher="PSK-AES128-GCM-SHA256",
                timeout=5):
    """TLS-PSK handshake with s_client, then an MQTT CONNECT; returns (bytes received, stderr text)."""
    args = ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", version, "-psk_identity", identity,
            "-psk", secret.encode().hex(), "-quiet", "-noservername"]
    if cipher:
        args += ["-cipher", cipher]
    p = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out = b""
    try:
        p.stdin.write(m.connect(client_id, version=4))
        p.stdin.flush()
        deadline = time.monotonic() + timeout
        while len(out) < 4 and time.monotonic() < deadline:
            r, _, _ = select.select([p.stdout], [], [], 0.1)
            if r:
                chunk = os.read(p.stdout.fileno(), 4096)
                if not chunk:
                    break
                out += chunk
    finally:
        p.kill()
        err = p.stderr.read().decode(errors="replace")
        p.wait()
    return out, err


def assert_connack(port, identity, secret, client_id="psk-dev"):
    out, err = psk_connect(port, identity, secret, client_id)
    assert out[:4] == b"\x20\x02\x00\x00", f"expected CONNACK 0 over TLS-PSK, got {out!r}\n{err}"


def assert_no_connack(port, identity, secret, client_id="psk-refused"):
    out, err = psk_connect(port, identity, secret, client_id)
    assert not out.startswith(b"\x20"), f"expected a refused handshake, got {out!r}\n{err}"


def test_psk_handshake_then_mqtt(start_broker, pki):
    b = psk_broker(start_broker)
    assert_connack(b.ssl_port, "dev1", "secret-one", "psk-dev1")
    b.wait_for_log(r"client psk-dev1 connected", since=0)
    # the secret is everything after the first separator (it may hold the separator itself)
    assert_connack(b.ssl_port, "dev2", "pass:with:colons", "psk-dev2")
    # certificate clients are unaffected: they still need a certificate on this listener
    kind, _ = m.connect_outcome(b.ssl_port, version=5, tls=client_context(ca=pki.root_ca_cert), client_id="nocert")
    assert kind in ("tls_error", "closed")
    good = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    kind, what = m.connect_outcome(b.ssl_port, version=5, tls=good, client_id="with-cert")
    assert kind == "connack" and what.rc == 0


def test_psk_wrong_secret_is_refused(start_broker):
    b = psk_broker(start_broker)
    mark = b.log_mark()
    assert_no_connack(b.ssl_port, "dev1", "secret-two")
    b.wait_for_log(r'tls handshake failed: .*\(PSK identity "dev1": wrong secret\?\)', since=mark)
    # hex of the text is not the key either: the text's bytes are
    assert_no_connack(b.ssl_port, "dev1", "secret-one".encode().hex())


def test_psk_unknown_identity_is_refused(start_broker):
    b = psk_broker(start_broker)
    mark = b.log_mark()
    assert_no_connack(b.ssl_port, "nobody", "secret-one")
    b.wait_for_log(r'tls handshake failed: unknown PSK identity "nobody"', since=mark)


def test_psk_custom_separator(start_broker):
    b = psk_broker(start_broker, extra_psk='separator = "|"', psk_file="dev1|a:b|c\n")
    assert_connack(b.ssl_port, "dev1", "a:b|c")


@pytest.mark.parametrize("content,where", [
    ("dev1:secret-one\nno separator here\n", "psk.txt:2"),
    ("dev1:secret-one\n:secret\n", "psk.txt:2"),
    ("dev1:one\ndev1:two\n", "psk.txt:2"),
])
def test_malformed_psk_file_refuses_to_start(start_broker, content, where):
    b = psk_broker(start_broker, psk_file=content, start=False, expect_exit=None)
    status, log = b.run_to_exit()
    assert status != 0, log
    assert where in log and "psk_authentication.init_file" in log, log


def test_psk_file_is_reread_on_reload(start_broker):
    b = psk_broker(start_broker)
    assert_no_connack(b.ssl_port, "dev3", "third")
    b.write_file("psk.txt", PSK_FILE + "dev3:third\n")
    b.reload(wait_log=r"ssl:default: certificates reloaded")
    assert_connack(b.ssl_port, "dev3", "third", "psk-dev3")
    # a broken file on reload keeps the previous identities
    mark = b.log_mark()
    b.write_file("psk.txt", "broken line\n")
    b.reload()
    b.wait_for_log(r"reload failed.*psk\.txt:1", since=mark)
    assert_connack(b.ssl_port, "dev1", "secret-one", "psk-still")


def test_psk_disabled_means_no_psk_handshakes(start_broker):
    b = start_broker((LISTENER % ("", "")).replace("enable = true", "enable = false"), ssl=True,
                     files={"psk.txt": PSK_FILE})
    assert_no_connack(b.ssl_port, "dev1", "secret-one")


def test_psk_is_not_used_by_tls13(start_broker):
    # PSK cipher suites exist for TLS <= 1.2 only (EMQX); a TLS 1.3 client offering the PSK gets an
    # ordinary certificate handshake, which this listener refuses without a client certificate
    b = psk_broker(start_broker)
    out, err = psk_connect(b.ssl_port, "dev1", "secret-one", version="-tls1_3", cipher=None)
    assert not out.startswith(b"\x20\x02\x00\x00"), (out, err)
