"""Rendering a delivery for its channel, with sandboxed Jinja2 templates a notifier may override.

Channels: `webhook` (the JSON envelope, Standard Webhooks signed), `slack` (Block Kit),
`discord` (an embed), `email` (text and HTML parts), and two HTTP presets on the generic
webhook: `twilio` (an SMS through a Twilio-style Messages API: form body, basic auth) and `fcm`
(a push through an FCM-style v1 API: JSON message, bearer token). Each channel reads the
template keys in TEMPLATE_KEYS; a key a notifier does not override uses DEFAULTS.

Templates see: event, headline, subject (task title, workflow name or queue summary), project,
at, actor, link (dashboard link or empty), task {id, title, project, kind, status, tags, worker,
error, attempts, max_attempts, workflow_id, phase}, workflow {id, name, status, task_counts},
queue {ready, threshold, projects} and data (the raw event data).
"""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from jinja2 import StrictUndefined, Undefined
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.notify.events import HEADLINES
from mcp_taskqueue.notify.transport import CREDENTIAL_HEADERS, HttpRequest
from mcp_taskqueue.webhooks import signature_headers

CHANNELS = ("webhook", "slack", "discord", "email", "twilio", "fcm")
TEMPLATE_KEYS = {
    "webhook": ("body",),
    "slack": ("title", "text"),
    "discord": ("title", "text"),
    "email": ("subject", "text", "html"),
    "twilio": ("text",),
    "fcm": ("title", "text"),
}
DASHBOARD_ENV = "TASKQUEUE_DASHBOARD_URL"
MAX_TEMPLATE = 10_000
DEFAULTS = {
    "title": "{{ headline }}: {{ subject }}",
    "subject": "[{{ project }}] {{ headline }}: {{ subject }}",
    "text": (
        "{{ headline }}: {{ subject }}\n"
        "Project: {{ project }}\n"
        "{% if task.worker %}Worker: {{ task.worker }}\n{% endif %}"
        "{% if task.error %}Error: {{ task.error }}\n{% endif %}"
        "{% if task.id %}Task {{ task.id }}: {{ task.status }}, attempt {{ task.attempts }} of "
        "{{ task.max_attempts }}\n{% endif %}"
        "{% if queue.ready %}Ready tasks: {{ queue.ready }} (threshold {{ queue.threshold }})\n{% endif %}"
        "{% if link %}{{ link }}\n{% endif %}"
    ),
    "html": (
        "<h3>{{ headline }}: {{ subject }}</h3><table>"
        "<tr><th align=left>Project</th><td>{{ project }}</td></tr>"
        "{% if task.worker %}<tr><th align=left>Worker</th><td>{{ task.worker }}</td></tr>{% endif %}"
        "{% if task.error %}<tr><th align=left>Error</th><td><pre>{{ task.error }}</pre></td></tr>{% endif %}"
        "{% if task.id %}<tr><th align=left>Task</th><td>{{ task.id }} ({{ task.status }})</td></tr>{% endif %}"
        "{% if queue.ready %}<tr><th align=left>Ready</th><td>{{ queue.ready }}</td></tr>{% endif %}"
        '</table>{% if link %}<p><a href="{{ link }}">Open in the dashboard</a></p>{% endif %}'
    ),
}
# Discord embed colours: green for done, red for failures, amber for things that need a look.
GREEN, RED, AMBER = 0x2EB67D, 0xE01E5A, 0xECB22E
COLOURS = {"task.completed": GREEN, "workflow.completed": GREEN, "task.failed": RED, "task.dead": RED}
COLOURS |= {"workflow.failed": RED, "task.lease_expired": AMBER, "task.blocked": AMBER, "queue.depth": AMBER}

MAX_PRODUCT = 100_000  # items of a repeated string or list, bits of a power


