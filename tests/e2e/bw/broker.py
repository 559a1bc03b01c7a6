"""The Bulwark broker process, as tests drive it.

    b = Broker(workdir, config_text, pki=pki)   # renders tokens, allocates ports, writes the config
    b.start()                                    # runs `$BULWARK_BIN -c bulwark.conf` in workdir
    ...
    b.stop()                                     # SIGTERM, <=10 s, checks the exit status

Tests normally use the `start_broker` fixture (conftest.py), which also stops every broker at
teardown and fails the test on a bad exit status or a sanitizer report in the log.
"""
import os
import re
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path

from . import config as bwconfig
from . import procs
from .ports import free_port

REPO = Path(__file__).resolve().parents[3]
SANITIZER_RE = re.compile(r"ERROR: (?:Address|Leak|Thread|Memory)Sanitizer|runtime error: |"
                          r"WARNING: ThreadSanitizer|SUMMARY: UndefinedBehaviorSanitizer")
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


class BrokerError(AssertionError):
    """The broker did not do what the harness needed (start, stop, exit status)."""


def bulwark_bin():
    """The broker binary: $BULWARK_BIN, else <repo>/build/bulwark. Fails if it is not executable."""
    p = os.environ.get("BULWARK_BIN") or str(REPO / "build" / "bulwark")
    if not (os.path.isfile(p) and os.access(p, os.X_OK)):
        raise BrokerError(f"broker binary {p!r} not found or not executable "
                          f"(set BULWARK_BIN or run `make`)")
    return p


def ctl_argv(data_dir, args, config_path=None):
    """argv for `bulwark ctl`. THE one place that knows how ctl finds the running broker.

    SPEC §1 says ctl talks to a control socket in the data dir; `bulwark ctl [-c FILE | --data-dir DIR]
    COMMAND...` is what src/main.c's usage says. It runs with cwd = the broker's working directory and
    data_dir relative to it when possible (unix socket paths are limited to 107 bytes)."""
    return [bulwark_bin(), "ctl", "--data-dir", str(data_dir), *map(str, args)]


def _env(extra=None):
    env = dict(os.environ)
    env.setdefault("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1")
    env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1:halt_on_error=1")
    env.setdefault("LSAN_OPTIONS", "")
    if extra:
        env.update(extra)
    return env


