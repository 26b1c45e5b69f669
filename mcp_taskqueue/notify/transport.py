"""Sending a rendered delivery: HTTP that cannot be pointed at private addresses, and SMTP.

Every TCP connection, HTTP and SMTP alike, goes through `AddressPolicy`: the host is resolved
once, each address is checked, and the socket connects to the checked address, so a DNS answer
that changes between check and connect (rebinding) gains nothing. Loopback, private, link-local,
shared, reserved and cloud metadata addresses are refused unless `TASKQUEUE_WEBHOOK_ALLOW_HOSTS`
or the config key `notifications.allow_hosts` lists the host or a network containing the
address. Redirects (307/308 only) are followed through the same guard, at most three times, and
credentials (`HttpRequest.private_headers`) never follow one to another origin. The timeout
bounds a whole attempt (`Deadline`), not each read, so a receiver that trickles its answer a
byte at a time is cut off too; at most MAX_RESPONSE_BYTES of an answer are read. These functions
block: the dispatcher calls them in its threads.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import smtplib
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore2

from mcp_taskqueue.errors import ValidationFailed

ALLOW_ENV = "TASKQUEUE_WEBHOOK_ALLOW_HOSTS"
# Entries from the config file's `notifications.allow_hosts`: `allow_configured_hosts` sets them.
configured_allow_hosts: list[str] = []
# Instance metadata services: refused even inside an allowed network unless listed exactly.
METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200", "169.254.170.2")}
# IPv6 prefixes whose last 32 bits (or, for 6to4, bits 16-48) are an IPv4 address that a NAT64
# gateway, a 6to4 relay or an old stack may reach: the IPv4 address is what gets checked.
EMBEDDING_V4 = tuple(ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96"))
MAX_REDIRECTS = 3
CREDENTIAL_HEADERS = frozenset({"authorization", "proxy-authorization", "cookie"})
MAX_RESPONSE_BYTES = 2000


def allow_configured_hosts(entries: Iterable[str]) -> None:
    """Take the settings' `notifications.allow_hosts` (hosts or CIDRs), in addition to the environment's."""
    global configured_allow_hosts
    configured_allow_hosts = [str(e) for e in entries]


class BlockedAddress(Exception):
    """The target resolves to an address that notifications may not reach."""


IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class AddressPolicy:
    """Which non-public destinations are allowed: host names (exact) and networks (CIDR or one address)."""

    hosts: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str]) -> AddressPolicy:
        hosts: set[str] = set()
        networks: list[IPNetwork] = []
        for entry in entries:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry)
        return cls(frozenset(hosts), tuple(networks))

    @classmethod
    def from_env(cls, extra: Iterable[str] = ()) -> AddressPolicy:
        """`TASKQUEUE_WEBHOOK_ALLOW_HOSTS` (comma or space separated), `configured_allow_hosts` and `extra`."""
        raw = os.environ.get(ALLOW_ENV, "").replace(",", " ").split()
        return cls.parse([*raw, *configured_allow_hosts, *extra])

    def check(self, host: str, address: IPAddress) -> None:
        """Raise BlockedAddress unless `address` (resolved from `host`) may be contacted."""
        address = embedded_ipv4(address)
        exact = any(n.num_addresses == 1 and address in n for n in self.networks)
        if address in METADATA and not exact:
            raise BlockedAddress(f"{host} resolves to {address}, a cloud metadata address")
        if address.is_global and not address.is_multicast:
            return
        if host.lower().strip("[]") in self.hosts or any(address in n for n in self.networks):
            return
        raise BlockedAddress(
            f"{host} resolves to {address}, a loopback/private/link-local address; list it in {ALLOW_ENV} "
            "(host or CIDR) to allow it"
        )

    def connect(self, host: str, port: int, timeout: float | None) -> socket.socket:
        """A TCP socket to `host`, connected to an address `resolve` checked (never to a second lookup's)."""
        error: OSError | None = None
        for family, kind, proto, _name, address in self.resolve(host, port):
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(timeout)
                sock.connect(address)
                return sock
            except OSError as exc:
                sock.close()
                error = exc
        raise OSError(f"cannot connect to {host}:{port}: {error}")

    def resolve(self, host: str, port: int) -> list[tuple[Any, ...]]:
        """getaddrinfo results for host, every address checked (all must pass)."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise OSError(f"cannot resolve {host}: {exc.strerror}") from None
        for info in infos:
            self.check(host, ipaddress.ip_address(str(info[4][0]).split("%")[0]))
        return infos

    def check_target(self, url: str) -> None:
        """Refuse, when saving a notifier, a URL whose host is (or resolves to) a blocked address.

        An unresolvable host is accepted here (DNS may be down); the send-time check still applies.
        """
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValidationFailed(f"target {url!r} must be an http(s) URL with a host")
        try:
            self.resolve(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        except BlockedAddress as exc:
            raise ValidationFailed(f"target refused: {exc}") from None
        except OSError:
            pass


def embedded_ipv4(address: IPAddress) -> IPAddress:
    """The IPv4 address inside an IPv4-mapped, NAT64, 6to4 or IPv4-compatible IPv6 address, else `address`."""
    if isinstance(address, ipaddress.IPv4Address):
        return address
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if int(address) > 1 and any(address in n for n in EMBEDDING_V4):  # not :: or ::1
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address


class Deadline:
    """One attempt's time limit over every connection it opens: when it passes, their sockets are shut
    down, so a receiver that trickles bytes (each read within the per-read timeout) cannot hold a send
    longer. `with Deadline(seconds) as deadline:`, then `deadline.watch(sock)` for each socket."""

    def __init__(self, seconds: float) -> None:
        self.expired = False
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(seconds, self._expire)
        self._timer.daemon = True

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._timer.cancel()
        for sock in self._sockets:
            sock.close()

    def watch(self, sock: socket.socket) -> None:
        # a duplicate of the descriptor: it outlives TLS wrapping (which detaches the original), and
        # shutting it down ends the connection itself
        self._sockets.append(socket.fromfd(sock.fileno(), sock.family, sock.type))
        if self.expired:
            self._expire()

    def _expire(self) -> None:
        self.expired = True
        for sock in list(self._sockets):
            with contextlib.suppress(OSError):  # already closed
                sock.shutdown(socket.SHUT_RDWR)


class GuardedBackend(httpcore2.SyncBackend):
    """httpcore's network backend, connecting only to addresses the policy allows, within the deadline."""

    def __init__(self, policy: AddressPolicy, deadline: Deadline) -> None:
        self.policy = policy
        self.deadline = deadline

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore2.NetworkStream:
        try:
            infos = self.policy.resolve(host, port)
        except BlockedAddress as exc:
            raise httpcore2.ConnectError(str(exc)) from exc
        error: Exception | None = None
        for *_info, address in infos:
            try:  # connect to the checked address itself; TLS still verifies the host name
                stream = super().connect_tcp(address[0], port, timeout, local_address, socket_options)
                self.deadline.watch(stream.get_extra_info("socket"))
                return stream
            except httpcore2.ConnectError as exc:
                error = exc
        raise httpcore2.ConnectError(f"cannot connect to {host}:{port}: {error}")


@dataclass
class HttpRequest:
    """What a channel wants sent."""

    url: str
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    method: str = "POST"
    # credentials: sent to the target's origin only, dropped when a redirect leads elsewhere
    private_headers: frozenset[str] = CREDENTIAL_HEADERS


@dataclass
class Outcome:
    """How one attempt went: ok (2xx), the status code, latency, and an error or the response's start."""

    ok: bool
    status_code: int | None = None
    latency_ms: float = 0.0
    error: str | None = None
    response: str | None = None


def send_http(request: HttpRequest, policy: AddressPolicy, timeout: float) -> Outcome:
    """POST (or `method`) once, following 307/308 through the guard, all within `timeout` seconds;
    never raises for network trouble."""
    started = time.monotonic()
    url = request.url
    headers = {"user-agent": "mcp-taskqueue-notify", **request.headers}
    deadline = Deadline(timeout)
    try:
        with (
            deadline,
            httpcore2.ConnectionPool(network_backend=GuardedBackend(policy, deadline), max_connections=1) as pool,
        ):
            for _hop in range(MAX_REDIRECTS + 1):
                with pool.stream(
                    request.method,
                    url,
                    headers=list(headers.items()),
                    content=request.body,
                    extensions={"timeout": {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}},
                ) as response:
                    location = dict((k.lower(), v) for k, v in response.headers).get(b"location")
                    if response.status in (307, 308) and location:
                        url, previous = urljoin(url, location.decode("latin-1")), url
                        if _origin(url) != _origin(previous):
                            headers = {k: v for k, v in headers.items() if k.lower() not in request.private_headers}
                        continue
                    text = _start_of(response).decode("utf-8", errors="replace")
                ok = 200 <= response.status < 300
                error = None if ok else f"HTTP {response.status}"
                if 300 <= response.status < 400:
                    error = f"HTTP {response.status}: only 307/308 redirects are followed"
                return Outcome(ok, response.status, _ms(started), error, text)
            return Outcome(False, None, _ms(started), f"more than {MAX_REDIRECTS} redirects")
    except (httpcore2.TimeoutException, httpcore2.NetworkError, httpcore2.ProtocolError, OSError) as exc:
        if deadline.expired or isinstance(exc, httpcore2.TimeoutException):
            return Outcome(False, None, _ms(started), f"timed out after {timeout:g}s")
        return Outcome(False, None, _ms(started), str(exc) or type(exc).__name__)
    except httpcore2.UnsupportedProtocol as exc:
        return Outcome(False, None, _ms(started), str(exc) or type(exc).__name__)


def _start_of(response: httpcore2.Response) -> bytes:
    """The first MAX_RESPONSE_BYTES of a streamed answer; the rest is never read."""
    body = b""
    for chunk in response.iter_stream():
        body += chunk
        if len(body) >= MAX_RESPONSE_BYTES:
            break
    return body[:MAX_RESPONSE_BYTES]


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or ""), parts.port


