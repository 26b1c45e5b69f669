"""The only place with SQL: the SQLite file, its schema versions and every query."""

from mcp_taskqueue.store.database import Store, WouldBlock, default_db_path, fail_fast
from mcp_taskqueue.store.queries import Tx

__all__ = ["Store", "Tx", "WouldBlock", "default_db_path", "fail_fast"]
