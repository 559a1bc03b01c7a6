"""Configuration as an operator meets it: `bulwark --check`, start-up refusals, the unknown-key
policy (SPEC §2), the seed examples, HOCON conveniences (${ENV}, include, durations, byte sizes)
and the node/log settings."""
import os
import re
import socket
from pathlib import Path

import pytest

from bw import mqtt_raw as m
from bw.broker import REPO, bulwark_bin, run_command

# The seed documents' config snippets (SPEC §2), vendored in the repo (examples/).
EXAMPLES = REPO / "examples"
LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\dT\S+ (debug|info|warning|error): ")


# ---- helpers -----------------------------------------------------------------------------------

def line_of(text, needle, nth=1):
    """1-based line number of the nth line of text containing needle."""
    seen = 0
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            seen += 1
            if seen == nth:
                return i
    raise AssertionError(f"{needle!r} not in config text")


def error_lines(out):
    """The lines of --check / start-up output that are not log lines (the one-line reason)."""
    return [ln for ln in out.splitlines() if ln.strip() and not LOG_LINE.match(ln)
            and not ln.startswith("==== harness:")]


def warnings(out):
    return [ln for ln in out.splitlines() if re.match(r"^\S+ warning: ", ln)]


def assert_one_error(status, out, line, *words):
    """--check refused the config with exactly one line naming bulwark.conf:LINE and every word."""
    assert status == 1, f"expected exit 1, got {status}:\n{out}"
    errs = error_lines(out)
    assert len(errs) == 1, f"expected one error line, got {errs!r}\n{out}"
    assert re.search(r"bulwark\.conf:%d\b" % line, errs[0]), f"file:line {line} not named in {errs[0]!r}"
    for w in words:
        assert w in errs[0], f"{w!r} not in {errs[0]!r}"
    return errs[0]


def assert_ok(status, out):
    assert status == 0, f"--check refused a valid config (exit {status}):\n{out}"
    assert not error_lines(out) or all("configuration OK" in ln for ln in error_lines(out)), out


def pem(path):
    return Path(path).read_text()


def check_file(cfg_path, cwd, env=None):
    """`bulwark --check -c cfg_path` in cwd with extra environment."""
    return run_command([bulwark_bin(), "--check", "-c", str(cfg_path)], cwd, env=env)


def pki_ssl(cert="{{pki.server_chain}}", key="{{pki.server_key}}", extra=""):
    return f"""listeners.ssl.default {{
  bind = "127.0.0.1:8883"
  ssl_options {{
    certfile = "{cert}"
    keyfile  = "{key}"
    {extra}
  }}
}}
"""


# ---- valid configs -----------------------------------------------------------------------------

def test_check_accepts_a_valid_config(check_config):
    cfg = """
# a commented, realistic configuration
node { data_dir = "data", workers = 2 }
log.console.level = info
mqtt {
  max_packet_size = 1MB
  max_clientid_len = 65535
  idle_timeout = 15s
  session_expiry_interval = 2h
  max_inflight = 32, max_mqueue_len = 1000   // commas and comments
  retain_available = true
  keepalive_multiplier = 1.5
  server_keepalive = disabled
}
listeners.tcp.default { bind = "127.0.0.1:1883", max_connections = infinity }
listeners.tcp.internal { bind = 1884, access_rules = ["allow 127.0.0.1/32", "deny all"] }
""" + pki_ssl(extra='cacertfile = "{{pki.ca_bundle}}"\n    verify = verify_peer\n    fail_if_no_peer_cert = true')
    status, out = check_config(cfg)
    assert_ok(status, out)
    assert "configuration OK" in out
    assert not warnings(out), out


def test_version_prints_the_version(tmp_path):
    status, out = run_command([bulwark_bin(), "--version"], tmp_path)
    assert status == 0
    assert re.fullmatch(r"bulwark \d+\.\d+\.\d+\S*\n?", out), out


# ---- broken configs: one line naming file:line and key ------------------------------------------

def test_typo_key_is_an_error(check_config):
    cfg = "mqtt {\n  max_packet_size = 1MB\n  max_inflite = 16\n}\n"
    status, out = check_config(cfg)
    assert_one_error(status, out, 3, "mqtt.max_inflite")


