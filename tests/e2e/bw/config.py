"""HOCON config text for tests: {{token}} placeholders and the base listener snippet.

HOCON is full of braces, so placeholders use double braces, which HOCON never has:

    {{port.NAME}}   a free port allocated for NAME the first time it is seen (then the same port)
    {{pki.ATTR}}    an absolute path from the session PKI (bw.pki.Pki), e.g. {{pki.server_chain}}
    {{dir}}         the broker's working directory (absolute)
    {{NAME}}        any extra value passed as values={...}

An unknown token is an error (a typo never silently renders as text).

The base snippet pins the two listeners that exist by default (tcp 0.0.0.0:1883 and ssl 0.0.0.0:8883)
to free ports on 127.0.0.1, or deletes them, so parallel tests never collide:

    tcp=True   listeners.tcp.default.bind = "127.0.0.1:{{port.tcp}}"
    tcp=False  listeners.tcp.default = marked_for_deletion
    ssl=True   listeners.ssl.default.bind = "127.0.0.1:{{port.ssl}}"
    ssl=False  listeners.ssl.default = marked_for_deletion

It is put before the test's own text, so the test's `listeners.ssl.default { ssl_options {...} }`
merges into it (HOCON object merge). A test must not set `bind` of a default listener itself.
"""
import re

TOKEN = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_\-]+)*)\s*\}\}")


def render(text, resolve):
    """Replace every {{token}} in text by str(resolve(token))."""
    return TOKEN.sub(lambda m: str(resolve(m.group(1))), text)


def tokens(text):
    """The token names used in text, in order of first appearance."""
    seen = []
    for m in TOKEN.finditer(text):
        if m.group(1) not in seen:
            seen.append(m.group(1))
    return seen


def base_snippet(tcp=True, ssl=False):
    """The harness's base config (with tokens), see the module doc."""
    lines = ["# ---- bulwark e2e harness base config (tests/e2e/bw/config.py) ----"]
    lines.append('listeners.tcp.default.bind = "127.0.0.1:{{port.tcp}}"' if tcp
                 else "listeners.tcp.default = marked_for_deletion")
    lines.append('listeners.ssl.default.bind = "127.0.0.1:{{port.ssl}}"' if ssl
                 else "listeners.ssl.default = marked_for_deletion")
    lines.append("# ---- test config ----")
    return "\n".join(lines) + "\n"


_CONFIGURES = r"listeners\s*\.\s*%s\s*\.\s*default\s*(?:\{|\.|\s*[=:]\s*\{)"
_BINDS = r"listeners\s*\.\s*%s\s*\.\s*default\s*(?:\.\s*bind\b|\{[^}]*\bbind\s*[=:])"


def check_base_usage(text, tcp, ssl):
    """Catch configs that would silently listen on 0.0.0.0:1883/8883 or fight the base snippet."""
    for kind, on in (("tcp", tcp), ("ssl", ssl)):
        if not on and re.search(_CONFIGURES % kind, text):
            raise ValueError(f"the config configures listeners.{kind}.default but the base snippet deletes it: "
                             f"pass {kind}=True to start_broker (the harness then sets its bind)")
        if on and re.search(_BINDS % kind, text):
            raise ValueError(f"the config sets listeners.{kind}.default's bind; leave it to the harness "
                             f"(use broker.port('{kind}')) or pass base=False")


def hocon_str(s):
    """s as a quoted HOCON string."""
    return '"' + str(s).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
