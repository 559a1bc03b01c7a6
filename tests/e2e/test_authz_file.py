"""The `file` authorization source (reference/emqx.md §5, acl.conf): every Who / Action / Topic
form decides PUBLISH and SUBSCRIBE through the real broker; denial codes (v5 PUBACK/PUBREC/SUBACK
0x87, v3 SUBACK 0x80, QoS 0 and v3 publishes dropped); SIGHUP reload (caches invalidated, a broken
file keeps the previous rules); a broken or missing acl.conf refuses the start with FILE:LINE;
inline `rules`."""
import re

import pytest

from bw import mqtt_raw as m

DENIED = 0x87
V3_SUB_FAILURE = 0x80


def authz(no_match="deny", path="acl.conf", extra=""):
    return ("authorization {\n  no_match = %s\n%s\n  sources = [ { type = file, path = \"%s\" } ]\n}\n"
            % (no_match, extra, path))


def start(start_broker, acl, config="", **kw):
    return start_broker(config + authz(**kw), files={"acl.conf": acl})


def client(b, cid, version=5, username=None, **kw):
    c = m.RawClient(b.tcp_port, version=version)
    c.connect(cid, username=username, **kw)
    return c


def can_pub(c, topic, qos=1, retain=False):
    """True when a QoS 1/2 PUBLISH is accepted (v5 reason code < 0x80), False on 0x87."""
    ack = c.publish(topic, b"x", qos=qos, retain=retain)
    assert ack.rc in (0, 0x10, DENIED), ack
    return ack.rc != DENIED


def can_sub(c, topic, qos=0):
    codes = c.subscribe([(topic, qos)]).reason_codes
    assert len(codes) == 1 and codes[0] in (0, 1, 2, DENIED, V3_SUB_FAILURE), codes
    return codes[0] < 0x80


# ---- Who ------------------------------------------------------------------------------------------

WHO = [
    # (who term, (client id, username) allowed, (client id, username) refused)
    ('{username, "alice"}', ("c1", "alice"), ("c2", "bob")),
    ('{user, "alice"}', ("c1", "alice"), ("c2", "alice2")),
    ('{username, {re, "^dev-[0-9]+$"}}', ("c1", "dev-42"), ("c2", "dev-4x")),
    ('{user, {re, "adm"}}', ("c1", "sysadmin"), ("c2", "ad-m")),  # re:run semantics: unanchored
    ('{clientid, "sensor-1"}', ("sensor-1", None), ("sensor-2", None)),
    ('{client, {re, "^sensor-"}}', ("sensor-9", "u"), ("actuator-1", "u")),
    ('{ipaddr, "127.0.0.1"}', ("c1", None), None),
    ('{ipaddr, "127.0.0.0/8"}', ("c1", None), None),
    ('{ipaddrs, ["10.0.0.0/8", "127.0.0.0/24", "::1"]}', ("c1", None), None),
    ('{zone, "default"}', ("c1", None), None),
    ('{zone, {re, "^def"}}', ("c1", None), None),
    ('{listener, "tcp:default"}', ("c1", None), None),
    ('{listener, {re, "^tcp:"}}', ("c1", None), None),
    ("{'and', [{user, \"alice\"}, {ipaddr, \"127.0.0.1\"}, {client, {re, \"^c\"}}]}", ("c1", "alice"), ("d1", "alice")),
    ("{'or', [{user, \"alice\"}, {client, \"robot\"}]}", ("robot", "bob"), ("c1", "bob")),
    ("{'and', [{'or', [{user, \"x\"}, {user, \"alice\"}]}, {'or', [{zone, \"nope\"}, {listener, \"tcp:default\"}]}]}",
     ("c1", "alice"), ("c1", "y")),
    ("all", ("c1", None), None),
]


@pytest.mark.parametrize("who,ok,bad", WHO, ids=[w[0] for w in WHO])
def test_who_forms(start_broker, who, ok, bad):
    acl = "{allow, %s, all, [\"w/#\"]}.\n{deny, all}.\n" % who
    b = start(start_broker, acl)
    c = client(b, ok[0], username=ok[1])
    assert can_pub(c, "w/1")
    assert can_sub(c, "w/#", qos=1)
    assert not can_pub(c, "other")
    if bad:
        d = client(b, bad[0], username=bad[1])
        assert not can_pub(d, "w/1")
        assert not can_sub(d, "w/#")


