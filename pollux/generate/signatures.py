"""Thought signatures: the model's reasoning, sealed for the client to send back with the history.

A signature is `v1 | thought text | HMAC-SHA256`, base64. The server can restore the reasoning of an
earlier turn from it, and rejects one that was altered. The key lives in the data dir, so signatures survive
restarts.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import os
import secrets
from pathlib import Path

from ..errors import ApiError

_VERSION = b"\x01"
_MAC_BYTES = 16
# Values the Gemini docs give for history that was never signed (migrated or injected turns).
BYPASS = frozenset({"context_engineering_is_the_way_to_go", "skip_thought_signature_validator"})


class Signer:
    def __init__(self, key: bytes) -> None:
        self._key = key

    @classmethod
    def from_data_dir(cls, data_dir: Path) -> Signer:
        path = data_dir / "signing.key"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(secrets.token_bytes(32))
                fh.flush()
                os.fsync(fh.fileno())
        return cls(path.read_bytes())

    def sign(self, thought: str) -> str:
        body = _VERSION + thought.encode()
        mac = hmac.digest(self._key, body, "sha256")[:_MAC_BYTES]
        return base64.b64encode(body + mac).decode()

    def open(self, signature: str) -> str | None:
        """The reasoning sealed in `signature` (None for a documented bypass value); 400 if it was tampered with."""
        if signature in BYPASS:
            return None
        try:
            raw = base64.b64decode(signature + "=" * (-len(signature) % 4), altchars=b"-_" if "-" in signature
                                   or "_" in signature else None, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        body, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
        expected = hmac.digest(self._key, body, "sha256")[:_MAC_BYTES]
        if len(raw) <= _MAC_BYTES or not body.startswith(_VERSION) or not hmac.compare_digest(mac, expected):
            raise ApiError.invalid("Corrupted thought signature.")
        return body[1:].decode()
