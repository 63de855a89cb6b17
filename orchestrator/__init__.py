"""The saga orchestrator: a pure core, thin adapters for Kafka and Redis, and a daemon loop."""

__version__ = "0.1.0"
