"""JWT authentication (`mechanism = jwt`, EMQX 5.8 §4.5), tokens made with python3-jwt: HMAC and
public keys (RS256, ES256, EdDSA), claims (exp, nbf, verify_claims with placeholders, aud), the token
in the username, JWKS served by a local HTTP server (key rotation, endpoint down at start), and
disconnect_after_expire."""
import base64
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jwt
import jwt.algorithms
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from bw import mqtt_raw as m
from bw.ports import free_port

SECRET = "a-very-secret-hmac-key"


def now():
    return int(time.time())


def hs(claims, secret=SECRET, alg="HS256", headers=None):
    return jwt.encode(claims, secret, algorithm=alg, headers=headers).encode()


def outcome(b, version, password=None, client_id="dev1", username="user"):
    c = m.RawClient(b.tcp_port, version=version)
    try:
        return c.connect(client_id, username=username, password=password, expect_rc=None).rc
    finally:
        c.close()


def hmac_chain(extra=""):
    return f"""
    authentication = [ {{
      mechanism = jwt
      algorithm = hmac-based
      secret = "{SECRET}"
      {extra}
    }} ]"""


def pem_public(key):
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


# ---- HMAC -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("version", [4, 5])
def test_hs256_valid_expired_notyet_forged(start_broker, version):
    b = start_broker(hmac_chain())
    bad, notauth = (0x86, 0x87) if version == 5 else (4, 5)
    assert outcome(b, version, hs({"sub": "dev1", "exp": now() + 60})) == 0
    assert outcome(b, version, hs({"sub": "dev1"})) == 0                          # no exp: no expiry
    assert outcome(b, version, hs({"exp": now() - 1})) == bad                     # expired
    assert outcome(b, version, hs({"exp": str(now() - 100)})) == bad              # string numbers too
    assert outcome(b, version, hs({"nbf": now() + 60})) == bad                    # not yet valid
    assert outcome(b, version, hs({"nbf": now() - 5, "exp": now() + 60})) == 0
    assert outcome(b, version, hs({"iat": now() + 3600})) == 0                    # iat not checked
    # A forged signature is ignored (EMQX 5): the chain is exhausted, not authorized.
    assert outcome(b, version, hs({"sub": "dev1"}, secret="not-the-secret")) == notauth
    assert outcome(b, version, b"definitely.not.ajwt") == notauth
    assert outcome(b, version, hs({"sub": "dev1"}, alg="HS512")) == 0
    assert outcome(b, version, hs({"sub": "dev1"}, alg="HS384")) == 0
    assert outcome(b, version, username="user", password=None) == notauth        # no token: ignore


def test_alg_none_and_tampering_are_refused(start_broker):
    b = start_broker(hmac_chain())
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps({"sub": "dev1"}).encode()).rstrip(b"=")
    assert outcome(b, 5, header + b"." + body + b".") == 0x87
    good = hs({"sub": "dev1", "is_superuser": False})
    h, p, s = good.split(b".")
    evil = base64.urlsafe_b64encode(json.dumps({"sub": "dev1", "is_superuser": True}).encode()).rstrip(b"=")
    assert outcome(b, 5, h + b"." + evil + b"." + s) == 0x87
    assert outcome(b, 5, good) == 0


def test_verify_claims_with_placeholders(start_broker):
    b = start_broker(hmac_chain('verify_claims { sub = "${clientid}", role = "device", owner = "${username}" }'))
    tok = hs({"sub": "dev1", "role": "device", "owner": "alice", "exp": now() + 60})
    assert outcome(b, 5, tok, client_id="dev1", username="alice") == 0
    assert outcome(b, 5, tok, client_id="dev2", username="alice") == 0x86   # sub != clientid
    assert outcome(b, 4, tok, client_id="dev2", username="alice") == 4
    assert outcome(b, 5, tok, client_id="dev1", username="mallory") == 0x86
    assert outcome(b, 5, hs({"sub": "dev1", "owner": "alice"}), username="alice") == 0x86  # role missing


def test_verify_claims_list_form_and_aud(start_broker):
    b = start_broker(hmac_chain('verify_claims = [ { name = aud, value = "mqtt" }, { name = iss, value = "me" } ]'))
    assert outcome(b, 5, hs({"aud": "mqtt", "iss": "me"})) == 0
    assert outcome(b, 5, hs({"aud": ["web", "mqtt"], "iss": "me"})) == 0
    assert outcome(b, 5, hs({"aud": ["web"], "iss": "me"})) == 0x86
    assert outcome(b, 5, hs({"aud": "mqtt-x", "iss": "me"})) == 0x86
    assert outcome(b, 5, hs({"iss": "me"})) == 0x86


