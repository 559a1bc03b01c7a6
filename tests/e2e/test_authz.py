"""Authorization core and enforcement (issue 5, reference/emqx.md §5): where a verdict applies
(PUBLISH v5/v3 and QoS 0/1/2, SUBSCRIBE, shared subscriptions, will messages, retained delivery),
deny_action = disconnect, no_match, superusers, ACLs granted by JWT authentication, mountpoints,
config errors, and the mTLS guide's scenario (certificate CN -> username -> ACL, no password)."""
import time

import jwt
import pytest

from bw import mqtt_raw as m
from bw.tls import client_context

NOT_AUTHORIZED = 0x87

ACL = """
{allow, all, publish, ["open/#", "pub/${username}/#", "pub/${clientid}/#"]}.
{allow, all, subscribe, ["open/#", {eq, "exact/+"}, "sub/${username}/#"]}.
{allow, {username, "admin"}, all, ["#"]}.
{deny, all}.
"""


def file_authz(acl=ACL, extra=""):
    return ("authorization {\n  no_match = deny\n" + extra +
            '\n  sources = [ { type = file, path = "acl.conf" } ]\n}\n')


def start(start_broker, acl=ACL, extra="", config=""):
    return start_broker(config + file_authz(acl, extra), files={"acl.conf": acl})


def client(b, cid, version=5, username=None, **kw):
    c = m.RawClient(b.tcp_port, version=version)
    c.connect(cid, username=username, **kw)
    return c


# ---- PUBLISH ------------------------------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_denied_v5_reason_code_and_not_delivered(start_broker, qos):
    b = start(start_broker)
    sub = client(b, "watcher", username="admin")
    sub.subscribe([("#", 2)], expect_codes=[2])
    pub = client(b, "dev1", username="alice")
    if qos:
        pub.publish("secret/x", b"no", qos=qos, expect_rc=NOT_AUTHORIZED)
    else:
        pub.publish("secret/x", b"no")
    pub.publish("open/x", b"yes", qos=1, expect_rc=0)  # QoS 1 allowed: also proves ordering
    p = sub.recv_publish()
    assert p.topic == "open/x" and p.payload == b"yes"
    sub.expect_nothing(0.3)
    assert pub.is_open()


@pytest.mark.parametrize("qos", [1, 2])
def test_publish_denied_v3_acked_and_dropped(start_broker, qos):
    b = start(start_broker)
    sub = client(b, "watcher", version=4, username="admin")
    sub.subscribe([("#", 2)], expect_codes=[2])
    pub = client(b, "dev1", version=4, username="alice")
    ack = pub.publish("secret/x", b"no", qos=qos)
    assert ack is not None  # MQTT 3 cannot refuse: acknowledged ...
    sub.expect_nothing(0.5)  # ... and dropped
    pub.publish("pub/alice/t", b"ok", qos=1)
    assert sub.recv_publish().topic == "pub/alice/t"


def test_placeholders_username_and_clientid(start_broker):
    b = start(start_broker)
    sub = client(b, "watcher", username="admin")
    sub.subscribe([("#", 1)])
    pub = client(b, "dev7", username="bob")
    pub.publish("pub/bob/a", qos=1, expect_rc=0)
    pub.publish("pub/dev7/a", qos=1, expect_rc=0)
    pub.publish("pub/alice/a", qos=1, expect_rc=NOT_AUTHORIZED)
    assert [p.topic for p in sub.recv_publishes(2)] == ["pub/bob/a", "pub/dev7/a"]
    # no username: the ${username} topic matches nothing (never rendered as "")
    anon = client(b, "dev8")
    anon.publish("pub//a", qos=1, expect_rc=NOT_AUTHORIZED)
    anon.publish("pub/dev8/a", qos=1, expect_rc=0)


def test_deny_action_disconnect(start_broker):
    b = start(start_broker, extra="deny_action = disconnect")
    pub = client(b, "dev1", username="alice")
    pub.publish("open/ok", qos=1, expect_rc=0x10)
    pub.send(m.publish("secret/x", b"x", qos=1, packet_id=9, version=5))
    d = pub.expect(m.DISCONNECT)
    assert d.rc == NOT_AUTHORIZED
    pub.expect_closed()
    sub = client(b, "dev2", username="alice")
    sub.send(m.subscribe(3, [("secret/#", 0)], version=5))
    assert sub.expect(m.DISCONNECT).rc == NOT_AUTHORIZED


