"""`authorization.sources = [{type = postgresql, ...}]` against a real PostgreSQL server
(bw/dbservers.py), EMQX 5.8 §5: rows (permission, action, topic, qos, retain) in query order, the
first matching row decides; qos as integer, text list or integer array; retain as boolean, integer or
text; placeholders as bind parameters (${username}, ${clientid}, ${topic}, ${action}) and in the topic
column; no rows -> the next source / no_match; invalid rows skipped; SQL injection; the backend down
-> no match while the broker keeps serving; a slow query; config errors."""
import re
import time
import uuid

import pytest

from bw import mqtt_raw as m
from bw.dbservers import PG_DB, PG_PASSWORD, PG_USER, db_proxy, pg_literal, pg_server, wait_until  # noqa: F401
from bw.ports import free_port

NOT_AUTHORIZED = 0x87

QUERY = ("SELECT permission, action, topic, qos, retain FROM mqtt_acl WHERE username = ${username} "
         "ORDER BY id")

ACL_SCHEMA = """
CREATE TABLE IF NOT EXISTS mqtt_acl (
  id serial PRIMARY KEY,
  username text,
  clientid text,
  permission text,
  action text,
  topic text,
  qos text,
  qos_int integer,
  qos_arr integer[],
  retain boolean,
  retain_int integer,
  retain_text text
);
GRANT SELECT ON mqtt_acl TO {user};
CREATE OR REPLACE FUNCTION acl_delay(u text) RETURNS boolean AS $$
BEGIN
  IF u LIKE 'slow%' THEN PERFORM pg_sleep(3); END IF;
  RETURN true;
END $$ LANGUAGE plpgsql;
"""


@pytest.fixture(scope="module")
def pg(pg_server):
    pg_server.psql(ACL_SCHEMA.format(user=PG_USER))
    return pg_server


def add_rows(db, *rows, **common):
    """Insert rows (dicts of column -> value; common columns added to each)."""
    stmts = []
    for r in rows:
        r = {**common, **r}
        stmts.append("INSERT INTO mqtt_acl (%s) VALUES (%s);" % (", ".join(r), ", ".join(pg_literal(v) for v in
                                                                                        r.values())))
    db.psql("\n".join(stmts))


def rule(permission, action, topic, **kw):
    return {"permission": permission, "action": action, "topic": topic, **kw}


def source(query=QUERY, extra=""):
    return """
    {
      type = postgresql
      server = "127.0.0.1:{{pg_port}}"
      database = %s
      username = %s
      password = "%s"
      pool_size = 2
      query_timeout = 2s
      query = "%s"
      %s
    }""" % (PG_DB, PG_USER, PG_PASSWORD, query, extra)


FILE_SOURCE = '{ type = file, path = "acl.conf" }'


def config(*sources, no_match="deny", cache=False):
    return ("log.console.level = debug\nauthorization {\n  no_match = %s\n  cache { enable = %s }\n"
            "  sources = [%s\n  ]\n}\n" % (no_match, "true" if cache else "false", ",".join(sources)))


def start(start_broker, db, cfg, port=None, acl="{allow, all}.\n", **kw):
    return start_broker(cfg, values={"pg_port": port or db.port}, files={"acl.conf": acl}, **kw)


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


def test_rows_in_order_first_match_decides(start_broker, pg):
    b = start(start_broker, pg, config(source()))
    u = uname("alice")
    add_rows(pg, rule("deny", "publish", "t/secret"), rule("allow", "all", "t/#"), rule("deny", "all", "#"),
             rule("allow", "all", "late/#"), username=u)
    c = client(b, "c1", u)
    assert pub_rc(c, "t/secret") == NOT_AUTHORIZED
    assert allowed(c, "t/x")
    assert sub_codes(c, "t/secret", "t/#") == [1, 1]     # the deny row is publish only
    assert pub_rc(c, "late/x") == NOT_AUTHORIZED         # "#" deny comes first
    assert pub_rc(client(b, "c2", uname("nobody")), "t/x") == NOT_AUTHORIZED


@pytest.mark.parametrize("version,denied", [(5, 0x87), (4, 0x80)])
def test_subscribe_codes_and_delivery(start_broker, pg, version, denied):
    b = start(start_broker, pg, config(source()))
    u = uname("sub")
    add_rows(pg, rule("allow", "subscribe", "news/#"), rule("allow", "pub", "news/a"),
             rule("allow", "sub", "alt/#"), username=u)
    c = client(b, "s1", u, version=version)
    assert sub_codes(c, "news/#", "secret/#", "alt/x") == [1, denied, 1]
    p = client(b, "p1", u, version=version)
    p.publish("news/a", b"hi", qos=1)
    got = c.recv_publish()
    assert got.topic == "news/a" and got.payload == b"hi"