def test_token_from_username(start_broker):
    b = start_broker(hmac_chain("from = username"))
    tok = hs({"sub": "x", "exp": now() + 60}).decode()
    assert outcome(b, 4, None, username=tok) == 0
    assert outcome(b, 5, b"whatever", username=tok) == 0
    assert outcome(b, 5, tok.encode(), username="plain") == 0x87   # the password is not looked at


def test_secret_base64_encoded(start_broker):
    raw = bytes(range(32))
    b = start_broker(f"""
    authentication = [ {{ mechanism = jwt, algorithm = hmac-based,
                          secret = "{base64.b64encode(raw).decode()}", secret_base64_encoded = true }} ]""")
    assert outcome(b, 5, hs({"sub": "x"}, secret=raw)) == 0
    assert outcome(b, 5, hs({"sub": "x"}, secret=base64.b64encode(raw))) == 0x87


# ---- public keys -----------------------------------------------------------------------------------

def test_rs256_es256_eddsa_with_public_key(start_broker):
    keys = {
        "RS256": rsa.generate_private_key(public_exponent=65537, key_size=2048),
        "ES256": ec.generate_private_key(ec.SECP256R1()),
        "EdDSA": ed25519.Ed25519PrivateKey.generate(),
    }
    for alg, key in keys.items():
        pem = pem_public(key)
        # Inline PEM for RSA and EdDSA, a file path for ECDSA.
        if alg == "ES256":
            files = {"keys/ec.pem": pem}
            pk = 'public_key = "keys/ec.pem"'
        else:
            files = {}
            pk = f'public_key = """{pem}"""'
        b = start_broker(f"""
        authentication = [ {{ mechanism = jwt, algorithm = public-key, {pk} }} ]""", files=files, name=alg)
        good = jwt.encode({"sub": "dev1", "exp": now() + 60}, key, algorithm=alg).encode()
        assert outcome(b, 5, good) == 0, alg
        other = type(key).generate() if alg == "EdDSA" else (
            ec.generate_private_key(ec.SECP256R1()) if alg == "ES256" else
            rsa.generate_private_key(public_exponent=65537, key_size=2048))
        forged = jwt.encode({"sub": "dev1"}, other, algorithm=alg).encode()
        assert outcome(b, 5, forged) == 0x87, alg
        expired = jwt.encode({"exp": now() - 1}, key, algorithm=alg).encode()
        assert outcome(b, 5, expired) == 0x86, alg
        # Algorithm confusion: an HMAC token keyed with the public key's PEM text.
        h = base64.urlsafe_b64encode(b'{"alg":"HS256","typ":"JWT"}').rstrip(b"=")
        p = base64.urlsafe_b64encode(b'{"sub":"dev1"}').rstrip(b"=")
        sig = hmac.new(pem.encode(), h + b"." + p, hashlib.sha256).digest()
        confused = h + b"." + p + b"." + base64.urlsafe_b64encode(sig).rstrip(b"=")
        assert outcome(b, 5, confused) == 0x87, alg
        b.stop()


def test_ps256_and_rs512(start_broker):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    b = start_broker(f'authentication = [ {{ mechanism = jwt, algorithm = public-key, public_key = """{pem_public(key)}""" }} ]')
    for alg in ("PS256", "PS512", "RS512", "RS384"):
        assert outcome(b, 5, jwt.encode({"sub": "d"}, key, algorithm=alg).encode()) == 0, alg
    assert outcome(b, 5, hs({"sub": "d"})) == 0x87  # HS256 is not in the public-key allowlist


# ---- JWKS -------------------------------------------------------------------------------------------

class JwksServer:
    """Serves `doc` (a JWKS dict) at any path; counts fetches."""

    def __init__(self, port=None):
        self.doc = {"keys": []}
        self.fetches = 0
        self.status = 200
        self.lock = threading.Lock()
        self.port = port or free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                with outer.lock:
                    outer.fetches += 1
                    outer.last_headers = {k.lower(): v for k, v in self.headers.items()}
                    body = json.dumps(outer.doc).encode()
                    status = outer.status
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False
            allow_reuse_address = True

        self.srv = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def serve(self, *jwks):
        with self.lock:
            self.doc = {"keys": list(jwks)}

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def jwks_server():
    made = []

    def make(port=None):
        s = JwksServer(port)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


def jwk(key, kid):
    pub = key.public_key()
    if isinstance(key, rsa.RSAPrivateKey):
        d = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(pub))
    elif isinstance(key, ec.EllipticCurvePrivateKey):
        d = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(pub))
    else:
        d = json.loads(jwt.algorithms.OKPAlgorithm.to_jwk(pub))
    d["kid"] = kid
    return d


