"""The event-loop CPU-share instrument: sampled batches, charged to the registered group."""

from __future__ import annotations

import random
import time

import trio

from feedd.monitor.taskcpu import OTHER, TaskCpu


def spin(seconds: float) -> float:
    """Burn CPU in this task step for ``seconds``; return the time it took."""
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        pass
    return time.perf_counter() - start


async def test_installed_mid_step_charges_only_what_ran() -> None:
    # Installed from inside a task (as run_service does), the step that installs it has no
    # recorded start: it must not be charged perf_counter() seconds (the time since boot).
    cpu = TaskCpu()
    start = time.perf_counter()
    trio.lowlevel.add_instrument(cpu)
    try:
        for _ in range(50):
            spin(0.0002)
            await trio.lowlevel.checkpoint()
    finally:
        trio.lowlevel.remove_instrument(cpu)
    elapsed = time.perf_counter() - start
    # A timed step is charged SAMPLE_EVERY (8) times over, never more.
    assert sum(cpu.busy.values()) <= 8 * elapsed


async def test_sampled_busy_time_goes_to_the_registered_group() -> None:
    cpu = TaskCpu(every=4, rng=random.Random(7))
    spent = [0.0]

    async def busy(task_status: trio.TaskStatus[None]) -> None:
        cpu.register(trio.lowlevel.current_task(), "venue")
        task_status.started()

        async def child() -> None:  # a child task is charged to its ancestor's group
            for _ in range(400):
                spent[0] += spin(0.0005)
                await trio.lowlevel.checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(child)

    trio.lowlevel.add_instrument(cpu)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(busy)
    finally:
        trio.lowlevel.remove_instrument(cpu)
    # One batch in 4 is timed (about 100 of the 400 steps): the estimate is within a few
    # tenths of the truth; the bounds are wide so a loaded machine cannot fail it.
    assert 0.5 * spent[0] < cpu.busy["venue"] < 2 * spent[0]
    assert cpu.busy.get(OTHER, 0.0) < 0.5 * spent[0]


async def test_removed_owner_leaves_no_stepper_behind() -> None:
    cpu = TaskCpu(every=1)
    trio.lowlevel.add_instrument(cpu)
    await trio.lowlevel.checkpoint()  # a batch is timed: the stepper is installed for it
    trio.lowlevel.remove_instrument(cpu)
    await trio.lowlevel.checkpoint()
    before = dict(cpu.busy)
    for _ in range(20):
        spin(0.0002)
        await trio.lowlevel.checkpoint()
    assert dict(cpu.busy) == before
