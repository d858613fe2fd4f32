"""Envelope encryption of sensitive fields (PII) at rest, and blind indexes.

Design note.

Format. ``KeyRing.encrypt`` turns one value into one token, compact bytes::

    version         1 byte: 1, or 2 when the wrapped key is not 60 bytes long
    key id length   1 byte, 1..32
    key id          ASCII, [A-Za-z0-9_-]: the master key that wrapped the data key
    wrapped length  version 2 only: 2 bytes, big-endian, 1..WRAPPED_KEY_BYTES_MAX
    wrapped key     version 1: nonce (12) | AES-256-GCM ciphertext of the data
                    key (32) | tag (16); version 2: whatever the key returned
    nonce           12 bytes
    ciphertext      the value encrypted with the data key | tag (16)

so a version-1 token is ``TOKEN_OVERHEAD_BYTES`` (90) plus the key id plus the
value long. Every value gets a fresh random 256-bit data key; the master key
wraps it and the data key encrypts the value (AES-256-GCM, random 96-bit
nonce). Both use the caller's ``context`` as associated data. The context says
where the value lives, and ``column_context(table, column, row_id)`` makes it
for an encrypted column (``b"identity_customers.mobile_enc|"`` and the row
id's 16 bytes), so a token copied to another row or column does not decrypt.
Use the same context when you write and when you read, and never make it from
the value itself.

Master keys are a port. A ``KeyEncryptionKey`` has a ``key_id`` and wraps and
unwraps data keys with associated data; ``LocalKeyEncryptionKey`` is the one
that ships: a 32-byte key held in memory, AES-256-GCM under a random nonce,
which gives the 60-byte wrapped key of version-1 tokens (the format every token
had before the port; they all still decrypt). A KMS or Vault Transit client
plugs in as another implementation and goes into a ring with
``KeyRing.from_key_encryption_keys([kms_key, local_k1], index_key=...)``:

- ``wrap`` sends the data key to the service and returns the service's
  ciphertext as bytes; ``unwrap`` sends it back. Pass ``aad`` along as the
  service's associated data (Vault Transit's ``associated_data`` on an AEAD
  key; AWS KMS's encryption context, e.g. ``{"zhifu": base64(aad)}``) so the
  service, too, refuses a wrapped key moved to another row or column.
- ``unwrap`` raises ``DecryptionError`` when the service says the ciphertext or
  the associated data is wrong; any other failure (timeout, refused
  credentials) propagates as it is: an outage is not damaged data.
- A remote wrapped key is rarely 60 bytes, so ``encrypt`` writes version 2,
  which carries its length; a 60-byte one is written as version 1. The key's
  id is the one in the token, so it must stay the same for the key's life
  (a Vault key name, a KMS alias). Every encryption and decryption is one call
  to the service; rotation (``zhifu.security.rotation``) is one of each per
  value.

The blind-index key stays local (``index_key``): an index is computed on
every look-up, and a network call per look-up is not worth it.

Rules.

- A token that fails to decrypt for a cryptographic reason (wrong master key,
  wrong context, any byte changed, truncated, extended, not a token at all)
  raises ``DecryptionError`` with one fixed message: callers and attackers
  learn nothing about which check failed.
- A well-formed token that names a key id this ring does not hold raises
  ``UnknownKeyError`` naming that id. Key ids are not secret (they are in the
  clear in every token), and the fix (restore the removed key) is not the fix
  for damaged data. ``key_id_of`` reads the id from the header; only
  ``decrypt`` authenticates it.
- Bad input (wrong types, values past a limit) raises ``EnvelopeError``.
  Limits: ``PLAINTEXT_BYTES_MAX`` per value, ``CONTEXT_BYTES_MAX`` per context
  (and per blind-index purpose), ``KEYS_MAX`` entries per key ring,
  ``KEY_ID_CHARS_MAX`` per key id, ``WRAPPED_KEY_BYTES_MAX`` per wrapped data
  key (a key that returns more is a bug in it: EnvelopeError).
- Key material never appears in a ``repr``, an error message or an exception
  chain, and a ``KeyRing`` or ``LocalKeyEncryptionKey`` refuses to be pickled
  or copied.
- An active master key wraps one data key per encryption under a random 96-bit
  nonce. NIST SP 800-38D keeps one key below 2**32 such encryptions; rotate the
  active key long before that.

Key ring. A ring is an ordered list of ``KEY_ID:BASE64_OF_32_BYTES`` entries:
from ``ZHIFU_MASTER_KEYS`` (comma-separated) or else from the key file
``ZHIFU_MASTER_KEY_FILE`` (one entry per line; blank lines and lines starting
with ``#`` are ignored). The first entry whose id is not ``index`` is the
active key, which encrypts; the others only decrypt (the keys of earlier
rotations). ``load_or_create`` makes a missing file, mode 0o600, with two
lines: ``index:...`` and ``k1:...``, each a fresh random key. It never
replaces an existing file, even one another process made a moment earlier,
because replacing it would lose keys that may already have encrypted data.

Blind indexes. ``blind_index(value, purpose=...)`` is HMAC-SHA256 of the value
under a key derived with HKDF-SHA256 from the ring's ``index`` entry, with the
purpose (``"identity.customers.mobile"``) in the HKDF info, so equal values in
different columns give unrelated indexes. It is deterministic, which is what
makes ``WHERE mobile_index = :index`` work, so it also shows which rows hold
equal values. Anyone with the index key can test guesses offline, so keep it as
secret as the master keys. The ``index`` key is separate from the encryption
keys so that rotating those leaves every index unchanged. It never encrypts,
and changing it changes every index: only do that with a re-indexing job that
recomputes each index column from the decrypted values. A ring without an
``index`` entry can encrypt but ``blind_index`` raises ``UnknownKeyError``.
Normalisation is the caller's job: ``"138 0013 8000"`` and ``"13800138000"``
give different indexes, so normalise (trim, case-fold, E.164, ...) the same
way on write and on look-up.

Rotation procedure (encryption keys).

1. Make a new entry: ``zhifu keys new k2`` or ``generate_key_entry("k2")`` (or
   32 random bytes as standard base64 with a new id).
2. Add it after the active entry on every process and restart them, so every
   reader holds the key before any writer uses it.
3. Move it before the old active entry and restart: new values go under ``k2``.
4. Re-encrypt stored values: ``zhifu keys rotate`` (``zhifu.security.rotation``)
   stores ``rewrap(token, context=...)`` for every registered encrypted column
   whose row is under another key, while the service runs. ``rewrap`` draws a
   fresh data key, so the new token shares nothing with the old one.
5. When ``zhifu keys status`` shows no row under the old id (backups included,
   or accept losing them), remove the old entry. A token under a removed key
   raises ``UnknownKeyError``.

After a suspected key leak (data-leak runbook), do steps 1 to 4 at once with
one restart of every process, run step 4 over every table, then remove and
destroy the leaked key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn, Protocol, runtime_checkable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from zhifu.security.secret_files import (
    SecretFileTooLargeError,
    create_secret_file,
    read_secret_file,
)

if TYPE_CHECKING:
    from zhifu.config import Settings

TOKEN_VERSION = 1  # the wrapped key is WRAPPED_KEY_SIZE bytes (every local key's)
TOKEN_VERSION_LENGTH_PREFIXED = 2  # the wrapped key's length precedes it (remote keys)
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_KEY_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE
WRAPPED_KEY_BYTES_MAX = 1024  # a KMS ciphertext blob of a 32-byte key is a few hundred
WRAPPED_LENGTH_SIZE = 2
TOKEN_OVERHEAD_BYTES = 2 + WRAPPED_KEY_SIZE + NONCE_SIZE + TAG_SIZE  # plus key id and value
# Version 2: plus key id, wrapped key and value.
TOKEN_V2_OVERHEAD_BYTES = 2 + WRAPPED_LENGTH_SIZE + NONCE_SIZE + TAG_SIZE
KEY_ID_CHARS_MAX = 32
PLAINTEXT_BYTES_MAX = 64 * 1024
CONTEXT_BYTES_MAX = 256
KEYS_MAX = 64
TOKEN_BYTES_MAX = TOKEN_OVERHEAD_BYTES + KEY_ID_CHARS_MAX + PLAINTEXT_BYTES_MAX  # version 1
TOKEN_V2_BYTES_MAX = (
    TOKEN_V2_OVERHEAD_BYTES + KEY_ID_CHARS_MAX + WRAPPED_KEY_BYTES_MAX + PLAINTEXT_BYTES_MAX
)
BLIND_INDEX_SIZE = 32
INDEX_KEY_ID = "index"
FIRST_KEY_ID = "k1"
KEY_FILE_BYTES_MAX = 16 * 1024  # 64 entries of at most 78 characters, and room for comments
DECRYPTION_FAILED_MESSAGE = "cannot decrypt: wrong key or context, or the token is damaged"
ENTRY_FORMAT = f"KEY_ID:BASE64 (the standard base64 of {KEY_SIZE} bytes)"
KEY_ID_RULE = f"1 to {KEY_ID_CHARS_MAX} characters from A-Z, a-z, 0-9, '_' and '-'"

_KEY_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{KEY_ID_CHARS_MAX}}}")
# Table and column names in column contexts: SQL identifiers (PostgreSQL keeps 63 bytes).
_SQL_NAME_PATTERN = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
# Changing this changes every blind index ever stored: never do it without re-indexing.
_BLIND_INDEX_INFO_PREFIX = b"zhifu.security.envelope/blind-index/v1|"


class EnvelopeError(ValueError):
    """Bad input to envelope encryption: a wrong type, or a value past a limit.

    The root of this module's errors; no message holds key material or plaintext.
    """


class KeyRingError(EnvelopeError):
    """A key ring spec, setting or key file is malformed; names the source and entry."""


class DecryptionError(EnvelopeError):
    """A token does not decrypt: wrong key, wrong context, damaged or not a token.

    Always carries ``DECRYPTION_FAILED_MESSAGE``, whatever the cause.
    """

    def __init__(self) -> None:
        super().__init__(DECRYPTION_FAILED_MESSAGE)


class UnknownKeyError(EnvelopeError):
    """A token names a key id the ring does not hold, or the ring has no ``index`` key."""


class _TokenParts(NamedTuple):
    key_id: str
    wrapped_key: bytes
    nonce: bytes
    sealed: bytes


_Entry = tuple[str, str, bytes]  # (label such as "entry 2" or "line 3", key id, key)


@runtime_checkable
class KeyEncryptionKey(Protocol):
    """A master key that wraps data keys: local, or held by a KMS or Vault (see the note).

    ``key_id`` is written in the clear in every token it wraps a data key for,
    so it must stay the same for the key's life. ``wrap`` returns 1 to
    ``WRAPPED_KEY_BYTES_MAX`` bytes. ``unwrap`` returns the 32-byte data key, or
    raises DecryptionError when ``wrapped`` was not made by this key with this
    ``aad``; other failures (a KMS outage) propagate as they are. Both use
    ``aad`` as associated data and never put key material in an error.
    """

    @property
    def key_id(self) -> str:
        """The key's id: 1 to 32 characters of [A-Za-z0-9_-], never ``index``."""
        ...

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        """``data_key`` encrypted under this key with ``aad`` as associated data."""
        ...

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        """The data key in ``wrapped``; DecryptionError if it does not decrypt."""
        ...


