"""`authorization.sources = [{type = http, ...}]` (EMQX 5.8 §5) against a local HTTP server started by
each test: 204 -> allow, 200 {"result": allow | deny | ignore}, form answers, any other status or a
200 without a result -> no match (the next source / no_match), a server that is down or too slow ->
no match while the broker keeps serving; the request: POST JSON / form bodies and GET queries with
${username}, ${clientid}, ${topic}, ${action}, ${qos}, ${retain}, URL-escaped path placeholders,
templated headers; config errors."""
import json
import re
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bw import mqtt_raw as m
from bw.ports import free_port

NOT_AUTHORIZED = 0x87


# ---- the test's HTTP server ----------------------------------------------------------------------

class Request:
    def __init__(self, method, path, headers, body):
        self.method = method
        self.raw_path = path
        u = urllib.parse.urlsplit(path)
        self.path = u.path
        self.query = {k: v[0] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        self.headers = {k.lower(): v for k, v in headers.items()}
        self.body = body

    def params(self):
        """The request's parameters: JSON body, form body or query string."""
        if self.method == "GET":
            return self.query
        ct = self.headers.get("content-type", "")
        if ct.startswith("application/x-www-form-urlencoded"):
            return {k: v[0] for k, v in urllib.parse.parse_qs(self.body.decode(), keep_blank_values=True).items()}
        return json.loads(self.body)

    def __repr__(self):
        return f"<{self.method} {self.raw_path} {self.body!r}>"


def by_topic(req):
    """Answers keyed on the first level of the topic the broker sent."""
    topic = req.params().get("topic", "")
    head = topic.split("/")[0]
    return {
        "allow": (200, "application/json", {"result": "allow"}),
        "deny": (200, "application/json", {"result": "deny"}),
        "ignore": (200, "application/json", {"result": "ignore"}),
        "e204": (204, None, b""),
        "e500": (500, "application/json", {"result": "allow"}),
        "e403": (403, "application/json", {"result": "deny"}),
        "empty": (200, "application/json", {}),
        "garbage": (200, "application/json", b"<html>not json"),
        "texty": (200, "text/plain", b"allow"),
        "form": (200, "application/x-www-form-urlencoded", b"x=1&result=allow"),
        "formdeny": (200, "application/x-www-form-urlencoded", b"result=deny"),
        "slow": "slow",
    }.get(head, (200, "application/json", {"result": "ignore"}))


class AclServer:
    def __init__(self, answer=by_topic):
        self.requests = []
        self.cond = threading.Condition()
        self.answer = answer
        self.port = free_port()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _serve(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                req = Request(self.command, self.path, dict(self.headers), body)
                with outer.cond:
                    outer.requests.append(req)
                    outer.cond.notify_all()
                ans = outer.answer(req)
                if ans == "slow":
                    time.sleep(3)
                    ans = (200, "application/json", {"result": "allow"})
                status, ctype, payload = ans
                if isinstance(payload, (dict, list)):
                    payload = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    if status != 204:
                        if ctype:
                            self.send_header("Content-Type", ctype)
                        self.send_header("Content-Length", str(len(payload or b"")))
                    self.end_headers()
                    if status != 204 and payload:
                        self.wfile.write(payload)
                except OSError:
                    pass

            do_GET = do_POST = _serve

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            block_on_close = False

            def handle_error(self, request, client_address):
                pass

        self.srv = Server(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self.srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def last(self):
        with self.cond:
            return self.requests[-1]

    def stop(self):
        self.srv.shutdown()
        self.srv.server_close()


@pytest.fixture
def acl_server():
    made = []

    def make(answer=by_topic):
        s = AclServer(answer)
        made.append(s)
        return s

    yield make
    for s in made:
        s.stop()


# ---- broker helpers ------------------------------------------------------------------------------

BODY = ('body { username = "${username}", clientid = "${clientid}", topic = "${topic}", action = "${action}", '
        'qos = "${qos}", retain = "${retain}" }')


def source(port, method="post", url_path="/acl", body=BODY, extra=""):
    return """
    {
      type = http
      method = %s
      url = "http://127.0.0.1:%d%s"
      %s
      request_timeout = 2s
      %s
    }""" % (method, port, url_path, body, extra)


FILE_SOURCE = '{ type = file, path = "acl.conf" }'


def config(*sources, no_match="deny", cache=False):
    return ("log.console.level = debug\nauthorization {\n  no_match = %s\n  cache { enable = %s }\n"
            "  sources = [%s\n  ]\n}\n" % (no_match, "true" if cache else "false", ",".join(sources)))


def start(start_broker, cfg, acl="{allow, all}.\n", **kw):
    return start_broker(cfg, files={"acl.conf": acl}, **kw)


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


# ---- tests ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("no_match", ["allow", "deny"])
def test_answers(start_broker, acl_server, no_match):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port), no_match=no_match))
    c = client(b, "c1", "alice")
    nm = no_match == "allow"
    assert allowed(c, "allow/t")
    assert allowed(c, "e204/t")
    assert allowed(c, "form/t")
    assert pub_rc(c, "deny/t") == NOT_AUTHORIZED
    assert pub_rc(c, "formdeny/t") == NOT_AUTHORIZED
    # ignore, other statuses and answers without a result: no match -> no_match decides
    for t in ["ignore/t", "e500/t", "e403/t", "empty/t", "garbage/t", "texty/t"]:
        assert allowed(c, t) == nm, t
    assert sub_codes(c, "allow/#", "deny/#", "e204/x", "ignore/#") == [1, NOT_AUTHORIZED, 1, 1 if nm else NOT_AUTHORIZED]
    b.wait_for_log(r"authorization http: 200 without a result of allow, deny or ignore: no match")
    assert c.is_open()


