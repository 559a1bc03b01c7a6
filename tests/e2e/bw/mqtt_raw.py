"""A raw MQTT client for tests: packet builders and a decoder for MQTT 3.1, 3.1.1 and 5.0, and
RawClient, a blocking client over a plain or TLS socket that can also send arbitrary bytes.

Builders return bytes; they never validate, so they can build malformed packets too (pass
`packet_id=0`, invalid UTF-8 as bytes, duplicate properties as a list of pairs, ...).

    c = RawClient(port, version=5)
    ack = c.connect("dev1", props={"session_expiry_interval": 60})
    assert ack.rc == 0 and ack.props.get("topic_alias_maximum")
    c.subscribe([("a/#", {"qos": 1, "nl": True})], props={"subscription_identifier": 7})
    c.publish("a/b", b"hi", qos=2)                   # full QoS 2 flow
    p = c.expect(PUBLISH, topic="a/b", qos=1)         # asserts the next packet
    assert p.props["subscription_identifier"] == [7]
    c.send(b"\\xf0\\x00")                              # anything at all
    c.expect_closed(reason=0x81)                     # v5 DISCONNECT 0x81, then EOF

Properties are dicts keyed by snake_case names (PROPS below). `user_property` is a list of
(key, value) pairs and `subscription_identifier` a list of ints in decoded packets; to build, a
single value or a list both work. To control order or duplicates, pass a list of (name, value).
"""
import collections
import select
import socket
import ssl
import struct
import time

CONNECT, CONNACK, PUBLISH, PUBACK, PUBREC, PUBREL, PUBCOMP = 1, 2, 3, 4, 5, 6, 7
SUBSCRIBE, SUBACK, UNSUBSCRIBE, UNSUBACK, PINGREQ, PINGRESP, DISCONNECT, AUTH = 8, 9, 10, 11, 12, 13, 14, 15
TYPE_NAMES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL", 7: "PUBCOMP",
              8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK", 12: "PINGREQ", 13: "PINGRESP",
              14: "DISCONNECT", 15: "AUTH"}

V31, V311, V5 = 3, 4, 5
VERSION_ALIASES = {"3.1": V31, "31": V31, "3.1.1": V311, "311": V311, "5": V5, "5.0": V5,
                   3: V31, 4: V311, 5: V5}

# v5 property id -> (name, type). Types: byte u16 u32 varint str bin pair
PROPS = {
    0x01: ("payload_format_indicator", "byte"), 0x02: ("message_expiry_interval", "u32"),
    0x03: ("content_type", "str"), 0x08: ("response_topic", "str"), 0x09: ("correlation_data", "bin"),
    0x0B: ("subscription_identifier", "varint"), 0x11: ("session_expiry_interval", "u32"),
    0x12: ("assigned_client_identifier", "str"), 0x13: ("server_keep_alive", "u16"),
    0x15: ("authentication_method", "str"), 0x16: ("authentication_data", "bin"),
    0x17: ("request_problem_information", "byte"), 0x18: ("will_delay_interval", "u32"),
    0x19: ("request_response_information", "byte"), 0x1A: ("response_information", "str"),
    0x1C: ("server_reference", "str"), 0x1F: ("reason_string", "str"), 0x21: ("receive_maximum", "u16"),
    0x22: ("topic_alias_maximum", "u16"), 0x23: ("topic_alias", "u16"), 0x24: ("maximum_qos", "byte"),
    0x25: ("retain_available", "byte"), 0x26: ("user_property", "pair"), 0x27: ("maximum_packet_size", "u32"),
    0x28: ("wildcard_subscription_available", "byte"), 0x29: ("subscription_identifier_available", "byte"),
    0x2A: ("shared_subscription_available", "byte"),
}
PROP_IDS = {name: pid for pid, (name, _) in PROPS.items()}
MULTI_PROPS = ("user_property", "subscription_identifier")

