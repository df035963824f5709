"""Connecting to NATS and making the stream: the options feedd uses, errors translated."""

from __future__ import annotations

import asyncio
import logging

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from feedd.config import NatsConfig, redacted_url
from feedd.publish import wire

log = logging.getLogger("feedd.publish")

CONNECT_TIMEOUT_S = 3
#: what a broker that went away raises from nats-py (and asyncio under it)
NATS_ERRORS: tuple[type[BaseException], ...] = (
    nats.errors.Error,
    nats.js.errors.Error,
    OSError,
    asyncio.TimeoutError,
    EOFError,
)


async def _quiet(exc: Exception) -> None:
    """nats-py reports every failed socket here too; the caller reports the one it saw."""
    log.debug("nats: %s", exc)


async def connect(
    settings: NatsConfig, *, reconnect: bool, name: str = "feedd", lost: asyncio.Event | None = None
) -> Client:
    """A connection to ``settings.url`` (its credentials, or the creds file's).

    The publisher connects with ``reconnect=False``: nats-py would otherwise replay what it
    buffered while disconnected after reconnecting, behind messages the broker never got from
    before the cut, and closed candles of one series would reach the stream out of order."""

    async def closed() -> None:
        if lost is not None:
            lost.set()

    return await nats.connect(
        servers=[settings.url],
        name=name,
        connect_timeout=CONNECT_TIMEOUT_S,
        allow_reconnect=reconnect,
        max_reconnect_attempts=-1,
        reconnect_time_wait=1,
        user_credentials=settings.creds,
        error_cb=_quiet,
        disconnected_cb=closed if not reconnect else None,
        closed_cb=closed,
    )


def stream_config(settings: NatsConfig, *, ttl: bool) -> StreamConfig:
    return StreamConfig(
        name=settings.stream,
        subjects=[wire.stream_subjects(settings.subject_prefix)],
        retention=RetentionPolicy.LIMITS,
        discard=DiscardPolicy.OLD,
        storage=StorageType.FILE,
        max_age=settings.max_age,
        duplicate_window=settings.duplicate_window,
        allow_msg_ttl=True if ttl else None,
    )


async def ensure_stream(js: JetStreamContext, settings: NatsConfig) -> bool:
    """Create the stream or bring its subjects, retention and duplicate window up to the
    config; True when it keeps forming updates for a short time only (per-message TTL)."""
    for ttl in (True, False):
        config = stream_config(settings, ttl=ttl)
        try:
            try:
                await js.stream_info(settings.stream)
            except nats.js.errors.NotFoundError:
                await js.add_stream(config)
            else:
                await js.update_stream(config)
        except nats.js.errors.BadRequestError as exc:
            # Servers before 2.11 know no per-message TTL: forming updates then age out with
            # max_age like the rest.
            if ttl:
                log.warning("stream %s without per-message TTL: %s", settings.stream, exc)
                continue
            raise
        return ttl
    return False


def where(settings: NatsConfig) -> str:
    return str(redacted_url(settings.url))
