"""Partner API keys and signed requests (``zhifu.identity.partners``) on SQLite and PostgreSQL.

Issuing keys (the hmac secret shown once and stored encrypted, the ed25519
public key stored), accepting a signed request, refusing a replayed nonce
(two racing copies included), the timestamp window at its limits, revoked,
unknown and tampered requests, pruning of expired nonces, and bad input.
"""

from __future__ import annotations

import base64
import threading
from typing import Any

import pytest
from identity_factories import FakeClock
from sqlalchemy import Engine, select, text

from zhifu.identity import store
from zhifu.identity.access import Principal
from zhifu.identity.errors import InvalidInputError, NotFoundError
from zhifu.identity.partners import (
    LIST_LIMIT_MAX,
    PARTNER_NAME_CHARS_MAX,
    SCOPES,
    NewPartnerKey,
    PartnerService,
)
from zhifu.identity.service import US
from zhifu.ops.audit import AuditRecord, list_events, system_context
from zhifu.security.envelope import KeyRing, column_context
from zhifu.security.request_signing import (
    HEADER_KEY_ID,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    NONCE_TTL_S,
    SIGNATURE_WINDOW_S,
    RequestSignatureError,
    SignatureRejection,
    new_key_id,
    sign_request,
)
from zhifu.security.signing import Ed25519Signer
from zhifu.store.tables import identity_partner_keys, identity_partner_nonces

NOW_S = 1_767_225_600  # 2026-01-01T00:00:00Z
METHOD = "POST"
PATH = "/v1/partner/payments?merchant=m_1"
BODY = b'{"amount_minor":12345,"currency":"CNY","payee":"6222020200001234567"}'
ADMIN = "staff:0192f0c1-0000-7000-8000-000000000001"
RACE_ROUNDS = 5
RACE_TIMEOUT_S = 30.0


@pytest.fixture
def keyring() -> KeyRing:
    return KeyRing([("index", bytes(range(32))), ("k1", bytes(range(32, 64)))])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(NOW_S * US)


@pytest.fixture
def partners(engine: Engine, keyring: KeyRing, clock: FakeClock) -> PartnerService:
    return PartnerService(engine, keyring, clock=clock)


class Key:
    """An issued key and what its partner signs with."""

    def __init__(self, issued: NewPartnerKey, material: bytes | Ed25519Signer) -> None:
        self.issued = issued
        self.key_id = issued.key.key_id
        self.algorithm = issued.key.algorithm
        self.material = material

    def sign(
        self,
        *,
        now_s: int = NOW_S,
        method: str = METHOD,
        path: str = PATH,
        body: bytes = BODY,
        nonce: str | None = None,
    ) -> dict[str, str]:
        return sign_request(
            self.algorithm,
            self.key_id,
            self.material,
            method=method,
            path_with_query=path,
            body=body,
            now_s=now_s,
            nonce=nonce,
        )


def _hmac_key(partners: PartnerService, name: str = "Acme Pay") -> Key:
    issued = partners.create_key(name, "hmac-sha256", ["payments"], system_context(ADMIN))
    assert issued.secret is not None
    return Key(issued, base64.b64decode(issued.secret))


def _ed25519_key(partners: PartnerService, name: str = "Globex Wallet") -> Key:
    signer = Ed25519Signer.generate()
    issued = partners.create_key(
        name,
        "ed25519",
        ["wallet", "payments"],
        system_context(ADMIN),
        public_key_b64=signer.public_key_base64,
    )
    return Key(issued, signer)


@pytest.fixture(params=["hmac-sha256", "ed25519"])
def key(request: pytest.FixtureRequest, partners: PartnerService) -> Key:
    return _hmac_key(partners) if request.param == "hmac-sha256" else _ed25519_key(partners)


def _authenticate(
    partners: PartnerService,
    headers: dict[str, str],
    *,
    method: str = METHOD,
    path: str = PATH,
    body: bytes = BODY,
) -> Principal:
    return partners.authenticate(headers, method=method, path_with_query=path, body=body)


def _refused(
    partners: PartnerService, headers: dict[str, str], reason: SignatureRejection, **request: Any
) -> RequestSignatureError:
    with pytest.raises(RequestSignatureError) as caught:
        _authenticate(partners, headers, **request)
    assert caught.value.reason is reason, caught.value
    return caught.value


