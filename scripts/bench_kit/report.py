"""The bench's results: one JSON document (`--json FILE`) and the same for people.

The top level holds the figures the throughput and scale-out issues name; a part that was not
run leaves its figures null. The sections below them hold the details of each part.
"""

from __future__ import annotations

from typing import Any

#: the headline figures, in the order they are printed; every one is in the JSON, null if not run
HEADLINE = (
    ("sagas_per_s", "order sagas/s at peak (closed loop)"),
    ("steps_per_s", "steps/s at peak"),
    ("baseline_steps_per_s", "baseline steps/s (fastest client)"),
    ("ratio", "ratio: saga steps/s / baseline steps/s"),
    ("latency_p50_ms", "saga latency p50 at the open-loop rate, ms"),
    ("latency_p99_ms", "saga latency p99 at the open-loop rate, ms"),
    ("idle_saga_ms", "one saga on an idle stack, ms (median)"),
    ("resume_after_kill_s", "resume after SIGKILL of the orchestrator, s"),
    ("redis_bytes_per_saga", "Redis bytes per completed saga"),
    ("redis_bytes_per_inflight_saga", "Redis bytes per in-flight saga"),
)
PROCESS_ORDER = (
    "orchestrator", "inventory", "payment", "shipping", "notification", "broker", "redis",
    "loadgen", "pinger", "ponger", "total",
)  # fmt: skip


def _round(v: float | None, digits: int) -> float | None:
    return None if v is None else round(v, digits)


def headline(r: dict[str, Any]) -> dict[str, Any]:
    """The top-level figures, computed from the parts' sections."""
    peak, open_, idle = r.get("peak", {}), r.get("open_loop", {}), r.get("idle", {})
    bases = r.get("baselines", {})
    rates = [b["steps_per_s"] for b in bases.values() if b.get("steps_per_s")]
    base = max(rates) if rates else None
    steps = peak.get("steps_per_s")
    return {
        "sagas_per_s": _round(peak.get("sagas_per_s"), 1),
        "steps_per_s": _round(steps, 1),
        "baseline_steps_per_s": _round(base, 1),
        "baseline_client": next(
            (c for c, b in bases.items() if b.get("steps_per_s") == base), None
        ),
        "ratio": _round(steps / base, 4) if steps and base else None,
        "latency_p50_ms": _round(open_.get("latency_p50_ms"), 1),
        "latency_p99_ms": _round(open_.get("latency_p99_ms"), 1),
        "idle_saga_ms": _round(idle.get("idle_saga_ms"), 1),
        "resume_after_kill_s": r.get("kill", {}).get("resume_after_kill_s"),
        "redis_bytes_per_saga": r.get("memory", {}).get("bytes_per_saga"),
        "redis_bytes_per_inflight_saga": r.get("inflight", {}).get("bytes_per_saga"),
        "cpu_s_per_process": peak.get("cpu_s_per_process"),
        "cpu_us_per_saga": peak.get("cpu_us_per_saga"),
    }


def _n(v: Any, digits: int = 0) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float | int):
        return f"{v:,.{digits}f}"
    return str(v)


def _cpu_lines(cpu_s: dict[str, Any] | None, per: dict[str, Any] | None, unit: str) -> list[str]:
    if not cpu_s:
        return []
    names = sorted(cpu_s, key=lambda n: PROCESS_ORDER.index(n) if n in PROCESS_ORDER else 99)
    lines = [f"  {'process':<14}{'CPU s':>8}{'us/' + unit:>12}"]
    for name in [*names, "total"]:
        s = sum(v for v in cpu_s.values() if v is not None) if name == "total" else cpu_s[name]
        lines.append(f"  {name:<14}{_n(s, 2):>8}{_n((per or {}).get(name), 0):>12}")
    return lines


