"""Smoke tests of the broker core: pub/sub at every QoS over TCP, TLS and mutual TLS."""
import pytest

from bw.clients import Tls, mosquitto_pub
from bw import mqtt_raw as m


@pytest.mark.parametrize("version", [3, 4, 5])
@pytest.mark.parametrize("qos", [0, 1, 2])
def test_raw_pub_sub_roundtrip(broker, raw_client, version, qos):
    sub = raw_client(broker, version=version)
    sub.connect("sub-%d-%d" % (version, qos))
    sub.subscribe("t/+/x", qos=qos)
    pub = raw_client(broker, version=version)
    pub.connect("pub-%d-%d" % (version, qos))
    pub.publish("t/1/x", b"payload", qos=qos)
    sub.recv_publish(topic="t/1/x", payload=b"payload", qos=qos)


def test_paho_v5_over_mtls(start_broker, mqtt_client, pki):
    b = start_broker("""
        listeners.ssl.default {
          ssl_options {
            cacertfile = "{{pki.ca_bundle}}"
            certfile   = "{{pki.server_chain}}"
            keyfile    = "{{pki.server_key}}"
            verify = verify_peer
            fail_if_no_peer_cert = true
          }
        }
    """, ssl=True)
    tls = Tls(ca=pki.root_ca_cert, cert=pki.client_cert, key=pki.client_key)
    sub = mqtt_client(b, version=5, client_id="s1", tls=tls)
    sub.subscribe("d/#", qos=1)
    pub = mqtt_client(b, version=5, client_id="p1", tls=tls)
    pub.publish("d/1", b"over-mtls", qos=1)
    msgs = sub.wait_messages(1)
    assert msgs[0].topic == "d/1" and msgs[0].payload == b"over-mtls"


def test_mosquitto_clients_over_one_way_tls(start_broker, mosquitto_sub_bg, pki):
    b = start_broker("""
        listeners.ssl.default {
          ssl_options {
            certfile = "{{pki.server_chain}}"
            keyfile  = "{{pki.server_key}}"
          }
        }
    """, ssl=True)
    tls = Tls(ca=pki.root_ca_cert)
    sub = mosquitto_sub_bg(b, "m/#", qos=1, tls=tls)
    mosquitto_pub(b.ssl_port, "m/1", "hello", qos=1, tls=tls)
    assert sub.wait_lines(1)[0].endswith("hello")