def _nonces(engine: Engine) -> list[tuple[str, str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(select(identity_partner_nonces)).all()
    return sorted((r.key_id, r.nonce, int(r.expires_ts)) for r in rows)


def _key_rows(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        return list(connection.execute(select(identity_partner_keys)).all())


def _events(engine: Engine, action_prefix: str) -> list[AuditRecord]:
    with engine.connect() as connection:
        return list_events(connection, 1000, action_prefix)


def _raw_bytes(value: object) -> bytes:
    return bytes(value) if isinstance(value, bytes | memoryview) else str(value).encode()


# --- issuing keys ---------------------------------------------------------------------------


def test_hmac_key_secret_is_shown_once_and_stored_encrypted(
    partners: PartnerService, engine: Engine, keyring: KeyRing
) -> None:
    key = _hmac_key(partners)
    issued = key.issued
    assert isinstance(key.material, bytes)
    secret = key.material
    assert len(secret) == 32
    assert issued.secret is not None
    assert issued.secret not in repr(issued)
    view = issued.key
    assert view.key_id.startswith("pk_")
    assert (view.partner_name, view.algorithm, view.scopes) == (
        "Acme Pay",
        "hmac-sha256",
        ("payments",),
    )
    assert (view.created_ts, view.created_by, view.revoked_ts) == (NOW_S * US, ADMIN, None)
    assert view.public_key is None
    # Listing never shows the secret again.
    [listed] = partners.list_keys()
    assert listed == view
    assert not hasattr(listed, "secret")

    [row] = _key_rows(engine)
    for value in row:
        for needle in (secret, issued.secret.encode(), secret.hex().encode()):
            assert needle not in _raw_bytes(value)
    assert row.public_key is None
    assert row.pii_key_id == keyring.active_key_id
    context = column_context("identity_partner_keys", "secret_enc", row.id)
    assert keyring.decrypt(bytes(row.secret_enc), context=context) == secret

    [event] = _events(engine, "identity.partner_key.create")
    assert event.actor == ADMIN
    assert event.target == f"partner_key:{view.key_id}"
    assert event.details == {"partner": "Acme Pay", "algorithm": "hmac-sha256"}
    assert issued.secret not in event.details_json


def test_ed25519_key_stores_the_public_key_only(partners: PartnerService, engine: Engine) -> None:
    key = _ed25519_key(partners)
    assert isinstance(key.material, Ed25519Signer)
    assert key.issued.secret is None
    view = key.issued.key
    assert view.algorithm == "ed25519"
    assert view.scopes == ("payments", "wallet")
    assert view.public_key == key.material.public_key_base64
    [row] = _key_rows(engine)
    assert bytes(row.public_key) == key.material.public_key_bytes
    assert row.secret_enc is None


def test_list_keys_newest_first_and_its_limit(partners: PartnerService, clock: FakeClock) -> None:
    made = []
    for n in range(3):
        clock.now_us += US
        made.append(_hmac_key(partners, f"Partner {n}").key_id)
    assert [k.key_id for k in partners.list_keys()] == made[::-1]
    assert [k.key_id for k in partners.list_keys(1)] == made[-1:]
    assert len(partners.list_keys(LIST_LIMIT_MAX)) == 3
    for limit in (0, LIST_LIMIT_MAX + 1):
        with pytest.raises(InvalidInputError, match=f"1 to {LIST_LIMIT_MAX}"):
            partners.list_keys(limit)


# --- accepting a signed request ----------------------------------------------------------------


def test_a_signed_request_is_accepted(key: Key, partners: PartnerService, engine: Engine) -> None:
    headers = key.sign(nonce="first-nonce-0000001")
    principal = _authenticate(partners, headers)
    assert principal.kind == "partner"
    assert principal.id == key.key_id
    assert principal.actor == f"partner:{key.key_id}"
    assert principal.username == key.issued.key.partner_name
    assert principal.scopes == frozenset(key.issued.key.scopes)
    assert principal.roles == frozenset()
    assert principal.permissions == frozenset()
    expires_us = NOW_S * US + NONCE_TTL_S * US
    assert _nonces(engine) == [(key.key_id, "first-nonce-0000001", expires_us)]
    # Header names are matched case-insensitively.
    lower = {name.lower(): value for name, value in key.sign().items()}
    assert _authenticate(partners, lower).id == key.key_id


def test_a_request_without_a_body_is_accepted(key: Key, partners: PartnerService) -> None:
    headers = key.sign(method="GET", path="/v1/partner/payments", body=b"")
    assert _authenticate(partners, headers, method="GET", path="/v1/partner/payments", body=b"")


# --- replays ---------------------------------------------------------------------------------


def test_the_same_nonce_is_refused_the_second_time(
    key: Key, partners: PartnerService, engine: Engine
) -> None:
    headers = key.sign(nonce="nonce-used-once-0001")
    _authenticate(partners, headers)
    error = _refused(partners, headers, SignatureRejection.REPLAYED_NONCE)
    assert "nonce-used-once-0001" in str(error)
    # A new signature over another body does not make the nonce usable again.
    other_body = b'{"amount_minor":1}'
    resigned = key.sign(nonce="nonce-used-once-0001", body=other_body)
    _refused(partners, resigned, SignatureRejection.REPLAYED_NONCE, body=other_body)
    assert len(_nonces(engine)) == 1


def test_nonces_are_per_key(partners: PartnerService) -> None:
    first, second = _hmac_key(partners, "One"), _ed25519_key(partners, "Two")
    _authenticate(partners, first.sign(nonce="shared-nonce-00001"))
    _authenticate(partners, second.sign(nonce="shared-nonce-00001"))


def test_two_copies_racing_are_accepted_exactly_once(
    key: Key, partners: PartnerService, engine: Engine
) -> None:
    for round_number in range(RACE_ROUNDS):
        headers = key.sign(nonce=f"racing-nonce-{round_number:06d}")
        barrier = threading.Barrier(2)
        outcomes: list[object] = [None, None]

        def run(index: int, headers: dict[str, str] = headers) -> None:
            barrier.wait(timeout=RACE_TIMEOUT_S)
            try:
                outcomes[index] = _authenticate(partners, headers)
            except Exception as exc:  # noqa: BLE001 - the outcome under test
                outcomes[index] = exc

        threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=RACE_TIMEOUT_S)
            assert not thread.is_alive()
        accepted = [o for o in outcomes if isinstance(o, Principal)]
        refused = [o for o in outcomes if isinstance(o, RequestSignatureError)]
        assert len(accepted) == 1, outcomes
        assert len(refused) == 1, outcomes
        assert refused[0].reason is SignatureRejection.REPLAYED_NONCE
    assert len(_nonces(engine)) == RACE_ROUNDS


def test_a_copy_that_passed_the_lookup_loses_on_the_unique_key(
    key: Key, partners: PartnerService, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy that lost the race saw no nonce yet (the winner had not
    committed); the database's unique key refuses its insert, and that is a
    replay, not a server error."""
    headers = key.sign()
    _authenticate(partners, headers)
    monkeypatch.setattr(store, "nonce_seen", lambda connection, key_id, nonce: False)
    _refused(partners, headers, SignatureRejection.REPLAYED_NONCE)


# --- the timestamp window ----------------------------------------------------------------------


@pytest.mark.parametrize("skew_s", [-SIGNATURE_WINDOW_S, SIGNATURE_WINDOW_S, 0])
@pytest.mark.parametrize("clock_fraction_us", [0, US - 1])
def test_timestamps_at_the_window_limit_are_accepted(
    key: Key, partners: PartnerService, clock: FakeClock, skew_s: int, clock_fraction_us: int
) -> None:
    clock.now_us = NOW_S * US + clock_fraction_us
    _authenticate(partners, key.sign(now_s=NOW_S + skew_s))


@pytest.mark.parametrize(
    ("skew_s", "direction"),
    [
        (-SIGNATURE_WINDOW_S - 1, "behind"),
        (SIGNATURE_WINDOW_S + 1, "ahead of"),
        (-86_400, "behind"),
    ],
)
def test_timestamps_past_the_window_are_refused(
    key: Key, partners: PartnerService, engine: Engine, skew_s: int, direction: str
) -> None:
    error = _refused(partners, key.sign(now_s=NOW_S + skew_s), SignatureRejection.STALE_TIMESTAMP)
    assert direction in str(error)
    assert _nonces(engine) == []  # a refused request uses up no nonce


def test_a_request_goes_stale_as_the_clock_moves(
    key: Key, partners: PartnerService, clock: FakeClock
) -> None:
    headers = key.sign()
    clock.now_us = (NOW_S + SIGNATURE_WINDOW_S + 1) * US
    _refused(partners, headers, SignatureRejection.STALE_TIMESTAMP)
    clock.now_us = (NOW_S + SIGNATURE_WINDOW_S) * US + US - 1
    _authenticate(partners, headers)


# --- revoked, unknown and tampered -------------------------------------------------------------


def test_a_revoked_key_is_refused_at_once(
    key: Key, partners: PartnerService, engine: Engine, clock: FakeClock
) -> None:
    _authenticate(partners, key.sign())
    clock.now_us += US
    partners.revoke_key(key.key_id, system_context(ADMIN))
    signed_before = key.sign()
    _refused(partners, signed_before, SignatureRejection.UNKNOWN_KEY)
    [view] = partners.list_keys()
    assert view.revoked_ts == clock.now_us
    [event] = _events(engine, "identity.partner_key.revoke")
    assert (event.actor, event.target) == (ADMIN, f"partner_key:{key.key_id}")
    with pytest.raises(NotFoundError):
        partners.revoke_key(key.key_id, system_context(ADMIN))
    # Other keys keep working.
    other = _hmac_key(partners, "Initech")
    _authenticate(partners, other.sign())


def test_revoking_an_unknown_key_is_not_found(partners: PartnerService, engine: Engine) -> None:
    for key_id in (new_key_id(), "", "pk_" + "x" * 200):
        with pytest.raises(NotFoundError, match="no such active partner key"):
            partners.revoke_key(key_id, system_context(ADMIN))
    assert _events(engine, "identity.partner_key") == []


def test_an_unknown_key_is_refused(key: Key, partners: PartnerService, engine: Engine) -> None:
    stranger = new_key_id()
    headers = sign_request(
        key.algorithm,
        stranger,
        key.material,
        method=METHOD,
        path_with_query=PATH,
        body=BODY,
        now_s=NOW_S,
    )
    error = _refused(partners, headers, SignatureRejection.UNKNOWN_KEY)
    assert stranger in str(error)
    assert _nonces(engine) == []


@pytest.mark.parametrize(
    "request_as_received",
    [
        pytest.param({"body": BODY.replace(b"12345", b"99999")}, id="body"),
        pytest.param({"body": BODY + b" "}, id="body-extra-byte"),
        pytest.param({"body": b""}, id="body-dropped"),
        pytest.param({"path": "/v1/partner/refunds?merchant=m_1"}, id="path"),
        pytest.param({"path": "/v1/partner/payments?merchant=m_2"}, id="query"),
        pytest.param({"path": "/v1/partner/payments"}, id="query-dropped"),
        pytest.param({"method": "PUT"}, id="method"),
    ],
)
def test_a_tampered_request_is_refused_and_uses_up_no_nonce(
    key: Key,
    partners: PartnerService,
    engine: Engine,
    request_as_received: dict[str, Any],
) -> None:
    headers = key.sign()
    error = _refused(partners, headers, SignatureRejection.BAD_SIGNATURE, **request_as_received)
    assert headers[HEADER_SIGNATURE] not in str(error)
    assert _nonces(engine) == []
    # The genuine request, arriving after the tampered copy, still goes through.
    _authenticate(partners, headers)


def test_a_signature_moved_to_another_partners_key_is_refused(partners: PartnerService) -> None:
    mallory, victim = _hmac_key(partners, "Mallory"), _hmac_key(partners, "Victim")
    headers = mallory.sign() | {HEADER_KEY_ID: victim.key_id}
    _refused(partners, headers, SignatureRejection.BAD_SIGNATURE)
    forged = sign_request(
        "hmac-sha256",
        victim.key_id,
        mallory.material,
        method=METHOD,
        path_with_query=PATH,
        body=BODY,
        now_s=NOW_S,
    )
    _refused(partners, forged, SignatureRejection.BAD_SIGNATURE)


def test_missing_and_malformed_headers_are_refused(key: Key, partners: PartnerService) -> None:
    headers = key.sign()
    without_nonce = {k: v for k, v in headers.items() if k != HEADER_NONCE}
    _refused(partners, without_nonce, SignatureRejection.MISSING_HEADER)
    _refused(partners, {}, SignatureRejection.MISSING_HEADER)
    _refused(partners, headers | {HEADER_NONCE: "short"}, SignatureRejection.MALFORMED_HEADER)
    _refused(partners, headers | {HEADER_KEY_ID: "sk_x"}, SignatureRejection.MALFORMED_HEADER)


# --- pruning nonces ----------------------------------------------------------------------------


def test_prune_nonces_removes_only_expired_ones(
    key: Key, partners: PartnerService, engine: Engine, clock: FakeClock
) -> None:
    early = [key.sign(nonce=f"early-nonce-{n:06d}") for n in range(2)]
    for headers in early:
        _authenticate(partners, headers)
    clock.now_us += 60 * US
    late = key.sign(now_s=NOW_S + 60, nonce="late-nonce-0000001")
    _authenticate(partners, late)
    early_expiry_us = NOW_S * US + NONCE_TTL_S * US

    clock.now_us = early_expiry_us  # expiring now, not expired yet
    assert partners.prune_nonces() == 0
    assert len(_nonces(engine)) == 3

    clock.now_us = early_expiry_us + 1
    assert partners.prune_nonces() == 2
    assert [n for _, n, _ in _nonces(engine)] == ["late-nonce-0000001"]
    assert partners.prune_nonces() == 0
    # A pruned nonce's request is long stale: it cannot come back.
    _refused(partners, early[0], SignatureRejection.STALE_TIMESTAMP)
    # The kept one is still a replay while it could be accepted.
    clock.now_us = (NOW_S + 60 + SIGNATURE_WINDOW_S) * US
    _refused(partners, late, SignatureRejection.REPLAYED_NONCE)


def test_prune_nonces_on_an_empty_table(partners: PartnerService) -> None:
    assert partners.prune_nonces() == 0


# --- bad input -------------------------------------------------------------------------------

ED_PUBLIC = base64.b64encode(bytes(range(32))).decode()


@pytest.mark.parametrize(
    ("name", "algorithm", "scopes", "public_key_b64", "message"),
    [
        ("Acme", "hmac-sha1", ["payments"], None, "algorithm must be one of hmac-sha256, ed25519"),
        ("Acme", "rsa", ["payments"], ED_PUBLIC, "algorithm must be one of"),
        ("Acme", "hmac-sha256", [], None, "scopes must be one or more of"),
        ("Acme", "hmac-sha256", ["payments", "admin"], None, "merchant, notifications, payments"),
        ("Acme", "hmac-sha256", "payments", None, "scopes must be"),
        ("Acme", "ed25519", ["wallet"], None, "base64 of 32 bytes"),
        ("Acme", "ed25519", ["wallet"], base64.b64encode(bytes(31)).decode(), "32 bytes"),
        ("Acme", "ed25519", ["wallet"], base64.b64encode(bytes(33)).decode(), "32 bytes"),
        ("Acme", "ed25519", ["wallet"], "not base64!", "32 bytes"),
        ("Acme", "ed25519", ["wallet"], bytes(range(32)).hex(), "32 bytes"),
        ("Acme", "hmac-sha256", ["payments"], ED_PUBLIC, "takes no public_key"),
        ("", "hmac-sha256", ["payments"], None, "partner_name must be 1 to 128"),
        ("   ", "hmac-sha256", ["payments"], None, "partner_name must be"),
        ("A" * 129, "hmac-sha256", ["payments"], None, "partner_name must be"),
        ("Acme\nPay", "hmac-sha256", ["payments"], None, "printable"),
        ("Acme\x00", "hmac-sha256", ["payments"], None, "printable"),
        ("Acme\x85Pay", "hmac-sha256", ["payments"], None, "printable"),
        ("Acme\u202eyaP", "hmac-sha256", ["payments"], None, "printable"),
        ("Acme\u200bPay", "hmac-sha256", ["payments"], None, "printable"),
        ("Acme\u2028Pay", "hmac-sha256", ["payments"], None, "printable"),
    ],
)
def test_bad_input_is_refused_and_nothing_is_written(
    partners: PartnerService,
    engine: Engine,
    name: str,
    algorithm: str,
    scopes: Any,
    public_key_b64: str | None,
    message: str,
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        partners.create_key(
            name, algorithm, scopes, system_context(ADMIN), public_key_b64=public_key_b64
        )
    assert _key_rows(engine) == []
    assert _events(engine, "identity.partner_key") == []


def test_partner_name_at_its_limit_and_every_scope(partners: PartnerService) -> None:
    name = "名" * PARTNER_NAME_CHARS_MAX
    issued = partners.create_key(name, "hmac-sha256", sorted(SCOPES), system_context(ADMIN))
    assert issued.key.partner_name == name
    assert issued.key.scopes == tuple(sorted(SCOPES))
    padded = partners.create_key("  Padded  ", "hmac-sha256", ["merchant"], system_context(ADMIN))
    assert padded.key.partner_name == "Padded"
    spaced = partners.create_key(
        "智付\u3000商户 · 上海", "hmac-sha256", ["merchant"], system_context(ADMIN)
    )
    assert spaced.key.partner_name == "智付\u3000商户 · 上海"


def test_nothing_of_a_secret_reaches_the_audit_trail(
    partners: PartnerService, engine: Engine
) -> None:
    key = _hmac_key(partners)
    _authenticate(partners, key.sign())
    partners.revoke_key(key.key_id, system_context(ADMIN))
    assert key.issued.secret is not None
    with engine.connect() as connection:
        rows = connection.execute(text("SELECT * FROM audit_events")).all()
    assert rows
    for row in rows:
        for value in row:
            assert key.issued.secret.encode() not in _raw_bytes(value)
