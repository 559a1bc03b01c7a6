"""`mechanism = password_based, backend = postgresql` against a real PostgreSQL server
(bw/dbservers.py): allow / wrong password / unknown user, hash algorithms, the row contract
(password fallback, missing hash, is_superuser types, clientid_override), bind parameters
against injection, backend down at start and mid-run, a slow query, TLS, credentials kept out
of logs, config errors."""
import re
import threading
import uuid

import pytest

from bw.dbservers import (BCRYPT_PASSWORD, PG_DB, PG_PASSWORD, PG_USER, emqx_hash, db_proxy,  # noqa: F401
                          pg_server, wait_until)
from bw.mqtt_raw import CONNACK, ConnectionClosed, RawClient, connect as connect_packet
from bw.ports import free_port

QUERY = ("SELECT password_hash, salt, is_superuser, clientid_override FROM mqtt_user "
         "WHERE username = ${username} LIMIT 1")


def authn(query=QUERY, algo="name = sha256, salt_position = prefix", extra="", password=PG_PASSWORD):
    return """
  {
    mechanism = password_based
    backend = postgresql
    server = "127.0.0.1:{{pg_port}}"
    database = %s
    username = %s
    password = "%s"
    pool_size = 3
    query = "%s"
    password_hash_algorithm { %s }
    %s
  }""" % (PG_DB, PG_USER, password, query, algo, extra)


BUILTIN = """
  {
    mechanism = password_based
    backend = built_in_database
    bootstrap_file = "users.csv"
    password_hash_algorithm { name = plain, salt_position = disable }
  }"""
USERS_CSV = "user_id,password,is_superuser\nbuiltin-user,builtin-pw,false\nshared-user,builtin-pw,false\n"


def chain(*entries, settings=""):
    return "log.console.level = debug\n%s\nauthentication = [%s\n]\n" % (settings, ",".join(entries))


def uname(tag):
    return f"{tag}-{uuid.uuid4().hex[:8]}"


def add_user(db, username, password, algo="sha256", salt=None, salt_position="prefix", **cols):
    salt = uuid.uuid4().hex if salt is None else salt
    db.add_user(username, emqx_hash(algo, password, salt, salt_position), salt, **cols)


def start(start_broker, db, config, port=None, **kw):
    kw.setdefault("files", {"users.csv": USERS_CSV})
    return start_broker(config, values={"pg_port": port or db.port}, **kw)


def connect_outcome(b, client_id, username, password):
    """CONNACK rc of a v5 CONNECT, or "closed" (the codec may refuse a username outright)."""
    with RawClient(b.tcp_port, version=5) as c:
        c.send(connect_packet(client_id, version=5, username=username, password=password))
        try:
            return c.expect(CONNACK).rc
        except ConnectionClosed:
            return "closed"


@pytest.mark.parametrize("version,wrong,unknown", [(5, 0x86, 0x87), (4, 4, 5)])
def test_allow_wrong_password_unknown_user(start_broker, raw_client, pg_server, version, wrong, unknown):
    b = start(start_broker, pg_server, chain(authn()))
    u = uname("alice")
    add_user(pg_server, u, "pw-1")
    raw_client(b, version=version).connect("c1", username=u, password=b"pw-1")
    raw_client(b, version=version).connect("c2", username=u, password=b"pw-2", expect_rc=wrong)
    raw_client(b, version=version).connect("c3", username=uname("nobody"), password=b"pw-1", expect_rc=unknown)
    raw_client(b, version=version).connect("c4", username=u, expect_rc=unknown)  # no password: ignored
    b.wait_for_log(r"c2 .*refused: authentication failed \(password_based:postgresql: wrong password\)")


HASHES = [
    ("plain", "name = plain, salt_position = disable", "disable"),
    ("md5", "name = md5, salt_position = suffix", "suffix"),
    ("sha", "name = sha, salt_position = prefix", "prefix"),
    ("sha256", "name = sha256, salt_position = suffix", "suffix"),
    ("sha512", "name = sha512, salt_position = prefix", "prefix"),
    ("bcrypt", "name = bcrypt", None),
    ("pbkdf2", "name = pbkdf2, mac_fun = sha512, iterations = 500, dk_length = 32", None),
]


