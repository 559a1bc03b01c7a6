"""Real-client helpers: paho-mqtt (1.6) and the mosquitto_pub / mosquitto_sub command-line tools.

    c = PahoClient(port, version=5, client_id="dev1",
                   tls=Tls(ca=pki.ca_bundle, cert=pki.client_cert, key=pki.client_key))
    c.connect()                      # ConnectFailed if the TLS handshake fails or no CONNACK comes
    c.subscribe("a/#", qos=1)
    c.publish("a/b", "hi", qos=1)    # waits until the broker acknowledged it
    [m] = c.wait_messages(1)         # Message(topic, payload, qos, retain, props)
    c.close()

Every wait has a deadline; every subprocess is spawned through bw.procs, so none outlives a test.
"""
import queue
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field

import paho.mqtt.client as paho
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes

from . import procs
from .tls import client_context

PAHO_VERSIONS = {"3.1": paho.MQTTv31, "3.1.1": paho.MQTTv311, "5": paho.MQTTv5,
                 3: paho.MQTTv31, 4: paho.MQTTv311, 5: paho.MQTTv5}
CLI_VERSIONS = {"3.1": "mqttv31", "3.1.1": "mqttv311", "5": "mqttv5", 3: "mqttv31", 4: "mqttv311", 5: "mqttv5"}


@dataclass
class Tls:
    """TLS options shared by the paho and mosquitto CLI helpers.
    ca: CA file verifying the server; cert/key/password: client certificate; server_hostname: SNI
    and the name checked against the server certificate (the TCP connection always goes to
    127.0.0.1); verify=False skips server verification (paho) / passes --insecure (CLI)."""
    ca: str = None
    cert: str = None
    key: str = None
    password: str = None
    server_hostname: str = "localhost"
    verify: bool = True
    min_version: str = None
    max_version: str = None

    def context(self):
        return client_context(self.ca, self.cert, self.key, self.password, verify=self.verify,
                              check_hostname=self.verify, min_version=self.min_version,
                              max_version=self.max_version)


class ConnectFailed(AssertionError):
    """The client could not connect: TLS/TCP error, connection closed before CONNACK, or a refusal."""

    def __init__(self, msg, rc=None):
        super().__init__(msg)
        self.rc = rc


@dataclass
class Message:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    props: dict = field(default_factory=dict)
    mid: int = 0


class _SniContext(ssl.SSLContext):
    """An SSLContext whose wrap_socket uses a fixed server_hostname and finishes the handshake within
    a deadline (paho passes its host, 127.0.0.1, and would wait keepalive seconds)."""
    sni = "localhost"
    handshake_timeout = 5.0

    def wrap_socket(self, sock, server_hostname=None, **kw):
        kw["do_handshake_on_connect"] = False
        s = super().wrap_socket(sock, server_hostname=self.sni, **kw)
        s.settimeout(self.handshake_timeout)
        s.do_handshake()
        return s


def _sni_context(tls, timeout):
    base = tls.context()
    ctx = _SniContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = base.check_hostname
    ctx.verify_mode = base.verify_mode
    if tls.verify and tls.ca:
        ctx.load_verify_locations(cafile=str(tls.ca))
    if tls.cert:
        ctx.load_cert_chain(str(tls.cert), str(tls.key) if tls.key else None, password=tls.password)
    ctx.minimum_version = base.minimum_version
    ctx.maximum_version = base.maximum_version
    ctx.sni = tls.server_hostname
    ctx.handshake_timeout = timeout
    return ctx


def _paho_props(packet_type, d):
    """paho Properties from a dict keyed by snake_case ("user_property") or paho names ("UserProperty")."""
    pr = Properties(packet_type)
    for k, v in d.items():
        name = "".join(w[:1].upper() + w[1:] for w in k.split("_")) if k[:1].islower() else k
        setattr(pr, name, v)
    return pr


def props_to_dict(p):
    """paho Properties -> plain dict with snake_case names (user_property as list of pairs)."""
    if p is None:
        return {}
    out = {}
    for name in p.names:
        attr = name.replace(" ", "")
        if hasattr(p, attr):
            key = "".join("_" + ch.lower() if ch.isupper() else ch for ch in attr).lstrip("_")
            out[key] = getattr(p, attr)
    return out


