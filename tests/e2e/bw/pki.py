"""The test PKI, generated at test time with python3-cryptography.

`generate(dir)` writes every file listed in INVENTORY (below) into dir and returns a `Pki`;
`load(dir)` maps an existing directory. `Pki` exposes each file as an attribute holding an
absolute path (str), e.g. `pki.server_cert`, `pki.client_key`, `pki.crl_pem`.

Time-relative files (expired, not yet valid, expired CRL) are made relative to the moment of
generation, so a PKI is generated per test run (never committed). Private keys are mode 0600.

`Pki.issue_client(...)` / `issue_cert(...)` make extra certificates at test time (for example with
a CRL distribution point or OCSP responder URL that depends on a port chosen by the test).
"""
import base64
import datetime
import hashlib
import ipaddress
import json
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PASSWORD = "password"

DEVICE_SUBJECT = [  # most significant first, as in the certificate: C, ST, L, O, OU, CN
    (NameOID.COUNTRY_NAME, "SE"),
    (NameOID.STATE_OR_PROVINCE_NAME, "Stockholm"),
    (NameOID.LOCALITY_NAME, "Solna"),
    (NameOID.ORGANIZATION_NAME, "Acme"),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "Sensors"),
]
ROOT_SUBJECT = [(NameOID.COUNTRY_NAME, "SE"), (NameOID.ORGANIZATION_NAME, "Bulwark Tests"),
                (NameOID.COMMON_NAME, "Bulwark Test Root CA")]
INTER_SUBJECT = [(NameOID.COUNTRY_NAME, "SE"), (NameOID.ORGANIZATION_NAME, "Bulwark Tests"),
                 (NameOID.COMMON_NAME, "Bulwark Test Intermediate CA")]
WRONG_SUBJECT = [(NameOID.COUNTRY_NAME, "SE"), (NameOID.ORGANIZATION_NAME, "Elsewhere"),
                 (NameOID.COMMON_NAME, "Unrelated Test CA")]

