"""The built-in database authenticators (reference/emqx.md §4.2, §4.3, §4.7):
`password_based + built_in_database` with every hash algorithm, users from `bulwark ctl users`
and from bootstrap files (CSV/JSON, plain/hash), persistence, the hashing pool (a bcrypt burst
does not stall traffic; a full pool answers "server busy"), and `scram + built_in_database`
(MQTT 5 enhanced authentication, SCRAM-SHA-256/512) driven by a Python SCRAM client."""
import base64
import hashlib
import hmac
import json
import os
import selectors
import signal
import socket
import threading
import time
import warnings

import pytest

from bw import mqtt_raw
from bw.mqtt_raw import AUTH, CONNACK, RawClient

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt  # libxcrypt through Python: bcrypt strings made outside the broker

# CONNACK codes by protocol version (v5, v3.1.1)
OK = {5: 0x00, 4: 0}
BAD_PASSWORD = {5: 0x86, 4: 4}
NOT_AUTHORIZED = {5: 0x87, 4: 5}
SERVER_BUSY = {5: 0x89, 4: 3}


def builtin(extra=""):
    return ("authentication = [ { mechanism = password_based, backend = built_in_database\n"
            + extra + "\n} ]\n")


def connect(b, client_id, username=None, password=None, version=5, expect_rc=None, port=None, timeout=10):
    """CONNECT and return the CONNACK return code (the connection is closed)."""
    with RawClient(port or b.tcp_port, version=version, timeout=timeout) as c:
        ack = c.connect(client_id, username=username,
                        password=password.encode() if isinstance(password, str) else password, expect_rc=None)
        if expect_rc is not None:
            assert ack.rc == expect_rc, f"{client_id}: CONNACK 0x{ack.rc:02x}, expected 0x{expect_rc:02x}"
        return ack.rc


def ctl_ok(b, *args):
    code, out = b.ctl(*args)
    assert code == 0, f"ctl {args} failed ({code}): {out}"
    return out


def users_list(b, *opts):
    """`users list` as {user_id: is_superuser}."""
    out = ctl_ok(b, "users", "list", *opts)
    lines = out.strip("\n").split("\n")
    assert lines[0] == "user_id\tis_superuser", out
    res = {}
    for line in lines[1:]:
        uid, sup = line.rsplit("\t", 1)
        assert sup in ("true", "false"), line
        res[uid] = sup == "true"
    return res


# ---- users from ctl: allow / wrong password / unknown / no password --------------------------------

@pytest.mark.parametrize("version", [5, 4])
def test_ctl_user_allow_deny_ignore(start_broker, version):
    b = start_broker(builtin())
    out = ctl_ok(b, "users", "add", "alice", "s3cret")
    assert "alice" in out
    connect(b, "c1", "alice", "s3cret", version, expect_rc=OK[version])
    connect(b, "c2", "alice", "wrong", version, expect_rc=BAD_PASSWORD[version])
    # unknown user: the only authenticator ignores, so the chain says "not authorized"
    connect(b, "c3", "bob", "s3cret", version, expect_rc=NOT_AUTHORIZED[version])
    # no password: ignored too
    connect(b, "c4", "alice", None, version, expect_rc=NOT_AUTHORIZED[version])
    connect(b, "c5", None, None, version, expect_rc=NOT_AUTHORIZED[version])
    b.wait_for_log(r"c2.*refused.*password_based:built_in_database.*wrong password")
    assert "s3cret" not in b.log_text(), "a password appeared in the log"


def test_user_id_type_clientid(start_broker):
    b = start_broker(builtin("user_id_type = clientid"))
    ctl_ok(b, "users", "add", "device-7", "pw7")
    connect(b, "device-7", "anyone", "pw7", expect_rc=0)
    connect(b, "device-7", None, "pw7", 5, expect_rc=0)   # v5 allows a password without a username
    connect(b, "device-7", "x", "pw7", 4, expect_rc=0)
    connect(b, "device-8", "device-7", "pw7", expect_rc=0x87)
    connect(b, "device-7", "anyone", "nope", expect_rc=0x86)


