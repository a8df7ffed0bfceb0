"""Ready means the user's endpoint answers: probes through the project's published host port."""

from __future__ import annotations

import asyncio

import httpx

from tether.api.models import HealthCheck


def probe_host(publish_address: str) -> str:
    """Where to reach a port published on `publish_address` from this host."""
    return "127.0.0.1" if publish_address in ("", "0.0.0.0") else publish_address


class Prober:
    def __init__(self, publish_address: str) -> None:
        self._host = probe_host(publish_address)
        self._http = httpx.AsyncClient(follow_redirects=False)

    async def close(self) -> None:
        await self._http.aclose()

    def endpoint(self, host_port: int) -> str:
        return f"{self._host}:{host_port}"

    async def healthy(self, check: HealthCheck | None, port: int | None, host_port: int) -> bool:
        """A deployment without a port has no endpoint: running is all that can be known.
        With a port and no explicit check, the port must accept a TCP connection."""
        if port is None:
            return True
        timeout = check.timeout_s if check else 2.0
        if check is not None and check.type == "http":
            url = f"http://{self._host}:{host_port}{check.path}"
            try:
                response = await self._http.get(url, timeout=timeout)
            except httpx.HTTPError:
                return False
            return response.status_code < 400
        try:
            async with asyncio.timeout(timeout):
                _reader, writer = await asyncio.open_connection(self._host, host_port)
        except (OSError, TimeoutError):
            return False
        writer.close()
        await writer.wait_closed()
        return True
