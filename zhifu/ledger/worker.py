"""Background upkeep of the ledger: seal committed batches, expire timed-out holds.

Runs as a thread in each server process. Several processes may run it at once:
sealing takes turns through a lock, and an expiry void has an id derived from
its hold, so a hold is never expired twice.
"""

from __future__ import annotations

import threading

import structlog

from zhifu.ledger.service import LedgerService
from zhifu.ops import metrics

INTERVAL_S_DEFAULT = 0.5
INTERVAL_S_MIN = 0.01

log = structlog.get_logger("zhifu.ledger.worker")


class LedgerWorker:
    def __init__(self, service: LedgerService, *, interval_s: float = INTERVAL_S_DEFAULT):
        if interval_s < INTERVAL_S_MIN:
            raise ValueError(f"interval_s must be at least {INTERVAL_S_MIN}")
        self.service = service
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> tuple[int, int]:
        """One round: (blocks sealed, holds expired)."""
        expired = self.service.expire_pending()
        sealed = self.service.seal()
        metrics.LEDGER_HOLDS_EXPIRED.inc(expired)
        metrics.LEDGER_BLOCKS_SEALED.inc(sealed)
        return sealed, expired

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="ledger-worker", daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                sealed, expired = self.run_once()
            except Exception:
                log.exception("ledger_upkeep_failed")
                continue
            if sealed or expired:
                log.debug("ledger_upkeep", sealed=sealed, expired=expired)