def test_qos_and_retain_columns(start_broker, pg):
    # qos and retain are read from whichever columns the query names so
    q = ("SELECT permission, action, topic, %s AS qos, %s AS retain FROM mqtt_acl "
         "WHERE username = ${username} ORDER BY id")
    u = uname("qr")
    add_rows(pg, rule("allow", "publish", "text/#", qos="0,1", retain_text="false"),
             rule("allow", "publish", "int/#", qos_int=2, retain_int=1),
             rule("allow", "publish", "arr/#", qos_arr="{1,2}", retain=True),
             rule("allow", "subscribe", "s/#", qos_int=1), username=u)
    b_text = start(start_broker, pg, config(source(query=q % ("qos", "retain_text"))), name="text")
    c = client(b_text, "t1", u)
    assert allowed(c, "text/a", qos=1)
    assert pub_rc(c, "text/a", qos=2) == NOT_AUTHORIZED
    assert pub_rc(c, "text/a", qos=1, retain=True) == NOT_AUTHORIZED
    b_int = start(start_broker, pg, config(source(query=q % ("qos_int", "retain_int"))), name="int")
    c = client(b_int, "t2", u)
    assert allowed(c, "int/a", qos=2, retain=True)
    assert pub_rc(c, "int/a", qos=1, retain=True) == NOT_AUTHORIZED
    assert pub_rc(c, "int/a", qos=2, retain=False) == NOT_AUTHORIZED
    assert sub_codes(c, "s/a", qos=1) == [1]
    assert sub_codes(c, "s/a", qos=2) == [NOT_AUTHORIZED]
    b_arr = start(start_broker, pg, config(source(query=q % ("qos_arr", "retain"))), name="arr")
    c = client(b_arr, "t3", u)
    assert allowed(c, "arr/a", qos=1, retain=True)
    assert pub_rc(c, "arr/a", qos=1, retain=False) == NOT_AUTHORIZED


def test_placeholders_bind_and_topic(start_broker, pg):
    """${clientid}, ${action} and ${topic} as bind parameters; ${username}/${clientid} in the topic
    column expanded by the rule matcher."""
    q = ("SELECT permission, action, topic FROM mqtt_acl WHERE clientid = ${clientid} "
         "AND (action = ${action} OR action = 'all') AND (topic = ${topic} OR topic LIKE '%$%') ORDER BY id")
    b = start(start_broker, pg, config(source(query=q)))
    cid = uname("dev")
    add_rows(pg, rule("allow", "publish", "exact/one"), rule("allow", "all", "dev/${clientid}/#"),
             rule("allow", "subscribe", "users/${username}/#"), clientid=cid)
    c = client(b, cid, "erin")
    assert allowed(c, "exact/one")
    assert pub_rc(c, "exact/two") == NOT_AUTHORIZED
    assert allowed(c, f"dev/{cid}/t")
    assert pub_rc(c, "dev/other/t") == NOT_AUTHORIZED
    assert sub_codes(c, "users/erin/#", "users/frank/#", "exact/one") == [1, NOT_AUTHORIZED, NOT_AUTHORIZED]
    assert pub_rc(client(b, uname("dev"), "erin"), "exact/one") == NOT_AUTHORIZED


def test_no_rows_next_source_then_no_match(start_broker, pg):
    acl = '{allow, all, publish, ["file/#"]}.\n'
    b = start(start_broker, pg, config(source(), FILE_SOURCE, no_match="deny"), acl=acl, name="chain")
    u = uname("next")
    add_rows(pg, rule("allow", "publish", "db/t"), rule("deny", "publish", "file/blocked"), username=u)
    c = client(b, "n1", u)
    assert allowed(c, "db/t")
    assert allowed(c, "file/t")                        # no matching row: the file decides
    assert pub_rc(c, "file/blocked") == NOT_AUTHORIZED  # a deny row wins before the file
    assert pub_rc(c, "neither/t") == NOT_AUTHORIZED
    b2 = start(start_broker, pg, config(source(), no_match="allow"), name="allow")
    assert allowed(client(b2, "n2", uname("nobody")), "any/t")


def test_invalid_rows_are_skipped(start_broker, pg):
    b = start(start_broker, pg, config(source()))
    u = uname("bad")
    add_rows(pg, rule("maybe", "publish", "t"), rule("allow", "read", "t"), rule("allow", "publish", "t", qos="5"),
             rule("allow", "publish", None), rule("allow", "publish", "t/#/x"), rule("allow", "publish", "t"),
             username=u)
    c = client(b, "b1", u)
    assert allowed(c, "t")
    b.wait_for_log(r"authorization postgresql: 5 of 6 rules skipped as invalid \(first: invalid permission maybe")


