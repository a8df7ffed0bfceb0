"""Which runtime an operator drives, from its settings: the one place that knows them all."""

from __future__ import annotations

from typing import Any

from tether.api.settings import Settings
from tether.operator.engine.runtime import engine_runtime
from tether.operator.runtime import Runtime


def open_runtime(settings: Settings) -> Runtime[Any]:
    return engine_runtime(settings)
