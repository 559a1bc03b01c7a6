"""Revocation of client certificates: crlfile, CRL distribution points (enable_crl_check with the
crl_cache), OCSP for client certificates (ocsp_client), OCSP stapling, and revocation of live
connections (SPEC §2 ssl_options, §3 "Revocation defaults", §4; docs/REVOCATION.md).

One test per row of the decision table in docs/REVOCATION.md (the row is named in each test's
docstring). A refusal in the TLS handshake shows up as ("tls_error" | "closed") from
connect_outcome; a refusal before CONNACK as CONNACK 0x87 (v5) / 5 (v3.1.1).

The CRL distribution point is a Python http.server on a free loopback port run by the test
(modes: serve, slow = never answers, down = nothing listening); the OCSP responder is
`openssl ocsp -index ... -port ...` (OpenSSL 3.0 takes a bare port number and listens on all
addresses; it does not re-read its index, so a status change restarts it on the same port).
"""
import datetime
import http.server
import re
import subprocess
import threading
import time
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw import procs
from bw.ports import free_port
from bw.tls import client_context

NOT_AUTHORIZED_V5 = 0x87
NOT_AUTHORIZED_V4 = 5


# ---- helpers: servers ------------------------------------------------------------------------

class CrlServer:
    """A distribution point on 127.0.0.1: serves files set with put(); mode "serve", "slow" (accepts
    and never answers until stopped) or "error" (HTTP 503). Counts GET requests per path."""

    def __init__(self, port=None):
        self.port = port or free_port()
        self.files = {}
        self.mode = "serve"
        self.hits = {}
        self.release = threading.Event()
        srv = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                srv.hits[self.path] = srv.hits.get(self.path, 0) + 1
                if srv.mode == "slow":
                    srv.release.wait(120)
                    return
                body = srv.files.get(self.path)
                if srv.mode == "error" or body is None:
                    self.send_response(503 if srv.mode == "error" else 404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/pkix-crl")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):    # an OCSP responder that never answers (mode "slow")
                n = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(n)
                self.do_GET()

            def log_message(self, *a):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()
        self.running = True

    def url(self, path="/inter.crl"):
        return f"http://127.0.0.1:{self.port}{path}"

    def put(self, path, data):
        self.files[path] = Path(data).read_bytes() if isinstance(data, (str, Path)) else data

    def stop(self):
        if self.running:
            self.running = False
            self.release.set()
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def crl_server():
    made = []

    def make(port=None):
        """port: serve on that port again (a server that comes back)."""
        s = CrlServer(port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def serial_hex(cert_path):
    from cryptography import x509
    n = x509.load_pem_x509_certificate(Path(cert_path).read_bytes()).serial_number
    h = format(n, "X")
    return h if len(h) % 2 == 0 else "0" + h


class OcspResponder:
    """`openssl ocsp` answering for certificates issued by the test intermediate. statuses:
    {cert_path: "good" | "revoked"}; any other certificate is "unknown"."""

    def __init__(self, pki, workdir, statuses=None):
        self.pki = pki
        self.dir = Path(workdir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc = None
        if statuses is not None:
            self.start(statuses)

    def url(self):
        return f"http://127.0.0.1:{self.port}/"

    def start(self, statuses):
        lines = []
        for cert, st in statuses.items():
            if st == "good":
                lines.append(f"V\t301231235959Z\t\t{serial_hex(cert)}\tunknown\t/CN=x\n")
            else:
                lines.append(f"R\t301231235959Z\t200101000000Z,keyCompromise\t{serial_hex(cert)}\tunknown\t/CN=x\n")
        idx = self.dir / "index.txt"
        idx.write_text("".join(lines))
        (self.dir / "index.txt.attr").write_text("unique_subject = no\n")
        logf = self.dir / "ocsp.log"
        start = logf.stat().st_size if logf.exists() else 0
        self.log = open(logf, "ab")
        self.proc = procs.spawn(["openssl", "ocsp", "-index", idx, "-port", self.port,
                                 "-rsigner", self.pki.inter_ca_cert, "-rkey", self.pki.inter_ca_key,
                                 "-CA", self.pki.inter_ca_cert, "-ndays", "1"],
                                stdout=self.log, stderr=subprocess.STDOUT)
        # Not a connect probe: the single-threaded responder hangs on a connection that sends nothing.
        deadline = time.monotonic() + 10
        while b"waiting for OCSP client connections" not in logf.read_bytes()[start:]:
            assert self.proc.poll() is None, logf.read_text()
            assert time.monotonic() < deadline, "openssl ocsp did not start"
            time.sleep(0.05)

    def stop(self):
        if self.proc:
            procs.kill(self.proc)
            self.proc = None
            self.log.close()

    def restart(self, statuses):
        self.stop()
        self.start(statuses)


@pytest.fixture
def ocsp_responder(pki, tmp_path):
    made = []

    def make(statuses=None, name=None):
        """statuses None: not started yet (its url() is known, for issuing certificates)."""
        r = OcspResponder(pki, tmp_path / (name or f"ocsp{len(made)}"), statuses)
        made.append(r)
        return r

    yield make
    for r in made:
        r.stop()


# ---- helpers: broker and clients ---------------------------------------------------------------

def config(ssl_extra="", top="", fail_mode="open", http_timeout="3s"):
    return ("""
crl_cache { refresh_interval = 1m, http_timeout = %s, capacity = 100, fail_mode = %s }
%s
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
""" % (http_timeout, fail_mode, top, ssl_extra))


def tls_for(pki, cert, key):
    return client_context(ca=pki.root_ca_cert, cert=cert, key=key)


def client(pki, tmp_path, name, **kw):
    """Issue a client certificate (ECDSA, by the intermediate); returns (chain_path, key_path, cert_path)."""
    cert, key, chain = pki.issue_client(tmp_path / "certs", name, **kw)
    return chain, key, cert


def outcome(port, tls, client_id="probe", version=5, timeout=10):
    return m.connect_outcome(port, version=version, tls=tls, client_id=client_id, timeout=timeout)


def assert_accepted(port, tls, client_id="ok", version=5):
    kind, what = outcome(port, tls, client_id, version)
    assert kind == "connack" and what.rc == 0, f"expected to be accepted, got {kind}: {what}"


def assert_refused_in_handshake(port, tls, client_id="refused"):
    kind, what = outcome(port, tls, client_id)
    # TLS 1.3: a rejected client certificate shows up after the client's handshake completed
    assert kind in ("tls_error", "closed"), f"expected a TLS refusal, got {kind}: {what}"


def tls12_alert(port, pki, cert, key):
    """The error a TLS 1.2 client gets in the handshake (the alert name is in it)."""
    ctx = client_context(ca=pki.root_ca_cert, cert=cert, key=key, max_version="1.2")
    kind, what = outcome(port, ctx)
    assert kind == "tls_error", (kind, what)
    return what


def assert_refused_at_connack(port, tls, client_id="refused", version=5):
    kind, what = outcome(port, tls, client_id, version)
    want = NOT_AUTHORIZED_V5 if version == 5 else NOT_AUTHORIZED_V4
    assert kind == "connack" and what.rc == want, f"expected CONNACK {want:#x}, got {kind}: {what}"


def crl_file(pki, path, revoked=(), **kw):
    return pki.make_crl(path, [str(r) for r in revoked], **kw)


def live_client(raw_client, b, pki, chain, key, cid):
    c = raw_client(b, version=5, tls=tls_for(pki, chain, key), timeout=10)
    c.connect(cid)
    return c


def expect_revoked_close(c, t0):
    """The server sends DISCONNECT 0x87 (v5) and closes c within 5 s of t0."""
    c.expect_closed(timeout=5, reason=NOT_AUTHORIZED_V5)
    assert time.monotonic() - t0 < 5


def past(**kw):
    return datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(**kw)


# ---- crlfile -------------------------------------------------------------------------------------

def test_revoked_in_crlfile_is_refused_in_the_handshake(start_broker, pki):
    """Row: revoked in crlfile -> TLS alert (certificate revoked); PEM and DER files."""
    for crl in (pki.crl_pem, pki.crl_der):
        b = start_broker(config(f'crlfile = "{crl}"'), ssl=True)
        assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_revoked_cert, pki.client_revoked_key))
        b.wait_for_log(r"certificate revoked")
        assert "CERTIFICATE_REVOKED" in tls12_alert(b.ssl_port, pki, pki.client_revoked_cert, pki.client_revoked_key)
        assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
        b.stop()


def test_good_certificate_is_accepted_with_every_source(start_broker, pki, tmp_path, crl_server,
                                                        ocsp_responder):
    """Row: good (crlfile + distribution point + OCSP all say good) -> CONNACK 0."""
    srv = crl_server()
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [pki.client_revoked_cert]))
    chain, key, cert = client(pki, tmp_path, "dev-good", crl_urls=[srv.url()])
    resp = ocsp_responder()
    chain2, key2, cert2 = client(pki, tmp_path, "dev-good-ocsp", crl_urls=[srv.url()], ocsp_url=resp.url())
    resp.start({cert2: "good"})
    b = start_broker(config(f'''crlfile = "{pki.crl_pem}"
    enable_crl_check = true
    ocsp_client {{ enable = true, fail_mode = closed, timeout = 5s }}''', fail_mode="closed"), ssl=True)
    for v in (4, 5):
        assert_accepted(b.ssl_port, tls_for(pki, chain, key), f"good-{v}", version=v)
        assert_accepted(b.ssl_port, tls_for(pki, chain2, key2), f"good-ocsp-{v}", version=v)
    assert srv.hits.get("/inter.crl") == 1   # fetched once, then cached


