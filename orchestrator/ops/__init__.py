"""Operating sagas from outside the daemon: queries over the Redis state, operator commands,
dead-letter inspection and replay. The CLI (`orchestrator.ops.cli`, `cli_sagas`) and the HTTP
API (`orchestrator.ops.http`) are thin layers over these modules; `doctor` checks the
connections; `plugins` lets installed packages add CLI commands.

Errors a person can act on:

    OpsError              a one-line message; `exit_code` for the CLI, `http_status` for HTTP
    +-- InputError        bad input (duration, id, position, file, JSON): exit 2, HTTP 400
    +-- NotFoundError     no such saga or dead letter: exit 1, HTTP 404
    +-- RefusedError      the command cannot apply to the saga as it is: exit 1, HTTP 409
"""

from __future__ import annotations


class OpsError(Exception):
    exit_code = 1
    http_status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InputError(OpsError):
    exit_code = 2
    http_status = 400


class NotFoundError(OpsError):
    exit_code = 1
    http_status = 404


class RefusedError(OpsError):
    exit_code = 1
    http_status = 409
