"""Secure defaults (issue 7): a listener reachable from the network that lets anyone in is said
loudly at start; loopback listeners, authenticated listeners and listeners requiring client
certificates are not."""
import pytest

WARNING = "accepts anonymous clients from the network"


def warned(b, listener):
    # listeners accept before the start-up report is complete: read it once the broker says so
    b.wait_for_log(r"bulwark \S+ started")
    return any(WARNING in line and f"listener {listener} " in line for line in b.log_text().splitlines())


def test_open_listener_on_all_addresses_warns(start_broker):
    b = start_broker('listeners.tcp.open { bind = "0.0.0.0:{{port.open}}" }\n')
    assert warned(b, "tcp:open"), b.log_tail()
    assert not warned(b, "tcp:default")  # the harness's listener is on 127.0.0.1


def test_listener_with_authentication_does_not_warn(start_broker):
    b = start_broker('listeners.tcp.open { bind = "0.0.0.0:{{port.open}}" }\n'
                     "authentication = [ { mechanism = password_based, backend = built_in_database } ]\n")
    assert not warned(b, "tcp:open"), b.log_tail()


def test_enable_authn_false_warns_even_with_a_chain(start_broker):
    b = start_broker('listeners.tcp.open { bind = "0.0.0.0:{{port.open}}", enable_authn = false }\n'
                     "authentication = [ { mechanism = password_based, backend = built_in_database } ]\n")
    assert warned(b, "tcp:open"), b.log_tail()
    assert "enable_authn = false" in b.log_text()


@pytest.mark.parametrize("fail,expect", [("true", False), ("false", True)])
def test_required_client_certificates_do_not_warn(start_broker, fail, expect):
    b = start_broker(f"""
    listeners.ssl.open {{
      bind = "0.0.0.0:{{{{port.open}}}}"
      ssl_options {{
        cacertfile = "{{{{pki.ca_bundle}}}}"
        certfile   = "{{{{pki.server_chain}}}}"
        keyfile    = "{{{{pki.server_key}}}}"
        verify = verify_peer
        fail_if_no_peer_cert = {fail}
      }}
    }}
    """)
    assert warned(b, "ssl:open") == expect, b.log_tail()
