"""One attempt to POST a delivery, at bounded cost whatever the receiver does.

- time: connecting, and each wait for bytes, have their own timeouts; the whole attempt (answer
  included) is cut at `total_s`, so a receiver that never answers or streams forever costs that
  long at most;
- memory: at most `ANSWER_BYTES` of an answer are read, kept as the delivery's last answer, and
  the connection is then closed;
- redirects are not followed (a 3xx is a failed attempt, its Location kept in the answer), and no
  proxy settings of the environment apply.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import httpx

ANSWER_BYTES = 4096
USER_AGENT = "tether-webhooks"


@dataclass(frozen=True)
class Answer:
    status: int | None  # None: no answer (refused, timed out before one began)
    text: str  # what is kept of it, or why there was none
    ended: bool = True  # False: cut off by a timeout, even after a status line

    @property
    def delivered(self) -> bool:
        return self.ended and self.status is not None and 200 <= self.status < 300


class Poster:
    def __init__(
        self, *, connect_s: float, read_s: float, total_s: float, concurrency: int
    ) -> None:
        self.total_s = total_s
        self._client = httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(read_s, connect=connect_s),
            limits=httpx.Limits(max_connections=concurrency),
            headers={"user-agent": USER_AGENT},
        )

    async def close(self) -> None:
        await self._client.aclose()

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Answer:
        status: int | None = None
        kept = bytearray()
        try:
            async with (
                asyncio.timeout(self.total_s),
                self._client.stream("POST", url, content=body, headers=headers) as response,
            ):
                status = response.status_code
                location = response.headers.get("location")
                async for chunk in response.aiter_raw():
                    kept += chunk
                    if len(kept) >= ANSWER_BYTES:
                        break
        except httpx.TimeoutException as exc:
            return Answer(status, _cut(f"timed out ({type(exc).__name__})", status, kept), False)
        except TimeoutError:
            return Answer(status, _cut(f"timed out after {self.total_s:g} s", status, kept), False)
        except Exception as exc:
            # httpx's errors, and a URL only psql could store failing in httpx or the socket
            # layer (an invalid IPv6 host, a port past 65535): each a failed, recorded attempt.
            return Answer(None, f"no answer: {type(exc).__name__}: {exc}"[:ANSWER_BYTES])
        text = f"HTTP {status}"
        if 300 <= status < 400:
            text += f" (redirect to {location or 'nowhere'}, not followed)"
        answer = bytes(kept[:ANSWER_BYTES]).decode(errors="replace")
        return Answer(status, f"{text}: {answer}" if answer else text)


def _cut(why: str, status: int | None, kept: bytearray) -> str:
    if status is None:
        return f"{why}: no answer"
    answer = bytes(kept[:ANSWER_BYTES]).decode(errors="replace")
    return f"{why}: HTTP {status} began, its answer did not end: {answer}"