def test_typo_key_dotted_form_is_an_error(check_config):
    cfg = "# comment\n\nmqtt.max_inflite = 16\n"
    status, out = check_config(cfg)
    assert_one_error(status, out, 3, "mqtt.max_inflite")


def test_typo_in_listener_key_is_an_error(check_config):
    cfg = 'listeners.tcp.default {\n  bind = "127.0.0.1:1883"\n  max_conections = 10\n}\n'
    status, out = check_config(cfg)
    assert_one_error(status, out, 3, "listeners.tcp.default.max_conections")


@pytest.mark.parametrize("text,key", [
    ("mqtt.max_inflight = abc", "mqtt.max_inflight"),
    ("mqtt.max_inflight = 0", "mqtt.max_inflight"),
    ('listeners.tcp.default.bind = "nope"', "listeners.tcp.default.bind"),
    ("listeners.tcp.default.bind = 99999", "listeners.tcp.default.bind"),
    ("mqtt.retain_available = maybe", "mqtt.retain_available"),
    ("mqtt.idle_timeout = 5parsecs", "mqtt.idle_timeout"),
    ("mqtt.max_packet_size = lots", "mqtt.max_packet_size"),
    ('listeners.tcp.default.access_rules = ["permit everyone"]', "listeners.tcp.default.access_rules"),
    ("listeners.ssl.default.ssl_options.verify = verify_maybe", "listeners.ssl.default.ssl_options.verify"),
    ("log.console.level = chatty", "log.console.level"),
], ids=["int-abc", "int-range", "bind-nope", "bind-port-range", "bool", "duration", "bytesize",
        "access-rule", "verify-enum", "log-level"])
def test_bad_value_is_an_error(check_config, text, key):
    cfg = "# line 1\nmqtt.max_clientid_len = 100\n" + text + "\n"
    status, out = check_config(cfg)
    assert_one_error(status, out, 3, key)


@pytest.mark.parametrize("text,line", [
    ("mqtt {\n  max_inflight = 3\n  retain_available = = true\n}\n", 3),
    ("a = 1\nb = 2\nmqtt {\n  max_inflight = 3\n  max_mqueue_len 10 20 }\n", 5),
    ('a = 1\nlisteners.tcp.default.bind = "127.0.0.1:1883\n', 2),
    ("a {\n  b = [1, 2\n}\n", 3),
])
def test_syntax_error_names_the_line(check_config, text, line):
    status, out = check_config(text)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    mm = re.search(r"bulwark\.conf:(\d+)", errs[0])
    assert mm and int(mm.group(1)) == line, errs[0]


def test_syntax_error_line_is_exact_deep_in_the_file(check_config):
    body = "".join(f"# filler {i}\n" for i in range(40))
    cfg = body + "mqtt {\n  max_inflight = 8\n  topic = a/#\n}\n"   # '#' glued to a value: refused
    status, out = check_config(cfg)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1 and re.search(r"bulwark\.conf:43\b", errs[0]), out


# ---- EMQX keys Bulwark ignores: load with a warning naming them -----------------------------------

@pytest.mark.parametrize("text,name", [
    ('node.cookie = "emqxsecretcookie"', "node.cookie"),
    ("cluster.name = emqxcl", "cluster"),
    ("cluster {\n  name = emqxcl\n  discovery_strategy = manual\n}", "cluster"),
    ("dashboard.listeners.http.bind = 18083", "dashboard"),
    ("listeners.tcp.default.acceptors = 16", "listeners.tcp.default.acceptors"),
    ("mqtt.shared_subscription_strategy = round_robin", "mqtt.shared_subscription_strategy"),
], ids=["node.cookie", "cluster.name", "cluster-block", "dashboard", "acceptors", "shared-strategy"])
def test_ignored_emqx_key_loads_with_one_warning(check_config, text, name):
    cfg = 'listeners.tcp.default.bind = "127.0.0.1:1883"\n' + text + "\n"
    status, out = check_config(cfg)
    assert_ok(status, out)
    w = [ln for ln in warnings(out) if name in ln]
    assert len(w) == 1, f"expected one warning naming {name}:\n{out}"
    assert re.search(r"bulwark\.conf:2\b", w[0]), w[0]


