"""Certificate -> client identity (SPEC §3, issue 3): peer_cert_as_username / peer_cert_as_clientid
with cn, dn, crt, pem, md5; precedence over CONNECT; certificate-only listeners
(enable_authn = false); control characters; takeover_requires_same_identity."""
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw.clients import Tls
from bw.tls import client_context

MTLS = """
    listeners.ssl.default {{
      enable_authn = {authn}
      ssl_options {{
        cacertfile = "{{{{pki.ca_bundle}}}}"
        certfile   = "{{{{pki.server_chain}}}}"
        keyfile    = "{{{{pki.server_key}}}}"
        verify = verify_peer
        fail_if_no_peer_cert = {fail}
      }}
    }}
"""


def mtls(extra="", authn="true", fail="true"):
    return MTLS.format(authn=authn, fail=fail) + extra


def clients(b):
    """ctl clients list as {client_id: {'username': ..., 'listener': ...}} for connected clients."""
    status, out = b.ctl("clients", "list")
    assert status == 0, out
    rows = {}
    for line in out.splitlines():
        f = line.split("\t")
        if len(f) >= 6 and f[1] == "connected":
            rows[f[0]] = {"peer": f[2], "listener": f[3], "proto": f[4], "username": f[5]}
    return rows


def ctx(pki, cert, key):
    return client_context(ca=pki.root_ca_cert, cert=cert, key=key)


def connect(raw_client, b, pki, cert, key, client_id="c1", version=5, username=None, expect_rc=0):
    c = raw_client(b, version=version, tls=ctx(pki, cert, key))
    c.connect(client_id, username=username, expect_rc=expect_rc)
    return c


