"""Payload schemas per task kind: JSON Schemas that a task's payload must satisfy.

A kind's schema comes from the project (registered with `update_project`) or else from
`schemas/kinds/<kind>.schema.json`. Payloads are checked on create and update; each
violation is reported with its JSON pointer and the rule it broke, so an agent can fix it.

Schemas come from users, so checking a payload must not be a way to stall the server: `$ref`
resolves only inside the schema itself (never over the network or from files), and regular
expressions (`pattern`, `patternProperties`) run on RE2, whose matching time is linear in the
input; a pattern RE2 cannot run (backreferences, lookaround) is refused at registration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any, Protocol

import re2  # type: ignore[import-untyped]
from jsonschema import Draft202012Validator, validators  # type: ignore[import-untyped]
from jsonschema.exceptions import SchemaError  # type: ignore[import-untyped]
from jsonschema.exceptions import ValidationError as SchemaViolation
from referencing import Registry
from referencing.exceptions import Unresolvable

from mcp_taskqueue.data_files import shipped_dir
from mcp_taskqueue.errors import NotFound, ValidationFailed

SCHEMAS_DIR = shipped_dir("schemas")
MAX_REPORTED = 20  # violations listed in one error; the rest are counted


class SchemaSource(Protocol):
    """The one store read this module needs (a `Tx`)."""

    def get_payload_schema(self, project: str, kind: str) -> str | None: ...


class SchemaStore(SchemaSource, Protocol):
    def set_payload_schema(self, project: str, kind: str, schema: str | None, now: float) -> None: ...


# (project, kind) -> the schema text a payload was checked against before the write transaction
CheckedSchemas = dict[tuple[str, str], str | None]

_RE2 = re2.Options()
_RE2.log_errors = False  # a refused pattern is reported to the caller, not logged to stderr


@lru_cache(maxsize=1024)
def linear_regex(pattern: str) -> Any:
    """`pattern` compiled for RE2 (linear time); ValidationFailed if RE2 cannot run it."""
    try:
        return re2.compile(pattern, _RE2)
    except Exception as exc:  # re2.error; its message is bytes
        reason = exc.args[0].decode(errors="replace") if exc.args and isinstance(exc.args[0], bytes) else str(exc)
        raise ValidationFailed(
            f"pattern {pattern!r} cannot be used: {reason} (patterns run on RE2: no backreferences or lookaround)"
        ) from None


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[SchemaViolation]:
    if validator.is_type(instance, "string") and not linear_regex(pattern).search(instance):
        yield SchemaViolation(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(validator: Any, patterns: dict[str, Any], instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if linear_regex(pattern).search(key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


def _additional_properties(validator: Any, allowed: Any, instance: Any, schema: Any) -> Iterator[Any]:
    if not validator.is_type(instance, "object"):
        return
    named = schema.get("properties", {})
    patterns = [linear_regex(p) for p in schema.get("patternProperties", {})]
    extras = [key for key in instance if key not in named and not any(p.search(key) for p in patterns)]
    if validator.is_type(allowed, "object"):
        for extra in extras:
            yield from validator.descend(instance[extra], allowed, path=extra)
    elif not allowed and extras:
        listed = ", ".join(repr(e) for e in sorted(extras))
        yield SchemaViolation(
            f"Additional properties are not allowed ({listed} {'was' if len(extras) == 1 else 'were'} unexpected)"
        )


# Draft 2020-12 with every user regex on RE2 (Python's `re` backtracks: `^(a+)+$` took seconds).
PayloadValidator = validators.extend(
    Draft202012Validator,
    {"pattern": _pattern, "patternProperties": _pattern_properties, "additionalProperties": _additional_properties},
)
NO_RETRIEVAL: Registry[Any] = Registry()  # an empty registry that fetches nothing: only in-schema refs resolve


def _walk(node: Any) -> Iterator[tuple[str, Any]]:
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, value in item.items():
                yield key, value
                stack.append(value)
        elif isinstance(item, list):
            stack.extend(item)


def check_safe(schema: Any, what: str) -> None:
    """Refuse what could make checking a payload reach outside the schema or take unbounded time."""
    uses = set()
    for key, value in _walk(schema):
        uses.add(key)
        if key in ("$ref", "$dynamicRef") and isinstance(value, str) and not value.startswith("#"):
            raise ValidationFailed(
                f"{what}: {key} {value!r} points outside the schema; only references inside it ('#/$defs/...') "
                "are resolved (never over the network or from files)"
            )
        if key == "pattern" and isinstance(value, str):
            linear_regex(value)
        if key == "patternProperties" and isinstance(value, dict):
            for pattern in value:
                linear_regex(pattern)
    if "patternProperties" in uses and "unevaluatedProperties" in uses:
        raise ValidationFailed(f"{what}: unevaluatedProperties cannot be combined with patternProperties here")


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
    check_safe(schema, what)


@lru_cache(maxsize=256)
def _compiled(text: str) -> Any:
    return PayloadValidator(json.loads(text), registry=NO_RETRIEVAL)


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

    def lookup(self, source: SchemaSource, project: str, kind: str) -> tuple[str | None, str]:
        """The schema text that applies to a kind (None: no schema), and its resource name."""
        text, name = source.get_payload_schema(project, kind), f"{project}:{kind}"
        if text is None:
            text, name = self.file_kinds().get(kind), kind
        return text, name

    def validate(
        self,
        source: SchemaSource,
        project: str,
        kind: str,
        payload: Any,
        what: str = "payload",
        checked: CheckedSchemas | None = None,
    ) -> None:
        """Raise ValidationFailed listing every violation; a missing payload is checked as {}. With
        `checked` (what `validate_before` returned), a payload already checked against the very same
        schema text is not checked again: the write transaction then costs one key lookup per item."""
        text, name = self.lookup(source, project, kind)
        if text is None or (checked is not None and checked.get((project, kind), "") == text):
            return
        try:
            found = violations(_compiled(text), {} if payload is None else payload, what)
        except Unresolvable as exc:  # a schema stored before references were checked at registration
            raise ValidationFailed(
                f"the schema of kind {kind!r} has a reference that does not resolve: {exc}"
            ) from None
        except ValidationFailed as exc:  # a pattern stored before patterns were checked at registration
            raise ValidationFailed(f"the schema of kind {kind!r} cannot be applied: {exc}") from None
        if found:
            raise ValidationFailed(
                f"{what} does not match the schema of kind {kind!r} (taskqueue://schemas/{name}): " + "; ".join(found)
            )

    def validate_before(self, source: SchemaSource, items: list[tuple[str, str, Any, str]]) -> CheckedSchemas:
        """Check (project, kind, payload, what) items outside the write transaction; returns the schema
        text each (project, kind) was checked against, for `validate(..., checked=...)`."""
        texts: CheckedSchemas = {}
        for project, kind, payload, what in items:
            self.validate(source, project, kind, payload, what)
            texts[(project, kind)] = self.lookup(source, project, kind)[0]
        return texts

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
