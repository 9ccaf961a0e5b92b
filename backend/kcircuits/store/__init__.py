"""Persistence: content-addressed results, saved views and jobs (SQLAlchemy 2 + Alembic).

``open_store(settings)`` opens SQLite (WAL) at ``data_dir/kcircuits.sqlite``, or the database at
``settings.database_url`` (``KCIRCUITS_DATABASE_URL``, e.g. ``postgresql+psycopg://...``), and
upgrades its schema to the newest migration.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Engine, create_engine, event

from kcircuits.config import Settings
from kcircuits.store.core import Store
from kcircuits.store.ids import SCHEMA_VERSION, canonical_json, hash_key, is_valid_id, key_from_provenance

__all__ = ["Store", "open_store", "make_engine", "upgrade", "downgrade", "database_url", "SCHEMA_VERSION",
           "canonical_json", "hash_key", "is_valid_id", "key_from_provenance"]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 10_000


def database_url(settings: Settings) -> str:
    """The configured URL, or the SQLite file in the data dir (created if missing)."""
    if settings.database_url:
        return settings.database_url
    data_dir = Path(settings.data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{data_dir / 'kcircuits.sqlite'}"


def make_engine(url: str) -> Engine:
    """An engine; SQLite connections get WAL, synchronous=NORMAL, a busy timeout, foreign keys."""
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False,
                                                  "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


def _migrate(engine: Engine, revision: str, direction: str) -> None:
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False).replace("%", "%%"))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, direction)(config, revision)


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Run the Alembic migrations up to ``revision`` on ``engine`` (one transaction)."""
    _migrate(engine, revision, "upgrade")


def downgrade(engine: Engine, revision: str = "base") -> None:
    """Undo migrations down to ``revision`` (tests and operators)."""
    _migrate(engine, revision, "downgrade")


def open_store(settings: Settings) -> Store:
    """Open (and migrate) the store the settings name."""
    engine = make_engine(database_url(settings))
    upgrade(engine)
    return Store(engine, dtype=settings.dtype, device=settings.device)
