"""`mechanism = password_based, backend = mysql` against a real MariaDB server
(bw/dbservers.py): allow / wrong password / unknown user, hash algorithms, the row contract
(password fallback, missing hash, is_superuser types, clientid_override), prepared statements
against injection, backend down at start and mid-run, a slow query, TLS, TCP for "localhost",
credentials kept out of logs, config errors."""
import re
import threading
import uuid

import pytest

from bw.dbservers import (BCRYPT_PASSWORD, MYSQL_DB, MYSQL_PASSWORD, MYSQL_USER, db_proxy,  # noqa: F401
                          emqx_hash, mysql_server, wait_until)
from bw.mqtt_raw import CONNACK, ConnectionClosed, RawClient, connect as connect_packet
from bw.ports import free_port

QUERY = ("SELECT password_hash, salt, is_superuser, clientid_override FROM mqtt_user "
         "WHERE username = ${username} LIMIT 1")


def authn(query=QUERY, algo="name = sha256, salt_position = prefix", extra="", password=MYSQL_PASSWORD,
          user=MYSQL_USER, host="127.0.0.1"):
    return """
  {
    mechanism = password_based
    backend = mysql
    server = "%s:{{my_port}}"
    database = %s
    username = %s
    password = "%s"
    pool_size = 3
    query = "%s"
    password_hash_algorithm { %s }
    %s
  }""" % (host, MYSQL_DB, user, password, query, algo, extra)


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
    return start_broker(config, values={"my_port": port or db.port}, **kw)


def connect_outcome(b, client_id, username, password):
    """CONNACK rc of a v5 CONNECT, or "closed" (the codec may refuse a username outright)."""
    with RawClient(b.tcp_port, version=5) as c:
        c.send(connect_packet(client_id, version=5, username=username, password=password))
        try:
            return c.expect(CONNACK).rc
        except ConnectionClosed:
            return "closed"


@pytest.mark.parametrize("version,wrong,unknown", [(5, 0x86, 0x87), (4, 4, 5)])
def test_allow_wrong_password_unknown_user(start_broker, raw_client, mysql_server, version, wrong, unknown):
    b = start(start_broker, mysql_server, chain(authn()))
    u = uname("alice")
    add_user(mysql_server, u, "pw-1")
    raw_client(b, version=version).connect("c1", username=u, password=b"pw-1")
    raw_client(b, version=version).connect("c2", username=u, password=b"pw-2", expect_rc=wrong)
    raw_client(b, version=version).connect("c3", username=uname("nobody"), password=b"pw-1", expect_rc=unknown)
    raw_client(b, version=version).connect("c4", username=u, expect_rc=unknown)  # no password: ignored
    b.wait_for_log(r"c2 .*refused: authentication failed \(password_based:mysql: wrong password\)")


HASHES = [
    ("plain", "name = plain, salt_position = disable", "disable"),
    ("md5", "name = md5, salt_position = prefix", "prefix"),
    ("sha", "name = sha, salt_position = suffix", "suffix"),
    ("sha256", "name = sha256, salt_position = disable", "disable"),
    ("sha512", "name = sha512, salt_position = suffix", "suffix"),
    ("bcrypt", "name = bcrypt", None),
    ("pbkdf2", "name = pbkdf2, mac_fun = sha, iterations = 700", None),
]


@pytest.mark.parametrize("algo,conf,pos", HASHES, ids=[h[0] for h in HASHES])
def test_hash_algorithms(start_broker, raw_client, mysql_server, algo, conf, pos):
    b = start(start_broker, mysql_server, chain(authn(algo=conf)))
    u = uname(algo)
    pw = BCRYPT_PASSWORD if algo == "bcrypt" else "S3cret!"
    salt = "" if algo in ("plain", "bcrypt") else uuid.uuid4().hex
    if algo == "pbkdf2":
        h = emqx_hash("pbkdf2", pw, salt, iterations=700, mac_fun="sha")
    else:
        h = emqx_hash(algo, pw, salt, pos or "prefix")
    mysql_server.add_user(u, h, salt)
    raw_client(b, version=5).connect("h1", username=u, password=pw.encode())
    raw_client(b, version=5).connect("h2", username=u, password=b"not-it", expect_rc=0x86)