def test_multiple_crlfiles_and_multi_crl_pem(start_broker, pki, tmp_path):
    """crlfile as a list, and one PEM holding several CRLs (root + intermediate): all apply."""
    b = start_broker(config(f'crlfile = ["{pki.crl_empty}", "{pki.crl_chain}"]'), ssl=True)
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_revoked_cert, pki.client_revoked_key))
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))


def test_crlfile_expired_fail_open_warns_and_uses_it(start_broker, pki):
    """Row: crlfile expired, fail_mode open -> accepted with a warning; a listed cert is still refused."""
    b = start_broker(config(f'crlfile = "{pki.crl_expired}"'), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
    b.wait_for_log(r"warning: .*CRL of .*expired")
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_revoked_cert, pki.client_revoked_key))


def test_crlfile_expired_fail_closed_refuses_in_the_handshake(start_broker, pki):
    """Row: crlfile expired, fail_mode closed -> TLS alert (unable to get CRL)."""
    b = start_broker(config(f'crlfile = "{pki.crl_expired}"', fail_mode="closed"), ssl=True)
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
    b.wait_for_log(r"revocation check failed.*expired")
    assert "UNKNOWN_CA" in tls12_alert(b.ssl_port, pki, pki.client_chain, pki.client_key)


def test_unreadable_crlfile_refuses_to_start(start_broker, pki, tmp_path):
    bad = tmp_path / "bad.crl"
    bad.write_text("not a CRL")
    b = start_broker(config(f'crlfile = "{bad}"'), ssl=True, start=False, expect_exit=None)
    status, log = b.run_to_exit(timeout=10)
    assert status != 0 and "bad.crl" in log


