"""A small synchronous client of feedd's HTTP API that turns every failure into a CtlError.

The exit status travels with the error: 1 when the server answered no, 3 when it could not
be reached at all, so ``main`` prints one line and never a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from feedd.errors import FeeddError

EXIT_REFUSED = 1
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3


class CtlError(FeeddError):
    """A command failed; ``str()`` is the one line for stderr, ``exit_code`` the status."""

    exit_code = EXIT_REFUSED


class Refused(CtlError):
    """The server answered with an error status, or with something that is not feedd's JSON."""


class Unreachable(CtlError):
    """No answer at all: connection refused, unknown host, timeout, connection lost."""

    exit_code = EXIT_UNREACHABLE


class BadInput(CtlError):
    """The user's input is unusable before anything is sent (a file that is not JSON)."""

    exit_code = EXIT_USAGE


def refusal(status: int, body: bytes) -> Refused:
    """The server's own ``error`` and ``field``, or a hint when the body is not feedd's."""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), str):
        message = doc["error"]
        if doc.get("field"):
            message += f" (field: {doc['field']})"
    else:
        first = body.decode("utf-8", "replace").strip().splitlines()
        message = first[0][:200] if first else "(empty answer)"
    if status == 401:
        message += "; pass --token or set $FEEDD_TOKEN"
    return Refused(f"HTTP {status}: {message}")


class Client:
    """One ``httpx.Client`` bound to feedd's base URL and, when given, its bearer token."""

    def __init__(self, base_url: str, token: str | None, timeout: float) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def close(self) -> None:
        self._http.close()

    def get_raw(self, path: str, params: dict[str, Any] | None = None) -> httpx.Response:
        return self._send("GET", path, params=params)

    def post_raw(self, path: str, body: object) -> httpx.Response:
        # httpx's json= sets Content-Type: application/json, which state-changing routes need.
        return self._send("POST", path, json=body)

    def delete(self, path: str) -> Any:
        # A change like any other: the server wants Content-Type: application/json.
        return decode(self._send("DELETE", path, json={}))

    def get(self, path: str, params: dict[str, Any] | None = None) -> Any:
        return decode(self.get_raw(path, params))

    def post(self, path: str, body: object) -> Any:
        return decode(self.post_raw(path, body))

    @contextlib.contextmanager
    def stream(self, path: str, params: dict[str, Any] | None = None) -> Iterator[Iterator[bytes]]:
        """A GET whose body is read a piece at a time (an export of any size)."""
        with self._errors(), self._http.stream("GET", path, params=params) as response:
            if response.status_code >= 400:
                raise refusal(response.status_code, response.read())
            yield response.iter_bytes()

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self._errors():
            response = self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise refusal(response.status_code, response.content)
        return response

    @contextlib.contextmanager
    def _errors(self) -> Iterator[None]:
        """httpx's failures as Unreachable, with the reason in one line."""
        try:
            yield
        except httpx.ConnectTimeout:
            raise Unreachable(f"cannot reach {self.base_url}: connect timed out") from None
        except httpx.TimeoutException:
            # The request may have arrived: a slow restart can still complete on the server.
            raise Unreachable(
                f"no answer from {self.base_url} within {self.timeout:g} s (timed out)"
            ) from None
        except httpx.TransportError as exc:
            raise Unreachable(f"cannot reach {self.base_url}: {describe(exc)}") from None


def api_path(*segments: str) -> str:
    """``/ohlcv/<exchange>/<symbol>/<interval>`` with each segment percent-encoded (UTF-8), so
    a symbol such as ``币安人生USDT`` arrives intact and a ``/`` or ``?`` in one stays in it."""
    return "".join("/" + quote(segment, safe="") for segment in segments)


def decode(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        raise Refused(
            f"the answer to {response.request.url.path} is not JSON; is this feedd?"
        ) from None


def describe(exc: Exception) -> str:
    """httpx wraps the OS error; its innermost message is the useful one."""
    message = str(exc)
    cause = exc.__cause__ or exc.__context__
    while cause is not None and not message:
        message = str(cause)
        cause = cause.__cause__ or cause.__context__
    return message or type(exc).__name__
