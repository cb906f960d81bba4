"""Adaptive admission of the request slots (service.db.RequestSlots): a request that would
wait longer than the budget for a slot is refused at once with 503 + Retry-After; within the
budget, or with the budget off, it waits for the slot."""

from __future__ import annotations

import asyncio

import pytest

from service.db import RequestSlots
from service.errors import ServiceUnavailableError


async def _hold_for(slots: RequestSlots, seconds: float) -> None:
    async with slots.hold():
        await asyncio.sleep(seconds)


async def _newcomer_while_the_slot_is_held(slots: RequestSlots) -> list[str]:
    """One slot; a first request held it for 0.2 s (the average hold so far); a second
    holder keeps it until released, and a newcomer arrives meanwhile."""
    await _hold_for(slots, 0.2)
    release, held = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with slots.hold():
            held.set()
            await release.wait()

    async def newcomer() -> str:
        async with slots.hold():
            return "admitted"

    holding = asyncio.create_task(holder())
    await held.wait()
    arriving = asyncio.create_task(newcomer())
    await asyncio.sleep(0)  # the newcomer runs until it is refused or waits for the slot
    seen = ["refused at once"] if arriving.done() else ["waiting"]
    release.set()
    await holding
    try:
        seen.append(await arriving)
    except ServiceUnavailableError as exc:
        assert exc.headers == {"Retry-After": "1"}
        assert "budget" in exc.detail
    return seen


@pytest.mark.parametrize(
    ("budget_s", "expected"),
    [
        (0.05, ["refused at once"]),  # expected wait 0.2 s > 50 ms
        (1.0, ["waiting", "admitted"]),  # within the budget: waits for the slot
        (0.0, ["waiting", "admitted"]),  # budget off: waits (up to the queue timeout)
    ],
)
def test_a_request_is_refused_at_once_only_when_its_expected_wait_exceeds_the_budget(
    budget_s: float, expected: list[str]
) -> None:
    slots = RequestSlots(1, timeout_s=10, budget_s=budget_s)
    assert asyncio.run(_newcomer_while_the_slot_is_held(slots)) == expected


def test_a_free_slot_is_taken_whatever_the_average_hold() -> None:
    async def run() -> str:
        slots = RequestSlots(1, timeout_s=10, budget_s=0.001)
        await _hold_for(slots, 0.05)  # average hold 50 ms, far over the budget
        async with slots.hold():
            return "admitted"

    assert asyncio.run(run()) == "admitted"
