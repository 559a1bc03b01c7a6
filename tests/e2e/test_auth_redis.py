"""`mechanism = password_based, backend = redis` against a real redis-server (bw/dbservers.py):
allow / wrong password / unknown user, hash algorithms, HGET, the chain around it, injection
through the username, backend down at start and mid-run, a slow backend, superuser and client
ID override, credentials kept out of logs, config errors."""
import re
import threading
import uuid

import pytest

from bw.dbservers import (BCRYPT_PASSWORD, REDIS_PASSWORD, REDIS_USER, Resp, RedisServer, emqx_hash,
                          redis_server, wait_until)  # noqa: F401 (redis_server: fixture)
from bw.mqtt_raw import CONNACK, ConnectionClosed, RawClient, connect as connect_packet
from bw.ports import free_port

CMD = "HMGET mqtt_user:${username} password_hash salt is_superuser clientid_override"


def authn(cmd=CMD, algo="name = sha256, salt_position = prefix", extra=""):
    return """
  {
    mechanism = password_based
    backend = redis
    server = "127.0.0.1:{{redis_port}}"
    username = "%s"
    password = "%s"
    pool_size = 2
    cmd = "%s"
    password_hash_algorithm { %s }
    %s
  }""" % (REDIS_USER, REDIS_PASSWORD, cmd, algo, extra)


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


def add_user(redis, username, password, algo="sha256", salt=None, salt_position="prefix", **fields):
    salt = uuid.uuid4().hex if salt is None else salt
    h = emqx_hash(algo, password, salt, salt_position)
    redis.hset(f"mqtt_user:{username}", password_hash=h, salt=salt, **fields)


def start(start_broker, redis, config, port=None, **kw):
    kw.setdefault("files", {"users.csv": USERS_CSV})
    return start_broker(config, values={"redis_port": port or redis.port}, **kw)


@pytest.mark.parametrize("version,wrong,unknown", [(5, 0x86, 0x87), (4, 4, 5), (3, 4, 5)])
def test_allow_wrong_password_unknown_user(start_broker, raw_client, redis_server, version, wrong, unknown):
    b = start(start_broker, redis_server, chain(authn()))
    u = uname("alice")
    add_user(redis_server, u, "pw-1")
    raw_client(b, version=version).connect("c1", username=u, password=b"pw-1")
    raw_client(b, version=version).connect("c2", username=u, password=b"pw-2", expect_rc=wrong)
    raw_client(b, version=version).connect("c3", username=uname("nobody"), password=b"pw-1", expect_rc=unknown)
    # no password in CONNECT: the authenticator ignores the client
    raw_client(b, version=version).connect("c4", username=u, expect_rc=unknown)
    b.wait_for_log(r"c2 .*refused: authentication failed \(password_based:redis: wrong password\)")


HASHES = [
    ("plain", "name = plain, salt_position = disable", "disable"),
    ("md5", "name = md5, salt_position = disable", "disable"),
    ("sha", "name = sha, salt_position = suffix", "suffix"),
    ("sha256", "name = sha256, salt_position = prefix", "prefix"),
    ("sha512", "name = sha512, salt_position = suffix", "suffix"),
    ("bcrypt", "name = bcrypt", None),
    ("pbkdf2", "name = pbkdf2, mac_fun = sha256, iterations = 1000", None),
]


@pytest.mark.parametrize("algo,conf,pos", HASHES, ids=[h[0] for h in HASHES])
def test_hash_algorithms(start_broker, raw_client, redis_server, algo, conf, pos):
    b = start(start_broker, redis_server, chain(authn(algo=conf)))
    u = uname(algo)
    pw = BCRYPT_PASSWORD if algo == "bcrypt" else "S3cret!"
    salt = "" if algo in ("plain", "md5", "bcrypt") else uuid.uuid4().hex
    redis_server.hset(f"mqtt_user:{u}", password_hash=emqx_hash(algo, pw, salt, pos or "prefix"), salt=salt)
    raw_client(b, version=5).connect("h1", username=u, password=pw.encode())
    raw_client(b, version=5).connect("h2", username=u, password=b"not-it", expect_rc=0x86)


