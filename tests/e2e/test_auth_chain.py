"""The authentication chain (issue 4, reference/emqx.md §4.1) and the x509 authenticator:
order, ignore/allow/deny, empty chain, enable = false, per-listener chains, enable_authn,
unknown enhanced methods, and config errors."""
import re

import pytest

from bw.tls import client_context

MTLS = """
listeners.ssl.default {
  ssl_options {
    cacertfile = "{{pki.ca_bundle}}"
    certfile   = "{{pki.server_chain}}"
    keyfile    = "{{pki.server_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = false
  }
}
"""


def cert_client(raw_client, b, pki, version=5, cert=None, key=None):
    return raw_client(b, version=version,
                      tls=client_context(ca=pki.root_ca_cert, cert=cert or pki.client_cert, key=key or pki.client_key))


def test_x509_allows_verified_certificate_without_password(start_broker, raw_client, pki):
    b = start_broker(MTLS + "authentication = [ { mechanism = x509 } ]\n", ssl=True)
    c = cert_client(raw_client, b, pki)
    c.connect("dev-1")


@pytest.mark.parametrize("version,rc", [(5, 0x87), (4, 5)])
def test_all_ignore_is_not_authorized(start_broker, raw_client, pki, version, rc):
    b = start_broker(MTLS + "authentication = [ { mechanism = x509 } ]\n", ssl=True)
    # no client certificate: x509 ignores, nothing else in the chain
    c = raw_client(b, version=version, tls=client_context(ca=pki.root_ca_cert))
    c.connect("nocert", username="u", password=b"p", expect_rc=rc)
    plain = raw_client(b, version=version)
    plain.connect("plain", expect_rc=rc)
    b.wait_for_log(r"plain.*refused: authentication failed")


@pytest.mark.parametrize("username,rc", [("device-001", 0), ("someone-else", 0x87), (None, 0x87)])
def test_x509_can_require_the_cn_to_be_the_username(start_broker, raw_client, pki, username, rc):
    b = start_broker(MTLS + "authentication = [ { mechanism = x509, require_cn_match_username = true } ]\n", ssl=True)
    c = cert_client(raw_client, b, pki)
    c.connect("dev-2", username=username, expect_rc=rc)


def test_empty_chain_allows_anonymous(start_broker, raw_client):
    b = start_broker("authentication = []\n")
    raw_client(b, version=5).connect("anon")


def test_disabled_authenticator_is_skipped(start_broker, raw_client):
    b = start_broker("authentication = [ { mechanism = x509, enable = false } ]\n")
    raw_client(b, version=5).connect("anon2")


def test_enable_authn_false_skips_the_chain(start_broker, raw_client):
    b = start_broker("""
        authentication = [ { mechanism = x509 } ]
        listeners.tcp.default.enable_authn = false
    """)
    raw_client(b, version=5).connect("trusted-port")


def test_listener_chain_replaces_the_global_one(start_broker, raw_client, pki):
    b = start_broker(MTLS + """
        authentication = []
        listeners.tcp.default.authentication = [ { mechanism = x509 } ]
    """, ssl=True)
    # global chain (empty) on the ssl listener: anyone
    raw_client(b, version=5, tls=client_context(ca=pki.root_ca_cert)).connect("via-ssl")
    # the tcp listener's own chain: no certificate there, refused
    raw_client(b, version=5).connect("via-tcp", expect_rc=0x87)


def test_unknown_enhanced_method_is_bad_authentication_method(start_broker, raw_client, pki):
    b = start_broker(MTLS + "authentication = [ { mechanism = x509 } ]\n", ssl=True)
    c = cert_client(raw_client, b, pki)
    c.connect("enh", props={"authentication_method": "KERBEROS-9"}, expect_rc=0x8C)
    # no chain at all: still nobody handles it
    b2 = start_broker("")
    raw_client(b2, version=5).connect("enh2", props={"authentication_method": "SCRAM-SHA-256"}, expect_rc=0x8C)


def test_quick_deny_anonymous_runs_before_the_chain(start_broker, raw_client):
    b = start_broker("""
        authentication = []
        listeners.tcp.default.enable_authn = quick_deny_anonymous
    """)
    raw_client(b, version=5).connect("anon", expect_rc=0x87)
    raw_client(b, version=5).connect("named", username="bob")


@pytest.mark.parametrize("text,needle", [
    ("authentication = [ { mechanism = magic } ]", r"bulwark\.conf:2: authentication: entry 1: unknown authenticator mechanism = magic"),
    ("authentication = [ { backend = redis } ]", r"bulwark\.conf:2: authentication: entry 1: mechanism is required"),
    ("authentication = [\n  { mechanism = x509 },\n  { mechanism = x509 }\n]", r"a chain may hold one x509 authenticator"),
    ("authentication = [ { mechanism = x509, precondition = \"true\" } ]", r"not supported yet: authentication\.precondition"),
    ("authentication = [ { mechanism = x509, require_cn = true } ]", r"authentication\.require_cn: unknown key"),
    ("authentication_settings { ignore_backend_failures = maybe }", r"authentication_settings\.ignore_backend_failures: expected true or false"),
])
def test_config_errors_name_file_line_and_key(check_config, text, needle):
    status, out = check_config("# header\n" + text + "\n")
    assert status == 1, out
    assert re.search(needle, out), out


def test_authentication_settings_load(check_config):
    status, out = check_config("""
authentication_settings {
  ignore_backend_failures = false
  node_cache { enable = true, cache_ttl = 30s, max_count = 1000 }
}
authentication = { mechanism = x509 }
""")
    assert status == 0, out