def test_ignored_key_warning_at_start(start_broker):
    b = start_broker('node.cookie = "emqxsecretcookie"\n')
    b.wait_for_log(r"warning: .*bulwark\.conf:%d: node\.cookie" % b.config_line(1))


# ---- features not built yet: "not supported yet: KEY (file:line)" --------------------------------

@pytest.mark.parametrize("text,key,nth", [
    ("listeners.ws.default {\n  bind = 8083\n}", "listeners.ws.default", 1),
], ids=["ws"])
def test_unbuilt_feature_is_refused_as_not_supported_yet(check_config, text, key, nth):
    cfg = "# header\n" + text + "\n"
    status, out = check_config(cfg)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    line = 1 + nth
    mm = re.search(r"not supported yet: (\S+) \((\S+):(\d+)\)$", errs[0])
    assert mm, f"not the 'not supported yet: KEY (file:line)' form: {errs[0]!r}"
    assert mm.group(1) == key and mm.group(2).endswith("bulwark.conf") and int(mm.group(3)) == line, errs[0]


# ---- TLS settings ----------------------------------------------------------------------------

def test_fail_if_no_peer_cert_with_verify_none_loads_with_a_warning(check_config):
    cfg = pki_ssl(extra="verify = verify_none\n    fail_if_no_peer_cert = true")
    status, out = check_config(cfg)
    assert_ok(status, out)
    w = [ln for ln in warnings(out) if "fail_if_no_peer_cert" in ln]
    assert len(w) == 1, out
    assert "bulwark.conf:" in w[0]


def test_verify_peer_without_cacertfile_is_refused(check_config):
    cfg = pki_ssl(extra="verify = verify_peer")
    status, out = check_config(cfg)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1 and "bulwark.conf:" in errs[0] and "cacertfile" in errs[0] \
        and "listeners.ssl.default" in errs[0], out


def _ssl_error_line(cfg):
    """Lines where the ssl block, the ssl_options block and its file keys are (any may be named)."""
    lines = {line_of(cfg, "listeners.ssl.default"), line_of(cfg, "ssl_options")}
    for k in ("certfile", "keyfile", "cacertfile"):
        if k in cfg:
            lines.add(line_of(cfg, k))
    return lines


@pytest.mark.parametrize("case", ["missing-cert", "missing-key", "mismatch", "not-a-cert", "encrypted-no-password",
                                  "missing-cacertfile", "cert-without-key"])
def test_bad_certificate_files_refused_by_check(check_config, pki, tmp_path, case):
    cert, key, word = "{{pki.server_chain}}", "{{pki.server_key}}", None
    files = {}
    extra = ""
    if case == "missing-cert":
        cert, word = "{{dir}}/etc/no-such-cert.pem", "no-such-cert.pem"
    elif case == "missing-key":
        key, word = "{{dir}}/etc/no-such-key.pem", "no-such-key.pem"
    elif case == "mismatch":
        key, word = "{{pki.server_ec_key}}", "keyfile"
    elif case == "not-a-cert":
        files["etc/junk.pem"] = "this is not PEM\n"
        cert, word = "{{dir}}/etc/junk.pem", "junk.pem"
    elif case == "encrypted-no-password":
        key, word = "{{pki.client_encrypted_key}}", "keyfile"
        cert = "{{pki.client_encrypted_cert}}"
    elif case == "missing-cacertfile":
        extra, word = 'cacertfile = "{{dir}}/etc/no-such-ca.pem"', "no-such-ca.pem"
    else:
        word = "keyfile"
    cfg = pki_ssl(cert, key, extra=extra)
    if case == "cert-without-key":
        cfg = "\n".join(ln for ln in cfg.splitlines() if "keyfile" not in ln) + "\n"
    status, out = check_config(cfg, files=files)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    mm = re.search(r"bulwark\.conf:(\d+)", errs[0])
    assert mm and int(mm.group(1)) in _ssl_error_line(cfg), errs[0]   # the block's line or the key's
    assert "listeners.ssl.default" in errs[0] and word in errs[0], errs[0]