@pytest.mark.parametrize("how", ["cn", "dn", "pem", "md5"])
def test_username_from_certificate(start_broker, raw_client, pki, how):
    b = start_broker(mtls(f"mqtt.peer_cert_as_username = {how}"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "dev-a", username="ignored")
    want = pki.identity("client_cert")[how]
    assert clients(b)["dev-a"]["username"] == want
    c.disconnect()


@pytest.mark.parametrize("how", ["cn", "dn", "pem", "md5"])
def test_client_id_from_certificate(start_broker, raw_client, pki, how):
    b = start_broker(mtls(f"mqtt.peer_cert_as_clientid = {how}"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "chosen-by-client")
    want = pki.identity("client_cert")[how]
    assert want in clients(b)
    # v5: the broker tells the client the identifier it now has
    assert c.connack.props.get("assigned_client_identifier") == want
    c.disconnect()


def test_crt_as_client_id_is_refused_at_load(check_config):
    status, out = check_config("mqtt.peer_cert_as_clientid = crt\n")
    assert status == 1
    assert "peer_cert_as_clientid" in out and "md5 or pem" in out


def test_crt_as_username_is_the_der(start_broker, raw_client, pki):
    b = start_broker(mtls("mqtt.peer_cert_as_username = crt"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "dev-crt")
    # the username is binary DER; ctl shows it with control bytes escaped
    shown = clients(b)["dev-crt"]["username"]
    assert shown.startswith("0\\x") or shown.startswith("0")
    c.disconnect()


def test_dn_of_multi_valued_rdn_and_escaping(start_broker, raw_client, pki):
    b = start_broker(mtls("mqtt.peer_cert_as_username = dn"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_multirdn_cert, pki.client_multirdn_key, "multi")
    assert clients(b)["multi"]["username"] == pki.identity("client_multirdn_cert")["dn"]
    c.disconnect()


def test_certificate_value_overrides_connect_and_username_becomes_client_id(start_broker, raw_client, pki):
    b = start_broker(mtls("""
        mqtt.peer_cert_as_username = cn
        mqtt.use_username_as_clientid = true
    """), ssl=True)
    c = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "whatever", username="someone-else")
    row = clients(b)["device-001"]
    assert row["username"] == "device-001"
    c.disconnect()


def test_missing_cn_falls_back_to_connect_username_when_authn_on(start_broker, raw_client, pki):
    b = start_broker(mtls("mqtt.peer_cert_as_username = cn"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_nocn_cert, pki.client_nocn_key, "nocn", username="from-connect")
    assert clients(b)["nocn"]["username"] == "from-connect"
    c.disconnect()


@pytest.mark.parametrize("version,rc", [(5, 0x87), (4, 5)])
def test_certificate_only_listener_refuses_missing_field(start_broker, raw_client, pki, version, rc):
    b = start_broker(mtls("mqtt.peer_cert_as_username = cn", authn="false"), ssl=True)
    c = raw_client(b, version=version, tls=ctx(pki, pki.client_nocn_cert, pki.client_nocn_key))
    c.connect("nocn", username="i-choose-myself", expect_rc=rc)
    b.wait_for_log(r"nocn.*refused")


def test_certificate_only_listener_refuses_client_without_certificate(start_broker, raw_client, pki):
    b = start_broker(mtls("mqtt.peer_cert_as_username = cn", authn="false", fail="false"), ssl=True)
    c = raw_client(b, version=5, tls=client_context(ca=pki.root_ca_cert))
    c.connect("nocert", username="admin", expect_rc=0x87)


def test_certificate_only_listener_accepts_mapped_client_without_password(start_broker, raw_client, pki):
    b = start_broker(mtls("mqtt.peer_cert_as_username = cn", authn="false"), ssl=True)
    c = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "dev-ok")
    assert clients(b)["dev-ok"]["username"] == "device-001"
    c.disconnect()


def test_control_characters_in_certificate_refuse_the_connection(start_broker, raw_client, pki, tmp_path):
    cert, key, _ = pki.issue_client(tmp_path, "evil", cn="evil\r\nInjected: yes")
    b = start_broker(mtls("mqtt.peer_cert_as_username = cn"), ssl=True)
    c = raw_client(b, version=5, tls=ctx(pki, cert, key))
    c.connect("evil", expect_rc=0x87)
    b.wait_for_log(r"control characters")


def test_seed_000_example_passes_check(check_config):
    example = Path(__file__).resolve().parents[2] / "examples" / "seed-000-peer-cert-mapping.conf"
    status, out = check_config(example.read_text())
    assert status == 0, out


class TestTakeoverIdentity:
    CFG = "mqtt.takeover_requires_same_identity = {on}"

    def test_other_certificate_cannot_take_over(self, start_broker, raw_client, pki):
        b = start_broker(mtls(self.CFG.format(on="true")), ssl=True)
        owner = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "shared-id")
        connect(raw_client, b, pki, pki.client_ec_cert, pki.client_ec_key, "shared-id", expect_rc=0x87)
        owner.ping()  # the owner is still connected
        b.wait_for_log(r"another certificate identity")

    def test_same_certificate_takes_over(self, start_broker, raw_client, pki):
        b = start_broker(mtls(self.CFG.format(on="true")), ssl=True)
        owner = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "same-id")
        connect(raw_client, b, pki, pki.client_cert, pki.client_key, "same-id")
        owner.expect_closed(reason=0x8E)

    def test_default_lets_anyone_take_over(self, start_broker, raw_client, pki):
        b = start_broker(mtls(self.CFG.format(on="false")), ssl=True)
        owner = connect(raw_client, b, pki, pki.client_cert, pki.client_key, "any-id")
        connect(raw_client, b, pki, pki.client_ec_cert, pki.client_ec_key, "any-id")
        owner.expect_closed(reason=0x8E)

    def test_v3_refusal_code(self, start_broker, raw_client, pki):
        b = start_broker(mtls(self.CFG.format(on="true")), ssl=True)
        connect(raw_client, b, pki, pki.client_cert, pki.client_key, "v3-id", version=4)
        connect(raw_client, b, pki, pki.client_ec_cert, pki.client_ec_key, "v3-id", version=4, expect_rc=5)
