"""Encrypted Temporal payloads: an AES-256-GCM payload codec, its keyring and the one data converter.

Every payload a client or worker hands to Temporal (workflow and activity inputs and results,
updates, queries, signals, memos, and failure messages and stack traces) is encrypted before it
leaves the process, so the Temporal server, its database and its UI hold ciphertext only. Search
attributes are not payloads and stay readable: they carry ids and statuses, never names or text.

Each encrypted payload names its key (`encryption-key-id`), so keys rotate without a flag day: the
active key encrypts, every configured key decrypts. A payload without our encoding (histories
written before encryption, or the UI's "decoded" export) passes through unchanged, so stored
histories still replay.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Self

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import PydanticPayloadConverter
from temporalio.converter import (
    ActivitySerializationContext,
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
    SerializationContext,
    WithSerializationContext,
    WorkflowSerializationContext,
)

if TYPE_CHECKING:
    from healthcare.settings import Settings

ENCODING = b"binary/encrypted"
KEY_ID = "encryption-key-id"
# Plain metadata (an id, never patient data): lets the codec server audit which workflow was decoded,
# since the Temporal UI's decode request names only the namespace.
WORKFLOW_ID = "workflow-id"
_NONCE_BYTES = 12
_AAD_PREFIX = b"healthcare-payload-v1:"
_KEY_ID_PATTERN = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


class CodecError(Exception):
    """A payload that cannot be decrypted: unknown key, or tampered or truncated ciphertext."""


@dataclass(frozen=True)
class Keyring:
    """Payload keys by id; `active` encrypts, all of them decrypt."""

    keys: Mapping[str, bytes]
    active: str

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ValueError(f"the active payload key {self.active!r} is not among the configured keys")
        for key_id, key in self.keys.items():
            if not _KEY_ID_PATTERN.match(key_id):
                raise ValueError(f"payload key id {key_id!r} must be 1-64 of A-Z a-z 0-9 . _ -")
            if len(key) != 32:
                raise ValueError(f"payload key {key_id!r} must be 32 bytes (AES-256), not {len(key)}")

    @classmethod
    def parse(cls, spec: str, active: str) -> Keyring:
        """`id1:base64key,id2:base64key` (what HC_PAYLOAD_KEYS holds) and the active id."""
        keys: dict[str, bytes] = {}
        for item in filter(None, (part.strip() for part in spec.split(","))):
            key_id, sep, encoded = item.partition(":")
            if not sep:
                raise ValueError("payload keys are `id:base64key` pairs separated by commas")
            if key_id in keys:
                raise ValueError(f"payload key id {key_id!r} is given twice")
            try:
                keys[key_id] = base64.b64decode(encoded.replace("-", "+").replace("_", "/"), validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ValueError(f"payload key {key_id!r} is not valid base64") from exc
        return cls(keys=keys, active=active)


def generate_key() -> str:
    """A new random AES-256 key, base64, for HC_PAYLOAD_KEYS."""
    return base64.b64encode(os.urandom(32)).decode()


class EncryptionCodec(PayloadCodec, WithSerializationContext):
    """AES-256-GCM over each serialized payload; the key id is bound to the ciphertext."""

    def __init__(self, keyring: Keyring, *, workflow_id: str | None = None) -> None:
        self._keyring = keyring
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keyring.keys.items()}
        self._workflow_id = workflow_id

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def with_context(self, context: SerializationContext) -> Self:
        workflow_id = None
        if isinstance(context, WorkflowSerializationContext | ActivitySerializationContext):
            workflow_id = context.workflow_id
        if workflow_id == self._workflow_id:
            return self
        clone = type(self).__new__(type(self))
        clone._keyring, clone._ciphers, clone._workflow_id = self._keyring, self._ciphers, workflow_id
        return clone

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.encrypt(p) for p in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self.decrypt(p) for p in payloads]

    def encrypt(self, payload: Payload) -> Payload:
        key_id = self._keyring.active
        nonce = os.urandom(_NONCE_BYTES)
        aad = _AAD_PREFIX + key_id.encode()
        sealed = self._ciphers[key_id].encrypt(nonce, payload.SerializeToString(), aad)
        metadata = {"encoding": ENCODING, KEY_ID: key_id.encode()}
        if self._workflow_id:
            metadata[WORKFLOW_ID] = self._workflow_id.encode()
        return Payload(metadata=metadata, data=nonce + sealed)

    def decrypt(self, payload: Payload) -> Payload:
        if payload.metadata.get("encoding") != ENCODING:
            return payload  # not ours: written before encryption, or already decoded
        key_id = payload.metadata.get(KEY_ID, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise CodecError(f"payload encrypted with unknown key {key_id!r}; add it to HC_PAYLOAD_KEYS")
        if len(payload.data) <= _NONCE_BYTES:
            raise CodecError("encrypted payload is truncated")
        try:
            plain = cipher.decrypt(
                payload.data[:_NONCE_BYTES], payload.data[_NONCE_BYTES:], _AAD_PREFIX + key_id.encode()
            )
        except InvalidTag as exc:
            raise CodecError(f"encrypted payload does not authenticate under key {key_id!r}") from exc
        return Payload.FromString(plain)


def iter_payloads(message: Message) -> Iterator[Payload]:
    """Every Payload inside a protobuf message (a history event, a whole history)."""
    if isinstance(message, Payload):
        yield message
        return
    for field, value in message.ListFields():
        if field.type != FieldDescriptor.TYPE_MESSAGE:
            continue
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            items = value.values()
        elif field.label == FieldDescriptor.LABEL_REPEATED:  # type: ignore[attr-defined]
            items = value
        else:
            items = [value]
        for item in items:
            if isinstance(item, Message):
                yield from iter_payloads(item)


def check_decodable(codec: EncryptionCodec, messages: Sequence[Message]) -> None:
    """Raise CodecError naming the first payload these keys cannot decrypt."""
    for message in messages:
        for payload in iter_payloads(message):
            codec.decrypt(payload)


def keyring(settings: Settings) -> Keyring:
    return Keyring.parse(settings.payload_keys.get_secret_value(), settings.payload_key_id)


def data_converter(keys: Settings | Keyring) -> DataConverter:
    """The converter of every Temporal client, worker and replayer: pydantic models, encrypted,
    with failure messages and stack traces moved into (encrypted) encoded attributes."""
    ring = keys if isinstance(keys, Keyring) else keyring(keys)
    return DataConverter(
        payload_converter_class=PydanticPayloadConverter,
        payload_codec=EncryptionCodec(ring),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
