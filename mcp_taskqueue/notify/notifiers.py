"""Notifiers: who hears about which events, through which channel; and their deliveries.

Each public method of `Notifiers` is one store transaction (or, for `test`, one send outside
any transaction). Secrets (webhook signing keys, tokens, SMTP passwords) are stored but never
part of what these methods return: `has_secret` says one is set.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal
from urllib.parse import urlsplit

from mcp_taskqueue.errors import Conflict, NotFound, ValidationFailed
from mcp_taskqueue.ids import new_id
from mcp_taskqueue.notify.channels import CHANNELS, SAMPLE_DATA, Notifier, build_email, build_http, check_templates
from mcp_taskqueue.notify.events import EVENTS, envelope, iso_now
from mcp_taskqueue.notify.models import (
    DeletedNotifier,
    Delivery,
    NotifierDetail,
    NotifierInfo,
    NotifierList,
    TestResult,
)
from mcp_taskqueue.notify.sealing import SecretUnavailable, seal, unseal
from mcp_taskqueue.notify.transport import AddressPolicy, Outcome, SmtpSettings, send_email, send_http
from mcp_taskqueue.store import Storage, Tx

Channel = Literal["webhook", "slack", "discord", "email", "twilio", "fcm"]
ROTATION_SECONDS = 24 * 3600  # an old secret keeps signing this long after a new one is set
OPTION_KEYS: dict[str, tuple[str, ...]] = {
    "webhook": ("headers", "content_type", "dashboard_url"),
    "slack": ("dashboard_url",),
    "discord": ("dashboard_url",),
    "email": ("smtp_host", "smtp_port", "username", "from", "starttls", "dashboard_url"),
    "twilio": ("account_sid", "from", "to", "dashboard_url"),
    "fcm": ("token", "topic", "dashboard_url"),
}
REQUIRED_OPTIONS = {"email": ("smtp_host", "from"), "twilio": ("account_sid", "from", "to")}
NEEDS_SECRET = ("webhook", "twilio", "fcm")
# Where a notifier's secret goes (as a password or token, or as the signing key): a secret never
# follows a notifier to a new destination unless it is given again.
DESTINATION_OPTIONS = ("smtp_host", "smtp_port", "starttls")
TIMEOUT_ENV = "TASKQUEUE_NOTIFY_TIMEOUT"


def iso(ts: float | None) -> str | None:
    return None if ts is None else iso_now(ts)


def shown_target(channel: str, target: str) -> str:
    """The target as tools show it: Slack/Discord/preset URLs are credentials, so only their host."""
    if channel == "email":
        return target
    parts = urlsplit(target)
    host = (f"[{parts.hostname}]" if ":" in (parts.hostname or "") else parts.hostname or "") + (
        f":{parts.port}" if parts.port else ""
    )  # never user:password@
    if channel == "webhook":
        return f"{parts.scheme}://{host}{parts.path}" + ("?…" if parts.query else "")
    return f"{parts.scheme}://{host}/…"


def shown_options(options: dict[str, Any]) -> dict[str, Any]:
    """Options as tools show them: custom header values may be credentials, so only their names."""
    if isinstance(options.get("headers"), dict):
        return {**options, "headers": {name: "…" for name in options["headers"]}}
    return options


def destination(channel: str, target: str, options: dict[str, Any]) -> tuple[Any, ...]:
    """Where the secret goes: the URL, or for email the SMTP server (recipients never see the password)."""
    return (channel, None if channel == "email" else target, *(options.get(k) for k in DESTINATION_OPTIONS))


def delivery(row: Any) -> Delivery:
    return Delivery(
        id=row["id"],
        event=row["event"],
        status=row["status"],
        attempts=row["attempts"],
        key=row["order_key"],
        last_status_code=row["last_status_code"],
        last_latency_ms=row["last_latency_ms"],
        last_error=row["last_error"],
        created_at=iso(row["created_at"]) or "",
        last_attempt_at=iso(row["last_attempt_at"]),
        next_attempt_at=iso(row["next_attempt_at"]) if row["status"] == "pending" else None,
        delivered_at=iso(row["delivered_at"]),
    )


def send_timeout() -> float:
    return float(os.environ.get(TIMEOUT_ENV, "10"))


class Notifiers:
    """create / list / get / delete / test / redeliver, and what the dispatcher needs to send."""

    def __init__(self, store: Storage, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.clock = clock

    # --- reading --------------------------------------------------------------------------

    def _row(self, tx: Tx, key: str) -> Any:
        row = tx.get_notifier(key)
        if row is None:
            raise NotFound(f"no notifier with id or name {key!r}; list_notifiers shows them")
        return row

    def _info(self, tx: Tx, row: Any) -> dict[str, Any]:
        """Every shown field; NotifierInfo keeps the short part for tools."""
        filters = json.loads(row["filters"])
        now = self.clock()
        rotating = row["previous_secret"] and (row["previous_secret_until"] or 0) > now
        return {
            "id": row["id"],
            "name": row["name"],
            "channel": row["channel"],
            "target": shown_target(row["channel"], row["target"]),
            "events": json.loads(row["events"]),
            "filters": filters,
            "threshold": row["threshold"],
            "templates": json.loads(row["templates"]),
            "options": shown_options(json.loads(row["options"])),
            "has_secret": bool(row["secret"]),
            "previous_secret_until": iso(row["previous_secret_until"]) if rotating else None,
            "circuit_open_until": iso(row["circuit_open_until"]) if (row["circuit_open_until"] or 0) > now else None,
            "deliveries": tx.delivery_counts(row["seq"]),
            "created_at": iso(row["created_at"]) or "",
        }

    def list_notifiers(self) -> NotifierList:
        return self.store.read(lambda tx: NotifierList(notifiers=[self._summary(tx, r) for r in tx.list_notifiers()]))

    def _summary(self, tx: Tx, row: Any) -> NotifierInfo:
        info = self._info(tx, row)
        return NotifierInfo(**{k: v for k, v in info.items() if k in NotifierInfo.model_fields})

    def get(self, key: str, limit: int = 50, status: str | None = None) -> NotifierDetail:
        """A notifier with its latest deliveries (optionally only those with `status`)."""

        def op(tx: Tx) -> NotifierDetail:
            row = self._row(tx, key)
            recent = [delivery(r) for r in tx.deliveries(row["seq"], limit, status)]
            return NotifierDetail(**self._info(tx, row), recent=recent)

        return self.store.read(op)

    def sender(self, tx: Tx, row: Any) -> Notifier:
        """The notifier with its active secrets (unsealed), for rendering and sending."""
        stored = [row["secret"]] if row["secret"] else []
        if row["previous_secret"] and (row["previous_secret_until"] or 0) > self.clock():
            stored.append(row["previous_secret"])
        unavailable = None
        try:
            secrets = [str(unseal(s)) for s in stored]
        except SecretUnavailable as exc:  # each send then fails with this error, the dispatcher goes on
            secrets, unavailable = [], str(exc)
        return Notifier(
            id=row["id"],
            name=row["name"],
            channel=row["channel"],
            target=row["target"],
            templates=json.loads(row["templates"]),
            options=json.loads(row["options"]),
            secrets=secrets,
            unavailable=unavailable,
        )

    # --- writing --------------------------------------------------------------------------

    def create(
        self,
        name: str,
        channel: str,
        target: str,
        events: Sequence[str],
        *,
        filters: dict[str, list[str]] | None = None,
        threshold: int | None = None,
        templates: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
        secret: str | None = None,
        replace: bool = False,
    ) -> NotifierInfo:
        """Save a notifier; with `replace`, change the one of that name in place (a new secret
        starts a rotation: the old one keeps signing for ROTATION_SECONDS)."""
        values = self._check(name, channel, target, events, threshold, templates, options)
        values["filters"] = json.dumps(check_filters(filters))

        def op(tx: Tx) -> NotifierInfo:
            now = self.clock()
            row = tx.get_notifier(name)
            if row is not None and not replace:
                raise Conflict(f"a notifier named {name!r} exists; pass replace=true to change it")
            if row is None and channel in NEEDS_SECRET and not secret:
                raise ValidationFailed(f"a {channel} notifier needs a secret (signing key or API token)")
            if row is None and channel == "email" and values_options(values).get("username") and not secret:
                raise ValidationFailed("an email notifier with a username needs the SMTP password as secret")
            changes = {**values, "updated_at": now}
            if row is None:
                tx.insert_notifier(
                    {"id": "ntf_" + new_id(), "name": name, **changes, "secret": seal(secret), "created_at": now},
                    list(events),
                )
            else:
                moved = destination(row["channel"], row["target"], json.loads(row["options"])) != destination(
                    channel, values["target"], values_options(values)
                )
                if moved and row["secret"] and not secret:
                    raise ValidationFailed(
                        "changing a notifier's channel, target or SMTP server needs its secret again "
                        "(a stored secret never follows a notifier to a new destination)"
                    )
                if moved and secret:
                    changes |= {"secret": seal(secret), "previous_secret": None, "previous_secret_until": None}
                elif secret and secret != readable(row["secret"]):
                    changes |= {"secret": seal(secret), "previous_secret": row["secret"]}
                    changes["previous_secret_until"] = now + ROTATION_SECONDS
                tx.update_notifier(row["seq"], changes, list(events))
            return self._summary(tx, self._row(tx, name))

        return self.store.write(op)

    def _check(
        self,
        name: str,
        channel: str,
        target: str,
        events: Sequence[str],
        threshold: int | None,
        templates: dict[str, str] | None,
        options: dict[str, Any] | None,
    ) -> dict[str, Any]:
        if not 1 <= len(name) <= 100:
            raise ValidationFailed("name must be 1 to 100 characters")
        if channel not in CHANNELS:
            raise ValidationFailed(f"channel {channel!r} is unknown; use one of {', '.join(CHANNELS)}")
        unknown = sorted(set(events) - set(EVENTS))
        if not events or unknown:
            raise ValidationFailed(
                f"events must name some of {', '.join(EVENTS)}" + (f"; unknown: {unknown}" if unknown else "")
            )
        if ("queue.depth" in events) != (threshold is not None):
            raise ValidationFailed("threshold (ready tasks) goes with the queue.depth event, and only with it")
        options = dict(options or {})
        if len(json.dumps(options)) > 10_000:
            raise ValidationFailed("options are larger than 10000 characters of JSON")
        extra = sorted(set(options) - set(OPTION_KEYS[channel]))
        if extra:
            raise ValidationFailed(
                f"options {extra} do not apply to {channel}; it takes {', '.join(OPTION_KEYS[channel])}"
            )
        missing = [k for k in REQUIRED_OPTIONS.get(channel, ()) if not options.get(k)]
        if missing:
            raise ValidationFailed(f"a {channel} notifier needs options {', '.join(missing)}")
        if channel == "email":
            addresses = [a.strip() for a in target.split(",") if a.strip()]
            if not addresses or not all("@" in a and " " not in a for a in addresses):
                raise ValidationFailed("an email target is one or more addresses, comma-separated")
            target = ", ".join(addresses)
        else:
            AddressPolicy.from_env().check_target(target)
        return {
            "channel": channel,
            "target": target,
            "events": json.dumps(list(dict.fromkeys(events))),
            "threshold": threshold,
            "templates": json.dumps(check_templates(channel, templates)),
            "options": json.dumps(options),
        }

    def delete(self, key: str) -> DeletedNotifier:
        """Remove a notifier and its deliveries (pending ones are dropped, and counted)."""

        def op(tx: Tx) -> DeletedNotifier:
            row = self._row(tx, key)
            return DeletedNotifier(id=row["id"], dropped_pending=tx.delete_notifier(row["seq"]))

        return self.store.write(op)

    def redeliver(self, key: str, ids: Sequence[str] = (), statuses: Sequence[str] = ("dead",)) -> int:
        """Send deliveries again under their original ids: these ids, else every one in `statuses`."""

        def op(tx: Tx) -> int:
            row = self._row(tx, key)
            return tx.requeue_deliveries(row["seq"], list(ids), list(statuses), self.clock())

        return self.store.write(op)

    # --- sending --------------------------------------------------------------------------

    def test(self, key: str) -> TestResult:
        """Send a sample `task.completed` event now (outside any transaction) and report the answer."""
        notifier = self.store.read(lambda tx: self.sender(tx, self._row(tx, key)))
        body = envelope("task.completed", self.clock(), SAMPLE_DATA)
        outcome = deliver(notifier, "msg_test_" + new_id(), body, AddressPolicy.from_env(), send_timeout())
        return TestResult(
            ok=outcome.ok,
            status_code=outcome.status_code,
            latency_ms=outcome.latency_ms,
            error=outcome.error,
            response=(outcome.response or "")[:500] or None,
        )


def check_filters(filters: dict[str, list[str]] | None) -> dict[str, list[str]]:
    """{projects?, kinds?, tags?}: lists of names; empty or absent matches everything."""
    unknown = sorted(set(filters or {}) - {"projects", "kinds", "tags"})
    if unknown:
        raise ValidationFailed(f"filters {unknown} are unknown; use projects, kinds and tags")
    out: dict[str, list[str]] = {}
    for key, names in (filters or {}).items():
        if not isinstance(names, list) or not all(isinstance(n, str) and 0 < len(n) <= 100 for n in names):
            raise ValidationFailed(f"filters.{key} must be a list of names")
        if len(names) > 50:
            raise ValidationFailed(f"filters.{key} has {len(names)} names; the limit is 50")
        if names:
            out[key] = sorted(set(names))
    return out


def readable(stored: str | None) -> str | None:
    """The stored secret unsealed, or None when no configured key opens it."""
    try:
        return unseal(stored)
    except SecretUnavailable:
        return None


def values_options(values: dict[str, Any]) -> dict[str, Any]:
    return json.loads(values["options"])  # type: ignore[no-any-return]


def deliver(notifier: Notifier, msg_id: str, body: str, policy: AddressPolicy, timeout: float) -> Outcome:
    """One attempt of one delivery through the notifier's channel. Blocks; never raises."""
    if notifier.unavailable:
        return Outcome(False, None, 0.0, notifier.unavailable)
    try:
        return _deliver(notifier, msg_id, body, policy, timeout)
    except Exception as exc:  # a template that fails on this event's data, a malformed option...
        return Outcome(False, None, 0.0, f"{type(exc).__name__}: {exc}")


def _deliver(notifier: Notifier, msg_id: str, body: str, policy: AddressPolicy, timeout: float) -> Outcome:
    if notifier.channel == "email":
        options = notifier.options
        content = build_email(notifier, body)
        settings = SmtpSettings(
            host=str(options["smtp_host"]),
            sender=str(options["from"]),
            port=int(options.get("smtp_port", 587)),
            username=options.get("username"),
            starttls=bool(options.get("starttls", True)),
        )
        recipients = [a.strip() for a in notifier.target.split(",")]
        password = notifier.secrets[0] if notifier.secrets else None
        return send_email(settings, password, recipients, content.subject, content.text, content.html, policy, timeout)
    request = build_http(notifier, msg_id, body, int(time.time()))
    return send_http(request, policy, timeout)
