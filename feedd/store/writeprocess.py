"""The writer's connection in a child process (``"storage": {"writer": "process"}``).

Encoding and committing candles costs the writer ~15-20 µs of Python and SQLite work per
row; in a thread that work holds the GIL the event loop needs, so at full load ingest runs at
half the rate it reaches with a store that costs nothing. In a child process it runs on the
other core: the loop's side of a commit is one tuple per candle, encoded in C by msgspec and
written to a socket.

``ProcessBackend`` wraps a backend and replaces only ``open_writer``: the child opens the
inner backend's writer and runs every ``WriteConnection`` call the parent forwards, one at a
time, answering each with its result or its error. The child never decides anything: it
ignores SIGINT and SIGTERM (the parent drains the writer first, then closes) and exits when
its socket closes, so a parent killed with SIGKILL leaves no child behind and the store sees
a connection closed between transactions, as SQLite or PostgreSQL would on any crash. A
child that dies is a store failure like any other: the call fails with ``StoreError``, the
writer holds its candles and retries, the next open starts a new child.
"""

from __future__ import annotations

import itertools
import logging
import operator
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Hashable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from feedd import gcsettings
from feedd.candle import Candle, Source
from feedd.errors import StoreError, StoreUnavailable

if TYPE_CHECKING:
    from feedd.store.backend import Backend, ReadStore, WriteConnection
    from feedd.store.lease import Lease

log = logging.getLogger("feedd.store")

#: a candle on the wire: its fields in order, as a MessagePack array
_as_tuple = operator.attrgetter(*Candle.__struct_fields__)
_CandleFields = tuple[str, str, str, int, str, str, str, str, str, str, int | None, bool, Source]
_encode_rows = msgspec.msgpack.Encoder().encode
_decode_rows = msgspec.msgpack.Decoder(list[_CandleFields]).decode
#: seconds a child may take to open the store (creating or migrating the schema included)
OPEN_TIMEOUT_S = 120.0
#: seconds a closing child gets to finish before it is killed
CLOSE_TIMEOUT_S = 30.0
#: seconds to wait for a child whose socket failed to finish dying, to say how it ended
EXIT_WAIT_S = 5.0
_HEADER = 8
#: errors that cross the socket as themselves; anything else arrives as a StoreError
_ERRORS: dict[str, type[StoreError]] = {
    "StoreError": StoreError,
    "StoreUnavailable": StoreUnavailable,
}


class ProcessBackend:
    """``inner`` with its writer in a child process; everything else is ``inner``'s."""

    writer_apart = True

    def __init__(self, inner: Backend) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.location = inner.location
        self.spec = inner.spec

    def prepare(self) -> None:
        self.inner.prepare()

    def check_source(self) -> None:
        self.inner.check_source()

    def same_store(self, other: Backend) -> bool:
        target = other.inner if isinstance(other, ProcessBackend) else other
        return self.inner.same_store(target)

    def open_writer(self, *, busy_timeout_ms: int) -> WriteConnection:
        return ProcessWriteConnection.start(self.inner, busy_timeout_ms=busy_timeout_ms)

    def open_reader(self) -> ReadStore:
        return self.inner.open_reader()

    def size_bytes(self) -> int | None:
        return self.inner.size_bytes()

    def disk_folder(self) -> Path | None:
        return self.inner.disk_folder()


def _child_environment() -> dict[str, str]:
    """The parent's environment, with this very feedd first on the module path (the parent
    may run from a source tree that Python finds only through its own ``sys.path``)."""
    here = str(Path(__file__).resolve().parents[2])
    known = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": here if not known else os.pathsep.join((here, known))}


def _send(sock: socket.socket, message: object) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    sock.sendall(len(data).to_bytes(_HEADER, "big") + data)


def _receive(sock: socket.socket) -> Any:
    """One message; EOFError when the other side closed (between messages or within one)."""
    size = int.from_bytes(_read_exactly(sock, _HEADER), "big")
    return pickle.loads(_read_exactly(sock, size))


def _read_exactly(sock: socket.socket, size: int) -> bytes:
    buffer = bytearray(size)
    view = memoryview(buffer)
    got = 0
    while got < size:
        n = sock.recv_into(view[got:])
        if n == 0:
            raise EOFError
        got += n
    return bytes(buffer)


def _wire(candles: Sequence[Candle]) -> bytes:
    """``candles`` as one MessagePack document of arrays (the message around it is pickled).

    The writer's thread runs this holding the event loop's GIL: attrgetter tuples encoded by
    msgspec cost 0.33-0.37 us per candle against 0.74-1.0 us pickled, and the child decodes
    them in 0.5-0.7 us against 0.7-0.8 (2,500-candle batches, #17).
    """
    return _encode_rows(list(map(_as_tuple, candles)))


