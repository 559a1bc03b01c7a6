"""Bulwark end-to-end test helpers.

Modules:
  ports     free TCP ports on 127.0.0.1 (xdist-safe)
  config    HOCON config rendering: {{token}} placeholders and the base listener snippet
  broker    the Broker process wrapper (start, stop, restart, reload, logs, ctl)
  pki       the test PKI, generated at test time with python3-cryptography
  mqtt_raw  a raw MQTT 3.1/3.1.1/5 client over sockets and TLS, with a full codec
  clients   paho-mqtt and mosquitto_pub/sub helpers

Every helper that waits takes a timeout; nothing here waits forever.
"""
