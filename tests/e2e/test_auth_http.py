"""HTTP authentication (`mechanism = password_based, backend = http`, EMQX 5.8 §4.2/§4.6): a local
HTTP(S) server started by each test records the requests the broker makes and answers as the test
says. Covers allow/deny/ignore, 204, placeholders in URL/body/headers (including the certificate CN
over mTLS), GET vs POST encodings, backend failures and ignore_backend_failures, a server that is
down or too slow, https with verification, hostile usernames, and expire_at."""
import json
import ssl
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import pytest

from bw import mqtt_raw as m
from bw.ports import free_port
from bw.tls import client_context

SECRET = "jwt-secret-for-fallback"


# ---- the test's HTTP server ----------------------------------------------------------------------

class Request:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.raw_path = path
        u = urllib.parse.urlsplit(path)
        self.path = u.path
        self.query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        self.raw_query = u.query
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.method} {self.raw_path} {self.headers} {self.body!r}>"


class AuthServer:
    """A threaded HTTP/1.1 server on 127.0.0.1. `answer(req)` returns (status, content_type, body);
    every request is recorded in `requests`."""

    def __init__(self, answer=None, tls=None):
        self.requests = []
        self.cond = threading.Condition()
        self.answer = answer or (lambda req: (200, "application/json", {"result": "allow"}))
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = Request(self.command, self.path, dict(self.headers), body)
                with outer.cond:
                    outer.requests.append(req)
                    outer.cond.notify_all()
                status, ctype, payload = outer.answer(req)
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                elif isinstance(payload, str):
                    payload = payload.encode()
                try:
                    self.send_response(status)
                    if status != 204:
                        if ctype:
                            self.send_header("Content-Type", ctype)
                        self.send_header("Content-Length", str(len(payload or b"")))
                    self.end_headers()
                    if status != 204 and payload:
                        self.wfile.write(payload)
                except OSError:
                    pass  # the broker gave up (request_timeout)

            do_GET = do_POST = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.srv = Server(("127.0.0.1", self.port), Handler)
        if tls is not None:
            self.srv.socket = tls.wrap_socket(self.srv.socket, server_side=True)
        self.thread = threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def wait_requests(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.requests) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {n} requests, got {len(self.requests)}: {self.requests}"
                self.cond.wait(left)
            return list(self.requests)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def auth_server():
    made = []

    def make(answer=None, tls=None):
        s = AuthServer(answer, tls)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def by_username(req):
    """Answers keyed on the username the broker sent (POST JSON body, or GET query)."""
    user = req.json()["username"] if req.method == "POST" else req.query.get("username", [""])[0]
    table = {
        "alice": (200, "application/json", {"result": "allow"}),
        "root": (200, "application/json", {"result": "allow", "is_superuser": True}),
        "bob": (200, "application/json", {"result": "deny"}),
        "carol": (200, "application/json", {"result": "ignore"}),
        "dave": (204, None, b""),
        "empty": (200, "application/json", {}),
        "e500": (500, "application/json", {"result": "allow"}),
        "garbage": (200, "application/json", b"<html>not json"),
        "texty": (200, "text/plain", b"allow"),
        "weird": (200, "application/json", {"result": "maybe"}),
        "badacl": (200, "application/json", {"result": "allow", "acl": "publish everything"}),
        "past": (200, "application/json", {"result": "allow", "expire_at": int(time.time()) - 10}),
        "form": (200, "application/x-www-form-urlencoded", b"result=allow&is_superuser=false"),
    }
    return table.get(user, (200, "application/json", {"result": "deny"}))


def http_authn(port, extra="", method="post", body=None, url=None, ssl_opts=""):
    body = body if body is not None else 'body { username = "${username}", password = "${password}" }'
    url = url or f"http://127.0.0.1:{port}/auth"
    return f"""
      {{
        mechanism = password_based
        backend = http
        method = {method}
        url = "{url}"
        {body}
        request_timeout = 3s
        {ssl_opts}
        {extra}
      }}"""


def chain(*entries, settings=""):
    return "authentication = [" + ",".join(entries) + "]\n" + settings