@pytest.mark.parametrize("case", ["missing-cert", "mismatch"])
def test_bad_certificate_files_refused_at_start(start_broker, case):
    key = "{{pki.server_ec_key}}" if case == "mismatch" else "{{pki.server_key}}"
    cert = "{{dir}}/etc/no-such-cert.pem" if case == "missing-cert" else "{{pki.server_chain}}"
    b = start_broker(f"""
listeners.ssl.default {{
  ssl_options {{
    certfile = "{cert}"
    keyfile  = "{key}"
  }}
}}
""", ssl=True, start=False, expect_exit=None)
    status, log = b.run_to_exit(timeout=10)
    assert status != 0, log
    reason = [ln for ln in log.splitlines() if " error: " in ln or (ln.strip() and not LOG_LINE.match(ln)
                                                                    and not ln.startswith("===="))]
    assert len(reason) == 1, f"expected a one-line reason:\n{log}"
    assert "bulwark.conf:" in reason[0] and "listeners.ssl.default" in reason[0], reason[0]
    assert ("no-such-cert.pem" if case == "missing-cert" else "keyfile") in reason[0], reason[0]
    assert not b.running


def test_start_with_a_typo_exits_with_a_one_line_reason(start_broker):
    b = start_broker("mqtt {\n  max_inflite = 16\n}\n", start=False, expect_exit=None)
    status, log = b.run_to_exit(timeout=10)
    assert status != 0, log
    reason = [ln for ln in log.splitlines() if ln.strip() and not ln.startswith("====")]
    assert len(reason) == 1, f"expected a one-line reason:\n{log}"
    assert re.search(r"bulwark\.conf:%d\b" % b.config_line(2), reason[0]) and "mqtt.max_inflite" in reason[0], reason


def test_check_of_a_missing_config_file(tmp_path):
    status, out = check_file(tmp_path / "nope.conf", tmp_path)
    assert status != 0 and "nope.conf" in out, out
    assert len(error_lines(out)) == 1, out


def test_encrypted_key_with_password_passes_check_and_wrong_password_fails(check_config, pki):
    ok = pki_ssl("{{pki.client_encrypted_cert}}", "{{pki.client_encrypted_key}}", extra='password = "password"')
    status, out = check_config(ok)
    assert_ok(status, out)
    bad = pki_ssl("{{pki.client_encrypted_cert}}", "{{pki.client_encrypted_key}}", extra='password = "wrong"')
    status, out = check_config(bad)
    assert status == 1 and len(error_lines(out)) == 1 and "keyfile" in error_lines(out)[0], out


# ---- the seed examples ------------------------------------------------------------------------

def _seed_files(pki):
    return {"etc/certs/rootCAs.pem": pem(pki.root_ca_cert),
            "etc/certs/server-cert.pem": pem(pki.server_chain),
            "etc/certs/server-key.pem": pem(pki.server_key)}


def test_seed_002_one_way_passes_check_with_its_files(check_config, pki):
    text = (EXAMPLES / "seed-002-one-way.conf").read_text()
    status, out = check_config(text, files=_seed_files(pki))
    assert_ok(status, out)
    # fail_if_no_peer_cert = true with verify_none: loads, with one warning (SPEC §2)
    w = [ln for ln in warnings(out) if "fail_if_no_peer_cert" in ln]
    assert len(w) == 1, out


def test_seed_002_two_way_passes_check_with_its_files(check_config, pki):
    text = (EXAMPLES / "seed-002-two-way.conf").read_text()
    status, out = check_config(text, files=_seed_files(pki))
    assert_ok(status, out)
    assert not warnings(out), out


def test_seed_002_without_its_files_is_refused(check_config):
    text = (EXAMPLES / "seed-002-two-way.conf").read_text()
    status, out = check_config(text)
    assert status == 1 and len(error_lines(out)) == 1, out
    assert "etc/certs/" in error_lines(out)[0], out


