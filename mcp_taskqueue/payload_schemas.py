"""Payload schemas per task kind: JSON Schemas that a task's payload must satisfy.

A kind's schema comes from the project (registered with `update_project`) or else from
`schemas/kinds/<kind>.schema.json`. Payloads are checked on create and update; each
violation is reported with its JSON pointer and the rule it broke, so an agent can fix it.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]

from mcp_taskqueue.data_files import shipped_dir
from mcp_taskqueue.errors import NotFound, ValidationFailed

SCHEMAS_DIR = shipped_dir("schemas")
MAX_REPORTED = 20  # violations listed in one error; the rest are counted


class SchemaSource(Protocol):
    """The one store read this module needs (a `Tx`)."""

    def get_payload_schema(self, project: str, kind: str) -> str | None: ...


class SchemaStore(SchemaSource, Protocol):
    def set_payload_schema(self, project: str, kind: str, schema: str | None, now: float) -> None: ...


def pointer(path: Any) -> str:
    """A jsonschema error path as a JSON pointer (RFC 6901); '' is the document itself."""
    return "".join("/" + str(part).replace("~", "~0").replace("/", "~1") for part in path)


def violations(validator: Draft202012Validator, value: Any, what: str) -> list[str]:
    """Each way `value` breaks the schema, as 'what at /pointer: message (rule: keyword)'."""
    errors = sorted(validator.iter_errors(value), key=lambda e: (list(map(str, e.absolute_path)), str(e.validator)))
    lines = [f"{what} at {pointer(e.absolute_path) or '(root)'}: {e.message} (rule: {e.validator})" for e in errors]
    if len(lines) > MAX_REPORTED:
        lines = lines[:MAX_REPORTED] + [f"... and {len(lines) - MAX_REPORTED} more"]
    return lines


def check_schema(schema: Any, what: str) -> None:
    """Refuse a document that is not a valid JSON Schema (draft 2020-12), naming where it is wrong."""
    if not isinstance(schema, dict):
        raise ValidationFailed(f"{what} must be a JSON Schema object, e.g. {{'type': 'object', 'required': [...]}}")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = pointer(exc.absolute_path) or "(root)"
        raise ValidationFailed(f"{what} is not a valid JSON Schema at {where}: {exc.message}") from None


@lru_cache(maxsize=256)
def _compiled(text: str) -> Draft202012Validator:
    return Draft202012Validator(json.loads(text))


def load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValidationFailed(f"cannot read {path.name}: {exc}") from None


class PayloadSchemas:
    """Finds and applies the schema of a kind: project-registered first, then the shipped files."""

    def __init__(self, directory: Path = SCHEMAS_DIR) -> None:
        self.directory = directory
        self._files: dict[str, str] | None = None

    def file_kinds(self) -> dict[str, str]:
        """kind -> schema text of every `kinds/<kind>.schema.json` (read once)."""
        if self._files is None:
            found: dict[str, str] = {}
            for path in sorted((self.directory / "kinds").glob("*.schema.json")):
                schema = load_json(path)
                check_schema(schema, path.name)
                found[path.name.removesuffix(".schema.json")] = json.dumps(schema)
            self._files = found
        return self._files

    def validate(self, source: SchemaSource, project: str, kind: str, payload: Any, what: str = "payload") -> None:
        """Raise ValidationFailed listing every violation; a missing payload is checked as {}."""
        text, name = source.get_payload_schema(project, kind), f"{project}:{kind}"
        if text is None:
            text, name = self.file_kinds().get(kind), kind
        if text is None:
            return
        found = violations(_compiled(text), {} if payload is None else payload, what)
        if found:
            raise ValidationFailed(
                f"{what} does not match the schema of kind {kind!r} (taskqueue://schemas/{name}): " + "; ".join(found)
            )

    @staticmethod
    def register(tx: SchemaStore, project: str, schemas: dict[str, Any], now: float) -> None:
        """Set (or with None remove) the project's schema for each kind, after checking each is valid."""
        for kind, schema in schemas.items():
            if schema is not None:
                check_schema(schema, f"payload_schemas[{kind!r}]")
        for kind, schema in schemas.items():
            tx.set_payload_schema(project, kind, None if schema is None else json.dumps(schema), now)

    def named(self, name: str, source: SchemaSource) -> Any:
        """A schema by resource name: 'workflow', a shipped kind, or '<project>:<kind>' for a registered one."""
        if name == "workflow":
            return load_json(self.directory / "workflow.schema.json")
        for at in (i for i, char in enumerate(name) if char == ":"):
            text = source.get_payload_schema(name[:at], name[at + 1 :])
            if text is not None:
                return json.loads(text)
        if name in self.file_kinds():
            return json.loads(self.file_kinds()[name])
        known = ", ".join(["workflow", *self.file_kinds()])
        raise NotFound(f"no schema named {name!r}; known: {known} (project schemas: '<project>:<kind>')")
