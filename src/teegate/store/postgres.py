"""The ledger's PostgreSQL backend, for the tests that drive it through its own names:
its writer, and the statements it runs on an asyncpg connection."""

from teegate.store._ledger_postgres import place_hold
from teegate.store._ledger_postgres_batch import place_holds, run_batch, settle_many
from teegate.store._postgres_writer import PostgresWriter

__all__ = [
    "PostgresWriter",
    "place_hold",
    "place_holds",
    "run_batch",
    "settle_many",
]