def test_subscribe_denied_v3(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port)))
    c = client(b, "v3", "alice", version=4)
    assert sub_codes(c, "allow/#", "deny/#", "e500/#") == [1, 0x80, 0x80]


def test_qos0_denied_publish_is_dropped(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port)))
    w = client(b, "w", "alice")
    assert sub_codes(w, "allow/#", qos=0) == [0]
    p = client(b, "p", "alice")
    p.publish("deny/x", b"dropped")
    p.publish("allow/x", b"kept")
    got = w.recv_publish()
    assert got.topic == "allow/x" and got.payload == b"kept"


def test_post_json_body_placeholders(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port, extra='headers { X-Client = "${clientid}" }')))
    c = client(b, "dev-1", "bob")
    assert allowed(c, "allow/a b/ü", qos=2, retain=True)
    r = srv.last()
    assert r.method == "POST" and r.path == "/acl"
    assert r.headers["content-type"] == "application/json"
    assert r.headers["x-client"] == "dev-1"
    assert r.params() == {"username": "bob", "clientid": "dev-1", "topic": "allow/a b/ü", "action": "publish",
                          "qos": "2", "retain": "true"}
    assert sub_codes(c, "allow/+/#", qos=1) == [1]
    # the retained message is checked again before delivery (action subscribe, the message's topic)
    got = c.recv_publish()
    assert got.topic == "allow/a b/ü" and got.retain
    assert srv.last().params()["topic"] == "allow/a b/ü" and srv.last().params()["action"] == "subscribe"
    subs = [r.params() for r in srv.requests if r.params().get("topic") == "allow/+/#"]
    assert subs == [{"username": "bob", "clientid": "dev-1", "topic": "allow/+/#", "action": "subscribe",
                     "qos": "1", "retain": "false"}]


def test_get_query_and_url_placeholders(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port, method="get", url_path="/acl/${username}/${action}?src=bw",
                                          body='body { topic = "${topic}", cid = "${clientid}" }')))
    c = client(b, "dev&2", "carol/x y")
    assert allowed(c, "allow/q&a=1")
    r = srv.last()
    assert r.method == "GET"
    assert r.raw_path.startswith("/acl/carol%2Fx%20y/publish?src=bw&"), r.raw_path
    assert r.query == {"src": "bw", "topic": "allow/q&a=1", "cid": "dev&2"}
    assert r.body == b""


def test_form_body(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port, extra='headers { content-type = "application/x-www-form-urlencoded" }')))
    c = client(b, "f1", "dave")
    assert pub_rc(c, "deny/x=1&y") == NOT_AUTHORIZED
    r = srv.last()
    assert r.headers["content-type"].startswith("application/x-www-form-urlencoded")
    assert r.params()["topic"] == "deny/x=1&y"
    assert r.params()["username"] == "dave"


