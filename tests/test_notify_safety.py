"""Safe by default: secrets never come back (tools, resources, CLI output, logs), never follow a
notifier to a new destination or a redirect to another origin, and every connection (HTTP and
SMTP) goes to the address that was checked, so DNS rebinding gains nothing."""

from __future__ import annotations

import base64
import ipaddress
import json
import logging
import socket
import threading
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio.to_thread
import pytest
from click.testing import CliRunner
from mcp import Client

from mcp_taskqueue.cli import main
from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.notify.dispatcher import Dispatcher
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.notify.transport import (
    AddressPolicy,
    BlockedAddress,
    HttpRequest,
    SmtpSettings,
    send_email,
    send_http,
)
from mcp_taskqueue.queue import TaskQueue
from mcp_taskqueue.server.app import build_server
from mcp_taskqueue.store import Store
from tests.mcp_calls import call, call_error
from tests.receivers import FAST, Receiver, Trickler, http_receiver, smtp_server, trickling_receiver
from tests.test_notify import wait_until

SIGNING = "whsec_" + base64.b64encode(b"signing-key-never-shown-0123456").decode()
SMTP_PASSWORD = "smtp-password-never-shown"
SMS_TOKEN = "twilio-token-never-shown"
PUSH_TOKEN = "fcm-token-never-shown"
HEADER_KEY = "header-key-never-shown"
URL_PASSWORD = "url-password-never-shown"
SID = "AC0123"


@pytest.fixture(autouse=True)
def allow_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("TASKQUEUE_NOTIFY_TIMEOUT", "10")


def forms_of(*secrets: str) -> list[str]:
    """Each secret, and the Basic credentials the SMS preset builds from one."""
    return [*secrets, base64.b64encode(f"{SID}:{SMS_TOKEN}".encode()).decode()]


def cli_outputs(db_path: Path | str) -> list[str]:
    runner = CliRunner()
    out = []
    for fmt in ("json", "table", "yaml"):
        for args in (["notify", "list"], ["notify", "list", "hook"], ["notify", "list", "mail"], ["config", "show"]):
            done = runner.invoke(main, ["--db", str(db_path), "--format", fmt, *args])
            assert done.exit_code == 0, done.output
            out.append(done.stdout + done.stderr)
    return out


@pytest.mark.anyio
async def test_no_tool_resource_cli_output_or_log_line_ever_holds_a_secret(
    db_path: Path | str, store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []  # every text a person or a model could read
    with (
        http_receiver(Receiver(secret=SIGNING)) as hook,
        http_receiver() as sms,
        http_receiver() as push,
        smtp_server(tmp_path, "mailer", SMTP_PASSWORD) as box,
    ):
        assert box.cert is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(box.cert))
        userinfo_url = hook.url.replace("http://", f"http://hook:{URL_PASSWORD}@")
        mail = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "username": "mailer", "from": "tq@example.com"}
        created = [
            dict(name="hook", channel="webhook", target=userinfo_url, secret=SIGNING,
                 options={"headers": {"x-api-key": HEADER_KEY}}),
            dict(name="sms", channel="twilio", target=sms.url, secret=SMS_TOKEN,
                 options={"account_sid": SID, "from": "+15550001", "to": "+15550002"}),
            dict(name="push", channel="fcm", target=push.url, secret=PUSH_TOKEN, options={"topic": "ops"}),
            dict(name="mail", channel="email", target="ops@example.com", secret=SMTP_PASSWORD, options=mail),
        ]  # fmt: skip
        async with Client(build_server(db_path)) as client:
            for spec in created:
                info = await call(client, "create_notifier", events=["task.completed"], **spec)
                seen.append(json.dumps(info))
                assert info["has_secret"] is True
                # refusals that echo arguments: a duplicate name, a bad template
                seen.append(await call_error(client, "create_notifier", events=["task.completed"], **spec))
                bad = {**spec, "name": spec["name"] + "2", "templates": {"text": "{{ oops"}}
                seen.append(await call_error(client, "create_notifier", events=["task.completed"], **bad))
                tested = await call(client, "test_notifier", notifier=spec["name"])
                assert tested["ok"], tested
                seen.append(json.dumps(tested))
            seen.append(json.dumps(await call(client, "list_notifiers")))
            # deliveries made by the dispatcher, then every resource there is
            queue = TaskQueue(store)
            task = queue.create({"title": "t"})
            assert queue.claim("w") is not None
            queue.complete(task.id, "w")
            with Dispatcher(store, FAST):
                box.wait_for(2)
                for rx in (hook, sms, push):
                    rx.wait_for(2)
            uris = [str(r.uri) for r in (await client.list_resources()).resources]
            uris += [f"taskqueue://notifiers/{spec['name']}" for spec in created]
            for uri in uris:
                for content in (await client.read_resource(uri)).contents:
                    seen.append(getattr(content, "text", ""))
            seen.append(json.dumps(await call(client, "delete_notifier", notifier="push")))
    # the CLI, in every format (in a thread: it runs its own event loop)
    seen += await anyio.to_thread.run_sync(cli_outputs, db_path)
    # every log record of this process but the test SMTP server's own ("mail.log": the receiver's side)
    seen += [record.getMessage() + str(record.__dict__) for record in caplog.records if record.name != "mail.log"]
    text = "\n".join(seen)
    assert "hook" in text and "127.0.0.1" in text and "x-api-key" in text  # we did read the notifiers
    for secret in forms_of(SIGNING, SMTP_PASSWORD, SMS_TOKEN, PUSH_TOKEN, HEADER_KEY, URL_PASSWORD):
        assert secret not in text, secret
    # ...while the receivers did get them
    assert box.logins[0] == ("mailer", SMTP_PASSWORD)
    assert sms.received[0].headers["authorization"] == "Basic " + forms_of()[-1]
    assert push.received[0].headers["authorization"] == f"Bearer {PUSH_TOKEN}"
    assert hook.received[0].headers["x-api-key"] == HEADER_KEY and hook.received[0].verify_error is None


