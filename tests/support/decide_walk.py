"""Helpers for the table and scenario tests of the pure saga core: events, expected
commands, and `Walk`, a saga driven through `decide` with a fake clock."""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator.core.conditions import AllOf, Compare, Not
from orchestrator.core.decide import decide
from orchestrator.core.definition import (
    Registry,
    RetryPolicy,
    SagaDefinition,
    StepDef,
    parallel,
    wait_for,
)
from orchestrator.core.model import (
    Event,
    Operator,
    Reply,
    SagaState,
    Signal,
    Start,
    StepState,
    StepStatus,
    TimerDue,
    Transition,
    command_id,
    parse_timer_member,
    timer_member,
)
from participants.samples.order.saga import ORDER_FULFILLMENT

SID = "order-1"
TYPE = "order_fulfillment"
DATA = {"order_id": "o-1", "amount": "42.00"}
T0 = 1_700_000_000_000
REG = Registry([ORDER_FULFILLMENT])
D = ORDER_FULFILLMENT

R, P, S, C = (s.name for s in D.steps)  # reserve_inventory ... send_confirmation
NAMES = (R, P, S, C)
SD = {s.name: s for s in D.steps}


# ---- helpers: events ---------------------------------------------------------------------------


def result_of(step: str, attempt: int) -> dict[str, str]:
    return {"ref": f"{step}-{attempt}"}


def start(saga_id: str = SID, saga_type: str = TYPE) -> Start:
    return Start(saga_id, saga_type, dict(DATA))


# Replies answer the command the saga issued (its deterministic id), as a participant's do.


def ok(step: str, attempt: int = 1) -> Reply:
    cid = command_id(SID, step, False, attempt)
    return Reply("completed", step, attempt, result=result_of(step, attempt), command_id=cid)


def fail(step: str, attempt: int = 1, retryable: bool = False) -> Reply:
    cid = command_id(SID, step, False, attempt)
    return Reply("failed", step, attempt, retryable=retryable, reason="boom", command_id=cid)


def comp_ok(step: str, attempt: int = 1) -> Reply:
    cid = command_id(SID, step, True, attempt)
    return Reply("compensated", step, attempt, compensation=True, command_id=cid)


def comp_fail(step: str, attempt: int = 1, retryable: bool = False) -> Reply:
    cid = command_id(SID, step, True, attempt)
    return Reply(
        "failed",
        step,
        attempt,
        compensation=True,
        retryable=retryable,
        reason="nope",
        command_id=cid,
    )


def due(kind: str, step: str, attempt: int, compensation: bool = False) -> TimerDue:
    return TimerDue(kind, step, attempt, compensation)  # type: ignore[arg-type]


def op(action: str, step: str | None = None) -> Operator:
    return Operator(action, step, reason="ticket 7", operator="ada")  # type: ignore[arg-type]


# ---- helpers: expected outputs -----------------------------------------------------------------

Cmd = tuple[str, str, int, bool]  # (command_type, step, attempt, compensation)


def act(step: str, attempt: int) -> Cmd:
    return (SD[step].action, step, attempt, False)


def undo(step: str, attempt: int) -> Cmd:
    return (SD[step].compensation, step, attempt, True)


def tmo(step: str, attempt: int) -> str:
    return timer_member(SID, "timeout", step, attempt, False)


def rty(step: str, attempt: int) -> str:
    return timer_member(SID, "retry", step, attempt, False)


def ctmo(step: str, attempt: int) -> str:
    return timer_member(SID, "timeout", step, attempt, True)


def crty(step: str, attempt: int) -> str:
    return timer_member(SID, "retry", step, attempt, True)


def cmds(t: Transition) -> list[Cmd]:
    return [(c.command_type, c.step, c.attempt, c.compensation) for c in t.commands]


def check_timer_dues(t: Transition, now: int, d: SagaDefinition = D) -> None:
    """Timeouts are due exactly after the step's timeout; retries within the jitter bounds."""
    for timer in t.timers:
        parsed = parse_timer_member(timer.member)
        assert parsed is not None
        _, td = parsed
        sd = d.steps[d.index(td.step)]  # type: ignore[index]
        if td.kind == "timeout":
            limit = sd.compensation_timeout_s if td.compensation else sd.timeout_s
            assert timer.due_ms == now + int(limit * 1000)
        else:
            policy = sd.compensation_retry if td.compensation else sd.retry
            lo, hi = backoff_bounds_ms(policy, td.attempt - 1)
            assert now + lo <= timer.due_ms <= now + hi, (timer, lo, hi)


def backoff_bounds_ms(policy: RetryPolicy, failed_attempt: int) -> tuple[int, int]:
    base = min(
        policy.max_backoff_s, policy.initial_backoff_s * policy.multiplier ** (failed_attempt - 1)
    )
    lo = max(0.0, base * (1 - policy.jitter))
    hi = min(policy.max_backoff_s, base * (1 + policy.jitter))
    return int(lo * 1000) - 1, int(hi * 1000) + 1


# ---- helpers: walking a saga -------------------------------------------------------------------