class LocalKeyEncryptionKey:
    """A 32-byte master key in memory: AES-256-GCM under a random nonce per wrap.

    ``wrap`` gives ``WRAPPED_KEY_SIZE`` (60) bytes, nonce | ciphertext | tag: the
    wrapped key of version-1 tokens. Raises KeyRingError on a malformed id or key.
    """

    __slots__ = ("_cipher", "_key", "_key_id")

    def __init__(self, key_id: str, key: bytes) -> None:
        if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
            raise KeyRingError(f"a key id must be {KEY_ID_RULE}")
        if key_id == INDEX_KEY_ID:
            raise KeyRingError(f"{INDEX_KEY_ID!r} is the blind-index key's id; it never encrypts")
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise KeyRingError(f"key {key_id!r}: the key must be {KEY_SIZE} bytes")
        self._key_id = key_id
        self._key = key  # kept to refuse a ring that repeats a key
        self._cipher = AESGCM(key)

    @property
    def key_id(self) -> str:
        """The key's id, as written in every token it wrapped a data key for."""
        return self._key_id

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        """``data_key`` as nonce (12) | AES-256-GCM ciphertext | tag (16)."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._cipher.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        """The data key in ``wrapped``; DecryptionError if it does not decrypt."""
        if not isinstance(wrapped, bytes) or len(wrapped) != WRAPPED_KEY_SIZE:
            raise DecryptionError
        try:
            return self._cipher.decrypt(wrapped[:NONCE_SIZE], wrapped[NONCE_SIZE:], aad)
        except InvalidTag:
            raise DecryptionError from None

    def __repr__(self) -> str:
        return f"LocalKeyEncryptionKey(key_id={self._key_id!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a LocalKeyEncryptionKey holds a secret key and cannot be pickled")


class KeyRing:
    """Master keys by id: the active one encrypts, all of them decrypt.

    Build one with ``from_spec``, ``load_or_create`` or ``from_settings`` (local
    keys), or ``from_key_encryption_keys`` (any ``KeyEncryptionKey``, such as a
    KMS client); the constructor takes ``(key_id, 32-byte key)`` pairs in order
    and raises KeyRingError on a malformed ring.
    """

    __slots__ = ("_active_key_id", "_index_key", "_keks", "_key_ids")

    def __init__(self, keys: Sequence[tuple[str, bytes]]) -> None:
        self._setup("key ring", [(f"entry {n}", kid, key) for n, (kid, key) in enumerate(keys, 1)])

    @classmethod
    def from_spec(cls, text: str, *, source: str = "key ring spec") -> KeyRing:
        """The ring for comma-separated ``KEY_ID:BASE64`` entries, as in ``ZHIFU_MASTER_KEYS``.

        Raises KeyRingError naming ``source`` and the entry number, never the key.
        """
        if not isinstance(text, str):
            raise KeyRingError(f"{source} must be text: comma-separated {ENTRY_FORMAT} entries")
        pieces = [(f"entry {n}", piece) for n, piece in enumerate(text.split(","), 1)]
        return cls._build(source, _parse_entries(source, pieces))

    @classmethod
    def load_or_create(cls, path: Path) -> KeyRing:
        """The ring in the key file ``path``, creating the file if it is absent.

        A new file holds ``index:...`` and ``k1:...`` with fresh random keys,
        mode 0o600, in missing parent directories (0o700). An existing file is
        never replaced. Raises KeyRingError naming ``path`` and the line, never
        the file's content.
        """
        try:
            raw = _read_key_file(path)
        except FileNotFoundError:
            create_secret_file(path, _new_key_file_text().encode("ascii"))
            raw = _read_key_file(path)  # another process may have made it first: its keys win
        source = f"master key file {path}"
        try:
            text = raw.decode("ascii")
        except UnicodeDecodeError:
            raise KeyRingError(f"{source} is malformed: it is not ASCII text") from None
        pieces = [
            (f"line {n}", line)
            for n, line in enumerate(text.splitlines(), 1)
            if line.strip() and not line.lstrip().startswith("#")
        ]
        return cls._build(source, _parse_entries(source, pieces))

    @classmethod
    def from_settings(cls, settings: Settings) -> KeyRing:
        """``ZHIFU_MASTER_KEYS`` when set, else the ring in ``ZHIFU_MASTER_KEY_FILE``."""
        if settings.master_keys:
            return cls.from_spec(settings.master_keys, source="ZHIFU_MASTER_KEYS")
        return cls.load_or_create(settings.master_key_file)

    @classmethod
    def from_key_encryption_keys(
        cls, keys: Sequence[KeyEncryptionKey], *, index_key: bytes | None = None
    ) -> KeyRing:
        """The ring of ``keys`` in order (the first encrypts), and the blind-index key.

        ``key_ids`` lists ``index`` first when ``index_key`` is given. Raises
        KeyRingError if a key is not a KeyEncryptionKey, an id is malformed,
        ``index`` or repeated, two local keys (or one and ``index_key``) are
        equal, ``index_key`` is not 32 bytes, or the ring holds no key or more
        than ``KEYS_MAX`` entries.
        """
        source = "key ring"
        _check_key_encryption_keys(source, keys, index_key)
        ring = cls.__new__(cls)
        prefix = (INDEX_KEY_ID,) if index_key is not None else ()
        ring._assign(prefix + tuple(key.key_id for key in keys), keys, index_key)
        return ring

    @classmethod
    def _build(cls, source: str, entries: Sequence[_Entry]) -> KeyRing:
        ring = cls.__new__(cls)
        ring._setup(source, entries)
        return ring

    def _setup(self, source: str, entries: Sequence[_Entry]) -> None:
        _check_entries(source, entries)
        keys = [LocalKeyEncryptionKey(kid, key) for _, kid, key in entries if kid != INDEX_KEY_ID]
        index_key = next((key for _, kid, key in entries if kid == INDEX_KEY_ID), None)
        self._assign(tuple(key_id for _, key_id, _ in entries), keys, index_key)

    def _assign(
        self, key_ids: tuple[str, ...], keys: Sequence[KeyEncryptionKey], index_key: bytes | None
    ) -> None:
        self._key_ids = key_ids
        self._keks = {key.key_id: key for key in keys}
        self._active_key_id = keys[0].key_id
        self._index_key = index_key

    @property
    def active_key_id(self) -> str:
        """The id of the key that encrypts: the first entry whose id is not ``index``."""
        return self._active_key_id

    @property
    def key_ids(self) -> tuple[str, ...]:
        """Every entry's id, in the ring's order (``index`` included when present)."""
        return self._key_ids

    def encrypt(self, plaintext: bytes, *, context: bytes) -> bytes:
        """A token for ``plaintext`` under a fresh data key wrapped by the active key.

        Raises EnvelopeError if ``plaintext`` is not bytes or longer than
        ``PLAINTEXT_BYTES_MAX``, or ``context`` is not 1 to ``CONTEXT_BYTES_MAX`` bytes.
        """
        _check_plaintext(plaintext)
        _check_context(context)
        data_key = AESGCM.generate_key(bit_length=KEY_SIZE * 8)
        wrapped = self._keks[self._active_key_id].wrap(data_key, aad=context)
        _check_wrapped(self._active_key_id, wrapped)
        nonce = os.urandom(NONCE_SIZE)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, context)
        key_id = self._active_key_id.encode("ascii")
        if len(wrapped) == WRAPPED_KEY_SIZE:
            header = bytes((TOKEN_VERSION, len(key_id))) + key_id
        else:
            header = bytes((TOKEN_VERSION_LENGTH_PREFIXED, len(key_id))) + key_id
            header += len(wrapped).to_bytes(WRAPPED_LENGTH_SIZE, "big")
        return b"".join((header, wrapped, nonce, sealed))

    def decrypt(self, token: bytes, *, context: bytes) -> bytes:
        """The value in ``token``, which must have been encrypted with this ``context``.

        Raises DecryptionError (one fixed message) if the token does not
        decrypt, UnknownKeyError if its key id is not in the ring, and
        EnvelopeError if ``token`` is not bytes or ``context`` is malformed.
        """
        _check_context(context)
        parts = _parse_token(token)
        master = self._keks.get(parts.key_id)
        if master is None:
            raise UnknownKeyError(
                f"the token is under key id {parts.key_id!r}, which this key ring does not "
                f"hold (it holds {', '.join(self._key_ids)}); restore that key to read it"
            )
        try:
            data_key = master.unwrap(parts.wrapped_key, aad=context)
            if not isinstance(data_key, bytes) or len(data_key) != KEY_SIZE:
                raise DecryptionError
            return AESGCM(data_key).decrypt(parts.nonce, parts.sealed, context)
        except InvalidTag:
            raise DecryptionError from None

    def encrypt_text(self, text: str, *, context: bytes) -> bytes:
        """``encrypt`` of ``text`` as UTF-8; raises EnvelopeError like ``encrypt``."""
        return self.encrypt(_utf8(text, "text"), context=context)

    def decrypt_text(self, token: bytes, *, context: bytes) -> str:
        """``decrypt`` decoded from UTF-8; raises like ``decrypt``, EnvelopeError if not text."""
        plaintext = self.decrypt(token, context=context)
        try:
            return plaintext.decode("utf-8")
        except UnicodeDecodeError:
            raise EnvelopeError("the decrypted value is not UTF-8 text") from None

    def key_id_of(self, token: bytes) -> str:
        """The key id in the token's header (not authenticated until ``decrypt``).

        Raises DecryptionError if the token is malformed.
        """
        return _parse_token(token).key_id

    def needs_rewrap(self, token: bytes) -> bool:
        """Whether ``token`` is under a key other than the active one (see ``rewrap``)."""
        return self.key_id_of(token) != self._active_key_id

    def rewrap(self, token: bytes, *, context: bytes) -> bytes:
        """``token``'s value re-encrypted under the active key with a fresh data key.

        For key rotation and the data-leak runbook; raises like ``decrypt``.
        """
        return self.encrypt(self.decrypt(token, context=context), context=context)

    def blind_index(self, value: str | bytes, *, purpose: str) -> bytes:
        """The 32-byte blind index of ``value`` (UTF-8 when ``str``) for ``purpose``.

        Deterministic for one ring's ``index`` key and one purpose; the caller
        normalises ``value``. Raises UnknownKeyError if the ring has no
        ``index`` entry, and EnvelopeError if ``value`` is longer than
        ``PLAINTEXT_BYTES_MAX`` bytes or ``purpose`` is not 1 to
        ``CONTEXT_BYTES_MAX`` bytes of UTF-8.
        """
        if self._index_key is None:
            raise UnknownKeyError(
                f"this key ring has no {INDEX_KEY_ID!r} entry, which blind indexes need; "
                f"add one ({INDEX_KEY_ID}:BASE64) and keep it for as long as the indexes live"
            )
        data = _utf8(value, "value") if isinstance(value, str) else value
        _check_plaintext(data, what="value")
        info = _BLIND_INDEX_INFO_PREFIX + _purpose_bytes(purpose)
        hkdf = HKDF(algorithm=hashes.SHA256(), length=BLIND_INDEX_SIZE, salt=None, info=info)
        return hmac.new(hkdf.derive(self._index_key), data, hashlib.sha256).digest()

    def __repr__(self) -> str:
        return f"KeyRing(active_key_id={self._active_key_id!r}, key_ids={self._key_ids!r})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("a KeyRing holds secret keys and cannot be pickled or copied")


def column_context(table: str, column: str, row_id: uuid.UUID) -> bytes:
    """The context (associated data) of the value in ``table.column`` of row ``row_id``.

    ``b"table.column|"`` and the id's 16 bytes: the one convention for encrypted
    columns, which ``zhifu.security.rotation`` uses too. Raises EnvelopeError if
    ``table`` or ``column`` is not an SQL name (1 to 63 characters of
    [A-Za-z0-9_], not starting with a digit) or ``row_id`` is not a UUID.
    """
    for what, name in (("table", table), ("column", column)):
        if not isinstance(name, str) or not _SQL_NAME_PATTERN.fullmatch(name):
            raise EnvelopeError(
                f"the {what} name must be 1 to 63 characters of A-Z, a-z, 0-9 and '_',"
                " not starting with a digit"
            )
    if not isinstance(row_id, uuid.UUID):
        raise EnvelopeError("the row id must be a uuid.UUID")
    return f"{table}.{column}|".encode("ascii") + row_id.bytes


def generate_key_entry(key_id: str) -> str:
    """A new ``KEY_ID:BASE64`` entry with a fresh random key (secret: for the key file only).

    Raises KeyRingError if ``key_id`` is not 1 to 32 characters of [A-Za-z0-9_-].
    """
    if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
        raise KeyRingError(f"a key id must be {KEY_ID_RULE}")
    return f"{key_id}:{base64.b64encode(os.urandom(KEY_SIZE)).decode('ascii')}"


def _parse_entries(source: str, pieces: Sequence[tuple[str, str]]) -> list[_Entry]:
    _check_entry_count(source, len(pieces))
    return [_parse_entry(source, label, piece) for label, piece in pieces]


def _parse_entry(source: str, label: str, piece: str) -> _Entry:
    """One ``KEY_ID:BASE64`` entry; errors never quote it, as it may be a key."""
    key_id, colon, key_text = piece.strip().partition(":")
    if not colon:
        what = "is empty" if not piece.strip() else "is malformed"
        raise KeyRingError(f"{source} {label} {what}: expected {ENTRY_FORMAT}")
    key_id = key_id.strip()
    if not _KEY_ID_PATTERN.fullmatch(key_id):
        raise KeyRingError(f"{source} {label}: the key id must be {KEY_ID_RULE}")
    expected = f"{source} {label}: the key must be the standard base64 of {KEY_SIZE} bytes"
    try:
        key = base64.b64decode(key_text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyRingError(expected) from None
    if len(key) != KEY_SIZE:
        raise KeyRingError(f"{expected}, got {len(key)} bytes")
    return label, key_id, key


def _check_entry_count(source: str, count: int) -> None:
    if count == 0:
        raise KeyRingError(f"{source} holds no keys: expected {ENTRY_FORMAT} entries")
    if count > KEYS_MAX:
        raise KeyRingError(f"{source} holds {count} entries; at most {KEYS_MAX} are allowed")


def _check_entries(source: str, entries: Sequence[_Entry]) -> None:
    """Ids well-formed and distinct, keys 32 bytes and distinct, one encryption key at least."""
    _check_entry_count(source, len(entries))
    label_by_id: dict[str, str] = {}
    label_by_key: dict[bytes, str] = {}
    for label, key_id, key in entries:
        if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
            raise KeyRingError(f"{source} {label}: the key id must be {KEY_ID_RULE}")
        if not isinstance(key, bytes) or len(key) != KEY_SIZE:
            raise KeyRingError(f"{source} {label}: the key must be {KEY_SIZE} bytes")
        if key_id in label_by_id:
            raise KeyRingError(f"{source} {label} repeats the key id of {label_by_id[key_id]}")
        if key in label_by_key:
            raise KeyRingError(
                f"{source} {label} repeats the key of {label_by_key[key]}: "
                "every entry needs its own random key"
            )
        label_by_id[key_id] = label
        label_by_key[key] = label
    if all(key_id == INDEX_KEY_ID for _, key_id, _ in entries):
        raise KeyRingError(
            f"{source} holds no encryption key: add an entry whose id is not {INDEX_KEY_ID!r}"
        )


def _parse_token(token: bytes) -> _TokenParts:
    """Split a token; anything that is not a well-formed token is DecryptionError."""
    if not isinstance(token, bytes):
        raise EnvelopeError("a token must be bytes")
    if len(token) < 2 or token[0] not in (TOKEN_VERSION, TOKEN_VERSION_LENGTH_PREFIXED):
        raise DecryptionError
    id_end = 2 + token[1]
    if token[0] == TOKEN_VERSION:
        if not TOKEN_OVERHEAD_BYTES + token[1] <= len(token) <= TOKEN_BYTES_MAX:
            raise DecryptionError
        wrap_start, wrap_size = id_end, WRAPPED_KEY_SIZE
    else:
        wrap_start = id_end + WRAPPED_LENGTH_SIZE
        wrap_size = int.from_bytes(token[id_end:wrap_start], "big")
        value_size = len(token) - TOKEN_V2_OVERHEAD_BYTES - token[1] - wrap_size
        if (
            len(token) < wrap_start
            or not 1 <= wrap_size <= WRAPPED_KEY_BYTES_MAX
            or not 0 <= value_size <= PLAINTEXT_BYTES_MAX
        ):
            raise DecryptionError
    key_id = token[2:id_end].decode("latin-1")
    if not _KEY_ID_PATTERN.fullmatch(key_id) or key_id == INDEX_KEY_ID:
        raise DecryptionError
    wrap_end = wrap_start + wrap_size
    nonce_end = wrap_end + NONCE_SIZE
    return _TokenParts(
        key_id=key_id,
        wrapped_key=token[wrap_start:wrap_end],
        nonce=token[wrap_end:nonce_end],
        sealed=token[nonce_end:],
    )


def _check_wrapped(key_id: str, wrapped: bytes) -> None:
    """A key's ``wrap`` gave bytes the token can carry (else the key is broken)."""
    if not isinstance(wrapped, bytes) or not 1 <= len(wrapped) <= WRAPPED_KEY_BYTES_MAX:
        raise EnvelopeError(
            f"key {key_id!r} wrapped a data key into something other than 1 to"
            f" {WRAPPED_KEY_BYTES_MAX} bytes"
        )