# attribute -> (file name, what it is). Keys end in _key, certificates in _cert, chains in _chain.
INVENTORY = {
    # certificate authorities
    "root_ca_cert": ("root-ca.crt", "self-signed root CA (RSA-2048), CN=Bulwark Test Root CA"),
    "root_ca_key": ("root-ca.key", "its key"),
    "inter_ca_cert": ("inter-ca.crt", "intermediate CA signed by the root (RSA-2048, pathlen 0); signs leaves"),
    "inter_ca_key": ("inter-ca.key", "its key"),
    "ca_bundle": ("ca-bundle.crt", "intermediate + root: the usual broker cacertfile"),
    "wrong_ca_cert": ("wrong-ca.crt", "an unrelated self-signed root CA"),
    "wrong_ca_key": ("wrong-ca.key", "its key"),
    "fake_root_cert": ("fake-root-ca.crt", "same subject DN as the real root, different key (also RSA-2048)"),
    "fake_root_key": ("fake-root-ca.key", "its key"),
    # servers (SAN DNS:localhost, IP:127.0.0.1, EKU serverAuth)
    "server_cert": ("server.crt", "server leaf (RSA-2048) signed by the intermediate"),
    "server_key": ("server.key", "its key"),
    "server_chain": ("server-chain.crt", "server leaf + intermediate (the certfile to use)"),
    "server_ec_cert": ("server-ec.crt", "server leaf (ECDSA P-256) signed by the intermediate"),
    "server_ec_key": ("server-ec.key", "its key"),
    "server_ec_chain": ("server-ec-chain.crt", "server-ec leaf + intermediate"),
    "server_root_cert": ("server-root.crt", "server leaf (P-256) signed directly by the root"),
    "server_root_key": ("server-root.key", "its key"),
    # clients (EKU clientAuth unless said otherwise)
    "client_cert": ("client.crt", "device-001 (RSA-2048): CN=device-001,OU=Sensors,O=Acme,L=Solna,ST=Stockholm,C=SE"),
    "client_key": ("client.key", "its key"),
    "client_chain": ("client-chain.crt", "device-001 leaf + intermediate"),
    "client_ec_cert": ("client-ec.crt", "CN=device-ec (same OU/O/L/ST/C), ECDSA P-256"),
    "client_ec_key": ("client-ec.key", "its key"),
    "client_ec_chain": ("client-ec-chain.crt", "leaf + intermediate"),
    "client_dn_cert": ("client-dn.crt", "CN=device-dn,OU=Sensors,O=Acme,L=Solna,ST=Stockholm,C=SE (SPEC example)"),
    "client_dn_key": ("client-dn.key", "its key"),
    "client_root_cert": ("client-root.crt", "CN=device-root, signed directly by the root"),
    "client_root_key": ("client-root.key", "its key"),
    "client_nocn_cert": ("client-nocn.crt", "subject O=Acme only (no CN)"),
    "client_nocn_key": ("client-nocn.key", "its key"),
    "client_multirdn_cert": ("client-multirdn.crt", "multi-valued RDN and characters RFC 4514 must escape"),
    "client_multirdn_key": ("client-multirdn.key", "its key"),
    "client_revoked_cert": ("client-revoked.crt", "CN=device-revoked, listed in crl.pem/crl.der/crl-expired.pem"),
    "client_revoked_key": ("client-revoked.key", "its key"),
    "client_expired_cert": ("client-expired.crt", "CN=device-expired, notAfter 1 day ago"),
    "client_expired_key": ("client-expired.key", "its key"),
    "client_notyet_cert": ("client-notyet.crt", "CN=device-notyet, notBefore in 10 days"),
    "client_notyet_key": ("client-notyet.key", "its key"),
    "client_wrongca_cert": ("client-wrongca.crt", "device-001's subject, issued by the unrelated wrong CA"),
    "client_wrongca_key": ("client-wrongca.key", "its key"),
    "client_fakeroot_cert": ("client-fakeroot.crt", "device-001's subject, issued by the fake root (issuer DN = real "
                             "root's; no authorityKeyIdentifier, so only the signature tells them apart)"),
    "client_fakeroot_key": ("client-fakeroot.key", "its key"),
    "client_server_eku_cert": ("client-server-eku.crt", "CN=device-server-eku, extendedKeyUsage serverAuth only"),
    "client_server_eku_key": ("client-server-eku.key", "its key"),
    "client_encrypted_cert": ("client-encrypted.crt", "CN=device-encrypted"),
    "client_encrypted_key": ("client-encrypted.key", "its key, PKCS#8 encrypted with password 'password'"),
    # CRLs (issued by the intermediate unless said otherwise; nextUpdate in 1 year)
    "crl_pem": ("crl.pem", "intermediate's CRL listing client_revoked (PEM)"),
    "crl_der": ("crl.der", "the same CRL in DER"),
    "crl_empty": ("crl-empty.pem", "intermediate's CRL listing nothing"),
    "crl_expired": ("crl-expired.pem", "intermediate's CRL listing client_revoked, nextUpdate 1 day ago"),
    "root_crl": ("root-crl.pem", "root's CRL listing nothing (for checking the whole chain)"),
    "crl_chain": ("crl-chain.pem", "crl.pem + root-crl.pem"),
}

# Backward-friendly aliases: the "basic" certificates are RSA.
ALIASES = {
    "server_rsa_cert": "server_cert", "server_rsa_key": "server_key", "server_rsa_chain": "server_chain",
    "client_rsa_cert": "client_cert", "client_rsa_key": "client_key", "client_rsa_chain": "client_chain",
}


def _now():
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0, tzinfo=None)