@pytest.mark.parametrize("algo,conf,pos", HASHES, ids=[h[0] for h in HASHES])
def test_hash_algorithms(start_broker, raw_client, pg_server, algo, conf, pos):
    b = start(start_broker, pg_server, chain(authn(algo=conf)))
    u = uname(algo)
    pw = BCRYPT_PASSWORD if algo == "bcrypt" else "S3cret!"
    salt = "" if algo in ("plain", "bcrypt") else uuid.uuid4().hex
    if algo == "pbkdf2":
        h = emqx_hash("pbkdf2", pw, salt, iterations=500, mac_fun="sha512", dk_length=32)
    else:
        h = emqx_hash(algo, pw, salt, pos or "prefix")
    pg_server.add_user(u, h, salt)
    raw_client(b, version=5).connect("h1", username=u, password=pw.encode())
    raw_client(b, version=5).connect("h2", username=u, password=b"not-it", expect_rc=0x86)


def test_password_column_and_missing_hash(start_broker, raw_client, pg_server):
    q = "SELECT password_hash AS password, salt FROM mqtt_user WHERE username = ${username}"
    b = start(start_broker, pg_server, chain(authn(query=q), BUILTIN), name="fallback")
    u = uname("pwcol")
    add_user(pg_server, u, "pw")
    raw_client(b, version=5).connect("p1", username=u, password=b"pw")
    # a row whose hash is NULL: not authorized, and the chain stops (the built-in user is not asked)
    pg_server.add_user("builtin-user", None, "s")
    try:
        raw_client(b, version=5).connect("p2", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)
        # a query without any hash column: not authorized
        b2 = start(start_broker, pg_server,
                   chain(authn(query="SELECT salt FROM mqtt_user WHERE username = ${username}")), name="nohash")
        raw_client(b2, version=4).connect("p3", username=u, password=b"pw", expect_rc=5)
    finally:
        pg_server.psql("DELETE FROM mqtt_user WHERE username = 'builtin-user'")
    raw_client(b, version=5).connect("p4", username="builtin-user", password=b"builtin-pw")


@pytest.mark.parametrize("column,value,expect", [
    ("is_superuser", True, True), ("is_superuser", False, False), ("is_superuser", None, False),
    ("superuser_int", 1, True), ("superuser_int", 5, True), ("superuser_int", 0, False),
    ("superuser_text", "true", True), ("superuser_text", "1", True), ("superuser_text", "yes", False),
])
def test_superuser_truthiness(start_broker, raw_client, pg_server, column, value, expect):
    q = ("SELECT password_hash, salt, %s AS is_superuser FROM mqtt_user WHERE username = ${username}" % column)
    b = start(start_broker, pg_server, chain(authn(query=q)))
    u = uname("su")
    add_user(pg_server, u, "pw", **{column: value})
    raw_client(b, version=5).connect("su1", username=u, password=b"pw")
    line = b.wait_for_log(r"authentication of su1 allowed by password_based:postgresql.*$").group(0)
    assert line.endswith(": superuser") == expect, line


def test_clientid_override_and_placeholders(start_broker, raw_client, pg_server):
    # quoted '${clientid}' is a parameter too; both placeholders are bound, never spliced
    q = ("SELECT password_hash, salt, clientid_override FROM mqtt_user "
         "WHERE username = ${username} AND '${clientid}' LIKE 'orig%'")
    b = start(start_broker, pg_server, chain(authn(query=q)))
    u, override = uname("ov"), uname("dev-override")
    add_user(pg_server, u, "pw", clientid_override=override)
    ack = raw_client(b, version=5).connect("orig-1", username=u, password=b"pw")
    assert ack.props.get("assigned_client_identifier") == override
    b.wait_for_log(r"client %s connected" % re.escape(override))
    raw_client(b, version=5).connect("other-1", username=u, password=b"pw", expect_rc=0x87)


def test_unknown_user_falls_through_to_the_next_authenticator(start_broker, raw_client, pg_server):
    b = start(start_broker, pg_server, chain(authn(), BUILTIN))
    raw_client(b, version=5).connect("n1", username="builtin-user", password=b"builtin-pw")
    add_user(pg_server, "shared-user", "pg-pw")
    try:
        raw_client(b, version=5).connect("n2", username="shared-user", password=b"builtin-pw", expect_rc=0x86)
        raw_client(b, version=5).connect("n3", username="shared-user", password=b"pg-pw")
    finally:
        pg_server.psql("DELETE FROM mqtt_user WHERE username = 'shared-user'")


INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE mqtt_user; --", "x\"; DROP TABLE mqtt_user; --",
              "victim' --", "victim'/*", "$1", "${username}", "victim\x00' OR 1=1 --"]


