"""The only code that talks to HAProxy: `config` renders its configuration (pure), `admin` drives
its admin socket (the `Proxy` of `tether.operator.routing`), `process` runs and supervises it."""

from __future__ import annotations

from pathlib import Path

from tether.api.settings import Settings
from tether.operator.haproxy.config import ProxyConfig


def proxy_config(settings: Settings) -> ProxyConfig:
    """The proxy's configuration, from tether's settings."""
    return ProxyConfig(
        directory=Path(settings.proxy_dir),
        socket=Path(settings.proxy_socket),
        address=settings.publish_address,
        first_port=settings.ports.first,
        last_port=settings.ports.last,
        hold_s=settings.proxy_hold_s,
    )
