"""Secrets sealed at rest: AES-256-GCM under the server's key, each bound to its owner and
name (the associated data), so a row copied to another owner or name does not open.

The key is `SANDRUN_SECRETS_KEY` (base64 of 32 bytes) or a key file, made on first use
with mode 0600. Servers sharing a database must share the key.
"""

from __future__ import annotations

import base64
import binascii
import os
from pathlib import Path
from typing import TYPE_CHECKING

from sandrun.errors import ValidationError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

KEY_ENV = "SANDRUN_SECRETS_KEY"
_VERSION = "v1:"


class SecretBox:
    """Seals and opens secrets with `key`, or the key `load_key(key_file)` finds when first
    used (opening a service costs no key file and no cryptography import)."""

    def __init__(self, key: bytes | None = None, key_file: Path | None = None) -> None:
        self._key, self._key_file = key, key_file
        self._cipher: AESGCM | None = None

    def _aead(self) -> AESGCM:
        if self._cipher is None:
            from cryptography.hazmat.primitives.ciphers.aead import AESGCM

            key = self._key
            if key is None:
                assert self._key_file is not None
                key = load_key(self._key_file)
            self._cipher = AESGCM(key)
        return self._cipher

    def seal(self, owner: str, name: str, value: str) -> str:
        nonce = os.urandom(12)
        sealed = self._aead().encrypt(nonce, value.encode(), _bound(owner, name))
        return _VERSION + base64.b64encode(nonce + sealed).decode()

    def open(self, owner: str, name: str, sealed: str) -> str | None:
        """The value, or None if it was not sealed for this owner and name with this key."""
        from cryptography.exceptions import InvalidTag

        aead = self._aead()
        try:
            raw = base64.b64decode(sealed.removeprefix(_VERSION), validate=True)
            return aead.decrypt(raw[:12], raw[12:], _bound(owner, name)).decode()
        except (InvalidTag, binascii.Error, ValueError):
            return None


def _bound(owner: str, name: str) -> bytes:
    return f"sandrun-secret\0{owner}\0{name}".encode()


def load_key(key_file: Path) -> bytes:
    """`SANDRUN_SECRETS_KEY` if set, else the key in `key_file` (made now, readable by
    this user alone, if it does not exist)."""
    given = os.environ.get(KEY_ENV)
    if given:
        return _decode(given, KEY_ENV)
    try:
        return _decode(key_file.read_text().strip(), str(key_file))
    except FileNotFoundError:
        pass
    key = os.urandom(32)
    key_file.parent.mkdir(parents=True, exist_ok=True)
    # Written whole, then linked into place: a process racing this one reads a whole key.
    draft = key_file.with_name(f".{key_file.name}.{os.getpid()}")
    fd = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(base64.b64encode(key).decode() + "\n")
    try:
        os.link(draft, key_file)
    except FileExistsError:  # another process made it first: use theirs
        return _decode(key_file.read_text().strip(), str(key_file))
    finally:
        draft.unlink()
    return key


def _decode(text: str, where: str) -> bytes:
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 32:
        raise ValidationError(
            f"{where} must hold a base64 key of 32 bytes",
            field="secrets_key",
            suggestions=["make one with: head -c 32 /dev/urandom | base64"],
        )
    return key
