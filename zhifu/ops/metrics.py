"""The process's Prometheus metrics.

Every context registers its metrics on :data:`REGISTRY` and never on
prometheus_client's global default registry, so tests and embedders get one
predictable set. Label values must come from small, fixed sets: HTTP metrics
are labelled with the route template (``/v1/ledger/accounts/{account_id}``),
never the raw path, and requests that match no route share the label
``unmatched``.

Several worker processes (``zhifu serve --workers N``): set
``PROMETHEUS_MULTIPROC_DIR`` to an empty directory before the workers start.
prometheus_client then keeps every metric's samples in files there, and
:func:`render_metrics` in any worker reports the sum over all workers. Gauges
need a ``multiprocess_mode`` in that setting (see prometheus_client's docs),
and process metrics (CPU, memory) are only collected in single-process mode.
"""

from __future__ import annotations

import os
from typing import Final

from prometheus_client import (
    GC_COLLECTOR,
    PLATFORM_COLLECTOR,
    PROCESS_COLLECTOR,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

MULTIPROC_DIR_ENV: Final = "PROMETHEUS_MULTIPROC_DIR"
UNMATCHED_ROUTE: Final = "unmatched"
# The API answers most requests in milliseconds; the default buckets start at 5 ms.
HTTP_DURATION_BUCKETS_S: Final = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)

REGISTRY: Final = CollectorRegistry(auto_describe=True)


def multiprocess_dir() -> str | None:
    """The directory shared by worker processes, or ``None`` in single-process mode."""
    return os.environ.get(MULTIPROC_DIR_ENV) or None


if multiprocess_dir() is None:
    for _collector in (PROCESS_COLLECTOR, PLATFORM_COLLECTOR, GC_COLLECTOR):
        # The default collectors are already on prometheus_client's global
        # registry; a registry accepts any collector object, so share them.
        REGISTRY.register(_collector)

HTTP_REQUESTS: Final = Counter(
    "zhifu_http_requests",
    "HTTP requests answered, by method, route template and status code.",
    ("method", "route", "status"),
    registry=REGISTRY,
)
HTTP_REQUEST_DURATION: Final = Histogram(
    "zhifu_http_request_duration_seconds",
    "Time from receiving an HTTP request to the end of its response, by route template.",
    ("method", "route"),
    buckets=HTTP_DURATION_BUCKETS_S,
    registry=REGISTRY,
)


# --- ledger ---------------------------------------------------------------------------

LEDGER_BATCH_EVENTS_BUCKETS: Final = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 8190)
LEDGER_TRANSFERS: Final = Counter(
    "zhifu_ledger_transfers",
    "Transfer events the group committer applied, by result code.",
    ("result",),
    registry=REGISTRY,
)
LEDGER_BATCH_EVENTS: Final = Histogram(
    "zhifu_ledger_batch_events",
    "Events per database transaction of the group committer (how well it gathers callers).",
    buckets=LEDGER_BATCH_EVENTS_BUCKETS,
    registry=REGISTRY,
)
LEDGER_BATCH_DURATION: Final = Histogram(
    "zhifu_ledger_batch_duration_seconds",
    "Time to apply one batch in one database transaction, retries included.",
    buckets=HTTP_DURATION_BUCKETS_S,
    registry=REGISTRY,
)
DB_GROUP_UNITS: Final = Histogram(
    "zhifu_db_group_units",
    "Units of work (payments) committed per shared database transaction, by batcher.",
    ("batcher",),
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
    registry=REGISTRY,
)
DB_GROUP_DURATION: Final = Histogram(
    "zhifu_db_group_duration_seconds",
    "Time to run and commit one group of units of work, retries included.",
    ("batcher",),
    buckets=HTTP_DURATION_BUCKETS_S,
    registry=REGISTRY,
)
LEDGER_BATCH_FAILURES: Final = Counter(
    "zhifu_ledger_batch_failures",
    "Batches that failed as a whole at the database level (each caller then retried alone).",
    registry=REGISTRY,
)
LEDGER_BLOCKS_SEALED: Final = Counter(
    "zhifu_ledger_blocks_sealed",
    "Batches chained into signed journal blocks by this process.",
    registry=REGISTRY,
)
LEDGER_HOLDS_EXPIRED: Final = Counter(
    "zhifu_ledger_holds_expired",
    "Pending transfers voided by this process because their timeout passed.",
    registry=REGISTRY,
)


# --- outbox -------------------------------------------------------------------------------

OUTBOX_MESSAGES: Final = Counter(
    "zhifu_outbox_messages",
    "Outbox messages this process handled, by topic and outcome (done, retried, dead, lost).",
    ("topic", "outcome"),
    registry=REGISTRY,
)


def observe_http_request(method: str, route: str, status: int, duration_s: float) -> None:
    """Record one answered HTTP request."""
    HTTP_REQUESTS.labels(method, route, str(status)).inc()
    HTTP_REQUEST_DURATION.labels(method, route).observe(duration_s)


def render_metrics() -> tuple[bytes, str]:
    """The Prometheus text exposition of all metrics, and its content type.

    In multi-process mode the samples of every worker are read from
    ``PROMETHEUS_MULTIPROC_DIR`` and merged.
    """
    path = multiprocess_dir()
    if path is None:
        return generate_latest(REGISTRY), CONTENT_TYPE_PLAIN_0_0_4
    # A fresh registry per scrape, as prometheus_client prescribes: the
    # collector reads the files at collection time.
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=path)  # type: ignore[no-untyped-call]
    return generate_latest(registry), CONTENT_TYPE_PLAIN_0_0_4


def mark_process_dead(pid: int | None = None) -> None:
    """Tell multi-process mode that a worker has exited (no-op in single-process mode)."""
    path = multiprocess_dir()
    if path is not None:
        dead_pid = os.getpid() if pid is None else pid
        multiprocess.mark_process_dead(dead_pid, path)  # type: ignore[no-untyped-call]
