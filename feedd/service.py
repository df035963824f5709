"""The root of the supervision tree: writer, web, ingest; ordered shutdown by structure.

Shutdown: stop ingest (every exchange's nursery is cancelled and closes its clone of the
candle channel), let the writer drain the channel and commit, close the store, then stop
the web server, telling WebSocket handlers first so they close cleanly.
"""

from __future__ import annotations

import errno
import functools
import gc
import logging
import socket
import sys
import time
from pathlib import Path

import attrs
import httpx
import trio

from feedd import gcsettings
from feedd.candle import Candle
from feedd.cluster import Cluster, NodeIdentity, StoreEpochs
from feedd.config import Config, check_exposure
from feedd.control import Controller
from feedd.engine.supervisor import Supervisor
from feedd.errors import ListenError, leaves
from feedd.jobs.manager import JobManager
from feedd.monitor.logring import LogRing
from feedd.monitor.system import Monitor
from feedd.monitor.taskcpu import TaskCpu
from feedd.store.backend import Backend
from feedd.store.sqlite import SqliteBackend
from feedd.store.writer import Writer, WriterSettings
from feedd.web.app import create_app, serve_web
from feedd.web.live import LiveHub
from feedd.web.state import AppState
from feedd.web.status import node_status, status_document

log = logging.getLogger("feedd")

#: lists of candles in flight between ingest and the writer. A list is one socket read's
#: frames (up to a few hundred candles): while the writer makes ingest wait, this many lists
#: wait here: the bound is memory (at full load 64 lists held ~8 MB more than 16).
CANDLE_QUEUE = 8
#: candles the writer holds while commits succeed before ingest waits, and its batch size:
#: at full load 5,000 held cost ~6 MB more RSS than 2,500, for no more rows per second
HELD_WHILE_HEALTHY = 2500
SHUTDOWN_TIMEOUT_S = 10.0
#: of which the last heartbeat may take this long
HEARTBEAT_GOODBYE_S = 1.0
#: how long the event loop may wait for the GIL while another thread (the writer binding a
#: batch) runs Python code: Python's 5 ms default, paid at each of the loop's syscalls, is a
#: /ws delivery budget; 1 ms cost no measurable CPU per row at full load (#17)
SWITCH_INTERVAL_S = 0.001


@attrs.define(eq=False)
class Service:
    """Handles of a running service, reported through ``task_status``."""

    url: str
    state: AppState
    stop: trio.Event


def listen_error(exc: OSError, host: str, port: int) -> ListenError:
    """Name the address and what is wrong with it, from the error binding it raised."""
    where = f"cannot listen on {host}:{port}"
    if isinstance(exc, socket.gaierror):
        return ListenError(f"{where}: host {host!r} does not resolve ({exc.strerror})")
    if exc.errno == errno.EADDRINUSE:
        return ListenError(f"{where}: the port is in use by another process")
    if exc.errno == errno.EADDRNOTAVAIL:
        return ListenError(f"{where}: {host} is not an address of this machine")
    if exc.errno == errno.EACCES:
        return ListenError(f"{where}: permission denied (ports below 1024 need privileges)")
    return ListenError(f"{where}: {_reason(exc)}")


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


