"""Saga definitions: retry policies, validation, the registry and loading user saga modules."""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path

import pytest

from orchestrator.config import OrchestratorSettings
from orchestrator.core.definition import (
    Registry,
    RetryPolicy,
    SagaDefinition,
    StepDef,
)
from orchestrator.engine.sagas import load_registry, load_sagas
from orchestrator.errors import ConfigError
from participants.samples.order.saga import ORDER_FULFILLMENT
from schemas.messages import StartOrder

SEEDS = [f"saga-{i}:step:{a}" for i in range(200) for a in (1, 2)]


def step(name: str = "s1") -> StepDef:
    return StepDef(name, "p", "Do", "Undo")


# ---- RetryPolicy -------------------------------------------------------------------------------


def test_backoff_is_exponential_without_jitter() -> None:
    """Delay = initial * multiplier ** (failed_attempt - 1)."""
    p = RetryPolicy(initial_backoff_s=0.5, multiplier=2.0, max_backoff_s=100, jitter=0)
    assert [p.backoff_s(a, "x") for a in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]


def test_backoff_is_capped() -> None:
    """However many attempts failed, the delay never passes max_backoff_s, jitter included."""
    p = RetryPolicy(initial_backoff_s=1, multiplier=3, max_backoff_s=10, jitter=0.5)
    assert RetryPolicy(max_backoff_s=10, jitter=0).backoff_s(40, "x") == 10
    assert all(p.backoff_s(a, s) <= 10 for a in range(1, 12) for s in SEEDS[:50])
    assert max(p.backoff_s(9, s) for s in SEEDS) == 10


@pytest.mark.parametrize("jitter", [0.0, 0.2, 1.0])
def test_jitter_stays_within_its_bounds(jitter: float) -> None:
    """With jitter j the delay lies in [base*(1-j), base*(1+j)] and really spreads."""
    p = RetryPolicy(initial_backoff_s=2, multiplier=2, max_backoff_s=1_000, jitter=jitter)
    delays = [p.backoff_s(3, s) for s in SEEDS]
    base = 8.0
    assert all(base * (1 - jitter) <= d <= base * (1 + jitter) for d in delays)
    if jitter:
        assert max(delays) - min(delays) > base * jitter  # not a constant offset
    else:
        assert set(delays) == {base}


def test_backoff_is_deterministic_per_seed() -> None:
    """Same seed, same delay (replays give the same timer); different seeds differ."""
    p = RetryPolicy()
    assert [p.backoff_s(2, s) for s in SEEDS] == [p.backoff_s(2, s) for s in SEEDS]
    assert len({p.backoff_s(2, s) for s in SEEDS}) > len(SEEDS) // 2


def test_backoff_does_not_touch_the_global_rng() -> None:
    """Jitter comes from a private seeded rng; the global random state is left alone."""
    import random

    random.seed(7)
    expected = random.random()
    random.seed(7)
    RetryPolicy().backoff_s(2, "seed")
    assert random.random() == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"initial_backoff_s": -1},
        {"multiplier": 0.5},
        {"jitter": -0.1},
        {"jitter": 1.5},
        {"initial_backoff_s": 10, "max_backoff_s": 5},
    ],
    ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()),
)
def test_invalid_retry_policy_raises(kwargs: dict[str, float]) -> None:
    """A policy that cannot work is refused when it is built."""
    with pytest.raises(ValueError, match="invalid retry policy"):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("kwargs", [{"timeout_s": 0}, {"compensation_timeout_s": -1}])
def test_step_timeouts_must_be_positive(kwargs: dict[str, float]) -> None:
    """A step without a positive timeout could wait forever; it is refused."""
    with pytest.raises(ValueError, match="timeouts must be positive"):
        StepDef("s", "p", "Do", "Undo", **kwargs)  # type: ignore[arg-type]


# ---- SagaDefinition ---------------------------------------------------------------------------


def test_definition_without_steps_is_refused() -> None:
    """A saga needs at least one step."""
    with pytest.raises(ValueError, match="no steps"):
        SagaDefinition("empty", 1, ())


def test_definition_with_duplicate_step_names_is_refused() -> None:
    """Step names identify replies and timers, so they must be unique."""
    with pytest.raises(ValueError, match="duplicate step names"):
        SagaDefinition("dup", 1, (step("a"), step("b"), step("a")))


def test_index_finds_steps_by_name() -> None:
    """index() gives a step's position, None for a name the saga does not have."""
    assert [ORDER_FULFILLMENT.index(s.name) for s in ORDER_FULFILLMENT.steps] == [0, 1, 2, 3]
    assert ORDER_FULFILLMENT.index("teleport") is None


def test_order_fulfillment_matches_the_reference_document() -> None:
    """The sample saga: four steps with their participants, actions and compensations."""
    assert [(s.name, s.participant, s.action, s.compensation) for s in ORDER_FULFILLMENT.steps] == [
        ("reserve_inventory", "inventory", "ReserveItems", "ReleaseReservation"),
        ("process_payment", "payment", "ProcessPayment", "RefundPayment"),
        ("create_shipment", "shipping", "CreateShipment", "CancelShipment"),
        ("send_confirmation", "notification", "SendOrderConfirmation", "SendCancellationNotice"),
    ]


# ---- Registry ----------------------------------------------------------------------------------