class _Client(paho.Client):
    """paho 1.6 lets an ssl.SSLError from recv/send (a TLS alert after the handshake, e.g. a TLS 1.3
    server rejecting the client certificate) kill its network thread. Turn it into a lost connection
    (on_disconnect) and remember it in tls_error."""
    tls_error = None

    def _sock_recv(self, bufsize):
        try:
            return super()._sock_recv(bufsize)
        except ssl.SSLError as e:
            if isinstance(e, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                raise
            self.tls_error = repr(e)
            raise ConnectionResetError(f"TLS error: {e!r}")

    def _sock_send(self, buf):
        try:
            return super()._sock_send(buf)
        except ssl.SSLError as e:
            if isinstance(e, (ssl.SSLWantReadError, ssl.SSLWantWriteError)):
                raise
            self.tls_error = repr(e)
            raise ConnectionResetError(f"TLS error: {e!r}")


class PahoClient:
    """A paho client running its network loop in a background thread, with deadlines everywhere.
    Received messages go to a thread-safe queue (see wait_messages). paho's automatic reconnect is
    off unless auto_reconnect=True (a kicked or refused client stays disconnected)."""

    def __init__(self, port, *, version=4, client_id="", clean=True, tls=None, username=None,
                 password=None, keepalive=60, host="127.0.0.1", will=None, timeout=5.0, auto_reconnect=False):
        self.port, self.host, self.timeout = port, host, timeout
        self.version = PAHO_VERSIONS[version]
        self.v5 = self.version == paho.MQTTv5
        self.clean = clean
        self.keepalive = keepalive
        if self.v5:
            self.c = _Client(client_id=client_id, protocol=self.version, reconnect_on_failure=auto_reconnect)
        else:
            self.c = _Client(client_id=client_id, clean_session=clean, protocol=self.version,
                             reconnect_on_failure=auto_reconnect)
        if tls is not None:
            self.c.tls_set_context(_sni_context(tls, timeout))
        if username is not None:
            self.c.username_pw_set(username, password)
        if will:
            self.c.will_set(will["topic"], will.get("payload"), will.get("qos", 0), will.get("retain", False))
        self.messages = queue.Queue()
        self._cv = threading.Condition()
        self.connack = None          # (rc, flags, props) of the last CONNACK
        self.disconnected = None     # rc of the last disconnect callback
        self.acked = set()           # mids the broker acknowledged (publish complete)
        self.subacks = {}            # mid -> granted codes / reason codes
        self.unsubacks = set()
        self._loop = False
        self.c.on_connect = self._on_connect
        self.c.on_disconnect = self._on_disconnect
        self.c.on_message = self._on_message
        self.c.on_publish = self._on_publish
        self.c.on_subscribe = self._on_subscribe
        self.c.on_unsubscribe = self._on_unsubscribe

    # callbacks (paho thread)
    def _on_connect(self, c, u, flags, rc, props=None):
        with self._cv:
            rc = rc.value if hasattr(rc, "value") else rc
            self.connack = (rc, flags, props_to_dict(props))
            self._cv.notify_all()

    def _on_disconnect(self, c, u, rc, props=None):
        with self._cv:
            self.disconnected = rc.value if hasattr(rc, "value") else rc
            self._cv.notify_all()

    def _on_message(self, c, u, m):
        self.messages.put(Message(m.topic, m.payload, m.qos, bool(m.retain),
                                  props_to_dict(getattr(m, "properties", None)), m.mid))

    def _on_publish(self, c, u, mid):
        with self._cv:
            self.acked.add(mid)
            self._cv.notify_all()

    def _on_subscribe(self, c, u, mid, granted, props=None):
        with self._cv:
            self.subacks[mid] = [g.value if hasattr(g, "value") else g for g in granted]
            self._cv.notify_all()

    def _on_unsubscribe(self, c, u, mid, *rest):
        with self._cv:
            self.unsubacks.add(mid)
            self._cv.notify_all()

    def _wait(self, pred, timeout, what):
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        with self._cv:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"timed out waiting for {what}")
                self._cv.wait(min(left, 0.1))

    def connect(self, timeout=None, expect_rc=0, props=None, session_expiry=None):
        """Connect and wait for CONNACK (props: v5 CONNECT properties, snake_case or paho names). Raises ConnectFailed on a TCP/TLS error, a close before
        CONNACK, or (when expect_rc is not None) a CONNACK code other than expect_rc.
        Returns the CONNACK reason code."""
        kw = {}
        if self.v5:
            kw["clean_start"] = self.clean
            if props or session_expiry is not None:
                pr = _paho_props(PacketTypes.CONNECT, props or {})
                if session_expiry is not None:
                    pr.SessionExpiryInterval = session_expiry
                kw["properties"] = pr
        self.connack, self.disconnected = None, None
        try:
            self.c.connect(self.host, self.port, self.keepalive, **kw)
        except (ssl.SSLError, OSError) as e:
            raise ConnectFailed(f"connect to {self.host}:{self.port} failed: {e!r}")
        self.c.loop_start()
        self._loop = True
        try:
            self._wait(lambda: self.connack is not None or self.disconnected is not None,
                       timeout, "CONNACK")
        except AssertionError:
            raise ConnectFailed(f"no CONNACK within {self.timeout if timeout is None else timeout}s")
        if self.connack is None:
            raise ConnectFailed(f"connection closed before CONNACK (paho rc {self.disconnected}"
                                + (f", {self.c.tls_error}" if self.c.tls_error else "") + ")")
        rc = self.connack[0]
        if expect_rc is not None and rc != expect_rc:
            raise ConnectFailed(f"CONNACK rc {rc}, expected {expect_rc}", rc=rc)
        return rc

    def subscribe(self, topic, qos=0, timeout=None, props=None):
        """Subscribe (topic: str or list of (topic, qos)) and wait for SUBACK; returns granted codes."""
        kw = {}
        if props and self.v5:
            kw["properties"] = _paho_props(PacketTypes.SUBSCRIBE, props)
        rc, mid = self.c.subscribe(topic, qos, **kw) if isinstance(topic, str) else self.c.subscribe(topic, **kw)
        assert rc == paho.MQTT_ERR_SUCCESS, f"subscribe failed locally: {paho.error_string(rc)}"
        self._wait(lambda: mid in self.subacks, timeout, f"SUBACK for {topic!r}")
        return self.subacks[mid]

    def unsubscribe(self, topic, timeout=None):
        rc, mid = self.c.unsubscribe(topic)
        assert rc == paho.MQTT_ERR_SUCCESS, f"unsubscribe failed locally: {paho.error_string(rc)}"
        self._wait(lambda: mid in self.unsubacks, timeout, f"UNSUBACK for {topic!r}")

    def publish(self, topic, payload=b"", qos=0, retain=False, timeout=None, wait=True, props=None):
        """Publish; with wait, block until paho reports it complete (QoS 0: written to the socket;
        QoS 1/2: acknowledged by the broker). Returns the mid."""
        kw = {}
        if props and self.v5:
            kw["properties"] = _paho_props(PacketTypes.PUBLISH, props)
        info = self.c.publish(topic, payload, qos, retain, **kw)
        assert info.rc == paho.MQTT_ERR_SUCCESS, f"publish failed locally: {paho.error_string(info.rc)}"
        if wait:
            self._wait(lambda: info.mid in self.acked, timeout, f"publish of {topic!r} to complete")
        return info.mid

    def wait_messages(self, n, timeout=None):
        """Wait for n messages (in arrival order); AssertionError with what did arrive on timeout."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got = []
        while len(got) < n:
            left = deadline - time.monotonic()
            try:
                got.append(self.messages.get(timeout=max(0.001, left)))
            except queue.Empty:
                raise AssertionError(f"got {len(got)} of {n} messages: {got!r}")
        return got

    def no_messages(self, timeout=0.5):
        """Assert nothing arrives within timeout."""
        try:
            m = self.messages.get(timeout=timeout)
        except queue.Empty:
            return
        raise AssertionError(f"unexpected message {m!r}")

    def wait_disconnected(self, timeout=None):
        """Wait until the connection is lost; returns paho's rc (v5: the DISCONNECT reason)."""
        self._wait(lambda: self.disconnected is not None, timeout, "the connection to close")
        return self.disconnected

    @property
    def is_connected(self):
        return self.c.is_connected()

    def disconnect(self):
        try:
            self.c.disconnect()
        except Exception:
            pass

    def close(self):
        """Disconnect and stop the network thread (idempotent)."""
        self.disconnect()
        if self._loop:
            self.c.loop_stop()
            self._loop = False
        try:
            self.c.socket() and self.c.socket().close()
        except Exception:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# ---- mosquitto_pub / mosquitto_sub -------------------------------------------------------------