# A few reason codes by name (v5); v3 CONNACK return codes are 0..5.
RC = {"success": 0x00, "granted_qos1": 0x01, "granted_qos2": 0x02, "disconnect_with_will": 0x04,
      "no_matching_subscribers": 0x10, "no_subscription_existed": 0x11, "continue_authentication": 0x18,
      "unspecified_error": 0x80, "malformed_packet": 0x81, "protocol_error": 0x82,
      "implementation_specific_error": 0x83, "unsupported_protocol_version": 0x84,
      "client_identifier_not_valid": 0x85, "bad_user_name_or_password": 0x86, "not_authorized": 0x87,
      "server_unavailable": 0x88, "server_busy": 0x89, "banned": 0x8A, "server_shutting_down": 0x8B,
      "bad_authentication_method": 0x8C, "keep_alive_timeout": 0x8D, "session_taken_over": 0x8E,
      "topic_filter_invalid": 0x8F, "topic_name_invalid": 0x90, "packet_identifier_in_use": 0x91,
      "packet_identifier_not_found": 0x92, "receive_maximum_exceeded": 0x93, "topic_alias_invalid": 0x94,
      "packet_too_large": 0x95, "message_rate_too_high": 0x96, "quota_exceeded": 0x97,
      "administrative_action": 0x98, "payload_format_invalid": 0x99, "retain_not_supported": 0x9A,
      "qos_not_supported": 0x9B, "use_another_server": 0x9C, "server_moved": 0x9D,
      "shared_subscriptions_not_supported": 0x9E, "connection_rate_exceeded": 0x9F,
      "maximum_connect_time": 0xA0, "subscription_identifiers_not_supported": 0xA1,
      "wildcard_subscriptions_not_supported": 0xA2}
# v3.1/3.1.1 CONNACK return codes
V3_CONNACK = {"accepted": 0, "unacceptable_protocol_version": 1, "identifier_rejected": 2,
              "server_unavailable": 3, "bad_user_name_or_password": 4, "not_authorized": 5}


class MalformedPacket(ValueError):
    """The bytes received are not a valid MQTT packet."""


class ConnectionClosed(AssertionError):
    """The server closed the connection (EOF, reset, or a TLS alert) while we expected a packet."""


class NoPacket(AssertionError, TimeoutError):
    """No packet arrived within the timeout."""


# ---- primitives ------------------------------------------------------------------------------

def varint(n):
    """Variable Byte Integer encoding (no range check, so 5-byte forms can be built by hand)."""
    out = bytearray()
    while True:
        b = n % 128
        n //= 128
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def u8(n):
    return struct.pack("!B", n)


def u16(n):
    return struct.pack("!H", n)


def u32(n):
    return struct.pack("!I", n)


def mstr(s):
    """UTF-8 string with a 2-byte length (bytes are used as they are: any content)."""
    b = s if isinstance(s, (bytes, bytearray)) else str(s).encode("utf-8")
    return u16(len(b)) + bytes(b)


def mbin(b):
    """Binary data with a 2-byte length."""
    b = b if isinstance(b, (bytes, bytearray)) else str(b).encode("utf-8")
    return u16(len(b)) + bytes(b)


def packet(ptype, flags, body):
    """Fixed header (type, flags, remaining length) + body."""
    return bytes([(ptype << 4) | (flags & 0x0F)]) + varint(len(body)) + bytes(body)


def _prop_value(ptype, v):
    if ptype == "byte":
        return u8(v)
    if ptype == "u16":
        return u16(v)
    if ptype == "u32":
        return u32(v)
    if ptype == "varint":
        return varint(v)
    if ptype == "str":
        return mstr(v)
    if ptype == "bin":
        return mbin(v)
    if ptype == "pair":
        return mstr(v[0]) + mstr(v[1])
    raise ValueError(ptype)


def encode_props(props):
    """v5 property block (length + properties). props: None, dict, list of (name|id, value), or
    bytes (the property bytes without the length, used as they are)."""
    if props is None:
        return varint(0)
    if isinstance(props, (bytes, bytearray)):
        return varint(len(props)) + bytes(props)
    items = props.items() if isinstance(props, dict) else props
    out = bytearray()
    for name, value in items:
        pid = name if isinstance(name, int) else PROP_IDS[name]
        pname, ptype = PROPS[pid]
        if pname in MULTI_PROPS and isinstance(value, list):
            values = value
        elif pname == "user_property" and isinstance(value, dict):
            values = list(value.items())
        else:
            values = [value]
        for v in values:
            out += varint(pid) + _prop_value(ptype, v)
    return varint(len(out)) + bytes(out)


def _v(version):
    return VERSION_ALIASES[version]


# ---- builders (client -> server) ---------------------------------------------------------------

