"""The webhook contract: what a hook is, what an owner may ask for, and how its URL is checked.

A hook's URL is validated here for every entry point (API, CLI through the API). URLs with
credentials in them (`user:password@host`) are refused, not stored masked: whatever is stored
would be shown back by `tether webhook list`, and a receiver authenticates tether by the
`webhook-signature` header. Query values are kept (a receiver may route by them) but shown
masked, since they often carry a token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, Field, field_validator

from tether.api.vocabulary import DeliveryState, WebhookEvent

MAX_URL_LENGTH = 2000
SECRET_PREFIX = "whsec_"
QUERY_MASK = "****"
MAX_ANSWER_CHARS = 8192  # what is kept of a receiver's answer (the schema's bound)
EVENT_NAMES = ", ".join(e.value for e in WebhookEvent)
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def check_url(value: str) -> str:
    if len(value) > MAX_URL_LENGTH:
        raise ValueError(f"the URL is {len(value)} characters long, longer than {MAX_URL_LENGTH}")
    if _CONTROL.search(value) or not value.isascii():
        raise ValueError(
            "the URL contains spaces, control or non-ASCII characters: percent-encode them "
            "(and give an IDN host in its xn-- form)"
        )
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https"):
        raise ValueError(
            f"{value!r} is not an http:// or https:// URL: webhooks are POSTed over HTTP(S)"
        )
    if "@" in parts.netloc:
        raise ValueError(
            "the URL carries credentials (user:password@): tether refuses them, since they "
            "would be shown back in `tether webhook list`; have the receiver check the "
            "webhook-signature header instead"
        )
    if not parts.hostname:
        raise ValueError(f"{value!r} names no host, e.g. https://hooks.example.com/tether")
    try:
        parts.port  # noqa: B018  (it validates the port when read)
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port: use a number from 1 to 65535") from None
    return value


def shown_url(url: str) -> str:
    """The URL as the API shows it back: query values masked."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    masked = urlencode([(k, QUERY_MASK) for k, _ in pairs], safe=QUERY_MASK)
    return urlunsplit(parts._replace(query=masked))


WebhookUrl = Annotated[
    str,
    AfterValidator(check_url),
    Field(
        examples=["https://hooks.example.com/tether"],
        json_schema_extra={"maxLength": MAX_URL_LENGTH, "pattern": "^https?://"},
    ),
]


class WebhookCreate(BaseModel):
    url: WebhookUrl
    events: list[str] = Field(
        min_length=1,
        max_length=len(WebhookEvent),
        description=f"Which events to deliver: any of {EVENT_NAMES}.",
        examples=[["rollout_failed", "stalled"]],
    )

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = [e for e in events if e not in WebhookEvent.__members__.values()]
        if unknown:
            raise ValueError(
                f"unknown event {', '.join(map(repr, unknown))}: choose from {EVENT_NAMES}"
            )
        return list(dict.fromkeys(events))  # each once, in the order given


class Webhook(BaseModel):
    """A hook as the API shows it: never its secret, its URL's query values masked."""

    id: int
    owner: str
    all_owners: bool = Field(description="An admin's hook: events of every owner's projects.")
    url: str
    events: list[WebhookEvent]
    created_at: datetime

    @field_validator("url")
    @classmethod
    def _masked(cls, url: str) -> str:
        return shown_url(url)


class WebhookCreated(BaseModel):
    webhook: Webhook
    secret: str = Field(
        description="The signing secret (`whsec_<base64>`), shown this once: the receiver "
        "verifies each delivery's webhook-signature with it."
    )
    message: str


class WebhookRemoved(BaseModel):
    id: int
    message: str


class Delivery(BaseModel):
    """One event's delivery to one hook: its state, attempts and the receiver's last answer."""

    id: int
    webhook: int
    message_id: str = Field(description="The webhook-id header: the same on every attempt.")
    project: str
    event_type: WebhookEvent
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="None once delivered or given up.")
    last_attempt_at: datetime | None
    last_status: int | None = Field(description="The receiver's HTTP status (None: no answer).")
    last_answer: str | None = Field(
        description="The start of the receiver's last answer, or why there was none."
    )
    created_at: datetime
    finished_at: datetime | None


def message_id(delivery_id: int) -> str:
    return f"msg_{delivery_id}"


@dataclass(frozen=True)
class DeliveryClaim:
    """A delivery the sender has claimed for one attempt (`attempt` counts this one)."""

    id: int
    webhook: int
    url: str
    secret: str
    payload: dict[str, Any]
    attempt: int

    @property
    def message_id(self) -> str:
        return message_id(self.id)
