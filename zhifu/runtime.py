"""The process's wiring: settings, database engine and the services built on them.

One :class:`Runtime` per process. The HTTP app, the CLI and the tests build it
with :func:`build_runtime` and close it when done.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine

from zhifu.config import Settings, load_settings
from zhifu.store.engine import create_db_engine


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    services: dict[str, Any] = field(default_factory=dict)

    def close(self) -> None:
        for service in self.services.values():
            close = getattr(service, "close", None)
            if close is not None:
                close()
        self.engine.dispose()


def build_runtime(settings: Settings | None = None) -> Runtime:
    settings = settings or load_settings()
    engine = create_db_engine(settings.database_url, pool_size=settings.db_pool_size)
    return Runtime(settings=settings, engine=engine)
