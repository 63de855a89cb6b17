"""The parts of `scripts/bench` (entry: `scripts/bench.py`).

- `fleet`: the processes under test (the orchestrator and the four sample workers on fresh topics
  and a fresh key prefix), started, SIGKILLed and restarted by pid; CPU time from /proc.
- `pingpong`: the baselines, a Kafka ping-pong through aiokafka and through confluent-kafka.
- `load`: the load generator: saga starts produced like the project's own producers, and
  completions counted and timed from the sagas' own records in Redis.
- `modes`: what is measured with that load: idle latency, closed-loop peak, open-loop latency,
  resume after a SIGKILL, parked sagas.
- `memory`: Redis bytes per saga, from MEMORY USAGE over the keys under the bench's prefix.
- `parked`: a saga module with an order saga whose first participant never answers.
- `direct`: parks such sagas with the daemon's own decode, decide and step, straight into Redis
  (`--park direct`, the default; `--park kafka` sends their starts through Kafka instead).
- `hop`: one Kafka hop on an idle stack by linger and fetch wait (`python -m
  scripts.bench_kit.hop`), the measurement behind the Kafka wait settings.
- `session`: one fleet and the parts measured with it, in order, and the cleanup after it.
- `report`: the text report and the JSON document.
"""
