"""Envelope encryption of sensitive fields (PII) at rest, and blind indexes.

Design note.

Format. ``KeyRing.encrypt`` turns one value into one token, compact bytes::

    version         1 byte, always 1
    key id length   1 byte, 1..32
    key id          ASCII, [A-Za-z0-9_-]: the master key that wrapped the data key
    wrapped key     nonce (12) | AES-256-GCM ciphertext of the data key (32) | tag (16)
    nonce           12 bytes
    ciphertext      the value encrypted with the data key | tag (16)

so a token is ``TOKEN_OVERHEAD_BYTES`` (90) plus the key id plus the value
long. Every value gets a fresh random 256-bit data key; the master key wraps it
(AES-256-GCM under its own random nonce) and the data key encrypts the value
(AES-256-GCM, random 96-bit nonce). Both use the caller's ``context`` as
associated data. The context says where the value lives, for example
``b"identity.customers.resident_id|" + row_id``, so a token copied to another
row or column does not decrypt. Use the same context when you write and when
you read, and never make it from the value itself.

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
  ``KEY_ID_CHARS_MAX`` per key id.
- Key material never appears in a ``repr``, an error message or an exception
  chain, and a ``KeyRing`` refuses to be pickled or copied.
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

1. Make a new entry: ``generate_key_entry("k2")`` (or 32 random bytes as
   standard base64 with a new id).
2. Add it after the active entry on every process and restart them, so every
   reader holds the key before any writer uses it.
3. Move it before the old active entry and restart: new values go under ``k2``.
4. Re-encrypt stored values: for each token where ``needs_rewrap(token)`` is
   true, store ``rewrap(token, context=...)`` (same context as when written).
   ``rewrap`` draws a fresh data key, so the new token shares nothing with the
   old one.
5. When ``key_id_of`` finds no stored token under the old id (backups
   included, or accept losing them), remove the old entry. A token under a
   removed key raises ``UnknownKeyError``.

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
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, NoReturn

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

TOKEN_VERSION = 1
KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
WRAPPED_KEY_SIZE = NONCE_SIZE + KEY_SIZE + TAG_SIZE
TOKEN_OVERHEAD_BYTES = 2 + WRAPPED_KEY_SIZE + NONCE_SIZE + TAG_SIZE  # plus key id and value
KEY_ID_CHARS_MAX = 32
PLAINTEXT_BYTES_MAX = 64 * 1024
CONTEXT_BYTES_MAX = 256
KEYS_MAX = 64
TOKEN_BYTES_MAX = TOKEN_OVERHEAD_BYTES + KEY_ID_CHARS_MAX + PLAINTEXT_BYTES_MAX
BLIND_INDEX_SIZE = 32
INDEX_KEY_ID = "index"
FIRST_KEY_ID = "k1"
KEY_FILE_BYTES_MAX = 16 * 1024  # 64 entries of at most 78 characters, and room for comments
DECRYPTION_FAILED_MESSAGE = "cannot decrypt: wrong key or context, or the token is damaged"
ENTRY_FORMAT = f"KEY_ID:BASE64 (the standard base64 of {KEY_SIZE} bytes)"
KEY_ID_RULE = f"1 to {KEY_ID_CHARS_MAX} characters from A-Z, a-z, 0-9, '_' and '-'"

_KEY_ID_PATTERN = re.compile(rf"[A-Za-z0-9_-]{{1,{KEY_ID_CHARS_MAX}}}")
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
    wrap_nonce: bytes
    wrapped_key: bytes
    nonce: bytes
    sealed: bytes


_Entry = tuple[str, str, bytes]  # (label such as "entry 2" or "line 3", key id, key)


class KeyRing:
    """Master keys by id: the active one encrypts, all of them decrypt.

    Build one with ``from_spec``, ``load_or_create`` or ``from_settings``; the
    constructor takes ``(key_id, 32-byte key)`` pairs in order and raises
    KeyRingError on a malformed ring.
    """

    __slots__ = ("_active_key_id", "_ciphers", "_index_key", "_key_ids")

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
    def _build(cls, source: str, entries: Sequence[_Entry]) -> KeyRing:
        ring = cls.__new__(cls)
        ring._setup(source, entries)
        return ring

    def _setup(self, source: str, entries: Sequence[_Entry]) -> None:
        _check_entries(source, entries)
        self._key_ids = tuple(key_id for _, key_id, _ in entries)
        self._ciphers = {kid: AESGCM(key) for _, kid, key in entries if kid != INDEX_KEY_ID}
        self._active_key_id = next(iter(self._ciphers))
        self._index_key = next((key for _, kid, key in entries if kid == INDEX_KEY_ID), None)

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
        wrap_nonce = os.urandom(NONCE_SIZE)
        wrapped = self._ciphers[self._active_key_id].encrypt(wrap_nonce, data_key, context)
        nonce = os.urandom(NONCE_SIZE)
        sealed = AESGCM(data_key).encrypt(nonce, plaintext, context)
        key_id = self._active_key_id.encode("ascii")
        header = bytes((TOKEN_VERSION, len(key_id))) + key_id
        return b"".join((header, wrap_nonce, wrapped, nonce, sealed))

    def decrypt(self, token: bytes, *, context: bytes) -> bytes:
        """The value in ``token``, which must have been encrypted with this ``context``.

        Raises DecryptionError (one fixed message) if the token does not
        decrypt, UnknownKeyError if its key id is not in the ring, and
        EnvelopeError if ``token`` is not bytes or ``context`` is malformed.
        """
        _check_context(context)
        parts = _parse_token(token)
        master = self._ciphers.get(parts.key_id)
        if master is None:
            raise UnknownKeyError(
                f"the token is under key id {parts.key_id!r}, which this key ring does not "
                f"hold (it holds {', '.join(self._key_ids)}); restore that key to read it"
            )
        try:
            data_key = master.decrypt(parts.wrap_nonce, parts.wrapped_key, context)
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
    """Split a token; anything that is not a well-formed version-1 token is DecryptionError."""
    if not isinstance(token, bytes):
        raise EnvelopeError("a token must be bytes")
    if len(token) < 2 or token[0] != TOKEN_VERSION:
        raise DecryptionError
    id_end = 2 + token[1]
    if not TOKEN_OVERHEAD_BYTES + token[1] <= len(token) <= TOKEN_BYTES_MAX:
        raise DecryptionError
    key_id = token[2:id_end].decode("latin-1")
    if not _KEY_ID_PATTERN.fullmatch(key_id) or key_id == INDEX_KEY_ID:
        raise DecryptionError
    wrap_end = id_end + WRAPPED_KEY_SIZE
    nonce_end = wrap_end + NONCE_SIZE
    return _TokenParts(
        key_id=key_id,
        wrap_nonce=token[id_end : id_end + NONCE_SIZE],
        wrapped_key=token[id_end + NONCE_SIZE : wrap_end],
        nonce=token[wrap_end:nonce_end],
        sealed=token[nonce_end:],
    )


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
