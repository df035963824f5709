"""sd_notify(3) without libsystemd: readiness, status and watchdog datagrams to the service manager.

Every call is a no-op when ``$NOTIFY_SOCKET`` is unset, so feedd runs the same outside systemd.
"""

from __future__ import annotations

import logging
import os
import socket
import time

import trio

log = logging.getLogger("feedd.sdnotify")


def _address() -> str | None:
    """Where systemd listens: a filesystem path, or ``@name`` in the abstract namespace."""
    value = os.environ.get("NOTIFY_SOCKET", "")
    if value.startswith("@"):
        return "\0" + value[1:]
    if value.startswith("/"):
        return value
    # Unset, or a transport we do not speak (``vsock:`` for VMs): nothing to tell.
    return None


def notify(*fields: str) -> bool:
    """Send ``fields`` (``READY=1``, ``STATUS=...``) as one datagram; True if it was sent.

    Never blocks and never raises for a socket failure: a service manager that cannot be told
    must not take the service down with it.
    """
    for field in fields:
        if "=" not in field or "\n" in field:
            raise ValueError(f"malformed sd_notify field {field!r}")
    address = _address()
    if address is None or not fields:
        return False
    message = "\n".join(fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            # Non-blocking: a full receive queue must cost a lost heartbeat, not a wedged loop.
            sock.setblocking(False)
            sock.sendto(message, address)
    except OSError as exc:
        log.debug("sd_notify to %r failed: %s", os.environ.get("NOTIFY_SOCKET"), exc)
        return False
    return True


def reloading() -> bool:
    """``RELOADING=1`` while the config is re-read; ``READY=1`` ends it.

    systemd 253+ wants the reload stamped with CLOCK_MONOTONIC (and Type=notify-reload ignores
    a RELOADING=1 without it); older versions ignore the extra field.
    """
    usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    return notify("RELOADING=1", f"MONOTONIC_USEC={usec}", "STATUS=reloading the config file")


def watchdog_interval() -> float | None:
    """Seconds within which systemd expects ``WATCHDOG=1`` from us, or None when it does not.

    ``$WATCHDOG_PID`` names the process the watchdog is meant for; a child that inherited the
    environment must not answer for its parent.
    """
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 1_000_000 if usec > 0 else None


async def run_watchdog(
    interval: float, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """Send ``WATCHDOG=1`` every ``interval / 2`` seconds until cancelled.

    The heartbeat comes from the event loop itself, so a wedged loop stops it and systemd
    restarts the service; half the interval leaves room for one late wakeup.
    """
    period = interval / 2
    notify("WATCHDOG=1")
    task_status.started()
    while True:
        await trio.sleep(period)
        notify("WATCHDOG=1")