def _check_key_encryption_keys(
    source: str, keys: Sequence[KeyEncryptionKey], index_key: bytes | None
) -> None:
    """Keys are ports with good distinct ids; local keys and the index key distinct."""
    if index_key is not None and (not isinstance(index_key, bytes) or len(index_key) != KEY_SIZE):
        raise KeyRingError(f"{source}: the {INDEX_KEY_ID!r} key must be {KEY_SIZE} bytes")
    if not keys:
        raise KeyRingError(
            f"{source} holds no encryption key: add a key whose id is not {INDEX_KEY_ID!r}"
        )
    _check_entry_count(source, len(keys) + (index_key is not None))
    seen_ids: set[str] = set()
    seen_keys = {index_key} if index_key is not None else set()
    for number, key in enumerate(keys, 1):
        label = f"{source} key {number}"
        if not isinstance(key, KeyEncryptionKey):
            raise KeyRingError(f"{label} is not a KeyEncryptionKey (key_id, wrap, unwrap)")
        key_id = key.key_id
        if not isinstance(key_id, str) or not _KEY_ID_PATTERN.fullmatch(key_id):
            raise KeyRingError(f"{label}: the key id must be {KEY_ID_RULE}")
        if key_id == INDEX_KEY_ID:
            raise KeyRingError(f"{label}: {INDEX_KEY_ID!r} is the blind-index key's id")
        if key_id in seen_ids:
            raise KeyRingError(f"{label} repeats the key id {key_id!r}")
        seen_ids.add(key_id)
        if isinstance(key, LocalKeyEncryptionKey):
            if key._key in seen_keys:
                raise KeyRingError(f"{label} repeats a key: every key needs its own random key")
            seen_keys.add(key._key)


