"""The operator's readiness checks, as `/readyz` reports them (`tether.api.probes`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from tether.cli.problems import reason

if TYPE_CHECKING:
    from tether.api.probes import Checks
    from tether.operator.service import Operator


class OperatorReadiness:
    """The operator's readiness checks (`tether.api.probes`): its Docker connection, its NOTIFY
    listener and its Docker events stream. A standby operator is ready too (it takes over when
    the active one dies): whether it is the active one is reported, not required.

    The operator is handed over by `serve_operator` once created (`started`)."""

    REQUIRED: ClassVar[dict[str, str]] = {
        "docker": "Docker does not answer",
        "notify_listener": "not listening for desired-state changes (reconnecting to Postgres)",
        "docker_events": "not following Docker's events (reconnecting)",
        "proxy": "the proxy's admin socket does not answer (is `tether proxy` running?)",
    }

    def __init__(self, prefix: str = "") -> None:
        self.prefix = prefix
        self._operator: Operator | None = None

    def started(self, operator: Operator) -> None:
        self._operator = operator

    async def __call__(self, checks: Checks) -> None:
        from tether.api import probes

        if self._operator is None:
            for name in self.REQUIRED:
                checks.failed(self.prefix + name, "the operator has not started yet")
            return
        try:
            report = await probes.bounded(self._operator.readiness())
        except TimeoutError:
            report = {}
            why = f"the operator's checks did not answer within {probes.CHECK_TIMEOUT_S:g} s"
        except Exception as exc:  # a readiness probe reports failures, it does not raise them
            report = {}
            why = f"the operator's checks failed ({type(exc).__name__}: {reason(exc)})"
        for name, problem in self.REQUIRED.items():
            if name not in report:
                checks.failed(self.prefix + name, why)
            elif report[name]:
                checks.passed(self.prefix + name)
            else:
                checks.failed(self.prefix + name, problem)
        if "active" in report:
            checks.note(self.prefix + "active", report["active"])
            try:  # which holder and epoch: reported, never required
                lease = await probes.bounded(self._operator.lease_info())
            except Exception:
                lease = {}
            for key, value in lease.items():
                checks.note(self.prefix + key, value)
