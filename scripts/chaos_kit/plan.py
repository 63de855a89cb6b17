"""The kill plan: a function of the seed alone, made before the run starts.

Kills fall at random moments (gaps drawn from `--kill-every`); each kill's target is drawn from a
shuffled bag of every target, so each is hit once before any is hit twice, and each comes back
after a random pause (`--down-for`). The run follows the plan in order; when a target is still on
its way back up at its moment, the kill waits for it, so the list of kills never changes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

ORCHESTRATORS = ("orchestrator-1", "orchestrator-2")
WORKERS = ("inventory", "payment", "shipping", "notification")
INFRA = ("kafka", "redis")
TARGETS = (*ORCHESTRATORS, *WORKERS, *INFRA)


@dataclass(frozen=True)
class Kill:
    #: seconds after the kill window opened
    at_s: float
    target: str
    #: pause before the restart begins
    down_s: float


def kill_plan(
    rng: random.Random,
    window_s: float,
    every_s: tuple[float, float],
    down_s: tuple[float, float],
    first: str | None = None,
) -> list[Kill]:
    """The kills of one window. `first` puts that target at the head of the first bag."""
    plan: list[Kill] = []
    bag: list[str] = []
    at = 0.0
    while True:
        at += rng.uniform(*every_s)
        if at >= window_s:
            return plan
        if not bag:
            bag = list(TARGETS)
            rng.shuffle(bag)
            if first is not None and not plan:
                bag.remove(first)
                bag.insert(0, first)
        plan.append(Kill(round(at, 1), bag.pop(0), round(rng.uniform(*down_s), 1)))


def parse_range(text: str) -> tuple[float, float]:
    """'3-8' or '5' (seconds) as (low, high); ValueError when it is not one."""
    low, _, high = text.partition("-")
    a, b = float(low), float(high or low)
    if not 0 <= a <= b:
        raise ValueError(f"{text!r} is not a range of seconds like 3-8")
    return a, b
