"""Background upkeep of the ledger: seal committed batches, expire timed-out holds.

Runs as a thread in each server process. Several processes may run it at once:
sealing takes turns through a lock, and an expiry void has an id derived from
its hold, so a hold is never expired twice.
"""

from __future__ import annotations

from zhifu.ledger.service import LedgerService
from zhifu.ops import metrics
from zhifu.ops.periodic import PeriodicTask

INTERVAL_S_DEFAULT = 0.5


class LedgerWorker:
    def __init__(self, service: LedgerService, *, interval_s: float = INTERVAL_S_DEFAULT):
        self.service = service
        self._task = PeriodicTask("ledger-worker", self.run_once, interval_s=interval_s)

    def run_once(self) -> tuple[int, int]:
        """One round: (blocks sealed, holds expired)."""
        expired = self.service.expire_pending()
        sealed = self.service.seal()
        metrics.LEDGER_HOLDS_EXPIRED.inc(expired)
        metrics.LEDGER_BLOCKS_SEALED.inc(sealed)
        return sealed, expired

    def start(self) -> None:
        self._task.start()

    def close(self) -> None:
        self._task.close()