def signed(key, alg, kid, **claims):
    claims.setdefault("exp", now() + 120)
    return jwt.encode(claims, key, algorithm=alg, headers={"kid": kid} if kid else None).encode()


def jwks_chain(port, extra="", settings=""):
    return f"""
    authentication = [ {{
      mechanism = jwt
      use_jwks = true
      endpoint = "http://127.0.0.1:{port}/.well-known/jwks.json"
      refresh_interval = 10
      headers {{ "X-Tenant" = "t1" }}
      {extra}
    }} ]
    {settings}"""


@pytest.mark.timeout(90)
def test_jwks_key_rotation(start_broker, jwks_server):
    srv = jwks_server()
    ka = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    kb = ec.generate_private_key(ec.SECP256R1())
    kc = ed25519.Ed25519PrivateKey.generate()
    srv.serve(jwk(ka, "A"))
    b = start_broker(jwks_chain(srv.port))
    b.wait_for_log(r"JWKS loaded, 1 key")
    assert srv.last_headers.get("x-tenant") == "t1"
    assert srv.last_headers.get("accept") == "application/json"
    assert outcome(b, 5, signed(ka, "RS256", "A")) == 0
    assert outcome(b, 5, signed(ka, "RS256", None)) == 0         # no kid: every key is tried
    assert outcome(b, 5, signed(kb, "ES256", "A")) == 0x87       # kid A, wrong key type
    # A new key appears on the endpoint: a token with its kid triggers an early refresh.
    srv.serve(jwk(ka, "A"), jwk(kb, "B"), jwk(kc, "C"))
    fetches = srv.fetches
    assert outcome(b, 5, signed(kb, "ES256", "B")) == 0
    assert srv.fetches == fetches + 1
    assert outcome(b, 5, signed(kc, "EdDSA", "C")) == 0
    assert outcome(b, 5, signed(ka, "RS256", "A", exp=now() - 1)) == 0x86
    # Key A is withdrawn: after the next periodic refresh (refresh_interval = 10) it is refused.
    srv.serve(jwk(kb, "B"))
    deadline = time.monotonic() + 25
    while outcome(b, 5, signed(ka, "RS256", "A")) == 0:
        assert time.monotonic() < deadline, "key A still accepted after its withdrawal"
        time.sleep(0.5)
    assert outcome(b, 5, signed(ka, "RS256", "A")) == 0x87
    assert outcome(b, 5, signed(kb, "ES256", "B")) == 0


def test_jwks_unknown_kid_refresh_is_rate_limited(start_broker, jwks_server):
    srv = jwks_server()
    ka = ec.generate_private_key(ec.SECP256R1())
    srv.serve(jwk(ka, "A"))
    b = start_broker(jwks_chain(srv.port))
    b.wait_for_log(r"JWKS loaded, 1 key")
    base = srv.fetches
    for i in range(10):
        assert outcome(b, 5, signed(ka, "ES256", f"unknown-{i}")) == 0x87
    assert srv.fetches - base <= 2, srv.fetches - base
    assert outcome(b, 5, signed(ka, "ES256", "A")) == 0


@pytest.mark.timeout(60)
def test_jwks_endpoint_down_at_start(start_broker, jwks_server):
    port = free_port()
    key = ec.generate_private_key(ec.SECP384R1())
    b = start_broker(jwks_chain(port))
    b.wait_for_log(r"JWKS refresh failed .*no keys available")
    tok = signed(key, "ES384", "k1")
    assert outcome(b, 5, tok) == 0x87    # keys unavailable: a backend failure, ignored by default
    assert outcome(b, 4, tok) == 5
    srv = jwks_server(port)
    srv.serve(jwk(key, "k1"))
    deadline = time.monotonic() + 20
    while outcome(b, 5, tok) != 0:        # the next early refresh (at most one per 5 s) loads it
        assert time.monotonic() < deadline, "JWKS never loaded after the endpoint came up"
        time.sleep(0.5)
    b.wait_for_log(r"JWKS loaded, 1 key")


def test_jwks_down_is_a_backend_failure(start_broker):
    port = free_port()
    key = ec.generate_private_key(ec.SECP256R1())
    b = start_broker(jwks_chain(port, settings="authentication_settings.ignore_backend_failures = false"))
    b.wait_for_log(r"JWKS refresh failed")
    assert outcome(b, 5, signed(key, "ES256", "k1")) == 0x87
    b.wait_for_log(r"JWKS keys unavailable")


