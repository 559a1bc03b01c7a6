"""node.tls_fast_keys (src/tls/fastkeys.c, docs/CONFIG.md): RSA and EC keys on OpenSSL's
built-in methods. With it on (the default) and off, mutual TLS accepts and refuses exactly the
same clients — RSA and EC client keys, RSA and ECDSA issuing CAs, RSA and EC server keys — and
a forged signature (a CA of the same name and key type) is refused either way."""
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw.pki import cert_pem, issue_cert, key_pem, make_name, new_key, write_file
from bw.tls import client_context

from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

INSTALLED = "RSA and EC keys on OpenSSL's built-in methods"


def outcome(port, tls, client_id):
    return m.connect_outcome(port, version=5, tls=tls, client_id=client_id, timeout=5)


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory, pki):
    """An ECDSA CA, a client it signed, and a forged CA: same name, another P-256 key; the
    trusted bundle holds the session's RSA CAs and this EC CA."""
    d = tmp_path_factory.mktemp("ecpki")
    subject = make_name([(NameOID.COMMON_NAME, "Fastkeys EC CA")])
    ca_key, fake_key = new_key("ec"), new_key("ec")
    ca = issue_cert(subject, ca_key.public_key(), None, ca_key, is_ca=True)
    fake = issue_cert(subject, fake_key.public_key(), None, fake_key, is_ca=True)
    out = {}
    for name, issuer, issuer_key in (("client", ca, ca_key), ("forged", fake, fake_key)):
        key = new_key("ec")
        cert = issue_cert(make_name([(NameOID.COMMON_NAME, "ec-" + name)]), key.public_key(), issuer, issuer_key,
                          eku=[ExtendedKeyUsageOID.CLIENT_AUTH], aki=False)
        out[name + "_cert"] = write_file(d / (name + ".pem"), cert_pem(cert))
        out[name + "_key"] = write_file(d / (name + ".key"), key_pem(key), private=True)
    out["ca_bundle"] = write_file(d / "bundle.pem", Path(pki.ca_bundle).read_bytes() + cert_pem(ca))
    return out


@pytest.mark.parametrize("fast", [True, False], ids=["fast_keys", "providers"])
@pytest.mark.parametrize("server", ["server", "server_ec"])
def test_mutual_tls_outcomes_do_not_depend_on_the_key_path(start_broker, pki, ec_pki, fast, server):
    b = start_broker("""
node.tls_fast_keys = %s
listeners.ssl.default {
  ssl_options {
    cacertfile = "%s"
    certfile   = "{{pki.%s_chain}}"
    keyfile    = "{{pki.%s_key}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
  }
}
""" % ("true" if fast else "false", ec_pki["ca_bundle"], server, server), ssl=True)
    ca = pki.root_ca_cert

    def tls(cert, key):
        return client_context(ca=ca, cert=cert, key=key)

    accepted = {
        "rsa-client": tls(pki.client_chain, pki.client_key),
        "ec-client": tls(pki.client_ec_chain, pki.client_ec_key),
        "ecdsa-ca-client": tls(ec_pki["client_cert"], ec_pki["client_key"]),
    }
    refused = {
        "forged-rsa-root": tls(pki.client_fakeroot_cert, pki.client_fakeroot_key),
        "forged-ec-ca": tls(ec_pki["forged_cert"], ec_pki["forged_key"]),
        "expired": tls(pki.client_expired_cert, pki.client_expired_key),
        "no-certificate": client_context(ca=ca),
    }
    for cid, ctx in accepted.items():
        kind, what = outcome(b.ssl_port, ctx, cid)
        assert kind == "connack" and what.rc == 0, (cid, kind, what)
    for cid, ctx in refused.items():
        kind, what = outcome(b.ssl_port, ctx, cid)
        assert kind in ("tls_error", "closed"), (cid, kind, what)
    assert (INSTALLED in b.log_text()) == fast