def test_password_column_and_missing_hash(start_broker, raw_client, mysql_server):
    q = "SELECT password_hash AS password, salt FROM mqtt_user WHERE username = ${username}"
    b = start(start_broker, mysql_server, chain(authn(query=q), BUILTIN), name="fallback")
    u = uname("pwcol")
    add_user(mysql_server, u, "pw")
    raw_client(b, version=5).connect("p1", username=u, password=b"pw")
    mysql_server.add_user("builtin-user", None, "s")
    try:
        # NULL hash: not authorized, and the chain stops there
        raw_client(b, version=5).connect("p2", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)
        b2 = start(start_broker, mysql_server,
                   chain(authn(query="SELECT salt FROM mqtt_user WHERE username = ${username}")), name="nohash")
        raw_client(b2, version=4).connect("p3", username=u, password=b"pw", expect_rc=5)
    finally:
        mysql_server.sql("DELETE FROM mqtt_user WHERE username = 'builtin-user'")
    raw_client(b, version=5).connect("p4", username="builtin-user", password=b"builtin-pw")


@pytest.mark.parametrize("column,value,expect", [
    ("is_superuser", 1, True), ("is_superuser", 0, False), ("is_superuser", 5, True), ("is_superuser", None, False),
    ("superuser_text", "true", True), ("superuser_text", "1", True), ("superuser_text", "2", False),
    ("superuser_bit", 1, True), ("superuser_bit", 0, False),
])
def test_superuser_truthiness(start_broker, raw_client, mysql_server, column, value, expect):
    q = ("SELECT password_hash, salt, %s AS is_superuser FROM mqtt_user WHERE username = ${username}" % column)
    b = start(start_broker, mysql_server, chain(authn(query=q)))
    u = uname("su")
    add_user(mysql_server, u, "pw", **{column: value})
    raw_client(b, version=5).connect("su1", username=u, password=b"pw")
    line = b.wait_for_log(r"authentication of su1 allowed by password_based:mysql.*$").group(0)
    assert line.endswith(": superuser") == expect, line


def test_clientid_override_and_placeholders(start_broker, raw_client, mysql_server):
    q = ("SELECT password_hash, salt, clientid_override FROM mqtt_user "
         "WHERE username = ${username} AND '${clientid}' LIKE 'orig%'")
    b = start(start_broker, mysql_server, chain(authn(query=q)))
    u, override = uname("ov"), uname("dev-override")
    add_user(mysql_server, u, "pw", clientid_override=override)
    ack = raw_client(b, version=5).connect("orig-1", username=u, password=b"pw")
    assert ack.props.get("assigned_client_identifier") == override
    b.wait_for_log(r"client %s connected" % re.escape(override))
    raw_client(b, version=5).connect("other-1", username=u, password=b"pw", expect_rc=0x87)


def test_unknown_user_falls_through_to_the_next_authenticator(start_broker, raw_client, mysql_server):
    b = start(start_broker, mysql_server, chain(authn(), BUILTIN))
    raw_client(b, version=5).connect("n1", username="builtin-user", password=b"builtin-pw")
    add_user(mysql_server, "shared-user", "my-pw")
    try:
        raw_client(b, version=5).connect("n2", username="shared-user", password=b"builtin-pw", expect_rc=0x86)
        raw_client(b, version=5).connect("n3", username="shared-user", password=b"my-pw")
    finally:
        mysql_server.sql("DELETE FROM mqtt_user WHERE username = 'shared-user'")


INJECTIONS = ["' OR '1'='1", "x'; DROP TABLE mqtt_user; --", "x\"; DROP TABLE mqtt_user; --",
              "victim' -- ", "victim'#", "victim\\' OR 1=1 -- ", "?", "${username}", "victim\x00"]


def test_sql_injection_through_the_username_is_harmless(start_broker, raw_client, mysql_server):
    q = "SELECT password_hash, salt FROM mqtt_user WHERE username = '${username}'"
    b = start(start_broker, mysql_server, chain(authn(query=q)))
    add_user(mysql_server, "victim", "victim-pw")
    rows = mysql_server.sql("SELECT count(*) FROM mqtt_user").strip()
    for i, evil in enumerate(INJECTIONS):
        assert connect_outcome(b, f"inj{i}", evil, b"victim-pw") in ("closed", 0x87, 0x85, 0x81), evil
    assert mysql_server.sql("SELECT count(*) FROM mqtt_user").strip() == rows
    raw_client(b, version=5).connect("inj-ok", username="victim", password=b"victim-pw")


