#!/bin/sh
# What the PostgreSQL tests (tests/pgserver.py and the tests using it) need, checked and
# installed if missing: Debian's postgresql package, whose initdb/postgres/pg_ctl the tests run
# (apt-get; root or sudo). The tests start their own server in a temporary folder on loopback;
# the package's system cluster and service are not used (stop them if you do not want them).
# Usage: scripts/postgres_setup.sh
set -eu

fail() {
    echo "postgres_setup: $*" >&2
    exit 1
}

find_bindir() {
    # the newest /usr/lib/postgresql/<version>/bin with a server, else initdb on PATH
    for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5 -n -r); do
        if [ -x "$dir/initdb" ] && [ -x "$dir/postgres" ] && [ -x "$dir/pg_ctl" ]; then
            echo "$dir"
            return 0
        fi
    done
    if command -v initdb >/dev/null 2>&1; then
        dirname "$(command -v initdb)"
        return 0
    fi
    return 1
}

if ! find_bindir >/dev/null; then
    echo "postgres_setup: initdb is missing; installing Debian's postgresql"
    command -v apt-get >/dev/null 2>&1 ||
        fail "apt-get not found: install the PostgreSQL server (initdb, postgres, pg_ctl)"
    if [ "$(id -u)" -eq 0 ]; then
        SUDO=""
    elif command -v sudo >/dev/null 2>&1; then
        SUDO="sudo"
    else
        fail "installing postgresql needs root: run 'apt-get install -y postgresql' as root"
    fi
    export DEBIAN_FRONTEND=noninteractive
    # A fresh machine may have no package lists yet: update only when the install needs it.
    $SUDO apt-get install -y -q --no-install-recommends postgresql ||
        { $SUDO apt-get update -q && $SUDO apt-get install -y -q --no-install-recommends postgresql; } ||
        fail "apt-get could not install postgresql"
fi

bindir="$(find_bindir)" || fail "initdb still not found after installing postgresql"
version="$("$bindir/postgres" --version 2>&1)" || fail "$bindir/postgres does not run"
# Under root the tests run the server as the postgres system user (it refuses root).
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    fail "running as root but there is no postgres system user to run the server as"
fi
echo "postgres_setup: $version ($bindir)"
