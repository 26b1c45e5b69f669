"""The only place with SQL: the SQLite file, its schema versions and every query."""

from mcp_taskqueue.store.database import Store, default_db_path
from mcp_taskqueue.store.queries import Tx

__all__ = ["Store", "Tx", "default_db_path"]
