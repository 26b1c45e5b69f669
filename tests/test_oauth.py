"""OAuth 2.1 resource-server mode against a real server: protected resource metadata, 401 with
WWW-Authenticate, and JWTs signed by keys this test mints (JWKS from a file and from a URL)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm

from tests.mcp_calls import call, call_error
from tests.service_servers import mcp_client, serve

ISSUER = "https://login.example.test"
AUDIENCE = "taskqueue-api"


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def jwks(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
    public = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {"keys": [{**public, "kid": kid, "use": "sig", "alg": "RS256"}]}


def mint(key: rsa.RSAPrivateKey, kid: str = "k1", **claims: Any) -> str:
    now = int(time.time())
    body = {"iss": ISSUER, "aud": AUDIENCE, "sub": "ci-bot", "iat": now, "exp": now + 300, "scope": "read write"}
    body.update(claims)
    return jwt.encode({k: v for k, v in body.items() if v is not None}, key, algorithm="RS256", headers={"kid": kid})


def oauth_config(tmp_path: Path, jwks_line: str, resource: str) -> Path:
    path = tmp_path / "mcp-taskqueue.toml"
    path.write_text(
        f"""
[auth]
mode = "oauth"
[auth.oauth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
resource = "{resource}"
{jwks_line}
""",
        encoding="utf-8",
    )
    return path


@contextmanager
def jwks_server(document: dict[str, Any]) -> Iterator[str]:
    """A tiny real HTTP server on 127.0.0.1 publishing the JWKS."""
    body = json.dumps(document).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/jwks.json"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.mark.anyio
async def test_oauth_with_jwks_file(tmp_path: Path) -> None:
    key, stranger = new_key(), new_key()
    keys = tmp_path / "jwks.json"
    keys.write_text(json.dumps(jwks(key, "k1")))
    db = tmp_path / "tasks.db"
    config = oauth_config(tmp_path, f'jwks_file = "{keys}"', "http://127.0.0.1/mcp")
    with serve(db, env={"TASKQUEUE_CONFIG": str(config)}) as server:
        async with httpx2.AsyncClient(base_url=server.base) as http:
            for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
                meta = (await http.get(path)).json()
                assert meta["resource"] == "http://127.0.0.1/mcp"
                assert meta["authorization_servers"] == [ISSUER]
                assert set(meta["scopes_supported"]) == {"read", "write", "claim", "review", "admin"}
            refused = await http.post("/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
            assert refused.status_code == 401
            challenge = refused.headers["www-authenticate"]
            assert challenge.startswith("Bearer") and "oauth-protected-resource" in challenge

            bad_tokens = {
                "expired": mint(key, exp=int(time.time()) - 60),
                "wrong audience": mint(key, aud="someone-else"),
                "wrong issuer": mint(key, iss="https://evil.test"),
                "no exp": mint(key, exp=None),
                "unknown signer": mint(stranger),
                "garbage": "not.a.jwt",
            }
            for why, token in bad_tokens.items():
                response = await http.post(
                    "/mcp",
                    json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                assert response.status_code == 401, why

        async with mcp_client(server.base, mint(key)) as client:
            created = await call(client, "create_task", title="from CI")
            assert "forbidden" in await call_error(client, "claim_task", worker="x")  # no claim scope
            history = await client.read_resource(f"taskqueue://tasks/{created['id']}/history")
        events = json.loads(history.contents[0].text)["events"]  # type: ignore[union-attr]
        assert events[-1]["actor"] == "ci-bot" or events[0]["actor"] == "ci-bot"

        async with mcp_client(server.base, mint(key, sub="reviewer-1", scope="read", taskqueue_projects=["web"])) as c:
            assert "forbidden" in await call_error(c, "create_task", title="x")
            assert "forbidden" in await call_error(c, "get_task", task_id=created["id"])  # project default


@pytest.mark.anyio
async def test_oauth_with_jwks_url(tmp_path: Path) -> None:
    key = new_key()
    db = tmp_path / "tasks.db"
    with jwks_server(jwks(key, "k9")) as url:
        config = oauth_config(tmp_path, f'jwks_url = "{url}"', "http://127.0.0.1/mcp")
        with serve(db, "--config", str(config)) as server:
            async with mcp_client(server.base, mint(key, kid="k9", scope="read claim", sub="worker-7")) as client:
                assert (await call(client, "claim_task", worker="ignored"))["task"] is None
                assert "forbidden" in await call_error(client, "create_task", title="x")