def test_who_not_matching_address_zone_listener(start_broker):
    """The forms that cannot be made to fail above (one client address, zone and listener):
    rules naming another address, zone or listener do not apply."""
    acl = """
{allow, {ipaddr, "10.0.0.0/8"}, all, ["a"]}.
{allow, {ipaddrs, ["192.168.0.0/16", "2001:db8::/32"]}, all, ["b"]}.
{allow, {zone, "external"}, all, ["c"]}.
{allow, {listener, "ssl:default"}, all, ["d"]}.
{allow, {ipaddr, "::1"}, all, ["e"]}.
{allow, {'and', []}, all, ["f"]}.
{allow, {'or', []}, all, ["g"]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "c1")
    for t in "abcdeg":
        assert not can_pub(c, t), t
    assert can_pub(c, "f")  # an empty 'and' holds


def test_client_attr(start_broker):
    acl = """
{allow, {client_attr, "group", "g1"}, all, ["g1/#"]}.
{allow, {client_attr, "group", {re, "^g[0-9]$"}}, all, ["any/#"]}.
{allow, all, all, ["attr/${client_attrs.group}/#"]}.
{deny, all}.
"""
    cfg = 'mqtt.client_attrs_init = [ { expression = "nth(1, tokens(clientid, \'-\'))", set_as_attr = group } ]\n'
    b = start_broker(cfg + authz(), files={"acl.conf": acl}, start=False)
    code, log = None, ""
    b.start(wait=False)
    try:
        b.wait_ready()
    except Exception:
        code, log = b.wait_exit(10), b.run_log()
        pytest.skip(f"mqtt.client_attrs_init is not available in this build: {log[-300:]}")
    c = client(b, "g1-dev")
    assert can_pub(c, "g1/x") and can_pub(c, "any/x") and can_pub(c, "attr/g1/x")
    assert not can_pub(c, "attr/g2/x")
    d = client(b, "g2-dev")
    assert not can_pub(d, "g1/x")
    assert can_pub(d, "any/x") and can_pub(d, "attr/g2/x")
    e = client(b, "nodash")  # group = "nodash": not g[0-9]
    assert not can_pub(e, "any/x")


# ---- Action -------------------------------------------------------------------------------------

def test_actions_publish_subscribe_all(start_broker):
    acl = """
{allow, all, publish, ["p/#"]}.
{allow, all, subscribe, ["s/#"]}.
{allow, all, all, ["a/#"]}.
{allow, all, pubsub, ["ps/#"]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "c1")
    assert can_pub(c, "p/1") and not can_sub(c, "p/1")
    assert can_sub(c, "s/1") and not can_pub(c, "s/1")
    assert can_pub(c, "a/1") and can_sub(c, "a/1")
    assert can_pub(c, "ps/1") and can_sub(c, "ps/1")


def test_action_qos_and_retain_conditions(start_broker):
    acl = """
{allow, all, {publish, [{qos, [0, 1]}]}, ["q01"]}.
{allow, all, {subscribe, [{qos, 2}]}, ["q2"]}.
{allow, all, {publish, [{retain, true}]}, ["r"]}.
{allow, all, {publish, [{retain, false}, {qos, 2}]}, ["nr"]}.
{allow, all, {all, [{retain, true}]}, ["ar"]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "c1")
    assert can_pub(c, "q01", qos=1)
    assert not can_pub(c, "q01", qos=2)
    assert can_sub(c, "q2", qos=2)
    assert not can_sub(c, "q2", qos=1)
    assert can_pub(c, "r", retain=True)
    assert not can_pub(c, "r", retain=False)
    assert can_pub(c, "nr", qos=2, retain=False)
    assert not can_pub(c, "nr", qos=2, retain=True)
    assert not can_pub(c, "nr", qos=1)
    assert can_sub(c, "ar", qos=1)  # retain only constrains publish


# ---- Topics -------------------------------------------------------------------------------------

def test_topic_forms_eq_all_dollar(start_broker):
    acl = """
{allow, {user, "root"}, subscribe, [all]}.
{deny, all, subscribe, [{eq, "#"}, "eq +/#"]}.
{allow, all, subscribe, ["#"]}.
{allow, all, publish, "single/string"}.
{allow, all, publish, [{eq, "lit/+"}]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "c1", username="u")
    assert not can_sub(c, "#")            # {eq, "#"} refuses exactly "#"
    assert not can_sub(c, "+/#")
    assert can_sub(c, "a/#")              # a filter's wildcards are plain words for "#"
    assert can_sub(c, "+/x")
    assert not can_sub(c, "$SYS/#")       # "#" does not cover $-topics
    assert not can_sub(c, "$SYS/broker")
    assert can_pub(c, "single/string")
    assert not can_pub(c, "single/string/x")
    root = client(b, "c2", username="root")
    assert can_sub(root, "$SYS/#")       # the atom all covers everything
    assert can_sub(root, "#")
    # {eq, "lit/+"} is the literal filter text: as a PUBLISH topic it cannot occur
    assert not can_pub(c, "lit/x")