class Sandbox(SandboxedEnvironment):
    """Jinja2's sandbox with `*` and `**` bounded: `{{ 'a' * 10**10 }}` would take the server's memory."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*" and any(
            isinstance(a, int) and isinstance(b, str | list | tuple) and a * len(b) > MAX_PRODUCT
            for a, b in ((left, right), (right, left))
        ):
            raise SecurityError(f"a repetition longer than {MAX_PRODUCT} is not allowed in templates")
        if (
            operator == "**"
            and isinstance(left, int)
            and isinstance(right, int)
            and right * left.bit_length() > MAX_PRODUCT
        ):
            raise SecurityError(f"a power of more than {MAX_PRODUCT} bits is not allowed in templates")
        return super().call_binop(context, operator, left, right)


_lenient = Sandbox(undefined=Undefined, autoescape=False)
_lenient_html = Sandbox(undefined=Undefined, autoescape=True)
_strict = Sandbox(undefined=StrictUndefined, autoescape=False)
_strict_html = Sandbox(undefined=StrictUndefined, autoescape=True)

SAMPLE_DATA: dict[str, Any] = {
    "task": {
        "id": "0000000000sample",
        "title": "Sample task from test_notifier",
        "project": "default",
        "kind": "task",
        "status": "completed",
        "tags": ["sample"],
        "worker": "sample-worker",
        "error": None,
        "attempts": 1,
        "max_attempts": 3,
        "workflow_id": None,
        "phase": None,
    },
    "actor": "sample-worker",
}


def context(envelope: dict[str, Any], dashboard_url: str | None = None) -> dict[str, Any]:
    """What templates see, from a delivery's {type, timestamp, data} envelope."""
    data = envelope.get("data") or {}
    event = str(envelope.get("type", ""))
    task: dict[str, Any] = {
        "id": None,
        "title": None,
        "project": None,
        "kind": None,
        "status": None,
        "tags": [],
        "worker": None,
    }
    task |= {"error": None, "attempts": None, "max_attempts": None, "workflow_id": None, "phase": None}
    task |= {"blocked_by": []} | (data.get("task") or {})
    workflow = {"id": None, "name": None, "status": None, "task_counts": {}} | (data.get("workflow") or {})
    queue = {"ready": None, "threshold": None, "projects": []} | (data.get("queue") or {})
    if workflow["id"]:
        subject, project = workflow["name"], workflow.get("project")
    elif task["id"]:
        subject, project = task["title"], task["project"]
    else:
        subject = f"{queue['ready']} ready tasks (threshold {queue['threshold']})"
        project = ", ".join(queue["projects"]) or "all projects"
    base = dashboard_url or os.environ.get(DASHBOARD_ENV)
    link = ""
    if base and (workflow["id"] or task["id"]):
        link = base.rstrip("/") + (
            f"/board?workflow={workflow['id']}" if workflow["id"] else f"/board?task={task['id']}"
        )
    return {
        "event": event,
        "headline": HEADLINES.get(event, event),
        "subject": subject,
        "project": project or "",
        "at": envelope.get("timestamp", ""),
        "actor": data.get("actor"),
        "link": link,
        "task": task,
        "workflow": workflow,
        "queue": queue,
        "data": data,
    }


def render(templates: dict[str, str], key: str, ctx: dict[str, Any]) -> str:
    env = _lenient_html if key == "html" else _lenient
    return env.from_string(templates.get(key) or DEFAULTS[key]).render(ctx)


def check_templates(channel: str, templates: dict[str, str] | None) -> dict[str, str]:
    """Refuse unknown keys, syntax errors, sandbox escapes, unknown names, and any other error, at save time.

    Each template is compiled and rendered once against a full sample event with undefined names
    as errors, so a typo such as `{{ taks.title }}` is refused now rather than at send time.
    """
    templates = dict(templates or {})
    allowed = TEMPLATE_KEYS[channel]
    unknown = sorted(set(templates) - set(allowed))
    if unknown:
        raise ValidationFailed(f"templates {unknown} do not apply to {channel}; it uses {', '.join(allowed)}")
    ctx = context({"type": "task.completed", "timestamp": "2030-01-01T00:00:00.000Z", "data": SAMPLE_DATA})
    for key, source in templates.items():
        if not isinstance(source, str) or len(source) > MAX_TEMPLATE:
            raise ValidationFailed(f"template {key!r} must be text of at most {MAX_TEMPLATE} characters")
        env = _strict_html if key == "html" else _strict
        try:
            env.from_string(source).render(ctx)
        except Exception as exc:  # a TemplateError, or whatever the sample data made it raise (1/0, range(10**9))
            raise ValidationFailed(f"template {key!r} is refused: {type(exc).__name__}: {exc}") from None
    return templates


@dataclass
class EmailContent:
    subject: str
    text: str
    html: str


@dataclass
class Notifier:
    """What rendering and sending need of a notifier (secrets included: never returned by a tool)."""

    id: str
    name: str
    channel: str
    target: str
    templates: dict[str, str]
    options: dict[str, Any]
    secrets: list[str]
    unavailable: str | None = None  # why the secrets could not be unsealed (each send fails with it)


