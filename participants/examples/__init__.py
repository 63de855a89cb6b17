"""Example participants written with the SDK."""
