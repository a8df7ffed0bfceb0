"""Which runtime an operator drives, from its settings: the one place that knows them all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.api.settings import Settings
from tether.operator.dockerapi import DockerOptions
from tether.operator.engine.docker.driver import DockerDriver
from tether.operator.engine.docker.logs import ContainerLogs
from tether.operator.engine.runtime import EngineRuntime
from tether.operator.haproxy import proxy_config
from tether.operator.haproxy.admin import HAProxy
from tether.operator.health import Prober
from tether.operator.routing import Proxy
from tether.operator.runtime import Runtime
from tether.operator.swarm.docker.driver import SwarmDriver
from tether.operator.swarm.docker.logs import ServiceLogs
from tether.operator.swarm.runtime import SwarmRuntime


def open_runtime(settings: Settings, guard: Callable[[], None] | None = None) -> Runtime[Any]:
    """The runtime the settings name; `guard` is called before every request to what runs
    projects: the lease check."""
    if settings.runtime == "swarm":
        return swarm_runtime(settings, guard=guard)
    return engine_runtime(settings, guard=guard)


def swarm_runtime(
    settings: Settings, proxy: Proxy | None = None, *, guard: Callable[[], None] | None = None
) -> SwarmRuntime:
    """The swarm runtime on the Swarm manager the settings' Docker URL names, routing through
    the proxy they name (or `proxy`)."""
    driver = SwarmDriver(settings.docker_url, settings.installation_id, **_calls(settings, guard))
    if proxy is None:
        proxy = HAProxy(proxy_config(settings))
    ports = range(settings.ports.first, settings.ports.last + 1)
    return SwarmRuntime(driver, Prober(settings.publish_address), proxy, ports)


def engine_runtime(
    settings: Settings,
    driver: DockerDriver | None = None,
    proxy: Proxy | None = None,
    *,
    guard: Callable[[], None] | None = None,
) -> EngineRuntime:
    """The engine runtime on the Docker engine the settings name (through `driver`, if given),
    routing through the proxy they name (or `proxy`); `guard` is called before every Docker
    request and every route change (the operator's lease check)."""
    if driver is None:
        driver = DockerDriver(
            settings.docker_url, settings.installation_id, **_calls(settings, guard)
        )
    elif guard is not None:
        driver.guard = guard
    if proxy is None:
        proxy = HAProxy(proxy_config(settings))
    ports = range(settings.ports.first, settings.ports.last + 1)
    return EngineRuntime(driver, Prober(settings.publish_address), proxy, ports)


def log_source(settings: Settings) -> ContainerLogs | ServiceLogs:
    """Where `tether logs` reads projects' output under the runtime the settings name: the
    engine's containers, or the Swarm manager's services. Through a driver of its own, without
    the lease check: reading output changes nothing."""
    calls = _calls(settings, guard=None)
    if settings.runtime == "swarm":
        return ServiceLogs(SwarmDriver(settings.docker_url, settings.installation_id, **calls))
    return ContainerLogs(DockerDriver(settings.docker_url, settings.installation_id, **calls))


def _calls(settings: Settings, guard: Callable[[], None] | None) -> DockerOptions:
    """How either runtime's driver makes its Docker calls, from the settings."""
    return DockerOptions(
        concurrency=settings.docker_concurrency,
        changes=settings.docker_changes,
        guard=guard,
        call_timeout_s=settings.docker_timeout_s,
    )
