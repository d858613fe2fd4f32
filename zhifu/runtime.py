"""The process's wiring: settings, database engine and the services built on them.

One :class:`Runtime` per process. The HTTP app, the CLI and the tests build it
with :func:`build_runtime` and close it when done. Services are built on first
use, so a command that only migrates the schema needs no signing key.
"""

from __future__ import annotations

import gc
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine

from zhifu.accounts.errors import AccountsError
from zhifu.accounts.model import (
    DEFAULT_POLICIES,
    LimitPolicy,
    PolicyKey,
    build_policy_table,
    policy_overrides,
)
from zhifu.accounts.service import AccountsService
from zhifu.config import ConfigError, Settings, load_settings
from zhifu.identity.partners import PartnerService
from zhifu.identity.passkeys import RelyingParty
from zhifu.identity.service import IdentityService
from zhifu.identity.staff import StaffService
from zhifu.ledger.group_commit import GroupCommitter
from zhifu.ledger.service import LedgerService
from zhifu.ledger.worker import LedgerWorker
from zhifu.merchants.service import MerchantsService
from zhifu.ops.audit import AuditCheckpointer, AuditTrail
from zhifu.ops.outbox import OutboxDispatcher
from zhifu.ops.periodic import PeriodicTask
from zhifu.payments.history import HistoryService
from zhifu.payments.payees import PayeesService
from zhifu.payments.schedules import SchedulesService
from zhifu.payments.service import PaymentsService
from zhifu.security.envelope import KeyRing
from zhifu.security.service_token import load_service_token
from zhifu.security.signing import Ed25519Signer, public_key_from_base64
from zhifu.store.batching import TransactionBatcher
from zhifu.store.engine import create_db_engine
from zhifu.webhooks.service import WEBHOOK_TOPIC, WebhookService
from zhifu.webhooks.transport import HttpxTransport

# The ledger allocates many short-lived objects per batch and builds no
# reference cycles; the default threshold (700) runs the cyclic collector
# hundreds of times per batch for nothing.
GC_THRESHOLD_GEN0 = 50_000
RELYING_PARTY_NAME = "zhifu 智付"
IDENTITY_UPKEEP_INTERVAL_S = 300.0
WEBHOOK_DISPATCH_INTERVAL_S = 1.0
OUTBOX_PRUNE_INTERVAL_S = 3600.0
SCHEDULE_RUN_INTERVAL_S = 10.0


