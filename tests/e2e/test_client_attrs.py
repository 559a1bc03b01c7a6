"""`mqtt.client_attrs_init` (EMQX 5.7+, reference/emqx.md §3.1; docs/CLIENT_ATTRS.md): variform
expressions evaluated per CONNECT before authentication, read back through `${client_attrs.NAME}`
in an HTTP authenticator's body. Covers the EMQX documentation examples, MQTT 5 user properties,
certificate CN/DN and subject alternative names over mTLS, SNI and listener, expressions that
fail or yield nothing (attribute absent, client still connects), a hostile long client ID, and
`bulwark --check` accepting good expressions and refusing bad ones with file:line."""
import datetime
import ipaddress
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bw import mqtt_raw as m
from bw import pki as bwpki
from bw.ports import free_port
from bw.tls import client_context


# ---- a recording HTTP authentication server -----------------------------------------------------

class AuthServer:
    """Allows everyone and records the JSON bodies the broker posts."""

    def __init__(self):
        self.bodies = []
        self.cond = threading.Condition()
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_POST(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                with outer.cond:
                    outer.bodies.append(json.loads(body))
                    outer.cond.notify_all()
                payload = json.dumps({"result": "allow"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.srv = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def wait(self, n, timeout=10):
        deadline = time.monotonic() + timeout
        with self.cond:
            while len(self.bodies) < n:
                left = deadline - time.monotonic()
                assert left > 0, f"expected {n} requests, got {self.bodies}"
                self.cond.wait(left)
            return list(self.bodies)

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def auth_server():
    s = AuthServer()
    yield s
    s.stop()


ATTRS = [
    ("group", "nth(1, tokens(clientid, '-'))"),
    ("tenant", "coalesce(user_property.tenant, 'none')"),
    ("tenant_raw", "user_property.tenant"),
    ("devnum", "regex_extract(cn, '^device-([0-9]+)$')"),
    ("dn5", "substr(dn, 0, 5)"),
    ("user_cn", "concat([username, '-', cn])"),
    ("san_dns", "nth(1, cert_san.dns)"),
    ("san_dns_all", "cert_san.dns"),
    ("san_ip", "join_to_string(';', cert_san.ip)"),
    ("san_email", "nth(1, cert_san.email)"),
    ("san_uri", "nth(1, cert_san.uri)"),
    ("where", "concat(zone, '/', listener)"),
    ("sni", "peersni"),
    ("decoded", "base64_decode(clientid)"),
    ("digits", "regex_extract(clientid, '^([a-z]+)$')"),
    ("label", "iif(regex_match(clientid, '^acme-'), 'ACME', 'other')"),
]


def attrs_config(port, extra=""):
    entries = "\n".join(f'    {{ expression = "{expr}", set_as_attr = {name} }}' for name, expr in ATTRS)
    body = ", ".join(f'{name} = "${{client_attrs.{name}}}"' for name, _ in ATTRS)
    return f"""
mqtt.client_attrs_init = [
{entries}
]
authentication = [{{
  mechanism = password_based, backend = http, method = post
  url = "http://127.0.0.1:{port}/auth"
  body {{ username = "${{username}}", password = "${{password}}", {body} }}
  request_timeout = 3s
}}]
{extra}
"""


def connect(port, client_id, *, version=5, username="alice", props=None, tls=None, expect_rc=0):
    c = m.RawClient(port, version=version, tls=tls)
    try:
        c.connect(client_id, username=username, password=b"pw", props=props, expect_rc=expect_rc)
    finally:
        c.close()


# ---- evaluation through the broker ---------------------------------------------------------------

def test_tcp_v5_client_id_and_user_properties(start_broker, auth_server):
    b = start_broker(attrs_config(auth_server.port))
    connect(b.tcp_port, "acme-sensor-1", props={"user_property": [("tenant", "t1"), ("other", "x")]})
    (body,) = auth_server.wait(1)
    assert body["username"] == "alice"
    assert body["group"] == "acme"
    assert body["tenant"] == "t1"
    assert body["tenant_raw"] == "t1"
    assert body["user_cn"] == "alice-"                 # no certificate: cn is ''
    assert body["where"] == "default/tcp:default"
    assert body["label"] == "ACME"
    # no certificate, no SNI, clientid is not base64, clientid has a '-': nothing set
    for name in ("devnum", "dn5", "san_dns", "san_dns_all", "san_ip", "san_email", "san_uri", "sni",
                 "decoded", "digits"):
        assert body[name] == "", (name, body[name])


def test_repeated_user_property_last_wins_and_v3_has_none(start_broker, auth_server):
    b = start_broker(attrs_config(auth_server.port))
    connect(b.tcp_port, "beta", props={"user_property": [("tenant", "first"), ("tenant", "second")]})
    connect(b.tcp_port, "gamma", version=4)
    first, second = auth_server.wait(2)
    assert first["tenant"] == "second" and first["tenant_raw"] == "second"
    assert first["group"] == "beta" and first["digits"] == "beta" and first["label"] == "other"
    assert second["tenant"] == "none"                  # coalesce: the unbound property reads as ''
    assert second["tenant_raw"] == ""                  # unbound: the expression fails, nothing set
    assert second["group"] == "gamma"


def test_values_are_computed_per_client(start_broker, auth_server):
    b = start_broker(attrs_config(auth_server.port))
    for i in range(5):
        connect(b.tcp_port, f"g{i}-dev", props={"user_property": [("tenant", f"t{i}")]})
    bodies = auth_server.wait(5)
    assert [(x["group"], x["tenant"]) for x in bodies] == [(f"g{i}", f"t{i}") for i in range(5)]


def test_failures_and_control_characters_set_nothing(start_broker, auth_server):
    b = start_broker(attrs_config(auth_server.port, "log.console.level = debug"))
    # a tenant with a line feed: dropped (never into HTTP bodies or headers); the client connects
    connect(b.tcp_port, "aGVsbG8=", props={"user_property": [("tenant", "a\nb")]})
    (body,) = auth_server.wait(1)
    assert body["decoded"] == "hello"                  # base64_decode of the client ID
    assert body["tenant"] == "" and body["tenant_raw"] == ""
    connect(b.tcp_port, "not base64!")
    body = auth_server.wait(2)[1]
    assert body["decoded"] == ""
    b.wait_for_log(r"client_attrs_init\[14\] \(decoded\) sets nothing: base64_decode: not base64")
    b.wait_for_log(r"client_attrs_init\[2\] \(tenant\) sets nothing: the result is not valid UTF-8 or holds control")


def test_long_client_id_cannot_stall_regexes(start_broker, auth_server):
    b = start_broker(attrs_config(auth_server.port, "log.console.level = debug"))
    t0 = time.monotonic()
    connect(b.tcp_port, "a" * 60000)
    (body,) = auth_server.wait(1)
    assert time.monotonic() - t0 < 5
    assert body["group"] == "a" * 60000
    assert body["digits"] == ""                        # regex functions search at most 4096 bytes
    b.wait_for_log(r"\(digits\) sets nothing: regex_extract: the text to search is longer than 4096 bytes")
    connect(b.tcp_port, "b" * 4000)
    assert auth_server.wait(2)[1]["digits"] == "b" * 4000


def _device_cert(pki, out_dir, cn, names):
    """A client certificate from the test intermediate CA with the given subjectAltName entries."""
    ca = pki.load_cert("inter_ca_cert")
    ca_key = pki.load_key("inter_ca_key")
    key = bwpki.new_key("ec")
    now = datetime.datetime.now(datetime.timezone.utc)
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (x509.CertificateBuilder()
            .subject_name(bwpki.make_name(bwpki.DEVICE_SUBJECT + [(NameOID.COMMON_NAME, cn)]))
            .issuer_name(ca.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .sign(ca_key, hashes.SHA256()))
    out_dir.mkdir(parents=True, exist_ok=True)
    chain = bwpki.write_file(out_dir / f"{cn}-chain.crt",
                             bwpki.cert_pem(cert) + open(pki.inter_ca_cert, "rb").read())
    keyp = bwpki.write_file(out_dir / f"{cn}.key", bwpki.key_pem(key), private=True)
    return chain, keyp


MTLS = """
listeners.ssl.default {
  ssl_options {
    cacertfile = "{{pki.ca_bundle}}"
    certfile   = "{{pki.server_chain}}"
    keyfile    = "{{pki.server_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
  }
}
"""


def test_certificate_cn_dn_sans_and_sni_over_mtls(start_broker, auth_server, pki, tmp_path):
    chain, key = _device_cert(pki, tmp_path / "certs", "device-0042", [
        x509.DNSName("d42.devices.example"),
        x509.IPAddress(ipaddress.ip_address("192.0.2.42")),
        x509.RFC822Name("ops@example.com"),
        x509.UniformResourceIdentifier("spiffe://acme/device/42"),
        x509.DNSName("alt.devices.example"),
        x509.IPAddress(ipaddress.ip_address("2001:db8::42")),
    ])
    b = start_broker(attrs_config(auth_server.port, MTLS), ssl=True)
    ctx = client_context(ca=pki.root_ca_cert, cert=chain, key=key)
    connect(b.ssl_port, "acme-42", tls=ctx)
    (body,) = auth_server.wait(1)
    assert body["devnum"] == "0042"
    assert body["dn5"] == "CN=de"
    assert body["user_cn"] == "alice-device-0042"
    assert body["san_dns"] == "d42.devices.example"
    assert body["san_dns_all"] == "d42.devices.example,alt.devices.example"
    assert body["san_ip"] == "192.0.2.42;2001:db8::42"
    assert body["san_email"] == "ops@example.com"
    assert body["san_uri"] == "spiffe://acme/device/42"
    assert body["where"] == "default/ssl:default"
    assert body["sni"] == "localhost"

    # the suite's standard device certificate: no subjectAltName at all
    ctx = client_context(ca=pki.root_ca_cert, cert=pki.client_chain, key=pki.client_key)
    connect(b.ssl_port, "plain", tls=ctx)
    body = auth_server.wait(2)[1]
    assert body["user_cn"] == "alice-device-001"
    assert body["devnum"] == "001"
    assert body["san_dns"] == "" and body["san_dns_all"] == "" and body["san_ip"] == ""


# ---- bulwark --check -------------------------------------------------------------------------------

def error_lines(out):
    return [ln for ln in out.splitlines() if "error" in ln.lower() or ln.startswith("bulwark:")]


def test_check_accepts_client_attrs_init(check_config):
    cfg = """mqtt {
  client_attrs_init = [
    { expression = "nth(1, tokens(clientid, '-'))", set_as_attr = group },
    { expression = "regex_extract(cn, '^device-([0-9]+)$')", set_as_attr = devnum },
    { expression = "substr(dn, 0, 5)", set_as_attr = dn_prefix },
    { expression = "concat([username, '-', cn])", set_as_attr = "user-cn" },
    { expression = \"\"\"nth(1, tokens(clientid, unescape('\\n')))\"\"\", set_as_attr = first_line },
    { expression = "coalesce(user_property.tenant, peersni, 'none')", set_as_attr = tenant },
    { expression = "join_to_string(',', cert_san.dns)", set_as_attr = sans },
    { expression = "hash_to_range(clientid, 1, 16)", set_as_attr = shard }
  ]
}
"""
    status, out = check_config(cfg)
    assert status == 0, out
    assert "configuration OK" in out


@pytest.mark.parametrize("entry,words", [
    ("\"nth(1, tokens(clientid, '-')\"", ["column", "expected ',' or ')'"]),
    ("\"nth(1, tokenz(clientid, '-'))\"", ["unknown function tokenz"]),
    ("\"concat(clientid, clientId)\"", ["unknown variable clientId", "known: clientid"]),
    ("\"lower(cert_san.dns)\"", ["argument 1 of lower must be a string, got an array"]),
    ("\"substr(dn, '0', 5)\"", ["argument 2 of substr must be an integer"]),
    ("\"regex_match(clientid, '^a+?$')\"", ["lazy and possessive quantifiers"]),
    ("\"regex_match(clientid, '(?<=x)y')\"", ["groups are not supported"]),
    ("\"hash('sha257', clientid)\"", ["hash: unknown algorithm"]),
    ("\"split(clientid, '-', 'middle')\"", ["split: argument 3 must be one of"]),
    ("\"lists.reverse(clientid)\"", ["module-qualified functions are not supported"]),
    ("\"lower()\"", ["lower takes 1 argument, got 0"]),
    ("\"\"", ["empty expression"]),
])
def test_check_refuses_a_bad_expression_with_file_and_line(check_config, entry, words):
    cfg = ("mqtt {\n"
           "  client_attrs_init = [\n"
           "    { expression = \"clientid\", set_as_attr = ok },\n"
           f"    {{ expression = {entry}, set_as_attr = bad }}\n"
           "  ]\n"
           "}\n")
    status, out = check_config(cfg)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    assert re.search(r"bulwark\.conf:4: mqtt\.client_attrs_init\[2\]\.expression: ", errs[0]), errs[0]
    for w in words:
        assert w in errs[0], (w, errs[0])


@pytest.mark.parametrize("name", ['"a b"', '"a.b"', '""', '"' + "x" * 65 + '"', '"ü"'])
def test_check_refuses_a_bad_attribute_name(check_config, name):
    cfg = f"mqtt.client_attrs_init = [\n  {{ expression = \"clientid\", set_as_attr = {name} }}\n]\n"
    status, out = check_config(cfg)
    assert status == 1, out
    (err,) = error_lines(out)
    assert "bulwark.conf:2: mqtt.client_attrs_init[1].set_as_attr: expected 1 to 64 letters" in err, err


def test_check_refuses_a_malformed_entry(check_config):
    status, out = check_config("mqtt.client_attrs_init = [ { expression = \"clientid\" } ]\n")
    assert status == 1 and "mqtt.client_attrs_init[1]: set_as_attr is required" in out, out
    status, out = check_config("mqtt.client_attrs_init = [ { expression = \"clientid\", set_as_attr = a, x = 1 } ]\n")
    assert status == 1 and "mqtt.client_attrs_init[1].x: unknown key" in out, out
    status, out = check_config("mqtt.client_attrs_init = { expression = \"clientid\", set_as_attr = a }\n")
    assert status == 1 and "mqtt.client_attrs_init: expected an array" in out, out
