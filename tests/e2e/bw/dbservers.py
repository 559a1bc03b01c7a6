"""Real database servers for the database-backed authenticators' tests (Redis, PostgreSQL,
MariaDB), started on free ports with throwaway data directories, plus helpers to fill them,
compute EMQX password hashes and make a backend "go down" (TcpProxy).

    from bw.dbservers import redis_server, pg_server, mysql_server, db_proxy   # fixtures

    def test_x(redis_server, start_broker):
        redis_server.hset("mqtt_user:alice", password_hash=..., salt=...)

Fixtures are module-scoped: one server per test module and per xdist worker (each worker
process starts its own). Servers are spawned through bw.procs (pdeathsig: they die with the
pytest process) and stopped at module teardown; their data directories are removed.

  * Redis: `redis-server --port P --bind 127.0.0.1 --save "" --appendonly no --dir TMP`, with
    DEBUG enabled (for DEBUG SLEEP) and an ACL user `bulwark` / REDIS_PASSWORD.
  * PostgreSQL: initdb + postgres as the `postgres` user when running as root (the server
    refuses root), in a directory under /tmp owned by it (pytest's temp dirs are 0700 root);
    TCP 127.0.0.1:P with scram-sha-256, a socket dir in the data directory (trust, for psql);
    role `bulwark` / PG_PASSWORD, database `mqtt`, table mqtt_user.
  * MariaDB: mariadb-install-db + mariadbd (--user=root when root) on 127.0.0.1:P and a socket;
    user `bulwark` / MYSQL_PASSWORD (SELECT on mqtt.*) and `bulwark_tls` (the same, REQUIRE SSL),
    database `mqtt`, table mqtt_user.
  * PostgreSQL and MariaDB serve TLS with the test PKI's server certificate (pki fixture).
"""
import glob
import hashlib
import os
import pwd
import select
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time

import pytest

from . import procs
from .ports import free_port

REDIS_USER, REDIS_PASSWORD = "bulwark", "redis-S3cret"
PG_USER, PG_PASSWORD, PG_DB = "bulwark", "pg-S3cret", "mqtt"
MYSQL_USER, MYSQL_PASSWORD, MYSQL_DB = "bulwark", "my-S3cret", "mqtt"

# bcrypt("bc-secret"), cost 5 (made with crypt(3) $2b$; fixed so no bcrypt module is needed)
BCRYPT_PASSWORD = "bc-secret"
BCRYPT_HASH = "$2b$05$Tpf/zP6l.17XKaFk2MLaDeVXk4nGsQQuxkVyWAg3suFppCjgyqtSK"


class ServerError(AssertionError):
    """A database server did not start or a command against it failed."""


