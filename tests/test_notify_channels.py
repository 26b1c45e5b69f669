"""Each channel against a real receiver: Slack and Discord payloads, the SMS and push presets,
email through a real SMTP server with STARTTLS and AUTH, and the SSRF guard on every send."""

from __future__ import annotations

import base64
import ipaddress
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from mcp_taskqueue.errors import ValidationFailed
from mcp_taskqueue.notify.notifiers import Notifiers
from mcp_taskqueue.notify.transport import AddressPolicy, BlockedAddress
from mcp_taskqueue.store import Store
from tests.receivers import Receiver, http_receiver, smtp_server

SECRET = "whsec_" + base64.b64encode(b"a-signing-key-of-32-bytes-length").decode()


@pytest.fixture
def notifiers(store: Store, monkeypatch: pytest.MonkeyPatch) -> Notifiers:
    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "127.0.0.1")
    monkeypatch.setenv("TASKQUEUE_DASHBOARD_URL", "https://board.example.com/")
    return Notifiers(store)


def test_slack_gets_a_block_kit_message_with_title_project_worker_and_link(notifiers: Notifiers) -> None:
    with http_receiver() as rx:
        notifiers.create("slack", "slack", rx.url + "/services/T0/B0/XYZ", ["task.completed"])
        result = notifiers.test("slack")
        (got,) = rx.wait_for(1)
    assert result.ok and result.status_code == 200 and result.latency_ms >= 0
    message = got.json()
    assert message["text"] == "Task completed: Sample task from test_notifier"
    kinds = [b["type"] for b in message["blocks"]]
    assert kinds[0] == "header" and "actions" in kinds and kinds[-1] == "context"
    fields = " ".join(f["text"] for f in message["blocks"][2]["fields"])
    assert "*Project*\ndefault" in fields and "*Worker*\nsample-worker" in fields
    button = next(b for b in message["blocks"] if b["type"] == "actions")["elements"][0]
    assert button["url"] == "https://board.example.com/board?task=0000000000sample"
    # the Slack URL is a credential: tools show only its host
    assert notifiers.get("slack").target == f"http://127.0.0.1:{rx.port}/…"


def test_discord_gets_an_embed_and_template_overrides_apply(notifiers: Notifiers) -> None:
    with http_receiver() as rx:
        notifiers.create(
            "discord",
            "discord",
            rx.url,
            ["task.completed"],
            templates={"title": "Done: {{ task.title | upper }}", "text": "by {{ task.worker }} in {{ project }}"},
        )
        assert notifiers.test("discord").ok
        (got,) = rx.wait_for(1)
    (embed,) = got.json()["embeds"]
    assert embed["title"] == "Done: SAMPLE TASK FROM TEST_NOTIFIER"
    assert embed["description"] == "by sample-worker in default"
    assert embed["color"] == 0x2EB67D and embed["url"].endswith("/board?task=0000000000sample")
    assert {f["name"] for f in embed["fields"]} >= {"Project", "Worker"}


def test_twilio_preset_posts_a_form_with_basic_auth(notifiers: Notifiers) -> None:
    with http_receiver() as rx:
        notifiers.create(
            "sms",
            "twilio",
            rx.url + "/2010-04-01/Accounts/AC123/Messages.json",
            ["task.dead"],
            options={"account_sid": "AC123", "from": "+15550001", "to": "+15550002"},
            secret="auth-token-xyz",
        )
        assert notifiers.test("sms").ok
        (got,) = rx.wait_for(1)
    assert got.headers["content-type"] == "application/x-www-form-urlencoded"
    assert got.headers["authorization"] == "Basic " + base64.b64encode(b"AC123:auth-token-xyz").decode()
    form = parse_qs(got.body.decode())
    assert form["To"] == ["+15550002"] and form["From"] == ["+15550001"]
    assert form["Body"][0].startswith("Task completed: Sample task from test_notifier")


def test_fcm_preset_posts_a_v1_message_with_a_bearer_token(notifiers: Notifiers) -> None:
    with http_receiver() as rx:
        notifiers.create("push", "fcm", rx.url, ["task.completed"], options={"topic": "ops"}, secret="ya29.token")
        assert notifiers.test("push").ok
        (got,) = rx.wait_for(1)
    assert got.headers["authorization"] == "Bearer ya29.token"
    message = got.json()["message"]
    assert message["topic"] == "ops"
    assert message["notification"]["title"] == "Task completed: Sample task from test_notifier"
    assert message["data"] == {"event": "task.completed", "task_id": "0000000000sample", "workflow_id": ""}


def test_test_notifier_reports_the_receivers_error_answer(notifiers: Notifiers) -> None:
    with http_receiver(Receiver(behaviour=lambda r: (500, 0.0, {}))) as rx:
        notifiers.create("hook", "webhook", rx.url, ["task.completed"], secret=SECRET)
        result = notifiers.test("hook")
    assert not result.ok and result.status_code == 500 and result.error == "HTTP 500"
    assert result.response == '{"status": 500}'


