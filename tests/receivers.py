"""Real receivers for notification tests: an HTTP server on 127.0.0.1 that checks Standard Webhooks
signatures and can answer 500, hang or redirect; and an SMTP server (aiosmtpd) with STARTTLS and AUTH."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from mcp_taskqueue.notify.dispatcher import DispatchSettings
from mcp_taskqueue.webhooks import WebhookVerificationError, verify_webhook

# A dispatcher that retries within a test's patience.
FAST = DispatchSettings(
    timeout=2.0,
    max_attempts=3,
    retry_base=0.2,
    retry_cap=1.0,
    circuit_failures=50,
    circuit_seconds=1.0,
    lease_seconds=5.0,
    poll=0.05,
    depth_interval=0.2,
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    verified: Any = None  # the decoded event when the signature checked out
    verify_error: str | None = None

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Records every request. `behaviour(request) -> (status, delay_seconds, extra_headers)` decides the answer."""

    secret: str | list[str] | None = None
    behaviour: Callable[[Received], tuple[int, float, dict[str, str]]] = lambda r: (200, 0.0, {})
    received: list[Received] = field(default_factory=list)
    url: str = ""
    port: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Received]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} requests within {timeout}s, got {len(self.received)}")

    def ok(self) -> list[Received]:
        """Requests this receiver accepted (answered 2xx)."""
        with self._lock:
            return [r for r in self.received if getattr(r, "answered", 200) < 300]


def make_handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length)
            got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            if receiver.secret is not None:
                try:
                    got.verified = verify_webhook(receiver.secret, body, got.headers)
                except WebhookVerificationError as exc:
                    got.verify_error = str(exc)
            status, delay, extra = receiver.behaviour(got)
            got.answered = status  # type: ignore[attr-defined]
            with receiver._lock:
                receiver.received.append(got)
            if delay:
                time.sleep(delay)
            try:
                self.send_response(status)
                for key, value in extra.items():
                    self.send_header(key, value)
                self.send_header("content-type", "application/json")
                reply = json.dumps({"status": status}).encode()
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)
            except OSError:
                pass

    return Handler


@contextmanager
def http_receiver(receiver: Receiver | None = None, port: int = 0) -> Iterator[Receiver]:
    """Serve `receiver` on 127.0.0.1 (a free port unless given) until the block ends."""
    receiver = receiver or Receiver()
    server = ThreadingHTTPServer(("127.0.0.1", port), make_handler(receiver))
    server.daemon_threads = True
    receiver.port = server.server_address[1]
    receiver.url = f"http://127.0.0.1:{receiver.port}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and localhost, and its key (the test trusts it via SSL_CERT_FILE)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp / "smtp.crt", tmp / "smtp.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


@dataclass
class Mailbox:
    messages: list[Any] = field(default_factory=list)
    logins: list[tuple[str, str]] = field(default_factory=list)
    port: int = 0
    cert: Path | None = None

    def wait_for(self, count: int, timeout: float = 30.0) -> list[Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if len(self.messages) >= count:
                return list(self.messages)
            time.sleep(0.05)
        raise AssertionError(f"expected {count} emails within {timeout}s, got {len(self.messages)}")


@contextmanager
def smtp_server(tmp: Path, username: str, password: str) -> Iterator[Mailbox]:
    """aiosmtpd on 127.0.0.1 requiring STARTTLS, then AUTH with these credentials."""
    from email import message_from_bytes, policy

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from tests.servers import free_port

    cert, key = self_signed(tmp)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    box = Mailbox(port=free_port(), cert=cert)

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
            box.messages.append(message_from_bytes(envelope.content, policy=policy.default))
            return "250 OK"

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        if isinstance(auth_data, LoginPassword):
            box.logins.append((auth_data.login.decode(), auth_data.password.decode()))
            if auth_data.login.decode() == username and auth_data.password.decode() == password:
                return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    controller = Controller(
        Handler(),
        hostname="127.0.0.1",
        port=box.port,
        tls_context=context,
        require_starttls=True,
        authenticator=authenticator,
        auth_require_tls=True,
    )
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


@dataclass
class Trickler:
    """A raw TCP receiver on 127.0.0.1 that answers with `head`, then `drip` every `interval` seconds,
    each piece well within any per-read timeout, for `pieces` pieces: a receiver that never finishes
    its answer. `written` counts the bytes it got out before the client hung up."""

    head: bytes
    drip: bytes
    interval: float = 0.2
    pieces: int = 10_000
    reads_first: bool = True  # HTTP: read the request first; SMTP: the server speaks first
    port: int = 0
    written: int = 0
    hung_up: threading.Event = field(default_factory=threading.Event)


@contextmanager
def trickling_receiver(trickler: Trickler) -> Iterator[Trickler]:
    """Serve `trickler` on a free port until the block ends (one connection at a time)."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    trickler.port = listener.getsockname()[1]
    done = threading.Event()

    def serve() -> None:
        while not done.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(5)
                try:
                    if trickler.reads_first:
                        conn.recv(65536)
                except OSError:
                    pass
                try:
                    conn.sendall(trickler.head)
                    trickler.written += len(trickler.head)
                    for _ in range(trickler.pieces):
                        if done.is_set():
                            break
                        conn.sendall(trickler.drip)
                        trickler.written += len(trickler.drip)
                        time.sleep(trickler.interval)
                except OSError:
                    trickler.hung_up.set()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield trickler
    finally:
        done.set()
        thread.join(10)
        listener.close()