def run(argv, *, input=None, timeout=60, env=None, cwd=None):
    """Run a short command through bw.procs; returns (exit code, stdout, stderr) as text."""
    p = procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=cwd, env=env,
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL)
    try:
        out, err = p.communicate(input=input.encode() if isinstance(input, str) else input, timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.kill(p)
        raise ServerError(f"{argv[0]} did not finish within {timeout}s")
    return p.returncode, out.decode(errors="replace"), err.decode(errors="replace")


def _wait(cond, timeout, what, alive=None, log=None):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        if alive is not None and alive.poll() is not None:
            break
        time.sleep(0.05)
    tail = ""
    if log and os.path.exists(log):
        with open(log, errors="replace") as f:
            tail = "".join(f.readlines()[-30:])
    raise ServerError(f"{what} not ready within {timeout}s" + (f"; log:\n{tail}" if tail else ""))


def _stop(p, sig, timeout):
    if p is None or p.poll() is not None:
        return
    try:
        p.send_signal(sig)
        p.wait(timeout=timeout)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    procs.kill(p)


# ---- password hashes (reference/emqx.md §4.3) -------------------------------------------------

def emqx_hash(algo, password, salt="", salt_position="prefix", iterations=1000, mac_fun="sha256", dk_length=None):
    """The stored hash EMQX expects for password (str) under an algorithm name."""
    pw = password.encode()
    if algo == "plain":
        return password
    if algo == "bcrypt":
        assert password == BCRYPT_PASSWORD, "only the fixed bcrypt hash is available"
        return BCRYPT_HASH
    if algo == "pbkdf2":
        return hashlib.pbkdf2_hmac({"sha": "sha1"}.get(mac_fun, mac_fun), pw, salt.encode(), iterations,
                                   dk_length).hex()
    name = {"sha": "sha1"}.get(algo, algo)
    s = salt.encode()
    data = s + pw if salt_position == "prefix" else pw + s if salt_position == "suffix" else pw
    return hashlib.new(name, data).hexdigest()


def wait_until(cond, timeout=10, what="condition", interval=0.05):
    """Poll cond() until it returns a true value (returned) or fail after timeout seconds."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(interval)


# ---- a TCP proxy that can play "backend down" -------------------------------------------------

class TcpProxy:
    """Forwards 127.0.0.1:port to 127.0.0.1:target. stop() closes the listener and resets every
    forwarded connection (the backend "goes down"); start() again on the same port brings it back."""

    def __init__(self, target_port, port=None):
        self.target = target_port
        self.port = port or free_port()
        self._lsock = None
        self._socks = set()
        self._lock = threading.Lock()
        self._stopped = threading.Event()

    def start(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", self.port))
        s.listen(64)
        self._lsock = s
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, args=(s, self._stopped), daemon=True).start()
        return self

    def _accept(self, ls, stopped):
        while not stopped.is_set():
            try:
                c, _ = ls.accept()
            except OSError:
                return
            try:
                u = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                _reset(c)
                continue
            with self._lock:
                if stopped.is_set():
                    _reset(c)
                    _reset(u)
                    return
                self._socks.update((c, u))
            threading.Thread(target=self._pump, args=(c, u), daemon=True).start()

    def _pump(self, a, b):
        socks = [a, b]
        try:
            while True:
                r, _, _ = select.select(socks, [], [], 0.5)
                if self._stopped.is_set():
                    return
                for s in r:
                    data = s.recv(65536)
                    if not data:
                        return
                    (b if s is a else a).sendall(data)
        except (OSError, ValueError):  # ValueError: stop() closed a socket under select()
            return
        finally:
            with self._lock:
                for s in socks:
                    self._socks.discard(s)
                    _reset(s)

    def stop(self):
        self._stopped.set()
        if self._lsock is not None:
            self._lsock.close()
            self._lsock = None
        with self._lock:
            for s in list(self._socks):
                _reset(s)
            self._socks.clear()


def _reset(s):
    """Close with RST (SO_LINGER 0), as a crashed server's kernel would."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    try:
        s.close()
    except OSError:
        pass


# ---- Redis -------------------------------------------------------------------------------------

class RespError(Exception):
    pass


class Resp:
    """A minimal blocking RESP2 client (enough for HSET, DEL, ACL, DEBUG SLEEP, PING)."""

    def __init__(self, port, timeout=10):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.buf = b""

    def close(self):
        self.sock.close()

    def send(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.sock.sendall(b"".join(out))

    def _line(self):
        while b"\r\n" not in self.buf:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line

    def _exact(self, n):
        while len(self.buf) < n + 2:
            d = self.sock.recv(65536)
            if not d:
                raise ConnectionError("redis closed the connection")
            self.buf += d
        data, self.buf = self.buf[:n], self.buf[n + 2:]
        return data

    def reply(self):
        line = self._line()
        t, rest = line[:1], line[1:]
        if t == b"+":
            return rest.decode()
        if t == b"-":
            raise RespError(rest.decode())
        if t == b":":
            return int(rest)
        if t == b"$":
            n = int(rest)
            return None if n < 0 else self._exact(n)
        if t == b"*":
            n = int(rest)
            return None if n < 0 else [self.reply() for _ in range(n)]
        raise RespError(f"bad reply {line!r}")

    def cmd(self, *args):
        self.send(*args)
        return self.reply()


class RedisServer:
    def __init__(self, workdir):
        self.dir = str(workdir)
        self.port = free_port()
        self.proc = None
        self.log = os.path.join(self.dir, "redis.log")

    def start(self):
        exe = shutil.which("redis-server")
        if not exe:
            pytest.skip("redis-server is not installed")
        os.makedirs(self.dir, exist_ok=True)
        self.proc = procs.spawn([exe, "--port", self.port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                                 "--dir", self.dir, "--enable-debug-command", "yes", "--daemonize", "no",
                                 "--logfile", self.log],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)

        def ready():
            try:
                return self.cmd("PING") == "PONG"
            except (OSError, RespError):
                return False
        _wait(ready, 20, f"redis-server on port {self.port}", self.proc, self.log)
        self.cmd("ACL", "SETUSER", REDIS_USER, "on", ">" + REDIS_PASSWORD, "~*", "&*", "+@all")
        return self

    def stop(self):
        _stop(self.proc, signal.SIGTERM, 10)
        self.proc = None

    def cmd(self, *args):
        c = Resp(self.port)
        try:
            return c.cmd(*args)
        finally:
            c.close()

    def hset(self, key, **fields):
        args = []
        for k, v in fields.items():
            args += [k, v]
        self.cmd("DEL", key)
        if args:
            self.cmd("HSET", key, *args)


# ---- PostgreSQL --------------------------------------------------------------------------------

def _pg_bindir():
    cands = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4])
                   if p.split("/")[4].isdigit() else 0)
    if cands:
        return os.path.dirname(cands[-1])
    exe = shutil.which("postgres")
    return os.path.dirname(os.path.realpath(exe)) if exe else None