def test_crl_check_chain_off_checks_the_leaf_only(start_broker, pki, tmp_path):
    """Row: crl_check_chain off, intermediate revoked by the root's CRL -> accepted."""
    root_crl = crl_file(pki, tmp_path / "root.crl", [pki.inter_ca_cert], ca="root")
    b = start_broker(config(f'crlfile = ["{root_crl}", "{pki.crl_empty}"]'), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))


def test_crl_check_chain_on_refuses_a_revoked_intermediate(start_broker, pki, tmp_path):
    """Row: crl_check_chain on, intermediate revoked -> TLS alert."""
    root_crl = crl_file(pki, tmp_path / "root.crl", [pki.inter_ca_cert], ca="root")
    b = start_broker(config(f'''crlfile = ["{root_crl}", "{pki.crl_empty}"]
    crl_check_chain = true'''), ssl=True)
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
    b.wait_for_log(r"certificate revoked.*Bulwark Test Root CA")
    # a client signed directly by the root is not affected
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_root_cert, pki.client_root_key))


# ---- distribution points -----------------------------------------------------------------------

def test_revoked_in_dp_crl_refused_at_connack_then_in_the_handshake(start_broker, pki, tmp_path, crl_server):
    """Row: revoked in DP CRL -> first connection (cache miss): CONNACK 0x87 / 5; once cached: TLS alert."""
    srv = crl_server()
    chain, key, cert = client(pki, tmp_path, "dev-dp-revoked", crl_urls=[srv.url()])
    good_chain, good_key, _ = client(pki, tmp_path, "dev-dp-good", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [cert]))
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key), version=5)
    b.wait_for_log(r"certificate revoked")
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, chain, key))
    assert_accepted(b.ssl_port, tls_for(pki, good_chain, good_key), version=4)
    assert srv.hits["/inter.crl"] == 1


