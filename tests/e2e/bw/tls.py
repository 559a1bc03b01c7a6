"""Client-side TLS contexts for tests (used by the raw client and the paho helpers)."""
import socket
import ssl


def client_context(ca=None, cert=None, key=None, password=None, *, verify=True, check_hostname=True,
                   min_version=None, max_version=None, ciphers=None, alpn=None):
    """An ssl.SSLContext for a test client.

    ca: CA file that verifies the server (None with verify=False: no server verification);
    cert/key/password: the client certificate (cert may be a chain file), key password;
    min_version/max_version: ssl.TLSVersion values or strings "1.2" / "1.3"."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if verify:
        ctx.check_hostname = check_hostname
        ctx.verify_mode = ssl.CERT_REQUIRED
        if ca:
            ctx.load_verify_locations(cafile=str(ca))
    else:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if cert:
        ctx.load_cert_chain(str(cert), str(key) if key else None, password=password)
    versions = {"1": ssl.TLSVersion.TLSv1, "1.0": ssl.TLSVersion.TLSv1, "1.1": ssl.TLSVersion.TLSv1_1,
                "1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}
    if min_version:
        ctx.minimum_version = versions.get(min_version, min_version)
    if max_version:
        ctx.maximum_version = versions.get(max_version, max_version)
    if ciphers:
        ctx.set_ciphers(ciphers)
    if alpn:
        ctx.set_alpn_protocols(list(alpn))
    return ctx


def handshake(port, ctx, server_hostname="localhost", host="127.0.0.1", timeout=5.0):
    """Open TCP + TLS to host:port (SNI = server_hostname) and return the SSLSocket; raises
    ssl.SSLError / OSError when the handshake fails. Caller closes it."""
    raw = socket.create_connection((host, port), timeout=timeout)
    try:
        s = ctx.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False)
        s.settimeout(timeout)
        s.do_handshake()
        return s
    except BaseException:
        raw.close()
        raise


def peer_chain_subjects(sock):
    """Subjects (RFC 4514) of the certificate the server presented (leaf only; Python exposes no
    verified chain before 3.13)."""
    from cryptography import x509
    der = sock.getpeercert(binary_form=True)
    return [x509.load_der_x509_certificate(der).subject.rfc4514_string()] if der else []
