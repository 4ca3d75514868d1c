"""Thought signatures: the model's reasoning, sealed for the client to send back with the history.

A signature is `v1 | nonce | AES-GCM(thought text)`, base64: the client cannot read the hidden reasoning, and the
server restores it from the signature alone and rejects one that was altered. The key lives in the shared database,
so signatures survive restarts and one replica's signature is accepted by every other.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import ApiError

_VERSION = b"\x01"
_NONCE = 12
# Values the Gemini docs give for history that was never signed (migrated or injected turns).
BYPASS = frozenset({"context_engineering_is_the_way_to_go", "skip_thought_signature_validator"})


def legacy_key(data_dir: Path) -> bytes:
    """The key a first start makes: the one a data dir from before the shared state kept in `signing.key` (so its
    signatures stay valid), else a new one."""
    path = data_dir / "signing.key"
    return path.read_bytes() if path.exists() else secrets.token_bytes(32)


class Signer:
    def __init__(self, key: bytes) -> None:
        self._aead = AESGCM(key)
        self._tenant_key = hmac.new(key, b"pollux tenant", hashlib.sha256).digest()
        self._tenants: dict[str, str] = {}  # asked on every request: an HMAC each time was ~1.5 % of a proxied one

    def tenant(self, project_id: str) -> str:
        """A project's KV-cache salt: made here from the project and a server secret, never from the client, so
        that prefix caches are shared within a project and never across projects (and cannot be guessed)."""
        salt = self._tenants.get(project_id)
        if salt is None:
            digest = hmac.new(self._tenant_key, project_id.encode(), hashlib.sha256).digest()
            salt = base64.urlsafe_b64encode(digest[:24]).decode()
            if len(self._tenants) >= 4096:  # projects are few; bounded all the same
                self._tenants.clear()
            self._tenants[project_id] = salt
        return salt

    def sign(self, thought: str) -> str:
        nonce = secrets.token_bytes(_NONCE)
        return base64.b64encode(_VERSION + nonce + self._aead.encrypt(nonce, thought.encode(), _VERSION)).decode()

    def open(self, signature: str) -> str | None:
        """The reasoning sealed in `signature` (None for a documented bypass value); 400 if it was tampered with."""
        if signature in BYPASS:
            return None
        try:
            raw = base64.b64decode(signature + "=" * (-len(signature) % 4),
                                   altchars=b"-_" if "-" in signature or "_" in signature else None, validate=True)
            if not raw.startswith(_VERSION):
                raise ValueError("unknown version")
            nonce, sealed = raw[1:1 + _NONCE], raw[1 + _NONCE:]
            return self._aead.decrypt(nonce, sealed, _VERSION).decode()
        except (binascii.Error, ValueError, InvalidTag):
            raise ApiError.invalid("Corrupted thought signature.") from None
