"""Notifier secrets at rest: sealed with Fernet (AES-128-CBC plus HMAC-SHA256, from `cryptography`)
when a key is configured, stored as given otherwise (docs/notifications.md, "Safe by default").

`TASKQUEUE_SECRETS_KEY` holds one or more Fernet keys, comma-separated (or `TASKQUEUE_SECRETS_KEY_FILE`
names a file holding them, read when the settings load): the first seals each secret saved from now
on, every one of them opens. A sealed value is stored as `fernet:<token>`; a value without that
prefix (saved before a key was set) is used as it is until the notifier is saved again.
"""

from __future__ import annotations

import os
from typing import Any

from mcp_taskqueue.errors import ValidationFailed

KEY_ENV = "TASKQUEUE_SECRETS_KEY"
PREFIX = "fernet:"


class SecretUnavailable(Exception):
    """A sealed secret that no configured key opens (or no key is configured)."""


def _keys() -> list[str]:
    return [k.strip() for k in os.environ.get(KEY_ENV, "").split(",") if k.strip()]


def _box(keys: list[str]) -> Any:
    try:
        from cryptography.fernet import Fernet, MultiFernet
    except ImportError:  # pragma: no cover - the `secrets` extra is missing
        raise ValidationFailed(
            f"{KEY_ENV} is set but the cryptography package is not installed: pip install 'mcp-taskqueue[secrets]'"
        ) from None
    try:
        return MultiFernet([Fernet(key.encode()) for key in keys])
    except ValueError:
        raise ValidationFailed(
            f"{KEY_ENV} must hold Fernet keys (32 random bytes, URL-safe base64), comma-separated; make one with "
            "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"
        ) from None


def seal(secret: str | None) -> str | None:
    """The form to store: sealed when a key is configured, else the secret itself."""
    keys = _keys()
    if secret is None or not keys:
        return secret
    return PREFIX + str(_box(keys).encrypt(secret.encode()).decode())


def unseal(stored: str | None) -> str | None:
    """The secret from its stored form; SecretUnavailable when it is sealed and no key opens it."""
    if stored is None or not stored.startswith(PREFIX):
        return stored
    keys = _keys()
    if not keys:
        raise SecretUnavailable(f"the notifier's secret is sealed and {KEY_ENV} is not set")
    from cryptography.fernet import InvalidToken

    try:
        return str(_box(keys).decrypt(stored[len(PREFIX) :].encode()).decode())
    except InvalidToken:
        raise SecretUnavailable(f"none of the keys in {KEY_ENV} opens the notifier's secret") from None