def connect(client_id="", version=V311, clean=True, keepalive=60, username=None, password=None,
            will=None, props=None, protocol_name=None, flags=None):
    """CONNECT. will: dict(topic, payload=b"", qos=0, retain=False, props=None).
    protocol_name defaults to MQIsdp for 3.1, MQTT otherwise; flags overrides the flags byte."""
    version = _v(version)
    if protocol_name is None:
        protocol_name = "MQIsdp" if version == V31 else "MQTT"
    f = 0
    if clean:
        f |= 0x02
    if will:
        f |= 0x04 | ((will.get("qos", 0) & 3) << 3) | (0x20 if will.get("retain") else 0)
    if password is not None:
        f |= 0x40
    if username is not None:
        f |= 0x80
    if flags is not None:
        f = flags
    body = mstr(protocol_name) + u8(version) + u8(f) + u16(keepalive)
    if version == V5:
        body += encode_props(props)
    body += mstr(client_id)
    if will:
        if version == V5:
            body += encode_props(will.get("props"))
        body += mstr(will["topic"]) + mbin(will.get("payload", b""))
    if username is not None:
        body += mstr(username)
    if password is not None:
        body += mbin(password)
    return packet(CONNECT, 0, body)


def connack(rc=0, session_present=False, version=V311, props=None):
    body = u8(1 if session_present else 0) + u8(rc)
    if _v(version) == V5:
        body += encode_props(props)
    return packet(CONNACK, 0, body)


def publish(topic, payload=b"", qos=0, retain=False, dup=False, packet_id=None, version=V311, props=None):
    """PUBLISH (packet_id is required for qos > 0; pass it explicitly)."""
    payload = payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
    flags = (0x08 if dup else 0) | ((qos & 3) << 1) | (0x01 if retain else 0)
    body = mstr(topic)
    if qos > 0 or packet_id is not None:
        body += u16(packet_id if packet_id is not None else 1)
    if _v(version) == V5:
        body += encode_props(props)
    return packet(PUBLISH, flags, body + bytes(payload))


def _ack(ptype, flags, packet_id, rc, version, props):
    """v5: rc None and no props -> the 2-byte short form; rc given (even 0) -> a reason code byte;
    props given -> the reason code (0 if None) and the property block. v3: packet id only."""
    body = u16(packet_id)
    if _v(version) == V5 and (rc is not None or props is not None):
        body += u8(rc or 0)
        if props is not None:
            body += encode_props(props)
    return packet(ptype, flags, body)


def puback(packet_id, rc=None, version=V311, props=None):
    return _ack(PUBACK, 0, packet_id, rc, version, props)


def pubrec(packet_id, rc=None, version=V311, props=None):
    return _ack(PUBREC, 0, packet_id, rc, version, props)


def pubrel(packet_id, rc=None, version=V311, props=None):
    return _ack(PUBREL, 0x02, packet_id, rc, version, props)


def pubcomp(packet_id, rc=None, version=V311, props=None):
    return _ack(PUBCOMP, 0, packet_id, rc, version, props)


def sub_options(opt):
    """Subscription options byte from an int (qos or raw byte) or a dict(qos, nl, rap, rh)."""
    if isinstance(opt, int):
        return opt
    return ((opt.get("qos", 0) & 3) | (0x04 if opt.get("nl") else 0) | (0x08 if opt.get("rap") else 0)
            | ((opt.get("rh", 0) & 3) << 4))


def _filters(topics, qos=0):
    if isinstance(topics, (str, bytes)):
        return [(topics, qos)]
    return [(t, qos) if isinstance(t, (str, bytes)) else t for t in topics]


def subscribe(packet_id, topics, qos=0, version=V311, props=None, flags=0x02):
    """SUBSCRIBE. topics: "a/b" or [("a/b", 1), ("c", {"qos": 2, "nl": True, "rap": True, "rh": 2}), "d"]."""
    body = u16(packet_id)
    if _v(version) == V5:
        body += encode_props(props)
    for t, opt in _filters(topics, qos):
        body += mstr(t) + u8(sub_options(opt))
    return packet(SUBSCRIBE, flags, body)


def suback(packet_id, codes, version=V311, props=None):
    body = u16(packet_id)
    if _v(version) == V5:
        body += encode_props(props)
    return packet(SUBACK, 0, body + bytes(codes))


