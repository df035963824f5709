"""Opening psycopg connections for feedd, and turning psycopg's errors into one-line
``StoreError``s that name the store without its password."""

from __future__ import annotations

import urllib.parse
from typing import Any

import psycopg
from psycopg import conninfo

from feedd.errors import StoreError
from feedd.storageconfig import redacted_dsn

Connection = psycopg.Connection[tuple[Any, ...]]

# Defaults a DSN may override: a dead server or a black-holed network must end in an error the
# writer retries, not in a thread blocked for the kernel's 15-minute TCP timeout.
_DEFAULTS = {
    "connect_timeout": "10",
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
    "tcp_user_timeout": "60000",
}

#: SQLSTATEs whose server message alone would leave the operator guessing
_HINTS = {
    "25006": "the server is read-only (a standby, or default_transaction_read_only is on)",
    "57P01": "the server ended the connection (shutting down, or terminated by an administrator)",
    "57P02": "the server crashed and ended the connection",
    "57P03": "the server is starting up or shutting down",
    "53300": "the server has no connection slots left",
    "3D000": "the database does not exist",
    "42501": "permission denied",
}


def parse(dsn: str) -> dict[str, Any]:
    """The DSN's parameters; StoreError (without the DSN, which may hold a password) if it is
    malformed."""
    if not dsn.strip():
        raise StoreError("no PostgreSQL DSN given (storage.dsn or $FEEDD_DATABASE_URL)")
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        reason = _first_line(str(exc)) or "malformed"
        raise StoreError(f"the PostgreSQL DSN is malformed: {_scrub(reason, dsn)}") from None
    # libpq checks the port only when connecting; a typo there is as permanent as a bad URL
    ports = str(params.get("port", "")).split(",")
    if any(p and not (p.isascii() and p.isdigit() and 0 < int(p) < 65536) for p in ports):
        raise StoreError(f"the PostgreSQL DSN's port is not a port number: {params['port']!r}")
    return params


def location(dsn: str) -> str:
    """Where the store is, for logs: the DSN without its password."""
    if dsn.startswith(("postgresql://", "postgres://")):
        return redacted_dsn(dsn)
    try:
        params = conninfo.conninfo_to_dict(dsn)
    except psycopg.Error:
        return "postgresql (malformed DSN)"
    user = params.get("user")
    host = params.get("host", "")
    port = params.get("port")
    where = urllib.parse.quote(str(host), safe="") + (f":{port}" if port else "")
    who = f"{urllib.parse.quote(str(user), safe='')}@" if user else ""
    return f"postgresql://{who}{where}/{params.get('dbname', '')}"


def connect(dsn: str, *, application_name: str) -> Connection:
    """An autocommit connection (each method opens its own transaction block)."""
    params = parse(dsn)
    extra = {k: v for k, v in _DEFAULTS.items() if k not in params}
    if "application_name" not in params:
        extra["application_name"] = application_name
    try:
        return psycopg.connect(conninfo.make_conninfo(dsn, **extra), autocommit=True)
    except psycopg.Error as exc:
        raise store_error(exc, "cannot connect to", dsn) from None


def store_error(exc: psycopg.Error, action: str, dsn: str) -> StoreError:
    """``exc`` as one line: ``cannot write to postgresql://feedd:***@host/db: <reason>``."""
    reason = _first_line(str(exc)) or type(exc).__name__
    hint = _HINTS.get(getattr(exc, "sqlstate", None) or "")
    if hint and hint not in reason:
        reason = f"{hint} ({reason})"
    return StoreError(f"{action} {location(dsn)}: {_scrub(reason, dsn)}")


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()
    return ""


def _scrub(text: str, dsn: str) -> str:
    """``text`` without the DSN's password, should a message ever quote it."""
    try:
        password = conninfo.conninfo_to_dict(dsn).get("password")
    except psycopg.Error:
        password = None
    candidates = {str(password)} if password else set()
    # the URL form as typed (percent-encoded) as well as decoded
    parts = urllib.parse.urlsplit(dsn)
    if parts.password:
        candidates.add(parts.password)
    for secret in sorted(candidates, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text