def test_ignore_and_other_statuses_go_to_the_next_source(start_broker, acl_server):
    srv = acl_server()
    acl = '{allow, all, publish, ["ignore/ok", "e500/ok"]}.\n{deny, all, publish, ["allow/blocked"]}.\n'
    b = start(start_broker, config(source(srv.port), FILE_SOURCE, no_match="deny"), acl=acl)
    c = client(b, "n1", "erin")
    assert allowed(c, "ignore/ok")                     # http: ignore -> the file allows
    assert allowed(c, "e500/ok")                       # http: 500 -> no match -> the file allows
    assert pub_rc(c, "ignore/no") == NOT_AUTHORIZED    # neither: no_match = deny
    assert allowed(c, "allow/blocked")                 # http decides first


def test_anonymous_client_placeholders_render_empty(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port)))
    c = client(b, "anon1")
    assert allowed(c, "allow/t")
    assert srv.last().params()["username"] == ""


@pytest.mark.parametrize("no_match", ["allow", "deny"])
def test_server_down(start_broker, no_match):
    b = start(start_broker, config(source(free_port()), no_match=no_match))
    c = client(b, "d1", "frank")
    assert allowed(c, "allow/t") == (no_match == "allow")
    c.ping()
    b.wait_for_log(r"authorization source http failed to answer")


@pytest.mark.timeout(60)
def test_slow_server_times_out_without_blocking_others(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port, extra="request_timeout = 1s")))
    slow = client(b, "s1", "gina")
    quick = client(b, "q1", "hank")
    pid = slow.publish("slow/t", b"x", qos=1, complete=False)
    time.sleep(0.1)
    t0 = time.monotonic()
    assert allowed(quick, "allow/t")
    assert time.monotonic() - t0 < 0.9
    ack = slow.wait_for(m.PUBACK, timeout=5, packet_id=pid)
    assert ack.rc == NOT_AUTHORIZED      # timed out: no match, no_match = deny
    assert slow.is_open()


@pytest.mark.timeout(60)
def test_shutdown_with_a_check_in_flight(start_broker, acl_server):
    """SIGTERM while the check of a retained delivery waits for a slow server: clean exit."""
    def answer(req):
        p = req.params()
        if p.get("action") == "subscribe" and p.get("topic") == "slowr/x":
            return "slow"
        return (200, "application/json", {"result": "allow"})
    srv = acl_server(answer)
    b = start(start_broker, config(source(srv.port, extra="request_timeout = 10s")))
    c = client(b, "sd1", "jack")
    assert allowed(c, "slowr/x", retain=True)
    n = len(srv.requests)
    assert sub_codes(c, "slowr/+") == [1]
    wait_for = time.monotonic() + 5
    while len(srv.requests) < n + 2 and time.monotonic() < wait_for:
        time.sleep(0.02)                      # the retained delivery's check has started
    assert len(srv.requests) == n + 2
    assert b.stop() == 0


def test_cache_answers_once_per_topic(start_broker, acl_server):
    srv = acl_server()
    b = start(start_broker, config(source(srv.port), cache=True))
    c = client(b, "k1", "ivan")
    for _ in range(3):
        assert allowed(c, "allow/cached")
    assert len([r for r in srv.requests if r.params().get("topic") == "allow/cached"]) == 1


@pytest.mark.parametrize("body,err", [
    ('method = post', r"url is required"),
    ('url = "ftp://h/x"', r"http:// or https://"),
    ('url = "http://${username}/x"', r"path and query only"),
    ('method = get, url = "http://h/", headers { content-type = "application/json" }', r"GET request"),
    ('url = "http://h/", headers { content-type = "text/plain" }', r"content-type must be"),
    ('url = "http://h/", query = "x"', r"unknown key"),
])
def test_config_errors(check_config, body, err):
    cfg = 'authorization {\n  sources = [\n    {\n      type = http\n      %s\n    }\n  ]\n}\n' % body
    rc, out = check_config(cfg)
    assert rc != 0, out
    assert re.search(err, out), out
    assert re.search(r"\.conf:\d+", out), out
