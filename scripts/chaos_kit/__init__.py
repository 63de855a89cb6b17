"""The parts of `scripts/chaos` (entry: `scripts/chaos.py`).

- `fleet`: a private Kafka and Redis (`scripts/stack` under its own SAGA_STACK_DIR and free
  ports), two orchestrator copies and the four sample workers; started, SIGKILLed by pid and
  restarted.
- `plan`: the seeded kill plan (when, what, how long it stays down).
- `traffic`: the seeded orders, the deliberately invalid records, stock and injected faults.
- `check`: the invariant checker over the saga hashes, the workers' own records and the DLQ.
- `unsafe_payment`: a payment participant that is not safe under re-delivery (`--no-dedupe`).
"""
