"""Partner API keys: merchants and third-party platforms that sign their requests.

Rules (the signature scheme itself is :mod:`zhifu.security.request_signing`):

- A key is ``hmac-sha256`` (the bank makes a 32-byte secret, shows it once,
  and keeps it encrypted under the key ring) or ``ed25519`` (the partner keeps
  the private key; the bank stores the public key).
- A request is accepted only with a valid signature, a timestamp within
  ``SIGNATURE_WINDOW_S`` of the bank's clock, and a nonce never seen before
  for that key. The nonce is stored in the same database transaction that
  accepts it (a unique key), so two copies of one request racing each other
  cannot both pass; nonces are kept ``NONCE_TTL_S``, longer than the window.
- A revoked key stops working at once.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sqlalchemy import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from zhifu.identity import store
from zhifu.identity.access import Principal
from zhifu.identity.errors import InvalidInputError, NotFoundError
from zhifu.identity.service import US, Clock, now_us
from zhifu.ids import uuid7
from zhifu.invariant import InvariantError
from zhifu.ops.audit import AuditContext, record
from zhifu.security.envelope import KeyRing, column_context
from zhifu.security.request_signing import (
    NONCE_TTL_S,
    new_hmac_secret,
    new_key_id,
    parse_headers,
    replayed_nonce_error,
    unknown_key_error,
    verify_request,
)
from zhifu.store.uow import run_in_transaction

ALGORITHMS: Final = ("hmac-sha256", "ed25519")
SCOPES: Final = frozenset({"payments", "merchant", "wallet", "notifications"})
PARTNER_NAME_CHARS_MAX: Final = 128
LIST_LIMIT_MAX: Final = 500
# Control characters (C0 and C1), invisible formatting (the bidi overrides that
# make one name read as another) and line or paragraph separators.
_NAME_REFUSED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp"})


@dataclass(frozen=True, slots=True)
class PartnerKeyView:
    key_id: str
    partner_name: str
    algorithm: str
    scopes: tuple[str, ...]
    created_ts: int
    created_by: str
    revoked_ts: int | None
    public_key: str | None = None


@dataclass(frozen=True, slots=True)
class NewPartnerKey:
    key: PartnerKeyView
    secret: str | None = field(default=None, repr=False)  # hmac only, shown once


def _view(row: Row[Any]) -> PartnerKeyView:
    return PartnerKeyView(
        key_id=row.key_id,
        partner_name=row.partner_name,
        algorithm=row.algorithm,
        scopes=tuple(s for s in row.scopes.split(",") if s),
        created_ts=int(row.created_ts),
        created_by=row.created_by,
        revoked_ts=row.revoked_ts,
        public_key=None
        if row.public_key is None
        else base64.b64encode(bytes(row.public_key)).decode(),
    )


@dataclass
class PartnerService:
    engine: Engine
    keyring: KeyRing
    clock: Clock = now_us

    def create_key(
        self,
        partner_name: str,
        algorithm: str,
        scopes: Collection[str],
        ctx: AuditContext,
        *,
        public_key_b64: str | None = None,
    ) -> NewPartnerKey:
        """Issue a key. Raises InvalidInputError naming what is wrong."""
        name = partner_name.strip()
        if not 1 <= len(name) <= PARTNER_NAME_CHARS_MAX or any(
            unicodedata.category(c) in _NAME_REFUSED_CATEGORIES for c in name
        ):
            raise InvalidInputError(
                f"partner_name must be 1 to {PARTNER_NAME_CHARS_MAX} printable characters"
            )
        if algorithm not in ALGORITHMS:
            raise InvalidInputError(f"algorithm must be one of {', '.join(ALGORITHMS)}")
        unknown = set(scopes) - SCOPES
        if unknown or not scopes:
            raise InvalidInputError(f"scopes must be one or more of {', '.join(sorted(SCOPES))}")
        row_id = uuid7()
        key_id = new_key_id()
        secret: bytes | None = None
        public_key: bytes | None = None
        if algorithm == "hmac-sha256":
            if public_key_b64 is not None:
                raise InvalidInputError(
                    "an hmac-sha256 key takes no public_key: the bank makes the secret"
                )
            secret = new_hmac_secret()
        else:
            try:
                public_key = base64.b64decode(public_key_b64 or "", validate=True)
            except (binascii.Error, ValueError):
                public_key = b""
            if len(public_key) != 32:
                raise InvalidInputError(
                    "an ed25519 key needs public_key: the standard base64 of 32 bytes"
                )

        def work(connection: Connection) -> PartnerKeyView:
            store.insert_partner_key(
                connection,
                {
                    "id": row_id,
                    "key_id": key_id,
                    "partner_name": name,
                    "algorithm": algorithm,
                    "secret_enc": None
                    if secret is None
                    else self.keyring.encrypt(
                        secret,
                        context=column_context("identity_partner_keys", "secret_enc", row_id),
                    ),
                    "public_key": public_key,
                    "pii_key_id": self.keyring.active_key_id,
                    "scopes": ",".join(sorted(set(scopes))),
                    "created_ts": self.clock(),
                    "created_by": ctx.actor,
                },
            )
            record(
                connection,
                ctx.event(
                    "identity.partner_key.create",
                    f"partner_key:{key_id}",
                    partner=name,
                    algorithm=algorithm,
                ),
            )
            row = store.partner_key(connection, key_id)
            if row is None:  # written by this transaction
                raise InvariantError("the row just written is missing")
            return _view(row)

        view: PartnerKeyView = run_in_transaction(self.engine, work)
        return NewPartnerKey(
            key=view, secret=None if secret is None else base64.b64encode(secret).decode()
        )

    def list_keys(self, limit: int = 100) -> list[PartnerKeyView]:
        if not 1 <= limit <= LIST_LIMIT_MAX:
            raise InvalidInputError(f"limit must be 1 to {LIST_LIMIT_MAX}")
        rows = run_in_transaction(
            self.engine, lambda c: store.list_partner_keys(c, limit), write=False
        )
        return [_view(r) for r in rows]

    def revoke_key(self, key_id: str, ctx: AuditContext) -> None:
        def work(connection: Connection) -> None:
            if not store.revoke_partner_key(connection, key_id[:64], self.clock()):
                raise NotFoundError("no such active partner key")
            record(connection, ctx.event("identity.partner_key.revoke", f"partner_key:{key_id}"))

        run_in_transaction(self.engine, work)

    def authenticate(
        self, headers: Mapping[str, str], *, method: str, path_with_query: str, body: bytes
    ) -> Principal:
        """The partner behind a signed request.

        Raises RequestSignatureError (with its ``reason``) for every failure:
        missing or malformed headers, unknown or revoked key, stale timestamp,
        bad signature, replayed nonce.
        """
        signed = parse_headers(headers)
        now = self.clock()

        def work(connection: Connection) -> Principal:
            row = store.partner_key(connection, signed.key_id)
            if row is None or row.revoked_ts is not None:
                raise unknown_key_error(signed.key_id)
            if row.algorithm == "hmac-sha256":
                material = self.keyring.decrypt(
                    bytes(row.secret_enc),
                    context=column_context("identity_partner_keys", "secret_enc", row.id),
                )
            else:
                material = bytes(row.public_key)
            verify_request(
                row.algorithm,
                material,
                signed,
                method=method,
                path_with_query=path_with_query,
                body=body,
                now_s=now // US,
            )
            if store.nonce_seen(connection, signed.key_id, signed.nonce):
                raise replayed_nonce_error(signed.key_id, signed.nonce)
            store.insert_nonce(connection, signed.key_id, signed.nonce, now + NONCE_TTL_S * US)
            return Principal(
                kind="partner",
                id=signed.key_id,
                username=row.partner_name,
                scopes=frozenset(s for s in row.scopes.split(",") if s),
            )

        try:
            result: Principal = run_in_transaction(self.engine, work)
        except IntegrityError:
            # The racing copy of this request stored the nonce first.
            raise replayed_nonce_error(signed.key_id, signed.nonce) from None
        return result

    def prune_nonces(self) -> int:
        result: int = run_in_transaction(self.engine, lambda c: store.prune_nonces(c, self.clock()))
        return result