def build_http(notifier: Notifier, msg_id: str, body_json: str, timestamp: int) -> HttpRequest:
    """The HTTP request of a delivery on an HTTP channel (every channel but email)."""
    envelope = json.loads(body_json)
    ctx = context(envelope, notifier.options.get("dashboard_url"))
    t = notifier.templates
    headers = {"content-type": "application/json", "webhook-id": msg_id}
    custom = {str(k).lower(): str(v) for k, v in (notifier.options.get("headers") or {}).items()}
    channel = notifier.channel
    if channel == "webhook":
        body = render(t, "body", ctx).encode() if "body" in t else body_json.encode()
        headers["content-type"] = notifier.options.get("content_type", "application/json")
        headers.update(custom)
        headers.update(signature_headers(notifier.secrets, msg_id, body, timestamp))
    elif channel == "slack":
        body = json.dumps(slack_message(ctx, render(t, "title", ctx), render(t, "text", ctx))).encode()
    elif channel == "discord":
        body = json.dumps(discord_message(ctx, render(t, "title", ctx), render(t, "text", ctx))).encode()
    elif channel == "twilio":
        form = {"To": notifier.options.get("to", ""), "From": notifier.options.get("from", "")}
        body = urlencode({**form, "Body": render(t, "text", ctx)[:1600]}).encode()
        headers["content-type"] = "application/x-www-form-urlencoded"
        headers["authorization"] = basic_auth(str(notifier.options.get("account_sid", "")), notifier.secrets[:1])
    elif channel == "fcm":
        body = json.dumps(fcm_message(notifier.options, ctx, render(t, "title", ctx), render(t, "text", ctx))).encode()
        if notifier.secrets:
            headers["authorization"] = "Bearer " + notifier.secrets[0]
    else:
        raise ValueError(f"{channel} is not an HTTP channel")
    # custom headers may carry credentials too: like authorization, they stay with the target's origin
    return HttpRequest(notifier.target, body, headers, private_headers=CREDENTIAL_HEADERS | set(custom))


def build_email(notifier: Notifier, body_json: str) -> EmailContent:
    ctx = context(json.loads(body_json), notifier.options.get("dashboard_url"))
    t = notifier.templates
    subject = " ".join(render(t, "subject", ctx).split())[:250]
    return EmailContent(subject, render(t, "text", ctx), render(t, "html", ctx))


def basic_auth(user: str, secrets: list[str]) -> str:
    return "Basic " + base64.b64encode(f"{user}:{secrets[0] if secrets else ''}".encode()).decode()


def slack_message(ctx: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """A Block Kit message: header, the text, fields for project/worker/attempts, the error, a link."""
    task = ctx["task"]
    fields = [("Project", ctx["project"]), ("Worker", task["worker"]), ("Kind", task["kind"])]
    if task["attempts"] is not None:
        fields.append(("Attempts", f"{task['attempts']} of {task['max_attempts']}"))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": title[:150]}},
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000] or " "}},
        {
            "type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"} for name, value in fields if value],
        },
    ]
    if not blocks[2]["fields"]:
        blocks.pop()
    if task["error"]:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Error*\n```{task['error'][:2900]}```"}})
    if ctx["link"]:
        blocks.append(
            {
                "type": "actions",
                "elements": [{"type": "button", "text": {"type": "plain_text", "text": "Open"}, "url": ctx["link"]}],
            }
        )
    blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": f"{ctx['event']} · {ctx['at']}"}]})
    return {"text": title[:3000], "blocks": blocks}


def discord_message(ctx: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """One embed: title (linked to the dashboard), text, inline fields, colour by outcome."""
    task = ctx["task"]
    fields = [("Project", ctx["project"]), ("Worker", task["worker"]), ("Kind", task["kind"])]
    if task["error"]:
        fields.append(("Error", task["error"]))
    embed: dict[str, Any] = {
        "title": title[:256],
        "description": text[:4096],
        "color": COLOURS.get(ctx["event"], AMBER),
        "fields": [
            {"name": name, "value": str(value)[:1024], "inline": name != "Error"} for name, value in fields if value
        ],
        "footer": {"text": ctx["event"] + (f" · {task['id']}" if task["id"] else "")},
    }
    if ctx["at"]:
        embed["timestamp"] = ctx["at"]
    if ctx["link"]:
        embed["url"] = ctx["link"]
    return {"username": "mcp-taskqueue", "embeds": [embed]}


def fcm_message(options: dict[str, Any], ctx: dict[str, Any], title: str, text: str) -> dict[str, Any]:
    """An FCM v1-style message to a device `token` or a `topic`; data values are strings."""
    target = {"token": options["token"]} if options.get("token") else {"topic": options.get("topic", "taskqueue")}
    data = {"event": ctx["event"], "task_id": ctx["task"]["id"] or "", "workflow_id": ctx["workflow"]["id"] or ""}
    return {"message": {**target, "notification": {"title": title[:200], "body": text[:1000]}, "data": data}}