def _cli_common(port, tls=None, version=4, client_id=None, username=None, password=None, host="127.0.0.1"):
    args = ["-h", host, "-p", str(port), "-V", CLI_VERSIONS[version]]
    if client_id:
        args += ["-i", client_id]
    if username is not None:
        args += ["-u", username]
    if password is not None:
        args += ["-P", password]
    if tls is not None:
        if tls.ca:
            args += ["--cafile", str(tls.ca)]
        if tls.cert:
            args += ["--cert", str(tls.cert), "--key", str(tls.key)]
        if not tls.verify:
            args += ["--insecure"]
        if tls.max_version:
            args += ["--tls-version", "tlsv" + tls.max_version]
    return args


def mosquitto_pub(port, topic, message="", *, qos=0, retain=False, tls=None, version=4, client_id=None,
                  username=None, password=None, extra=(), timeout=10):
    """Run mosquitto_pub once; returns subprocess.CompletedProcess (returncode, stdout, stderr).
    With tls, connects to 127.0.0.1 and checks the server certificate against tls.ca (the server
    certificate must have IP:127.0.0.1, as the test PKI's do)."""
    argv = ["mosquitto_pub", *_cli_common(port, tls, version, client_id, username, password),
            "-t", topic, "-m", message, "-q", str(qos)]
    if retain:
        argv.append("-r")
    return _run([*argv, *extra], timeout)


