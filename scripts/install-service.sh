#!/usr/bin/env bash
# Install, upgrade or remove feedd as a systemd service; safe to run again.
#
#   sudo scripts/install-service.sh [--wheel FILE] [PREFIX]   install, or upgrade in place
#   sudo scripts/install-service.sh --uninstall [PREFIX]      remove the service and its code
#   scripts/install-service.sh --root DIR [...]               the same inside DIR, for tests
#
# Install: builds a wheel of this checkout (or takes FILE) and installs it, with the exact
# versions of constraints.txt, into a new venv PREFIX/releases/<UTC time> (PREFIX defaults to
# /opt/feedd). Creates the system user feedd, writes /etc/feedd/config.json from the
# repository's config.json unless it exists (database in /var/lib/feedd), checks the config
# with the new release's `feedd check-config`, then points PREFIX/.venv at the new release,
# installs feedd.service and (re)starts it. Until that switch nothing the running service
# uses has changed: a failure leaves it as it was. The release before stays for a rollback.
#
# Uninstall: stops and disables the unit, removes it and PREFIX; keeps /etc/feedd,
# /var/lib/feedd and the user feedd (it prints how to remove those).
#
# --root DIR puts every path under DIR and prints the steps that need root or systemd (user,
# ownership, systemctl) instead of running them. PYTHON picks the interpreter (3.11 or newer).
set -euo pipefail

say() { printf 'install-service: %s\n' "$*"; }
die() { printf 'install-service: %s\n' "$*" >&2; exit 1; }