def test_a_secret_never_follows_a_notifier_to_a_new_destination(store: Store, tmp_path: Path) -> None:
    notifiers = Notifiers(store)
    with http_receiver() as first, http_receiver() as attacker:
        options = {"account_sid": SID, "from": "+15550001", "to": "+15550002"}
        notifiers.create("sms", "twilio", first.url, ["task.completed"], options=options, secret=SMS_TOKEN)
        # same destination, other events: the stored token stays
        assert notifiers.create("sms", "twilio", first.url, ["task.failed"], options=options, replace=True).has_secret
        with pytest.raises(ValidationFailed, match="needs its secret again"):
            notifiers.create("sms", "twilio", attacker.url, ["task.failed"], options=options, replace=True)
        with pytest.raises(ValidationFailed, match="needs its secret again"):
            notifiers.create("sms", "webhook", first.url, ["task.failed"], replace=True)
        assert notifiers.test("sms").ok and attacker.received == []
        # given again, it moves (and no old secret keeps signing for the new destination)
        notifiers.create("sms", "twilio", attacker.url, ["task.failed"], options=options, secret="new", replace=True)
        assert notifiers.get("sms").previous_secret_until is None
    mail = {"smtp_host": "127.0.0.1", "smtp_port": 2525, "username": "u", "from": "tq@example.com"}
    notifiers.create("mail", "email", "ops@example.com", ["task.completed"], options=mail, secret=SMTP_PASSWORD)
    for moved in ({"smtp_host": "10.0.0.9"}, {"smtp_port": 25}, {"starttls": False}):
        with pytest.raises(ValidationFailed, match="needs its secret again"):
            notifiers.create("mail", "email", "ops@example.com", ["task.completed"], options=mail | moved, replace=True)
    # other recipients are not another server: the password stays where it was
    assert notifiers.create("mail", "email", "lead@example.com", ["task.completed"], options=mail, replace=True)


def test_credentials_stay_with_their_origin_when_a_receiver_redirects(store: Store) -> None:
    notifiers = Notifiers(store)
    with http_receiver() as other:

        def hop(request: Any) -> tuple[int, float, dict[str, str]]:
            if request.path == "/hook":  # same origin first, then another one
                return 307, 0.0, {"location": "/next"}
            return 307, 0.0, {"location": other.url}

        with http_receiver(Receiver(behaviour=hop)) as first:
            options = {"account_sid": SID, "from": "+15550001", "to": "+15550002"}
            notifiers.create("sms", "twilio", first.url, ["task.completed"], options=options, secret=SMS_TOKEN)
            hooks = {"headers": {"x-api-key": HEADER_KEY}}
            notifiers.create("hook", "webhook", first.url, ["task.completed"], options=hooks, secret=SIGNING)
            assert notifiers.test("sms").ok and notifiers.test("hook").ok
    assert [r.path for r in first.received] == ["/hook", "/next", "/hook", "/next"]
    assert all(r.headers.get("authorization", "").startswith("Basic") for r in first.received[:2])
    assert first.received[3].headers["x-api-key"] == HEADER_KEY
    sms_there, hook_there = other.received
    assert "authorization" not in sms_there.headers and "x-api-key" not in hook_there.headers
    assert hook_there.headers["webhook-signature"]  # the signature is no credential: it still proves the sender


