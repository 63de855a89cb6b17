"""Decode-and-validate cost per message, JSON vs Avro: `python -m schemas.bench [N]`.

`bench_decode(n)` returns microseconds per message (best of 5 rounds of n decodes each) for a
typical StartOrder and a StepCompleted, in JSON and in registry-less Avro (the Confluent framing
is the same with a registry: after `prepare()` the registry is not on the decode path).
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime
from decimal import Decimal

from schemas import framing
from schemas.codec import Format, decode, encode
from schemas.messages import Envelope, OrderItem, StartOrder, StepCompleted

ROUNDS = 5


def sample_start_order() -> StartOrder:
    return StartOrder(
        saga_id="order-000123",
        correlation_id="req-7f3a9c",
        time=datetime(2025, 1, 2, 3, 4, 5, 678000, tzinfo=UTC),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        order_id="A-1001",
        customer_id="cust-42",
        items=[
            OrderItem(product_id="sku-1", quantity=2),
            OrderItem(product_id="sku-22", quantity=1),
            OrderItem(product_id="sku-333", quantity=5),
        ],
        amount=Decimal("149.97"),
        currency="EUR",
        payment_method="card",
        shipping_address="Hauptstrasse 1, 10115 Berlin, DE",
    )


def sample_step_completed() -> StepCompleted:
    return StepCompleted(
        saga_id="order-000123",
        correlation_id="req-7f3a9c",
        causation_id="cmd-0a1b2c",
        time=datetime(2025, 1, 2, 3, 4, 6, 120000, tzinfo=UTC),
        step="charge_card",
        attempt=1,
        command_id="order-000123:charge_card:ChargeCard:1",
        command_type="ChargeCard",
        result={"paymentId": "pay-998877", "authorized": "149.97"},
    )


def _per_message_us(value: bytes, n: int) -> float:
    best = float("inf")
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(n):
            decode(value)
        best = min(best, time.perf_counter() - start)
    return best / n * 1e6


FORMATS: tuple[Format, ...] = ("json", "avro")


def _samples() -> list[tuple[str, Envelope]]:
    return [("start_order", sample_start_order()), ("step_completed", sample_step_completed())]


def bench_decode(n: int = 10_000) -> dict[str, float]:
    """Microseconds per decode-and-validate, keyed `<message>_<format>`, e.g. `start_order_avro`."""
    if n < 1:
        raise ValueError("n must be positive")
    framing.active()  # build the schema table outside the timed loop
    out: dict[str, float] = {}
    for name, message in _samples():
        for fmt in FORMATS:
            value = encode(message, fmt)
            if decode(value) != message:  # pragma: no cover - a broken codec, not a benchmark
                raise AssertionError(f"{name} does not round-trip in {fmt}")
            out[f"{name}_{fmt}"] = _per_message_us(value, n)
    return out


def encoded_sizes() -> dict[str, int]:
    """Bytes per encoded message, same keys as `bench_decode`."""
    return {f"{name}_{fmt}": len(encode(m, fmt)) for name, m in _samples() for fmt in FORMATS}


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    n = int(args[0]) if args else 10_000
    sizes = encoded_sizes()
    print(f"decode + validate, best of {ROUNDS} rounds of {n}")
    for key, us in bench_decode(n).items():
        print(f"{key:<22} {us:8.2f} us/msg {sizes[key]:6d} bytes")


if __name__ == "__main__":
    main()
