"""`authorization.sources = [{type = mysql, ...}]` against a real MariaDB server (bw/dbservers.py),
EMQX 5.8 §5: rows (permission, action, topic, qos, retain) in query order, the first matching row
decides; qos as integer or text list, retain as TINYINT(1), BIT(1) or text; placeholders as `?`
parameters (${username}, ${clientid}, ${topic}, ${action}) and in the topic column; no rows -> the
next source / no_match; invalid rows skipped; many rows and long values; SQL injection; the backend
down -> no match while the broker keeps serving; TLS; config errors."""
import re
import uuid

import pytest

from bw import mqtt_raw as m
from bw.dbservers import (MYSQL_DB, MYSQL_PASSWORD, MYSQL_USER, db_proxy, my_literal, mysql_server,  # noqa: F401
                          wait_until)
from bw.ports import free_port

NOT_AUTHORIZED = 0x87

QUERY = ("SELECT permission, action, topic, qos, retain FROM mqtt_acl WHERE username = ${username} "
         "ORDER BY id")

ACL_SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_acl (
  id int AUTO_INCREMENT PRIMARY KEY,
  username varchar(200),
  clientid varchar(200),
  permission varchar(10),
  action varchar(20),
  topic varchar(4000),
  qos varchar(20),
  qos_int tinyint,
  retain tinyint(1),
  retain_bit bit(1),
  retain_text varchar(10)
) CHARACTER SET utf8mb4;
"""


@pytest.fixture(scope="module")
def my(mysql_server):
    mysql_server.sql(ACL_SCHEMA)
    return mysql_server


def add_rows(db, *rows, **common):
    stmts = []
    for r in rows:
        r = {**common, **r}
        vals = []
        for k, v in r.items():
            vals.append(("b'%d'" % v) if k == "retain_bit" and v is not None else my_literal(v))
        stmts.append("INSERT INTO mqtt_acl (%s) VALUES (%s);" % (", ".join(r), ", ".join(vals)))
    db.sql("\n".join(stmts))


def rule(permission, action, topic, **kw):
    return {"permission": permission, "action": action, "topic": topic, **kw}


def source(query=QUERY, extra="", user=MYSQL_USER):
    return """
    {
      type = mysql
      server = "127.0.0.1:{{my_port}}"
      database = %s
      username = %s
      password = "%s"
      pool_size = 2
      query_timeout = 2s
      query = "%s"
      %s
    }""" % (MYSQL_DB, user, MYSQL_PASSWORD, query, extra)


FILE_SOURCE = '{ type = file, path = "acl.conf" }'


def config(*sources, no_match="deny", cache=False):
    return ("log.console.level = debug\nauthorization {\n  no_match = %s\n  cache { enable = %s }\n"
            "  sources = [%s\n  ]\n}\n" % (no_match, "true" if cache else "false", ",".join(sources)))


def start(start_broker, db, cfg, port=None, acl="{allow, all}.\n", **kw):
    return start_broker(cfg, values={"my_port": port or db.port}, files={"acl.conf": acl}, **kw)


def uname(tag):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def client(b, cid, username=None, version=5):
    c = m.RawClient(b.tcp_port, version=version)
    c.connect(cid, username=username)
    return c


def pub_rc(c, topic, qos=1, retain=False):
    return c.publish(topic, b"x", qos=qos, retain=retain).rc or 0


def allowed(c, topic, qos=1, retain=False):
    return pub_rc(c, topic, qos, retain) < 0x80


def sub_codes(c, *filters, qos=1):
    return c.subscribe([(f, qos) for f in filters]).reason_codes


def test_rows_in_order_first_match_decides(start_broker, my):
    b = start(start_broker, my, config(source()))
    u = uname("alice")
    add_rows(my, rule("deny", "publish", "t/secret"), rule("allow", "all", "t/#"), rule("deny", "all", "#"),
             rule("allow", "all", "late/#"), username=u)
    c = client(b, "c1", u)
    assert pub_rc(c, "t/secret") == NOT_AUTHORIZED
    assert allowed(c, "t/x")
    assert sub_codes(c, "t/secret", "t/#") == [1, 1]
    assert pub_rc(c, "late/x") == NOT_AUTHORIZED
    assert pub_rc(client(b, "c2", uname("nobody")), "t/x") == NOT_AUTHORIZED


@pytest.mark.parametrize("version,denied", [(5, 0x87), (4, 0x80)])
def test_subscribe_codes_and_delivery(start_broker, my, version, denied):
    b = start(start_broker, my, config(source()))
    u = uname("sub")
    add_rows(my, rule("allow", "subscribe", "news/#"), rule("allow", "publish", "news/a"), username=u)
    c = client(b, "s1", u, version=version)
    assert sub_codes(c, "news/#", "secret/#") == [1, denied]
    p = client(b, "p1", u, version=version)
    p.publish("news/a", b"hi", qos=1)
    got = c.recv_publish()
    assert got.topic == "news/a" and got.payload == b"hi"


def test_qos_and_retain_columns(start_broker, my):
    q = ("SELECT permission, action, topic, %s AS qos, %s AS retain FROM mqtt_acl "
         "WHERE username = ${username} ORDER BY id")
    u = uname("qr")
    add_rows(my, rule("allow", "publish", "text/#", qos="0,1", retain_text="false", qos_int=2, retain=1,
                      retain_bit=1),
             rule("allow", "subscribe", "s/#", qos="1", qos_int=1), username=u)
    b_text = start(start_broker, my, config(source(query=q % ("qos", "retain_text"))), name="text")
    c = client(b_text, "t1", u)
    assert allowed(c, "text/a", qos=1)
    assert pub_rc(c, "text/a", qos=2) == NOT_AUTHORIZED
    assert pub_rc(c, "text/a", qos=1, retain=True) == NOT_AUTHORIZED
    assert sub_codes(c, "s/a", qos=1) == [1]
    assert sub_codes(c, "s/a", qos=0) == [NOT_AUTHORIZED]
    b_int = start(start_broker, my, config(source(query=q % ("qos_int", "retain"))), name="int")
    c = client(b_int, "t2", u)
    assert allowed(c, "text/a", qos=2, retain=True)
    assert pub_rc(c, "text/a", qos=2, retain=False) == NOT_AUTHORIZED
    assert pub_rc(c, "text/a", qos=1, retain=True) == NOT_AUTHORIZED
    b_bit = start(start_broker, my, config(source(query=q % ("qos_int", "retain_bit"))), name="bit")
    c = client(b_bit, "t3", u)
    assert allowed(c, "text/a", qos=2, retain=True)
    assert pub_rc(c, "text/a", qos=2, retain=False) == NOT_AUTHORIZED


def test_placeholders_bind_and_topic(start_broker, my):
    q = ("SELECT permission, action, topic FROM mqtt_acl WHERE clientid = ${clientid} "
         "AND (action = ${action} OR action = 'all') AND (topic = ${topic} OR topic LIKE '%$%') ORDER BY id")
    b = start(start_broker, my, config(source(query=q)))
    cid = uname("dev")
    add_rows(my, rule("allow", "publish", "exact/one"), rule("allow", "all", "dev/${clientid}/#"),
             rule("allow", "subscribe", "users/${username}/#"), clientid=cid)
    c = client(b, cid, "erin")
    assert allowed(c, "exact/one")
    assert pub_rc(c, "exact/two") == NOT_AUTHORIZED
    assert allowed(c, f"dev/{cid}/t")
    assert pub_rc(c, "dev/other/t") == NOT_AUTHORIZED
    assert sub_codes(c, "users/erin/#", "users/frank/#", "exact/one") == [1, NOT_AUTHORIZED, NOT_AUTHORIZED]
    assert pub_rc(client(b, uname("dev"), "erin"), "exact/one") == NOT_AUTHORIZED


def test_many_rows_and_long_topics(start_broker, my):
    """Every row is read (not just the first), and a long value is not truncated."""
    b = start(start_broker, my, config(source()))
    u = uname("many")
    long_topic = "long/" + "x" * 3000
    rows = [rule("allow", "publish", f"r/{i}") for i in range(300)] + [rule("allow", "publish", long_topic)]
    add_rows(my, *rows, username=u)
    c = client(b, "mr", u)
    assert allowed(c, "r/0")
    assert allowed(c, "r/299")
    assert allowed(c, long_topic)
    assert pub_rc(c, long_topic + "y") == NOT_AUTHORIZED


def test_no_rows_next_source_then_no_match(start_broker, my):
    acl = '{allow, all, publish, ["file/#"]}.\n'
    b = start(start_broker, my, config(source(), FILE_SOURCE, no_match="deny"), acl=acl, name="chain")
    u = uname("next")
    add_rows(my, rule("allow", "publish", "db/t"), rule("deny", "publish", "file/blocked"), username=u)
    c = client(b, "n1", u)
    assert allowed(c, "db/t")
    assert allowed(c, "file/t")
    assert pub_rc(c, "file/blocked") == NOT_AUTHORIZED
    assert pub_rc(c, "neither/t") == NOT_AUTHORIZED
    b2 = start(start_broker, my, config(source(), no_match="allow"), name="allow")
    assert allowed(client(b2, "n2", uname("nobody")), "any/t")


def test_invalid_rows_are_skipped(start_broker, my):
    b = start(start_broker, my, config(source()))
    u = uname("bad")
    add_rows(my, rule("maybe", "publish", "t"), rule("allow", "publish", "t", qos="0;1"),
             rule("allow", "publish", "t", retain_text="x"), rule("allow", "publish", "t"), username=u)
    c = client(b, "b1", u)
    assert allowed(c, "t")
    b.wait_for_log(r"authorization mysql: 2 of 4 rules skipped as invalid \(first: invalid permission maybe")


def test_sql_injection_through_username(start_broker, my):
    b = start(start_broker, my, config(source()))
    add_rows(my, rule("allow", "all", "#"), username="victim")
    for u in ["x' OR '1'='1", "victim' -- ", "\\' OR 1=1 -- "]:
        c = client(b, uname("inj"), u)
        assert pub_rc(c, "any/t") == NOT_AUTHORIZED


@pytest.mark.parametrize("no_match", ["allow", "deny"])
def test_backend_down_at_start(start_broker, my, no_match):
    dead = free_port()
    b = start(start_broker, my, config(source(), no_match=no_match), port=dead)
    c = client(b, "d1", uname("u"))
    assert allowed(c, "t/x") == (no_match == "allow")
    c.ping()
    b.wait_for_log(r"authorization source mysql failed to answer")
    b.wait_for_log(r"mysql 127\.0\.0\.1:%d is unreachable" % dead)


def test_backend_goes_down_mid_run_and_comes_back(start_broker, my, db_proxy):
    proxy = db_proxy(my.port)
    acl = '{allow, all, publish, ["file/#"]}.\n'
    b = start(start_broker, my, config(source(), FILE_SOURCE, no_match="deny"), port=proxy.port, acl=acl)
    u = uname("mid")
    add_rows(my, rule("allow", "publish", "mid/t"), username=u)
    c = client(b, "m1", u)
    assert allowed(c, "mid/t")
    proxy.stop()
    assert pub_rc(c, "mid/t") == NOT_AUTHORIZED
    assert allowed(c, "file/t")
    c.ping()
    proxy.start()
    wait_until(lambda: allowed(c, "mid/t"), 15, "mysql back", interval=0.2)


def test_tls_required_user(start_broker, my, pki):
    """The bulwark_tls user must connect with TLS; verify_peer checks the server certificate."""
    u = uname("tls")
    add_rows(my, rule("allow", "publish", "tls/t"), username=u)
    extra = 'ssl { enable = true, verify = verify_peer, cacertfile = "%s" }' % pki.ca_bundle
    b = start(start_broker, my, config(source(extra=extra, user=MYSQL_USER + "_tls")), name="tls")
    assert allowed(client(b, "tl1", u), "tls/t")
    plain = start(start_broker, my, config(source(user=MYSQL_USER + "_tls")), name="plain")
    assert pub_rc(client(plain, "tl2", u), "tls/t") == NOT_AUTHORIZED  # refused by the server: no match


@pytest.mark.parametrize("body,err", [
    ('query = "SELECT permission FROM t WHERE u = ${password}"', r"\.conf:\d+"),
    ('query = ""', r"the query is empty"),
    ('server = "127.0.0.1"', r"query is required"),
    ('query = "SELECT 1", ssl { enable = true, server_name_indication = "db.example" }', r"not supported yet"),
])
def test_config_errors(check_config, body, err):
    cfg = ('authorization {\n  sources = [\n    {\n      type = mysql\n      server = "127.0.0.1"\n'
           '      database = mqtt\n      %s\n    }\n  ]\n}\n' % body)
    rc, out = check_config(cfg)
    assert rc != 0, out
    assert re.search(err, out), out
