"""Optional payload encryption: an AES-256-GCM ``PayloadCodec`` with key ids and rotation.

Every payload (workflow and activity inputs and results, heartbeats, queries, signals, updates,
failure details) is serialised and sealed with the *current* key before it leaves the process,
so Temporal stores only ciphertext plus the id of the key that sealed it. Decoding picks the key
by that id, which is how rotation works: put a new key in front of the ring and keep the old ones
for as long as histories sealed with them must stay readable. Payloads that were never encrypted
pass through unchanged, so switching encryption on does not break existing histories.

The key ring is ``keyid:base64key[,keyid:base64key...]`` (32-byte keys, first one current);
``python -m srmflow.codec new-key [KEY_ID]`` prints a fresh entry.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import os
import re
import secrets
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from google.protobuf.message import DecodeError
from temporalio.api.common.v1 import Payload
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from srmflow.converter import DATA_CONVERTER
from srmflow.settings import ConfigError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ENCODING = b"binary/encrypted"
METADATA_ENCODING = "encoding"
METADATA_KEY_ID = "encryption-key-id"
KEYS_VARIABLE = "SRMFLOW_ENCRYPTION_KEYS"
KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16

KEY_ID_CHARS = "A-Z a-z 0-9 . _ -"
_KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class PayloadDecryptionError(Exception):
    """An encrypted payload cannot be decrypted with the configured keys; says which key id."""


def _shown_id(raw: bytes) -> str:
    """A key id from payload metadata, safe to put in a message (bounded, printable)."""
    text = raw.decode("utf-8", errors="replace")
    return repr(text if len(text) <= 64 else text[:64] + "...")


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM payload codec: seals with the first (current) key, opens with any key."""

    def __init__(self, keys: Sequence[tuple[str, bytes]], *, source: str = KEYS_VARIABLE) -> None:
        """Build from ``(key_id, 32-byte key)`` pairs, current key first."""
        # Imported here: a worker without encryption never loads cryptography (6.6 MiB RSS).
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        if not keys:
            raise ConfigError(f"{source}: at least one key is required")
        self._source = source
        self._ciphers: dict[bytes, AESGCM] = {}
        for index, (key_id, key) in enumerate(keys, start=1):
            _check_entry(key_id, key, index, source)
            encoded_id = key_id.encode("ascii")
            if encoded_id in self._ciphers:
                raise ConfigError(f"{source}: entry {index} repeats key id {key_id!r}")
            self._ciphers[encoded_id] = AESGCM(key)
        self._current_id = keys[0][0].encode("ascii")
        self._current = self._ciphers[self._current_id]

    @property
    def current_key_id(self) -> str:
        """Id of the key new payloads are sealed with."""
        return self._current_id.decode("ascii")

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Ids of every configured key, current first (never the key material)."""
        return tuple(key_id.decode("ascii") for key_id in self._ciphers)

    def __repr__(self) -> str:
        return f"EncryptionCodec(key_ids={list(self.key_ids)!r})"

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Seal each payload (metadata included) with the current key."""
        return [self._seal(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        """Open each encrypted payload with the key its id names; others pass through."""
        return [self._open(payload) for payload in payloads]

    def _seal(self, payload: Payload) -> Payload:
        nonce = os.urandom(NONCE_BYTES)
        # The key id is associated data: swapping it on a stored payload breaks authentication.
        sealed = self._current.encrypt(nonce, payload.SerializeToString(), self._current_id)
        return Payload(
            metadata={METADATA_ENCODING: ENCODING, METADATA_KEY_ID: self._current_id},
            data=nonce + sealed,
        )

    def _open(self, payload: Payload) -> Payload:
        if payload.metadata.get(METADATA_ENCODING) != ENCODING:
            return payload
        key_id = payload.metadata.get(METADATA_KEY_ID, b"")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"payload was encrypted with key id {_shown_id(key_id)}, which is not configured "
                f"(configured: {', '.join(self.key_ids)}); configure the key with id "
                f"{_shown_id(key_id)} in {self._source} (keep old keys after a rotation)"
            )
        data = payload.data
        if len(data) < NONCE_BYTES + TAG_BYTES:
            raise PayloadDecryptionError(
                f"encrypted payload with key id {_shown_id(key_id)} is truncated"
            )
        from cryptography.exceptions import InvalidTag

        try:
            plain = cipher.decrypt(data[:NONCE_BYTES], data[NONCE_BYTES:], key_id)
        except InvalidTag:
            raise PayloadDecryptionError(
                f"cannot decrypt payload with key id {_shown_id(key_id)}: the configured key "
                "with that id is not the key it was encrypted with, or the payload was altered; "
                f"configure the original key with id {_shown_id(key_id)} in {self._source}"
            ) from None
        try:
            return Payload.FromString(plain)
        except DecodeError:
            raise PayloadDecryptionError(
                f"payload with key id {_shown_id(key_id)} decrypted to an invalid payload"
            ) from None


def _check_entry(key_id: str, key: bytes, index: int, source: str) -> None:
    if not _KEY_ID.fullmatch(key_id):
        raise ConfigError(
            f"{source}: entry {index} has an invalid key id; use 1-64 characters "
            f"from {KEY_ID_CHARS}"
        )
    if len(key) != KEY_BYTES:
        raise ConfigError(
            f"{source}: entry {index} (key id {key_id!r}) must be a {KEY_BYTES}-byte key "
            "(AES-256); generate one with: python -m srmflow.codec new-key"
        )


def _decode_key(text: str, key_id: str, index: int, source: str) -> bytes:
    # Standard or URL-safe alphabet, padded; strict so a stray character is not dropped silently.
    try:
        return base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{source}: entry {index} (key id {key_id!r}) is not valid base64"
        ) from None


