"""ssl_options keys of TLS listeners (SPEC §2, EMQX reference §2): versions, ciphers (OpenSSL and
IANA names), honor_cipher_order, reuse_sessions, session_tickets, handshake_timeout, depth,
dhfile, partial_chain (EMQX's meaning), verify_peer_ext_key_usage, the log line of every refused
handshake, and configurations that contradict themselves."""
import os
import re
import select
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw.timeshift import TimeShift
from bw.tls import client_context, handshake


# ---- helpers -------------------------------------------------------------------------------

def outcome(port, tls, client_id="probe", version=5, server_hostname="localhost"):
    return m.connect_outcome(port, version=version, tls=tls, client_id=client_id, timeout=5,
                             server_hostname=server_hostname)


def assert_accepted(port, tls, client_id="ok"):
    kind, what = outcome(port, tls, client_id)
    assert kind == "connack" and what.rc == 0, f"expected to be accepted, got {kind}: {what}"


def assert_refused(port, tls, client_id="refused"):
    kind, what = outcome(port, tls, client_id)
    # TLS 1.3: a rejected client certificate shows up after the client's handshake completed
    assert kind in ("tls_error", "closed"), f"expected a refusal, got {kind}: {what}"


def refused_with_log(b, tls, pattern, client_id="refused", port=None):
    """The handshake is refused and the broker logs why (regex on the log since the attempt)."""
    mark = b.log_mark()
    assert_refused(port or b.ssl_port, tls, client_id)
    return b.wait_for_log(pattern, since=mark, timeout=5)


def client(pki, name, **kw):
    """A client context presenting pki.<name>_cert (verifying the server with the root)."""
    return client_context(ca=pki.root_ca_cert, cert=pki[name + "_cert"], key=pki[name + "_key"], **kw)


def mqtt_connect_over(sock, client_id):
    """CONNECT on an already open TLS socket; returns the CONNACK return code."""
    sock.sendall(m.connect(client_id, version=4))
    data = b""
    deadline = time.monotonic() + 5
    while len(data) < 4 and time.monotonic() < deadline:
        chunk = sock.recv(4)
        if not chunk:
            break
        data += chunk
    assert data[:2] == b"\x20\x02", f"no CONNACK: {data!r}"
    return data[3]


def s_client_until(port, args, until, stdin=b"", timeout=5, linger=0.0):
    """openssl s_client with stdin kept open until its output matches the regex until (or timeout),
    then for linger more seconds; returns the text output so far."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out = b""
    try:
        if stdin:
            p.stdin.write(stdin)
            p.stdin.flush()
        deadline = time.monotonic() + timeout
        matched_at = None
        while time.monotonic() < deadline:
            if matched_at is None and re.search(until, out.decode(errors="replace")):
                matched_at = time.monotonic()
            if matched_at is not None and time.monotonic() >= matched_at + linger:
                break
            r, _, _ = select.select([p.stdout], [], [], 0.1)
            if r:
                chunk = os.read(p.stdout.fileno(), 65536)
                if not chunk:
                    break
                out += chunk
    finally:
        p.kill()
        p.wait()
    return out.decode(errors="replace")


def close_cleanly(s):
    """Send close_notify before closing, so the client keeps the session resumable."""
    try:
        s.settimeout(1)
        s.unwrap()
    except (ssl.SSLError, OSError, ValueError):
        pass
    s.close()


def mtls(extra="", cacertfile="{{pki.ca_bundle}}", name="default", bind=""):
    return f"""
listeners.ssl.{name} {{
  {bind}
  ssl_options {{
    cacertfile = "{cacertfile}"
    certfile   = "{{{{pki.server_chain}}}}"
    keyfile    = "{{{{pki.server_key}}}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
    {extra}
  }}
}}
"""


def server_only(extra="", name="default", bind=""):
    return f"""