def _check_plaintext(plaintext: bytes, *, what: str = "plaintext") -> None:
    if not isinstance(plaintext, bytes):
        raise EnvelopeError(f"the {what} must be bytes (or str for the *_text methods)")
    if len(plaintext) > PLAINTEXT_BYTES_MAX:
        raise EnvelopeError(
            f"the {what} is {len(plaintext)} bytes; at most {PLAINTEXT_BYTES_MAX} are allowed"
        )


def _check_context(context: bytes) -> None:
    if not isinstance(context, bytes):
        raise EnvelopeError("the context must be bytes, such as b'table.column|row id'")
    if not 1 <= len(context) <= CONTEXT_BYTES_MAX:
        raise EnvelopeError(
            f"the context must be 1 to {CONTEXT_BYTES_MAX} bytes, got {len(context)}"
        )


def _purpose_bytes(purpose: str) -> bytes:
    if not isinstance(purpose, str):
        raise EnvelopeError("the purpose must be str, such as 'identity.customers.mobile'")
    encoded = _utf8(purpose, "purpose")
    if not 1 <= len(encoded) <= CONTEXT_BYTES_MAX:
        raise EnvelopeError(
            f"the purpose must be 1 to {CONTEXT_BYTES_MAX} bytes of UTF-8, got {len(encoded)}"
        )
    return encoded


def _utf8(text: str, what: str) -> bytes:
    if not isinstance(text, str):
        raise EnvelopeError(f"the {what} must be str")
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise EnvelopeError(f"the {what} is not valid Unicode text (lone surrogate)") from None


def _new_key_file_text() -> str:
    return f"{generate_key_entry(INDEX_KEY_ID)}\n{generate_key_entry(FIRST_KEY_ID)}\n"


def _read_key_file(path: Path) -> bytes:
    try:
        return read_secret_file(path, KEY_FILE_BYTES_MAX)
    except SecretFileTooLargeError:
        raise KeyRingError(
            f"master key file {path} is malformed: larger than {KEY_FILE_BYTES_MAX} bytes"
        ) from None
