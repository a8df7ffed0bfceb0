"""Which containers and volumes each project has, kept between Docker's lists from its events, so
that a pass inspects its project's containers instead of listing them: Docker answers a filtered
list by looking at every container it has (40 to 90 ms of its CPU at 800 containers, measured in
docs/benchmarks.md, "Issue 15"), an inspect by looking at one.

The index is built from one list of the installation's containers (the resync's) and kept up by
the container events that follow it (create, destroy) and by the driver's own creates and
removes. It is trusted only while that holds: while the events are followed, and since a list
that began after the events were followed from (`follow`'s `since`: Docker replays what happened
from then on). Otherwise `containers_of` answers None and the driver lists as before.

A list takes a while: a change seen while it is on its way may or may not be in its answer. Each
is applied again, in order, on top of the answer (`listing`), which is right either way: adding a
container twice, or forgetting one twice, changes nothing.

No I/O here: the driver feeds it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

# The container events that change which containers exist.
CREATED, DESTROYED = "create", "destroy"


@dataclass
class ContainerIndex:
    _projects: dict[str, set[str]] = field(default_factory=dict)  # project → container ids
    _project_of: dict[str, str] = field(default_factory=dict)  # container id → project
    _with_volumes: set[str] = field(default_factory=set)  # projects that have volumes
    # The changes seen since the oldest list on its way began: (project, id, created).
    _journal: list[tuple[str, str, bool]] = field(default_factory=list)
    _lists_under_way: int = 0
    _listed_from: float | None = None  # when the last list that answered began (Unix time)
    _followed_from: float | None = None  # the events are followed from then on
    _follows: int = 0

    @property
    def trusted(self) -> bool:
        return (
            self._followed_from is not None
            and self._listed_from is not None
            and self._listed_from >= self._followed_from
        )

    def containers_of(self, project: str) -> frozenset[str] | None:
        """The ids of the project's containers; None when the index is not to be trusted."""
        return frozenset(self._projects.get(project, ())) if self.trusted else None

    def may_have_volumes(self, project: str) -> bool:
        """Whether the project may have volumes: true unless the index knows it has none."""
        return not self.trusted or project in self._with_volumes

    def may_have_any_volumes(self) -> bool:
        """Whether the installation may have volumes: true unless the index knows it has none."""
        return not self.trusted or bool(self._with_volumes)

    def created(self, project: str, container_id: str) -> None:
        self._change(project, container_id, created=True)

    def destroyed(self, container_id: str) -> None:
        project = self._project_of.get(container_id)
        if project is not None:
            self._change(project, container_id, created=False)

    def volume_created(self, project: str) -> None:
        self._with_volumes.add(project)

    def saw(self, action: str, project: str, container_id: str) -> None:
        """One of Docker's container events."""
        if action == CREATED:
            self.created(project, container_id)
        elif action == DESTROYED:
            self._change(project, container_id, created=False)

    @contextlib.contextmanager
    def listing(
        self,
    ) -> Iterator[Callable[[Iterable[tuple[str, str]], Iterable[str]], None]]:
        """A list of every container (and volume) on its way: call what this yields with its
        answer, (project, container id) pairs and the projects that have volumes."""
        began, mark = time.time(), len(self._journal)
        self._lists_under_way += 1

        def listed(containers: Iterable[tuple[str, str]], with_volumes: Iterable[str]) -> None:
            self._projects, self._project_of = {}, {}
            for project, container_id in containers:
                self._apply(project, container_id, created=True)
            for project, container_id, created in self._journal[mark:]:
                self._apply(project, container_id, created=created)
            self._with_volumes = set(with_volumes)
            self._listed_from = max(self._listed_from or began, began)

        try:
            yield listed
        finally:
            self._lists_under_way -= 1
            if not self._lists_under_way:
                self._journal.clear()

    @contextlib.contextmanager
    def follow(self, since: float) -> Iterator[None]:
        """Docker's events are followed from `since` on, for as long as this lasts (a stream
        that ends after the next one began leaves that one trusted)."""
        self._follows += 1
        mine = self._follows
        self._followed_from = since
        try:
            yield
        finally:
            if self._follows == mine:
                self._followed_from = None

    def _change(self, project: str, container_id: str, *, created: bool) -> None:
        if self._lists_under_way:
            self._journal.append((project, container_id, created))
        self._apply(project, container_id, created=created)

    def _apply(self, project: str, container_id: str, *, created: bool) -> None:
        if created:
            self._projects.setdefault(project, set()).add(container_id)
            self._project_of[container_id] = project
            return
        self._project_of.pop(container_id, None)
        ids = self._projects.get(project)
        if ids is not None:
            ids.discard(container_id)
            if not ids:
                del self._projects[project]