def codec_from_keys(spec: str, *, source: str = KEYS_VARIABLE) -> EncryptionCodec:
    """Parse ``keyid:base64key,...`` (first key current) into a codec; errors name the entry."""
    entries = [entry.strip() for entry in spec.strip().split(",")]
    if entries == [""]:
        raise ConfigError(f"{source} is empty; expected keyid:base64key[,keyid:base64key...]")
    keys: list[tuple[str, bytes]] = []
    for index, entry in enumerate(entries, start=1):
        key_id, sep, encoded = entry.partition(":")
        key_id, encoded = key_id.strip(), encoded.strip()
        if not sep or not key_id or not encoded:
            raise ConfigError(
                f"{source}: entry {index} is not keyid:base64key (entries are comma-separated)"
            )
        keys.append((key_id, _decode_key(encoded, key_id, index, source)))
    return EncryptionCodec(keys, source=source)


def data_converter(codec: EncryptionCodec | None) -> DataConverter:
    """srmflow's pydantic JSON converter, sealing payloads and failure messages given a codec."""
    if codec is None:
        return DATA_CONVERTER
    # Failure messages and stack traces move into an encoded attribute so the codec seals them.
    return dataclasses.replace(
        DATA_CONVERTER,
        payload_codec=codec,
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )


def new_key(key_id: str | None = None) -> str:
    """A fresh ring entry ``keyid:base64key`` with a random 32-byte key."""
    key_id = key_id or f"k{time.strftime('%Y%m%d', time.gmtime())}-{secrets.token_hex(2)}"
    if not _KEY_ID.fullmatch(key_id):
        raise ValueError(f"invalid key id {key_id!r}: use 1-64 characters from {KEY_ID_CHARS}")
    key = secrets.token_bytes(KEY_BYTES)
    return f"{key_id}:{base64.b64encode(key).decode('ascii')}"


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m srmflow.codec new-key [KEY_ID]``: print a new key ring entry."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] != "new-key" or len(args) > 2:
        print("usage: python -m srmflow.codec new-key [KEY_ID]", file=sys.stderr)
        return 2
    try:
        print(new_key(args[1] if len(args) == 2 else None))
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
