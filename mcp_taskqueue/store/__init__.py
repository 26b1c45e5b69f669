"""The only place with SQL: the SQLite file, its schema versions and every query."""

from mcp_taskqueue.store.database import Abandoned, Store, WouldBlock, abandon_on, default_db_path, fail_fast
from mcp_taskqueue.store.queries import Tx

__all__ = ["Abandoned", "Store", "Tx", "WouldBlock", "abandon_on", "default_db_path", "fail_fast"]
