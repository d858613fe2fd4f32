"""Ed25519 signing of block heads: round trips, bad keys, the key file, secrecy."""

from __future__ import annotations

import base64
import hashlib
import os
import pickle
import stat
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zhifu.security.signing import (
    Ed25519Signer,
    SigningKeyError,
    key_id_for,
    public_key_from_base64,
    verify_signature,
)

# RFC 8032 §7.1, TEST 1 (empty message).
RFC8032_SEED = bytes.fromhex("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
RFC8032_PUBLIC = bytes.fromhex("d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a")
RFC8032_SIGNATURE = bytes.fromhex(
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e06522490155"
    "5fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"
)
HEAD = b"block 42 root 5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"


def test_rfc8032_known_answer() -> None:
    signer = Ed25519Signer.from_seed(RFC8032_SEED)
    assert signer.public_key_bytes == RFC8032_PUBLIC
    assert signer.sign(b"") == RFC8032_SIGNATURE
    assert verify_signature(RFC8032_PUBLIC, RFC8032_SIGNATURE, b"")


def test_sign_verify_round_trip() -> None:
    signer = Ed25519Signer.generate()
    signature = signer.sign(HEAD)
    assert len(signature) == 64
    assert len(signer.public_key_bytes) == 32
    assert verify_signature(signer.public_key_bytes, signature, HEAD)


@settings(max_examples=50)
@given(seed=st.binary(min_size=32, max_size=32), data=st.binary(max_size=512))
def test_round_trip_and_tampering(seed: bytes, data: bytes) -> None:
    signer = Ed25519Signer.from_seed(seed)
    signature = signer.sign(data)
    assert verify_signature(signer.public_key_bytes, signature, data)
    assert not verify_signature(signer.public_key_bytes, signature, data + b"\x00")
    flipped = bytes([signature[0] ^ 1]) + signature[1:]
    assert not verify_signature(signer.public_key_bytes, flipped, data)


def test_wrong_key_fails() -> None:
    signer, other = Ed25519Signer.generate(), Ed25519Signer.generate()
    assert not verify_signature(other.public_key_bytes, signer.sign(HEAD), HEAD)


def test_tampered_data_fails() -> None:
    signer = Ed25519Signer.generate()
    signature = signer.sign(HEAD)
    assert not verify_signature(signer.public_key_bytes, signature, HEAD.replace(b"42", b"43"))


@pytest.mark.parametrize(
    ("public_key", "signature"),
    [
        (b"", b"\x00" * 64),
        (b"\x00" * 31, b"\x00" * 64),
        (b"\x00" * 33, b"\x00" * 64),
        (RFC8032_PUBLIC, b""),
        (RFC8032_PUBLIC, RFC8032_SIGNATURE[:63]),
        (RFC8032_PUBLIC, RFC8032_SIGNATURE + b"\x00"),
        (b"\xff" * 32, RFC8032_SIGNATURE),  # not a point on the curve
        ("not bytes", RFC8032_SIGNATURE),
        (RFC8032_PUBLIC, None),
    ],
)
def test_verify_never_raises_on_malformed_input(public_key: object, signature: object) -> None:
    assert not verify_signature(public_key, signature, b"")  # type: ignore[arg-type]


def test_seed_and_base64_round_trip() -> None:
    signer = Ed25519Signer.generate()
    again = Ed25519Signer.from_base64(signer.seed_base64())
    assert again.public_key_bytes == signer.public_key_bytes
    assert Ed25519Signer.from_base64(base64.b64encode(RFC8032_SEED).decode()).public_key_bytes == (
        RFC8032_PUBLIC
    )


def test_public_key_base64_and_key_id() -> None:
    signer = Ed25519Signer.from_seed(RFC8032_SEED)
    assert signer.public_key_base64 == base64.b64encode(RFC8032_PUBLIC).decode()
    assert public_key_from_base64(signer.public_key_base64) == RFC8032_PUBLIC
    expected_id = hashlib.sha256(RFC8032_PUBLIC).hexdigest()[:16]
    assert signer.key_id == expected_id == key_id_for(RFC8032_PUBLIC)
    assert len(signer.key_id) == 16


@pytest.mark.parametrize("seed", [b"", b"\x01" * 31, b"\x01" * 33, "x" * 32])
def test_from_seed_rejects_wrong_size(seed: bytes) -> None:
    with pytest.raises(SigningKeyError, match="32 bytes"):
        Ed25519Signer.from_seed(seed)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not base64!",
        base64.b64encode(b"\x01" * 31).decode(),
        base64.b64encode(b"\x01" * 33).decode(),
        base64.urlsafe_b64encode(b"\xfb" * 32).decode(),  # URL-safe alphabet is not standard
        "é" * 44,
    ],
)
def test_from_base64_rejects_malformed(text: str) -> None:
    with pytest.raises(SigningKeyError, match="standard base64 of 32 bytes"):
        Ed25519Signer.from_base64(text)