def _ms(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class PinnedSMTP(smtplib.SMTP):
    """smtplib's client, connecting through `AddressPolicy.connect`: the checked address, while the
    host name stays what STARTTLS verifies the certificate against."""

    def __init__(self, policy: AddressPolicy, deadline: Deadline, host: str, port: int, timeout: float) -> None:
        self.policy = policy
        self.deadline = deadline
        super().__init__(host, port, timeout=timeout)

    def _get_socket(self, host: str, port: int, timeout: float) -> socket.socket:
        sock = self.policy.connect(host, port, timeout)
        self.deadline.watch(sock)
        return sock


@dataclass
class SmtpSettings:
    """Where and how to send email. The password is the notifier's secret, never shown."""

    host: str
    sender: str
    port: int = 587
    username: str | None = None
    starttls: bool = True


def send_email(
    settings: SmtpSettings,
    password: str | None,
    recipients: Sequence[str],
    subject: str,
    text: str,
    html: str | None,
    policy: AddressPolicy,
    timeout: float,
) -> Outcome:
    """One message with text and HTML parts over SMTP (STARTTLS, then AUTH when a username is set), all
    within `timeout` seconds."""
    started = time.monotonic()
    message = EmailMessage()
    message["From"] = settings.sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content(text)
    if html:
        message.add_alternative(html, subtype="html")
    deadline = Deadline(timeout)
    try:
        with deadline, PinnedSMTP(policy, deadline, settings.host, settings.port, timeout=timeout) as smtp:
            smtp.ehlo()
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.username:
                smtp.login(settings.username, password or "")
            refused = smtp.send_message(message)
        if refused:
            return Outcome(False, None, _ms(started), f"recipients refused: {sorted(refused)}")
        return Outcome(True, 250, _ms(started), None, "accepted")
    except BlockedAddress as exc:
        return Outcome(False, None, _ms(started), str(exc))
    except (smtplib.SMTPException, OSError, ssl.SSLError) as exc:
        if deadline.expired or isinstance(exc, TimeoutError):
            return Outcome(False, None, _ms(started), f"timed out after {timeout:g}s")
        if isinstance(exc, smtplib.SMTPResponseException):
            return Outcome(False, exc.smtp_code, _ms(started), f"SMTP {exc.smtp_code}: {exc.smtp_error!r}")
        return Outcome(False, None, _ms(started), f"{type(exc).__name__}: {exc}")