def unsubscribe(packet_id, filters, version=V311, props=None, flags=0x02):
    body = u16(packet_id)
    if _v(version) == V5:
        body += encode_props(props)
    for t in ([filters] if isinstance(filters, (str, bytes)) else filters):
        body += mstr(t)
    return packet(UNSUBSCRIBE, flags, body)


def unsuback(packet_id, codes=(), version=V311, props=None):
    body = u16(packet_id)
    if _v(version) == V5:
        body += encode_props(props) + bytes(codes)
    return packet(UNSUBACK, 0, body)


def pingreq():
    return packet(PINGREQ, 0, b"")


def pingresp():
    return packet(PINGRESP, 0, b"")


def disconnect(rc=None, version=V311, props=None):
    """DISCONNECT; in v5 with a reason code (omitted when rc is None and there are no props)."""
    body = b""
    if _v(version) == V5 and (rc is not None or props is not None):
        body = u8(rc or 0)
        if props is not None:
            body += encode_props(props)
    return packet(DISCONNECT, 0, body)


def auth(rc=0, props=None):
    """AUTH (v5 only)."""
    body = b""
    if rc != 0 or props is not None:
        body = u8(rc) + (encode_props(props) if props is not None else b"")
    return packet(AUTH, 0, body)


# ---- decoder ---------------------------------------------------------------------------------

class Props(dict):
    """Decoded v5 properties: name -> value; user_property and subscription_identifier are lists.
    .order is the list of (name, value) as received (duplicates included)."""

    def __init__(self):
        super().__init__()
        self.order = []


class Packet:
    """A decoded packet. Always: type, name, flags, raw (the whole packet), body. Then per type:
      CONNECT   protocol_name, version, connect_flags, clean, keepalive, props, client_id, will
                (dict or None), username, password
      CONNACK   session_present, rc, props
      PUBLISH   topic, payload, qos, retain, dup, packet_id (None for qos 0), props
      PUBACK/PUBREC/PUBREL/PUBCOMP  packet_id, rc, props
      SUBSCRIBE packet_id, props, topics [(filter, options byte)]
      SUBACK    packet_id, props, reason_codes [int]
      UNSUBSCRIBE packet_id, props, topics [filter]
      UNSUBACK  packet_id, props, reason_codes (v5; [] in v3)
      DISCONNECT rc (0 when absent), props
      AUTH      rc, props
    `props` is an empty Props for v3 packets."""

    def __init__(self, ptype, flags, body, raw):
        self.type, self.flags, self.body, self.raw = ptype, flags, bytes(body), bytes(raw)
        self.name = TYPE_NAMES.get(ptype, f"TYPE{ptype}")
        self.props = Props()
        self.rc = None

    def __repr__(self):
        skip = {"body", "raw", "type", "flags", "name"}
        fields = ", ".join(f"{k}={v!r}" for k, v in self.__dict__.items() if k not in skip and v not in (None,))
        return f"<{self.name} {fields}>"


class _Reader:
    def __init__(self, data):
        self.d, self.i = data, 0

    def need(self, n):
        if self.i + n > len(self.d):
            raise MalformedPacket(f"packet too short: need {n} bytes at offset {self.i}, have {len(self.d) - self.i}")

    def u8(self):
        self.need(1)
        self.i += 1
        return self.d[self.i - 1]

    def u16(self):
        self.need(2)
        self.i += 2
        return struct.unpack_from("!H", self.d, self.i - 2)[0]

    def u32(self):
        self.need(4)
        self.i += 4
        return struct.unpack_from("!I", self.d, self.i - 4)[0]

    def varint(self):
        mult, val = 1, 0
        for _ in range(4):
            b = self.u8()
            val += (b & 0x7F) * mult
            if not b & 0x80:
                return val
            mult *= 128
        raise MalformedPacket("variable byte integer longer than 4 bytes")

    def bin(self):
        n = self.u16()
        self.need(n)
        self.i += n
        return bytes(self.d[self.i - n:self.i])

    def str(self):
        b = self.bin()
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacket(f"invalid UTF-8 string {b!r}")

    def rest(self):
        r = bytes(self.d[self.i:])
        self.i = len(self.d)
        return r

    def left(self):
        return len(self.d) - self.i

    def props(self):
        n = self.varint()
        self.need(n)
        end = self.i + n
        props = Props()
        while self.i < end:
            pid = self.varint()
            if pid not in PROPS:
                raise MalformedPacket(f"unknown property id 0x{pid:02x}")
            name, ptype = PROPS[pid]
            if ptype == "pair":
                v = (self.str(), self.str())
            else:
                v = getattr(self, {"byte": "u8", "u16": "u16", "u32": "u32", "varint": "varint",
                                   "str": "str", "bin": "bin"}[ptype])()
            props.order.append((name, v))
            if name in MULTI_PROPS:
                props.setdefault(name, []).append(v)
            else:
                props[name] = v
        if self.i != end:
            raise MalformedPacket("property block overran its length")
        return props


