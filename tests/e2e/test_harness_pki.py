"""The test PKI itself is right (no broker needed): chains, validity, CRLs, key usage, identities."""
import base64
import datetime
import os
import stat
import subprocess
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bw import pki as bwpki

INTER_SIGNED = ["server_cert", "server_ec_cert", "client_cert", "client_ec_cert", "client_dn_cert",
                "client_nocn_cert", "client_multirdn_cert", "client_revoked_cert", "client_expired_cert",
                "client_notyet_cert", "client_server_eku_cert", "client_encrypted_cert"]
ROOT_SIGNED = ["inter_ca_cert", "server_root_cert", "client_root_cert"]


def now():
    return datetime.datetime.utcnow()


def pem_certs(path):
    data = Path(path).read_bytes()
    return [x509.load_pem_x509_certificate(b"-----BEGIN CERTIFICATE-----" + part)
            for part in data.split(b"-----BEGIN CERTIFICATE-----")[1:]]


def signed_by(cert_or_crl, issuer):
    """True if issuer's key made the signature (RSA PKCS#1 v1.5 or ECDSA, SHA-256)."""
    pub = issuer.public_key()
    tbs = cert_or_crl.tbs_certlist_bytes if isinstance(cert_or_crl, x509.CertificateRevocationList) \
        else cert_or_crl.tbs_certificate_bytes
    try:
        if isinstance(pub, rsa.RSAPublicKey):
            pub.verify(cert_or_crl.signature, tbs, padding.PKCS1v15(), cert_or_crl.signature_hash_algorithm)
        else:
            pub.verify(cert_or_crl.signature, tbs, ec.ECDSA(cert_or_crl.signature_hash_algorithm))
        return True
    except InvalidSignature:
        return False