def test_seed_000_certificate_mapping_passes_check(check_config, pki):
    text = (EXAMPLES / "seed-000-peer-cert-mapping.conf").read_text()
    status, out = check_config(text, files=_seed_files(pki))
    assert_ok(status, out)


@pytest.mark.parametrize("seed,bundle", [
    ("seed-002-managed-certs-global.conf", "certs/global/example-cert-1"),
    ("seed-002-managed-certs-tenant.conf", "certs/tenant-a/mqtt-cert"),
])
def test_managed_certs_seeds_name_the_missing_bundle(check_config, pki, seed, bundle):
    # With the bundles in place these pass --check (tests/e2e/test_tls_sni.py); without them the
    # one error line names the bundle folder that is missing.
    text = (EXAMPLES / seed).read_text()
    status, out = check_config(text, files=_seed_files(pki))
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1, out
    assert bundle in errs[0], errs[0]


# ---- ${ENV} substitution and include --------------------------------------------------------

def test_env_substitution_in_unquoted_values(start_broker, raw_client):
    b = start_broker("mqtt.max_inflight = ${BW_TEST_INFLIGHT}\nmqtt.max_packet_size = ${BW_TEST_MPS}\n",
                     env={"BW_TEST_INFLIGHT": "7", "BW_TEST_MPS": "32KB"})
    c = raw_client(b, version=5)
    ack = c.connect("env-1")
    assert ack.props.get("receive_maximum") == 7
    assert ack.props.get("maximum_packet_size") == 32 * 1024


def test_env_substitution_quoted_stays_literal(start_broker, raw_client):
    # A quoted "${...}" is a template (auth queries, ACL topics, mountpoints), never the environment.
    b = start_broker("""
listeners.tcp.mounted {
  bind = "127.0.0.1:{{port.mnt}}"
  mountpoint = "lit/${BW_TEST_MP}/"
}
""", env={"BW_TEST_MP": "fromenv"})
    sub = raw_client(b, version=5)
    sub.connect("lit-sub")
    sub.subscribe("lit/#", qos=0)
    pub = raw_client(b.port("mnt"), version=5)
    pub.connect("lit-pub")
    pub.publish("t", b"x", qos=1)
    sub.recv_publish(topic="lit/${BW_TEST_MP}/t", payload=b"x")


def test_env_substitution_unset_variable_is_an_error(tmp_path):
    cfg = tmp_path / "bulwark.conf"
    cfg.write_text("# x\nmqtt.max_inflight = ${BW_TEST_SURELY_UNSET_VAR}\n")
    env = {k: v for k, v in os.environ.items() if k != "BW_TEST_SURELY_UNSET_VAR"}
    status, out = check_file(cfg, tmp_path, env=env)
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1 and "bulwark.conf:2" in errs[0] and "BW_TEST_SURELY_UNSET_VAR" in errs[0], out


def test_env_substitution_value_is_validated(tmp_path):
    cfg = tmp_path / "bulwark.conf"
    cfg.write_text("mqtt.max_inflight = ${BW_TEST_INFLIGHT}\n")
    status, out = check_file(cfg, tmp_path, env={"BW_TEST_INFLIGHT": "many"})
    assert status == 1 and len(error_lines(out)) == 1, out
    assert "bulwark.conf:1" in error_lines(out)[0] and "mqtt.max_inflight" in error_lines(out)[0], out


def test_include_file(start_broker, raw_client):
    b = start_broker('include "conf.d/limits.conf"\nmqtt.retain_available = true\n',
                     files={"conf.d/limits.conf": "mqtt {\n  max_inflight = 9\n  max_packet_size = 20KB\n}\n"})
    c = raw_client(b, version=5)
    ack = c.connect("inc-1")
    assert ack.props.get("receive_maximum") == 9
    assert ack.props.get("maximum_packet_size") == 20 * 1024


def test_error_in_included_file_names_that_file(check_config):
    status, out = check_config('mqtt.max_inflight = 4\ninclude "extra.conf"\n',
                               files={"extra.conf": "# included\nmqtt.max_inflite = 4\n"})
    assert status == 1, out
    errs = error_lines(out)
    assert len(errs) == 1 and re.search(r"extra\.conf:2\b", errs[0]) and "mqtt.max_inflite" in errs[0], out