def text(r: dict[str, Any]) -> str:
    out = [f"\n# bench {r['tag']}: {r['machine']['cores']} cores, load {r['machine']['load']}"]
    s = r["settings"]
    out.append(
        f"settings: {s['partitions']} partitions, command topics: {s['command_topic_mode']}, "
        f"window {s['window']}, in flight {s['in_flight']}, baseline linger "
        f"{s['baseline_linger_ms']} ms, engine batch {s['engine'].get('batch_max_records')}"
    )
    out.append("\n## headline")
    for key, label in HEADLINE:
        digits = 2 if key in ("ratio", "resume_after_kill_s") else 1 if key.endswith("ms") else 0
        out.append(f"- {label}: {_n(r.get(key), digits)}")
    for client, b in r.get("baselines", {}).items():
        out.append(
            f"\n## baseline {client}: {_n(b['steps_per_s'])} steps/s, round trip p50 "
            f"{_n(b['rtt_p50_ms'], 1)} / p99 {_n(b['rtt_p99_ms'], 1)} ms"
        )
        out += _cpu_lines(b.get("cpu_s_per_process"), b.get("cpu_us_per_step"), "step")
    if peak := r.get("peak"):
        out.append(
            f"\n## peak (closed loop, {peak['window']} in flight, {peak['measured_s']} s): "
            f"{_n(peak['sagas_per_s'])} sagas/s; start-to-finish in the system p50 "
            f"{_n(peak['saga_in_system_p50_ms'])} / p99 {_n(peak['saga_in_system_p99_ms'])} ms"
        )
        out += _cpu_lines(peak["cpu_s_per_process"], peak["cpu_us_per_saga"], "saga")
    if mem := r.get("memory"):
        out.append(
            f"\n## memory: {_n(mem.get('bytes_per_saga'))} bytes per completed saga "
            f"({_n(mem.get('own_keys_bytes'))} in {_n(mem.get('keys_per_saga'), 1)} own keys + "
            f"{_n(mem.get('shared_keys_bytes'))} in shared keys); participants' own records "
            f"{_n(r.get('participant_memory', {}).get('bytes_per_saga'))} bytes per saga"
        )
    if o := r.get("open_loop"):
        out.append(
            f"\n## open loop ({o['arrivals']}, {_n(o['rate_per_s'])} sagas/s offered): latency "
            f"p50 {_n(o['latency_p50_ms'], 1)} / p99 {_n(o['latency_p99_ms'], 1)} / max "
            f"{_n(o['latency_max_ms'], 1)} ms over {o['sagas']} sagas"
        )
        out += _cpu_lines(o["cpu_s_per_process"], o["cpu_us_per_saga"], "saga")
    if i := r.get("idle"):
        out.append(f"\n## idle: {_n(i['idle_saga_ms'], 1)} ms (each: {i['each_ms']}); medians: "
                   f"due to start applied {_n(i.get('start_ms'), 1)} ms, transition to "
                   f"transition per step {i.get('step_ms')} ms")  # fmt: skip
    if k := r.get("kill"):
        out.append(
            f"\n## SIGKILL under {_n(k['rate_per_s'])} sagas/s: first completion "
            f"{_n(k['resume_after_kill_s'], 2)} s after the kill; p99 {_n(k['latency_p99_ms'])} "
            f"ms; unfinished {k['unfinished']}"
        )
    if f := r.get("inflight"):
        out.append(
            f"\n## in flight: {f['in_flight']} parked ({f['park']}) in {f['park_s']} s; "
            f"{_n(f.get('bytes_per_saga'))} bytes per in-flight saga; Redis used_memory "
            f"{_n(f['redis_used_before'] / 2**20, 1)} -> {_n(f['redis_used_after'] / 2**20, 1)} MiB"
        )
    if c := r.get("codec_us"):
        out.append("\n## decode and validate, us per message: "
                   + ", ".join(f"{k} {v:.1f}" for k, v in c.items()))  # fmt: skip
    return "\n".join(out)