def test_email_goes_through_starttls_and_auth_with_text_and_html(
    notifiers: Notifiers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(tmp_path, "mailer", "s3cret-pass") as box:
        assert box.cert is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(box.cert))  # trust the test server's own certificate
        notifiers.create(
            "mail",
            "email",
            "ops@example.com, lead@example.com",
            ["task.completed"],
            options={"smtp_host": "127.0.0.1", "smtp_port": box.port, "username": "mailer", "from": "tq@example.com"},
            secret="s3cret-pass",
        )
        result = notifiers.test("mail")
        assert result.ok, result.error
        (message,) = box.wait_for(1)
    assert box.logins == [("mailer", "s3cret-pass")]
    assert message["Subject"] == "[default] Task completed: Sample task from test_notifier"
    assert message["To"] == "ops@example.com, lead@example.com"
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    assert "Worker: sample-worker" in text and "https://board.example.com/board?task=" in text
    assert "<th align=left>Worker</th><td>sample-worker</td>" in html
    assert "s3cret-pass" not in notifiers.get("mail").model_dump_json()


def test_email_with_a_wrong_password_reports_the_smtp_refusal(
    notifiers: Notifiers, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with smtp_server(tmp_path, "mailer", "right") as box:
        assert box.cert is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(box.cert))
        options = {"smtp_host": "127.0.0.1", "smtp_port": box.port, "username": "mailer", "from": "tq@example.com"}
        notifiers.create("mail", "email", "ops@example.com", ["task.completed"], options=options, secret="wrong")
        result = notifiers.test("mail")
    assert not result.ok and result.status_code == 535 and box.messages == []


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:9/hook",
        "http://localhost:9/hook",
        "http://10.1.2.3/hook",
        "http://192.168.0.10/hook",
        "http://169.254.169.254/latest/meta-data/",
        "http://[::1]:9/hook",
        "http://[::ffff:127.0.0.1]:9/hook",
        "http://0.0.0.0:9/hook",
        "http://100.100.100.200/",
    ],
)
def test_private_loopback_and_metadata_targets_are_refused_by_default(
    store: Store, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.delenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", raising=False)
    with pytest.raises(ValidationFailed, match="target refused"):
        Notifiers(store).create("x", "webhook", url, ["task.completed"], secret=SECRET)


def test_the_allow_list_takes_hosts_and_cidrs_but_metadata_only_by_exact_address() -> None:
    policy = AddressPolicy.parse(["internal.example", "10.0.0.0/8", "127.0.0.1"])
    policy.check("internal.example", ipaddress.ip_address("192.168.1.1"))
    policy.check("x", ipaddress.ip_address("10.9.8.7"))
    policy.check("x", ipaddress.ip_address("::ffff:127.0.0.1"))
    with pytest.raises(BlockedAddress):
        policy.check("x", ipaddress.ip_address("127.0.0.2"))
    with pytest.raises(BlockedAddress, match="metadata"):
        AddressPolicy.parse(["169.254.0.0/16"]).check("x", ipaddress.ip_address("169.254.169.254"))
    AddressPolicy.parse(["169.254.169.254"]).check("x", ipaddress.ip_address("169.254.169.254"))
    AddressPolicy().check("example.com", ipaddress.ip_address("93.184.216.34"))


def test_a_redirect_to_a_disallowed_address_is_not_followed(notifiers: Notifiers) -> None:
    with (
        http_receiver(Receiver(secret=SECRET)) as inner,
        http_receiver(Receiver(behaviour=lambda r: (307, 0.0, {"location": "http://127.0.0.2:1/x"}))) as evil,
    ):
        notifiers.create("evil", "webhook", evil.url, ["task.completed"], secret=SECRET)
        result = notifiers.test("evil")
        assert not result.ok and "127.0.0.2" in (result.error or "") and "loopback/private" in (result.error or "")
        # an allowed redirect target is followed, with the body and signature intact
        redirect = Receiver(behaviour=lambda r: (308, 0.0, {"location": inner.url}))
        with http_receiver(redirect) as hop:
            notifiers.create("hop", "webhook", hop.url, ["task.completed"], secret=SECRET)
            assert notifiers.test("hop").ok
        (got,) = inner.wait_for(1)
        assert got.verify_error is None


def test_config_file_entries_join_the_environment_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from mcp_taskqueue.notify import transport

    monkeypatch.setenv("TASKQUEUE_WEBHOOK_ALLOW_HOSTS", "10.0.0.0/8")
    monkeypatch.setattr(transport, "configured_allow_hosts", ["hooks.internal"])
    policy = AddressPolicy.from_env()
    policy.check("hooks.internal", ipaddress.ip_address("192.168.1.9"))
    policy.check("x", ipaddress.ip_address("10.1.1.1"))
    with pytest.raises(BlockedAddress):
        policy.check("other.internal", ipaddress.ip_address("192.168.1.9"))