@pytest.fixture
def rebinding_dns(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """A resolver that answers 127.0.0.1 for `localhost` the first time and a metadata address after
    that: what a rebinding attacker's DNS server does. Yields the names asked for."""
    real = socket.getaddrinfo
    asked: list[str] = []

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "localhost":
            return real(host, port, *args, **kwargs)
        asked.append(host)
        address = "127.0.0.1" if len(asked) == 1 else "169.254.169.254"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port)))]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    yield asked


def test_smtp_connects_to_the_address_it_checked(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rebinding_dns: list[str]
) -> None:
    notifiers = Notifiers(store)
    with smtp_server(tmp_path, "mailer", SMTP_PASSWORD) as box:
        assert box.cert is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(box.cert))  # issued to localhost: STARTTLS checks the name
        options = {"smtp_host": "localhost", "smtp_port": box.port, "username": "mailer", "from": "tq@example.com"}
        notifiers.create("mail", "email", "ops@example.com", ["task.completed"], options=options, secret=SMTP_PASSWORD)
        result = notifiers.test("mail")
        assert result.ok, result.error
        box.wait_for(1)
    assert rebinding_dns == ["localhost"]  # resolved once, checked, and that address was used


def test_http_connects_to_the_address_it_checked(store: Store, rebinding_dns: list[str]) -> None:
    notifiers = Notifiers(store)
    with http_receiver(Receiver(secret=SIGNING)) as rx:
        url = rx.url.replace("127.0.0.1", "localhost")
        notifiers.create("hook", "webhook", url, ["task.completed"], secret=SIGNING)
        rebinding_dns.clear()  # saving resolved it once too; a send resolves again, once
        assert notifiers.test("hook").ok
        assert rebinding_dns == ["localhost"]
        rebinding_dns.clear()
        assert notifiers.test("hook").ok  # each send checks afresh; still only the checked address
    assert len(rx.received) == 2


