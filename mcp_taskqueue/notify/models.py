"""What the notifications toolset returns: notifiers (never their secrets) and their deliveries."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class Delivery(BaseModel):
    """One notification to one notifier; `id` is the `webhook-id`, the same on every attempt."""

    id: str
    event: str
    status: Literal["pending", "delivered", "dead"]
    attempts: int
    key: str = Field(description="Task, workflow or 'queue': deliveries with one key arrive in order.")
    last_status_code: int | None = None
    last_latency_ms: float | None = None
    last_error: str | None = None
    created_at: str
    last_attempt_at: str | None = None
    next_attempt_at: str | None = None
    delivered_at: str | None = None


class NotifierInfo(BaseModel):
    """A notifier as tools show it: never its secret."""

    id: str
    name: str
    channel: str
    target: str
    events: list[str]
    filters: dict[str, list[str]] = {}
    threshold: int | None = None
    has_secret: bool
    deliveries: dict[str, int] = {}


class NotifierList(BaseModel):
    notifiers: list[NotifierInfo]


class NotifierDetail(NotifierInfo):
    """The resource's view: settings, secret rotation and circuit state, and the latest deliveries."""

    templates: dict[str, str] = {}
    options: dict[str, Any] = {}
    previous_secret_until: str | None = None
    circuit_open_until: str | None = None
    created_at: str
    recent: list[Delivery] = Field(default_factory=list, description="Latest deliveries, newest first.")


class DeletedNotifier(BaseModel):
    id: str
    dropped_pending: int


class TestResult(BaseModel):
    """What the receiver answered to a sample event."""

    ok: bool
    status_code: int | None = None
    latency_ms: float
    error: str | None = None
    response: str | None = None  # the start of the response body