def test_rule_filter_matches_subscribe_filters(start_broker):
    acl = """
{allow, all, subscribe, ["a/+"]}.
{allow, all, subscribe, ["b/#"]}.
{allow, all, subscribe, ["c/d"]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "c1")
    assert can_sub(c, "a/x") and can_sub(c, "a/+") and can_sub(c, "a/#")
    assert not can_sub(c, "a/x/y") and not can_sub(c, "a")
    assert can_sub(c, "b") and can_sub(c, "b/+/#") and can_sub(c, "b/x/y")
    assert can_sub(c, "c/d") and not can_sub(c, "c/+") and not can_sub(c, "c/#")


def test_placeholders_and_missing_values(start_broker):
    acl = """
{allow, all, all, ["users/${username}/#", "clients/${clientid}/#", "zones/${zone}/x"]}.
{allow, all, all, ["v4/%u/%c"]}.
{deny, all}.
"""
    b = start(start_broker, acl)
    c = client(b, "dev1", username="alice")
    assert can_pub(c, "users/alice/t") and can_sub(c, "users/alice/#")
    assert not can_pub(c, "users/bob/t")
    assert can_pub(c, "clients/dev1") and not can_pub(c, "clients/dev2")
    assert can_pub(c, "zones/default/x")
    assert can_pub(c, "v4/alice/dev1")
    anon = client(b, "dev2")  # no username: never rendered as ""
    assert not can_pub(anon, "users//t")
    assert not can_sub(anon, "users//#")
    assert not can_pub(anon, "v4//dev2")
    assert can_pub(anon, "clients/dev2/x")
    # a value holding wildcards cannot widen the rule
    w = client(b, "dev3", username="#")
    assert not can_sub(w, "users/#")
    assert not can_pub(w, "users/anything")


# ---- what a deny does ---------------------------------------------------------------------------

ACL_OPEN = """
{allow, {user, "admin"}, all, [all]}.
{allow, all, all, ["open/#"]}.
{deny, all}.
"""


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_denied_v5(start_broker, qos):
    b = start(start_broker, ACL_OPEN)
    watch = client(b, "watcher", username="admin")
    watch.subscribe([("#", 2)], expect_codes=[2])
    c = client(b, "dev1", username="dev")
    if qos:
        ack = c.publish("closed/x", b"no", qos=qos)
        assert ack.rc == DENIED and ack.type == (m.PUBACK if qos == 1 else m.PUBREC)
    else:
        c.publish("closed/x", b"no")
    c.publish("open/x", b"yes", qos=1, expect_rc=0)
    p = watch.recv_publish()
    assert p.topic == "open/x" and p.payload == b"yes"
    watch.expect_nothing(0.3)
    assert c.is_open()


@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_denied_v3_acked_and_dropped(start_broker, qos):
    b = start(start_broker, ACL_OPEN)
    watch = client(b, "watcher", version=4, username="admin")
    watch.subscribe([("#", 2)], expect_codes=[2])
    c = client(b, "dev1", version=4, username="dev")
    r = c.publish("closed/x", b"no", qos=qos)
    if qos:
        assert r is not None and r.type in (m.PUBACK, m.PUBCOMP)
    c.publish("open/x", b"yes", qos=1)
    assert watch.recv_publish().topic == "open/x"
    watch.expect_nothing(0.3)
    assert c.is_open()


@pytest.mark.parametrize("version,code", [(5, DENIED), (4, V3_SUB_FAILURE), (3, V3_SUB_FAILURE)])
def test_subscribe_denied_codes(start_broker, version, code):
    b = start(start_broker, ACL_OPEN)
    c = client(b, "dev1", version=version, username="dev")
    ack = c.subscribe([("open/a", 1), ("closed/b", 1), ("open/x/#", 2), ("#", 0)])
    assert ack.reason_codes == [1, code, 2, code]
    # the refused filters really are not subscribed
    pub = client(b, "p", username="admin")
    pub.publish("closed/b", b"x", qos=1)
    pub.publish("open/a", b"y", qos=1)
    p = c.recv_publish()
    assert p.topic == "open/a"
    c.expect_nothing(0.3)


# ---- reload ---------------------------------------------------------------------------------------

def test_sighup_reload_changes_decisions(start_broker):
    b = start(start_broker, '{allow, all, all, ["t/#"]}.\n{deny, all}.\n')
    c = client(b, "c1", username="u")
    assert can_pub(c, "t/1")            # allowed, and the answer is now cached
    assert can_sub(c, "t/#")
    assert not can_pub(c, "u/1")
    b.write_file("acl.conf", '{deny, all, all, ["t/#"]}.\n{allow, all, all, ["u/#"]}.\n{deny, all}.\n')
    b.reload(wait_log=r"authorization source file: rules reloaded")
    assert not can_pub(c, "t/1")        # the same connection sees the new rules: caches invalidated
    assert not can_sub(c, "t/#")
    assert can_pub(c, "u/1")
    d = client(b, "c2")                 # and a new one too
    assert not can_pub(d, "t/1") and can_pub(d, "u/1")


def test_broken_file_on_reload_keeps_rules(start_broker):
    b = start(start_broker, '{allow, all, all, ["t/#"]}.\n{deny, all}.\n')
    c = client(b, "c1")
    assert can_pub(c, "t/1") and not can_pub(c, "u/1")
    b.write_file("acl.conf", '{allow, all, all, ["u/#"]}.\n{deny, all, all, ["t/#"]}\n{deny, all}.\n')
    b.reload(wait_log=r"reload failed, keeping the previous rules: .*acl\.conf:2: expected '\.' after rule")
    assert can_pub(c, "t/1") and not can_pub(c, "u/1")
    d = client(b, "c2")
    assert can_pub(d, "t/1") and not can_pub(d, "u/1")
    # a missing file: the same
    b.path("acl.conf").unlink()
    b.reload(wait_log=r"reload failed, keeping the previous rules: cannot open acl\.conf")
    assert can_pub(c, "t/1") and not can_pub(c, "u/1")
    # fixed: applied
    b.write_file("acl.conf", '{allow, all, all, ["u/#"]}.\n{deny, all}.\n')
    b.reload(wait_log=r"authorization source file: rules reloaded")
    assert not can_pub(c, "t/1") and can_pub(c, "u/1")


# ---- start-up and --check -------------------------------------------------------------------------

BROKEN = [
    ('{allow, all}.\n{allow, all, all, ["a"]}\n{deny, all}.\n', r"acl\.conf:2: expected '\.' after rule"),
    ('{allow, all, all, ["a"]}.\n\n{allow, {usr, "x"}, all, ["a"]}.\n', r"acl\.conf:3: unknown who 'usr'"),
    ('{allow, {user, {re, "(x"}}, all, ["a"]}.\n', r"acl\.conf:1: regular expression \"\(x\""),
    ('{allow, all, all, ["a/#/b"]}.\n', r"acl\.conf:1: invalid topic filter \"a/#/b\""),
    ('{allow, all, all, ["${nope}"]}.\n', r"acl\.conf:1: .*unknown placeholder \$\{nope\}"),
    ('{allow, {ipaddr, "300.0.0.1"}, all, ["a"]}.\n', r"acl\.conf:1: ipaddr: invalid address"),
    ('%% comment\n{allow, all, {publish, [{qos, 3}]}, ["a"]}.\n', r"acl\.conf:2: qos: expected 0, 1 or 2"),
]


@pytest.mark.parametrize("acl,pattern", BROKEN, ids=[p for _, p in BROKEN])
def test_broken_file_refuses_start(start_broker, acl, pattern):
    b = start_broker(authz(), files={"acl.conf": acl}, start=False, expect_exit=None)
    code, log = b.run_to_exit()
    assert code != 0, log
    assert re.search(pattern, log), log


def test_check_reports_file_and_line(check_config):
    status, out = check_config(authz(), files={"acl.conf": '{allow, all}.\n\n{deny, all, nope, ["a"]}.\n'})
    assert status != 0 and re.search(r"acl\.conf:3: unknown action 'nope'", out), out
    status, out = check_config(authz(), files={"acl.conf": '{deny, all, subscribe, [{eq, "#"}]}.\n{allow, all}.\n'})
    assert status == 0, out


def test_missing_file_and_bad_source_config(check_config):
    status, out = check_config(authz(path="nonexistent.conf"))
    assert status != 0 and "cannot open nonexistent.conf" in out, out
    status, out = check_config('authorization { sources = [ { type = file } ] }\n')
    assert status != 0 and "exactly one of path" in out, out
    status, out = check_config('authorization { sources = [ { type = file, path = "a", colour = red } ] }\n',
                               files={"a": "{allow, all}.\n"})
    assert status != 0 and "colour" in out, out


def test_inline_rules(start_broker):
    cfg = '''authorization {
  no_match = deny
  sources = [ { type = file, rules = """
{allow, {user, "alice"}, all, ["in/${username}/#"]}.
{deny, all}.
""" } ]
}
'''
    b = start_broker(cfg)
    c = client(b, "c1", username="alice")
    assert can_pub(c, "in/alice/x") and not can_pub(c, "in/bob/x")


def test_absolute_path_and_disabled_source(start_broker, tmp_path):
    p = tmp_path / "elsewhere.conf"
    p.write_text('{allow, all, all, ["abs/#"]}.\n{deny, all}.\n')
    b = start_broker(authz(path=str(p)))
    c = client(b, "c1")
    assert can_pub(c, "abs/x") and not can_pub(c, "x")
    # enable = false: the source is skipped (no_match = allow decides)
    b2 = start_broker('authorization { no_match = allow, sources = [ { type = file, enable = false, path = "%s" } ] }'
                      % p, name="b2")
    c2 = client(b2, "c2")
    assert can_pub(c2, "x")
