"""The harness's own helpers (no broker needed): config tokens, base snippet, ports, processes."""
import socket

import pytest

from bw import config as bwconfig
from bw import procs
from bw.broker import Broker, BrokerError, bulwark_bin
from bw.ports import free_port, port_accepts


def test_tokens_render_ports_pki_paths_and_values(tmp_path, pki):
    b = Broker(tmp_path, 'a = "{{port.x}}"\nb = "{{port.x}}"\nc = "{{pki.server_chain}}"\nd = {{ n }}\n'
                         'e = "{{dir}}/f"\nobj { k = 1 }\n', pki=pki, values={"n": 7})
    text = b.config_path.read_text()
    assert f'a = "{b.port("x")}"\nb = "{b.port("x")}"' in text
    assert f'c = "{pki.server_chain}"' in text and "d = 7" in text and f'e = "{tmp_path}/f"' in text
    assert "obj { k = 1 }" in text
    assert 'listeners.tcp.default.bind = "127.0.0.1:%d"' % b.tcp_port in text
    assert "listeners.ssl.default = marked_for_deletion" in text
    lines = text.splitlines()
    assert lines[b.config_line(1) - 1].startswith("a = ")
    assert b.data_dir == tmp_path / "data"


def test_unknown_token_is_an_error(tmp_path):
    with pytest.raises(KeyError, match="nosuch"):
        Broker(tmp_path, "x = {{nosuch}}")


def test_base_snippet_guards(tmp_path):
    with pytest.raises(ValueError, match="ssl=True"):
        Broker(tmp_path, "listeners.ssl.default { ssl_options { certfile = x } }")
    with pytest.raises(ValueError, match="bind"):
        Broker(tmp_path, 'listeners.tcp.default { bind = "0.0.0.0:1883" }')
    Broker(tmp_path, "listeners.ssl.default { ssl_options { certfile = x } }", ssl=True)
    Broker(tmp_path, "listeners.tcp.default = marked_for_deletion")   # deleting is fine
    b = Broker(tmp_path, 'listeners.tcp.default { bind = "127.0.0.1:{{port.t}}" }', base=False)
    assert b.config_path.read_text() == 'listeners.tcp.default { bind = "127.0.0.1:%d" }' % b.port("t")
    assert bwconfig.base_snippet(tcp=False, ssl=True).splitlines()[1:3] == [
        "listeners.tcp.default = marked_for_deletion", 'listeners.ssl.default.bind = "127.0.0.1:{{port.ssl}}"']


def test_data_dir_is_read_from_the_config(tmp_path):
    b = Broker(tmp_path, 'node { data_dir = "state" }')
    assert b.data_dir == tmp_path / "state"


def test_free_ports_are_unique_and_bindable():
    ports = [free_port() for _ in range(50)]
    assert len(set(ports)) == 50
    for p in ports[:5]:
        s = socket.socket()
        s.bind(("127.0.0.1", p))
        s.close()
        assert not port_accepts(p)


def test_reap_kills_leftovers():
    mark = procs.mark()
    p = procs.spawn(["sleep", "60"])
    assert procs.reap(mark) == [p.args] and p.poll() is not None


def test_missing_binary_is_reported(tmp_path, monkeypatch):
    monkeypatch.setenv("BULWARK_BIN", str(tmp_path / "nope"))
    with pytest.raises(BrokerError, match="not found"):
        bulwark_bin()


def test_broker_with_a_stand_in_binary(start_broker, tmp_path):
    """The Broker lifecycle with a tiny Python TCP server standing in for the broker."""
    script = tmp_path / "fake.py"
    script.write_text(
        "import re, signal, socket, sys\n"
        "port = int(re.search(r'127.0.0.1:(\\d+)', open(sys.argv[1]).read()).group(1))\n"
        "s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n"
        "s.bind(('127.0.0.1', port)); s.listen()\n"
        "signal.signal(signal.SIGHUP, lambda *a: print('reloaded', flush=True))\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "print('listening', port, flush=True)\n"
        "while True: s.accept()[0].close()\n")
    b = start_broker("", argv=["/usr/bin/python3", str(script), "{config}"])
    assert b.wait_for_log(r"listening (\d+)").group(1) == str(b.tcp_port)
    assert b.rss_kb() > 0 and b.open_fds() > 0
    b.reload(wait_log=r"^reloaded$")
    b.restart()
    assert b.exit_codes == [0] and b.running
    assert b.log_text().count("listening") == 2 and b.run_log().count("listening") == 1


def test_check_config_and_ctl_plumbing(tmp_path, monkeypatch, check_config, start_broker):
    """--check and ctl invocations, with a shell script standing in for the binary."""
    fake = tmp_path / "fake-bulwark"
    fake.write_text(
        "#!/usr/bin/python3\n"
        "import re, signal, socket, sys, time\n"
        "a = sys.argv[1:]\n"
        "if a[0] == '--check':\n"
        "    print('checked', a[2], open(a[2]).read()); sys.exit(1)\n"
        "if a[0] == 'ctl':\n"
        "    print(' '.join(a)); sys.exit(0)\n"
        "signal.signal(signal.SIGTERM, lambda *x: sys.exit(0))\n"
        "port = int(re.search(r'127.0.0.1:(\\d+)', open(a[1]).read()).group(1))\n"
        "s = socket.socket(); s.bind(('127.0.0.1', port)); s.listen(); time.sleep(60)\n")
    fake.chmod(0o755)
    monkeypatch.setenv("BULWARK_BIN", str(fake))
    code, out = check_config('listeners.ssl.default { ssl_options { certfile = "{{pki.server_chain}}" } }')
    assert code == 1 and out.startswith("checked ") and "server-chain.crt" in out
    b = start_broker("")
    code, out = b.ctl("users", "list")
    assert code == 0 and out.strip() == "ctl --data-dir data users list"
