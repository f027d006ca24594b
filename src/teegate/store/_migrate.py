"""Schema migrations (Alembic), applied by `teegate db upgrade` and `teegate dev`."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

SCRIPT_LOCATION = "teegate.store:migrations"


def _config(connection: Connection | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = connection
    return config


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Migrate to `revision`: the newest, unless a test wants an older schema to migrate from."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda sync: command.upgrade(_config(sync), revision))


async def is_current(engine: AsyncEngine) -> bool:
    """True when the database is at the newest revision this code knows."""
    head = ScriptDirectory.from_config(_config()).get_current_head()
    async with engine.connect() as conn:
        current = await conn.run_sync(
            lambda sync: MigrationContext.configure(sync).get_current_revision()
        )
    return bool(current == head)
