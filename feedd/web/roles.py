"""What each node role serves: a collector only its health and status; an API node no change
that would need ingest or that would reach past it into the cluster's shared store.

Checked after the front door (``feedd.web.security``), so a stranger learns nothing of the
role. The role is the one the process started with: a change to it waits for a restart.
"""

from __future__ import annotations

from quart import request

from feedd.config import Config
from feedd.web.errors import ApiError
from feedd.web.state import current_state

#: the routes a collector serves (HEAD too: the same paths)
COLLECTOR_PATHS = frozenset({"/health", "/status", "/metrics"})

_NOT_COLLECTED = (
    'this node has role "api": it collects nothing, so {what}; change them in a collector\'s config'
)
#: (method, path) an API node refuses, with why
API_REFUSED = {
    ("POST", "/exchangeSymbols"): _NOT_COLLECTED.format(what="it has no symbols to change"),
    ("POST", "/toggleExchange"): _NOT_COLLECTED.format(what="it has no exchange to toggle"),
    ("POST", "/backfill"): (
        'this node has role "api" and runs no backfill job (jobs fetch from the venues): '
        'start it on a node with role "all"'
    ),
    ("POST", "/deleteDatabase"): (
        'this node has role "api": its store is shared with the cluster\'s collectors, '
        "which keep writing into it. Stop the collectors and empty the database there "
        '(or run feedd with role "all" on its own store)'
    ),
}

#: GET /exchangeSymbols/<exchange> asks the venue: an API node never talks to venues
_VENUE_LISTING = (
    'this node has role "api": it does not ask the venues for their symbols (it collects '
    "nothing); list and change symbols in a collector's config"
)


def collector_refusal() -> ApiError:
    paths = ", ".join(sorted(COLLECTOR_PATHS))
    return ApiError(
        404,
        f'this node is a collector (role "collector"): it serves only {paths}; '
        'ask a node with role "api" or "all" for the rest',
    )


async def check_role() -> None:
    role = current_state().security.role
    if role == "collector" and request.path not in COLLECTOR_PATHS:
        raise collector_refusal()
    if role == "api":
        refusal = API_REFUSED.get((request.method, request.path))
        if request.path.startswith("/exchangeSymbols/"):
            refusal = _VENUE_LISTING
        if refusal is not None:
            raise ApiError(409, refusal)


async def check_role_websocket() -> None:
    if current_state().security.role == "collector":
        raise collector_refusal()


def check_change(started_with: Config, running: Config, new: Config) -> None:
    """On an API node, refuse a posted config that changes exchanges or their symbols."""
    if started_with.role == "api" and new.exchanges != running.exchanges:
        raise ApiError(409, _NOT_COLLECTED.format(what="its exchanges and symbols cannot change"))