def test_revoked_in_dp_crl_v311_gets_connack_5(start_broker, pki, tmp_path, crl_server):
    """Row: revoked in DP CRL, MQTT 3.1.1 -> CONNACK 5."""
    srv = crl_server()
    chain, key, cert = client(pki, tmp_path, "dev-dp-revoked4", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [cert], der=True))   # DER body
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key), version=4)


def test_dp_unreachable_no_cache_fail_open_accepts_with_warning(start_broker, pki, tmp_path):
    """Row: DP unreachable, no cached CRL, fail_mode open -> accepted, warning."""
    url = f"http://127.0.0.1:{free_port()}/inter.crl"     # nothing listens there
    chain, key, _ = client(pki, tmp_path, "dev-dp-down", crl_urls=[url])
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, chain, key))
    b.wait_for_log(r"warning: .*fetching CRL .*inter\.crl failed")
    b.wait_for_log(r"warning: .*unreachable \(fail_mode open")


def test_dp_unreachable_no_cache_fail_closed_refuses_at_connack(start_broker, pki, tmp_path):
    """Row: DP unreachable, no cached CRL, fail_mode closed -> CONNACK 0x87."""
    url = f"http://127.0.0.1:{free_port()}/inter.crl"
    chain, key, _ = client(pki, tmp_path, "dev-dp-down-closed", crl_urls=[url])
    b = start_broker(config("enable_crl_check = true", fail_mode="closed"), ssl=True)
    assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))
    b.wait_for_log(r"revocation check failed.*unreachable")


def test_dp_unreachable_with_cached_crl_keeps_the_last_good_one(start_broker, pki, tmp_path, crl_server):
    """Row: DP unreachable with a cached CRL -> the last good CRL keeps deciding (even in closed mode);
    the failed refresh is a warning and is retried."""
    srv = crl_server()
    chain, key, cert = client(pki, tmp_path, "dev-cached-revoked", crl_urls=[srv.url()])
    good_chain, good_key, good_cert = client(pki, tmp_path, "dev-cached-good", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [cert]))
    b = start_broker(config("enable_crl_check = true", fail_mode="closed"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, good_chain, good_key), "first")      # fills the cache
    srv.stop()
    mark = b.log_mark()
    b.ctl("reload", check=True)                                                   # refresh now: fails
    b.wait_for_log(r"warning: .*refreshing CRL .* failed.*keeping the last good CRL", since=mark)
    assert_accepted(b.ssl_port, tls_for(pki, good_chain, good_key), "second")
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, chain, key))
    # retried every 5 s: the server comes back with a CRL that also revokes the other client
    back = crl_server(srv.port)
    back.put("/inter.crl", crl_file(pki, tmp_path / "dp2.crl", [cert, good_cert], number=2))
    t0 = time.monotonic()
    b.wait_for_log(r"CRL .*inter\.crl fetched again after failures", since=mark, timeout=10)
    assert time.monotonic() - t0 < 7
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, good_chain, good_key))


def test_dp_crl_expired_fail_open_accepts_with_warning(start_broker, pki, tmp_path, crl_server):
    """Row: DP CRL expired, fail_mode open -> accepted, warning."""
    srv = crl_server()
    chain, key, _ = client(pki, tmp_path, "dev-dp-exp", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [], last_update=past(days=2),
                                   next_update=past(days=1)))
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, chain, key), "exp1")
    assert_accepted(b.ssl_port, tls_for(pki, chain, key), "exp2")   # cached: decided in the handshake
    b.wait_for_log(r"warning: .*CRL of .*expired")


def test_dp_crl_expired_fail_closed_refuses(start_broker, pki, tmp_path, crl_server):
    """Row: DP CRL expired, fail_mode closed -> CONNACK 0x87 on the fetch, then TLS alert."""
    srv = crl_server()
    chain, key, _ = client(pki, tmp_path, "dev-dp-exp-closed", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [], last_update=past(days=2),
                                   next_update=past(days=1)))
    b = start_broker(config("enable_crl_check = true", fail_mode="closed"), ssl=True)
    assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, chain, key))
    b.wait_for_log(r"revocation check failed.*expired")