# ---- every hash algorithm: users added by ctl and users with hashes made outside -----------------

def bcrypt_hash(password, cost=5):
    return crypt.crypt(password, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << cost))


def simple_hash(name, pos, salt, password):
    data = {"prefix": salt + password, "suffix": password + salt, "disable": password}[pos]
    if name == "plain":
        return data
    return hashlib.new({"sha": "sha1"}.get(name, name), data.encode()).hexdigest()


ALGORITHMS = {
    "sha256-prefix": ("{ name = sha256, salt_position = prefix }", lambda pw: (simple_hash("sha256", "prefix", "s4lt", pw), "s4lt")),
    "sha256-suffix": ("{ name = sha256, salt_position = suffix }", lambda pw: (simple_hash("sha256", "suffix", "s4lt", pw), "s4lt")),
    "sha256-disable": ("{ name = sha256, salt_position = disable }", lambda pw: (simple_hash("sha256", "disable", "", pw), "")),
    "md5": ("{ name = md5 }", lambda pw: (simple_hash("md5", "prefix", "ab", pw), "ab")),
    "sha": ("{ name = sha, salt_position = suffix }", lambda pw: (simple_hash("sha", "suffix", "xy", pw), "xy")),
    "sha512": ("{ name = sha512 }", lambda pw: (simple_hash("sha512", "prefix", "q", pw).upper(), "q")),
    "plain": ("{ name = plain, salt_position = disable }", lambda pw: (pw, "")),
    "bcrypt": ("{ name = bcrypt, salt_rounds = 5 }", lambda pw: (bcrypt_hash(pw), "")),
    "pbkdf2": ("{ name = pbkdf2, mac_fun = sha256, iterations = 4096, dk_length = 24 }",
               lambda pw: (hashlib.pbkdf2_hmac("sha256", pw.encode(), b"NaCl", 4096, 24).hex(), "NaCl")),
    "pbkdf2-sha1-fast": ("{ name = pbkdf2, mac_fun = sha, iterations = 10 }",
                         lambda pw: (hashlib.pbkdf2_hmac("sha1", pw.encode(), b"salt", 10).hex(), "salt")),
}


@pytest.mark.parametrize("algo", sorted(ALGORITHMS))
def test_hash_algorithms(start_broker, algo):
    conf, make = ALGORITHMS[algo]
    h, salt = make("outside-pw")
    rows = "user_id,password_hash,salt,is_superuser\n" + f"hashed,{h},{salt},false\n"
    b = start_broker(builtin(f'password_hash_algorithm {conf}\nbootstrap_file = "users.csv"\nbootstrap_type = hash'),
                     files={"users.csv": rows})
    ctl_ok(b, "users", "add", "added", "inside-pw")
    connect(b, "h1", "hashed", "outside-pw", expect_rc=0)
    connect(b, "h2", "hashed", "outside-pW", expect_rc=0x86)
    connect(b, "a1", "added", "inside-pw", expect_rc=0)
    connect(b, "a2", "added", "inside-p", expect_rc=0x86)
    connect(b, "a3", "added", "inside-pw", 4, expect_rc=0)


def test_bad_hash_config_is_refused(start_broker):
    b = start_broker(builtin("password_hash_algorithm { name = pbkdf2, mac_fun = md5, iterations = 3 }"),
                     start=False, expect_exit=None)
    code, log = b.run_to_exit()
    assert code != 0
    assert "md5 is not supported" in log and "bulwark.conf:" in log


# ---- bootstrap files ---------------------------------------------------------------------------

