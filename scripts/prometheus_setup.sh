#!/bin/sh
# What the Prometheus tests (tests/test_prometheus.py) need, checked and installed if missing:
# Debian's prometheus package, which gives both `prometheus` and `promtool` (apt-get; root or
# sudo). The tests start their own Prometheus on loopback; the package's system service is
# not used (stop it if you do not want it). Usage: scripts/prometheus_setup.sh
set -eu

cd "$(dirname "$0")/.."

fail() {
    echo "prometheus_setup: $*" >&2
    exit 1
}

if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    echo "prometheus_setup: prometheus or promtool is missing; installing Debian's prometheus"
    command -v apt-get >/dev/null 2>&1 ||
        fail "apt-get not found: install Prometheus so that prometheus and promtool are on PATH"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        fail "installing prometheus needs root: run 'apt-get install -y prometheus' as root"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only when the install needs it.
    $SUDO apt-get install -y -q --no-install-recommends prometheus ||
        { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends prometheus; } ||
        fail "apt-get could not install prometheus"
fi

prometheus_version="$(prometheus --version 2>&1 | head -n 1)" || fail "prometheus does not run"
promtool --version >/dev/null 2>&1 || fail "promtool does not run"
# The shipped rules must at least load: a broken alerts.yml is worth knowing before pytest.
promtool check rules deploy/prometheus/alerts.yml >/dev/null ||
    fail "promtool rejects deploy/prometheus/alerts.yml (run it to see why)"

echo "prometheus_setup: $prometheus_version, promtool ok"