PG_SCHEMA = """
CREATE ROLE {user} LOGIN PASSWORD '{password}';
CREATE DATABASE {db} OWNER {user};
\\connect {db}
CREATE TABLE mqtt_user (
  id serial PRIMARY KEY,
  username text UNIQUE NOT NULL,
  password_hash text,
  salt text,
  is_superuser boolean DEFAULT false,
  clientid_override text,
  superuser_int integer,
  superuser_text text
);
CREATE FUNCTION auth_delay(u text) RETURNS boolean AS $$
BEGIN
  IF u LIKE 'slow%' THEN PERFORM pg_sleep(3); END IF;
  RETURN true;
END $$ LANGUAGE plpgsql;
GRANT SELECT ON mqtt_user TO {user};
"""


class PgServer:
    def __init__(self, pki=None):
        self.port = free_port()
        self.proc = None
        self.dir = None
        self.pki = pki

    def _as_pg(self, argv):
        """argv run as the postgres user when we are root (plus pdeathsig after the uid change:
        the kernel clears it on a credential change, so it must come from the same setpriv)."""
        if os.geteuid() == 0:
            return ["setpriv", "--reuid", "postgres", "--regid", "postgres", "--init-groups",
                    "--pdeathsig", "KILL", "--", *argv]
        return argv

    def start(self):
        bindir = _pg_bindir()
        if not bindir:
            pytest.skip("PostgreSQL server binaries are not installed")
        self.dir = tempfile.mkdtemp(prefix="bw-pg-", dir="/tmp")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "sock")
        self.log = os.path.join(self.dir, "postgres.log")
        os.makedirs(self.sock)
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            for p in (self.dir, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)
        tls = []
        if self.pki is not None:
            # TLS with the test PKI's server certificate (CN=localhost, IP:127.0.0.1); the key must
            # belong to the server's user and be private.
            crt, key = os.path.join(self.dir, "server.crt"), os.path.join(self.dir, "server.key")
            shutil.copyfile(self.pki.server_chain, crt)
            shutil.copyfile(self.pki.server_key, key)
            os.chmod(key, 0o600)
            if os.geteuid() == 0:
                pw = pwd.getpwnam("postgres")
                os.chown(crt, pw.pw_uid, pw.pw_gid)
                os.chown(key, pw.pw_uid, pw.pw_gid)
            tls = ["-c", "ssl=on", "-c", f"ssl_cert_file={crt}", "-c", f"ssl_key_file={key}"]
        rc, out, err = run(self._as_pg([os.path.join(bindir, "initdb"), "-D", self.data, "-U", "postgres",
                                        "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                                        "--no-sync", "--no-instructions"]), timeout=120, cwd=self.dir)
        if rc != 0:
            raise ServerError(f"initdb failed ({rc}):\n{out}\n{err}")
        logf = open(self.log, "ab")
        self.proc = procs.spawn(self._as_pg([os.path.join(bindir, "postgres"), "-D", self.data, "-k", self.sock,
                                             "-h", "127.0.0.1", "-p", self.port, "-c", "fsync=off",
                                             "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
                                             "-c", "shared_buffers=16MB", "-c", "max_connections=60",
                                             "-c", "logging_collector=off", *tls]),
                                pdeathsig=False, stdout=logf, stderr=subprocess.STDOUT, cwd=self.dir)
        logf.close()
        _wait(lambda: self._psql_ok("SELECT 1", db="postgres"), 30, f"postgres on port {self.port}",
              self.proc, self.log)
        self.psql(PG_SCHEMA.format(user=PG_USER, password=PG_PASSWORD, db=PG_DB), db="postgres")
        return self

    def _psql_argv(self, db):
        return ["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", str(self.port),
                "-U", "postgres", "-d", db]

    def _psql_ok(self, sql, db):
        try:
            rc, _, _ = run(self._psql_argv(db) + ["-c", sql], timeout=10)
        except ServerError:
            return False
        return rc == 0

    def psql(self, sql, db=PG_DB):
        """Run SQL (as the superuser, through the socket); returns psql's unaligned output."""
        rc, out, err = run(self._psql_argv(db), input=sql, timeout=60)
        if rc != 0:
            raise ServerError(f"psql failed ({rc}): {err}\nSQL: {sql}")
        return out

    def add_user(self, username, password_hash=None, salt=None, is_superuser=False, clientid_override=None, **extra):
        cols = {"username": username, "password_hash": password_hash, "salt": salt, "is_superuser": is_superuser,
                "clientid_override": clientid_override, **extra}
        names = ", ".join(cols)
        vals = ", ".join(pg_literal(v) for v in cols.values())
        self.psql(f"DELETE FROM mqtt_user WHERE username = {pg_literal(username)};\n"
                  f"INSERT INTO mqtt_user ({names}) VALUES ({vals});")

    def stop(self):
        _stop(self.proc, signal.SIGINT, 15)  # fast shutdown
        self.proc = None
        if self.dir:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None


def pg_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("'", "''") + "'"


# ---- MariaDB -----------------------------------------------------------------------------------

MYSQL_SCHEMA = """
CREATE DATABASE {db};
CREATE USER '{user}'@'%' IDENTIFIED BY '{password}';
GRANT SELECT ON {db}.* TO '{user}'@'%';
CREATE USER '{user}_tls'@'%' IDENTIFIED BY '{password}' REQUIRE SSL;
GRANT SELECT ON {db}.* TO '{user}_tls'@'%';
USE {db};
CREATE TABLE mqtt_user (
  id int AUTO_INCREMENT PRIMARY KEY,
  username varchar(200) NOT NULL UNIQUE,
  password_hash varchar(200),
  salt varchar(64),
  is_superuser tinyint(1) DEFAULT 0,
  clientid_override varchar(200),
  superuser_text varchar(20),
  superuser_bit bit(1)
) CHARACTER SET utf8mb4;
"""


class MysqlServer:
    def __init__(self, workdir, pki=None):
        self.dir = str(workdir)
        self.port = free_port()
        self.proc = None
        self.pki = pki

    def start(self):
        exe = shutil.which("mariadbd") or shutil.which("mariadbd", path="/usr/sbin:/usr/local/sbin")
        inst = shutil.which("mariadb-install-db")
        if not exe or not inst:
            pytest.skip("MariaDB server is not installed")
        self.data = os.path.join(self.dir, "data")
        self.sock = os.path.join(self.dir, "mysqld.sock")
        self.log = os.path.join(self.dir, "mariadb.log")
        root = os.geteuid() == 0
        user = ["--user=root"] if root else []
        # a private tmpdir: instances of several xdist workers must not share /tmp's temp tables
        tmp = os.path.join(self.dir, "tmp")
        os.makedirs(tmp, exist_ok=True)
        rc, out, err = run([inst, "--no-defaults", f"--datadir={self.data}", *user,
                            "--auth-root-authentication-method=normal", "--skip-test-db",
                            "--skip-name-resolve", f"--tmpdir={tmp}"], timeout=120, cwd=self.dir)
        if rc != 0:
            raise ServerError(f"mariadb-install-db failed ({rc}):\n{out}\n{err}")
        tls = []
        if self.pki is not None:
            tls = [f"--ssl-cert={self.pki.server_chain}", f"--ssl-key={self.pki.server_key}",
                   f"--ssl-ca={self.pki.ca_bundle}"]
        self.proc = procs.spawn([exe, "--no-defaults", *user, *tls, f"--datadir={self.data}", f"--socket={self.sock}",
                                 f"--port={self.port}", "--bind-address=127.0.0.1", "--skip-networking=0",
                                 f"--pid-file={os.path.join(self.dir, 'mariadb.pid')}", f"--log-error={self.log}",
                                 "--skip-name-resolve", "--skip-log-bin", "--innodb-buffer-pool-size=16M",
                                 "--innodb-flush-log-at-trx-commit=0", "--max-connections=200",
                                 "--performance-schema=0", f"--tmpdir={tmp}"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, cwd=self.dir)
        _wait(lambda: self._sql_ok("SELECT 1"), 60, f"mariadbd on port {self.port}", self.proc, self.log)
        self.sql(MYSQL_SCHEMA.format(user=MYSQL_USER, password=MYSQL_PASSWORD, db=MYSQL_DB), db=None)
        return self

    def _argv(self, db):
        return ["mariadb", "--no-defaults", "-S", self.sock, "-uroot", "-N", "-B"] + ([db] if db else [])

    def _sql_ok(self, sql):
        if not os.path.exists(self.sock):
            return False
        try:
            rc, _, _ = run(self._argv(None) + ["-e", sql], timeout=10)
        except ServerError:
            return False
        return rc == 0

    def sql(self, sql, db=MYSQL_DB):
        rc, out, err = run(self._argv(db), input=sql, timeout=60)
        if rc != 0:
            raise ServerError(f"mariadb failed ({rc}): {err}\nSQL: {sql}")
        return out

    def add_user(self, username, password_hash=None, salt=None, is_superuser=0, clientid_override=None, **extra):
        cols = {"username": username, "password_hash": password_hash, "salt": salt, "is_superuser": is_superuser,
                "clientid_override": clientid_override, **extra}
        names = ", ".join(cols)
        vals = ", ".join(my_literal(v) for v in cols.values())
        self.sql(f"DELETE FROM mqtt_user WHERE username = {my_literal(username)};\n"
                 f"INSERT INTO mqtt_user ({names}) VALUES ({vals});")

    def stop(self):
        _stop(self.proc, signal.SIGTERM, 20)
        self.proc = None
        shutil.rmtree(self.data, ignore_errors=True)


def my_literal(v):
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return "'" + str(v).replace("\\", "\\\\").replace("'", "''") + "'"


# ---- fixtures ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def redis_server(tmp_path_factory):
    s = RedisServer(tmp_path_factory.mktemp("redis"))
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def pg_server(pki):
    s = PgServer(pki)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture(scope="module")
def mysql_server(tmp_path_factory, pki):
    s = MysqlServer(tmp_path_factory.mktemp("mariadb"), pki)
    try:
        yield s.start()
    finally:
        s.stop()


@pytest.fixture
def db_proxy():
    """db_proxy(target_port) -> a started TcpProxy; every proxy is stopped at teardown."""
    made = []

    def make(target_port):
        p = TcpProxy(target_port).start()
        made.append(p)
        return p

    yield make
    for p in made:
        p.stop()