@pytest.mark.parametrize("text", ["", "%%%", base64.b64encode(b"\x01" * 31).decode()])
def test_public_key_from_base64_rejects_malformed(text: str) -> None:
    with pytest.raises(SigningKeyError):
        public_key_from_base64(text)


def test_key_id_for_rejects_wrong_size() -> None:
    with pytest.raises(SigningKeyError, match="32 bytes"):
        key_id_for(b"\x00" * 31)


def test_signing_key_error_is_a_value_error() -> None:
    assert issubclass(SigningKeyError, ValueError)


def test_repr_and_str_hide_the_seed() -> None:
    signer = Ed25519Signer.from_seed(RFC8032_SEED)
    for text in (repr(signer), str(signer), f"{signer}"):
        assert signer.key_id in text
        assert signer.seed_base64() not in text
        assert RFC8032_SEED.hex() not in text
        assert "9d61b19d" not in text


def test_signer_cannot_be_pickled() -> None:
    # The private key object refuses to be pickled, so the seed cannot leak that way.
    with pytest.raises(TypeError):
        pickle.dumps(Ed25519Signer.generate())


# --- the key file ---


def test_load_or_create_creates_a_0600_file_and_reloads_the_same_key(tmp_path: Path) -> None:
    path = tmp_path / "keys" / "nested" / "block-signing.key"
    created = Ed25519Signer.load_or_create(path)
    assert path.exists()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert path.read_text().strip() == created.seed_base64()
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary file left

    reloaded = Ed25519Signer.load_or_create(path)
    assert reloaded.public_key_bytes == created.public_key_bytes
    signature = reloaded.sign(HEAD)
    assert verify_signature(created.public_key_bytes, signature, HEAD)


def test_load_or_create_ignores_a_permissive_umask(tmp_path: Path) -> None:
    old_umask = os.umask(0)
    try:
        path = tmp_path / "block-signing.key"
        Ed25519Signer.load_or_create(path)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_or_create_reads_an_existing_seed(tmp_path: Path) -> None:
    path = tmp_path / "block-signing.key"
    path.write_text(base64.b64encode(RFC8032_SEED).decode() + "\n")
    assert Ed25519Signer.load_or_create(path).public_key_bytes == RFC8032_PUBLIC


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"c2VjcmV0LWJ1dC1ub3QtYS1rZXk=",  # valid base64, wrong length
        b"top-secret-material-do-not-print",
        b"\xff\xfe top-secret-bytes",
        base64.b64encode(b"\x07" * 33),
        b"A" * 5000,
    ],
)
def test_malformed_key_file_names_the_path_not_the_content(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "block-signing.key"
    path.write_bytes(content)
    with pytest.raises(SigningKeyError) as excinfo:
        Ed25519Signer.load_or_create(path)
    message = str(excinfo.value)
    assert str(path) in message
    assert "malformed" in message
    if content:
        assert content.decode("latin-1")[:12] not in message
    error = excinfo.value
    assert error.__cause__ is None
    assert error.__context__ is None or error.__suppress_context__  # no chained decoder error
    assert path.read_bytes() == content  # a bad file is never overwritten


def test_malformed_key_file_error_hides_a_near_valid_seed(tmp_path: Path) -> None:
    seed_text = base64.b64encode(RFC8032_SEED).decode()
    path = tmp_path / "block-signing.key"
    path.write_text(seed_text[:-4] + "!!!!")
    with pytest.raises(SigningKeyError) as excinfo:
        Ed25519Signer.load_or_create(path)
    assert seed_text[:20] not in str(excinfo.value)
    assert excinfo.value.__cause__ is None
