"""Configuration and control routes: config, exchanges, symbols, toggles, restart, delete."""

from __future__ import annotations

from typing import Any

from quart import Blueprint, Response

from feedd import config as config_module
from feedd.control import Applied
from feedd.storageconfig import redacted_dsn
from feedd.symbols import is_symbol
from feedd.web import body, params
from feedd.web.errors import ApiError, json_response
from feedd.web.roles import check_change
from feedd.web.state import current_state as state
from feedd.web.status import exchanges_document

admin = Blueprint("admin", __name__)

REDACTED = "***"
DELETE_CONFIRMATION = "DELETE"


def applied(result: Applied, **extra: Any) -> Response:
    return json_response(
        {
            "ok": True,
            **extra,
            "restarted": list(result.restarted),
            "restart_required": list(result.restart_required),
            "warnings": list(result.warnings),
        }
    )


@admin.get("/config")
async def get_config() -> Response:
    config = state().config
    data = config.to_json()
    if data.get("api_token"):
        data["api_token"] = REDACTED
    if "nats" in data.get("publish", {}):
        data["publish"]["nats"]["url"] = config_module.redacted_url(data["publish"]["nats"]["url"])
    data["storage"] = config.storage.to_json(redact=True)
    return json_response(data)


@admin.post("/config")
async def post_config() -> Response:
    data = await body.json_object()
    if not isinstance(data.get("exchanges"), dict):
        # Every key is optional in a file, but a posted config replaces the running one
        # whole: a partial body would silently reset everything it left out.
        raise ApiError(
            400, "post the whole configuration (GET /config, edit, POST it back)", "exchanges"
        )
    controller = state().controller
    if data.get("api_token") == REDACTED:
        data["api_token"] = controller.config.api_token
    config_module.restore_nats_url(data, controller.config)
    running = controller.config.storage
    storage = data.get("storage")
    if (
        isinstance(storage, dict)
        and running.dsn
        and storage.get("dsn") == redacted_dsn(running.dsn)
    ):
        # The redacted DSN GET /config showed means "unchanged", as the token's REDACTED does.
        data["storage"] = {**storage, "dsn": running.dsn}
    loaded = config_module.parse(data)
    check_change(controller.started_with, controller.config, loaded.config)
    return applied(await controller.replace(loaded.config, loaded.warnings))


@admin.get("/exchanges")
async def get_exchanges() -> Response:
    return json_response(exchanges_document(state()))


@admin.get("/exchangeSymbols/<exchange>")
async def get_exchange_symbols(exchange: str) -> Response:
    exchange = params.exchange_name(exchange)
    app_state = state()
    listing = await app_state.controller.listing(exchange)
    configured = app_state.config.exchanges.get(exchange)
    return json_response(
        {
            "exchange": exchange,
            "listed": sorted(s for s in listing.symbols if is_symbol(s)),
            "configured": list(configured.symbols) if configured else [],
            "fetched_at": listing.fetched_at_ms,
        }
    )


@admin.post("/exchangeSymbols")
async def post_exchange_symbols() -> Response:
    data = await body.json_object()
    exchange = params.exchange_name(body.string_field(data, "exchange"))
    symbols = body.string_list(data, "symbols")
    add = body.string_list(data, "add") or []
    remove = body.string_list(data, "remove") or []
    if symbols is None and not add and not remove:
        raise ApiError(400, "give symbols (the whole list) or add/remove", "symbols")
    new, result = await state().controller.set_symbols(exchange, symbols, add=add, remove=remove)
    return applied(result, exchange=exchange, symbols=list(new))


@admin.post("/toggleExchange")
async def toggle_exchange() -> Response:
    data = await body.json_object()
    exchange = params.exchange_name(body.string_field(data, "exchange"))
    enabled, result = await state().controller.toggle(exchange, body.optional_bool(data, "enabled"))
    return applied(result, exchange=exchange, enabled=enabled)


@admin.post("/restart")
async def restart() -> Response:
    await body.json_object()
    return applied(await state().controller.restart())


@admin.post("/deleteDatabase")
async def delete_database() -> Response:
    data = await body.json_object()
    if data.get("confirm") != DELETE_CONFIRMATION:
        raise ApiError(
            400, f'deleting every candle needs "confirm": "{DELETE_CONFIRMATION}"', "confirm"
        )
    app_state = state()
    await app_state.controller.delete_database()
    # The other nodes sharing the store drop what they derived from it (feedd/cluster.py).
    if app_state.cluster is not None:
        await app_state.cluster.announce_wipe()
    return json_response({"ok": True})
