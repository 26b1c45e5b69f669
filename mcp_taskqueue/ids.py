"""Short, sortable task ids: 10 characters of milliseconds, 6 of randomness (Crockford base32)."""

from __future__ import annotations

import os
import threading
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_lock = threading.Lock()
_last_ms = 0
_last_rand = 0


def _encode(value: int, width: int) -> str:
    chars = []
    for _ in range(width):
        value, digit = divmod(value, 32)
        chars.append(_ALPHABET[digit])
    return "".join(reversed(chars))


def new_id() -> str:
    """A 16-character id that sorts by creation time, monotonic within one process."""
    global _last_ms, _last_rand
    with _lock:
        ms = time.time_ns() // 1_000_000
        if ms <= _last_ms:
            ms = _last_ms
            rand = _last_rand + 1
        else:
            rand = int.from_bytes(os.urandom(4), "big") >> 2  # 30 bits
        if rand >= 1 << 30:
            ms, rand = ms + 1, 0
        _last_ms, _last_rand = ms, rand
    return _encode(ms, 10) + _encode(rand, 6)