def test_bootstrap_csv_plain(start_broker):
    csv = ("user_id,password,is_superuser\n"
           "alice,pw-a,true\n"
           "bob,\"p,w\"\"b\",false\n"
           "\n"
           "carol,pw-c,\n")
    b = start_broker(builtin('bootstrap_file = "boot/users.csv"'), files={"boot/users.csv": csv})
    connect(b, "a", "alice", "pw-a", expect_rc=0)
    connect(b, "b", "bob", 'p,w"b', expect_rc=0)
    connect(b, "c", "carol", "pw-c", expect_rc=0)
    connect(b, "d", "carol", "pw-a", expect_rc=0x86)
    assert users_list(b) == {"alice": True, "bob": False, "carol": False}


def test_bootstrap_json_plain(start_broker):
    users = [{"user_id": "alice", "password": "pw-a", "is_superuser": True},
             {"user_id": "bob", "password": "pw-b"}]
    b = start_broker(builtin('bootstrap_file = "users.json"\nbootstrap_type = plain'),
                     files={"users.json": json.dumps(users, indent=2)})
    connect(b, "a", "alice", "pw-a", expect_rc=0)
    connect(b, "b", "bob", "pw-b", expect_rc=0)
    connect(b, "c", "bob", "pw-a", 4, expect_rc=4)
    assert users_list(b) == {"alice": True, "bob": False}


def test_bootstrap_hash_csv_and_json(start_broker):
    h = hashlib.sha256(b"saltpw-1").hexdigest()
    csv = f"user_id,password_hash,salt,is_superuser\nu1,{h},salt,true\n"
    doc = json.dumps([{"user_id": "u2", "password_hash": bcrypt_hash("pw-2"), "salt": "", "is_superuser": False}])
    b = start_broker(builtin('bootstrap_file = "users.csv"\nbootstrap_type = hash'), files={"users.csv": csv})
    connect(b, "a", "u1", "pw-1", expect_rc=0)
    connect(b, "b", "u1", "pw-2", expect_rc=0x86)
    # JSON with bcrypt hashes, on a bcrypt authenticator
    b2 = start_broker(builtin('password_hash_algorithm { name = bcrypt }\nbootstrap_file = "u.json"\n'
                              'bootstrap_type = hash'), files={"u.json": doc}, name="b2")
    connect(b2, "c", "u2", "pw-2", expect_rc=0)
    connect(b2, "d", "u2", "pw-1", expect_rc=0x86)


def test_bootstrap_does_not_overwrite_existing_users(start_broker):
    b = start_broker(builtin('bootstrap_file = "users.csv"'), files={"users.csv": "user_id,password\nalice,fromfile\n"})
    ctl_ok(b, "users", "passwd", "alice", "changed")
    b.restart()
    connect(b, "a", "alice", "changed", expect_rc=0)
    connect(b, "b", "alice", "fromfile", expect_rc=0x86)
    # SIGHUP re-reads the file: new users are added, existing ones kept
    b.write_file("users.csv", "user_id,password\nalice,again\nzoe,pw-z\n")
    b.reload(wait_log=r"bootstrap_file users.csv reloaded: 1 users added, 1 existing kept")
    connect(b, "c", "zoe", "pw-z", expect_rc=0)
    connect(b, "d", "alice", "changed", expect_rc=0)


@pytest.mark.parametrize("name,content,where", [
    ("users.csv", "user_id,password,is_superuser\nalice,pw,true\nbob,pw\n", "users.csv:3: expected 3 fields"),
    ("users.csv", "user,password\nalice,pw\n", "users.csv:1: header: unknown column \"user\""),
    ("users.json", "[\n {\"user_id\": \"a\", \"password\": \"b\"},\n {\"user_id\": \"c\"}\n]",
     "users.json:3: item 2: password is missing"),
    ("users.json", "[\n {\"user_id\": \"a\", \"password\": \"b\"\n", "users.json:"),
])
def test_bootstrap_malformed_file_stops_start(start_broker, name, content, where):
    b = start_broker(builtin(f'bootstrap_file = "{name}"'), files={name: content}, start=False, expect_exit=None)
    code, log = b.run_to_exit()
    assert code != 0
    assert where in log, log


