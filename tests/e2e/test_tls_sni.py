"""Managed certificate bundles chosen by SNI (ssl_options.managed_certs, SPEC §2, seed 002):
bundles in <data_dir>/certs/<namespace>/<name>/, the first entry as default, client certificates
still verified against cacertfile, missing bundles refused at start and by --check (also for the
shared seed examples), bundles re-read on reload, and `bulwark ctl certs add|replace|list|delete`."""
import shutil
import ssl
import time
from pathlib import Path

import pytest
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from bw import mqtt_raw as m
from bw.tls import client_context, handshake

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"  # the seed snippets, vendored
NAMES = {"example-cert-1": "example.com", "example-cert-2": "api.example.com",
         "mqtt-cert": "mqtt.tenant-a.example.com"}


@pytest.fixture(scope="module")
def servers(pki, tmp_path_factory):
    """Server certificates (leaf + intermediate chains) for the SNI names, and a second
    certificate for api.example.com (a renewal with a new key)."""
    d = tmp_path_factory.mktemp("sni-certs")
    out = {}
    for label, host in list(NAMES.items()) + [("example-cert-2-renewed", "api.example.com")]:
        cert, key, chain = pki.issue_client(d, label, subject=[(NameOID.ORGANIZATION_NAME, "Bulwark Tests"),
                                                               (NameOID.COMMON_NAME, host)],
                                            eku=[ExtendedKeyUsageOID.SERVER_AUTH], san_dns=[host])
        out[label] = {"cert": cert, "key": key, "chain": chain}
    return out


def bundle_files(servers, ns, name, label=None):
    src = servers[label or name]
    return {f"data/certs/{ns}/{name}/chain.pem": Path(src["chain"]).read_bytes(),
            f"data/certs/{ns}/{name}/key.pem": Path(src["key"]).read_bytes()}


def all_bundles(servers):
    files = {}
    files.update(bundle_files(servers, "global", "example-cert-1"))
    files.update(bundle_files(servers, "global", "example-cert-2"))
    files.update(bundle_files(servers, "tenant-a", "mqtt-cert"))
    return files


def der(cert_path):
    return ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text().split("-----END CERTIFICATE-----")[0]
                                    + "-----END CERTIFICATE-----\n")


def served(port, pki, sni):
    """DER of the certificate served for SNI sni (None: no SNI sent). The chain must verify."""
    ctx = client_context(ca=pki.root_ca_cert, check_hostname=False)
    with handshake(port, ctx, server_hostname=sni) as s:
        return s.getpeercert(binary_form=True)


MANAGED = """
listeners.ssl.default {
  ssl_options {
    managed_certs = [
      { bundle_name = "example-cert-1", sni = "example.com" },
      { bundle_name = "example-cert-2", sni = "api.example.com" },
      { namespace = "tenant-a", bundle_name = "mqtt-cert", sni = "mqtt.tenant-a.example.com" }
    ]
    cacertfile = "{{pki.ca_bundle}}"
    verify = verify_peer
    fail_if_no_peer_cert = true
  }
}
"""


def device(pki, name="client", **kw):
    return client_context(ca=pki.root_ca_cert, cert=pki[name + "_cert"], key=pki[name + "_key"], **kw)


# ---- SNI selection -----------------------------------------------------------------------------

def test_sni_chooses_the_bundle_and_the_first_is_the_default(start_broker, pki, servers):
    b = start_broker(MANAGED, ssl=True, files=all_bundles(servers))
    for label, host in NAMES.items():
        assert served(b.ssl_port, pki, host) == der(servers[label]["cert"]), host
        # a client checking the host name is satisfied, and MQTT works through the chosen bundle
        kind, what = m.connect_outcome(b.ssl_port, version=5, tls=device(pki), server_hostname=host,
                                       client_id=f"via-{label}")
        assert kind == "connack" and what.rc == 0, (host, kind, what)
    # exact match, DNS names compare case-insensitively
    assert served(b.ssl_port, pki, "API.Example.COM") == der(servers["example-cert-2"]["cert"])
    # unknown names and no SNI at all get the first entry
    assert served(b.ssl_port, pki, "unknown.example.net") == der(servers["example-cert-1"]["cert"])
    assert served(b.ssl_port, pki, "sub.api.example.com") == der(servers["example-cert-1"]["cert"])
    assert served(b.ssl_port, pki, None) == der(servers["example-cert-1"]["cert"])


