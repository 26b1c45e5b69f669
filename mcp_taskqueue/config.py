"""Settings: defaults < `mcp-taskqueue.toml` (+ a profile) < `TASKQUEUE_*` environment < command line.

The file is `--config PATH`, else `$TASKQUEUE_CONFIG`, else `./mcp-taskqueue.toml`, else
`$XDG_CONFIG_HOME/mcp-taskqueue/mcp-taskqueue.toml`; none at all is fine (every default is
`make run`'s). `[profiles.NAME]` tables are merged over the top level with `--profile NAME`
(or `$TASKQUEUE_PROFILE`). Environment: `TASKQUEUE_DB`, `TASKQUEUE_SERVER__PORT`,
`TASKQUEUE_AUTH__OAUTH__AUDIENCE`, ... (`__` between levels); `TASKQUEUE_<NAME>_FILE` reads
that value from a file (Kubernetes and Docker secrets). Validation errors name the key and
the rule. Secrets (the database URL's password) never print: `redacted()` masks them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

FILE_NAME = "mcp-taskqueue.toml"
ENV_PREFIX = "TASKQUEUE_"
Strict = ConfigDict(extra="forbid")


class ConfigError(Exception):
    """The settings are invalid; the message names each key and the rule it broke."""


class ServerSettings(BaseModel):
    model_config = Strict
    transport: Literal["stdio", "http", "sse"] = "stdio"
    host: str = "127.0.0.1"
    port: int = Field(8765, ge=0, le=65535)
    toolsets: list[str] | None = Field(None, description="Feature flag: the tool groups this profile exposes.")
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description="Host names (host or host:port) HTTP requests may name besides loopback and the bound address.",
    )
    allowed_origins: list[str] = Field(
        default_factory=list, description="Browser Origins (e.g. https://app.example) accepted besides loopback."
    )


class OAuthSettingsModel(BaseModel):
    model_config = Strict
    issuer: str
    audience: str
    resource: str = Field(description="This server's public /mcp URL (RFC 9728 resource).")
    jwks_url: str | None = None
    jwks_file: str | None = None
    scopes_claim: str = "scope"
    name_claim: str = "sub"
    projects_claim: str = "taskqueue_projects"


class AuthSettingsModel(BaseModel):
    model_config = Strict
    mode: Literal["auto", "none", "tokens", "oauth"] = "auto"
    oauth: OAuthSettingsModel | None = None


LimitValue = str | dict[str, float]


class RateLimitSettings(BaseModel):
    model_config = Strict
    http: LimitValue | None = None
    read: LimitValue | None = None
    write: LimitValue | None = None
    scopes: dict[str, dict[str, LimitValue]] = Field(default_factory=dict)
    tokens: dict[str, dict[str, LimitValue]] = Field(default_factory=dict)


class LoggingSettings(BaseModel):
    model_config = Strict
    # INFO logs one record per MCP request (event tool_call/request); WARNING keeps stderr quiet.
    # Unset: INFO for the HTTP transports (a team server's request log), WARNING for stdio (an IDE's
    # child process, whose stderr its host shows as a debugging log).
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] | None = None
    format: Literal["json", "text"] | None = None
    file: str | None = None
    max_bytes: int = Field(10_000_000, ge=1024)
    backups: int = Field(5, ge=0)

    @field_validator("level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def level_for(self, transport: str) -> str:
        """The level to log at: the configured one, else INFO over HTTP/SSE and WARNING on stdio."""
        return self.level or ("WARNING" if transport == "stdio" else "INFO")


class MetricsSettings(BaseModel):
    model_config = Strict
    enabled: bool = True
    public: bool = Field(False, description="Serve /metrics without a token even when auth is on.")


class NotificationSettings(BaseModel):
    model_config = Strict
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Private or loopback webhook hosts/CIDRs allowed (TASKQUEUE_WEBHOOK_ALLOW_HOSTS).",
    )


class TracingSettings(BaseModel):
    model_config = Strict
    enabled: bool = False
    exporter: Literal["otlp", "console"] = "otlp"


class Settings(BaseSettings):
    """Everything a server reads at start-up."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", case_sensitive=False
    )

    db: str | None = Field(None, description="SQLite path or postgresql:// URL (secret: its password is masked).")
    server: ServerSettings = Field(default_factory=ServerSettings)
    auth: AuthSettingsModel = Field(default_factory=AuthSettingsModel)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    logging: LoggingSettings = Field(default_factory=LoggingSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)
    tracing: TracingSettings = Field(default_factory=TracingSettings)
    notifications: NotificationSettings = Field(default_factory=NotificationSettings)

    # the TOML file (profile merged) for this load; load() makes a subclass that sets it
    file_data: ClassVar[dict[str, Any]] = {}

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # command line (init) over environment over the file
        return (init_settings, env_settings, DictSource(settings_cls, cls.file_data))


