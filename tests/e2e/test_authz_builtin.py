"""The built_in_database authorization source (reference/emqx.md §5, EMQX emqx_authz_mnesia) and
`bulwark ctl rules ...` (SPEC §1): rules per username, per client ID and for all, checked in EMQX's
order (client ID, username, all; the first match decides), QoS and retain conditions, the literal
"eq" form, max_rules, persistence in <data_dir>/authz.db across restarts and crashes, changes that
apply to connected clients within a second, and imports of EMQX's API JSON."""
import json
import re
import signal
import time

import pytest

from bw import mqtt_raw as m

NOT_AUTHORIZED = 0x87
V3_SUB_FAILURE = 0x80
HEADER = "who\tname\tindex\tpermission\taction\ttopic\tqos\tretain"


def builtin(extra="", no_match="deny", config=""):
    return (config + "authorization {\n  no_match = " + no_match + "\n"
            "  sources = [ { type = built_in_database" + ("" if not extra else ", " + extra) + " } ]\n}\n")


def start(start_broker, extra="", no_match="deny", config=""):
    b = start_broker(builtin(extra, no_match, config))
    b.wait_for_log(r"bulwark \S+ started")  # the control socket exists
    return b


def rules(b, *args):
    code, out = b.ctl("rules", *args)
    assert code == 0, f"ctl rules {args} failed ({code}): {out}"
    return out


def rules_fail(b, *args):
    code, out = b.ctl("rules", *args)
    assert code != 0, f"ctl rules {args} succeeded: {out}"
    return out


def listing(b, *args):
    """`rules list` as a list of (who, name, index, permission, action, topic, qos, retain)."""
    lines = rules(b, "list", *args).rstrip("\n").split("\n")
    assert lines[0] == HEADER, lines
    return [tuple(ln.split("\t")) for ln in lines[1:]]


def watcher(b, raw_client):
    """A subscriber to everything (client ID "watcher" may subscribe to #)."""
    rules(b, "add", "clientid", "watcher", "allow", "subscribe", "#")
    w = raw_client(b, version=5)
    w.connect("watcher")
    w.subscribe([("#", 1)], expect_codes=[1])
    return w


def allowed(c, topic, payload=b"", qos=1, **kw):
    """A QoS 1/2 publish that must be accepted (v5: 0x00, or 0x10 when nobody subscribes)."""
    ack = c.publish(topic, payload, qos=qos, **kw)
    assert ack.rc in (0x00, 0x10), f"{topic}: {ack!r}"
    return ack