def test_a_blocked_smtp_host_is_refused_without_connecting(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS")
    notifiers = Notifiers(store)
    options = {"smtp_host": "169.254.169.254", "smtp_port": 25, "from": "tq@example.com"}
    notifiers.create("mail", "email", "ops@example.com", ["task.completed"], options=options)
    result = notifiers.test("mail")
    assert not result.ok and "metadata" in (result.error or "")


def fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def stored_secrets(store: Store) -> list[tuple[str, str | None, str | None]]:
    rows = store.read(lambda tx: tx.conn.execute("SELECT name, secret, previous_secret FROM notifiers").fetchall())
    return [(r[0], r[1], r[2]) for r in rows]


def test_with_a_key_secrets_are_sealed_at_rest_and_still_sign_and_authenticate(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    old_key, new_key = fernet_key(), fernet_key()
    monkeypatch.setenv("TASKQUEUE_SECRETS_KEY", old_key)
    notifiers = Notifiers(store)
    rotated = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with http_receiver(Receiver(secret=[SIGNING, rotated])) as hook, http_receiver() as sms:
        options = {"account_sid": SID, "from": "+15550001", "to": "+15550002"}
        notifiers.create("sms", "twilio", sms.url, ["task.completed"], options=options, secret=SMS_TOKEN)
        notifiers.create("hook", "webhook", hook.url, ["task.completed"], secret=SIGNING)
        raw = stored_secrets(store)
        assert all(secret and secret.startswith("fernet:") for _name, secret, _previous in raw), raw
        assert SMS_TOKEN not in str(raw) and SIGNING not in str(raw)
        assert notifiers.test("sms").ok and notifiers.test("hook").ok
        assert sms.received[0].headers["authorization"] == "Basic " + forms_of()[-1]
        assert hook.received[0].verify_error is None
        # the same secret saved again is no rotation (compared unsealed); a new one rotates, sealed
        notifiers.create("hook", "webhook", hook.url, ["task.completed"], secret=SIGNING, replace=True)
        assert notifiers.get("hook").previous_secret_until is None
        # key rotation: a new key first, the old one still opens what it sealed
        monkeypatch.setenv("TASKQUEUE_SECRETS_KEY", f"{new_key},{old_key}")
        notifiers.create("hook", "webhook", hook.url, ["task.completed"], secret=rotated, replace=True)
        assert notifiers.get("hook").previous_secret_until is not None
        assert notifiers.test("hook").ok
        assert hook.received[-1].headers["webhook-signature"].count("v1,") == 2  # old and new both sign
        assert hook.received[-1].verify_error is None


def test_a_sealed_secret_without_its_key_fails_each_send_and_the_dispatcher_goes_on(
    store: Store, queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TASKQUEUE_SECRETS_KEY", fernet_key())
    notifiers = Notifiers(store)
    with http_receiver(Receiver(secret=SIGNING)) as rx:
        notifiers.create("sealed", "webhook", rx.url, ["task.completed"], secret=SIGNING)
        monkeypatch.delenv("TASKQUEUE_SECRETS_KEY")
        notifiers.create("plain", "webhook", rx.url, ["task.completed"], secret=SIGNING)  # stored as given
        result = notifiers.test("sealed")
        assert not result.ok and "TASKQUEUE_SECRETS_KEY is not set" in (result.error or "")
        monkeypatch.setenv("TASKQUEUE_SECRETS_KEY", fernet_key())  # the wrong key
        assert "none of the keys" in (notifiers.test("sealed").error or "")
        assert notifiers.test("plain").ok  # saved before a key: used as it is
        task = queue.create({"title": "t"})
        assert queue.claim("w") is not None
        queue.complete(task.id, "w")
        with Dispatcher(store, FAST):
            rx.wait_for(2)  # plain's test and its delivery
            wait_until(lambda: notifiers.get("sealed").recent[0].attempts >= 1)
            wait_until(lambda: notifiers.get("plain").deliveries == {"delivered": 1})
    sealed = notifiers.get("sealed").recent[0]
    assert sealed.status == "pending" and "none of the keys" in (sealed.last_error or "")


def test_a_malformed_key_is_refused_when_a_secret_is_saved(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TASKQUEUE_SECRETS_KEY", "not-a-fernet-key")
    with pytest.raises(ValidationFailed, match="Fernet keys"):
        Notifiers(store).create("hook", "webhook", "http://127.0.0.1:9/", ["task.completed"], secret=SIGNING)
    assert Notifiers(store).list_notifiers().notifiers == []


# A receiver that keeps every single read short but never finishes: the timeout bounds the whole attempt.
TRICKLERS = {
    "body": Trickler(b"HTTP/1.1 200 OK\r\ncontent-length: 1000000\r\n\r\n", b"x"),
    "headers": Trickler(b"HTTP/1.1 200 OK\r\n", b"x-slow: 1\r\n"),
    "smtp greeting": Trickler(b"220-mail.example\r\n", b"220-still greeting\r\n", reads_first=False),
}


def within(seconds: float, send: Any) -> Any:
    """send()'s outcome, asserting it came within `seconds` (run in a thread, so a hung send fails the test)."""
    box: list[Any] = []
    thread = threading.Thread(target=lambda: box.append(send()), daemon=True)
    thread.start()
    thread.join(seconds)
    assert box, f"the send was still going after {seconds} s"
    return box[0]


@pytest.mark.parametrize("kind", list(TRICKLERS))
def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_timeout(kind: str) -> None:
    policy = AddressPolicy.parse(["127.0.0.1"])
    with trickling_receiver(replace(TRICKLERS[kind])) as slow:
        if kind == "smtp greeting":
            settings = SmtpSettings(host="127.0.0.1", sender="q@example.com", port=slow.port, starttls=False)
            outcome = within(
                8, lambda: send_email(settings, None, ["a@b.example"], "s", "t", None, policy, timeout=1.0)
            )
        else:
            request = HttpRequest(f"http://127.0.0.1:{slow.port}/hook", b"{}")
            outcome = within(8, lambda: send_http(request, policy, timeout=1.0))  # each piece within 0.2 s
        assert not outcome.ok and "timed out after 1s" in (outcome.error or ""), outcome
        assert slow.hung_up.wait(10)


def test_a_huge_answer_is_not_read_past_its_first_bytes() -> None:
    answer = Trickler(b"HTTP/1.1 200 OK\r\ncontent-length: 400000000\r\n\r\n", b"y" * 1_000_000, 0.0, 400)
    with trickling_receiver(answer) as big:
        request = HttpRequest(f"http://127.0.0.1:{big.port}/", b"{}")
        outcome = within(60, lambda: send_http(request, AddressPolicy.parse(["127.0.0.1"]), 30))
        assert outcome.ok and outcome.response == "y" * 2000
        assert big.hung_up.wait(10)
        assert big.written < 50_000_000, f"the receiver got {big.written} bytes out before we hung up"


@pytest.mark.parametrize(
    "address",
    [
        "64:ff9b::a9fe:a9fe",  # NAT64 (RFC 6052) of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::7f00:1",  # local-use NAT64 of 127.0.0.1
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "::a00:1",  # IPv4-compatible 10.0.0.1
    ],
)
def test_ipv6_forms_of_private_ipv4_addresses_are_refused(address: str) -> None:
    with pytest.raises(BlockedAddress):
        AddressPolicy().check("x", ipaddress.ip_address(address))
    with pytest.raises(ValidationFailed, match="target refused"):
        AddressPolicy().check_target(f"http://[{address}]/hook")
    AddressPolicy().check("x", ipaddress.ip_address("64:ff9b::5db8:d822"))  # NAT64 of a public address is fine