def find_config(path: str | os.PathLike[str] | None) -> Path | None:
    """The settings file to read: the one named, else $TASKQUEUE_CONFIG, else the usual places."""
    named = path or os.environ.get(f"{ENV_PREFIX}CONFIG")
    if named:
        found = Path(named).expanduser()
        if not found.is_file():
            raise ConfigError(f"config: no file at {found}")
        return found
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    for candidate in (Path.cwd() / FILE_NAME, config_home / "mcp-taskqueue" / FILE_NAME):
        if candidate.is_file():
            return candidate
    return None


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _file_secrets() -> None:
    """TASKQUEUE_X_FILE=/run/secrets/x -> TASKQUEUE_X=<its contents> (unless TASKQUEUE_X is set)."""
    for key, value in list(os.environ.items()):
        upper = key.upper()
        if upper.startswith(ENV_PREFIX) and upper.endswith("_FILE") and upper != f"{ENV_PREFIX}CONFIG_FILE":
            target = key[: -len("_FILE")]
            if not os.environ.get(target):
                try:
                    os.environ[target] = Path(value).read_text(encoding="utf-8").strip()
                except OSError as exc:
                    raise ConfigError(f"{key}: cannot read {value}: {exc.strerror}") from None


def _describe(exc: ValidationError, source: str) -> str:
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        rule = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
        problems.append(f"{key}: {rule}")
    return f"invalid settings ({source}): " + "; ".join(problems)


def load(
    path: str | os.PathLike[str] | None = None, profile: str | None = None, **overrides: Any
) -> tuple[Settings, Path | None]:
    """Read and validate the settings; `overrides` are command-line values (None means not given).

    Returns the settings and the file they came from (None: defaults and environment only).
    Raises ConfigError naming each bad key and its rule, or an unknown profile and the known ones.
    """
    found = find_config(path)
    data: dict[str, Any] = {}
    if found is not None:
        try:
            data = tomllib.loads(found.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{found}: not valid TOML ({exc})") from None
    profiles = data.pop("profiles", {})
    profile = profile or os.environ.get(f"{ENV_PREFIX}PROFILE")
    if profile:
        if profile not in profiles:
            known = ", ".join(sorted(profiles)) or "none defined"
            raise ConfigError(f"profile {profile!r} is not in {found or 'any config file'} (profiles: {known})")
        data = _merge(data, profiles[profile])
    _file_secrets()
    source = str(found) if found else "environment"
    from_file = type("SettingsFromFile", (Settings,), {"file_data": data})
    given = _nest({k: v for k, v in overrides.items() if v is not None})
    try:
        settings: Settings = from_file(**given)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, source)) from None
    return settings, found


class DictSource(PydanticBaseSettingsSource):
    """A plain dict (the TOML file, profile merged) as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self.data = data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self.data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self.data)


def _nest(flat: dict[str, Any]) -> dict[str, Any]:
    """{'server.port': 1} -> {'server': {'port': 1}}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def mask_url(value: str) -> str:
    """postgresql://user:secret@host/db -> postgresql://user:***@host/db."""
    scheme, sep, rest = value.partition("://")
    if not sep or "@" not in rest:
        return value
    userinfo, _, host = rest.rpartition("@")
    user, colon, _password = userinfo.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{host}"


def redacted(settings: Settings) -> dict[str, Any]:
    """The settings as plain data with every secret masked: what `config show` prints."""
    data = settings.model_dump(mode="json")
    if data.get("db"):
        data["db"] = mask_url(data["db"])
    return data