def make_name(pairs):
    """x509.Name from [(oid, value) | [(oid, value), ...] (a multi-valued RDN)], most significant first."""
    rdns = []
    for item in pairs:
        if isinstance(item, list):
            rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(o, v) for o, v in item]))
        else:
            rdns.append(x509.RelativeDistinguishedName([x509.NameAttribute(item[0], item[1])]))
    return x509.Name(rdns)


def new_key(kind="ec"):
    """A new private key: 'rsa' (2048 bits) or 'ec' (P-256)."""
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def issue_cert(subject, public_key, issuer_cert, issuer_key, *, is_ca=False, path_length=None,
               not_before=None, not_after=None, san_dns=(), san_ip=(), eku=None, crl_urls=(),
               ocsp_url=None, serial=None, aki=True):
    """Build and sign a certificate. issuer_cert None means self-signed (issuer = subject).

    eku: list of ExtendedKeyUsageOID values, or None for no extendedKeyUsage extension.
    aki=False leaves out authorityKeyIdentifier (a verifier then finds the issuer by name only).
    """
    now = _now()
    not_before = not_before or now - datetime.timedelta(hours=1)
    not_after = not_after or now + datetime.timedelta(days=365 * (10 if is_ca else 2))
    issuer_name = issuer_cert.subject if issuer_cert is not None else subject
    b = (x509.CertificateBuilder()
         .subject_name(subject).issuer_name(issuer_name).public_key(public_key)
         .serial_number(serial or x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=is_ca, path_length=path_length if is_ca else None), critical=True)
         .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False))
    if not aki:
        pass  # no authorityKeyIdentifier: issuer lookup by name only
    elif issuer_cert is not None:
        ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
    else:
        b = b.add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public_key), critical=False)
    if is_ca:
        ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                           data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                           encipher_only=False, decipher_only=False)
    else:
        is_rsa = isinstance(public_key, rsa.RSAPublicKey)
        ku = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=is_rsa,
                           data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                           encipher_only=False, decipher_only=False)
    b = b.add_extension(ku, critical=True)
    if eku:
        b = b.add_extension(x509.ExtendedKeyUsage(list(eku)), critical=False)
    names = [x509.DNSName(d) for d in san_dns] + [x509.IPAddress(ipaddress.ip_address(i)) for i in san_ip]
    if names:
        b = b.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if crl_urls:
        b = b.add_extension(x509.CRLDistributionPoints([
            x509.DistributionPoint(full_name=[x509.UniformResourceIdentifier(u)], relative_name=None,
                                   reasons=None, crl_issuer=None) for u in crl_urls]), critical=False)
    if ocsp_url:
        b = b.add_extension(x509.AuthorityInformationAccess([
            x509.AccessDescription(x509.oid.AuthorityInformationAccessOID.OCSP,
                                   x509.UniformResourceIdentifier(ocsp_url))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def make_crl(issuer_cert, issuer_key, revoked_serials=(), *, last_update=None, next_update=None, number=1):
    """A CRL signed by issuer listing revoked_serials."""
    now = _now()
    last_update = last_update or now - datetime.timedelta(hours=1)
    next_update = next_update or now + datetime.timedelta(days=365)
    ski = issuer_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    b = (x509.CertificateRevocationListBuilder().issuer_name(issuer_cert.subject)
         .last_update(last_update).next_update(next_update)
         .add_extension(x509.CRLNumber(number), critical=False)
         .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False))
    for s in revoked_serials:
        b = b.add_revoked_certificate(x509.RevokedCertificateBuilder().serial_number(s)
                                      .revocation_date(last_update).build())
    return b.sign(issuer_key, hashes.SHA256())


def cert_pem(cert):
    return cert.public_bytes(serialization.Encoding.PEM)


def key_pem(key, password=None):
    enc = (serialization.BestAvailableEncryption(password.encode()) if password
           else serialization.NoEncryption())
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)


def write_file(path, data, private=False):
    """Write bytes atomically enough for tests; private files get mode 0600 from the start."""
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o644)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    os.chmod(path, 0o600 if private else 0o644)
    return str(path)


