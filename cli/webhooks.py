"""`tether webhook add | list | remove | deliveries`: an owner's hooks (an admin's: everyone's).

`add` prints the hook's signing secret, this once: the API never shows it again.
"""

# No `from __future__ import annotations` in the command modules: typer would eval each
# annotation string on every run (~25 ms of a command's 150; see cli/options.py).

from typing import Annotated, Any

import typer

from tether.api.vocabulary import WebhookEvent
from tether.cli.options import OutputOpt, invocation
from tether.cli.output import Output, print_json, say

EVENT_NAMES = ", ".join(e.value for e in WebhookEvent)


def _events(value: str) -> list[str]:
    names = [n.strip() for n in value.split(",") if n.strip()]
    unknown = [n for n in names if n not in {e.value for e in WebhookEvent}]
    if not names or unknown:
        what = f"unknown event {', '.join(map(repr, unknown))}" if unknown else "no event named"
        raise typer.BadParameter(
            f"{what}: choose from {EVENT_NAMES}, comma-separated", param_hint="'--events'"
        )
    return names


Url = Annotated[str, typer.Argument(help="Where to POST each event (http:// or https://).")]
Events = Annotated[
    str,
    typer.Option("--events", metavar="A,B,...", help=f"Comma-separated, any of: {EVENT_NAMES}."),
]
HookId = Annotated[int, typer.Argument(help="The webhook's id (`tether webhook list`).", min=1)]
Limit = Annotated[
    int, typer.Option("--limit", metavar="N", min=1, max=1000, help="The latest N deliveries.")
]


def add(ctx: typer.Context, url: Url, events: Events, output: OutputOpt = Output.TABLE) -> None:
    """POST a signed JSON body to URL for each of these events of your projects (an admin's
    hook: of every owner's)."""
    with invocation(ctx).client() as api:
        answer = api.post("/webhooks", {"url": url, "events": _events(events)})
    if output is Output.JSON:
        print_json(answer)
        return
    say(answer["message"])
    say(f"secret: {answer['secret']}")
    say("(shown only now: give it to the receiver, which checks each webhook-signature with it)")


def list_(ctx: typer.Context, output: OutputOpt = Output.TABLE) -> None:
    """Your webhooks (an admin token lists everyone's); never their secrets."""
    with invocation(ctx).client() as api:
        answer = api.get("/webhooks")
    if output is Output.JSON:
        print_json(answer)
        return
    if not answer:
        say("no webhooks: add one with `tether webhook add URL --events ...`")
        return
    say(f"{'ID':>5}  {'OWNER':<14}{'EVENTS':<34}URL")
    for hook in answer:
        owner = hook["owner"] + (" (all)" if hook["all_owners"] else "")
        say(f"{hook['id']:>5}  {owner:<14}{','.join(hook['events']):<34}{hook['url']}")


def remove(ctx: typer.Context, hook: HookId, output: OutputOpt = Output.TABLE) -> None:
    """Remove a webhook; its pending deliveries are dropped."""
    with invocation(ctx).client() as api:
        answer = api.delete(f"/webhooks/{hook}")
    if output is Output.JSON:
        print_json(answer)
    else:
        say(answer["message"])


def deliveries(
    ctx: typer.Context, hook: HookId, limit: Limit = 20, output: OutputOpt = Output.TABLE
) -> None:
    """A webhook's latest deliveries, newest first: state, attempts, the receiver's last answer,
    and when the next attempt is due."""
    with invocation(ctx).client() as api:
        answer: list[dict[str, Any]] = api.get(f"/webhooks/{hook}/deliveries", {"limit": limit})
    if output is Output.JSON:
        print_json(answer)
        return
    if not answer:
        say(f"webhook {hook} has no deliveries yet")
        return
    for d in answer:
        due = f", next attempt {d['next_attempt_at']}" if d["next_attempt_at"] else ""
        say(
            f"{d['message_id']}  {d['project']}  {d['event_type']}  {d['state']}, "
            f"{d['attempts']} attempt(s){due}"
        )
        if d["last_answer"]:
            say(f"    last answer: {' '.join(d['last_answer'].split())[:200]}")