async def run_service(
    config: Config,
    store: Backend | Path,
    *,
    config_path: Path | None = None,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[Service] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run feedd until ``stop`` is set, then shut down in order.

    ``store``: the backend, or the path of a SQLite file.
    ``config_path``: where API changes to the configuration are saved (None: not saved).
    """
    check_exposure(config)
    stop = trio.Event() if stop is None else stop
    backend: Backend = SqliteBackend(store) if isinstance(store, Path) else store
    backend.prepare()
    writer = Writer(
        WriterSettings(
            backend,
            config.batch_interval,
            config.max_records,
            max_batch=HELD_WHILE_HEALTHY,
            max_ahead=HELD_WHILE_HEALTHY,
        )
    )
    reader = backend.open_reader()
    candles_send, candles_recv = trio.open_memory_channel[list[Candle]](CANDLE_QUEUE)
    logs = LogRing()
    cpu = TaskCpu()
    logging.getLogger().addHandler(logs)
    # httpx logs every request at info: thousands of backfill calls would drown the log.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    trio.lowlevel.add_instrument(cpu)
    switch_interval = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    try:
        async with httpx.AsyncClient(http2=False) as http, trio.open_nursery() as root:
            writer_done = trio.Event()

            async def run_writer(*, task_status: trio.TaskStatus[None]) -> None:
                try:
                    await writer.run(candles_recv, task_status=task_status)
                finally:
                    writer_done.set()

            await root.start(run_writer)
            # The store's losses of history: its file made anew, or a wipe by another node.
            epochs = StoreEpochs(writer)
            supervisor = Supervisor(
                candles_send, reader, http, cpu, store=epochs, collect=config.role != "api"
            )
            controller = Controller(config, config_path, supervisor, writer, http)
            started_at = time.time()
            node = NodeIdentity.of_this_process(config.role, started_at)
            jobs = JobManager(
                writer, supervisor, http, lambda: controller.config, node.node_id, epochs
            )
            controller.jobs = jobs
            monitor = Monitor(backend, lambda: supervisor.stats, cpu, started_at)
            hub = LiveHub(writer, logs, lambda: status_document(state))
            cluster = Cluster(node, writer, reader, lambda: node_status(state), epochs=epochs)
            state = AppState(
                controller=controller,
                reader=reader,
                writer=writer,
                supervisor=supervisor,
                monitor=monitor,
                logs=logs,
                hub=hub,
                started_at=started_at,
                jobs=jobs,
                cluster=cluster,
            )
            await root.start(monitor.run)
            await root.start(hub.run)
            nats = config.publish.nats if config.publish is not None else None
            if nats is not None and config.role == "api":
                # Imported only when configured, here and below: nats-py costs ~4 MB of RSS.
                from feedd.publish.consumer import feed_live_hub

                # An API node collects nothing: its /ws serves what the collectors published.
                await root.start(functools.partial(feed_live_hub, hub, nats))
            elif nats is not None:
                from feedd.publish.publisher import Publisher

                state.publisher = Publisher(nats, writer)
                await root.start(state.publisher.run)
            web_stop = trio.Event()
            web_done = trio.Event()

            async def run_web(*, task_status: trio.TaskStatus[str]) -> None:
                try:
                    app = create_app(state)
                    await serve_web(
                        app, config.host, config.port, web_stop, task_status=task_status
                    )
                except (OSError, ExceptionGroup) as exc:
                    # Only binding raises OSError here (hypercorn contains per-connection
                    # errors), from inside hypercorn's nursery.
                    cause = next((e for e in leaves(exc) if isinstance(e, OSError)), None)
                    if cause is None:
                        raise
                    raise listen_error(cause, config.host, config.port) from None
                finally:
                    web_done.set()

            url = await root.start(run_web)
            ingest = trio.CancelScope()

            async def run_ingest(*, task_status: trio.TaskStatus[None]) -> None:
                with ingest:
                    async with candles_send:
                        await supervisor.run(config, task_status=task_status)

            await root.start(run_ingest)
            # Backfill jobs write through the writer: they stop with ingest, before it drains.
            jobs_scope = trio.CancelScope()

            async def run_jobs(*, task_status: trio.TaskStatus[None]) -> None:
                with jobs_scope:
                    # An API node runs no job, saved ones included (they fetch from the
                    # venues): it lists them, and cancels them through the store.
                    await jobs.run(execute=config.role != "api", task_status=task_status)

            await root.start(run_jobs)
            # Changes run in the controller's task, not a request's (see feedd/changes.py);
            # started once ingest runs, so a change sent earlier waits in the queue for it.
            await root.start(controller.run, stop)
            heartbeats = trio.CancelScope()

            async def run_heartbeats(*, task_status: trio.TaskStatus[None]) -> None:
                with heartbeats:
                    await cluster.run(task_status=task_status)

            await root.start(run_heartbeats)
            log.info(
                "feedd serving on %s; %s database %s; role %s",
                url,
                backend.kind,
                backend.location,
                config.role,
            )
            # What starting made lives as long as the service: out of the collector's sight, a
            # full collection scans ~10k objects, not ~80k (60 ms of the loop, #17).
            gcsettings.tune()
            gc.freeze()
            task_status.started(Service(url, state, stop))

            await stop.wait()
            log.info("shutting down: stopping ingest")
            # One deadline for the whole shutdown, so it is bounded whatever part is slow.
            deadline = trio.current_time() + SHUTDOWN_TIMEOUT_S
            heartbeats.cancel()
            if cluster.last_error is None:
                # Tells the cluster this node stopped rather than died (it is not marked
                # stale). Skipped when the store fails: a connect attempt would hold us up.
                with trio.move_on_at(trio.current_time() + HEARTBEAT_GOODBYE_S):
                    await cluster.beat("stopped")
            ingest.cancel()
            jobs_scope.cancel()
            with trio.move_on_at(deadline) as drain:
                await writer_done.wait()
            if drain.cancelled_caught:
                log.error("writer did not finish within %g s", SHUTDOWN_TIMEOUT_S)
            state.closing.set()
            web_stop.set()
            with trio.move_on_at(deadline):
                await web_done.wait()
            # The monitor and the live hub run until told: nothing of theirs needs saving.
            root.cancel_scope.cancel()
    finally:
        gc.unfreeze()  # a stopped service's objects become collectable again (tests run many)
        sys.setswitchinterval(switch_interval)
        reader.close()
        trio.lowlevel.remove_instrument(cpu)
        log.info("feedd stopped")
        logging.getLogger().removeHandler(logs)
