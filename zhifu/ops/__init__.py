"""Operations: monitoring, logs, metrics, alerts, backups and incident modes.

Rules:
- Logs are structured: one JSON object per line on stderr (or console
  rendering for development), every line carrying a timestamp, level, logger
  name and the request id of the request that caused it. Values under keys
  that look secret (passwords, tokens, card numbers, ...) are replaced with
  ``[REDACTED]`` before anything is written; put data in keys, never format it
  into the message, so that redaction can see it.
- Metrics live in one Prometheus registry per process (:data:`zhifu.ops.metrics.REGISTRY`).
  Label values come from bounded sets (route templates, never raw paths), so
  the number of series cannot grow with traffic. With several worker
  processes, ``PROMETHEUS_MULTIPROC_DIR`` makes every worker's samples visible
  through any one of them.
- Nothing in ``ops`` moves money or changes the ledger; it observes and
  protects the rest of the platform.
"""