def test_no_match_allow_lets_unmatched_through(start_broker):
    acl = '{deny, all, publish, ["blocked/#"]}.\n'
    b = start_broker('authorization { no_match = allow, sources = [ { type = file, path = "acl.conf" } ] }',
                     files={"acl.conf": acl})
    c = client(b, "dev1")
    c.publish("anything/else", qos=1, expect_rc=0x10)  # allowed; no subscribers
    c.publish("blocked/x", qos=1, expect_rc=NOT_AUTHORIZED)


# ---- SUBSCRIBE ----------------------------------------------------------------------------------

@pytest.mark.parametrize("version,denied", [(5, 0x87), (4, 0x80)])
def test_subscribe_denied_codes(start_broker, version, denied):
    b = start(start_broker)
    c = client(b, "dev1", version=version, username="alice")
    c.subscribe([("open/a", 1), ("secret/#", 1), ("sub/alice/x", 2), ("exact/+", 0), ("exact/a", 0)],
                expect_codes=[1, denied, 2, 0, denied])
    # only the granted subscriptions exist
    pub = client(b, "admin1", username="admin")
    pub.publish("secret/q", qos=1)
    pub.publish("open/a", b"1", qos=1)
    assert c.recv_publish().topic == "open/a"
    c.expect_nothing(0.3)


def test_subscribe_filter_wildcards_are_plain_words(start_broker):
    # rule "open/#" covers the filter "open/+/x"; a rule "sub/${username}/#" does not cover "sub/+/x"
    b = start(start_broker)
    c = client(b, "dev1", username="alice")
    c.subscribe([("open/+/x", 0), ("sub/+/x", 0), ("#", 0)], expect_codes=[0, 0x87, 0x87])


def test_shared_subscription_checks_the_real_filter(start_broker):
    b = start(start_broker)
    c = client(b, "dev1", username="alice")
    c.subscribe([("$share/g/open/t", 1), ("$share/g/secret/t", 1)], expect_codes=[1, 0x87])


# ---- retained delivery and wills ----------------------------------------------------------------

def test_retained_delivery_checks_each_topic(start_broker):
    acl = """
    {deny, all, subscribe, ["news/private/#"]}.
    {allow, all, subscribe, ["news/#"]}.
    {allow, all, publish, ["#"]}.
    {deny, all}.
    """
    b = start(start_broker, acl)
    pub = client(b, "pub")
    pub.publish("news/public/1", b"pub", qos=1, retain=True)
    pub.publish("news/private/1", b"priv", qos=1, retain=True)
    c = client(b, "reader")
    c.subscribe([("news/#", 1)], expect_codes=[1])  # the filter itself is allowed
    p = c.recv_publish()
    assert p.topic == "news/public/1" and p.retain
    c.expect_nothing(0.5)  # the private retained message is not delivered


def test_retained_flag_condition(start_broker):
    acl = """
    {deny, all, {publish, [{retain, true}]}, ["#"]}.
    {allow, all, all, ["#"]}.
    """
    b = start(start_broker, acl)
    pub = client(b, "pub")
    pub.publish("r/1", b"x", qos=1, retain=True, expect_rc=NOT_AUTHORIZED)
    pub.publish("r/1", b"y", qos=1, expect_rc=0x10)
    c = client(b, "reader")
    c.subscribe([("r/#", 1)])
    c.expect_nothing(0.5)  # nothing was retained


def test_will_checked_when_published(start_broker):
    b = start(start_broker)
    watcher = client(b, "watcher", username="admin")
    watcher.subscribe([("#", 1)])
    for cid, topic in (("dev-a", "secret/will"), ("dev-b", "open/will")):
        c = m.RawClient(b.tcp_port, version=5)
        c.connect(cid, username="alice", will={"topic": topic, "payload": b"gone", "qos": 1})
        c.close()  # no DISCONNECT: the will is due
    p = watcher.recv_publish(timeout=5)
    assert p.topic == "open/will"
    watcher.expect_nothing(0.5)