def split_packet(buf):
    """(ptype, flags, body, total_len) of the first complete packet in buf, or None if incomplete."""
    if len(buf) < 2:
        return None
    mult, rl, i = 1, 0, 1
    while True:
        if i >= len(buf):
            return None
        b = buf[i]
        rl += (b & 0x7F) * mult
        i += 1
        if not b & 0x80:
            break
        mult *= 128
        if i > 4:
            raise MalformedPacket("remaining length longer than 4 bytes")
    if len(buf) < i + rl:
        return None
    return buf[0] >> 4, buf[0] & 0x0F, bytes(buf[i:i + rl]), i + rl


def decode(buf, version=V311):
    """Decode the first packet of buf: (Packet, bytes consumed), or (None, 0) if incomplete.
    Raises MalformedPacket. version decides whether properties are present (CONNECT carries its own)."""
    parts = split_packet(buf)
    if parts is None:
        return None, 0
    ptype, flags, body, total = parts
    p = Packet(ptype, flags, body, bytes(buf[:total]))
    v5 = _v(version) == V5
    r = _Reader(body)
    if ptype == CONNECT:
        p.protocol_name = r.str()
        p.version = r.u8()
        f = p.connect_flags = r.u8()
        p.clean = bool(f & 0x02)
        p.keepalive = r.u16()
        if p.version == V5:
            p.props = r.props()
        p.client_id = r.str()
        p.will = None
        if f & 0x04:
            will = {"qos": (f >> 3) & 3, "retain": bool(f & 0x20), "props": Props()}
            if p.version == V5:
                will["props"] = r.props()
            will["topic"] = r.str()
            will["payload"] = r.bin()
            p.will = will
        p.username = r.str() if f & 0x80 else None
        p.password = r.bin() if f & 0x40 else None
    elif ptype == CONNACK:
        p.session_present = bool(r.u8() & 1)
        p.rc = r.u8()
        if v5 and r.left():
            p.props = r.props()
    elif ptype == PUBLISH:
        p.dup, p.qos, p.retain = bool(flags & 8), (flags >> 1) & 3, bool(flags & 1)
        p.topic = r.str()
        p.packet_id = r.u16() if p.qos > 0 else None
        if v5:
            p.props = r.props()
        p.payload = r.rest()
    elif ptype in (PUBACK, PUBREC, PUBREL, PUBCOMP):
        p.packet_id = r.u16()
        p.rc = 0
        if v5 and r.left():
            p.rc = r.u8()
            if r.left():
                p.props = r.props()
    elif ptype in (SUBSCRIBE, UNSUBSCRIBE):
        p.packet_id = r.u16()
        if v5:
            p.props = r.props()
        p.topics = []
        while r.left():
            t = r.str()
            p.topics.append((t, r.u8()) if ptype == SUBSCRIBE else t)
    elif ptype in (SUBACK, UNSUBACK):
        p.packet_id = r.u16()
        if v5:
            p.props = r.props()
        p.reason_codes = list(r.rest())
    elif ptype in (DISCONNECT, AUTH):
        p.rc = 0
        if r.left():
            p.rc = r.u8()
            if r.left():
                p.props = r.props()
    elif ptype in (PINGREQ, PINGRESP):
        pass
    else:
        raise MalformedPacket(f"reserved packet type {ptype}")
    if r.left():
        raise MalformedPacket(f"{p.name}: {r.left()} unexpected trailing bytes")
    return p, total


