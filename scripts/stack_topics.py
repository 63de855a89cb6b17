"""Create the saga topics on a Kafka cluster (run by `scripts/stack up` with the venv python).

    python scripts/stack_topics.py --bootstrap 127.0.0.1:9092 --partitions 6 \
        saga-commands saga-events saga-dlq

Topics that already exist are fine (reported with their partition count). Prints one line per
topic; on failure prints one `error: ...` line and exits 1. Never prints a stack trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from infra.kafka import create_topics
from schemas.config import Settings


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
        settings = Settings(kafka_bootstrap_servers=args.bootstrap)
        for line in create_topics(settings, args.names, args.partitions, args.timeout):
            print(line)
    except TimeoutError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        print(f"error: could not create topics on {args.bootstrap}: {text}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