JWT_FALLBACK = f"""
      {{ mechanism = jwt, algorithm = hmac-based, secret = "{SECRET}" }}"""


def token(sub="x", exp_in=300):
    return jwt.encode({"sub": sub, "exp": int(time.time()) + exp_in}, SECRET, algorithm="HS256").encode()


def outcome(b, version, user, password=b"pw", client_id="c1"):
    c = m.RawClient(b.tcp_port, version=version)
    try:
        p = c.connect(client_id, username=user, password=password, expect_rc=None)
        return p.rc
    finally:
        c.close()


V5_CODES = {"ok": 0, "bad": 0x86, "notauth": 0x87}
V3_CODES = {"ok": 0, "bad": 4, "notauth": 5}


# ---- results ------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_allow_deny_ignore_and_204(start_broker, auth_server, version):
    srv = auth_server(by_username)
    b = start_broker(chain(http_authn(srv.port)))
    codes = V5_CODES if version == 5 else V3_CODES
    assert outcome(b, version, "alice") == codes["ok"]
    assert outcome(b, version, "root") == codes["ok"]           # superuser: still an allow
    assert outcome(b, version, "dave") == codes["ok"]           # 204
    assert outcome(b, version, "form") == codes["ok"]           # x-www-form-urlencoded answer
    assert outcome(b, version, "bob") == codes["bad"]           # deny: bad username or password
    assert outcome(b, version, "carol") == codes["notauth"]     # ignore, chain exhausted
    assert outcome(b, version, "empty") == codes["notauth"]     # no result: ignore
    assert outcome(b, version, "badacl") == codes["bad"]        # invalid acl: 0x86 (EMQX)
    assert outcome(b, version, "past") == codes["bad"]           # expire_at in the past: 0x86
    reqs = srv.wait_requests(9)
    assert all(r.method == "POST" for r in reqs)


def test_ignore_passes_to_the_next_authenticator(start_broker, auth_server):
    srv = auth_server(by_username)
    b = start_broker(chain(http_authn(srv.port), JWT_FALLBACK))
    assert outcome(b, 5, "carol", token()) == 0       # http ignores, jwt accepts
    assert outcome(b, 5, "bob", token()) == 0x86      # http denies: the chain stops there
    assert outcome(b, 5, "carol", b"not-a-jwt") == 0x87


def test_no_password_is_ignored_without_a_request(start_broker, auth_server):
    srv = auth_server(by_username)
    b = start_broker(chain(http_authn(srv.port)))
    c = m.RawClient(b.tcp_port, version=5)
    c.connect("nopw", username="alice", expect_rc=0x87)
    c.close()
    # v5 allows a password without a username: the request is made, ${username} renders empty.
    c = m.RawClient(b.tcp_port, version=5)
    c.connect("nouser", password=b"pw", expect_rc=0x86)
    c.close()
    reqs = srv.wait_requests(1)
    time.sleep(0.2)
    assert len(srv.requests) == 1 and reqs[0].json() == {"username": "", "password": "pw"}


# ---- placeholders and encodings -------------------------------------------------------------------

def test_post_placeholders_in_url_body_and_headers(start_broker, auth_server):
    srv = auth_server(lambda req: (200, "application/json", {"result": "allow"}))
    body = """body {
          username = "${username}", password = "${password}", clientid = "${clientid}",
          peerhost = "${peerhost}", listener = "${listener}", fixed = "lit\\"eral", n = 7,
          nested { cid = "${clientid}" }, notallowed = "${foo}"
        }
        headers { X-User = "${username}", X-Client = "id=${clientid}", Accept = "application/json" }"""
    url = f"http://127.0.0.1:{srv.port}/auth/${{clientid}}/x?user=${{username}}&static=1"
    b = start_broker(chain(http_authn(srv.port, body=body, url=url)))
    c = m.RawClient(b.tcp_port, version=5)
    c.connect("dev/1 ü", username="Ünï code", password="pä ss\"w0rd".encode(), expect_rc=0)
    (r,) = srv.wait_requests(1)
    assert r.method == "POST"
    assert r.raw_path == "/auth/dev%2F1%20%C3%BC/x?user=%C3%9Cn%C3%AF%20code&static=1"
    assert r.query == {"user": ["Ünï code"], "static": ["1"]}
    assert r.json() == {
        "username": "Ünï code", "password": "pä ss\"w0rd", "clientid": "dev/1 ü",
        "peerhost": "127.0.0.1", "listener": "tcp:default", "fixed": "lit\"eral", "n": 7,
        "nested": {"cid": "dev/1 ü"}, "notallowed": "${foo}",
    }
    h = r.headers
    assert h["content-type"] == "application/json"
    assert h["x-user"] == "Ünï code".encode().decode("latin-1")
    assert h["x-client"] == "id=dev/1 ü".encode().decode("latin-1")
    assert h["accept"] == "application/json"
    assert h["cache-control"] == "no-cache"
    assert h["keep-alive"] == "timeout=30, max=1000"