def test_hex_digest_compares_case_insensitively(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server, chain(authn()))
    u = uname("upper")
    redis_server.hset(f"mqtt_user:{u}", password_hash=emqx_hash("sha256", "pw", "s").upper(), salt="s")
    raw_client(b, version=5).connect("up1", username=u, password=b"pw")


def test_hget_with_the_password_field(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server,
              chain(authn(cmd="HGET mqtt_user:${username} password", algo="name = plain, salt_position = disable")))
    u = uname("hget")
    redis_server.hset(f"mqtt_user:{u}", password="plain-pw")
    raw_client(b, version=5).connect("g1", username=u, password=b"plain-pw")
    raw_client(b, version=5).connect("g2", username=u, password=b"nope", expect_rc=0x86)
    raw_client(b, version=5).connect("g3", username=uname("missing"), password=b"plain-pw", expect_rc=0x87)


def test_database_and_key_template(start_broker, raw_client, redis_server):
    """database selects the Redis DB; the key may use other placeholders (here the client ID)."""
    b = start(start_broker, redis_server,
              chain(authn(cmd="HMGET dev:${clientid} password_hash salt", extra="database = 3")))
    cid = uname("dev")
    c = Resp(redis_server.port)
    try:
        c.cmd("SELECT", 3)
        c.cmd("HSET", f"dev:{cid}", "password_hash", emqx_hash("sha256", "db3-pw", "x"), "salt", "x")
    finally:
        c.close()
    raw_client(b, version=5).connect(cid, username="anything", password=b"db3-pw")
    # the same key in database 0 is not seen
    cid0 = uname("dev")
    redis_server.hset(f"dev:{cid0}", password_hash=emqx_hash("sha256", "db3-pw", "x"), salt="x")
    raw_client(b, version=5).connect(cid0, username="anything", password=b"db3-pw", expect_rc=0x87)


def test_unknown_user_falls_through_to_the_next_authenticator(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server, chain(authn(), BUILTIN))
    raw_client(b, version=5).connect("n1", username="builtin-user", password=b"builtin-pw")
    # a wrong password in Redis denies: the built-in database is not asked
    add_user(redis_server, "shared-user", "redis-pw")
    raw_client(b, version=5).connect("n2", username="shared-user", password=b"builtin-pw", expect_rc=0x86)
    raw_client(b, version=5).connect("n3", username="shared-user", password=b"redis-pw")


def test_record_without_hash_is_not_authorized(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server, chain(authn(), BUILTIN))
    redis_server.hset("mqtt_user:builtin-user", salt="only-a-salt", is_superuser="1")
    try:
        # the record exists without password_hash: not authorized, and the chain stops there
        raw_client(b, version=5).connect("w1", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)
        raw_client(b, version=4).connect("w2", username="builtin-user", password=b"builtin-pw", expect_rc=5)
    finally:
        redis_server.cmd("DEL", "mqtt_user:builtin-user")
    raw_client(b, version=5).connect("w3", username="builtin-user", password=b"builtin-pw")


def connect_outcome(b, client_id, username, password):
    """CONNACK rc of a v5 CONNECT, or "closed" (the codec may refuse a username outright)."""
    with RawClient(b.tcp_port, version=5) as c:
        c.send(connect_packet(client_id, version=5, username=username, password=password))
        try:
            return c.expect(CONNACK).rc
        except ConnectionClosed:
            return "closed"


INJECTIONS = ["' OR '1'='1", "x\"; DROP TABLE mqtt_user; --", "* password_hash", "a b c",
              "victim password_hash", "victim\r\nFLUSHALL\r\n", "${username}", "victim\x00"]


def test_injection_through_the_username_is_harmless(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server, chain(authn()))
    add_user(redis_server, "victim", "victim-pw")
    keys_before = redis_server.cmd("DBSIZE")
    for i, evil in enumerate(INJECTIONS):
        assert connect_outcome(b, f"inj{i}", evil, b"victim-pw") in ("closed", 0x87, 0x85, 0x81), evil
    assert redis_server.cmd("DBSIZE") == keys_before
    assert redis_server.cmd("EXISTS", "mqtt_user:victim") == 1
    raw_client(b, version=5).connect("inj-ok", username="victim", password=b"victim-pw")


