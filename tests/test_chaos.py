"""scripts/chaos: the CI slice keeps every invariant, its negative control fails, and the checker
and kill plan it relies on do what they say.

The two runs start their own Kafka and Redis (scripts/stack under a private SAGA_STACK_DIR with
free ports) and kill them, so they never touch the shared stack the other tests use.
"""

from __future__ import annotations

import os
import random
import re
import signal
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest

from participants.samples.order.workers import Ledgers
from scripts.chaos_kit.check import DeadLetter, Records, Saga, check
from scripts.chaos_kit.plan import TARGETS, kill_plan
from scripts.chaos_kit.traffic import Order
from tests.conftest import ROOT

CHAOS = str(ROOT / "scripts" / "chaos")
EXTERNAL = bool(
    (os.environ.get("SAGA_KAFKA_BOOTSTRAP_SERVERS") or os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    and (os.environ.get("SAGA_REDIS_URL") or os.environ.get("REDIS_URL"))
)
needs_local_stack = pytest.mark.skipif(
    EXTERNAL,
    reason="Kafka and Redis come from the environment; scripts/chaos kills and restarts a "
    "broker and a Redis of its own, which needs the local stack (Java, redis-server)",
)


def run_chaos(run_dir: Path, *args: str, timeout_s: float) -> tuple[int, str]:
    proc = subprocess.Popen(
        [CHAOS, "--dir", str(run_dir), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        out, _ = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGTERM)  # it stops everything it started, then exits
        out, _ = proc.communicate(timeout=120)
        pytest.fail(f"scripts/chaos ran over {timeout_s:g} s:\n{out[-6000:]}")
    return proc.returncode, out


def summary_line(out: str, name: str) -> str:
    found = re.search(rf"^{name}: (.*)$", out, re.MULTILINE)
    assert found, f"no '{name}:' line in:\n{out[-6000:]}"
    return found.group(1)


@pytest.mark.slow
@pytest.mark.timeout(420)
@needs_local_stack
def test_chaos_slice_keeps_every_invariant(tmp_path: Path) -> None:
    """Seed 7, 90 s of SIGKILLs over both orchestrators, the 4 workers, Kafka and Redis: exit 0."""
    code, out = run_chaos(tmp_path / "run", "--seed", "7", "--duration", "90", timeout_s=360)
    assert code == 0, out[-6000:]
    assert summary_line(out, "violations") == "0"
    kills = summary_line(out, "kills")
    assert int(kills.split()[0]) >= len(TARGETS), kills
    assert all(f"{t} " in kills for t in TARGETS), f"every target is killed at least once: {kills}"
    sagas = summary_line(out, "orders")
    states = {
        s: int(n) for n, s in re.findall(r"(\d+) (completed|failed|needs_intervention)", sagas)
    }
    assert states["completed"] > 100 and states["failed"] > 10, sagas
    dead = summary_line(out, "dead letters")
    assert re.fullmatch(r"(\d+) \(deliberately invalid records sent: \1\)", dead), dead
    assert not (tmp_path / "run").exists(), "a passing run leaves nothing behind"


@pytest.mark.slow
@pytest.mark.timeout(300)
@needs_local_stack
def test_chaos_negative_control_finds_double_charges(tmp_path: Path) -> None:
    """--no-dedupe: a payment worker charging outside the guard, killed after a charge: exit 1."""
    code, out = run_chaos(
        tmp_path / "run", "--seed", "7", "--duration", "25", "--no-dedupe", timeout_s=240
    )
    assert code == 1, out[-6000:]
    assert re.search(r"^  double charge: chaos-7-\d+: [2-9] charges", out, re.MULTILINE), out
    assert "chaos: FAILED" in out


def order(sid: str, amount: str = "10.00") -> Order:
    return Order(sid, "c-1", {"sku-0": 1}, Decimal(amount))


def entry(kind: str, sid: str, amount: str = "10.00") -> dict[str, str]:
    return {"type": kind, "sagaId": sid, "chargeId": f"ch-{sid}", "amount": amount}


def clean_ledgers() -> Ledgers:
    """One completed order (o1) and one compensated after its charge (o2), recorded right."""
    return Ledgers(
        stock={"sku-0": 8},
        reserved={"sku-0": 1},
        reservations={
            "o1": {"id": "res-o1", "status": "reserved", "items": {"sku-0": 1}},
            "o2": {"id": "res-o2", "status": "released", "items": {"sku-0": 1}},
        },
        charges={},
        payments=[entry("charge", "o1"), entry("charge", "o2"), entry("refund", "o2")],
        shipments={"o1": {"status": "created"}},
        notifications=[{"type": "OrderConfirmation", "sagaId": "o1"}],
    )


SAGAS = {"o1": Saga("completed", "completed"), "o2": Saga("failed", None)}
ORDERS = {"o1": order("o1"), "o2": order("o2")}


def test_checker_passes_a_consistent_run() -> None:
    """Records that match every saga's outcome give no violation."""
    dead = [DeadLetter("bad-1", "orchestrator", "invalid")]
    verdict = check(Records(ORDERS, {"sku-0": 9}, SAGAS, clean_ledgers(), dead, {"bad-1"}))
    assert verdict.violations == []
    assert verdict.states == {"completed": 1, "failed": 1}


def test_checker_names_each_broken_invariant() -> None:
    """A double charge, lost stock, a stray shipment, a missing notice, a valid dead letter and
    an unfinished saga are each reported by name."""
    broken = clean_ledgers()
    broken.payments.append(entry("charge", "o1"))
    broken.stock["sku-0"] = 7
    broken.shipments["o2"] = {"status": "created"}
    sagas = {**SAGAS, "o2": Saga("failed", "compensated"), "o3": Saga("compensating")}
    orders = {**ORDERS, "o3": order("o3")}
    dead = [DeadLetter("o1", "orchestrator", "invalid")]
    verdict = check(Records(orders, {"sku-0": 9}, sagas, broken, dead, set()))
    assert set(verdict.by_kind()) == {
        "double charge",
        "wrong amount kept",
        "stock not conserved",
        "live shipment",
        "wrong notifications",
        "valid record dead-lettered",
        "not final",
    }


def test_kill_plan_is_a_function_of_the_seed() -> None:
    """Same seed, same plan; every target is hit before any is hit twice; `first` goes first."""
    a = kill_plan(random.Random(7), 90, (3, 8), (0.5, 3))
    assert a == kill_plan(random.Random(7), 90, (3, 8), (0.5, 3))
    assert sorted(k.target for k in a[: len(TARGETS)]) == sorted(TARGETS)
    assert all(0 < k.at_s < 90 and 0.5 <= k.down_s <= 3 for k in a)
    assert kill_plan(random.Random(7), 90, (3, 8), (0.5, 3), first="payment")[0].target == "payment"