def mosquitto_sub(port, topic, *, count=1, wait=5, qos=0, tls=None, version=4, client_id=None,
                  username=None, password=None, extra=(), timeout=None):
    """Run mosquitto_sub until it got count messages or `wait` seconds passed (-C count -W wait).
    Returns (CompletedProcess, [output lines]): one payload per line, or "TOPIC PAYLOAD" with
    extra=("-v",)."""
    argv = ["mosquitto_sub", *_cli_common(port, tls, version, client_id, username, password),
            "-t", topic, "-q", str(qos), "-C", str(count), "-W", str(wait), *extra]
    cp = _run(argv, timeout or wait + 5)
    return cp, cp.stdout.splitlines()


def _run(argv, timeout):
    p = procs.spawn(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.kill(p)
        raise AssertionError(f"{argv[0]} did not finish within {timeout}s: {argv}")
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


class MosquittoSub:
    """mosquitto_sub in the background: start() returns once the SUBACK arrived (it runs with -d and
    the harness watches for "Subscribed"); messages() reads what it printed so far. Lines are
    "TOPIC PAYLOAD" (-v). Always close() (the fixture `clients` does it for you)."""

    def __init__(self, port, topic, *, qos=0, tls=None, version=4, client_id=None, username=None,
                 password=None, extra=()):
        # stdbuf -oL: mosquitto_sub's debug lines are plain printf, block-buffered into a pipe
        self.argv = ["stdbuf", "-oL", "mosquitto_sub",
                     *_cli_common(port, tls, version, client_id, username, password),
                     "-t", topic, "-q", str(qos), "-v", "-d", *extra]
        self.lines = []
        self.debug = []
        self._cv = threading.Condition()
        self.p = None
        self.subscribed = False

    def start(self, timeout=5):
        self.p = procs.spawn(self.argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
        self._t = threading.Thread(target=self._reader, daemon=True)
        self._t.start()
        deadline = time.monotonic() + timeout
        with self._cv:
            while not self.subscribed:
                if self.p.poll() is not None and not self._t.is_alive():
                    raise AssertionError(f"mosquitto_sub exited {self.p.returncode}: {self.debug}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"mosquitto_sub not subscribed within {timeout}s: {self.debug}")
                self._cv.wait(min(left, 0.1))
        return self

    def _reader(self):
        for line in self.p.stdout:
            line = line.rstrip("\n")
            with self._cv:
                if line.startswith("Client ") or line.startswith("Subscribed") or line.startswith("Error"):
                    self.debug.append(line)
                    if line.startswith("Subscribed"):
                        self.subscribed = True
                else:
                    self.lines.append(line)
                self._cv.notify_all()
        with self._cv:
            self._cv.notify_all()

    def wait_lines(self, n, timeout=5):
        """Wait until n message lines were printed; returns them."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.lines) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"mosquitto_sub printed {len(self.lines)} of {n}: {self.lines} {self.debug}")
                self._cv.wait(min(left, 0.1))
            return list(self.lines[:n])

    def close(self):
        if self.p is not None:
            procs.kill(self.p)