listeners.ssl.{name} {{
  {bind}
  ssl_options {{
    certfile = "{{{{pki.server_chain}}}}"
    keyfile  = "{{{{pki.server_key}}}}"
    {extra}
  }}
}}
"""


def s_client(port, *args, stdin=b"", timeout=10):
    """Run openssl s_client against 127.0.0.1:port; returns stdout + stderr as text."""
    p = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", *args], input=stdin,
                       capture_output=True, timeout=timeout)
    return p.stdout.decode(errors="replace") + p.stderr.decode(errors="replace")


# ---- versions ----------------------------------------------------------------------------------

def test_versions_tls12_only_and_tls13_only_listeners(start_broker, pki):
    b = start_broker(server_only('versions = ["tlsv1.2"]') +
                     server_only('versions = ["tlsv1.3"]', name="v13", bind='bind = "127.0.0.1:{{port.v13}}"'),
                     ssl=True)
    only13 = client_context(ca=pki.root_ca_cert, min_version="1.3", max_version="1.3")
    only12 = client_context(ca=pki.root_ca_cert, min_version="1.2", max_version="1.2")
    # each listener speaks its version ...
    with handshake(b.ssl_port, only12) as s:
        assert s.version() == "TLSv1.2"
    with handshake(b.port("v13"), only13) as s:
        assert s.version() == "TLSv1.3"
    assert_accepted(b.ssl_port, only12, "v12-ok")
    # ... and refuses the other, saying why
    mark = b.log_mark()
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(b.ssl_port, only13).close()
    b.wait_for_log(r"ssl:default closed before CONNECT: tls handshake failed: unsupported protocol "
                   r"\(listener versions: tlsv1\.2\)", since=mark)
    mark = b.log_mark()
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(b.port("v13"), only12).close()
    b.wait_for_log(r"ssl:v13 closed before CONNECT: tls handshake failed: unsupported protocol "
                   r"\(listener versions: tlsv1\.3\)", since=mark)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # ssl.TLSVersion.TLSv1_1
def test_versions_tlsv11_works_only_where_listed(start_broker, pki):
    # OpenSSL 3 allows TLS 1.1 at security level 0 only; listing tlsv1.1 lowers it for that listener
    b = start_broker(server_only('versions = ["tlsv1.2", "tlsv1.1"]') +
                     server_only("", name="modern", bind='bind = "127.0.0.1:{{port.modern}}"'), ssl=True)
    b.wait_for_log(r"versions lists tlsv1/tlsv1\.1", since=0)
    old = client_context(ca=pki.root_ca_cert, min_version="1.1", max_version="1.1", ciphers="DEFAULT:@SECLEVEL=0")
    with handshake(b.ssl_port, old) as s:
        assert s.version() == "TLSv1.1"
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(b.port("modern"), old).close()


def test_versions_with_a_gap_are_refused(check_config):
    status, out = check_config(server_only('versions = ["tlsv1.3", "tlsv1.1"]'))
    assert status == 1, out
    assert "contiguous" in out and "tlsv1.2" in out and "bulwark.conf:" in out, out


# ---- ciphers -----------------------------------------------------------------------------------

def test_tls12_cipher_list_is_honoured(start_broker, pki):
    b = start_broker(server_only('ciphers = ["ECDHE-RSA-AES128-GCM-SHA256"]'), ssl=True)
    with handshake(b.ssl_port, client_context(ca=pki.root_ca_cert, max_version="1.2")) as s:
        assert s.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256"
    # a client offering only other ciphers is refused, with the reason logged
    mark = b.log_mark()
    other = client_context(ca=pki.root_ca_cert, max_version="1.2", ciphers="ECDHE-RSA-AES256-GCM-SHA384")
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(b.ssl_port, other).close()
    b.wait_for_log(r"tls handshake failed: no shared cipher", since=mark)
    # TLS 1.3 is on and no 1.3 suite was listed: the default 1.3 suites stay (as EMQX)
    with handshake(b.ssl_port, client_context(ca=pki.root_ca_cert, min_version="1.3")) as s:
        assert s.version() == "TLSv1.3"
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert, min_version="1.3"), "tls13-default-suites")


def test_iana_cipher_names_are_accepted(start_broker, pki):
    b = start_broker(server_only('ciphers = ["TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384", "TLS_CHACHA20_POLY1305_SHA256"]'),
                     ssl=True)
    with handshake(b.ssl_port, client_context(ca=pki.root_ca_cert, max_version="1.2")) as s:
        assert s.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384"
    with handshake(b.ssl_port, client_context(ca=pki.root_ca_cert, min_version="1.3")) as s:
        assert s.cipher()[0] == "TLS_CHACHA20_POLY1305_SHA256"


@pytest.mark.parametrize("name", ["NOPE-CIPHER", "TLS_ECDHE_RSA_WITH_NOTHING", "TLS_AES_999_GCM_SHA384"])
def test_unknown_cipher_refuses_to_start(start_broker, name):
    b = start_broker(server_only(f'ciphers = ["ECDHE-RSA-AES128-GCM-SHA256", "{name}"]'), ssl=True, start=False,
                     expect_exit=None)
    status, log = b.run_to_exit()
    assert status != 0, log
    assert name in log and "cipher" in log and "bulwark.conf:" in log, log


def test_tls13_suites_alone_switch_tls12_off(start_broker, pki):
    b = start_broker(server_only('ciphers = ["TLS_AES_128_GCM_SHA256"]'), ssl=True)
    b.wait_for_log(r"ciphers lists no TLS 1\.2 cipher", since=0)
    with handshake(b.ssl_port, client_context(ca=pki.root_ca_cert)) as s:
        assert s.version() == "TLSv1.3" and s.cipher()[0] == "TLS_AES_128_GCM_SHA256"
    with pytest.raises((ssl.SSLError, ConnectionResetError)):
        handshake(b.ssl_port, client_context(ca=pki.root_ca_cert, max_version="1.2")).close()


def test_honor_cipher_order(start_broker, pki):
    order = 'ciphers = ["ECDHE-RSA-AES256-GCM-SHA384", "ECDHE-RSA-AES128-GCM-SHA256"]'
    b = start_broker(server_only(order + "\n    honor_cipher_order = true") +
                     server_only(order + "\n    honor_cipher_order = false", name="client_pref",
                                 bind='bind = "127.0.0.1:{{port.client_pref}}"'), ssl=True)
    # the client prefers AES128
    ctx = client_context(ca=pki.root_ca_cert, max_version="1.2",
                         ciphers="ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384")
    with handshake(b.ssl_port, ctx) as s:
        assert s.cipher()[0] == "ECDHE-RSA-AES256-GCM-SHA384", "server order must win"
    with handshake(b.port("client_pref"), ctx) as s:
        assert s.cipher()[0] == "ECDHE-RSA-AES128-GCM-SHA256", "client order must win"


# ---- sessions ----------------------------------------------------------------------------------

def _resume(port, ctx, client_id):
    """Connect twice with ctx (MQTT CONNECT each time); returns (session_reused of the second, rc)."""
    s = handshake(port, ctx)
    assert mqtt_connect_over(s, client_id + "-1") == 0
    sess = s.session
    close_cleanly(s)
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    try:
        rc = mqtt_connect_over(s, client_id + "-2")
        return s.session_reused, rc
    finally:
        s.close()


def _offer_session(port, ctx, sess, client_id):
    """Connect offering sess, then CONNECT: "connack RC", or "refused: ..." when the handshake or
    the connection fails."""
    raw = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
        return f"connack {mqtt_connect_over(s, client_id)}"
    except (ssl.SSLError, OSError, AssertionError) as e:
        return f"refused: {e!r}"
    finally:
        raw.close()


def test_reuse_sessions_resumes_tls12_sessions_when_on(start_broker, pki):
    b = start_broker(mtls() + mtls("reuse_sessions = false", name="noreuse", bind='bind = "127.0.0.1:{{port.noreuse}}"'),
                     ssl=True)
    ctx = client(pki, "client", max_version="1.2")
    reused, rc = _resume(b.ssl_port, ctx, "reuse")
    assert reused and rc == 0, "reuse_sessions = true must resume a TLS 1.2 session (and MQTT works over it)"
    reused, rc = _resume(b.port("noreuse"), client(pki, "client", max_version="1.2"), "noreuse")
    assert not reused and rc == 0
    # openssl s_client agrees
    sess = Path(b.dir) / "s12.pem"
    common = ["-tls1_2", "-cert", pki.client_cert, "-key", pki.client_key, "-CAfile", pki.root_ca_cert]
    assert "New, TLSv1.2" in s_client(b.ssl_port, *common, "-sess_out", str(sess))
    assert "Reused, TLSv1.2" in s_client(b.ssl_port, *common, "-sess_in", str(sess))
    sess2 = Path(b.dir) / "s12b.pem"
    s_client(b.port("noreuse"), *common, "-sess_out", str(sess2))
    if sess2.exists():  # without a session ID from the server, s_client has nothing to save
        out = s_client(b.port("noreuse"), *common, "-sess_in", str(sess2))
        assert "Reused" not in out and "New, TLSv1.2" in out, out


def test_session_tickets_disabled_by_default(start_broker, pki):
    b = start_broker(mtls(), ssl=True)
    ctx = client(pki, "client", min_version="1.3")
    with handshake(b.ssl_port, ctx) as s:
        assert mqtt_connect_over(s, "no-ticket") == 0
        assert not s.session.has_ticket, "session_tickets = disabled must not issue TLS 1.3 tickets"
    reused, rc = _resume(b.ssl_port, ctx, "no-ticket-again")
    assert not reused and rc == 0


def test_session_tickets_stateless_issues_one_ticket_and_resumes(start_broker, pki):
    b = start_broker(mtls("session_tickets = stateless"), ssl=True)
    ctx = client(pki, "client", min_version="1.3")
    reused, rc = _resume(b.ssl_port, ctx, "ticket")
    assert reused and rc == 0, "a TLS 1.3 ticket must resume (with the client certificate kept)"
    # exactly one ticket per full handshake (perf.md §2.7: each costs ~240 us with mTLS)
    out = s_client_until(b.ssl_port, ["-tls1_3", "-msg", "-cert", pki.client_cert, "-key", pki.client_key],
                         r"Post-Handshake New Session Ticket arrived", stdin=m.connect("count", version=4),
                         linger=0.5)  # a second ticket would follow at once
    assert len(re.findall(r"<<< .*NewSessionTicket", out)) == 1, out


def test_session_tickets_stateful_resumes_from_the_server_cache(start_broker, pki):
    b = start_broker(mtls("session_tickets = stateful"), ssl=True)
    ctx = client(pki, "client", min_version="1.3")
    with handshake(b.ssl_port, ctx) as s:
        assert mqtt_connect_over(s, "stateful-0") == 0
        # a stateful ticket only names the cached session: a few dozen bytes, no sealed certificate
        assert s.session.has_ticket
    reused, rc = _resume(b.ssl_port, ctx, "stateful")
    assert reused and rc == 0, "a stateful TLS 1.3 ticket must resume (and MQTT works over it)"
    out = s_client_until(b.ssl_port, ["-tls1_3", "-msg", "-cert", pki.client_cert, "-key", pki.client_key],
                         r"Post-Handshake New Session Ticket arrived", stdin=m.connect("count1", version=4),
                         linger=0.5)
    assert len(re.findall(r"<<< .*NewSessionTicket", out)) == 1, out
    # after a reload (new generation, new cache) the old ticket gives a full handshake, not an error
    raw = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost")
    assert mqtt_connect_over(s, "stateful-a") == 0
    sess = s.session
    close_cleanly(s)
    b.reload(wait_log=r"certificates reloaded")
    raw = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    try:
        assert mqtt_connect_over(s, "stateful-b") == 0
        assert not s.session_reused
    finally:
        s.close()


def _tickets_on_resumption(port, pki, sess_file, client_id):
    """Resume with s_client from sess_file (rewritten with what the connection ends with); returns
    (resumed, number of NewSessionTickets received)."""
    out = s_client_until(port, ["-tls1_3", "-msg", "-cert", pki.client_cert, "-key", pki.client_key,
                                "-sess_in", str(sess_file), "-sess_out", str(sess_file)],
                         r"(Reused|New), TLSv1\.3", stdin=m.connect(client_id, version=4), linger=0.5)
    return "Reused, TLSv1.3" in out, len(re.findall(r"<<< .*NewSessionTicket", out))


@pytest.mark.parametrize("tickets", ["stateful", "stateless"])
def test_resumed_connection_keeps_its_ticket_until_half_its_lifetime(start_broker, pki, tmp_path, tickets):
    # A resumption that issued a ticket each time would pay for a session copy, a cache entry or a
    # sealed client certificate, and a record, on every reconnect: the ticket the client holds is
    # good for 2 h (no early data, so not single-use). Past half of that, a fresh one comes with the
    # resumption, so a client that keeps reconnecting never falls back to a full handshake.
    clock = TimeShift(tmp_path)
    b = start_broker(mtls(f"session_tickets = {tickets}"), ssl=True, env=clock.env())
    sess = tmp_path / "sess.pem"
    out = s_client_until(b.ssl_port, ["-tls1_3", "-msg", "-cert", pki.client_cert, "-key", pki.client_key,
                                      "-sess_out", str(sess)],
                         r"Post-Handshake New Session Ticket arrived", stdin=m.connect("life-0", version=4),
                         linger=0.3)
    assert len(re.findall(r"<<< .*NewSessionTicket", out)) == 1, out
    for i in range(3):  # the same ticket resumes again and again, and none is added
        assert _tickets_on_resumption(b.ssl_port, pki, sess, f"life-{i + 1}") == (True, 0)
    clock.set(3700)  # just past half of the 7200 s session lifetime
    assert _tickets_on_resumption(b.ssl_port, pki, sess, "life-old") == (True, 1)
    # the fresh ticket (saved by s_client) is young again
    assert _tickets_on_resumption(b.ssl_port, pki, sess, "life-fresh") == (True, 0)


@pytest.mark.parametrize("tickets,max_version", [("stateful", "1.3"), ("stateless", "1.3"), ("disabled", "1.2")])
def test_certificate_that_expired_since_cannot_resume(start_broker, pki, tmp_path, tickets, max_version):
    # A resumed session skips signature checks (this generation verified them), not the clock.
    import datetime
    expires = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0) + datetime.timedelta(seconds=4)
    cert, key, chain = pki.issue_client(tmp_path, "shortlived", not_after=expires)
    b = start_broker(mtls(f"session_tickets = {tickets}"), ssl=True)
    ctx = client_context(ca=pki.root_ca_cert, cert=chain, key=key, max_version=max_version)
    s = handshake(b.ssl_port, ctx)
    assert mqtt_connect_over(s, "short-1") == 0
    sess = s.session
    close_cleanly(s)
    # still valid: resumes
    raw = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=5)
    s = ctx.wrap_socket(raw, server_hostname="localhost", session=sess)
    assert mqtt_connect_over(s, "short-2") == 0 and s.session_reused
    sess = s.session
    close_cleanly(s)
    time.sleep(max(0.0, (expires - datetime.datetime.now(datetime.timezone.utc)).total_seconds()) + 1.5)
    mark = b.log_mark()
    kind = _offer_session(b.ssl_port, ctx, sess, "short-3")
    assert kind.startswith("refused"), kind
    b.wait_for_log(r"certificate has expired.*CN=shortlived", since=mark)


def test_session_tickets_stateful_needs_the_session_cache(check_config):
    status, out = check_config(mtls("session_tickets = stateful\n    reuse_sessions = false"))
    assert status == 1 and "session_tickets = stateful needs reuse_sessions = true" in out, out


def test_revoked_certificate_cannot_come_back_through_resumption(start_broker, pki, tmp_path):
    # The device got a TLS 1.2 session while its certificate was good; after the CRL revokes it,
    # presenting the cached session must not get it in again.
    b = start_broker(mtls('crlfile = "crl.pem"'), ssl=True, files={"crl.pem": Path(pki.crl_empty).read_bytes()})
    ctx = client(pki, "client_revoked", max_version="1.2")
    s = handshake(b.ssl_port, ctx)
    assert mqtt_connect_over(s, "soon-revoked") == 0
    sess = s.session
    close_cleanly(s)
    mark = b.log_mark()
    b.write_file("crl.pem", Path(pki.crl_pem).read_bytes())
    b.reload(wait_log=r"certificates reloaded")
    kind = _offer_session(b.ssl_port, ctx, sess, "revoked-resume")
    assert kind.startswith("refused"), kind
    b.wait_for_log(r"certificate revoked.*CN=device-revoked", since=mark)


# ---- handshake_timeout -------------------------------------------------------------------------

def test_handshake_timeout_closes_a_silent_connection(start_broker, pki):
    b = start_broker("mqtt.idle_timeout = 60s\n" + server_only("handshake_timeout = 1s"), ssl=True)
    s = socket.create_connection(("127.0.0.1", b.ssl_port), timeout=10)
    t0 = time.monotonic()
    try:
        s.settimeout(10)
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        elapsed = time.monotonic() - t0
    finally:
        s.close()
    assert elapsed < 5, f"a client that never sends a ClientHello must be closed after handshake_timeout (1s), " \
                        f"took {elapsed:.1f}s"
    b.wait_for_log(r"handshake", since=0)
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert), "after-timeout")


# ---- depth -------------------------------------------------------------------------------------

def test_depth_exceeded_is_logged(start_broker, pki):
    b = start_broker(mtls("depth = 0"), ssl=True)
    refused_with_log(b, client(pki, "client"), r"certificate verify failed: certificate chain too long \(depth = 0\)")
    assert_accepted(b.ssl_port, client(pki, "client_root"), "direct")


# ---- dhfile ------------------------------------------------------------------------------------

def test_dhfile_parameters_are_used_for_dhe(start_broker, pki, tmp_path):
    dh = tmp_path / "dh4096.pem"
    subprocess.run(["openssl", "genpkey", "-genparam", "-algorithm", "DH", "-pkeyopt", "group:ffdhe4096",
                    "-out", str(dh)], check=True, capture_output=True)
    b = start_broker(server_only('dhfile = "dh4096.pem"') +
                     server_only("", name="auto", bind='bind = "127.0.0.1:{{port.auto}}"'), ssl=True,
                     files={"dh4096.pem": dh.read_bytes()})
    args = ["-tls1_2", "-cipher", "DHE-RSA-AES128-GCM-SHA256"]
    assert "Server Temp Key: DH, 4096 bits" in s_client(b.ssl_port, *args)
    out = s_client(b.port("auto"), *args)
    assert "Cipher is DHE-RSA-AES128-GCM-SHA256" in out and "4096 bits" not in out, out


def test_bad_dhfile_refuses_to_start(start_broker, pki):
    b = start_broker(server_only('dhfile = "{{pki.server_cert}}"'), ssl=True, start=False, expect_exit=None)
    status, log = b.run_to_exit()
    assert status != 0 and "dhfile" in log and "bulwark.conf:" in log, log


# ---- partial_chain -----------------------------------------------------------------------------

def _cat(*paths):
    return b"".join(Path(p).read_bytes() for p in paths)


@pytest.mark.parametrize("partial,order,device_ok", [
    ("false", "inter", False),                          # no root: the chain cannot complete
    ("true", "inter", True),                            # the intermediate is the last (only) certificate
    ("cacert_from_cacertfile", "inter", True),
    ("true", "inter+wrong", False),                     # the intermediate is not the last one
    ("true", "wrong+inter", True),
    ("two_cacerts_from_cacertfile", "inter+wrong", True),
    ("true", "inter+root", True),                       # a full chain to the root still works
], ids=lambda v: str(v))
def test_partial_chain_trusts_the_last_certificates_of_cacertfile(start_broker, pki, partial, order, device_ok):
    files = {"inter": pki.inter_ca_cert, "wrong": pki.wrong_ca_cert, "root": pki.root_ca_cert}
    b = start_broker(mtls(f"partial_chain = {partial}", cacertfile="ca.pem"), ssl=True,
                     files={"ca.pem": _cat(*[files[n] for n in order.split("+")])})
    device = client(pki, "client")
    if device_ok:
        assert_accepted(b.ssl_port, device, "device")
        # an anchor is not a free pass: the leaf is still checked
        refused_with_log(b, client(pki, "client_expired"), r"certificate has expired \(subject CN=device-expired")
    else:
        refused_with_log(b, device, r"unknown CA.*depth 1\)")
    if "root" not in order:
        # a certificate issued by the absent root never verifies
        assert_refused(b.ssl_port, client(pki, "client_root"), "by-root")


def test_partial_chain_anchor_counts_for_depth(start_broker, pki):
    # with the intermediate as anchor, device-001 is directly under it: depth 0 is enough
    b = start_broker(mtls("partial_chain = true\n    depth = 0", cacertfile="ca.pem"), ssl=True,
                     files={"ca.pem": _cat(pki.inter_ca_cert)})
    assert_accepted(b.ssl_port, client(pki, "client"), "device")


# ---- verify_peer_ext_key_usage -----------------------------------------------------------------

@pytest.fixture
def no_eku_client(pki, tmp_path):
    cert, key, chain = pki.issue_client(tmp_path, "device-noeku", eku=None)
    return client_context(ca=pki.root_ca_cert, cert=chain, key=key)


def test_eku_client_auth_required(start_broker, pki, no_eku_client):
    b = start_broker(mtls('verify_peer_ext_key_usage = "clientAuth"'), ssl=True)
    assert_accepted(b.ssl_port, client(pki, "client"), "client-auth")
    refused_with_log(b, client(pki, "client_server_eku"),
                     r"certificate verify failed: extKeyUsage unmatched \(subject CN=device-server-eku,.*depth 0\)")
    refused_with_log(b, no_eku_client, r"certificate verify failed: extKeyUsage not set \(subject CN=device-noeku")


def test_eku_option_replaces_openssls_purpose_check(start_broker, pki):
    # serverAuth required: OpenSSL's own sslclient purpose check would refuse this certificate
    # first; with the option set only the listed usages count
    b = start_broker(mtls('verify_peer_ext_key_usage = "serverAuth"'), ssl=True)
    assert_accepted(b.ssl_port, client(pki, "client_server_eku"), "server-eku")
    refused_with_log(b, client(pki, "client"), r"extKeyUsage unmatched \(subject CN=device-001")


def test_eku_oid_form_and_all_listed_usages(start_broker, pki):
    b = start_broker(mtls('verify_peer_ext_key_usage = "OID:1.3.6.1.5.5.7.3.2"') +
                     mtls('verify_peer_ext_key_usage = "clientAuth,serverAuth"', name="both",
                          bind='bind = "127.0.0.1:{{port.both}}"'), ssl=True)
    assert_accepted(b.ssl_port, client(pki, "client"), "oid")
    refused_with_log(b, client(pki, "client_server_eku"), r"extKeyUsage unmatched")
    assert_refused(b.port("both"), client(pki, "client"), "only-client-auth")
    assert_refused(b.port("both"), client(pki, "client_server_eku"), "only-server-auth")


def test_without_eku_option_openssl_purpose_check_applies(start_broker, pki, no_eku_client):
    # Bulwark is stricter than EMQX here: OpenSSL's sslclient purpose check refuses a leaf whose
    # extendedKeyUsage lacks clientAuth; a leaf without the extension is fine
    b = start_broker(mtls(), ssl=True)
    refused_with_log(b, client(pki, "client_server_eku"), r"unsuitable certificate purpose")
    assert_accepted(b.ssl_port, no_eku_client, "no-eku")


# ---- why a handshake was refused ---------------------------------------------------------------

@pytest.mark.parametrize("name,pattern", [
    ("client_expired", r"certificate has expired \(subject CN=device-expired,OU=Sensors,O=Acme,L=Solna,"
                       r"ST=Stockholm,C=SE, depth 0\)"),
    ("client_notyet", r"certificate is not yet valid \(subject CN=device-notyet,.*depth 0\)"),
    ("client_wrongca", r"unknown CA: unable to get local issuer certificate \(subject CN=device-001,.*depth 0\)"),
    ("client_fakeroot", r"certificate signature failure \(subject CN=device-001,.*depth 0\)"),
    ("client_server_eku", r"unsuitable certificate purpose .*\(subject CN=device-server-eku"),
    (None, r"no client certificate"),
], ids=["expired", "not-yet-valid", "unknown-ca", "fake-root", "bad-eku", "no-certificate"])
def test_refused_handshakes_say_why(start_broker, pki, name, pattern):
    b = start_broker(mtls(), ssl=True)
    tls = client(pki, name) if name else client_context(ca=pki.root_ca_cert)
    line = refused_with_log(b, tls, r"connection from 127\.0\.0\.1:\d+ on ssl:default.*tls handshake failed: .*"
                            + pattern)
    assert "\x1b" not in line.group(0)
    assert_accepted(b.ssl_port, client(pki, "client"), "after")


def test_wrong_ca_listener_refuses_good_device(start_broker, pki):
    b = start_broker(mtls(cacertfile="{{pki.wrong_ca_cert}}"), ssl=True)
    refused_with_log(b, client(pki, "client"), r"unknown CA")


# ---- OCSP stapling hook-up --------------------------------------------------------------------

def test_ocsp_stapling_listener_serves_without_a_staple_when_the_responder_is_down(start_broker, pki):
    # ocsp.c fetches and validates staples; here only the hook-up: the listener starts, reloads and
    # keeps serving (soft-fail) while the responder cannot be reached
    ocsp = ('ocsp { enable_ocsp_stapling = true, responder_url = "http://127.0.0.1:{{port.noresponder}}/", '
            'issuer_pem = "{{pki.inter_ca_cert}}" }')
    b = start_broker(server_only(ocsp), ssl=True, wait_ports=["tcp", "ssl"])
    out = s_client(b.ssl_port, "-status", "-CAfile", pki.root_ca_cert, stdin=m.connect("ocsp", version=4))
    assert "OCSP response: no response sent" in out and "Verify return code: 0" in out, out
    b.reload(wait_log=r"ssl:default: certificates reloaded")
    assert_accepted(b.ssl_port, client_context(ca=pki.root_ca_cert), "after-reload")


def test_ocsp_stapling_needs_a_readable_issuer(check_config):
    status, out = check_config(server_only('ocsp { enable_ocsp_stapling = true, responder_url = "http://127.0.0.1:1/", '
                                           'issuer_pem = "no-such-issuer.pem" }'))
    assert status == 1 and "no-such-issuer.pem" in out, out


# ---- contradictions ----------------------------------------------------------------------------

@pytest.mark.parametrize("extra,message", [
    ('versions = ["tlsv1.2"]\n    ciphers = ["TLS_AES_128_GCM_SHA256"]', "only TLS 1.3 suites"),
    ('versions = ["tlsv1"]\n    ciphers = ["ECDHE-RSA-AES128-GCM-SHA256"]', "works with versions"),
    ('dhfile = "no-such-dh.pem"', "cannot read dhfile"),
    ('ciphers = "ECDHE-RSA-AES128-GCM-SHA256,BOGUS"', "unknown cipher BOGUS"),
], ids=["tls13-suites-without-tls13", "tls12-only-ciphers-with-tls10", "missing-dhfile", "unknown-cipher"])
def test_contradictions_refused_by_check(check_config, extra, message):
    status, out = check_config(server_only(extra))
    assert status == 1, out
    assert message in out and "bulwark.conf:" in out, out


def test_verify_peer_with_an_empty_cacertfile_is_refused(check_config):
    status, out = check_config(mtls(cacertfile="empty.pem"), files={"empty.pem": ""})
    assert status == 1 and "holds no certificate" in out, out
