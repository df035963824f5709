"""The one error tree of feedd; third-party exceptions are translated into it at the boundary.

FeeddError
├── ConfigError        bad configuration (names the key path); exits with status 2
├── ParseError         a frame or REST body that does not match the exchange's protocol
├── ExchangeError      the exchange answered with an error envelope (REST or WS)
│   └── RateLimited    the exchange asked us to slow down (429/418, retCode/code limits)
├── TransportError     a socket or HTTP request failed (connect, reset, timeout)
├── ArchiveError       a bulk archive file is unusable (checksum, zip, CSV, size); names it
├── ListenError        the HTTP API cannot listen (port in use, host not here or unknown)
└── StoreError         SQLite could not be written (locked, read-only, disk full)
"""

from __future__ import annotations

from collections.abc import Iterator


class FeeddError(Exception):
    """Base of every error feedd raises on purpose."""


class ConfigError(FeeddError):
    """A configuration value is invalid; ``str()`` is one line naming the key path."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}" if path else problem)
        self.path = path
        self.problem = problem


class ParseError(FeeddError):
    """Input that does not follow the exchange's protocol (garbage, missing fields, bad types)."""


class ExchangeError(FeeddError):
    """The exchange reported an error inside a well-formed response."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"exchange error {code}: {message}")
        self.code = code
        self.message = message


class RateLimited(ExchangeError):
    """The exchange asked us to back off; ``retry_after`` is seconds, when it said so."""

    def __init__(self, code: str, message: str, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


class TransportError(FeeddError):
    """The network failed underneath a request or connection."""


class ArchiveError(FeeddError):
    """A venue's bulk archive file could not be used; its range is left to REST."""

    def __init__(self, file: str, problem: str) -> None:
        super().__init__(f"archive file {file}: {problem}")
        self.file = file
        self.problem = problem


class ListenError(FeeddError):
    """The HTTP API cannot bind its address; ``str()`` names the address and the cause."""


class StoreError(FeeddError):
    """The database could not be read or written."""


class StoreUnavailable(StoreError):
    """The database server cannot be reached now (down, restarting, failing over): a
    transient failure, retried, also when it happens at start."""


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside ``exc``, depth first, with every exception group opened.

    trio raises what a nursery's children raised inside (possibly nested) groups; code at a
    boundary wants the errors themselves."""
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            yield from leaves(inner)
    else:
        yield exc


def collapse(exc: BaseException) -> BaseException:
    """The one exception that explains ``exc``: itself, or a group's first FeeddError leaf
    (feedd's own errors say what went wrong), else its first leaf."""
    found = list(leaves(exc))
    return next((e for e in found if isinstance(e, FeeddError)), found[0])
