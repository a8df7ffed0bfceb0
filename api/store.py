"""The Postgres store: the only module that issues SQL (the migrator aside).

Every desired-state write locks the project row, decides whether anything really changes, and then
updates the row, appends its event and sends its NOTIFY in the same transaction, so a client that
got an answer can rely on all three having happened, and a no-op write leaves no trace.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, TypeAlias

import asyncpg

from tether.api.errors import (
    DatabaseRefused,
    DeletionRequested,
    Fenced,
    NameTaken,
    NoDeployment,
    NoFreePort,
    NotFound,
    NotStopped,
    PreconditionFailed,
    Refusal,
    StoreUnavailable,
)
from tether.api.models import (
    ClusterNode,
    Deployment,
    DeploymentSpec,
    DesiredSnapshot,
    DesiredState,
    Event,
    EventKind,
    NewEvent,
    NewToken,
    ObservedVolume,
    Principal,
    Project,
    ProjectView,
    Status,
    TokenInfo,
    TokenRefusal,
    VolumeView,
    WatchView,
    WriteResult,
)
from tether.api.queries import sql
from tether.api.webhooks import (
    SECRET_PREFIX,
    Delivery,
    DeliveryClaim,
    Webhook,
    WebhookCreate,
    WebhookCreated,
    WebhookRemoved,
    message_id,
)

if TYPE_CHECKING:
    from asyncpg.pool import PoolConnectionProxy

    Conn: TypeAlias = PoolConnectionProxy[asyncpg.Record]

DESIRED_CHANNEL = "tether_desired"
WEBHOOK_CHANNEL = "tether_webhooks"  # pg_notify'd by the outbox trigger (migrations/0006)
STATUS_CHANNEL = "tether_status"
LEASE_CHANNEL = "tether_lease"
TOKEN_CHANNEL = "tether_tokens"
TOKEN_PREFIX = "tth_"
# A token found is trusted this long (by default: TETHER_TOKEN_CACHE_S) without asking Postgres
# again: one query less per request (docs/benchmarks.md, API writes). A revoked token is dropped
# at once by every API process that hears the revocation (`tether.api.revocations`); one that does
# not hear it (its listener is reconnecting) trusts it at most this long after. A token deleted
# from the table: the same.
TOKEN_TRUSTED_S = 5.0
TOKENS_REMEMBERED = 1024

# Faults that mean "Postgres is not reachable now", as opposed to a bug or a constraint violation.
_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
    asyncpg.exceptions.AdminShutdownError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.TooManyConnectionsError,
)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _when(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@dataclass(frozen=True)
class ArchiveTarget:
    """Where a volume export or import goes: the project's owner, the image a helper container
    that mounts the volume is made from, and the volume's last measured size."""

    owner: str
    image: str
    size_bytes: int | None


@dataclass(frozen=True)
class PortRange:
    first: int
    last: int


async def _init_connection(conn: asyncpg.Connection[asyncpg.Record]) -> None:
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def _keep_session(_conn: asyncpg.Connection[asyncpg.Record]) -> None:
    """Released connections skip asyncpg's reset query (4 statements each time): tether keeps no
    session state on pooled connections (LISTEN has its own connections, advisory locks are
    transaction-scoped). asyncpg still rolls back a transaction left open."""


def _project(row: asyncpg.Record | dict[str, Any]) -> Project:
    data = dict(row)
    data["deletion_requested"] = data.pop("deletion_requested_at") is not None
    return Project.model_validate(data)


def _deployment(row: asyncpg.Record | dict[str, Any]) -> Deployment:
    return Deployment.model_validate(dict(row))


def _status(row: asyncpg.Record | dict[str, Any]) -> Status:
    return Status.model_validate(dict(row))


def _event(row: asyncpg.Record) -> Event:
    return Event.model_validate(dict(row))


def _watch_view(row: asyncpg.Record) -> WatchView:
    data = dict(row)
    status, events = data.pop("status"), data.pop("events")
    return WatchView(
        project=_project(data),
        status=_status(status) if status else None,
        events=[Event.model_validate(e) for e in events],
    )


def _snapshot(row: asyncpg.Record) -> DesiredSnapshot:
    data = dict(row)
    target, running, status = data.pop("target"), data.pop("running"), data.pop("status")
    return DesiredSnapshot(
        project=_project(data),
        target=Deployment.model_validate_json(target) if target else None,
        running=Deployment.model_validate_json(running) if running else None,
        status=Status.model_validate_json(status) if status else None,
    )


