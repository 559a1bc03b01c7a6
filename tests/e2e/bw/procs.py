"""Every process a test starts goes through spawn(), so none can outlive its test.

Safety nets, in order:
  * the test's fixtures stop what they started (Broker.stop, clients' close);
  * conftest's autouse fixture calls reap(test_start_mark) after every test: anything spawned during
    the test and still alive is SIGKILLed;
  * atexit SIGKILLs whatever is left when the pytest process (or xdist worker) exits;
  * `setpriv --pdeathsig KILL` (util-linux) makes the kernel kill the child if the pytest process
    dies without running atexit (SIGKILL, crash).
"""
import atexit
import os
import shutil
import signal
import subprocess
import threading

_lock = threading.Lock()
_procs = []          # (seq, Popen)
_seq = 0
_SETPRIV = shutil.which("setpriv")


def _has_pdeathsig():
    if not _SETPRIV:
        return False
    try:
        out = subprocess.run([_SETPRIV, "--help"], capture_output=True, text=True, timeout=5).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "--pdeathsig" in out


_PDEATHSIG = _has_pdeathsig()


def mark():
    """A mark to pass to reap(): processes spawned after it."""
    return _seq


def spawn(argv, *, pdeathsig=True, **kw):
    """subprocess.Popen(argv, **kw) in its own session, registered for cleanup. With pdeathsig the
    command is run through `setpriv --pdeathsig KILL` (same pid: setpriv execs it)."""
    global _seq
    argv = [str(a) for a in argv]
    if pdeathsig and _PDEATHSIG:
        argv = [_SETPRIV, "--pdeathsig", "KILL", "--"] + argv
    kw.setdefault("stdin", subprocess.DEVNULL)
    kw.setdefault("start_new_session", True)
    p = subprocess.Popen(argv, **kw)
    with _lock:
        _seq += 1
        _procs.append((_seq, p))
    return p


def kill(p):
    """SIGKILL p (and its process group) if it is still running, then reap it."""
    if p.poll() is None:
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            try:
                p.kill()
            except ProcessLookupError:
                pass
    try:
        p.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def reap(since=0):
    """SIGKILL every registered process spawned after mark `since` that is still running.
    Returns the argv lists of the processes that had to be killed."""
    with _lock:
        victims = [p for s, p in _procs if s > since]
        _procs[:] = [(s, p) for s, p in _procs if s <= since and p.poll() is None]
    killed = []
    for p in victims:
        if p.poll() is None:
            killed.append(p.args)
            kill(p)
    return killed


atexit.register(reap, 0)