def test_no_distribution_point_is_checked_against_crlfile_only(start_broker, pki, tmp_path, crl_server):
    """Row: no distribution point (crlfile only) -> the crlfile decides, nothing is fetched, even in
    closed mode."""
    b = start_broker(config(f'''crlfile = "{pki.crl_pem}"
    enable_crl_check = true''', fail_mode="closed"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, pki.client_revoked_cert, pki.client_revoked_key))
    assert "fetching CRL" not in b.run_log()


def test_no_crl_for_the_issuer_at_all_is_good(start_broker, pki):
    """Row: the issuer has no CRL in crlfile and the certificate no distribution point -> good."""
    b = start_broker(config(f'crlfile = "{pki.root_crl}"', fail_mode="closed"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))


def test_both_sources_apply(start_broker, pki, tmp_path, crl_server):
    """Row: both sources -> revoked in either is refused; good in both is accepted."""
    srv = crl_server()
    a_chain, a_key, a_cert = client(pki, tmp_path, "dev-file-revoked", crl_urls=[srv.url()])
    d_chain, d_key, d_cert = client(pki, tmp_path, "dev-dp-revoked-both", crl_urls=[srv.url()])
    g_chain, g_key, _ = client(pki, tmp_path, "dev-both-good", crl_urls=[srv.url()])
    filecrl = crl_file(pki, tmp_path / "file.crl", [a_cert])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp.crl", [d_cert]))
    b = start_broker(config(f'''crlfile = "{filecrl}"
    enable_crl_check = true'''), ssl=True)
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, a_chain, a_key))   # crlfile: no fetch needed
    assert srv.hits.get("/inter.crl") is None
    assert_refused_at_connack(b.ssl_port, tls_for(pki, d_chain, d_key))
    assert_accepted(b.ssl_port, tls_for(pki, g_chain, g_key))
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, d_chain, d_key))


def test_slow_distribution_point_does_not_delay_other_clients(start_broker, pki, tmp_path, crl_server):
    """A distribution point that never answers: its clients wait at most http_timeout (then fail_mode),
    concurrent fetches of that URL are coalesced, and other clients connect at once."""
    slow = crl_server()
    slow.mode = "slow"
    chain, key, _ = client(pki, tmp_path, "dev-slow", crl_urls=[slow.url()])
    b = start_broker(config(f'crlfile = "{pki.crl_pem}"\n    enable_crl_check = true', http_timeout="2s"),
                     ssl=True)
    results = {}

    def waiting(i):
        t0 = time.monotonic()
        results[i] = (outcome(b.ssl_port, tls_for(pki, chain, key), f"slow-{i}", timeout=15),
                      time.monotonic() - t0)

    threads = [threading.Thread(target=waiting, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while not slow.hits.get("/inter.crl") and time.monotonic() < deadline:   # the fetch has started
        time.sleep(0.02)
    assert slow.hits.get("/inter.crl") == 1
    t0 = time.monotonic()
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key), "fast")
    assert time.monotonic() - t0 < 1.5
    for t in threads:
        t.join(20)
    for i in range(3):
        (kind, what), took = results[i]
        assert kind == "connack" and what.rc == 0, (kind, what)    # fail_mode open
        assert took < 2 + 2.0, f"waited {took:.1f}s for a 2s http_timeout"
    assert slow.hits["/inter.crl"] == 1                             # one fetch for three clients


# ---- OCSP for client certificates ---------------------------------------------------------------

def ocsp_config(mode, timeout="3s"):
    return config(f"ocsp_client {{ enable = true, fail_mode = {mode}, timeout = {timeout} }}")


def test_ocsp_good_is_accepted_and_cached(start_broker, pki, tmp_path, ocsp_responder):
    """Row: OCSP good -> CONNACK 0; the answer is cached until nextUpdate."""
    resp = ocsp_responder()
    chain, key, cert = client(pki, tmp_path, "dev-ocsp-good", ocsp_url=resp.url())
    resp.start({cert: "good"})
    b = start_broker(ocsp_config("closed"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, chain, key), "g1")
    resp.stop()
    assert_accepted(b.ssl_port, tls_for(pki, chain, key), "g2")   # from the cache