def test_get_sends_the_body_as_a_query_string(start_broker, auth_server):
    srv = auth_server(by_username)
    body = 'body { username = "${username}", password = "${password}", cid = "${clientid}" }'
    b = start_broker(chain(http_authn(srv.port, method="get", body=body, url=f"http://127.0.0.1:{srv.port}/q?a=1")))
    assert outcome(b, 4, "alice", b"p&w=d +", client_id="c 1") == 0
    assert outcome(b, 4, "bob") == 4
    r = srv.wait_requests(2)[0]
    assert r.method == "GET" and r.body == b""
    assert "content-type" not in r.headers
    assert r.query == {"a": ["1"], "username": ["alice"], "password": ["p&w=d +"], "cid": ["c 1"]}
    assert "p%26w%3Dd%20%2B" in r.raw_query


def test_cert_common_name_over_mtls(start_broker, auth_server, pki):
    srv = auth_server(lambda req: (200, "application/json", {"result": "allow"}))
    body = 'body { cn = "${cert_common_name}", subject = "${cert_subject}", username = "${username}" }'
    b = start_broker(chain(http_authn(srv.port, body=body)) + """
        listeners.ssl.default {
          ssl_options {
            cacertfile = "{{pki.ca_bundle}}"
            certfile   = "{{pki.server_chain}}"
            keyfile    = "{{pki.server_key}}"
            verify = verify_peer
            fail_if_no_peer_cert = true
          }
        }""", ssl=True)
    ctx = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    c = m.RawClient(b.ssl_port, version=5, tls=ctx)
    c.connect("dev", username="u", password=b"p", expect_rc=0)
    (r,) = srv.wait_requests(1)
    assert r.json()["cn"] == "device-001"
    assert r.json()["subject"].startswith("CN=device-001")
    assert r.json()["username"] == "u"


def test_hostile_usernames_pass_through_verbatim(start_broker, auth_server):
    names = [
        "' OR '1'='1' --",
        "admin\"}, {\"result\": \"allow\"",
        "../../etc/passwd",
        "a&password=x&b=",
        "${password}",
        "%00%0d%0a",
        "semi;colon|pipe`tick`$(id)",
    ]
    srv = auth_server(lambda req: (200, "application/json", {"result": "deny"}))
    url = f"http://127.0.0.1:{srv.port}/u/${{username}}"
    b = start_broker(chain(http_authn(srv.port, url=url)))
    for name in names:
        assert outcome(b, 5, name, b"pw") == 0x86
    reqs = srv.wait_requests(len(names))
    for name, r in zip(names, reqs):
        assert r.json() == {"username": name, "password": "pw"}
        assert r.raw_path == "/u/" + urllib.parse.quote(name, safe="-._~")
        assert urllib.parse.unquote(r.path) == "/u/" + name


# ---- failures --------------------------------------------------------------------------------------