root='' wheel='' action=do_install
while (($#)); do
    case $1 in
        --root) [[ $# -ge 2 ]] || die "--root needs a folder"; root=$2; shift 2 ;;
        --wheel) [[ $# -ge 2 ]] || die "--wheel needs a file"; wheel=$2; shift 2 ;;
        --uninstall) action=do_uninstall; shift ;;
        -h | --help) sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "$0"; exit 0 ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) break ;;
    esac
done
(($# <= 1)) || die "one PREFIX at most, got: $*"
prefix=${1:-/opt/feedd}
python=${PYTHON:-python3}
src=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
constraints=$src/constraints.txt
[[ $prefix == /* ]] || die "PREFIX must be an absolute path, got '$prefix'"
if [[ -n $root ]]; then
    mkdir -p "$root"
    root=$(cd "$root" && pwd)
fi
dest=$root$prefix
conf_dir=$root/etc/feedd
config=$conf_dir/config.json
unit=$root/etc/systemd/system/feedd.service

# What needs root and systemd: run it, or under --root only say it.
system() {
    if [[ -n $root ]]; then say "skipped (--root): $*"; else "$@"; fi
}

preflight() {
    [[ -n $root ]] && return
    [[ $EUID -eq 0 ]] || die "run as root (it creates a user and writes /etc and $prefix)"
    command -v systemctl >/dev/null || die "systemctl not found: this script is for systemd hosts"
}

do_uninstall() {
    preflight
    # Only a folder this script made: never rm -rf a PREFIX given by mistake.
    [[ -e $dest/.venv || -d $dest/releases ]] || die "no feedd installed in $dest"
    if [[ -e $unit ]]; then
        say "stopping and removing $unit"
        system systemctl disable --now feedd.service
        rm -f "$unit"
        system systemctl daemon-reload
    fi
    say "removing $dest"
    rm -rf "$dest"
    say "kept $conf_dir (configuration), /var/lib/feedd (database) and the user feedd;" \
        "to remove them too: rm -rf /etc/feedd /var/lib/feedd && userdel feedd"
}

work='' release='' switched=''
cleanup() {
    [[ -z $work ]] || rm -rf "$work"
    # A release that never went live is of no use to anyone.
    [[ -z $release || -n $switched ]] || rm -rf "$release"
}

do_install() {
    preflight
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
        || die "$python is missing or older than 3.11 (set PYTHON=...)"
    [[ -f $constraints ]] || die "$constraints is missing: run this script from a checkout"
    if [[ -n $wheel ]]; then
        [[ -f $wheel ]] || die "no wheel at $wheel"
        wheel=$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")
    fi
    trap cleanup EXIT
    work=$(mktemp -d)

    # The code: a venv of its own per release, so an upgrade never edits the one in service.
    mkdir -p "$dest/releases"
    release=$dest/releases/$(date -u +%Y%m%dT%H%M%SZ)
    [[ ! -e $release ]] || die "$release exists already: run again in a second"
    say "creating $release"
    "$python" -m venv "$release"
    local pip=("$release/bin/python" -m pip --quiet --disable-pip-version-check)
    "${pip[@]}" install --upgrade -c "$constraints" pip
    # Python 3.11's venv seeds setuptools too; feedd does not need it (builds get their own).
    "${pip[@]}" uninstall --yes setuptools
    if [[ -z $wheel ]]; then
        say "building the wheel of $src"
        # From a copy: setuptools writes build/ and feedd.egg-info into the tree it builds,
        # which would leave root-owned folders in the operator's checkout.
        mkdir "$work/source"
        tar -C "$src" --exclude=./.git --exclude=./.venv --exclude=./data --exclude=./build \
            --exclude=./dist --exclude=./artifacts --exclude='*.egg-info' --exclude=__pycache__ \
            --exclude='.*_cache' --exclude=.hypothesis -cf - . | tar -C "$work/source" -xf -
        "${pip[@]}" wheel --no-deps --build-constraint "$constraints" --wheel-dir "$work" \
            "$work/source"
        wheel=$(echo "$work"/feedd-*.whl)
    fi
    say "installing ${wheel##*/} with the versions of constraints.txt"
    "${pip[@]}" install -c "$constraints" "$wheel"

    # The account. A fixed system user: feedd writes /etc/feedd (config saved by the API).
    if ! getent passwd feedd >/dev/null; then
        say "creating system user feedd"
        system useradd --system --user-group --home-dir /var/lib/feedd --no-create-home \
            --shell "$(command -v nologin || echo /bin/false)" feedd
    fi

    # The configuration: never overwritten, so re-running keeps the operator's edits.
    install -d -m 0770 "$conf_dir"
    system chown root:feedd "$conf_dir"
    if [[ ! -e $config ]]; then
        say "writing $config (SQLite database /var/lib/feedd/ohlcv.db)"
        "$release/bin/python" - "$src/config.json" "$config.new" <<'EOF'
import json
import sys

with open(sys.argv[1]) as source:
    document = json.load(source)
document.pop("database_path", None)
document["storage"] = {"backend": "sqlite", "path": "/var/lib/feedd/ohlcv.db"}
with open(sys.argv[2], "w") as target:
    json.dump(document, target, indent=2)
    target.write("\n")
EOF
        chmod 0640 "$config.new"
        system chown root:feedd "$config.new"
        mv -f "$config.new" "$config"
    else
        say "keeping existing $config"
    fi
    # The new code judges the config: an upgrade that would reject it changes nothing.
    say "checking $config"
    # The unit hands feedd the credential api_token (LoadCredential=) when the file exists:
    # check with it too, so that a non-loopback host with its token there is judged as it runs.
    local credentials=()
    if [[ -f $(dirname "$config")/api_token ]]; then
        credentials=(env "CREDENTIALS_DIRECTORY=$(dirname "$config")")
    fi
    "${credentials[@]}" "$release/bin/feedd" check-config "$config" \
        || die "$config is not valid for this release; fix it and run again (the service was not changed)"

    # The switch: one rename, so PREFIX/.venv is always a whole release.
    local previous='' legacy=''
    if [[ -L $dest/.venv ]]; then
        previous=$(readlink "$dest/.venv")
    elif [[ -d $dest/.venv ]]; then
        # The editable venv of an older install-service.sh: replaced, removed once restarted.
        legacy=$dest/.venv.legacy
        rm -rf "$legacy"
        mv "$dest/.venv" "$legacy"
    fi
    ln -sfn "releases/${release##*/}" "$dest/.venv.new"
    mv -T "$dest/.venv.new" "$dest/.venv"
    switched=1
    say "$prefix/.venv is now releases/${release##*/}"
    install -m 0644 "$src/README.md" "$dest/README.md"  # the unit's Documentation=

    # The unit, pointed at PREFIX when it is not the default.
    say "installing $unit"
    mkdir -p "${unit%/*}"
    sed "s|/opt/feedd/|$prefix/|g" "$src/scripts/feedd.service" > "$unit.new"
    chmod 0644 "$unit.new"
    mv -f "$unit.new" "$unit"
    system systemctl daemon-reload
    system systemctl enable feedd.service
    # restart, not start: an upgrade must load the new code. With Type=notify this returns
    # once feedd reports READY=1, and fails if it does not.
    local back=''
    if [[ -n $previous ]]; then
        back="ln -sfn $previous $prefix/.venv && systemctl restart feedd"
    elif [[ -n $legacy ]]; then
        back="rm $prefix/.venv && mv $prefix/.venv.legacy $prefix/.venv && systemctl restart feedd"
    fi
    system systemctl restart feedd.service \
        || die "feedd did not start: journalctl -u feedd tells why${back:+; to go back: $back}"
    system systemctl --no-pager --lines=5 status feedd.service || true

    # Keep this release and the one it replaced; older ones go.
    [[ -z $legacy ]] || rm -rf "$legacy"
    local old
    for old in "$dest"/releases/*; do
        [[ $old == "$release" || ${old##*/} == "${previous##*/}" ]] || rm -rf "$old"
    done
    [[ -z $previous ]] || say "the release before stays, to go back: $back"
    if [[ -e $dest/pyproject.toml ]]; then
        say "note: $dest still holds a checkout copied by an older install-service.sh;" \
            "nothing uses it now (only .venv, releases/ and README.md are this script's)"
    fi
    say "done: journalctl -u feedd -f to follow the log"
}

"$action"