def eventually(fn, timeout=1.0):
    """Retry fn (which asserts) until it passes or timeout seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# ---- allow / deny where the rules say ------------------------------------------------------------

@pytest.mark.parametrize("qos", [0, 1, 2])
def test_publish_allowed_and_denied_v5(start_broker, raw_client, qos):
    b = start(start_broker)
    w = watcher(b, raw_client)
    rules(b, "add", "username", "alice", "allow", "publish", "pub/${username}/#")
    c = raw_client(b, version=5)
    c.connect("dev-1", username="alice")
    if qos:
        c.publish("pub/bob/x", b"no", qos=qos, expect_rc=NOT_AUTHORIZED)
    else:
        c.publish("pub/bob/x", b"no")
    allowed(c, "pub/alice/x", b"yes", qos=1)  # after the denied one: proves it was dropped
    p = w.recv_publish()
    assert (p.topic, p.payload) == ("pub/alice/x", b"yes")
    w.expect_nothing(0.3)
    assert c.is_open()


def test_publish_denied_v3_acknowledged_and_dropped(start_broker, raw_client):
    b = start(start_broker)
    w = watcher(b, raw_client)
    rules(b, "add", "username", "alice", "allow", "publish", "ok/#")
    c = raw_client(b, version=4)
    c.connect("dev-1", username="alice")
    assert c.publish("no/x", b"no", qos=1) is not None
    c.publish("no/y", b"no")
    c.publish("ok/x", b"yes", qos=1)
    assert w.recv_publish().topic == "ok/x"
    w.expect_nothing(0.3)


@pytest.mark.parametrize("version,denied", [(5, NOT_AUTHORIZED), (4, V3_SUB_FAILURE), (3, V3_SUB_FAILURE)])
def test_subscribe_allowed_and_denied(start_broker, raw_client, version, denied):
    b = start(start_broker)
    rules(b, "add", "username", "alice", "allow", "subscribe", "sub/#")
    rules(b, "add", "all", "allow", "subscribe", "open/+")
    c = raw_client(b, version=version)
    c.connect("dev-1", username="alice")
    c.subscribe([("sub/a", 1), ("other/a", 1), ("open/x", 0), ("#", 0)], expect_codes=[1, denied, 0, denied])
    # another user gets only the rules for all
    d = raw_client(b, version=version)
    d.connect("dev-2", username="bob")
    d.subscribe([("sub/a", 1), ("open/x", 1)], expect_codes=[denied, 1])


def test_no_rules_no_match_decides(start_broker, raw_client):
    b = start(start_broker, no_match="allow")
    rules(b, "add", "username", "alice", "deny", "publish", "secret/#")
    c = raw_client(b, version=5)
    c.connect("dev-1", username="alice")
    c.publish("secret/x", qos=1, expect_rc=NOT_AUTHORIZED)
    allowed(c, "anything/else", qos=1)  # NOMATCH -> no_match = allow


# ---- check order and conditions ------------------------------------------------------------------

def test_order_clientid_then_username_then_all(start_broker, raw_client):
    b = start(start_broker)
    rules(b, "add", "all", "deny", "publish", "t/#")
    rules(b, "add", "all", "allow", "publish", "a/#")
    rules(b, "add", "username", "alice", "allow", "publish", "t/#")
    rules(b, "add", "username", "alice", "deny", "publish", "a/x")
    rules(b, "add", "clientid", "dev-1", "deny", "publish", "t/secret")
    c1 = raw_client(b, version=5)
    c1.connect("dev-1", username="alice")
    c1.publish("t/secret", qos=1, expect_rc=NOT_AUTHORIZED)  # client ID rule before the username's
    allowed(c1, "t/open", qos=1)                # username rule before all's deny
    c1.publish("a/x", qos=1, expect_rc=NOT_AUTHORIZED)      # username rule before all's allow
    allowed(c1, "a/y", qos=1)                   # all
    c2 = raw_client(b, version=5)
    c2.connect("dev-2", username="bob")
    c2.publish("t/open", qos=1, expect_rc=NOT_AUTHORIZED)
    allowed(c2, "a/x", qos=1)
    c3 = raw_client(b, version=5)
    c3.connect("alice")  # a client ID equal to a username is not that username
    c3.publish("t/open", qos=1, expect_rc=NOT_AUTHORIZED)
    # within one subject, the first matching rule decides
    rules(b, "add", "clientid", "dev-3", "allow", "publish", "x/#")
    rules(b, "add", "clientid", "dev-3", "deny", "publish", "x/y")
    c4 = raw_client(b, version=5)
    c4.connect("dev-3")
    allowed(c4, "x/y", qos=1)


def test_qos_and_retain_conditions(start_broker, raw_client):
    b = start(start_broker)
    rules(b, "add", "username", "alice", "allow", "publish", "q/#", "--qos", "0,1")
    rules(b, "add", "username", "alice", "allow", "publish", "r/#", "--retain", "false")
    rules(b, "add", "username", "alice", "allow", "subscribe", "s/#", "--qos", "1")
    c = raw_client(b, version=5)
    c.connect("dev-1", username="alice")
    allowed(c, "q/a", qos=1)
    c.publish("q/a", qos=2, expect_rc=NOT_AUTHORIZED)
    allowed(c, "r/a", qos=1)
    c.publish("r/a", qos=1, retain=True, expect_rc=NOT_AUTHORIZED)
    c.subscribe([("s/a", 1), ("s/b", 2)], expect_codes=[1, NOT_AUTHORIZED])


def test_eq_topic_matches_the_literal_filter(start_broker, raw_client):
    b = start(start_broker)
    rules(b, "add", "all", "deny", "subscribe", "eq #")
    rules(b, "add", "all", "deny", "subscribe", "eq", "+/#")  # two words work too
    rules(b, "add", "all", "allow", "subscribe", "#")
    assert [r[5] for r in listing(b, "all")] == ["eq #", "eq +/#", "#"]
    c = raw_client(b, version=5)
    c.connect("dev-1")
    c.subscribe([("#", 0), ("+/#", 0), ("a/#", 0), ("a/+", 1)], expect_codes=[NOT_AUTHORIZED, NOT_AUTHORIZED, 0, 1])


# ---- changes apply to connected clients ----------------------------------------------------------

def test_rule_change_applies_to_connected_client_within_a_second(start_broker, raw_client):
    b = start(start_broker)
    c = raw_client(b, version=5)
    c.connect("dev-1", username="alice")
    c.publish("t/x", qos=1, expect_rc=NOT_AUTHORIZED)  # denied, and cached
    c.subscribe([("t/x", 1)], expect_codes=[NOT_AUTHORIZED])
    rules(b, "add", "username", "alice", "allow", "all", "t/#")
    t0 = time.monotonic()
    eventually(lambda: allowed(c, "t/x", qos=1))
    eventually(lambda: c.subscribe([("t/x", 1)], expect_codes=[1]))
    assert time.monotonic() - t0 < 1.5
    # a deny rule in front (the client ID's) takes over
    rules(b, "add", "clientid", "dev-1", "deny", "publish", "t/x")
    eventually(lambda: c.publish("t/x", qos=1, expect_rc=NOT_AUTHORIZED))
    allowed(c, "t/y", qos=1)
    # deleting rules takes effect too
    rules(b, "delete", "clientid", "dev-1")
    eventually(lambda: allowed(c, "t/x", qos=1))
    rules(b, "delete", "username", "alice", "1")
    eventually(lambda: c.publish("t/y", qos=1, expect_rc=NOT_AUTHORIZED))
    rules(b, "add", "all", "allow", "publish", "#")
    eventually(lambda: allowed(c, "t/y", qos=1))
    rules(b, "clear")
    eventually(lambda: c.publish("t/y", qos=1, expect_rc=NOT_AUTHORIZED))
    assert c.is_open()


# ---- persistence ---------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_rules_persist_across_restart(start_broker, raw_client, sig):
    b = start(start_broker)
    rules(b, "add", "username", "alice", "allow", "publish", "a/#", "--qos", "1", "--retain", "false")
    rules(b, "add", "clientid", "dev-1", "deny", "all", "a/secret")
    rules(b, "add", "all", "allow", "subscribe", "open/#")
    rules(b, "add", "all", "allow", "publish", "x")
    rules(b, "delete", "all", "2")
    before = listing(b)
    assert len(before) == 3, before
    b.restart(sig=sig)
    b.wait_for_log(r"built_in_database: 3 rules \(1 usernames, 1 client IDs, 1 for all\)")
    b.wait_for_log(r"bulwark \S+ started")
    assert listing(b) == before
    c = raw_client(b, version=5)
    c.connect("dev-2", username="alice")
    allowed(c, "a/x", qos=1)
    c.publish("a/x", qos=2, expect_rc=NOT_AUTHORIZED)
    c.publish("x", qos=1, expect_rc=NOT_AUTHORIZED)  # the deleted rule stays deleted
    c.subscribe([("open/1", 1)], expect_codes=[1])
    d = raw_client(b, version=5)
    d.connect("dev-1", username="alice")
    d.publish("a/secret", qos=1, expect_rc=NOT_AUTHORIZED)
    assert (b.data_dir / "authz.db").exists()
    assert oct((b.data_dir / "authz.db").stat().st_mode & 0o777) == oct(0o600)


# ---- max_rules and errors ------------------------------------------------------------------------

def test_max_rules_enforced_with_a_clear_error(start_broker):
    b = start(start_broker, extra="max_rules = 2")
    rules(b, "add", "username", "alice", "allow", "publish", "a")
    rules(b, "add", "username", "alice", "allow", "publish", "b")
    out = rules_fail(b, "add", "username", "alice", "allow", "publish", "c")
    assert "username alice already has 2 rules (max_rules = 2)" in out, out
    rules(b, "add", "clientid", "alice", "allow", "publish", "c")  # per subject
    rules(b, "add", "all", "allow", "publish", "a")
    rules(b, "add", "all", "allow", "publish", "b")
    out = rules_fail(b, "add", "all", "allow", "publish", "c")
    assert "all already has 2 rules (max_rules = 2)" in out, out
    assert len(listing(b, "username", "alice")) == 2
    rules(b, "delete", "username", "alice", "1")
    rules(b, "add", "username", "alice", "allow", "publish", "c")


@pytest.mark.parametrize("args,msg", [
    (("add", "username", "alice", "permit", "publish", "t"), "permission must be allow or deny"),
    (("add", "username", "alice", "allow", "pub", "t"), "action must be publish, subscribe or all"),
    (("add", "username", "alice", "allow", "publish", "a/#/b"), 'invalid topic "a/#/b"'),
    (("add", "username", "alice", "allow", "publish", "t", "--qos", "3"), "--qos must be"),
    (("add", "username", "alice", "allow", "publish", "t", "--retain", "yes"), "--retain must be"),
    (("add", "group", "x", "allow", "publish", "t"), "usage: rules add"),
    (("delete", "username", "nobody"), "no rules for username nobody"),
    (("delete", "all", "1"), "no rules for all"),
    (("frobnicate",), "usage:"),
])
def test_bad_commands_are_refused(start_broker, args, msg):
    b = start(start_broker)
    out = rules_fail(b, *args)
    assert msg in out, out
    assert listing(b) == []


def test_list_delete_and_clear(start_broker):
    b = start(start_broker)
    out = rules(b, "add", "username", "alice", "allow", "publish", "t/#", "--qos", "0,1")
    assert "rule 1 added for username alice: allow publish t/# (qos 0,1, retain all)" in out, out
    b.wait_for_log(r"authorization built_in_database: rule 1 added for username alice: allow publish t/#")
    rules(b, "add", "username", "alice", "deny", "subscribe", "t/private")
    rules(b, "add", "clientid", "dev-1", "allow", "all", "d/${clientid}/#", "--retain", "true")
    rules(b, "add", "all", "deny", "all", "#")
    assert listing(b) == [
        ("clientid", "dev-1", "1", "allow", "all", "d/${clientid}/#", "0,1,2", "true"),
        ("username", "alice", "1", "allow", "publish", "t/#", "0,1", "all"),
        ("username", "alice", "2", "deny", "subscribe", "t/private", "0,1,2", "all"),
        ("all", "-", "1", "deny", "all", "#", "0,1,2", "all"),
    ]
    assert listing(b, "clientid", "dev-1") == [listing(b)[0]]
    assert listing(b, "username", "nobody") == []
    out = rules(b, "delete", "username", "alice", "1")
    assert "rule 1 of username alice deleted: allow publish t/#" in out, out
    assert [r[5] for r in listing(b, "username", "alice")] == ["t/private"]
    out = rules_fail(b, "delete", "username", "alice", "2")
    assert "username alice has no rule 2 (it has 1)" in out, out
    rules(b, "delete", "username", "alice")
    assert listing(b, "username", "alice") == []
    out = rules(b, "clear")
    assert re.search(r"\b2 rules deleted", out), out
    assert listing(b) == []


# ---- import --------------------------------------------------------------------------------------

def test_import_emqx_json(start_broker, raw_client, tmp_path):
    b = start(start_broker)
    rules(b, "add", "username", "alice", "allow", "publish", "old/#")
    rules(b, "add", "username", "keep", "allow", "publish", "kept/#")
    f = tmp_path / "rules.json"
    f.write_text(json.dumps([
        {"username": "alice", "rules": [
            {"permission": "allow", "action": "publish", "topic": "t/#", "qos": [0, 1]},
            {"permission": "deny", "action": "subscribe", "topic": "eq #"}]},
        {"clientid": "dev-1", "rules": [
            {"permission": "allow", "action": "all", "topic": "d/${clientid}/#", "retain": False}]},
        {"rules": [{"permission": "allow", "action": "subscribe", "topic": "open/#"}]},
    ]))
    out = rules(b, "import", str(f))
    assert "4 rules imported for 3 subjects" in out, out
    assert listing(b) == [
        ("clientid", "dev-1", "1", "allow", "all", "d/${clientid}/#", "0,1,2", "false"),
        ("username", "alice", "1", "allow", "publish", "t/#", "0,1", "all"),
        ("username", "alice", "2", "deny", "subscribe", "eq #", "0,1,2", "all"),
        ("username", "keep", "1", "allow", "publish", "kept/#", "0,1,2", "all"),
        ("all", "-", "1", "allow", "subscribe", "open/#", "0,1,2", "all"),
    ]
    c = raw_client(b, version=5)
    c.connect("dev-1", username="alice")
    c.publish("old/x", qos=1, expect_rc=NOT_AUTHORIZED)  # replaced
    allowed(c, "t/x", qos=1)
    allowed(c, "d/dev-1/x", qos=2)
    c.subscribe([("#", 0), ("open/a", 0)], expect_codes=[NOT_AUTHORIZED, 0])
    # a bad file changes nothing and says where
    bad = tmp_path / "bad.json"
    bad.write_text('[{"username": "bob", "rules": []},\n {"username": "eve", "rules": '
                   '[{"permission": "allow", "action": "publish", "topic": "t", "qos": [5]}]}]')
    out = rules_fail(b, "import", str(bad))
    assert "item 2: rule 1: qos must be" in out, out
    bad.write_text('[{"username": "bob", "rules": [}')
    out = rules_fail(b, "import", str(bad))
    assert "bad.json:1:" in out, out
    assert len(listing(b)) == 5


# ---- configuration -------------------------------------------------------------------------------

def test_rules_without_the_source(start_broker):
    b = start_broker("")
    b.wait_for_log(r"bulwark \S+ started")
    code, out = b.ctl("rules", "list")
    assert code != 0
    assert "built_in_database" in out, out


def test_config_errors_name_file_line_and_key(check_config):
    code, out = check_config(builtin("max_rules = 0"), base=True)
    assert code != 0 and "max_rules" in out and re.search(r":\d+:", out), out
    code, out = check_config(builtin("max_rulez = 5"), base=True)
    assert code != 0 and "max_rulez" in out and "unknown" in out, out
    code, out = check_config(builtin("max_rules = 7, enable = true"), base=True)
    assert code == 0, out
