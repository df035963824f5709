"""Build the Quart-Trio app and serve it with hypercorn inside the caller's nursery."""

from __future__ import annotations

import logging

import trio
from hypercorn.trio import serve
from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from feedd.errors import ConfigError, FeeddError, StoreError
from feedd.web import hardening
from feedd.web.admin import admin
from feedd.web.api import api
from feedd.web.backfill import backfill
from feedd.web.errors import ApiError, error_response
from feedd.web.limits import MAX_BODY_BYTES, RequestLimits, has_body
from feedd.web.observe import observe
from feedd.web.openapi import openapi
from feedd.web.peer import Connections
from feedd.web.roles import check_role, check_role_websocket
from feedd.web.security import check_request, check_websocket
from feedd.web.socket import live
from feedd.web.state import AppState
from feedd.web.static import static

log = logging.getLogger("feedd.web")
GRACEFUL_TIMEOUT_S = 3.0
MAX_WS_MESSAGE_BYTES = 64 * 1024
#: an idle keep-alive connection is closed after this long; it is also how long a client may
#: take to send a request's headers (hypercorn's idle timer runs until they are complete)
KEEP_ALIVE_S = 5.0
#: connections the kernel queues for accept (capped by net.core.somaxconn, 4096 by default)
LISTEN_BACKLOG = 1024


def create_app(state: AppState) -> QuartTrio:
    app = QuartTrio("feedd", static_folder=None)
    app.config["FEEDD_STATE"] = state
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    # Static routes go last: werkzeug prefers fixed paths, but keep the intent readable.
    for blueprint in (api, admin, backfill, observe, openapi, live, static):
        app.register_blueprint(blueprint)
    app.before_request(check_request)
    app.before_websocket(check_websocket)
    # After the front door: the role is nobody's business before the token is checked.
    app.before_request(check_role)
    app.before_websocket(check_role_websocket)
    app.asgi_app = RequestLimits(app.asgi_app)  # type: ignore[method-assign]

    @app.get("/ws")
    async def ws_without_upgrade() -> Response:
        # The WebSocket route answers upgrades only; a plain GET would fall through to the
        # static files and read as a missing page.
        response = error_response(
            426, "/ws is a WebSocket: send Upgrade: websocket (see docs/API.md)", "Upgrade"
        )
        response.headers["Upgrade"] = "websocket"
        response.headers["Connection"] = "Upgrade"
        return response

    @app.after_request
    async def close_after_refusal(response: Response) -> Response:
        # A refusal may go out before the body arrived: see limits.closing_headers.
        if response.status_code >= 400 and has_body(request.scope):
            response.headers["Connection"] = "close"
        return response

    @app.errorhandler(ApiError)
    async def api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.message, exc.field)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="feedd"'
        return response

    @app.errorhandler(ConfigError)
    async def config_error(exc: ConfigError) -> Response:
        return error_response(400, exc.problem, exc.path or None)

    @app.errorhandler(StoreError)
    async def store_error(exc: StoreError) -> Response:
        return error_response(503, str(exc))

    @app.errorhandler(FeeddError)
    async def feedd_error(exc: FeeddError) -> Response:
        # Transport/exchange trouble behind a request (an instrument list, say).
        return error_response(503, str(exc))

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        # werkzeug's own headers carry meaning: Allow on a 405 lists the methods.
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    async def unexpected(exc: Exception) -> Response:
        log.exception("unhandled error in a request")
        return error_response(500, "internal error (see the server log)")

    return app


def bind_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def serve_web(
    app: QuartTrio,
    host: str,
    port: int,
    stop: trio.Event,
    *,
    connections: Connections | None = None,
    keep_alive_s: float = KEEP_ALIVE_S,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve until ``stop`` is set; reports the bound base URL (port 0 picks a free one).

    ``connections``: the server's connection registry, the app state's by default."""
    if connections is None:
        connections = app.config["FEEDD_STATE"].connections
    hardening.install()
    config = hardening.ServerConfig(connections)
    config.bind = [bind_address(host, port)]
    config.keep_alive_timeout = keep_alive_s
    # Connections wait in the kernel's queue until accepted; under a flood of them a full
    # queue drops a newcomer's SYN and its client retries only after a second or more.
    config.backlog = LISTEN_BACKLOG
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_TIMEOUT_S
    # Clients only send small JSON requests on /ws; refuse anything big at the frame level.
    config.websocket_max_message_size = MAX_WS_MESSAGE_BYTES

    class _Status:
        def started(self, binds: list[str] | None = None) -> None:
            task_status.started((binds or ["http://" + bind_address(host, port)])[0])

    accept_errors = hardening.AcceptErrors(connections)
    accept_log = logging.getLogger(hardening.ACCEPT_LOGGER)
    accept_log.addFilter(accept_errors)
    try:
        await serve(app, config, shutdown_trigger=stop.wait, task_status=_Status())
    finally:
        accept_log.removeFilter(accept_errors)
