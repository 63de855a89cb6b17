"""Samples beside the engine, using only what a user could: the order saga, fault injection."""
