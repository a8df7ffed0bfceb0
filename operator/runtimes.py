"""Which runtime an operator drives, from its settings: the one place that knows them all."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tether.api.settings import Settings
from tether.operator.engine.runtime import engine_runtime
from tether.operator.runtime import Runtime


def open_runtime(settings: Settings, guard: Callable[[], None] | None = None) -> Runtime[Any]:
    """`guard` is called before every request to what runs projects: the lease check."""
    return engine_runtime(settings, guard=guard)