def test_superuser_and_clientid_override(start_broker, raw_client, redis_server):
    b = start(start_broker, redis_server, chain(authn()))
    su, plain = uname("su"), uname("plain")
    override = uname("dev-override")
    add_user(redis_server, su, "pw", is_superuser="true", clientid_override=override)
    add_user(redis_server, plain, "pw", is_superuser="0")
    c = raw_client(b, version=5)
    ack = c.connect("orig-id", username=su, password=b"pw")
    assert ack.props.get("assigned_client_identifier") == override
    b.wait_for_log(r"authentication of orig-id allowed by password_based:redis: superuser")
    b.wait_for_log(r"client %s connected" % re.escape(override))
    raw_client(b, version=5).connect("plain-id", username=plain, password=b"pw")
    b.wait_for_log(r"authentication of plain-id allowed by password_based:redis$")
    # the override is the client's identity: a second client with that ID takes the session over
    raw_client(b, version=5).connect(override, username=plain, password=b"pw")
    c.expect_closed(reason=0x8E)


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_down_at_start(start_broker, raw_client, redis_server, ignore):
    dead = free_port()  # nothing listens there
    b = start(start_broker, redis_server,
              chain(authn(), BUILTIN,
                    settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"),
              port=dead)
    if ignore:
        raw_client(b, version=5).connect("d1", username="builtin-user", password=b"builtin-pw")
    else:
        raw_client(b, version=5).connect("d1", username="builtin-user", password=b"builtin-pw", expect_rc=0x87)
    raw_client(b, version=5).connect("d2", username="redis-only", password=b"x", expect_rc=0x87)
    raw_client(b, version=4).connect("d3", username="redis-only", password=b"x", expect_rc=5)
    b.wait_for_log(r"password_based:redis: redis 127\.0\.0\.1:%d is unreachable" % dead)
    # one line per transition, not per request
    assert len(re.findall(r"is unreachable", b.run_log())) == 1


@pytest.mark.parametrize("ignore", [True, False])
def test_backend_goes_down_mid_run_and_comes_back(start_broker, raw_client, tmp_path, ignore):
    own = RedisServer(tmp_path / "redis-own").start()
    try:
        b = start(start_broker, own,
                  chain(authn(), BUILTIN,
                        settings=f"authentication_settings.ignore_backend_failures = {str(ignore).lower()}"))
        add_user(own, "mid-user", "mid-pw")
        raw_client(b, version=5).connect("m1", username="mid-user", password=b"mid-pw")
        own.stop()
        raw_client(b, version=5).connect("m2", username="mid-user", password=b"mid-pw", expect_rc=0x87)
        raw_client(b, version=5).connect("m3", username="builtin-user", password=b"builtin-pw",
                                         expect_rc=0 if ignore else 0x87)
        b.wait_for_log(r"redis 127\.0\.0\.1:%d is unreachable" % own.port)
        # back on the same port (empty: the data was not saved)
        own.start()
        add_user(own, "mid-user", "mid-pw")
        # the pool reconnects after its backoff
        wait_until(lambda: connect_outcome(b, "m4", "mid-user", b"mid-pw") == 0, 15, "reconnection", interval=0.2)
        b.wait_for_log(r"redis 127\.0\.0\.1:%d is reachable again" % own.port)
    finally:
        own.stop()


def _sleep_redis(port, seconds):
    """DEBUG SLEEP on its own connection; returns once Redis is seen blocked (a PING stays unanswered)."""
    s = Resp(port)
    s.send("DEBUG", "SLEEP", seconds)
    probe = Resp(port, timeout=0.5)
    try:
        probe.send("PING")
        try:
            probe.reply()
            blocked = False
        except OSError:
            blocked = True
    finally:
        probe.close()
    assert blocked, "Redis answered a PING during DEBUG SLEEP"
    return s


@pytest.mark.timeout(60)
def test_slow_backend_does_not_hold_other_clients(start_broker, raw_client, redis_server):
    """DEBUG SLEEP blocks all of Redis: other clients use a listener without authentication."""
    open_listener = """
listeners.tcp.open { bind = "127.0.0.1:{{port.open}}", enable_authn = false }
"""
    # pool_size = 1 after a warm-up: the slow request runs on an open connection (a connect that
    # times out in AUTH would count as "backend down", also correct but another test)
    one = "pool_size = 1, query_timeout = %s"
    fast = start(start_broker, redis_server, chain(authn(extra=one % "1s")) + open_listener, name="fast")
    patient = start(start_broker, redis_server, chain(authn(extra=one % "10s")), name="patient")
    u = uname("slowish")
    add_user(redis_server, u, "pw")
    # warm both pools (so the slow request finds an open connection)
    raw_client(fast, version=5).connect("warm1", username=u, password=b"pw")
    raw_client(patient, version=5).connect("warm2", username=u, password=b"pw")
    sub = raw_client(fast.port("open"), version=5)
    sub.connect("sub")
    sub.subscribe("news/#", qos=1)

    sleeper = _sleep_redis(redis_server.port, 3)
    results = {}

    def slow_connect(name, broker):
        with RawClient(broker.tcp_port, version=5, timeout=15) as c:
            results[name] = c.connect(name, username=u, password=b"pw", expect_rc=None).rc

    threads = [threading.Thread(target=slow_connect, args=(n, bk)) for n, bk in (("slow-fast", fast),
                                                                                ("slow-patient", patient))]
    for t in threads:
        t.start()
    try:
        # meanwhile: new clients connect and messages flow on the same broker
        for i in range(3):
            pub = raw_client(fast.port("open"), version=5)
            pub.connect(f"pub{i}")
            pub.publish(f"news/{i}", b"still here", qos=1)
            sub.recv_publish(topic=f"news/{i}", payload=b"still here")
    finally:
        for t in threads:
            t.join(20)
        sleeper.close()
    assert results == {"slow-fast": 0x87, "slow-patient": 0}
    fast.wait_for_log(r"password_based:redis failed \(redis 127\.0\.0\.1:%d: .*timed out" % redis_server.port)


def test_backend_credentials_stay_out_of_logs(start_broker, raw_client, redis_server):
    secret = "wrong-Pa55-" + uuid.uuid4().hex[:6]
    conf = chain(authn().replace(REDIS_PASSWORD, secret))
    b = start(start_broker, redis_server, conf)
    u = uname("who")
    add_user(redis_server, u, "user-Pa55word")
    raw_client(b, version=5).connect("cred1", username=u, password=b"user-Pa55word", expect_rc=0x87)
    b.wait_for_log(r"is unreachable: AUTH: WRONGPASS")
    log = b.run_log()
    assert secret not in log
    assert "user-Pa55word" not in log


@pytest.mark.parametrize("text,needle", [
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379" }]',
     r"bulwark\.conf:1: authentication: cmd is required"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "HMGET u:${username} salt" }]',
     r"bulwark\.conf:2: authentication\.cmd: the fields must include password_hash or password"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "GET u:${username}" }]',
     r"bulwark\.conf:2: authentication\.cmd: only HGET and HMGET are supported"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "HMGET u:${username} password_hash acl" }]',
     r"bulwark\.conf:2: authentication\.cmd: field acl is not allowed"),
    ('authentication = [{ mechanism = password_based, backend = redis\n  redis_type = sentinel\n'
     '  cmd = "HGET u:${username} password" }]',
     r"not supported yet: authentication\.redis_type \(.*bulwark\.conf:2\)"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "HGET u:${username} password"\n  ssl { enable = true } }]',
     r"not supported yet: authentication\.ssl\.enable \(.*bulwark\.conf:3\).*hiredis"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "HGET u:${username} password"\n  pool_size = 0 }]',
     r"bulwark\.conf:3: authentication\.pool_size: expected an integer in 1\.\.256"),
    ('authentication = [{ mechanism = password_based, backend = redis, server = "127.0.0.1:6379"\n'
     '  cmd = "HGET u:${username} password"\n  serverr = x }]',
     r"bulwark\.conf:3: authentication\.serverr: unknown key"),
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
    backend = redis
    enable = true
    redis_type = single
    server = "127.0.0.1:6379"
    database = 0
    password = "public"
    pool_size = 8
    auto_reconnect = true
    cmd = "HMGET mqtt_user:${username} password_hash salt is_superuser"
    password_hash_algorithm { name = sha256, salt_position = suffix }
    ssl { enable = false, verify = verify_peer }
  }
]
""")
    assert status == 0, out
    assert "auto_reconnect" in out  # ignored with a warning