# --- identity helpers: the values Bulwark maps a certificate to (SPEC §3) ---

_ATTR_NAMES = {
    NameOID.COMMON_NAME: "CN", NameOID.SURNAME: "SN", NameOID.GIVEN_NAME: "GIVENNAME",
    x509.ObjectIdentifier("2.5.4.43"): "INITIALS", NameOID.GENERATION_QUALIFIER: "GENERATIONQUALIFIER",
    NameOID.LOCALITY_NAME: "L", NameOID.STATE_OR_PROVINCE_NAME: "ST", NameOID.ORGANIZATION_NAME: "O",
    NameOID.ORGANIZATIONAL_UNIT_NAME: "OU", NameOID.TITLE: "TITLE", NameOID.COUNTRY_NAME: "C",
    NameOID.SERIAL_NUMBER: "SERIALNUMBER", NameOID.PSEUDONYM: "PSEUDONYM", NameOID.DOMAIN_COMPONENT: "DC",
    NameOID.EMAIL_ADDRESS: "EMAILADDRESS", NameOID.STREET_ADDRESS: "STREET", NameOID.USER_ID: "UID",
}


def _escape_value(v):
    out = []
    b = v.encode("utf-8")
    for i, c in enumerate(b):
        ch = chr(c)
        if c < 0x20 or c >= 0x7E:  # esockd: C < 32 ; C >= 126
            out.append("\\%02X" % c)
        elif ch in '"+,;<>\\' or (i == 0 and ch in " #") or (i == len(b) - 1 and ch == " "):
            out.append("\\" + ch)
        else:
            out.append(ch)
    return "".join(out)


def _der_tlv(buf, pos):
    """(tag, value_start, value_end) of the DER element at pos."""
    tag = buf[pos]
    n = buf[pos + 1]
    pos += 2
    if n & 0x80:
        k = n & 0x7F
        n = int.from_bytes(buf[pos:pos + k], "big")
        pos += k
    return tag, pos, pos + n