def test_client_certificates_are_verified_against_cacertfile_for_every_bundle(start_broker, pki, servers):
    b = start_broker(MANAGED, ssl=True, files=all_bundles(servers))
    for host in NAMES.values():
        mark = b.log_mark()
        kind, what = m.connect_outcome(b.ssl_port, version=5, tls=device(pki, "client_wrongca", check_hostname=False),
                                       server_hostname=host, client_id="wrong")
        assert kind in ("tls_error", "closed"), (host, kind, what)
        b.wait_for_log(r"certificate verify failed: unknown CA", since=mark)
        kind, what = m.connect_outcome(b.ssl_port, version=5, tls=client_context(ca=pki.root_ca_cert),
                                       server_hostname=host, client_id="nocert")
        assert kind in ("tls_error", "closed"), (host, kind, what)


def test_bundle_with_encrypted_key_and_key_password(start_broker, pki, servers, tmp_path):
    from cryptography.hazmat.primitives import serialization
    key = serialization.load_pem_private_key(Path(servers["example-cert-1"]["key"]).read_bytes(), None)
    enc = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.BestAvailableEncryption(b"bundle-pw"))
    files = bundle_files(servers, "global", "example-cert-1")
    files["data/certs/global/example-cert-1/key.pem"] = enc
    files["data/certs/global/example-cert-1/key-password"] = "bundle-pw\n"
    b = start_broker("""
listeners.ssl.default { ssl_options { managed_certs = [ { bundle_name = "example-cert-1", sni = "example.com" } ] } }
""", ssl=True, files=files)
    assert served(b.ssl_port, pki, "example.com") == der(servers["example-cert-1"]["cert"])


# ---- missing bundles ---------------------------------------------------------------------------

def test_missing_bundle_refuses_to_start(start_broker, pki, servers):
    files = bundle_files(servers, "global", "example-cert-1")
    b = start_broker(MANAGED, ssl=True, files=files, start=False, expect_exit=None)
    status, log = b.run_to_exit()
    assert status != 0, log
    assert "global/example-cert-2" in log and "data/certs/global/example-cert-2/chain.pem" in log, log
    assert "bulwark.conf:" in log, log


@pytest.mark.parametrize("example", ["seed-002-managed-certs-global.conf", "seed-002-managed-certs-tenant.conf"])
def test_shared_managed_certs_examples_pass_check_once_the_bundles_exist(check_config, servers, example):
    # the examples bind 0.0.0.0:8883: they are only checked here, never started
    if not (EXAMPLES / example).exists():
        pytest.skip(f"{EXAMPLES / example} not found")
    text = (EXAMPLES / example).read_text()
    status, out = check_config(text)
    assert status == 1 and "data/certs/" in out and "chain.pem" in out, out
    status, out = check_config(text, files=all_bundles(servers))
    assert status == 0 and "configuration OK" in out, out


def test_check_reports_a_key_that_does_not_match(check_config, servers):
    files = all_bundles(servers)
    files["data/certs/global/example-cert-2/key.pem"] = Path(servers["example-cert-1"]["key"]).read_bytes()
    status, out = check_config((EXAMPLES / "seed-002-managed-certs-global.conf").read_text(), files=files)
    assert status == 1 and "global/example-cert-2" in out and "does not match" in out, out


# ---- reload ------------------------------------------------------------------------------------

def _replace_bundle(b, servers, ns, name, label):
    """Write new bundle files the way certificate tooling does: beside, then renamed over."""
    for rel, data in bundle_files(servers, ns, name, label).items():
        tmp = b.write_file(rel + ".new", data)
        tmp.rename(b.path(rel))


