"""Storage: tables, migrations, directory writes and snapshot building."""

from garrison.store.db import is_postgres, make_engine, migrate, sqlite_path
from garrison.store.directory import CreatedKey, Directory
from garrison.store.snapshot import Snapshot, current_version, load_snapshot

__all__ = [
    "CreatedKey",
    "Directory",
    "Snapshot",
    "current_version",
    "is_postgres",
    "load_snapshot",
    "make_engine",
    "migrate",
    "sqlite_path",
]
