"""Encryption at rest: AES-256-GCM from the ``cryptography`` package (extra ``secure``).

What is encrypted: every line's key, value and ctx, the derived-column file and
the JSONL snapshot segments.  What stays in clear: the line number, the
anchors (64-bit hashes of the plaintext) and the timestamps, so the chain can
be walked and sealed without the key.  Each record is ``nonce (12) || ciphertext
|| tag (16)``, with the line number and anchor as associated data: a ciphertext
moved to another line fails to decrypt.  A passphrase (``str``) is stretched
with scrypt and a per-store random salt; raw keys are 16, 24 or 32 bytes.
A wrong key is caught at open by a key-check record in ``meta.json``.
"""

from __future__ import annotations

import base64
import os

from memworld.memory.persistent.line import EncryptionKeyError

_CHECK = b"pmll key check v1"


def _aesgcm():
    try:
        from cryptography.exceptions import InvalidTag
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "encryption_key needs the 'cryptography' package: pip install 'memworld[secure]'"
        ) from err
    return AESGCM, InvalidTag


class Cipher:
    """AES-GCM with a random 96-bit nonce per record."""

    def __init__(self, key: bytes) -> None:
        aesgcm, self._invalid_tag = _aesgcm()
        if len(key) not in (16, 24, 32):
            raise EncryptionKeyError(
                f"an AES key is 16, 24 or 32 bytes, got {len(key)}; pass a str passphrase "
                "instead to have one derived"
            )
        self._aead = aesgcm(key)

    def encrypt(self, plaintext: bytes, associated: bytes = b"") -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, associated)

    def decrypt(self, blob: bytes, associated: bytes = b"", where: str = "a record") -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], associated)
        except self._invalid_tag:
            raise EncryptionKeyError(
                f"cannot decrypt {where}: wrong encryption key, or the data was changed on disk"
            ) from None


def derive_key(secret: bytes | str, salt: bytes) -> bytes:
    """A 32-byte key: raw bytes are used as they are, a passphrase goes through scrypt."""
    if isinstance(secret, bytes | bytearray):
        return bytes(secret)
    from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

    return Scrypt(salt=salt, length=32, n=2**14, r=8, p=1).derive(secret.encode("utf-8"))


def new_encryption_meta(secret: bytes | str) -> tuple[dict, Cipher]:
    """The ``meta.json`` entry for a new encrypted store, and its cipher."""
    salt = os.urandom(16)
    cipher = Cipher(derive_key(secret, salt))
    meta = {
        "cipher": "AES-GCM",
        "kdf": "raw" if isinstance(secret, bytes | bytearray) else "scrypt(n=2**14,r=8,p=1)",
        "salt": base64.b64encode(salt).decode(),
        "check": base64.b64encode(cipher.encrypt(_CHECK)).decode(),
    }
    return meta, cipher


def open_cipher(meta: dict | None, secret: bytes | str | None, path: str) -> Cipher | None:
    """The cipher of an existing store, with a clear error when the key does not fit."""
    if meta is None:
        if secret is not None:
            raise EncryptionKeyError(
                f"store {path} is not encrypted; open it without encryption_key"
            )
        return None
    if secret is None:
        raise EncryptionKeyError(f"store {path} is encrypted: pass encryption_key=")
    cipher = Cipher(derive_key(secret, base64.b64decode(meta["salt"])))
    try:
        ok = cipher.decrypt(base64.b64decode(meta["check"]), where="the key check") == _CHECK
    except EncryptionKeyError:
        ok = False
    if not ok:
        raise EncryptionKeyError(
            f"wrong encryption key for store {path}: the key check in meta.json does not "
            "decrypt; pass the key (or passphrase) the store was created with"
        )
    return cipher
