"""Free TCP ports on 127.0.0.1.

A port is found by binding 127.0.0.1:0 and reading what the kernel picked. Two guards make this
safe when pytest-xdist runs several workers at once:
  * a port handed out once is never handed out again by the same process;
  * each xdist worker only takes ports p with (p // 2) % worker_count == worker_index, so two
    workers of one run can never be given the same port, even if the kernel offers it to both.
    (p // 2, not p: Linux hands out ports of one parity for bind(0), so p % 2 would never match.)
"""
import os
import socket
import threading

_lock = threading.Lock()
_handed_out = set()


def _worker_slot():
    """(index, count) of this xdist worker, (0, 1) outside xdist."""
    wid = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if wid.startswith("gw") and count > 1:
        return int(wid[2:]) % count, count
    return 0, 1


def free_port(host="127.0.0.1"):
    """Return a TCP port on host that is free now and was not handed out before in this process."""
    index, count = _worker_slot()
    with _lock:
        for _ in range(2000):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind((host, 0))
                port = s.getsockname()[1]
            finally:
                s.close()
            if (port // 2) % count != index or port in _handed_out:
                continue
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port found after 2000 attempts")


def free_ports(n, host="127.0.0.1"):
    """Return n distinct free ports."""
    return [free_port(host) for _ in range(n)]


def port_accepts(port, host="127.0.0.1", timeout=0.5):
    """True if a TCP connection to host:port succeeds now (the probe connection is closed at once)."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False