def test_missing_required_include_is_an_error(check_config):
    status, out = check_config('# x\ninclude required("nowhere.conf")\n')
    assert status == 1 and len(error_lines(out)) == 1, out
    assert "bulwark.conf:2" in error_lines(out)[0] and "nowhere.conf" in error_lines(out)[0], out


# ---- durations and byte sizes ---------------------------------------------------------------

def test_max_packet_size_in_kb_is_enforced(start_broker, raw_client):
    b = start_broker("mqtt.max_packet_size = 64KB\n")
    sub = raw_client(b, version=5)
    sub.connect("mps-sub")
    sub.subscribe("big/#", qos=1)
    pub = raw_client(b, version=5)
    ack = pub.connect("mps-pub")
    assert ack.props.get("maximum_packet_size") == 64 * 1024
    fits = b"x" * (60 * 1024)
    pub.publish("big/ok", fits, qos=1)
    assert sub.recv_publish(topic="big/ok").payload == fits
    pub.send(m.publish("big/no", b"y" * (64 * 1024 + 1), qos=1, packet_id=7, version=5))
    pub.expect_closed(reason=0x95)
    sub.expect_nothing(0.3)
    b.wait_for_log(r"mps-pub.*(max_packet_size|too large)")


def test_idle_timeout_duration_closes_silent_connection(start_broker):
    b = start_broker("mqtt.idle_timeout = 1s\n")
    s = socket.create_connection(("127.0.0.1", b.tcp_port), timeout=5)
    try:
        s.settimeout(6)
        assert s.recv(1) == b"", "connection without CONNECT must be closed after idle_timeout"
    finally:
        s.close()
    b.wait_for_log(r"idle_timeout")


@pytest.mark.parametrize("text", [
    "mqtt.idle_timeout = 1500ms", "mqtt.session_expiry_interval = 7d", "mqtt.await_rel_timeout = 5m",
    "mqtt.retry_interval = 1h30m", "mqtt.max_packet_size = 100MB", "mqtt.max_packet_size = 512b",
    "mqtt.max_packet_size = 1024", "mqtt.session_expiry_interval = 3600",
])
def test_durations_and_sizes_accepted(check_config, text):
    status, out = check_config(text + "\n")
    assert_ok(status, out)


def test_max_packet_size_above_mqtt_limit_refused(check_config):
    status, out = check_config("mqtt.max_packet_size = 1GB\n")
    assert_one_error(status, out, 1, "mqtt.max_packet_size")


# ---- node and log ---------------------------------------------------------------------------

def test_node_workers(start_broker):
    b = start_broker("node.workers = 3\n")
    b.wait_for_log(r"started \(3 workers")
    status, out = b.ctl("status")
    assert status == 0 and "3 workers" in out, out


def test_node_workers_out_of_range_refused(check_config):
    status, out = check_config("node {\n  workers = 100000\n}\n")
    assert_one_error(status, out, 2, "node.workers")


def test_node_data_dir(start_broker):
    b = start_broker('node.data_dir = "state/here"\n')
    b.wait_for_log(r"bulwark \S+ started")       # the control socket comes after the listeners
    assert (b.dir / "state/here").is_dir()
    assert (b.dir / "state/here/bulwark.sock").exists()
    assert b.ctl("status")[0] == 0


def test_log_console_level_debug_shows_debug_lines(start_broker, raw_client):
    b = start_broker("log.console.level = debug\n")
    c = raw_client(b, version=4)
    port = c.sock.getsockname()[1]
    c.connect("dbg-1")
    b.wait_for_log(r" debug: .*127\.0\.0\.1:%d" % port)


def test_log_console_level_warning_hides_info_lines(start_broker, raw_client):
    b = start_broker("log.console { level = warning }\nnode.cookie = x\n")
    c = raw_client(b, version=4)
    c.connect("quiet-1")
    c.ping()
    b.wait_for_log(r"warning: .*node\.cookie")
    assert not re.search(r" (info|debug): ", b.run_log()), b.run_log()
