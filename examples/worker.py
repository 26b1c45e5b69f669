"""A worker with two handlers, runnable three ways.

    python examples/worker.py --db tasks.db --drain          # work until nothing is left
    python examples/worker.py --url http://127.0.0.1:8765/mcp  # against a running server
    mcp-taskqueue --db tasks.db worker examples.worker:worker  # through the CLI (from the repo root)

Queue something for it first:

    mcp-taskqueue --db tasks.db task add "Count words" --kind wordcount --payload '{"text": "a b c"}'
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from mcp_taskqueue.models import Task
from mcp_taskqueue.worker import Job, PermanentError, Worker

worker = Worker("example-worker", lease_seconds=60, poll_interval=0.5)


@worker.handler("wordcount")
def wordcount(task: Task) -> dict[str, Any]:
    """A plain function: it runs in a thread, so blocking work is fine."""
    text = (task.payload or {}).get("text")
    if not isinstance(text, str):
        raise PermanentError("payload.text must be a string")  # retrying would not help
    return {"words": len(text.split()), "characters": len(text)}


@worker.handler("sleep")
async def sleep(task: Task, job: Job) -> dict[str, Any]:
    """An async handler that reports progress (each report also extends the lease)."""
    import anyio

    seconds = float((task.payload or {}).get("seconds", 1))
    steps = 4
    for step in range(1, steps + 1):
        await anyio.sleep(seconds / steps)
        await job.progress(step / steps, f"step {step} of {steps}")
    return {"slept": seconds, "at": time.time()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--db", help="SQLite file (served in this process)")
    target.add_argument("--url", help="URL of a running server, e.g. http://127.0.0.1:8765/mcp")
    parser.add_argument("--drain", action="store_true", help="exit when nothing is left to do")
    args = parser.parse_args()
    stats = worker.run_sync(args.url or args.db, stop_when_idle=args.drain)
    print(json.dumps(vars(stats)))


if __name__ == "__main__":
    main()
