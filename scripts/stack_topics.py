"""Create the saga topics on a Kafka cluster (run by `scripts/stack up` with the venv python).

    python scripts/stack_topics.py --bootstrap 127.0.0.1:9092 --partitions 6 \
        saga-commands saga-events saga-dlq

When the commands topic (`SAGA_COMMANDS_TOPIC`, default saga-commands) is among the names, the
per-participant command topics of the sample sagas come with it (`saga-commands.payment`, ...:
`orchestrator.engine.topics`), whichever `SAGA_COMMAND_TOPICS` mode is set, so switching modes
needs no new topics; `--no-participant-topics` leaves them out.

Topics that already exist are fine (reported with their partition count). Prints one line per
topic; on failure prints one `error: ...` line and exits 1. Never prints a stack trace.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from confluent_kafka import KafkaError, KafkaException
from pydantic import ValidationError

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from infra.kafka import create_topics
from orchestrator.config import DEFAULT_SAGA_MODULES
from orchestrator.engine.sagas import load_registry
from orchestrator.engine.topics import registry_topics
from orchestrator.errors import ConfigError
from schemas.config import Settings

#: the sample saga modules whose participants get their command topics here
SAMPLE_SAGA_MODULES = [*DEFAULT_SAGA_MODULES, "participants.samples.trip.saga"]


def with_participant_topics(settings: Settings, names: list[str]) -> list[str]:
    """`names`, and the samples' per-participant command topics when the commands topic is
    among them."""
    if settings.commands_topic not in names:
        return names
    per_participant = settings.model_copy(update={"command_topics": "per-participant"})
    extra = registry_topics(per_participant, load_registry(SAMPLE_SAGA_MODULES))
    return [*names, *(t for t in extra if t not in names)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument(
        "--no-participant-topics",
        action="store_true",
        help="only the named topics, not the samples' per-participant command topics",
    )
    parser.add_argument("names", nargs="+")
    args = parser.parse_args(argv)
    if args.partitions < 1:
        print("error: SAGA_TOPIC_PARTITIONS must be 1 or more", file=sys.stderr)
        return 1
    try:
        settings = Settings(kafka_bootstrap_servers=args.bootstrap)
        names = list(args.names)
        if not args.no_participant_topics:
            names = with_participant_topics(settings, names)
        for line in create_topics(settings, names, args.partitions, args.timeout):
            print(line)
    except ValidationError as exc:  # a bad SAGA_* setting
        print(f"error: {exc.errors()[0]['msg'].removeprefix('Value error, ')}", file=sys.stderr)
        return 1
    except (TimeoutError, ConfigError) as exc:
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
