"""Plumbing shared by the engine, the participant SDK, the ops tools, the bench and the tests:
the one place that builds Kafka clients (`infra.kafka`) and Redis clients (`infra.redis`), the
one retry policy (`infra.retry`), and which infrastructure errors are worth retrying
(`infra.errors`). A new connection setting (TLS, SASL, ACL) lands here once."""