def test_bootstrap_missing_file_stops_start(start_broker):
    b = start_broker(builtin('bootstrap_file = "nope.csv"'), start=False, expect_exit=None)
    code, log = b.run_to_exit()
    assert code != 0 and "nope.csv: No such file or directory" in log, log


# ---- ctl: changes apply at once, survive restarts, superuser flag ------------------------------------

def test_ctl_changes_apply_to_the_next_connect(start_broker):
    b = start_broker(builtin())

    def applied_within_a_second(client_id, password, rc):
        # the ctl command has returned: the very next CONNECT sees the change
        t0 = time.monotonic()
        connect(b, client_id, "alice", password, expect_rc=rc)
        assert time.monotonic() - t0 < 1.0

    ctl_ok(b, "users", "add", "alice", "one")
    applied_within_a_second("x1", "one", 0)
    ctl_ok(b, "users", "passwd", "alice", "two")
    applied_within_a_second("x2", "one", 0x86)
    applied_within_a_second("x3", "two", 0)
    ctl_ok(b, "users", "delete", "alice")
    applied_within_a_second("x4", "two", 0x87)
    # errors are reported with a non-zero status
    code, out = b.ctl("users", "delete", "alice")
    assert code != 0 and "no user alice" in out
    code, out = b.ctl("users", "add", "bob")
    assert code != 0 and "usage" in out
    ctl_ok(b, "users", "add", "bob", "pw")
    code, out = b.ctl("users", "add", "bob", "pw2")
    assert code != 0 and "already exists" in out
    code, out = b.ctl("users", "superuser", "bob", "maybe")
    assert code != 0


def test_superuser_flag_and_restart(start_broker):
    b = start_broker(builtin("password_hash_algorithm { name = bcrypt, salt_rounds = 5 }"))
    ctl_ok(b, "users", "add", "root", "rootpw", "--superuser")
    ctl_ok(b, "users", "add", "dev", "devpw")
    assert users_list(b) == {"root": True, "dev": False}
    ctl_ok(b, "users", "superuser", "dev", "true")
    ctl_ok(b, "users", "superuser", "root", "false")
    assert users_list(b) == {"root": False, "dev": True}
    b.restart()
    assert users_list(b) == {"root": False, "dev": True}
    connect(b, "r", "root", "rootpw", expect_rc=0)
    connect(b, "d", "dev", "devpw", expect_rc=0)
    b.restart(sig=signal.SIGKILL)   # a crash loses nothing either
    connect(b, "d2", "dev", "devpw", expect_rc=0)
    assert os.path.exists(b.data_dir / "auth.db")


def test_listener_chain_has_its_own_users(start_broker):
    auth = "authentication = [ { mechanism = password_based, backend = built_in_database } ]"
    b = start_broker(builtin() + "listeners.tcp.other {\n bind = \"127.0.0.1:{{port.other}}\"\n " + auth + "\n}\n")
    ctl_ok(b, "users", "add", "alice", "pw-a")
    ctl_ok(b, "users", "add", "--listener", "tcp:other", "bob", "pw-b")
    assert users_list(b) == {"alice": False}
    assert users_list(b, "--listener", "tcp:other") == {"bob": False}
    connect(b, "a1", "alice", "pw-a", expect_rc=0)
    connect(b, "a2", "bob", "pw-b", expect_rc=0x87)
    connect(b, "a3", "bob", "pw-b", port=b.port("other"), expect_rc=0)
    connect(b, "a4", "alice", "pw-a", port=b.port("other"), expect_rc=0x87)
    b.restart()
    connect(b, "a5", "bob", "pw-b", port=b.port("other"), expect_rc=0)
    assert users_list(b, "--listener", "tcp:other") == {"bob": False}


# ---- the hashing pool ------------------------------------------------------------------------------

