"""Storage: engine set-up, tables, migrations and the unit of work.

Rules:
- One engine per process, built from ``ZHIFU_DATABASE_URL``; SQLite runs in WAL
  mode with ``synchronous=FULL`` so that a committed transfer survives power
  loss; PostgreSQL runs at READ COMMITTED with explicit row locks.
- Every use case runs inside :func:`zhifu.store.uow.run_in_transaction`, which
  retries serialization failures, deadlocks and SQLite busy errors a bounded
  number of times with jittered backoff.
"""