def test_sql_injection_through_the_username_is_harmless(start_broker, raw_client, pg_server):
    # also with the placeholder written inside quotes, as EMQX examples do
    q = "SELECT password_hash, salt FROM mqtt_user WHERE username = '${username}'"
    b = start(start_broker, pg_server, chain(authn(query=q)))
    add_user(pg_server, "victim", "victim-pw")
    rows = pg_server.psql("SELECT count(*) FROM mqtt_user").strip()
    for i, evil in enumerate(INJECTIONS):
        assert connect_outcome(b, f"inj{i}", evil, b"victim-pw") in ("closed", 0x87, 0x85, 0x81), evil
    assert pg_server.psql("SELECT count(*) FROM mqtt_user").strip() == rows
    raw_client(b, version=5).connect("inj-ok", username="victim", password=b"victim-pw")


def test_query_error_is_a_backend_failure(start_broker, raw_client, pg_server):
    q = "SELECT password_hash, salt FROM no_such_table WHERE username = ${username}"
    b = start(start_broker, pg_server, chain(authn(query=q), BUILTIN))
    raw_client(b, version=5).connect("qe1", username="builtin-user", password=b"builtin-pw")  # ignored: next
    b.wait_for_log(r'password_based:postgresql failed \(postgresql 127\.0\.0\.1:\d+: ERROR: +relation "no_such_table"')
    b2 = start(start_broker, pg_server,
               chain(authn(query=q), BUILTIN, settings="authentication_settings.ignore_backend_failures = false"),
               name="strict")
    raw_client(b2, version=5).connect("qe2", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_down_at_start(start_broker, raw_client, pg_server, ignore):
    dead = free_port()
    b = start(start_broker, pg_server,
              chain(authn(), BUILTIN,
                    settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"),
              port=dead)
    raw_client(b, version=5).connect("d1", username="builtin-user", password=b"builtin-pw",
                                     expect_rc=0 if ignore else 0x87)
    raw_client(b, version=4).connect("d2", username="pg-only", password=b"x", expect_rc=5)
    b.wait_for_log(r"password_based:postgresql: postgresql 127\.0\.0\.1:%d is unreachable" % dead)
    assert len(re.findall(r"is unreachable", b.run_log())) == 1


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_goes_down_mid_run_and_comes_back(start_broker, raw_client, pg_server, db_proxy, ignore):
    proxy = db_proxy(pg_server.port)
    b = start(start_broker, pg_server,
              chain(authn(), BUILTIN,
                    settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"),
              port=proxy.port)
    u = uname("mid")
    add_user(pg_server, u, "mid-pw")
    raw_client(b, version=5).connect("m1", username=u, password=b"mid-pw")
    proxy.stop()  # connections reset, nothing listens
    raw_client(b, version=5).connect("m2", username=u, password=b"mid-pw", expect_rc=0x87)
    raw_client(b, version=5).connect("m3", username="builtin-user", password=b"builtin-pw",
                                     expect_rc=0 if ignore else 0x87)
    b.wait_for_log(r"postgresql 127\.0\.0\.1:%d is unreachable" % proxy.port)
    proxy.start()
    wait_until(lambda: connect_outcome(b, "m4", u, b"mid-pw") == 0, 15, "reconnection", interval=0.2)
    b.wait_for_log(r"postgresql 127\.0\.0\.1:%d is reachable again" % proxy.port)


@pytest.mark.timeout(60)
def test_slow_query_does_not_hold_other_clients(start_broker, raw_client, pg_server):
    q = ("SELECT password_hash, salt FROM mqtt_user WHERE username = ${username} "
         "AND (username NOT LIKE 'slow%' OR auth_delay(username)) LIMIT 1")
    fast = start(start_broker, pg_server, chain(authn(query=q, extra="query_timeout = 1s")), name="fast")
    patient = start(start_broker, pg_server, chain(authn(query=q, extra="query_timeout = 10s")), name="patient")
    slow, quick = uname("slow"), uname("quick")
    add_user(pg_server, slow, "pw")
    add_user(pg_server, quick, "pw")
    sub = raw_client(fast, version=5)
    sub.connect("sub", username=quick, password=b"pw")
    sub.subscribe("news/#", qos=1)
    results = {}

    def slow_connect(name, broker):
        with RawClient(broker.tcp_port, version=5, timeout=15) as c:
            results[name] = c.connect(name, username=slow, password=b"pw", expect_rc=None).rc

    threads = [threading.Thread(target=slow_connect, args=(n, bk)) for n, bk in (("slow-fast", fast),
                                                                                ("slow-patient", patient))]
    for t in threads:
        t.start()
    try:
        wait_until(lambda: int(pg_server.psql(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%auth_delay(username)%' "
            "AND pid <> pg_backend_pid()").strip()) >= 1, 10, "the slow query running")
        # meanwhile: other clients authenticate through the same authenticator and messages flow
        for i in range(3):
            pub = raw_client(fast, version=5)
            pub.connect(f"pub{i}", username=quick, password=b"pw")
            pub.publish(f"news/{i}", b"still here", qos=1)
            sub.recv_publish(topic=f"news/{i}", payload=b"still here")
    finally:
        for t in threads:
            t.join(20)
    assert results == {"slow-fast": 0x87, "slow-patient": 0}
    fast.wait_for_log(r"password_based:postgresql failed \(postgresql 127\.0\.0\.1:\d+: .*timed out")
    # the cancelled query left the pool usable
    raw_client(fast, version=5).connect("after", username=quick, password=b"pw")


def test_tls_verified_connection(start_broker, raw_client, pg_server, pki):
    ssl = 'ssl { enable = true, verify = verify_peer, cacertfile = "{{pki.root_ca_cert}}" }'
    b = start(start_broker, pg_server, chain(authn(extra=ssl)))
    u = uname("tls")
    add_user(pg_server, u, "pw")
    raw_client(b, version=5).connect("t1", username=u, password=b"pw")
    assert int(pg_server.psql("SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) "
                              "WHERE s.ssl AND a.application_name = 'bulwark'").strip()) >= 1
    # the wrong CA: the server is not trusted, the backend is unreachable
    bad = 'ssl { enable = true, verify = verify_peer, cacertfile = "{{pki.wrong_ca_cert}}" }'
    b2 = start(start_broker, pg_server, chain(authn(extra=bad)), name="wrongca")
    raw_client(b2, version=5).connect("t2", username=u, password=b"pw", expect_rc=0x87)
    b2.wait_for_log(r"is unreachable: .*certificate verify failed")
    # verify_none: encrypted without checking
    b3 = start(start_broker, pg_server, chain(authn(extra="ssl { enable = true }")), name="noverify")
    raw_client(b3, version=5).connect("t3", username=u, password=b"pw")


def test_backend_credentials_stay_out_of_logs(start_broker, raw_client, pg_server):
    secret = "wrong-Pa55-" + uuid.uuid4().hex[:6]
    b = start(start_broker, pg_server, chain(authn(password=secret)))
    u = uname("who")
    add_user(pg_server, u, "user-Pa55word")
    raw_client(b, version=5).connect("cred1", username=u, password=b"user-Pa55word", expect_rc=0x87)
    b.wait_for_log(r'is unreachable: .*password authentication failed for user "%s"' % PG_USER)
    log = b.run_log()
    assert secret not in log
    assert "user-Pa55word" not in log


@pytest.mark.parametrize("text,needle", [
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "127.0.0.1", database = d }]',
     r"bulwark\.conf:1: authentication: query is required"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "127.0.0.1"\n'
     '  query = "SELECT 1" }]', r"bulwark\.conf:1: authentication: database is required"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, database = d\n'
     '  query = "SELECT 1" }]', r"bulwark\.conf:1: authentication: server is required"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "h", database = d\n'
     '  query = "SELECT password_hash FROM t WHERE u = ${user}" }]',
     r"bulwark\.conf:2: authentication\.query: placeholder \$\{user\} is not allowed"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  ssl { enable = true, verify = verify_peer } }]',
     r"bulwark\.conf:3: authentication\.ssl: verify = verify_peer needs cacertfile"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  ssl { enable = true, cacertfile = "/nonexistent/ca.pem", verify = verify_peer } }]',
     r"bulwark\.conf:3: authentication\.ssl\.cacertfile: cannot read /nonexistent/ca\.pem"),
    ('authentication = [{ mechanism = password_based, backend = postgresql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  query_timeout = forever }]',
     r"bulwark\.conf:3: authentication\.query_timeout: expected a duration"),
])
def test_config_errors_name_file_line_and_key(check_config, text, needle):
    status, out = check_config(text + "\n")
    assert status == 1, out
    assert re.search(needle, out), out


def test_config_accepts_emqx_example(check_config):
    status, out = check_config("""
authentication = [
  {
    mechanism = password_based
    backend = postgresql
    enable = true
    server = "127.0.0.1:5432"
    database = mqtt
    username = postgres
    password = public
    pool_size = 8
    auto_reconnect = true
    query = "SELECT password_hash, salt, is_superuser FROM mqtt_user where username = ${username} LIMIT 1"
    password_hash_algorithm { name = sha256, salt_position = suffix }
    ssl { enable = false }
  }
]
""")
    assert status == 0, out