# ---- superusers, JWT ACLs, mountpoints ----------------------------------------------------------

def test_superuser_bypasses_sources(start_broker):
    b = start(start_broker, config="authentication = [ { mechanism = password_based, backend = built_in_database } ]\n")
    code, out = b.ctl("users", "add", "root", "rootpw", "--superuser")
    assert code == 0, out
    code, out = b.ctl("users", "add", "plain", "pw")
    assert code == 0, out
    root = client(b, "r1", username="root", password=b"rootpw")
    root.publish("secret/x", qos=1, expect_rc=0x10)
    root.subscribe([("secret/#", 1)], expect_codes=[1])
    plain = client(b, "p1", username="plain", password=b"pw")
    plain.publish("secret/x", qos=1, expect_rc=NOT_AUTHORIZED)


SECRET = "jwt-hmac-secret-for-acl-tests"


@pytest.mark.parametrize("shape", ["v2", "v1"])
def test_jwt_acl_checked_before_sources(start_broker, shape):
    acl_claim = ([{"permission": "allow", "action": "publish", "topic": "jwt/${clientid}/#"},
                  {"permission": "deny", "action": "all", "topic": "open/blocked"}]
                 if shape == "v2" else {"pub": ["jwt/${clientid}/#"], "sub": ["jwt/in"]})
    cfg = f'authentication = [ {{ mechanism = jwt, algorithm = hmac-based, secret = "{SECRET}" }} ]\n'
    b = start(start_broker, config=cfg)
    token = jwt.encode({"exp": int(time.time()) + 60, "acl": acl_claim}, SECRET, algorithm="HS256").encode()
    c = client(b, "d1", username="u", password=token)
    c.publish("jwt/d1/t", qos=1, expect_rc=0x10)     # granted by the token
    c.publish("jwt/d2/t", qos=1, expect_rc=NOT_AUTHORIZED)  # not by the token; the file denies
    c.publish("open/x", qos=1, expect_rc=0x10)       # the token says nothing: the file allows
    if shape == "v2":
        c.publish("open/blocked", qos=1, expect_rc=NOT_AUTHORIZED)  # the token's deny comes first
    else:
        c.subscribe([("jwt/in", 0)], expect_codes=[0])


def test_topics_are_checked_without_the_mountpoint(start_broker):
    b = start(start_broker, config='listeners.tcp.default.mountpoint = "tenant/${clientid}/"\n')
    c = client(b, "dev1", username="alice")
    c.subscribe([("open/x", 1)], expect_codes=[1])
    c.publish("open/x", b"m", qos=1, expect_rc=0)
    assert c.recv_publish().topic == "open/x"
    c.publish("tenant/dev1/open/x", qos=1, expect_rc=NOT_AUTHORIZED)


# ---- configuration ------------------------------------------------------------------------------

def test_config_errors_name_file_line_and_key(check_config):
    status, out = check_config('authorization {\n  sources = [ { type = nosuch } ]\n}\n')
    assert status == 1 and "nosuch" in out and ":2:" in out, out
    status, out = check_config('authorization {\n  no_match = maybe\n}\n')
    assert status == 1 and "authorization.no_match" in out and ":2:" in out, out
    status, out = check_config('authorization {\n  cache { max_size = 0 }\n}\n')
    assert status == 1 and "max_size" in out, out
    status, out = check_config('authorization {\n  deny_action = disconnect\n  no_match = deny\n'
                               '  cache { enable = true, max_size = 64, ttl = 30s, excludes = ["a/#"] }\n'
                               '  sources = []\n}\n')
    assert status == 0, out


# ---- the mTLS guide: certificate CN as username, ACL per device, no password ----------------------

DEVICE_ACL = """
%% each device publishes under its own name only
{allow, all, publish, ["devices/${username}/#"]}.
{deny, all}.
"""


