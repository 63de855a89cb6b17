"""End-to-end benchmark of the orchestrator with the four sample workers, next to Kafka
ping-pong baselines measured in the same run. Every process runs on this machine; compare the
ratio, not the absolutes. Run it as `scripts/bench` (it sets up the virtualenv and the stack
first); the parts are in `scripts/bench_kit/`, docs/PERFORMANCE.md explains each figure.

Parts (all by default; `--only` / `--skip` choose):
  baseline  ping-pong through aiokafka and through confluent-kafka: steps/s, CPU per step
  codec     decode-and-validate time per message, JSON and Avro
  idle      one saga at a time on an idle stack (median)
  peak      closed loop: --window sagas in flight for --peak-s; sagas/s, steps/s, CPU per
            process; Redis bytes per completed saga
  open      open loop at --load-fraction of the peak (or --rate): saga latency p50/p99
  kill      open-loop load, SIGKILL of the orchestrator, restart: time to the next completion
`--in-flight N` parks N sagas on a step nobody answers before anything else is measured, and
reports Redis bytes per in-flight saga; every other figure is then measured beside them.
`--park direct` (default) parks them with the daemon's own decode, decide and step.lua,
pipelined straight to Redis (bench_kit/direct.py); `--park kafka` sends their starts through
Kafka to the running orchestrator (a few hundred a second).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
import time
import uuid
from pathlib import Path
from typing import Any
from unittest import mock

import orjson

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from orchestrator.config import OrchestratorSettings  # noqa: E402
from participants.config import ParticipantConfig  # noqa: E402
from schemas.config import Settings  # noqa: E402
from scripts.bench_kit import report  # noqa: E402
from scripts.bench_kit.cli_args import whole  # noqa: E402
from scripts.bench_kit.fleet import BenchError, child_env  # noqa: E402
from scripts.bench_kit.pingpong import CLIENTS, baseline  # noqa: E402
from scripts.bench_kit.session import Session  # noqa: E402

PARTS = ("baseline", "codec", "idle", "peak", "open", "kill")
FLEET_PARTS = ("idle", "peak", "open", "kill")
MAX_IN_FLIGHT = 10_000_000
#: option defaults, and the `--quick` preset (about a minute on two cores)
DEFAULTS: dict[str, Any] = dict(
    window=1000, peak_s=30.0, ramp_s=5.0, open_s=30.0, idle_n=5, kill_before_s=5.0,
    kill_after_s=5.0, baseline_s=10.0, chains=1000, codec_n=5000, memory_sample=1000,
    in_flight=0, warm=20,
)  # fmt: skip
QUICK: dict[str, Any] = dict(
    window=200, peak_s=4.0, ramp_s=2.0, open_s=4.0, idle_n=3, kill_before_s=1.5,
    kill_after_s=1.0, baseline_s=2.0, chains=200, codec_n=500, memory_sample=200,
    in_flight=100, warm=10,
)  # fmt: skip
#: engine settings left out of the report: secrets and addresses
HIDDEN = re.compile(r"password|secret|token|sasl|ssl|url|bootstrap")


def positive_int(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{text} must be at least 1")
    return v


def positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not v > 0 or v == float("inf"):
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return v


def fraction(text: str) -> float:
    v = positive_float(text)
    if v > 1:
        raise argparse.ArgumentTypeError(f"{text} must be at most 1")
    return v


def names(allowed: tuple[str, ...]) -> Any:
    def parse(text: str) -> list[str]:
        got = [p.strip() for p in text.split(",") if p.strip()]
        bad = [p for p in got if p not in allowed]
        if bad or not got:
            raise argparse.ArgumentTypeError(
                f"unknown {', '.join(bad) or 'empty list'}; choose from {','.join(allowed)}"
            )
        return got

    return parse


def json_path(text: str) -> Path:
    p = Path(text)
    if p.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a directory")
    if not p.parent.is_dir() or not os.access(p.parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"cannot write {text}: no writable directory {p.parent}")
    return p


def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="scripts/bench", description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="small sizes, about a minute")
    ap.add_argument("--only", type=names(PARTS), help=f"parts to run: {','.join(PARTS)}")
    ap.add_argument("--skip", type=names(PARTS), default=[], help="parts to leave out")
    ap.add_argument("--json", type=json_path, help="write the results to this file")
    ap.add_argument(
        "--in-flight",
        type=whole(0, MAX_IN_FLIGHT),
        help="park N sagas first (default 0, quick 100)",
    )
    ap.add_argument("--park", choices=("direct", "kafka"), default="direct",
                    help="how --in-flight parks: the daemon's own decide and step written "
                         "straight to Redis (direct, default) or starts through Kafka")  # fmt: skip
    ap.add_argument("--partitions", type=positive_int, help="partitions of the bench's topics")
    ap.add_argument("--window", type=positive_int, help="peak: sagas in flight (default 1000)")
    ap.add_argument("--peak-s", type=positive_float, help="peak: measured seconds (default 30)")
    ap.add_argument("--ramp-s", type=positive_float, help="peak: seconds before measuring")
    ap.add_argument("--sagas", type=positive_int, help="peak: measure N sagas, not --peak-s")
    ap.add_argument("--rate", type=positive_float, help="open/kill: arrivals per second")
    ap.add_argument("--load-fraction", type=fraction, default=0.5,
                    help="open/kill: rate as a fraction of the peak (default 0.5)")  # fmt: skip
    ap.add_argument("--arrivals", choices=("poisson", "fixed"), default="poisson")
    ap.add_argument("--open-s", type=positive_float, help="open: seconds of arrivals")
    ap.add_argument("--idle-n", type=positive_int, help="idle: sagas, one at a time")
    ap.add_argument("--kill-before-s", type=positive_float, help="kill: load before the kill")
    ap.add_argument("--kill-after-s", type=positive_float, help="kill: load after the resume")
    ap.add_argument("--baseline-s", type=positive_float, help="baseline: seconds per client")
    ap.add_argument("--pings", type=positive_int, help="baseline: N steps, not --baseline-s")
    ap.add_argument("--chains", type=positive_int, help="baseline: concurrent conversations")
    ap.add_argument("--clients", type=names(CLIENTS), default=list(CLIENTS))
    ap.add_argument("--linger-ms", type=whole(0, 1000),
                    help="baseline producers' linger, ms (default: the engine's, "
                         "SAGA_KAFKA_LINGER_MS)")  # fmt: skip
    ap.add_argument("--codec-n", type=positive_int, help="codec: messages per round")
    ap.add_argument("--memory-sample", type=positive_int, help="sagas whose keys are measured")
    a = ap.parse_args(argv)
    a.parts = [p for p in (a.only or PARTS) if p not in a.skip]
    preset = QUICK if a.quick else DEFAULTS
    if not any(p in a.parts for p in FLEET_PARTS):
        preset = preset | {"in_flight": 0}  # --quick parks sagas only beside a fleet part
    for key, value in preset.items():
        if getattr(a, key, None) is None:
            setattr(a, key, value)
    if not a.parts and not a.in_flight:
        ap.error("--only/--skip leave nothing to run")
    if any(p in a.parts for p in ("open", "kill")) and "peak" not in a.parts and not a.rate:
        ap.error("open and kill run at a fraction of the peak: add peak, or give --rate")
    return a


def engine_settings(orchestrator_env: dict[str, str], worker_env: dict[str, str]) -> dict[str, Any]:
    """The settings the processes under test run with, read from their environments as they
    read them (the bench's own thread is the only one reading the environment meanwhile)."""
    with mock.patch.dict(os.environ, orchestrator_env, clear=True):
        orch = OrchestratorSettings().model_dump(mode="json")
    with mock.patch.dict(os.environ, worker_env, clear=True):
        worker = ParticipantConfig().model_dump(mode="json")
    return {k: v for k, v in (orch | worker).items() if not HIDDEN.search(k)}


async def run(a: argparse.Namespace) -> dict[str, Any]:
    s = Settings()
    a.partitions = a.partitions or s.topic_partitions
    if a.linger_ms is None:  # the baselines wait as the engine's producers do
        a.linger_ms = s.kafka_linger_ms
    tag = uuid.uuid4().hex[:6]
    logdir = ROOT / ".stack" / "bench" / tag
    logdir.mkdir(parents=True, exist_ok=True)
    print(f"# bench run {tag} on {os.cpu_count()} cores, parts {','.join(a.parts)}, "
          f"in flight {a.in_flight}; logs in {logdir}", flush=True)  # fmt: skip
    r: dict[str, Any] = {
        "tag": tag,
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "parts": a.parts + (["inflight"] if a.in_flight else []),
        "machine": {"cores": os.cpu_count(), "load": [round(x, 2) for x in os.getloadavg()]},
    }
    durations: dict[str, float] = {}
    if "codec" in a.parts:
        from schemas.bench import bench_decode

        t0 = time.monotonic()
        r["codec_us"] = bench_decode(a.codec_n)
        durations["codec"] = round(time.monotonic() - t0, 1)
    if "baseline" in a.parts:
        r["baselines"] = {}
        for client in a.clients:
            t0 = time.monotonic()
            b = await baseline(s, client, tag, a.chains, 1.0, a.baseline_s, a.pings,
                               a.partitions, a.linger_ms, logdir)  # fmt: skip
            r["baselines"][client] = b
            durations[f"baseline_{client}"] = round(time.monotonic() - t0, 1)
            print(f"baseline {client}: {b['steps_per_s']:.0f} steps/s", flush=True)
    if a.in_flight or any(p in a.parts for p in FLEET_PARTS):
        session = Session(a, s, tag, logdir)
        r |= await session.run()
        durations |= r.pop("durations_s")
        engine = engine_settings(session.fleet.orchestrator_env(), session.fleet.worker_env())
    else:
        engine = engine_settings(child_env(s), child_env(s))
    r["durations_s"] = durations
    r["settings"] = settings_used(a, engine, r.get("open_loop", {}).get("rate_per_s"))
    return report.headline(r) | r


def settings_used(
    a: argparse.Namespace, engine: dict[str, Any], rate: float | None
) -> dict[str, Any]:
    """What the figures were measured with: the bench's own options and the engine's settings
    (a setting a later engine adds, such as a command-topic mode, shows up under `engine`)."""
    mine = ("partitions", "window", "peak_s", "ramp_s", "sagas", "open_s", "load_fraction",
            "arrivals", "idle_n", "in_flight", "baseline_s", "pings", "chains", "clients",
            "quick", "warm", "park")  # fmt: skip
    return {k: getattr(a, k) for k in mine} | {
        # SAGA_COMMAND_TOPICS: per-participant, or single (what engines without it did)
        "command_topic_mode": engine.get("command_topics", "single"),
        "open_rate_per_s": rate,
        "baseline_linger_ms": a.linger_ms,
        "loadgen_linger_ms": 0,
        "engine": engine,
    }


def main(argv: list[str]) -> int:
    a = parse_args(argv)
    try:
        r = asyncio.run(run(a))
    except BenchError as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # everything started was stopped and removed on the way out
        print("bench: interrupted", file=sys.stderr)
        return 130
    print(report.text(r))
    if a.json:
        a.json.write_bytes(orjson.dumps(r, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
        print(f"\nwrote {a.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