@pytest.mark.timeout(180)
def test_bcrypt_burst_does_not_stall_traffic(start_broker):
    b = start_broker(builtin("password_hash_algorithm { name = bcrypt, salt_rounds = 10 }"))
    ctl_ok(b, "users", "add", "pub", "pw")
    ctl_ok(b, "users", "add", "sub", "pw")
    ctl_ok(b, "users", "add", "dev", "devpw")
    pub = RawClient(b.tcp_port, version=5, timeout=30)
    sub = RawClient(b.tcp_port, version=5, timeout=30)
    try:
        pub.connect("pub", username="pub", password=b"pw")
        sub.connect("sub", username="sub", password=b"pw")
        sub.subscribe("burst/t", qos=0)
        results = []
        lock = threading.Lock()

        def one(i):
            try:
                rc = connect(b, f"burst-{i}", "dev", "devpw", timeout=90)
            except Exception as e:  # noqa: BLE001 - reported below
                rc = repr(e)
            with lock:
                results.append(rc)

        threads = [threading.Thread(target=one, args=(i,)) for i in range(30)]
        for t in threads:
            t.start()
        sent = 0
        while any(t.is_alive() for t in threads) or sent < 5:
            payload = f"m{sent}".encode()
            t0 = time.monotonic()
            pub.publish("burst/t", payload, qos=0)
            p = sub.recv_publish(timeout=2.0)   # generous: delivery, not speed
            assert p.payload == payload, (p, payload)
            assert time.monotonic() - t0 < 2.0
            sent += 1
            time.sleep(0.05)
        for t in threads:
            t.join(100)
        assert sorted(results, key=str) == [0] * 30, results
        assert sent >= 5
    finally:
        pub.close()
        sub.close()


@pytest.mark.timeout(240)
def test_full_hashing_pool_answers_server_busy(start_broker):
    """The pool has cores-1 threads (at least one) and a queue of 1024 (src/broker/broker.c); a
    flood of CONNECTs for a user with an expensive bcrypt hash overflows it, and the extra
    clients get "server busy" (0x89, v3: 3) at once instead of waiting."""
    slow = bcrypt_hash("pw", cost=12)
    rows = f"user_id,password_hash,salt,is_superuser\nslow,{slow},,false\n"
    b = start_broker(builtin('password_hash_algorithm { name = bcrypt }\nbootstrap_file = "u.csv"\n'
                             'bootstrap_type = hash'), files={"u.csv": rows})
    n = 1024 + (os.cpu_count() or 2) + 250
    socks = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(n):
            s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=10)
            version = 5 if i % 2 == 0 else 4
            socks.append((s, version))
        for i, (s, version) in enumerate(socks):
            s.sendall(mqtt_raw.connect(f"flood-{i}", version=version, username="slow", password=b"pw"))
            s.setblocking(False)
            sel.register(s, selectors.EVENT_READ, (i, version))
        codes = {}
        bufs = {}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and len(codes) < n:
            for key, _ in sel.select(timeout=0.5):
                i, version = key.data
                try:
                    data = key.fileobj.recv(4096)
                except (BlockingIOError, InterruptedError):
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(key.fileobj)
                    codes.setdefault(i, ("closed", version))
                    continue
                bufs[i] = bufs.get(i, b"") + data
                p, used = mqtt_raw.decode(bufs[i], version)
                if p is not None:
                    assert p.type == CONNACK, p
                    codes[i] = (p.rc, version)
                    sel.unregister(key.fileobj)
            busy = [i for i, (rc, v) in codes.items() if rc == SERVER_BUSY[v]]
            if len(busy) >= 50 and any(codes[i][1] == 4 for i in busy) and any(codes[i][1] == 5 for i in busy):
                break
        busy5 = sum(1 for rc, v in codes.values() if v == 5 and rc == 0x89)
        busy4 = sum(1 for rc, v in codes.values() if v == 4 and rc == 3)
        others = [(i, c) for i, c in codes.items() if c[0] not in (0, SERVER_BUSY[c[1]])]
        assert busy5 > 0 and busy4 > 0, f"no 'server busy' among {len(codes)} answers: {list(codes.values())[:20]}"
        assert not others, others[:10]
    finally:
        for s, _ in socks:
            s.close()
        sel.close()
    b.wait_for_log(r"refused.*server busy|refused.*hashing pool is full")
    # the pool drains (clients gone: no hashing for them) and the broker serves again; a client
    # that waits behind the backlog may meet its idle_timeout, so try again until the deadline
    deadline = time.monotonic() + 90
    rc = None
    while rc != 0 and time.monotonic() < deadline:
        try:
            rc = connect(b, "after", "slow", "pw", timeout=30)
        except (mqtt_raw.ConnectionClosed, mqtt_raw.NoPacket) as e:
            rc = repr(e)
        if rc != 0:
            time.sleep(0.5)
    assert rc == 0, rc


