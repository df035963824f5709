"""The front door: Host allow-list, bearer token, same-origin and JSON-only state changes.

Checked before every request and WebSocket handshake. The dashboard's static files need no
token (they hold no data and a browser cannot attach one to a page load); everything else
does when ``api_token`` is set.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from quart import request, websocket

from feedd.config import Config
from feedd.web.errors import ApiError
from feedd.web.state import current_state

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
_WILDCARD_BINDS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: endpoints served without a token
PUBLIC_ENDPOINTS = frozenset({"static.index", "static.asset"})


def host_name(host: str) -> str:
    """The name part of a Host header value (no port, no IPv6 brackets), lower-cased."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def allowed_names(config: Config) -> frozenset[str]:
    names = set(LOOPBACK_NAMES) | {host_name(h) for h in config.allowed_hosts}
    if config.host not in _WILDCARD_BINDS:
        names.add(host_name(config.host))
    return frozenset(names)


#: the last config's allowed names, rebuilt when the config object changes (it is frozen)
_names: tuple[Config, frozenset[str]] | None = None


def _allowed(config: Config) -> frozenset[str]:
    global _names
    if _names is None or _names[0] is not config:
        _names = (config, allowed_names(config))
    return _names[1]


def check_host(config: Config, host: str) -> None:
    # A DNS-rebinding page reaches us with its own name in Host; only known names pass.
    if host_name(host) not in _allowed(config):
        raise ApiError(403, f"host {host[:80]!r} is not allowed (add it to allowed_hosts)", "Host")


def check_token(config: Config, authorization: str | None, query_token: str | None) -> None:
    if not config.api_token:
        return
    offered = None
    if authorization and authorization[:7].lower() == "bearer ":
        offered = authorization[7:].strip()
    elif query_token is not None:
        offered = query_token
    if offered is None:
        raise ApiError(
            401, "this feedd requires Authorization: Bearer <api_token>", "Authorization"
        )
    if not hmac.compare_digest(offered.encode(), config.api_token.encode()):
        raise ApiError(401, "wrong API token", "Authorization")


def check_same_origin(host: str, origin: str | None, referer: str | None) -> None:
    """A browser names the page that sent a request; it must be feedd's own page."""
    source, field = (origin, "Origin") if origin is not None else (referer, "Referer")
    if source is None:
        return  # not a browser (curl, feedctl): nothing to forge
    if urlsplit(source).netloc.lower() != host.strip().lower():
        raise ApiError(403, "cross-origin requests are refused", field)


async def check_request() -> None:
    config = current_state().security
    check_host(config, request.host)
    if request.endpoint not in PUBLIC_ENDPOINTS:
        check_token(config, request.headers.get("Authorization"), None)
    if request.method in SAFE_METHODS:
        return
    check_same_origin(request.host, request.headers.get("Origin"), request.headers.get("Referer"))
    if request.mimetype != "application/json":
        raise ApiError(415, "send the body as JSON with Content-Type: application/json")


async def check_websocket() -> None:
    config = current_state().security
    check_host(config, websocket.host)
    check_token(config, websocket.headers.get("Authorization"), websocket.args.get("token"))
    # Browsers always send Origin on a WebSocket handshake: cross-site pages are refused.
    check_same_origin(websocket.host, websocket.headers.get("Origin"), None)
