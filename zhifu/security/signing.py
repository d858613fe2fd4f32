"""Ed25519 signing of the ledger journal's block heads.

A block head carries a batch's Merkle root (``zhifu.ledger.merkle``); the bank
signs it with an Ed25519 key and publishes the public key, so anyone can check
a head with ``verify_signature`` and a transfer's inclusion proof against it.

The private key is kept as its 32-byte RFC 8032 seed, stored as standard base64
in a file of mode 0o600. The seed never appears in a ``repr``, an error message
or an exception chain; ``seed_base64()`` is the one deliberate way out (export).
Keys are named by ``key_id``: the first 16 hex characters of SHA-256 over the
raw public key, short enough for logs and block heads, long enough to tell
rotated keys apart.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from zhifu.security.secret_files import (
    SecretFileTooLargeError,
    create_secret_file,
    read_secret_file,
)

SEED_SIZE = 32
PUBLIC_KEY_SIZE = 32
SIGNATURE_SIZE = 64
KEY_ID_HEX_CHARS = 16
KEY_FILE_BYTES_MAX = 1024  # a base64 seed is 44 characters; anything far bigger is not a key


class SigningKeyError(ValueError):
    """A seed, public key or key file is malformed (the message never holds key material)."""


class Ed25519Signer:
    """An Ed25519 private key that signs block heads.

    Build one with ``from_seed``, ``from_base64``, ``generate`` or
    ``load_or_create``; the constructor takes a ``cryptography`` key object.
    """

    __slots__ = ("_private_key", "_public_key_bytes")

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public_key_bytes = private_key.public_key().public_bytes_raw()

    @classmethod
    def from_seed(cls, seed: bytes) -> Ed25519Signer:
        """The signer for a 32-byte seed; raises SigningKeyError on any other size."""
        if not isinstance(seed, bytes) or len(seed) != SEED_SIZE:
            raise SigningKeyError(f"an Ed25519 seed must be {SEED_SIZE} bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(seed))

    @classmethod
    def from_base64(cls, text: str) -> Ed25519Signer:
        """The signer for the standard base64 of a 32-byte seed; raises SigningKeyError."""
        seed = _decode_base64(text, SEED_SIZE, "an Ed25519 seed")
        return cls.from_seed(seed)

    @classmethod
    def generate(cls) -> Ed25519Signer:
        """A signer with a fresh random key."""
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def load_or_create(cls, path: Path) -> Ed25519Signer:
        """The signer whose base64 seed is in ``path``, creating the file if it is absent.

        A new file gets a fresh key and is made by
        :func:`zhifu.security.secret_files.create_secret_file` (mode 0o600,
        complete before it appears, never replacing another process's file).
        Raises SigningKeyError naming ``path``, but not its content, if the
        file exists and does not hold a valid seed.
        """
        try:
            raw = _read_key_file(path)
        except FileNotFoundError:
            signer = cls.generate()
            if create_secret_file(path, signer.seed_base64().encode("ascii") + b"\n"):
                return signer
            raw = _read_key_file(path)  # another process made it first: its key wins
        try:
            return cls.from_base64(raw.decode("ascii"))
        except (UnicodeDecodeError, SigningKeyError):
            # "from None": the decoder's own message could quote the file's bytes.
            raise SigningKeyError(
                f"signing key file {path} is malformed: expected the standard base64 "
                f"of a {SEED_SIZE}-byte Ed25519 seed on one line"
            ) from None

    @property
    def public_key_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_key_bytes

    @property
    def public_key_base64(self) -> str:
        """The public key as standard base64, as published next to block heads."""
        return base64.b64encode(self._public_key_bytes).decode("ascii")

    @property
    def key_id(self) -> str:
        """The key's short name: ``key_id_for(public_key_bytes)``."""
        return key_id_for(self._public_key_bytes)

    def sign(self, data: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``data``."""
        return self._private_key.sign(data)

    def seed_base64(self) -> str:
        """The secret seed as standard base64, for export and the key file only."""
        return base64.b64encode(self._private_key.private_bytes_raw()).decode("ascii")

    def __repr__(self) -> str:
        return f"Ed25519Signer(key_id={self.key_id!r})"


def verify_signature(public_key: bytes, signature: bytes, data: bytes) -> bool:
    """Whether ``signature`` is a valid Ed25519 signature of ``data`` by ``public_key``.

    Never raises: a malformed key or signature is simply False.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        return False
    if not isinstance(signature, bytes) or len(signature) != SIGNATURE_SIZE:
        return False
    if not isinstance(data, bytes):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(public_key).verify(signature, data)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def key_id_for(public_key: bytes) -> str:
    """The first 16 hex characters of SHA-256(public_key).

    Raises SigningKeyError if ``public_key`` is not 32 bytes.
    """
    if not isinstance(public_key, bytes) or len(public_key) != PUBLIC_KEY_SIZE:
        raise SigningKeyError(f"an Ed25519 public key must be {PUBLIC_KEY_SIZE} bytes")
    return hashlib.sha256(public_key).hexdigest()[:KEY_ID_HEX_CHARS]


def public_key_from_base64(text: str) -> bytes:
    """The raw public key from its standard base64; raises SigningKeyError if malformed."""
    public_key = _decode_base64(text, PUBLIC_KEY_SIZE, "an Ed25519 public key")
    try:
        Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError:
        raise SigningKeyError("not a valid Ed25519 public key") from None
    return public_key


def _decode_base64(text: str, size: int, what: str) -> bytes:
    expected = f"{what} must be the standard base64 of {size} bytes"
    if not isinstance(text, str):
        raise SigningKeyError(expected)
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise SigningKeyError(expected) from None
    if len(raw) != size:
        raise SigningKeyError(f"{expected}, got {len(raw)} bytes")
    return raw


def _read_key_file(path: Path) -> bytes:
    try:
        return read_secret_file(path, KEY_FILE_BYTES_MAX)
    except SecretFileTooLargeError:
        raise SigningKeyError(
            f"signing key file {path} is malformed: larger than {KEY_FILE_BYTES_MAX} bytes"
        ) from None