# ---- SCRAM ------------------------------------------------------------------------------------------

def scram_final(hashname, password, client_first_bare, server_first, corrupt=False):
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    nonce, salt, iterations = attrs["r"], base64.b64decode(attrs["s"]), int(attrs["i"])
    salted = hashlib.pbkdf2_hmac(hashname, password.encode(), salt, iterations)
    client_key = hmac.new(salted, b"Client Key", hashname).digest()
    stored_key = hashlib.new(hashname, client_key).digest()
    without_proof = f"c=biws,r={nonce}"
    auth_message = f"{client_first_bare},{server_first},{without_proof}".encode()
    signature = hmac.new(stored_key, auth_message, hashname).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, signature))
    if corrupt:
        proof = bytes([proof[0] ^ 1]) + proof[1:]
    server_key = hmac.new(salted, b"Server Key", hashname).digest()
    server_signature = hmac.new(server_key, auth_message, hashname).digest()
    return (f"{without_proof},p={base64.b64encode(proof).decode()}",
            "v=" + base64.b64encode(server_signature).decode(), iterations)


def scram_connect(b, method, hashname, user, password, client_id="scram-client", corrupt=False):
    """Run the SCRAM exchange; returns (CONNACK, expected server-final, iterations)."""
    c = RawClient(b.tcp_port, version=5, timeout=10)
    try:
        cnonce = base64.b64encode(os.urandom(18)).decode()
        bare = f"n={user},r={cnonce}"
        c.send(mqtt_raw.connect(client_id, version=5, props={
            "authentication_method": method, "authentication_data": ("n,," + bare).encode()}))
        p = c.recv_packet()
        if p.type == CONNACK:
            return p, None, None
        assert p.type == AUTH and p.rc == 0x18, p
        assert p.props["authentication_method"] == method
        server_first = p.props["authentication_data"].decode()
        assert server_first.startswith("r=" + cnonce) and len(server_first) > len("r=" + cnonce)
        final, expected_v, iterations = scram_final(hashname, password, bare, server_first, corrupt)
        c.send(mqtt_raw.auth(0x18, {"authentication_method": method, "authentication_data": final.encode()}))
        ack = c.expect(CONNACK)
        return ack, expected_v, iterations
    finally:
        c.close()


@pytest.mark.parametrize("algorithm,method,hashname", [("sha256", "SCRAM-SHA-256", "sha256"),
                                                       ("sha512", "SCRAM-SHA-512", "sha512")])