@pytest.mark.parametrize("user", ["e500", "garbage", "texty", "weird"])
def test_backend_failure_policy(start_broker, auth_server, user):
    srv = auth_server(by_username)
    # Default ignore_backend_failures = true: the failure is an ignore, the next authenticator runs.
    b = start_broker(chain(http_authn(srv.port), JWT_FALLBACK))
    assert outcome(b, 5, user, token()) == 0
    assert outcome(b, 5, user, b"not-a-token") == 0x87
    assert outcome(b, 4, user, b"not-a-token") == 5
    b.stop()
    # ignore_backend_failures = false: a failure refuses with 0x87, whatever comes next.
    b2 = start_broker(chain(http_authn(srv.port), JWT_FALLBACK,
                            settings="authentication_settings.ignore_backend_failures = false"))
    assert outcome(b2, 5, user, token()) == 0x87
    assert outcome(b2, 4, user, token()) == 5
    assert outcome(b2, 5, "alice", token()) == 0


def test_server_down(start_broker):
    port = free_port()  # nothing listens there
    b = start_broker(chain(http_authn(port), JWT_FALLBACK))
    t0 = time.monotonic()
    assert outcome(b, 5, "alice", b"pw") == 0x87
    assert time.monotonic() - t0 < 3
    assert outcome(b, 5, "alice", token()) == 0
    b.wait_for_log(r"backend failure: HTTP request failed")
    b.stop()
    b2 = start_broker(chain(http_authn(port), settings="authentication_settings.ignore_backend_failures = false"))
    assert outcome(b2, 5, "alice", b"pw") == 0x87


def test_slow_server_times_out_while_others_flow(start_broker, auth_server):
    release = threading.Event()

    def answer(req):
        if req.json()["username"] == "slow":
            release.wait(10)
        return 200, "application/json", {"result": "allow"}

    srv = auth_server(answer)
    b = start_broker(chain(http_authn(srv.port, extra="request_timeout = 1s")))
    slow = m.RawClient(b.tcp_port, version=5, timeout=8)
    t0 = time.monotonic()
    slow.send(m.connect("slow-client", version=5, username="slow", password=b"pw"))
    srv.wait_requests(1)
    # Meanwhile other clients are authenticated at once.
    for i in range(5):
        t1 = time.monotonic()
        assert outcome(b, 5, "fast", b"pw", client_id=f"fast{i}") == 0
        assert time.monotonic() - t1 < 0.9
    p = slow.expect(m.CONNACK, timeout=8)
    elapsed = time.monotonic() - t0
    release.set()
    assert p.rc == 0x87, p
    assert 0.9 <= elapsed < 4, elapsed
    slow.close()
    b.wait_for_log(r"backend failure: HTTP request failed: .*[Tt]imeout")


# ---- TLS ------------------------------------------------------------------------------------------

def server_tls(pki):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pki.server_chain, pki.server_key)
    return ctx


def test_https_with_verify_peer(start_broker, auth_server, pki):
    srv = auth_server(by_username, tls=server_tls(pki))
    url = f"https://localhost:{srv.port}/auth"
    good = f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.ca_bundle}" }}'
    b = start_broker(chain(http_authn(srv.port, url=url, ssl_opts=good)))
    assert outcome(b, 5, "alice") == 0
    assert outcome(b, 5, "bob") == 0x86
    b.stop()
    # A CA that did not sign the server: the handshake fails, a backend failure.
    bad = f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.wrong_ca_cert}" }}'
    b2 = start_broker(chain(http_authn(srv.port, url=url, ssl_opts=bad)))
    assert outcome(b2, 5, "alice") == 0x87
    b2.wait_for_log(r"backend failure: HTTP request failed")
    b2.stop()
    # verify_none (EMQX's default): accepted without checking.
    none = f'ssl {{ enable = true, verify = verify_none, cacertfile = "{pki.wrong_ca_cert}" }}'
    b3 = start_broker(chain(http_authn(srv.port, url=url, ssl_opts=none)))
    assert outcome(b3, 5, "alice") == 0
    assert len(srv.requests) == 3


