"""The API's own readiness check: the database answers and its migrations are current."""

from __future__ import annotations

from tether.api import migrator, probes
from tether.api.errors import StoreUnavailable
from tether.api.store import Store


class DatabaseReadiness:
    """A `probes.ReadinessCheck` of `store`'s database (`database`) and its migrations
    (`migrations`). Once current, the migrations stay so for the life of this process: they are
    not read again."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self._migrations_current = False

    async def __call__(self, checks: probes.Checks) -> None:
        try:
            await probes.bounded(self._store.ping())
        except (StoreUnavailable, TimeoutError) as exc:
            cause = exc.__cause__ if isinstance(exc, StoreUnavailable) else exc
            checks.failed("database", f"unreachable ({type(cause).__name__})")
            checks.failed("migrations", "not checked: the database is unreachable")
            return
        checks.passed("database")
        if not self._migrations_current:
            try:
                missing = await probes.bounded(migrator.pending(self._store.dsn))
            except Exception as exc:  # any failure to read them: not ready, and say why
                checks.failed("migrations", f"cannot read them ({type(exc).__name__})")
                return
            if missing:
                names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing)
                checks.failed("migrations", f"{names} pending: run `tether migrate`")
                return
            self._migrations_current = True
        checks.passed("migrations")