class Store:
    def __init__(
        self,
        pool: asyncpg.Pool,
        dsn: str,
        ports: PortRange,
        *,
        token_trusted_s: float = TOKEN_TRUSTED_S,
    ) -> None:
        self._pool = pool
        self._dsn = dsn
        self._ports = ports
        self._token_trusted_s = token_trusted_s
        self._tokens: dict[str, tuple[Principal, float]] = {}  # hash → principal, trusted until

    @classmethod
    async def connect(
        cls,
        dsn: str,
        ports: PortRange = PortRange(20000, 29999),
        max_size: int = 10,
        *,
        on_statement: Callable[[str], None] | None = None,
        token_trusted_s: float = TOKEN_TRUSTED_S,
        command_timeout_s: float = 30.0,
    ) -> Store:
        """`on_statement` is told the text of every statement the pool's connections run (how
        tests count the round trips of a write)."""

        async def init(conn: asyncpg.Connection[asyncpg.Record]) -> None:
            await _init_connection(conn)
            if on_statement is not None:
                conn.add_query_logger(lambda logged: on_statement(logged.query))

        # min_size=0: the API starts, and answers 503, while Postgres is down.
        pool = await asyncpg.create_pool(
            dsn,
            min_size=0,
            max_size=max_size,
            init=init,
            reset=_keep_session,
            timeout=5,
            command_timeout=command_timeout_s,
        )
        return cls(pool, dsn, ports, token_trusted_s=token_trusted_s)

    @property
    def dsn(self) -> str:
        return self._dsn

    async def close(self) -> None:
        await self._pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[Conn]:
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(
                f"the database is unreachable ({type(exc).__name__}); nothing was changed",
                hint="retry shortly; if it persists, check that Postgres is running",
            ) from exc

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[Conn]:
        async with self._connection() as conn, conn.transaction():
            yield conn

    async def ping(self) -> None:
        async with self._connection() as conn:
            await conn.fetchval("SELECT 1")

    # Tokens

    async def create_token(
        self,
        owner: str,
        *,
        admin: bool = False,
        read_only: bool = False,
        expires_in_s: float | None = None,
    ) -> str:
        """Create an API token and return it; only its hash is stored."""
        return (
            await self.issue_token(
                owner, admin=admin, read_only=read_only, expires_in_s=expires_in_s
            )
        ).token

    async def issue_token(
        self,
        owner: str,
        *,
        admin: bool = False,
        read_only: bool = False,
        expires_in_s: float | None = None,
    ) -> NewToken:
        """Create an API token: the token (only its hash is stored), its id and expiry."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        async with self._connection() as conn:
            row = await conn.fetchrow(
                sql("create_token"), owner, hash_token(token), admin, read_only, expires_in_s
            )
        assert row is not None  # INSERT ... RETURNING
        return NewToken(token=token, id=row["id"], expires_at=row["expires_at"])

    async def tokens(self) -> list[TokenInfo]:
        async with self._connection() as conn:
            return [TokenInfo.model_validate(dict(r)) for r in await conn.fetch(sql("list_tokens"))]

    async def revoke_token(self, token_id: int) -> datetime | None:
        """Revoke a token (kept, for the events it wrote): when it was revoked, None if there is
        no such token. Every API process is told at once (`TOKEN_CHANNEL`)."""
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("revoke_token"), token_id)
        self.forget_token(token_id)
        return row["revoked_at"] if row is not None else None

    def forget_token(self, token_id: int) -> None:
        """Ask Postgres again next time this token is used (it was revoked)."""
        self._tokens = {k: v for k, v in self._tokens.items() if v[0].token_id != token_id}

    def forget_tokens(self) -> None:
        """Ask Postgres again about every token (revocations may have gone unheard)."""
        self._tokens = {}

    async def authenticate(self, token: str) -> Principal | TokenRefusal:
        """The principal of a token, or why it is refused. Tokens are stored only as SHA-256
        hashes.

        The lookup is by hash, through the unique index: how long it takes can depend on how
        much of the *hash* matches a stored one, which tells nothing about the token (finding a
        token with a chosen hash prefix means inverting SHA-256). The hash found is compared
        again in constant time, so that no comparison on the way to an answer ever depends on
        the secret itself.

        A token found is trusted for `token_trusted_s` (never past its expiry) without asking
        Postgres again; a revocation drops it at once (`forget_token`)."""
        digest = hash_token(token)
        now = time.monotonic()
        principal, trusted_until = self._tokens.get(digest, (None, 0.0))
        if principal is not None and now < trusted_until:
            return principal
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("token_by_hash"), digest)
        if row is None or not hmac.compare_digest(row["hash"], digest):
            self._tokens.pop(digest, None)
            return TokenRefusal("unknown", "the API token is not valid")
        if row["revoked_at"] is not None:
            self._tokens.pop(digest, None)
            return TokenRefusal(
                "revoked", f"the API token {row['id']} was revoked at {_when(row['revoked_at'])}"
            )
        if row["expired"]:
            self._tokens.pop(digest, None)
            return TokenRefusal(
                "expired", f"the API token {row['id']} expired at {_when(row['expires_at'])}"
            )
        principal = Principal(
            owner=row["owner"], admin=row["admin"], read_only=row["read_only"], token_id=row["id"]
        )
        trusted_s = self._token_trusted_s
        if row["expires_in_s"] is not None:
            trusted_s = min(trusted_s, row["expires_in_s"])
        if len(self._tokens) >= TOKENS_REMEMBERED:
            self._tokens = {k: v for k, v in self._tokens.items() if now < v[1]}
            if len(self._tokens) >= TOKENS_REMEMBERED:
                self._tokens.clear()
        self._tokens[digest] = (principal, now + trusted_s)
        return principal

    # Projects

    async def create_project(self, name: str, principal: Principal) -> WriteResult:
        async with self._transaction() as conn:
            # Serialises creations: each takes the lowest free host port, and no two the same.
            await conn.execute(sql("lock_port_allocation"))
            existing = await conn.fetchrow(sql("project_any_owner"), name)
            if existing is None:
                row = await conn.fetchrow(
                    sql("insert_project"),
                    name,
                    principal.owner,
                    self._ports.first,
                    self._ports.last,
                )
                if row is None:
                    raise NoFreePort(
                        f"every host port in {self._ports.first}-{self._ports.last} is allocated",
                        hint="destroy unused projects or widen TETHER_PORT_RANGE",
                    )
                project = _project(row)
                await self._record(
                    conn, project, "Created", f"project created by {principal.owner}", principal
                )
                return WriteResult(project=project, changed=True, message="project created")
            if principal.scope and existing["owner"] != principal.scope:
                raise NameTaken(
                    f"the project name {name!r} is taken", hint="choose another project name"
                )
            project = _project(existing)
            if project.deletion_requested:
                raise DeletionRequested(
                    f"project {name!r} is being destroyed",
                    hint="wait until it is gone (`tether status`), then create it again",
                )
            return WriteResult(project=project, changed=False, message="project already exists")

    async def list_projects(self, principal: Principal) -> list[ProjectView]:
        async with self._connection() as conn:
            projects = await conn.fetch(sql("list_projects"), principal.scope)
            statuses = {
                r["project"]: _status(r)
                for r in await conn.fetch(sql("list_status"), principal.scope)
            }
        return [ProjectView(project=_project(r), status=statuses.get(r["name"])) for r in projects]

    async def get_project(self, name: str, principal: Principal) -> ProjectView:
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("project"), name, principal.scope)
            if row is None:
                raise _not_found(name)
            status = await conn.fetchrow(sql("status"), name)
        return ProjectView(project=_project(row), status=_status(status) if status else None)

    # Desired-state writes

    async def deploy(
        self,
        name: str,
        spec: DeploymentSpec,
        principal: Principal,
        *,
        start: bool = True,
        if_match: int | None = None,
    ) -> tuple[WriteResult, Deployment]:
        async with self._transaction() as conn:
            project = await self._lock(conn, name, principal, if_match)
            version = await conn.fetchval(sql("next_version"), name)
            row = await conn.fetchrow(
                sql("insert_deployment"),
                name,
                version,
                spec.image,
                spec.command,
                spec.env,
                spec.port,
                spec.health.model_dump() if spec.health else None,
                spec.ready_deadline_s,
                spec.stop_grace_s,
                spec.memory_mb,
                spec.cpus,
                principal.owner,
                spec.secret_env,
                spec.strategy,
                spec.drain_timeout_s,
                [volume.model_dump() for volume in spec.volumes],
            )
            assert row is not None  # INSERT ... RETURNING
            deployment = _deployment(row)
            state = DesiredState.RUNNING if start else project.desired_state
            project = await self._change(
                conn,
                project,
                principal,
                reason="Deployed",
                message=f"deployed v{version} ({spec.image}), desired {state}",
                desired_state=state,
                target_version=version,
            )
        return WriteResult(project=project, changed=True, message=f"v{version} created"), deployment

    async def set_desired_state(
        self, name: str, state: DesiredState, principal: Principal, *, if_match: int | None = None
    ) -> WriteResult:
        """Want the project running or stopped: one statement (the lock, the change, its event
        and the operator's wake-up), the API's most frequent write."""
        verb = "start" if state == DesiredState.RUNNING else "stop"
        was = DesiredState.STOPPED if state == DesiredState.RUNNING else DesiredState.RUNNING
        async with self._connection() as conn:
            row = await conn.fetchrow(
                sql("set_desired_state"),
                name,
                principal.scope,
                state,
                if_match,
                verb.capitalize(),
                f"desired {state} (was {was})",
                principal.owner,
                principal.token_id,
            )
        if row is None:
            raise _not_found(name)
        if row["after"] is not None:
            return WriteResult(
                project=_project(row["after"]), changed=True, message=f"desired {state}"
            )
        # Nothing changed: the same checks, in the same order, as every other write's.
        project = self._checked(name, _project(row["before"]), if_match)
        if project.desired_state == state:
            return WriteResult(
                project=project,
                changed=False,
                message=f"already desired {state}; tether is keeping it {state}",
            )
        raise NoDeployment(
            f"project {name!r} has no deployment to {verb}",
            hint=f"run `tether deploy {name} --image IMAGE` first",
        )

    async def restart(
        self, name: str, principal: Principal, *, if_match: int | None = None
    ) -> WriteResult:
        async with self._transaction() as conn:
            project = await self._lock(conn, name, principal, if_match)
            if project.target_version is None:
                raise NoDeployment(
                    f"project {name!r} has no deployment to restart",
                    hint=f"run `tether deploy {name} --image IMAGE` first",
                )
            project = await self._change(
                conn,
                project,
                principal,
                reason="Restart",
                message=f"restart requested (token {project.restart_token + 1})",
                desired_state=DesiredState.RUNNING,
                restart_token=project.restart_token + 1,
            )
        return WriteResult(
            project=project, changed=True, message="restart requested: the container is replaced"
        )

    async def rollback(
        self,
        name: str,
        principal: Principal,
        *,
        to_version: int | None = None,
        if_match: int | None = None,
    ) -> WriteResult:
        async with self._transaction() as conn:
            project = await self._lock(conn, name, principal, if_match)
            current = project.target_version
            if current is None:
                raise NoDeployment(
                    f"project {name!r} has no deployment to roll back",
                    hint=f"run `tether deploy {name} --image IMAGE` first",
                )
            if to_version is None:
                to_version = await conn.fetchval(sql("previous_version"), name, current)
                if to_version is None:
                    later = await conn.fetchval(sql("latest_version"), name)
                    raise NoDeployment(
                        f"project {name!r} targets v{current}, its first deployment: there is "
                        "nothing earlier to roll back to",
                        hint=f"target a later one with `tether rollback {name} --to vN`"
                        if later != current
                        else f"deploy another version with `tether deploy {name} --image IMAGE`",
                    )
            elif await conn.fetchrow(sql("deployment"), name, to_version) is None:
                raise NotFound(
                    f"project {name!r} has no deployment v{to_version}",
                    hint=f"list them with `tether deployments {name}`",
                )
            if to_version == current:
                return WriteResult(
                    project=project, changed=False, message=f"already targeting v{current}"
                )
            project = await self._change(
                conn,
                project,
                principal,
                reason="Rollback",
                message=f"target v{to_version} (was v{current})",
                target_version=to_version,
            )
        return WriteResult(project=project, changed=True, message=f"rolling back to v{to_version}")

    async def destroy(
        self,
        name: str,
        principal: Principal,
        *,
        if_match: int | None = None,
        delete_volumes: bool = False,
    ) -> WriteResult:
        async with self._transaction() as conn:
            project = await self._lock(conn, name, principal, if_match, allow_deleting=True)
            more = delete_volumes and not project.delete_volumes
            if project.deletion_requested and not more:
                return WriteResult(
                    project=project, changed=False, message="deletion already requested"
                )
            if more:
                await conn.execute(sql("request_volume_deletion"), name)
            project = await self._change(
                conn,
                project,
                principal,
                reason="Destroy",
                message="deletion requested" + (", volumes too" if delete_volumes else ""),
                deleting=True,
            )
        kept = (
            "then its volumes are removed"
            if delete_volumes
            else "its volumes are kept (a project of the same name mounts them again; "
            "`--delete-volumes` removes them)"
        )
        return WriteResult(
            project=project,
            changed=True,
            message=f"deletion requested: the containers are removed, {kept}, then the project "
            "is gone",
        )

    async def _lock(
        self,
        conn: Conn,
        name: str,
        principal: Principal,
        if_match: int | None,
        *,
        allow_deleting: bool = False,
    ) -> Project:
        row = await conn.fetchrow(sql("lock_project"), name, principal.scope)
        if row is None:
            raise _not_found(name)
        return self._checked(name, _project(row), if_match, allow_deleting=allow_deleting)

    @staticmethod
    def _checked(
        name: str, project: Project, if_match: int | None, *, allow_deleting: bool = False
    ) -> Project:
        """`project`, if a write may change it: at the generation asked for, not being
        destroyed."""
        if if_match is not None and if_match != project.generation:
            raise PreconditionFailed(
                f"project {name!r} is at generation {project.generation}, not {if_match}; "
                "nothing was changed",
                hint="read the project again and retry with its current generation",
            )
        if project.deletion_requested and not allow_deleting:
            raise DeletionRequested(
                f"project {name!r} is being destroyed", hint="create a new project instead"
            )
        return project

    async def _change(
        self,
        conn: Conn,
        project: Project,
        principal: Principal,
        *,
        reason: str,
        message: str,
        desired_state: DesiredState | None = None,
        target_version: int | None = None,
        restart_token: int | None = None,
        deleting: bool = False,
    ) -> Project:
        row = await conn.fetchrow(
            sql("update_desired"),
            project.name,
            desired_state or project.desired_state,
            target_version or project.target_version,
            project.restart_token if restart_token is None else restart_token,
            deleting or project.deletion_requested,
        )
        assert row is not None  # the row is locked by this transaction
        changed = _project(row)
        await self._record(conn, changed, reason, message, principal)
        return changed

    async def _record(
        self, conn: Conn, project: Project, reason: str, message: str, principal: Principal
    ) -> None:
        """The desired change's event (naming the owner and the token that asked), and the
        operator's wake-up."""
        await conn.execute(
            sql("record_desired_change"),
            project.name,
            project.generation,
            EventKind.DESIRED,
            reason,
            message,
            principal.owner,
            principal.token_id,
        )

    # Reads

    async def deployments(self, name: str, principal: Principal) -> list[Deployment]:
        async with self._connection() as conn:
            await self._visible(conn, name, principal)
            return [_deployment(r) for r in await conn.fetch(sql("list_deployments"), name)]

    async def deployment(self, name: str, version: int, principal: Principal) -> Deployment:
        async with self._connection() as conn:
            await self._visible(conn, name, principal)
            row = await conn.fetchrow(sql("deployment"), name, version)
        if row is None:
            raise NotFound(
                f"project {name!r} has no deployment v{version}",
                hint=f"list them with `tether deployments {name}`",
            )
        return _deployment(row)

    async def events(
        self, name: str, principal: Principal, *, after: int = 0, limit: int = 100
    ) -> list[Event]:
        async with self._connection() as conn:
            await self._visible(conn, name, principal)
            return [_event(r) for r in await conn.fetch(sql("list_events"), name, after, limit)]

    async def watch_views(
        self, scope: str | None, names: Sequence[str] | None = None, *, events: int = 10
    ) -> list[WatchView]:
        """What watchers see of these projects (all when `names` is None) that the owner `scope`
        may see (every owner's when None), with each project's latest `events`, by name."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                sql("watch_views"), list(names) if names is not None else None, scope, events
            )
        return [_watch_view(r) for r in rows]

    async def _visible(self, conn: Conn, name: str, principal: Principal) -> None:
        if await conn.fetchrow(sql("project"), name, principal.scope) is None:
            raise _not_found(name)

    # The operator's side

    async def desired(self, name: str) -> DesiredSnapshot | None:
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("desired"), name)
        return _snapshot(row) if row else None

    async def desired_all(self) -> list[DesiredSnapshot]:
        async with self._connection() as conn:
            return [_snapshot(r) for r in await conn.fetch(sql("desired"), None)]

    async def write_status(
        self,
        status: Status,
        events: Sequence[NewEvent],
        actor: str,
        *,
        epoch: int | None = None,
    ) -> None:
        """Write what a pass observed and did, its events, and tell watchers, in one statement
        (one round trip); never a desired change, so it triggers no pass. Fenced by `epoch`:
        refused by the database (`Fenced`, nothing written) once a newer epoch holds the lease.
        None: unfenced (tests' passes run by hand)."""
        # One statement, whatever the number of events: they go as three parallel arrays.
        kinds = [str(kind) for kind, _, _ in events]
        reasons = [reason for _, reason, _ in events]
        messages = [message for _, _, message in events]
        async with self._connection() as conn:
            row = await conn.fetchrow(
                sql("write_status"),
                status.project,
                status.observed_generation,
                status.phase,
                [c.model_dump(mode="json") for c in status.conditions],
                status.running_version,
                status.container_id,
                status.ready_container_id,
                status.endpoint,
                status.attempts,
                status.next_attempt_at,
                status.last_error,
                status.crash_count,
                status.last_exit_code,
                status.last_crash_at,
                status.oom_killed,
                status.failed_version,
                epoch,
                status.route,
                status.serving_version,
                status.serving_container_id,
                status.node,
                actor,
                kinds,
                reasons,
                messages,
            )
        assert row is not None  # one row, always
        if not row["written"]:
            raise Fenced(epoch or 0, row["epoch"])

    async def record_volumes(
        self, project: str, volumes: Sequence[ObservedVolume], *, epoch: int | None = None
    ) -> None:
        """What the operator observed of a project's volumes, replacing what it saw before (a
        fenced-out epoch writes nothing)."""
        seen = [
            {
                "name": v.name,
                "docker_name": v.docker_name,
                "mounted_by": list(v.mounted_by),
                "created_at": v.created_at.isoformat() if v.created_at else None,
            }
            for v in volumes
        ]
        async with self._connection() as conn:
            await conn.execute(sql("record_volumes"), project, seen, epoch)

    async def record_volume_sizes(self, sizes: dict[str, int]) -> None:
        """Sizes Docker measured, by Docker volume name."""
        rows = [{"docker_name": name, "size_bytes": size} for name, size in sizes.items()]
        async with self._connection() as conn:
            await conn.execute(sql("record_volume_sizes"), rows)

    async def volumes(self, name: str, principal: Principal) -> list[VolumeView]:
        async with self._connection() as conn:
            await self._visible(conn, name, principal)
            return [
                VolumeView.model_validate(dict(r))
                for r in await conn.fetch(sql("list_volumes"), name)
            ]

    async def archive_target(self, name: str, volume: str, principal: Principal) -> ArchiveTarget:
        """The project's volume, for an export or an import: refused unless the project is
        desired stopped and observed stopped (`NotStopped`, saying what to run) and names the
        volume in one of its deployments."""
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("archive_target"), name, principal.scope, volume)
        if row is None:
            raise _not_found(name)
        if not row["known"] or row["image"] is None:
            raise NotFound(
                f"project {name!r} has no volume {volume!r}",
                hint=f"list its volumes with `tether volumes {name}`",
            )
        if row["deleting"]:
            raise DeletionRequested(f"project {name!r} is being destroyed")
        if row["desired_state"] != DesiredState.STOPPED:
            raise NotStopped(
                f"project {name!r} is desired running: its volume is only read or written while "
                "nothing runs on it",
                hint=f"run `tether stop {name} --wait` first, then retry (`tether start {name}` "
                "after)",
            )
        if row["observed_generation"] != row["generation"] or row["phase"] != "Stopped":
            raise NotStopped(
                f"project {name!r} is desired stopped, but the operator has not stopped it yet "
                f"(phase {row['phase'] or 'Pending'})",
                hint=f"wait with `tether watch {name}`, then retry",
            )
        return ArchiveTarget(row["owner"], row["image"], row["size_bytes"])

    async def finish_deletion(
        self, name: str, generation: int, *, epoch: int | None = None
    ) -> bool:
        """Delete a project the operator has cleaned up, unless its desired state moved on;
        watchers are told (on the status channel), as after any pass. Fenced like
        `write_status`."""
        async with self._transaction() as conn:
            row = await conn.fetchrow(sql("delete_project"), name, generation, epoch)
            assert row is not None  # one row, always
            if epoch is not None and row["epoch"] != epoch:
                raise Fenced(epoch, row["epoch"])
            if row["deleted"]:
                await conn.execute(sql("notify_status"), name)
        return bool(row["deleted"])

    # Webhooks: hooks per owner (an admin's see every owner's projects), and their outbox

    async def create_webhook(self, spec: WebhookCreate, principal: Principal) -> WebhookCreated:
        """A hook with a new signing secret, returned this once (it is never shown again)."""
        secret = SECRET_PREFIX + base64.b64encode(secrets.token_bytes(24)).decode()
        async with self._connection() as conn:
            row = await conn.fetchrow(
                sql("create_webhook"),
                principal.owner,
                principal.scope,
                spec.url,
                spec.events,
                secret,
            )
        assert row is not None  # INSERT ... RETURNING
        scope = "every owner's projects" if principal.admin else f"{principal.owner}'s projects"
        return WebhookCreated(
            webhook=Webhook.model_validate(dict(row)),
            secret=secret,
            message=f"webhook {row['id']} added for {', '.join(spec.events)} of {scope}; "
            "its secret is shown only now",
        )

    async def webhooks(self, principal: Principal) -> list[Webhook]:
        async with self._connection() as conn:
            rows = await conn.fetch(sql("list_webhooks"), principal.scope)
        return [Webhook.model_validate(dict(r)) for r in rows]

    async def remove_webhook(self, hook: int, principal: Principal) -> WebhookRemoved:
        async with self._connection() as conn:
            if await conn.fetchval(sql("delete_webhook"), hook, principal.scope) is None:
                raise _no_webhook(hook)
        return WebhookRemoved(
            id=hook, message=f"webhook {hook} removed, with its pending deliveries"
        )

    async def deliveries(self, hook: int, principal: Principal, *, limit: int) -> list[Delivery]:
        async with self._connection() as conn:
            if await conn.fetchval(sql("webhook_visible"), hook, principal.scope) is None:
                raise _no_webhook(hook)
            rows = await conn.fetch(sql("list_deliveries"), hook, limit)
        return [Delivery(message_id=message_id(r["id"]), **dict(r)) for r in rows]

    async def release_deliveries(self, epoch: int) -> int:
        """Make the attempts other epochs left in flight due now; how many there were."""
        async with self._connection() as conn:
            done = await conn.execute(sql("release_deliveries"), epoch)
        return int(done.split()[-1])

    async def claim_deliveries(
        self, epoch: int, limit: int, *, claim_s: float
    ) -> list[DeliveryClaim]:
        """Up to `limit` due deliveries, each the oldest pending one of its hook and project,
        claimed for one attempt for `claim_s`."""
        async with self._connection() as conn:
            rows = await conn.fetch(sql("claim_deliveries"), epoch, limit, claim_s)
        return [DeliveryClaim(**dict(r)) for r in rows]

    async def finish_attempt(
        self,
        claim: DeliveryClaim,
        epoch: int,
        *,
        delivered: bool,
        status: int | None,
        answer: str,
        retry_in_s: float,
        give_up_after_s: float,
    ) -> str | None:
        """Record an attempt's result; the delivery's state after it (None: the claim was no
        longer this epoch's, nothing written)."""
        async with self._connection() as conn:
            state = await conn.fetchval(
                sql("finish_attempt"),
                claim.id,
                epoch,
                delivered,
                status,
                answer,
                retry_in_s,
                give_up_after_s,
            )
        return None if state is None else str(state)

    async def prune_deliveries(self, keep_s: float) -> int:
        """Forget deliveries finished (delivered or given up) more than `keep_s` ago."""
        async with self._connection() as conn:
            done = await conn.execute(sql("prune_deliveries"), keep_s)
        return int(done.split()[-1])

    async def next_delivery_due(self) -> float | None:
        """Seconds until the next claimable delivery is due (None: nothing pending)."""
        async with self._connection() as conn:
            due = await conn.fetchval(sql("next_delivery_due"))
        return None if due is None else float(due)

    async def write_nodes(self, nodes: Sequence[ClusterNode], *, epoch: int | None = None) -> None:
        """Record the cluster's nodes as the operator just listed them (those not listed are
        gone); fenced like `write_status`."""
        listed = [n.model_dump(mode="json", exclude={"seen_at"}) for n in nodes]
        async with self._transaction() as conn:
            row = await conn.fetchrow(sql("replace_nodes"), listed, epoch)
        assert row is not None  # one row, always
        if not row["written"]:
            raise Fenced(epoch or 0, row["epoch"])

    async def nodes(self) -> list[ClusterNode]:
        async with self._connection() as conn:
            rows = await conn.fetch(sql("list_nodes"))
        return [ClusterNode(**dict(row)) for row in rows]

    async def lease(self) -> LeaseInfo | None:
        """Who holds the operator lease, from which epoch (None: no operator ever took it)."""
        async with self._connection() as conn:
            row = await conn.fetchrow(sql("lease"))
        return LeaseInfo(**dict(row)) if row is not None else None

    async def lease_session(self, holder: str, *, lock_wait_s: float) -> LeaseSession:
        """A dedicated connection for the operator lease (see `LeaseSession`)."""
        try:
            conn = await asyncpg.connect(
                self._dsn,
                timeout=5,
                server_settings={
                    "application_name": f"tether-lease {holder}"[:63],
                    "lock_timeout": f"{max(1, round(lock_wait_s * 1000))}ms",
                },
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot open the lease connection: {exc}") from exc
        return LeaseSession(conn, holder)

    @asynccontextmanager
    async def listen(
        self, channel: str, callback: Callable[[str], None]
    ) -> AsyncIterator[Listener]:
        """Listen on a dedicated connection. Notifications sent while it is down are lost: the
        caller resyncs after every (re)connect."""
        try:
            conn = await asyncpg.connect(self._dsn, timeout=5)
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot listen on {channel}: {exc}") from exc

        def deliver(_c: object, _pid: int, _channel: str, payload: object) -> None:
            callback(str(payload))

        listener = Listener(conn)
        try:
            await conn.add_listener(channel, deliver)
            yield listener
        finally:
            await conn.close(timeout=5)

    @asynccontextmanager
    async def listen_channels(
        self,
        channels: Sequence[str],
        callback: Callable[[str, str], None],
        *,
        application_name: str = "tether-listen",
    ) -> AsyncIterator[Listener]:
        """Like `listen`, for several channels on one dedicated connection (named in
        pg_stat_activity); `callback` gets the channel and the payload."""
        try:
            conn = await asyncpg.connect(
                self._dsn, timeout=5, server_settings={"application_name": application_name}
            )
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"cannot listen on {', '.join(channels)}: {exc}") from exc

        def deliver(_c: object, _pid: int, channel: str, payload: object) -> None:
            callback(channel, str(payload))

        listener = Listener(conn)
        try:
            for channel in channels:
                await conn.add_listener(channel, deliver)
            yield listener
        finally:
            await conn.close(timeout=5)


@dataclass(frozen=True)
class LeaseInfo:
    holder: str
    epoch: int
    expires_at: datetime
    acquired_at: datetime | None
    live: bool


class LeaseSession:
    """The operator lease on a connection of its own. Its session holds a session-level advisory
    lock while this operator is active: when the process dies, Postgres ends the session and
    releases the lock at once, and a standby waiting for it takes over. The lease row adds what
    a lock cannot: an expiry on the DB clock (renewed by the holder) after which a standby ends a
    holder's session that hangs or was cut off, and an epoch that fences every operator write.

    Every statement is bounded: one that does not answer (a connection cut without a close) is a
    `StoreUnavailable`, and the caller closes the session."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record], holder: str) -> None:
        self._conn = conn
        self.holder = holder
        self.closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self.closed.set())

    @property
    def backend_pid(self) -> int:
        return self._conn.get_server_pid()

    async def _run(self, timeout_s: float, query: str, *args: object) -> asyncpg.Record | None:
        try:
            return await self._conn.fetchrow(query, *args, timeout=timeout_s)
        except (*_UNAVAILABLE, asyncpg.InterfaceError) as exc:
            raise StoreUnavailable(f"lease connection: {type(exc).__name__}: {exc}") from exc

    async def wait_lock(self, timeout_s: float) -> bool:
        """Wait for the advisory lock, at most the session's lock_timeout: True once held."""
        try:
            await self._run(timeout_s, sql("lease_lock"))
        except asyncpg.LockNotAvailableError:
            return False
        return True

    async def acquire(self, ttl_s: float, timeout_s: float) -> int:
        """With the lock held: take the lease with the next epoch, and return it."""
        row = await self._run(timeout_s, sql("lease_acquire"), self.holder, ttl_s)
        assert row is not None  # an upsert returns its row
        return int(row["epoch"])

    async def renew(self, epoch: int, ttl_s: float, timeout_s: float) -> bool:
        """Extend the lease of `epoch`: False if it is not this holder's any more."""
        return await self._run(timeout_s, sql("lease_renew"), self.holder, epoch, ttl_s) is not None

    async def end_stale(self, timeout_s: float) -> bool:
        """End the session of a holder whose lease has expired but which still holds the lock."""
        row = await self._run(timeout_s, sql("lease_end_stale"))
        return row is not None and bool(row["ended"])

    async def release(self, epoch: int, timeout_s: float) -> None:
        """End the lease of `epoch` now (NOTIFY on the lease channel) and unlock: a standby
        waiting for the lock gets it at once."""
        await self._run(timeout_s, sql("lease_release"), self.holder, epoch)
        await self._run(timeout_s, sql("lease_unlock"))

    async def close(self) -> None:
        """Close (on a connection that does not answer: abort) the session; its lock goes with
        it once Postgres sees the session end."""
        try:
            await self._conn.close(timeout=2)
        except (*_UNAVAILABLE, asyncpg.InterfaceError):
            self._conn.terminate()


class Listener:
    """A LISTEN connection, checked for life: a connection that is silently gone must be noticed,
    or every notification would be lost without a trace."""

    def __init__(self, conn: asyncpg.Connection[asyncpg.Record]) -> None:
        self._conn = conn
        self._closed = asyncio.Event()
        conn.add_termination_listener(lambda _conn: self._closed.set())

    async def wait_closed(self, check_every_s: float = 10.0) -> None:
        """Return once the connection is lost, pinging it every `check_every_s`."""
        while True:
            try:
                async with asyncio.timeout(check_every_s):
                    await self._closed.wait()
                return
            except TimeoutError:
                pass
            try:
                await self._conn.execute("SELECT 1", timeout=5)
            except (*_UNAVAILABLE, asyncpg.InterfaceError):
                return


_CLIENT_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.InternalClientError,
)


def refusal(exc: BaseException) -> DatabaseRefused | None:
    """A failure raised by asyncpg (connecting, migrating, querying) as tether's own error, so
    that callers, which may not import asyncpg, can say what to do; None for any other failure."""
    if not isinstance(exc, _CLIENT_ERRORS):
        return None
    reason = " ".join(str(getattr(exc, "message", "") or exc).split()) or type(exc).__name__
    if isinstance(exc, asyncpg.UndefinedTableError):
        kind = Refusal.NO_SCHEMA
    elif isinstance(exc, asyncpg.InvalidAuthorizationSpecificationError):
        kind = Refusal.CREDENTIALS  # InvalidPasswordError among them
    elif isinstance(exc, asyncpg.InvalidCatalogNameError):
        kind = Refusal.NO_DATABASE
    else:
        kind, reason = Refusal.OTHER, f"{type(exc).__name__}: {reason}"
    return DatabaseRefused(reason, refusal=kind)


def _no_webhook(hook: int) -> NotFound:
    return NotFound(f"no webhook {hook}", hint="list your webhooks with `tether webhook list`")


def _not_found(name: str) -> NotFound:
    return NotFound(f"no project named {name!r}", hint="list your projects with `tether status`")
