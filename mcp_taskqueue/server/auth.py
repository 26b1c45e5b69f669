"""Authentication and authorization for the HTTP transports, on the SDK's `mcp.server.auth`.

The SDK does the HTTP part: `BearerAuthBackend` turns `Authorization: Bearer ...` into an
`AccessToken` through a `TokenVerifier`, `RequireAuthMiddleware` answers 401 with
`WWW-Authenticate` on /mcp, /sse and /messages/, and the protected resource metadata routes
serve RFC 9728. This module supplies the verifiers (our stored tokens, or OAuth 2.1 JWTs) and
`Guard`, a server middleware that runs for every MCP message on every transport and decides,
before anything is changed, whether the caller's scopes and projects allow it:

- scopes: read (read-only tools, resources, prompts), write (task and workflow changes),
  claim (the worker protocol), review (add_review), admin (everything; project settings and
  any tool not listed here that is not read-only);
- projects: a token limited to projects may only name those, touch tasks and workflows in
  them, and is refused the cross-project listings; when it is limited to one project, a
  missing `project` argument means that project;
- identity: over HTTP the token's name is the actor. `worker` becomes the token name (or
  `name/suffix` when the caller gave another worker name, so one token can run several
  workers but never act as another token's worker); `reviewer` and `by` become the name.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import anyio.to_thread
from mcp.server import MCPServer
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.shared.exceptions import MCPError
from mcp_types import INVALID_REQUEST, CallToolResult, CompleteResult, Completion, TextContent
from starlette.requests import HTTPConnection
from starlette.responses import JSONResponse

from mcp_taskqueue.errors import Forbidden, NotFound, RateLimited, TaskQueueError
from mcp_taskqueue.identity import CURRENT_IDENTITY, SCOPES, TOKEN_PREFIX, Identity, Tokens, revocations
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.ratelimit import RateLimiter
from mcp_taskqueue.workflows import Workflows, fill_template

log = logging.getLogger(__name__)

# The scope each tool needs; a tool missing here needs `read` if it is read-only, else `admin`.
TOOL_SCOPES: dict[str, str] = {
    **dict.fromkeys(("claim_task", "heartbeat", "complete_task", "fail_task", "release_task"), "claim"),
    "add_review": "review",
    **dict.fromkeys(
        (
            "create_task",
            "create_tasks",
            "update_task",
            "add_note",
            "add_dependency",
            "remove_dependency",
            "cancel_task",
            "retry_task",
            "create_workflow",
            "cancel_workflow",
            "advance_phase",
        ),
        "write",
    ),
    **dict.fromkeys(("create_project", "update_project"), "admin"),
    "board_act": "write",  # the board App's actions; release needs admin, checked by the board itself
}
# MCP methods anyone who authenticated may use: the handshake and discovery.
OPEN_METHODS = frozenset({"initialize", "ping", "tools/list", "notifications/initialized", "logging/setLevel"})
# The resources of one project: its tasks (and their history), workflows, the project, its schemas.
PROJECT_RESOURCE = re.compile(
    r"taskqueue://(?:(?P<kind>tasks)/(?P<key>[^/?#]+)(?:/history)?"
    r"|(?P<kind2>workflows|projects|schemas)/(?P<key2>[^/?#]+))"
)
# How often an open listen stream re-checks its caller's token (revocation ends it within this).
REVERIFY_SECONDS = 1.0
# Listings of what the server offers (no queue data): open to a project-limited token too.
DISCOVERY_METHODS = frozenset({"server/discover", "resources/list", "resources/templates/list", "prompts/list"})
WORKER_TOOLS = frozenset({"claim_task", "heartbeat", "complete_task", "fail_task", "release_task"})
# Tools a project-limited token may call (each names its project or a task/workflow in it).
PROJECT_AWARE_TOOLS = frozenset(TOOL_SCOPES) | {
    "get_task",
    "list_tasks",
    "queue_stats",
    "get_workflow",
    "list_workflows",
    "show_board",
    "board_read",  # the board App's bridge: the board applies the token's project limits itself
    "board_act",
}


# --- verifiers (SDK `TokenVerifier` protocol) ----------------------------------------------------


class StoreTokenVerifier:
    """Tokens made by `mcp-taskqueue token create`, looked up by hash in the store.

    A valid token is remembered for `CACHE_SECONDS`, so a client sending many requests (or a flood
    being refused with 429) costs a dict lookup, not a store read each. Unknown tokens are never
    remembered. Revocation: a revoke made in this process (`Tokens.revoke`) empties the cache at
    once (the next request reads the store); a revoke made by another process (`token revoke` on
    the command line, another replica) is seen within `CACHE_SECONDS` (docs/deployment.md).
    """

    CACHE_SECONDS = 1.0
    CACHE_SIZE = 1024

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._cache: dict[str, tuple[float, AccessToken]] = {}
        self._generation = revocations()

    async def verify_token(self, token: str) -> AccessToken | None:
        now = time.monotonic()
        generation = revocations()
        if generation != self._generation:
            self._cache.clear()
            self._generation = generation
        cached = self._cache.get(token)
        if cached is not None and cached[0] > now:
            return cached[1]
        row = await anyio.to_thread.run_sync(self.tokens.verify, token)
        if row is None:
            self._cache.pop(token, None)
            return None
        access = AccessToken(
            token=token,
            client_id=row.name,
            scopes=list(row.scopes),
            expires_at=int(row.expires_at) if row.expires_at is not None else None,
            claims={"projects": list(row.projects) if row.projects is not None else None},
        )
        if len(self._cache) >= self.CACHE_SIZE:
            self._cache.clear()
        self._cache[token] = (now + self.CACHE_SECONDS, access)
        return access


@dataclass
class OAuthSettings:
    """OAuth 2.1 resource-server settings: who issues tokens, for which audience, where the keys are."""

    issuer: str
    audience: str
    resource: str
    jwks_url: str | None = None
    jwks_file: str | None = None
    scopes_claim: str = "scope"
    name_claim: str = "sub"
    projects_claim: str = "taskqueue_projects"
    algorithms: list[str] = field(default_factory=lambda: ["RS256", "ES256", "PS256", "EdDSA"])


class JwtTokenVerifier:
    """JWT access tokens (RFC 9068): signature against a JWKS (URL or file), `iss`, `aud`, `exp`.

    Scopes come from `scopes_claim` (a space-separated string or a list; unknown scopes are
    ignored), the actor's name from `name_claim`, project limits from `projects_claim`.
    """

    def __init__(self, settings: OAuthSettings) -> None:
        import jwt

        if bool(settings.jwks_url) == bool(settings.jwks_file):
            raise ValueError("auth.oauth: give exactly one of jwks_url or jwks_file")
        self.settings = settings
        self._jwt = jwt
        self._client = jwt.PyJWKClient(settings.jwks_url, cache_keys=True) if settings.jwks_url else None
        self._keys = jwt.PyJWKSet.from_json(Path(settings.jwks_file).read_text()) if settings.jwks_file else None

    def _decode(self, token: str) -> dict[str, Any]:
        jwt = self._jwt
        if self._client is not None:
            key = self._client.get_signing_key_from_jwt(token).key
        else:
            assert self._keys is not None
            kid = jwt.get_unverified_header(token).get("kid")
            matches = [k for k in self._keys.keys if kid is None or k.key_id == kid]
            if not matches:
                raise jwt.InvalidTokenError(f"no key with kid {kid!r}")
            key = matches[0].key
        claims: dict[str, Any] = jwt.decode(
            token,
            key,
            algorithms=self.settings.algorithms,
            audience=self.settings.audience,
            issuer=self.settings.issuer,
            options={"require": ["exp", "iss", "aud"]},
        )
        return claims

    async def verify_token(self, token: str) -> AccessToken | None:
        try:
            claims = await anyio.to_thread.run_sync(self._decode, token)
        except Exception as exc:  # any invalid token is a 401, never a 500
            log.info("jwt refused: %s", type(exc).__name__, extra={"event": "auth_refused"})
            return None
        raw = claims.get(self.settings.scopes_claim) or ""
        scopes = raw.split() if isinstance(raw, str) else [str(s) for s in raw]
        name = claims.get(self.settings.name_claim)
        if not isinstance(name, str) or not name:
            return None
        projects = claims.get(self.settings.projects_claim)
        return AccessToken(
            token=token,
            client_id=name,
            scopes=[s for s in scopes if s in SCOPES],
            expires_at=int(claims["exp"]),
            resource=self.settings.resource,
            subject=claims.get("sub"),
            claims={"iss": claims.get("iss"), "projects": list(projects) if isinstance(projects, list) else None},
        )


# --- who is calling -----------------------------------------------------------------------------


def identity_of(conn: HTTPConnection | None, auth_required: bool) -> Identity | None:
    """The identity behind an HTTP request (None: authentication required but absent).

    No request at all means a local transport (stdio, in-process): the local user.
    """
    if conn is None:
        return None if auth_required else Identity.local()
    user = conn.scope.get("user")
    if isinstance(user, AuthenticatedUser):
        access = user.access_token
        projects = (access.claims or {}).get("projects")
        return Identity(
            name=access.client_id,
            scopes=frozenset(access.scopes),
            projects=frozenset(projects) if projects else None,
            authenticated=True,
            rate_key=f"token:{access.client_id}",
        )
    if auth_required:
        return None
    client = conn.scope.get("client")
    address = client[0] if client else "unknown"
    return Identity(name="anonymous", scopes=frozenset(SCOPES), rate_key=f"addr:{address}")


def require_scope(
    conn: HTTPConnection, scope: str, auth_required: bool, every_project: bool = False
) -> JSONResponse | None:
    """For plain HTTP routes: None if the caller may proceed, else the 401/403 response to send.

    `every_project`: the route shows every project (as /metrics does), so a project-limited token
    is refused it (403)."""
    identity = identity_of(conn, auth_required)
    if identity is None:
        return JSONResponse(
            {"error": "invalid_token", "error_description": "Authentication required"},
            status_code=401,
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    if not identity.allows(scope):
        return JSONResponse(
            {"error": "insufficient_scope", "error_description": f"Required scope: {scope}"},
            status_code=403,
            headers={"WWW-Authenticate": f'Bearer error="insufficient_scope", scope="{scope}"'},
        )
    if every_project and identity.projects is not None:
        return JSONResponse(
            {
                "error": "insufficient_scope",
                "error_description": f"this route spans every project; token {identity.name!r} is limited to some",
            },
            status_code=403,
            headers={"WWW-Authenticate": 'Bearer error="insufficient_scope"'},
        )
    return None


async def still_valid(tokens: Tokens, access: AccessToken) -> bool:
    """Whether a token accepted earlier still holds: not expired and, for a stored token, not
    revoked by any process (asks the store, not a cache). For long-lived streams."""
    if access.expires_at is not None and access.expires_at <= time.time():
        return False
    if access.token.startswith(TOKEN_PREFIX):
        return await anyio.to_thread.run_sync(tokens.verify, access.token) is not None
    return True


def board_access(auth_required: bool) -> Callable[[HTTPConnection], Identity | None]:
    """The live board's hook (`mcp.board_access`): who is calling, None when authentication is
    required and absent (401). The board checks scopes and project limits itself (server/board_routes.py)."""
    return functools.partial(identity_of, auth_required=auth_required)


# --- the guard: one server middleware for every MCP message ---------------------------------------


def tool_error(tool: str, exc: TaskQueueError) -> CallToolResult:
    """A refusal in the same shape as the tools' own errors, so clients parse one format."""
    text = f"Error executing tool {tool}: {exc.code}: {exc}"
    return CallToolResult(content=[TextContent(type="text", text=text)], is_error=True)