def _der_oid(b):
    first = b[0]
    arcs = [min(first // 40, 2), first - 40 * min(first // 40, 2)]
    v = 0
    for c in b[1:]:
        v = (v << 7) | (c & 0x7F)
        if not c & 0x80:
            arcs.append(v)
            v = 0
    return ".".join(map(str, arcs))


_STRING_DECODERS = {0x0C: "utf-8", 0x13: "ascii", 0x16: "ascii", 0x14: "latin-1", 0x1E: "utf-16-be",
                    0x1C: "utf-32-be", 0x1A: "ascii"}


def name_rdns(name):
    """The RDNs of an x509.Name as [[(oid_dotted, value), ...], ...] in DER order (SET members in
    the order they are encoded; cryptography's own iteration order is not guaranteed to be that)."""
    der = name.public_bytes()
    _, p, end = _der_tlv(der, 0)
    rdns = []
    while p < end:
        _, sp, se = _der_tlv(der, p)
        p = se
        avas = []
        while sp < se:
            _, ap, ae = _der_tlv(der, sp)
            sp = ae
            _, op, oe = _der_tlv(der, ap)
            vtag, vp, ve = _der_tlv(der, oe)
            raw = bytes(der[vp:ve])
            enc = _STRING_DECODERS.get(vtag)
            value = raw.decode(enc) if enc else "#" + raw.hex()
            avas.append((_der_oid(der[op:oe]), value))
        rdns.append(avas)
    return rdns


_NAMES_BY_DOTTED = {o.dotted_string: n for o, n in _ATTR_NAMES.items()}


def dn_string(name, ava_order="der"):
    """The subject as Bulwark's `dn` (RFC 4514, most specific RDN first, no spaces, '+' inside a
    multi-valued RDN in certificate (DER) order, values escaped per RFC 4514; bytes outside
    0x20..0x7D as \\XX). See SPEC §3 and reference/emqx.md §3.

    ava_order="openssl" also reverses the attributes inside a multi-valued RDN, as OpenSSL's
    X509_NAME_print_ex(XN_FLAG_RFC2253) does (it reverses entries, not RDNs)."""
    parts = []
    for avas in reversed(name_rdns(name)):
        if ava_order == "openssl":
            avas = list(reversed(avas))
        parts.append("+".join("%s=%s" % (_NAMES_BY_DOTTED.get(oid, oid), _escape_value(v)) for oid, v in avas))
    return ",".join(parts)


def identity(cert_path):
    """dict with the values a certificate maps to: cn, dn, crt (DER bytes), pem (base64 DER), md5,
    plus serial, subject_rfc4514 (cryptography's own rendering), issuer_dn, and dn_openssl (differs
    from dn only for a multi-valued RDN: the attribute order inside it, see dn_string)."""
    cert = x509.load_pem_x509_certificate(Path(cert_path).read_bytes())
    der = cert.public_bytes(serialization.Encoding.DER)
    cns = [a.value for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]
    return {
        "cn": ",".join(cns) if cns else None,
        "dn": dn_string(cert.subject),
        "dn_openssl": dn_string(cert.subject, "openssl"),
        "crt": der,
        "pem": base64.b64encode(der).decode(),
        "md5": hashlib.md5(der).hexdigest(),
        "serial": cert.serial_number,
        "subject_rfc4514": cert.subject.rfc4514_string(),
        "issuer_dn": dn_string(cert.issuer),
    }


class Pki:
    """Paths of a generated PKI. Every INVENTORY name (and ALIASES) is an attribute holding an
    absolute path string; `password` is the encrypted key's password; `dir` the folder."""

    password = PASSWORD

    def __init__(self, directory):
        self.dir = str(Path(directory).resolve())
        for attr, (fname, _) in INVENTORY.items():
            setattr(self, attr, os.path.join(self.dir, fname))
        for alias, attr in ALIASES.items():
            setattr(self, alias, getattr(self, attr))

    def __getitem__(self, name):
        return getattr(self, name)

    def identity(self, name_or_path):
        """identity() of a certificate given by attribute name ('client_cert') or path."""
        p = getattr(self, name_or_path, None) if not os.sep in name_or_path else None
        return identity(p or name_or_path)

    def load_cert(self, name):
        return x509.load_pem_x509_certificate(Path(self[name]).read_bytes())

    def load_key(self, name, password=None):
        return serialization.load_pem_private_key(Path(self[name]).read_bytes(),
                                                  password.encode() if password else None)

    def issue_client(self, out_dir, name, cn=None, *, subject=None, ca="inter", key_kind="ec", **kw):
        """Issue an extra client certificate at test time into out_dir as NAME.crt / NAME.key (and
        NAME-chain.crt when issued by the intermediate). ca: 'inter', 'root', 'wrong' or 'fake'.
        kw go to issue_cert (crl_urls=[...], ocsp_url=..., not_after=..., eku=..., san_dns=...).
        Returns (cert_path, key_path, chain_path_or_None)."""
        ca_cert = self.load_cert({"inter": "inter_ca_cert", "root": "root_ca_cert",
                                  "wrong": "wrong_ca_cert", "fake": "fake_root_cert"}[ca])
        ca_key = self.load_key({"inter": "inter_ca_key", "root": "root_ca_key",
                                "wrong": "wrong_ca_key", "fake": "fake_root_key"}[ca])
        if subject is None:
            subject = DEVICE_SUBJECT + [(NameOID.COMMON_NAME, cn or name)]
        key = new_key(key_kind)
        kw.setdefault("eku", [ExtendedKeyUsageOID.CLIENT_AUTH])
        cert = issue_cert(make_name(subject), key.public_key(), ca_cert, ca_key, **kw)
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        cp = write_file(out / f"{name}.crt", cert_pem(cert))
        kp = write_file(out / f"{name}.key", key_pem(key), private=True)
        chain = None
        if ca == "inter":
            chain = write_file(out / f"{name}-chain.crt", cert_pem(cert) + Path(self.inter_ca_cert).read_bytes())
        return cp, kp, chain

    def make_crl(self, out_path, revoked_cert_names=(), *, ca="inter", der=False, **kw):
        """Write a CRL from ca ('inter' or 'root') revoking the given certificates (attribute names
        or paths); kw go to make_crl (last_update, next_update, number)."""
        ca_cert = self.load_cert("inter_ca_cert" if ca == "inter" else "root_ca_cert")
        ca_key = self.load_key("inter_ca_key" if ca == "inter" else "root_ca_key")
        serials = []
        for n in revoked_cert_names:
            p = getattr(self, n, None) or n
            serials.append(x509.load_pem_x509_certificate(Path(p).read_bytes()).serial_number)
        crl = make_crl(ca_cert, ca_key, serials, **kw)
        data = crl.public_bytes(serialization.Encoding.DER if der else serialization.Encoding.PEM)
        return write_file(out_path, data)


# Special characters for the RFC 4514 escaping test: ',' '+' '"' '\' '<' '>' ';' a leading '#',
# a leading and a trailing space; the last RDN is multi-valued (CN + UID).
MULTIRDN_SUBJECT = [
    (NameOID.COUNTRY_NAME, "SE"),
    (NameOID.ORGANIZATION_NAME, "Acme, Inc."),
    (NameOID.ORGANIZATIONAL_UNIT_NAME, "#R&D <lab>; ops"),
    [(NameOID.COMMON_NAME, 'multi+rdn "quoted" \\ back'), (NameOID.USER_ID, " spaced ")],
]


def generate(directory):
    """Generate the whole PKI into directory (created if needed) and return a Pki."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    now = _now()
    files = {}

    def put_cert(attr, cert):
        files[attr] = cert_pem(cert)

    def put_key(attr, key, password=None):
        files[attr] = key_pem(key, password)

    client_eku = [ExtendedKeyUsageOID.CLIENT_AUTH]
    server_eku = [ExtendedKeyUsageOID.SERVER_AUTH]

    # CAs
    root_key = new_key("rsa")
    root = issue_cert(make_name(ROOT_SUBJECT), root_key.public_key(), None, root_key, is_ca=True, path_length=1)
    inter_key = new_key("rsa")
    inter = issue_cert(make_name(INTER_SUBJECT), inter_key.public_key(), root, root_key, is_ca=True,
                       path_length=0)
    wrong_key = new_key("ec")
    wrong = issue_cert(make_name(WRONG_SUBJECT), wrong_key.public_key(), None, wrong_key, is_ca=True)
    fake_key = new_key("rsa")  # same key type as the real root, so verifiers consider it
    fake = issue_cert(make_name(ROOT_SUBJECT), fake_key.public_key(), None, fake_key, is_ca=True, path_length=1)
    put_cert("root_ca_cert", root), put_key("root_ca_key", root_key)
    put_cert("inter_ca_cert", inter), put_key("inter_ca_key", inter_key)
    put_cert("wrong_ca_cert", wrong), put_key("wrong_ca_key", wrong_key)
    put_cert("fake_root_cert", fake), put_key("fake_root_key", fake_key)
    files["ca_bundle"] = cert_pem(inter) + cert_pem(root)

    def leaf(prefix, subject, ca_cert, ca_key, kind="ec", chain=False, **kw):
        key = new_key(kind)
        cert = issue_cert(make_name(subject), key.public_key(), ca_cert, ca_key, **kw)
        put_cert(prefix + "_cert", cert)
        put_key(prefix + "_key", key)
        if chain:
            files[prefix + "_chain"] = cert_pem(cert) + cert_pem(ca_cert)
        return cert, key

    # servers
    srv = dict(san_dns=["localhost"], san_ip=["127.0.0.1"], eku=server_eku)
    srv_subject = [(NameOID.ORGANIZATION_NAME, "Bulwark Tests"), (NameOID.COMMON_NAME, "localhost")]
    leaf("server", srv_subject, inter, inter_key, "rsa", chain=True, **srv)
    leaf("server_ec", srv_subject, inter, inter_key, "ec", chain=True, **srv)
    leaf("server_root", srv_subject, root, root_key, "ec", **srv)

    def dev(cn):
        return DEVICE_SUBJECT + [(NameOID.COMMON_NAME, cn)]

    # clients
    leaf("client", dev("device-001"), inter, inter_key, "rsa", chain=True, eku=client_eku)
    leaf("client_ec", dev("device-ec"), inter, inter_key, "ec", chain=True, eku=client_eku)
    leaf("client_dn", dev("device-dn"), inter, inter_key, eku=client_eku)
    leaf("client_root", dev("device-root"), root, root_key, eku=client_eku)
    leaf("client_nocn", [(NameOID.ORGANIZATION_NAME, "Acme")], inter, inter_key, eku=client_eku)
    leaf("client_multirdn", MULTIRDN_SUBJECT, inter, inter_key, eku=client_eku)
    revoked, _ = leaf("client_revoked", dev("device-revoked"), inter, inter_key, eku=client_eku)
    leaf("client_expired", dev("device-expired"), inter, inter_key, eku=client_eku,
         not_before=now - datetime.timedelta(days=30), not_after=now - datetime.timedelta(days=1))
    leaf("client_notyet", dev("device-notyet"), inter, inter_key, eku=client_eku,
         not_before=now + datetime.timedelta(days=10), not_after=now + datetime.timedelta(days=400))
    leaf("client_wrongca", dev("device-001"), wrong, wrong_key, eku=client_eku)
    # no AKI: a verifier finds the real root by issuer name, and only the signature check refuses it
    leaf("client_fakeroot", dev("device-001"), fake, fake_key, eku=client_eku, aki=False)
    leaf("client_server_eku", dev("device-server-eku"), inter, inter_key, eku=server_eku)
    enc_cert, enc_key = leaf("client_encrypted", dev("device-encrypted"), inter, inter_key, eku=client_eku)
    put_key("client_encrypted_key", enc_key, PASSWORD)

    # CRLs
    crl = make_crl(inter, inter_key, [revoked.serial_number], number=2)
    files["crl_pem"] = crl.public_bytes(serialization.Encoding.PEM)
    files["crl_der"] = crl.public_bytes(serialization.Encoding.DER)
    files["crl_empty"] = make_crl(inter, inter_key, [], number=1).public_bytes(serialization.Encoding.PEM)
    files["crl_expired"] = make_crl(
        inter, inter_key, [revoked.serial_number], number=3,
        last_update=now - datetime.timedelta(days=30),
        next_update=now - datetime.timedelta(days=1)).public_bytes(serialization.Encoding.PEM)
    files["root_crl"] = make_crl(root, root_key, [], number=1).public_bytes(serialization.Encoding.PEM)
    files["crl_chain"] = files["crl_pem"] + files["root_crl"]

    missing = set(INVENTORY) - set(files)
    assert not missing, f"pki.generate forgot {sorted(missing)}"
    for attr, data in files.items():
        write_file(d / INVENTORY[attr][0], data, private=attr.endswith("_key"))
    (d / "manifest.json").write_text(json.dumps(
        {a: {"file": f, "what": w} for a, (f, w) in INVENTORY.items()}, indent=1))
    return Pki(d)


def load(directory):
    """A Pki over an already generated directory."""
    return Pki(directory)


if __name__ == "__main__":  # python3 bw/pki.py OUTDIR  -> generate a PKI by hand
    import sys
    p = generate(sys.argv[1] if len(sys.argv) > 1 else "pki")
    for a, (f, w) in INVENTORY.items():
        print(f"{a:24} {f:24} {w}")
