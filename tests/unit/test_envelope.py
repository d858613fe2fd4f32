"""Envelope encryption: round trips, tampering, rotation, blind indexes, key files, limits."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import os
import pickle
import stat
import uuid
from pathlib import Path

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from hypothesis import given, settings
from hypothesis import strategies as st

from zhifu.config import load_settings
from zhifu.security import envelope
from zhifu.security.envelope import (
    CONTEXT_BYTES_MAX,
    DECRYPTION_FAILED_MESSAGE,
    KEY_FILE_BYTES_MAX,
    KEY_ID_CHARS_MAX,
    KEYS_MAX,
    PLAINTEXT_BYTES_MAX,
    TOKEN_BYTES_MAX,
    TOKEN_OVERHEAD_BYTES,
    TOKEN_V2_BYTES_MAX,
    TOKEN_V2_OVERHEAD_BYTES,
    WRAPPED_KEY_BYTES_MAX,
    WRAPPED_KEY_SIZE,
    DecryptionError,
    EnvelopeError,
    KeyEncryptionKey,
    KeyRing,
    KeyRingError,
    LocalKeyEncryptionKey,
    UnknownKeyError,
    column_context,
    generate_key_entry,
)

CONTEXT = b"identity.customers.resident_id|cus_0001"
OTHER_ROW = b"identity.customers.resident_id|cus_0002"
OTHER_COLUMN = b"identity.customers.mobile|cus_0001"
VALUE = b"110101199003074578"

INDEX_KEY = bytes(range(32))
K1_KEY = bytes(range(32, 64))
K2_KEY = bytes(range(64, 96))


def entry(key_id: str, key: bytes) -> str:
    return f"{key_id}:{base64.b64encode(key).decode()}"


def make_ring(*key_ids: str) -> KeyRing:
    return KeyRing.from_spec(",".join(generate_key_entry(key_id) for key_id in key_ids))


RING = make_ring("index", "k1")


def assert_generic_decryption_error(excinfo: pytest.ExceptionInfo[DecryptionError]) -> None:
    assert type(excinfo.value) is DecryptionError
    assert str(excinfo.value) == DECRYPTION_FAILED_MESSAGE
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


# --- round trips and the token format ---


@settings(max_examples=200)
@given(
    plaintext=st.binary(max_size=2048),
    context=st.binary(min_size=1, max_size=CONTEXT_BYTES_MAX),
)
def test_round_trip(plaintext: bytes, context: bytes) -> None:
    token = RING.encrypt(plaintext, context=context)
    assert RING.decrypt(token, context=context) == plaintext
    assert len(token) == TOKEN_OVERHEAD_BYTES + len("k1") + len(plaintext)
    assert RING.key_id_of(token) == "k1"
    assert not RING.needs_rewrap(token)


@settings(max_examples=100)
@given(text=st.text(max_size=200))
def test_text_round_trip(text: str) -> None:
    token = RING.encrypt_text(text, context=CONTEXT)
    assert RING.decrypt_text(token, context=CONTEXT) == text


def test_token_layout() -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    assert token[0] == 1  # version
    assert token[1] == 2  # key id length
    assert token[2:4] == b"k1"
    assert len(token) == 1 + 1 + 2 + (12 + 32 + 16) + 12 + len(VALUE) + 16
    assert VALUE not in token


def test_two_encryptions_of_one_value_differ() -> None:
    first = RING.encrypt(VALUE, context=CONTEXT)
    second = RING.encrypt(VALUE, context=CONTEXT)
    assert first != second
    assert first[4:16] != second[4:16]  # wrap nonces
    assert RING.decrypt(first, context=CONTEXT) == RING.decrypt(second, context=CONTEXT) == VALUE


def test_empty_value_round_trips() -> None:
    assert RING.decrypt(RING.encrypt(b"", context=CONTEXT), context=CONTEXT) == b""
    assert RING.decrypt_text(RING.encrypt_text("", context=CONTEXT), context=CONTEXT) == ""


def test_decrypt_text_of_non_utf8_value() -> None:
    token = RING.encrypt(b"\xff\xfe", context=CONTEXT)
    with pytest.raises(EnvelopeError, match="not UTF-8") as excinfo:
        RING.decrypt_text(token, context=CONTEXT)
    assert not isinstance(excinfo.value, DecryptionError)
    assert excinfo.value.__cause__ is None


# --- failures: one generic message ---


@pytest.mark.parametrize("context", [OTHER_ROW, OTHER_COLUMN, CONTEXT + b"\x00", CONTEXT[:-1]])
def test_wrong_context_fails(context: bytes) -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    with pytest.raises(DecryptionError) as excinfo:
        RING.decrypt(token, context=context)
    assert_generic_decryption_error(excinfo)


def test_every_tampered_byte_fails() -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    key_id_bytes = range(2, 4)
    for position in range(len(token)):
        for mask in (0x01, 0x80, 0xFF):
            tampered = bytearray(token)
            tampered[position] ^= mask
            if position == 1 or position in key_id_bytes:
                # The header names the key; a changed name may be a well-formed id the ring
                # does not hold, which is UnknownKeyError. Never a successful decryption.
                with pytest.raises((DecryptionError, UnknownKeyError)):
                    RING.decrypt(bytes(tampered), context=CONTEXT)
                continue
            with pytest.raises(DecryptionError) as excinfo:
                RING.decrypt(bytes(tampered), context=CONTEXT)
            assert_generic_decryption_error(excinfo)


@settings(max_examples=200)
@given(data=st.data())
def test_tampering_anywhere_never_decrypts(data: st.DataObject) -> None:
    plaintext = data.draw(st.binary(max_size=64))
    token = RING.encrypt(plaintext, context=CONTEXT)
    position = data.draw(st.integers(0, len(token) - 1))
    mask = data.draw(st.integers(1, 255))
    tampered = bytearray(token)
    tampered[position] ^= mask
    with pytest.raises((DecryptionError, UnknownKeyError)):
        RING.decrypt(bytes(tampered), context=CONTEXT)


def test_changed_key_id_to_another_key_in_the_ring_fails_generically() -> None:
    ring = make_ring("index", "k1", "k2")
    token = ring.encrypt(VALUE, context=CONTEXT)
    swapped = token[:3] + b"2" + token[4:]  # k1 -> k2, which the ring holds
    with pytest.raises(DecryptionError) as excinfo:
        ring.decrypt(swapped, context=CONTEXT)
    assert_generic_decryption_error(excinfo)


def test_truncated_or_extended_token_fails() -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    for length in range(len(token)):
        with pytest.raises(DecryptionError) as excinfo:
            RING.decrypt(token[:length], context=CONTEXT)
        assert_generic_decryption_error(excinfo)
    with pytest.raises(DecryptionError) as excinfo:
        RING.decrypt(token + b"\x00", context=CONTEXT)
    assert_generic_decryption_error(excinfo)


@pytest.mark.parametrize(
    "token",
    [
        b"",
        b"\x01",
        b"\x02" + b"\x02k1" + b"\x00" * 100,  # unknown version
        b"\x00" * 200,
        b"\x01\x00" + b"\x00" * 100,  # empty key id
        b"\x01\x21" + b"a" * 33 + b"\x00" * 100,  # key id too long
        b"\x01\x02k!" + b"\x00" * 100,  # key id with a forbidden character
        b"\x01\x02k\xe9" + b"\x00" * 100,  # key id not ASCII
        b"\x01\x05index" + b"\x00" * 100,  # the index key never encrypts
        b"\x01\x02k1" + b"\x00" * 10,  # too short for a token
    ],
)
def test_malformed_token_is_a_decryption_error(token: bytes) -> None:
    with pytest.raises(DecryptionError) as excinfo:
        RING.decrypt(token, context=CONTEXT)
    assert_generic_decryption_error(excinfo)
    with pytest.raises(DecryptionError):
        RING.key_id_of(token)
    with pytest.raises(DecryptionError):
        RING.needs_rewrap(token)


def test_well_formed_header_over_garbage_is_a_decryption_error() -> None:
    token = b"\x01\x02k1" + bytes(range(200))
    assert RING.key_id_of(token) == "k1"
    with pytest.raises(DecryptionError) as excinfo:
        RING.decrypt(token, context=CONTEXT)
    assert_generic_decryption_error(excinfo)


def test_other_key_ring_with_the_same_ids_fails_generically() -> None:
    other = make_ring("index", "k1")
    token = RING.encrypt(VALUE, context=CONTEXT)
    with pytest.raises(DecryptionError) as excinfo:
        other.decrypt(token, context=CONTEXT)
    assert_generic_decryption_error(excinfo)


def test_unknown_key_id() -> None:
    token = make_ring("k9").encrypt(VALUE, context=CONTEXT)
    with pytest.raises(UnknownKeyError, match="'k9'") as excinfo:
        RING.decrypt(token, context=CONTEXT)
    assert not isinstance(excinfo.value, DecryptionError)
    assert RING.key_id_of(token) == "k9"
    assert RING.needs_rewrap(token)


def test_error_hierarchy() -> None:
    assert issubclass(EnvelopeError, ValueError)
    for error in (DecryptionError, UnknownKeyError, KeyRingError):
        assert issubclass(error, EnvelopeError)
    assert not issubclass(UnknownKeyError, DecryptionError)


# --- rotation ---


def test_rotation() -> None:
    old_spec = entry("index", INDEX_KEY) + "," + entry("k1", K1_KEY)
    old_ring = KeyRing.from_spec(old_spec)
    old_token = old_ring.encrypt(VALUE, context=CONTEXT)

    rotated = KeyRing.from_spec(
        entry("index", INDEX_KEY) + "," + entry("k2", K2_KEY) + "," + entry("k1", K1_KEY)
    )
    assert rotated.active_key_id == "k2"
    assert rotated.decrypt(old_token, context=CONTEXT) == VALUE
    assert rotated.needs_rewrap(old_token)

    new_token = rotated.rewrap(old_token, context=CONTEXT)
    assert rotated.key_id_of(new_token) == "k2"
    assert not rotated.needs_rewrap(new_token)
    assert rotated.decrypt(new_token, context=CONTEXT) == VALUE
    assert new_token[4:] != old_token[4:]  # a fresh data key and nonces, nothing shared

    retired = KeyRing.from_spec(entry("index", INDEX_KEY) + "," + entry("k2", K2_KEY))
    assert retired.decrypt(new_token, context=CONTEXT) == VALUE
    with pytest.raises(UnknownKeyError, match="'k1'"):
        retired.decrypt(old_token, context=CONTEXT)
    # Rotating the encryption keys leaves every blind index as it was.
    purpose = "identity.customers.mobile"
    assert retired.blind_index("13800138000", purpose=purpose) == old_ring.blind_index(
        "13800138000", purpose=purpose
    )


def test_rewrap_with_the_wrong_context_fails() -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    with pytest.raises(DecryptionError):
        RING.rewrap(token, context=OTHER_ROW)


def test_rewrap_under_the_active_key_still_draws_a_fresh_data_key() -> None:
    token = RING.encrypt(VALUE, context=CONTEXT)
    again = RING.rewrap(token, context=CONTEXT)
    assert again != token
    assert RING.decrypt(again, context=CONTEXT) == VALUE


def test_active_key_is_the_first_that_is_not_index() -> None:
    ring = KeyRing([("k3", K2_KEY), ("index", INDEX_KEY), ("k1", K1_KEY)])
    assert ring.active_key_id == "k3"
    assert ring.key_ids == ("k3", "index", "k1")
    assert ring.key_id_of(ring.encrypt(VALUE, context=CONTEXT)) == "k3"
    assert KeyRing([("index", INDEX_KEY), ("k1", K1_KEY)]).active_key_id == "k1"


# --- blind indexes ---


def test_blind_index_known_answer() -> None:
    # Pins the derivation: a change here would silently break every stored index.
    ring = KeyRing([("index", INDEX_KEY), ("k1", K1_KEY)])
    purpose = "identity.customers.mobile"
    index_key = HKDF(
        algorithm=hashes.SHA256(),
        length=32,
        salt=None,
        info=b"zhifu.security.envelope/blind-index/v1|" + purpose.encode(),
    ).derive(INDEX_KEY)
    expected = hmac.new(index_key, b"13800138000", hashlib.sha256).digest()
    assert ring.blind_index("13800138000", purpose=purpose) == expected
    assert ring.blind_index(b"13800138000", purpose=purpose) == expected
    assert len(expected) == 32


def test_blind_index_deterministic_per_purpose_and_distinct_across_purposes_and_rings() -> None:
    mobile, email = "identity.customers.mobile", "identity.customers.email"
    first = RING.blind_index("13800138000", purpose=mobile)
    assert first == RING.blind_index("13800138000", purpose=mobile)
    assert first != RING.blind_index("13800138000", purpose=email)
    assert first != RING.blind_index("13800138001", purpose=mobile)
    assert first != make_ring("index", "k1").blind_index("13800138000", purpose=mobile)
    # Normalisation is the caller's: a different spelling is a different index.
    assert first != RING.blind_index("138 0013 8000", purpose=mobile)


def test_blind_index_does_not_use_the_encryption_key() -> None:
    same_index = KeyRing([("index", INDEX_KEY), ("k1", K1_KEY)])
    other_active = KeyRing([("index", INDEX_KEY), ("k2", K2_KEY)])
    assert same_index.blind_index("x", purpose="p") == other_active.blind_index("x", purpose="p")


def test_blind_index_needs_an_index_entry() -> None:
    with pytest.raises(UnknownKeyError, match="'index'"):
        make_ring("k1").blind_index("13800138000", purpose="identity.customers.mobile")


@pytest.mark.parametrize("purpose", ["", "x" * (CONTEXT_BYTES_MAX + 1), "\ud800", b"bytes"])
def test_blind_index_rejects_a_bad_purpose(purpose: str) -> None:
    with pytest.raises(EnvelopeError, match="purpose"):
        RING.blind_index("v", purpose=purpose)


def test_blind_index_limits() -> None:
    assert len(RING.blind_index(b"v" * PLAINTEXT_BYTES_MAX, purpose="p" * CONTEXT_BYTES_MAX)) == 32
    with pytest.raises(EnvelopeError, match=str(PLAINTEXT_BYTES_MAX)):
        RING.blind_index(b"v" * (PLAINTEXT_BYTES_MAX + 1), purpose="p")
    with pytest.raises(EnvelopeError):
        RING.blind_index(12345, purpose="p")  # type: ignore[arg-type]


# --- limits and bad input ---


def test_plaintext_limit() -> None:
    at_limit = os.urandom(PLAINTEXT_BYTES_MAX)
    assert RING.decrypt(RING.encrypt(at_limit, context=CONTEXT), context=CONTEXT) == at_limit
    with pytest.raises(EnvelopeError, match=str(PLAINTEXT_BYTES_MAX)) as excinfo:
        RING.encrypt(at_limit + b"\x00", context=CONTEXT)
    assert not isinstance(excinfo.value, DecryptionError)
    with pytest.raises(EnvelopeError, match=str(PLAINTEXT_BYTES_MAX)):
        RING.encrypt_text("x" * (PLAINTEXT_BYTES_MAX + 1), context=CONTEXT)


def test_longest_token_decrypts_and_one_byte_more_does_not() -> None:
    ring = make_ring("i" * KEY_ID_CHARS_MAX)
    token = ring.encrypt(b"\x00" * PLAINTEXT_BYTES_MAX, context=CONTEXT)
    assert len(token) == TOKEN_BYTES_MAX
    assert ring.decrypt(token, context=CONTEXT) == b"\x00" * PLAINTEXT_BYTES_MAX
    with pytest.raises(DecryptionError):
        ring.decrypt(token + b"\x00", context=CONTEXT)


def test_context_limit() -> None:
    at_limit = b"c" * CONTEXT_BYTES_MAX
    assert RING.decrypt(RING.encrypt(VALUE, context=at_limit), context=at_limit) == VALUE
    for bad in (b"c" * (CONTEXT_BYTES_MAX + 1), b""):
        with pytest.raises(EnvelopeError, match="context") as excinfo:
            RING.encrypt(VALUE, context=bad)
        assert not isinstance(excinfo.value, DecryptionError)
        with pytest.raises(EnvelopeError, match="context"):
            RING.decrypt(RING.encrypt(VALUE, context=CONTEXT), context=bad)


@pytest.mark.parametrize(
    ("plaintext", "context"),
    [("text", CONTEXT), (bytearray(b"x"), CONTEXT), (VALUE, "a str context"), (VALUE, None)],
)
def test_wrong_types_are_envelope_errors(plaintext: object, context: object) -> None:
    with pytest.raises(EnvelopeError):
        RING.encrypt(plaintext, context=context)  # type: ignore[arg-type]


def test_wrong_token_type() -> None:
    with pytest.raises(EnvelopeError, match="bytes"):
        RING.decrypt("not bytes", context=CONTEXT)  # type: ignore[arg-type]
    with pytest.raises(EnvelopeError, match="surrogate"):
        RING.encrypt_text("\udc80", context=CONTEXT)


def test_empty_spec() -> None:
    with pytest.raises(KeyRingError, match="key ring spec entry 1 is empty"):
        KeyRing.from_spec("")
    with pytest.raises(KeyRingError, match="holds no keys"):
        KeyRing([])


def test_keys_limit() -> None:
    at_limit = ",".join(generate_key_entry(f"k{n}") for n in range(KEYS_MAX))
    assert len(KeyRing.from_spec(at_limit).key_ids) == KEYS_MAX
    one_past = at_limit + "," + generate_key_entry("extra")
    with pytest.raises(KeyRingError, match=f"{KEYS_MAX + 1} entries; at most {KEYS_MAX}"):
        KeyRing.from_spec(one_past)
    pairs = [(f"k{n}", os.urandom(32)) for n in range(KEYS_MAX + 1)]
    assert len(KeyRing(pairs[:KEYS_MAX]).key_ids) == KEYS_MAX
    with pytest.raises(KeyRingError, match=f"at most {KEYS_MAX}"):
        KeyRing(pairs)


def test_key_id_limit() -> None:
    assert KeyRing([("a" * KEY_ID_CHARS_MAX, K1_KEY)]).active_key_id == "a" * KEY_ID_CHARS_MAX
    with pytest.raises(KeyRingError, match="key id"):
        KeyRing([("a" * (KEY_ID_CHARS_MAX + 1), K1_KEY)])
    with pytest.raises(KeyRingError, match="key id"):
        generate_key_entry("a" * (KEY_ID_CHARS_MAX + 1))
    assert generate_key_entry("a" * KEY_ID_CHARS_MAX).startswith("a" * KEY_ID_CHARS_MAX + ":")


# --- secrecy ---


def test_repr_shows_key_ids_only() -> None:
    ring = KeyRing([("index", INDEX_KEY), ("k1", K1_KEY)])
    for text in (repr(ring), str(ring), f"{ring}"):
        assert text == "KeyRing(active_key_id='k1', key_ids=('index', 'k1'))"
        for key in (INDEX_KEY, K1_KEY):
            assert base64.b64encode(key).decode()[:12] not in text
            assert key.hex()[:12] not in text


def test_key_ring_cannot_be_pickled_or_copied() -> None:
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(RING)
    with pytest.raises(TypeError, match="secret"):
        copy.copy(RING)
    with pytest.raises(TypeError, match="secret"):
        copy.deepcopy(RING)


# --- settings and the spec ---

SECRET = base64.b64encode(K1_KEY).decode()
URL_SAFE_KEY = base64.urlsafe_b64encode(b"\xfb" * 32).decode()  # not the standard alphabet


@pytest.mark.parametrize(
    ("spec", "where"),
    [
        (SECRET, "entry 1 is malformed"),  # a key pasted without its id
        (f"k1:{SECRET},", "entry 2 is empty"),
        (f"k1:{SECRET},,k2:{SECRET}", "entry 2 is empty"),
        (f"bad id!:{SECRET}", "entry 1: the key id"),
        (f"{'a' * 33}:{SECRET}", "entry 1: the key id"),
        (f":{SECRET}", "entry 1: the key id"),
        (f"k1:{SECRET[:-4]}", "entry 1: the key must be the standard base64"),
        (f"k1:{SECRET[:-1]}!", "entry 1: the key must be the standard base64"),
        (f"k1:{base64.b64encode(K1_KEY[:31]).decode()}", "got 31 bytes"),
        (f"k1:{base64.b64encode(K1_KEY + b'x').decode()}", "got 33 bytes"),
        (f"k1:{URL_SAFE_KEY}", "standard base64"),
        (f"k1:{SECRET},k1:{base64.b64encode(K2_KEY).decode()}", "entry 2 repeats the key id"),
        (f"k1:{SECRET},k2:{SECRET}", "entry 2 repeats the key of entry 1"),
        (f"index:{SECRET}", "holds no encryption key"),
        (" ", "entry 1 is empty"),
    ],
)
def test_malformed_setting_names_the_variable_and_entry_not_the_key(spec: str, where: str) -> None:
    settings_ = load_settings({"ZHIFU_MASTER_KEYS": spec, "ZHIFU_HOME": "/nonexistent"})
    with pytest.raises(KeyRingError) as excinfo:
        KeyRing.from_settings(settings_)
    message = str(excinfo.value)
    assert "ZHIFU_MASTER_KEYS" in message
    assert where in message
    for fragment in (SECRET[:12], SECRET[-12:], base64.b64encode(K2_KEY).decode()[:12]):
        assert fragment not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__


def test_empty_setting_falls_back_to_the_key_file(tmp_path: Path) -> None:
    settings_ = load_settings({"ZHIFU_MASTER_KEYS": "", "ZHIFU_HOME": str(tmp_path)})
    assert settings_.master_keys is None
    assert settings_.master_key_file == tmp_path / "master-keys"
    ring = KeyRing.from_settings(settings_)
    assert ring.key_ids == ("index", "k1")
    assert (tmp_path / "master-keys").exists()


def test_settings_from_the_environment(tmp_path: Path) -> None:
    spec = entry("index", INDEX_KEY) + ", " + entry("k2", K2_KEY) + " , " + entry("k1", K1_KEY)
    settings_ = load_settings(
        {"ZHIFU_MASTER_KEYS": spec, "ZHIFU_MASTER_KEY_FILE": str(tmp_path / "unused")}
    )
    assert settings_.master_key_file == tmp_path / "unused"
    assert SECRET not in repr(settings_)
    assert "master_keys" not in repr(settings_)
    ring = KeyRing.from_settings(settings_)
    assert ring.key_ids == ("index", "k2", "k1")
    assert ring.active_key_id == "k2"
    assert not (tmp_path / "unused").exists()  # the variable wins; no file is made


def test_default_settings() -> None:
    settings_ = load_settings({})
    assert settings_.master_keys is None
    assert settings_.master_key_file == Path("var") / "master-keys"


def test_master_key_file_setting(tmp_path: Path) -> None:
    path = tmp_path / "elsewhere" / "keys"
    settings_ = load_settings({"ZHIFU_HOME": str(tmp_path), "ZHIFU_MASTER_KEY_FILE": str(path)})
    ring = KeyRing.from_settings(settings_)
    assert path.exists()
    assert (
        KeyRing.load_or_create(path).decrypt(ring.encrypt(VALUE, context=CONTEXT), context=CONTEXT)
        == VALUE
    )


# --- the key file ---


def test_load_or_create_makes_a_0600_file_and_reload_gives_the_same_ring(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "master-keys"
    created = KeyRing.load_or_create(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left
    lines = path.read_text().splitlines()
    assert [line.split(":")[0] for line in lines] == ["index", "k1"]
    assert all(len(base64.b64decode(line.split(":")[1], validate=True)) == 32 for line in lines)
    assert created.active_key_id == "k1"

    reloaded = KeyRing.load_or_create(path)
    assert reloaded.key_ids == created.key_ids == ("index", "k1")
    token = created.encrypt(VALUE, context=CONTEXT)
    assert reloaded.decrypt(token, context=CONTEXT) == VALUE
    assert reloaded.blind_index("x", purpose="p") == created.blind_index("x", purpose="p")
    assert path.read_text().splitlines() == lines  # reading never rewrites


def test_load_or_create_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        path = tmp_path / "master-keys"
        KeyRing.load_or_create(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_or_create_never_replaces_a_file_made_by_another_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "master-keys"
    winner = entry("index", INDEX_KEY) + "\n" + entry("k7", K1_KEY) + "\n"
    real_read = envelope._read_key_file
    calls = 0

    def racing_read(target: Path) -> bytes:
        # The first read finds no file; another process makes one before we do.
        nonlocal calls
        calls += 1
        if calls == 1:
            target.write_text(winner)
            raise FileNotFoundError(target)
        return real_read(target)

    monkeypatch.setattr(envelope, "_read_key_file", racing_read)
    ring = KeyRing.load_or_create(path)
    assert ring.key_ids == ("index", "k7")
    assert path.read_text() == winner
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def test_key_file_with_comments_blank_lines_and_rotation(tmp_path: Path) -> None:
    path = tmp_path / "master-keys"
    path.write_text(
        "# blind indexes: never rotate without re-indexing\n"
        f"{entry('index', INDEX_KEY)}\n\n"
        f"  {entry('k2', K2_KEY)}  \n"
        "# rotated out, kept to read old tokens\n"
        f"{entry('k1', K1_KEY)}\n"
    )
    ring = KeyRing.load_or_create(path)
    assert ring.key_ids == ("index", "k2", "k1")
    assert ring.active_key_id == "k2"


@pytest.mark.parametrize(
    ("content", "where"),
    [
        (b"", "holds no keys"),
        (b"# only a comment\n", "holds no keys"),
        (SECRET.encode() + b"\n", "line 1 is malformed"),
        (b"index:" + SECRET.encode() + b"\n\nk1:" + SECRET[:-4].encode() + b"\n", "line 3"),
        (b"k1:" + SECRET.encode() + b"\n#\nk1:" + base64.b64encode(K2_KEY), "line 3 repeats"),
        (b"k1:\xff\xfe" + SECRET.encode(), "not ASCII"),
        (b"k1:" + SECRET.encode() + b"\n" + b"#" * KEY_FILE_BYTES_MAX, "larger than"),
    ],
)
def test_malformed_key_file_names_the_path_and_line_not_the_content(
    tmp_path: Path, content: bytes, where: str
) -> None:
    path = tmp_path / "master-keys"
    path.write_bytes(content)
    with pytest.raises(KeyRingError) as excinfo:
        KeyRing.load_or_create(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert where in message
    assert SECRET[:12] not in message
    assert SECRET[-12:] not in message
    assert excinfo.value.__cause__ is None
    assert excinfo.value.__context__ is None or excinfo.value.__suppress_context__
    assert path.read_bytes() == content  # a bad file is never overwritten


def test_key_file_size_limit(tmp_path: Path) -> None:
    base = f"{entry('k1', K1_KEY)}\n".encode()
    path = tmp_path / "master-keys"
    path.write_bytes(base + b"#" * (KEY_FILE_BYTES_MAX - len(base)))
    assert KeyRing.load_or_create(path).key_ids == ("k1",)
    path.write_bytes(base + b"#" * (KEY_FILE_BYTES_MAX - len(base) + 1))
    with pytest.raises(KeyRingError, match="larger than"):
        KeyRing.load_or_create(path)


def test_key_file_entry_limit(tmp_path: Path) -> None:
    path = tmp_path / "master-keys"
    lines = [generate_key_entry(f"k{n}") for n in range(KEYS_MAX + 1)]
    path.write_text("\n".join(lines[:KEYS_MAX]))
    assert len(KeyRing.load_or_create(path).key_ids) == KEYS_MAX
    path.write_text("\n".join(lines))
    with pytest.raises(KeyRingError, match=f"at most {KEYS_MAX}"):
        KeyRing.load_or_create(path)


# --- the key-encryption-key port (KMS, Vault Transit) ---


class FakeKms:
    """A remote KMS stand-in: its own key, a framed ciphertext blob, calls counted.

    ``padding`` bytes lengthen the blob, as a real KMS's metadata does.
    """

    def __init__(self, key_id: str, *, padding: int = 4) -> None:
        self.key_id = key_id
        self._cipher = AESGCM(os.urandom(32))
        self._padding = padding
        self.calls: list[str] = []
        self.down = False

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        self.calls.append("wrap")
        nonce = os.urandom(12)
        return b"K" * self._padding + nonce + self._cipher.encrypt(nonce, data_key, aad)

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        self.calls.append("unwrap")
        if self.down:
            raise ConnectionError("kms.example: connection refused")
        header, body = wrapped[: self._padding], wrapped[self._padding :]
        if header != b"K" * self._padding:  # a real KMS authenticates its whole blob
            raise DecryptionError
        try:
            return self._cipher.decrypt(body[:12], body[12:], aad)
        except (InvalidTag, ValueError):
            raise DecryptionError from None


def kms_ring(kms: FakeKms, *local: tuple[str, bytes]) -> KeyRing:
    keys = [kms, *(LocalKeyEncryptionKey(key_id, key) for key_id, key in local)]
    return KeyRing.from_key_encryption_keys(keys, index_key=INDEX_KEY)


def legacy_token(key: bytes, plaintext: bytes, context: bytes) -> bytes:
    """A version-1 token built by hand, as the ring wrote them before the port."""
    data_key, wrap_nonce, nonce = bytes(range(100, 132)), b"w" * 12, b"n" * 12
    wrapped = AESGCM(key).encrypt(wrap_nonce, data_key, context)
    sealed = AESGCM(data_key).encrypt(nonce, plaintext, context)
    return b"\x01\x02k1" + wrap_nonce + wrapped + nonce + sealed


@pytest.mark.parametrize(
    "key", [LocalKeyEncryptionKey("k1", K1_KEY), FakeKms("kms-1")], ids=["local", "fake-kms"]
)
def test_both_implementations_honour_the_port(key: KeyEncryptionKey) -> None:
    assert isinstance(key, KeyEncryptionKey)
    data_key = os.urandom(32)
    wrapped = key.wrap(data_key, aad=CONTEXT)
    assert data_key not in wrapped
    assert key.wrap(data_key, aad=CONTEXT) != wrapped  # a fresh nonce every time
    assert key.unwrap(wrapped, aad=CONTEXT) == data_key
    for bad_aad in (OTHER_ROW, OTHER_COLUMN):
        with pytest.raises(DecryptionError):
            key.unwrap(wrapped, aad=bad_aad)
    tampered = bytearray(wrapped)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        key.unwrap(bytes(tampered), aad=CONTEXT)


def test_local_key_wraps_into_the_version_1_layout() -> None:
    key = LocalKeyEncryptionKey("k1", K1_KEY)
    wrapped = key.wrap(b"d" * 32, aad=CONTEXT)
    assert len(wrapped) == WRAPPED_KEY_SIZE == 60
    assert AESGCM(K1_KEY).decrypt(wrapped[:12], wrapped[12:], CONTEXT) == b"d" * 32
    for short in (wrapped[:-1], wrapped + b"\x00", b""):
        with pytest.raises(DecryptionError):
            key.unwrap(short, aad=CONTEXT)


def test_tokens_made_before_the_port_still_decrypt() -> None:
    token = legacy_token(K1_KEY, VALUE, CONTEXT)
    from_spec = KeyRing.from_spec(entry("index", INDEX_KEY) + "," + entry("k1", K1_KEY))
    from_pairs = KeyRing([("k1", K1_KEY)])
    from_keys = KeyRing.from_key_encryption_keys([LocalKeyEncryptionKey("k1", K1_KEY)])
    for ring in (from_spec, from_pairs, from_keys):
        assert ring.decrypt(token, context=CONTEXT) == VALUE
    # And the ring still writes that layout for a local key.
    fresh = from_keys.encrypt(VALUE, context=CONTEXT)
    assert len(fresh) == len(token)
    assert fresh[:4] == token[:4] == b"\x01\x02k1"
    assert from_spec.decrypt(fresh, context=CONTEXT) == VALUE


def test_a_kms_key_plugs_into_the_ring() -> None:
    kms = FakeKms("kms-1")
    ring = kms_ring(kms, ("k1", K1_KEY))
    assert ring.active_key_id == "kms-1"
    assert ring.key_ids == ("index", "kms-1", "k1")

    token = ring.encrypt(VALUE, context=CONTEXT)
    assert kms.calls == ["wrap"]
    assert token[0] == 2  # the wrapped key is not 60 bytes: length-prefixed
    assert ring.key_id_of(token) == "kms-1"
    wrapped_size = int.from_bytes(token[2 + len("kms-1") : 2 + len("kms-1") + 2], "big")
    assert wrapped_size == 4 + 12 + 32 + 16
    assert len(token) == TOKEN_V2_OVERHEAD_BYTES + len("kms-1") + wrapped_size + len(VALUE)
    assert ring.decrypt(token, context=CONTEXT) == VALUE
    assert kms.calls == ["wrap", "unwrap"]
    with pytest.raises(DecryptionError) as excinfo:
        ring.decrypt(token, context=OTHER_ROW)
    assert_generic_decryption_error(excinfo)

    # Values under the local key still read, and rotate onto the KMS key.
    old = legacy_token(K1_KEY, VALUE, CONTEXT)
    assert ring.decrypt(old, context=CONTEXT) == VALUE
    assert ring.needs_rewrap(old)
    moved = ring.rewrap(old, context=CONTEXT)
    assert ring.key_id_of(moved) == "kms-1"
    assert ring.decrypt(moved, context=CONTEXT) == VALUE
    # The blind index key is separate and local.
    assert ring.blind_index("x", purpose="p") == KeyRing(
        [("index", INDEX_KEY), ("k1", K1_KEY)]
    ).blind_index("x", purpose="p")


def test_a_kms_wrapped_key_of_60_bytes_is_written_as_version_1() -> None:
    ring = kms_ring(FakeKms("kms-1", padding=0))
    token = ring.encrypt(VALUE, context=CONTEXT)
    assert token[0] == 1
    assert len(token) == TOKEN_OVERHEAD_BYTES + len("kms-1") + len(VALUE)
    assert ring.decrypt(token, context=CONTEXT) == VALUE


def test_a_kms_outage_is_not_a_decryption_error() -> None:
    kms = FakeKms("kms-1")
    ring = kms_ring(kms)
    token = ring.encrypt(VALUE, context=CONTEXT)
    kms.down = True
    with pytest.raises(ConnectionError):
        ring.decrypt(token, context=CONTEXT)


def test_every_tampered_byte_of_a_version_2_token_fails() -> None:
    ring = kms_ring(FakeKms("kms-1"))
    token = ring.encrypt(VALUE, context=CONTEXT)
    for position in range(len(token)):
        tampered = bytearray(token)
        tampered[position] ^= 0x01
        with pytest.raises((DecryptionError, UnknownKeyError)):
            ring.decrypt(bytes(tampered), context=CONTEXT)
    for length in range(len(token)):
        with pytest.raises(DecryptionError):
            ring.decrypt(token[:length], context=CONTEXT)
    with pytest.raises(DecryptionError):
        ring.decrypt(token + b"\x00", context=CONTEXT)


@pytest.mark.parametrize(
    "token",
    [
        b"\x02\x02k1\x00\x00" + b"\x00" * 100,  # wrapped length 0
        b"\x02\x02k1\x04\x01" + b"\x00" * 2000,  # wrapped length past the limit
        b"\x02\x02k1\x00\x40" + b"\x00" * 40,  # shorter than its wrapped length says
        b"\x02\x02k1\x00",  # cut inside the length
    ],
)
def test_malformed_version_2_token_is_a_decryption_error(token: bytes) -> None:
    with pytest.raises(DecryptionError) as excinfo:
        RING.decrypt(token, context=CONTEXT)
    assert_generic_decryption_error(excinfo)
    with pytest.raises(DecryptionError):
        RING.key_id_of(token)


def test_wrapped_key_limit_and_longest_version_2_token() -> None:
    key_id = "i" * KEY_ID_CHARS_MAX
    at_limit = FakeKms(key_id, padding=WRAPPED_KEY_BYTES_MAX - 60)
    ring = KeyRing.from_key_encryption_keys([at_limit])
    token = ring.encrypt(b"\x00" * PLAINTEXT_BYTES_MAX, context=CONTEXT)
    assert len(token) == TOKEN_V2_BYTES_MAX
    assert ring.decrypt(token, context=CONTEXT) == b"\x00" * PLAINTEXT_BYTES_MAX
    with pytest.raises(DecryptionError):
        ring.decrypt(token + b"\x00", context=CONTEXT)

    one_past = KeyRing.from_key_encryption_keys([FakeKms("k1", padding=WRAPPED_KEY_BYTES_MAX - 59)])
    with pytest.raises(EnvelopeError, match=str(WRAPPED_KEY_BYTES_MAX)) as excinfo:
        one_past.encrypt(VALUE, context=CONTEXT)
    assert not isinstance(excinfo.value, DecryptionError)


class BrokenKms(FakeKms):
    def __init__(self, wrapped: object = b"", data_key: object = b"short") -> None:
        super().__init__("broken")
        self._wrapped, self._data_key = wrapped, data_key

    def wrap(self, data_key: bytes, *, aad: bytes) -> bytes:
        return self._wrapped  # type: ignore[return-value]

    def unwrap(self, wrapped: bytes, *, aad: bytes) -> bytes:
        return self._data_key  # type: ignore[return-value]


@pytest.mark.parametrize("wrapped", [b"", "text", None])
def test_a_key_that_wraps_into_nothing_usable_is_refused(wrapped: object) -> None:
    ring = KeyRing.from_key_encryption_keys([BrokenKms(wrapped=wrapped)])
    with pytest.raises(EnvelopeError, match="'broken' wrapped a data key"):
        ring.encrypt(VALUE, context=CONTEXT)


@pytest.mark.parametrize("data_key", [b"short", b"x" * 33, "x" * 32, None])
def test_an_unwrapped_key_of_the_wrong_size_is_a_decryption_error(data_key: object) -> None:
    ring = KeyRing.from_key_encryption_keys([BrokenKms(wrapped=b"w" * 70, data_key=data_key)])
    token = ring.encrypt(VALUE, context=CONTEXT)
    with pytest.raises(DecryptionError) as excinfo:
        ring.decrypt(token, context=CONTEXT)
    assert_generic_decryption_error(excinfo)


def test_ring_of_keys_validation() -> None:
    local = LocalKeyEncryptionKey("k1", K1_KEY)
    cases: list[tuple[list[object], bytes | None, str]] = [
        ([], INDEX_KEY, "holds no encryption key"),
        (["k1"], None, "key 1 is not a KeyEncryptionKey"),
        ([local, FakeKms("k1")], None, "key 2 repeats the key id 'k1'"),
        ([FakeKms("index")], None, "blind-index"),
        ([FakeKms("bad id")], None, "key 1: the key id"),
        ([local, LocalKeyEncryptionKey("k2", K1_KEY)], None, "key 2 repeats a key"),
        ([LocalKeyEncryptionKey("k2", INDEX_KEY)], INDEX_KEY, "key 1 repeats a key"),
        ([local], b"short", "'index' key must be 32 bytes"),
    ]
    for keys, index_key, message in cases:
        with pytest.raises(KeyRingError, match=message):
            KeyRing.from_key_encryption_keys(keys, index_key=index_key)  # type: ignore[arg-type]
    many = [FakeKms(f"k{n}") for n in range(KEYS_MAX)]
    assert len(KeyRing.from_key_encryption_keys(many).key_ids) == KEYS_MAX
    with pytest.raises(KeyRingError, match=f"at most {KEYS_MAX}"):
        KeyRing.from_key_encryption_keys(many, index_key=INDEX_KEY)


@pytest.mark.parametrize(
    ("key_id", "key", "message"),
    [
        ("index", K1_KEY, "blind-index"),
        ("bad id", K1_KEY, "key id"),
        ("a" * (KEY_ID_CHARS_MAX + 1), K1_KEY, "key id"),
        ("k1", K1_KEY[:31], "32 bytes"),
        ("k1", "not bytes", "32 bytes"),
    ],
)
def test_local_key_validation(key_id: str, key: bytes, message: str) -> None:
    with pytest.raises(KeyRingError, match=message) as excinfo:
        LocalKeyEncryptionKey(key_id, key)
    assert base64.b64encode(K1_KEY).decode()[:12] not in str(excinfo.value)


def test_local_key_and_kms_ring_keep_their_secrets() -> None:
    local = LocalKeyEncryptionKey("k1", K1_KEY)
    assert repr(local) == "LocalKeyEncryptionKey(key_id='k1')"
    for leak in (copy.copy, copy.deepcopy, pickle.dumps):
        with pytest.raises(TypeError, match="secret"):
            leak(local)
    ring = KeyRing.from_key_encryption_keys([FakeKms("kms-1"), local], index_key=INDEX_KEY)
    assert repr(ring) == "KeyRing(active_key_id='kms-1', key_ids=('index', 'kms-1', 'k1'))"
    with pytest.raises(TypeError, match="secret"):
        pickle.dumps(ring)


# --- column contexts ---

ROW_ID = uuid.UUID("0190f2a4-7c1e-7b3a-9d2e-5f6a7b8c9d0e")  # fixed: test ids must be stable


def test_column_context() -> None:
    row_id = uuid.UUID("0190f2a4-7c1e-7b3a-9d2e-5f6a7b8c9d0e")
    context = column_context("identity_customers", "mobile_enc", row_id)
    assert context == b"identity_customers.mobile_enc|" + row_id.bytes
    assert column_context("identity_customers", "email_enc", row_id) != context
    assert column_context("identity_customers", "mobile_enc", uuid.uuid4()) != context
    token = RING.encrypt(VALUE, context=context)
    assert RING.decrypt(token, context=context) == VALUE
    longest = column_context("t" * 63, "c" * 63, row_id)
    assert len(longest) == 63 + 1 + 63 + 1 + 16 <= CONTEXT_BYTES_MAX


@pytest.mark.parametrize(
    ("table", "column", "row_id"),
    [
        ("t" * 64, "c", ROW_ID),
        ("", "c", ROW_ID),
        ("t", "c|x", ROW_ID),
        ("t", "1c", ROW_ID),
        ("t", "c", str(ROW_ID)),
        ("t", "c", ROW_ID.bytes),
    ],
)
def test_column_context_bad_input(table: str, column: str, row_id: uuid.UUID) -> None:
    with pytest.raises(EnvelopeError):
        column_context(table, column, row_id)