class ProcessWriteConnection:
    """The parent's side: every ``WriteConnection`` call sent to the child and waited for.

    Called from the writer's worker thread (the wait releases the GIL); a lock keeps calls
    from other threads in turn.
    """

    def __init__(
        self, process: subprocess.Popen[bytes], sock: socket.socket, opened: Any, status: Any
    ) -> None:
        self._process = process
        self._sock = sock
        self._lock = threading.Lock()
        self._dead: str | None = None
        identity, created, writable, reason = opened
        self._identity: Hashable | None = identity
        self._created: bool = created
        self._writable: bool = writable
        self._reason: str = reason
        #: the child connection's ``rejected`` and ``upkeep_due``, as its last answer said
        self._rejected: int = status[0]
        self._upkeep_due: bool = status[1]

    @classmethod
    def start(cls, inner: Backend, *, busy_timeout_ms: int) -> ProcessWriteConnection:
        """Start a child, have it open ``inner``'s writer, and wait for the answer."""
        parent, child = socket.socketpair()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "feedd.store.writeprocess", str(child.fileno())],
                pass_fds=(child.fileno(),),
                stdin=subprocess.DEVNULL,
                env=_child_environment(),
                # Its own process group: a Ctrl-C on the terminal reaches the parent only,
                # which drains the writer through the child before closing it.
                process_group=0,
            )
        except OSError as exc:
            parent.close()
            raise StoreError(f"cannot start the store's writer process: {exc}") from None
        finally:
            child.close()
        parent.settimeout(OPEN_TIMEOUT_S)
        try:
            _send(parent, (inner, busy_timeout_ms))
            ok, value, status, logs = _receive(parent)
        except (OSError, EOFError, pickle.PickleError) as exc:
            parent.close()
            _reap(process)
            raise StoreError(
                f"the store's writer process did not open the store: {exc or 'it exited'}"
            ) from None
        parent.settimeout(None)
        _replay(logs)
        if not ok:
            parent.close()
            _reap(process)
            raise _error(value)
        return cls(process, parent, value, status)

    @property
    def identity(self) -> Hashable | None:
        return self._identity

    @property
    def created(self) -> bool:
        return self._created

    @property
    def writable(self) -> bool:
        return self._writable

    @property
    def rejected(self) -> int:
        return self._rejected

    @property
    def read_only_reason(self) -> str:
        return self._reason

    def moved(self) -> bool:
        # Asked on the event loop before each commit: never wait behind a call in progress
        # (that call will tell), and a dead child is a failure for the next call to report.
        if self._dead is not None or not self._lock.acquire(blocking=False):
            return False
        try:
            return bool(self._call_locked("moved", (), {}))
        except StoreError:
            return False
        finally:
            self._lock.release()

    def write(self, candles: Sequence[Candle]) -> int:
        return int(self._call("write", _wire(candles)))

    @property
    def upkeep_due(self) -> bool:
        return self._upkeep_due

    def upkeep(self) -> None:
        self._call("upkeep")

    def write_job(self, candles: Sequence[Candle], job_id: str, created_at: int, doc: str) -> int:
        return int(self._call("write_job", _wire(candles), job_id, created_at, doc))

    def delete_job(self, job_id: str) -> None:
        self._call("delete_job", job_id)

    def record_node(self, node_id: str, doc: str, at_ms: int) -> int:
        return int(self._call("record_node", node_id, doc, at_ms))

    def load_jobs(self) -> list[str]:
        return list(self._call("load_jobs"))

    def lease_job(self, job_id: str, node_id: str, ttl_ms: int) -> Lease:
        lease: Lease = self._call("lease_job", job_id, node_id, ttl_ms)
        return lease

    def release_job(self, job_id: str, node_id: str) -> None:
        self._call("release_job", job_id, node_id)

    def closed_runs(
        self, exchange: str, symbol: str, interval: str, start: int, end: int
    ) -> list[tuple[int, int]]:
        return list(self._call("closed_runs", exchange, symbol, interval, start, end))

    def prune(self, max_records: int) -> int:
        return int(self._call("prune", max_records))

    def wipe(self) -> None:
        self._call("wipe")

    def analyze(self) -> None:
        self._call("analyze")

    def close(self, *, checkpoint: bool = True) -> None:
        with self._lock:
            if self._dead is None:
                try:
                    self._call_locked("close", (), {"checkpoint": checkpoint})
                except StoreError as exc:
                    log.warning("closing the store's writer process: %s", exc)
                self._dead = "it was closed"
            self._sock.close()
            _reap(self._process)

    def _call(self, name: str, *args: object) -> Any:
        with self._lock:
            return self._call_locked(name, args, {})

    def _call_locked(self, name: str, args: tuple[object, ...], kwargs: dict[str, Any]) -> Any:
        if self._dead is not None:
            raise StoreError(f"the store's writer process is gone: {self._dead}")
        try:
            _send(self._sock, (name, args, kwargs))
            ok, value, status, logs = _receive(self._sock)
        except (OSError, EOFError) as exc:
            self._dead = _ending(self._process, exc)
            raise StoreError(f"the store's writer process is gone: {self._dead}") from None
        self._rejected, self._upkeep_due = int(status[0]), bool(status[1])
        _replay(logs)
        if not ok:
            raise _error(value)
        return value


