"""The one error type the CLI shows: a failure the user can act on, as one line on stderr."""

from __future__ import annotations

# Exit codes, shared by every command: 0 success, 1 a failure reported by the API, the database,
# Docker or the network, 2 a bad command line or configuration value (as click reports usage).
EXIT_FAILURE = 1
EXIT_USAGE = 2


class CliError(Exception):
    """What went wrong and what to do, in one line; `run()` prints it and exits `exit_code`."""

    def __init__(self, message: str, *, exit_code: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = " ".join(message.split())  # always exactly one line
        self.exit_code = exit_code
