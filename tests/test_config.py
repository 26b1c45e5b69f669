"""Settings through the real CLI: the TOML file (--config, TASKQUEUE_CONFIG), profiles, TASKQUEUE_*
overrides, secrets from *_FILE that never print, `config show|check`, and a server started from them."""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from tests.mcp_calls import call
from tests.service_servers import cli, mcp_client, serve

SETTINGS = """
db = "postgresql://queue:file-password@db.internal/queue"
[server]
port = 9001
toolsets = ["tasks", "queue", "projects"]
[logging]
format = "json"
[profiles.workers]
server.toolsets = ["tasks", "queue"]
[profiles.prod.server]
host = "0.0.0.0"
"""


def write(tmp_path: Path, text: str = SETTINGS) -> Path:
    path = tmp_path / "mcp-taskqueue.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_config_show_merges_file_profile_env_and_masks_secrets(tmp_path: Path) -> None:
    path = write(tmp_path)
    done = cli(None, "config", "show", "--config", str(path), "--profile", "workers")
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["file"] == str(path)
    assert shown["server"]["toolsets"] == ["tasks", "queue"] and shown["server"]["port"] == 9001
    assert "file-password" not in done.stdout and shown["db"] == "postgresql://queue:***@db.internal/queue"
    # --db given on the command line wins over the file; the environment over the file
    secret = tmp_path / "db_url"
    secret.write_text("postgresql://queue:from-a-secret-file@db/queue\n")
    env = {"TASKQUEUE_CONFIG": str(path), "TASKQUEUE_SERVER__PORT": "9100", "TASKQUEUE_DB_FILE": str(secret)}
    shown_env = cli(tmp_path / "y.db", "config", "show", env={**env})
    data = json.loads(shown_env.stdout)
    assert data["server"]["port"] == 9100
    assert data["db"].endswith("y.db")  # the --db the helper passes beats every other source
    no_db = cli(None, "config", "show", env=env)
    assert no_db.returncode == 0, no_db.stderr
    assert json.loads(no_db.stdout)["db"] == "postgresql://queue:***@db/queue"  # from the file, masked
    assert "from-a-secret-file" not in no_db.stdout + no_db.stderr


def test_secret_from_file_reaches_the_settings_but_not_the_output(tmp_path: Path) -> None:
    from mcp_taskqueue.config import load, redacted

    secret = tmp_path / "db_url"
    secret.write_text("postgresql://queue:s3cr3t@db/queue\n")
    monkey = pytest.MonkeyPatch()
    monkey.setenv("TASKQUEUE_DB_FILE", str(secret))
    monkey.delenv("TASKQUEUE_DB", raising=False)
    monkey.delenv("TASKQUEUE_CONFIG", raising=False)
    monkey.chdir(tmp_path)
    try:
        settings, found = load()
    finally:
        monkey.undo()
    assert found is None and settings.db == "postgresql://queue:s3cr3t@db/queue"
    assert "s3cr3t" not in json.dumps(redacted(settings))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("[server]\nport = 70000\n", "server.port: Input should be less than or equal to 65535"),
        ("[server]\nprot = 1\n", "server.prot: unknown key"),
        ("[logging]\nformat = 'xml'\n", "logging.format: Input should be 'json' or 'text'"),
        ("[rate_limits]\nwrite = 'fast'\n", "rate_limits.write"),
        ("[rate_limits.scopes.superuser]\nwrite = '1/s'\n", "rate_limits.scopes.superuser: unknown scope"),
        ("[server]\ntoolsets = ['tasks', 'bogus']\n", "bogus"),
        ("[server\n", "not valid TOML"),
    ],
)
def test_config_check_names_the_key_and_the_rule(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    done = cli(tmp_path / "x.db", "--config", str(path), "config", "check")
    assert done.returncode == 2, done.stdout
    assert expected in done.stderr
    served = cli(tmp_path / "x.db", "--config", str(path), "serve", "--transport", "http")
    assert served.returncode == 2 and expected in served.stderr  # serve refuses the same way


def test_unknown_profile_names_the_known_ones(tmp_path: Path) -> None:
    done = cli(tmp_path / "x.db", "config", "check", "--config", str(write(tmp_path)), "--profile", "staging")
    assert done.returncode == 2 and "staging" in done.stderr and "prod, workers" in done.stderr


def test_no_config_file_is_fine(tmp_path: Path) -> None:
    done = cli(tmp_path / "x.db", "config", "check", env={"TASKQUEUE_CONFIG": ""})
    assert done.returncode == 0 and "no config file" in done.stdout


@pytest.mark.anyio
async def test_a_profile_is_a_feature_flag_for_toolsets(tmp_path: Path) -> None:
    path = write(tmp_path, "[profiles.workers]\nserver.toolsets = ['tasks', 'queue']\n")
    db = tmp_path / "tasks.db"
    with serve(db, "--config", str(path), "--profile", "workers") as server:
        async with mcp_client(server.base) as client:
            names = {t.name for t in (await client.list_tools()).tools}
            assert "claim_task" in names and "create_workflow" not in names and "create_project" not in names
            await call(client, "create_task", title="x")
        async with httpx2.AsyncClient() as http:
            assert (await http.get(server.base + "/metrics")).status_code == 200  # loopback, no auth