def test_ocsp_revoked_is_refused_at_connack(start_broker, pki, tmp_path, ocsp_responder):
    """Row: OCSP revoked -> CONNACK 0x87; then refused in the handshake from the cache."""
    resp = ocsp_responder()
    chain, key, cert = client(pki, tmp_path, "dev-ocsp-revoked", ocsp_url=resp.url())
    resp.start({cert: "revoked"})
    b = start_broker(ocsp_config("open"), ssl=True)
    assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))
    b.wait_for_log(r"certificate revoked.*OCSP")
    assert_refused_in_handshake(b.ssl_port, tls_for(pki, chain, key))


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_ocsp_unknown_is_a_failure(start_broker, pki, tmp_path, ocsp_responder, mode):
    """Row: OCSP unknown -> open: accepted with a warning; closed: CONNACK 0x87."""
    resp = ocsp_responder({pki.client_cert: "good"})   # our certificate is not in the index
    chain, key, cert = client(pki, tmp_path, f"dev-ocsp-unknown-{mode}", ocsp_url=resp.url())
    b = start_broker(ocsp_config(mode), ssl=True)
    if mode == "open":
        assert_accepted(b.ssl_port, tls_for(pki, chain, key))
        b.wait_for_log(r"warning: .*says unknown \(fail_mode open")
    else:
        assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))
        b.wait_for_log(r"revocation check failed.*unknown")


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_ocsp_responder_down(start_broker, pki, tmp_path, mode):
    """Row: OCSP responder down (connection refused) -> open: accepted with a warning; closed: 0x87."""
    chain, key, _ = client(pki, tmp_path, f"dev-ocsp-down-{mode}", ocsp_url=f"http://127.0.0.1:{free_port()}/")
    b = start_broker(ocsp_config(mode), ssl=True)
    if mode == "open":
        assert_accepted(b.ssl_port, tls_for(pki, chain, key))
        b.wait_for_log(r"warning: .*no OCSP answer")
    else:
        assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))


@pytest.mark.parametrize("mode", ["open", "closed"])
def test_ocsp_timeout(start_broker, pki, tmp_path, crl_server, mode):
    """Row: OCSP timeout (responder never answers) -> after ocsp_client.timeout: open accepted,
    closed CONNACK 0x87."""
    slow = crl_server()
    slow.mode = "slow"
    chain, key, _ = client(pki, tmp_path, f"dev-ocsp-slow-{mode}", ocsp_url=slow.url("/"))
    b = start_broker(ocsp_config(mode, timeout="1s"), ssl=True)
    t0 = time.monotonic()
    if mode == "open":
        assert_accepted(b.ssl_port, tls_for(pki, chain, key))
    else:
        assert_refused_at_connack(b.ssl_port, tls_for(pki, chain, key))
    took = time.monotonic() - t0
    assert 0.8 < took < 4, took


def test_ocsp_without_aia_is_not_checked(start_broker, pki):
    """A certificate without an OCSP responder in its AIA: OCSP does not apply (good)."""
    b = start_broker(ocsp_config("closed"), ssl=True)
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))


# ---- live connections ----------------------------------------------------------------------------

def test_live_crlfile_replaced_and_sighup_disconnects(start_broker, pki, tmp_path, raw_client):
    crl = tmp_path / "live.crl"
    crl.write_bytes(Path(pki.crl_empty).read_bytes())
    b = start_broker(config(f'crlfile = "{crl}"'), ssl=True)
    c = live_client(raw_client, b, pki, pki.client_chain, pki.client_key, "live-file")
    other = live_client(raw_client, b, pki, pki.client_ec_chain, pki.client_ec_key, "live-other")
    crl_file(pki, tmp_path / "live.new", [pki.client_cert], number=2)
    (tmp_path / "live.new").replace(crl)
    mark = b.log_mark()
    t0 = time.monotonic()
    b.reload()
    expect_revoked_close(c, t0)
    b.wait_for_log(r"live-file.*certificate revoked", since=mark)
    assert other.is_open()
    other.ping()


