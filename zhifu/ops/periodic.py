"""A task that runs every few seconds in a background thread of the process."""

from __future__ import annotations

import threading
from collections.abc import Callable

from zhifu.ops.logging import get_logger

INTERVAL_S_MIN = 0.01

_log = get_logger("zhifu.ops.periodic")


class PeriodicTask:
    """Runs ``task`` every ``interval_s`` until closed.

    A failing round is logged with its stack trace and the next round tries
    again: background upkeep must outlive a database that blips.
    """

    def __init__(self, name: str, task: Callable[[], object], *, interval_s: float):
        if interval_s < INTERVAL_S_MIN:
            raise ValueError(f"interval_s must be at least {INTERVAL_S_MIN}")
        self.name = name
        self.task = task
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def stopping(self) -> bool:
        """Whether :meth:`close` was called: a long round should end early."""
        return self._stop.is_set()

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.name, daemon=True)
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.task()
            except Exception:  # noqa: BLE001 - logged; the next round retries
                _log.exception("periodic_task_failed", task=self.name)