def test_registry_keeps_every_version_and_serves_the_latest() -> None:
    """Lookup by name gives the newest version; older ones stay for in-flight sagas."""
    v1, v2, v3 = (SagaDefinition("s", v, (step(f"x{v}"),)) for v in (1, 2, 3))
    reg = Registry([v2, v3, v1])  # registration order does not matter
    assert reg["s"] is v3
    assert reg.version("s", 1) is v1 and reg.version("s", 2) is v2
    assert reg.version("s", 4) is None and reg.version("nope", 1) is None
    assert list(reg) == ["s"] and len(reg) == 1 and "s" in reg
    assert reg.get("nope") is None


def test_registering_the_same_version_again_replaces_it() -> None:
    """A re-registered (name, version) wins, so a user module can override a built-in."""
    a = SagaDefinition("s", 1, (step("a"),))
    b = SagaDefinition("s", 1, (step("b"),))
    reg = Registry([a, b])
    assert reg["s"] is b and reg.version("s", 1) is b


def test_default_saga_modules_register_the_order_saga() -> None:
    """With no configuration the daemon loads the order sample, through the saga-module seam."""
    sagas = load_sagas(OrchestratorSettings().saga_modules)
    assert sagas.registry["order_fulfillment"] is ORDER_FULFILLMENT and len(sagas.registry) == 1
    assert StartOrder in sagas.starts
    assert [(r.method, r.path) for r in sagas.http_routes] == [("POST", "/api/orders")]


# ---- load_registry with user modules ----------------------------------------------------------


def write_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str) -> str:
    """Write a uniquely named module on sys.path; forget it after the test."""
    name = f"user_sagas_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(body))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return name


GOOD = """
    from orchestrator.core.definition import SagaDefinition, StepDef

    SAGAS = [
        SagaDefinition("trip", 1, (
            StepDef("book_flight", "airline", "BookFlight", "CancelFlight"),
            StepDef("book_hotel", "hotel", "BookRoom", "CancelRoom", timeout_s=5),
        )),
        SagaDefinition("order_fulfillment", 2, (
            StepDef("reserve_inventory", "inventory", "ReserveItems", "ReleaseReservation"),
        )),
    ]
"""


def test_load_registry_adds_user_sagas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A user module's SAGAS are registered next to the other named modules', newer versions
    winning."""
    name = write_module(tmp_path, monkeypatch, GOOD)
    reg = load_registry(["participants.samples.order.saga", name])
    assert set(reg) == {"trip", "order_fulfillment"}
    assert [s.name for s in reg["trip"].steps] == ["book_flight", "book_hotel"]
    assert reg["order_fulfillment"].version == 2
    assert reg.version("order_fulfillment", 1) is ORDER_FULFILLMENT


def test_only_the_named_saga_modules_are_registered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Naming your own saga modules replaces the default: the order sample is not loaded, and
    no StartOrder mapping exists."""
    name = write_module(tmp_path, monkeypatch, GOOD)
    sagas = load_sagas(OrchestratorSettings(saga_modules=[name]).saga_modules)
    assert sagas.registry.version("order_fulfillment", 1) is None
    assert sagas.starts == {} and sagas.http_routes == []
    assert dict(load_registry([])) == {}


BAD = {
    "no-SAGAS": ("X = 1\n", "must define SAGAS"),
    "SAGAS-not-a-list": (
        "from participants.samples.order.saga import ORDER_FULFILLMENT\n"
        "SAGAS = {'a': ORDER_FULFILLMENT}\n",
        "must define SAGAS",
    ),
    "SAGAS-with-a-stranger": (
        "from participants.samples.order.saga import ORDER_FULFILLMENT\n"
        "SAGAS = [ORDER_FULFILLMENT, 'trip']\n",
        "a list of SagaDefinition",
    ),
    "missing-dependency": (
        "import surely_not_installed_pkg_42\nSAGAS = []\n",
        "cannot be imported",
    ),
}


@pytest.mark.parametrize(("body", "message"), BAD.values(), ids=BAD.keys())
def test_load_registry_refuses_bad_modules(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str, message: str
) -> None:
    """A module that cannot give saga definitions is a ConfigError naming the module."""
    name = write_module(tmp_path, monkeypatch, body)
    with pytest.raises(ConfigError, match=message) as info:
        load_registry([name])
    assert repr(name) in str(info.value)


def test_load_registry_refuses_a_module_that_does_not_exist() -> None:
    """A misspelt module name is a ConfigError that says it cannot be imported."""
    with pytest.raises(ConfigError, match=r"'no_such_saga_module_x' cannot be imported"):
        load_registry(["no_such_saga_module_x"])


BROKEN = {
    "syntax-error": "SAGAS = [\n",
    "invalid-definition": (
        "from orchestrator.core.definition import SagaDefinition\n"
        "SAGAS = [SagaDefinition('x', 1, ())]\n"
    ),
    "raises-on-import": "raise RuntimeError('no database')\n",
}


@pytest.mark.parametrize("body", BROKEN.values(), ids=BROKEN.keys())
def test_load_registry_reports_broken_modules_as_config_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, body: str
) -> None:
    """Any import-time error in a user's saga module is a ConfigError naming the module."""
    name = write_module(tmp_path, monkeypatch, body)
    with pytest.raises(ConfigError, match=repr(name)):
        load_registry([name])
