"""Errors a user can act on. Each carries a stable code, a message and, where one helps, a hint.

The HTTP API turns them into JSON bodies with the same fields; the CLI prints them as one line.
"""

from __future__ import annotations

from enum import StrEnum


class TetherError(Exception):
    status_code = 400
    error = "bad_request"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class Unauthorized(TetherError):
    status_code = 401
    error = "unauthorized"


class ReadOnlyToken(TetherError):
    """A write sent with a read-only token: nothing was changed."""

    status_code = 403
    error = "read_only_token"


class RateLimited(TetherError):
    """Too many failed authentications from one client address: try again after a while."""

    status_code = 429
    error = "too_many_failed_authentications"

    def __init__(self, message: str, hint: str | None = None, *, retry_after_s: int) -> None:
        super().__init__(message, hint)
        self.retry_after_s = retry_after_s


class NotFound(TetherError):
    status_code = 404
    error = "not_found"


class NameTaken(TetherError):
    status_code = 409
    error = "name_taken"


class NoDeployment(TetherError):
    """The request needs a deployment the project does not have (start, restart, rollback)."""

    status_code = 400
    error = "no_deployment"


class DeletionRequested(TetherError):
    status_code = 400
    error = "deletion_requested"


class PreconditionFailed(TetherError):
    status_code = 412
    error = "generation_mismatch"


class NoFreePort(TetherError):
    status_code = 503
    error = "no_free_port"


class StoreUnavailable(TetherError):
    """Postgres cannot be reached right now; nothing was written."""

    status_code = 503
    error = "database_unavailable"


class LogsUnavailable(TetherError):
    """The container output cannot be read: this API has no Docker access, or Docker failed."""

    status_code = 503
    error = "logs_unavailable"


class Refusal(StrEnum):
    """What a Postgres that answered, but refused, wants done about it."""

    NO_SCHEMA = "no_schema"  # the tables are missing: run the migrations
    CREDENTIALS = "credentials"  # the user or password is wrong
    NO_DATABASE = "no_database"  # the database named in the DSN does not exist
    OTHER = "other"


class DatabaseRefused(TetherError):
    """Postgres (or its client library) failed in a way that waiting will not fix."""

    status_code = 503
    error = "database_refused"

    def __init__(self, message: str, hint: str | None = None, *, refusal: Refusal) -> None:
        super().__init__(message, hint)
        self.refusal = refusal


class Fenced(TetherError):
    """An operator write carried an epoch older than the lease's: another operator took over, and
    the database refused the write (nothing was changed)."""

    status_code = 409
    error = "fenced"

    def __init__(self, epoch: int, current: int | None) -> None:
        super().__init__(
            f"operator epoch {epoch} is fenced: the lease is at epoch {current}; "
            "nothing was changed"
        )
        self.epoch = epoch
        self.current = current


# Volume archives (`tether volume export/import`)


class ArchivesUnavailable(TetherError):
    status_code = 503
    error = "archives_unavailable"


class BadArchive(TetherError):
    status_code = 400
    error = "bad_archive"


class ArchiveTooLarge(TetherError):
    status_code = 413
    error = "archive_too_large"


class NotStopped(TetherError):
    status_code = 409
    error = "not_stopped"