def test_scram(start_broker, algorithm, method, hashname):
    b = start_broker("authentication = [ { mechanism = scram, backend = built_in_database, "
                     f"algorithm = {algorithm}, iteration_count = 4096 }} ]\n")
    ctl_ok(b, "users", "add", "alice", "pencil", "--authenticator", "scram")
    ack, expected_v, iterations = scram_connect(b, method, hashname, "alice", "pencil")
    assert ack.rc == 0, ack
    assert iterations == 4096
    assert ack.props.get("authentication_method") == method, ack
    assert ack.props.get("authentication_data") == expected_v.encode(), ack   # the server proved itself too
    # wrong password: bad username or password
    ack, _, _ = scram_connect(b, method, hashname, "alice", "pencil!", client_id="c2")
    assert ack.rc == 0x86, ack
    ack, _, _ = scram_connect(b, method, hashname, "alice", "pencil", client_id="c3", corrupt=True)
    assert ack.rc == 0x86, ack
    # the other SCRAM method is not handled here: bad authentication method
    other = "SCRAM-SHA-512" if method == "SCRAM-SHA-256" else "SCRAM-SHA-256"
    ack, _, _ = scram_connect(b, other, hashname, "alice", "pencil", client_id="c4")
    assert ack.rc == 0x8C, ack
    # users survive a restart and ctl changes apply at once
    b.restart()
    ack, _, _ = scram_connect(b, method, hashname, "alice", "pencil", client_id="c5")
    assert ack.rc == 0, ack
    ctl_ok(b, "users", "passwd", "alice", "crayon", "--authenticator", "scram")
    ack, _, _ = scram_connect(b, method, hashname, "alice", "crayon", client_id="c6")
    assert ack.rc == 0, ack
    assert users_list(b, "--authenticator", "scram") == {"alice": False}


def test_scram_next_to_password_authenticator(start_broker):
    b = start_broker("authentication = [\n"
                     " { mechanism = password_based, backend = built_in_database }\n"
                     " { mechanism = scram, backend = built_in_database }\n"
                     "]\n")
    ctl_ok(b, "users", "add", "pw-user", "pw")                                   # the first one: password
    ctl_ok(b, "users", "add", "sc-user", "sc", "--authenticator", "scram")
    assert users_list(b) == {"pw-user": False}
    assert users_list(b, "--authenticator", "scram") == {"sc-user": False}
    connect(b, "p", "pw-user", "pw", expect_rc=0)
    ack, expected_v, _ = scram_connect(b, "SCRAM-SHA-256", "sha256", "sc-user", "sc")
    assert ack.rc == 0 and ack.props.get("authentication_data") == expected_v.encode()
    # a SCRAM user is not a password user and the other way round
    connect(b, "q", "sc-user", "sc", expect_rc=0x87)
    ack, _, _ = scram_connect(b, "SCRAM-SHA-256", "sha256", "pw-user", "pw", client_id="r")
    assert ack.rc == 0x8C, ack


@pytest.mark.timeout(120)
def test_stop_while_the_pool_is_busy(start_broker):
    """SIGTERM with password checks running and queued: the broker exits cleanly (status 0, no
    sanitizer report under `make SAN=1 e2e`), answering or dropping what the pool still holds."""
    slow = bcrypt_hash("pw", cost=12)
    b = start_broker(builtin('password_hash_algorithm { name = bcrypt }\nbootstrap_file = "u.csv"\n'
                             'bootstrap_type = hash'),
                     files={"u.csv": f"user_id,password_hash,salt,is_superuser\nslow,{slow},,false\n"})
    clients = []
    try:
        for i in range(40):
            c = RawClient(b.tcp_port, version=5, timeout=30)
            c.send(mqtt_raw.connect(f"busy-{i}", version=5, username="slow", password=b"pw"))
            clients.append(c)
        clients[0].expect(CONNACK, rc=0)      # the pool is working through the queue now
        b.stop()                              # checks exit status 0 and the log for sanitizer reports
    finally:
        for c in clients:
            c.close()


def test_check_reports_a_broken_bootstrap_file(check_config, tmp_path):
    (tmp_path / "users.csv").write_text("user_id,password\nalice\n")
    cfg = builtin(f'bootstrap_file = "{tmp_path}/users.csv"')
    status, out = check_config(cfg)
    assert status == 1, out
    assert "authentication.bootstrap_file" in out and "users.csv:2: expected 2 fields" in out, out
    (tmp_path / "users.csv").write_text("user_id,password\nalice,pw\n")
    status, out = check_config(cfg)
    assert status == 0, out
