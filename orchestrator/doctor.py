"""`saga doctor`: check that the configured Kafka and Redis answer (filled in by the stack work)."""

from schemas.config import Settings


def run_doctor(settings: Settings) -> list[tuple[str, bool, str]]:
    """Return (component, ok, explanation) rows."""
    return []
