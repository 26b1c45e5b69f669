"""Structured logs on stderr (or a rotating file): one JSON object per line, or readable text.

Every record has `time` (UTC ISO-8601), `level`, `event` and `message`; records about a request
add what is known of `session_id`, `request_id`, `tool`, `identity`, `task_id`, `duration_ms`,
`outcome` and, while tracing is on, `trace_id`. Pass them as `extra={...}` to a logger.
Secrets never reach a record: tokens are not logged, and values named like secrets are masked.
stdout is never written: in stdio mode it carries only protocol messages.
"""

from __future__ import annotations

import json
import logging
import logging.handlers
import sys
from datetime import datetime, timezone
from typing import Any, TextIO

FIELDS = (
    "event",
    "session_id",
    "request_id",
    "tool",
    "identity",
    "task_id",
    "duration_ms",
    "outcome",
    "status",
    "method",
    "path",
    "trace_id",
)
SECRET_WORDS = ("token", "secret", "password", "authorization")
FORMATS = ("json", "text")


def default_format(stream: TextIO | None = None) -> str:
    """json unless stderr is a terminal (people read terminals; machines read everything else)."""
    stream = stream or sys.stderr
    return "text" if stream.isatty() else "json"


def current_trace_id() -> str | None:
    """The OpenTelemetry trace id of the active span, when tracing is on."""
    try:
        from opentelemetry import trace
    except ImportError:  # pragma: no cover - the SDK depends on opentelemetry-api
        return None
    context = trace.get_current_span().get_span_context()
    return f"{context.trace_id:032x}" if context.is_valid else None


def _masked(key: str, value: Any) -> Any:
    return "***" if any(word in key.lower() for word in SECRET_WORDS) and value else value


class JsonFormatter(logging.Formatter):
    """One JSON object per line; absent fields are left out."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, tz=timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "event": getattr(record, "event", None) or record.name,
            "message": record.getMessage(),
            "logger": record.name,
        }
        for name in FIELDS[1:]:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = _masked(name, value)
        if "trace_id" not in data and (trace_id := current_trace_id()):
            data["trace_id"] = trace_id
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """`time level event message key=value ...` for people at a terminal."""

    def format(self, record: logging.LogRecord) -> str:
        when = datetime.fromtimestamp(record.created, tz=timezone.utc).strftime("%H:%M:%S.%f")[:-3]
        extras = " ".join(
            f"{name}={_masked(name, getattr(record, name))}"
            for name in FIELDS[1:]
            if getattr(record, name, None) is not None
        )
        event = getattr(record, "event", None) or record.name
        line = f"{when} {record.levelname:<7} {event}: {record.getMessage()}" + (f"  {extras}" if extras else "")
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def json_logging() -> bool:
    """True when the root logger writes JSON (then plain-text banners would break the stream)."""
    return any(isinstance(h.formatter, JsonFormatter) for h in logging.getLogger().handlers)


def configure_logging(
    level: str = "INFO",
    fmt: str | None = None,
    file: str | None = None,
    max_bytes: int = 10_000_000,
    backups: int = 5,
) -> None:
    """Send every log record to stderr (or to `file`, rotated at `max_bytes`, keeping `backups`)."""
    if fmt is not None and fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}")
    handler: logging.Handler
    if file:
        handler = logging.handlers.RotatingFileHandler(file, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
        fmt = fmt or "json"
    else:
        handler = logging.StreamHandler(sys.stderr)
        fmt = fmt or default_format()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn's own loggers would otherwise print their own format
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # The MCP SDK's own INFO records (session manager started, each request's type) would double
    # our one record per request: below DEBUG they are left out.
    logging.getLogger("mcp").setLevel(logging.NOTSET if root.level <= logging.DEBUG else logging.WARNING)