def _ending(process: subprocess.Popen[bytes], exc: Exception) -> str:
    """How the child ended, once its socket failed (it is dead or about to be)."""
    try:
        code = process.wait(timeout=EXIT_WAIT_S)
    except subprocess.TimeoutExpired:
        return f"its socket failed ({type(exc).__name__}) while it still runs"
    if code < 0:
        return f"it was killed by {signal.Signals(-code).name}"
    return f"it exited with code {code}"


def _error(value: tuple[str, str]) -> StoreError:
    kind, message = value
    return _ERRORS.get(kind, StoreError)(message)


def _replay(logs: list[tuple[str, int, str]]) -> None:
    """Log, in the parent, what the child logged while answering."""
    for name, level, message in logs:
        logging.getLogger(name).log(level, "%s", message)


def _reap(process: subprocess.Popen[bytes]) -> None:
    try:
        process.wait(timeout=CLOSE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.error("the store's writer process did not exit in %g s: killed", CLOSE_TIMEOUT_S)
        process.kill()
        process.wait()


# --- the child ---------------------------------------------------------------------------


class _Collected(logging.Handler):
    """Keeps the child's log records for the next answer: the parent owns the log output."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[tuple[str, int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append((record.name, record.levelno, record.getMessage()))

    def take(self) -> list[tuple[str, int, str]]:
        records, self.records = self.records, []
        return records


def _candles(data: bytes) -> list[Candle]:
    """What ``_wire`` made; the decoder types every field (the source back to its enum)."""
    return list(itertools.starmap(Candle, _decode_rows(data)))


def _status(db: WriteConnection) -> tuple[int, bool]:
    """What each answer tells the parent of the connection's state besides the result."""
    return db.rejected, db.upkeep_due


def serve(sock: socket.socket) -> None:
    """Open the writer the parent names, then run its calls until the socket closes."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    gcsettings.tune()  # the rows of a batch are made here
    collected = _Collected()
    root = logging.getLogger()
    root.addHandler(collected)
    root.setLevel(logging.INFO)
    try:
        inner, busy_timeout_ms = _receive(sock)
    except EOFError:
        return
    db: WriteConnection | None = None
    try:
        db = inner.open_writer(busy_timeout_ms=busy_timeout_ms)
        opened = (db.identity, db.created, db.writable, db.read_only_reason)
        _send(sock, (True, opened, _status(db), collected.take()))
    except StoreError as exc:
        _send(sock, (False, (type(exc).__name__, str(exc)), (0, False), collected.take()))
        return
    while True:
        try:
            name, args, kwargs = _receive(sock)
        except EOFError:
            break  # the parent is gone: whatever it had not committed was never begun here
        try:
            if name in ("write", "write_job"):
                args = (_candles(args[0]), *args[1:])
            result = getattr(db, name)(*args, **kwargs)
            answer: tuple[Any, ...] = (True, result, _status(db), collected.take())
        except StoreError as exc:
            answer = (False, (type(exc).__name__, str(exc)), _status(db), collected.take())
        except Exception as exc:  # a bug here must reach the parent's log, not kill the store
            message = f"{name} failed in the writer process: {type(exc).__name__}: {exc}"
            answer = (False, ("StoreError", message), _status(db), collected.take())
        _send(sock, answer)
        if name == "close":
            return
    db.close(checkpoint=False)


def main(argv: list[str]) -> None:
    sock = socket.socket(fileno=int(argv[0]))
    try:
        serve(sock)
    finally:
        sock.close()


if __name__ == "__main__":
    main(sys.argv[1:])
