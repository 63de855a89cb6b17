"""Metrics, tracing and the log format, used by the engine and by the ops tools."""
