"""Create the saga topics on a Kafka cluster (run by `scripts/stack up` with the venv python).

    python scripts/stack_topics.py --bootstrap 127.0.0.1:9092 --partitions 6 \
        saga-commands saga-events saga-dlq

Topics that already exist are fine (reported with their partition count). Prints one line per
topic; on failure prints one `error: ...` line and exits 1. Never prints a stack trace.
"""

from __future__ import annotations

import argparse
import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

#: records up to 16 MiB reach the orchestrator, whose own cap (SAGA_MAX_MESSAGE_BYTES, 1 MB)
#: dead-letters them with a reason instead of the broker refusing them at the producer, and
#: the dead-letter topic can hold whatever the input topics accepted.
TOPIC_CONFIG = {"max.message.bytes": str(16 * 1_048_576)}


def create_topics(bootstrap: str, names: list[str], partitions: int, timeout_s: float) -> list[str]:
    """Create `names` (one replica each); return one line of report per topic."""
    admin = AdminClient(
        {"bootstrap.servers": bootstrap, "socket.timeout.ms": int(timeout_s * 1000)}
    )
    metadata = admin.list_topics(timeout=timeout_s)
    lines: list[str] = []
    wanted = [n for n in names if n not in metadata.topics]
    for name in names:
        if name in metadata.topics:
            count = len(metadata.topics[name].partitions)
            note = "" if count == partitions else f" (SAGA_TOPIC_PARTITIONS is {partitions})"
            lines.append(f"topic {name}: exists, {count} partitions{note}")
    if wanted:
        futures = admin.create_topics(
            [
                NewTopic(n, num_partitions=partitions, replication_factor=1, config=TOPIC_CONFIG)
                for n in wanted
            ],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s * 2)
                lines.append(f"topic {name}: created, {partitions} partitions")
            except KafkaException as exc:
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    lines.append(f"topic {name}: exists")
                else:
                    raise
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        print("error: SAGA_TOPIC_PARTITIONS must be 1 or more", file=sys.stderr)
        return 1
    try:
        for line in create_topics(args.bootstrap, args.names, args.partitions, args.timeout):
            print(line)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        print(f"error: could not create topics on {args.bootstrap}: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