def decode_all(data, version=V311):
    """Decode a byte string holding whole packets; returns the list of Packets."""
    out, buf = [], bytes(data)
    while buf:
        p, n = decode(buf, version)
        if p is None:
            raise MalformedPacket(f"incomplete packet at the end: {buf!r}")
        out.append(p)
        buf = buf[n:]
    return out


# ---- the client --------------------------------------------------------------------------------

def _match(p, fields):
    """Assert each field of p equals the expected value; props={...} is checked as a subset."""
    for k, want in fields.items():
        if k == "props":
            for pk, pv in want.items():
                assert p.props.get(pk) == pv, f"{p!r}: property {pk} = {p.props.get(pk)!r}, expected {pv!r}"
            continue
        have = getattr(p, k, None)
        if isinstance(want, str) and isinstance(have, bytes):
            want = want.encode()
        assert have == want, f"{p!r}: {k} = {have!r}, expected {want!r}"


class RawClient:
    """A blocking MQTT client on one socket. Every wait has a timeout (default self.timeout).

    RawClient(port, version=5, tls=ctx, server_hostname="localhost") opens TCP (and TLS) at once;
    TLS handshake errors raise ssl.SSLError / OSError from the constructor."""

    def __init__(self, port, host="127.0.0.1", *, version=V311, tls=None, server_hostname="localhost",
                 timeout=5.0):
        self.version = _v(version)
        self.timeout = timeout
        self.port = port
        self.buf = bytearray()
        self.pending = collections.deque()   # packets received but set aside (see recv_publish)
        self.received = []                   # every packet received, in order
        self.closed = False
        self.close_reason = None
        self._next_id = 1
        self.connack = None
        raw = socket.create_connection((host, port), timeout=timeout)
        try:
            if tls is not None:
                s = tls.wrap_socket(raw, server_hostname=server_hostname, do_handshake_on_connect=False)
                s.settimeout(timeout)
                s.do_handshake()
                raw = s
        except BaseException:
            raw.close()
            raise
        self.sock = raw

    # context manager
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
            self.closed = True

    def next_id(self):
        """Next packet identifier (1..65535, wrapping)."""
        pid = self._next_id
        self._next_id = pid % 65535 + 1
        return pid

    # ---- bytes ----

    def send(self, data, ignore_errors=False):
        """Send raw bytes. Raises ConnectionClosed if the peer is gone (unless ignore_errors).
        Returns True if everything was sent."""
        try:
            self.sock.sendall(bytes(data))
            return True
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            self.close_reason = repr(e)
            if ignore_errors:
                return False
            raise ConnectionClosed(f"send failed: {e!r}")

    def send_slowly(self, data, delay=0.01, chunk=1):
        """Send data chunk bytes at a time with delay between writes (for partial-read tests)."""
        for i in range(0, len(data), chunk):
            self.send(data[i:i + chunk])
            time.sleep(delay)

    def _fill(self, deadline):
        """Read more bytes into self.buf; raise NoPacket at deadline, ConnectionClosed at EOF."""
        if self.sock is None:
            raise ConnectionClosed("socket already closed by the client")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise NoPacket("no packet within the timeout")
        pending_tls = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending()
        if not pending_tls:
            r, _, _ = select.select([self.sock], [], [], remaining)
            if not r:
                raise NoPacket("no packet within the timeout")
        try:
            self.sock.settimeout(max(0.05, deadline - time.monotonic()))
            data = self.sock.recv(65536)
        except ssl.SSLWantReadError:
            return
        except socket.timeout:
            raise NoPacket("no packet within the timeout")
        except (OSError, ssl.SSLError) as e:
            self.closed = True
            self.close_reason = repr(e)
            raise ConnectionClosed(f"connection closed: {e!r}")
        if not data:
            self.closed = True
            self.close_reason = "EOF"
            raise ConnectionClosed("connection closed by the server (EOF)")
        self.buf += data

    def recv_packet(self, timeout=None):
        """The next packet from the server (Packet). Raises NoPacket on timeout, ConnectionClosed
        when the server closes, MalformedPacket when it sends garbage."""
        if self.pending:
            return self.pending.popleft()
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while True:
            p, n = decode(self.buf, self.version)
            if p is not None:
                del self.buf[:n]
                self.received.append(p)
                return p
            self._fill(deadline)

    def expect(self, ptype, timeout=None, **fields):
        """Receive the next packet and assert its type (and fields, e.g. rc=0, topic="a",
        props={"topic_alias": 1}). Returns it."""
        try:
            p = self.recv_packet(timeout)
        except NoPacket:
            raise NoPacket(f"expected {TYPE_NAMES[ptype]}, got nothing within "
                           f"{self.timeout if timeout is None else timeout}s")
        except ConnectionClosed as e:
            raise ConnectionClosed(f"expected {TYPE_NAMES[ptype]}, but {e}")
        assert p.type == ptype, f"expected {TYPE_NAMES[ptype]}, got {p!r}"
        _match(p, fields)
        return p

    def wait_for(self, ptype, timeout=None, **fields):
        """Like expect(), but packets of other types (or with another packet_id) arriving first are
        set aside for later recv_packet()/expect() calls instead of failing. Used by the helpers
        below so that, e.g., a PUBLISH to ourselves arriving before our PUBACK does not break them."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        held = []
        try:
            while True:
                try:
                    p = self.recv_packet(max(0.0, deadline - time.monotonic()))
                except NoPacket:
                    raise NoPacket(f"expected {TYPE_NAMES[ptype]} {fields or ''}, got nothing within "
                                   f"{self.timeout if timeout is None else timeout}s (set aside: {held})")
                except ConnectionClosed as e:
                    raise ConnectionClosed(f"expected {TYPE_NAMES[ptype]}, but {e} (set aside: {held})")
                if p.type == ptype and ("packet_id" not in fields
                                        or getattr(p, "packet_id", None) == fields["packet_id"]):
                    _match(p, fields)
                    return p
                held.append(p)
        finally:
            self.pending.extend(held)

    def expect_nothing(self, timeout=0.5):
        """Assert that no packet arrives and the connection stays open for timeout seconds."""
        try:
            p = self.recv_packet(timeout)
        except NoPacket:
            return
        raise AssertionError(f"expected no packet, got {p!r}")

    def expect_closed(self, timeout=None, reason=None, allow_disconnect=True):
        """Assert the server closes the connection within timeout. In v5, a DISCONNECT before the
        close is accepted (allow_disconnect) and, if reason is given, required with that reason code.
        Any other packet fails. Returns the DISCONNECT packet or None."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        got = None
        while True:
            try:
                p = self.recv_packet(max(0.0, deadline - time.monotonic()))
            except ConnectionClosed:
                if reason is not None and got is None:
                    raise AssertionError(f"connection closed without DISCONNECT (expected reason 0x{reason:02x})")
                return got
            except NoPacket:
                raise AssertionError(f"connection still open after {self.timeout if timeout is None else timeout}s"
                                     + (f" (received {got!r})" if got else ""))
            except MalformedPacket as e:
                raise AssertionError(f"server sent a malformed packet: {e}")
            if p.type == DISCONNECT and allow_disconnect and got is None:
                if reason is not None:
                    assert p.rc == reason, f"DISCONNECT reason 0x{p.rc:02x}, expected 0x{reason:02x}: {p!r}"
                got = p
                continue
            raise AssertionError(f"expected the connection to close, got {p!r}")

    def is_open(self, timeout=0.2):
        """True if the connection is still open (waits up to timeout for a close; a packet arriving
        meanwhile is kept for the next recv)."""
        try:
            p = self.recv_packet(timeout)
        except NoPacket:
            return True
        except ConnectionClosed:
            return False
        self.pending.appendleft(p)
        return True

    # ---- MQTT operations ----

    def connect(self, client_id="", *, expect_rc=0, timeout=None, **kw):
        """Send CONNECT (kwargs as connect(): clean, keepalive, username, password, will, props,
        protocol_name, flags) and receive CONNACK; asserts rc == expect_rc unless expect_rc is None.
        Returns the CONNACK."""
        self.send(connect(client_id, version=self.version, **kw))
        p = self.expect(CONNACK, timeout=timeout)
        self.connack = p
        if expect_rc is not None:
            assert p.rc == expect_rc, f"CONNACK rc 0x{p.rc:02x}, expected 0x{expect_rc:02x}: {p!r}"
        return p

    def publish(self, topic, payload=b"", qos=0, retain=False, *, props=None, packet_id=None, dup=False,
                complete=True, expect_rc=None, timeout=None):
        """Send PUBLISH. With complete (default) run the QoS flow: QoS 1 waits for PUBACK, QoS 2 for
        PUBREC, sends PUBREL and waits for PUBCOMP; returns the last ack (or the packet id when not
        complete, None for QoS 0). expect_rc checks the PUBACK/PUBREC reason code (v5)."""
        if qos > 0 and packet_id is None:
            packet_id = self.next_id()
        self.send(publish(topic, payload, qos, retain, dup, packet_id, self.version, props))
        if qos == 0 or not complete:
            return packet_id
        if qos == 1:
            ack = self.wait_for(PUBACK, timeout=timeout, packet_id=packet_id)
        else:
            ack = self.wait_for(PUBREC, timeout=timeout, packet_id=packet_id)
        if expect_rc is not None:
            assert ack.rc == expect_rc, f"{ack!r}: rc 0x{ack.rc:02x}, expected 0x{expect_rc:02x}"
        if qos == 2 and (ack.rc or 0) < 0x80:
            self.send(pubrel(packet_id, version=self.version))
            ack = self.wait_for(PUBCOMP, timeout=timeout, packet_id=packet_id)
        return ack

    def subscribe(self, topics, qos=0, *, props=None, packet_id=None, expect_codes=None, timeout=None):
        """SUBSCRIBE (topics as subscribe()) and wait for SUBACK; expect_codes checks its codes.
        Returns the SUBACK."""
        packet_id = packet_id or self.next_id()
        self.send(subscribe(packet_id, topics, qos, self.version, props))
        p = self.wait_for(SUBACK, timeout=timeout, packet_id=packet_id)
        if expect_codes is not None:
            assert p.reason_codes == list(expect_codes), f"SUBACK codes {p.reason_codes}, expected {list(expect_codes)}"
        return p

    def unsubscribe(self, filters, *, props=None, packet_id=None, timeout=None):
        """UNSUBSCRIBE and wait for UNSUBACK; returns it."""
        packet_id = packet_id or self.next_id()
        self.send(unsubscribe(packet_id, filters, self.version, props))
        return self.wait_for(UNSUBACK, timeout=timeout, packet_id=packet_id)

    def recv_publish(self, timeout=None, ack=True, **fields):
        """Receive the next PUBLISH (asserting fields) and, with ack, acknowledge it: PUBACK for
        QoS 1; PUBREC, wait PUBREL, PUBCOMP for QoS 2 (other packets seen meanwhile are kept)."""
        p = self.expect(PUBLISH, timeout=timeout, **fields)
        if ack and p.qos == 1:
            self.send(puback(p.packet_id, version=self.version))
        elif ack and p.qos == 2:
            self.send(pubrec(p.packet_id, version=self.version))
            self.wait_for(PUBREL, timeout=timeout, packet_id=p.packet_id)
            self.send(pubcomp(p.packet_id, version=self.version))
        return p

    def recv_publishes(self, n, timeout=None, ack=True):
        """Receive n PUBLISH packets (acknowledged), in arrival order."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        return [self.recv_publish(max(0.0, deadline - time.monotonic()), ack=ack) for _ in range(n)]

    def ping(self, timeout=None):
        """PINGREQ and wait for PINGRESP."""
        self.send(pingreq())
        return self.wait_for(PINGRESP, timeout=timeout)

    def disconnect(self, rc=None, props=None):
        """Send DISCONNECT and close the socket."""
        self.send(disconnect(rc, self.version, props), ignore_errors=True)
        self.close()


def connect_outcome(port, *, version=V311, tls=None, server_hostname="localhost", client_id="probe",
                    timeout=5.0, **connect_kw):
    """Try a full connect and say how it ended: ("connack", CONNACK packet), ("tls_error", str) when
    the TLS handshake failed, or ("closed", str) when the server closed before CONNACK (e.g. a TLS 1.3
    server rejecting the client certificate after the handshake)."""
    try:
        c = RawClient(port, version=version, tls=tls, server_hostname=server_hostname, timeout=timeout)
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        return "tls_error", repr(e)
    with c:
        try:
            c.send(connect(client_id, version=c.version, **connect_kw))
            p = c.recv_packet(timeout)
        except ConnectionClosed as e:
            return "closed", str(e)
        except NoPacket:
            return "timeout", f"no CONNACK within {timeout}s"
        if p.type != CONNACK:
            return "unexpected", repr(p)
        return "connack", p