def test_jwks_bad_document_keeps_last_keys(start_broker, jwks_server):
    srv = jwks_server()
    ka = ec.generate_private_key(ec.SECP256R1())
    srv.serve(jwk(ka, "A"))
    b = start_broker(jwks_chain(srv.port))
    b.wait_for_log(r"JWKS loaded, 1 key")
    srv.status = 500
    # An unknown kid forces a refresh; it fails; the cached key keeps working.
    assert outcome(b, 5, signed(ka, "ES256", "Z")) == 0x87
    b.wait_for_log(r"JWKS refresh failed \(HTTP status 500\); keeping the last keys")
    assert outcome(b, 5, signed(ka, "ES256", "A")) == 0


# ---- expiry -----------------------------------------------------------------------------------------

@pytest.mark.timeout(60)
def test_disconnect_after_expire(start_broker):
    b = start_broker(hmac_chain())
    c5 = m.RawClient(b.tcp_port, version=5, timeout=10)
    c5.connect("exp5", username="u", password=hs({"exp": now() + 2}), expect_rc=0)
    c3 = m.RawClient(b.tcp_port, version=4, timeout=10)
    c3.connect("exp3", username="u", password=hs({"exp": now() + 2}), expect_rc=0)
    t0 = time.monotonic()
    c5.expect_closed(timeout=6, reason=0x87)
    c3.expect_closed(timeout=6)
    assert time.monotonic() - t0 < 6


def test_disconnect_after_expire_false(start_broker):
    b = start_broker(hmac_chain("disconnect_after_expire = false"))
    c = m.RawClient(b.tcp_port, version=5, timeout=10)
    c.connect("keep", username="u", password=hs({"exp": now() + 2}), expect_rc=0)
    c.expect_nothing(3.5)
    c.ping()


# ---- configuration ------------------------------------------------------------------------------

@pytest.mark.parametrize("conf,want", [
    ('{ mechanism = jwt, use_jwks = true, endpoint = "http://127.0.0.1:1/", secret = "x" }',
     ":2: authentication.secret: not used with use_jwks = true"),
    ('{ mechanism = jwt, algorithm = hmac-based, secret = "x", verify_claims { exp = "1" } }',
     "exp cannot be verified"),
    ('{ mechanism = jwt, algorithm = public-key, public_key = "/nonexistent.pem" }',
     "neither PEM text nor a readable file"),
    ('{ mechanism = jwt, algorithm = hmac-based }', "secret is required"),
    ('{ mechanism = jwt }', "algorithm (hmac-based or public-key) is required"),
    ('{ mechanism = jwt, use_jwks = true }', "endpoint is required"),
    ('{ mechanism = jwt, use_jwks = true, endpoint = "http://h/", refresh_interval = 5 }', "in 10..2592000, got 5"),
    ('{ mechanism = jwt, algorithm = hmac-based, secret = "x", from = clientid }', "password, username"),
    ('{ mechanism = jwt, algorithm = hmac-based, secret = "x", endpoint = "http://h/" }',
     "endpoint: not used with use_jwks = false"),
    ('{ mechanism = jwt, algorithm = hmac-based, secret = "%%%", secret_base64_encoded = true }', "base64"),
    ('{ mechanism = jwt, algorithm = hmac-based, secret = "x", typo = 1 }', "typo: unknown key"),
])
def test_config_errors(check_config, conf, want):
    status, out = check_config(f"authentication = [\n  {conf}\n]\n")
    assert status != 0 and want in out, out


def test_config_accepted(check_config):
    status, out = check_config("""authentication = [
  { mechanism = jwt, use_jwks = true, endpoint = "https://idp.example.com/jwks", refresh_interval = 300,
    pool_size = 4, ssl { enable = true, verify = verify_peer }, acl_claim_name = "perm",
    verify_claims = [ { name = aud, value = "mqtt" } ], disconnect_after_expire = false, from = password }
]
""")
    assert status == 0, out


def test_stop_while_a_jwks_fetch_hangs(start_broker):
    """The endpoint accepts connections but never answers: tokens wait for the fetch; a stop
    still ends promptly and cleanly."""
    import socket
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(16)
    try:
        port = lsock.getsockname()[1]
        b = start_broker(jwks_chain(port))
        key = ec.generate_private_key(ec.SECP256R1())
        c = m.RawClient(b.tcp_port, version=5)
        c.send(m.connect("waiter", version=5, username="u", password=signed(key, "ES256", "k1")))
        c.expect_nothing(0.5)  # waiting for the key set
        t0 = time.monotonic()
        b.stop()
        assert time.monotonic() - t0 < 8
        c.close()
    finally:
        lsock.close()
