#!/bin/sh
# What the browser tests (tests/test_browser.py) need, checked and installed if missing:
# Debian's Chromium at /usr/bin/chromium (apt-get; root or sudo), the playwright package in
# the venv (from the dev extra; its own browser downloads are never used), and the vendored
# dashboard libraries matching their pinned hashes. Usage: scripts/browser_setup.sh [python]
set -eu

PYTHON="${1:-.venv/bin/python}"
CHROMIUM=/usr/bin/chromium
cd "$(dirname "$0")/.."

fail() {
    echo "browser_setup: $*" >&2
    exit 1
}

if [ ! -x "$CHROMIUM" ]; then
    echo "browser_setup: $CHROMIUM is missing; installing Debian's chromium"
    command -v apt-get >/dev/null 2>&1 ||
        fail "apt-get not found: install Chromium so that $CHROMIUM exists"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        fail "installing chromium needs root: run 'apt-get install -y chromium' as root"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only when the install needs it.
    $SUDO apt-get install -y -q chromium ||
        { $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium; } ||
        fail "apt-get could not install chromium"
    [ -x "$CHROMIUM" ] || fail "chromium installed but $CHROMIUM is still missing"
fi

# The Debian launcher script prints shell noise on stderr on some hosts; only stdout matters.
version="$("$CHROMIUM" --version 2>/dev/null)" || fail "$CHROMIUM does not run"
if ! timeout 60 "$CHROMIUM" --headless --no-sandbox --disable-gpu \
    --disable-background-networking --dump-dom about:blank >/dev/null 2>&1; then
    fail "$CHROMIUM cannot start headless (missing libraries?)"
fi

"$PYTHON" -c "import playwright.sync_api" 2>/dev/null ||
    fail "the playwright package is missing: $PYTHON -m pip install -e '.[dev]'"

"$PYTHON" scripts/vendor_web.py --check >/dev/null ||
    fail "web/vendor does not match the pins in scripts/vendor_web.py (run it to restore)"

echo "browser_setup: $version, playwright $("$PYTHON" -c 'import importlib.metadata as m; print(m.version("playwright"))'), web/vendor ok"