def test_sql_injection_through_username(start_broker, pg):
    b = start(start_broker, pg, config(source()))
    add_rows(pg, rule("allow", "all", "#"), username="victim")
    for u in ["x' OR '1'='1", "victim' --", "'; DROP TABLE mqtt_acl; --"]:
        c = client(b, uname("inj"), u)
        assert pub_rc(c, "any/t") == NOT_AUTHORIZED
    assert pg.psql("SELECT count(*) FROM mqtt_acl WHERE username = 'victim'").strip() == "1"


def test_undefined_placeholder_binds_null(start_broker, pg):
    """A client without a username: ${username} binds NULL, which matches no row (not '')."""
    b = start(start_broker, pg, config(source()))
    add_rows(pg, rule("allow", "all", "#"), username="")
    c = client(b, uname("anon"))
    assert pub_rc(c, "any/t") == NOT_AUTHORIZED


@pytest.mark.parametrize("no_match", ["allow", "deny"])
def test_backend_down_at_start(start_broker, pg, no_match):
    dead = free_port()
    b = start(start_broker, pg, config(source(), no_match=no_match), port=dead)
    c = client(b, "d1", uname("u"))
    assert allowed(c, "t/x") == (no_match == "allow")
    c.ping()
    b.wait_for_log(r"authorization source postgresql failed to answer")
    b.wait_for_log(r"postgresql 127\.0\.0\.1:%d is unreachable" % dead)


def test_backend_goes_down_mid_run_and_comes_back(start_broker, pg, db_proxy):
    proxy = db_proxy(pg.port)
    acl = '{allow, all, publish, ["file/#"]}.\n'
    b = start(start_broker, pg, config(source(), FILE_SOURCE, no_match="deny"), port=proxy.port, acl=acl)
    u = uname("mid")
    add_rows(pg, rule("allow", "publish", "mid/t"), username=u)
    c = client(b, "m1", u)
    assert allowed(c, "mid/t")
    proxy.stop()
    assert pub_rc(c, "mid/t") == NOT_AUTHORIZED   # no answer: no match, no_match = deny
    assert allowed(c, "file/t")                   # the next source still decides
    c.ping()
    proxy.start()
    wait_until(lambda: allowed(c, "mid/t"), 15, "postgresql back", interval=0.2)


@pytest.mark.timeout(60)
def test_slow_query_times_out_without_blocking_others(start_broker, pg):
    q = "SELECT permission, action, topic FROM mqtt_acl WHERE username = ${username} AND acl_delay(username)"
    b = start(start_broker, pg, config(source(query=q, extra="query_timeout = 1s")))
    slow, quick = uname("slow"), uname("quick")
    add_rows(pg, rule("allow", "publish", "t"), username=slow)
    add_rows(pg, rule("allow", "publish", "t"), username=quick)
    s = client(b, "slow1", slow)
    q1 = client(b, "quick1", quick)
    pid = s.publish("t", b"x", qos=1, complete=False)
    time.sleep(0.1)
    t0 = time.monotonic()
    assert allowed(q1, "t")                        # answered while the slow query runs
    assert time.monotonic() - t0 < 0.9
    ack = s.wait_for(m.PUBACK, timeout=5, packet_id=pid)
    assert ack.rc == NOT_AUTHORIZED                # timed out: no match, no_match = deny


@pytest.mark.timeout(60)
def test_shutdown_with_a_query_in_flight(start_broker, pg):
    """SIGTERM while the check of a retained delivery waits for a slow query: clean exit."""
    q = ("SELECT permission, action, topic FROM mqtt_acl WHERE username = ${username} "
         "AND (${action} = 'publish' OR ${topic} <> 'slowr/x' OR acl_delay('slow'))")
    b = start(start_broker, pg, config(source(query=q, extra="query_timeout = 10s")))
    u = uname("sd")
    add_rows(pg, rule("allow", "all", "slowr/#"), username=u)
    c = client(b, "sd1", u)
    assert allowed(c, "slowr/x", retain=True)
    assert sub_codes(c, "slowr/+") == [1]
    time.sleep(0.5)                           # the retained delivery's check is running
    assert b.stop() == 0


@pytest.mark.parametrize("body,err", [
    ('query = "SELECT permission FROM t WHERE u = ${password}"', r"\.conf:\d+"),
    ('query = ""', r"the query is empty"),
    ('server = "127.0.0.1"', r"query is required"),
    ('query = "SELECT 1", password_hash_algorithm { name = plain }', r"unknown key"),
])
def test_config_errors(check_config, body, err):
    cfg = ('authorization {\n  sources = [\n    {\n      type = postgresql\n      server = "127.0.0.1"\n'
           '      database = mqtt\n      %s\n    }\n  ]\n}\n' % body)
    rc, out = check_config(cfg)
    assert rc != 0, out
    assert re.search(err, out), out