def test_live_dp_crl_changed_and_ctl_reload_disconnects(start_broker, pki, tmp_path, crl_server, raw_client):
    srv = crl_server()
    chain, key, cert = client(pki, tmp_path, "dev-live-dp", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp1.crl", []))
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    c = live_client(raw_client, b, pki, chain, key, "live-dp")
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp2.crl", [cert], number=2))
    mark = b.log_mark()
    t0 = time.monotonic()
    b.ctl("reload", check=True)     # refreshes cached CRLs now (else: every refresh_interval, >= 1m)
    expect_revoked_close(c, t0)
    b.wait_for_log(r"live-dp.*certificate revoked", since=mark)


@pytest.mark.timeout(180)
def test_live_dp_crl_changed_is_seen_by_the_periodic_refresh(start_broker, pki, tmp_path, crl_server,
                                                              raw_client):
    """Without any reload: the refresh_interval (1m minimum) picks the new CRL up."""
    srv = crl_server()
    chain, key, cert = client(pki, tmp_path, "dev-live-dp-timer", crl_urls=[srv.url()])
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp1.crl", []))
    b = start_broker(config("enable_crl_check = true"), ssl=True)
    c = live_client(raw_client, b, pki, chain, key, "live-dp-timer")
    t0 = time.monotonic()
    srv.put("/inter.crl", crl_file(pki, tmp_path / "dp2.crl", [cert], number=2))
    c.expect_closed(timeout=75, reason=NOT_AUTHORIZED_V5)
    assert time.monotonic() - t0 > 50     # it was the timer, not the connect
    b.wait_for_log(r"live-dp-timer.*certificate revoked")


def test_live_ocsp_answer_becomes_revoked(start_broker, pki, tmp_path, ocsp_responder, raw_client):
    resp = ocsp_responder()
    chain, key, cert = client(pki, tmp_path, "dev-live-ocsp", ocsp_url=resp.url())
    resp.start({cert: "good"})
    b = start_broker(ocsp_config("closed"), ssl=True)
    c = live_client(raw_client, b, pki, chain, key, "live-ocsp")
    resp.restart({cert: "revoked"})
    mark = b.log_mark()
    t0 = time.monotonic()
    b.ctl("reload", check=True)     # asks again for the certificates of live connections
    expect_revoked_close(c, t0)
    b.wait_for_log(r"live-ocsp.*certificate revoked", since=mark)


# ---- OCSP stapling --------------------------------------------------------------------------------

def s_client_status(port, pki):
    r = subprocess.run(["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-status", "-servername",
                        "localhost", "-CAfile", pki.root_ca_cert, "-cert", pki.client_cert, "-key",
                        pki.client_key],
                       input=b"", capture_output=True, timeout=15)
    return r.stdout.decode(errors="replace") + r.stderr.decode(errors="replace")


def stapling_config(url, refresh="1m"):
    return config(f'''ocsp {{
      enable_ocsp_stapling = true
      responder_url = "{url}"
      issuer_pem = "{{{{pki.inter_ca_cert}}}}"
      refresh_interval = {refresh}
      refresh_http_timeout = 3s
    }}''')


def test_ocsp_stapling_staples_a_good_response(start_broker, pki, ocsp_responder):
    resp = ocsp_responder({pki.server_cert: "good"})
    b = start_broker(stapling_config(resp.url()), ssl=True)
    deadline = time.monotonic() + 10
    while True:
        out = s_client_status(b.ssl_port, pki)
        if "OCSP Response Status: successful" in out or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert "OCSP Response Status: successful" in out, out
    assert "Cert Status: good" in out, out
    # a client that does not ask gets no staple, and connects
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))


def test_ocsp_stapling_without_a_valid_response_handshakes_without_staple(start_broker, pki, ocsp_responder):
    # responder down: retried every 5 s, the handshake goes on without a staple
    b = start_broker(stapling_config(f"http://127.0.0.1:{free_port()}/"), ssl=True)
    b.wait_for_log(r"warning: .*OCSP staple from .*retrying in 5s")
    out = s_client_status(b.ssl_port, pki)
    assert "OCSP response: no response sent" in out, out
    assert_accepted(b.ssl_port, tls_for(pki, pki.client_chain, pki.client_key))
    # responder says revoked: not cached, not stapled
    resp = ocsp_responder({pki.server_cert: "revoked"})
    b2 = start_broker(stapling_config(resp.url()), ssl=True, name="revoked")
    b2.wait_for_log(r"warning: .*OCSP staple from .*revoked")
    out = s_client_status(b2.ssl_port, pki)
    assert "OCSP response: no response sent" in out, out