def test_mtls_device_publishes_only_under_its_cn(start_broker, pki):
    cfg = """
    mqtt.peer_cert_as_username = cn
    listeners.ssl.default {
      enable_authn = false
      ssl_options {
        cacertfile = "{{pki.ca_bundle}}"
        certfile   = "{{pki.server_chain}}"
        keyfile    = "{{pki.server_key}}"
        verify = verify_peer
        fail_if_no_peer_cert = true
      }
    }
    authorization { no_match = deny, sources = [ { type = file, path = "acl.conf" } ] }
    """
    b = start_broker(cfg, ssl=True, files={"acl.conf": DEVICE_ACL})
    ctx = client_context(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    dev = m.RawClient(b.ssl_port, version=5, tls=ctx)
    dev.connect("device-001-conn")  # no username, no password: the certificate is the identity
    dev.publish("devices/device-001/telemetry", b"21.5", qos=1, expect_rc=0x10)
    dev.publish("devices/device-002/telemetry", b"spoof", qos=1, expect_rc=NOT_AUTHORIZED)
    dev.publish("devices", b"x", qos=1, expect_rc=NOT_AUTHORIZED)
    dev.subscribe([("devices/device-001/#", 1)], expect_codes=[0x87])
    # v3.1.1: the spoofed message is acknowledged and dropped
    dev3 = m.RawClient(b.ssl_port, version=4, tls=ctx)
    dev3.connect("device-001-v3")
    other = client_context(ca=pki.root_ca_cert, cert=pki.client_ec_cert, key=pki.client_ec_key)
    ec = m.RawClient(b.ssl_port, version=5, tls=other)
    ec.connect("device-ec-conn")
    ec.publish("devices/device-ec/x", qos=1, expect_rc=0x10)
    ec.publish("devices/device-001/x", qos=1, expect_rc=NOT_AUTHORIZED)
    # banning that username: the live connections are dropped (0x98) and new ones refused (0x8A)
    code, out = b.ctl("bans", "add", "username", "device-001", "--reason", "lost device")
    assert code == 0, out
    assert dev.expect(m.DISCONNECT, timeout=5).rc == 0x98
    dev3.expect_closed(timeout=5)
    again = m.RawClient(b.ssl_port, version=5, tls=ctx)
    again.connect("device-001-conn", expect_rc=0x8A)
    assert ec.is_open()  # other devices carry on
    ec.publish("devices/device-ec/y", qos=1, expect_rc=0x10)


def test_will_of_a_banned_client_is_not_published(start_broker):
    b = start(start_broker)
    watcher = client(b, "watcher", username="admin")
    watcher.subscribe([("#", 1)])
    c = m.RawClient(b.tcp_port, version=5)
    c.connect("dev-w", username="alice", will={"topic": "open/will", "payload": b"gone", "qos": 1})
    code, out = b.ctl("bans", "add", "username", "alice")
    assert code == 0, out
    assert c.expect(m.DISCONNECT, timeout=5).rc == 0x98
    watcher.expect_nothing(1.0)  # kicked for a ban: the will is dropped
    # a kick without a ban publishes the will (EMQX)
    k = m.RawClient(b.tcp_port, version=5)
    k.connect("dev-k", username="bob", will={"topic": "open/will2", "payload": b"bye", "qos": 1})
    code, out = b.ctl("clients", "kick", "dev-k")
    assert code == 0, out
    assert watcher.recv_publish(timeout=5).topic == "open/will2"


def test_jwt_acl_ends_with_the_token(start_broker):
    # disconnect_after_expire = false: the client stays, but the token's ACL stops applying at exp
    cfg = (f'authentication = [ {{ mechanism = jwt, algorithm = hmac-based, secret = "{SECRET}", '
           'disconnect_after_expire = false } ]\n')
    b = start(start_broker, config=cfg)
    exp = int(time.time()) + 3
    token = jwt.encode({"exp": exp, "acl": {"pub": ["jwt/#"]}}, SECRET, algorithm="HS256").encode()
    c = client(b, "d1", username="u", password=token)
    c.publish("jwt/x", qos=1, expect_rc=0x10)
    time.sleep(max(0.0, exp - time.time()) + 1.2)
    assert c.is_open()
    c.publish("jwt/x", qos=1, expect_rc=NOT_AUTHORIZED)  # cached allow dropped too
