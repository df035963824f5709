#!/usr/bin/env bash
# Install (or upgrade) feedd as a systemd service from this checkout; safe to run again.
#
#   sudo scripts/install-service.sh [PREFIX]      PREFIX defaults to /opt/feedd
#
# Copies the checkout to PREFIX, builds PREFIX/.venv, creates the system user feedd, writes
# /etc/feedd/config.json from the repository's config.json unless it exists (database in
# /var/lib/feedd), installs feedd.service and (re)starts it. PYTHON picks the interpreter
# (default python3, 3.11 or newer).
set -euo pipefail

prefix=${1:-/opt/feedd}
python=${PYTHON:-python3}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
conf_dir=/etc/feedd
config=$conf_dir/config.json
unit=/etc/systemd/system/feedd.service

say() { printf 'install-service: %s\n' "$*"; }
die() { printf 'install-service: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (it creates a user and writes /etc and $prefix)"
[[ $prefix == /* ]] || die "PREFIX must be an absolute path, got '$prefix'"
command -v systemctl >/dev/null || die "systemctl not found: this script is for systemd hosts"
"$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
    || die "$python is missing or older than 3.11 (set PYTHON=...)"

# The code. Only the checkout's sources: the service never reads the developer's venv or data.
if [[ $src != "$prefix" ]]; then
    say "copying $src to $prefix"
    mkdir -p "$prefix"
    # Top-level folders of a working checkout, and bytecode anywhere.
    top=(.git .venv data artifacts build dist '*.egg-info' .mypy_cache .ruff_cache
         .pytest_cache .hypothesis)
    if command -v rsync >/dev/null; then
        # --delete drops files removed upstream; excluded paths (the venv) are kept.
        rsync -a --delete "${top[@]/#/--exclude=/}" --exclude=__pycache__ "$src/" "$prefix/"
    else
        tar -C "$src" "${top[@]/#/--exclude=./}" --exclude=__pycache__ -cf - . \
            | tar -C "$prefix" -xf -
    fi
    chown -R root:root "$prefix"
fi

# The interpreter. Editable, so the package finds the dashboard's files beside it in PREFIX.
if [[ ! -x $prefix/.venv/bin/python ]]; then
    say "creating $prefix/.venv"
    "$python" -m venv "$prefix/.venv"
fi
say "installing feedd into $prefix/.venv"
"$prefix/.venv/bin/pip" install --quiet --upgrade pip
"$prefix/.venv/bin/pip" install --quiet -e "$prefix"
# The service cannot write to PREFIX (ProtectSystem=strict): compile the bytecode now.
"$prefix/.venv/bin/python" -m compileall -q "$prefix/feedd" >/dev/null

# The account. A fixed system user: feedd writes /etc/feedd (config saved by the API).
if ! getent passwd feedd >/dev/null; then
    say "creating system user feedd"
    useradd --system --user-group --home-dir /var/lib/feedd --no-create-home \
        --shell "$(command -v nologin || echo /bin/false)" feedd
fi

# The configuration: never overwritten, so re-running keeps the operator's edits.
install -d -m 0770 -o root -g feedd "$conf_dir"
if [[ ! -e $config ]]; then
    say "writing $config (database_path /var/lib/feedd/ohlcv.db)"
    "$prefix/.venv/bin/python" - "$src/config.json" "$config.new" <<'EOF'
import json
import sys

with open(sys.argv[1]) as source:
    document = json.load(source)
document["database_path"] = "/var/lib/feedd/ohlcv.db"
with open(sys.argv[2], "w") as target:
    json.dump(document, target, indent=2)
    target.write("\n")
EOF
    chown root:feedd "$config.new"
    chmod 0640 "$config.new"
    mv -f "$config.new" "$config"
else
    say "keeping existing $config"
fi
# Refuse to (re)start on a config feedd would reject; the message names the key.
"$prefix/.venv/bin/python" -c 'import sys; from feedd import config; config.load(sys.argv[1])' \
    "$config" || die "$config is not valid; fix it and run again"

# The unit, pointed at PREFIX when it is not the default.
say "installing $unit"
sed "s|/opt/feedd/|$prefix/|g" "$src/scripts/feedd.service" > "$unit.new"
chmod 0644 "$unit.new"
mv -f "$unit.new" "$unit"
systemctl daemon-reload
systemctl enable feedd.service
# restart, not start: a re-run after an upgrade must load the new code. With Type=notify this
# returns once feedd reports READY=1, and fails if it does not.
systemctl restart feedd.service
systemctl --no-pager --lines=5 status feedd.service || true
say "done: journalctl -u feedd -f to follow the log"
