"""Failure injection at run time: SDK middleware (`inject.FaultInjection`) and a CLI plug-in."""
