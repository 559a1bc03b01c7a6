"""Fixtures for Bulwark's end-to-end tests. See README.md in this folder for the reference."""
import fcntl
import os
import signal
import threading
import time

import pytest

from bw import pki as bwpki
from bw import procs
from bw.broker import Broker, check_config as _check_config
from bw.clients import MosquittoSub, PahoClient
from bw.mqtt_raw import RawClient

BROKERS = pytest.StashKey()
DEFAULT_TIMEOUT = 120


# ---- per-test timeout: pytest-timeout when installed, else a SIGALRM fallback ------------------

def pytest_addoption(parser, pluginmanager):
    if not pluginmanager.hasplugin("timeout"):
        parser.addini("timeout", "per-test timeout in seconds (fallback for pytest-timeout)",
                      default=str(DEFAULT_TIMEOUT))


def pytest_configure(config):
    config.addinivalue_line("markers", "timeout(seconds): per-test timeout (pytest-timeout or the fallback)")
    config._bw_fallback_timeout = not config.pluginmanager.hasplugin("timeout")


def _timeout_of(item):
    m = item.get_closest_marker("timeout")
    if m and m.args:
        return float(m.args[0])
    try:
        return float(item.config.getini("timeout") or DEFAULT_TIMEOUT)
    except (ValueError, TypeError):
        return DEFAULT_TIMEOUT


def _arm(item, budget):
    if not item.config._bw_fallback_timeout or threading.current_thread() is not threading.main_thread():
        return False

    def on_alarm(signum, frame):
        pytest.fail(f"Timeout: test exceeded {budget:.0f}s (fallback SIGALRM timeout)", pytrace=True)

    signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, max(0.01, budget))
    return True


def _disarm(armed):
    if armed:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    item._bw_deadline = time.monotonic() + _timeout_of(item)
    armed = _arm(item, _timeout_of(item))
    yield
    _disarm(armed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item):
    armed = _arm(item, getattr(item, "_bw_deadline", time.monotonic() + _timeout_of(item)) - time.monotonic())
    yield
    _disarm(armed)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item, nextitem):
    armed = _arm(item, 60)  # teardown has its own budget: stopping brokers takes up to 10 s each
    yield
    _disarm(armed)


# ---- broker logs in failure reports --------------------------------------------------------------

@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when == "call":  # setup/teardown errors already carry the log tail
        for b in item.stash.get(BROKERS, []):
            rep.sections.append((f"broker log {b.dir}", b.log_tail(150)))


# ---- processes never outlive their test ------------------------------------------------------

@pytest.fixture(autouse=True)
def _reap_processes():
    mark = procs.mark()
    yield
    procs.reap(mark)


# ---- PKI -------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def pki(tmp_path_factory):
    """The test PKI (bw.pki.Pki), generated once per run; xdist workers share it through a lock."""
    base = tmp_path_factory.getbasetemp()
    root = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    d = root / "pki"
    with open(root / "pki.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if not (d / "manifest.json").exists():
                tmp = root / f"pki.tmp{os.getpid()}"
                bwpki.generate(tmp)
                os.rename(tmp, d)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return bwpki.load(d)


# ---- brokers ---------------------------------------------------------------------------------

@pytest.fixture
def start_broker(request, tmp_path, pki):
    """Factory: start_broker(config="", **kw) -> a started bw.broker.Broker (start=False: not started).
    kw: tcp/ssl/base/values/files/wait_ports/expect_exit/env/data_dir/argv/name (see Broker).
    Every broker is stopped at teardown; a bad exit status or a sanitizer report fails the test."""
    brokers = request.node.stash.setdefault(BROKERS, [])

    def factory(config="", *, start=True, name=None, **kw):
        kw.setdefault("pki", pki)
        b = Broker(tmp_path / (name or f"b{len(brokers) + 1}"), config, **kw)
        brokers.append(b)
        if start:
            b.start()
        return b

    yield factory
    problems = []
    for b in brokers:
        p = b.finalize()
        if p:
            problems.append(f"[{b.dir.name}] {p}")
    if problems:
        pytest.fail("broker teardown problems:\n" + "\n\n".join(problems), pytrace=False)


@pytest.fixture
def broker(start_broker):
    """A broker with only the default tcp listener (on a free port): broker.tcp_port."""
    return start_broker("")


@pytest.fixture
def check_config(tmp_path, pki):
    """check_config(config, files=None, base=False, values=None) -> (exit status, output) of
    `bulwark --check -c FILE` (tokens rendered; the file is written in a fresh directory)."""
    n = [0]

    def run(config, **kw):
        n[0] += 1
        kw.setdefault("pki", pki)
        return _check_config(tmp_path / f"check{n[0]}", config, **kw)

    return run


# ---- clients ---------------------------------------------------------------------------------

def _port_of(target, tls):
    if isinstance(target, Broker):
        return target.ssl_port if tls is not None else target.tcp_port
    return int(target)


@pytest.fixture
def raw_client():
    """raw_client(port_or_broker, version=4, tls=None, server_hostname="localhost", timeout=5) ->
    bw.mqtt_raw.RawClient, TCP (and TLS) open, MQTT not connected. Closed at teardown.
    Given a Broker, uses its ssl port when tls is given, else its tcp port."""
    made = []

    def make(target, **kw):
        c = RawClient(_port_of(target, kw.get("tls")), **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def mqtt_client():
    """mqtt_client(port_or_broker, connect=True, version=4, client_id="", tls=Tls(...), ...) ->
    bw.clients.PahoClient (connected unless connect=False). Closed at teardown."""
    made = []

    def make(target, *, connect=True, **kw):
        c = PahoClient(_port_of(target, kw.get("tls")), **kw)
        made.append(c)
        if connect:
            c.connect()
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def mosquitto_sub_bg():
    """mosquitto_sub_bg(port_or_broker, topic, **kw) -> a started bw.clients.MosquittoSub
    (subscribed when returned). Killed at teardown."""
    made = []

    def make(target, topic, **kw):
        s = MosquittoSub(_port_of(target, kw.get("tls")), topic, **kw)
        made.append(s)
        return s.start()

    yield make
    for s in made:
        s.close()