def openssl_verify(*args):
    r = subprocess.run(["openssl", "verify", *map(str, args)], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stdout + r.stderr


def test_every_file_exists_with_the_right_mode(pki):
    for attr, (fname, _) in bwpki.INVENTORY.items():
        p = Path(getattr(pki, attr))
        assert p.is_file() and p.name == fname and p.stat().st_size > 0, attr
        mode = stat.S_IMODE(p.stat().st_mode)
        assert mode == (0o600 if attr.endswith("_key") else 0o644), f"{attr}: mode {oct(mode)}"
    for alias, attr in bwpki.ALIASES.items():
        assert getattr(pki, alias) == getattr(pki, attr)


def test_signatures_form_the_expected_chains(pki):
    root, inter = pki.load_cert("root_ca_cert"), pki.load_cert("inter_ca_cert")
    assert signed_by(root, root) and root.issuer == root.subject
    for name in ROOT_SIGNED:
        c = pki.load_cert(name)
        assert signed_by(c, root) and c.issuer == root.subject, name
    for name in INTER_SIGNED:
        c = pki.load_cert(name)
        assert signed_by(c, inter) and c.issuer == inter.subject, name
        assert not signed_by(c, root), name
    wrong = pki.load_cert("wrong_ca_cert")
    assert signed_by(pki.load_cert("client_wrongca_cert"), wrong)
    assert wrong.subject != root.subject


def test_fake_root_has_the_real_roots_name_but_not_its_key(pki):
    root, fake = pki.load_cert("root_ca_cert"), pki.load_cert("fake_root_cert")
    assert fake.subject == root.subject and fake.issuer == root.subject
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert (fake.public_key().public_bytes(serialization.Encoding.DER, spki)
            != root.public_key().public_bytes(serialization.Encoding.DER, spki))
    client = pki.load_cert("client_fakeroot_cert")
    assert client.issuer == root.subject          # a DN-only check would accept it...
    assert signed_by(client, fake)
    assert not signed_by(client, root)            # ...the signature does not


def test_ca_extensions(pki):
    for name, pathlen in (("root_ca_cert", 1), ("inter_ca_cert", 0)):
        bc = pki.load_cert(name).extensions.get_extension_for_class(x509.BasicConstraints)
        assert bc.critical and bc.value.ca and bc.value.path_length == pathlen
        ku = pki.load_cert(name).extensions.get_extension_for_class(x509.KeyUsage).value
        assert ku.key_cert_sign and ku.crl_sign
    for name in INTER_SIGNED + ["server_root_cert", "client_root_cert"]:
        assert not pki.load_cert(name).extensions.get_extension_for_class(x509.BasicConstraints).value.ca


def test_server_certificates_have_localhost_sans_and_server_eku(pki):
    for name in ("server_cert", "server_ec_cert", "server_root_cert"):
        c = pki.load_cert(name)
        san = c.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        assert [str(i) for i in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
        eku = c.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_chain_and_bundle_files(pki):
    inter, root = pki.load_cert("inter_ca_cert"), pki.load_cert("root_ca_cert")
    assert pem_certs(pki.ca_bundle) == [inter, root]
    for leaf, chain in (("server_cert", "server_chain"), ("server_ec_cert", "server_ec_chain"),
                        ("client_cert", "client_chain"), ("client_ec_cert", "client_ec_chain")):
        assert pem_certs(pki[chain]) == [pki.load_cert(leaf), inter], chain


def test_key_types(pki):
    for name in ("root_ca_cert", "inter_ca_cert", "server_cert", "client_cert"):
        k = pki.load_cert(name).public_key()
        assert isinstance(k, rsa.RSAPublicKey) and k.key_size == 2048, name
    for name in ("server_ec_cert", "client_ec_cert", "server_root_cert"):
        k = pki.load_cert(name).public_key()
        assert isinstance(k, ec.EllipticCurvePublicKey) and k.curve.name == "secp256r1", name


def test_every_key_matches_its_certificate(pki):
    def spki(k):
        return k.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)

    for attr in bwpki.INVENTORY:
        if not attr.endswith("_key"):
            continue
        cert_attr = attr[:-4] + "_cert"
        pw = pki.password if attr == "client_encrypted_key" else None
        assert spki(pki.load_key(attr, pw).public_key()) == spki(pki.load_cert(cert_attr).public_key()), attr


def test_validity_windows(pki):
    t = now()
    expired = pki.load_cert("client_expired_cert")
    assert expired.not_valid_after < t and expired.not_valid_before < expired.not_valid_after
    notyet = pki.load_cert("client_notyet_cert")
    assert notyet.not_valid_before > t
    for attr in bwpki.INVENTORY:
        if attr.endswith("_cert") and attr not in ("client_expired_cert", "client_notyet_cert"):
            c = pki.load_cert(attr)
            assert c.not_valid_before <= t <= c.not_valid_after, attr


def test_client_key_usage(pki):
    def eku(name):
        return list(pki.load_cert(name).extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)

    assert eku("client_server_eku_cert") == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("client_cert", "client_ec_cert", "client_root_cert", "client_revoked_cert"):
        assert eku(name) == [ExtendedKeyUsageOID.CLIENT_AUTH], name


def test_encrypted_key_needs_the_password(pki):
    data = Path(pki.client_encrypted_key).read_bytes()
    assert b"ENCRYPTED" in data
    with pytest.raises(TypeError):
        serialization.load_pem_private_key(data, None)
    with pytest.raises(ValueError):
        serialization.load_pem_private_key(data, b"wrong")
    assert serialization.load_pem_private_key(data, pki.password.encode())


def test_crls(pki):
    inter, root = pki.load_cert("inter_ca_cert"), pki.load_cert("root_ca_cert")
    revoked = pki.load_cert("client_revoked_cert").serial_number
    crl = x509.load_pem_x509_crl(Path(pki.crl_pem).read_bytes())
    crl_der = x509.load_der_x509_crl(Path(pki.crl_der).read_bytes())
    assert crl == crl_der
    assert crl.issuer == inter.subject and crl.is_signature_valid(inter.public_key())
    assert [r.serial_number for r in crl] == [revoked]
    assert crl.get_revoked_certificate_by_serial_number(pki.load_cert("client_cert").serial_number) is None
    assert crl.next_update > now() > crl.last_update
    empty = x509.load_pem_x509_crl(Path(pki.crl_empty).read_bytes())
    assert len(empty) == 0 and empty.is_signature_valid(inter.public_key()) and empty.next_update > now()
    expired = x509.load_pem_x509_crl(Path(pki.crl_expired).read_bytes())
    assert expired.next_update < now() and expired.is_signature_valid(inter.public_key())
    assert [r.serial_number for r in expired] == [revoked]
    rcrl = x509.load_pem_x509_crl(Path(pki.root_crl).read_bytes())
    assert rcrl.issuer == root.subject and rcrl.is_signature_valid(root.public_key()) and len(rcrl) == 0
    chain = Path(pki.crl_chain).read_bytes()
    assert chain.count(b"BEGIN X509 CRL") == 2 and chain.startswith(Path(pki.crl_pem).read_bytes())


def test_identities(pki):
    dev = pki.identity("client_cert")
    assert dev["cn"] == "device-001"
    assert dev["dn"] == "CN=device-001,OU=Sensors,O=Acme,L=Solna,ST=Stockholm,C=SE"
    assert pki.identity("client_dn_cert")["dn"] == "CN=device-dn,OU=Sensors,O=Acme,L=Solna,ST=Stockholm,C=SE"
    der = pki.load_cert("client_cert").public_bytes(serialization.Encoding.DER)
    assert dev["crt"] == der and len(dev["md5"]) == 32 and dev["md5"] == dev["md5"].lower()
    assert base64.b64decode(dev["pem"]) == der and "\n" not in dev["pem"]
    nocn = pki.identity("client_nocn_cert")
    assert nocn["cn"] is None and nocn["dn"] == "O=Acme"
    m = pki.identity("client_multirdn_cert")
    rdn = pki.load_cert("client_multirdn_cert").subject.rdns[-1]
    assert len(rdn) == 2                                   # a multi-valued RDN
    for escaped in ("\\,", "\\+", '\\"', "\\\\", "\\<", "\\>", "\\;", "\\#", "\\ "):
        assert escaped in m["dn"], escaped
    assert m["dn"].endswith(",OU=\\#R&D \\<lab\\>\\; ops,O=Acme\\, Inc.,C=SE")
    # wrong-CA and fake-root clients impersonate device-001's subject
    assert pki.identity("client_wrongca_cert")["dn"] == dev["dn"]
    assert pki.identity("client_fakeroot_cert")["dn"] == dev["dn"]


def test_dn_openssl_matches_openssl_rfc2253_output(pki):
    for name in ("client_cert", "client_multirdn_cert", "client_nocn_cert"):
        r = subprocess.run(["openssl", "x509", "-in", pki[name], "-noout", "-subject", "-nameopt", "RFC2253"],
                           capture_output=True, text=True, timeout=30, check=True)
        assert r.stdout.strip() == "subject=" + pki.identity(name)["dn_openssl"], name


def test_openssl_verify_agrees(pki):
    good = ["client_cert", "client_ec_cert", "client_dn_cert", "client_nocn_cert", "client_multirdn_cert",
            "client_encrypted_cert", "client_revoked_cert", "client_root_cert"]
    for name in good:
        code, out = openssl_verify("-purpose", "sslclient", "-CAfile", pki.ca_bundle, pki[name])
        assert code == 0, f"{name}: {out}"
    for name in ("server_cert", "server_ec_cert", "server_root_cert"):
        code, out = openssl_verify("-purpose", "sslserver", "-CAfile", pki.ca_bundle, pki[name])
        assert code == 0, f"{name}: {out}"
    code, out = openssl_verify("-CAfile", pki.root_ca_cert, "-untrusted", pki.inter_ca_cert, pki.client_cert)
    assert code == 0, out
    bad = {"client_expired_cert": "expired", "client_notyet_cert": "not yet valid",
           "client_wrongca_cert": "unable to get local issuer", "client_fakeroot_cert": "signature failure",
           "client_server_eku_cert": "unsuitable certificate purpose"}
    for name, why in bad.items():
        code, out = openssl_verify("-purpose", "sslclient", "-CAfile", pki.ca_bundle, pki[name])
        assert code != 0 and why in out, f"{name}: {out}"
    code, out = openssl_verify("-crl_check", "-CRLfile", pki.crl_pem, "-CAfile", pki.ca_bundle,
                               pki.client_revoked_cert)
    assert code != 0 and "revoked" in out, out
    code, out = openssl_verify("-crl_check", "-CRLfile", pki.crl_pem, "-CAfile", pki.ca_bundle, pki.client_cert)
    assert code == 0, out
    code, out = openssl_verify("-crl_check", "-CRLfile", pki.crl_empty, "-CAfile", pki.ca_bundle,
                               pki.client_revoked_cert)
    assert code == 0, out
    code, out = openssl_verify("-crl_check", "-CRLfile", pki.crl_expired, "-CAfile", pki.ca_bundle, pki.client_cert)
    assert code != 0 and "CRL has expired" in out, out
    code, out = openssl_verify("-crl_check_all", "-CRLfile", pki.crl_chain, "-CAfile", pki.ca_bundle,
                               pki.client_cert)
    assert code == 0, out


def test_issue_client_at_test_time(pki, tmp_path):
    cert, key, chain = pki.issue_client(tmp_path, "dev-x", crl_urls=["http://127.0.0.1:1/crl.pem"],
                                        ocsp_url="http://127.0.0.1:1/ocsp")
    c = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    assert c.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "dev-x"
    assert signed_by(c, pki.load_cert("inter_ca_cert"))
    cdp = c.extensions.get_extension_for_class(x509.CRLDistributionPoints).value
    assert cdp[0].full_name[0].value == "http://127.0.0.1:1/crl.pem"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert pem_certs(chain)[1] == pki.load_cert("inter_ca_cert")
    crl = pki.make_crl(tmp_path / "mine.pem", ["client_cert", cert])
    assert len(x509.load_pem_x509_crl(Path(crl).read_bytes())) == 2
