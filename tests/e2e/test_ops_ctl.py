"""`bulwark ctl`: status, clients list/kick, errors when the broker is not there, and the
permissions of the control socket and data dir (SPEC §1; EMQX reference §7 for kicks)."""
import os
import re
import stat

from bw.broker import bulwark_bin, run_command
from bw.clients import Tls


def ready(b):
    """The harness's readiness is "the MQTT ports accept"; the broker creates its control socket
    a moment later (broker.c: listeners, then the control socket, then "started")."""
    b.wait_for_log(r"bulwark \S+ started")
    return b


def test_ctl_status(start_broker, raw_client):
    b = start_broker("node.workers = 2\n")
    ready(b)
    c = raw_client(b, version=5)
    c.connect("status-1")
    c.subscribe("s/#", qos=1)
    status, out = b.ctl("status")
    assert status == 0, out
    assert "running" in out and "2 workers" in out, out
    assert re.search(r"\b1 clients?\b", out), out


def test_ctl_clients_list_shows_id_listener_and_protocol(start_broker, raw_client, pki):
    b = ready(start_broker("""
listeners.tcp.second { bind = "127.0.0.1:{{port.second}}" }
listeners.ssl.default {
  ssl_options { certfile = "{{pki.server_chain}}", keyfile = "{{pki.server_key}}" }
}
""", ssl=True))
    a = raw_client(b, version=5)
    a.connect("dev-v5")
    c = raw_client(b.port("second"), version=4)
    c.connect("dev-v311", username="carol", password=b"pw")
    d = raw_client(b, version=3)
    d.connect("dev-v31")
    e = raw_client(b, version=5, tls=Tls(ca=pki.root_ca_cert).context())
    e.connect("dev-tls")
    status, out = b.ctl("clients", "list")
    assert status == 0, out
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.strip()}
    assert set(lines) >= {"dev-v5", "dev-v311", "dev-v31", "dev-tls"}, out
    assert "tcp:default" in lines["dev-v5"] and re.search(r"5(\.0)?\b", lines["dev-v5"]), lines["dev-v5"]
    assert "tcp:second" in lines["dev-v311"] and "3.1.1" in lines["dev-v311"], lines["dev-v311"]
    assert "carol" in lines["dev-v311"], lines["dev-v311"]
    assert "tcp:default" in lines["dev-v31"] and re.search(r"3\.1\b(?!\.)", lines["dev-v31"]), lines["dev-v31"]
    assert "ssl:default" in lines["dev-tls"], lines["dev-tls"]
    # a client that left is no longer listed as connected
    a.disconnect()
    deadline_out = ""
    for _ in range(100):
        _, deadline_out = b.ctl("clients", "list")
        row = [ln for ln in deadline_out.splitlines() if ln.startswith("dev-v5")]
        if not row or "disconnected" in row[0]:
            break
    else:
        raise AssertionError(f"dev-v5 still listed as connected:\n{deadline_out}")


def test_ctl_clients_kick_sends_0x98_and_publishes_the_will(start_broker, raw_client):
    b = start_broker("")
    ready(b)
    watcher = raw_client(b, version=5)
    watcher.connect("watcher")
    watcher.subscribe("wills/#", qos=1)
    victim = raw_client(b, version=5)
    victim.connect("victim", will={"topic": "wills/victim", "payload": b"kicked", "qos": 1})
    status, out = b.ctl("clients", "kick", "victim")
    assert status == 0, out
    victim.expect_closed(reason=0x98)
    watcher.recv_publish(topic="wills/victim", payload=b"kicked")
    b.wait_for_log(r"victim.*kick")
    # the watcher is untouched
    watcher.ping()


def test_ctl_kick_v3_client_closes_it(start_broker, raw_client):
    b = start_broker("")
    ready(b)
    victim = raw_client(b, version=4)
    victim.connect("old-victim")
    status, out = b.ctl("clients", "kick", "old-victim")
    assert status == 0, out
    victim.expect_closed()


def test_ctl_kick_unknown_client_fails(start_broker, raw_client):
    b = start_broker("")
    ready(b)
    c = raw_client(b, version=5)
    c.connect("present")
    status, out = b.ctl("clients", "kick", "absent")
    assert status != 0, out
    assert "absent" in out or "no such client" in out, out
    c.ping()


def test_ctl_unknown_command_fails(start_broker):
    b = start_broker("")
    ready(b)
    status, out = b.ctl("frobnicate")
    assert status != 0 and "frobnicate" in out, out


def test_ctl_against_a_stopped_broker_is_a_clear_error(start_broker):
    b = start_broker("")
    ready(b)
    assert b.ctl("status")[0] == 0
    b.stop()
    status, out = b.ctl("status", timeout=10)
    assert status != 0, out
    assert "cannot reach the broker" in out or "not running" in out, out
    assert len(out.strip().splitlines()) == 1, out


def test_ctl_against_a_crashed_broker_is_a_clear_error(start_broker):
    b = start_broker("", expect_exit=None)
    ready(b)
    b.kill()                       # SIGKILL: the socket file stays behind
    status, out = b.ctl("status", timeout=10)
    assert status != 0, out
    assert "cannot reach the broker" in out or "not running" in out, out


def test_ctl_with_no_broker_ever_started(tmp_path):
    status, out = run_command([bulwark_bin(), "ctl", "--data-dir", "data", "status"], tmp_path, timeout=10)
    assert status != 0 and out.strip(), out
    assert "data/bulwark.sock" in out or "data" in out, out


def test_ctl_finds_the_broker_through_its_config(start_broker, raw_client):
    b = start_broker('node.data_dir = "var/lib"\n')
    ready(b)
    c = raw_client(b, version=4)
    c.connect("via-config")
    status, out = run_command([bulwark_bin(), "ctl", "-c", str(b.config_path), "clients", "list"], b.dir, timeout=10)
    assert status == 0 and "via-config" in out, out


def test_control_socket_and_data_dir_are_owner_only(start_broker):
    b = start_broker("")
    ready(b)
    sock = b.data_dir / "bulwark.sock"
    st = os.stat(sock)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o600, oct(st.st_mode)
    assert stat.S_IMODE(os.stat(b.data_dir).st_mode) == 0o700, oct(os.stat(b.data_dir).st_mode)


def test_ctl_reload_without_tls_listeners(start_broker):
    b = start_broker("")
    ready(b)
    status, out = b.ctl("reload")
    assert status == 0, out


def test_second_broker_on_the_same_data_dir_is_refused(start_broker, raw_client):
    a = ready(start_broker(""))
    b = start_broker('node.data_dir = "%s"\n' % a.data_dir, name="second", start=False, expect_exit=None)
    status, log = b.run_to_exit(timeout=10)
    assert status != 0, log
    assert "in use" in log or "running" in log, log
    # the first one is untouched: its control socket still answers
    status, out = a.ctl("status")
    assert status == 0, out
    c = raw_client(a, version=4)
    c.connect("still-first")