def test_query_error_is_a_backend_failure(start_broker, raw_client, mysql_server):
    q = "SELECT password_hash, salt FROM no_such_table WHERE username = ${username}"
    b = start(start_broker, mysql_server, chain(authn(query=q), BUILTIN))
    raw_client(b, version=5).connect("qe1", username="builtin-user", password=b"builtin-pw")
    b.wait_for_log(r"password_based:mysql failed \(mysql 127\.0\.0\.1:\d+: Table 'mqtt\.no_such_table' doesn't exist")
    b2 = start(start_broker, mysql_server,
               chain(authn(query=q), BUILTIN, settings="authentication_settings.ignore_backend_failures = false"),
               name="strict")
    raw_client(b2, version=5).connect("qe2", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_down_at_start(start_broker, raw_client, mysql_server, ignore):
    dead = free_port()
    b = start(start_broker, mysql_server,
              chain(authn(), BUILTIN,
                    settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"),
              port=dead)
    raw_client(b, version=5).connect("d1", username="builtin-user", password=b"builtin-pw",
                                     expect_rc=0 if ignore else 0x87)
    raw_client(b, version=4).connect("d2", username="my-only", password=b"x", expect_rc=5)
    b.wait_for_log(r"password_based:mysql: mysql 127\.0\.0\.1:%d is unreachable" % dead)
    assert len(re.findall(r"is unreachable", b.run_log())) == 1


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_goes_down_mid_run_and_comes_back(start_broker, raw_client, mysql_server, db_proxy, ignore):
    proxy = db_proxy(mysql_server.port)
    b = start(start_broker, mysql_server,
              chain(authn(), BUILTIN,
                    settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"),
              port=proxy.port)
    u = uname("mid")
    add_user(mysql_server, u, "mid-pw")
    raw_client(b, version=5).connect("m1", username=u, password=b"mid-pw")
    proxy.stop()
    raw_client(b, version=5).connect("m2", username=u, password=b"mid-pw", expect_rc=0x87)
    raw_client(b, version=5).connect("m3", username="builtin-user", password=b"builtin-pw",
                                     expect_rc=0 if ignore else 0x87)
    b.wait_for_log(r"mysql 127\.0\.0\.1:%d is unreachable" % proxy.port)
    proxy.start()
    wait_until(lambda: connect_outcome(b, "m4", u, b"mid-pw") == 0, 15, "reconnection", interval=0.2)
    b.wait_for_log(r"mysql 127\.0\.0\.1:%d is reachable again" % proxy.port)


@pytest.mark.timeout(60)
def test_slow_query_does_not_hold_other_clients(start_broker, raw_client, mysql_server):
    q = ("SELECT password_hash, salt FROM mqtt_user WHERE username = ${username} "
         "AND (username NOT LIKE 'slow%' OR SLEEP(3) = 0) LIMIT 1")
    fast = start(start_broker, mysql_server, chain(authn(query=q, extra="query_timeout = 1s")), name="fast")
    patient = start(start_broker, mysql_server, chain(authn(query=q, extra="query_timeout = 10s")), name="patient")
    slow, quick = uname("slow"), uname("quick")
    add_user(mysql_server, slow, "pw")
    add_user(mysql_server, quick, "pw")
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
        wait_until(lambda: int(mysql_server.sql(
            "SELECT count(*) FROM information_schema.processlist WHERE info LIKE '%SLEEP(3)%' "
            "AND id <> CONNECTION_ID()").strip()) >= 1, 10, "the slow query running")
        for i in range(3):
            pub = raw_client(fast, version=5)
            pub.connect(f"pub{i}", username=quick, password=b"pw")
            pub.publish(f"news/{i}", b"still here", qos=1)
            sub.recv_publish(topic=f"news/{i}", payload=b"still here")
    finally:
        for t in threads:
            t.join(20)
    assert results == {"slow-fast": 0x87, "slow-patient": 0}
    fast.wait_for_log(r"password_based:mysql failed \(mysql 127\.0\.0\.1:\d+: .*timed out")
    raw_client(fast, version=5).connect("after", username=quick, password=b"pw")


def test_localhost_means_tcp(start_broker, raw_client, mysql_server):
    """MySQL clients take "localhost" as the default Unix socket; Bulwark always uses TCP."""
    b = start(start_broker, mysql_server, chain(authn(host="localhost")))
    u = uname("lh")
    add_user(mysql_server, u, "pw")
    raw_client(b, version=5).connect("lh1", username=u, password=b"pw")


def test_tls(start_broker, raw_client, mysql_server, pki):
    u = uname("tls")
    add_user(mysql_server, u, "pw")
    # the _tls account REQUIRE SSL: logging in with it proves the connection is encrypted
    ssl = 'ssl { enable = true, verify = verify_peer, cacertfile = "{{pki.root_ca_cert}}" }'
    b = start(start_broker, mysql_server, chain(authn(user=MYSQL_USER + "_tls", host="localhost", extra=ssl)))
    raw_client(b, version=5).connect("t1", username=u, password=b"pw")
    b2 = start(start_broker, mysql_server, chain(authn(user=MYSQL_USER + "_tls", extra="ssl { enable = true }")),
               name="noverify")
    raw_client(b2, version=5).connect("t2", username=u, password=b"pw")
    bad = 'ssl { enable = true, verify = verify_peer, cacertfile = "{{pki.wrong_ca_cert}}" }'
    b3 = start(start_broker, mysql_server, chain(authn(user=MYSQL_USER + "_tls", extra=bad)), name="wrongca")
    raw_client(b3, version=5).connect("t3", username=u, password=b"pw", expect_rc=0x87)
    b3.wait_for_log(r"password_based:mysql: mysql 127\.0\.0\.1:\d+ is unreachable")
    # without TLS the account is refused
    b4 = start(start_broker, mysql_server, chain(authn(user=MYSQL_USER + "_tls")), name="plain")
    raw_client(b4, version=5).connect("t4", username=u, password=b"pw", expect_rc=0x87)


def test_backend_credentials_stay_out_of_logs(start_broker, raw_client, mysql_server):
    secret = "wrong-Pa55-" + uuid.uuid4().hex[:6]
    b = start(start_broker, mysql_server, chain(authn(password=secret)))
    u = uname("who")
    add_user(mysql_server, u, "user-Pa55word")
    raw_client(b, version=5).connect("cred1", username=u, password=b"user-Pa55word", expect_rc=0x87)
    b.wait_for_log(r"is unreachable: Access denied for user '%s'" % MYSQL_USER)
    log = b.run_log()
    assert secret not in log
    assert "user-Pa55word" not in log


@pytest.mark.parametrize("text,needle", [
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "127.0.0.1", database = d }]',
     r"bulwark\.conf:1: authentication: query is required"),
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "127.0.0.1"\n'
     '  query = "SELECT 1" }]', r"bulwark\.conf:1: authentication: database is required"),
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "h", database = d\n'
     '  query = "SELECT password_hash FROM t WHERE u = ${peer}" }]',
     r"bulwark\.conf:2: authentication\.query: placeholder \$\{peer\} is not allowed"),
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  ssl {\n    enable = true\n    server_name_indication = "db.example"\n  } }]',
     r"not supported yet: authentication\.ssl\.server_name_indication \(.*bulwark\.conf:5\)"),
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  ssl { enable = true, versions = ["tlsv1.2"] } }]',
     r"not supported yet: authentication\.ssl\.versions"),
    ('authentication = [{ mechanism = password_based, backend = mysql, server = "h", database = d\n'
     '  query = "SELECT 1"\n  ssl { enable = true, certfile = "/x.pem" } }]',
     r"bulwark\.conf:3: authentication\.ssl: certfile and keyfile go together"),
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
    backend = mysql
    enable = true
    server = "127.0.0.1:3306"
    database = mqtt
    username = root
    password = public
    pool_size = 8
    query_timeout = 5s
    query = "SELECT password_hash, salt, is_superuser FROM mqtt_user where username = ${username} LIMIT 1"
    password_hash_algorithm { name = sha256, salt_position = suffix }
    ssl { enable = false }
  }
]
""")
    assert status == 0, out