def test_https_name_must_match_with_verify_peer(start_broker, auth_server, pki):
    srv = auth_server(by_username, tls=server_tls(pki))
    good = f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.ca_bundle}" }}'
    # 127.0.0.1 is in the server certificate's SAN; "localhost.invalid" via SNI is not.
    b = start_broker(chain(http_authn(srv.port, url=f"https://127.0.0.1:{srv.port}/auth", ssl_opts=good)))
    assert outcome(b, 5, "alice") == 0
    b.stop()
    sni = (f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.ca_bundle}", '
           f'server_name_indication = "other.example" }}')
    b2 = start_broker(chain(http_authn(srv.port, url=f"https://127.0.0.1:{srv.port}/auth", ssl_opts=sni)))
    assert outcome(b2, 5, "alice") == 0x87


def test_https_client_certificate(start_broker, auth_server, pki):
    ctx = server_tls(pki)
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.load_verify_locations(pki.ca_bundle)
    srv = auth_server(by_username, tls=ctx)
    url = f"https://localhost:{srv.port}/auth"
    mtls = (f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.ca_bundle}", '
            f'certfile = "{pki.client_cert}", keyfile = "{pki.client_key}" }}')
    b = start_broker(chain(http_authn(srv.port, url=url, ssl_opts=mtls)))
    assert outcome(b, 5, "alice") == 0
    b.stop()
    # Without a client certificate the server refuses the handshake: a backend failure.
    plain = f'ssl {{ enable = true, verify = verify_peer, cacertfile = "{pki.ca_bundle}" }}'
    b2 = start_broker(chain(http_authn(srv.port, url=url, ssl_opts=plain)))
    assert outcome(b2, 5, "alice") == 0x87
    assert len(srv.requests) == 1


# ---- expiry -----------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_expire_at_disconnects_the_client(start_broker, auth_server):
    srv = auth_server(lambda req: (200, "application/json",
                                   {"result": "allow", "expire_at": int(time.time()) + 2}))
    b = start_broker(chain(http_authn(srv.port)))
    c5 = m.RawClient(b.tcp_port, version=5, timeout=10)
    c5.connect("exp5", username="u", password=b"p", expect_rc=0)
    c3 = m.RawClient(b.tcp_port, version=4, timeout=10)
    c3.connect("exp3", username="u", password=b"p", expect_rc=0)
    t0 = time.monotonic()
    c5.ping()
    c5.expect_closed(timeout=6, reason=0x87)
    c3.expect_closed(timeout=6)
    assert time.monotonic() - t0 < 6


# ---- configuration ------------------------------------------------------------------------------

def test_config_errors_name_file_and_line(check_config):
    status, out = check_config("""authentication = [
  {
    mechanism = password_based
    backend = http
    method = get
    url = "http://127.0.0.1:1/auth"
    headers { content-type = "application/json" }
  }
]
""")
    assert status != 0
    assert ":7:" in out and "content-type" in out, out
    status, out = check_config("""authentication = [
  { mechanism = password_based, backend = http, method = post }
]
""")
    assert status != 0 and "url is required" in out, out
    status, out = check_config("""authentication = [
  { mechanism = password_based, backend = http, url = "http://${username}:80/" }
]
""")
    assert status != 0 and ":2:" in out and "host" in out, out
    status, out = check_config("""authentication = [
  { mechanism = password_based, backend = http, url = "http://127.0.0.1/", pool_size = 4,
    enable_pipelining = 100, connect_timeout = 2s, request_timeout = 1s,
    headers { "X-Api-Key" = "k" }, body { u = "${username}" } }
]
""")
    assert status == 0, out


def test_stop_while_requests_are_in_flight(start_broker, auth_server):
    release = threading.Event()

    def answer(req):
        release.wait(15)
        return 200, "application/json", {"result": "allow"}

    srv = auth_server(answer)
    b = start_broker(chain(http_authn(srv.port, extra="request_timeout = 30s")))
    clients = []
    for i in range(3):
        c = m.RawClient(b.tcp_port, version=5)
        c.send(m.connect(f"waiting{i}", version=5, username="u", password=b"p"))
        clients.append(c)
    srv.wait_requests(3)
    t0 = time.monotonic()
    b.stop()  # exits 0, promptly, with no sanitizer report (checked at teardown too)
    assert time.monotonic() - t0 < 8
    release.set()
    for c in clients:
        c.close()
