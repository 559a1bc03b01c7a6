#!/usr/bin/env bash
# Installs everything Bulwark needs to build and test on Debian 12.
# Idempotent and fast when everything is already present.
set -euo pipefail

PKGS=(
	build-essential make pkg-config openssl ca-certificates
	libssl-dev libsqlite3-dev libcurl4-openssl-dev
	clang libclang-rt-14-dev valgrind
	mosquitto mosquitto-clients haproxy
	python3 python3-paho-mqtt python3-pytest python3-pytest-xdist python3-pytest-timeout python3-cryptography python3-jwt
	libjansson-dev libhiredis-dev libpq-dev libmariadb-dev libcrypt-dev libjemalloc-dev
	redis-server postgresql mariadb-server
)

missing=()
for p in "${PKGS[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -gt 0 ]; then
	echo "setup: installing ${missing[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	export DEBIAN_FRONTEND=noninteractive
	# Keep Debian's mosquitto service from grabbing port 1883: we only want its binaries.
	if [ ! -e /usr/sbin/policy-rc.d ]; then
		printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
		$SUDO chmod +x /usr/sbin/policy-rc.d
		trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	$SUDO apt-get update -qq || true
	$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