@dataclass
class Walk:
    """A saga driven through `decide` with a fake clock; keeps every transition."""

    registry: Registry = field(default_factory=lambda: REG)
    state: SagaState | None = None
    now: int = T0
    log: list[Transition] = field(default_factory=list)

    def send(self, event: Event, dt: int = 1000) -> Transition:
        self.now += dt
        t = decide(self.state, event, self.now, self.registry)
        if t.outcome == "applied":
            self.state = t.state
        self.log.append(t)
        return t

    def run(self, *events: Event) -> Walk:
        for e in events:
            t = self.send(e)
            assert t.outcome == "applied", t.note
        return self

    def commands(self) -> list[Cmd]:
        return [c for t in self.log for c in cmds(t)]

    @property
    def s(self) -> SagaState:
        assert self.state is not None
        return self.state

    def step(self, name: str) -> StepStatus:
        return self.s.steps[D.index(name)].status  # type: ignore[index]


def second_attempt(step: str) -> tuple[Event, Event]:
    """The step's first attempt fails retryably and its retry timer fires: attempt 2 runs."""
    return fail(step, 1, retryable=True), due("retry", step, 2)


def second_compensation(step: str) -> tuple[Event, Event]:
    return comp_fail(step, 1, retryable=True), due("retry", step, 2, compensation=True)


def shipment_failed() -> Walk:
    """R and P done; S fails non-retryably on its second attempt: P's compensation runs."""
    return Walk().run(start(), ok(R), ok(P), *second_attempt(S), fail(S, 2))


def build(name: str) -> Walk:
    """The canonical state of each status, with the step in play on its second attempt."""
    if name == "started":
        return Walk().run(start(), *second_attempt(R))
    if name == "pending":
        return Walk().run(start(), ok(R), *second_attempt(P))
    if name == "completed":
        return Walk().run(start(), ok(R), ok(P), ok(S), *second_attempt(C), ok(C, 2))
    if name == "compensating":
        return shipment_failed().run(*second_compensation(P))
    if name == "needs_intervention":
        return shipment_failed().run(*second_compensation(P), comp_fail(P, 2))
    if name == "failed":
        w = shipment_failed().run(*second_compensation(P), comp_ok(P, 2))
        return w.run(*second_compensation(R), comp_ok(R, 2))
    raise AssertionError(name)


# ---- workflows (issue 13): a walk over any definition ------------------------------------------

ONE_SHOT = RetryPolicy(max_attempts=1)
SHORT = {"timeout_s": 5, "compensation_retry": RetryPolicy(max_attempts=2, max_backoff_s=1)}
#: the workflow the property tests drive (and their counterexamples replay on): parallel
#: stages, conditional steps, waits for signals, in a group too
FLOW = SagaDefinition(
    "flow",
    1,
    (
        StepDef("a", "pa", "DoA", "UndoA", retry=RetryPolicy(max_attempts=2), **SHORT),
        *parallel(
            "pair",
            StepDef("b1", "pb", "DoB1", "UndoB1", retry=ONE_SHOT, **SHORT),
            StepDef("b2", "pb", "DoB2", "UndoB2", when=Compare("amount", "gt", 100), **SHORT),
            wait_for("bw", "go", reject=("stop",), timeout_s=20, when=Compare("amount", "gt", 500)),
        ),
        wait_for("ok", "approve", reject=("no",), timeout_s=30,
                 when=AllOf([Compare("amount", "gt", 1000), Not(Compare("vip", "eq", True))])),
        *parallel(
            "tail",
            StepDef("c1", "pc", "DoC1", "UndoC1", **SHORT),
            StepDef("c2", "pc", "DoC2", "UndoC2", when=Not(Compare("vip", "exists")), **SHORT),
        ),
        StepDef("d", "pd", "DoD", "UndoD", retry=ONE_SHOT, **SHORT),
    ),
)  # fmt: skip


@dataclass
class Flow(Walk):
    """A Walk over any definition: parallel stages, conditions and wait steps."""

    d: SagaDefinition = D

    def __post_init__(self) -> None:
        self.registry = Registry([self.d])

    def begin(self, data: dict[str, object] | None = None) -> Flow:
        return self.run(Start(SID, self.d.name, dict(DATA if data is None else data)))

    def step(self, name: str) -> StepStatus:
        return self.s.steps[self.d.index(name)].status  # type: ignore[index]

    def state_of(self, name: str) -> StepState:
        return self.s.steps[self.d.index(name)]  # type: ignore[index]

    def statuses(self) -> dict[str, StepStatus]:
        return {sd.name: s.status for sd, s in zip(self.d.steps, self.s.steps, strict=True)}


Move = tuple[str, int, bool]  # (step, attempt, compensation): a command, whatever its type


def moves(t: Transition) -> list[Move]:
    return [(c.step, c.attempt, c.compensation) for c in t.commands]


def signal(
    name: str, n: int = 1, data: dict[str, object] | None = None, sender: str = "ada"
) -> Signal:
    """A signal as a person sends it; `n` makes its dedupe id."""
    return Signal(name, f"signal-{n}", dict(data or {}), sender)
