"""A damaged store at start: what the operator sees (docs/DURABILITY.md, "A damaged database").

The broker writes persistent sessions (with queued QoS 1 messages) and retained messages, stops
cleanly, then data/bulwark.db is damaged in one way per test:
  (a) truncated to half its size,
  (b) garbage written over pages in the middle,
  (c) replaced by a file that is not an SQLite database,
  (d) made unreadable (chmod 000; as root the broker runs as nobody, since root reads anything).

Expected in every case: the broker refuses to start, exits 1 by itself within seconds (no crash,
no hang, no sanitizer report) with ONE error line that names the file and says what to do, and
leaves the file exactly as it was (it never starts empty over the user's data). Following the
advice (moving the file aside) then gives a broker that starts with an empty store."""
import hashlib
import os
import random
import re
import shutil
import stat
import tempfile

import pytest

from bw import mqtt_raw as m
from bw.broker import Broker, bulwark_bin

SESSIONS = 20
RETAINED = 200
CONFIG = "mqtt.max_mqueue_len = 100000\n"
HINT = "move it aside to start with an empty store, or restore a backup"


def fill(b, raw_client):
    """Persistent sessions with queued messages and retained messages, then a clean stop.
    Returns the database path."""
    for i in range(SESSIONS):
        c = raw_client(b, version=5)
        c.connect(f"dc-sub-{i}", clean=False, props={"session_expiry_interval": 3600})
        c.subscribe(f"dc/q/{i}", qos=1)
        c.disconnect()
    pub = raw_client(b, version=5)
    pub.connect("dc-pub")
    for i in range(SESSIONS):
        for k in range(5):
            pub.publish(f"dc/q/{i}", f"queued {k}".encode() * 50, qos=1)
    for i in range(RETAINED):
        pub.publish(f"dc/r/{i}", bytes([i % 256]) * 1500, qos=1, retain=True)
    pub.disconnect()
    b.stop()
    db = b.data_dir / "bulwark.db"
    assert db.stat().st_size > 200_000, "the store should span many pages"
    return db


def digest(path):
    """sha256 of the file, whatever its mode (restored afterwards)."""
    mode = stat.S_IMODE(path.stat().st_mode)
    os.chmod(path, 0o600)
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    finally:
        os.chmod(path, mode)


def assert_refused(b, db, *what):
    """Start the damaged broker: it must exit 1 by itself with one clear error line naming the file,
    and leave the file untouched."""
    before = digest(db)
    code, log = b.run_to_exit(timeout=20)
    assert code == 1, f"exit status {code} (expected 1: refused; negative = killed by a signal)\n{log}"
    assert not b.sanitizer_report(), b.sanitizer_report()
    errors = [ln for ln in log.splitlines() if " error: " in ln]
    assert len(errors) == 1, f"expected exactly one error line:\n{log}"
    line = errors[0]
    assert "data/bulwark.db: " in line, line
    for w in what:
        assert w in line, f"{w!r} not in {line!r}"
    assert "started" not in log and "listener" not in log, log
    assert digest(db) == before, "the damaged file was modified"
    # nothing was created next to it that the next start would take for data
    assert not (db.parent / "bulwark.db-wal").exists() or (db.parent / "bulwark.db-wal").stat().st_size == 0
    return line


def assert_recovers_after_move_aside(b, db):
    """The advice works: with the file moved aside the broker starts with an empty store."""
    os.chmod(db, 0o600)
    db.rename(db.with_name("bulwark.db.damaged"))
    b.start()
    c = m.RawClient(b.tcp_port, version=5)
    try:
        c.connect("dc-sub-0", clean=False, props={"session_expiry_interval": 3600})
        assert c.connack.session_present is False
    finally:
        c.disconnect()
    b.wait_for_log(r"restored 0 persistent sessions, 0 retained messages")
    assert (db.parent / "bulwark.db.damaged").exists()


def test_truncated_store_is_refused(start_broker, raw_client):
    b = start_broker(CONFIG)
    db = fill(b, raw_client)
    with open(db, "r+b") as f:
        f.truncate(db.stat().st_size // 2)
    line = assert_refused(b, db, "database disk image is malformed", HINT)
    assert re.search(r" error: store: data/bulwark\.db: database disk image is malformed", line), line
    assert_recovers_after_move_aside(b, db)


def test_garbage_in_the_middle_of_the_store_is_refused(start_broker, raw_client):
    b = start_broker(CONFIG)
    db = fill(b, raw_client)
    size = db.stat().st_size
    rnd = random.Random(7)
    with open(db, "r+b") as f:
        f.seek(size // 3)
        f.write(bytes(rnd.randrange(256) for _ in range(32768)))
    assert db.stat().st_size == size
    assert_refused(b, db, "database disk image is malformed", HINT)
    assert_recovers_after_move_aside(b, db)


def test_store_that_is_not_a_database_is_refused(start_broker, raw_client):
    b = start_broker(CONFIG)
    db = fill(b, raw_client)
    db.write_text("these are my notes, not a database\n" * 100)
    assert_refused(b, db, "file is not a database", HINT)
    assert_recovers_after_move_aside(b, db)


NOBODY = 65534


def test_unreadable_store_is_refused(pki, raw_client):
    """chmod 000 on the database. Root reads any file, so as root the broker runs as nobody
    (setpriv) in a directory nobody may use."""
    argv = None
    root = os.geteuid() == 0
    if root:
        setpriv = shutil.which("setpriv")
        binary = bulwark_bin()
        if not setpriv:
            pytest.skip("running as root without setpriv: cannot drop privileges to test permissions")
        # nobody must reach the binary (and its directory chain)
        p = os.path.dirname(os.path.abspath(binary))
        while p != "/":
            if not os.stat(p).st_mode & stat.S_IXOTH:
                pytest.skip(f"{p} is not searchable by nobody")
            p = os.path.dirname(p)
        argv = [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", binary, "-c", "{config}"]
    workdir = tempfile.mkdtemp(prefix="bw-unreadable-")
    os.chmod(workdir, 0o755)
    if root:
        os.chown(workdir, NOBODY, NOBODY)
    b = Broker(workdir, CONFIG, pki=pki, argv=argv)
    try:
        b.start()
        db = fill(b, raw_client)
        os.chmod(db, 0)
        line = assert_refused(b, db, "Permission denied", "must be able to read and write it")
        assert f"running as uid {NOBODY if root else os.geteuid()}" in line, line
        assert_recovers_after_move_aside(b, db)
        b.stop()
    finally:
        b.finalize()
        shutil.rmtree(workdir, ignore_errors=True)