def tune_gc() -> None:
    """Run the cyclic garbage collector less often (see GC_THRESHOLD_GEN0)."""
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GC_THRESHOLD_GEN0, gen1, gen2)


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    _closers: list[object] = field(default_factory=list)

    @cached_property
    def signer(self) -> Ed25519Signer:
        if self.settings.ledger_signing_key:
            return Ed25519Signer.from_base64(self.settings.ledger_signing_key)
        return Ed25519Signer.load_or_create(self.settings.ledger_signing_key_file)

    @cached_property
    def service_token(self) -> str:
        return load_service_token(self.settings)

    @cached_property
    def keyring(self) -> KeyRing:
        """The master keys for field encryption (ZHIFU_MASTER_KEYS or the key file)."""
        return KeyRing.from_settings(self.settings)

    @cached_property
    def relying_party(self) -> RelyingParty:
        """The WebAuthn relying party (ZHIFU_WEBAUTHN_RP_ID, ZHIFU_WEBAUTHN_ORIGINS)."""
        try:
            return RelyingParty(
                id=self.settings.webauthn_rp_id,
                name=RELYING_PARTY_NAME,
                origins=self.settings.webauthn_origins,
            )
        except ValueError as exc:
            raise ConfigError(f"ZHIFU_WEBAUTHN_RP_ID / ZHIFU_WEBAUTHN_ORIGINS: {exc}") from exc

    @cached_property
    def identity(self) -> IdentityService:
        return IdentityService(self.engine, self.keyring, relying_party=self.relying_party)

    @cached_property
    def staff(self) -> StaffService:
        return StaffService(self.engine, self.keyring, hasher=self.identity.hasher)

    @cached_property
    def partners(self) -> PartnerService:
        return PartnerService(self.engine, self.keyring)

    @cached_property
    def identity_upkeep(self) -> PeriodicTask:
        """Deletes used-up challenges, old throttle counters, expired partner nonces
        and payment codes that expired unused."""

        def upkeep() -> None:
            self.identity.prune()
            self.partners.prune_nonces()
            self.merchants.prune()

        task = PeriodicTask("identity-upkeep", upkeep, interval_s=IDENTITY_UPKEEP_INTERVAL_S)
        self._closers.append(task)
        return task

    @cached_property
    def webhooks(self) -> WebhookService:
        """Webhook subscriptions, the delivery log and replays (ZHIFU_WEBHOOKS_*)."""
        return WebhookService(
            self.engine,
            self.keyring,
            HttpxTransport(),
            allow_loopback=self.settings.webhooks_allow_loopback,
        )

    @cached_property
    def outbox_dispatcher(self) -> OutboxDispatcher:
        """Sends the transactional outbox's messages: webhook deliveries so far."""
        return OutboxDispatcher(self.engine, {WEBHOOK_TOPIC: self.webhooks.topic_handler()})

    @cached_property
    def webhook_dispatcher(self) -> PeriodicTask:
        """Runs outbox dispatcher rounds every second, and prunes sent messages hourly.

        Closing it stops the round after the message in hand; claimed messages
        not yet started are handed back.
        """
        dispatcher = self.outbox_dispatcher
        last_prune_s = time.monotonic()

        def dispatch() -> None:
            nonlocal last_prune_s
            dispatcher.run_round(lambda: task.stopping)
            if time.monotonic() - last_prune_s >= OUTBOX_PRUNE_INTERVAL_S:
                last_prune_s = time.monotonic()
                dispatcher.prune_done()

        task = PeriodicTask("webhook-dispatcher", dispatch, interval_s=WEBHOOK_DISPATCH_INTERVAL_S)
        self._closers.append(task)
        return task

    @cached_property
    def ledger(self) -> LedgerService:
        trusted = [public_key_from_base64(k) for k in self.settings.ledger_verify_keys]
        return LedgerService(self.engine, self.signer, trusted_keys=trusted)

    @cached_property
    def accounts(self) -> AccountsService:
        """Customers' accounts and cards, and teller cash, over the ledger."""
        return AccountsService(self.engine, self.ledger, self.keyring, policies=self.limit_policies)

    @cached_property
    def limit_policies(self) -> Mapping[PolicyKey, LimitPolicy]:
        """The PBOC limits, lowered where ZHIFU_LIMITS_FILE says so.

        Raises ConfigError naming the file and what is wrong in it.
        """
        path = self.settings.limits_file
        if path is None:
            return DEFAULT_POLICIES
        try:
            entries = json.loads(path.read_text(encoding="utf-8"))
            return build_policy_table(policy_overrides(entries))
        except OSError as error:
            raise ConfigError(f"ZHIFU_LIMITS_FILE {path} cannot be read: {error}") from None
        except (ValueError, AccountsError) as error:  # bad JSON, or a limit refused
            raise ConfigError(f"ZHIFU_LIMITS_FILE {path}: {error}") from None

    @cached_property
    def payments(self) -> PaymentsService:
        """Payment orders: checked, held, settled and recorded in one unit of work."""
        accounts = self.accounts
        return PaymentsService(
            self.engine,
            self.ledger,
            bank_code=accounts.bank_code,
            policies=accounts.policies,
            batcher=self.payments_batcher,
        )

    @cached_property
    def payees(self) -> PayeesService:
        """Each customer's payee book, and payments to its payees."""
        return PayeesService(self.engine, self.keyring, self.payments)

    @cached_property
    def schedules(self) -> SchedulesService:
        """Scheduled and recurring transfers, and the scheduler that pays them."""
        return SchedulesService(self.engine, self.payees)

    @cached_property
    def schedule_runner(self) -> PeriodicTask:
        """Pays the due runs of scheduled transfers every SCHEDULE_RUN_INTERVAL_S;
        closing it stops after the run in hand."""

        def run() -> None:
            self.schedules.run_due(lambda: task.stopping)

        task = PeriodicTask("schedule-runner", run, interval_s=SCHEDULE_RUN_INTERVAL_S)
        self._closers.append(task)
        return task

    @cached_property
    def merchants(self) -> MerchantsService:
        """Merchants, their QR codes, customer-presented payment codes and refunds."""
        return MerchantsService(self.engine, self.payments, self.keyring)

    @cached_property
    def history(self) -> HistoryService:
        """Account history, statements, CSV export and signed receipts."""
        return HistoryService(self.engine, self.signer, bank_code=self.accounts.bank_code)

    @cached_property
    def payments_batcher(self) -> TransactionBatcher | None:
        """SQLite: concurrent payments commit together (one log flush per group)."""
        if self.engine.dialect.name != "sqlite":
            return None
        batcher = TransactionBatcher(self.engine, name="payments")
        self._closers.append(batcher)
        return batcher

    @cached_property
    def ledger_committer(self) -> GroupCommitter:
        committer = GroupCommitter(self.ledger, wait_s=self.settings.group_commit_wait_ms / 1000)
        self._closers.append(committer)
        return committer

    @cached_property
    def audit(self) -> AuditTrail:
        return AuditTrail(self.engine, self.signer)

    @cached_property
    def audit_checkpointer(self) -> AuditCheckpointer:
        checkpointer = AuditCheckpointer(self.audit)
        self._closers.append(checkpointer)
        return checkpointer

    @cached_property
    def ledger_worker(self) -> LedgerWorker:
        worker = LedgerWorker(self.ledger)
        self._closers.append(worker)
        return worker

    def close(self) -> None:
        for closer in reversed(self._closers):
            closer.close()  # type: ignore[attr-defined]
        self._closers.clear()
        self.engine.dispose()


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or load_settings()
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    return Runtime(settings=settings, engine=engine)