class Guard:
    """Scopes, project limits, identity and rate limits for every inbound MCP message.

    Runs as an SDK server middleware (inside OpenTelemetry), so it covers streamable HTTP, SSE
    and stdio alike; on stdio there is no HTTP request and the caller is the local user.
    """

    def __init__(
        self,
        mcp: MCPServer,
        queue: TaskQueue,
        *,
        auth_required: bool = False,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.mcp = mcp
        self.queue = queue
        self.workflows = Workflows(queue)
        self.tokens = Tokens(queue.store)
        self.auth_required = auth_required
        self.limiter = limiter
        self._read_only: dict[str, bool] | None = None

    async def read_only(self, tool: str) -> bool:
        if self._read_only is None:
            tools = await self.mcp.list_tools()
            self._read_only = {t.name: bool(t.annotations and t.annotations.read_only_hint) for t in tools}
        return self._read_only.get(tool, False)

    async def scope_for(self, method: str, params: Mapping[str, Any] | None) -> str | None:
        """The scope a message needs (None: any authenticated caller)."""
        if method in OPEN_METHODS or method.startswith("notifications/"):
            return None
        if method == "tools/call":
            tool = str((params or {}).get("name", ""))
            if tool in TOOL_SCOPES:
                return TOOL_SCOPES[tool]
            return "read" if await self.read_only(tool) else "admin"
        return "read"  # resources, prompts, completions, subscriptions

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        identity = identity_of(ctx.request if isinstance(ctx.request, HTTPConnection) else None, self.auth_required)
        tool = str((ctx.params or {}).get("name", "")) if ctx.method == "tools/call" else ""
        # Set before the checks, so a refused call's log line names who was refused. Not reset here:
        # the Observer around this middleware reads it for the log, then resets it.
        CURRENT_IDENTITY.set(identity)
        try:
            if identity is None:
                raise Forbidden("authentication required: send Authorization: Bearer <token>")
            scope = await self.scope_for(ctx.method, ctx.params)
            if scope is not None and not identity.allows(scope):
                raise Forbidden(
                    f"{ctx.method}{' ' + tool if tool else ''} needs scope {scope!r}; "
                    f"token {identity.name!r} has {', '.join(sorted(identity.scopes)) or 'none'}"
                )
            if tool:
                ctx = await self._check_tool(ctx, identity, tool)
            elif identity.projects is not None:
                await self._check_message(identity, ctx.method, ctx.params or {})
        except TaskQueueError as exc:
            if tool:
                return tool_error(tool, exc)
            raise MCPError(INVALID_REQUEST, f"{exc.code}: {exc}") from None
        user = ctx.request.scope.get("user") if isinstance(ctx.request, HTTPConnection) else None
        if ctx.method == "subscriptions/listen" and isinstance(user, AuthenticatedUser):
            return await self._listen_while_valid(user.access_token, ctx, call_next)
        result = await call_next(ctx)
        if ctx.method == "completion/complete" and identity.projects is not None:
            result = await self._contain_completion(identity, ctx.params or {}, result)
        return result

    async def _listen_while_valid(
        self, access: AccessToken, ctx: ServerRequestContext[Any, Any], call_next: CallNext
    ) -> HandlerResult:
        """A listen stream lives as long as its caller's token: it ends (with a `forbidden` error)
        within REVERIFY_SECONDS of the token's revocation (by any process) or expiry."""
        result: HandlerResult = None
        ended = False
        async with anyio.create_task_group() as tg:

            async def watch() -> None:
                nonlocal ended
                while await self._still_valid(access):
                    await anyio.sleep(REVERIFY_SECONDS)
                ended = True
                tg.cancel_scope.cancel()

            tg.start_soon(watch)
            result = await call_next(ctx)
            tg.cancel_scope.cancel()
        if ended:
            log.info("listen stream of %s ended: token revoked or expired", access.client_id,
                     extra={"event": "stream_revoked", "identity": access.client_id})  # fmt: skip
            raise MCPError(INVALID_REQUEST, f"forbidden: the token of {access.client_id!r} was revoked or expired")
        return result

    async def _still_valid(self, access: AccessToken) -> bool:
        return await still_valid(self.tokens, access)

    async def _check_tool(
        self, ctx: ServerRequestContext[Any, Any], identity: Identity, tool: str
    ) -> ServerRequestContext[Any, Any]:
        params = dict(ctx.params or {})
        args = dict(params.get("arguments") or {})
        if self.limiter is not None and identity.rate_key != "local":
            bucket = "read" if await self.read_only(tool) else "write"
            decision = self.limiter.take(identity, bucket)
            if not decision.allowed:
                raise RateLimited(
                    f"{identity.name} spent its {bucket} budget ({decision.limit.describe()}); "
                    f"try again in {decision.wait:.1f} s"
                )
        if identity.projects is not None:
            args = await self._check_projects(identity, tool, args)
        if identity.authenticated:
            if tool in WORKER_TOOLS:
                given = args.get("worker")
                same = given in (None, "", identity.name) or not isinstance(given, str)
                args["worker"] = identity.name if same else f"{identity.name}/{given}"
            elif tool == "add_review":
                args["reviewer"] = identity.name
            elif tool == "advance_phase":
                args["by"] = identity.name
        params["arguments"] = args
        return replace(ctx, params=params)

    async def _check_projects(self, identity: Identity, tool: str, args: dict[str, Any]) -> dict[str, Any]:
        assert identity.projects is not None
        allowed = sorted(identity.projects)
        if tool not in PROJECT_AWARE_TOOLS:
            raise Forbidden(f"{tool} spans every project; token {identity.name!r} is limited to {', '.join(allowed)}")

        def check(project: Any) -> None:
            if not isinstance(project, str) or not identity.allows_project(project):
                raise Forbidden(
                    f"token {identity.name!r} may only use project(s) {', '.join(allowed)}, not {project!r}"
                )

        def default_project() -> str:
            if len(allowed) != 1:
                raise Forbidden(f"token {identity.name!r} is limited to projects {', '.join(allowed)}: give project")
            return allowed[0]

        if tool in ("create_project", "update_project"):
            check(args.get("name"))
        elif tool in ("create_task", "list_tasks", "claim_task", "queue_stats", "list_workflows", "show_board"):
            if args.get("project") is None:
                args["project"] = default_project()
            check(args["project"])
        elif tool == "create_tasks":
            items = args.get("tasks")
            if isinstance(items, list):
                args["tasks"] = items = [dict(i) if isinstance(i, dict) else i for i in items]
                for item in items:
                    if isinstance(item, dict):
                        if item.get("project") is None:
                            item["project"] = default_project()
                        check(item["project"])
                await self._check_item_links(identity, [i for i in items if isinstance(i, dict)])
        elif tool == "create_workflow":
            spec = args.get("spec")
            if isinstance(spec, dict):
                args["spec"] = spec = dict(spec)
                if spec.get("project") is None:
                    spec["project"] = default_project()
                check(spec["project"])
            else:
                parameters = dict(args.get("parameters") or {})
                if parameters.get("project") is None:
                    parameters["project"] = default_project()
                check(parameters["project"])
                args["parameters"] = parameters
                spec = self._template_spec(args.get("template"), parameters)
            tasks = spec.get("tasks") if isinstance(spec, dict) else None
            if isinstance(tasks, list):
                await self._check_item_links(identity, [t for t in tasks if isinstance(t, dict)])
        for key in ("task_id", "depends_on", "parent_id"):
            values = args.get(key)
            for task_id in values if isinstance(values, list) else [values]:
                if isinstance(task_id, str) and task_id:
                    check(await self._task_project(task_id))
        if isinstance(args.get("workflow_id"), str):
            check(await self._workflow_project(args["workflow_id"]))
        return args

    async def _check_item_links(self, identity: Identity, items: list[dict[str, Any]]) -> None:
        """Items of a batch or workflow may name existing tasks in `depends_on`/`parent_id` (besides
        each other's `ref`): every existing task they name must be in the token's projects."""
        refs = {item.get("ref") for item in items if isinstance(item.get("ref"), str)}
        named: set[str] = set()
        for item in items:
            deps = item.get("depends_on")
            for value in [*(deps if isinstance(deps, list) else []), item.get("parent_id")]:
                if isinstance(value, str) and value and value not in refs:
                    named.add(value)
        for task_id in sorted(named):
            project = await self._task_project(task_id)
            if project is not None and not identity.allows_project(project):
                raise Forbidden(
                    f"token {identity.name!r} may only use project(s) {', '.join(sorted(identity.projects or ()))}; "
                    f"task {task_id!r} is in another project"
                )

    @staticmethod
    def _template_spec(template: Any, parameters: Mapping[str, Any]) -> dict[str, Any] | None:
        """The workflow a template makes from these parameters (None: the tool will refuse it anyway)."""
        if not isinstance(template, str):
            return None
        try:
            return fill_template(template, parameters)
        except TaskQueueError:
            return None

    async def _check_message(self, identity: Identity, method: str, params: Mapping[str, Any]) -> None:
        """A project-limited token's non-tool messages: resources, subscriptions, prompts."""
        if method in DISCOVERY_METHODS or method.startswith("notifications/") or method in OPEN_METHODS:
            return
        if method.startswith("resources/"):
            await self._check_resource(identity, params.get("uri"))
        elif method == "subscriptions/listen":
            wanted = params.get("notifications") or {}
            uris = wanted.get("resourceSubscriptions", wanted.get("resource_subscriptions")) or []
            for uri in uris if isinstance(uris, list) else [uris]:
                await self._check_resource(identity, uri)
        elif method == "prompts/get":
            arguments = params.get("arguments") or {}
            if isinstance(arguments.get("task_id"), str):
                await self._check_task(identity, arguments["task_id"])
            if arguments.get("project") not in (None, "") and not identity.allows_project(str(arguments["project"])):
                raise Forbidden(f"token {identity.name!r} may not use project {arguments['project']!r}")
        elif method != "completion/complete":  # completions are filtered on the way out
            raise Forbidden(f"{method} spans every project; token {identity.name!r} is limited")

    async def _check_task(self, identity: Identity, task_id: str) -> None:
        project = await self._task_project(task_id)
        if project is None or not identity.allows_project(project):
            raise Forbidden(f"token {identity.name!r} may not use task {task_id!r}")

    async def _contain_completion(self, identity: Identity, params: Mapping[str, Any], result: Any) -> Any:
        """Completions name projects, tasks and workflows: keep only those in the token's projects."""
        if isinstance(result, CompleteResult):
            values = result.completion.values
        elif isinstance(result, dict) and isinstance(result.get("completion"), dict):
            values = list(result["completion"].get("values") or [])
        else:
            return result
        argument = str((params.get("argument") or {}).get("name", ""))
        ref = params.get("ref") or {}
        if argument == "name" and str(ref.get("uri", "")).startswith("taskqueue://projects/"):
            argument = "project"
        kept: list[str] = []
        for value in values:
            if argument == "project":
                project: str | None = value
            elif argument in ("task_id", "parent_id", "depends_on"):
                project = await self._task_project(value)
            elif argument == "workflow_id":
                project = await self._workflow_project(value)
            elif argument == "name":  # a schema: '<project>:<kind>' belongs to that project
                project = value.split(":", 1)[0] if ":" in value else next(iter(identity.projects or ()), None)
            else:
                project = None
            if project is not None and identity.allows_project(project):
                kept.append(value)
        if isinstance(result, CompleteResult):
            return result.model_copy(
                update={"completion": Completion(values=kept, has_more=result.completion.has_more)}
            )
        return {**result, "completion": {**result["completion"], "values": kept, "total": None}}

    async def _task_project(self, task_id: str) -> str | None:
        try:
            task = await anyio.to_thread.run_sync(self.queue.get, task_id)
        except NotFound:
            return None
        return task.project

    async def _workflow_project(self, workflow_id: str) -> str | None:
        try:
            workflow = await anyio.to_thread.run_sync(lambda: self.workflows.get(workflow_id, False))
        except NotFound:
            return None
        return workflow.project

    async def _check_resource(self, identity: Identity, uri: Any) -> None:
        """Project-limited tokens read only their projects' tasks, workflows and projects (and schemas).

        The URI must have exactly one of the shapes below (anything else, `..` included, is refused),
        so what is checked is what the resource template will read or a subscription will match."""
        text = str(uri or "")
        match = PROJECT_RESOURCE.fullmatch(text)
        if match is None:
            raise Forbidden(f"{text or 'this resource'} spans every project; token {identity.name!r} is limited")
        kind, key = match["kind"] or match["kind2"], match["key"] or match["key2"]
        project: str | None
        if kind == "schemas":
            if ":" not in key:
                return  # shipped schemas are the same for everyone; '<project>:<kind>' is that project's
            project = key.split(":", 1)[0]
        elif kind == "tasks":
            project = await self._task_project(key)
        elif kind == "workflows":
            project = await self._workflow_project(key)
        else:
            project = key
        if project is None or not identity.allows_project(project):
            raise Forbidden(f"token {identity.name!r} may not read {text}")
