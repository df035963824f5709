"""Opening psycopg connections for feedd, and turning psycopg's errors into one-line
``StoreError``s that name the store without its password."""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from typing import Any

import psycopg
from psycopg import conninfo, pq

from feedd.errors import StoreError, StoreUnavailable
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


def int_array(values: Iterable[int]) -> str:
    """An integer array parameter as PostgreSQL's array text (``{1,2,3}``), for a query that
    casts it (``%s::bigint[]``): psycopg's list dumper costs ~1 µs per element in Python, the
    writer sends thousands per batch."""
    return "{" + ",".join(map(str, values)) + "}"


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


def open_sibling(conn: Connection, *, application_name: str) -> pq.abc.PGconn:
    """A raw libpq connection to ``conn``'s server and database, with its settings (password
    included): for queries sent ahead and read later (``send_query_params``), which psycopg's
    blocking API cannot leave in flight. Closed by ``finish()`` or when dropped."""
    params = {
        opt.keyword.decode(): opt.val.decode()
        for opt in conn.pgconn.info
        if opt.val and opt.dispchar != b"D"
    }
    params["application_name"] = application_name
    pgconn = pq.PGconn.connect(conninfo.make_conninfo("", **params).encode())
    if pgconn.status != pq.ConnStatus.OK:
        message = pgconn.get_error_message() or "connection failed"
        pgconn.finish()
        raise psycopg.OperationalError(message)
    return pgconn


def store_error(exc: psycopg.Error, action: str, dsn: str) -> StoreError:
    """``exc`` as one line: ``cannot write to postgresql://feedd:***@host/db: <reason>``."""
    reason = _first_line(str(exc)) or type(exc).__name__
    hint = _HINTS.get(getattr(exc, "sqlstate", None) or "")
    if hint and hint not in reason:
        reason = f"{hint} ({reason})"
    message = f"{action} {location(dsn)}: {_scrub(reason, dsn)}"
    return StoreUnavailable(message) if _unreachable(exc) else StoreError(message)


def _unreachable(exc: psycopg.Error) -> bool:
    """A failure of the server or the network, not of feedd's settings (a wrong password or
    a missing database stay errors the operator must fix)."""
    state = getattr(exc, "sqlstate", None) or ""
    if state:
        # 08: connection exceptions; 57P0x: shutdown, crash, starting up; 53300: no slots
        return state.startswith("08") or state in ("57P01", "57P02", "57P03", "53300")
    if not isinstance(exc, psycopg.OperationalError):
        return False
    # No SQLSTATE: a failed connection attempt. When the server answered (FATAL), only its
    # passing states are transient; a wrong password or a missing database is for the
    # operator. No answer at all (refused, timed out, unreachable, broken) is transient.
    text = str(exc)
    if "FATAL:" in text:
        return any(state in text for state in _PASSING_STATES)
    return "no password supplied" not in text


#: what a server says at connect while it cannot serve for now
_PASSING_STATES = (
    "is starting up",
    "is shutting down",
    "in recovery mode",
    "too many clients",
    "not yet accepting connections",
)


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