def test_bundle_replaced_on_disk_is_picked_up_without_dropping_connections(start_broker, pki, servers):
    b = start_broker(MANAGED, ssl=True, files=all_bundles(servers))
    live = m.RawClient(b.ssl_port, version=5, tls=device(pki), server_hostname="api.example.com")
    try:
        live.connect("live")
        live.subscribe("t/#", qos=1)
        _replace_bundle(b, servers, "global", "example-cert-2", "example-cert-2-renewed")
        deadline = time.monotonic() + 5
        while served(b.ssl_port, pki, "api.example.com") != der(servers["example-cert-2-renewed"]["cert"]):
            assert time.monotonic() < deadline, "a replaced bundle must be used for new handshakes"
            time.sleep(0.1)
        # the other bundles are unchanged, the live connection carries on
        assert served(b.ssl_port, pki, "example.com") == der(servers["example-cert-1"]["cert"])
        with m.RawClient(b.ssl_port, version=5, tls=device(pki), server_hostname="api.example.com") as pub:
            pub.connect("pub")
            pub.publish("t/1", b"after", qos=1)
        live.recv_publish(topic="t/1", payload=b"after")
    finally:
        live.close()


def test_broken_bundle_on_reload_keeps_the_previous_generation(start_broker, pki, servers):
    b = start_broker(MANAGED, ssl=True, files=all_bundles(servers))
    mark = b.log_mark()
    b.path("data/certs/global/example-cert-2/key.pem").write_bytes(Path(servers["example-cert-1"]["key"]).read_bytes())
    b.reload()
    b.wait_for_log(r"ssl:default.*reload failed.*example-cert-2", since=mark)
    assert served(b.ssl_port, pki, "api.example.com") == der(servers["example-cert-2"]["cert"])


# ---- bulwark ctl certs -------------------------------------------------------------------------

def ctl_certs(b, *args):
    status, out = b.ctl("certs", *args)
    if "unknown command" in out:
        pytest.skip("`bulwark ctl certs` is not wired to tls_bundles_ctl in the control socket handler yet")
    return status, out


def test_ctl_certs_add_list_replace_delete(start_broker, pki, servers):
    files = bundle_files(servers, "global", "example-cert-1")
    b = start_broker("""
listeners.ssl.default { ssl_options { managed_certs = [ { bundle_name = "example-cert-1", sni = "example.com" } ] } }
""", ssl=True, files=files)
    status, out = ctl_certs(b, "list")
    assert status == 0 and "global/example-cert-1" in out and "CN=example.com" in out, out
    live = m.RawClient(b.ssl_port, version=5, tls=client_context(ca=pki.root_ca_cert), server_hostname="example.com")
    try:
        live.connect("live")
        # replace: new handshakes use the new certificate at once, the live connection stays
        status, out = ctl_certs(b, "replace", "example-cert-1", "--chain", servers["example-cert-2"]["chain"],
                                "--key", servers["example-cert-2"]["key"])
        assert status == 0 and "replaced bundle global/example-cert-1" in out, out
        assert served(b.ssl_port, pki, "example.com") == der(servers["example-cert-2"]["cert"])
        live.ping()
        assert (b.path("data/certs/global/example-cert-1/key.pem").stat().st_mode & 0o777) == 0o600
        # add and delete another bundle
        status, out = ctl_certs(b, "add", "tenant-a/mqtt-cert", "--chain", servers["mqtt-cert"]["chain"],
                                "--key", servers["mqtt-cert"]["key"])
        assert status == 0 and "added bundle tenant-a/mqtt-cert" in out, out
        status, out = ctl_certs(b, "list", "tenant-a")
        assert status == 0 and "tenant-a/mqtt-cert" in out and "global/" not in out, out
        status, out = ctl_certs(b, "add", "tenant-a/mqtt-cert", "--chain", servers["mqtt-cert"]["chain"],
                                "--key", servers["mqtt-cert"]["key"])
        assert status != 0 and "already exists" in out, out
        status, out = ctl_certs(b, "replace", "x/y", "--chain", servers["mqtt-cert"]["chain"],
                                "--key", servers["example-cert-1"]["key"])
        assert status != 0 and "does not match" in out, out
        status, out = ctl_certs(b, "delete", "tenant-a/mqtt-cert")
        assert status == 0 and "deleted" in out, out
        assert not b.path("data/certs/tenant-a/mqtt-cert").exists()
        live.ping()
    finally:
        live.close()