def run_command(argv, cwd, timeout=30, env=None, input=None):
    """Run a command that must end by itself; returns (exit code, stdout+stderr text). A command still
    running after timeout is SIGKILLed and BrokerError is raised."""
    p = procs.spawn(argv, cwd=str(cwd), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                    stdin=subprocess.PIPE if input is not None else subprocess.DEVNULL, env=_env(env))
    try:
        out, _ = p.communicate(input=input.encode() if isinstance(input, str) else input, timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.kill(p)
        out = p.stdout.read() if p.stdout else b""
        raise BrokerError(f"{argv} did not finish within {timeout}s; output:\n{out.decode(errors='replace')}")
    return p.returncode, out.decode(errors="replace")


class Broker:
    """One broker process and its working directory.

    Arguments (all keyword except workdir and config):
      config       HOCON text with {{tokens}} (see bw.config)
      pki          the Pki whose paths {{pki.X}} resolves to
      values       extra {{NAME}} values
      base         prepend the base listener snippet (default True)
      tcp, ssl     what the base snippet does with the default listeners (default tcp on, ssl deleted)
      wait_ports   names of ports to wait for at start (default: every {{port.X}} in the config)
      files        {relative path: str|bytes} written into workdir before the first start
      expect_exit  exit status required when the harness stops it (default 0; None = don't check)
      argv         command to run instead of [bulwark, -c, <config>] (list; "{config}" is replaced)
      env          extra environment variables
      data_dir     the data dir relative to workdir (default "data", or node.data_dir found in config)
    """

    def __init__(self, workdir, config="", *, pki=None, values=None, base=True, tcp=True, ssl=False,
                 wait_ports=None, files=None, expect_exit=0, argv=None, env=None, data_dir=None,
                 config_name="bulwark.conf", start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT):
        self.dir = Path(workdir).resolve()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.pki = pki
        self.values = dict(values or {})
        self.ports = {}
        self.base = base
        self.tcp, self.ssl = tcp, ssl
        self.wait_ports = wait_ports
        self.expect_exit = expect_exit
        self.extra_env = env
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.config_path = self.dir / config_name
        self.log_path = self.dir / "broker.log"
        self._argv = argv
        self.proc = None
        self.exit_codes = []          # exit status of every finished run, in order
        self._run_log_start = 0
        for rel, content in (files or {}).items():
            self.write_file(rel, content)
        self.write_config(config)
        if data_dir is None:
            m = re.search(r"data_dir\s*[=:]\s*\"?([^\"\s,}]+)", self.config_text)
            data_dir = m.group(1) if m else "data"
        self.data_dir = (self.dir / data_dir).resolve()

    # ---- config -------------------------------------------------------------------------------

    def resolve(self, token):
        """The value of a {{token}} (allocating a port for a new port.NAME)."""
        head, _, rest = token.partition(".")
        if head == "port" and rest:
            if rest not in self.ports:
                self.ports[rest] = free_port()
            return self.ports[rest]
        if head == "pki" and rest:
            if self.pki is None:
                raise KeyError(f"{{{{{token}}}}} used but no pki was given")
            return getattr(self.pki, rest)
        if token == "dir":
            return str(self.dir)
        if token in self.values:
            return self.values[token]
        raise KeyError(f"unknown config token {{{{{token}}}}}")

    def render(self, text):
        """text with every {{token}} replaced (ports stay the same for the broker's lifetime)."""
        return bwconfig.render(text, self.resolve)

    def write_config(self, config):
        """(Re)write the config file from config text (with the base snippet unless base=False).
        Use before restart() or reload() to change the configuration; ports are kept by name."""
        if self.base:
            bwconfig.check_base_usage(config, self.tcp, self.ssl)
            head = bwconfig.base_snippet(self.tcp, self.ssl)
        else:
            head = ""
        self.raw_config = config
        self.line_offset = head.count("\n")
        self.config_text = self.render(head + config)
        self.config_path.write_text(self.config_text)

    def config_line(self, n):
        """Line number in the written file of line n (1-based) of the test's own config text."""
        return n + self.line_offset

    def write_file(self, rel, content):
        """Write a file relative to the working directory (str or bytes; {{tokens}} are not rendered)."""
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            p.write_bytes(content)
        else:
            p.write_text(content)
        return p

    def path(self, rel=""):
        """Absolute path of rel inside the working directory."""
        return self.dir / rel

    def port(self, name="tcp"):
        """The port allocated for {{port.NAME}}."""
        return self.ports[name]

    @property
    def tcp_port(self):
        return self.ports["tcp"]

    @property
    def ssl_port(self):
        return self.ports["ssl"]

    # ---- process ------------------------------------------------------------------------------

    def argv(self):
        """The command line: argv given to the constructor ("{config}" replaced), else
        $BULWARK_WRAPPER (e.g. "valgrind -q --error-exitcode=99", split like a shell) + bulwark -c FILE."""
        if self._argv:
            return [str(a).replace("{config}", str(self.config_path)) for a in self._argv]
        return [*shlex.split(os.environ.get("BULWARK_WRAPPER", "")), bulwark_bin(), "-c", str(self.config_path)]

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self, wait=True):
        """Start the broker; with wait, return once every wait port accepts TCP connections
        (deadline start_timeout; BrokerError with the log if it exits or never listens)."""
        if self.running:
            raise BrokerError("broker already running")
        self._run_log_start = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            log.write(f"==== harness: start {' '.join(self.argv())} (cwd {self.dir})\n".encode())
            log.flush()
            self.proc = procs.spawn(self.argv(), cwd=str(self.dir), stdout=log, stderr=subprocess.STDOUT,
                                    env=_env(self.extra_env))
        if wait:
            try:
                self.wait_ready()
            except BaseException:
                # a failed start is reported here, once: do not leave the process for teardown
                self.exit_codes.append(self._kill_quietly())
                raise
        return self

    def _kill_quietly(self):
        procs.kill(self.proc)
        code = self.proc.returncode
        self.proc = None
        return code

    def _wait_port_names(self):
        if self.wait_ports is not None:
            return list(self.wait_ports)
        return [t.split(".", 1)[1] for t in bwconfig.tokens(
            (bwconfig.base_snippet(self.tcp, self.ssl) if self.base else "") + self.raw_config)
            if t.startswith("port.")]

    def wait_ready(self, timeout=None):
        """Wait until every wait port accepts a TCP connection."""
        deadline = time.monotonic() + (timeout or self.start_timeout)
        names = self._wait_port_names()
        unknown = [n for n in names if n not in self.ports]
        if unknown:
            raise BrokerError(f"wait_ports {unknown} have no {{{{port.NAME}}}} in the config (ports: {self.ports})")
        pending = [self.ports[n] for n in names]
        while pending:
            if self.proc.poll() is not None:
                raise BrokerError(f"broker exited with status {self.proc.returncode} during start-up\n"
                                  + self.log_tail())
            port = pending[0]
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    pending.pop(0)
                    continue
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BrokerError(f"broker not accepting connections on port {port} within "
                                  f"{timeout or self.start_timeout}s\n" + self.log_tail())
            time.sleep(0.02)

    def send_signal(self, sig):
        """Send a signal to the broker."""
        if not self.running:
            raise BrokerError(f"cannot send signal {sig}: broker is not running\n" + self.log_tail())
        os.kill(self.proc.pid, sig)

    def reload(self, wait_log=None, timeout=10):
        """SIGHUP; with wait_log (a regex), wait until it appears in the log after this point."""
        mark = self.log_mark()
        self.send_signal(signal.SIGHUP)
        if wait_log:
            return self.wait_for_log(wait_log, timeout=timeout, since=mark)
        return None

    def stop(self, sig=signal.SIGTERM, timeout=None, expect="default"):
        """Stop with sig and wait up to timeout (default 10 s); SIGKILL after that (a problem).
        Checks the exit status against expect (default: self.expect_exit; None = don't check) and the
        log of this run for sanitizer reports. Raises BrokerError on a problem. Returns the status."""
        if self.proc is None:
            return None
        timeout = self.stop_timeout if timeout is None else timeout
        expect = self.expect_exit if expect == "default" else expect
        problems = []
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                procs.kill(self.proc)
                problems.append(f"broker did not exit within {timeout}s of signal {int(sig)}; SIGKILLed")
        else:
            if expect is not None and sig == signal.SIGTERM:
                problems.append(f"broker had already exited (status {self.proc.returncode}) before "
                                f"the harness stopped it")
        code = self.proc.returncode
        self.exit_codes.append(code)
        if expect is not None and code != expect and not problems:
            problems.append(f"broker exit status {code}, expected {expect}")
        san = self.sanitizer_report()
        if san:
            problems.append("sanitizer report in broker log:\n" + san)
        self.proc = None
        if problems:
            raise BrokerError("\n".join(problems) + "\n" + self.log_tail())
        return code

    def kill(self):
        """SIGKILL (a crash): the exit status is not checked. Returns it."""
        if self.proc is None:
            return None
        code = self._kill_quietly()
        self.exit_codes.append(code)
        return code

    def restart(self, config=None, sig=signal.SIGTERM, wait=True):
        """Stop (checked as stop() does; sig=SIGKILL simulates a crash) and start again with the same
        working directory, data dir and ports; a new config text may be given."""
        if sig == signal.SIGKILL:
            self.kill()
        else:
            self.stop(sig=sig)
        if config is not None:
            self.write_config(config)
        return self.start(wait=wait)

    def wait_exit(self, timeout=10):
        """Wait for the broker to exit by itself; returns the exit status (not checked against
        expect_exit; BrokerError on timeout, the broker is then left to teardown)."""
        if self.proc is None:
            raise BrokerError("broker is not running")
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BrokerError(f"broker still running after {timeout}s\n" + self.log_tail())
        self.exit_codes.append(code)
        self.proc = None
        return code

    def run_to_exit(self, timeout=10):
        """Start without waiting for ports and wait for the broker to exit by itself (for bad
        configs and unreadable certificates). Returns (exit status, log of this run)."""
        self.start(wait=False)
        code = self.wait_exit(timeout)
        return code, self.run_log()

    def finalize(self):
        """Teardown: stop if running (checked as stop() does); returns a problem description or None."""
        if self.proc is None:
            return None
        try:
            self.stop()
        except BrokerError as e:
            return str(e)
        return None

    def rss_kb(self):
        """Resident set size of the broker in KiB (from /proc)."""
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise BrokerError("VmRSS not found")

    def open_fds(self):
        """Number of open file descriptors of the broker."""
        return len(os.listdir(f"/proc/{self.proc.pid}/fd"))

    # ---- logs ---------------------------------------------------------------------------------

    def log_text(self, since=0):
        """Everything the broker wrote to stdout/stderr (all runs), from byte offset since."""
        try:
            with open(self.log_path, "rb") as f:
                f.seek(since)
                return f.read().decode(errors="replace")
        except FileNotFoundError:
            return ""

    def log_mark(self):
        """The current end of the log, for log_text(since=...) / wait_for_log(since=...)."""
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def run_log(self):
        """The log of the current (or last) run only."""
        return self.log_text(self._run_log_start)

    def log_tail(self, lines=60):
        t = self.log_text().splitlines()
        return f"---- broker log ({self.log_path}), last {min(lines, len(t))} lines ----\n" + "\n".join(t[-lines:])

    def wait_for_log(self, regex, timeout=10, since=None, flags=re.M):
        """Wait until regex matches the log (from since, default the start of the current run).
        Returns the match; raises BrokerError with the log on timeout."""
        since = self._run_log_start if since is None else since
        rx = re.compile(regex, flags) if isinstance(regex, str) else regex
        deadline = time.monotonic() + timeout
        while True:
            alive = self.running
            m = rx.search(self.log_text(since))
            if m:
                return m
            if not alive or time.monotonic() > deadline:
                why = "broker exited" if not alive else f"{timeout}s passed"
                raise BrokerError(f"log never matched {rx.pattern!r} ({why})\n" + self.log_tail())
            time.sleep(0.05)

    def sanitizer_report(self):
        """The sanitizer report lines of the current run's log, or ''."""
        text = self.run_log()
        m = SANITIZER_RE.search(text)
        if not m:
            return ""
        start = text.rfind("\n", 0, max(0, m.start() - 200)) + 1
        return text[start:start + 6000]

    # ---- ctl ----------------------------------------------------------------------------------

    def ctl(self, *args, timeout=15, check=False, input=None):
        """Run `bulwark ctl ARGS` against this broker; returns (exit status, output).
        With check=True a non-zero status raises BrokerError."""
        # relative to the working directory (ctl's cwd) when inside it: unix socket paths are short
        dd = self.data_dir
        if dd == self.dir or self.dir in dd.parents:
            dd = os.path.relpath(dd, self.dir)
        code, out = run_command(ctl_argv(dd, args, self.config_path), self.dir,
                                timeout=timeout, env=self.extra_env, input=input)
        if check and code != 0:
            raise BrokerError(f"ctl {args} exited {code}:\n{out}")
        return code, out

    def __repr__(self):
        return f"<Broker pid={self.pid} ports={self.ports} dir={self.dir}>"


def check_config(workdir, config, *, pki=None, values=None, files=None, base=False, timeout=30):
    """Run `bulwark --check -c FILE` on config (tokens rendered); returns (exit status, output)."""
    b = Broker(workdir, config, pki=pki, values=values, base=base, files=files)
    return run_command([bulwark_bin(), "--check", "-c", str(b.config_path)], b.dir, timeout=timeout)
